//! Multi-head scaled dot-product attention as one op (Vaswani et al. 2017, eq. 1),
//! the heads read in place from `(B, T, C)`, or for self-attention straight from
//! the fused projection `(B, T, 3C)` (chapter 01's transformers).
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
//! its head through the row stride (`C`, or `3C` inside a fused projection,
//! whose gradient is then written in one `(B, T, 3C)` array) and whose `(T, S)` scores stay in
//! cache between the two products. The weights `P` are kept for the backward
//! pass. On the GPU device the op is the composition itself.

use crate::backend::cpu::gemm::{sgemm_serial, MatPtr};
use crate::ops::kernels::{exp, simd_as, standard_layout, MulAdd};
use crate::ops::reduce::lane_dot;
use crate::tensor::Tensor;
use crate::Result;
use ndarray::{ArrayD, ArrayView2, ArrayViewD, Axis, IxDyn};
use rayon::prelude::*;

/// One of Q, K, V, O (or their gradients) in a `(B, rows, ·)` row-major array:
/// element `(b, i, c)` is at `ptr + (b·rows + i)·rs + c`, head `h` in the
/// channels `c = h·D .. (h+1)·D`. A separate `(B, T, C)` array has `rs = C`;
/// Q, K, V inside one fused projection `(B, T, 3C)` have `rs = 3C`, starting
/// at channels 0, C and 2C. Shared by the `(b, h)` tasks: an output (O, or a
/// gradient, its pointer taken from a mutable buffer) is written by each task
/// in its own head's columns only, so no two tasks write one element.
#[derive(Clone, Copy)]
struct Heads {
    ptr: *const f32,
    rs: usize,
}
unsafe impl Send for Heads {}
unsafe impl Sync for Heads {}

impl Heads {
    /// The same array `offset` channels further on.
    fn at(self, offset: usize) -> Heads {
        // SAFETY (for the callers' reads): the offset stays inside a row of the array.
        Heads { ptr: unsafe { self.ptr.add(offset) }, rs: self.rs }
    }
}

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
    /// Head `h` of item `b` (`item = b·H + h`) of `x`, whose items have `rows` rows.
    fn head(&self, x: Heads, rows: usize, item: usize) -> *const f32 {
        let (b, h) = (item / self.h, item % self.h);
        // SAFETY (for the callers' reads): b < B, h·D < C, inside the array.
        unsafe { x.ptr.add(b * rows * x.rs + h * self.d) }
    }

    /// `x`'s head as a GEMM operand: its rows `rs` apart, `transposed` reads it as `(D, rows)`.
    fn operand(&self, x: Heads, rows: usize, item: usize, transposed: bool) -> MatPtr {
        let (rs, cs) = if transposed { (1, x.rs as isize) } else { (x.rs as isize, 1) };
        MatPtr { ptr: self.head(x, rows, item), rs, cs }
    }
}

/// A `(B, H, T, S)` mask broadcast from what the caller gave, or an error naming its shape.
fn broadcast_mask<'a>(mask: Option<&'a ArrayD<bool>>, dims: Dims, bad: &dyn Fn(&str) -> crate::Error) -> Result<Option<ArrayViewD<'a, bool>>> {
    mask.map(|m| m.broadcast(IxDyn(&[dims.b, dims.h, dims.t, dims.s])).ok_or_else(|| bad(&format!("mask {:?} does not broadcast to (B, H, T, S)", m.shape()))))
        .transpose()
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
        let view = broadcast_mask(mask, dims, &bad)?;
        if crate::backend::device() == crate::backend::Device::Wgpu {
            return Ok(composite(q, k, v, dims, mask)?.0);
        }
        let c = sq[2];
        let (out, weights) = {
            let (qd, kd, vd) = (q.data(), k.data(), v.data());
            let (qs, ks, vs) = (standard_layout(&qd), standard_layout(&kd), standard_layout(&vd)); // copies only when strided
            let at = |x: *const f32| Heads { ptr: x, rs: c };
            crate::with_mul_add!(M => forward::<M>(at(qs.as_ptr()), at(ks.as_ptr()), at(vs.as_ptr()), dims, view.as_ref()))
        };
        let out = ArrayD::from_shape_vec(IxDyn(&sq), out).expect("B·T·C values");
        let (qc, kc, vc) = (q.clone(), k.clone(), v.clone());
        Ok(Tensor::from_op(out, "multi_head_attention", &[q, k, v], move |g, _| {
            let g = standard_layout(g);
            let (qd, kd, vd) = (qc.data(), kc.data(), vc.data());
            let (qs, ks, vs) = (standard_layout(&qd), standard_layout(&kd), standard_layout(&vd));
            let at = |x: *const f32| Heads { ptr: x, rs: c };
            let (mut dq, mut dk, mut dv) = (vec![0.0f32; dims.b * dims.t * c], vec![0.0f32; dims.b * dims.s * c], vec![0.0f32; dims.b * dims.s * c]);
            let into = |x: &mut Vec<f32>| at(x.as_mut_ptr());
            backward(at(g.as_ptr()), [at(qs.as_ptr()), at(ks.as_ptr()), at(vs.as_ptr())], [into(&mut dq), into(&mut dk), into(&mut dv)], &weights, dims);
            let shaped = |x: Vec<f32>, rows: usize| Some(ArrayD::from_shape_vec(IxDyn(&[dims.b, rows, c]), x).expect("B·rows·C values"));
            vec![shaped(dq, dims.t), shaped(dk, dims.s), shaped(dv, dims.s)]
        }))
    }

    /// Self-attention read straight from a fused projection `qkv (B, T, 3C)`
    /// (Q in channels `[0, C)`, K in `[C, 2C)`, V in `[2C, 3C)`, each split into
    /// `heads` heads as in [`Tensor::multi_head_attention`]): returns the merged
    /// heads `(B, T, C)` and the attention weights `P (B, H, T, T)`. The weights
    /// are a tensor outside the graph, for plots (the backward pass reads the same
    /// buffer): no gradient flows through them.
    /// Backward writes `dQ`, `dK`, `dV` into one `(B, T, 3C)` gradient, so neither
    /// the split of `qkv` nor the merge of the heads makes a copy.
    /// PyTorch: `q, k, v = qkv.chunk(3, -1)` and then as [`Tensor::multi_head_attention`].
    pub fn multi_head_self_attention(qkv: &Tensor, heads: usize, mask: Option<&ArrayD<bool>>) -> Result<(Tensor, Tensor)> {
        let sx = qkv.shape();
        let bad = |why: &str| crate::Error::shape("multi_head_self_attention", format!("qkv {sx:?} with {heads} heads: {why}"));
        if sx.len() != 3 || sx[2] % 3 != 0 {
            return Err(bad("expected qkv (B, T, 3C)"));
        }
        let c = sx[2] / 3;
        if heads == 0 || c % heads != 0 {
            return Err(bad("C does not split into the heads"));
        }
        let dims = Dims { b: sx[0], h: heads, d: c / heads, t: sx[1], s: sx[1] };
        let view = broadcast_mask(mask, dims, &bad)?;
        if crate::backend::device() == crate::backend::Device::Wgpu {
            let parts = qkv.chunk(3, -1)?; // 3 x (B, T, C)
            let (out, weights) = composite(&parts[0], &parts[1], &parts[2], dims, mask)?;
            return Ok((out, weights.detach()));
        }
        let (out, weights) = {
            let x = qkv.data();
            let xs = standard_layout(&x);
            let all = Heads { ptr: xs.as_ptr(), rs: 3 * c };
            crate::with_mul_add!(M => forward::<M>(all, all.at(c), all.at(2 * c), dims, view.as_ref()))
        };
        let out = ArrayD::from_shape_vec(IxDyn(&[dims.b, dims.t, c]), out).expect("B·T·C values");
        let weights = Tensor::new(ArrayD::from_shape_vec(IxDyn(&[dims.b, heads, dims.t, dims.s]), weights).expect("B·H·T·T values"));
        let (xc, kept) = (qkv.clone(), weights.clone());
        let out = Tensor::from_op(out, "multi_head_self_attention", &[qkv], move |g, _| {
            let g = standard_layout(g);
            let x = xc.data();
            let xs = standard_layout(&x);
            let all = Heads { ptr: xs.as_ptr(), rs: 3 * c };
            let p = kept.data();
            let mut dx = vec![0.0f32; dims.b * dims.t * 3 * c]; // every element written: dQ, dK, dV of every head
            let d = Heads { ptr: dx.as_mut_ptr(), rs: 3 * c }; // dQ, dK, dV at channels 0, C, 2C, as Q, K, V
            backward(Heads { ptr: g.as_ptr(), rs: c }, [all, all.at(c), all.at(2 * c)], [d, d.at(c), d.at(2 * c)], p.as_slice().expect("standard"), dims);
            vec![Some(ArrayD::from_shape_vec(IxDyn(&[dims.b, dims.t, 3 * c]), dx).expect("B·T·3C values"))]
        });
        Ok((out, weights))
    }
}

/// Returns the output `(B, T, C)` and the weights `P (B·H, T, S)`.
fn forward<M: MulAdd>(q: Heads, k: Heads, v: Heads, dims: Dims, mask: Option<&ArrayViewD<bool>>) -> (Vec<f32>, Vec<f32>) {
    let Dims { b, h, d, t, s } = dims;
    let c = h * d;
    let (mut out, mut weights) = (vec![0.0f32; b * t * c], vec![0.0f32; b * h * t * s]);
    let o = Heads { ptr: out.as_mut_ptr(), rs: c };
    let scale = 1.0 / (d as f32).sqrt();
    weights.par_chunks_mut((t * s).max(1)).enumerate().for_each(|(item, p)| {
        let o = o;
        simd_as::<M, _>(#[inline(always)] || unsafe {
            // SAFETY: the heads lie inside q, k, v and out (Dims::head), and this task
            // alone writes head (b, h) of out.
            // P = Q Kᵀ / √D   (T, S)
            sgemm_serial(t, d, s, scale, dims.operand(q, t, item, false), dims.operand(k, s, item, true), 0.0, p.as_mut_ptr(), s as isize, 1);
            let m = mask.map(|m| m.index_axis(Axis(0), item / h).index_axis_move(Axis(0), item % h).into_dimensionality().expect("(T, S)"));
            softmax_rows::<M>(p, s, m);
            // O = P V   (T, D), into head h's columns
            let oh = dims.head(o, t, item) as *mut f32;
            sgemm_serial(t, s, d, 1.0, MatPtr { ptr: p.as_ptr(), rs: s as isize, cs: 1 }, dims.operand(v, s, item, false), 0.0, oh, c as isize, 1);
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

/// Writes `dq (B, T, ·)`, `dk` and `dv (B, S, ·)` (at `[dq, dk, dv]`) for the output
/// gradient `g (B, T, C)`, the inputs `[q, k, v]` and the weights `P (B·H, T, S)`.
fn backward(g: Heads, [q, k, v]: [Heads; 3], [dq, dk, dv]: [Heads; 3], weights: &[f32], dims: Dims) {
    let Dims { t, s, d, .. } = dims;
    let scale = 1.0 / (d as f32).sqrt();
    weights.par_chunks((t * s).max(1)).enumerate().for_each_init(
        || vec![0.0f32; t * s],
        |ds, (item, p)| {
            crate::ops::kernels::simd(#[inline(always)] || unsafe {
                // SAFETY: as in `forward`; this task alone writes head (b, h) of dq, dk, dv.
                let (dqh, dkh, dvh) = (dims.head(dq, t, item) as *mut f32, dims.head(dk, s, item) as *mut f32, dims.head(dv, s, item) as *mut f32);
                let (p_rows, p_cols) = (s as isize, 1);
                let go = dims.operand(g, t, item, false);
                // dV = Pᵀ dO   (S, D)
                sgemm_serial(s, t, d, 1.0, MatPtr { ptr: p.as_ptr(), rs: p_cols, cs: p_rows }, go, 0.0, dvh, dv.rs as isize, 1);
                // dP = dO Vᵀ   (T, S)
                sgemm_serial(t, d, s, 1.0, go, dims.operand(v, s, item, true), 0.0, ds.as_mut_ptr(), p_rows, 1);
                // dS = P ⊙ (dP - Σ_j dP_j P_j), row by row
                for (dsr, pr) in ds.chunks_mut(s.max(1)).zip(p.chunks(s.max(1))) {
                    let dot = lane_dot(dsr, pr);
                    dsr.iter_mut().zip(pr).for_each(|(x, &y)| *x = y * (*x - dot));
                }
                // dQ = dS K / √D   (T, D),   dK = dSᵀ Q / √D   (S, D)
                sgemm_serial(t, s, d, scale, MatPtr { ptr: ds.as_ptr(), rs: p_rows, cs: 1 }, dims.operand(k, s, item, false), 0.0, dqh, dq.rs as isize, 1);
                sgemm_serial(s, t, d, scale, MatPtr { ptr: ds.as_ptr(), rs: p_cols, cs: p_rows }, dims.operand(q, t, item, false), 0.0, dkh, dk.rs as isize, 1);
            })
        },
    );
}

/// The same attention composed from the ops (the GPU path): split the heads,
/// [`crate::nn::attention::scaled_dot_product_attention`], merge them. Returns
/// the merged heads `(B, T, C)` and the weights `(B, H, T, S)`.
fn composite(q: &Tensor, k: &Tensor, v: &Tensor, dims: Dims, mask: Option<&ArrayD<bool>>) -> Result<(Tensor, Tensor)> {
    let Dims { b, h, d, t, .. } = dims;
    let heads = |x: &Tensor| x.reshape(&[b as isize, x.dim(1) as isize, h as isize, d as isize]).map(|x| x.transpose(1, 2)); // (B, H, T, D)
    let (y, weights) = crate::nn::attention::scaled_dot_product_attention(&heads(q)?, &heads(k)?, &heads(v)?, mask)?; // (B, H, T, D)
    Ok((y.transpose(1, 2).reshape(&[b as isize, t as isize, (h * d) as isize])?, weights)) // (B, T, C)
}
