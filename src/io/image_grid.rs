//! Image grids: a batch `(N, C, H, W)` in `[0, 1]` laid out as one PNG.
//!
//! Like torchvision's `make_grid`: `nrow` images per row, `padding` pixels of
//! `pad_value` around and between them; then the whole grid is scaled up by
//! `scale` (nearest neighbour) so 28x28 digits are big enough to look at.

use image::{ImageEncoder, RgbImage};
use ndarray::{s, Array3, ArrayRef3, ArrayRef4};

use super::atomic::write_atomic;
use crate::{Error, Result};

/// How [`make_grid`] lays out a batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GridOptions {
    /// Images per row (the last row may be shorter).
    pub nrow: usize,
    /// Pixels of `pad_value` around and between images, before scaling.
    pub padding: usize,
    /// Upscaling factor applied to the whole grid (nearest neighbour), `>= 1`.
    pub scale: usize,
    /// The padding's grey level in `[0, 1]`.
    pub pad_value: f32,
}

impl Default for GridOptions {
    /// 8 per row, 2 px white padding, no upscaling.
    fn default() -> Self {
        GridOptions { nrow: 8, padding: 2, scale: 1, pad_value: 1.0 }
    }
}

impl GridOptions {
    /// The defaults with `nrow` images per row.
    pub fn with_nrow(nrow: usize) -> Self {
        GridOptions { nrow, ..Default::default() }
    }
}

/// Lays `images` `(N, C, H, W)` (C = 1 or 3) out as one image `(C, H', W')` with
/// `H' = (rows (H + p) + p) s`, `W' = (cols (W + p) + p) s`, rows = ceil(N / nrow), cols = min(N, nrow).
pub fn make_grid(images: &ArrayRef4<f32>, opts: &GridOptions) -> Result<Array3<f32>> {
    let (n, c, h, w) = images.dim();
    if n == 0 || !(c == 1 || c == 3) {
        return Err(Error::shape("make_grid", format!("images are {:?}, expected (N > 0, C = 1 or 3, H, W)", images.shape())));
    }
    if opts.nrow == 0 || opts.scale == 0 {
        return Err(Error::Config(format!("make_grid: nrow = {} and scale = {} must be >= 1", opts.nrow, opts.scale)));
    }
    let (p, k) = (opts.padding, opts.scale);
    let cols = n.min(opts.nrow);
    let rows = n.div_ceil(opts.nrow);
    let (gh, gw) = (rows * (h + p) + p, cols * (w + p) + p);
    let mut grid = Array3::<f32>::from_elem((c, gh, gw), opts.pad_value);
    for i in 0..n {
        let (y, x) = (p + (i / opts.nrow) * (h + p), p + (i % opts.nrow) * (w + p));
        grid.slice_mut(s![.., y..y + h, x..x + w]).assign(&images.slice(s![i, .., .., ..]));
    }
    if k == 1 {
        return Ok(grid);
    }
    Ok(Array3::from_shape_fn((c, gh * k, gw * k), |(ch, y, x)| grid[[ch, y / k, x / k]]))
}

/// Saves `images` `(N, C, H, W)` in `[0, 1]` as a PNG grid at `path`.
pub fn save_image_grid(path: impl AsRef<std::path::Path>, images: &ArrayRef4<f32>, opts: &GridOptions) -> Result<()> {
    save_png(path, &make_grid(images, opts)?)
}

/// Saves `originals` `(B, C, H, W)` as one row of a grid and their `reconstructions`
/// (same shape) as the row below, each image scaled `scale` times: an autoencoder's
/// reconstruction figure.
pub fn save_reconstructions(path: impl AsRef<std::path::Path>, originals: &ArrayRef4<f32>, reconstructions: &ArrayRef4<f32>, scale: usize) -> Result<()> {
    if originals.shape() != reconstructions.shape() {
        return Err(crate::Error::shape("save_reconstructions", format!("originals {:?} and reconstructions {:?} differ", originals.shape(), reconstructions.shape())));
    }
    let both = ndarray::concatenate(ndarray::Axis(0), &[originals.view(), reconstructions.view()]).expect("shapes checked equal");
    save_image_grid(path, &both, &GridOptions { scale, ..GridOptions::with_nrow(originals.dim().0) })
}

/// Saves one image `(C, H, W)` (C = 1 or 3) in `[0, 1]` as an RGB PNG; values
/// are clamped, NaN becomes black.
pub fn save_png(path: impl AsRef<std::path::Path>, image: &ArrayRef3<f32>) -> Result<()> {
    write_atomic(path, &encode_png(&to_rgb8(image)?)?)
}

/// `(C, H, W)` floats in `[0, 1]` (C = 1 or 3) to 8-bit RGB.
pub fn to_rgb8(image: &ArrayRef3<f32>) -> Result<RgbImage> {
    let (c, h, w) = image.dim();
    if !(c == 1 || c == 3) {
        return Err(Error::shape("to_rgb8", format!("image is {:?}, expected (C = 1 or 3, H, W)", image.shape())));
    }
    let byte = |v: f32| if v.is_nan() { 0 } else { (v.clamp(0.0, 1.0) * 255.0).round() as u8 };
    Ok(RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let (x, y) = (x as usize, y as usize);
        let channel = |ch: usize| byte(image[[if c == 1 { 0 } else { ch }, y, x]]);
        image::Rgb([channel(0), channel(1), channel(2)])
    }))
}

/// Encodes an RGB image as PNG bytes.
pub fn encode_png(img: &RgbImage) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new(&mut bytes)
        .write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8)
        .map_err(|e| Error::Msg(format!("PNG encoding failed: {e}")))?;
    Ok(bytes)
}
