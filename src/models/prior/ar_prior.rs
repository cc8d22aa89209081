//! The autoregressive prior (unCLIP §2.2, the alternative the paper compared): the
//! image embedding as a short sequence of discrete codes, predicted after the caption
//! by chapter 07's DALL-E transformer.
//!
//! ```text
//! codes(z_i) = quantize(PCA_k(z_i))                          k ids below B        ([`super::pca`])
//! sequence   = [caption ids (L) | q_1 q_2 ... q_k]           DALL-E 1's layout, a 1 × k "image"
//! p(q | y)   = Π_j p(q_j | y, q_<j)                          causal transformer, image head over B buckets
//! L          = CE over the k code positions                  (no text loss: the captions are given)
//! z_i ≈ normalize(μ + V_k centre(q))                         after sampling
//! ```
//!
//! Reusing [`Dalle`] gives the text/code embeddings, the two heads (only codes can follow
//! the caption), the key/value cache and temperature/top-k/top-p sampling as they are.
//! The paper also prefixes the CLIP text embedding; here the caption ids carry the text.

use ndarray::{Array1, Array2, ArrayD};

use super::clip_features::normalize_rows;
use super::pca::{Pca, Quantizer};
use crate::io::checkpoint::Checkpoint;
use crate::models::dalle::sample::SamplingConfig;
use crate::models::dalle::sequence::join_sequences;
use crate::models::dalle::{Dalle, DalleConfig, DalleLoss, ImageAttention, MaskPattern};
use crate::nn::TransformerConfig;
use crate::tensor::Rng;
use crate::{Error, Result};

/// The DALL-E transformer over `[caption | codes]`, with its PCA and quantizer.
pub struct ArPrior {
    /// Chapter 07's transformer with a `1 × k` grid of `B` codes.
    pub transformer: Dalle,
    /// The PCA of the training image embeddings.
    pub pca: Pca,
    /// `B` buckets per kept component.
    pub quantizer: Quantizer,
}

impl ArPrior {
    /// The transformer's configuration for captions of `text_len` ids below `text_vocab`
    /// and the codes of `pca` and `quantizer`.
    pub fn config(text_vocab: usize, text_len: usize, pca: &Pca, quantizer: &Quantizer, transformer: TransformerConfig) -> DalleConfig {
        DalleConfig {
            text_vocab,
            text_len,
            image_vocab: quantizer.buckets(),
            grid: (1, pca.num_components()),
            transformer,
            masks: MaskPattern::Uniform(ImageAttention::Full),
            text_loss_weight: 0.0,
        }
    }

    /// A randomly initialised transformer over the codes of `pca` and `quantizer`.
    pub fn new(text_vocab: usize, text_len: usize, pca: Pca, quantizer: Quantizer, transformer: TransformerConfig, rng: &mut Rng) -> Result<Self> {
        if quantizer.edges.nrows() != pca.num_components() {
            return Err(Error::Config(format!("ar prior: the quantizer has {} dimensions, the PCA keeps {}", quantizer.edges.nrows(), pca.num_components())));
        }
        let config = Self::config(text_vocab, text_len, &pca, &quantizer, transformer);
        Ok(ArPrior { transformer: Dalle::new(config, rng)?, pca, quantizer })
    }

    /// The codes of image embeddings `z (B, E)`: `B · k` ids.
    pub fn codes(&self, z: &Array2<f32>) -> Result<Vec<usize>> {
        self.quantizer.encode(&self.pca.project(z)?)
    }

    // ANCHOR: ar_loss
    /// The cross-entropy of the codes of `z (B, E)` after captions `text (B · L)`
    /// (from [`crate::models::dalle::sequence::encode_captions`]).
    pub fn loss(&self, text: &[usize], z: &Array2<f32>, training: bool) -> Result<DalleLoss> {
        let (l, k) = (self.transformer.config.text_len, self.pca.num_components());
        let ids = join_sequences(text, &self.codes(z)?, l, k)?; // (B · (L + k))
        self.transformer.loss(&ids, z.nrows(), training)
    }
    // ANCHOR_END: ar_loss

    /// Unit-length image embeddings `(B, E)` sampled after captions `text (B · L)`.
    pub fn sample(&self, text: &[usize], sampling: &SamplingConfig, rng: &mut Rng) -> Result<Array2<f32>> {
        let codes: Vec<usize> = self.transformer.sample(text, sampling, true, rng)?.tokens.iter().copied().collect(); // (B · k)
        Ok(normalize_rows(&self.pca.reconstruct(&self.quantizer.decode(&codes)?)?))
    }

    /// The PCA and quantizer as named tensors (`pca.mean`, `pca.components`, `pca.variances`,
    /// `quantizer.edges`, `quantizer.centres`), for a checkpoint beside the weights.
    pub fn code_tensors(&self) -> Vec<(String, ArrayD<f32>)> {
        vec![
            ("pca.mean".into(), self.pca.mean.clone().into_dyn()),
            ("pca.components".into(), self.pca.components.clone().into_dyn()),
            ("pca.variances".into(), Array1::from_iter(self.pca.variances.iter().map(|&v| v as f32)).into_dyn()),
            ("quantizer.edges".into(), self.quantizer.edges.clone().into_dyn()),
            ("quantizer.centres".into(), self.quantizer.centres.clone().into_dyn()),
        ]
    }

    /// The PCA and quantizer stored by [`ArPrior::code_tensors`] under `prefix`.
    pub fn codes_from(ck: &Checkpoint, prefix: &str) -> Result<(Pca, Quantizer)> {
        let get2 = |name: &str| -> Result<Array2<f32>> {
            ck.get(&format!("{prefix}{name}"))?
                .clone()
                .into_dimensionality()
                .map_err(|_| Error::Checkpoint(format!("{}: `{prefix}{name}` is not a matrix", ck.path.display())))
        };
        let get1 = |name: &str| -> Result<Array1<f32>> {
            ck.get(&format!("{prefix}{name}"))?
                .clone()
                .into_dimensionality()
                .map_err(|_| Error::Checkpoint(format!("{}: `{prefix}{name}` is not a vector", ck.path.display())))
        };
        let pca = Pca { mean: get1("pca.mean")?, components: get2("pca.components")?, variances: get1("pca.variances")?.iter().map(|&v| v as f64).collect() };
        let quantizer = Quantizer { edges: get2("quantizer.edges")?, centres: get2("quantizer.centres")? };
        if pca.components.ncols() != pca.mean.len() || quantizer.edges.nrows() != pca.num_components() || quantizer.centres.nrows() != pca.num_components() {
            return Err(Error::Checkpoint(format!("{}: the PCA and quantizer tensors under `{prefix}` do not agree in shape", ck.path.display())));
        }
        Ok((pca, quantizer))
    }
}
