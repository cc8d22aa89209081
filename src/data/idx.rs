//! MNIST and Fashion-MNIST from their official idx files.
//!
//! An idx file is a 4-byte magic `0x00 0x00 <dtype> <ndim>`, then `ndim`
//! big-endian `u32` dimensions, then the values in C order. Images are
//! `0x00000803` (`u8`, 3 dims: count, rows, cols); labels `0x00000801`
//! (`u8`, 1 dim: count). The official copies are gzipped; both
//! `name.gz` and `name` are read, in that order.
//!
//! The header is checked against the bytes that really follow it before
//! anything is allocated: a header that claims four billion images of a file
//! of ten bytes is an error, not an out-of-memory crash.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use ndarray::Array4;

use super::{missing_data, DatasetName, ImageDataset, Split};
use crate::{Error, Result};

/// The only element type MNIST uses: unsigned byte.
const IDX_DTYPE_U8: u8 = 0x08;

/// The header and the first values of an idx file of unsigned bytes.
#[derive(Debug, Clone)]
pub struct IdxArray {
    /// The dimensions the header declares, e.g. `[60000, 28, 28]`.
    pub dims: Vec<usize>,
    /// The values of the first `n` items (`n = min(dims[0], limit)`), C order.
    pub data: Vec<u8>,
    /// How many items `data` holds.
    pub n: usize,
}

/// Finds `dir/stem.gz`, else `dir/stem`.
pub fn find_idx_file(dir: &Path, stem: &str) -> Option<PathBuf> {
    [format!("{stem}.gz"), stem.to_string()]
        .into_iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
}

/// Reads an idx file of `u8` values with `expected_ndim` dimensions, keeping the
/// first `limit` items (along the first dimension). `.gz` files are decompressed.
pub fn read_idx_u8(path: &Path, expected_ndim: usize, limit: Option<usize>) -> Result<IdxArray> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let gzipped = path.extension().is_some_and(|e| e == "gz");
    // For a plain file the length is known up front; for a gzipped one it is
    // only known by decompressing, so there the reads below are bounded instead.
    let plain_len = if gzipped { None } else { Some(file.metadata().map_err(|e| Error::io(path, e))?.len()) };
    let mut reader: Box<dyn Read> =
        if gzipped { Box::new(MultiGzDecoder::new(BufReader::new(file))) } else { Box::new(BufReader::new(file)) };

    let mut magic = [0u8; 4];
    read_exact_or(&mut reader, &mut magic, path, "file ends inside the 4-byte idx magic")?;
    if magic[0] != 0 || magic[1] != 0 {
        return Err(Error::format(
            path,
            format!(
                "wrong magic 0x{:02x}{:02x}{:02x}{:02x}: not an idx file (expected 0x00000803 for images, 0x00000801 for labels)",
                magic[0], magic[1], magic[2], magic[3]
            ),
        ));
    }
    if magic[2] != IDX_DTYPE_U8 {
        return Err(Error::format(path, format!("idx dtype 0x{:02x} is not supported: expected 0x08 (unsigned byte)", magic[2])));
    }
    let ndim = magic[3] as usize;
    if ndim != expected_ndim {
        return Err(Error::format(
            path,
            format!("idx header has {ndim} dimensions, expected {expected_ndim} (magic 0x00000{IDX_DTYPE_U8:x}0{expected_ndim})"),
        ));
    }
    let mut dim_bytes = vec![0u8; 4 * ndim];
    read_exact_or(&mut reader, &mut dim_bytes, path, "file ends inside the idx header's dimensions")?;
    let dims: Vec<usize> = dim_bytes
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();

    let count = dims[0];
    let item_len = dims[1..].iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let item_len = item_len.filter(|&l| l > 0).ok_or_else(|| {
        Error::format(path, format!("idx item dimensions {:?} are zero or overflow", &dims[1..]))
    })?;
    let full_len = (count as u64).checked_mul(item_len as u64);
    let header_len = 4 + 4 * ndim as u64;
    if let (Some(file_len), Some(full_len)) = (plain_len, full_len) {
        let available = file_len.saturating_sub(header_len);
        if available != full_len {
            return Err(Error::format(
                path,
                format!(
                    "header says {count} items of {dims:?} = {full_len} bytes, but {available} bytes follow the header ({})",
                    if available < full_len { "truncated file or lying header" } else { "trailing bytes" }
                ),
            ));
        }
    }

    let n = limit.map_or(count, |l| l.min(count));
    // The bytes, then as many f32 (a gzipped file's length says nothing about its data).
    crate::io::limits::check_alloc(&path.display(), &[n, item_len], 4)?;
    let wanted = n as u64 * item_len as u64;
    // `take` + `read_to_end` grows the buffer with the bytes that really arrive,
    // so the allocation is bounded by the data, never by the header's claim.
    let mut data = Vec::new();
    let mut body = reader.take(wanted);
    body.read_to_end(&mut data).map_err(|e| Error::format(path, format!("cannot read idx data: {e}")))?;
    // A whole gzipped file must also end where its header says (plain files were checked above).
    if n == count && plain_len.is_none() && data.len() as u64 == wanted {
        let mut extra = [0u8; 1];
        if body.into_inner().read(&mut extra).map_err(|e| Error::format(path, format!("cannot read idx data: {e}")))? > 0 {
            return Err(Error::format(path, format!("header says {count} items of {dims:?}, but more data follows them (trailing bytes)")));
        }
    }
    if (data.len() as u64) < wanted {
        return Err(Error::format(
            path,
            format!(
                "truncated: header says {count} items of {dims:?}, but the data stops after {} bytes ({} items); expected {wanted} bytes for {n} items",
                data.len(),
                data.len() / item_len
            ),
        ));
    }
    Ok(IdxArray { dims, data, n })
}

/// Reads an idx image file into `(N, 1, H, W)` values in `[0, 1]` (byte / 255).
pub fn read_idx_images(path: &Path, limit: Option<usize>) -> Result<Array4<f32>> {
    images_to_array(path, read_idx_u8(path, 3, limit)?)
}

/// `(N, rows, cols)` bytes to `(N, 1, rows, cols)` floats in `[0, 1]`.
fn images_to_array(path: &Path, idx: IdxArray) -> Result<Array4<f32>> {
    let (h, w) = (idx.dims[1], idx.dims[2]);
    let pixels: Vec<f32> = idx.data.iter().map(|&b| b as f32 / 255.0).collect();
    Array4::from_shape_vec((idx.n, 1, h, w), pixels).map_err(|e| Error::format(path, e.to_string()))
}

/// Reads an idx label file, checking that every label is `< num_classes`.
pub fn read_idx_labels(path: &Path, limit: Option<usize>, num_classes: usize) -> Result<Vec<usize>> {
    let idx = read_idx_u8(path, 1, limit)?;
    labels_in_range(path, &idx.data, num_classes)
}

/// Turns label bytes into indices, with an error naming the first label `>= num_classes`.
pub(crate) fn labels_in_range(path: &Path, bytes: &[u8], num_classes: usize) -> Result<Vec<usize>> {
    if let Some((i, &l)) = bytes.iter().enumerate().find(|(_, &l)| l as usize >= num_classes) {
        return Err(Error::format(path, format!("label {l} at index {i} is out of range: expected 0..{num_classes}")));
    }
    Ok(bytes.iter().map(|&l| l as usize).collect())
}

/// The official file stems of one split: `(images, labels)`.
pub fn idx_file_stems(split: Split) -> (&'static str, &'static str) {
    match split {
        Split::Train => ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        Split::Test => ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }
}

/// The side of an MNIST or Fashion-MNIST image, in pixels.
pub const MNIST_SIDE: usize = 28;

/// Loads `split` of MNIST or Fashion-MNIST from `folder` (which holds the four idx files).
pub fn load_idx_dataset(folder: &Path, name: DatasetName, split: Split, limit: Option<usize>) -> Result<ImageDataset> {
    let (image_stem, label_stem) = idx_file_stems(split);
    let (Some(image_path), Some(label_path)) = (find_idx_file(folder, image_stem), find_idx_file(folder, label_stem)) else {
        let all = [Split::Train, Split::Test].map(idx_file_stems);
        let files: Vec<String> = all.iter().flat_map(|(i, l)| [format!("{i}.gz"), format!("{l}.gz")]).collect();
        let files: Vec<&str> = files.iter().map(String::as_str).collect();
        return Err(missing_data(name, folder, &files));
    };
    let classes = name.classes();
    let images = read_idx_u8(&image_path, 3, limit)?;
    if images.dims[1..] != [MNIST_SIDE, MNIST_SIDE] {
        return Err(Error::format(
            &image_path,
            format!("images are {}x{}, but {name} images are {MNIST_SIDE}x{MNIST_SIDE}", images.dims[1], images.dims[2]),
        ));
    }
    if images.n == 0 {
        return Err(Error::format(&image_path, "holds no images (the header's count is 0)"));
    }
    let labels = read_idx_u8(&label_path, 1, limit)?;
    if images.dims[0] != labels.dims[0] {
        return Err(Error::format(
            &image_path,
            format!("holds {} images but {} holds {} labels", images.dims[0], label_path.display(), labels.dims[0]),
        ));
    }
    let labels = labels_in_range(&label_path, &labels.data, classes.len())?;
    let images = images_to_array(&image_path, images)?;
    Ok(ImageDataset { images, labels, classes, captions: None })
}

fn read_exact_or(reader: &mut dyn Read, buf: &mut [u8], path: &Path, what: &str) -> Result<()> {
    reader.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Error::format(path, format!("truncated: {what}")),
        _ => Error::format(path, format!("cannot read: {e}")),
    })
}
