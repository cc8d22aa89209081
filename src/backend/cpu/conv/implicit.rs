//! Convolution as an implicit GEMM on the AVX-512 micro-kernel: the im2col
//! matrix is never written out.
//!
//! The packed GEMM ([`crate::backend::cpu::packed_gemm`]) copies its right
//! operand into panels of NR = 32 columns before the micro-kernel reads them.
//! For a convolution that operand is `col_n`, and each panel of it can be
//! packed straight from the image, used by every sliver of the packed weights
//! while it is in cache, and forgotten:
//!
//! ```text
//! y_n (OC, OHW) = W (OC, CKK) · col_n (CKK, OHW)
//! panel t: [(c, i, j)][l] = x_n[c, src(i, j, q)],  q = 32 t + l     (0 where the tap is in the padding)
//! ```
//!
//! `src(i, j, q)` is the input pixel under output pixel `q` for tap `(i, j)`
//! ([`Taps`]). For a stride-1 convolution whose output is as wide as its input
//! (a "same" convolution), `src(i, j, q) = q + (i - p) W + (j - p)`: a panel row
//! is 32 consecutive floats of one input plane, read by two masked vector loads
//! whose masks zero the padding.
//!
//! The gradients are GEMMs of the same kind:
//!
//! ```text
//! dX (stride 1)  dX_n = conv(dY_n, W'),  W'[c, o, i, j] = W[o, c, KH-1-i, KW-1-j], padding KH-1-p
//! dW             dW' (OC, KK*C) += dY_n (OC, OHW) · colᵀ_n (OHW, KK*C)
//!                colᵀ_n[q, (i, j, c)] = xᵀ_n[src(i, j, q), c],  xᵀ_n (H*W, C) the image channels-last
//! ```
//!
//! dX of a stride-1 convolution is the full correlation of dY with the
//! flipped kernel (each input pixel collects every output it fed), which is
//! the forward pass again. dW's GEMM runs along output pixels, so its panels
//! hold 32 columns of `(tap, channel)`: with the image transposed to
//! channels-last, a panel row is one contiguous copy again. dW' is dW with its
//! columns in `(i, j, c)` order; it is put back at the end. A strided
//! convolution's dX goes through [`super::im2col`]'s col2im.

use super::{im2col, images_per_task, with_scratch, ConvGeom};
use crate::backend::cpu::copy_short;
use crate::backend::cpu::gemm::MatPtr;
use crate::backend::cpu::microkernel::{tile_rows, MR, NR};
use crate::backend::cpu::packed_gemm::{pack_a, sliver, sliver_count};
use rayon::prelude::*;
use std::arch::x86_64::*;

/// Depth of a k block: the block of a B panel (KC x 32 floats) stays in L1
/// while every sliver of A passes over it. Depths are balanced: 576 gives two
/// blocks of 288, 784 two of 392.
const KC: usize = 400;

/// Where each tap of the kernel reads in the input.
struct Taps {
    /// Output pixels OH * OW.
    ohw: usize,
    /// `src[tap * OHW + q]`, `tap = i * KW + j`: the input pixel `iy * W + ix`
    /// under output pixel `q`, or -1 where it falls in the padding.
    src: Vec<i32>,
    /// For a stride-1 convolution with OW == W, per `(tap, panel)`: the plane
    /// offset of the panel's first pixel and the mask of its lanes inside the image.
    shifted: Option<Vec<(isize, u32)>>,
}

impl Taps {
    fn new(g: &ConvGeom) -> Taps {
        let (oh, ow) = (g.oh(), g.ow());
        let ohw = oh * ow;
        let mut src = Vec::with_capacity(g.kh * g.kw * ohw);
        for i in 0..g.kh {
            for j in 0..g.kw {
                for y in 0..oh {
                    for x in 0..ow {
                        // (iy, ix) = (y s + i - p, x s + j - p)
                        let iy = (y * g.stride + i) as isize - g.pad as isize;
                        let ix = (x * g.stride + j) as isize - g.pad as isize;
                        let inside = (0..g.h as isize).contains(&iy) && (0..g.w as isize).contains(&ix);
                        src.push(if inside { (iy * g.w as isize + ix) as i32 } else { -1 });
                    }
                }
            }
        }
        let panels = ohw.div_ceil(NR);
        let shifted = (g.stride == 1 && ow == g.w).then(|| {
            let mut v = Vec::with_capacity(g.kh * g.kw * panels);
            for (tap, row) in src.chunks_exact(ohw).enumerate() {
                // src = q + (i - p) W + (j - p) wherever the tap is inside the image
                let shift = ((tap / g.kw) * g.w + tap % g.kw) as isize - (g.pad * g.w + g.pad) as isize;
                for t in 0..panels {
                    let lanes = &row[t * NR..ohw.min((t + 1) * NR)];
                    debug_assert!(lanes.iter().enumerate().all(|(l, &s)| s < 0 || s as isize == (t * NR + l) as isize + shift));
                    let mask = lanes.iter().enumerate().filter(|&(_, &s)| s >= 0).fold(0u32, |m, (l, _)| m | 1 << l);
                    v.push(((t * NR) as isize + shift, mask));
                }
            }
            v
        });
        Taps { ohw, src, shifted }
    }
}

/// Pack panel `t` of `col_n (CKK, OHW)` from one image `x (C, H*W)`:
/// `panel[r][l] = col_n[r, t*NR + l]`, zero past the last pixel.
#[target_feature(enable = "avx512f")]
unsafe fn pack_pixels(g: &ConvGeom, taps: &Taps, x: &[f32], t: usize, panel: &mut [f32]) {
    let (hw, kk) = (g.h * g.w, g.kh * g.kw);
    match &taps.shifted {
        Some(shifted) => {
            let panels = taps.ohw.div_ceil(NR);
            let out = panel.as_mut_ptr();
            for c in 0..g.c {
                let plane = x.as_ptr().add(c * hw);
                for tap in 0..kk {
                    let (start, mask) = shifted[tap * panels + t];
                    // A masked load never touches its masked-off lanes, so the
                    // lanes that would fall before or after the plane are not read.
                    let p = plane.wrapping_offset(start);
                    let row = out.add((c * kk + tap) * NR);
                    _mm512_storeu_ps(row, _mm512_maskz_loadu_ps(mask as __mmask16, p));
                    _mm512_storeu_ps(row.add(16), _mm512_maskz_loadu_ps((mask >> 16) as __mmask16, p.wrapping_add(16)));
                }
            }
        }
        None => {
            let cols = NR.min(taps.ohw - t * NR);
            for c in 0..g.c {
                let plane = &x[c * hw..(c + 1) * hw];
                for tap in 0..kk {
                    let src = &taps.src[tap * taps.ohw + t * NR..][..cols];
                    let row = &mut panel[(c * kk + tap) * NR..][..NR];
                    for (d, &s) in row.iter_mut().zip(src) {
                        *d = if s >= 0 { plane[s as usize] } else { 0.0 };
                    }
                    row[cols..].fill(0.0);
                }
            }
        }
    }
}

/// Pack panel `t` of `colᵀ_n (OHW, KK*C)`, columns in `(tap, channel)` order,
/// from the channels-last image `xt (H*W, C)`: `panel[q][l] = colᵀ_n[q, t*NR + l]`.
fn pack_taps(g: &ConvGeom, taps: &Taps, xt: &[f32], t: usize, panel: &mut [f32]) {
    let c = g.c;
    let cols = NR.min(g.kh * g.kw * c - t * NR);
    // The panel's columns as runs of channels of one tap: (tap, first channel, first lane, length).
    let mut runs = [(0usize, 0usize, 0usize, 0usize); NR];
    let (mut count, mut l) = (0, 0);
    while l < cols {
        let (tap, ch) = ((t * NR + l) / c, (t * NR + l) % c);
        let len = (c - ch).min(cols - l);
        runs[count] = (tap, ch, l, len);
        count += 1;
        l += len;
    }
    for (q, row) in panel.chunks_exact_mut(NR).take(taps.ohw).enumerate() {
        for &(tap, ch, l, len) in &runs[..count] {
            let s = taps.src[tap * taps.ohw + q];
            let dst = &mut row[l..l + len];
            if s >= 0 {
                copy_short::<NR>(dst, &xt[s as usize * c + ch..][..len]);
            } else {
                dst.fill(0.0);
            }
        }
        row[cols..].fill(0.0);
    }
}

/// `C (m, n) = A · B`, or `C += A · B` when `accumulate`, on this thread:
/// A packed into slivers (`m` rows, `k` deep, as by [`pack_a`]), B's panels
/// of NR columns packed on demand by `pack_panel(t, panel)`; C row-major with row stride `rsc`.
///
/// # Safety
/// The CPU must support AVX-512F; `c` must address an `m x n` matrix with row stride `rsc`.
unsafe fn gemm_panels(m: usize, k: usize, n: usize, apack: &[f32], mut pack_panel: impl FnMut(usize, &mut [f32]), panel: &mut [f32], c: *mut f32, rsc: usize, accumulate: bool) {
    let kc_step = k.div_ceil(k.div_ceil(KC));
    for t in 0..n.div_ceil(NR) {
        let nr = NR.min(n - t * NR);
        pack_panel(t, panel);
        for pc in (0..k).step_by(kc_step) {
            let kc = kc_step.min(k - pc);
            let beta = if pc == 0 && !accumulate { 0.0 } else { 1.0 };
            for s in 0..sliver_count(m) {
                let (row0, mr) = sliver(m, s);
                tile_rows(mr, kc, apack.as_ptr().add(s * MR * k + pc * MR), panel.as_ptr().add(pc * NR), c.add(row0 * rsc + t * NR), rsc, nr, 1.0, beta);
            }
        }
    }
}

/// A row-major `(rows, cols)` matrix packed into MR-row slivers for [`gemm_panels`].
fn pack_rows(rows: usize, cols: usize, a: &[f32], dst: &mut [f32]) {
    // SAFETY: `a` holds rows * cols floats, `dst` sliver_count(rows) * MR * cols.
    unsafe { pack_a(rows, cols, MatPtr { ptr: a.as_ptr(), rs: cols as isize, cs: 1 }, dst) }
}

/// Forward: `y (N, OC, OH, OW) = conv(x (N, C, H, W), w (OC, C, KH, KW))`, no bias.
/// The CPU must support AVX-512F.
pub fn forward(g: &ConvGeom, x: &[f32], w: &[f32], y: &mut [f32]) {
    let (ohw, ckk, chw) = (g.oh() * g.ow(), g.ckk(), g.c * g.h * g.w);
    let taps = Taps::new(g);
    let mut wpack = vec![0.0f32; sliver_count(g.oc) * MR * ckk];
    pack_rows(g.oc, ckk, w, &mut wpack);
    let per_task = images_per_task(g.n);
    y.par_chunks_mut(per_task * g.oc * ohw).enumerate().for_each(|(task, ys)| {
        with_scratch([ckk * NR], |[panel]| {
            for (i, yn) in ys.chunks_mut(g.oc * ohw).enumerate() {
                let xn = &x[(task * per_task + i) * chw..][..chw];
                // y_n (OC, OHW) = W (OC, CKK) · col_n (CKK, OHW)
                unsafe { gemm_panels(g.oc, ckk, ohw, &wpack, |t, p| pack_pixels(g, &taps, xn, t, p), panel, yn.as_mut_ptr(), ohw, false) };
            }
        })
    });
}

/// Backward: given `dy (N, OC, OH, OW)`, write `dX` into `dx` and
/// `dW (OC, C, KH, KW)` into `dw`, each only when asked. The CPU must support AVX-512F.
pub fn backward(g: &ConvGeom, x: &[f32], w: &[f32], dy: &[f32], dx: Option<&mut [f32]>, dw: Option<&mut [f32]>) {
    if let Some(dx) = dx {
        match flipped(g, w) {
            Some((gt, wt)) => forward(&gt, dy, &wt, dx),
            None => im2col::backward(g, x, w, dy, Some(dx), None),
        }
    }
    if let Some(dw) = dw {
        weight_grad(g, x, dy, dw);
    }
}

/// For a stride-1 convolution with a square kernel and `p <= K - 1`, the
/// input gradient as a forward convolution: the geometry of `dX = conv(dY, W')`
/// and `W'[c, o, i, j] = W[o, c, K-1-i, K-1-j]`.
fn flipped(g: &ConvGeom, w: &[f32]) -> Option<(ConvGeom, Vec<f32>)> {
    if g.stride != 1 || g.kh != g.kw || g.pad >= g.kh {
        return None;
    }
    let gt = ConvGeom { n: g.n, c: g.oc, h: g.oh(), w: g.ow(), oc: g.c, kh: g.kh, kw: g.kw, stride: 1, pad: g.kh - 1 - g.pad };
    debug_assert_eq!((gt.oh(), gt.ow()), (g.h, g.w));
    let kk = g.kh * g.kw;
    let mut wt = vec![0.0f32; w.len()];
    for (o, wo) in w.chunks_exact(g.c * kk).enumerate() {
        for (c, taps) in wo.chunks_exact(kk).enumerate() {
            // tap (i, j) -> (K-1-i, K-1-j) is index kk-1-tap
            for (tap, &v) in taps.iter().enumerate() {
                wt[(c * g.oc + o) * kk + kk - 1 - tap] = v;
            }
        }
    }
    Some((gt, wt))
}

/// `dW (OC, C, KH, KW) = Σ_n dY_n · col_nᵀ`: each task sums its run of images
/// into its own dW' (tap-major columns); the partial sums are added in run order.
fn weight_grad(g: &ConvGeom, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let (ohw, chw, hw) = (g.oh() * g.ow(), g.c * g.h * g.w, g.h * g.w);
    let (kk, ckk) = (g.kh * g.kw, g.ckk());
    let taps = Taps::new(g);
    let per_task = images_per_task(g.n);
    let partials: Vec<Vec<f32>> = (0..g.n.div_ceil(per_task))
        .into_par_iter()
        .map(|task| {
            let mut dwt = vec![0.0f32; g.oc * ckk];
            with_scratch([ohw * NR, sliver_count(g.oc) * MR * ohw, chw], |[panel, dypack, xt]| {
                for n in task * per_task..g.n.min((task + 1) * per_task) {
                    // xᵀ_n (H*W, C): the image channels-last
                    for (c, plane) in x[n * chw..(n + 1) * chw].chunks_exact(hw).enumerate() {
                        for (p, &v) in plane.iter().enumerate() {
                            xt[p * g.c + c] = v;
                        }
                    }
                    pack_rows(g.oc, ohw, &dy[n * g.oc * ohw..(n + 1) * g.oc * ohw], dypack);
                    // dW' (OC, KK*C) += dY_n (OC, OHW) · colᵀ_n (OHW, KK*C)
                    unsafe { gemm_panels(g.oc, ohw, ckk, dypack, |t, p| pack_taps(g, &taps, xt, t, p), panel, dwt.as_mut_ptr(), ckk, true) };
                }
            });
            dwt
        })
        .collect();
    // dW[o, c, tap] = Σ_tasks dW'[o, tap * C + c]
    for (o, row) in dw.chunks_exact_mut(ckk).enumerate() {
        for (c, taps) in row.chunks_exact_mut(kk).enumerate() {
            for (tap, v) in taps.iter_mut().enumerate() {
                *v = partials.iter().map(|p| p[o * ckk + tap * g.c + c]).sum();
            }
        }
    }
}
