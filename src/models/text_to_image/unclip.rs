//! unCLIP behind [`TextToImage`]: chapter 10's diffusion prior, chapter 11's decoder
//! and upsampler.
//!
//! ```text
//! caption ─ frozen CLIP text ─ diffusion prior ─ z_i ─ decoder (guided DDIM, 14×14) ─ upsampler (28×28) ─ image
//! ```

use super::{check_request, shipped, TextToImage, Vocabulary};
use crate::data::DatasetName;
use crate::io::checkpoint;
use crate::models::diffusion::Diffusion;
use crate::models::prior::{PriorSampling, UnclipPrior};
use crate::models::unclip::{DecoderConfig, FrozenClip, Sampling, Unclip, UnclipDecoder, Upsampler};
use crate::nn::Module;
use crate::tensor::Rng;
use crate::{Error, Result};
use ndarray::Array4;

/// The unCLIP pipeline with its sampling settings.
pub struct UnclipGenerator {
    /// Captions -> CLIP image embeddings (and the CLIP it was trained on).
    pub prior: UnclipPrior,
    /// The prior's steps, guidance and candidates.
    pub prior_sampling: PriorSampling,
    /// The frozen CLIP whose text states condition the decoder.
    pub clip: FrozenClip,
    /// `z_i` + caption -> 14×14 image.
    pub decoder: UnclipDecoder,
    /// 14×14 -> 28×28.
    pub upsampler: Upsampler,
    /// The schedule both diffusion models were trained with.
    pub diffusion: Diffusion,
    /// The decoder's and the upsampler's steps and guidance.
    pub sampling: Sampling,
    vocabulary: Vocabulary,
}

impl UnclipGenerator {
    /// The shipped generator for `dataset` (captioned MNIST or Shapes).
    pub fn shipped_for(dataset: DatasetName) -> Result<Self> {
        match dataset {
            DatasetName::Mnist => Self::shipped(),
            other => Err(Error::Config(format!("unclip: no weights are shipped for {} yet", other.as_str()))),
        }
    }

    /// The shipped toy: `weights/unclip_prior_mnist`, `unclip_decoder_mnist`,
    /// `unclip_upsampler_mnist` and `clip_mnist`, with chapter 11's sampler settings.
    pub fn shipped() -> Result<Self> {
        let prior = UnclipPrior::load_shipped()?;
        let clip = FrozenClip::load_toy(&shipped("clip_mnist.safetensors"))?;
        let decoder = UnclipDecoder::new(DecoderConfig::mnist(), &mut Rng::new(0))?;
        checkpoint::load(&shipped("unclip_decoder_mnist.safetensors"))?.load_into(&decoder, &[])?;
        let upsampler = Upsampler::new(Upsampler::mnist_config(), 2, &mut Rng::new(0))?;
        checkpoint::load(&shipped("unclip_upsampler_mnist.safetensors"))?.load_into(&upsampler, &[])?;
        let diffusion = Diffusion::linear_epsilon()?;
        let sampling = Sampling { decoder_steps: 10, guidance: 3.0, upsampler_steps: 10, blur_sigma: 0.5, batch: 64 };
        // the prior never saw template 4, "an image of a handwritten 7" (chapter 10's held-out phrasing)
        let vocabulary = Vocabulary::of_templates(DatasetName::Mnist, &[0, 1, 2, 3]);
        Ok(UnclipGenerator { prior, prior_sampling: PriorSampling::default(), clip, decoder, upsampler, diffusion, sampling, vocabulary })
    }
}

impl TextToImage for UnclipGenerator {
    fn name(&self) -> &'static str {
        "unclip"
    }

    fn dataset(&self) -> DatasetName {
        DatasetName::Mnist
    }

    fn num_parameters(&self) -> usize {
        self.prior.prior.num_parameters() + self.clip.model.num_parameters() + self.decoder.num_parameters() + self.upsampler.num_parameters()
    }

    fn vocabulary(&self) -> &Vocabulary {
        &self.vocabulary
    }

    fn training_minutes(&self) -> f64 {
        25.0 + 70.0 + 60.0 + 11.4 // prior + decoder + upsampler + chapter 03's CLIP
    }

    // ANCHOR: generate
    fn generate(&self, prompts: &[String], per_prompt: usize, seed: u64, progress: &mut dyn FnMut(usize, usize)) -> Result<Array4<f32>> {
        check_request(prompts, per_prompt)?;
        let captions: Vec<String> = prompts.iter().flat_map(|p| std::iter::repeat_n(p.clone(), per_prompt)).collect();
        let unclip = Unclip { clip: &self.clip, decoder: &self.decoder, upsampler: Some(&self.upsampler), diffusion: &self.diffusion, sampling: self.sampling };
        let mut rng = Rng::new(seed);
        let z_i = self.prior.sample(&captions, &self.prior_sampling, &mut rng)?; // z_i ~ P(z_i | y), (N, E)
        progress(1, 3);
        let low = unclip.decode_low(&unclip.condition(z_i, Some(&captions))?, None, &mut rng)?; // x ~ P(x | z_i, y), (N, 1, 14, 14)
        progress(2, 3);
        let high = unclip.upsample(&low, &mut rng)?; // (N, 1, 28, 28)
        progress(3, 3);
        Ok(high)
    }
    // ANCHOR_END: generate
}
