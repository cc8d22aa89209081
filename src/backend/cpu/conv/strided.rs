//! A strided convolution whose kernel is a whole number of strides wide (the
//! 4x4, stride-2 downsampling of the VAE and VQ-VAE encoders) as a stride-1
//! convolution of the image rearranged space-to-depth.
//!
//! The implicit GEMM ([`super::implicit`]) packs a strided layer's panels one
//! float at a time (lane `l` of a panel row reads pixel `src(tap, q)`, two
//! apart), and its input gradient goes through im2col's col2im. Split the
//! zero-padded image by the phase of each pixel, `(py, px) = (yy mod s, xx mod s)`:
//!
//! ```text
//! xs[(py, px, c), u, v] = x_pad[c, s u + py, s v + px]             (s² C planes, Hs x Ws)
//! W'[o, (py, px, c), a, b] = W[o, c, s a + py, s b + px]          (a kernel K/s wide)
//! y[o, y, x] = Σ_(c, i, j) W[o, c, i, j] x_pad[c, s y + i, s x + j]
//!            = Σ_(c', a, b) W'[o, c', a, b] xs[c', y + a, x + b]     (stride 1, no padding)
//! ```
//!
//! The same multiply-adds, as a stride-1 convolution. Its output is taken on
//! the grid of the plane's width, `q = y Ws + x` (the columns `x >= OW` are
//! junk, dropped), where tap `(a, b)` reads the plane at `q + a Ws + b`: every
//! panel row is NR consecutive floats of one plane, a vector copy. The input
//! gradient is the adjoint, a stride-1 convolution of `dY` zero-padded by
//! `K/s - 1` with `W'` flipped, whose output is `dxs`, put back by phase:
//!
//! ```text
//! dxs[c', u, v] = Σ_(o, a, b) W'[o, c', K/s-1-a, K/s-1-b] dY_pad[o, u + a, v + b]
//! dx[c, s u + py - p, s v + px - p] = dxs[(py, px, c), u, v]
//! ```
//!
//! Both GEMMs run over a few junk columns (the 7x7 output of a 14x14 image:
//! a grid 8 wide for the forward pass, 9 for the gradient), and the panels
//! round the grid up to NR columns anyway.

use super::implicit::{gemm_panels, pack_rows, KC};
use super::{images_per_task, with_scratch, ConvGeom};
use crate::backend::cpu::copy_short;
use crate::backend::cpu::microkernel::{widen, MicroKernel};
use crate::backend::cpu::packed_gemm::sliver_count;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Whether this path can take the layer: a stride over 1 that divides the kernel.
pub fn fits(g: &ConvGeom) -> bool {
    g.stride > 1 && g.kh.is_multiple_of(g.stride) && g.kw.is_multiple_of(g.stride)
}

/// Whether the forward pass takes this path on the micro-kernel `K`: where
/// the grid's junk columns cost at most an eighth more panels of NR pixels
/// than the output has. (Measured, one thread, batch 32-64, per tier: 32
/// channels 14x14 -> 7x7, 2 panels either way at AVX-512, 3.1 -> 2.4 ms at
/// AVX-512 and 4.5 -> 2.9 at AVX2; 64 channels 16x16 -> 8x8, 3 panels
/// instead of 2 at AVX-512, 5.7 -> 7.1 ms.)
pub fn forward_pays<K: MicroKernel>(g: &ConvGeom) -> bool {
    let (oh, ow, s) = (g.oh(), g.ow(), g.stride);
    let grid = oh * (ow + g.kw / s - 1);
    fits(g) && 8 * grid.div_ceil(K::NR) <= 9 * (oh * ow).div_ceil(K::NR)
}

/// Whether the input gradient takes this path rather than im2col's col2im:
/// on micro-kernels narrower than AVX-512's, for 16 to 32 channels (`dxs`
/// has s² C rows; 4 or 12 rows, for 1 or 3 channels, were slower). Measured,
/// 2 threads, batch 64, alternated five times: 32 channels 14x14 -> 7x7 at
/// AVX2 1.65 -> 1.38 ms; at AVX-512 1.39 -> 1.47 (im2col's GEMM there is
/// matrixmultiply's AVX-512 kernel), and 48 channels 16x16 -> 8x8 at AVX2
/// 2.66 -> 3.30 (a grid of 90 columns for 64 pixels a phase).
pub fn input_grad_pays<K: MicroKernel>(g: &ConvGeom) -> bool {
    fits(g) && g.stride * g.stride * g.c >= 64 && g.c <= 32 && K::NR < 32
}

/// The stride-1 convolution on the grid: `out (M, rows * width) = A (M, C K K) · col`,
/// `col[(c, a, b), q] = planes[c][q + a width + b]`, on one thread.
struct Grid {
    /// Input planes C (of the GEMM, not of the layer).
    c: usize,
    /// Kernel height and width.
    kh: usize,
    kw: usize,
    /// Width of the planes and of the output grid.
    width: usize,
    /// Output rows.
    rows: usize,
    /// Floats per plane: the grid's reach past its last panel, zero-filled.
    plane: usize,
}

impl Grid {
    fn new<K: MicroKernel>(c: usize, kh: usize, kw: usize, width: usize, rows: usize) -> Grid {
        let n = rows * width;
        // the last panel reads NR floats from (panels - 1) NR + (KH-1) width + KW-1
        let plane = n.div_ceil(K::NR) * K::NR + (kh - 1) * width + kw;
        Grid { c, kh, kw, width, rows, plane }
    }

    /// `out (M, rows * width) = A · col`, `A` packed for `K` (and widened).
    ///
    /// # Safety
    /// The CPU must support `K`'s tier; `out` holds `m * rows * width` floats.
    unsafe fn gemm<K: MicroKernel>(&self, m: usize, apack: &[f32], planes: &[f32], panel: &mut [f32], out: *mut f32) {
        let (nr, kk, n) = (K::NR, self.kh * self.kw, self.rows * self.width);
        gemm_panels::<K>(m, self.c * kk, n, apack, true, |t, rows, p| {
            // row r of col is (c, a, b) = (r / KK, (r % KK) / KW, r % KW)
            for (r, dst) in rows.zip(p.chunks_exact_mut(nr)) {
                let (c, tap) = (r / kk, r % kk);
                let at = c * self.plane + t * nr + (tap / self.kw) * self.width + tap % self.kw;
                copy_short(dst, &planes[at..at + nr]);
            }
            p.as_ptr()
        }, panel, |t| (out.add(t * nr), n), |_| {}, false);
    }
}

/// `W'` (OC, s² C, K/s, K/s) of the module docs as rows `o`, or (`transpose`)
/// flipped in both kernel axes as rows `c'`, columns `(o, a, b)`; packed in
/// slivers for `K` (to be widened by the caller, [`widen`]).
fn rearranged_weights<K: MicroKernel>(g: &ConvGeom, w: &[f32], transpose: bool) -> Vec<f32> {
    let s = g.stride;
    let (kh, kw) = (g.kh / s, g.kw / s);
    let cs = s * s * g.c;
    let (rows, cols) = if transpose { (cs, g.oc * kh * kw) } else { (g.oc, cs * kh * kw) };
    let mut wr = vec![0.0f32; rows * cols];
    for o in 0..g.oc {
        for (py, px, c) in phases(s, g.c) {
            let cp = (py * s + px) * g.c + c;
            for a in 0..kh {
                for b in 0..kw {
                    let v = w[((o * g.c + c) * g.kh + s * a + py) * g.kw + s * b + px]; // W[o, c, s a + py, s b + px]
                    if transpose {
                        // A[c', (o, a', b')] = W'[o, c', K/s-1-a', K/s-1-b']
                        wr[cp * cols + (o * kh + kh - 1 - a) * kw + kw - 1 - b] = v;
                    } else {
                        wr[o * cols + (cp * kh + a) * kw + b] = v;
                    }
                }
            }
        }
    }
    let mut packed = vec![0.0f32; sliver_count::<K>(rows) * K::MR * cols];
    unsafe { pack_rows::<K>(rows, cols, &wr, &mut packed) };
    packed
}

/// `(py, px, c)` in the order of the space-to-depth channels `c' = (py s + px) C + c`.
fn phases(s: usize, c: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    (0..s).flat_map(move |py| (0..s).flat_map(move |px| (0..c).map(move |c| (py, px, c))))
}

/// Forward: `y (N, OC, OH, OW) = conv(x, w)`, no bias, for [`fits`] layers.
pub fn forward_into<K: MicroKernel>(g: &ConvGeom, x: &[f32], w: &[f32], y: &mut [MaybeUninit<f32>]) {
    assert!(fits(g), "strided::forward_into: a stride over 1 that divides the kernel, got {g:?}");
    let s = g.stride;
    let (oh, ow, chw) = (g.oh(), g.ow(), g.c * g.h * g.w);
    let (kh, kw) = (g.kh / s, g.kw / s);
    let (hs, ws) = (oh + kh - 1, ow + kw - 1);
    let grid = Grid::new::<K>(s * s * g.c, kh, kw, ws, oh);
    let (packed, mut wide) = (rearranged_weights::<K>(g, w, false), Vec::new());
    let apack = widen::<K>(&packed, &mut wide);
    let per_task = images_per_task(g.n);
    y.par_chunks_mut(per_task * g.oc * oh * ow).enumerate().for_each(|(task, ys)| {
        with_scratch([KC * K::NR, grid.c * grid.plane, g.oc * oh * ws], |[panel, xs, out]| {
            xs.fill(0.0); // the padding and the planes' tails stay zero
            for (i, yn) in ys.chunks_mut(g.oc * oh * ow).enumerate() {
                let xn = &x[(task * per_task + i) * chw..][..chw];
                // xs[(py, px, c), u, v] = x[c, s u + py - p, s v + px - p] inside the image
                for (cp, (py, px, c)) in phases(s, g.c).enumerate() {
                    let plane = &mut xs[cp * grid.plane..][..hs * ws];
                    for u in 0..hs {
                        let yy = (s * u + py) as isize - g.pad as isize;
                        if !(0..g.h as isize).contains(&yy) {
                            continue;
                        }
                        let src = &xn[(c * g.h + yy as usize) * g.w..][..g.w];
                        for (v, d) in plane[u * ws..(u + 1) * ws].iter_mut().enumerate() {
                            let xx = (s * v + px) as isize - g.pad as isize;
                            if (0..g.w as isize).contains(&xx) {
                                *d = src[xx as usize];
                            }
                        }
                    }
                }
                // out (OC, OH*Ws) = W' · col(xs), then y[o, y, x] = out[o, y Ws + x] for x < OW
                unsafe { grid.gemm::<K>(g.oc, apack, xs, panel, out.as_mut_ptr()) };
                for (yo, go) in yn.chunks_exact_mut(oh * ow).zip(out.chunks_exact(oh * ws)) {
                    for (row, src) in yo.chunks_exact_mut(ow).zip(go.chunks_exact(ws)) {
                        for (d, &v) in row.iter_mut().zip(src) {
                            d.write(v);
                        }
                    }
                }
            }
        })
    });
}

/// Input gradient: `dx (N, C, H, W)` from `dy (N, OC, OH, OW)`, for [`fits`] layers.
/// Every element of `dx` is written.
pub fn input_grad<K: MicroKernel>(g: &ConvGeom, w: &[f32], dy: &[f32], dx: &mut [MaybeUninit<f32>]) {
    assert!(fits(g), "strided::input_grad: a stride over 1 that divides the kernel, got {g:?}");
    let s = g.stride;
    let (oh, ow, hw) = (g.oh(), g.ow(), g.h * g.w);
    let (kh, kw) = (g.kh / s, g.kw / s);
    let (hs, ws) = (oh + kh - 1, ow + kw - 1); // dxs planes
    let wd = ow + 2 * (kw - 1); // dY padded by K/s - 1 on each side
    let grid = Grid::new::<K>(g.oc, kh, kw, wd, hs);
    let cs = s * s * g.c;
    let (packed, mut wide) = (rearranged_weights::<K>(g, w, true), Vec::new());
    let apack = widen::<K>(&packed, &mut wide);
    let per_task = images_per_task(g.n);
    dx.par_chunks_mut(per_task * g.c * hw).enumerate().for_each(|(task, dxs)| {
        with_scratch([KC * K::NR, g.oc * grid.plane, cs * hs * wd], |[panel, dyp, out]| {
            dyp.fill(0.0); // the padding and the planes' tails stay zero
            for (i, dxn) in dxs.chunks_mut(g.c * hw).enumerate() {
                let dyn_ = &dy[(task * per_task + i) * g.oc * oh * ow..][..g.oc * oh * ow];
                // dY_pad[o, y + K/s - 1, x + K/s - 1] = dY[o, y, x]
                for (o, src) in dyn_.chunks_exact(oh * ow).enumerate() {
                    for (y, row) in src.chunks_exact(ow).enumerate() {
                        dyp[o * grid.plane + (y + kh - 1) * wd + kw - 1..][..ow].copy_from_slice(row);
                    }
                }
                // out (s² C, Hs*Wd) = W'ᵀ flipped · col(dY_pad)
                unsafe { grid.gemm::<K>(cs, apack, dyp, panel, out.as_mut_ptr()) };
                // dx[c, yy, xx] = out[(py, px, c), u Wd + v],  s u + py = yy + p, s v + px = xx + p
                for c in 0..g.c {
                    for yy in 0..g.h {
                        let (u, py) = ((yy + g.pad) / s, (yy + g.pad) % s);
                        let row = &mut dxn[(c * g.h + yy) * g.w..][..g.w];
                        for (xx, d) in row.iter_mut().enumerate() {
                            let (v, px) = ((xx + g.pad) / s, (xx + g.pad) % s);
                            // a pixel under no window (past the last one) gets nothing
                            d.write(if u < hs && v < ws { out[((py * s + px) * g.c + c) * hs * wd + u * wd + v] } else { 0.0 });
                        }
                    }
                }
            }
        })
    });
}
