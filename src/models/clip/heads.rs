//! Image-text classification heads on top of (frozen) CLIP outputs.
//!
//! Three ways to decide something about an (image, text) pair, from the
//! cheapest to the most expressive:
//! - [`SumHead`]: `W (I_e + T_e) + b` — the two unit embeddings added, one linear layer;
//! - [`ConcatMlpHead`]: `W₂ act(W₁ [I_e; T_e] + b₁) + b₂` — a shallow MLP on both;
//! - [`FusionTransformerHead`]: both token sequences, projected to one width,
//!   read together by a small transformer with a class token (cross-modal attention).

use super::config::HiddenAct;
use super::layers::{layer_norm, normal_linear, ClipEncoder, EncoderSpec};
use crate::nn::{visit_child, Activation, Forward, LayerNorm, Linear, Module};
use crate::tensor::{Rng, Tensor};
use crate::{Error, Result};

fn same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::shape(op, format!("image embeddings {:?} and text embeddings {:?} differ", a.shape(), b.shape())));
    }
    Ok(())
}

/// (a) `logits = W (I_e + T_e) + b`, `(B, E) -> (B, K)`.
pub struct SumHead {
    /// `(K, E)`
    pub classifier: Linear,
}

impl SumHead {
    /// A head for `E`-dimensional embeddings and `K` classes.
    pub fn new(embed_dim: usize, num_classes: usize, rng: &mut Rng) -> Self {
        SumHead { classifier: Linear::new(embed_dim, num_classes, true, rng) }
    }

    /// `image_embeds (B, E)`, `text_embeds (B, E)` -> logits `(B, K)`.
    pub fn forward(&self, image_embeds: &Tensor, text_embeds: &Tensor) -> Result<Tensor> {
        same_shape("sum_head", image_embeds, text_embeds)?;
        self.classifier.forward(&image_embeds.add(text_embeds)?)
    }
}

impl Module for SumHead {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_child("classifier", &self.classifier, f);
    }
}

/// (b) `logits = fc2(GELU(fc1([I_e; T_e])))`, `(B, 2E) -> (B, H) -> (B, K)`.
pub struct ConcatMlpHead {
    /// `(H, 2E)`
    pub fc1: Linear,
    /// `(K, H)`
    pub fc2: Linear,
}

impl ConcatMlpHead {
    /// A head for `E`-dimensional embeddings, `hidden` units and `K` classes.
    pub fn new(embed_dim: usize, hidden: usize, num_classes: usize, rng: &mut Rng) -> Self {
        ConcatMlpHead { fc1: Linear::new(2 * embed_dim, hidden, true, rng), fc2: Linear::new(hidden, num_classes, true, rng) }
    }

    /// `image_embeds (B, E)`, `text_embeds (B, E)` -> logits `(B, K)`.
    pub fn forward(&self, image_embeds: &Tensor, text_embeds: &Tensor) -> Result<Tensor> {
        same_shape("concat_mlp_head", image_embeds, text_embeds)?;
        let x = Tensor::concat(&[image_embeds, text_embeds], 1)?; // (B, 2E)
        let h = Activation::Gelu.apply(&self.fc1.forward(&x)?); // (B, H)
        self.fc2.forward(&h)
    }
}

impl Module for ConcatMlpHead {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_child("fc1", &self.fc1, f);
        visit_child("fc2", &self.fc2, f);
    }
}

/// (c) A small transformer over `[CLS; P_img(image tokens); P_txt(text tokens)]`
/// (plus a learned embedding per modality), classified from the CLS output.
pub struct FusionTransformerHead {
    /// `(D, C_vision)`: image tokens to the fusion width.
    pub image_proj: Linear,
    /// `(D, C_text)`: text tokens to the fusion width.
    pub text_proj: Linear,
    /// `(D)`: added to every image token.
    pub image_type: Tensor,
    /// `(D)`: added to every text token.
    pub text_type: Tensor,
    /// `(D)`: the class token.
    pub cls: Tensor,
    /// Non-causal pre-LN layers.
    pub encoder: ClipEncoder,
    /// LN on the class token.
    pub norm: LayerNorm,
    /// `(K, D)`
    pub classifier: Linear,
}

impl FusionTransformerHead {
    /// `layers` blocks of width `width` with `heads` heads, for the given tower widths and `K` classes.
    pub fn new(vision_width: usize, text_width: usize, width: usize, heads: usize, layers: usize, num_classes: usize, rng: &mut Rng) -> Result<Self> {
        let spec = EncoderSpec { width, intermediate: 4 * width, heads, layers, act: HiddenAct::Gelu, eps: 1e-5 };
        let small = |rng: &mut Rng| Tensor::param(rng.normal_array(&[width]).mapv(|v| 0.02 * v));
        Ok(FusionTransformerHead {
            image_proj: normal_linear(vision_width, width, (vision_width as f32).powf(-0.5), rng),
            text_proj: normal_linear(text_width, width, (text_width as f32).powf(-0.5), rng),
            image_type: small(rng),
            text_type: small(rng),
            cls: small(rng),
            encoder: ClipEncoder::new(&spec, rng)?,
            norm: layer_norm(width, 1e-5),
            classifier: Linear::new(width, num_classes, true, rng),
        })
    }

    /// `image_tokens (B, N, C_v)`, `text_tokens (B, T, C_t)` -> logits `(B, K)`.
    pub fn forward(&self, image_tokens: &Tensor, text_tokens: &Tensor) -> Result<Tensor> {
        let (bi, bt) = (image_tokens.dim(0), text_tokens.dim(0));
        if bi != bt {
            return Err(Error::shape("fusion_head", format!("{bi} images but {bt} texts")));
        }
        let d = self.cls.dim(0);
        let img = self.image_proj.forward(image_tokens)?.add(&self.image_type)?; // (B, N, D)
        let txt = self.text_proj.forward(text_tokens)?.add(&self.text_type)?; // (B, T, D)
        let cls = self.cls.reshape(&[1, 1, d as isize])?.broadcast_to(&[bi, 1, d])?; // (B, 1, D)
        let x = Tensor::concat(&[&cls, &img, &txt], 1)?; // (B, 1+N+T, D)
        let h = self.encoder.forward(&x, None)?; // every token sees every token
        let h = self.norm.forward(&h.narrow(1, 0, 1)?.reshape(&[bi as isize, d as isize])?)?; // (B, D)
        self.classifier.forward(&h)
    }
}

impl Module for FusionTransformerHead {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_child("image_proj", &self.image_proj, f);
        visit_child("text_proj", &self.text_proj, f);
        f("image_type", &self.image_type);
        f("text_type", &self.text_type);
        f("cls", &self.cls);
        visit_child("encoder", &self.encoder, f);
        visit_child("norm", &self.norm, f);
        visit_child("classifier", &self.classifier, f);
    }
}
