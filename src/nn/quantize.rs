//! Vector quantization: replace each encoder output by its nearest codebook vector.
//!
//! VQ-VAE (van den Oord et al. 2017, §3.1–3.2). For an encoder output
//! `z_e ∈ R^D` and a codebook `e_1 … e_K ∈ R^D`:
//!
//! ```text
//! k*        = argmin_k ‖z_e - e_k‖²                         (eq. 1)
//! z_q       = e_{k*}
//! L         = L_rec(x, D(z_q)) + ‖sg[z_e] - e‖² + β ‖z_e - sg[e]‖²   (eq. 3)
//! ```
//!
//! The argmin has no gradient, so the decoder's gradient at `z_q` is copied to
//! `z_e` (the straight-through estimator, written `z_q = z_e + sg[e - z_e]`).
//! The codebook learns from the second term (or from an exponential moving
//! average of the encoder outputs assigned to each code, Appendix A.1), and the
//! third ("commitment") term keeps the encoder close to the codes it picks.
//!
//! Codes that no encoder output picks for a while are "dead": they never get a
//! gradient and never come back. [`VectorQuantizer`] can restart them from
//! random encoder outputs of the current batch. Codebook health is measured by
//! the usage (fraction of codes picked in a batch) and the perplexity
//! `exp(-Σ_k p_k log p_k)` of the code histogram `p` (K when all codes are used
//! equally, 1 when one code takes everything).
//!
//! [`ProductQuantizer`] splits the vector into G groups, quantizes each with its
//! own codebook, concatenates and maps the result linearly (wav2vec 2.0 §2,
//! which makes `K^G` combinations out of `G·K` codes).

use std::sync::Mutex;

use ndarray::parallel::prelude::*;
use ndarray::{Array2, ArrayD, Axis, Ix2};

use super::layers::Linear;
use super::module::{visit_child, Forward, Module};
use crate::tensor::{no_grad, Rng, Tensor};
use crate::{Error, Result};

/// How the codebook is learned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CodebookUpdate {
    /// By gradient of the codebook loss `‖sg[z_e] - e‖²` (the codebook is a parameter).
    Loss,
    /// By exponential moving averages of assigned encoder outputs (the codebook is a buffer).
    Ema {
        /// γ in `N_k ← γ N_k + (1 - γ) n_k` (0.99 in the paper).
        decay: f32,
        /// ε of the Laplace smoothing of the counts `N_k`.
        epsilon: f32,
    },
}

/// Hyper-parameters of a [`VectorQuantizer`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantizerConfig {
    /// Number of codes K.
    pub num_codes: usize,
    /// Code dimension D.
    pub dim: usize,
    /// Commitment weight β (0.25 in the paper).
    pub beta: f32,
    /// Loss-driven or EMA codebook.
    pub update: CodebookUpdate,
    /// Restart a code unused for this many training steps (`None`: never).
    pub restart_after: Option<usize>,
}

impl QuantizerConfig {
    /// `K` codes of dimension `D`, β = 0.25, loss-driven codebook, no restarts.
    pub fn new(num_codes: usize, dim: usize) -> Self {
        QuantizerConfig { num_codes, dim, beta: 0.25, update: CodebookUpdate::Loss, restart_after: None }
    }

    /// The EMA codebook with decay 0.99 and Laplace ε = 1e-5.
    pub fn with_ema(mut self) -> Self {
        self.update = CodebookUpdate::Ema { decay: 0.99, epsilon: 1e-5 };
        self
    }

    /// Restart codes unused for `steps` training steps.
    pub fn with_restarts(mut self, steps: usize) -> Self {
        self.restart_after = Some(steps);
        self
    }
}

/// What one quantization returns.
pub struct Quantized {
    /// `z_e + sg[e - z_e]`: the codes' values, the encoder's gradient. `(N, D)`
    pub z_q: Tensor,
    /// The chosen code of each row. `(N)`
    pub indices: Vec<usize>,
    /// `mean ‖sg[z_e] - e‖²` (zero, and without graph, for the EMA codebook).
    pub codebook_loss: Tensor,
    /// `β · mean ‖z_e - sg[e]‖²`.
    pub commitment_loss: Tensor,
    /// Fraction of the K codes picked at least once in this batch.
    pub usage: f32,
    /// `exp(-Σ p log p)` of this batch's code histogram.
    pub perplexity: f32,
}

impl Quantized {
    /// `codebook_loss + commitment_loss`, the quantizer's part of eq. 3.
    pub fn loss(&self) -> Result<Tensor> {
        self.codebook_loss.add(&self.commitment_loss)
    }
}

/// A codebook of K vectors of dimension D and the nearest-neighbour lookup.
pub struct VectorQuantizer {
    /// The codes `e_k`, `(K, D)`; a parameter unless the codebook is EMA-updated.
    pub codebook: Tensor,
    /// EMA counts `N_k`, `(K)` (EMA codebook only).
    pub ema_cluster_size: Option<Tensor>,
    /// EMA sums `m_k`, `(K, D)` (EMA codebook only).
    pub ema_embed_sum: Option<Tensor>,
    /// The hyper-parameters.
    pub config: QuantizerConfig,
    /// Training steps since each code was last picked, and the restart generator.
    restart_state: Mutex<(Vec<usize>, Rng)>,
}

impl VectorQuantizer {
    /// Codes initialised `U(-1/K, 1/K)` as in the reference implementation.
    /// Errors when K or D is zero or β is negative.
    pub fn new(config: QuantizerConfig, rng: &mut Rng) -> Result<Self> {
        let QuantizerConfig { num_codes: k, dim: d, beta, .. } = config;
        if k == 0 || d == 0 {
            return Err(Error::Config(format!("vector quantizer: num_codes = {k} and dim = {d} must both be positive")));
        }
        if beta < 0.0 {
            return Err(Error::Config(format!("vector quantizer: commitment weight beta = {beta} must be >= 0")));
        }
        let bound = 1.0 / k as f32;
        let init = rng.uniform_array(&[k, d], -bound, bound);
        let (codebook, size, sum) = match config.update {
            CodebookUpdate::Loss => (Tensor::param(init), None, None),
            CodebookUpdate::Ema { .. } => {
                (Tensor::new(init.clone()), Some(Tensor::ones(&[k])), Some(Tensor::new(init)))
            }
        };
        Ok(VectorQuantizer {
            codebook,
            ema_cluster_size: size,
            ema_embed_sum: sum,
            config,
            restart_state: Mutex::new((vec![0; k], rng.fork())),
        })
    }

    /// The dead-code restart bookkeeping (steps since each code was picked, and
    /// the restart generator) as text, for a resumable checkpoint.
    pub fn restart_state(&self) -> String {
        let guard = self.restart_state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let idle: Vec<String> = guard.0.iter().map(usize::to_string).collect();
        format!("{}|{}", guard.1.state(), idle.join(","))
    }

    /// Restores what [`VectorQuantizer::restart_state`] saved; an error names what is malformed.
    pub fn set_restart_state(&self, text: &str) -> Result<()> {
        let bad = |what: &str| Error::Checkpoint(format!("quantizer restart state {}: {what}", crate::error::quote(text)));
        let (rng, idle) = text.split_once('|').ok_or_else(|| bad("expected `generator|counts`"))?;
        let idle: Vec<usize> = idle.split(',').map(|v| v.parse().map_err(|_| bad("a count is not a whole number"))).collect::<Result<_>>()?;
        if idle.len() != self.config.num_codes {
            return Err(bad(&format!("{} counts for {} codes", idle.len(), self.config.num_codes)));
        }
        let rng = Rng::from_state(rng)?;
        *self.restart_state.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = (idle, rng);
        Ok(())
    }

    /// A loss-driven quantizer around a given codebook `(K, D)` (e.g. a parameter under test).
    pub fn from_codebook(codebook: Tensor, beta: f32) -> Result<Self> {
        let shape = codebook.shape();
        if shape.len() != 2 {
            return Err(Error::shape("vector quantizer", format!("codebook {shape:?} must be (K, D)")));
        }
        let config = QuantizerConfig { beta, ..QuantizerConfig::new(shape[0], shape[1]) };
        let mut q = VectorQuantizer::new(config, &mut Rng::new(0))?;
        q.codebook = codebook;
        Ok(q)
    }

    /// Number of codes K.
    pub fn num_codes(&self) -> usize {
        self.config.num_codes
    }

    /// Code dimension D.
    pub fn dim(&self) -> usize {
        self.config.dim
    }

    // ANCHOR: nearest
    /// The nearest code of each row of `z (N, D)`, by
    /// `‖z - e‖² = ‖z‖² - 2 z·e + ‖e‖²` (one matmul instead of N·K differences).
    pub fn nearest(&self, z: &ArrayD<f32>) -> Result<Vec<usize>> {
        let z = self.check_rows(z)?;
        let e = self.codebook.data().clone().into_dimensionality::<Ix2>().expect("codebook is 2-D");
        let cross = z.dot(&e.t()); // (N, K) = z · eᵀ
        let e_sq: Vec<f32> = e.rows().into_iter().map(|r| r.dot(&r)).collect(); // ‖e_k‖²
        // ‖z‖² is the same for every k of a row, so it cannot change the argmin.
        // (The rows are independent: split between the threads, collected in order.)
        Ok(cross
            .axis_iter(Axis(0))
            .into_par_iter()
            .map(|row| {
                let mut best = (0, f32::INFINITY);
                for (k, (&c, &es)) in row.iter().zip(&e_sq).enumerate() {
                    let dist = es - 2.0 * c;
                    if dist < best.1 {
                        best = (k, dist);
                    }
                }
                best.0
            })
            .collect())
    }
    // ANCHOR_END: nearest

    /// [`VectorQuantizer::nearest`] of a tensor: searched on the GPU when the rows are
    /// there, so that only the indices come back.
    fn nearest_of(&self, z: &Tensor) -> Result<Vec<usize>> {
        #[cfg(feature = "wgpu")]
        if let Some(found) = crate::ops::on_gpu::nearest_codes(z, &self.codebook) {
            return Ok(found);
        }
        self.nearest(&z.data())
    }

    /// `Σ_{i : k*_i = k} z_i` for every code, `(K, D)` (on the GPU when the rows are there).
    fn code_sums(&self, z: &Tensor, indices: &[usize]) -> Result<ArrayD<f32>> {
        #[cfg(feature = "wgpu")]
        if let Some(sums) = crate::ops::on_gpu::code_sums(z, indices, self.num_codes()) {
            return Ok(sums);
        }
        let z = self.check_rows(&z.data())?;
        let mut sums = Array2::<f32>::zeros((self.num_codes(), self.dim()));
        for (row, &k) in z.rows().into_iter().zip(indices) {
            let mut dst = sums.row_mut(k);
            dst += &row;
        }
        Ok(sums.into_dyn())
    }

    /// The codes of `indices` as a constant `(N, D)` array: the decoder's input at inference.
    pub fn lookup(&self, indices: &[usize]) -> Result<Tensor> {
        no_grad(|| Tensor::embedding(&self.codebook, indices, &[indices.len()]))
    }

    fn check_rows(&self, z: &ArrayD<f32>) -> Result<Array2<f32>> {
        if z.ndim() != 2 || z.shape()[1] != self.dim() {
            return Err(Error::shape("vector quantizer", format!("input {:?} must be (N, {})", z.shape(), self.dim())));
        }
        Ok(z.to_owned().into_dimensionality::<Ix2>().expect("checked 2-D"))
    }

    // ANCHOR: forward
    /// Quantize the rows of `z_e (N, D)`. With `training`, the EMA codebook and
    /// the dead-code counters are updated (after the losses are computed).
    pub fn forward(&self, z_e: &Tensor, training: bool) -> Result<Quantized> {
        let indices = self.nearest_of(z_e)?;
        let n = indices.len();
        // e = e_{k*}: a gather, so the codebook loss scatters its gradient to the picked rows.
        let e = Tensor::embedding(&self.codebook, &indices, &[n])?; // (N, D)
        // Straight-through: the value of e, the gradient of z_e (eq. 3's sg[·] = detach).
        let z_q = z_e.add(&e.sub(z_e)?.detach())?;
        let codebook_loss = match self.config.update {
            CodebookUpdate::Loss => z_e.detach().mse(&e)?, // ‖sg[z_e] - e‖²
            CodebookUpdate::Ema { .. } => Tensor::scalar(0.0),
        };
        let commitment_loss = z_e.mse(&e.detach())?.scale(self.config.beta); // β ‖z_e - sg[e]‖²
        let counts = code_counts(&indices, self.num_codes());
        let (usage, perplexity) = usage_and_perplexity(&counts);
        if training {
            if let CodebookUpdate::Ema { decay, epsilon } = self.config.update {
                self.ema_update(z_e, &indices, &counts, decay, epsilon)?;
            }
            self.restart_dead_codes(z_e, &counts)?;
        }
        Ok(Quantized { z_q, indices, codebook_loss, commitment_loss, usage, perplexity })
    }
    // ANCHOR_END: forward

    // ANCHOR: ema
    /// Appendix A.1: `N_k ← γ N_k + (1-γ) n_k`, `m_k ← γ m_k + (1-γ) Σ_{i: k*_i = k} z_i`,
    /// Laplace smoothing `N_k ← (N_k + ε) / (n + K ε) · n` with `n = Σ N_k`, then `e_k = m_k / N_k`.
    fn ema_update(&self, z: &Tensor, indices: &[usize], counts: &[usize], decay: f32, epsilon: f32) -> Result<()> {
        let (size, sum) = match (&self.ema_cluster_size, &self.ema_embed_sum) {
            (Some(s), Some(m)) => (s, m),
            _ => return Err(Error::Config("EMA codebook without its EMA buffers".into())),
        };
        let batch_sum = self.code_sums(z, indices)?; // Σ_{i: k*_i = k} z_i, (K, D)
        size.update(|n| {
            for (nk, &c) in n.iter_mut().zip(counts) {
                *nk = decay * *nk + (1.0 - decay) * c as f32;
            }
        });
        sum.update(|m| {
            m.zip_mut_with(&batch_sum, |mk, &bk| *mk = decay * *mk + (1.0 - decay) * bk);
        });
        let n_k = size.to_array();
        let total: f32 = n_k.sum();
        let k = self.num_codes() as f32;
        let smoothed: Vec<f32> = n_k.iter().map(|&nk| (nk + epsilon) / (total + k * epsilon) * total).collect();
        let m = sum.to_array();
        self.codebook.update(|e| {
            for (kk, mut row) in e.axis_iter_mut(Axis(0)).enumerate() {
                row.assign(&(&m.index_axis(Axis(0), kk) / smoothed[kk]));
            }
        });
        Ok(())
    }
    // ANCHOR_END: ema

    // ANCHOR: restart
    /// A code not picked for `restart_after` steps is moved onto a random encoder
    /// output of this batch, where it will be picked again.
    fn restart_dead_codes(&self, z: &Tensor, counts: &[usize]) -> Result<usize> {
        let Some(patience) = self.config.restart_after else { return Ok(0) };
        let mut guard = self.restart_state.lock().map_err(|_| Error::Msg("quantizer restart state poisoned".into()))?;
        let (idle, rng) = &mut *guard;
        let mut dead = Vec::new();
        for (k, (steps, &c)) in idle.iter_mut().zip(counts).enumerate() {
            *steps = if c > 0 { 0 } else { *steps + 1 };
            if *steps >= patience {
                dead.push(k);
                *steps = 0;
            }
        }
        if dead.is_empty() || z.dim(0) == 0 {
            return Ok(0);
        }
        let z = self.check_rows(&z.data())?; // read back from the GPU only when a code died
        let picks: Vec<usize> = dead.iter().map(|_| rng.below(z.nrows())).collect();
        let set_rows = |a: &mut ArrayD<f32>| {
            for (&k, &i) in dead.iter().zip(&picks) {
                a.index_axis_mut(Axis(0), k).assign(&z.row(i));
            }
        };
        self.codebook.update(set_rows);
        if let (Some(size), Some(sum)) = (&self.ema_cluster_size, &self.ema_embed_sum) {
            sum.update(set_rows);
            size.update(|n| dead.iter().for_each(|&k| n[k] = 1.0));
        }
        Ok(dead.len())
    }
    // ANCHOR_END: restart

    /// Quantize a feature map `(B, D, H, W)`: returns `z_q (B, D, H, W)` and the
    /// indices in row-major `(B, H, W)` order.
    pub fn forward_map(&self, z_e: &Tensor, training: bool) -> Result<(Tensor, Quantized)> {
        let s = z_e.shape();
        if s.len() != 4 {
            return Err(Error::shape("vector quantizer", format!("feature map {s:?} must be (B, D, H, W)")));
        }
        let (b, d, h, w) = (s[0], s[1], s[2], s[3]);
        let rows = z_e.permute(&[0, 2, 3, 1])?.reshape(&[(b * h * w) as isize, d as isize])?; // (BHW, D)
        let q = self.forward(&rows, training)?;
        let map = q.z_q.reshape(&[b as isize, h as isize, w as isize, d as isize])?.permute(&[0, 3, 1, 2])?; // (B, D, H, W)
        Ok((map, q))
    }
}

impl Module for VectorQuantizer {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        f("codebook", &self.codebook);
        if let Some(s) = &self.ema_cluster_size {
            f("ema_cluster_size", s);
        }
        if let Some(m) = &self.ema_embed_sum {
            f("ema_embed_sum", m);
        }
    }
}

/// How many times each of `k` codes occurs in `indices`.
pub fn code_counts(indices: &[usize], k: usize) -> Vec<usize> {
    let mut counts = vec![0; k];
    for &i in indices {
        if i < k {
            counts[i] += 1;
        }
    }
    counts
}

// ANCHOR: perplexity
/// (fraction of codes used, `exp(-Σ_k p_k ln p_k)` with `p_k = n_k / Σ n`).
pub fn usage_and_perplexity(counts: &[usize]) -> (f32, f32) {
    let total: usize = counts.iter().sum();
    if counts.is_empty() || total == 0 {
        return (0.0, 0.0);
    }
    let used = counts.iter().filter(|&&c| c > 0).count() as f32 / counts.len() as f32;
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / total as f64;
            -p * p.ln()
        })
        .sum();
    (used, entropy.exp() as f32)
}
// ANCHOR_END: perplexity

/// G codebooks over G slices of the vector, concatenated, then a linear map.
pub struct ProductQuantizer {
    /// One quantizer per group, each of dimension `D / G`.
    pub groups: Vec<VectorQuantizer>,
    /// `(D) -> (out)` after concatenation.
    pub proj: Linear,
}

impl ProductQuantizer {
    /// `groups` codebooks of `num_codes` codes over `dim / groups` dimensions each,
    /// then `Linear(dim, out_dim)`. Errors when `dim` does not split into `groups`.
    pub fn new(groups: usize, num_codes: usize, dim: usize, out_dim: usize, rng: &mut Rng) -> Result<Self> {
        if groups == 0 || !dim.is_multiple_of(groups) {
            return Err(Error::Config(format!("product quantizer: dim {dim} does not split into {groups} groups")));
        }
        let qs = (0..groups)
            .map(|_| VectorQuantizer::new(QuantizerConfig::new(num_codes, dim / groups), rng))
            .collect::<Result<Vec<_>>>()?;
        Ok(ProductQuantizer { groups: qs, proj: Linear::new(dim, out_dim, true, rng) })
    }

    /// `z (N, D)` -> (`(N, out)`, the indices `(N, G)` row-major, the summed quantizer loss).
    pub fn forward(&self, z: &Tensor, training: bool) -> Result<(Tensor, Vec<usize>, Tensor)> {
        let g = self.groups.len();
        let width = z.dim(-1) / g;
        let n = z.dim(0);
        let mut parts = Vec::with_capacity(g);
        let mut loss = Tensor::scalar(0.0);
        let mut group_indices = Vec::with_capacity(g);
        for (i, q) in self.groups.iter().enumerate() {
            let out = q.forward(&z.narrow(-1, i * width, width)?.contiguous(), training)?; // (N, D/G)
            loss = loss.add(&out.loss()?)?;
            parts.push(out.z_q);
            group_indices.push(out.indices);
        }
        let refs: Vec<&Tensor> = parts.iter().collect();
        let joined = Tensor::concat(&refs, -1)?; // (N, D)
        let indices = (0..n).flat_map(|r| group_indices.iter().map(move |gi| gi[r])).collect();
        Ok((self.proj.forward(&joined)?, indices, loss))
    }
}

impl Module for ProductQuantizer {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        for (i, q) in self.groups.iter().enumerate() {
            visit_child(&format!("groups.{i}"), q, f);
        }
        visit_child("proj", &self.proj, f);
    }
}
