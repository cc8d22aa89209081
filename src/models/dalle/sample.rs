//! Drawing an image's tokens after a caption, one at a time.
//!
//! ```text
//! for n in 0..h·w:
//!     z = logits(i_n | t, i_<n) / T              temperature T (0: argmax)
//!     keep the k largest z (top-k), then the smallest set whose
//!     probability reaches p (top-p, "nucleus", Holtzman et al. 2020)
//!     i_n ~ softmax(z) over what is kept
//! ```
//!
//! With a key/value cache ([`crate::nn::KvCache`]) the caption is encoded once
//! and each new image token costs one position; the uncached reference path
//! reruns the whole sequence for every token. Both give the same logits
//! (`tests/dalle.rs` checks every position), the cache only changes the cost.

use ndarray::{Array3, Axis};

use super::Dalle;
use crate::tensor::{no_grad, Rng, Tensor};
use crate::{Error, Result};

/// How the next token is drawn from the logits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingConfig {
    /// Divides the logits; 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (`None`: all).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`, in `(0, 1]` (1: all).
    pub top_p: f32,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig { temperature: 1.0, top_k: None, top_p: 1.0 }
    }
}

impl SamplingConfig {
    /// Errors name the value that cannot work.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::Config(format!("sampling: temperature {} must be finite and >= 0", self.temperature)));
        }
        if self.top_k == Some(0) {
            return Err(Error::Config("sampling: top_k = 0 keeps no token; use at least 1 (or none for all)".into()));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::Config(format!("sampling: top_p {} must be in (0, 1]", self.top_p)));
        }
        Ok(())
    }

    // ANCHOR: filter
    /// The probabilities `softmax(z / T)` after top-k and top-p, zero for the tokens cut.
    pub fn probabilities(&self, logits: &[f32]) -> Vec<f64> {
        let t = self.temperature.max(f32::MIN_POSITIVE) as f64;
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a])); // most likely first
        let max = logits[order[0]] as f64;
        let mut p = vec![0.0; logits.len()];
        let keep = self.top_k.unwrap_or(logits.len()).min(logits.len());
        for &i in &order[..keep] {
            p[i] = ((logits[i] as f64 - max) / t).exp(); // e^{(z_i - max) / T}
        }
        let total: f64 = p.iter().sum();
        let mut mass = 0.0;
        for (rank, &i) in order[..keep].iter().enumerate() {
            if rank > 0 && mass >= self.top_p as f64 {
                p[i] = 0.0; // outside the nucleus: the kept mass already reached top_p
            } else {
                mass += p[i] / total;
            }
        }
        let kept: f64 = p.iter().sum();
        p.iter_mut().for_each(|v| *v /= kept);
        p
    }
    // ANCHOR_END: filter

    /// One token: the argmax when `temperature = 0`, else a draw from [`SamplingConfig::probabilities`].
    pub fn pick(&self, logits: &[f32], rng: &mut Rng) -> usize {
        let argmax = logits.iter().enumerate().fold(0, |best, (i, &v)| if v > logits[best] { i } else { best });
        if self.temperature == 0.0 {
            return argmax;
        }
        let p = self.probabilities(logits);
        let mut u = rng.uniform() as f64;
        for (i, w) in p.iter().enumerate() {
            u -= w;
            if u <= 0.0 && *w > 0.0 {
                return i;
            }
        }
        argmax
    }
}

/// What sampling returns.
pub struct Sampled {
    /// The image tokens `(B, h, w)`.
    pub tokens: Array3<usize>,
    /// The image logits each token was drawn from, `(B, N, K)`.
    pub logits: Array3<f32>,
}

impl Dalle {
    /// Draw the image tokens after captions `text (B · L)` (from [`super::sequence::encode_captions`]).
    /// `cached = true` decodes one position per token through a key/value cache;
    /// `false` is the reference that reruns the whole sequence each time.
    pub fn sample(&self, text: &[usize], sampling: &SamplingConfig, cached: bool, rng: &mut Rng) -> Result<Sampled> {
        self.sample_watched(text, sampling, cached, rng, &mut |_, _| {})
    }

    // ANCHOR: sample
    /// [`Dalle::sample`], calling `watch(done, total)` after each of the `h · w` image tokens.
    pub fn sample_watched(&self, text: &[usize], sampling: &SamplingConfig, cached: bool, rng: &mut Rng, watch: &mut dyn FnMut(usize, usize)) -> Result<Sampled> {
        sampling.validate()?;
        let (l, n, k) = (self.config.text_len, self.config.image_len(), self.config.image_vocab);
        let b = text.len() / l;
        if b == 0 || text.len() != b * l {
            return Err(Error::shape("dalle.sample", format!("{} text ids are not rows of L = {l}", text.len())));
        }
        let (h, w) = self.config.grid;
        no_grad(|| {
            let mut seqs: Vec<Vec<usize>> = text.chunks(l).map(<[usize]>::to_vec).collect();
            let mut logits = Array3::<f32>::zeros((b, n, k));
            let mut cache = self.transformer.new_cache();
            for step in 0..n {
                let last = if cached { self.next_logits_cached(&seqs, &mut cache)? } else { self.next_logits(&seqs)? }; // (B, K)
                for (i, seq) in seqs.iter_mut().enumerate() {
                    let row: Vec<f32> = last.index_axis(Axis(0), i).iter().copied().collect();
                    logits.slice_mut(ndarray::s![i, step, ..]).assign(&last.index_axis(Axis(0), i));
                    seq.push(sampling.pick(&row, rng));
                }
                watch(step + 1, n);
            }
            let tokens = Array3::from_shape_fn((b, h, w), |(i, r, c)| seqs[i][l + r * w + c]);
            Ok(Sampled { tokens, logits })
        })
    }
    // ANCHOR_END: sample

    /// The reference: the whole sequence so far through the model, the last position's image logits `(B, K)`.
    fn next_logits(&self, seqs: &[Vec<usize>]) -> Result<ndarray::Array2<f32>> {
        let (b, t) = (seqs.len(), seqs[0].len());
        let ids: Vec<usize> = seqs.iter().flatten().copied().collect();
        let (_, image) = self.forward(&ids, b, t, false)?;
        last_position(&image.expect("the last text position predicts an image token"))
    }

    // ANCHOR: cached_step
    /// The positions not yet in `cache` (the caption at the first step, then one
    /// token) through every block with its mask rows; the last position's image logits `(B, K)`.
    fn next_logits_cached(&self, seqs: &[Vec<usize>], cache: &mut crate::nn::KvCache) -> Result<ndarray::Array2<f32>> {
        let (b, offset) = (seqs.len(), cache.len());
        let t = seqs[0].len() - offset;
        let ids: Vec<usize> = seqs.iter().flat_map(|s| s[offset..].iter().copied()).collect();
        let mut x = self.embed(&ids, b, t, offset)?; // (B, t, C) at positions offset..offset + t
        for ((block, layer), mask) in self.transformer.blocks.iter().zip(cache.layers.iter_mut()).zip(self.layer_masks(t, offset)) {
            x = block.forward_cached_masked(&x, layer, &mask)?.0; // mask (t, offset + t)
        }
        if let Some(ln) = &self.transformer.ln_f {
            x = crate::nn::Forward::forward(ln, &x)?;
        }
        let (_, image) = self.heads(&x, offset)?;
        last_position(&image.expect("the last text position predicts an image token"))
    }
    // ANCHOR_END: cached_step
}

/// `(B, t, K)` -> the last position, `(B, K)`.
fn last_position(logits: &Tensor) -> Result<ndarray::Array2<f32>> {
    let t = logits.shape()[1];
    let last = logits.narrow(1, t - 1, 1)?.to_array(); // (B, 1, K)
    let s = last.shape().to_vec();
    last.into_shape_with_order((s[0], s[2])).map_err(|e| Error::shape("dalle.sample", e.to_string()))
}
