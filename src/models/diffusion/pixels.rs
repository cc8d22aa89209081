//! Images as the diffusion models see them: pixels `[0, 1]` scaled to `[-1, 1]`, the range
//! DDPM's `x̂_0` clipping assumes (Ho et al. 2020, §3.3), and back.

use crate::tensor::Tensor;
use crate::{Error, Result};
use ndarray::Array4;

/// Pixels `[0, 1]` `(N, C, H, W)` to model space: `x = 2p − 1`.
pub fn to_model(images: &Array4<f32>) -> Tensor {
    Tensor::new(images.mapv(|v| 2.0 * v - 1.0).into_dyn())
}

/// Model space `(N, C, H, W)` to pixels: `p = (x + 1) / 2`, clamped to `[0, 1]`.
pub fn to_pixels(x: &Tensor) -> Result<Array4<f32>> {
    let a = x.to_array().into_dimensionality::<ndarray::Ix4>().map_err(|e| Error::shape("to_pixels", format!("samples of shape {:?} are not (N, C, H, W): {e}", x.shape())))?;
    Ok(a.mapv(|v| ((v + 1.0) / 2.0).clamp(0.0, 1.0)))
}
