//! unCLIP behind [`TextToImage`]: chapter 10's diffusion prior, chapter 11's decoder
//! and upsampler.
//!
//! ```text
//! caption ─ frozen CLIP text ─ diffusion prior ─ z_i ─ decoder (guided DDIM, 14×14 or 16×16) ─ upsampler (28×28 or 32×32) ─ image
//! ```

use super::{check_request, TextToImage, Vocabulary};
use crate::data::DatasetName;
use crate::models::unclip::setup::UnclipPipeline;
use crate::models::unclip::upsampler::bilinear_upsample;
use crate::nn::Module;
use crate::tensor::Rng;
use crate::Result;
use ndarray::Array4;

/// The unCLIP pipeline with its sampling settings.
pub struct UnclipGenerator {
    /// Prior (with its frozen CLIP), decoder, upsampler, their schedule and sampler settings.
    pub pipeline: UnclipPipeline,
    /// Upsample the decoder's images bilinearly instead of with the diffusion upsampler.
    /// The default on Shapes, whose shipped upsampler is under-trained and worse than
    /// bilinear (chapter 11: 13 % of real 16×16 images judged right after it, 80 % after bilinear).
    pub bilinear: bool,
    vocabulary: Vocabulary,
}

impl UnclipGenerator {
    /// The shipped toy for `dataset` (`weights/unclip_{prior,decoder,upsampler}_{mnist,shapes}`
    /// and `clip_*`), with chapter 11's sampler settings.
    pub fn shipped_for(dataset: DatasetName) -> Result<Self> {
        let pipeline = UnclipPipeline::load_shipped(dataset)?;
        let vocabulary = match dataset {
            // the MNIST prior never saw template 4, "an image of a handwritten 7" (chapter 10's held-out phrasing)
            DatasetName::Mnist => Vocabulary::of_templates(DatasetName::Mnist, &[0, 1, 2, 3]),
            other => Vocabulary::of_dataset(other),
        };
        Ok(UnclipGenerator { pipeline, bilinear: dataset == DatasetName::Shapes, vocabulary })
    }
}

impl TextToImage for UnclipGenerator {
    fn name(&self) -> &'static str {
        "unclip"
    }

    fn dataset(&self) -> DatasetName {
        self.pipeline.setup.dataset
    }

    fn num_parameters(&self) -> usize {
        let p = &self.pipeline;
        p.prior.prior.num_parameters() + p.prior.clip.model.num_parameters() + p.decoder.num_parameters() + p.upsampler.num_parameters()
    }

    fn vocabulary(&self) -> &Vocabulary {
        &self.vocabulary
    }

    fn training_minutes(&self) -> f64 {
        match self.dataset() {
            DatasetName::Shapes => 18.0 + 58.0 + if self.bilinear { 0.0 } else { 53.0 } + 3.0, // prior + decoder (+ upsampler, when used) + chapter 03's CLIP
            _ => 25.0 + 70.0 + 60.0 + 11.4,               // prior + decoder + upsampler + chapter 03's CLIP
        }
    }

    // ANCHOR: generate
    fn generate(&self, prompts: &[String], per_prompt: usize, seed: u64, progress: &mut dyn FnMut(usize, usize)) -> Result<Array4<f32>> {
        check_request(prompts, per_prompt)?;
        let captions: Vec<String> = prompts.iter().flat_map(|p| std::iter::repeat_n(p.clone(), per_prompt)).collect();
        let (p, unclip) = (&self.pipeline, self.pipeline.unclip());
        let mut rng = Rng::new(seed);
        let z_i = p.prior.sample(&captions, &p.prior_sampling, &mut rng)?; // z_i ~ P(z_i | y), (N, E)
        progress(1, 3);
        let low = unclip.decode_low(&unclip.condition(z_i, Some(&captions))?, None, &mut rng)?; // x ~ P(x | z_i, y), (N, C, 14, 14) or (N, C, 16, 16)
        progress(2, 3);
        let high = match self.bilinear {
            true => bilinear_upsample(&low, p.setup.factor),
            false => unclip.upsample(&low, &mut rng)?,
        }; // (N, C, 28, 28) or (N, C, 32, 32)
        progress(3, 3);
        Ok(high)
    }
    // ANCHOR_END: generate
}
