//! Hostile inputs: every loader and flag class fed what a careless or hostile user
//! would give it. Each case asserts an error of the right kind, and no panic.
//!
//! The memory cap: this test binary installs a global allocator that records the
//! largest single allocation, and lowers the loaders' cap on one array
//! ([`dalle::io::limits::set_max_bytes`]) to 64 MiB. A lying header that slipped past a
//! check would either allocate more than the cap (caught by the recorder) or be
//! refused with [`Error::Limit`]; it cannot pass by luck on a machine with a lot of RAM.
//! The property test at the end mutates valid files (truncate, flip bytes, rewrite
//! header numbers) and asserts `Err` where the file can no longer be valid, never a
//! panic, and never an allocation above the cap.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use dalle::data::batch::BatchSampler;
use dalle::data::cifar::{load_image_folder, read_cifar_batch};
use dalle::data::{load, DatasetName, Split};
use dalle::io::checkpoint;
use dalle::io::limits;
use dalle::io::npy::parse_npy;
use dalle::models::clip::config::ClipConfig;
use dalle::nn::{Forward, Linear, Module};
use dalle::optim::{Adam, Optimizer};
use dalle::tokenizer::TextTokenizer;
use dalle::train::{check_finite, CommonArgs, MetricsLog};
use dalle::{Error, Rng, Tensor};

mod common;
use common::temp_dir;

/// The largest single allocation this process made.
static LARGEST: AtomicUsize = AtomicUsize::new(0);

struct Recording;

unsafe impl GlobalAlloc for Recording {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Recording = Recording;

/// The cap on one loader array in this binary.
const CAP: u64 = 64 << 20;

fn cap() {
    limits::set_max_bytes(CAP);
}

fn assert_under_cap() {
    let largest = LARGEST.load(Ordering::Relaxed) as u64;
    assert!(largest <= CAP, "an allocation of {largest} bytes exceeded the {CAP}-byte cap");
}

fn err<T>(r: dalle::Result<T>) -> Error {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------- images

/// A PNG that is only a signature, an IHDR claiming `w x h` RGB, an empty IDAT and IEND: a few dozen
/// bytes whose header asks for `3 w h` bytes of pixels.
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc.sum().to_be_bytes());
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &[0x78, 0x9c]); // the start of a zlib stream, and no pixels
    chunk(&mut png, b"IEND", &[]);
    png
}

fn write_png(path: &Path, w: u32, h: u32) {
    image::RgbImage::from_pixel(w, h, image::Rgb([10, 20, 30])).save(path).unwrap();
}

/// `root/cifar10-jpeg/train/<class>/0.png` for CIFAR's ten classes, each `side x side`.
fn cifar_folder(root: &Path, side: u32) -> PathBuf {
    let train = root.join("cifar10-jpeg/train");
    for class in DatasetName::Cifar10.classes() {
        std::fs::create_dir_all(train.join(&class)).unwrap();
        write_png(&train.join(&class).join("0.png"), side, side);
    }
    train
}

#[test]
fn image_folder_sized_by_a_lying_first_image_is_refused_before_allocation() {
    cap();
    let root = temp_dir("hostile-png");
    std::fs::create_dir_all(root.join("cat")).unwrap();
    // 10000 x 10000 RGB would be 1.2 GB of f32 per channel plane set: over the cap.
    std::fs::write(root.join("cat/0.png"), png_header_only(10_000, 10_000)).unwrap();
    let e = err(load_image_folder(&root, None, None));
    assert!(matches!(e, Error::Limit(_)), "{e}");
    assert!(e.to_string().contains("10000"), "{e}");
    assert_under_cap();
}

#[test]
fn cifar_folders_must_hold_32x32_images_in_every_class() {
    cap();
    // The same lying PNG in a CIFAR folder: refused as not 32x32, before decoding.
    let root = temp_dir("hostile-cifar-huge");
    let train = cifar_folder(&root, 32);
    std::fs::write(train.join("airplane/0.png"), png_header_only(10_000, 10_000)).unwrap();
    let e = err(load(DatasetName::Cifar10, &root, Split::Train, None));
    assert!(matches!(e, Error::Format { .. }) && e.to_string().contains("32x32"), "{e}");

    let root = temp_dir("hostile-cifar-64");
    cifar_folder(&root, 64);
    let e = err(load(DatasetName::Cifar10, &root, Split::Train, None));
    assert!(matches!(e, Error::Format { .. }) && e.to_string().contains("64x64"), "{e}");

    let root = temp_dir("hostile-cifar-empty");
    let train = cifar_folder(&root, 32);
    std::fs::remove_file(train.join("truck/0.png")).unwrap();
    let e = err(load(DatasetName::Cifar10, &root, Split::Train, None));
    assert!(e.to_string().contains("truck") && e.to_string().contains("holds no"), "{e}");

    let root = temp_dir("hostile-cifar-ok");
    cifar_folder(&root, 32);
    assert_eq!(load(DatasetName::Cifar10, &root, Split::Train, None).unwrap().image_shape(), (3, 32, 32));
    assert_under_cap();
}

// ---------------------------------------------------------------- idx (MNIST)

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    dims.iter().for_each(|d| b.extend_from_slice(&d.to_be_bytes()));
    b.extend_from_slice(data);
    b
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn mnist_with(images: Vec<u8>, labels: Vec<u8>) -> common::TempDir {
    let root = temp_dir("hostile-mnist");
    std::fs::create_dir_all(root.join("mnist")).unwrap();
    std::fs::write(root.join("mnist/t10k-images-idx3-ubyte"), images).unwrap();
    std::fs::write(root.join("mnist/t10k-labels-idx1-ubyte"), labels).unwrap();
    root
}

#[test]
fn idx_files_with_no_images_wrong_sizes_or_bombs_are_refused() {
    cap();
    let root = mnist_with(idx(&[0, 28, 28], &[]), idx(&[0], &[]));
    let e = err(load(DatasetName::Mnist, &root, Split::Test, None));
    assert!(matches!(e, Error::Format { .. }) && e.to_string().contains("no images"), "{e}");

    // 32x32 "MNIST" (a CIFAR grey-scale, say) is not MNIST.
    let root = mnist_with(idx(&[2, 32, 32], &[0; 2048]), idx(&[2], &[1, 2]));
    let e = err(load(DatasetName::Mnist, &root, Split::Test, None));
    assert!(e.to_string().contains("32x32") && e.to_string().contains("28x28"), "{e}");

    // A gzip bomb: 200 MB of zeros in a 200 KB file, with a header that agrees with it.
    // (Compressed a megabyte at a time: this test must not allocate 200 MB itself.)
    let n = 255_000u32;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&idx(&[n, 28, 28], &[])).unwrap();
    let zeros = vec![0u8; 784 * 1000];
    (0..n / 1000).for_each(|_| enc.write_all(&zeros).unwrap());
    let root = temp_dir("hostile-mnist-bomb");
    std::fs::create_dir_all(root.join("mnist")).unwrap();
    std::fs::write(root.join("mnist/t10k-images-idx3-ubyte.gz"), enc.finish().unwrap()).unwrap();
    std::fs::write(root.join("mnist/t10k-labels-idx1-ubyte.gz"), gzip(&idx(&[n], &vec![0; n as usize]))).unwrap();
    let e = err(load(DatasetName::Mnist, &root, Split::Test, None));
    assert!(matches!(e, Error::Limit(_)), "{e}");
    assert_under_cap();
}

// ---------------------------------------------------------------- npy

fn npy(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(header.len() as u16).to_le_bytes());
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

#[test]
fn npy_fortran_order_lying_shapes_and_short_v2_files_are_refused() {
    cap();
    let p = Path::new("x.npy");
    let e = err(parse_npy(p, &npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }\n", &[0; 16])));
    assert!(e.to_string().contains("fortran_order"), "{e}");
    let e = err(parse_npy(p, &npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,), }\n", &[0; 16])));
    assert!(e.to_string().contains("1000000000000"), "{e}");
    let e = err(parse_npy(p, &npy("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,), }\n", &[])));
    assert!(e.to_string().contains("not a number"), "{e}");
    let e = err(parse_npy(p, b"\x93NUMPY\x02\x00\x00\x00\x00"));
    assert!(e.to_string().contains("truncated") && !e.to_string().contains("not supported"), "{e}");
    // A header of 60 KB of garbage is quoted by a short prefix only.
    let e = err(parse_npy(p, &npy(&"x".repeat(60_000), &[])));
    assert!(e.to_string().len() < 300, "{} bytes of message", e.to_string().len());
    assert_under_cap();
}

// ---------------------------------------------------------------- safetensors

fn model() -> Linear {
    Linear::new(3, 2, true, &mut Rng::new(0))
}

fn st_file(dir: &Path, header: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(format!("f{}.safetensors", data.len() + header.len()));
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    std::fs::write(&path, b).unwrap();
    path
}

#[test]
fn safetensors_failures_are_said_in_words() {
    cap();
    let dir = temp_dir("hostile-st");
    // A header length of 2^60.
    let path = dir.join("long.safetensors");
    std::fs::write(&path, (1u64 << 60).to_le_bytes()).unwrap();
    let e = err(checkpoint::load(&path));
    assert!(matches!(e, Error::Format { .. }) && e.to_string().contains("header length"), "{e}");
    assert!(!e.to_string().contains("HeaderTooLarge"), "{e}");
    // Offsets past the end of the file.
    let path = st_file(&dir, r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, &[0; 8]);
    let e = err(checkpoint::load(&path));
    assert!(e.to_string().contains("past its end"), "{e}");
    // Offsets that disagree with the shape.
    let path = st_file(&dir, r#"{"w":{"dtype":"F32","shape":[1000000,1000000],"data_offsets":[0,8]}}"#, &[0; 8]);
    let e = err(checkpoint::load(&path));
    assert!(e.to_string().contains("needs 4000000000000"), "{e}");
    // Not JSON.
    let path = st_file(&dir, "{not json", &[]);
    assert!(err(checkpoint::load(&path)).to_string().contains("not JSON"));
    assert!(err(checkpoint::read_header(&path)).to_string().contains("not JSON"));
    assert_under_cap();
}

fn save_i64(dir: &Path, values: &[i64]) -> PathBuf {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let header = format!(r#"{{"t":{{"dtype":"I64","shape":[{}],"data_offsets":[0,{}]}}}}"#, values.len(), data.len());
    st_file(dir, &header, &data)
}

#[test]
fn checkpoint_values_that_are_not_what_they_claim_are_refused() {
    cap();
    let dir = temp_dir("hostile-ckpt");
    // I64 loads only when f32 holds it exactly.
    assert_eq!(checkpoint::load(&save_i64(&dir, &[0, -5, 1 << 24])).unwrap().tensors["t"].as_slice().unwrap(), &[0.0, -5.0, 16_777_216.0]);
    let e = err(checkpoint::load(&save_i64(&dir, &[(1 << 24) + 1])));
    assert!(matches!(e, Error::Checkpoint(_)) && e.to_string().contains("16777217"), "{e}");

    // NaN weights are refused when loaded, and never saved.
    let m = model();
    let path = dir.join("nan.safetensors");
    let mut tensors: Vec<(String, ndarray::ArrayD<f32>)> = m.named_parameters().into_iter().map(|(n, t)| (n, t.to_array())).collect();
    tensors[0].1[[0, 0]] = f32::NAN;
    checkpoint::save_tensors(&path, &tensors, &Default::default()).unwrap();
    let e = err(checkpoint::load(&path).unwrap().load_into(&m, &[]));
    assert!(matches!(e, Error::NonFinite(_)), "{e}");
    m.named_parameters()[0].1.update(|a| a[[0, 0]] = f32::INFINITY);
    let e = err(checkpoint::save(&dir.join("inf.safetensors"), &m, None, &Default::default()));
    assert!(matches!(e, Error::NonFinite(_)), "{e}");
    assert!(!dir.join("inf.safetensors").exists());

    // `step`: missing and malformed are told apart.
    let ok = model();
    let path = dir.join("steps.safetensors");
    checkpoint::save(&path, &ok, None, &[("step".to_string(), "abc".to_string())].into()).unwrap();
    let e = err(checkpoint::load(&path).unwrap().step());
    assert!(e.to_string().contains("\"abc\", not a whole number"), "{e}");
    checkpoint::save(&path, &ok, None, &Default::default()).unwrap();
    assert!(err(checkpoint::load(&path).unwrap().step()).to_string().contains("no `step`"));

    // Optimiser state that does not fit: one prefix, not `checkpoint: checkpoint:`.
    let mut opt = Adam::new(ok.named_parameters(), 1e-3);
    let e = err(checkpoint::load(&path).unwrap().load_optimizer(&mut opt));
    assert!(e.to_string().matches("checkpoint:").count() == 1, "{e}");

    // A thousand unexpected names: the message lists ten and counts the rest.
    let many: Vec<(String, ndarray::ArrayD<f32>)> = (0..1000).map(|i| (format!("extra{i:04}"), ndarray::ArrayD::zeros(vec![1]))).collect();
    let path = dir.join("many.safetensors");
    checkpoint::save_tensors(&path, &many, &Default::default()).unwrap();
    let e = err(checkpoint::load(&path).unwrap().load_into(&ok, &[]));
    assert!(e.to_string().contains("and 990 more") && e.to_string().len() < 1000, "{e}");
    assert_under_cap();
}

// ---------------------------------------------------------------- CLIP configs

fn clip_config(text: &str) -> dalle::Result<ClipConfig> {
    ClipConfig::from_json_str(text, Path::new("config.json"))
}

#[test]
fn clip_configs_are_sized_before_anything_is_built() {
    cap();
    let golden = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/clip_tiny_a");
    let text = std::fs::read_to_string(Path::new(golden).join("config.json")).unwrap();
    // The count from the sizes is the model's own.
    let config = clip_config(&text).unwrap();
    let built = dalle::models::clip::ClipModel::new(&config, &mut Rng::new(0)).unwrap();
    assert_eq!(config.num_parameters(), built.num_parameters() as u128);

    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    for (tower, field, v) in [
        ("text_config", "hidden_size", 10_000_000u64),
        ("text_config", "num_hidden_layers", 1_000_000_000),
        ("vision_config", "intermediate_size", 1 << 40),
        ("text_config", "vocab_size", 1 << 40),
    ] {
        let mut bad = value.clone();
        bad[tower][field] = v.into();
        if field == "hidden_size" {
            bad[tower]["num_attention_heads"] = 1.into();
        }
        let e = err(clip_config(&bad.to_string()));
        assert!(matches!(e, Error::Limit(_)) && e.to_string().contains("parameters"), "{tower}.{field} = {v}: {e}");
    }
    // hidden = vocab = 2^40 (it used to overflow inside ndarray).
    value["text_config"]["hidden_size"] = (1u64 << 40).into();
    value["text_config"]["num_attention_heads"] = 1.into();
    value["text_config"]["vocab_size"] = (1u64 << 40).into();
    assert!(matches!(err(clip_config(&value.to_string())), Error::Limit(_)));

    // Towers left to their defaults (CLIP ViT-B/32, 151M parameters) and no weights file:
    // the missing file is noticed before the model is built.
    let dir = temp_dir("hostile-clip");
    std::fs::write(dir.join("config.json"), r#"{"text_config": {}, "vision_config": {}}"#).unwrap();
    let e = err(dalle::models::clip::load_pretrained(&dir));
    assert!(matches!(e, Error::Io { .. }) && e.to_string().contains("model.safetensors"), "{e}");
    // A config far larger than its weights is refused from the weights' header.
    std::fs::copy(Path::new(golden).join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    let e = err(dalle::models::clip::load_pretrained(&dir));
    assert!(e.to_string().contains("describes a model of"), "{e}");
    assert_under_cap();
}

// ---------------------------------------------------------------- tokenizer inputs

#[test]
fn tokenizer_errors_quote_a_short_prefix() {
    #[cfg(feature = "trained-bpe")]
    {
        let bpe = dalle::tokenizer::TrainedBpe::train(&["a cat", "a dog"], 300).unwrap();
        let long = "cat ".repeat(250_000);
        let e = err(bpe.encode_padded(&long, 16, false));
        assert!(e.to_string().len() < 300 && e.to_string().contains("1000000 bytes"), "{e}");
    }
}

// ---------------------------------------------------------------- flags

#[derive(clap::Parser, Debug)]
struct Flags {
    #[command(flatten)]
    common: CommonArgs,
}

#[test]
fn numeric_flags_are_validated_when_parsed() {
    use clap::Parser;
    for bad in [["--lr", "nan"], ["--lr", "inf"], ["--lr", "0"], ["--lr=-1", "--smoke"], ["--batch-size", "0"], ["--steps", "0"], ["--stop-at", "0"], ["--steps", "x"]] {
        let r = Flags::try_parse_from(std::iter::once("x").chain(bad));
        assert!(r.is_err(), "{bad:?} accepted");
    }
    let ok = Flags::try_parse_from(["x", "--lr", "3e-4", "--batch-size", "1"]).unwrap();
    assert_eq!((ok.common.lr, ok.common.batch_size), (Some(3e-4), Some(1)));
    let both = Flags::try_parse_from(["x", "--resume", "a", "--weights", "b"]).unwrap();
    assert!(matches!(both.common.refuse_unsupported("x", true, true), Err(Error::Config(_))));
}

// ---------------------------------------------------------------- training state

#[test]
fn non_finite_losses_name_the_step_and_the_parameter() {
    let m = model();
    let x = Tensor::new(ndarray::ArrayD::from_elem(vec![1, 3], f32::NAN));
    let loss = m.forward(&x).unwrap().mean();
    loss.backward();
    let e = err(check_finite(7, loss.item(), None, &m.named_parameters()));
    let msg = e.to_string();
    assert!(matches!(e, Error::NonFinite(_)) && msg.contains("step 7") && msg.contains("loss NaN") && msg.contains("`weight`"), "{msg}");
    assert!(check_finite(7, 1.0, Some(f32::INFINITY), &[]).is_err());
    assert!(check_finite(7, 1.0, Some(2.0), &[]).is_ok());
    assert!(dalle::models::vqvae::psnr(f64::NAN).is_nan());
    assert!(matches!(BatchSampler::try_new(0, 4, 0), Err(Error::Config(_))));
    assert!(matches!(BatchSampler::try_new(4, 0, 0), Err(Error::Config(_))));
}

#[test]
fn generator_and_sampler_states_continue_exactly_and_refuse_garbage() {
    let mut a = Rng::new(3);
    a.normal_array(&[17]);
    let mut b = Rng::from_state(&a.state()).unwrap();
    assert_eq!(a.normal_array(&[33]), b.normal_array(&[33]));
    for bad in ["", "zz:0:0", &"0".repeat(64), &format!("{}:x:1", "0".repeat(64)), &"9".repeat(100_000)] {
        let e = err(Rng::from_state(bad));
        assert!(e.to_string().len() < 300, "{e}");
    }
    let mut s = BatchSampler::new(10, 3, 1);
    (0..5).for_each(|_| drop(s.next_batch()));
    let mut t = BatchSampler::new(10, 3, 1);
    t.restore(&s.state()).unwrap();
    assert_eq!((0..7).map(|_| s.next_batch()).collect::<Vec<_>>(), (0..7).map(|_| t.next_batch()).collect::<Vec<_>>());
    for bad in ["", "1", "a:b", "0:4", "0:99", "18446744073709551616:0"] {
        assert!(t.restore(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn resumed_metrics_drop_later_steps_and_torn_lines() {
    let dir = temp_dir("hostile-metrics");
    let path = dir.join("metrics.jsonl");
    let mut log = MetricsLog::open(&path, false).unwrap();
    for step in 1..=6 {
        log.log(step, &[("loss", step as f64)]).unwrap();
    }
    drop(log);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("{\"step\":7,\"lo"); // a crash mid-line
    std::fs::write(&path, text).unwrap();
    let mut log = MetricsLog::resume(&path, 5).unwrap(); // the checkpoint was at step 4
    log.log(5, &[("loss", 50.0)]).unwrap();
    let steps: Vec<usize> = dalle::train::read_metrics(&path).unwrap().iter().map(|r| r.step).collect();
    assert_eq!(steps, vec![1, 2, 3, 4, 5]);
}

#[test]
fn stale_temporary_files_of_dead_writers_are_removed() {
    let dir = temp_dir("hostile-tmp");
    // A pid far above Linux's pid_max: no such process.
    let stale = dir.join(".checkpoint.safetensors.tmp.2000000000.0");
    let ours = dir.join(format!(".checkpoint.safetensors.tmp.{}.0", std::process::id()));
    let other = dir.join("notes.tmp.txt");
    for p in [&stale, &ours, &other] {
        std::fs::write(p, b"x").unwrap();
    }
    let removed = dalle::io::remove_stale_temps(&*dir).unwrap();
    if Path::new("/proc/self").exists() {
        assert_eq!(removed, 1);
        assert!(!stale.exists());
    }
    assert!(ours.exists() && other.exists());
}

#[test]
fn resume_refuses_a_step_beyond_the_run() {
    let dir = temp_dir("hostile-resume");
    let m = model();
    let opt = Adam::new(m.named_parameters(), 1e-3);
    let path = dir.join("c.safetensors");
    dalle::train::save_run(&path, &m, &opt, &dalle::train::RunState::new(usize::MAX)).unwrap();
    let mut opt = Adam::new(m.named_parameters(), 1e-3);
    let e = err(dalle::train::Resumed::load(&path, &m, &mut opt, 100));
    assert!(matches!(e, Error::Config(_)) && e.to_string().contains("beyond this run's 100 steps"), "{e}");
    let _ = opt.lr();
}

// ---------------------------------------------------------------- property test

/// A tiny deterministic generator for mutations (the crate's, seeded).
fn mutations(valid: &[u8], header_len: usize, seed: u64, count: usize) -> Vec<(String, Vec<u8>, bool)> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for i in 0..count {
        let mut b = valid.to_vec();
        // (what, bytes, must_fail)
        match i % 3 {
            0 => {
                let len = rng.below(valid.len());
                b.truncate(len);
                out.push((format!("truncate to {len}"), b, true));
            }
            1 => {
                let at = rng.below(valid.len());
                b[at] ^= 1 << rng.below(8);
                out.push((format!("flip a bit of byte {at}"), b, false));
            }
            _ => {
                // A header number rewritten: 4 header bytes set to a random or extreme value.
                let at = rng.below(header_len.saturating_sub(4).max(1));
                let v: u32 = [u32::MAX, 0, 1 << 31, rng.below(1 << 20) as u32][rng.below(4)];
                let end = (at + 4).min(b.len());
                b[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
                out.push((format!("header bytes {at}.. set to {v}"), b, false));
            }
        }
    }
    out
}

fn no_panic<T>(what: &str, f: impl FnOnce() -> dalle::Result<T>) -> dalle::Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| panic!("panicked on {what}"))
}

#[test]
fn mutated_files_give_errors_never_panics_or_huge_allocations() {
    cap();
    let dir = temp_dir("hostile-prop");
    let mut rng = Rng::new(11);
    let path = dir.join("file");

    // idx (plain): 3 images of 28x28.
    let images: Vec<u8> = (0..3 * 784).map(|i| i as u8).collect();
    let valid_idx = idx(&[3, 28, 28], &images);
    // .npy
    let valid_npy = dalle::io::npy::npy_bytes(&ndarray::Array2::<f32>::from_shape_fn((3, 5), |(i, j)| (i * 5 + j) as f32));
    // safetensors: a small model with an optimiser and metadata.
    let m = Linear::new(4, 3, true, &mut rng);
    let opt = Adam::new(m.named_parameters(), 1e-3);
    checkpoint::save(&path, &m, Some(&opt), &[("step".into(), "3".into())].into()).unwrap();
    let valid_st = std::fs::read(&path).unwrap();
    let st_header = 8 + u64::from_le_bytes(valid_st[..8].try_into().unwrap()) as usize;
    // CIFAR binary: 2 records.
    let valid_cifar: Vec<u8> = (0..2 * 3073).map(|i| if i % 3073 == 0 { 3 } else { i as u8 }).collect();

    let mut checked = 0;
    for (name, valid, header_len) in [("idx", &valid_idx, 16), ("npy", &valid_npy, 128), ("safetensors", &valid_st, st_header), ("cifar", &valid_cifar, 3073)] {
        for (what, bytes, must_fail) in mutations(valid, header_len, name.len() as u64, 150) {
            std::fs::write(&path, &bytes).unwrap();
            let label = format!("{name}: {what}");
            let result: dalle::Result<usize> = no_panic(&label, || match name {
                "idx" => dalle::data::idx::read_idx_u8(&path, 3, None).map(|a| a.data.len()),
                "npy" => dalle::io::read_npy(&path).map(|a| a.len()),
                "safetensors" => checkpoint::load(&path).and_then(|c| {
                    let fresh = Linear::new(4, 3, true, &mut Rng::new(0));
                    let mut opt = Adam::new(fresh.named_parameters(), 1e-3);
                    c.load_into(&fresh, &["optim."])?;
                    c.load_optimizer(&mut opt)?;
                    c.step()
                }),
                _ => read_cifar_batch(&path, None).map(|(p, _)| p.len()),
            });
            // A CIFAR file cut at a record boundary is a valid, shorter file.
            let still_valid = name == "cifar" && !bytes.is_empty() && bytes.len() % 3073 == 0;
            if must_fail && !still_valid {
                assert!(result.is_err(), "{label}: accepted");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 600);
    assert_under_cap();
}
