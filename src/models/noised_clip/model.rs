//! The noised CLIP (GLIDE §2.4): a CLIP whose image encoder sees noisy images `x_t` and their `t`.
//!
//! ```text
//! patches = Conv2d_{p×p, stride p}(x_t)                          (B, N, C)
//! x₀ = [W_t · emb(t) + b_t; patches] + position_embedding         (B, N+1, C)   emb: sinusoidal
//! f(x_t, t) = visual_projection(post_LN(Encoder(pre_LN(x₀))[:, 0]))   (B, E)
//! g(c)      = text_projection(TextTransformer(c)[eot])                 (B, E)   frozen
//! loss = ½ (CE(exp(τ) f̂ ĝᵀ, diag) + CE(exp(τ) ĝ f̂ᵀ, diag)),   f̂ = f/‖f‖, ĝ = g/‖g‖
//! ```
//!
//! GLIDE replaces the ViT's class token by a per-timestep embedding; here that token is
//! a linear map of the sinusoidal timestep embedding of chapter 08, so nearby `t` share it.
//! Everything else is chapter 03's ViT (the same patch embedding, encoder layers and norms,
//! reused, not copied).
//!
//! The text tower and its projection are the shipped toy CLIP's (`weights/clip_mnist`),
//! frozen: the captions' embedding space is already learned, so only the image tower has to
//! learn to reach it from noisy images (and it starts from the toy CLIP's own image tower,
//! its time token initialised to the class token, so at every `t` it begins as chapter 03's
//! CLIP). A file saved by [`NoisedClip::save`] records in its metadata that the model was
//! trained on noised images, and with which diffusion schedule; [`NoisedClip::load`] refuses a
//! file without that record (a CLIP trained on clean images gives guidance gradients that
//! are noise at large `t`).

use std::collections::HashMap;
use std::path::Path;

use ndarray::{Array2, ArrayD, IxDyn};
use serde::{Deserialize, Serialize};

use crate::io::checkpoint;
use crate::models::clip::config::ClipVisionConfig;
use crate::models::clip::layers::ClipEncoder;
use crate::models::clip::text::ClipTextTransformer;
use crate::models::clip::{ClipConfig, ClipModel};
use crate::models::diffusion::blocks::timestep_embedding;
use crate::nn::{visit_child, Conv2d, Embedding, Forward, LayerNorm, Linear, Module};
use crate::tensor::{Rng, Tensor};
use crate::tokenizer::TextTokenizer;
use crate::{Error, Result};

/// The metadata key of a noised CLIP's [`NoisedClipConfig`] (JSON) in its safetensors file.
pub const NOISED_CLIP_KEY: &str = "noised_clip_config";

/// The noised CLIP's hyper-parameters, saved in its file's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoisedClipConfig {
    /// The two towers' sizes (chapter 03's config; the image tower uses `vision_config`).
    pub clip: ClipConfig,
    /// Width of the sinusoidal timestep embedding fed to the time token.
    pub time_embed_dim: usize,
    /// `T` of the diffusion schedule whose `x_t` the image encoder was trained on.
    pub num_train_timesteps: usize,
    /// That schedule, in words (e.g. `linear 1e-4..0.02`).
    pub beta_schedule: String,
    /// Whether the image encoder was trained on noised images (what guidance requires).
    pub trained_on_noised_images: bool,
}

/// The image encoder `f(x_t, t)`: chapter 03's ViT with a time token in place of the class token.
pub struct NoisedImageEncoder {
    /// `(C, channels, p, p)`, stride `p`, no bias.
    pub patch_embedding: Conv2d,
    /// `(C, D_t)`: `emb(t)` to the time token (GLIDE's per-timestep embedding).
    pub time_embedding: Linear,
    /// `(N + 1, C)`
    pub position_embedding: Embedding,
    /// LN before the encoder.
    pub pre_layrnorm: LayerNorm,
    /// The (non-causal) encoder.
    pub encoder: ClipEncoder,
    /// LN on the time token's output.
    pub post_layernorm: LayerNorm,
    /// `(E, C)`, no bias.
    pub visual_projection: Linear,
    /// The tower's sizes.
    pub config: ClipVisionConfig,
    /// `D_t`.
    pub time_embed_dim: usize,
}

impl NoisedImageEncoder {
    // ANCHOR: image_forward
    /// `x_t (B, channels, S, S)` in the diffusion's data space (`[-1, 1]` at `t = 0`) and one
    /// training-schedule timestep per row -> unnormalised embeddings `(B, E)`.
    pub fn forward(&self, x_t: &Tensor, t: &[usize]) -> Result<Tensor> {
        let s = x_t.shape();
        let cfg = &self.config;
        if s.len() != 4 || s[1] != cfg.num_channels || s[2] != cfg.image_size || s[3] != cfg.image_size {
            return Err(Error::shape(
                "noised clip image encoder",
                format!("x_t {s:?}, expected (B, {}, {}, {})", cfg.num_channels, cfg.image_size, cfg.image_size),
            ));
        }
        if t.len() != s[0] {
            return Err(Error::shape("noised clip image encoder", format!("{} timesteps for a batch of {}", t.len(), s[0])));
        }
        let (b, c, n) = (s[0] as isize, cfg.hidden_size as isize, (cfg.grid() * cfg.grid()) as isize);
        let patches = self.patch_embedding.forward(x_t)?; // (B, C, S/p, S/p)
        let patches = patches.reshape(&[b, c, n])?.transpose(1, 2); // (B, N, C)
        let tf: Vec<f32> = t.iter().map(|&t| t as f32).collect();
        let time = self.time_embedding.forward(&timestep_embedding(&tf, self.time_embed_dim)?)?; // (B, C) = W_t emb(t) + b_t
        let time = time.reshape(&[b, 1, c])?; // (B, 1, C): in place of the class token
        let x = Tensor::concat(&[&time, &patches], 1)?.add(&self.position_embedding.weight)?; // (B, N+1, C)
        let h = self.encoder.forward(&self.pre_layrnorm.forward(&x)?, None)?; // (B, N+1, C)
        let pooled = self.post_layernorm.forward(&h.narrow(1, 0, 1)?.reshape(&[b, c])?)?; // (B, C)
        self.visual_projection.forward(&pooled) // (B, E)
    }
    // ANCHOR_END: image_forward
}

impl Module for NoisedImageEncoder {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_child("patch_embedding", &self.patch_embedding, f);
        visit_child("time_embedding", &self.time_embedding, f);
        visit_child("position_embedding", &self.position_embedding, f);
        visit_child("pre_layrnorm", &self.pre_layrnorm, f);
        visit_child("encoder", &self.encoder, f);
        visit_child("post_layernorm", &self.post_layernorm, f);
        visit_child("visual_projection", &self.visual_projection, f);
    }
}

/// The noised CLIP: a trainable noised image encoder, chapter 03's text tower (frozen) and a temperature.
pub struct NoisedClip {
    /// `f(x_t, t)` (`image.*`).
    pub image: NoisedImageEncoder,
    /// Chapter 03's text transformer (`text_model.*`), frozen.
    pub text_model: ClipTextTransformer,
    /// `(E, C_text)` (`text_projection.*`), frozen.
    pub text_projection: Linear,
    /// `τ = log(1/temperature)`, a 0-d parameter, trained.
    pub logit_scale: Tensor,
    /// The hyper-parameters.
    pub config: NoisedClipConfig,
}

impl NoisedClip {
    /// A noised CLIP built from a chapter 03 CLIP: its text tower and projection are taken
    /// over and frozen, its image tower becomes the noised encoder's start (the time token's
    /// map starts at zero with the class token as its bias, so at every `t` the encoder
    /// begins as `clip`'s). `time_embed_dim` must be even; `trained_on_noised_images` starts false.
    pub fn from_clip(clip: ClipModel, time_embed_dim: usize, num_train_timesteps: usize, beta_schedule: &str) -> Result<Self> {
        let ClipModel { text_model, vision_model, visual_projection, text_projection, logit_scale, config } = clip;
        let c = config.vision_config.hidden_size;
        if time_embed_dim == 0 || !time_embed_dim.is_multiple_of(2) {
            return Err(Error::Config(format!("noised clip: time_embed_dim = {time_embed_dim} must be even and positive")));
        }
        let emb = vision_model.embeddings;
        let bias = emb.class_embedding.to_array(); // (C)
        let time_embedding = Linear { weight: Tensor::param(ArrayD::zeros(IxDyn(&[c, time_embed_dim]))), bias: Some(Tensor::param(bias)) };
        let image = NoisedImageEncoder {
            patch_embedding: emb.patch_embedding,
            time_embedding,
            position_embedding: emb.position_embedding,
            pre_layrnorm: vision_model.pre_layrnorm,
            encoder: vision_model.encoder,
            post_layernorm: vision_model.post_layernorm,
            visual_projection,
            config: config.vision_config.clone(),
            time_embed_dim,
        };
        text_model.freeze();
        text_projection.freeze();
        let logit_scale = Tensor::param(logit_scale.to_array()); // a fresh leaf: the toy CLIP's value, trainable
        let config = NoisedClipConfig { clip: config, time_embed_dim, num_train_timesteps, beta_schedule: beta_schedule.to_string(), trained_on_noised_images: false };
        Ok(NoisedClip { image, text_model, text_projection, logit_scale, config })
    }

    /// A randomly initialised noised CLIP for `config` (tests and from-scratch runs).
    pub fn new(config: &NoisedClipConfig, rng: &mut Rng) -> Result<Self> {
        let mut model = Self::from_clip(ClipModel::new(&config.clip, rng)?, config.time_embed_dim, config.num_train_timesteps, &config.beta_schedule)?;
        model.config.trained_on_noised_images = config.trained_on_noised_images;
        Ok(model)
    }

    /// Unit-length image embeddings `f̂(x_t, t)`, `(B, E)`.
    pub fn image_embeds(&self, x_t: &Tensor, t: &[usize]) -> Result<Tensor> {
        self.check_timesteps(t)?;
        self.image.forward(x_t, t)?.l2_normalize(-1, 1e-12)
    }

    /// Unit-length text embeddings `ĝ(c)` of token ids `(B, T)`, `(B, E)`.
    pub fn text_embeds(&self, ids: &Array2<u32>) -> Result<Tensor> {
        self.text_projection.forward(&self.text_model.forward(ids)?.pooled_output)?.l2_normalize(-1, 1e-12)
    }

    /// Token ids `(B, T)` of `captions`; a caption longer than the text context is an error
    /// (no silent truncation: a cut caption may have lost the word that mattered).
    pub fn tokenize(&self, tokenizer: &dyn TextTokenizer, captions: &[String]) -> Result<Array2<u32>> {
        let refs: Vec<&str> = captions.iter().map(|c| c.as_str()).collect();
        let context = self.config.clip.text_config.max_position_embeddings;
        tokenizer.encode_batch(&refs, context, false).map_err(|e| Error::Config(format!("noised clip caption: {e} (the text context is {context} tokens)")))
    }

    /// Unit-length text embeddings of `captions`, computed without a graph, `(B, E)`.
    pub fn caption_embeds(&self, tokenizer: &dyn TextTokenizer, captions: &[String]) -> Result<Tensor> {
        let ids = self.tokenize(tokenizer, captions)?;
        crate::tensor::no_grad(|| self.text_embeds(&ids))
    }

    /// `exp(min(τ, ln 100))`.
    pub fn logit_scale_exp(&self) -> Tensor {
        self.logit_scale.clamp(f32::NEG_INFINITY, crate::models::clip::model::MAX_LOGIT_SCALE).exp()
    }

    /// The symmetric contrastive loss (chapter 03's) of a batch of noised images and their captions' ids.
    pub fn loss(&self, x_t: &Tensor, t: &[usize], ids: &Array2<u32>) -> Result<Tensor> {
        let f = self.image_embeds(x_t, t)?; // (N, E)
        let g = self.text_embeds(ids)?; // (N, E), frozen: no graph
        let logits = f.matmul_t(&g)?.mul(&self.logit_scale_exp())?; // (N, N) = exp(τ) f̂ ĝᵀ
        crate::models::clip::contrastive_loss(&logits)
    }

    /// Errors unless every `t` is within the schedule this CLIP was trained on.
    pub fn check_timesteps(&self, t: &[usize]) -> Result<()> {
        let n = self.config.num_train_timesteps;
        match t.iter().find(|&&t| t >= n) {
            Some(bad) => Err(Error::Config(format!("noised clip: timestep {bad} is past the {n} steps it was trained on"))),
            None => Ok(()),
        }
    }

    /// Saves the weights with the config (and `trained_on_noised_images`) in the metadata.
    pub fn save(&self, path: &Path, extra: &HashMap<String, String>) -> Result<()> {
        let mut meta = extra.clone();
        meta.insert(NOISED_CLIP_KEY.to_string(), serde_json::to_string(&self.config).map_err(|e| Error::Msg(e.to_string()))?);
        checkpoint::save(path, self, None, &meta)
    }

    /// Loads a file saved by [`NoisedClip::save`]. A file without the noised CLIP record in its
    /// metadata (chapter 03's CLIP, any other checkpoint) or one whose record says it was not
    /// trained on noised images is an error: guidance with it would follow noise.
    pub fn load(path: &Path) -> Result<Self> {
        let header = checkpoint::read_header(path)?;
        let not_noised = |why: &str| {
            Error::Config(format!(
                "{}: this CLIP was not trained on noised images ({why}); CLIP guidance needs a noised CLIP, \
                 whose image encoder sees x_t and t (train one with examples/09_noised_clip)",
                path.display()
            ))
        };
        let text = header.metadata.get(NOISED_CLIP_KEY).ok_or_else(|| not_noised(&format!("its metadata has no `{NOISED_CLIP_KEY}`")))?;
        let config: NoisedClipConfig = serde_json::from_str(text).map_err(|e| Error::Checkpoint(format!("{}: metadata `{NOISED_CLIP_KEY}`: {e}", path.display())))?;
        if !config.trained_on_noised_images {
            return Err(not_noised("its config says trained_on_noised_images = false"));
        }
        config.clip.validate()?;
        let model = NoisedClip::new(&config, &mut Rng::new(0))?;
        checkpoint::load(path)?.load_into(&model, &[])?;
        Ok(model)
    }
}

impl Module for NoisedClip {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_child("image", &self.image, f);
        visit_child("text_model", &self.text_model, f);
        visit_child("text_projection", &self.text_projection, f);
        f("logit_scale", &self.logit_scale);
    }
}
