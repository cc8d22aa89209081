//! The basic layers, with PyTorch's parameter names and default initialisation.

use super::init;
use super::module::{Forward, Module};
use crate::tensor::{Rng, Tensor};
use crate::{Error, Result};
use std::sync::Mutex;

/// `y = x Wᵀ + b` with `W (out, in)`, `b (out)`. PyTorch: `nn.Linear`.
pub struct Linear {
    /// `(out_features, in_features)`
    pub weight: Tensor,
    /// `(out_features)`, if any.
    pub bias: Option<Tensor>,
}

impl Linear {
    /// PyTorch's default init: `W, b ~ U(-1/√in, 1/√in)`.
    pub fn new(in_features: usize, out_features: usize, bias: bool, rng: &mut Rng) -> Self {
        let bound = 1.0 / (in_features.max(1) as f32).sqrt();
        Linear {
            weight: init::kaiming_uniform(&[out_features, in_features], 5f32.sqrt(), rng),
            bias: bias.then(|| init::uniform(&[out_features], bound, rng)),
        }
    }

    /// A layer from given tensors (e.g. a custom initialisation).
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear { weight, bias }
    }

    /// `in_features`.
    pub fn in_features(&self) -> usize {
        self.weight.shape()[1]
    }

    /// `out_features`.
    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }
}

impl Module for Linear {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        f("weight", &self.weight);
        if let Some(b) = &self.bias {
            f("bias", b);
        }
    }
}

impl Forward for Linear {
    /// `(..., in) -> (..., out)`
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.linear(&self.weight, self.bias.as_ref())
            .map_err(|_| Error::shape("linear", format!("input {:?} does not end in in_features = {}", x.shape(), self.in_features())))
    }
}

/// 2-D convolution layer, `W (OC, C, K, K)`, `b (OC)`. PyTorch: `nn.Conv2d`.
pub struct Conv2d {
    /// `(out_channels, in_channels, k, k)`
    pub weight: Tensor,
    /// `(out_channels)`, if any.
    pub bias: Option<Tensor>,
    /// Stride in both directions.
    pub stride: usize,
    /// Zero padding in both directions.
    pub padding: usize,
}

impl Conv2d {
    /// PyTorch's default init: `W, b ~ U(-1/√(C·K·K), 1/√(C·K·K))`.
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize, stride: usize, padding: usize, bias: bool, rng: &mut Rng) -> Self {
        let fan_in = (in_channels * kernel * kernel).max(1) as f32;
        Conv2d {
            weight: init::kaiming_uniform(&[out_channels, in_channels, kernel, kernel], 5f32.sqrt(), rng),
            bias: bias.then(|| init::uniform(&[out_channels], 1.0 / fan_in.sqrt(), rng)),
            stride,
            padding,
        }
    }
}

impl Module for Conv2d {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        f("weight", &self.weight);
        if let Some(b) = &self.bias {
            f("bias", b);
        }
    }
}

impl Forward for Conv2d {
    /// `(N, C, H, W) -> (N, OC, OH, OW)`
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.conv2d(&self.weight, self.bias.as_ref(), self.stride, self.padding)
    }
}

/// A lookup table `W (num_embeddings, dim)`. PyTorch: `nn.Embedding` (init `N(0, 1)`).
pub struct Embedding {
    /// `(num_embeddings, dim)`
    pub weight: Tensor,
}

impl Embedding {
    /// Rows initialised `N(0, std²)`; PyTorch uses `std = 1`, GPT-style models 0.02.
    pub fn new(num_embeddings: usize, dim: usize, std: f32, rng: &mut Rng) -> Self {
        Embedding { weight: init::normal(&[num_embeddings, dim], std, rng) }
    }

    /// `ids` of shape `shape` -> `(shape..., dim)`; an error names an id beyond the table.
    pub fn forward(&self, ids: &[usize], shape: &[usize]) -> Result<Tensor> {
        Tensor::embedding(&self.weight, ids, shape)
    }
}

impl Module for Embedding {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        f("weight", &self.weight);
    }
}

/// Layer normalisation over the last dimension. PyTorch: `nn.LayerNorm` (γ = 1, β = 0).
pub struct LayerNorm {
    /// γ, `(dim)`
    pub weight: Tensor,
    /// β, `(dim)`
    pub bias: Tensor,
    /// Added to the variance.
    pub eps: f32,
}

impl LayerNorm {
    /// `eps = 1e-5` as PyTorch.
    pub fn new(dim: usize) -> Self {
        LayerNorm { weight: init::ones(&[dim]), bias: init::zeros(&[dim]), eps: 1e-5 }
    }
}

impl Module for LayerNorm {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        f("weight", &self.weight);
        f("bias", &self.bias);
    }
}

impl Forward for LayerNorm {
    /// `(..., dim) -> (..., dim)`
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.layer_norm(&self.weight, &self.bias, self.eps)
    }
}

/// Group normalisation over channel groups. PyTorch: `nn.GroupNorm`.
pub struct GroupNorm {
    /// Number of channel groups.
    pub groups: usize,
    /// γ, `(channels)`
    pub weight: Tensor,
    /// β, `(channels)`
    pub bias: Tensor,
    /// Added to the variance.
    pub eps: f32,
}

impl GroupNorm {
    /// Errors when `channels` is not divisible by `groups`.
    pub fn new(groups: usize, channels: usize) -> Result<Self> {
        if groups == 0 || channels % groups != 0 {
            return Err(Error::Config(format!("group_norm: {channels} channels do not split into {groups} groups")));
        }
        Ok(GroupNorm { groups, weight: init::ones(&[channels]), bias: init::zeros(&[channels]), eps: 1e-5 })
    }

    /// `SiLU(GroupNorm(x))`, the U-Net's pre-activation, as one op
    /// ([`Tensor::group_norm_silu`]): `(N, C, ...) -> (N, C, ...)`.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        x.group_norm_silu(self.groups, &self.weight, &self.bias, self.eps)
    }
}

impl Module for GroupNorm {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        f("weight", &self.weight);
        f("bias", &self.bias);
    }
}

impl Forward for GroupNorm {
    /// `(N, C, ...) -> (N, C, ...)`
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.group_norm(self.groups, &self.weight, &self.bias, self.eps)
    }
}

/// Dropout with its own seeded generator; the identity unless `training`.
pub struct Dropout {
    /// Probability of zeroing an element.
    pub p: f32,
    rng: Mutex<Rng>,
}

impl Dropout {
    /// Errors when `p` is not in `[0, 1)`.
    pub fn new(p: f32, seed: u64) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::Config(format!("dropout probability {p} must be in [0, 1)")));
        }
        Ok(Dropout { p, rng: Mutex::new(Rng::new(seed)) })
    }

    /// Apply dropout when `training`.
    pub fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        let mut rng = self.rng.lock().expect("dropout rng lock");
        x.dropout(self.p, training, &mut rng)
    }
}

impl Module for Dropout {
    fn visit(&self, _: &mut dyn FnMut(&str, &Tensor)) {}
}
