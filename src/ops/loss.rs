//! Losses and similarities.

use super::elementwise::logistic;
use super::kernels;
use crate::tensor::Tensor;
use crate::Result;
use ndarray::{ArrayD, Axis, Ix2};

impl Tensor {
    /// Cross entropy between `logits (N, K)` and class `targets` (N), averaged
    /// over the rows whose target is not `ignore_index`.
    ///
    /// With label smoothing ε the target distribution is `q = (1-ε)·onehot + ε/K`:
    /// `loss_i = -Σ_k q_k log softmax(x_i)_k`, and `dloss/dx_i = (softmax(x_i) - q) / count`.
    /// PyTorch: `F.cross_entropy(logits, targets, ignore_index=..., label_smoothing=ε)`.
    pub fn cross_entropy_with(&self, targets: &[usize], ignore_index: Option<usize>, label_smoothing: f32) -> Result<Tensor> {
        let shape = self.shape();
        if shape.len() != 2 || shape[0] != targets.len() {
            return Err(crate::Error::shape("cross_entropy", format!("logits {shape:?} need shape (N, K) with N = {} targets", targets.len())));
        }
        let k = shape[1];
        if let Some((i, &t)) = targets.iter().enumerate().find(|&(_, &t)| Some(t) != ignore_index && t >= k) {
            return Err(crate::Error::shape("cross_entropy", format!("target {t} at row {i} is not a class index below {k}")));
        }
        if !(0.0..=1.0).contains(&label_smoothing) {
            return Err(crate::Error::Config(format!("label_smoothing {label_smoothing} must be in [0, 1]")));
        }
        #[cfg(feature = "wgpu")]
        if ignore_index.is_none() && label_smoothing == 0.0 {
            if let Some(loss) = super::on_gpu::cross_entropy(self, targets) {
                return Ok(loss);
            }
        }
        let logits = self.data().view().into_dimensionality::<Ix2>().expect("checked 2-D").to_owned();
        let mut probs = logits.clone();
        let mut total = 0.0f64;
        let mut count = 0usize;
        for (i, mut row) in probs.axis_iter_mut(Axis(0)).enumerate() {
            let m = row.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
            let lse = m + row.iter().map(|&v| (v - m).exp()).sum::<f32>().ln();
            if Some(targets[i]) != ignore_index {
                count += 1;
                let smooth = label_smoothing as f64 / k as f64;
                for (j, &v) in row.iter().enumerate() {
                    let q = if j == targets[i] { 1.0 - label_smoothing as f64 + smooth } else { smooth };
                    total -= q * (v - lse) as f64; // -q_k log p_k
                }
            }
            row.mapv_inplace(|v| (v - lse).exp());
        }
        let denom = count.max(1) as f32;
        let out = ArrayD::from_elem(ndarray::IxDyn(&[]), if count == 0 { f32::NAN } else { (total / count as f64) as f32 });
        let targets = targets.to_vec();
        Ok(Tensor::from_op(out, "cross_entropy", &[self], move |g, _| {
            let g = *g.iter().next().expect("scalar");
            let mut d = probs.clone();
            let smooth = label_smoothing / k as f32;
            for (i, mut row) in d.axis_iter_mut(Axis(0)).enumerate() {
                if Some(targets[i]) == ignore_index {
                    row.fill(0.0);
                    continue;
                }
                for (j, v) in row.iter_mut().enumerate() {
                    let q = if j == targets[i] { 1.0 - label_smoothing + smooth } else { smooth };
                    *v = g * (*v - q) / denom;
                }
            }
            vec![Some(d.into_dyn())]
        }))
    }

    /// Cross entropy with no ignored index and no smoothing.
    pub fn cross_entropy(&self, targets: &[usize]) -> Result<Tensor> {
        self.cross_entropy_with(targets, None, 0.0)
    }

    /// Mean squared error `mean((a - b)²)`. PyTorch: `F.mse_loss(a, b)`.
    ///
    /// Errors when the shapes differ: PyTorch would broadcast (with a warning),
    /// and a prediction `(N, 1)` against a target `(N)` would silently become
    /// an `(N, N)` comparison.
    pub fn mse(&self, target: &Tensor) -> Result<Tensor> {
        if self.shape() != target.shape() {
            return Err(crate::Error::shape("mse", format!("prediction {:?} and target {:?} differ", self.shape(), target.shape())));
        }
        Ok(self.sub(target)?.square().mean())
    }

    /// Binary cross entropy on logits, averaged:
    /// `mean(max(x, 0) - x·y + ln(1 + e^{-|x|}))` (stable form).
    /// `d/dx = (σ(x) - y)/n`, `d/dy = -x/n`. PyTorch: `F.binary_cross_entropy_with_logits(x, y)`.
    pub fn bce_with_logits(&self, target: &Tensor) -> Result<Tensor> {
        if self.shape() != target.shape() {
            return Err(crate::Error::shape("bce_with_logits", format!("logits {:?} and targets {:?} differ", self.shape(), target.shape())));
        }
        #[cfg(feature = "wgpu")]
        if let Some(y) = super::on_gpu::bce_with_logits(self, target) {
            return Ok(y);
        }
        let n = self.len().max(1) as f32;
        let total: f64 = {
            // the terms in parallel chunks (vectorised: exp and ln(1 + u) from arithmetic), summed in order
            let (x, y) = (self.data(), target.data());
            let terms = crate::with_mul_add!(M => kernels::map2_as::<M>(&x, &y, #[inline(always)] |x, y| {
                x.max(0.0) - x * y + kernels::ln_1p_unit::<M>(kernels::exp::<M>(-x.abs())) // max(x, 0) - x y + ln(1 + e^{-|x|})
            }));
            terms.iter().map(|&t| t as f64).sum()
        };
        let out = ArrayD::from_elem(ndarray::IxDyn(&[]), (total / n as f64) as f32);
        let (xc, yc) = (self.clone(), target.clone());
        Ok(Tensor::from_op(out, "bce_with_logits", &[self, target], move |g, _| {
            let g = *g.iter().next().expect("scalar");
            let (x, y) = (xc.data(), yc.data());
            let dx = crate::with_mul_add!(M => kernels::map2_as::<M>(&x, &y, #[inline(always)] move |x, y| g * (logistic::<M>(x) - y) / n));
            let dy = yc.requires_grad().then(|| x.mapv(|x| -g * x / n));
            vec![Some(dx), dy]
        }))
    }

    /// `y = x / d` with `d = max(‖x‖₂, ε)` along `axis`.
    /// PyTorch: `F.normalize(x, dim=axis, eps=ε)`.
    ///
    /// Backward: where `‖x‖ ≥ ε`, `y` is `x` projected on the unit sphere and
    /// `dx = (g - y Σ(g ⊙ y)) / d`; where the norm is clamped, `d = ε` is a
    /// constant and `dx = g / ε`. (Written as one op: through `sqrt` the
    /// gradient of an all-zero vector would be `0 · ∞ = NaN`.)
    pub fn l2_normalize(&self, axis: isize, eps: f32) -> Result<Tensor> {
        let nd = self.ndim();
        let a = check_axis("l2_normalize", axis, nd)?;
        let (y, norm) = {
            let x = self.data();
            let norm = x.map_axis(Axis(a), |lane| lane.iter().map(|&v| v * v).sum::<f32>().sqrt()).insert_axis(Axis(a));
            let d = norm.mapv(|n| n.max(eps));
            (&*x / &d, norm)
        };
        Ok(Tensor::from_op(y, "l2_normalize", &[self], move |g, y| {
            let gy = (g * y).sum_axis(Axis(a)).insert_axis(Axis(a)); // Σ g ⊙ y
            let mut dx = ArrayD::<f32>::zeros(g.raw_dim());
            ndarray::Zip::from(&mut dx).and(g).and(y).and_broadcast(&gy).and_broadcast(&norm).for_each(|dx, &g, &y, &gy, &n| {
                *dx = if n >= eps { (g - y * gy) / n } else { g / eps };
            });
            vec![Some(dx)]
        }))
    }

    /// Cosine similarity along `axis`: `Σ (a / max(‖a‖, ε)) ⊙ (b / max(‖b‖, ε))`,
    /// `a` and `b` first broadcast to one shape. This is PyTorch 2.x's formula
    /// (each norm clamped on its own; PyTorch 1.x clamped the product). For a
    /// vector shorter than ε the gradient is that of [`Tensor::l2_normalize`]
    /// (ε a constant), where PyTorch differentiates the unclamped norm.
    /// PyTorch: `F.cosine_similarity(a, b, dim=axis, eps=ε)`.
    pub fn cosine_similarity(&self, other: &Tensor, axis: isize, eps: f32) -> Result<Tensor> {
        let shape = crate::tensor::broadcast_shapes("cosine_similarity", &self.shape(), &other.shape())?;
        let a = self.broadcast_to(&shape)?.l2_normalize(axis, eps)?;
        let b = other.broadcast_to(&shape)?.l2_normalize(axis, eps)?;
        a.mul(&b)?.sum_axes(&[axis], false)
    }
}

/// `axis` as an index below `ndim`, or a shape error naming `op`.
fn check_axis(op: &'static str, axis: isize, ndim: usize) -> Result<usize> {
    let a = if axis < 0 { axis + ndim as isize } else { axis };
    if a < 0 || a as usize >= ndim {
        return Err(crate::Error::shape(op, format!("axis {axis} out of range for a tensor with {ndim} dimensions")));
    }
    Ok(a as usize)
}
