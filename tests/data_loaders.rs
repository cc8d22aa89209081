//! Loaders on small files written here (every error path), and on the real copies in ../shared/data.

use std::io::Write;
use std::path::{Path, PathBuf};

use dalle::data::batch::{epoch_batches, epoch_permutation, gather_images, BatchSampler};
use dalle::data::captions::{captions_for, class_caption, class_prompts};
use dalle::data::cifar::load_image_folder;
use dalle::data::download::DataCache;
use dalle::data::{load, load_with, resolve_data_dir, DatasetName, Split};
use dalle::Error;
use ndarray::Array4;

mod common;
use common::{temp_dir, TempDir};

/// An idx file: magic `0 0 8 ndim`, big-endian dims, data.
fn idx_bytes(ndim_byte: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, ndim_byte];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// `n` images of 28x28 (MNIST's size, which the loader enforces) with pixel `p` of
/// image `i` = `(10 i + p) mod 256`, labels `i % 10`.
fn write_idx_split(folder: &Path, prefix: &str, n: usize, gz: bool) {
    let pixels: Vec<u8> = (0..n).flat_map(|i| (0..784).map(move |p| (10 * i + p) as u8)).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    let files = [
        (format!("{prefix}-images-idx3-ubyte"), idx_bytes(3, &[n as u32, 28, 28], &pixels)),
        (format!("{prefix}-labels-idx1-ubyte"), idx_bytes(1, &[n as u32], &labels)),
    ];
    for (name, bytes) in files {
        if gz {
            std::fs::write(folder.join(format!("{name}.gz")), gzip(&bytes)).unwrap();
        } else {
            std::fs::write(folder.join(name), bytes).unwrap();
        }
    }
}

fn mnist_root(n: usize) -> TempDir {
    let root = temp_dir("data-mnist");
    let folder = root.join("mnist");
    std::fs::create_dir_all(&folder).unwrap();
    write_idx_split(&folder, "train", n, true);
    write_idx_split(&folder, "t10k", n, false);
    root
}

fn err_text<T: std::fmt::Debug>(r: dalle::Result<T>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn idx_gzipped_and_plain_files_load_with_their_pixels() {
    let root = mnist_root(5);
    for split in [Split::Train, Split::Test] {
        let set = load(DatasetName::Mnist, &root, split, None).unwrap();
        assert_eq!(set.images.dim(), (5, 1, 28, 28));
        assert_eq!(set.labels, vec![0, 1, 2, 3, 4]);
        assert_eq!(set.classes.len(), 10);
        // Image 2, row 1, col 2 is byte 10*2 + (1*28 + 2) = 50.
        assert_eq!(set.images[[2, 0, 1, 2]], 50.0 / 255.0);
    }
    let few = load(DatasetName::Mnist, &root, Split::Train, Some(2)).unwrap();
    assert_eq!(few.images.dim(), (2, 1, 28, 28));
    assert_eq!(few.labels, vec![0, 1]);
}

#[test]
fn idx_wrong_magic_is_named() {
    let root = mnist_root(3);
    let path = root.join("mnist/t10k-images-idx3-ubyte");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..4].copy_from_slice(&[0x12, 0x34, 0x08, 0x03]);
    std::fs::write(&path, bytes).unwrap();
    let msg = err_text(load(DatasetName::Mnist, &root, Split::Test, None));
    assert!(msg.contains("t10k-images-idx3-ubyte") && msg.contains("wrong magic 0x12340803"), "{msg}");
}

#[test]
fn idx_wrong_dimension_count_is_named() {
    let root = mnist_root(3);
    std::fs::write(root.join("mnist/t10k-images-idx3-ubyte"), idx_bytes(1, &[3], &[0, 0, 0])).unwrap();
    let msg = err_text(load(DatasetName::Mnist, &root, Split::Test, None));
    assert!(msg.contains("1 dimensions, expected 3"), "{msg}");
}

#[test]
fn idx_truncated_files_are_refused_plain_and_gzipped() {
    let root = mnist_root(4);
    // Plain: header says 4 images, 3.5 follow.
    let plain = root.join("mnist/t10k-images-idx3-ubyte");
    let bytes = std::fs::read(&plain).unwrap();
    std::fs::write(&plain, &bytes[..bytes.len() - 6]).unwrap();
    let msg = err_text(load(DatasetName::Mnist, &root, Split::Test, None));
    assert!(msg.contains("t10k-images-idx3-ubyte") && msg.contains("truncated"), "{msg}");
    // Gzipped: the same cut inside the compressed stream's content.
    let gz = root.join("mnist/train-images-idx3-ubyte.gz");
    std::fs::write(&gz, gzip(&bytes[..bytes.len() - 6])).unwrap();
    let msg = err_text(load(DatasetName::Mnist, &root, Split::Train, None));
    assert!(msg.contains("train-images-idx3-ubyte.gz") && msg.contains("truncated"), "{msg}");
    // Gzipped with more data than the header declares.
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0; 784]);
    std::fs::write(&gz, gzip(&longer)).unwrap();
    let msg = err_text(load(DatasetName::Mnist, &root, Split::Train, None));
    assert!(msg.contains("train-images-idx3-ubyte.gz") && msg.contains("trailing bytes"), "{msg}");
    assert_eq!(load(DatasetName::Mnist, &root, Split::Train, Some(2)).unwrap().len(), 2, "a limit reads only the first items");
    // A file that ends inside the header.
    std::fs::write(&plain, [0u8, 0, 8]).unwrap();
    let msg = err_text(load(DatasetName::Mnist, &root, Split::Test, None));
    assert!(msg.contains("truncated") && msg.contains("magic"), "{msg}");
}

#[test]
fn idx_lying_header_fails_fast_without_a_huge_allocation() {
    // 4e9 images of 28x28 would be 3 TB; the file holds 2 images.
    let root = mnist_root(2);
    let data = vec![7u8; 2 * 784];
    let lying = idx_bytes(3, &[4_000_000_000, 28, 28], &data);
    std::fs::write(root.join("mnist/t10k-images-idx3-ubyte"), &lying).unwrap();
    std::fs::write(root.join("mnist/train-images-idx3-ubyte.gz"), gzip(&lying)).unwrap();
    // The plain file's length gives it away; the gzipped one is refused by the cap on one
    // array (12.5 TB of f32) before its data is read.
    let msg = err_text(load(DatasetName::Mnist, &root, Split::Test, None));
    assert!(msg.contains("4000000000") && msg.contains("truncated"), "{msg}");
    let msg = err_text(load(DatasetName::Mnist, &root, Split::Train, None));
    assert!(msg.contains("4000000000") && msg.contains("too large"), "{msg}");
}

#[test]
fn idx_label_out_of_range_and_count_mismatch_are_named() {
    let root = mnist_root(5);
    std::fs::write(root.join("mnist/t10k-labels-idx1-ubyte"), idx_bytes(1, &[5], &[1, 2, 3, 10, 4])).unwrap();
    let msg = err_text(load(DatasetName::Mnist, &root, Split::Test, None));
    assert!(msg.contains("t10k-labels-idx1-ubyte") && msg.contains("label 10 at index 3 is out of range"), "{msg}");

    std::fs::write(root.join("mnist/t10k-labels-idx1-ubyte"), idx_bytes(1, &[4], &[1, 2, 3, 4])).unwrap();
    let msg = err_text(load(DatasetName::Mnist, &root, Split::Test, None));
    assert!(msg.contains("holds 5 images") && msg.contains("holds 4 labels"), "{msg}");
}

#[test]
fn missing_idx_files_say_what_to_download_and_where_to_put_it() {
    let root = temp_dir("data-empty");
    // Downloads off and an empty cache: the message, without touching the network.
    let offline = DataCache { root: root.join("cache"), download: false, ..DataCache::from_env() };
    let load = |name, root: &Path, split, limit| load_with(name, root, split, limit, &offline);
    let err = load(DatasetName::Mnist, &root, Split::Train, None).unwrap_err();
    assert!(matches!(err, Error::MissingData(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("train-images-idx3-ubyte.gz") && msg.contains("t10k-labels-idx1-ubyte.gz"), "{msg}");
    assert!(msg.contains(&root.join("mnist").display().to_string()), "{msg}");
    assert!(msg.contains("yann.lecun.com/exdb/mnist") && msg.contains("ossci-datasets"), "{msg}");
    let msg = err_text(load(DatasetName::FashionMnist, &root, Split::Test, None));
    assert!(msg.contains("zalandoresearch/fashion-mnist"), "{msg}");
    let msg = err_text(load(DatasetName::Cifar10, &root, Split::Test, None));
    assert!(msg.contains("cifar-10-binary.tar.gz") && msg.contains("test_batch.bin"), "{msg}");
}

/// A CIFAR record: label, then red, green, blue planes of 32x32; plane value
/// = 10 (c + 1) + i, except red (row 1, col 2) = 200.
fn cifar_record(i: usize, label: u8) -> Vec<u8> {
    let mut r = vec![label];
    for c in 0..3 {
        r.extend(std::iter::repeat_n((10 * (c + 1) + i) as u8, 1024));
    }
    r[1 + 32 + 2] = 200;
    r
}

fn cifar_bin_root(per_file: usize) -> TempDir {
    let root = temp_dir("data-cifar-bin");
    let folder = root.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&folder).unwrap();
    let mut i = 0;
    for name in ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"] {
        let bytes: Vec<u8> = (0..per_file)
            .flat_map(|_| {
                i += 1;
                cifar_record(i, (i % 10) as u8)
            })
            .collect();
        std::fs::write(folder.join(name), bytes).unwrap();
    }
    root
}

#[test]
fn cifar_binary_records_are_channel_major() {
    let root = cifar_bin_root(2);
    let test = load(DatasetName::Cifar10, &root, Split::Test, None).unwrap();
    assert_eq!(test.images.dim(), (2, 3, 32, 32));
    assert_eq!(test.labels, vec![1, 2]); // records 11 and 12 of the counter
    assert_eq!(test.images[[0, 0, 1, 2]], 200.0 / 255.0);
    assert_eq!(test.images[[0, 0, 0, 0]], (10 + 11) as f32 / 255.0);
    assert_eq!(test.images[[1, 1, 5, 5]], (20 + 12) as f32 / 255.0);
    assert_eq!(test.images[[1, 2, 31, 31]], (30 + 12) as f32 / 255.0);
    assert_eq!(test.classes[0], "airplane");

    let train = load(DatasetName::Cifar10, &root, Split::Train, None).unwrap();
    assert_eq!(train.labels, vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 0]);
    let few = load(DatasetName::Cifar10, &root, Split::Train, Some(3)).unwrap();
    assert_eq!(few.labels, vec![1, 2, 3]);
    assert_eq!(few.images[[2, 0, 0, 0]], 13.0 / 255.0);
}

#[test]
fn cifar_binary_errors_name_the_file() {
    let root = cifar_bin_root(2);
    let test = root.join("cifar-10-batches-bin/test_batch.bin");
    let bytes = std::fs::read(&test).unwrap();
    std::fs::write(&test, &bytes[..bytes.len() - 5]).unwrap();
    let msg = err_text(load(DatasetName::Cifar10, &root, Split::Test, None));
    assert!(msg.contains("test_batch.bin") && msg.contains("multiple of the 3073-byte record"), "{msg}");

    let mut bad = bytes.clone();
    bad[3073] = 11;
    std::fs::write(&test, &bad).unwrap();
    let msg = err_text(load(DatasetName::Cifar10, &root, Split::Test, None));
    assert!(msg.contains("label 11 at index 1 is out of range"), "{msg}");

    std::fs::remove_file(root.join("cifar-10-batches-bin/data_batch_3.bin")).unwrap();
    let err = load(DatasetName::Cifar10, &root, Split::Train, None).unwrap_err();
    assert!(matches!(err, Error::MissingData(_)) && err.to_string().contains("data_batch_3.bin"), "{err}");
}

/// A PNG of one flat colour.
fn write_png(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
    image::RgbImage::from_pixel(w, h, image::Rgb(rgb)).save(path).unwrap();
}

fn cifar_folder_root() -> TempDir {
    let root = temp_dir("data-cifar-folder");
    for (label, class) in DatasetName::Cifar10.classes().iter().enumerate() {
        let dir = root.join("cifar10-jpeg/test").join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for k in 0..2u8 {
            write_png(&dir.join(format!("000{k}.png")), 32, 32, [label as u8 * 20, k * 100, 7]);
        }
    }
    root
}

#[test]
fn cifar_image_folders_load_round_robin_over_classes() {
    let root = cifar_folder_root();
    let set = load(DatasetName::Cifar10, &root, Split::Test, None).unwrap();
    assert_eq!(set.images.dim(), (20, 3, 32, 32));
    let expected: Vec<usize> = (0..20).map(|i| i % 10).collect();
    assert_eq!(set.labels, expected);
    // Image 13 = file 0001.png of class 3: colour (60, 100, 7).
    assert_eq!(set.images[[13, 0, 5, 5]], 60.0 / 255.0);
    assert_eq!(set.images[[13, 1, 5, 5]], 100.0 / 255.0);
    assert_eq!(set.images[[13, 2, 5, 5]], 7.0 / 255.0);
    let few = load(DatasetName::Cifar10, &root, Split::Test, Some(3)).unwrap();
    assert_eq!(few.labels, vec![0, 1, 2]);
}

#[test]
fn image_folder_classes_are_sorted_names_and_jpeg_decodes() {
    let root = temp_dir("data-folder");
    for class in ["zebra", "ant"] {
        std::fs::create_dir_all(root.join(class)).unwrap();
    }
    write_png(&root.join("zebra/b.png"), 8, 6, [255, 0, 0]);
    write_png(&root.join("zebra/a.png"), 8, 6, [0, 255, 0]);
    image::RgbImage::from_pixel(8, 6, image::Rgb([128, 128, 128])).save(root.join("ant/x.jpg")).unwrap();
    let set = load_image_folder(&root, None, None).unwrap();
    assert_eq!(set.classes, vec!["ant", "zebra"]);
    assert_eq!(set.images.dim(), (3, 3, 6, 8));
    assert_eq!(set.labels, vec![0, 1, 1]);
    assert!((set.images[[0, 0, 3, 3]] - 128.0 / 255.0).abs() < 3.0 / 255.0, "JPEG grey decoded as {}", set.images[[0, 0, 3, 3]]);
    assert_eq!(set.images[[1, 1, 0, 0]], 1.0, "zebra/a.png comes before zebra/b.png");
}

#[test]
fn image_folder_unreadable_or_odd_sized_images_are_named() {
    let root = temp_dir("data-folder-bad");
    std::fs::create_dir_all(root.join("cat")).unwrap();
    write_png(&root.join("cat/0000.png"), 8, 8, [1, 2, 3]);
    std::fs::write(root.join("cat/0001.jpg"), b"this is not a jpeg").unwrap();
    let msg = err_text(load_image_folder(&root, None, None));
    assert!(msg.contains("0001.jpg") && msg.contains("cannot decode image"), "{msg}");

    std::fs::remove_file(root.join("cat/0001.jpg")).unwrap();
    write_png(&root.join("cat/0002.png"), 9, 8, [1, 2, 3]);
    let msg = err_text(load_image_folder(&root, None, None));
    assert!(msg.contains("0002.png") && msg.contains("share one size"), "{msg}");
}

#[test]
fn dataset_names_parse() {
    assert_eq!("fashion-mnist".parse::<DatasetName>().unwrap(), DatasetName::FashionMnist);
    assert_eq!("CIFAR10".parse::<DatasetName>().unwrap(), DatasetName::Cifar10);
    let msg = "imagenet".parse::<DatasetName>().unwrap_err().to_string();
    assert!(msg.contains("imagenet") && msg.contains("mnist, fashion-mnist, cifar10, shapes"), "{msg}");
    assert_eq!(resolve_data_dir(Some(PathBuf::from("/x/y"))), PathBuf::from("/x/y"));
}

#[test]
fn captions_follow_templates_and_seeds() {
    assert_eq!(class_caption(DatasetName::Mnist, 7, 0), "a handwritten 7");
    assert_eq!(class_caption(DatasetName::Mnist, 7, 1), "the digit seven");
    assert_eq!(class_caption(DatasetName::Mnist, 1, 3), "a one written by hand");
    assert_eq!(class_caption(DatasetName::Mnist, 8, 3), "an eight written by hand");
    assert_eq!(class_caption(DatasetName::Cifar10, 3, 0), "a photo of a cat");
    assert_eq!(class_caption(DatasetName::Cifar10, 0, 0), "a photo of an airplane");
    assert_eq!(class_caption(DatasetName::FashionMnist, 3, 0), "a picture of a dress");
    assert_eq!(class_caption(DatasetName::FashionMnist, 9, 1), "a photo of an ankle boot");
    assert_eq!(class_prompts(DatasetName::Cifar10).len(), 10);

    let labels: Vec<usize> = (0..200).map(|i| i % 10).collect();
    let a = captions_for(DatasetName::Mnist, &labels, 1);
    assert_eq!(a, captions_for(DatasetName::Mnist, &labels, 1));
    assert_ne!(a, captions_for(DatasetName::Mnist, &labels, 2));
    let distinct: std::collections::HashSet<_> = a.iter().filter(|c| c.contains('7') || c.contains("seven")).collect();
    assert_eq!(distinct.len(), 5, "all five MNIST templates used for the 20 sevens: {distinct:?}");
    assert!(a.iter().zip(&labels).all(|(c, &l)| c.contains(&l.to_string()) || c.contains(dalle::data::captions::DIGIT_WORDS[l])));
}

#[test]
fn shuffling_is_a_seeded_permutation_and_batches_cover_an_epoch() {
    let p = epoch_permutation(100, 3, 0);
    let mut sorted = p.clone();
    sorted.sort();
    assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    assert_eq!(p, epoch_permutation(100, 3, 0));
    assert_ne!(p, epoch_permutation(100, 3, 1));
    assert_ne!(p, epoch_permutation(100, 4, 0));

    let batches = epoch_batches(10, 4, None, 0, false);
    assert_eq!(batches, vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]);
    assert_eq!(epoch_batches(10, 4, Some(0), 0, true).len(), 2);

    let mut sampler = BatchSampler::new(10, 3, 7);
    let epoch0: Vec<usize> = (0..3).flat_map(|_| sampler.next_batch()).collect();
    let distinct: std::collections::HashSet<_> = epoch0.iter().collect();
    assert_eq!(distinct.len(), 9, "one epoch's batches never repeat an index");
    assert_eq!(sampler.epoch(), 0);
    sampler.next_batch();
    assert_eq!(sampler.epoch(), 1);
    assert_eq!(BatchSampler::new(5, 64, 0).next_batch().len(), 5, "batch size is clamped to n");
}

#[test]
fn gathering_a_batch_picks_the_right_images() {
    let images = Array4::from_shape_fn((6, 1, 2, 2), |(n, _, h, w)| (n * 100 + h * 2 + w) as f32);
    let batch = gather_images(&images, &[4, 1]);
    assert_eq!(batch.dim(), (2, 1, 2, 2));
    assert_eq!(batch[[0, 0, 1, 1]], 403.0);
    assert_eq!(batch[[1, 0, 0, 1]], 101.0);
}

// ---- The real data in ../shared/data (present on every developer machine and in CI). ----

fn real_data_dir() -> PathBuf {
    let dir = resolve_data_dir(None);
    assert!(dir.join("mnist").is_dir(), "real data not found at {}: set DALLE_DATA_DIR", dir.display());
    dir
}

#[test]
fn real_mnist_has_the_official_counts_and_first_labels() {
    let dir = real_data_dir();
    let train = load(DatasetName::Mnist, &dir, Split::Train, None).unwrap();
    assert_eq!(train.images.dim(), (60000, 1, 28, 28));
    assert_eq!(train.labels[0], 5, "MNIST train[0] is a 5");
    let hist = train.label_histogram();
    // The official counts range from 5421 (digit 5) to 6742 (digit 1).
    assert_eq!(hist[5], 5421);
    assert_eq!(hist[1], 6742);
    assert!(hist.iter().all(|&c| (5400..=6800).contains(&c)), "{hist:?}");
    let (lo, hi) = train.images.iter().fold((1.0f32, 0.0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    assert_eq!((lo, hi), (0.0, 1.0));

    let test = load(DatasetName::Mnist, &dir, Split::Test, None).unwrap();
    assert_eq!(test.len(), 10000);
    assert_eq!(test.labels[0], 7, "MNIST test[0] is a 7");
}

#[test]
fn real_fashion_mnist_is_balanced() {
    let dir = real_data_dir();
    let train = load(DatasetName::FashionMnist, &dir, Split::Train, None).unwrap();
    assert_eq!(train.label_histogram(), vec![6000; 10]);
    let test = load(DatasetName::FashionMnist, &dir, Split::Test, Some(500)).unwrap();
    assert_eq!(test.images.dim(), (500, 1, 28, 28));
    assert_eq!(train.classes[9], "Ankle boot");
}

#[test]
fn real_cifar10_jpeg_test_folder_has_10000_images_in_official_class_order() {
    let dir = real_data_dir();
    let test = load(DatasetName::Cifar10, &dir, Split::Test, None).unwrap();
    assert_eq!(test.images.dim(), (10000, 3, 32, 32));
    let official = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];
    assert_eq!(test.classes, official);
    assert_eq!(test.label_histogram(), vec![1000; 10]);
    assert_eq!(&test.labels[..10], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    // Natural photos: mean pixel near 0.47 (the official CIFAR-10 channel means are 0.49, 0.48, 0.45).
    let mean = test.images.mean().unwrap();
    assert!((0.42..0.52).contains(&mean), "mean pixel {mean}");
}
