//! CLIP's image preprocessing: resize, center crop, normalise.
//!
//! As `CLIPImageProcessor` (and OpenAI's `clip.load` transform):
//! 1. resize so that the shorter side is `size`, bicubic;
//! 2. crop the central `size × size`;
//! 3. scale to `[0, 1]` and normalise each channel `(x - mean) / std` with the
//!    statistics of CLIP's training set below.
//!
//! The resize uses the `image` crate's Catmull-Rom filter, the same cubic
//! kernel (`a = -0.5`) as PIL's bicubic, widened when shrinking as PIL does; pixel
//! values can still differ from PIL's by a few levels of 255 (rounding, edge handling).

use std::path::Path;

use image::imageops::FilterType;
use image::DynamicImage;
use ndarray::Array4;

use crate::{Error, Result};

/// CLIP's per-channel mean (RGB).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// CLIP's per-channel standard deviation (RGB): 0.26862954, 0.26130258, 0.27577711 (as f32).
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// Resize (shorter side to `size`, bicubic), center-crop to `size × size`, normalise:
/// a `(1, 3, size, size)` batch ready for the vision tower.
pub fn preprocess(img: &DynamicImage, size: usize) -> Result<Array4<f32>> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 || size == 0 {
        return Err(Error::shape("clip preprocess", format!("cannot resize a {w}x{h} image to {size}")));
    }
    // Shorter side -> size, aspect ratio kept (rounded as HF's get_resize_output_image_size).
    let long = |l: usize, s: usize| ((l * size) as f64 / s as f64).round() as usize;
    let (nw, nh) = if w <= h { (size, long(h, w)) } else { (long(w, h), size) };
    let resized = img.to_rgb8();
    let resized = image::imageops::resize(&resized, nw as u32, nh as u32, FilterType::CatmullRom);
    let (left, top) = ((nw - size) / 2, (nh - size) / 2);
    let mut out = Array4::<f32>::zeros((1, 3, size, size)); // (1, 3, S, S)
    for y in 0..size {
        for x in 0..size {
            let p = resized.get_pixel((left + x) as u32, (top + y) as u32);
            for c in 0..3 {
                out[[0, c, y, x]] = (p[c] as f32 / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c];
            }
        }
    }
    Ok(out)
}

/// Opens an image file and [`preprocess`]es it.
pub fn load_image(path: &Path, size: usize) -> Result<Array4<f32>> {
    let img = image::open(path).map_err(|e| Error::format(path, format!("cannot read image: {e}")))?;
    preprocess(&img, size)
}

/// The toy models of this book see images in `[0, 1]` mapped to `[-1, 1]`: `2x - 1`.
pub fn normalize_unit(images: &ndarray::ArrayRef4<f32>) -> Array4<f32> {
    images.mapv(|v| 2.0 * v - 1.0)
}
