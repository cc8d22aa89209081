//! Nearest-neighbour upsampling by an integer factor `f`, one image plane at a time.
//!
//! Forward: `y[i, j] = x[⌊i / f⌋, ⌊j / f⌋]` on each `(H, W) -> (f H, f W)` plane.
//! Backward: each input pixel was copied to an `f x f` block, so
//! `dx[a, b] = Σ_{u, v < f} dy[f a + u, f b + v]`.
//! Planes (one per sample and channel) run in parallel with rayon.

use super::planes_per_task;
use rayon::prelude::*;

/// `y` (planes, f h, f w) from `x` (planes, h, w), both contiguous.
pub fn upsample_nearest_forward(x: &[f32], h: usize, w: usize, f: usize, y: &mut [f32]) {
    let (oh, ow) = (h * f, w * f);
    let per_task = planes_per_task(oh * ow);
    y.par_chunks_mut(oh * ow * per_task).zip(x.par_chunks(h * w * per_task)).for_each(|(y, x)| {
        for (y_plane, x_plane) in y.chunks_mut(oh * ow).zip(x.chunks(h * w)) {
            for (a, x_row) in x_plane.chunks(w).enumerate() {
                // the first of the f output rows of input row a: each pixel f times
                let first = &mut y_plane[a * f * ow..(a * f + 1) * ow];
                for (block, &v) in first.chunks_mut(f).zip(x_row) {
                    block.fill(v);
                }
                // the other f - 1 rows are copies of it
                let (done, rest) = y_plane[a * f * ow..(a + 1) * f * ow].split_at_mut(ow);
                for row in rest.chunks_mut(ow) {
                    row.copy_from_slice(done);
                }
            }
        }
    });
}

/// `dx` (planes, h, w) from `dy` (planes, f h, f w): the sum over each `f x f` block.
pub fn upsample_nearest_backward(dy: &[f32], h: usize, w: usize, f: usize, dx: &mut [f32]) {
    let (oh, ow) = (h * f, w * f);
    let per_task = planes_per_task(oh * ow);
    dx.par_chunks_mut(h * w * per_task).zip(dy.par_chunks(oh * ow * per_task)).for_each(|(dx, dy)| {
        for (dx_plane, dy_plane) in dx.chunks_mut(h * w).zip(dy.chunks(oh * ow)) {
            dx_plane.fill(0.0);
            for (i, dy_row) in dy_plane.chunks(ow).enumerate() {
                let dx_row = &mut dx_plane[(i / f) * w..(i / f + 1) * w];
                // dx[i / f, b] += Σ_v dy[i, f b + v]
                for (d, block) in dx_row.iter_mut().zip(dy_row.chunks(f)) {
                    *d += block.iter().sum::<f32>();
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the definitions, on 128 planes so that several rayon tasks share them.
    #[test]
    fn matches_the_definition_across_tasks() {
        let (planes, h, w, f) = (128, 5, 7, 3);
        let x: Vec<f32> = (0..planes * h * w).map(|i| (i * 37 % 101) as f32 - 50.0).collect();
        let mut y = vec![f32::NAN; x.len() * f * f];
        upsample_nearest_forward(&x, h, w, f, &mut y);
        let (oh, ow) = (h * f, w * f);
        for p in 0..planes {
            for i in 0..oh {
                for j in 0..ow {
                    assert_eq!(y[(p * oh + i) * ow + j], x[(p * h + i / f) * w + j / f], "y[{p}, {i}, {j}]");
                }
            }
        }
        let dy: Vec<f32> = (0..y.len()).map(|i| (i * 13 % 29) as f32).collect();
        let mut dx = vec![f32::NAN; x.len()];
        upsample_nearest_backward(&dy, h, w, f, &mut dx);
        for p in 0..planes {
            for a in 0..h {
                for b in 0..w {
                    let want: f32 = (0..f * f).map(|t| dy[(p * oh + a * f + t / f) * ow + b * f + t % f]).sum();
                    assert_eq!(dx[(p * h + a) * w + b], want, "dx[{p}, {a}, {b}]"); // small integers: exact
                }
            }
        }
    }
}
