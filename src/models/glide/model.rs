//! GLIDE's text-conditional U-Net (Nichol et al. 2021, §2.3 and Appendix A).
//!
//! The caption enters chapter 08's U-Net through both of its hooks:
//!
//! ```text
//! emb     = MLP(sinusoid(t)) + W_cond h_eot         every residual block sees the caption's summary
//! K, V    = [h W_K^ctx ; x W_K], [h W_V^ctx ; x W_V]  every attention layer sees the caption's tokens
//! ```
//!
//! GLIDE's 1.2 B-parameter text transformer (24 blocks of width 2048) becomes here two
//! blocks of width 64; each attention layer's own `context_kv` projection maps the
//! 64-wide tokens to its keys and values.

use std::path::Path;

use super::text::{TextEncoder, TextFeatures};
use crate::data::DatasetName;
use crate::io::checkpoint::{self, Checkpoint};
use crate::models::clip::{ClipTextConfig, HiddenAct};
use crate::models::diffusion::{UNet, UNetConfig};
use crate::nn::{visit_child, Forward, Linear, Module};
use crate::tensor::{Rng, Tensor};
use crate::{Error, Result};

/// The two halves of a [`Glide`]: the U-Net (whose `context_dim` is the text width) and the text encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct GlideConfig {
    /// The denoising U-Net; `context_dim` must be `Some(text.hidden_size)`.
    pub unet: UNetConfig,
    /// The text transformer; `max_position_embeddings` is the caption's context length.
    pub text: ClipTextConfig,
}

impl GlideConfig {
    /// The chapter's model for 28x28 MNIST captions (`weights/glide_mnist.safetensors`):
    /// chapter 08's U-Net (16/32/32 channels, attention at 7x7 and in the middle) with
    /// 64-wide context tokens, and a 2-block, 64-wide, 4-head text transformer over 12
    /// tokens of the toy CLIP's 340-token BPE (`weights/clip_mnist.tokenizer.json`).
    pub fn mnist() -> Self {
        Self::with_text(UNetConfig::mnist(), 340, 12)
    }

    // ANCHOR: shapes_config
    /// The model for 32x32 RGB Shapes captions (`weights/glide_shapes.safetensors`): chapter
    /// 08's U-Net at CIFAR size (3 channels, 16/32/32 channels at 32/16/8, attention at 8x8
    /// and in the middle) and the same text transformer over 16 tokens of the Shapes toy
    /// CLIP's 335-token BPE (`weights/clip_shapes.tokenizer.json`): the longest caption,
    /// three objects ("a small red circle, a large cyan square and a small blue triangle"),
    /// is 14 words (every word and the comma one token) plus SOT and EOT.
    pub fn shapes() -> Self {
        Self::with_text(UNetConfig::cifar10(), 335, 16)
    }
    // ANCHOR_END: shapes_config

    /// The chapter's model for `dataset` (MNIST or Shapes); other data sets have no captions
    /// the chapter trains on, an error that says so.
    pub fn for_dataset(dataset: DatasetName) -> Result<Self> {
        match dataset {
            DatasetName::Mnist => Ok(Self::mnist()),
            DatasetName::Shapes => Ok(Self::shapes()),
            other => Err(Error::Config(format!("glide: no model for --dataset {} (captioned MNIST or Shapes)", other.as_str()))),
        }
    }

    /// `unet` with context tokens from a 2-block, 64-wide, 4-head text transformer over
    /// `context_length` tokens of a `vocab_size`-token BPE (end-of-text id 2).
    fn with_text(unet: UNetConfig, vocab_size: usize, context_length: usize) -> Self {
        let text = ClipTextConfig {
            hidden_size: 64,
            intermediate_size: 256,
            num_attention_heads: 4,
            num_hidden_layers: 2,
            max_position_embeddings: context_length,
            vocab_size,
            hidden_act: HiddenAct::QuickGelu,
            layer_norm_eps: 1e-5,
            eos_token_id: 2,
            pool_at_first_eos: true,
        };
        GlideConfig { unet: UNetConfig { context_dim: Some(text.hidden_size), ..unet }, text }
    }
}

/// The text encoder, the projection of its summary to the timestep embedding, and the U-Net.
/// Parameter names `text.*`, `cond_proj.*`, `unet.*`.
pub struct Glide {
    /// The caption encoder.
    pub text: TextEncoder,
    /// `W_cond`: `Linear(C_text, C_emb)`, the end-of-text feature to the embedding's width.
    pub cond_proj: Linear,
    /// Chapter 08's U-Net, its attention layers built with the text width as context width.
    pub unet: UNet,
    /// The hyper-parameters.
    pub config: GlideConfig,
}

impl Glide {
    /// A randomly initialised model; errors name the value that does not fit (a U-Net
    /// whose context width is not the text width, and whatever either half refuses).
    pub fn new(config: GlideConfig, rng: &mut Rng) -> Result<Self> {
        if config.unet.context_dim != Some(config.text.hidden_size) {
            return Err(Error::Config(format!(
                "glide: the U-Net's context_dim = {:?} must be Some(text hidden_size = {})",
                config.unet.context_dim, config.text.hidden_size
            )));
        }
        let text = TextEncoder::new(&config.text, rng)?;
        let cond_proj = Linear::new(config.text.hidden_size, config.unet.emb_dim(), true, rng);
        let unet = UNet::new(config.unet.clone(), rng)?;
        Ok(Glide { text, cond_proj, unet, config })
    }

    // ANCHOR: forward
    /// `x_t (B, C, H, W)` at integer timesteps `t` (B), with the captions' encoded `text` (B rows).
    pub fn forward(&self, x: &Tensor, t: &[usize], text: &TextFeatures) -> Result<Tensor> {
        if text.tokens.dim(0) != x.dim(0) {
            return Err(Error::shape("glide", format!("{} captions for a batch of {} images", text.tokens.dim(0), x.dim(0))));
        }
        let cond = self.cond_proj.forward(&text.pooled)?; // (B, C_emb) = W_cond h_eot
        let t: Vec<f32> = t.iter().map(|&t| t as f32).collect();
        self.unet.forward(x, &t, Some(&cond), Some(text.context())) // (B, C, H, W)
    }
    // ANCHOR_END: forward

    /// [`Glide::forward`] from token ids `(B, S)` (encoded here, so gradients reach the text encoder).
    pub fn forward_ids(&self, x: &Tensor, t: &[usize], ids: &ndarray::Array2<u32>) -> Result<Tensor> {
        self.forward(x, t, &self.text.encode(ids)?)
    }

    // ANCHOR: warm_start
    /// Copies chapter 08's U-Net weights (`unet.*` of `weights/ddpm_mnist.safetensors`) into
    /// this U-Net. Only the attention layers' `context_kv` projections, which chapter 08's
    /// U-Net does not have, stay as initialised; its class embedding is not used. Any other
    /// missing or mis-shaped weight is an error naming it. Returns how many tensors were copied.
    pub fn warm_start_unet(&self, ck: &Checkpoint) -> Result<usize> {
        let mut copied = 0;
        for (name, p) in self.unet.named_parameters() {
            match ck.tensors.get(&format!("unet.{name}")) {
                Some(a) if a.shape() == p.shape().as_slice() => {
                    p.assign(a.clone())?;
                    copied += 1;
                }
                Some(a) => return Err(Error::Checkpoint(format!("{}: `unet.{name}` has shape {:?}, the GLIDE U-Net expects {:?}", ck.path.display(), a.shape(), p.shape()))),
                None if name.contains("context_kv") => {}
                None => return Err(Error::Checkpoint(format!("{}: missing `unet.{name}` (is it chapter 08's U-Net of the same size?)", ck.path.display()))),
            }
        }
        Ok(copied)
    }
    // ANCHOR_END: warm_start

    /// A model of `config` with the weights of `path` (every name and shape checked).
    pub fn load(path: &Path, config: GlideConfig) -> Result<Self> {
        let model = Glide::new(config, &mut Rng::new(0))?;
        checkpoint::load(path)?.load_into(&model, &[])?;
        Ok(model)
    }

    /// A model of [`GlideConfig::mnist`] with the weights of `path` (every name and shape checked).
    pub fn load_mnist(path: &Path) -> Result<Self> {
        Self::load(path, GlideConfig::mnist())
    }
}

impl Module for Glide {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_child("text", &self.text, f);
        visit_child("cond_proj", &self.cond_proj, f);
        visit_child("unet", &self.unet, f);
    }
}

/// Loads shipped GLIDE weights of [`GlideConfig::mnist`] and the tokenizer stored beside them
/// (`glide_mnist.safetensors` -> `glide_mnist.tokenizer.json`); errors when the tokenizer's
/// vocabulary is not the text encoder's.
#[cfg(feature = "trained-bpe")]
pub fn load_toy(weights: &Path) -> Result<(Glide, crate::tokenizer::TrainedBpe)> {
    load_toy_for(DatasetName::Mnist, weights)
}

/// [`load_toy`] for the Shapes model ([`GlideConfig::shapes`], `weights/glide_shapes.safetensors`
/// with `glide_shapes.tokenizer.json` beside it).
#[cfg(feature = "trained-bpe")]
pub fn load_toy_shapes(weights: &Path) -> Result<(Glide, crate::tokenizer::TrainedBpe)> {
    load_toy_for(DatasetName::Shapes, weights)
}

/// Shipped GLIDE weights of [`GlideConfig::for_dataset`] and the tokenizer stored beside them;
/// errors when the tokenizer's vocabulary is not the text encoder's.
#[cfg(feature = "trained-bpe")]
pub fn load_toy_for(dataset: DatasetName, weights: &Path) -> Result<(Glide, crate::tokenizer::TrainedBpe)> {
    use crate::tokenizer::TextTokenizer;
    let path = crate::models::clip::load::tokenizer_path_for(weights);
    let tokenizer = crate::tokenizer::TrainedBpe::load(&path)?;
    let model = Glide::load(weights, GlideConfig::for_dataset(dataset)?)?;
    if tokenizer.vocab_size() != model.config.text.vocab_size || tokenizer.eot() != model.config.text.eos_token_id {
        return Err(Error::Config(format!(
            "{}: the tokenizer has {} tokens and EOT id {}, the text encoder vocab_size = {} and eos_token_id = {}",
            path.display(),
            tokenizer.vocab_size(),
            tokenizer.eot(),
            model.config.text.vocab_size,
            model.config.text.eos_token_id
        )));
    }
    Ok((model, tokenizer))
}
