//! Max and average pooling with a `k x k` window and stride `s` (no padding), one image
//! plane at a time, planes in parallel with rayon.
//!
//! Forward: `y[i, j] = max_{u, v < k} x[s i + u, s j + v]` (max) or the window's mean (avg).
//! Backward: max sends `dy[i, j]` to the window's (first) maximum, remembered by the
//! forward pass as its index in the plane; avg spreads `dy[i, j] / k²` over the window.
//!
//! The loops run under [`simd`] (compiled for the CPU tier). The 2 x 2 window
//! of stride 2 (the dVAE's pooling) has its own forward loop, where a window is
//! two pairs of adjacent floats and the first maximum is chosen by
//! comparisons without branches, so that it vectorises (a de-interleave and
//! three selects per lane); other windows take the general loop.

use crate::ops::kernels::simd;
use rayon::prelude::*;

/// The sizes of one pooling: an `(h, w)` plane, window `k`, stride `s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeom {
    /// Input plane height.
    pub h: usize,
    /// Input plane width.
    pub w: usize,
    /// Window side.
    pub k: usize,
    /// Stride.
    pub stride: usize,
}

impl PoolGeom {
    /// Output plane `(oh, ow) = ((h - k) / s + 1, (w - k) / s + 1)`; needs `h, w >= k`.
    pub fn out(&self) -> (usize, usize) {
        ((self.h - self.k) / self.stride + 1, (self.w - self.k) / self.stride + 1)
    }

    /// Planes per rayon task: each output pixel reads a k² window.
    fn planes_per_task(&self) -> usize {
        let (oh, ow) = self.out();
        super::planes_per_task(oh * ow * self.k * self.k)
    }
}

/// `y` (planes, oh, ow) from `x` (planes, h, w); for max pooling also `argmax`
/// (planes, oh, ow): the index in its input plane of each window's first maximum.
/// `argmax` is ignored (and may be empty) for average pooling.
pub fn pool2d_forward(x: &[f32], g: PoolGeom, is_max: bool, y: &mut [f32], argmax: &mut [u32]) {
    let (oh, ow) = g.out();
    let (in_plane, out_plane) = (g.h * g.w, oh * ow);
    let per_task = g.planes_per_task();
    let mut dummy = Vec::new();
    let argmax = if is_max { argmax } else {
        dummy.resize(y.len(), 0);
        &mut dummy[..]
    };
    let tasks = y.par_chunks_mut(out_plane * per_task).zip(argmax.par_chunks_mut(out_plane * per_task));
    tasks.zip(x.par_chunks(in_plane * per_task)).for_each(|((y, at), x)| {
        simd(|| {
            for ((y, at), x) in y.chunks_mut(out_plane).zip(at.chunks_mut(out_plane)).zip(x.chunks(in_plane)) {
                if g.k == 2 && g.stride == 2 {
                    forward_plane_2x2(x, g, is_max, y, at);
                } else {
                    forward_plane(x, g, is_max, y, at);
                }
            }
        })
    });
}

/// One plane of [`pool2d_forward`], any window and stride.
#[inline(always)]
fn forward_plane(x: &[f32], g: PoolGeom, is_max: bool, y: &mut [f32], at: &mut [u32]) {
    let (oh, ow) = g.out();
    for i in 0..oh {
        for j in 0..ow {
            let first = i * g.stride * g.w + j * g.stride; // window's top-left in the plane
            let (mut best, mut best_at, mut sum) = (f32::NEG_INFINITY, first, 0.0);
            for u in 0..g.k {
                let row = first + u * g.w;
                for (v, &val) in x[row..row + g.k].iter().enumerate() {
                    sum += val;
                    if val > best {
                        best = val;
                        best_at = row + v;
                    }
                }
            }
            let o = i * ow + j;
            if is_max {
                y[o] = best;
                at[o] = best_at as u32;
            } else {
                y[o] = sum / (g.k * g.k) as f32; // mean over the k² window
            }
        }
    }
}

/// One plane of [`pool2d_forward`] for a 2 x 2 window of stride 2: the same
/// values as [`forward_plane`] (the same comparisons and sums, in the same order).
#[inline(always)]
fn forward_plane_2x2(x: &[f32], g: PoolGeom, is_max: bool, y: &mut [f32], at: &mut [u32]) {
    let (oh, ow) = g.out();
    for i in 0..oh {
        let (top, bottom) = (&x[2 * i * g.w..][..2 * ow], &x[(2 * i + 1) * g.w..][..2 * ow]);
        let (y, at) = (&mut y[i * ow..(i + 1) * ow], &mut at[i * ow..(i + 1) * ow]);
        if !is_max {
            // the mean of the window's four values, summed in row-major order
            for ((y, t), b) in y.iter_mut().zip(top.chunks_exact(2)).zip(bottom.chunks_exact(2)) {
                *y = (((0.0 + t[0]) + t[1]) + b[0] + b[1]) / 4.0;
            }
            continue;
        }
        let first = (2 * i * g.w) as u32; // index of the top-left of window j = 0
        for (j, ((y, at), (t, b))) in y.iter_mut().zip(at.iter_mut()).zip(top.chunks_exact(2).zip(bottom.chunks_exact(2))).enumerate() {
            // the first maximum in the order t0, t1, b0, b1 (a later value wins only if larger)
            let corner = first + 2 * j as u32;
            let (mut best, mut best_at) = (f32::NEG_INFINITY, corner);
            for (val, offset) in [(t[0], 0), (t[1], 1), (b[0], g.w as u32), (b[1], g.w as u32 + 1)] {
                let larger = val > best;
                best = if larger { val } else { best };
                best_at = if larger { corner + offset } else { best_at };
            }
            *y = best;
            *at = best_at;
        }
    }
}

/// `dx` (planes, h, w) from `dy` (planes, oh, ow) and, for max pooling, the forward
/// pass's `argmax`.
pub fn pool2d_backward(dy: &[f32], g: PoolGeom, is_max: bool, argmax: &[u32], dx: &mut [f32]) {
    let (oh, ow) = g.out();
    let (in_plane, out_plane) = (g.h * g.w, oh * ow);
    let per_task = g.planes_per_task();
    let scale = 1.0 / (g.k * g.k) as f32;
    dx.par_chunks_mut(in_plane * per_task).enumerate().for_each(|(task, dx)| {
        let first_plane = task * per_task;
        for (p, dx) in dx.chunks_mut(in_plane).enumerate() {
            dx.fill(0.0);
            let start = (first_plane + p) * out_plane;
            let dy = &dy[start..start + out_plane];
            if is_max {
                // dx[argmax[o]] += dy[o]
                for (&d, &at) in dy.iter().zip(&argmax[start..start + out_plane]) {
                    dx[at as usize] += d;
                }
            } else {
                for i in 0..oh {
                    for j in 0..ow {
                        let d = dy[i * ow + j] * scale; // dy / k² to every pixel of the window
                        for u in 0..g.k {
                            let row = (i * g.stride + u) * g.w + j * g.stride;
                            dx[row..row + g.k].iter_mut().for_each(|v| *v += d);
                        }
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the definitions on 300 planes (several rayon tasks), overlapping windows.
    #[test]
    fn matches_the_definition_across_tasks() {
        let planes = 300;
        for (is_max, g) in [(true, PoolGeom { h: 9, w: 7, k: 3, stride: 2 }), (false, PoolGeom { h: 9, w: 7, k: 3, stride: 2 }), (true, PoolGeom { h: 8, w: 8, k: 2, stride: 2 }), (false, PoolGeom { h: 8, w: 8, k: 2, stride: 2 }), (true, PoolGeom { h: 7, w: 9, k: 2, stride: 2 }), (false, PoolGeom { h: 5, w: 7, k: 2, stride: 2 })] {
            let (oh, ow) = g.out();
            let x: Vec<f32> = (0..planes * g.h * g.w).map(|i| ((i * 37) % 101) as f32 - 50.0).collect();
            let mut y = vec![f32::NAN; planes * oh * ow];
            let mut at = vec![0u32; y.len()];
            pool2d_forward(&x, g, is_max, &mut y, &mut at);
            let dy: Vec<f32> = (0..y.len()).map(|i| ((i * 13) % 29) as f32 - 14.0).collect();
            let mut dx = vec![f32::NAN; x.len()];
            pool2d_backward(&dy, g, is_max, &at, &mut dx);
            let mut want_dx = vec![0.0f64; x.len()];
            for p in 0..planes {
                for i in 0..oh {
                    for j in 0..ow {
                        let window: Vec<usize> = (0..g.k * g.k)
                            .map(|t| (p * g.h + i * g.stride + t / g.k) * g.w + j * g.stride + t % g.k)
                            .collect();
                        let o = (p * oh + i) * ow + j;
                        if is_max {
                            // the first maximum in row-major window order
                            let best = *window.iter().reduce(|a, b| if x[*b] > x[*a] { b } else { a }).unwrap();
                            assert_eq!(y[o], x[best], "max y[{o}]");
                            want_dx[best] += dy[o] as f64;
                        } else {
                            let mean = window.iter().map(|&q| x[q] as f64).sum::<f64>() / (g.k * g.k) as f64;
                            assert!((y[o] as f64 - mean).abs() < 1e-5, "avg y[{o}]: {} vs {mean}", y[o]);
                            window.iter().for_each(|&q| want_dx[q] += dy[o] as f64 / (g.k * g.k) as f64);
                        }
                    }
                }
            }
            for (q, (&d, &w)) in dx.iter().zip(&want_dx).enumerate() {
                assert!((d as f64 - w).abs() < 1e-4, "dx[{q}]: {d} vs {w} (max {is_max}, {g:?})");
            }
        }
    }
}
