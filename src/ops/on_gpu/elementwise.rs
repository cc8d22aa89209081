//! Elementwise ops and whole-tensor sums on the GPU: ReLU, the activations, add, sub,
//! mul, scale, sums, BCE on logits.

use super::{any_on_gpu, attempt, value};
use crate::backend::wgpu::array_ops::{self as k};
use crate::backend::wgpu::pointwise::{self, Unary};
use crate::backend::wgpu::GpuArray;
use crate::tensor::{DeviceValue, Tensor};
use crate::Result;

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

/// The GPU twin of the unary op named `op` (the name its CPU op records), if it has
/// one: ReLU, or a [`Unary`] map.
pub(crate) fn unary_named(x: &Tensor, op: &'static str) -> Option<Tensor> {
    let f = match op {
        "relu" => return relu(x),
        "sigmoid" => Unary::Sigmoid,
        "tanh" => Unary::Tanh,
        "square" => Unary::Square,
        "exp" => Unary::Exp,
        "gelu" => Unary::Gelu,
        "gelu_tanh" => Unary::GeluTanh,
        "silu" => Unary::Silu,
        "quick_gelu" => Unary::QuickGelu,
        _ => return None,
    };
    unary(x, f, op)
}

/// `f(x)` for a [`Unary`] map; backward `g · f'(x)`.
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
