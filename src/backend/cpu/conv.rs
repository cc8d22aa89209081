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

/// Fill `col` (C*KH*KW, OH*OW) from one image `x` (C, H, W).
pub fn im2col(g: &ConvGeom, x: &[f32], col: &mut [f32]) {
    let (oh, ow) = (g.oh(), g.ow());
    for c in 0..g.c {
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &mut col[((c * g.kh + i) * g.kw + j) * oh * ow..][..oh * ow];
                for y in 0..oh {
                    let iy = (y * g.stride + i) as isize - g.pad as isize;
                    let dst = &mut row[y * ow..(y + 1) * ow];
                    if iy < 0 || iy >= g.h as isize {
                        dst.fill(0.0);
                        continue;
                    }
                    let src = &x[(c * g.h + iy as usize) * g.w..][..g.w];
                    for (xo, d) in dst.iter_mut().enumerate() {
                        let ix = (xo * g.stride + j) as isize - g.pad as isize;
                        *d = if ix >= 0 && ix < g.w as isize { src[ix as usize] } else { 0.0 };
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
                for y in 0..oh {
                    let iy = (y * g.stride + i) as isize - g.pad as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let dst = &mut dx[(c * g.h + iy as usize) * g.w..][..g.w];
                    for (xo, s) in row[y * ow..(y + 1) * ow].iter().enumerate() {
                        let ix = (xo * g.stride + j) as isize - g.pad as isize;
                        if ix >= 0 && ix < g.w as isize {
                            dst[ix as usize] += s;
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
    // dW is summed per block of images, then the blocks in order: the block
    // boundaries depend only on N, never on rayon's scheduling, so the same
    // inputs always give the same bits.
    let per_block = g.n.div_ceil(DW_BLOCKS).max(1);
    let blocks = g.n.div_ceil(per_block);
    let scratch = || {
        let col = vec![0.0f32; if want_dw && !pointwise { ckk * ohw } else { 0 }];
        let dcol = vec![0.0f32; if pointwise { 0 } else { ckk * ohw }];
        (vec![0.0f32; if want_dw { g.oc * ckk } else { 0 }], col, dcol)
    };
    let partial_dw: Vec<Vec<f32>> = match dx {
        Some(dx) => dx
            .par_chunks_mut((per_block * chw).max(1))
            .enumerate()
            .map(|(b, dxb)| {
                let (mut acc, mut col, mut dcol) = scratch();
                for (i, dxn) in dxb.chunks_mut(chw).enumerate() {
                    per_image(b * per_block + i, Some(dxn), &mut acc, &mut col, &mut dcol);
                }
                acc
            })
            .collect(),
        None => (0..blocks)
            .into_par_iter()
            .map(|b| {
                let (mut acc, mut col, mut dcol) = scratch();
                for n in b * per_block..((b + 1) * per_block).min(g.n) {
                    per_image(n, None, &mut acc, &mut col, &mut dcol);
                }
                acc
            })
            .collect(),
    };
    if let Some(dw) = dw {
        dw.fill(0.0);
        for part in &partial_dw {
            dw.iter_mut().zip(part).for_each(|(a, b)| *a += b);
        }
    }
}

/// How many blocks of images the dW sum is cut into (at most; fewer for a small batch).
const DW_BLOCKS: usize = 16;
