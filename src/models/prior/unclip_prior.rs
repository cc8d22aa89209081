//! The prior as one call: captions in, sampled CLIP image embeddings out.
//!
//! ```no_run
//! # fn main() -> dalle::Result<()> {
//! use dalle::models::prior::{PriorSampling, UnclipPrior};
//! let prior = UnclipPrior::load_shipped()?; // weights/unclip_prior_mnist.safetensors + the toy CLIP
//! let captions = vec!["a handwritten 7".to_string(), "the digit three".to_string()];
//! let z_i = prior.sample(&captions, &PriorSampling::default(), &mut dalle::Rng::new(0))?; // (2, 32), unit rows
//! # Ok(()) }
//! ```
//!
//! The file holds the diffusion prior under `diffusion.*` and, when it was trained, the
//! autoregressive prior under `ar.*` (its transformer, PCA and quantizer), each with its
//! configuration in the metadata.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ndarray::{Array2, ArrayD, Axis};

use super::ar_prior::ArPrior;
use super::clip_features::{CaptionEncoding, FrozenClip};
use super::diffusion_prior::{DiffusionPrior, DiffusionPriorConfig};
use crate::io::checkpoint::{self, Checkpoint};
use crate::models::dalle::sample::SamplingConfig;
use crate::models::dalle::sequence::encode_captions;
use crate::models::dalle::{Dalle, DalleConfig};
use crate::models::diffusion::Diffusion;
use crate::nn::Module;
use crate::tensor::Rng;
use crate::{Error, Result};

/// How the diffusion prior samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PriorSampling {
    /// Respaced timesteps of the ODE sampler (the paper samples its prior with 64).
    pub steps: usize,
    /// Classifier-free guidance scale (1: the conditional model alone).
    pub guidance: f32,
    /// Embeddings drawn per caption, keeping the one with the largest `z_i · z_t`
    /// (unCLIP §2.2 draws two); 1 keeps the only draw.
    pub candidates: usize,
}

impl Default for PriorSampling {
    fn default() -> Self {
        PriorSampling { steps: 64, guidance: 1.0, candidates: 1 }
    }
}

/// The frozen CLIP, the diffusion prior and, if shipped, the autoregressive prior.
pub struct UnclipPrior {
    /// The CLIP whose embeddings the priors produce.
    pub clip: FrozenClip,
    /// The diffusion prior.
    pub prior: DiffusionPrior,
    /// Its schedule and target (cosine, `x_0`).
    pub diffusion: Diffusion,
    /// The autoregressive prior, when the file has one.
    pub ar: Option<ArPrior>,
}

/// The shipped prior: `weights/unclip_prior_mnist.safetensors`.
pub fn default_path() -> PathBuf {
    crate::io::shipped_weights("unclip_prior_mnist.safetensors")
}

/// The tensors of `ck` under `prefix`, with the prefix removed.
fn under(ck: &Checkpoint, prefix: &str) -> Checkpoint {
    let tensors: HashMap<String, ArrayD<f32>> = ck.tensors.iter().filter_map(|(k, v)| k.strip_prefix(prefix).map(|n| (n.to_string(), v.clone()))).collect();
    Checkpoint { path: ck.path.clone(), tensors, metadata: ck.metadata.clone() }
}

/// Write the priors to one file: `diffusion.*`, `ar.*`, the configurations and `extra` as metadata.
pub fn save(path: &Path, prior: &DiffusionPrior, ar: Option<&ArPrior>, extra: &HashMap<String, String>) -> Result<()> {
    let mut tensors: Vec<(String, ArrayD<f32>)> = prior.named_parameters().into_iter().map(|(n, t)| (format!("diffusion.{n}"), t.to_array())).collect();
    let mut meta: HashMap<String, String> = prior.config.metadata().into_iter().collect();
    if let Some(ar) = ar {
        tensors.extend(ar.transformer.named_parameters().into_iter().map(|(n, t)| (format!("ar.{n}"), t.to_array())));
        tensors.extend(ar.code_tensors().into_iter().map(|(n, a)| (format!("ar.{n}"), a)));
        meta.extend(ar.transformer.config.metadata());
    }
    meta.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    checkpoint::save_tensors(path, &tensors, &meta)
}

impl UnclipPrior {
    /// The priors in `path` over `clip`. Errors when the file's prior was built for a
    /// CLIP of another embedding width, text width or context than `clip`.
    pub fn load(path: &Path, clip: FrozenClip) -> Result<Self> {
        let ck = checkpoint::load(path)?;
        let config = DiffusionPriorConfig::from_metadata(&ck.metadata).map_err(|e| Error::Checkpoint(format!("{}: {}", path.display(), e.message())))?;
        let (e, w, t) = (clip.embed_dim(), clip.text_width(), clip.context_length());
        if (config.embed_dim, config.text_width, config.text_len) != (e, w, t) {
            return Err(Error::Config(format!(
                "{}: the prior was trained on a CLIP with embedding width {}, text width {} and context {}; this CLIP has {e}, {w} and {t}",
                path.display(),
                config.embed_dim,
                config.text_width,
                config.text_len
            )));
        }
        let prior = DiffusionPrior::new(config, &mut Rng::new(0))?;
        under(&ck, "diffusion.").load_into(&prior, &[])?;
        let ar = if ck.metadata.contains_key("dalle.text_vocab") {
            let (pca, quantizer) = ArPrior::codes_from(&ck, "ar.")?;
            let dalle_config = DalleConfig::from_metadata(&ck.metadata)?;
            let ar = ArPrior { transformer: Dalle::new(dalle_config, &mut Rng::new(0))?, pca, quantizer };
            under(&ck, "ar.").load_into(&ar.transformer, &["pca.", "quantizer."])?;
            Some(ar)
        } else {
            None
        };
        Ok(UnclipPrior { diffusion: config.diffusion()?, clip, prior, ar })
    }

    /// The shipped prior over the shipped toy CLIP (`weights/clip_mnist.safetensors`).
    #[cfg(feature = "trained-bpe")]
    pub fn load_shipped() -> Result<Self> {
        let clip = FrozenClip::load_toy(&crate::io::shipped_weights("clip_mnist.safetensors"))?;
        Self::load(&default_path(), clip)
    }

    /// CLIP's encoding of `captions` (errors on an empty caption).
    pub fn encode(&self, captions: &[String]) -> Result<CaptionEncoding> {
        self.clip.encode_captions(captions)
    }

    // ANCHOR: api
    /// Unit-length CLIP image embeddings `(B, E)` drawn by the diffusion prior for `captions`.
    pub fn sample(&self, captions: &[String], sampling: &PriorSampling, rng: &mut Rng) -> Result<Array2<f32>> {
        let encoded = self.encode(captions)?;
        sample_best_of(&self.prior, &self.diffusion, &encoded, sampling, rng)
    }
    // ANCHOR_END: api

    /// Unit-length CLIP image embeddings `(B, E)` drawn by the autoregressive prior.
    pub fn sample_ar(&self, captions: &[String], sampling: &SamplingConfig, rng: &mut Rng) -> Result<Array2<f32>> {
        let ar = self.ar.as_ref().ok_or_else(|| Error::Config("this prior file holds no autoregressive prior".into()))?;
        self.encode(captions)?; // the same checks as the diffusion prior (empty captions)
        let text = encode_captions(self.clip.tokenizer.as_ref(), captions, ar.transformer.config.text_len, false)?;
        ar.sample(&text, sampling, rng)
    }
}

/// [`DiffusionPrior::sample`] with `sampling.candidates` draws per caption, keeping for each
/// the draw with the largest `z_i · z_t` (unCLIP §2.2).
pub fn sample_best_of(prior: &DiffusionPrior, diffusion: &Diffusion, captions: &CaptionEncoding, sampling: &PriorSampling, rng: &mut Rng) -> Result<Array2<f32>> {
    let (b, c) = (captions.len(), sampling.candidates.max(1));
    if b == 0 {
        return Err(Error::Config("prior: no captions to sample for".into()));
    }
    let repeated: Vec<usize> = (0..c).flat_map(|_| 0..b).collect(); // candidate j of caption i at row j·B + i
    let z = prior.sample(diffusion, &captions.select(&repeated), sampling.steps, sampling.guidance, rng)?; // (cB, E)
    let best: Vec<usize> = (0..b)
        .map(|i| {
            let score = |j: usize| z.row(j * b + i).dot(&captions.text_embeds.row(i)); // z_i · z_t
            (0..c).max_by(|&p, &q| score(p).total_cmp(&score(q))).expect("c >= 1") * b + i
        })
        .collect();
    Ok(z.select(Axis(0), &best))
}
