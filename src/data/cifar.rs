//! CIFAR-10, from the official binary batches or from image folders.
//!
//! The binary version (`cifar-10-batches-bin/`) holds `data_batch_1.bin` ..
//! `data_batch_5.bin` (10 000 records each) and `test_batch.bin`. A record is
//! 1 label byte then 3072 pixel bytes, channel-major: 1024 red, 1024 green,
//! 1024 blue, each a 32x32 image in row order. That is exactly the `(C, H, W)`
//! layout, so a record is copied, not transposed.
//!
//! The image-folder version (`train/<class>/*.jpg`, `test/<class>/...`) is read
//! by [`load_image_folder`], which works for any such folder: classes are the
//! sorted sub-folder names, files are sorted by name within a class.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use ndarray::{Array4, Axis};
use ndarray::parallel::prelude::*;

use super::idx::labels_in_range;
use super::{missing_data, DatasetName, ImageDataset, Split};
use crate::{Error, Result};

/// Pixels per CIFAR-10 image: 3 channels of 32x32.
pub const CIFAR_IMAGE_BYTES: usize = 3 * 32 * 32;
/// The side of a CIFAR-10 image, in pixels.
pub const CIFAR_SIDE: u32 = 32;
/// Bytes per record in a binary batch: the label byte and the pixels.
pub const CIFAR_RECORD_BYTES: usize = 1 + CIFAR_IMAGE_BYTES;

/// The binary batch files of a split, in order.
pub fn cifar_batch_files(split: Split) -> Vec<String> {
    match split {
        Split::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
        Split::Test => vec!["test_batch.bin".to_string()],
    }
}

/// Where a copy of CIFAR-10 was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CifarSource {
    /// A folder holding the official `.bin` batches.
    Binary(PathBuf),
    /// A folder holding `train/<class>/` and `test/<class>/` image folders.
    ImageFolder(PathBuf),
}

/// Looks for `split` of CIFAR-10 under `data_dir`, in this order:
/// `cifar10-jpeg/` (image folders), `cifar-10-batches-bin/` (binary),
/// `cifar10/` (either, or `cifar10/cifar-10-batches-bin/`), then `data_dir` itself.
pub fn find_cifar10(data_dir: &Path, split: Split) -> Option<CifarSource> {
    let candidates = [
        data_dir.join("cifar10-jpeg"),
        data_dir.join("cifar-10-batches-bin"),
        data_dir.join("cifar10"),
        data_dir.join("cifar10").join("cifar-10-batches-bin"),
        data_dir.to_path_buf(),
    ];
    let first_batch = &cifar_batch_files(split)[0];
    candidates.into_iter().find_map(|dir| {
        if dir.join(first_batch).is_file() {
            Some(CifarSource::Binary(dir))
        } else if dir.join(split.as_str()).is_dir() && dir.join(split.as_str()).join("airplane").is_dir() {
            Some(CifarSource::ImageFolder(dir))
        } else {
            None
        }
    })
}

/// Loads `split` of CIFAR-10 from wherever [`find_cifar10`] finds it, keeping at most `limit` images.
pub fn load_cifar10(data_dir: &Path, split: Split, limit: Option<usize>) -> Result<ImageDataset> {
    match find_cifar10(data_dir, split) {
        Some(CifarSource::Binary(dir)) => load_cifar_binary(&dir, split, limit),
        Some(CifarSource::ImageFolder(dir)) => {
            let folder = dir.join(split.as_str());
            let set = load_image_folder(&folder, limit, Some((CIFAR_SIDE, CIFAR_SIDE)))?;
            let official = DatasetName::Cifar10.classes();
            if set.classes != official {
                return Err(Error::format(
                    &folder,
                    format!("class folders are {:?}, expected CIFAR-10's {:?}", set.classes, official),
                ));
            }
            Ok(set)
        }
        None => Err(missing_data(
            DatasetName::Cifar10,
            &data_dir.join("cifar-10-batches-bin"),
            &[
                "data_batch_1.bin .. data_batch_5.bin, test_batch.bin (or image folders \
                 cifar10-jpeg/train/<class>/*.jpg and cifar10-jpeg/test/<class>/*.jpg)",
            ],
        )),
    }
}

/// Reads the first `limit` records of one binary batch file: `(pixels, labels)`,
/// pixels as bytes in record order (`(n, 3, 32, 32)` once reshaped).
pub fn read_cifar_batch(path: &Path, limit: Option<usize>) -> Result<(Vec<u8>, Vec<usize>)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len == 0 || len % CIFAR_RECORD_BYTES as u64 != 0 {
        return Err(Error::format(
            path,
            format!(
                "file length {len} is not a positive multiple of the {CIFAR_RECORD_BYTES}-byte record \
                 (1 label byte + {CIFAR_IMAGE_BYTES} pixel bytes): truncated or not a CIFAR-10 batch"
            ),
        ));
    }
    let records = (len / CIFAR_RECORD_BYTES as u64) as usize;
    let n = limit.map_or(records, |l| l.min(records));
    if n == 0 {
        return Err(Error::format(path, "no records to read (--limit 0?)"));
    }
    crate::io::limits::check_alloc(&path.display(), &[n, CIFAR_RECORD_BYTES], 4)?;
    let mut bytes = Vec::with_capacity(n * CIFAR_RECORD_BYTES); // bounded by the file's real length
    BufReader::new(file)
        .take((n * CIFAR_RECORD_BYTES) as u64)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() != n * CIFAR_RECORD_BYTES {
        return Err(Error::format(path, format!("truncated while reading: got {} of {} bytes", bytes.len(), n * CIFAR_RECORD_BYTES)));
    }
    let label_bytes: Vec<u8> = bytes.chunks_exact(CIFAR_RECORD_BYTES).map(|r| r[0]).collect();
    let labels = labels_in_range(path, &label_bytes, 10)?;
    let mut pixels = Vec::with_capacity(n * CIFAR_IMAGE_BYTES);
    for record in bytes.chunks_exact(CIFAR_RECORD_BYTES) {
        pixels.extend_from_slice(&record[1..]);
    }
    Ok((pixels, labels))
}

/// Loads `split` from the binary batches in `folder`, reading only as many files as `limit` needs.
pub fn load_cifar_binary(folder: &Path, split: Split, limit: Option<usize>) -> Result<ImageDataset> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for name in cifar_batch_files(split) {
        let remaining = limit.map(|l| l - labels.len());
        if remaining == Some(0) {
            break;
        }
        let path = folder.join(&name);
        if !path.is_file() {
            return Err(missing_data(DatasetName::Cifar10, folder, &[&name]));
        }
        let (p, l) = read_cifar_batch(&path, remaining)?;
        pixels.extend(p);
        labels.extend(l);
    }
    let pixels: Vec<f32> = pixels.iter().map(|&b| b as f32 / 255.0).collect();
    let images = Array4::from_shape_vec((labels.len(), 3, 32, 32), pixels).map_err(|e| Error::format(folder, e.to_string()))?;
    Ok(ImageDataset { images, labels, classes: DatasetName::Cifar10.classes(), captions: None })
}

/// Loads an image folder `folder/<class>/<file>.{jpg,jpeg,png}` as RGB.
///
/// Classes are the sorted sub-folder names. Images are ordered round-robin over
/// the classes (file 0 of every class, then file 1, ...; files sorted by name),
/// so every prefix is class-balanced and `limit` gives a fair smoke-test subset.
/// Decoding runs in parallel with rayon. All images must share one size:
/// `size` (width, height) when given (CIFAR's 32x32), else the first image's.
/// Every class folder must hold at least one image. Sizes are read from the
/// image headers and checked ([`crate::io::limits::check_alloc`]) before the
/// array is allocated or anything is decoded.
pub fn load_image_folder(folder: &Path, limit: Option<usize>, size: Option<(u32, u32)>) -> Result<ImageDataset> {
    let mut classes: Vec<String> = read_dir_sorted(folder)?
        .into_iter()
        .filter(|p| p.is_dir())
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    classes.sort();
    let mut per_class: Vec<Vec<PathBuf>> = Vec::with_capacity(classes.len());
    for class in &classes {
        let files = read_dir_sorted(&folder.join(class))?
            .into_iter()
            .filter(|p| p.is_file() && is_image_file(p))
            .collect();
        per_class.push(files);
    }
    if let Some((class, _)) = classes.iter().zip(&per_class).find(|(_, files)| files.is_empty()) {
        return Err(Error::format(folder.join(class), "class folder holds no .jpg/.jpeg/.png image"));
    }
    let longest = per_class.iter().map(Vec::len).max().unwrap_or(0);
    let mut files: Vec<(PathBuf, usize)> = Vec::new();
    'interleave: for i in 0..longest {
        for (label, class_files) in per_class.iter().enumerate() {
            if let Some(f) = class_files.get(i) {
                if limit.is_some_and(|l| files.len() >= l) {
                    break 'interleave;
                }
                files.push((f.clone(), label));
            }
        }
    }
    if files.is_empty() {
        return Err(Error::MissingData(format!(
            "{}: no .jpg/.jpeg/.png images found in class sub-folders (expected {}/<class>/<image>.jpg)",
            folder.display(),
            folder.display()
        )));
    }

    let (first_path, _) = &files[0];
    let (w, h) = match size {
        Some(size) => size,
        None => image_dimensions(first_path)?,
    };
    // The header's size, checked before the array exists (a 500 KB PNG can claim 10000x10000).
    crate::io::limits::check_alloc(&folder.display(), &[files.len(), 3, h as usize, w as usize], 4)?;
    let mut images = Array4::<f32>::zeros((files.len(), 3, h as usize, w as usize));
    images
        .axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(files.par_iter())
        .try_for_each(|(mut slot, (path, _))| -> Result<()> {
            // The header first: a wrong size is refused before the pixels are decoded.
            let (iw, ih) = image_dimensions(path)?;
            if (iw, ih) != (w, h) {
                let expected = if size.is_some() { "this data set's".to_string() } else { format!("{}'s", first_path.display()) };
                return Err(Error::format(path, format!("image is {iw}x{ih}, not {expected} {w}x{h}: all images of a folder must share one size")));
            }
            let img = decode_rgb(path)?;
            if img.dimensions() != (w, h) {
                return Err(Error::format(path, format!("decodes to {}x{}, but its header says {w}x{h}", img.width(), img.height())));
            }
            for (x, y, px) in img.enumerate_pixels() {
                for c in 0..3 {
                    slot[[c, y as usize, x as usize]] = px[c] as f32 / 255.0;
                }
            }
            Ok(())
        })?;
    let labels = files.iter().map(|(_, l)| *l).collect();
    Ok(ImageDataset { images, labels, classes, captions: None })
}

/// (width, height) from an image file's header, without decoding its pixels.
fn image_dimensions(path: &Path) -> Result<(u32, u32)> {
    image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .into_dimensions()
        .map_err(|e| Error::format(path, format!("cannot decode image (its header): {e}")))
}

fn decode_rgb(path: &Path) -> Result<image::RgbImage> {
    let img = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .decode()
        .map_err(|e| Error::format(path, format!("cannot decode image: {e}")))?;
    Ok(img.to_rgb8())
}

fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| Error::io(dir, e))?;
    entries.sort();
    Ok(entries)
}
