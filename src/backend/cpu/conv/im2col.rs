//! The portable path: im2col + GEMM, for CPUs without AVX-512 (the GEMM is then
//! `matrixmultiply`'s), and the input gradient of strided convolutions on every CPU.
//!
//! im2col lays every receptive field of one image out as a column, so that
//! the convolution becomes one matrix product:
//!
//! ```text
//! col   (C*KH*KW, OH*OW)    col[(c, i, j), (y, x)] = x_pad[c, y*s + i, x*s + j]
//! out_n (OC, OH*OW)       = W (OC, C*KH*KW) · col
//! dW    (OC, C*KH*KW)    += dY_n (OC, OH*OW) · col^T   (computed as its transpose)
//! dcol  (C*KH*KW, OH*OW)  = W^T · dY_n,   dX_n = col2im(dcol)
//! ```

use super::{images_per_task, with_scratch, ConvGeom};
use crate::backend::cpu::gemm::{sgemm_serial, MatPtr};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// For output column `xo` in `0..ow`, the input column is `xo*s + j - pad`:
/// the range of `xo` whose input column lies inside `0..w` (`lo..hi`), so that
/// the loops below copy that range and zero the rest, without a test per pixel.
fn valid_cols(g: &ConvGeom, j: usize) -> (usize, usize) {
    let ow = g.ow();
    // xo*s + j >= pad  <=>  xo >= ceil((pad - j) / s)
    let lo = if g.pad > j { (g.pad - j).div_ceil(g.stride) } else { 0 }.min(ow);
    // xo*s + j - pad <= w - 1  <=>  xo <= (w - 1 + pad - j) / s
    let hi = if g.w + g.pad > j { ((g.w - 1 + g.pad - j) / g.stride + 1).min(ow) } else { 0 };
    (lo, hi.max(lo))
}

fn is_same_stride1(g: &ConvGeom) -> bool {
    g.stride == 1 && g.ow() == g.w
}

/// For a "same" convolution (stride 1, OW = W) the row of `col` for one tap
/// `(c, i, j)` is the plane `x[c]` shifted by `(i - pad) * W + (j - pad)`: one
/// long copy, with the rows that fall off the top or bottom and the columns
/// that wrapped around from the neighbouring row set to zero afterwards.
/// Returns the range of output rows `y0..y1` whose input row is inside the image.
fn shifted_rows(g: &ConvGeom, i: usize) -> (usize, usize) {
    let oh = g.oh();
    let y0 = g.pad.saturating_sub(i).min(oh);
    let y1 = (g.h + g.pad).saturating_sub(i).min(oh).max(y0);
    (y0, y1)
}

/// Fill `col` (C*KH*KW, OH*OW) from one image `x` (C, H, W).
pub fn im2col(g: &ConvGeom, x: &[f32], col: &mut [f32]) {
    let (oh, ow) = (g.oh(), g.ow());
    if is_same_stride1(g) {
        let plane = g.h * g.w;
        for c in 0..g.c {
            let src = &x[c * plane..(c + 1) * plane];
            for i in 0..g.kh {
                let (y0, y1) = shifted_rows(g, i);
                for j in 0..g.kw {
                    let row = &mut col[((c * g.kh + i) * g.kw + j) * oh * ow..][..oh * ow];
                    let (lo, hi) = valid_cols(g, j);
                    // row[y*ow + xo] = src[(y + i - pad) * w + xo + j - pad] for y in y0..y1
                    let shift = g.same_shift(i, j);
                    let (d0, d1) = (y0 * ow, y1 * ow);
                    // (a kernel wider than the padded image can shift the whole run off the plane)
                    let s0 = (d0 as isize + shift).clamp(0, plane as isize) as usize;
                    let s1 = (d1 as isize + shift).clamp(s0 as isize, plane as isize) as usize;
                    if s1 == s0 {
                        row.fill(0.0);
                        continue;
                    }
                    let d_start = (s0 as isize - shift) as usize;
                    row[..d_start].fill(0.0);
                    row[d_start..d_start + (s1 - s0)].copy_from_slice(&src[s0..s1]);
                    row[d_start + (s1 - s0)..].fill(0.0);
                    for y in y0..y1 {
                        row[y * ow..y * ow + lo].fill(0.0);
                        row[y * ow + hi..(y + 1) * ow].fill(0.0);
                    }
                }
            }
        }
        return;
    }
    for c in 0..g.c {
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &mut col[((c * g.kh + i) * g.kw + j) * oh * ow..][..oh * ow];
                let (lo, hi) = valid_cols(g, j);
                for y in 0..oh {
                    let iy = (y * g.stride + i) as isize - g.pad as isize;
                    let dst = &mut row[y * ow..(y + 1) * ow];
                    if iy < 0 || iy >= g.h as isize {
                        dst.fill(0.0);
                        continue;
                    }
                    let src = &x[(c * g.h + iy as usize) * g.w..][..g.w];
                    dst[..lo].fill(0.0);
                    dst[hi..].fill(0.0);
                    let x0 = lo * g.stride + j - g.pad; // input column of output column lo
                    if g.stride == 1 {
                        dst[lo..hi].copy_from_slice(&src[x0..x0 + (hi - lo)]);
                    } else {
                        for (d, s) in dst[lo..hi].iter_mut().zip(src[x0..].iter().step_by(g.stride)) {
                            *d = *s;
                        }
                    }
                }
            }
        }
    }
}

/// Add `col` (C*KH*KW, OH*OW) back into one image gradient `dx` (C, H, W): the adjoint of [`im2col`].
///
/// `col` is scratch: for a same convolution its wrapped-around columns are
/// zeroed so that each tap's row can be added back as one long range.
pub fn col2im(g: &ConvGeom, col: &mut [f32], dx: &mut [f32]) {
    let (oh, ow) = (g.oh(), g.ow());
    if is_same_stride1(g) {
        let plane = g.h * g.w;
        for c in 0..g.c {
            let dst = &mut dx[c * plane..(c + 1) * plane];
            for i in 0..g.kh {
                let (y0, y1) = shifted_rows(g, i);
                for j in 0..g.kw {
                    let row = &mut col[((c * g.kh + i) * g.kw + j) * oh * ow..][..oh * ow];
                    let (lo, hi) = valid_cols(g, j);
                    for y in y0..y1 {
                        row[y * ow..y * ow + lo].fill(0.0);
                        row[y * ow + hi..(y + 1) * ow].fill(0.0);
                    }
                    let shift = g.same_shift(i, j);
                    let (d0, d1) = (y0 * ow, y1 * ow);
                    let s0 = (d0 as isize + shift).clamp(0, plane as isize) as usize;
                    let s1 = (d1 as isize + shift).clamp(s0 as isize, plane as isize) as usize;
                    if s1 == s0 {
                        continue;
                    }
                    let d_start = (s0 as isize - shift) as usize;
                    dst[s0..s1].iter_mut().zip(&row[d_start..]).for_each(|(d, v)| *d += v);
                }
            }
        }
        return;
    }
    for c in 0..g.c {
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &col[((c * g.kh + i) * g.kw + j) * oh * ow..][..oh * ow];
                let (lo, hi) = valid_cols(g, j);
                for y in 0..oh {
                    let iy = (y * g.stride + i) as isize - g.pad as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let dst = &mut dx[(c * g.h + iy as usize) * g.w..][..g.w];
                    let x0 = lo * g.stride + j - g.pad;
                    let src = &row[y * ow + lo..y * ow + hi];
                    if g.stride == 1 {
                        dst[x0..x0 + (hi - lo)].iter_mut().zip(src).for_each(|(d, s)| *d += s);
                    } else {
                        for (d, s) in dst[x0..].iter_mut().step_by(g.stride).zip(src) {
                            *d += s;
                        }
                    }
                }
            }
        }
    }
}

fn mat(ptr: *const f32, rs: usize, cs: usize) -> MatPtr {
    MatPtr { ptr, rs: rs as isize, cs: cs as isize }
}

/// Forward: `y (N, OC, OH, OW) = conv(x (N, C, H, W), w (OC, C, KH, KW))`, no bias.
pub fn forward(g: &ConvGeom, x: &[f32], w: &[f32], y: &mut [f32]) {
    forward_into(g, x, w, super::as_uninit(y))
}

/// [`forward`] into memory that need not be initialised: every element of `y`
/// is written (a GEMM with beta = 0 never reads its output).
pub fn forward_into(g: &ConvGeom, x: &[f32], w: &[f32], y: &mut [MaybeUninit<f32>]) {
    let (ohw, ckk, chw) = (g.oh() * g.ow(), g.ckk(), g.c * g.h * g.w);
    let per_task = images_per_task(g.n);
    let col_len = if g.is_pointwise() { 0 } else { ckk * ohw };
    y.par_chunks_mut(per_task * g.oc * ohw).enumerate().for_each(|(task, ys)| {
        with_scratch([col_len], |[col]| {
            for (i, yn) in ys.chunks_mut(g.oc * ohw).enumerate() {
                let n = task * per_task + i;
                let xn = &x[n * chw..(n + 1) * chw];
                let colp = if g.is_pointwise() { xn.as_ptr() } else { im2col(g, xn, col); col.as_ptr() };
                // out_n (OC, OHW) = W (OC, CKK) · col (CKK, OHW)
                unsafe { sgemm_serial(g.oc, ckk, ohw, 1.0, mat(w.as_ptr(), ckk, 1), mat(colp, ohw, 1), 0.0, yn.as_mut_ptr() as *mut f32, ohw as isize, 1) };
            }
        })
    });
}

/// Backward: given `dy (N, OC, OH, OW)`, write `dX` into `dx` and
/// `dW (OC, C, KH, KW)` into `dw`, each only when asked.
///
/// Per image, with `col_n = im2col(x_n)`:
///
/// ```text
/// dWᵀ (CKK, OC) += col_n (CKK, OHW) · dY_nᵀ (OHW, OC)    (tall: 576 rows, not 64, for the GEMM)
/// dcol (CKK, OHW) = Wᵀ (CKK, OC) · dY_n (OC, OHW),        dX_n = col2im(dcol)
/// ```
///
/// Each task sums dWᵀ over its run of images; the partial sums are added in
/// run order and transposed into `dw` at the end.
pub fn backward(g: &ConvGeom, x: &[f32], w: &[f32], dy: &[f32], dx: Option<&mut [f32]>, dw: Option<&mut [f32]>) {
    let (ohw, ckk, chw) = (g.oh() * g.ow(), g.ckk(), g.c * g.h * g.w);
    let want_dw = dw.is_some();
    let pointwise = g.is_pointwise();
    let per_task = images_per_task(g.n);
    // One task: images first..first + count, with dX_n written into `dxs` when given.
    let col_len = if pointwise { 0 } else { ckk * ohw };
    let task = |first: usize, count: usize, mut dxs: Option<&mut [f32]>| -> Vec<f32> {
        let mut dwt = vec![0.0f32; if want_dw { ckk * g.oc } else { 0 }];
        with_scratch([col_len, col_len], |[col, dcol]| for n in first..first + count {
            let dyn_ = &dy[n * g.oc * ohw..(n + 1) * g.oc * ohw];
            if want_dw {
                let xn = &x[n * chw..(n + 1) * chw];
                let colp = if pointwise { xn.as_ptr() } else { im2col(g, xn, col); col.as_ptr() };
                // dWᵀ (CKK, OC) += col (CKK, OHW) · dY_nᵀ (OHW, OC)
                unsafe { sgemm_serial(ckk, ohw, g.oc, 1.0, mat(colp, ohw, 1), mat(dyn_.as_ptr(), 1, ohw), 1.0, dwt.as_mut_ptr(), g.oc as isize, 1) };
            }
            if let Some(dxs) = dxs.as_deref_mut() {
                let dxn = &mut dxs[(n - first) * chw..(n - first + 1) * chw];
                // dcol (CKK, OHW) = Wᵀ (CKK, OC) · dY_n (OC, OHW); a 1x1 conv writes dX_n directly.
                let out = if pointwise { dxn.as_mut_ptr() } else { dcol.as_mut_ptr() };
                unsafe { sgemm_serial(ckk, g.oc, ohw, 1.0, mat(w.as_ptr(), 1, ckk), mat(dyn_.as_ptr(), ohw, 1), 0.0, out, ohw as isize, 1) };
                if !pointwise {
                    dxn.fill(0.0);
                    col2im(g, dcol, dxn);
                }
            }
        });
        dwt
    };
    let partials: Vec<Vec<f32>> = match dx {
        Some(dx) => dx.par_chunks_mut(per_task * chw).enumerate().map(|(t, dxs)| task(t * per_task, dxs.len() / chw, Some(dxs))).collect(),
        None => (0..g.n.div_ceil(per_task)).into_par_iter().map(|t| task(t * per_task, per_task.min(g.n - t * per_task), None)).collect(),
    };
    if let Some(dw) = dw {
        // dW[o, r] = Σ_tasks dWᵀ[r, o]
        for (o, row) in dw.chunks_mut(ckk).enumerate() {
            for (r, v) in row.iter_mut().enumerate() {
                *v = partials.iter().map(|p| p[r * g.oc + o]).sum();
            }
        }
    }
}
