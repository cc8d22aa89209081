//! The vector quantizer's nearest-code search on [`GpuArray`]s: `z · eᵀ` by the matmul
//! kernel, then the first `argmin_k (‖e_k‖² - 2 z·e_k)` of each row (`codes.wgsl`), so
//! that only the indices, not the encoder's outputs, come back to the host.

use super::array::{map_kernel, GpuArray};
use super::conv_array::matmul_array;
use super::matmul::MatmulShape;
use crate::{Error, Result};

const FILE: &str = "codes.wgsl";
const SOURCE: &str = include_str!("codes.wgsl");

/// The index of the nearest row of `codebook (K, D)` to each row of `z (N, D)` in
/// squared Euclidean distance (the first on ties), given `‖e_k‖²` (`e_sq`, length K);
/// the indices are f32 values.
pub fn nearest_codes(z: &GpuArray, codebook: &GpuArray, e_sq: &GpuArray, rows: usize, codes: usize, dim: usize) -> Result<GpuArray> {
    if z.len() != rows * dim || codebook.len() != codes * dim || e_sq.len() != codes {
        return Err(Error::shape(
            "wgpu nearest_codes",
            format!("z of {} values, codebook of {}, norms of {} for ({rows}, {dim}) rows and {codes} codes", z.len(), codebook.len(), e_sq.len()),
        ));
    }
    // z · eᵀ, (N, K) = (N, D) · (K, D)ᵀ
    let scores = matmul_array(z, codebook, &MatmulShape::new(rows, dim, codes).transposed(false, true))?;
    let words = [rows as u32, codes as u32, 0, 0];
    map_kernel("wgpu nearest_codes", (FILE, SOURCE, "nearest"), &words, &[&scores, e_sq], rows)
}
