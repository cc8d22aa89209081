//! Matrix multiplication with batch dimensions: `C = A B`.
//!
//! `A (..., M, K) · B (..., K, N) -> C (..., M, N)`, the batch dimensions
//! broadcast as in `torch.matmul`. Backward:
//!
//! ```text
//! dA = dC · Bᵀ      (..., M, N) · (..., N, K)
//! dB = Aᵀ · dC      (..., K, M) · (..., M, N)
//! ```
//!
//! summed over any batch dimension that was broadcast. A transpose is a view
//! with swapped strides, so `Bᵀ` and `Aᵀ` are never copied.

use crate::backend::{self, BatchedGemm};
use crate::ops::kernels::{self, standard_layout};
use crate::tensor::{broadcast_shapes, reduce_to_shape, reduce_to_shape_ref, Tensor};
use crate::Result;
use ndarray::{ArrayD, ArrayViewD, IxDyn};

/// `a · b` on plain arrays (any strides), batch dimensions broadcast.
pub fn matmul_arrays(a: &ArrayViewD<f32>, b: &ArrayViewD<f32>) -> Result<ArrayD<f32>> {
    matmul_arrays_keyed(a, b, None, None)
}

/// [`matmul_arrays`] with residency keys for operands that are parameters.
pub fn matmul_arrays_keyed(a: &ArrayViewD<f32>, b: &ArrayViewD<f32>, a_key: backend::Key, b_key: backend::Key) -> Result<ArrayD<f32>> {
    matmul_arrays_init(a, b, None, a_key, b_key)
}

/// [`matmul_arrays_keyed`], optionally starting every output row from `bias`
/// (length N) and accumulating the product onto it: `C = bias + A B` in one
/// pass over C, as PyTorch's `addmm` does for `F.linear`.
fn matmul_arrays_init(a: &ArrayViewD<f32>, b: &ArrayViewD<f32>, bias: Option<&[f32]>, a_key: backend::Key, b_key: backend::Key) -> Result<ArrayD<f32>> {
    let (sa, sb) = (a.shape(), b.shape());
    if sa.len() < 2 || sb.len() < 2 || sa[sa.len() - 1] != sb[sb.len() - 2] {
        return Err(crate::Error::shape("matmul", format!("{sa:?} x {sb:?}")));
    }
    let (m, k, n) = (sa[sa.len() - 2], sa[sa.len() - 1], sb[sb.len() - 1]);
    let batch = broadcast_shapes("matmul", &sa[..sa.len() - 2], &sb[..sb.len() - 2])
        .map_err(|_| crate::Error::shape("matmul", format!("{sa:?} x {sb:?}: batch dimensions do not broadcast")))?;
    let count: usize = batch.iter().product();
    let mut out_shape = batch.clone();
    out_shape.extend([m, n]);

    // (B..., M, K) · (K, N) with A's rows contiguous in memory: one tall GEMM.
    let tall = sb.len() == 2 && sa.len() > 2 && rows_fold(a);
    let (mut full_a, mut full_b) = (batch.clone(), batch.clone());
    full_a.extend([m, k]);
    full_b.extend([k, n]);
    let av = a.broadcast(IxDyn(&full_a)).expect("checked");
    let bv = b.broadcast(IxDyn(&full_b)).expect("checked");
    let (a_offsets, b_offsets) = if tall { (vec![0], vec![0]) } else { (batch_offsets(&batch, av.strides()), batch_offsets(&batch, bv.strides())) };
    let (sta, stb, nd) = (av.strides(), bv.strides(), full_a.len());
    let g = BatchedGemm {
        m: if tall { count * m } else { m },
        k,
        n,
        a: av.as_ptr(),
        a_strides: (sta[nd - 2], sta[nd - 1]), // av is a itself when tall (same shape)
        a_offsets: &a_offsets,
        b: bv.as_ptr(),
        b_strides: (stb[nd - 2], stb[nd - 1]),
        b_offsets: &b_offsets,
    };
    let len = count * m * n;
    let out = match bias {
        Some(row) => {
            let mut c = kernels::repeat_rows(row, count * m); // every row starts as the bias
            unsafe { backend::gemm_batched(&g, &mut c, true, a_key, b_key) };
            c
        }
        // SAFETY: the GEMM writes every element of the product.
        None => unsafe { kernels::uninit_vec(len, |c| backend::gemm_batched_uninit(&g, c, a_key, b_key)) },
    };
    Ok(ArrayD::from_shape_vec(IxDyn(&out_shape), out).expect("batch · m · n values"))
}

/// Whether the batch and row dimensions of `a` fold into one row dimension
/// (each batch's rows follow the previous batch's at the row stride).
fn rows_fold(a: &ArrayViewD<f32>) -> bool {
    let (sh, st) = (a.shape(), a.strides());
    let nd = sh.len();
    let mut expected = st[nd - 2];
    let mut size = sh[nd - 2] as isize;
    for d in (0..nd - 2).rev() {
        if sh[d] != 1 && st[d] != expected * size {
            return false;
        }
        expected *= size;
        size = sh[d] as isize;
    }
    true
}

/// Element offset of every batch item, in row-major order of the batch index.
fn batch_offsets(batch: &[usize], strides: &[isize]) -> Vec<isize> {
    let count: usize = batch.iter().product();
    let mut offsets = Vec::with_capacity(count);
    let mut idx = vec![0usize; batch.len()];
    for _ in 0..count {
        offsets.push(idx.iter().zip(strides).map(|(&i, &s)| i as isize * s).sum());
        for d in (0..batch.len()).rev() {
            idx[d] += 1;
            if idx[d] < batch[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    offsets
}

/// Swap the last two axes of a view (a transpose without a copy).
fn t(x: ArrayViewD<'_, f32>) -> ArrayViewD<'_, f32> {
    let nd = x.ndim();
    let mut v = x;
    v.swap_axes(nd - 2, nd - 1);
    v
}

impl Tensor {
    /// Matrix product with batch dimensions. PyTorch: `torch.matmul(a, b)` (for ndim >= 2).
    ///
    /// Errors name both shapes: `matmul: [4, 3] x [5, 2]`.
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        #[cfg(feature = "wgpu")]
        if let Some(y) = super::on_gpu::matmul(self, other, false) {
            return Ok(y);
        }
        let out = matmul_arrays_keyed(&self.data().view(), &other.data().view(), self.param_key(), other.param_key())?;
        let (ac, bc) = (self.clone(), other.clone());
        Ok(Tensor::from_op(out, "matmul", &[self, other], move |g, _| {
            let (a, b) = (ac.data(), bc.data());
            let ga = ac.requires_grad().then(|| {
                // dA = dC · Bᵀ
                let d = matmul_arrays(&g.view(), &t(b.view())).expect("shapes checked in forward");
                reduce_to_shape(d, a.shape())
            });
            let gb = bc.requires_grad().then(|| {
                if b.ndim() == 2 && a.ndim() > 2 {
                    // dB = Σ_batch Aᵀ dC = A_flatᵀ (K, B·M) · dC_flat (B·M, N)
                    let k = a.shape()[a.ndim() - 1];
                    let n = g.shape()[g.ndim() - 1];
                    let a2 = a.to_shape((a.len() / k.max(1), k)).expect("fold");
                    let g2 = g.to_shape((g.len() / n.max(1), n)).expect("fold");
                    matmul_arrays(&t(a2.view().into_dyn()), &g2.view().into_dyn()).expect("shapes checked in forward")
                } else {
                    // dB = Aᵀ · dC
                    let d = matmul_arrays(&t(a.view()), &g.view()).expect("shapes checked in forward");
                    reduce_to_shape(d, b.shape())
                }
            });
            vec![ga, gb]
        }))
    }

    /// Swap the last two axes, for matmul: a copy in the input's own order read
    /// through swapped strides (no transposing pass; the GEMM's packing reads it as it is).
    pub fn t(&self) -> Tensor {
        let nd = self.ndim();
        self.transpose(nd as isize - 2, nd as isize - 1)
    }
}

impl Tensor {
    /// A linear layer in one op: `y = x Wᵀ + b`, `x (..., K)`, `W (N, K)`
    /// (PyTorch's `(out, in)` layout), `b (N)`; the bias is the GEMM's starting
    /// value, not a second pass. Backward: `dx = dy · W`, `dW = dyᵀ · x` (over
    /// all leading dimensions), `db = Σ dy` over all rows. Without a bias this
    /// is [`Tensor::matmul_t`]. PyTorch: `F.linear(x, w, b)`.
    ///
    /// Errors name the shapes: `linear: [4, 3] x [5, 2]ᵀ + [5]`.
    pub fn linear(&self, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        #[cfg(feature = "wgpu")]
        if let Some(y) = super::on_gpu::linear(self, w, b) {
            return Ok(y);
        }
        let Some(b) = b else { return self.matmul_t(w) };
        let (sx, sw, sb) = (self.shape(), w.shape(), b.shape());
        let err = || crate::Error::shape("linear", format!("{sx:?} x {sw:?}ᵀ + {sb:?}"));
        if sx.len() < 2 || sw.len() != 2 || sx[sx.len() - 1] != sw[1] || sb != [sw[0]] {
            return Err(err());
        }
        let out = {
            let (x, wd, bd) = (self.data(), w.data(), b.data());
            let bias = standard_layout(&bd);
            matmul_arrays_init(&x.view(), &t(wd.view()), Some(bias.as_slice().expect("standard")), self.param_key(), w.param_key()).map_err(|_| err())?
        };
        let (xc, wc, rb) = (self.clone(), w.clone(), b.requires_grad());
        Ok(Tensor::from_op(out, "linear", &[self, w, b], move |g, _| {
            let (x, w) = (xc.data(), wc.data());
            let (k, n) = (w.shape()[1], w.shape()[0]);
            // dx (..., K) = dy (..., N) · W (N, K)
            let gx = xc.requires_grad().then(|| matmul_arrays(&g.view(), &w.view()).expect("checked in forward"));
            let g2 = g.to_shape((g.len() / n.max(1), n)).expect("fold");
            // dW (N, K) = dy_flatᵀ (N, rows) · x_flat (rows, K)
            let gw = wc.requires_grad().then(|| {
                let x2 = x.to_shape((x.len() / k.max(1), k)).expect("fold");
                matmul_arrays(&t(g2.view().into_dyn()), &x2.view().into_dyn()).expect("checked in forward")
            });
            // db (N) = Σ_rows dy
            let gb = rb.then(|| reduce_to_shape_ref(g, &[n]));
            vec![gx, gw, gb]
        }))
    }

    /// `A · Bᵀ` without materialising the transpose: `(..., M, K) · (..., N, K)ᵀ -> (..., M, N)`.
    /// This is how a linear layer with PyTorch's `(out, in)` weight multiplies.
    /// Backward: `dA = dC · B`, `dB = dCᵀ · A` (summed over broadcast batch dimensions).
    /// PyTorch: `a @ b.transpose(-1, -2)`.
    ///
    /// Errors name both shapes: `matmul_t: [4, 3] x [5, 2]ᵀ`.
    pub fn matmul_t(&self, other: &Tensor) -> Result<Tensor> {
        #[cfg(feature = "wgpu")]
        if let Some(y) = super::on_gpu::matmul(self, other, true) {
            return Ok(y);
        }
        let out = {
            let (a, b) = (self.data(), other.data());
            let err = || crate::Error::shape("matmul_t", format!("{:?} x {:?}ᵀ", a.shape(), b.shape()));
            if b.ndim() < 2 {
                return Err(err());
            }
            matmul_arrays_keyed(&a.view(), &t(b.view()), self.param_key(), other.param_key()).map_err(|_| err())?
        };
        let (ac, bc) = (self.clone(), other.clone());
        Ok(Tensor::from_op(out, "matmul_t", &[self, other], move |g, _| {
            let (a, b) = (ac.data(), bc.data());
            let ga = ac.requires_grad().then(|| {
                // dA = dC · B
                reduce_to_shape(matmul_arrays(&g.view(), &b.view()).expect("checked in forward"), a.shape())
            });
            let gb = bc.requires_grad().then(|| {
                if b.ndim() == 2 && a.ndim() > 2 {
                    // dB (N, K) = dC_flatᵀ (N, B·M) · A_flat (B·M, K)
                    let k = a.shape()[a.ndim() - 1];
                    let n = g.shape()[g.ndim() - 1];
                    let a2 = a.to_shape((a.len() / k.max(1), k)).expect("fold");
                    let g2 = g.to_shape((g.len() / n.max(1), n)).expect("fold");
                    matmul_arrays(&t(g2.view().into_dyn()), &a2.view().into_dyn()).expect("checked in forward")
                } else {
                    // dB = dCᵀ · A
                    reduce_to_shape(matmul_arrays(&t(g.view()), &a.view()).expect("checked in forward"), b.shape())
                }
            });
            vec![ga, gb]
        }))
    }
}
