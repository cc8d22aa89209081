//! Indexing: pick rows by index (embedding lookup, index_select, gather) and
//! choose elements by a mask (masked_fill, where). Backward scatters the
//! gradient back to the positions that were read.

use crate::tensor::{normalize_axis, Tensor};
use crate::Result;
use ndarray::{ArrayD, Axis, IxDyn, Zip};

impl Tensor {
    /// Rows `indices` of `axis`: `out.shape[axis] = indices.len()`. Backward:
    /// scatter-add the gradient into those rows. PyTorch: `x.index_select(axis, idx)`.
    pub fn index_select(&self, axis: isize, indices: &[usize]) -> Result<Tensor> {
        let shape = self.shape();
        let a = normalize_axis(axis, shape.len());
        if let Some(&bad) = indices.iter().find(|&&i| i >= shape[a]) {
            return Err(crate::Error::shape("index_select", format!("index {bad} out of range for dimension {a} of {shape:?}")));
        }
        #[cfg(feature = "wgpu")]
        if a == 0 {
            if let Some(y) = super::on_gpu::select_rows(self, indices) {
                return Ok(y);
            }
        }
        let out = self.data().select(Axis(a), indices);
        let idx = indices.to_vec();
        Ok(Tensor::from_op(out, "index_select", &[self], move |g, _| {
            let mut full = ArrayD::<f32>::zeros(IxDyn(&shape));
            for (j, &i) in idx.iter().enumerate() {
                let mut dst = full.index_axis_mut(Axis(a), i);
                dst += &g.index_axis(Axis(a), j);
            }
            vec![Some(full)]
        }))
    }

    /// Embedding lookup: `weight (V, D)`, `ids` of any shape `S` -> `(S..., D)`.
    /// Backward: each used row of the weight accumulates its gradients.
    /// Errors when an id is not below `V`. PyTorch: `F.embedding(ids, weight)`.
    pub fn embedding(weight: &Tensor, ids: &[usize], ids_shape: &[usize]) -> Result<Tensor> {
        let ws = weight.shape();
        if ws.len() != 2 {
            return Err(crate::Error::shape("embedding", format!("weight must be (vocab, dim), got {ws:?}")));
        }
        if ids.len() != ids_shape.iter().product::<usize>() {
            return Err(crate::Error::shape("embedding", format!("{} ids do not fill shape {ids_shape:?}", ids.len())));
        }
        if let Some(&bad) = ids.iter().find(|&&i| i >= ws[0]) {
            return Err(crate::Error::shape("embedding", format!("token id {bad} is beyond the vocabulary of {} entries", ws[0])));
        }
        let rows = weight.index_select(0, ids)?;
        let mut shape: Vec<isize> = ids_shape.iter().map(|&d| d as isize).collect();
        shape.push(ws[1] as isize);
        rows.reshape(&shape)
    }

    /// Pick elements along `axis` by an index array of the output's shape:
    /// `out[i][j][k] = x[i][index[i][j][k]][k]` for axis 1. Backward: scatter-add.
    /// PyTorch: `torch.gather(x, axis, index)`.
    pub fn gather(&self, axis: isize, index: &ndarray::ArrayD<usize>) -> Result<Tensor> {
        let shape = self.shape();
        let a = normalize_axis(axis, shape.len());
        if index.ndim() != shape.len() || index.shape().iter().zip(&shape).enumerate().any(|(d, (i, s))| d != a && i > s) {
            return Err(crate::Error::shape("gather", format!("index of shape {:?} does not fit input {shape:?} on axis {a}", index.shape())));
        }
        if let Some(&bad) = index.iter().find(|&&i| i >= shape[a]) {
            return Err(crate::Error::shape("gather", format!("index {bad} out of range for dimension {a} of {shape:?}")));
        }
        let x = self.data();
        let out = ArrayD::from_shape_fn(index.raw_dim(), |mut pos| {
            pos[a] = index[&pos];
            x[&pos]
        });
        drop(x);
        let index = index.clone();
        Ok(Tensor::from_op(out, "gather", &[self], move |g, _| {
            let mut full = ArrayD::<f32>::zeros(IxDyn(&shape));
            for (pos, &gv) in g.indexed_iter() {
                let mut p = pos.clone();
                p[a] = index[&pos];
                full[&p] += gv;
            }
            vec![Some(full)]
        }))
    }

    /// Replace the elements where `mask` is true (broadcast to this shape) by
    /// `value`; e.g. `-inf` above the diagonal for a causal mask. Backward: the
    /// gradient is zero where the mask is true. PyTorch: `x.masked_fill(mask, value)`.
    pub fn masked_fill(&self, mask: &ArrayD<bool>, value: f32) -> Result<Tensor> {
        let shape = self.shape();
        if mask.broadcast(IxDyn(&shape)).is_none() {
            return Err(crate::Error::shape("masked_fill", format!("mask {:?} does not broadcast to {shape:?}", mask.shape())));
        }
        #[cfg(feature = "wgpu")]
        if let Some(y) = super::on_gpu::masked_fill(self, mask, value) {
            return Ok(y);
        }
        let m = mask.clone();
        let mut out = self.data().to_owned();
        fill_where(&mut out, &m, value);
        Ok(Tensor::from_op(out, "masked_fill", &[self], move |g, _| {
            let mut d = g.clone();
            fill_where(&mut d, &m, 0.0);
            vec![Some(d)]
        }))
    }

    /// `cond ? a : b` elementwise (all broadcast together). Backward: the
    /// gradient goes to `a` where cond holds, to `b` elsewhere. PyTorch: `torch.where`.
    pub fn where_(cond: &ArrayD<bool>, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let (sa, sb) = (a.shape(), b.shape());
        let s = crate::tensor::broadcast_shapes("where", &sa, &sb)?;
        let shape = crate::tensor::broadcast_shapes("where", &s, cond.shape())?;
        let c = cond.broadcast(IxDyn(&shape)).expect("checked").to_owned();
        let cf = c.mapv(|v| if v { 1.0f32 } else { 0.0 });
        let out = {
            let (x, y) = (a.data(), b.data());
            let (x, y) = (x.broadcast(IxDyn(&shape)).expect("checked"), y.broadcast(IxDyn(&shape)).expect("checked"));
            let mut o = ArrayD::<f32>::zeros(IxDyn(&shape));
            Zip::from(&mut o).and(&c).and(&x).and(&y).for_each(|o, &c, &x, &y| *o = if c { x } else { y });
            o
        };
        Ok(Tensor::from_op(out, "where", &[a, b], move |g, _| {
            let ga = crate::tensor::reduce_to_shape(g * &cf, &sa);
            let gb = crate::tensor::reduce_to_shape(g * &cf.mapv(|v| 1.0 - v), &sb);
            vec![Some(ga), Some(gb)]
        }))
    }
}

/// `x[i] = value` where `mask` (broadcast to `x`'s shape, checked by the
/// caller) is true.
///
/// Fast path: an attention mask `(T, S)` against scores `(B, H, T, S)` is a
/// contiguous suffix of the scores' shape, so the scores are a stack of
/// `T·S` blocks, each filled against the same flat mask slice, in parallel
/// (each element is written on its own: the split changes no bit). This
/// avoids building an owned `(B, H, T, S)` copy of the mask. Any other layout
/// takes `Zip` over the broadcast view.
fn fill_where(x: &mut ArrayD<f32>, mask: &ArrayD<bool>, value: f32) {
    use rayon::prelude::*;
    let shape = x.shape().to_vec();
    let suffix: Vec<usize> = mask.shape().iter().copied().skip_while(|&d| d == 1).collect();
    let is_suffix = !mask.is_empty() && suffix.len() <= shape.len() && suffix[..] == shape[shape.len() - suffix.len()..];
    if let (true, Some(ms), Some(xs)) = (is_suffix, mask.as_slice(), x.as_slice_mut()) {
        let p = ms.len();
        let rows = (8192 / p).max(1) * p; // whole mask blocks, about 8k elements a task
        xs.par_chunks_mut(rows).for_each(|chunk| {
            for block in chunk.chunks_mut(p) {
                for (o, &mk) in block.iter_mut().zip(ms) {
                    if mk {
                        *o = value;
                    }
                }
            }
        });
        return;
    }
    let m = mask.broadcast(IxDyn(&shape)).expect("checked by the caller");
    Zip::from(x).and(&m).for_each(|o, &mk| {
        if mk {
            *o = value
        }
    });
}
