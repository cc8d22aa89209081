//! Multi-head scaled dot-product attention as one op (Vaswani et al. 2017, eq. 1),
//! the heads read in place from `(B, T, C)`.
//!
//! For each batch item `b` and head `h`, with `Q, K, V` the columns
//! `h·D .. (h+1)·D` of `q (B, T, C)`, `k, v (B, S, C)` (`D = C / H`):
//!
//! ```text
//! P = softmax(Q Kᵀ / √D + M)        (T, S), M = -∞ where the mask is set
//! O = P V                            (T, D), written to the same columns of the output
//! dV = Pᵀ dO,   dP = dO Vᵀ
//! dS = P ⊙ (dP - rowsum(dP ⊙ P))    (softmax's backward)
//! dQ = dS K / √D,   dK = dSᵀ Q / √D
//! ```
//!
//! It computes what [`crate::nn::attention::scaled_dot_product_attention`]
//! composes from `reshape`, `permute`, `matmul`, `scale`, `softmax` and the
//! merge of the heads, without the ten copies of `(B, T, C)` those make
//! forward and backward: each `(b, h)` pair is one task, whose GEMMs read
//! its head through the row stride `C` and whose `(T, S)` scores stay in
//! cache between the two products. The weights `P` are kept for the backward
//! pass. On the GPU device the op is the composition itself.

use crate::backend::cpu::gemm::{sgemm_serial, MatPtr};
use crate::ops::kernels::{exp, simd_as, standard_layout, MulAdd};
use crate::ops::reduce::lane_dot;
use crate::tensor::Tensor;
use crate::Result;
use ndarray::{ArrayD, ArrayView2, Axis, IxDyn};
use rayon::prelude::*;

/// A raw pointer shared by the `(b, h)` tasks: each writes its own head's
/// columns (or its own `(T, S)` block), so no two tasks write one element.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

/// The sizes of one call: `B` items, `H` heads of width `D`, `T` queries, `S` keys.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    h: usize,
    d: usize,
    t: usize,
    s: usize,
}

impl Dims {
    /// `(B, T or S, C)` row-major: head `h` of item `b` starts here, rows `C` apart.
    fn head(&self, base: *const f32, rows: usize, item: usize) -> *const f32 {
        let (b, h) = (item / self.h, item % self.h);
        // SAFETY (for the callers' reads): b < B, h·D < C, inside the array.
        unsafe { base.add(b * rows * self.h * self.d + h * self.d) }
    }
}

impl Tensor {
    /// Multi-head attention on `q (B, T, C)`, `k (B, S, C)`, `v (B, S, C)` whose
    /// heads are the `heads` blocks of `C / heads` channels: returns `(B, T, C)`,
    /// head `h`'s output in head `h`'s channels (the heads merged, before `W_O`).
    /// `mask` (broadcastable to `(B, H, T, S)`) is `true` where attention is not
    /// allowed; a row with every key masked gives NaN, as softmax does.
    /// PyTorch: `F.scaled_dot_product_attention(q.view(B, T, H, D).transpose(1, 2), ...)
    /// .transpose(1, 2).reshape(B, T, C)`.
    pub fn multi_head_attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, mask: Option<&ArrayD<bool>>) -> Result<Tensor> {
        let (sq, sk, sv) = (q.shape(), k.shape(), v.shape());
        let bad = |why: &str| crate::Error::shape("multi_head_attention", format!("q {sq:?}, k {sk:?}, v {sv:?} with {heads} heads: {why}"));
        if sq.len() != 3 || sk.len() != 3 || sk != sv || sq[0] != sk[0] || sq[2] != sk[2] {
            return Err(bad("expected q (B, T, C) and k, v (B, S, C)"));
        }
        if heads == 0 || sq[2] % heads != 0 {
            return Err(bad("C does not split into the heads"));
        }
        let dims = Dims { b: sq[0], h: heads, d: sq[2] / heads, t: sq[1], s: sk[1] };
        let mask = match mask {
            Some(m) => Some(m.broadcast(IxDyn(&[dims.b, heads, dims.t, dims.s])).ok_or_else(|| bad(&format!("mask {:?} does not broadcast to (B, H, T, S)", m.shape())))?.to_owned()),
            None => None,
        };
        if crate::backend::device() == crate::backend::Device::Wgpu {
            return composite(q, k, v, dims, mask.as_ref());
        }
        let (out, weights) = {
            let (qd, kd, vd) = (q.data(), k.data(), v.data());
            let (qs, ks, vs) = (standard_layout(&qd), standard_layout(&kd), standard_layout(&vd)); // copies only when strided
            crate::with_mul_add!(M => forward::<M>(qs.as_slice().expect("standard"), ks.as_slice().expect("standard"), vs.as_slice().expect("standard"), dims, mask.as_ref()))
        };
        let out = ArrayD::from_shape_vec(IxDyn(&sq), out).expect("B·T·C values");
        let (qc, kc, vc) = (q.clone(), k.clone(), v.clone());
        Ok(Tensor::from_op(out, "multi_head_attention", &[q, k, v], move |g, _| {
            let g = standard_layout(g);
            let (qd, kd, vd) = (qc.data(), kc.data(), vc.data());
            let (qs, ks, vs) = (standard_layout(&qd), standard_layout(&kd), standard_layout(&vd));
            let (dq, dk, dv) = backward(g.as_slice().expect("standard"), qs.as_slice().expect("standard"), ks.as_slice().expect("standard"), vs.as_slice().expect("standard"), &weights, dims);
            let shaped = |x: Vec<f32>, rows: usize| Some(ArrayD::from_shape_vec(IxDyn(&[dims.b, rows, dims.h * dims.d]), x).expect("B·rows·C values"));
            vec![shaped(dq, dims.t), shaped(dk, dims.s), shaped(dv, dims.s)]
        }))
    }
}

/// Returns the output `(B, T, C)` and the weights `P (B·H, T, S)`.
fn forward<M: MulAdd>(q: &[f32], k: &[f32], v: &[f32], dims: Dims, mask: Option<&ArrayD<bool>>) -> (Vec<f32>, Vec<f32>) {
    let Dims { b, h, d, t, s } = dims;
    let c = h * d;
    let (mut out, mut weights) = (vec![0.0f32; b * t * c], vec![0.0f32; b * h * t * s]);
    let o = Shared(out.as_mut_ptr());
    let scale = 1.0 / (d as f32).sqrt();
    weights.par_chunks_mut((t * s).max(1)).enumerate().for_each(|(item, p)| {
        let o = o;
        simd_as::<M, _>(#[inline(always)] || unsafe {
            // SAFETY: the heads lie inside q, k, v and out (Dims::head), and this task
            // alone writes head (b, h) of out.
            let (qh, kh, vh) = (dims.head(q.as_ptr(), t, item), dims.head(k.as_ptr(), s, item), dims.head(v.as_ptr(), s, item));
            // P = Q Kᵀ / √D   (T, S)
            sgemm_serial(t, d, s, scale, MatPtr { ptr: qh, rs: c as isize, cs: 1 }, MatPtr { ptr: kh, rs: 1, cs: c as isize }, 0.0, p.as_mut_ptr(), s as isize, 1);
            let m = mask.map(|m| m.index_axis(Axis(0), item / h).index_axis_move(Axis(0), item % h).into_dimensionality().expect("(T, S)"));
            softmax_rows::<M>(p, s, m);
            // O = P V   (T, D), into head h's columns
            let oh = dims.head(o.0, t, item) as *mut f32;
            sgemm_serial(t, s, d, 1.0, MatPtr { ptr: p.as_ptr(), rs: s as isize, cs: 1 }, MatPtr { ptr: vh, rs: c as isize, cs: 1 }, 0.0, oh, c as isize, 1);
        })
    });
    (out, weights)
}

/// Each row of `p` (rows of `s`) becomes `softmax(row + M)`: `-∞` where `mask` is set.
#[inline(always)]
fn softmax_rows<M: MulAdd>(p: &mut [f32], s: usize, mask: Option<ArrayView2<bool>>) {
    for (i, row) in p.chunks_mut(s.max(1)).enumerate() {
        if let Some(m) = &mask {
            row.iter_mut().zip(m.row(i)).for_each(|(v, &hide)| *v = if hide { f32::NEG_INFINITY } else { *v });
        }
        let max = row.iter().fold(f32::NEG_INFINITY, |acc, &v| acc.max(v));
        row.iter_mut().for_each(|v| *v = exp::<M>(*v - max)); // e^{x - max}
        let inv = 1.0 / lane_dot(row, &[]);
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

/// Returns `dq (B, T, C)`, `dk` and `dv (B, S, C)` for the output gradient `g (B, T, C)`.
fn backward(g: &[f32], q: &[f32], k: &[f32], v: &[f32], weights: &[f32], dims: Dims) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let Dims { b, h, d, t, s } = dims;
    let c = h * d;
    let (mut dq, mut dk, mut dv) = (vec![0.0f32; b * t * c], vec![0.0f32; b * s * c], vec![0.0f32; b * s * c]);
    let (dqp, dkp, dvp) = (Shared(dq.as_mut_ptr()), Shared(dk.as_mut_ptr()), Shared(dv.as_mut_ptr()));
    let scale = 1.0 / (d as f32).sqrt();
    weights.par_chunks((t * s).max(1)).enumerate().for_each_init(
        || vec![0.0f32; t * s],
        |ds, (item, p)| {
            let (dqp, dkp, dvp) = (dqp, dkp, dvp);
            crate::ops::kernels::simd(#[inline(always)] || unsafe {
                // SAFETY: as in `forward`; this task alone writes head (b, h) of dq, dk, dv.
                let (qh, kh, vh, gh) = (dims.head(q.as_ptr(), t, item), dims.head(k.as_ptr(), s, item), dims.head(v.as_ptr(), s, item), dims.head(g.as_ptr(), t, item));
                let (dqh, dkh, dvh) = (dims.head(dqp.0, t, item) as *mut f32, dims.head(dkp.0, s, item) as *mut f32, dims.head(dvp.0, s, item) as *mut f32);
                let (rows_c, p_rows, p_cols) = (c as isize, s as isize, 1);
                // dV = Pᵀ dO   (S, D)
                sgemm_serial(s, t, d, 1.0, MatPtr { ptr: p.as_ptr(), rs: p_cols, cs: p_rows }, MatPtr { ptr: gh, rs: rows_c, cs: 1 }, 0.0, dvh, rows_c, 1);
                // dP = dO Vᵀ   (T, S)
                sgemm_serial(t, d, s, 1.0, MatPtr { ptr: gh, rs: rows_c, cs: 1 }, MatPtr { ptr: vh, rs: 1, cs: rows_c }, 0.0, ds.as_mut_ptr(), p_rows, 1);
                // dS = P ⊙ (dP - Σ_j dP_j P_j), row by row
                for (dsr, pr) in ds.chunks_mut(s.max(1)).zip(p.chunks(s.max(1))) {
                    let dot = lane_dot(dsr, pr);
                    dsr.iter_mut().zip(pr).for_each(|(x, &y)| *x = y * (*x - dot));
                }
                // dQ = dS K / √D   (T, D),   dK = dSᵀ Q / √D   (S, D)
                sgemm_serial(t, s, d, scale, MatPtr { ptr: ds.as_ptr(), rs: p_rows, cs: 1 }, MatPtr { ptr: kh, rs: rows_c, cs: 1 }, 0.0, dqh, rows_c, 1);
                sgemm_serial(s, t, d, scale, MatPtr { ptr: ds.as_ptr(), rs: p_cols, cs: p_rows }, MatPtr { ptr: qh, rs: rows_c, cs: 1 }, 0.0, dkh, rows_c, 1);
            })
        },
    );
    (dq, dk, dv)
}

/// The same attention composed from the ops (the GPU path): split the heads,
/// [`crate::nn::attention::scaled_dot_product_attention`], merge them.
fn composite(q: &Tensor, k: &Tensor, v: &Tensor, dims: Dims, mask: Option<&ArrayD<bool>>) -> Result<Tensor> {
    let Dims { b, h, d, t, .. } = dims;
    let heads = |x: &Tensor| x.reshape(&[b as isize, x.dim(1) as isize, h as isize, d as isize]).map(|x| x.transpose(1, 2)); // (B, H, T, D)
    let (y, _) = crate::nn::attention::scaled_dot_product_attention(&heads(q)?, &heads(k)?, &heads(v)?, mask)?; // (B, H, T, D)
    y.transpose(1, 2).reshape(&[b as isize, t as isize, (h * d) as isize]) // (B, T, C)
}
