//! The trained pieces DALL-E 1 samples with, loaded and checked together, and
//! the draw-then-rerank loop of section 2.5.
//!
//! ```text
//! caption ─ BPE ─ transformer draws h×w image tokens (N per caption) ─ VQ-VAE decoder ─ N candidates
//!                                         CLIP score cos(I_e(x), T_e(y)) ─ candidates best first
//! ```
//!
//! One loader serves every data set: the data set names the image tokenizer's
//! architecture ([`VqVaeConfig::for_dataset`]) and the image size; the
//! transformer's shape comes from its own checkpoint, and a codebook or grid
//! that does not match it is an error ([`Dalle::check_image_tokenizer`]).

use std::path::Path;

use ndarray::{Array4, Axis};

use super::rerank::{clip_scores, rank_groups};
use super::sample::SamplingConfig;
use super::sequence::encode_captions;
use super::Dalle;
use crate::data::DatasetName;
use crate::io::{checkpoint, shipped_weights};
use crate::models::clip::load::load_toy;
use crate::models::clip::ClipModel;
use crate::models::image_tokenizer::ImageTokenizer;
use crate::models::vqvae::{VqVae, VqVaeConfig};
use crate::tensor::Rng;
use crate::tokenizer::{TextTokenizer, TrainedBpe};
use crate::{Error, Result};

/// The side of a data set's square images: 28 for MNIST and Fashion-MNIST, 32 for CIFAR-10 and Shapes.
pub fn image_side(dataset: DatasetName) -> usize {
    match dataset {
        DatasetName::Mnist | DatasetName::FashionMnist => 28,
        DatasetName::Cifar10 | DatasetName::Shapes => 32,
    }
}

/// Chapter 05's VQ-VAE for `dataset` with the weights of `path` (its optimiser state, if any, skipped).
pub fn load_image_tokenizer(dataset: DatasetName, path: &Path) -> Result<VqVae> {
    let vqvae = VqVae::new(VqVaeConfig::for_dataset(dataset), &mut Rng::new(0))?;
    checkpoint::load(path)?.load_into(&vqvae, &["optim."]).map_err(|e| Error::Checkpoint(format!("{} as the {} image tokenizer: {e}", path.display(), dataset.as_str())))?;
    Ok(vqvae)
}

/// DALL-E 1's three trained pieces for one data set.
pub struct DalleParts {
    /// The token transformer.
    pub model: Dalle,
    /// Image tokens to pixels (chapter 05).
    pub vqvae: VqVae,
    /// The reranker (chapter 03).
    pub clip: ClipModel,
    /// CLIP's BPE, also the caption tokenizer.
    pub bpe: TrainedBpe,
    /// The data set the pieces were trained on.
    pub dataset: DatasetName,
}

/// Candidates drawn for a list of captions: `n` per caption, candidate `g·n + j` is number `j` of caption `g`.
pub struct Candidates {
    /// Decoded images `(P · n, C, H, W)` in `[0, 1]`.
    pub images: Array4<f32>,
    /// CLIP's score of each candidate against its caption.
    pub scores: Vec<f32>,
    /// Per caption, its candidates' indices best first.
    pub ranked: Vec<Vec<usize>>,
}

impl Candidates {
    /// Each caption's first candidate (no reranking): `(P, C, H, W)`.
    pub fn first(&self) -> Array4<f32> {
        let n = self.images.dim().0 / self.ranked.len().max(1);
        self.images.select(Axis(0), &(0..self.ranked.len()).map(|g| g * n).collect::<Vec<_>>())
    }

    /// Each caption's CLIP-best candidate: `(P, C, H, W)`.
    pub fn best(&self) -> Array4<f32> {
        self.images.select(Axis(0), &self.ranked.iter().map(|order| order[0]).collect::<Vec<_>>())
    }
}

impl DalleParts {
    /// The pieces from their files, checked against each other: the image tokenizer's
    /// codebook and grid against the transformer's, the caption tokenizer's vocabulary against
    /// the transformer's text embedding.
    pub fn load(dataset: DatasetName, dalle: &Path, vqvae: &Path, clip: &Path) -> Result<Self> {
        let model = Dalle::load(dalle)?;
        let vqvae = load_image_tokenizer(dataset, vqvae)?;
        let (clip, bpe) = load_toy(clip)?;
        let parts = DalleParts { model, vqvae, clip, bpe, dataset };
        parts.check().map_err(|e| Error::Config(format!("{}: {e}", dalle.display())))?;
        Ok(parts)
    }

    /// The shipped toys: `weights/dalle_{dataset}`, `vqvae_{dataset}` and `clip_{dataset}` (MNIST or Shapes).
    pub fn shipped(dataset: DatasetName) -> Result<Self> {
        let file = |model: &str| shipped_weights(&format!("{model}_{}.safetensors", dataset.as_str()));
        Self::load(dataset, &file("dalle"), &file("vqvae"), &file("clip"))
    }

    /// Errors when the pieces do not fit together.
    pub fn check(&self) -> Result<()> {
        let side = image_side(self.dataset);
        self.model.check_image_tokenizer(self.vqvae.vocab_size(), self.vqvae.grid(side, side))?;
        let vocab = self.bpe.vocab_size();
        if vocab != self.model.config.text_vocab {
            return Err(Error::Config(format!("dalle: the caption tokenizer has {vocab} ids, the transformer embeds {}", self.model.config.text_vocab)));
        }
        Ok(())
    }

    // ANCHOR: draw
    /// `n` candidates per caption, decoded, scored by CLIP and ranked; drawn in batches of `batch` sequences.
    pub fn draw(&self, prompts: &[String], n: usize, sampling: &SamplingConfig, batch: usize, rng: &mut Rng) -> Result<Candidates> {
        if n == 0 || batch == 0 {
            return Err(Error::Config(format!("dalle draw: {n} candidates per caption in batches of {batch}; both must be positive")));
        }
        let repeated: Vec<String> = prompts.iter().flat_map(|p| std::iter::repeat_n(p.clone(), n)).collect(); // caption g at g·n..(g+1)·n
        let mut parts = Vec::new();
        for chunk in repeated.chunks(batch) {
            let text = encode_captions(&self.bpe, chunk, self.model.config.text_len, false)?; // (b · L)
            let sampled = self.model.sample(&text, sampling, true, rng)?; // tokens (b, h, w)
            parts.push(self.vqvae.decode(&sampled.tokens)?.mapv(|v| v.clamp(0.0, 1.0))); // (b, C, H, W)
        }
        let views: Vec<_> = parts.iter().map(|a| a.view()).collect();
        let images = ndarray::concatenate(Axis(0), &views).map_err(|e| Error::Msg(format!("dalle draw: {e}")))?; // (P · n, C, H, W)
        let scores = clip_scores(&self.clip, &self.bpe, &images, &repeated)?; // cos(I_e(x), T_e(y))
        let ranked = rank_groups(&scores, n)?; // per caption, best first
        Ok(Candidates { images, scores, ranked })
    }
    // ANCHOR_END: draw
}
