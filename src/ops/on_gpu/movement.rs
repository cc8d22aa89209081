//! Ops that move values on the GPU: reshape, permute, rows of a table, upsampling,
//! narrow, concat, masked_fill, max pooling.

use super::{any_on_gpu, attempt, value};
use crate::backend::wgpu::array_ops::{self as k, Pool2dShape};
use crate::backend::wgpu::{layout, rows, GpuArray};
use crate::tensor::Tensor;

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
