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
