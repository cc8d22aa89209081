//! Operations that move elements without arithmetic: reshape, permute,
//! narrow, concat, stack. Their backward passes move the gradient back.

use crate::ops::kernels::{standard_layout, to_standard};
use crate::tensor::{normalize_axis, Tensor};
use crate::Result;
use ndarray::{ArrayD, Axis, IxDyn, Slice};

impl Tensor {
    /// The same elements in a new shape (row-major order); one dimension may be
    /// `-1` (inferred). Backward: reshape the gradient back. PyTorch: `x.reshape(shape)`.
    pub fn reshape(&self, shape: &[isize]) -> Result<Tensor> {
        let old = self.shape();
        let n = self.len();
        let known: usize = shape.iter().filter(|&&d| d >= 0).map(|&d| d as usize).product();
        let inferred = shape.iter().filter(|&&d| d < 0).count();
        let bad = || crate::Error::shape("reshape", format!("{old:?} ({n} elements) cannot be viewed as {shape:?}"));
        if inferred > 1 || (inferred == 1 && (known == 0 || n % known != 0)) || (inferred == 0 && known != n) {
            return Err(bad());
        }
        let new: Vec<usize> = shape.iter().map(|&d| if d < 0 { n / known } else { d as usize }).collect();
        #[cfg(feature = "wgpu")]
        if let Some(y) = super::on_gpu::reshape(self, &new) {
            return Ok(y);
        }
        // A row-major copy, then the new shape over the same order of elements.
        let out = to_standard(&self.data().view()).into_shape_with_order(IxDyn(&new)).map_err(|_| bad())?;
        Ok(Tensor::from_op(out, "reshape", &[self], move |g, _| {
            vec![Some(to_standard(&g.view()).into_shape_with_order(IxDyn(&old)).expect("same element count"))]
        }))
    }

    /// Flatten dimensions `from..` into one: `(B, C, H, W) -> (B, C·H·W)` for `from = 1`.
    pub fn flatten_from(&self, from: usize) -> Result<Tensor> {
        let s = self.shape();
        let mut new: Vec<isize> = s[..from.min(s.len())].iter().map(|&d| d as isize).collect();
        new.push(-1);
        self.reshape(&new)
    }

    /// Insert a dimension of size 1 at `axis`. PyTorch: `x.unsqueeze(axis)`.
    pub fn unsqueeze(&self, axis: isize) -> Tensor {
        let mut s: Vec<isize> = self.shape().iter().map(|&d| d as isize).collect();
        let a = if axis < 0 { (axis + s.len() as isize + 1) as usize } else { axis as usize };
        s.insert(a.min(s.len()), 1);
        self.reshape(&s).expect("same element count")
    }

    /// Remove a dimension of size 1 at `axis`. PyTorch: `x.squeeze(axis)`.
    pub fn squeeze(&self, axis: isize) -> Result<Tensor> {
        let shape = self.shape();
        let a = normalize_axis(axis, shape.len());
        if shape[a] != 1 {
            return Err(crate::Error::shape("squeeze", format!("dimension {a} of {shape:?} is not 1")));
        }
        let s: Vec<isize> = shape.iter().enumerate().filter(|&(i, _)| i != a).map(|(_, &d)| d as isize).collect();
        self.reshape(&s)
    }

    /// Reorder the axes: `out.shape[i] = x.shape[axes[i]]`. Backward: permute by
    /// the inverse. PyTorch: `x.permute(axes)`.
    ///
    /// Storage is not shared between tensors, so the output is a copy: in
    /// row-major order when the last axis stays last (the heads split of
    /// attention, `(B, T, H, D) -> (B, H, T, D)`, copied row by row), else
    /// the input's order under swapped strides (a transpose for matmul, read
    /// in place by the GEMM's packing).
    pub fn permute(&self, axes: &[usize]) -> Result<Tensor> {
        let nd = self.ndim();
        let mut seen = vec![false; nd];
        if axes.len() != nd || axes.iter().any(|&a| a >= nd || std::mem::replace(&mut seen[a], true)) {
            return Err(crate::Error::shape("permute", format!("{axes:?} is not a permutation of the {nd} axes of {:?}", self.shape())));
        }
        #[cfg(feature = "wgpu")]
        if let Some(y) = super::on_gpu::permute(self, axes) {
            return Ok(y);
        }
        let out = permuted_copy(&self.data(), axes);
        let mut inverse = vec![0; nd];
        for (i, &a) in axes.iter().enumerate() {
            inverse[a] = i;
        }
        Ok(Tensor::from_op(out, "permute", &[self], move |g, _| vec![Some(permuted_copy(g, &inverse))]))
    }

    /// Swap two axes (a strided view). PyTorch: `x.transpose(a, b)`.
    pub fn transpose(&self, a: isize, b: isize) -> Tensor {
        let nd = self.ndim();
        let (a, b) = (normalize_axis(a, nd), normalize_axis(b, nd));
        let mut axes: Vec<usize> = (0..nd).collect();
        axes.swap(a, b);
        self.permute(&axes).expect("a swap is a permutation")
    }

    /// A copy in row-major (C) order: makes later reshapes and kernels cheap.
    pub fn contiguous(&self) -> Tensor {
        // values on the GPU are row-major already
        #[cfg(feature = "wgpu")]
        if crate::backend::resident() && self.is_on_device() {
            return self.clone();
        }
        if self.data().is_standard_layout() {
            return self.clone();
        }
        let out = to_standard(&self.data().view());
        Tensor::from_op(out, "contiguous", &[self], |g, _| vec![Some(to_standard(&g.view()))])
    }

    /// Elements `start..start + len` along `axis`. Backward: the gradient is
    /// placed back into a zero tensor at the same positions. PyTorch: `x.narrow(axis, start, len)`.
    pub fn narrow(&self, axis: isize, start: usize, len: usize) -> Result<Tensor> {
        let shape = self.shape();
        let a = normalize_axis(axis, shape.len());
        if start + len > shape[a] {
            return Err(crate::Error::shape("narrow", format!("{start}..{} is outside dimension {a} of {shape:?}", start + len)));
        }
        #[cfg(feature = "wgpu")]
        if let Some(y) = super::on_gpu::narrow(self, a, start, len) {
            return Ok(y);
        }
        let out = to_standard(&self.data().slice_axis(Axis(a), Slice::from(start..start + len)));
        Ok(Tensor::from_slice_op(out, "narrow", self, (a, start), move |g, _| {
            let mut full = ArrayD::<f32>::zeros(IxDyn(&shape));
            full.slice_axis_mut(Axis(a), Slice::from(start..start + len)).assign(g);
            vec![Some(full)]
        }))
    }

    /// Split `axis` into `n` equal chunks (e.g. fused QKV into Q, K, V). PyTorch: `x.chunk(n, axis)`.
    pub fn chunk(&self, n: usize, axis: isize) -> Result<Vec<Tensor>> {
        let shape = self.shape();
        let a = normalize_axis(axis, shape.len());
        if n == 0 || shape[a] % n != 0 {
            return Err(crate::Error::shape("chunk", format!("dimension {a} of {shape:?} does not split into {n} equal chunks")));
        }
        let size = shape[a] / n;
        (0..n).map(|i| self.narrow(a as isize, i * size, size)).collect()
    }

    /// Join tensors along an existing axis. Backward: each input gets its slice.
    /// PyTorch: `torch.cat(tensors, axis)`.
    pub fn concat(tensors: &[&Tensor], axis: isize) -> Result<Tensor> {
        let first = tensors.first().ok_or_else(|| crate::Error::shape("concat", "no tensors to join"))?;
        let s0 = first.shape();
        let a = normalize_axis(axis, s0.len());
        let mut sizes = Vec::with_capacity(tensors.len());
        for t in tensors {
            let s = t.shape();
            if s.len() != s0.len() || s.iter().zip(&s0).enumerate().any(|(i, (x, y))| i != a && x != y) {
                return Err(crate::Error::shape("concat", format!("{s:?} and {s0:?} differ outside axis {a}")));
            }
            sizes.push(s[a]);
        }
        #[cfg(feature = "wgpu")]
        if let [x, y] = tensors {
            if let Some(joined) = super::on_gpu::concat2(x, y, a) {
                return Ok(joined);
            }
        }
        // Row-major out, one contiguous block of each input per index before the axis:
        // out[o, (pieces), i] with o < prod(shape[..a]) and i < prod(shape[a+1..]).
        // (ndarray::concatenate puts the joined axis outermost in memory, and every
        // consumer of a channel concat then copied it back to row-major.)
        let (outer, inner): (usize, usize) = (s0[..a].iter().product(), s0[a + 1..].iter().product());
        let mut shape = s0.clone();
        shape[a] = sizes.iter().sum();
        let mut values = Vec::with_capacity(shape.iter().product());
        {
            let guards: Vec<_> = tensors.iter().map(|t| t.data()).collect();
            let pieces: Vec<_> = guards.iter().map(|g| standard_layout(g)).collect();
            let pieces: Vec<&[f32]> = pieces.iter().map(|p| p.as_slice().expect("standard layout")).collect();
            for o in 0..outer {
                for (piece, &len) in pieces.iter().zip(&sizes) {
                    values.extend_from_slice(&piece[o * len * inner..(o + 1) * len * inner]);
                }
            }
        }
        let out = ArrayD::from_shape_vec(IxDyn(&shape), values).expect("the joined shape's values");
        Ok(Tensor::from_op(out, "concat", tensors, move |g, _| {
            let mut start = 0;
            sizes
                .iter()
                .map(|&len| {
                    let piece = to_standard(&g.slice_axis(Axis(a), Slice::from(start..start + len)));
                    start += len;
                    Some(piece)
                })
                .collect()
        }))
    }

    /// Join tensors of one shape along a new axis. PyTorch: `torch.stack(tensors, axis)`.
    pub fn stack(tensors: &[&Tensor], axis: usize) -> Result<Tensor> {
        let expanded: Vec<Tensor> = tensors.iter().map(|t| t.unsqueeze(axis as isize)).collect();
        let refs: Vec<&Tensor> = expanded.iter().collect();
        Tensor::concat(&refs, axis as isize).map_err(|e| match e {
            crate::Error::Shape { what, .. } => crate::Error::shape("stack", what),
            other => other,
        })
    }

    /// Repeat size-1 dimensions to reach `shape` (broadcast). Backward: sum back.
    /// PyTorch: `x.expand(shape)`.
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Tensor> {
        let old = self.shape();
        let out = to_standard(
            &self
                .data()
                .broadcast(IxDyn(shape))
                .ok_or_else(|| crate::Error::shape("broadcast_to", format!("{old:?} cannot broadcast to {shape:?}")))?,
        );
        Ok(Tensor::from_op(out, "broadcast_to", &[self], move |g, _| vec![Some(crate::tensor::reduce_to_shape(g.clone(), &old))]))
    }
}

/// `x` with its axes reordered, as a new array (see [`Tensor::permute`]).
fn permuted_copy(x: &ArrayD<f32>, axes: &[usize]) -> ArrayD<f32> {
    let nd = axes.len();
    if nd == 0 || axes[nd - 1] == nd - 1 {
        return to_standard(&x.view().permuted_axes(IxDyn(axes)));
    }
    to_standard(&x.view()).permuted_axes(IxDyn(axes))
}
