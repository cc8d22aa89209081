//! The diffusion prior (Ramesh et al. 2022, "Hierarchical Text-Conditional Image
//! Generation with CLIP Latents", §2.2): a decoder-only transformer that denoises a
//! CLIP image embedding given the caption.
//!
//! ```text
//! sequence = [ P(tokens(y)) (T) ; P(z_t) ; MLP(sinusoid(t)) ; P(x_t) ; q ]      (B, T + 4, C)
//! h        = Transformer(sequence + positions, causal mask)
//! x̂_0      = W_out h[:, -1]                                                    (B, E)
//! L        = E_{t, z_i, ε} ‖z_i - x̂_0(x_t, t, y)‖²,  x_t = √ᾱ_t z_i + √(1 - ᾱ_t) ε
//! ```
//!
//! `tokens(y)` are CLIP's caption token encodings, `z_t` its text embedding, `x_t` the
//! noised (scaled) image embedding and `q` a learned query token whose output predicts
//! the un-noised embedding: the paper predicts `x_0` directly rather than ε
//! ([`Prediction::X0`], chapter 08). For classifier-free guidance the text conditioning
//! (the `T + 1` caption and text-embedding tokens) is replaced, for a share of the
//! training rows, by a learned null sequence (Ho & Salimans 2022), so the same network
//! predicts both `x̂_0(x_t, t, y)` and `x̂_0(x_t, t, ∅)`.

use ndarray::{Array2, Array3};

use super::clip_features::{check_width, normalize_rows, CaptionEncoding};
use crate::models::diffusion::blocks::timestep_embedding;
use crate::models::diffusion::samplers::{ode_sample, respace, ClassifierFree, Denoiser, Diffusion};
use crate::models::diffusion::{BetaSchedule, NoiseSchedule, Prediction};
use crate::nn::attention::causal_mask;
use crate::nn::{visit_child, Forward, LearnedPositionEmbedding, Linear, Module, Transformer, TransformerConfig};
use crate::tensor::{no_grad, Rng, Tensor};
use crate::{Error, Result};

/// The shape of a [`DiffusionPrior`].
#[derive(Clone, Copy, Debug)]
pub struct DiffusionPriorConfig {
    /// CLIP's embedding width `E` (what the prior denoises).
    pub embed_dim: usize,
    /// CLIP's text transformer width `C_text` (the caption token encodings).
    pub text_width: usize,
    /// CLIP's text context `T` (caption tokens per row).
    pub text_len: usize,
    /// The diffusion steps `T_diff` of training.
    pub num_train_steps: usize,
    /// The transformer stack (width `C`, heads, layers).
    pub transformer: TransformerConfig,
}

impl DiffusionPriorConfig {
    /// The toy MNIST prior over chapter 03's CLIP (`E = 32`, `C_text = 64`, `T = 12`):
    /// width 64, 4 heads, 4 layers, 1000 steps of the cosine schedule.
    pub fn mnist(embed_dim: usize, text_width: usize, text_len: usize) -> Self {
        DiffusionPriorConfig { embed_dim, text_width, text_len, num_train_steps: 1000, transformer: TransformerConfig::new(64, 4, 4) }
    }

    /// Positions in the sequence: `T` caption tokens, the text embedding, the timestep, `x_t`, the query.
    pub fn seq_len(&self) -> usize {
        self.text_len + 4
    }

    /// Errors name the value that cannot work.
    pub fn validate(&self) -> Result<()> {
        if self.embed_dim == 0 || self.text_width == 0 || self.text_len == 0 || self.num_train_steps == 0 {
            return Err(Error::Config(format!(
                "diffusion prior: embed_dim {}, text_width {}, text_len {} and num_train_steps {} must be positive",
                self.embed_dim, self.text_width, self.text_len, self.num_train_steps
            )));
        }
        if !self.transformer.dim.is_multiple_of(2) {
            return Err(Error::Config(format!("diffusion prior: width {} must be even (sinusoidal timestep embedding)", self.transformer.dim)));
        }
        self.transformer.validate()
    }

    /// The noise schedule and target the prior is trained with: cosine, `x_0` prediction.
    pub fn diffusion(&self) -> Result<Diffusion> {
        Ok(Diffusion { schedule: NoiseSchedule::new(BetaSchedule::Cosine, self.num_train_steps)?, prediction: Prediction::X0 })
    }

    /// The configuration as checkpoint metadata (`prior.embed_dim`, ...).
    pub fn metadata(&self) -> Vec<(String, String)> {
        let t = &self.transformer;
        [
            ("embed_dim", self.embed_dim),
            ("text_width", self.text_width),
            ("text_len", self.text_len),
            ("num_train_steps", self.num_train_steps),
            ("width", t.dim),
            ("heads", t.n_head),
            ("layers", t.n_layer),
        ]
        .iter()
        .map(|(k, v)| (format!("prior.{k}"), v.to_string()))
        .collect()
    }

    /// The configuration stored by [`DiffusionPriorConfig::metadata`]; the error names a missing or bad field.
    pub fn from_metadata(meta: &std::collections::HashMap<String, String>) -> Result<Self> {
        let get = |k: &str| -> Result<usize> {
            let key = format!("prior.{k}");
            meta.get(&key)
                .ok_or_else(|| Error::Checkpoint(format!("no `{key}` in the metadata (not a diffusion prior checkpoint?)")))?
                .parse()
                .map_err(|_| Error::Checkpoint(format!("`{key}` = {:?} is not a whole number", meta[&key])))
        };
        let config = DiffusionPriorConfig {
            embed_dim: get("embed_dim")?,
            text_width: get("text_width")?,
            text_len: get("text_len")?,
            num_train_steps: get("num_train_steps")?,
            transformer: TransformerConfig::new(get("width")?, get("heads")?, get("layers")?),
        };
        config.validate()?;
        Ok(config)
    }
}

/// The prior's transformer. Parameter names: `text_proj`, `text_embed_proj`, `time_embed.0`,
/// `time_embed.1`, `x_proj`, `query`, `null_text`, `position.weight`, `blocks.*`, `ln_f`, `out`.
pub struct DiffusionPrior {
    /// `Linear(C_text, C)`: the caption token encodings into the prior's width.
    pub text_proj: Linear,
    /// `Linear(E, C)`: the CLIP text embedding as one token.
    pub text_embed_proj: Linear,
    /// `Linear(C, C)`, SiLU, `Linear(C, C)` on the sinusoidal timestep embedding.
    pub time_embed: [Linear; 2],
    /// `Linear(E, C)`: the noised image embedding as one token.
    pub x_proj: Linear,
    /// The learned query token `q`, `(1, 1, C)`.
    pub query: Tensor,
    /// The learned null conditioning that replaces the `T + 1` text tokens, `(1, T + 1, C)`.
    pub null_text: Tensor,
    /// Learned positions `(T + 4, C)`.
    pub position: LearnedPositionEmbedding,
    /// The blocks and `ln_f` (causal).
    pub transformer: Transformer,
    /// `Linear(C, E)`: the query's output to `x̂_0`.
    pub out: Linear,
    /// The configuration.
    pub config: DiffusionPriorConfig,
}

impl DiffusionPrior {
    /// A randomly initialised prior; errors name an invalid value of `config`.
    pub fn new(config: DiffusionPriorConfig, rng: &mut Rng) -> Result<Self> {
        config.validate()?;
        let (c, e) = (config.transformer.dim, config.embed_dim);
        let small = |shape: &[usize], rng: &mut Rng| Tensor::param(Tensor::randn(shape, rng).scale(0.02).to_array());
        Ok(DiffusionPrior {
            text_proj: Linear::new(config.text_width, c, true, rng),
            text_embed_proj: Linear::new(e, c, true, rng),
            time_embed: [Linear::new(c, c, true, rng), Linear::new(c, c, true, rng)],
            x_proj: Linear::new(e, c, true, rng),
            query: small(&[1, 1, c], rng),
            null_text: small(&[1, config.text_len + 1, c], rng),
            position: LearnedPositionEmbedding::new(config.seq_len(), c, 0.02, rng),
            transformer: Transformer::new(config.transformer, rng)?,
            out: Linear::new(c, e, true, rng),
            config,
        })
    }

    // ANCHOR: forward
    /// `x̂_0 (B, E)` for the noised embeddings `x_t (B, E)` at timesteps `t`, given the
    /// caption token encodings `tokens (B, T, C_text)` and text embeddings `text_embeds (B, E)`;
    /// rows with `keep[b] = false` see the null conditioning instead.
    pub fn forward(&self, tokens: &Tensor, text_embeds: &Tensor, x_t: &Tensor, t: &[usize], keep: &[bool]) -> Result<Tensor> {
        let cfg = &self.config;
        let (b, c) = (x_t.dim(0), cfg.transformer.dim);
        let expect = |what: &str, got: Vec<usize>, want: Vec<usize>| -> Result<()> {
            if got != want {
                return Err(Error::shape("diffusion prior", format!("{what} is {got:?}, expected {want:?}")));
            }
            Ok(())
        };
        expect("x_t", x_t.shape(), vec![b, cfg.embed_dim])?;
        expect("the caption token encodings", tokens.shape(), vec![b, cfg.text_len, cfg.text_width])?;
        expect("the text embeddings", text_embeds.shape(), vec![b, cfg.embed_dim])?;
        if t.len() != b || keep.len() != b {
            return Err(Error::shape("diffusion prior", format!("{} timesteps and {} keep flags for a batch of {b}", t.len(), keep.len())));
        }
        if let Some(bad) = t.iter().find(|&&t| t >= cfg.num_train_steps) {
            return Err(Error::Config(format!("diffusion prior: timestep {bad} is outside [0, {})", cfg.num_train_steps)));
        }
        let text = self.text_proj.forward(tokens)?; // (B, T, C)
        let text_embed = self.text_embed_proj.forward(text_embeds)?.reshape(&[b as isize, 1, c as isize])?; // (B, 1, C)
        let cond = Tensor::concat(&[&text, &text_embed], 1)?; // (B, T + 1, C)
        let m = Tensor::from_vec(keep.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect(), &[b, 1, 1])?; // 1: caption, 0: ∅
        let cond = cond.mul(&m)?.add(&self.null_text.mul(&m.neg().add_scalar(1.0))?)?; // m·cond + (1 - m)·null, (B, T + 1, C)
        let steps: Vec<f32> = t.iter().map(|&t| t as f32).collect();
        let time = self.time_embed[1].forward(&self.time_embed[0].forward(&timestep_embedding(&steps, c)?)?.silu())?; // (B, C)
        let time = time.reshape(&[b as isize, 1, c as isize])?; // (B, 1, C)
        let x = self.x_proj.forward(x_t)?.reshape(&[b as isize, 1, c as isize])?; // (B, 1, C)
        let query = self.query.broadcast_to(&[b, 1, c])?; // (B, 1, C)
        let s = cfg.seq_len();
        let h = Tensor::concat(&[&cond, &time, &x, &query], 1)?.add(&self.position.forward(s, 0)?)?; // (B, T + 4, C)
        let h = self.transformer.forward(&h, Some(&causal_mask(s, s)), false)?.output; // (B, T + 4, C)
        self.out.forward(&h.narrow(1, s - 1, 1)?.reshape(&[b as isize, c as isize])?) // (B, E)
    }
    // ANCHOR_END: forward

    /// The conditioning of `captions` as a [`Denoiser`] (every row keeps its caption).
    pub fn denoiser(&self, captions: &CaptionEncoding) -> Result<PriorDenoiser<'_>> {
        PriorDenoiser::new(self, captions, vec![true; captions.len()])
    }

    /// The doubled batch [`ClassifierFree`] asks for: rows `0..B` with the captions, `B..2B` without.
    pub fn guided(&self, captions: &CaptionEncoding, scale: f32) -> Result<ClassifierFree<PriorDenoiser<'_>>> {
        let b = captions.len();
        let all: Vec<usize> = (0..b).chain(0..b).collect();
        let keep: Vec<bool> = (0..2 * b).map(|i| i < b).collect();
        Ok(ClassifierFree { model: PriorDenoiser::new(self, &captions.select(&all), keep)?, scale })
    }

    // ANCHOR: sample
    /// Unit-length image embeddings `(B, E)` for `captions`: `x_T ~ N(0, I)`, then
    /// chapter 08's probability-flow ODE (Euler steps, which is DDIM with η = 0) over
    /// `steps` respaced timesteps, guided with scale `guidance` (1: the conditional model).
    /// No clipping of `x̂_0` to `[-1, 1]`: the prior's data are `√E`-scaled unit vectors,
    /// whose coordinates may pass 1.
    pub fn sample(&self, diffusion: &Diffusion, captions: &CaptionEncoding, steps: usize, guidance: f32, rng: &mut Rng) -> Result<Array2<f32>> {
        let b = captions.len();
        let timesteps = respace(self.config.num_train_steps, steps)?;
        let x_t = Tensor::randn(&[b, self.config.embed_dim], rng); // x_T ~ N(0, I), (B, E)
        let x0 = if guidance == 1.0 {
            ode_sample(&self.denoiser(captions)?, diffusion, x_t, &timesteps, false, false, &mut |_, _| {})?
        } else {
            ode_sample(&self.guided(captions, guidance)?, diffusion, x_t, &timesteps, false, false, &mut |_, _| {})?
        };
        let x0 = x0.to_array().into_dimensionality::<ndarray::Ix2>().map_err(|e| Error::Msg(format!("prior samples: {e}")))?;
        Ok(normalize_rows(&x0)) // back to CLIP's unit sphere
    }
    // ANCHOR_END: sample
}

impl Module for DiffusionPrior {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_child("text_proj", &self.text_proj, f);
        visit_child("text_embed_proj", &self.text_embed_proj, f);
        visit_child("time_embed.0", &self.time_embed[0], f);
        visit_child("time_embed.1", &self.time_embed[1], f);
        visit_child("x_proj", &self.x_proj, f);
        f("query", &self.query);
        f("null_text", &self.null_text);
        visit_child("position", &self.position, f);
        self.transformer.visit(f);
        visit_child("out", &self.out, f);
    }
}

/// The prior with its conditioning fixed: what chapter 08's samplers call.
pub struct PriorDenoiser<'a> {
    prior: &'a DiffusionPrior,
    tokens: Tensor,
    text_embeds: Tensor,
    keep: Vec<bool>,
}

impl<'a> PriorDenoiser<'a> {
    /// `captions` row by row, `keep[b] = false` for the unconditional rows.
    pub fn new(prior: &'a DiffusionPrior, captions: &CaptionEncoding, keep: Vec<bool>) -> Result<Self> {
        check_width("the CLIP text embedding", &captions.text_embeds, prior.config.embed_dim)?;
        let (_, t, w) = captions.tokens.dim();
        if (t, w) != (prior.config.text_len, prior.config.text_width) {
            return Err(Error::shape(
                "diffusion prior",
                format!("caption token encodings are {t} x {w}; the prior was built for {} x {} (another CLIP?)", prior.config.text_len, prior.config.text_width),
            ));
        }
        Ok(PriorDenoiser { prior, tokens: to_tensor3(&captions.tokens), text_embeds: Tensor::new(captions.text_embeds.clone().into_dyn()), keep })
    }
}

impl Denoiser for PriorDenoiser<'_> {
    fn predict(&self, x_t: &Tensor, t: &[usize]) -> Result<Tensor> {
        no_grad(|| self.prior.forward(&self.tokens, &self.text_embeds, x_t, t, &self.keep))
    }
}

/// A `(B, T, C)` array as a constant tensor.
pub fn to_tensor3(a: &Array3<f32>) -> Tensor {
    Tensor::new(a.clone().into_dyn())
}
