//! Softmax and log-softmax over an axis that is not the last one (the K code
//! logits of the dVAE, `(B, K, h, w)` over K), in blocks.
//!
//! A row-major array seen as `(outer, d, inner)`: the softmax runs over `d`,
//! separately for each `(outer, inner)`. One block `x[o] (d, inner)` at a
//! time, the statistics of all `inner` positions are kept side by side, so
//! every pass runs along `inner` and vectorises (with the tier's `exp`, no
//! call to libm per value); blocks run in parallel. Sums over `d` are added in
//! row order, so the bits do not depend on the thread count.
//!
//! ```text
//! m[i] = max_k x[k, i]      s[i] = Σ_k e^{x[k, i] - m[i]}
//! softmax      y[k, i] = e^{x[k, i] - m[i]} / s[i]      dx = y ⊙ (g - Σ_k g y)
//! log-softmax  y[k, i] = x[k, i] - m[i] - ln s[i]       dx = g - e^y Σ_k g
//! ```

use super::kernels::{exp, rows_from_as, MulAdd};

/// The softmax (or log-softmax when `log`) over `d` of row-major `x (outer, d, inner)`.
pub(crate) fn forward(x: &[f32], d: usize, inner: usize, log: bool) -> Vec<f32> {
    if x.is_empty() {
        return Vec::new();
    }
    crate::with_mul_add!(M => rows_from_as::<M>(x, &[], d * inner, #[inline(always)] |block, _| block_forward::<M>(block, d, inner, log)))
}

/// The gradient of [`forward`]: `y` its output, `g` the output's gradient.
pub(crate) fn backward(y: &[f32], g: &[f32], d: usize, inner: usize, log: bool) -> Vec<f32> {
    if y.is_empty() {
        return Vec::new();
    }
    if log {
        // dx starts as g; the other operand is y
        crate::with_mul_add!(M => rows_from_as::<M>(g, y, d * inner, #[inline(always)] |dx, y| {
            let mut s = vec![0.0f32; inner];
            for row in dx.chunks_exact(inner) {
                s.iter_mut().zip(row).for_each(|(s, &g)| *s += g); // Σ_k g
            }
            for (row, y) in dx.chunks_exact_mut(inner).zip(y.chunks_exact(inner)) {
                for ((d, &y), &s) in row.iter_mut().zip(y).zip(&s) {
                    *d -= exp::<M>(y) * s; // g - e^y Σ_k g
                }
            }
        }))
    } else {
        // dx starts as y; the other operand is g
        crate::with_mul_add!(M => rows_from_as::<M>(y, g, d * inner, #[inline(always)] |dx, g| {
            let mut s = vec![0.0f32; inner];
            for (row, g) in dx.chunks_exact(inner).zip(g.chunks_exact(inner)) {
                s.iter_mut().zip(row).zip(g).for_each(|((s, &y), &g)| *s += g * y); // Σ_k g y
            }
            for (row, g) in dx.chunks_exact_mut(inner).zip(g.chunks_exact(inner)) {
                for ((y, &g), &s) in row.iter_mut().zip(g).zip(&s) {
                    *y *= g - s; // y (g - Σ_k g y)
                }
            }
        }))
    }
}

/// One block `(d, inner)`, in place: the logits in, the (log-)softmax out.
#[inline(always)]
fn block_forward<M: MulAdd>(block: &mut [f32], d: usize, inner: usize, log: bool) {
    let mut m = vec![f32::NEG_INFINITY; inner];
    for row in block.chunks_exact(inner) {
        m.iter_mut().zip(row).for_each(|(m, &v)| *m = m.max(v));
    }
    let mut s = vec![0.0f32; inner];
    if log {
        for row in block.chunks_exact(inner) {
            s.iter_mut().zip(row).zip(&m).for_each(|((s, &v), &m)| *s += exp::<M>(v - m));
        }
        // ln s[i] + m[i], one libm call per position (not per value)
        s.iter_mut().zip(&m).for_each(|(s, &m)| *s = s.ln() + m);
        for row in block.chunks_exact_mut(inner) {
            row.iter_mut().zip(&s).for_each(|(v, &lse)| *v -= lse);
        }
    } else {
        for row in block.chunks_exact_mut(inner) {
            row.iter_mut().zip(&m).for_each(|(v, &m)| *v = exp::<M>(*v - m));
            s.iter_mut().zip(row.iter()).for_each(|(s, &e)| *s += e);
        }
        s.iter_mut().for_each(|s| *s = 1.0 / *s);
        for row in block.chunks_exact_mut(inner) {
            row.iter_mut().zip(&s).for_each(|(v, &r)| *v *= r);
        }
    }
    debug_assert_eq!(block.len(), d * inner);
}
