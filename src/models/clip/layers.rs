//! The encoder layer shared by CLIP's two towers, with Hugging Face's names.
//!
//! A pre-LN transformer block (Radford et al. 2021 follow GPT-2 here):
//!
//! ```text
//! h = x + out_proj(Attention(q_proj(LN₁(x)), k_proj(LN₁(x)), v_proj(LN₁(x))))
//! y = h + fc2(act(fc1(LN₂(h))))
//! ```
//!
//! Parameter names follow `transformers.models.clip.modeling_clip`:
//! `self_attn.{q_proj,k_proj,v_proj,out_proj}`, `layer_norm1`, `mlp.{fc1,fc2}`,
//! `layer_norm2`, so that a Hugging Face `model.safetensors` loads name for name.

use ndarray::ArrayD;

use super::config::HiddenAct;
use crate::nn::attention::scaled_dot_product_attention;
use crate::nn::{visit_child, visit_list, Activation, Forward, LayerNorm, Linear, Module};
use crate::tensor::{Rng, Tensor};
use crate::{Error, Result};

/// Multi-head self-attention with separate q, k, v projections. HF: `CLIPAttention`.
pub struct ClipAttention {
    /// `W_q (C, C)`, `b_q (C)`.
    pub q_proj: Linear,
    /// `W_k (C, C)`, `b_k (C)`.
    pub k_proj: Linear,
    /// `W_v (C, C)`, `b_v (C)`.
    pub v_proj: Linear,
    /// `W_o (C, C)`, `b_o (C)`.
    pub out_proj: Linear,
    /// Number of heads `H`; each has width `D = C / H`.
    pub num_heads: usize,
}

impl ClipAttention {
    /// Random init as CLIP's: projections `N(0, (C^-½)²)`, biases 0.
    pub fn new(width: usize, num_heads: usize, rng: &mut Rng) -> Self {
        let proj = |rng: &mut Rng| normal_linear(width, width, (width as f32).powf(-0.5), rng);
        ClipAttention { q_proj: proj(rng), k_proj: proj(rng), v_proj: proj(rng), out_proj: proj(rng), num_heads }
    }

    /// `(B, T, C) -> (B, H, T, D)`
    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let s = x.shape();
        let (b, t, c) = (s[0], s[1], s[2]);
        let d = c / self.num_heads;
        x.reshape(&[b as isize, t as isize, self.num_heads as isize, d as isize])?.permute(&[0, 2, 1, 3])
    }

    /// `x (B, T, C)`, `mask` broadcastable to `(B, H, T, T)` (true = blocked) -> `(B, T, C)`.
    pub fn forward(&self, x: &Tensor, mask: Option<&ArrayD<bool>>) -> Result<Tensor> {
        let s = x.shape();
        let (b, t, c) = (s[0], s[1], s[2]);
        let q = self.split_heads(&self.q_proj.forward(x)?)?; // (B, H, T, D)
        let k = self.split_heads(&self.k_proj.forward(x)?)?; // (B, H, T, D)
        let v = self.split_heads(&self.v_proj.forward(x)?)?; // (B, H, T, D)
        let (o, _) = scaled_dot_product_attention(&q, &k, &v, mask)?; // (B, H, T, D) = softmax(QKᵀ/√D + M) V
        let o = o.permute(&[0, 2, 1, 3])?.reshape(&[b as isize, t as isize, c as isize])?; // (B, T, C)
        self.out_proj.forward(&o)
    }
}

impl Module for ClipAttention {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_child("q_proj", &self.q_proj, f);
        visit_child("k_proj", &self.k_proj, f);
        visit_child("v_proj", &self.v_proj, f);
        visit_child("out_proj", &self.out_proj, f);
    }
}

/// `fc2(act(fc1(x)))`, `C -> I -> C`. HF: `CLIPMLP`.
pub struct ClipMlp {
    /// `(I, C)`
    pub fc1: Linear,
    /// `(C, I)`
    pub fc2: Linear,
    /// QuickGELU or GELU.
    pub activation: Activation,
}

impl ClipMlp {
    /// `(..., C) -> (..., C)`
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.activation.apply(&self.fc1.forward(x)?); // (..., I)
        self.fc2.forward(&h)
    }
}

impl Module for ClipMlp {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_child("fc1", &self.fc1, f);
        visit_child("fc2", &self.fc2, f);
    }
}

/// One pre-LN block. HF: `CLIPEncoderLayer`.
pub struct ClipEncoderLayer {
    /// Attention sub-layer.
    pub self_attn: ClipAttention,
    /// LN before attention.
    pub layer_norm1: LayerNorm,
    /// MLP sub-layer.
    pub mlp: ClipMlp,
    /// LN before the MLP.
    pub layer_norm2: LayerNorm,
}

/// Hyper-parameters of one tower's encoder.
#[derive(Debug, Clone, Copy)]
pub struct EncoderSpec {
    /// Width `C`.
    pub width: usize,
    /// MLP hidden width `I`.
    pub intermediate: usize,
    /// Heads `H`.
    pub heads: usize,
    /// Number of layers.
    pub layers: usize,
    /// MLP non-linearity.
    pub act: HiddenAct,
    /// Layer-norm ε.
    pub eps: f32,
}

/// A linear layer with weight `N(0, std²)` and zero bias (CLIP's initialisation).
pub(crate) fn normal_linear(input: usize, output: usize, std: f32, rng: &mut Rng) -> Linear {
    let w = Tensor::param(rng.normal_array(&[output, input]).mapv(|v| v * std));
    Linear::from_tensors(w, Some(Tensor::param(ArrayD::zeros(ndarray::IxDyn(&[output])))))
}

/// A layer norm with the given ε.
pub(crate) fn layer_norm(width: usize, eps: f32) -> LayerNorm {
    let mut ln = LayerNorm::new(width);
    ln.eps = eps;
    ln
}

impl ClipEncoderLayer {
    /// Random init as CLIP's (`attn std = C^-½`, `fc1 std = (2C)^-½`, `fc2 std = C^-½`, all
    /// scaled down by `(2L)^-½` for the residual branches as OpenAI's `initialize_parameters`).
    pub fn new(spec: &EncoderSpec, rng: &mut Rng) -> Self {
        let c = spec.width as f32;
        let depth = (2.0 * spec.layers as f32).powf(-0.5);
        let mut self_attn = ClipAttention::new(spec.width, spec.heads, rng);
        self_attn.out_proj = normal_linear(spec.width, spec.width, c.powf(-0.5) * depth, rng);
        let mlp = ClipMlp {
            fc1: normal_linear(spec.width, spec.intermediate, (2.0 * c).powf(-0.5), rng),
            fc2: normal_linear(spec.intermediate, spec.width, c.powf(-0.5) * depth, rng),
            activation: spec.act.activation(),
        };
        ClipEncoderLayer {
            self_attn,
            layer_norm1: layer_norm(spec.width, spec.eps),
            mlp,
            layer_norm2: layer_norm(spec.width, spec.eps),
        }
    }

    /// `(B, T, C) -> (B, T, C)`
    pub fn forward(&self, x: &Tensor, mask: Option<&ArrayD<bool>>) -> Result<Tensor> {
        let h = x.add(&self.self_attn.forward(&self.layer_norm1.forward(x)?, mask)?)?; // x + Attn(LN₁ x)
        h.add(&self.mlp.forward(&self.layer_norm2.forward(&h)?)?) // h + MLP(LN₂ h)
    }
}

impl Module for ClipEncoderLayer {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_child("self_attn", &self.self_attn, f);
        visit_child("layer_norm1", &self.layer_norm1, f);
        visit_child("mlp", &self.mlp, f);
        visit_child("layer_norm2", &self.layer_norm2, f);
    }
}

/// A stack of layers, parameters `layers.0.*`, `layers.1.*`. HF: `CLIPEncoder`.
pub struct ClipEncoder {
    /// The blocks, applied in order.
    pub layers: Vec<ClipEncoderLayer>,
}

impl ClipEncoder {
    /// `spec.layers` freshly initialised blocks.
    pub fn new(spec: &EncoderSpec, rng: &mut Rng) -> Result<Self> {
        if spec.heads == 0 || !spec.width.is_multiple_of(spec.heads) {
            return Err(Error::Config(format!("clip encoder: width {} does not split into {} heads", spec.width, spec.heads)));
        }
        Ok(ClipEncoder { layers: (0..spec.layers).map(|_| ClipEncoderLayer::new(spec, rng)).collect() })
    }

    /// `(B, T, C) -> (B, T, C)`
    pub fn forward(&self, x: &Tensor, mask: Option<&ArrayD<bool>>) -> Result<Tensor> {
        let mut h = x.clone();
        for layer in &self.layers {
            h = layer.forward(&h, mask)?;
        }
        Ok(h)
    }
}

impl Module for ClipEncoder {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_list("layers", &self.layers, f);
    }
}
