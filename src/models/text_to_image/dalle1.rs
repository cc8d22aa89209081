//! DALL-E 1 behind [`TextToImage`]: chapter 07's transformer, chapter 05's VQ-VAE
//! as the image tokenizer, chapter 03's CLIP to pick the best of `candidates`.
//!
//! ```text
//! caption ─ BPE ─ transformer draws 7×7 image tokens ─ VQ-VAE decoder ─ N candidates
//!                                            CLIP score s = f(image) · g(caption) ─ argmax ─ image
//! ```

use super::{check_request, shipped, TextToImage, Vocabulary};
use crate::data::DatasetName;
use crate::io::checkpoint;
use crate::models::clip::load::load_toy;
use crate::models::clip::ClipModel;
use crate::models::dalle::rerank::{clip_scores, rank_groups};
use crate::models::dalle::sample::SamplingConfig;
use crate::models::dalle::sequence::encode_captions;
use crate::models::dalle::Dalle;
use crate::models::image_tokenizer::ImageTokenizer;
use crate::models::vqvae::{VqVae, VqVaeConfig};
use crate::nn::Module;
use crate::tensor::Rng;
use crate::tokenizer::TrainedBpe;
use crate::{Error, Result};
use ndarray::{Array4, Axis};
use std::path::Path;

/// The DALL-E 1 pipeline with its sampling settings.
pub struct Dalle1 {
    /// The token transformer.
    pub model: Dalle,
    /// Image tokens to pixels.
    pub vqvae: VqVae,
    /// The reranker (its BPE is also the caption tokenizer).
    pub clip: ClipModel,
    /// The caption tokenizer.
    pub bpe: TrainedBpe,
    /// Temperature, top-k, top-p of each token.
    pub sampling: SamplingConfig,
    /// Candidates drawn per image; CLIP keeps the best (1: no reranking).
    pub candidates: usize,
    vocabulary: Vocabulary,
}

impl Dalle1 {
    /// The pipeline from its three files; the shapes are checked against each other.
    pub fn load(dalle: &Path, vqvae: &Path, clip: &Path) -> Result<Self> {
        let model = Dalle::load(dalle)?;
        let tokenizer = VqVae::new(VqVaeConfig::mnist(), &mut Rng::new(0))?;
        checkpoint::load(vqvae)?.load_into(&tokenizer, &["optim."])?;
        model.check_image_tokenizer(tokenizer.vocab_size(), tokenizer.grid(28, 28))?;
        let (clip_model, bpe) = load_toy(clip)?;
        let vocab = crate::tokenizer::TextTokenizer::vocab_size(&bpe);
        if vocab > model.config.text_vocab {
            return Err(Error::Config(format!(
                "{}: the caption tokenizer of {} has {vocab} ids but the transformer embeds only {}",
                dalle.display(),
                clip.display(),
                model.config.text_vocab
            )));
        }
        Ok(Dalle1 { model, vqvae: tokenizer, clip: clip_model, bpe, sampling: SamplingConfig::default(), candidates: 8, vocabulary: Vocabulary::of_dataset(DatasetName::Mnist) })
    }

    /// The shipped generator for `dataset` (captioned MNIST or Shapes).
    pub fn shipped_for(dataset: DatasetName) -> Result<Self> {
        match dataset {
            DatasetName::Mnist => Self::shipped(),
            other => Err(Error::Config(format!("dalle1: no weights are shipped for {} yet", other.as_str()))),
        }
    }

    /// The shipped toy: `weights/dalle_mnist`, `vqvae_mnist` and `clip_mnist`.
    pub fn shipped() -> Result<Self> {
        Self::load(&shipped("dalle_mnist.safetensors"), &shipped("vqvae_mnist.safetensors"), &shipped("clip_mnist.safetensors"))
    }
}

impl TextToImage for Dalle1 {
    fn name(&self) -> &'static str {
        "dalle1"
    }

    fn dataset(&self) -> DatasetName {
        DatasetName::Mnist
    }

    fn num_parameters(&self) -> usize {
        self.model.num_parameters() + self.vqvae.num_parameters() + self.clip.num_parameters()
    }

    fn vocabulary(&self) -> &Vocabulary {
        &self.vocabulary
    }

    fn training_minutes(&self) -> f64 {
        28.0 + 20.0 + 4.9 + 11.4 // DALL-E 1 (28 min, then 20 more resumed) + VQ-VAE + CLIP
    }

    // ANCHOR: generate
    fn generate(&self, prompts: &[String], per_prompt: usize, seed: u64, progress: &mut dyn FnMut(usize, usize)) -> Result<Array4<f32>> {
        check_request(prompts, per_prompt)?;
        let n = self.candidates.max(1);
        let groups: Vec<String> = prompts.iter().flat_map(|p| std::iter::repeat_n(p.clone(), per_prompt)).collect(); // one per output image
        let repeated: Vec<String> = groups.iter().flat_map(|p| std::iter::repeat_n(p.clone(), n)).collect(); // candidates of image g at g·n..
        let text = encode_captions(&self.bpe, &repeated, self.model.config.text_len, false)?; // (P·k·n · L)
        let sampled = self.model.sample_watched(&text, &self.sampling, true, &mut Rng::new(seed), progress)?;
        let candidates = self.vqvae.decode(&sampled.tokens)?.mapv(|v| v.clamp(0.0, 1.0)); // (P·k·n, 1, 28, 28)
        if n == 1 {
            return Ok(candidates);
        }
        let ranked = rank_groups(&clip_scores(&self.clip, &self.bpe, &candidates, &repeated)?, n)?; // per image, best first
        let best: Vec<usize> = ranked.iter().map(|order| order[0]).collect();
        Ok(candidates.select(Axis(0), &best))
    }
    // ANCHOR_END: generate
}
