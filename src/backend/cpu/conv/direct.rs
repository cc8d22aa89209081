//! Direct convolution for the layers that a GEMM tile fits badly: a stride-1
//! convolution with few output channels (the forward pass and the weight
//! gradient of a decoder's last layer, 1 or 3 channels) or few channels on
//! either side (the weight gradient of the dVAE's 8- and 16-channel layers).
//!
//! There the implicit GEMM ([`super::implicit`]) fills a 12 x 32 micro-tile
//! (AVX-512) with 1 to 8 rows or 8 to 9 columns and spends more time packing
//! its panels than multiplying. Here nothing is packed: each image is
//! zero-padded once to `(HP, WP)`, and output pixels are taken on the grid of
//! the padded width, `q' = y WP + x` (columns `x >= OW` of the grid are junk,
//! dropped from `y` and zero in `dY`). Tap `(i, j)` then reads the padded
//! plane at `q' + i WP + j`, L consecutive pixels per vector load:
//!
//! ```text
//! forward  y[o, q']          = Σ_c Σ_(i,j) w[o, c, i, j] · xp[c, q' + i WP + j]
//! dW       dW[o, c, i, j]   += Σ_q' dYg[o, q'] · xp[c, q' + i WP + j]
//! ```
//!
//! The vectors are the tier's ([`Lanes`]: 16, 8 or 4 floats), run under its
//! `#[target_feature]` ([`simd_as`]); a register tile of a few output rows by
//! a few vectors (forward) or output rows by the `KW` taps of a kernel row, or
//! by a few channels of a 1x1 kernel (dW), keeps the sums in registers across
//! the sweep.

#[cfg(target_arch = "x86_64")]
use super::lanes::{Avx2x8, Avx512x16};
use super::lanes::{Lanes, Portable4};
use super::{images_per_task, with_scratch, ConvGeom};
use crate::backend::cpu::tier::tier;
#[cfg(target_arch = "x86_64")]
use crate::backend::cpu::tier::Tier;
#[cfg(target_arch = "x86_64")]
use crate::ops::kernels::Fused;
use crate::ops::kernels::simd_as;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Output rows of a dW tile (with the `KW` taps of a kernel row: 3 x 3 sums).
const DW_ROWS: usize = 3;
/// Vectors of pixels of a forward tile (with up to [`FWD_ROWS`] output rows).
const FWD_VECTORS: usize = 4;
/// Output rows of a forward tile.
pub const FWD_ROWS: usize = 3;

/// Whether the forward pass takes this path: stride 1, 1 to [`FWD_ROWS`] output channels.
pub fn forward_fits(g: &ConvGeom) -> bool {
    g.stride == 1 && g.oc <= FWD_ROWS
}

/// Whether the weight gradient takes this path, for a micro-kernel `NR` columns
/// wide: stride 1, a 1x1 or 3-wide kernel, and a GEMM that fills its tile
/// badly: few channels (C KH KW columns in panels of NR), at most
/// `DW_ROWS` = 3 output channels (one tile of this path holds them all; the
/// GEMM's dW has 1 to 3 rows: 32 -> 1 at 28 x 28, batch 64, took 1.33 ms
/// there and 0.58 here at AVX-512, 1.38 and 0.89 at AVX2), or up to 8 output
/// channels while the image must be packed as well (C not a multiple of NR;
/// when it is, the GEMM reads the image in place and was faster, 32 -> 8).
pub fn weight_grad_fits(g: &ConvGeom, nr: usize) -> bool {
    g.stride == 1 && (g.kw == 1 || g.kw == 3) && (g.c <= 8 || g.oc <= DW_ROWS || (g.oc <= 8 && !g.c.is_multiple_of(nr)))
}

/// The padded image geometry: `(HP, WP)`, the grid's length `OH * WP`
/// rounded up to `lanes`, and a plane's length (the grid's reach past it: taps
/// and one vector of slack, all zero).
fn padded(g: &ConvGeom, lanes: usize) -> (usize, usize, usize, usize) {
    let (hp, wp) = (g.h + 2 * g.pad, g.w + 2 * g.pad);
    let grid = (g.oh() * wp).div_ceil(lanes) * lanes;
    (hp, wp, grid, grid + (g.kh - 1) * wp + g.kw + lanes)
}

/// `xp[c]` = the image `x (C, H, W)` zero-padded by `p`, one plane of `plane`
/// floats per channel; only the inside is written (the padding stays zero).
fn fill_padded(g: &ConvGeom, x: &[f32], wp: usize, plane: usize, xp: &mut [f32]) {
    for (xc, dst) in x.chunks_exact(g.h * g.w).zip(xp.chunks_exact_mut(plane)) {
        for (y, row) in xc.chunks_exact(g.w).enumerate() {
            dst[(y + g.pad) * wp + g.pad..][..g.w].copy_from_slice(row);
        }
    }
}

/// Runs `f::<V>()` under the tier's features with its vector `V`.
macro_rules! per_tier {
    ($f:ident ( $($arg:expr),* )) => {
        match tier() {
            #[cfg(target_arch = "x86_64")]
            Tier::Avx512 => simd_as::<Fused, _>(#[inline(always)] || $f::<Avx512x16>($($arg),*)),
            #[cfg(target_arch = "x86_64")]
            Tier::Avx2Fma => simd_as::<Fused, _>(#[inline(always)] || $f::<Avx2x8>($($arg),*)),
            _ => crate::with_mul_add!(M => simd_as::<M, _>(#[inline(always)] || $f::<Portable4<M>>($($arg),*))),
        }
    };
}

/// Forward: `y (N, OC, OH, OW) = conv(x, w)`, no bias, for [`forward_fits`] layers.
pub fn forward_into(g: &ConvGeom, x: &[f32], w: &[f32], y: &mut [MaybeUninit<f32>]) {
    assert!(forward_fits(g), "direct::forward_into: stride 1 and at most {FWD_ROWS} output channels, got {g:?}");
    let (ohw, chw) = (g.oh() * g.ow(), g.c * g.h * g.w);
    let per_task = images_per_task(g.n);
    y.par_chunks_mut(per_task * g.oc * ohw).enumerate().for_each(|(task, ys)| {
        let lanes = 16;
        let (_, wp, grid, plane) = padded(g, lanes * FWD_VECTORS);
        with_scratch([g.c * plane, g.oc * grid], |[xp, yg]| {
            xp.fill(0.0);
            for (i, yn) in ys.chunks_mut(g.oc * ohw).enumerate() {
                fill_padded(g, &x[(task * per_task + i) * chw..][..chw], wp, plane, xp);
                per_tier!(forward_grid(g, w, xp, wp, grid, plane, yg));
                // y[o, y, x] = yg[o, y WP + x] for x < OW
                for (yo, go) in yn.chunks_exact_mut(ohw).zip(yg.chunks_exact(grid)) {
                    for (row, src) in yo.chunks_exact_mut(g.ow()).zip(go.chunks(wp)) {
                        for (d, &s) in row.iter_mut().zip(src) {
                            d.write(s);
                        }
                    }
                }
            }
        })
    });
}

/// `yg[o, q'] = Σ_c Σ_(i,j) w[o, c, i, j] xp[c, q' + i WP + j]` over the whole grid,
/// in tiles of `OC` rows by [`FWD_VECTORS`] vectors of `L` pixels.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // geometry, weights, the padded image and its sizes, the output
fn forward_grid<V: Lanes>(g: &ConvGeom, w: &[f32], xp: &[f32], wp: usize, grid: usize, plane: usize, yg: &mut [f32]) {
    match g.oc {
        1 => forward_rows::<V, 1>(g, w, xp, wp, grid, plane, yg),
        2 => forward_rows::<V, 2>(g, w, xp, wp, grid, plane, yg),
        _ => forward_rows::<V, FWD_ROWS>(g, w, xp, wp, grid, plane, yg),
    }
}

/// [`forward_grid`] for `O == OC` output channels.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // as forward_grid
fn forward_rows<V: Lanes, const O: usize>(g: &ConvGeom, w: &[f32], xp: &[f32], wp: usize, grid: usize, plane: usize, yg: &mut [f32]) {
    let kk = g.kh * g.kw;
    for q0 in (0..grid).step_by(V::L * FWD_VECTORS) {
        let mut acc = [[V::zero(); FWD_VECTORS]; O];
        for c in 0..g.c {
            let xc = &xp[c * plane..(c + 1) * plane];
            for i in 0..g.kh {
                for j in 0..g.kw {
                    let at = q0 + i * wp + j;
                    let xv: [V; FWD_VECTORS] = std::array::from_fn(|v| V::load(xc, at + v * V::L));
                    for (o, acc_o) in acc.iter_mut().enumerate() {
                        let wv = V::splat(w[(o * g.c + c) * kk + i * g.kw + j]); // w[o, c, i, j]
                        for (a, &x) in acc_o.iter_mut().zip(&xv) {
                            *a = V::mul_add(wv, x, *a);
                        }
                    }
                }
            }
        }
        for (o, acc_o) in acc.iter().enumerate() {
            for (v, a) in acc_o.iter().enumerate() {
                a.store(&mut yg[o * grid + q0 + v * V::L..]);
            }
        }
    }
}

/// `dW (OC, C, KH, KW) = Σ_n Σ_q' dYg_n[o, q'] xp_n[c, q' + i WP + j]` for
/// [`weight_grad_fits`] layers: each task sums its run of images into its own
/// dW, and the partial sums are added in run order (the same bits every time).
pub fn weight_grad(g: &ConvGeom, x: &[f32], dy: &[f32], dw: &mut [MaybeUninit<f32>]) {
    assert!(g.stride == 1 && (g.kw == 1 || g.kw == 3), "direct::weight_grad: stride 1 and a 1- or 3-wide kernel only, got {g:?}");
    let (ohw, chw) = (g.oh() * g.ow(), g.c * g.h * g.w);
    let per_task = images_per_task(g.n);
    let partials: Vec<Vec<f32>> = (0..g.n.div_ceil(per_task))
        .into_par_iter()
        .map(|task| {
            let mut part = vec![0.0f32; dw.len()];
            let (_, wp, grid, plane) = padded(g, 16);
            with_scratch([g.c * plane, g.oc * grid], |[xp, dyg]| {
                xp.fill(0.0);
                dyg.fill(0.0);
                for n in task * per_task..g.n.min((task + 1) * per_task) {
                    fill_padded(g, &x[n * chw..(n + 1) * chw], wp, plane, xp);
                    // dYg[o, y WP + x] = dY[o, y, x]; the junk columns stay zero
                    for (src, dst) in dy[n * g.oc * ohw..(n + 1) * g.oc * ohw].chunks_exact(ohw).zip(dyg.chunks_exact_mut(grid)) {
                        for (row, d) in src.chunks_exact(g.ow()).zip(dst.chunks_mut(wp)) {
                            d[..g.ow()].copy_from_slice(row);
                        }
                    }
                    per_tier!(weight_grad_image(g, xp, dyg, wp, grid, plane, &mut part));
                }
            });
            part
        })
        .collect();
    // dW = Σ_tasks partial, in task order
    for (k, v) in dw.iter_mut().enumerate() {
        v.write(partials.iter().map(|p| p[k]).sum());
    }
}

/// One image's `dW[o, c, i, j] += Σ_q' dYg[o, q'] xp[c, q' + i WP + j]`, in
/// tiles of [`DW_ROWS`] output channels by the `KW` taps of one kernel row.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // geometry, the two padded operands and their sizes, the output
fn weight_grad_image<V: Lanes>(g: &ConvGeom, xp: &[f32], dyg: &[f32], wp: usize, grid: usize, plane: usize, dw: &mut [f32]) {
    if g.kh == 1 && g.kw == 1 {
        return weight_grad_pointwise::<V>(g, xp, dyg, grid, plane, dw);
    }
    for o0 in (0..g.oc).step_by(DW_ROWS) {
        match (g.kw, DW_ROWS.min(g.oc - o0)) {
            (1, 1) => weight_grad_tile::<V, 1, 1>(g, o0, xp, dyg, wp, grid, plane, dw),
            (1, 2) => weight_grad_tile::<V, 1, 2>(g, o0, xp, dyg, wp, grid, plane, dw),
            (1, _) => weight_grad_tile::<V, 1, DW_ROWS>(g, o0, xp, dyg, wp, grid, plane, dw),
            (_, 1) => weight_grad_tile::<V, 3, 1>(g, o0, xp, dyg, wp, grid, plane, dw),
            (_, 2) => weight_grad_tile::<V, 3, 2>(g, o0, xp, dyg, wp, grid, plane, dw),
            (_, _) => weight_grad_tile::<V, 3, DW_ROWS>(g, o0, xp, dyg, wp, grid, plane, dw),
        }
    }
}

/// The tile of `R` output channels from `o0`, for a kernel `J == KW` wide.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // as weight_grad_image, and the tile's first row
fn weight_grad_tile<V: Lanes, const J: usize, const R: usize>(g: &ConvGeom, o0: usize, xp: &[f32], dyg: &[f32], wp: usize, grid: usize, plane: usize, dw: &mut [f32]) {
    let kk = g.kh * J;
    for c in 0..g.c {
        let xc = &xp[c * plane..(c + 1) * plane];
        for i in 0..g.kh {
            let mut acc = [[V::zero(); J]; R];
            for q in (0..grid).step_by(V::L) {
                let d: [V; R] = std::array::from_fn(|r| V::load(dyg, (o0 + r) * grid + q));
                for j in 0..J {
                    let xv = V::load(xc, q + i * wp + j);
                    for (acc_r, &d_r) in acc.iter_mut().zip(&d) {
                        acc_r[j] = V::mul_add(d_r, xv, acc_r[j]);
                    }
                }
            }
            for (r, acc_r) in acc.iter().enumerate() {
                for (j, a) in acc_r.iter().enumerate() {
                    // dW[o, c, i, j] += Σ_l acc (lanes added pairwise, a fixed order)
                    dw[((o0 + r) * g.c + c) * kk + i * J + j] += a.sum();
                }
            }
        }
    }
}

/// Channels of a 1x1 dW tile (with [`DW_ROWS`] output channels: 3 x 4 sums).
const DW_CHANNELS: usize = 4;

/// [`weight_grad_image`] of a 1x1 convolution, `dW[o, c] += Σ_q' dYg[o, q'] xp[c, q']`:
/// a tile of [`DW_ROWS`] output channels by [`DW_CHANNELS`] channels (one tap
/// each, where a 3-wide kernel's tile takes three taps of one channel).
#[inline(always)]
fn weight_grad_pointwise<V: Lanes>(g: &ConvGeom, xp: &[f32], dyg: &[f32], grid: usize, plane: usize, dw: &mut [f32]) {
    for o0 in (0..g.oc).step_by(DW_ROWS) {
        let mut c0 = 0;
        while c0 < g.c {
            let cs = if g.c - c0 >= DW_CHANNELS { DW_CHANNELS } else { 1 };
            match (DW_ROWS.min(g.oc - o0), cs) {
                (1, 1) => pointwise_tile::<V, 1, 1>(g, o0, c0, xp, dyg, grid, plane, dw),
                (2, 1) => pointwise_tile::<V, 2, 1>(g, o0, c0, xp, dyg, grid, plane, dw),
                (_, 1) => pointwise_tile::<V, DW_ROWS, 1>(g, o0, c0, xp, dyg, grid, plane, dw),
                (1, _) => pointwise_tile::<V, 1, DW_CHANNELS>(g, o0, c0, xp, dyg, grid, plane, dw),
                (2, _) => pointwise_tile::<V, 2, DW_CHANNELS>(g, o0, c0, xp, dyg, grid, plane, dw),
                (_, _) => pointwise_tile::<V, DW_ROWS, DW_CHANNELS>(g, o0, c0, xp, dyg, grid, plane, dw),
            }
            c0 += cs;
        }
    }
}

/// The 1x1 tile of `R` output channels from `o0` by `J` channels from `c0`.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // as weight_grad_pointwise, and the tile's corner
fn pointwise_tile<V: Lanes, const R: usize, const J: usize>(g: &ConvGeom, o0: usize, c0: usize, xp: &[f32], dyg: &[f32], grid: usize, plane: usize, dw: &mut [f32]) {
    let mut acc = [[V::zero(); J]; R];
    for q in (0..grid).step_by(V::L) {
        let d: [V; R] = std::array::from_fn(|r| V::load(dyg, (o0 + r) * grid + q));
        for j in 0..J {
            let xv = V::load(xp, (c0 + j) * plane + q);
            for (acc_r, &d_r) in acc.iter_mut().zip(&d) {
                acc_r[j] = V::mul_add(d_r, xv, acc_r[j]);
            }
        }
    }
    for (r, acc_r) in acc.iter().enumerate() {
        for (j, a) in acc_r.iter().enumerate() {
            dw[(o0 + r) * g.c + c0 + j] += a.sum(); // dW[o, c]
        }
    }
}
