//! GLIDE behind [`TextToImage`]: chapter 09's caption-conditioned U-Net, classifier-free
//! guidance on captions, DDIM.
//!
//! ```text
//! caption ─ text transformer ─ EOT feature → cond,  token features → context of every attention layer
//! x_T ~ N(0, I) ─ DDIM, ε̂ = ε(x_t | ∅) + s (ε(x_t | c) − ε(x_t | ∅)) ─ x_0 ─ (x_0 + 1) / 2 ─ image
//! ```

use super::{check_request, require_shipped, TextToImage, Vocabulary};
use crate::data::DatasetName;
use crate::models::diffusion::{respace, to_pixels, Diffusion, Sampler};
use crate::models::glide::{check_guidance_scale, load_toy_for, Glide};
use crate::nn::Module;
use crate::tensor::{Rng, Tensor};
use crate::tokenizer::TrainedBpe;
use crate::{Error, Result};
use ndarray::{Array4, Axis};
use std::path::Path;

/// `T`, the length of the schedule GLIDE was trained with (chapter 08's linear one).
const NUM_TRAIN_STEPS: usize = 1000;

/// The GLIDE sampler with its settings.
pub struct GlideGenerator {
    /// The text encoder and the U-Net.
    pub model: Glide,
    /// The caption tokenizer (the toy CLIP's BPE).
    pub tokenizer: TrainedBpe,
    /// The training schedule and what the network predicts.
    pub diffusion: Diffusion,
    /// DDIM steps (η = 0).
    pub steps: usize,
    /// Classifier-free guidance scale `s` (0: unconditional, 1: conditional).
    pub guidance: f32,
    /// Images per network batch (guidance doubles it).
    pub batch: usize,
    vocabulary: Vocabulary,
    dataset: DatasetName,
}

impl GlideGenerator {
    /// GLIDE for `dataset` from `weights` and the tokenizer beside it, with chapter 09's
    /// sampler: DDIM-10 at s = 3.
    pub fn load(dataset: DatasetName, weights: &Path) -> Result<Self> {
        let (model, tokenizer) = load_toy_for(dataset, weights)?;
        let diffusion = Diffusion::linear_epsilon()?;
        let vocabulary = match dataset {
            // the shipped MNIST model never saw template 2, "a picture of the number seven" (chapter 09's held-out phrasing)
            DatasetName::Mnist => Vocabulary::of_templates(DatasetName::Mnist, &[0, 1, 3, 4]),
            other => Vocabulary::of_dataset(other),
        };
        Ok(GlideGenerator { model, tokenizer, diffusion, steps: 10, guidance: 3.0, batch: 100, vocabulary, dataset })
    }

    /// The shipped toy for `dataset`: `weights/glide_{mnist,shapes}.safetensors`.
    pub fn shipped_for(dataset: DatasetName) -> Result<Self> {
        Self::load(dataset, &require_shipped(&format!("glide_{}.safetensors", dataset.as_str()))?)
    }
}

impl TextToImage for GlideGenerator {
    fn name(&self) -> &'static str {
        "glide"
    }

    fn dataset(&self) -> DatasetName {
        self.dataset
    }

    fn num_parameters(&self) -> usize {
        self.model.num_parameters()
    }

    fn vocabulary(&self) -> &Vocabulary {
        &self.vocabulary
    }

    fn training_minutes(&self) -> f64 {
        match self.dataset {
            DatasetName::Shapes => 62.0, // GLIDE on Shapes, 1816 steps from scratch (chapter 09)
            _ => 62.0 + 30.0,           // GLIDE, and chapter 08's DDPM its U-Net started from
        }
    }

    // ANCHOR: generate
    fn generate(&self, prompts: &[String], per_prompt: usize, seed: u64, progress: &mut dyn FnMut(usize, usize)) -> Result<Array4<f32>> {
        check_request(prompts, per_prompt)?;
        check_guidance_scale(self.guidance)?;
        let captions: Vec<&str> = prompts.iter().flat_map(|p| std::iter::repeat_n(p.as_str(), per_prompt)).collect();
        let timesteps = respace(NUM_TRAIN_STEPS, self.steps)?;
        let c = &self.model.unet.config;
        let chunks: Vec<&[&str]> = captions.chunks(self.batch.max(1)).collect();
        let total = chunks.len() * timesteps.len();
        let mut rng = Rng::new(seed);
        let mut images = Vec::new();
        for (k, chunk) in chunks.iter().enumerate() {
            let x_t = Tensor::randn(&[chunk.len(), c.in_channels, c.image_size, c.image_size], &mut rng); // x_T ~ N(0, I)
            let guided = self.model.guided(&self.tokenizer, chunk, self.guidance, false)?; // ε_∅ + s (ε_c − ε_∅), one batch of 2B
            let x0 = Sampler::Ddim(0.0).sample(&guided, &self.diffusion, x_t, &timesteps, &mut rng, &mut |i, _| progress(k * timesteps.len() + i + 1, total))?;
            images.push(to_pixels(&x0)?); // [-1, 1] -> [0, 1]
        }
        let views: Vec<_> = images.iter().map(|a| a.view()).collect();
        ndarray::concatenate(Axis(0), &views).map_err(|e| Error::Msg(format!("glide samples: {e}")))
    }
    // ANCHOR_END: generate
}
