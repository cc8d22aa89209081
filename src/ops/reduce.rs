//! Reductions over axes: sum, mean, max, variance; softmax and log-softmax.

use super::kernels::{map2, rows_from, rows_from_as, standard_layout, to_standard};
use crate::tensor::{normalize_axis, Tensor};
use crate::Result;
use ndarray::{ArrayD, Axis, IxDyn};

/// Sorted, de-duplicated, non-negative axes; an error names `op` when one is out of range.
fn axes_of(op: &'static str, axes: &[isize], ndim: usize) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let n = if a < 0 { a + ndim as isize } else { a };
        if n < 0 || n as usize >= ndim {
            return Err(crate::Error::shape(op, format!("axis {a} out of range for a tensor with {ndim} dimensions")));
        }
        out.push(n as usize);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// The shape with the reduced axes set to 1.
fn kept_shape(shape: &[usize], axes: &[usize]) -> Vec<usize> {
    shape.iter().enumerate().map(|(i, &s)| if axes.contains(&i) { 1 } else { s }).collect()
}

fn sum_axes(x: &ArrayD<f32>, axes: &[usize]) -> ArrayD<f32> {
    let mut r = x.to_owned();
    for &a in axes.iter().rev() {
        r = r.sum_axis(Axis(a));
    }
    r
}

fn finish(r: ArrayD<f32>, kept: &[usize], keepdim: bool) -> ArrayD<f32> {
    if keepdim {
        // `sum_axis` may return a column-major array for a permuted input: reshape by copy.
        r.to_shape(IxDyn(kept)).expect("same element count").into_owned()
    } else {
        r
    }
}

impl Tensor {
    /// Sum over `axes` (negative counts from the end). d/dx = 1, broadcast back.
    /// PyTorch: `x.sum(dim=axes, keepdim=keepdim)`.
    pub fn sum_axes(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        let shape = self.shape();
        let ax = axes_of("sum", axes, shape.len())?;
        #[cfg(feature = "wgpu")]
        if !shape.is_empty() && ax == [shape.len() - 1] {
            if let Some(y) = super::on_gpu::sum_last(self, keepdim) {
                return Ok(y);
            }
        }
        let kept = kept_shape(&shape, &ax);
        let out = finish(sum_axes(&self.data(), &ax), &kept, keepdim);
        Ok(Tensor::from_op(out, "sum", &[self], move |g, _| {
            // `to_shape` copies when the incoming gradient is strided (e.g. it
            // went through a permute); a view reshape would fail on such a layout.
            let g = g.to_shape(IxDyn(&kept)).expect("kept shape");
            vec![Some(to_standard(&g.broadcast(IxDyn(&shape)).expect("broadcast back")))]
        }))
    }

    /// Sum of all elements, as a scalar.
    pub fn sum(&self) -> Tensor {
        #[cfg(feature = "wgpu")]
        if let Some(y) = super::on_gpu::sum(self) {
            return y;
        }
        let all: Vec<isize> = (0..self.ndim() as isize).collect();
        self.sum_axes(&all, false).expect("all axes are valid")
    }

    /// Mean over `axes`. d/dx = 1/n. PyTorch: `x.mean(dim=axes, keepdim=keepdim)`.
    pub fn mean_axes(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        let shape = self.shape();
        let ax = axes_of("mean", axes, shape.len())?;
        let n: usize = ax.iter().map(|&a| shape[a]).product();
        Ok(self.sum_axes(axes, keepdim)?.scale(1.0 / n.max(1) as f32))
    }

    /// Mean of all elements, as a scalar.
    pub fn mean(&self) -> Tensor {
        let n = self.len().max(1);
        self.sum().scale(1.0 / n as f32)
    }

    /// Maximum over one axis. The gradient is shared equally by the elements
    /// equal to the maximum (PyTorch's `amax`). PyTorch: `x.amax(dim, keepdim)`.
    pub fn max_axis(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        let shape = self.shape();
        let a = axes_of("max", &[axis], shape.len())?[0];
        if shape[a] == 0 {
            return Err(crate::Error::shape("max", format!("cannot take the maximum over an empty axis {a} of {shape:?}")));
        }
        let kept = kept_shape(&shape, &[a]);
        let m = self.data().fold_axis(Axis(a), f32::NEG_INFINITY, |&acc, &v| acc.max(v));
        let out = finish(m.clone(), &kept, keepdim);
        let xc = self.clone();
        Ok(Tensor::from_op(out, "max", &[self], move |g, _| {
            let x = xc.data();
            let mk = to_standard(&m.to_shape(IxDyn(&kept)).expect("kept").broadcast(x.raw_dim()).expect("bc"));
            let is_max = map2(&x, &mk, |v, m| if v == m { 1.0 } else { 0.0 });
            let count = is_max.sum_axis(Axis(a)).insert_axis(Axis(a));
            let gk = g.to_shape(IxDyn(&kept)).expect("kept").into_owned() / &count;
            vec![Some(is_max * &gk)]
        }))
    }

    /// Variance over `axes`, biased (divide by n) or unbiased (n - 1).
    /// Computed as `mean((x - mean(x))²)` so that its gradient comes from the pieces.
    /// PyTorch: `x.var(dim=axes, unbiased=unbiased, keepdim=keepdim)`.
    pub fn var_axes(&self, axes: &[isize], unbiased: bool, keepdim: bool) -> Result<Tensor> {
        let shape = self.shape();
        let ax = axes_of("var", axes, shape.len())?;
        let n: usize = ax.iter().map(|&a| shape[a]).product();
        let centered = self.sub(&self.mean_axes(axes, true)?)?;
        let denom = if unbiased { n.saturating_sub(1) } else { n };
        Ok(centered.square().sum_axes(axes, keepdim)?.scale(1.0 / denom.max(1) as f32))
    }

    /// Softmax over `axis`: `y_i = e^{x_i - max x} / Σ_j e^{x_j - max x}`.
    /// Backward: `dx = y ⊙ (g - Σ_j g_j y_j)`. PyTorch: `F.softmax(x, dim)`.
    pub fn softmax(&self, axis: isize) -> Tensor {
        let a = normalize_axis(axis, self.ndim());
        #[cfg(feature = "wgpu")]
        if let Some(y) = super::on_gpu::softmax(self, a, false) {
            return y;
        }
        let guard = self.data();
        let copy;
        // A strided input is copied to row-major first.
        let x = if guard.is_standard_layout() { &*guard } else { copy = to_standard(&guard.view()); &copy };
        if a + 1 != x.ndim() || x.is_empty() {
            // Another axis (the dVAE's K over (B, K, h, w)): blocks, vectorised along the positions.
            return softmax_over_blocks(self, x, a, false);
        }
        // The usual case (attention rows): contiguous rows, one pass each, in parallel.
        let d = x.shape()[a];
        let y = crate::with_mul_add!(M => rows_from_as::<M>(x.as_slice().expect("standard layout"), &[], d, #[inline(always)] |row, _| {
            let m = row.iter().fold(f32::NEG_INFINITY, |acc, &v| acc.max(v));
            // Separate passes so that each vectorises: exp, then the sum, then the scaling.
            row.iter_mut().for_each(|v| *v = super::kernels::exp::<M>(*v - m));
            let inv = 1.0 / lane_sum(row);
            row.iter_mut().for_each(|v| *v *= inv);
        }));
        let out = ArrayD::from_shape_vec(x.raw_dim(), y).expect("same length");
        drop(guard);
        Tensor::from_op(out, "softmax", &[self], move |g, y| {
            let g = standard_layout(g);
            let gs = g.as_slice().expect("standard layout");
            // dx = y ⊙ (g - Σ_j g_j y_j), each row starting from y's
            let dx = rows_from(y.as_slice().expect("softmax output is standard"), gs, d, #[inline(always)] |dx, g| {
                let s = lane_dot(dx, g);
                dx.iter_mut().zip(g).for_each(|(y, &g)| *y *= g - s);
            });
            vec![Some(ArrayD::from_shape_vec(y.raw_dim(), dx).expect("same length"))]
        })
    }

    /// Log-softmax over `axis`: `y_i = x_i - max x - ln Σ_j e^{x_j - max x}`.
    /// Backward: `dx = g - e^y Σ_j g_j`. PyTorch: `F.log_softmax(x, dim)`.
    pub fn log_softmax(&self, axis: isize) -> Tensor {
        let a = normalize_axis(axis, self.ndim());
        #[cfg(feature = "wgpu")]
        if let Some(y) = super::on_gpu::softmax(self, a, true) {
            return y;
        }
        let guard = self.data();
        let copy;
        // A strided input is copied to row-major first.
        let x = if guard.is_standard_layout() { &*guard } else { copy = to_standard(&guard.view()); &copy };
        softmax_over_blocks(self, x, a, true)
    }
}

/// Softmax (or log-softmax when `log`) of the row-major `x`, the data of `t`, over
/// axis `a`, in blocks `(d, inner)` ([`super::softmax_blocks`]), and its backward.
fn softmax_over_blocks(t: &Tensor, x: &ArrayD<f32>, a: usize, log: bool) -> Tensor {
    let (d, inner) = (x.shape()[a], x.shape()[a + 1..].iter().product::<usize>());
    let y = super::softmax_blocks::forward(x.as_slice().expect("standard layout"), d, inner, log);
    let out = ArrayD::from_shape_vec(x.raw_dim(), y).expect("same length");
    Tensor::from_op(out, if log { "log_softmax" } else { "softmax" }, &[t], move |g, y| {
        let g = standard_layout(g);
        let (gs, ys) = (g.as_slice().expect("standard layout"), y.as_slice().expect("the output is standard"));
        let dx = super::softmax_blocks::backward(ys, gs, d, inner, log);
        vec![Some(ArrayD::from_shape_vec(y.raw_dim(), dx).expect("same length"))]
    })
}

/// `Σ x` in 16 independent lanes (so that it vectorises), added in a fixed order.
#[inline(always)]
fn lane_sum(x: &[f32]) -> f32 {
    lane_dot(x, &[])
}

/// `Σ x·y` in 16 independent lanes; with `y` empty, `Σ x`.
#[inline(always)]
pub(crate) fn lane_dot(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder();
    let full = x.len() - tail.len();
    if y.is_empty() {
        chunks.for_each(|c| acc.iter_mut().zip(c).for_each(|(a, &v)| *a += v));
        acc.iter().sum::<f32>() + tail.iter().sum::<f32>()
    } else {
        chunks.zip(y.chunks_exact(16)).for_each(|(c, w)| acc.iter_mut().zip(c.iter().zip(w)).for_each(|(a, (&v, &u))| *a += v * u));
        acc.iter().sum::<f32>() + tail.iter().zip(&y[full..]).map(|(&v, &u)| v * u).sum::<f32>()
    }
}
