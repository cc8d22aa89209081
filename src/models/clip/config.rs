//! CLIP's hyper-parameters, with the field names of Hugging Face's `config.json`.
//!
//! A Hugging Face CLIP checkpoint folder holds `config.json`:
//!
//! ```text
//! { "projection_dim": 512, "logit_scale_init_value": 2.6592,
//!   "text_config":   { "hidden_size": 512, "num_hidden_layers": 12, "vocab_size": 49408, ... },
//!   "vision_config": { "hidden_size": 768, "patch_size": 32, "image_size": 224, ... } }
//! ```
//!
//! Missing fields take the defaults of `transformers.CLIPTextConfig` /
//! `CLIPVisionConfig` (those of ViT-B/32). Every value is checked by
//! [`ClipConfig::validate`], whose errors name the field and its value.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::nn::Activation;
use crate::{Error, Result};

/// The MLP's non-linearity: `quick_gelu` (the original CLIP) or `gelu` (exact, erf).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HiddenAct {
    /// `x σ(1.702 x)`, what OpenAI trained CLIP with.
    QuickGelu,
    /// `x Φ(x)`, exact GELU.
    Gelu,
}

impl HiddenAct {
    /// The activation as a layer.
    pub fn activation(self) -> Activation {
        match self {
            HiddenAct::QuickGelu => Activation::QuickGelu,
            HiddenAct::Gelu => Activation::Gelu,
        }
    }
}

fn default_quick_gelu() -> HiddenAct {
    HiddenAct::QuickGelu
}
fn default_eps() -> f64 {
    1e-5
}

/// The text transformer. Hugging Face: `CLIPTextConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipTextConfig {
    /// Width of the residual stream `C`.
    #[serde(default = "d_text_hidden")]
    pub hidden_size: usize,
    /// Width of the MLP's hidden layer (4C in CLIP).
    #[serde(default = "d_text_inter")]
    pub intermediate_size: usize,
    /// Attention heads; `hidden_size` must split evenly among them.
    #[serde(default = "d_text_heads")]
    pub num_attention_heads: usize,
    /// Encoder layers.
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    /// The context length: at most this many tokens (77 in CLIP).
    #[serde(default = "d_context")]
    pub max_position_embeddings: usize,
    /// Number of token ids.
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    /// The MLP non-linearity.
    #[serde(default = "default_quick_gelu")]
    pub hidden_act: HiddenAct,
    /// ε of every layer norm.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// The end-of-text id: the text is summarised by the hidden state at this token.
    /// Hugging Face's rule: `eos_token_id == 2` (old configs) means "the position of
    /// the largest id", which is EOT (49407) in CLIP's vocabulary.
    #[serde(default = "d_eos")]
    pub eos_token_id: u32,
    /// This crate's extension (not in Hugging Face's files): pool at the first
    /// `eos_token_id` even when it is 2, for toy tokenizers whose EOT is id 2.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pool_at_first_eos: bool,
}

fn d_text_hidden() -> usize {
    512
}
fn d_text_inter() -> usize {
    2048
}
fn d_text_heads() -> usize {
    8
}
fn d_layers() -> usize {
    12
}
fn d_context() -> usize {
    77
}
fn d_vocab() -> usize {
    49408
}
fn d_eos() -> u32 {
    49407
}

/// The image transformer (a ViT). Hugging Face: `CLIPVisionConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipVisionConfig {
    /// Width of the residual stream `C`.
    #[serde(default = "d_vis_hidden")]
    pub hidden_size: usize,
    /// Width of the MLP's hidden layer.
    #[serde(default = "d_vis_inter")]
    pub intermediate_size: usize,
    /// Attention heads.
    #[serde(default = "d_vis_heads")]
    pub num_attention_heads: usize,
    /// Encoder layers.
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    /// Side of the (square) input image in pixels.
    #[serde(default = "d_image")]
    pub image_size: usize,
    /// Side of one patch; `image_size` must be a multiple of it.
    #[serde(default = "d_patch")]
    pub patch_size: usize,
    /// Input channels (3 for RGB, 1 for MNIST).
    #[serde(default = "d_channels")]
    pub num_channels: usize,
    /// The MLP non-linearity.
    #[serde(default = "default_quick_gelu")]
    pub hidden_act: HiddenAct,
    /// ε of every layer norm.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

fn d_vis_hidden() -> usize {
    768
}
fn d_vis_inter() -> usize {
    3072
}
fn d_vis_heads() -> usize {
    12
}
fn d_image() -> usize {
    224
}
fn d_patch() -> usize {
    32
}
fn d_channels() -> usize {
    3
}

/// The whole model. Hugging Face: `CLIPConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipConfig {
    /// The text tower.
    pub text_config: ClipTextConfig,
    /// The image tower.
    pub vision_config: ClipVisionConfig,
    /// Width `E` of the shared embedding space.
    #[serde(default = "d_proj")]
    pub projection_dim: usize,
    /// Initial `log(1/τ)`: `ln(1/0.07) = 2.6592`.
    #[serde(default = "d_logit_scale")]
    pub logit_scale_init_value: f64,
}

fn d_proj() -> usize {
    512
}
fn d_logit_scale() -> f64 {
    2.6592
}

impl ClipTextConfig {
    /// Where a text's summary is read: see [`ClipTextConfig::eos_token_id`].
    pub fn pools_at_argmax(&self) -> bool {
        self.eos_token_id == 2 && !self.pool_at_first_eos
    }
}

impl ClipVisionConfig {
    /// Patches per side, `image_size / patch_size`.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Tokens the encoder sees: one per patch plus the class token.
    pub fn num_positions(&self) -> usize {
        self.grid() * self.grid() + 1
    }
}

fn positive(tower: &str, field: &str, v: usize) -> Result<()> {
    if v == 0 {
        return Err(Error::Config(format!("clip {tower}: {field} = 0, must be positive")));
    }
    Ok(())
}

fn heads_divide(tower: &str, hidden: usize, heads: usize) -> Result<()> {
    if !hidden.is_multiple_of(heads) {
        return Err(Error::Config(format!(
            "clip {tower}: hidden_size = {hidden} does not split into num_attention_heads = {heads} heads"
        )));
    }
    Ok(())
}

fn eps_ok(tower: &str, eps: f64) -> Result<()> {
    if !(eps > 0.0 && eps.is_finite()) {
        return Err(Error::Config(format!("clip {tower}: layer_norm_eps = {eps}, must be a positive number")));
    }
    Ok(())
}

/// Parameters of one encoder: per layer `4(C² + C)` (q, k, v, out), `2·2C` (two
/// layer norms), `CI + I + IC + C` (the MLP).
fn encoder_parameters(c: u128, intermediate: u128, layers: u128) -> u128 {
    let layer = (4 * c).saturating_mul(c).saturating_add(9 * c).saturating_add((2 * c).saturating_mul(intermediate)).saturating_add(intermediate);
    layers.saturating_mul(layer)
}

impl ClipConfig {
    // ANCHOR: toy
    /// The toy CLIP of chapter 03 (`weights/clip_mnist.safetensors`): a 3-layer ViT on 7x7
    /// patches (MNIST) or 8x8 patches (Shapes) and a 2-layer causal text transformer, both
    /// 64 wide, meeting in 32 dimensions.
    pub fn toy(dataset: crate::data::DatasetName, vocab_size: usize, eot: u32) -> ClipConfig {
        let (image_size, patch_size, num_channels, context) = match dataset {
            crate::data::DatasetName::Shapes => (32, 8, 3, 24),
            _ => (28, 7, 1, 12),
        };
        ClipConfig {
            text_config: ClipTextConfig {
                hidden_size: 64,
                intermediate_size: 256,
                num_attention_heads: 4,
                num_hidden_layers: 2,
                max_position_embeddings: context,
                vocab_size,
                hidden_act: HiddenAct::QuickGelu,
                layer_norm_eps: 1e-5,
                eos_token_id: eot,
                pool_at_first_eos: true,
            },
            vision_config: ClipVisionConfig {
                hidden_size: 64,
                intermediate_size: 256,
                num_attention_heads: 4,
                num_hidden_layers: 3,
                image_size,
                patch_size,
                num_channels,
                hidden_act: HiddenAct::QuickGelu,
                layer_norm_eps: 1e-5,
            },
            projection_dim: 32,
            logit_scale_init_value: (1.0f64 / 0.07).ln(),
        }
    }
    // ANCHOR_END: toy

    /// The number of parameters [`super::ClipModel::new`] would allocate, computed
    /// from the sizes alone (in `u128`, saturating: a lying config cannot overflow it).
    pub fn num_parameters(&self) -> u128 {
        let (t, v) = (&self.text_config, &self.vision_config);
        let ct = t.hidden_size as u128;
        let text = (t.vocab_size as u128 + t.max_position_embeddings as u128)
            .saturating_mul(ct)
            .saturating_add(encoder_parameters(ct, t.intermediate_size as u128, t.num_hidden_layers as u128))
            .saturating_add(2 * ct); // final layer norm
        let cv = v.hidden_size as u128;
        let patch = (v.patch_size as u128).saturating_mul(v.patch_size as u128).saturating_mul(v.num_channels as u128);
        let grid = (v.image_size / v.patch_size.max(1)) as u128;
        let vision = (1 + patch + grid.saturating_mul(grid) + 1) // class token, patch conv (no bias), positions
            .saturating_mul(cv)
            .saturating_add(encoder_parameters(cv, v.intermediate_size as u128, v.num_hidden_layers as u128))
            .saturating_add(4 * cv); // pre and post layer norms
        let projections = (ct + cv).saturating_mul(self.projection_dim as u128);
        text.saturating_add(vision).saturating_add(projections).saturating_add(1) // + logit scale
    }

    /// Checks every value (the error names the field and the value), and that
    /// the model is within [`crate::io::limits::MAX_PARAMETERS`].
    pub fn validate(&self) -> Result<()> {
        let t = &self.text_config;
        for (f, v) in [
            ("hidden_size", t.hidden_size),
            ("intermediate_size", t.intermediate_size),
            ("num_attention_heads", t.num_attention_heads),
            ("num_hidden_layers", t.num_hidden_layers),
            ("max_position_embeddings", t.max_position_embeddings),
            ("vocab_size", t.vocab_size),
        ] {
            positive("text_config", f, v)?;
        }
        heads_divide("text_config", t.hidden_size, t.num_attention_heads)?;
        eps_ok("text_config", t.layer_norm_eps)?;
        if t.eos_token_id as usize >= t.vocab_size {
            return Err(Error::Config(format!(
                "clip text_config: eos_token_id = {} is not below vocab_size = {}",
                t.eos_token_id, t.vocab_size
            )));
        }
        let v = &self.vision_config;
        for (f, x) in [
            ("hidden_size", v.hidden_size),
            ("intermediate_size", v.intermediate_size),
            ("num_attention_heads", v.num_attention_heads),
            ("num_hidden_layers", v.num_hidden_layers),
            ("image_size", v.image_size),
            ("patch_size", v.patch_size),
            ("num_channels", v.num_channels),
        ] {
            positive("vision_config", f, x)?;
        }
        heads_divide("vision_config", v.hidden_size, v.num_attention_heads)?;
        eps_ok("vision_config", v.layer_norm_eps)?;
        if !v.image_size.is_multiple_of(v.patch_size) {
            return Err(Error::Config(format!(
                "clip vision_config: image_size = {} is not a multiple of patch_size = {}",
                v.image_size, v.patch_size
            )));
        }
        positive("config", "projection_dim", self.projection_dim)?;
        if !self.logit_scale_init_value.is_finite() {
            return Err(Error::Config(format!("clip: logit_scale_init_value = {} is not finite", self.logit_scale_init_value)));
        }
        crate::io::limits::check_parameters(&"clip config", self.num_parameters())
    }

    /// Parses a `config.json` text (Hugging Face's layout; the legacy keys
    /// `text_config_dict` / `vision_config_dict` are read when `text_config` /
    /// `vision_config` are absent) and validates it. `path` names the file in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let mut value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::format(path, format!("not valid JSON: {e}")))?;
        let obj = value.as_object_mut().ok_or_else(|| Error::format(path, "expected a JSON object"))?;
        for tower in ["text_config", "vision_config"] {
            let present = obj.get(tower).is_some_and(|v| !v.is_null());
            if !present {
                let legacy = obj.get(&format!("{tower}_dict")).cloned();
                match legacy {
                    Some(v) if !v.is_null() => {
                        obj.insert(tower.to_string(), v);
                    }
                    _ => return Err(Error::format(path, format!("missing `{tower}`"))),
                }
            }
        }
        let config: ClipConfig =
            serde_json::from_value(value).map_err(|e| Error::format(path, format!("bad CLIP config: {e}")))?;
        config.validate().map_err(|e| match e {
            Error::Limit(m) => Error::Limit(format!("{}: {m}", path.display())),
            e => Error::format(path, e.to_string()),
        })?;
        Ok(config)
    }

    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_str(&text, path)
    }

    /// The JSON text of this config (Hugging Face's field names).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a config always serialises")
    }
}
