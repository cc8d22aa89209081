//! Ops over rows on the GPU: softmax and log-softmax, layer norm, cross-entropy.

use super::{any_on_gpu, attempt, value, axis_last, inverse};
use crate::backend::wgpu::array_ops::{self as k};
use crate::backend::wgpu::{layout, rows, GpuArray};
use crate::tensor::Tensor;

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
