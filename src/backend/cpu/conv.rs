//! 2-D convolution on the CPU by im2col + GEMM.
//!
//! im2col lays every receptive field of one image out as a column, so that
//! the convolution becomes one matrix product:
//!
//! ```text
//! col   (C*KH*KW, OH*OW)    col[(c, i, j), (y, x)] = x_pad[c, y*s + i, x*s + j]
//! out_n (OC, OH*OW)       = W (OC, C*KH*KW) · col
//! dW    (OC, C*KH*KW)    += dY_n (OC, OH*OW) · col^T
//! dcol  (C*KH*KW, OH*OW)  = W^T · dY_n,   dX_n = col2im(dcol)
//! ```
//!
//! Images of a batch run in parallel (one single-threaded GEMM each).

use super::gemm::{sgemm_serial, MatPtr};
use rayon::prelude::*;

/// The sizes of one convolution (NCHW input, OIHW weight).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    /// Batch size N.
    pub n: usize,
    /// Input channels C.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub oc: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride (both directions).
    pub stride: usize,
    /// Zero padding (both directions).
    pub pad: usize,
}

impl ConvGeom {
    /// Output height: `(H + 2p - KH) / s + 1`.
    pub fn oh(&self) -> usize {
        (self.h + 2 * self.pad - self.kh) / self.stride + 1
    }
    /// Output width: `(W + 2p - KW) / s + 1`.
    pub fn ow(&self) -> usize {
        (self.w + 2 * self.pad - self.kw) / self.stride + 1
    }
    /// Rows of the im2col matrix: `C * KH * KW`.
    pub fn ckk(&self) -> usize {
        self.c * self.kh * self.kw
    }
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }
}

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

/// Fill `col` (C*KH*KW, OH*OW) from one image `x` (C, H, W).
pub fn im2col(g: &ConvGeom, x: &[f32], col: &mut [f32]) {
    let (oh, ow) = (g.oh(), g.ow());
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
pub fn col2im(g: &ConvGeom, col: &[f32], dx: &mut [f32]) {
    let (oh, ow) = (g.oh(), g.ow());
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
pub fn conv2d_forward(g: &ConvGeom, x: &[f32], w: &[f32], y: &mut [f32]) {
    let (ohw, ckk, chw) = (g.oh() * g.ow(), g.ckk(), g.c * g.h * g.w);
    y.par_chunks_mut(g.oc * ohw).enumerate().for_each_init(
        || vec![0.0f32; if g.is_pointwise() { 0 } else { ckk * ohw }],
        |col, (n, yn)| {
            let xn = &x[n * chw..(n + 1) * chw];
            let colp = if g.is_pointwise() { xn.as_ptr() } else { im2col(g, xn, col); col.as_ptr() };
            // out_n (OC, OHW) = W (OC, CKK) · col (CKK, OHW)
            unsafe { sgemm_serial(g.oc, ckk, ohw, 1.0, mat(w.as_ptr(), ckk, 1), mat(colp, ohw, 1), 0.0, yn.as_mut_ptr(), ohw as isize, 1) };
        },
    );
}

/// Backward: given `dy (N, OC, OH, OW)`, return `dx` (when asked) into `dx` and
/// `dW (OC, C, KH, KW)` into `dw` (when asked).
pub fn conv2d_backward(g: &ConvGeom, x: &[f32], w: &[f32], dy: &[f32], dx: Option<&mut [f32]>, dw: Option<&mut [f32]>) {
    let (ohw, ckk, chw) = (g.oh() * g.ow(), g.ckk(), g.c * g.h * g.w);
    let want_dw = dw.is_some();
    let pointwise = g.is_pointwise();
    // Per image: dcol = W^T dY_n, col2im into dX_n; and dW_n = dY_n col_n^T summed over n.
    let per_image = |n: usize, dxn: Option<&mut [f32]>, dw_acc: &mut Vec<f32>, col: &mut Vec<f32>, dcol: &mut Vec<f32>| {
        let dyn_ = &dy[n * g.oc * ohw..(n + 1) * g.oc * ohw];
        let xn = &x[n * chw..(n + 1) * chw];
        if want_dw {
            let colp = if pointwise { xn.as_ptr() } else { im2col(g, xn, col); col.as_ptr() };
            // dW (OC, CKK) += dY_n (OC, OHW) · col^T (OHW, CKK)
            unsafe { sgemm_serial(g.oc, ohw, ckk, 1.0, mat(dyn_.as_ptr(), ohw, 1), mat(colp, 1, ohw), 1.0, dw_acc.as_mut_ptr(), ckk as isize, 1) };
        }
        if let Some(dxn) = dxn {
            if pointwise {
                // dX_n (C, HW) = W^T (C, OC) · dY_n (OC, HW)
                unsafe { sgemm_serial(ckk, g.oc, ohw, 1.0, mat(w.as_ptr(), 1, ckk), mat(dyn_.as_ptr(), ohw, 1), 0.0, dxn.as_mut_ptr(), ohw as isize, 1) };
            } else {
                // dcol (CKK, OHW) = W^T (CKK, OC) · dY_n (OC, OHW)
                unsafe { sgemm_serial(ckk, g.oc, ohw, 1.0, mat(w.as_ptr(), 1, ckk), mat(dyn_.as_ptr(), ohw, 1), 0.0, dcol.as_mut_ptr(), ohw as isize, 1) };
                dxn.fill(0.0);
                col2im(g, dcol, dxn);
            }
        }
    };
    let scratch = || {
        let col = vec![0.0f32; if want_dw && !pointwise { ckk * ohw } else { 0 }];
        let dcol = vec![0.0f32; if pointwise { 0 } else { ckk * ohw }];
        (vec![0.0f32; if want_dw { g.oc * ckk } else { 0 }], col, dcol)
    };
    let partial_dw: Vec<f32> = match dx {
        Some(dx) => dx
            .par_chunks_mut(chw)
            .enumerate()
            .fold(scratch, |(mut acc, mut col, mut dcol), (n, dxn)| {
                per_image(n, Some(dxn), &mut acc, &mut col, &mut dcol);
                (acc, col, dcol)
            })
            .map(|(acc, _, _)| acc)
            .reduce(Vec::new, add_vecs),
        None => (0..g.n)
            .into_par_iter()
            .fold(scratch, |(mut acc, mut col, mut dcol), n| {
                per_image(n, None, &mut acc, &mut col, &mut dcol);
                (acc, col, dcol)
            })
            .map(|(acc, _, _)| acc)
            .reduce(Vec::new, add_vecs),
    };
    if let Some(dw) = dw {
        if partial_dw.is_empty() {
            dw.fill(0.0);
        } else {
            dw.copy_from_slice(&partial_dw);
        }
    }
}

fn add_vecs(mut a: Vec<f32>, b: Vec<f32>) -> Vec<f32> {
    if a.is_empty() {
        return b;
    }
    if b.is_empty() {
        return a;
    }
    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
    a
}
