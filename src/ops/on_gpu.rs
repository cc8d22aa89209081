//! The GPU twins of the ops, for tensors that stay on the GPU ([`backend::resident`]).
//!
//! Each function here is called first by its op in the sibling files. It returns `None`
//! when the op should run on the CPU: tensors do not stay on the GPU, the op is not
//! worth moving there (below), or the GPU failed (said once on stderr). Otherwise it
//! runs the op's kernels on the inputs' GPU copies (uploading those not there yet: a
//! batch of images, a parameter changed on the host) and returns a tensor whose values
//! stay on the GPU, with a backward closure that runs on the GPU as well. The formulas
//! are those of the CPU ops they mirror.
//!
//! Where an op runs: a light op (about one operation per value it reads: ReLU, add,
//! pooling, a loss) runs on the GPU only when one of its inputs is already there, so a
//! model the GPU does not cover never ships values over the bus for it. A heavy op
//! (linear, conv2d) starts a GPU chain when its floating-point operations per byte it
//! must upload reach [`backend::min_gpu_intensity`]; parameters are not counted, since
//! they are uploaded once and stay.

use crate::backend::wgpu::array_ops::{self as k, AdamHyper, Pool2dShape};
use crate::backend::wgpu::pointwise::{self, Unary};
use crate::backend::wgpu::{conv2d_backward_input_array, layout, rows, conv2d_backward_weight_array, conv2d_forward_array, matmul_array, Conv2dShape, GpuArray, MatmulShape};
use crate::backend::{self, ConvGeom};
use crate::tensor::{DeviceValue, Tensor};
use crate::Result;

/// `Some(f())` when tensors stay on the GPU and the kernels succeed, else `None`.
fn attempt(f: impl FnOnce() -> Result<Tensor>) -> Option<Tensor> {
    if !backend::resident() {
        return None;
    }
    match f() {
        Ok(t) => Some(t),
        Err(e) => {
            backend::report_gpu_error(&e);
            None
        }
    }
}

/// Whether a light op runs on the GPU: one of its inputs is already there.
fn any_on_gpu(inputs: &[&Tensor]) -> bool {
    backend::resident() && inputs.iter().any(|t| t.is_on_device())
}

/// Whether a heavy op of `flops` runs on the GPU: every input is there, or the flops
/// per byte still to upload reach the threshold. A parameter is not counted: it is
/// uploaded once and stays (until the host changes it).
fn pays(flops: f64, inputs: &[&Tensor]) -> bool {
    let upload: usize = inputs.iter().filter(|t| !t.is_on_device() && t.param_key().is_none()).map(|t| 4 * t.len()).sum();
    backend::resident() && (upload == 0 || flops >= backend::min_gpu_intensity() as f64 * upload as f64)
}

/// A GPU array as a value of `shape`.
fn value(array: GpuArray, shape: &[usize]) -> DeviceValue {
    DeviceValue::new(array, shape)
}

/// `max(x, 0)`; backward `g · [x > 0]`.
pub(crate) fn relu(x: &Tensor) -> Option<Tensor> {
    if !any_on_gpu(&[x]) {
        return None;
    }
    attempt(|| {
        let xd = x.to_device()?;
        let y = value(k::relu(xd.array())?, xd.shape());
        Ok(Tensor::from_device_op(y, "relu", &[x], move |g| Ok(vec![Some(value(k::relu_backward(g.array(), xd.array())?, xd.shape()))])))
    })
}


/// An op on two operands of one shape, one of them on the GPU already: `forward`
/// computes it, `backward(g, a, b)` the two gradients (`needs` says which are wanted).
fn same_shape(
    a: &Tensor,
    b: &Tensor,
    name: &'static str,
    forward: impl FnOnce(&GpuArray, &GpuArray) -> Result<GpuArray>,
    backward: impl Fn(&DeviceValue, &DeviceValue, &DeviceValue, (bool, bool)) -> Result<[Option<DeviceValue>; 2]> + Send + Sync + 'static,
) -> Option<Tensor> {
    if !any_on_gpu(&[a, b]) || a.shape() != b.shape() {
        return None; // broadcasting on the CPU
    }
    attempt(|| {
        let (ad, bd) = (a.to_device()?, b.to_device()?);
        let y = value(forward(ad.array(), bd.array())?, ad.shape());
        let needs = (a.requires_grad(), b.requires_grad());
        Ok(Tensor::from_device_op(y, name, &[a, b], move |g| Ok(backward(g, &ad, &bd, needs)?.into())))
    })
}

/// `a + b`; backward `g` to both (the same memory).
pub(crate) fn add(a: &Tensor, b: &Tensor) -> Option<Tensor> {
    same_shape(a, b, "add", k::add, |g, _, _, _| Ok([Some(g.clone()), Some(g.clone())]))
}

/// `a - b`; backward `g`, `-g`.
pub(crate) fn sub(a: &Tensor, b: &Tensor) -> Option<Tensor> {
    same_shape(a, b, "sub", pointwise::sub, |g, _, _, (_, rb)| {
        let minus_g = rb.then(|| k::scale(g.array(), -1.0).map(|v| value(v, g.shape()))).transpose()?;
        Ok([Some(g.clone()), minus_g])
    })
}

/// `a · b`; backward `g b`, `g a`.
pub(crate) fn mul(a: &Tensor, b: &Tensor) -> Option<Tensor> {
    same_shape(a, b, "mul", pointwise::mul, |g, ad, bd, (ra, rb)| {
        let times = |x: &DeviceValue| pointwise::mul(g.array(), x.array()).map(|v| value(v, g.shape()));
        Ok([ra.then(|| times(bd)).transpose()?, rb.then(|| times(ad)).transpose()?])
    })
}

/// The same values in another shape: the GPU memory is shared, nothing moves.
/// Only for a tensor already on the GPU (a reshape is no reason to upload).
pub(crate) fn reshape(x: &Tensor, shape: &[usize]) -> Option<Tensor> {
    if !x.is_on_device() {
        return None;
    }
    attempt(|| {
        let old = x.shape();
        let y = x.to_device()?.reshaped(shape);
        Ok(Tensor::from_device_op(y, "reshape", &[x], move |g| Ok(vec![Some(g.reshaped(&old))])))
    })
}

/// `y = conv2d(x, W) + b`; backward `dx = col2im(Wᵀ dy)`, `dW = Σ_n dy · colsᵀ`, `db = Σ_{n,q} dy`.
pub(crate) fn conv2d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, g: &ConvGeom) -> Option<Tensor> {
    let mut inputs = vec![x, w];
    inputs.extend(bias);
    // 2 · N · OC · OH · OW · C · KH · KW
    if !pays(2.0 * (g.n * g.oc * g.oh() * g.ow()) as f64 * (g.c * g.kh * g.kw) as f64, &inputs) {
        return None;
    }
    attempt(|| {
        let s = Conv2dShape { batch: g.n, in_channels: g.c, height: g.h, width: g.w, out_channels: g.oc, kernel_h: g.kh, kernel_w: g.kw, stride: g.stride, padding: g.pad };
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

/// Max pooling, `k×k` windows, stride `s`, no padding; backward: each window's
/// gradient goes to its (first) maximum.
pub(crate) fn max_pool2d(x: &Tensor, kernel: usize, stride: usize) -> Option<Tensor> {
    if !any_on_gpu(&[x]) {
        return None;
    }
    let s = x.shape();
    attempt(|| {
        let shape = Pool2dShape { batch: s[0], channels: s[1], height: s[2], width: s[3], kernel, stride };
        let xd = x.to_device()?;
        let y = value(k::max_pool2d(xd.array(), &shape)?, &[s[0], s[1], shape.out_height(), shape.out_width()]);
        Ok(Tensor::from_device_op(y, "max_pool2d", &[x], move |g| Ok(vec![Some(value(k::max_pool2d_backward(g.array(), xd.array(), &shape)?, xd.shape()))])))
    })
}

/// Mean cross-entropy of `logits (N, K)` against class indices; backward
/// `(softmax(logits) - onehot(target)) · g / N`.
pub(crate) fn cross_entropy(logits: &Tensor, targets: &[usize]) -> Option<Tensor> {
    if !any_on_gpu(&[logits]) {
        return None;
    }
    let s = logits.shape();
    attempt(|| {
        let (rows, classes) = (s[0], s[1]);
        let ld = logits.to_device()?;
        let t = GpuArray::upload(&targets.iter().map(|&t| t as f32).collect::<Vec<f32>>())?; // exact below 2²⁴ classes
        let (loss, probs) = k::cross_entropy(ld.array(), &t, rows, classes)?;
        let loss = value(loss, &[]);
        Ok(Tensor::from_device_op(loss, "cross_entropy", &[logits], move |g| {
            Ok(vec![Some(value(k::cross_entropy_backward(&probs, &t, g.array(), rows, classes)?, &[rows, classes]))])
        }))
    })
}

/// One Adam step on the GPU for a parameter whose gradient is there: `θ`, `m` and `v`
/// are updated in place. Returns `None` (the CPU step runs) when the parameter or its
/// gradient is not on the GPU, or the GPU failed.
pub(crate) fn adam_step(p: &Tensor, moments: &mut Option<(DeviceValue, DeviceValue)>, hyper: &AdamHyper) -> Option<()> {
    if !backend::resident() || !p.is_on_device() {
        return None;
    }
    let Some(crate::tensor::Value::Device(g)) = p.grad_value() else { return None };
    let mut run = || -> Result<()> {
        let pd = p.to_device()?;
        if moments.is_none() {
            let zeros = || k::fill(pd.len(), 0.0).map(|a| value(a, pd.shape()));
            *moments = Some((zeros()?, zeros()?));
        }
        let (m, v) = moments.as_ref().expect("just set");
        k::adam_step(pd.array(), g.array(), m.array(), v.array(), hyper)
    };
    match run() {
        Ok(()) => {
            p.device_changed();
            Some(())
        }
        Err(e) => {
            backend::report_gpu_error(&e);
            None
        }
    }
}

/// `f(x)` for sigmoid, tanh and square; backward `g · f'(x)`.
pub(crate) fn unary(x: &Tensor, f: Unary, name: &'static str) -> Option<Tensor> {
    if !any_on_gpu(&[x]) {
        return None;
    }
    attempt(|| {
        let xd = x.to_device()?;
        let y = value(pointwise::unary(f, xd.array())?, xd.shape());
        Ok(Tensor::from_device_op(y, name, &[x], move |g| Ok(vec![Some(value(pointwise::unary_backward(f, g.array(), xd.array())?, xd.shape()))])))
    })
}



/// `c x`; backward `c g`. Only for a tensor already on the GPU.
pub(crate) fn scale(x: &Tensor, c: f32) -> Option<Tensor> {
    if !x.is_on_device() {
        return None;
    }
    attempt(|| {
        let xd = x.to_device()?;
        let y = value(k::scale(xd.array(), c)?, xd.shape());
        Ok(Tensor::from_device_op(y, "scale", &[x], move |g| Ok(vec![Some(value(k::scale(g.array(), c)?, g.shape()))])))
    })
}

/// `Σ x` over every element, a scalar; backward `g` spread over x's shape.
/// Only for a tensor already on the GPU.
pub(crate) fn sum(x: &Tensor) -> Option<Tensor> {
    if !x.is_on_device() {
        return None;
    }
    attempt(|| {
        let xd = x.to_device()?;
        let y = value(k::sum_all(xd.array())?, &[]);
        Ok(Tensor::from_device_op(y, "sum", &[x], move |g| Ok(vec![Some(value(pointwise::broadcast_scalar(g.array(), xd.len(), 1.0)?, xd.shape()))])))
    })
}

/// Mean binary cross-entropy on logits; backward `g (σ(x) - y) / n` to the logits,
/// and `-g x / n` to the targets when they need it.
pub(crate) fn bce_with_logits(x: &Tensor, y: &Tensor) -> Option<Tensor> {
    if !any_on_gpu(&[x, y]) {
        return None;
    }
    attempt(|| {
        let (xd, yd) = (x.to_device()?, y.to_device()?);
        let loss = value(pointwise::bce_with_logits(xd.array(), yd.array())?, &[]);
        let ry = y.requires_grad();
        Ok(Tensor::from_device_op(loss, "bce_with_logits", &[x, y], move |g| {
            let dx = value(pointwise::bce_with_logits_backward(xd.array(), yd.array(), g.array())?, xd.shape());
            // d/dy = -g x / n
            let dy = ry
                .then(|| -> Result<DeviceValue> {
                    let spread = pointwise::broadcast_scalar(g.array(), xd.len(), -1.0 / xd.len().max(1) as f32)?;
                    Ok(value(pointwise::mul(&spread, xd.array())?, xd.shape()))
                })
                .transpose()?;
            Ok(vec![Some(dx), dy])
        }))
    })
}

/// The axes reordered (`out.shape[i] = x.shape[axes[i]]`); backward: the inverse permutation.
/// Only for a tensor already on the GPU.
pub(crate) fn permute(x: &Tensor, axes: &[usize]) -> Option<Tensor> {
    if !x.is_on_device() || axes.len() > layout::MAX_AXES {
        return None;
    }
    attempt(|| {
        let xd = x.to_device()?;
        let shape = xd.shape().to_vec();
        let out_shape: Vec<usize> = axes.iter().map(|&a| shape[a]).collect();
        let y = value(layout::permute(xd.array(), &shape, axes)?, &out_shape);
        let mut inverse = vec![0; axes.len()];
        for (i, &a) in axes.iter().enumerate() {
            inverse[a] = i;
        }
        Ok(Tensor::from_device_op(y, "permute", &[x], move |g| Ok(vec![Some(value(layout::permute(g.array(), &out_shape, &inverse)?, &shape))])))
    })
}

/// Rows `indices` of a 2-D `table (K, D)`: `(n, D)`; backward: each row of the table
/// sums the gradients of the rows that read it.
pub(crate) fn select_rows(table: &Tensor, indices: &[usize]) -> Option<Tensor> {
    if !any_on_gpu(&[table]) {
        return None;
    }
    let s = table.shape();
    if s.len() != 2 {
        return None;
    }
    attempt(|| {
        let (rows, dim) = (indices.len(), s[1]);
        let td = table.to_device()?;
        let index = GpuArray::upload(&indices.iter().map(|&i| i as f32).collect::<Vec<f32>>())?; // exact below 2²⁴ rows
        let y = value(layout::gather_rows(td.array(), &index, rows, dim)?, &[rows, dim]);
        let table_rows = s[0];
        Ok(Tensor::from_device_op(y, "index_select", &[table], move |g| {
            Ok(vec![Some(value(layout::scatter_rows(g.array(), &index, rows, dim, table_rows)?, &[table_rows, dim]))])
        }))
    })
}

/// Nearest upsampling of `(N, C, H, W)` by `factor`; backward: each pixel sums its copies.
pub(crate) fn upsample_nearest2d(x: &Tensor, factor: usize) -> Option<Tensor> {
    if !any_on_gpu(&[x]) {
        return None;
    }
    let s = x.shape();
    attempt(|| {
        let (planes, h, w) = (s[0] * s[1], s[2], s[3]);
        let xd = x.to_device()?;
        let y = value(layout::upsample_nearest(xd.array(), planes, h, w, factor)?, &[s[0], s[1], h * factor, w * factor]);
        Ok(Tensor::from_device_op(y, "upsample_nearest2d", &[x], move |g| Ok(vec![Some(value(layout::upsample_nearest_backward(g.array(), planes, h, w, factor)?, xd.shape()))])))
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

/// `Σ_i ‖g_i‖²` of gradients on the GPU, summed there; one value read back.
pub(crate) fn squared_norm(grads: &[&DeviceValue]) -> Result<f64> {
    let mut total: Option<GpuArray> = None;
    for g in grads {
        let s = k::sum_all(&pointwise::unary(Unary::Square, g.array())?)?; // ‖g‖²
        total = Some(match total {
            Some(t) => k::add(&t, &s)?,
            None => s,
        });
    }
    Ok(total.map(|t| t.to_vec()).transpose()?.map_or(0.0, |v| v[0] as f64))
}

/// `c g` for a gradient on the GPU, as a gradient value.
pub(crate) fn scaled(g: &DeviceValue, c: f32) -> Result<crate::tensor::Value> {
    Ok(crate::tensor::Value::Device(value(k::scale(g.array(), c)?, g.shape())))
}

/// The axes of an `n`-axis array with `axis` moved last.
fn axis_last(n: usize, axis: usize) -> Vec<usize> {
    (0..n).filter(|&a| a != axis).chain([axis]).collect()
}

/// The permutation that undoes `order`.
fn inverse(order: &[usize]) -> Vec<usize> {
    let mut back = vec![0; order.len()];
    for (i, &a) in order.iter().enumerate() {
        back[a] = i;
    }
    back
}

/// Softmax (or, with `log`, log-softmax) over `axis`: `y = e^{x - max} / Σ e^{x - max}`
/// (`y = x - max - ln Σ e^{x - max}`); backward `dx = y ⊙ (g - Σ g y)` (`dx = g - e^y Σ g`).
/// The kernels work on rows: another axis is moved last first, and back after.
pub(crate) fn softmax(x: &Tensor, axis: usize, log: bool) -> Option<Tensor> {
    let s = x.shape();
    if !any_on_gpu(&[x]) || axis >= s.len() || s.len() > layout::MAX_AXES {
        return None;
    }
    attempt(|| {
        let (d, last) = (s[axis], axis + 1 == s.len());
        let rows = s.iter().product::<usize>() / d.max(1);
        let order = axis_last(s.len(), axis);
        let moved: Vec<usize> = order.iter().map(|&a| s[a]).collect(); // the shape with `axis` last
        let back = inverse(&order);
        let forward = move |x: &GpuArray| if log { rows::log_softmax_rows(x, rows, d) } else { rows::softmax_rows(x, rows, d) };
        let backward = move |g: &GpuArray, y: &GpuArray| if log { rows::log_softmax_rows_backward(g, y, rows, d) } else { rows::softmax_rows_backward(g, y, rows, d) };
        let xd = x.to_device()?;
        // yr: the output as rows of `axis`; y: in x's layout
        let (y, yr) = if last {
            let y = value(forward(xd.array())?, &s);
            (y.clone(), y)
        } else {
            let yr = value(forward(&layout::permute(xd.array(), &s, &order)?)?, &moved);
            (value(layout::permute(yr.array(), &moved, &back)?, &s), yr)
        };
        let name = if log { "log_softmax" } else { "softmax" };
        Ok(Tensor::from_device_op(y, name, &[x], move |g| {
            let dx = if last {
                backward(g.array(), yr.array())?
            } else {
                let dr = backward(&layout::permute(g.array(), &s, &order)?, yr.array())?;
                layout::permute(&dr, &moved, &back)?
            };
            Ok(vec![Some(value(dx, &s))])
        }))
    })
}

/// Layer norm over the last axis: `y = γ (x - μ) / √(σ² + ε) + β`; backward
/// `dx = (ĝ - mean ĝ - x̂ mean(ĝ x̂)) / σ` with `ĝ = γ dy`, `dγ = Σ dy x̂`, `dβ = Σ dy`.
pub(crate) fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> Option<Tensor> {
    if !any_on_gpu(&[x]) {
        return None;
    }
    let s = x.shape();
    let d = *s.last()?;
    attempt(|| {
        let rows = s.iter().product::<usize>() / d.max(1);
        let (xd, gd, bd) = (x.to_device()?, gamma.to_device()?, beta.to_device()?);
        let (y, stats) = rows::layer_norm_rows(xd.array(), gd.array(), bd.array(), rows, d, eps)?;
        let y = value(y, &s);
        Ok(Tensor::from_device_op(y, "layer_norm", &[x, gamma, beta], move |g| {
            let (dx, dgamma, dbeta) = rows::layer_norm_rows_backward(g.array(), xd.array(), gd.array(), &stats, rows, d)?;
            Ok(vec![Some(value(dx, xd.shape())), Some(value(dgamma, &[d])), Some(value(dbeta, &[d]))])
        }))
    })
}

/// Elements `start..start + width` of `axis`; backward: the gradient placed in that
/// slice of zeros.
pub(crate) fn narrow(x: &Tensor, axis: usize, start: usize, width: usize) -> Option<Tensor> {
    if !any_on_gpu(&[x]) {
        return None;
    }
    let s = x.shape();
    attempt(|| {
        let (outer, len, inner) = (s[..axis].iter().product::<usize>(), s[axis], s[axis + 1..].iter().product::<usize>());
        let xd = x.to_device()?;
        let mut out_shape = s.clone();
        out_shape[axis] = width;
        let y = value(rows::narrow(xd.array(), outer, len, inner, start, width)?, &out_shape);
        Ok(Tensor::from_device_op(y, "narrow", &[x], move |g| Ok(vec![Some(value(rows::narrow_backward(g.array(), outer, len, inner, start, width)?, &s))])))
    })
}

/// Two tensors joined along `axis`; backward: each gets its slice of the gradient.
pub(crate) fn concat2(a: &Tensor, b: &Tensor, axis: usize) -> Option<Tensor> {
    if !any_on_gpu(&[a, b]) {
        return None;
    }
    let (sa, sb) = (a.shape(), b.shape());
    attempt(|| {
        let (outer, inner) = (sa[..axis].iter().product::<usize>(), sa[axis + 1..].iter().product::<usize>());
        let (la, lb) = (sa[axis], sb[axis]);
        let (ad, bd) = (a.to_device()?, b.to_device()?);
        let mut out_shape = sa.clone();
        out_shape[axis] = la + lb;
        let y = value(rows::concat2(ad.array(), bd.array(), outer, la, lb, inner)?, &out_shape);
        Ok(Tensor::from_device_op(y, "concat", &[a, b], move |g| {
            let ga = value(rows::narrow(g.array(), outer, la + lb, inner, 0, la)?, &sa);
            let gb = value(rows::narrow(g.array(), outer, la + lb, inner, la, lb)?, &sb);
            Ok(vec![Some(ga), Some(gb)])
        }))
    })
}

/// `value` where `mask` (broadcast to x's shape) is true; backward: zero there.
pub(crate) fn masked_fill(x: &Tensor, mask: &ndarray::ArrayD<bool>, fill: f32) -> Option<Tensor> {
    if !any_on_gpu(&[x]) {
        return None;
    }
    let s = x.shape();
    attempt(|| {
        let strides = rows::broadcast_strides(mask.shape(), &s)?; // 0 where the mask broadcasts
        let m = GpuArray::upload(&mask.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect::<Vec<f32>>())?;
        let xd = x.to_device()?;
        let y = value(rows::masked_fill(xd.array(), &s, &m, &strides, fill)?, &s);
        Ok(Tensor::from_device_op(y, "masked_fill", &[x], move |g| Ok(vec![Some(value(rows::masked_fill_backward(g.array(), &s, &m, &strides)?, &s))])))
    })
}

/// The nearest code of each row of `z (N, D)` among the rows of `codebook (K, D)`,
/// searched on the GPU when `z` is there: only the N indices come back.
pub(crate) fn nearest_codes(z: &Tensor, codebook: &Tensor) -> Option<Vec<usize>> {
    let (sz, se) = (z.shape(), codebook.shape());
    if !backend::resident() || !z.is_on_device() || sz.len() != 2 || se.len() != 2 || sz[1] != se[1] {
        return None;
    }
    let run = || -> Result<Vec<usize>> {
        let (zd, ed) = (z.to_device()?, codebook.to_device()?);
        let e_sq: Vec<f32> = codebook.data().rows().into_iter().map(|r| r.dot(&r)).collect(); // ‖e_k‖², as the CPU search
        let e_sq = GpuArray::upload(&e_sq)?;
        let found = crate::backend::wgpu::codes::nearest_codes(zd.array(), ed.array(), &e_sq, sz[0], se[0], sz[1])?;
        Ok(found.to_vec()?.into_iter().map(|k| k as usize).collect())
    };
    run().map_err(|e| backend::report_gpu_error(&e)).ok()
}

/// `Σ_{i : k*_i = k} z_i` for each of `codes` codes, `(K, D)`: summed on the GPU when
/// `z (N, D)` is there (only the sums come back).
pub(crate) fn code_sums(z: &Tensor, indices: &[usize], codes: usize) -> Option<ndarray::ArrayD<f32>> {
    let s = z.shape();
    if !backend::resident() || !z.is_on_device() || s.len() != 2 || indices.len() != s[0] {
        return None;
    }
    let run = || -> Result<ndarray::ArrayD<f32>> {
        let zd = z.to_device()?;
        let index = GpuArray::upload(&indices.iter().map(|&i| i as f32).collect::<Vec<f32>>())?;
        let sums = layout::scatter_rows(zd.array(), &index, s[0], s[1], codes)?;
        value(sums, &[codes, s[1]]).to_host()
    };
    run().map_err(|e| backend::report_gpu_error(&e)).ok()
}

/// `Σ_j x[..., j]` over the last axis (kept as size 1 with `keepdim`); backward: each
/// row's gradient spread over its `d` values.
pub(crate) fn sum_last(x: &Tensor, keepdim: bool) -> Option<Tensor> {
    if !any_on_gpu(&[x]) {
        return None;
    }
    let s = x.shape();
    let d = *s.last()?;
    attempt(|| {
        let rows = s[..s.len() - 1].iter().product::<usize>();
        let xd = x.to_device()?;
        let mut out_shape = s[..s.len() - 1].to_vec();
        if keepdim {
            out_shape.push(1);
        }
        // row sums: the rows as `rows` channels of one plane of d values
        let y = value(k::sum_planes(xd.array(), 1, rows, d)?, &out_shape);
        Ok(Tensor::from_device_op(y, "sum", &[x], move |g| {
            // dx[r][j] = g[r]: zeros plus one bias per row
            let spread = k::bias_add_planes(&k::fill(rows * d, 0.0)?, g.array(), 1, rows, d)?;
            Ok(vec![Some(value(spread, &s))])
        }))
    })
}
