//! DALL-E 1 behind [`TextToImage`]: chapter 07's transformer, chapter 05's VQ-VAE
//! as the image tokenizer, chapter 03's CLIP to pick the best of `candidates`.
//!
//! ```text
//! caption ─ BPE ─ transformer draws 7×7 (MNIST) or 8×8 (Shapes) image tokens ─ VQ-VAE decoder ─ N candidates
//!                                            CLIP score s = f(image) · g(caption) ─ argmax ─ image
//! ```

use super::{check_request, TextToImage, Vocabulary};
use crate::data::DatasetName;
use crate::models::dalle::pipeline::DalleParts;
use crate::models::dalle::rerank::{clip_scores, rank_groups};
use crate::models::dalle::sample::SamplingConfig;
use crate::models::dalle::sequence::encode_captions;
use crate::models::image_tokenizer::ImageTokenizer;
use crate::nn::Module;
use crate::tensor::Rng;
use crate::Result;
use ndarray::{Array4, Axis};

/// The DALL-E 1 pipeline with its sampling settings.
pub struct Dalle1 {
    /// The transformer, the VQ-VAE, the reranking CLIP and the caption tokenizer of one data set.
    pub parts: DalleParts,
    /// Temperature, top-k, top-p of each token.
    pub sampling: SamplingConfig,
    /// Candidates drawn per image; CLIP keeps the best (1: no reranking).
    pub candidates: usize,
    vocabulary: Vocabulary,
    training_minutes: f64,
}

impl Dalle1 {
    /// The pipeline around `parts`, drawing 8 candidates per image at temperature 1.
    pub fn new(parts: DalleParts) -> Self {
        let vocabulary = Vocabulary::of_dataset(parts.dataset);
        let training_minutes = if parts.dataset == DatasetName::Shapes { SHAPES_MINUTES } else { MNIST_MINUTES };
        Dalle1 { parts, sampling: SamplingConfig::default(), candidates: 8, vocabulary, training_minutes }
    }

    /// The shipped toy for `dataset`: `weights/dalle_{mnist,shapes}`, `vqvae_*` and `clip_*`.
    pub fn shipped_for(dataset: DatasetName) -> Result<Self> {
        Ok(Self::new(DalleParts::shipped(dataset)?))
    }
}

/// Training minutes of the shipped MNIST pieces (`chapters/results.md`): DALL-E 1 28 min,
/// then 20 more resumed, + VQ-VAE + CLIP.
const MNIST_MINUTES: f64 = 28.0 + 20.0 + 4.9 + 11.4;
/// The same for Shapes: DALL-E 1 (1600 steps in three resumed runs) + VQ-VAE + CLIP (chapters 07, 05, 03).
const SHAPES_MINUTES: f64 = 33.0 + 13.0 + 3.0;

impl TextToImage for Dalle1 {
    fn name(&self) -> &'static str {
        "dalle1"
    }

    fn dataset(&self) -> DatasetName {
        self.parts.dataset
    }

    fn num_parameters(&self) -> usize {
        let p = &self.parts;
        p.model.num_parameters() + p.vqvae.num_parameters() + p.clip.num_parameters()
    }

    fn vocabulary(&self) -> &Vocabulary {
        &self.vocabulary
    }

    fn training_minutes(&self) -> f64 {
        self.training_minutes
    }

    // ANCHOR: generate
    fn generate(&self, prompts: &[String], per_prompt: usize, seed: u64, progress: &mut dyn FnMut(usize, usize)) -> Result<Array4<f32>> {
        check_request(prompts, per_prompt)?;
        let n = self.candidates.max(1);
        let groups: Vec<String> = prompts.iter().flat_map(|p| std::iter::repeat_n(p.clone(), per_prompt)).collect(); // one per output image
        let repeated: Vec<String> = groups.iter().flat_map(|p| std::iter::repeat_n(p.clone(), n)).collect(); // candidates of image g at g·n..
        let p = &self.parts;
        let text = encode_captions(&p.bpe, &repeated, p.model.config.text_len, false)?; // (P·k·n · L)
        let sampled = p.model.sample_watched(&text, &self.sampling, true, &mut Rng::new(seed), progress)?;
        let candidates = p.vqvae.decode(&sampled.tokens)?.mapv(|v| v.clamp(0.0, 1.0)); // (P·k·n, C, H, W)
        if n == 1 {
            return Ok(candidates);
        }
        let ranked = rank_groups(&clip_scores(&p.clip, &p.bpe, &candidates, &repeated)?, n)?; // per image, best first
        let best: Vec<usize> = ranked.iter().map(|order| order[0]).collect();
        Ok(candidates.select(Axis(0), &best))
    }
    // ANCHOR_END: generate
}
