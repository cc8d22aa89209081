//! Broadcasting, as NumPy and PyTorch do it.
//!
//! Two shapes broadcast when, aligned at their last dimension, each pair of
//! sizes is equal or one of them is 1. In the backward pass the gradient of a
//! broadcast input is the output gradient summed over the dimensions that were
//! stretched ([`reduce_to_shape`]).

use ndarray::{ArrayD, Axis, IxDyn};

/// The broadcast shape of `a` and `b`, or an error naming `op` and both shapes.
pub fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize]) -> crate::Result<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
        let db = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(crate::Error::shape(op, format!("{a:?} and {b:?} do not broadcast (dimension {i}: {da} vs {db})")))
            }
        };
    }
    Ok(out)
}

/// Sum `grad` over the broadcast dimensions so that it has `shape`.
pub fn reduce_to_shape(grad: ArrayD<f32>, shape: &[usize]) -> ArrayD<f32> {
    if grad.shape() == shape {
        return grad;
    }
    if let Some(r) = reduce_rows(&grad, shape) {
        return r;
    }
    let mut g = grad;
    // Leading dimensions that `shape` does not have: sum them away.
    while g.ndim() > shape.len() {
        g = g.sum_axis(Axis(0));
    }
    // Dimensions where `shape` has 1 but the gradient does not: sum, keep the axis.
    for (axis, &s) in shape.iter().enumerate() {
        if s == 1 && g.shape()[axis] != 1 {
            g = g.sum_axis(Axis(axis)).insert_axis(Axis(axis));
        }
    }
    // The sums may leave a column-major array (for a permuted gradient): reshape by copy.
    g.to_shape(IxDyn(shape)).expect("reduced gradient has the input's shape").into_owned()
}

/// As [`reduce_to_shape`], from a borrowed gradient: copies it only when the
/// shapes already agree (the common `x + bias` backward needs no copy of `g`
/// for the bias).
pub fn reduce_to_shape_ref(grad: &ArrayD<f32>, shape: &[usize]) -> ArrayD<f32> {
    if grad.shape() == shape {
        return crate::ops::kernels::to_standard(&grad.view());
    }
    reduce_rows(grad, shape).unwrap_or_else(|| reduce_to_shape(grad.clone(), shape))
}

/// Rows summed per task in [`reduce_rows`]: the blocks, and so the order of
/// the additions, do not depend on the number of threads.
const ROWS_PER_TASK: usize = 64;

/// Fast path for a bias-like operand: when `shape` (without leading 1s) is a
/// suffix of the contiguous gradient's shape, e.g. `(C)` under `(B, T, C)`,
/// the gradient is a stack of rows of that length and the reduction is their
/// sum, `out[j] = Σ_i g[i·p + j]`: blocks of [`ROWS_PER_TASK`] rows are summed
/// in parallel, row after row, then the block sums are added in order (one
/// pass over the gradient, deterministic whatever the thread count, no
/// intermediate `(T, C)` array). `None` otherwise, and for rows shorter than
/// 16 (a long serial sum into one or a few numbers would lose precision;
/// `sum_axis` handles those).
fn reduce_rows(grad: &ArrayD<f32>, shape: &[usize]) -> Option<ArrayD<f32>> {
    use crate::ops::kernels::add_into;
    use rayon::prelude::*;
    let gs = grad.as_slice()?;
    let full = grad.shape();
    let suffix: Vec<usize> = shape.iter().copied().skip_while(|&d| d == 1).collect();
    let p: usize = suffix.iter().product();
    if suffix.len() > full.len() || suffix[..] != full[full.len() - suffix.len()..] || p < 16 {
        return None;
    }
    let block_sum = |block: &[f32]| {
        let mut out = vec![0.0f32; p];
        crate::ops::kernels::simd(#[inline(always)] || block.chunks_exact(p).for_each(|row| add_into(&mut out, row)));
        out
    };
    let blocks: Vec<Vec<f32>> = if gs.len() < crate::ops::kernels::PARALLEL_MIN_LEN {
        gs.chunks(ROWS_PER_TASK * p).map(block_sum).collect()
    } else {
        gs.par_chunks(ROWS_PER_TASK * p).map(block_sum).collect()
    };
    let mut out = vec![0.0f32; p];
    blocks.iter().for_each(|b| add_into(&mut out, b));
    ArrayD::from_shape_vec(IxDyn(shape), out).ok()
}
