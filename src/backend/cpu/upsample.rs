//! Nearest-neighbour upsampling by an integer factor `f`, one image plane at a time.
//!
//! Forward: `y[i, j] = x[⌊i / f⌋, ⌊j / f⌋]` on each `(H, W) -> (f H, f W)` plane.
//! Backward: each input pixel was copied to an `f x f` block, so
//! `dx[a, b] = Σ_{u, v < f} dy[f a + u, f b + v]`.
//! Planes (one per sample and channel) run in parallel with rayon.
//!
//! The loops run under [`simd`] (compiled for the CPU tier) with the factor a
//! constant for `f = 2` (every model in the book): a row of pairs is then a
//! vector interleave (forward) or de-interleave (backward), which the
//! compiler turns into shuffles. With `f` known only at run time the backward
//! pass summed `f`-float chunks one by one, 8% of the MNIST VQ-VAE's step.

use super::planes_per_task;
use crate::ops::kernels::simd;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// `y` (planes, f h, f w) from `x` (planes, h, w), both contiguous; every
/// element of `y` is written (it may be fresh, uninitialised memory).
pub fn upsample_nearest_forward(x: &[f32], h: usize, w: usize, f: usize, y: &mut [MaybeUninit<f32>]) {
    let (oh, ow) = (h * f, w * f);
    let per_task = planes_per_task(oh * ow);
    y.par_chunks_mut(oh * ow * per_task).zip(x.par_chunks(h * w * per_task)).for_each(|(y, x)| {
        simd(|| match f {
            2 => forward_planes::<2>(x, w, y),
            _ => forward_planes_any(x, w, f, y),
        })
    });
}

/// [`upsample_nearest_forward`] on whole planes, the factor a constant `F`.
#[inline(always)]
fn forward_planes<const F: usize>(x: &[f32], w: usize, y: &mut [MaybeUninit<f32>]) {
    let ow = w * F;
    for (x_row, y_rows) in x.chunks_exact(w).zip(y.chunks_exact_mut(F * ow)) {
        // the first of the F output rows of this input row: each pixel F times
        let (first, rest) = y_rows.split_at_mut(ow);
        for (block, &v) in first.chunks_exact_mut(F).zip(x_row) {
            *<&mut [MaybeUninit<f32>; F]>::try_from(block).expect("F floats") = [MaybeUninit::new(v); F];
        }
        // the other F - 1 rows are copies of it
        for row in rest.chunks_exact_mut(ow) {
            row.copy_from_slice(first);
        }
    }
}

/// [`forward_planes`] for a factor known at run time.
#[inline(always)]
fn forward_planes_any(x: &[f32], w: usize, f: usize, y: &mut [MaybeUninit<f32>]) {
    let ow = w * f;
    for (x_row, y_rows) in x.chunks_exact(w).zip(y.chunks_exact_mut(f * ow)) {
        let (first, rest) = y_rows.split_at_mut(ow);
        for (block, &v) in first.chunks_exact_mut(f).zip(x_row) {
            block.fill(MaybeUninit::new(v));
        }
        for row in rest.chunks_exact_mut(ow) {
            row.copy_from_slice(first);
        }
    }
}

/// `dx` (planes, h, w) from `dy` (planes, f h, f w): the sum over each `f x f` block.
/// Every element of `dx` is written (it may be fresh, uninitialised memory).
pub fn upsample_nearest_backward(dy: &[f32], h: usize, w: usize, f: usize, dx: &mut [MaybeUninit<f32>]) {
    let (oh, ow) = (h * f, w * f);
    let per_task = planes_per_task(oh * ow);
    dx.par_chunks_mut(h * w * per_task).zip(dy.par_chunks(oh * ow * per_task)).for_each(|(dx, dy)| {
        simd(|| match f {
            2 => backward_planes::<2>(dy, w, dx),
            _ => backward_planes_any(dy, w, f, dx),
        })
    });
}

/// [`upsample_nearest_backward`] on whole planes, the factor a constant `F`.
#[inline(always)]
fn backward_planes<const F: usize>(dy: &[f32], w: usize, dx: &mut [MaybeUninit<f32>]) {
    let ow = w * F;
    let block_sum = |block: &[f32]| {
        let block: &[f32; F] = block.try_into().expect("F floats");
        block[1..].iter().fold(block[0], |s, &v| s + v) // Σ_v dy[F a + u, F b + v]
    };
    for (dx_row, dy_rows) in dx.chunks_exact_mut(w).zip(dy.chunks_exact(F * ow)) {
        // dx[a, b] = Σ_u (Σ_v dy[F a + u, F b + v]): one pass per row u, in order
        let (first, rest) = dy_rows.split_at(ow);
        for (d, block) in dx_row.iter_mut().zip(first.chunks_exact(F)) {
            d.write(block_sum(block));
        }
        // SAFETY: the row u = 0 above wrote every element of dx_row.
        let dx_row = unsafe { dx_row.assume_init_mut() };
        for row in rest.chunks_exact(ow) {
            for (d, block) in dx_row.iter_mut().zip(row.chunks_exact(F)) {
                *d += block_sum(block);
            }
        }
    }
}

/// [`backward_planes`] for a factor known at run time.
#[inline(always)]
fn backward_planes_any(dy: &[f32], w: usize, f: usize, dx: &mut [MaybeUninit<f32>]) {
    let ow = w * f;
    let block_sum = |block: &[f32]| block[1..].iter().fold(block[0], |s, &v| s + v);
    for (dx_row, dy_rows) in dx.chunks_exact_mut(w).zip(dy.chunks_exact(f * ow)) {
        let (first, rest) = dy_rows.split_at(ow);
        for (d, block) in dx_row.iter_mut().zip(first.chunks_exact(f)) {
            d.write(block_sum(block));
        }
        // SAFETY: the row u = 0 above wrote every element of dx_row.
        let dx_row = unsafe { dx_row.assume_init_mut() };
        for row in rest.chunks_exact(ow) {
            for (d, block) in dx_row.iter_mut().zip(row.chunks_exact(f)) {
                *d += block_sum(block);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `len` NaNs, written by `f` and read back: every element must have been written.
    fn written(len: usize, f: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
        let mut v = vec![MaybeUninit::new(f32::NAN); len];
        f(&mut v);
        v.into_iter().map(|v| unsafe { v.assume_init() }).collect()
    }

    /// Against the definitions, on 128 planes so that several rayon tasks share
    /// them, for the constant factor 2 and a factor known at run time.
    #[test]
    fn matches_the_definition_across_tasks() {
        for f in [2, 3] {
            check(128, 5, 7, f);
        }
    }

    fn check(planes: usize, h: usize, w: usize, f: usize) {
        let x: Vec<f32> = (0..planes * h * w).map(|i| (i * 37 % 101) as f32 - 50.0).collect();
        let y = written(x.len() * f * f, |y| upsample_nearest_forward(&x, h, w, f, y));
        let (oh, ow) = (h * f, w * f);
        for p in 0..planes {
            for i in 0..oh {
                for j in 0..ow {
                    assert_eq!(y[(p * oh + i) * ow + j], x[(p * h + i / f) * w + j / f], "f {f}: y[{p}, {i}, {j}]");
                }
            }
        }
        let dy: Vec<f32> = (0..y.len()).map(|i| (i * 13 % 29) as f32).collect();
        let dx = written(x.len(), |dx| upsample_nearest_backward(&dy, h, w, f, dx));
        for p in 0..planes {
            for a in 0..h {
                for b in 0..w {
                    let want: f32 = (0..f * f).map(|t| dy[(p * oh + a * f + t / f) * ow + b * f + t % f]).sum();
                    assert_eq!(dx[(p * h + a) * w + b], want, "f {f}: dx[{p}, {a}, {b}]"); // small integers: exact
                }
            }
        }
    }
}
