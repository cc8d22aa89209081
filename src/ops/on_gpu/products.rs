//! Matrix products and convolutions on the GPU: `matmul`, `matmul_t`, `linear`, `conv2d`
//! (the heavy ops that start a GPU chain when their arithmetic pays for the upload).

use super::{attempt, pays, value};
use crate::backend::wgpu::array_ops::{self as k};
use crate::backend::wgpu::{conv2d_backward_input_array, conv2d_backward_weight_array, conv2d_forward_array, matmul_array, Conv2dShape, MatmulShape};
use crate::backend::ConvGeom;
use crate::tensor::{DeviceValue, Tensor};

/// `y = conv2d(x, W) + b`; backward `dx = col2im(Wᵀ dy)`, `dW = Σ_n dy · colsᵀ`, `db = Σ_{n,q} dy`.
pub(crate) fn conv2d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, g: &ConvGeom) -> Option<Tensor> {
    let mut inputs = vec![x, w];
    inputs.extend(bias);
    let s = Conv2dShape::from(g);
    if !pays(s.flops(), &inputs) {
        return None;
    }
    attempt(|| {
        let (xd, wd) = (x.to_device()?, w.to_device()?);
        let bd = bias.map(Tensor::to_device).transpose()?;
        let y = value(conv2d_forward_array(xd.array(), wd.array(), bd.as_ref().map(DeviceValue::array), &s)?, &[g.n, g.oc, g.oh(), g.ow()]);
        let mut parents = vec![x, w];
        parents.extend(bias);
        let needs = (x.requires_grad(), w.requires_grad(), bias.is_some_and(Tensor::requires_grad));
        let has_bias = bias.is_some();
        Ok(Tensor::from_device_op(y, "conv2d", &parents, move |dy| {
            let dx = needs.0.then(|| conv2d_backward_input_array(dy.array(), wd.array(), &s).map(|a| value(a, xd.shape()))).transpose()?;
            let dw = needs.1.then(|| conv2d_backward_weight_array(xd.array(), dy.array(), &s).map(|a| value(a, wd.shape()))).transpose()?;
            let mut grads = vec![dx, dw];
            if has_bias {
                // db[o] = Σ_{n,i,j} dy[n, o, i, j]
                let db = needs.2.then(|| k::sum_planes(dy.array(), s.batch, s.out_channels, s.out_height() * s.out_width()).map(|a| value(a, &[s.out_channels]))).transpose()?;
                grads.push(db);
            }
            Ok(grads)
        }))
    })
}

/// `y = x Wᵀ + b` over all leading dimensions of `x (..., K)`, `W (N, K)`;
/// backward `dx = dy W`, `dW = dyᵀ x`, `db = Σ_rows dy`.
pub(crate) fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Option<Tensor> {
    let (sx, sw) = (x.shape(), w.shape());
    if sx.len() < 2 || sw.len() != 2 || sx[sx.len() - 1] != sw[1] || b.is_some_and(|b| b.shape() != [sw[0]]) {
        return None; // the CPU op reports the error
    }
    let (n, kk) = (sw[0], sw[1]);
    let rows = sx[..sx.len() - 1].iter().product::<usize>();
    let mut inputs = vec![x, w];
    inputs.extend(b);
    if !pays(2.0 * (rows * kk * n) as f64, &inputs) {
        return None;
    }
    attempt(|| {
        let mut out_shape = sx.clone();
        *out_shape.last_mut().expect("2-D or more") = n;
        let (xd, wd) = (x.to_device()?, w.to_device()?);
        // y (rows, N) = x (rows, K) · Wᵀ (K, N)
        let mut y = matmul_array(xd.array(), wd.array(), &MatmulShape::new(rows, kk, n).transposed(false, true))?;
        if let Some(b) = b {
            y = k::bias_add_rows(&y, b.to_device()?.array(), rows, n)?; // y[r][j] += b[j]
        }
        let y = value(y, &out_shape);
        let mut parents = vec![x, w];
        parents.extend(b);
        let needs = (x.requires_grad(), w.requires_grad(), b.is_some_and(Tensor::requires_grad));
        let has_bias = b.is_some();
        Ok(Tensor::from_device_op(y, "linear", &parents, move |dy| {
            // dx (rows, K) = dy (rows, N) · W (N, K)
            let dx = needs.0.then(|| matmul_array(dy.array(), wd.array(), &MatmulShape::new(rows, n, kk)).map(|a| value(a, xd.shape()))).transpose()?;
            // dW (N, K) = dyᵀ (N, rows) · x (rows, K)
            let dw = needs.1.then(|| matmul_array(dy.array(), xd.array(), &MatmulShape::new(n, rows, kk).transposed(true, false)).map(|a| value(a, &[n, kk]))).transpose()?;
            let mut grads = vec![dx, dw];
            if has_bias {
                // db (N) = Σ_rows dy
                grads.push(needs.2.then(|| k::sum_rows(dy.array(), rows, n).map(|a| value(a, &[n]))).transpose()?);
            }
            Ok(grads)
        }))
    })
}

/// `A · B` (or `A · Bᵀ` with `trans_b`, `matmul_t`) over batch dimensions: `a (..., M, K)`
/// and `b` either 2-D (one matrix for the whole batch) or with `a`'s batch dimensions.
/// Backward `dA = dC · op(B)ᵀ`, `dB = op⁻¹(Aᵀ dC)`, summed over the batch for a 2-D `b`.
pub(crate) fn matmul(a: &Tensor, b: &Tensor, trans_b: bool) -> Option<Tensor> {
    let (sa, sb) = (a.shape(), b.shape());
    if sa.len() < 2 || sb.len() < 2 || (sb.len() > 2 && sb[..sb.len() - 2] != sa[..sa.len() - 2]) {
        return None; // other broadcasts (and every error) on the CPU
    }
    let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
    let (kb, n) = if trans_b { (sb[sb.len() - 1], sb[sb.len() - 2]) } else { (sb[sb.len() - 2], sb[sb.len() - 1]) };
    if kb != k {
        return None;
    }
    let batch: usize = sa[..sa.len() - 2].iter().product();
    if !pays(2.0 * (batch * m * k * n) as f64, &[a, b]) {
        return None;
    }
    let shared_b = sb.len() == 2;
    let b_stride = if shared_b { 0 } else { k * n };
    attempt(|| {
        let (ad, bd) = (a.to_device()?, b.to_device()?);
        // C[i] (M, N) = A[i] (M, K) · op(B[i]) (K, N)
        let shape = MatmulShape::batched(batch, m, k, n).transposed(false, trans_b).strides(m * k, b_stride);
        let mut out_shape = sa[..sa.len() - 2].to_vec();
        out_shape.extend([m, n]);
        let y = value(matmul_array(ad.array(), bd.array(), &shape)?, &out_shape);
        let (ra, rb) = (a.requires_grad(), b.requires_grad());
        let name = if trans_b { "matmul_t" } else { "matmul" };
        Ok(Tensor::from_device_op(y, name, &[a, b], move |dc| {
            // dA[i] (M, K) = dC[i] (M, N) · op(B[i])ᵀ (N, K): Bᵀ for matmul, B for matmul_t
            let da = ra
                .then(|| matmul_array(dc.array(), bd.array(), &MatmulShape::batched(batch, m, n, k).transposed(false, !trans_b).strides(m * n, b_stride)))
                .transpose()?
                .map(|v| value(v, ad.shape()));
            let db = rb
                .then(|| {
                    let s = match (shared_b, trans_b) {
                        // dB (K, N) = A_flatᵀ (K, batch M) · dC_flat (batch M, N)
                        (true, false) => MatmulShape::new(k, batch * m, n).transposed(true, false),
                        // dB (N, K) = dC_flatᵀ (N, batch M) · A_flat (batch M, K)
                        (true, true) => MatmulShape::new(n, batch * m, k).transposed(true, false),
                        // dB[i] (K, N) = A[i]ᵀ (K, M) · dC[i] (M, N)
                        (false, false) => MatmulShape::batched(batch, k, m, n).transposed(true, false).strides(m * k, m * n),
                        // dB[i] (N, K) = dC[i]ᵀ (N, M) · A[i] (M, K)
                        (false, true) => MatmulShape::batched(batch, n, m, k).transposed(true, false).strides(m * n, m * k),
                    };
                    if trans_b { matmul_array(dc.array(), ad.array(), &s) } else { matmul_array(ad.array(), dc.array(), &s) }
                })
                .transpose()?
                .map(|v| value(v, bd.shape()));
            Ok(vec![da, db])
        }))
    })
}
