//! One unCLIP per data set: the same code, with the resolutions, the frozen CLIP and the
//! shipped files that the data set asks for.
//!
//! | | MNIST | Shapes |
//! |---|---|---|
//! | images | 1x28x28 | 3x32x32 |
//! | decoder | 1x14x14 ([`DecoderConfig::mnist`]) | 3x16x16 ([`DecoderConfig::shapes`]) |
//! | upsampler | 14 -> 28 | 16 -> 32 |
//! | frozen CLIP | `weights/clip_mnist.*` | `weights/clip_shapes.*` |
//!
//! ```no_run
//! # fn main() -> dalle::Result<()> {
//! use dalle::data::DatasetName;
//! use dalle::models::unclip::UnclipPipeline;
//! let unclip = UnclipPipeline::load_shipped(DatasetName::Shapes)?;
//! let captions = vec!["a small red circle above a large blue square".to_string()];
//! let images = unclip.generate(&captions, &mut dalle::Rng::new(0))?.high; // (1, 3, 32, 32) in [0, 1]
//! # Ok(()) }
//! ```

use std::path::PathBuf;

use super::decoder::{DecoderConfig, UnclipDecoder};
use super::edits::{Decoded, Sampling, Unclip};
use super::pipeline::{generate, DiffusionImagePrior};
use super::upsampler::{Upsampler, SAMPLE_BLUR_SIGMA};
use crate::data::DatasetName;
use crate::io::{checkpoint, shipped_weights};
use crate::models::diffusion::{Diffusion, UNetConfig};
use crate::models::prior::{PriorSampling, UnclipPrior};
use crate::tensor::Rng;
use crate::{Error, Result};

/// What unCLIP is for one data set: model shapes and the files it loads.
#[derive(Debug, Clone, PartialEq)]
pub struct UnclipSetup {
    /// The data set.
    pub dataset: DatasetName,
    /// The frozen CLIP (its config and tokenizer beside it).
    pub clip: PathBuf,
    /// Chapter 10's priors.
    pub prior: PathBuf,
    /// The decoder's EMA weights.
    pub decoder: PathBuf,
    /// The upsampler's EMA weights.
    pub upsampler: PathBuf,
    /// The decoder's shape.
    pub decoder_config: DecoderConfig,
    /// The upsampler's U-Net.
    pub upsampler_config: UNetConfig,
    /// The upsampler's resolution factor (decoder side × factor = image side).
    pub factor: usize,
    /// The decoder's and the upsampler's sampler settings (chapter 11's).
    pub sampling: Sampling,
}


impl UnclipSetup {
    /// The setup for `dataset`; errors for a data set unCLIP was not built for.
    pub fn for_dataset(dataset: DatasetName) -> Result<Self> {
        let decoder_config = match dataset {
            DatasetName::Mnist => DecoderConfig::mnist(),
            DatasetName::Shapes => DecoderConfig::shapes(),
            other => return Err(Error::Config(format!("unclip: no toy CLIP, decoder or prior for --dataset {other}; use mnist or shapes"))),
        };
        let upsampler_config = if dataset == DatasetName::Shapes { Upsampler::shapes_config() } else { Upsampler::mnist_config() };
        let name = dataset.as_str();
        Ok(UnclipSetup {
            dataset,
            clip: shipped_weights(&format!("clip_{name}.safetensors")),
            prior: shipped_weights(&format!("unclip_prior_{name}.safetensors")),
            decoder: shipped_weights(&format!("unclip_decoder_{name}.safetensors")),
            upsampler: shipped_weights(&format!("unclip_upsampler_{name}.safetensors")),
            factor: upsampler_config.image_size / decoder_config.unet.image_size,
            decoder_config,
            upsampler_config,
            sampling: Sampling { decoder_steps: 10, guidance: 3.0, upsampler_steps: 10, blur_sigma: SAMPLE_BLUR_SIGMA, batch: 64 },
        })
    }
}

/// The whole of unCLIP for one data set, loaded: prior (with its frozen CLIP), decoder, upsampler.
pub struct UnclipPipeline {
    /// Captions -> CLIP image embeddings; its `clip` also gives the decoder its caption states.
    pub prior: UnclipPrior,
    /// The prior's steps, guidance and candidates.
    pub prior_sampling: PriorSampling,
    /// `z_i` + caption -> low-resolution image.
    pub decoder: UnclipDecoder,
    /// Low -> full resolution.
    pub upsampler: Upsampler,
    /// The schedule the decoder and upsampler were trained with.
    pub diffusion: Diffusion,
    /// The decoder's and the upsampler's sampler settings.
    pub sampling: Sampling,
    /// Which data set, files and shapes.
    pub setup: UnclipSetup,
}

impl UnclipPipeline {
    /// The files of `setup`; errors name a missing file or a checkpoint that does not fit.
    #[cfg(feature = "trained-bpe")]
    pub fn load(setup: UnclipSetup) -> Result<Self> {
        let clip = crate::models::prior::FrozenClip::load_toy(&setup.clip)?;
        let prior = UnclipPrior::load(&setup.prior, clip)?;
        let decoder = UnclipDecoder::new(setup.decoder_config.clone(), &mut Rng::new(0))?;
        checkpoint::load(&setup.decoder)?.load_into(&decoder, &[])?;
        let upsampler = Upsampler::new(setup.upsampler_config.clone(), setup.factor, &mut Rng::new(0))?;
        checkpoint::load(&setup.upsampler)?.load_into(&upsampler, &[])?;
        Ok(UnclipPipeline { prior, prior_sampling: PriorSampling::default(), decoder, upsampler, diffusion: Diffusion::linear_epsilon()?, sampling: setup.sampling, setup })
    }

    /// The shipped pipeline of `dataset` (`weights/unclip_{prior,decoder,upsampler}_{mnist,shapes}`).
    #[cfg(feature = "trained-bpe")]
    pub fn load_shipped(dataset: DatasetName) -> Result<Self> {
        Self::load(UnclipSetup::for_dataset(dataset)?)
    }

    /// The decoder, the upsampler and the prior's CLIP as chapter 11's [`Unclip`].
    pub fn unclip(&self) -> Unclip<'_> {
        Unclip { clip: &self.prior.clip, decoder: &self.decoder, upsampler: Some(&self.upsampler), diffusion: &self.diffusion, sampling: self.sampling }
    }

    /// Text to image: prior, decoder, upsampler ([`generate`]), one image per caption.
    pub fn generate(&self, captions: &[String], rng: &mut Rng) -> Result<Decoded> {
        generate(&self.unclip(), &DiffusionImagePrior { prior: &self.prior, sampling: self.prior_sampling }, captions, rng)
    }
}
