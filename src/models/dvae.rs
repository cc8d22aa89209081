//! DALL-E 1's discrete VAE (Ramesh et al. 2021, §2.1 and Appendix A).
//!
//! The encoder outputs logits `ℓ (B, K, h, w)` over K codes at each grid
//! position: `q_φ(z | x)` is a categorical per position. Training maximises the
//! evidence lower bound
//!
//! ```text
//! ln p(x) ≥ E_{z ~ q(z|x)} [ln p_θ(x | z)] - β KL(q_φ(z | x) ‖ p_ψ(z))
//! ```
//!
//! with the prior `p_ψ` uniform over the K codes in the first stage, so per position
//! `KL(q ‖ U) = Σ_k q_k ln q_k + ln K` (the negative entropy plus ln K). A categorical
//! sample has no gradient, so training uses the gumbel-softmax relaxation at a
//! temperature τ annealed from 1 to 1/16, and β rises from 0 (the paper: to 6.6);
//! the paper found the larger β "promotes better codebook usage". The decoder
//! reads the relaxed one-hot `(B, K, h, w)` through a 1x1 convolution, which is a
//! lookup of a K-entry codebook when the input is exactly one-hot; at inference
//! the tokens are the argmax of the logits.
//!
//! Blocks follow the released code's shape: an identity path (a 1x1 convolution
//! when the width changes) plus a residual path of ReLUs and convolutions scaled
//! by `1 / n_layers²`; groups of blocks are separated by 2x2 max pooling in the
//! encoder and by nearest upsampling in the decoder, with the width doubling at
//! each coarser group. The reconstruction term here is the Bernoulli (BCE) or
//! Gaussian (MSE) likelihood rather than the paper's logit-Laplace.

use ndarray::{Array3, Array4, ArrayD, IxDyn};

use super::image_tokenizer::ImageTokenizer;
use super::vqvae::{mean_over_batches, psnr, to_array4, ReconstructionLoss, ReconstructionReport};
use crate::data::ImageDataset;
use crate::nn::gumbel::{argmax, gumbel_softmax};
use crate::nn::quantize::{code_counts, usage_and_perplexity};
use crate::nn::{visit_child, visit_list, Conv2d, Forward, Module};
use crate::tensor::{no_grad, Rng, Tensor};
use crate::{Error, Result};

/// Hyper-parameters of a [`Dvae`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DvaeConfig {
    /// Image channels.
    pub in_channels: usize,
    /// Width of the finest group; group g has `hidden · 2^g` channels.
    pub hidden: usize,
    /// Number of 2x downsamplings (groups = downsamples + 1).
    pub downsamples: usize,
    /// Blocks per group.
    pub blocks_per_group: usize,
    /// Codebook size K.
    pub num_codes: usize,
    /// The reconstruction term.
    pub reconstruction: ReconstructionLoss,
}

impl DvaeConfig {
    /// MNIST: 28x28 -> a 7x7 grid of 128 codes; widths 8, 16, 32.
    pub fn mnist() -> Self {
        DvaeConfig { in_channels: 1, hidden: 8, downsamples: 2, blocks_per_group: 1, num_codes: 128, reconstruction: ReconstructionLoss::Bce }
    }

    /// The paper's shape: 256x256x3 -> a 32x32 grid of 8192 codes (3 downsamplings),
    /// with `hidden` channels at full resolution (the paper: 256, 2 blocks per group).
    pub fn paper_shape(hidden: usize) -> Self {
        DvaeConfig { in_channels: 3, hidden, downsamples: 3, blocks_per_group: 1, num_codes: 8192, reconstruction: ReconstructionLoss::Mse }
    }

    fn width(&self, group: usize) -> usize {
        self.hidden << group
    }
}

// ANCHOR: block
/// `id(x) + (1 / n_layers²) · conv1x1(relu(conv3x3(relu(x))))`, `id` a 1x1 convolution when the width changes.
pub struct DvaeBlock {
    /// `in -> out` when they differ.
    pub id_path: Option<Conv2d>,
    /// 3x3, `in -> out`.
    pub conv1: Conv2d,
    /// 1x1, `out -> out`.
    pub conv2: Conv2d,
    /// `1 / n_layers²`, which keeps a deep stack near the identity at initialisation.
    pub post_gain: f32,
}

impl DvaeBlock {
    /// A block from `c_in` to `c_out` channels in a stack of `n_layers` blocks.
    pub fn new(c_in: usize, c_out: usize, n_layers: usize, rng: &mut Rng) -> Self {
        DvaeBlock {
            id_path: (c_in != c_out).then(|| Conv2d::new(c_in, c_out, 1, 1, 0, true, rng)),
            conv1: Conv2d::new(c_in, c_out, 3, 1, 1, true, rng),
            conv2: Conv2d::new(c_out, c_out, 1, 1, 0, true, rng),
            post_gain: 1.0 / (n_layers * n_layers) as f32,
        }
    }
}

impl Forward for DvaeBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let id = match &self.id_path {
            Some(conv) => conv.forward(x)?,
            None => x.clone(),
        };
        let h = self.conv2.forward(&self.conv1.forward(&x.relu())?.relu())?; // (B, out, H, W)
        id.add(&h.scale(self.post_gain))
    }
}
// ANCHOR_END: block

impl Module for DvaeBlock {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        if let Some(c) = &self.id_path {
            visit_child("id_path", c, f);
        }
        visit_child("conv1", &self.conv1, f);
        visit_child("conv2", &self.conv2, f);
    }
}

/// The dVAE: encoder to logits over codes, decoder from (relaxed) one-hot codes.
pub struct Dvae {
    /// 3x3, image -> `hidden`.
    pub enc_input: Conv2d,
    /// Encoder groups (coarsening), `blocks_per_group` blocks each.
    pub enc_blocks: Vec<DvaeBlock>,
    /// 1x1, widest -> K logits.
    pub enc_output: Conv2d,
    /// 1x1, K -> widest: the codebook, read by a one-hot input.
    pub dec_input: Conv2d,
    /// Decoder groups (refining).
    pub dec_blocks: Vec<DvaeBlock>,
    /// 1x1, `hidden` -> image channels (logits).
    pub dec_output: Conv2d,
    /// The hyper-parameters.
    pub config: DvaeConfig,
}

/// One training pass of the dVAE.
pub struct DvaeOutput {
    /// Reconstruction in `[0, 1]` (no graph).
    pub x_hat: Tensor,
    /// `-E[ln p(x | z)]`, mean per pixel.
    pub reconstruction_loss: Tensor,
    /// `KL(q(z|x) ‖ U(K))` summed over grid positions, divided by the pixel count (same units).
    pub kl: Tensor,
    /// `mean (x - x̂)²` (no graph).
    pub mse: f32,
    /// The argmax codes `(B·h·w)`, row-major.
    pub indices: Vec<usize>,
}

/// The paper's two schedules: τ annealed 1 -> 1/16 (cosine) and β ramped 0 -> `kl_weight_max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DvaeSchedule {
    /// Steps of the temperature annealing.
    pub anneal_steps: usize,
    /// Steps of the KL weight's linear ramp.
    pub kl_ramp_steps: usize,
    /// Final KL weight β.
    pub kl_weight_max: f32,
}

impl DvaeSchedule {
    // ANCHOR: schedule
    /// `τ(t) = 1/16 + (1 - 1/16) (1 + cos(π min(t/T, 1))) / 2`.
    pub fn temperature(&self, step: usize) -> f32 {
        let t = (step as f32 / self.anneal_steps.max(1) as f32).min(1.0);
        1.0 / 16.0 + (1.0 - 1.0 / 16.0) * 0.5 * (1.0 + (std::f32::consts::PI * t).cos())
    }

    /// `β(t) = β_max min(t / T_β, 1)`.
    pub fn kl_weight(&self, step: usize) -> f32 {
        self.kl_weight_max * (step as f32 / self.kl_ramp_steps.max(1) as f32).min(1.0)
    }
    // ANCHOR_END: schedule
}

impl Dvae {
    /// A model with random weights. Errors on a zero width, no codes, or no groups.
    pub fn new(config: DvaeConfig, rng: &mut Rng) -> Result<Self> {
        let DvaeConfig { in_channels: c, hidden, downsamples, blocks_per_group: n, num_codes: k, .. } = config;
        if c == 0 || hidden == 0 || n == 0 || k < 2 {
            return Err(Error::Config(format!(
                "dvae: in_channels = {c}, hidden = {hidden}, blocks_per_group = {n} must be positive and num_codes = {k} at least 2"
            )));
        }
        let groups = downsamples + 1;
        let n_layers = groups * n;
        let mut enc_blocks = Vec::new();
        let mut dec_blocks = Vec::new();
        for g in 0..groups {
            for i in 0..n {
                let c_in = if i == 0 && g > 0 { config.width(g - 1) } else { config.width(g) };
                enc_blocks.push(DvaeBlock::new(c_in, config.width(g), n_layers, rng));
            }
        }
        for g in (0..groups).rev() {
            for i in 0..n {
                let c_in = if i == 0 && g + 1 < groups { config.width(g + 1) } else { config.width(g) };
                dec_blocks.push(DvaeBlock::new(c_in, config.width(g), n_layers, rng));
            }
        }
        let widest = config.width(downsamples);
        Ok(Dvae {
            enc_input: Conv2d::new(c, hidden, 3, 1, 1, true, rng),
            enc_blocks,
            enc_output: Conv2d::new(widest, k, 1, 1, 0, true, rng),
            dec_input: Conv2d::new(k, widest, 1, 1, 0, true, rng),
            dec_blocks,
            dec_output: Conv2d::new(hidden, c, 1, 1, 0, true, rng),
            config,
        })
    }

    fn check_input(&self, x: &Tensor) -> Result<(usize, usize, usize)> {
        let s = x.shape();
        let f = 1 << self.config.downsamples;
        if s.len() != 4 || s[1] != self.config.in_channels || !s[2].is_multiple_of(f) || !s[3].is_multiple_of(f) {
            return Err(Error::shape(
                "dvae",
                format!("input {s:?} must be (B, {}, H, W) with H and W divisible by {f}", self.config.in_channels),
            ));
        }
        Ok((s[0], s[2] / f, s[3] / f))
    }

    /// `x (B, C, H, W)` -> logits `(B, K, h, w)`.
    pub fn encode_logits(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        let n = self.config.blocks_per_group;
        let mut h = self.enc_input.forward(x)?; // (B, hidden, H, W)
        for (i, block) in self.enc_blocks.iter().enumerate() {
            h = block.forward(&h)?;
            if (i + 1) % n == 0 && i + 1 < self.enc_blocks.len() {
                h = h.max_pool2d(2, 2)?; // (B, ·, H/2, W/2)
            }
        }
        self.enc_output.forward(&h.relu()) // (B, K, h, w)
    }

    /// A (relaxed) one-hot `(B, K, h, w)` -> image logits `(B, C, H, W)`.
    pub fn decode_logits(&self, z: &Tensor) -> Result<Tensor> {
        let n = self.config.blocks_per_group;
        let mut h = self.dec_input.forward(z)?; // (B, widest, h, w)
        for (i, block) in self.dec_blocks.iter().enumerate() {
            h = block.forward(&h)?;
            if (i + 1) % n == 0 && i + 1 < self.dec_blocks.len() {
                h = h.upsample_nearest2d(2)?; // (B, ·, 2h, 2w)
            }
        }
        self.dec_output.forward(&h.relu()) // (B, C, H, W)
    }

    // ANCHOR: forward
    /// The relaxed ELBO's two terms for a batch: a gumbel-softmax sample at
    /// temperature `tau`, its reconstruction, and the KL to the uniform prior.
    pub fn forward(&self, x: &Tensor, tau: f32, rng: &mut Rng) -> Result<DvaeOutput> {
        let (b, h, w) = self.check_input(x)?;
        let k = self.config.num_codes;
        let logits = self.encode_logits(x)?; // (B, K, h, w)
        let z = gumbel_softmax(&logits, tau, false, 1, rng)?; // softmax((ℓ + g) / τ) over K
        let x_logits = self.decode_logits(&z)?; // (B, C, H, W)
        let reconstruction_loss = self.config.reconstruction.of(&x_logits, x)?; // -ln p(x | z), per pixel
        // KL(q ‖ U) = Σ_k q_k ln q_k + ln K at each position, summed over positions
        let log_q = logits.log_softmax(1); // (B, K, h, w)
        let neg_entropy = log_q.exp().mul(&log_q)?.sum(); // Σ q ln q over B, K, h, w
        let kl_total = neg_entropy.add_scalar((b * h * w) as f32 * (k as f32).ln());
        let pixels = x.len() as f32; // divide by B·C·H·W: the same units as the per-pixel reconstruction
        let kl = kl_total.scale(1.0 / pixels);
        let x_hat = x_logits.sigmoid().detach();
        let mse = x_hat.mse(x)?.item();
        let indices = argmax_codes(&logits.data());
        Ok(DvaeOutput { x_hat, reconstruction_loss, kl, mse, indices })
    }
    // ANCHOR_END: forward

    /// Tokens `(B, h, w)` -> one-hot `(B, K, h, w)`.
    pub fn one_hot(&self, tokens: &Array3<usize>) -> Result<Tensor> {
        let k = self.config.num_codes;
        let (b, h, w) = tokens.dim();
        if let Some(&bad) = tokens.iter().find(|&&t| t >= k) {
            return Err(Error::shape("dvae decode", format!("token {bad} is beyond the codebook of {k}")));
        }
        let mut z = ArrayD::<f32>::zeros(IxDyn(&[b, k, h, w]));
        for ((i, y, x), &t) in tokens.indexed_iter() {
            z[[i, t, y, x]] = 1.0;
        }
        Ok(Tensor::new(z))
    }

    /// Reconstruction through the hard argmax tokens (inference), and codebook statistics, over a data set.
    pub fn evaluate(&self, data: &ImageDataset, batch_size: usize) -> Result<ReconstructionReport> {
        let k = self.config.num_codes;
        let mut counts = vec![0usize; k];
        let mse = mean_over_batches(data, batch_size, |x| {
            let tokens = self.tokens_of(x)?;
            for (c, n) in counts.iter_mut().zip(code_counts(&tokens.iter().copied().collect::<Vec<_>>(), k)) {
                *c += n;
            }
            let x_hat = self.decode_logits(&self.one_hot(&tokens)?)?.sigmoid();
            Ok(x_hat.mse(x)?.item() as f64)
        })?;
        let (usage, perplexity) = usage_and_perplexity(&counts);
        Ok(ReconstructionReport { mse, psnr: psnr(mse), usage, perplexity })
    }

    fn tokens_of(&self, x: &Tensor) -> Result<Array3<usize>> {
        let (b, h, w) = self.check_input(x)?;
        let logits = no_grad(|| self.encode_logits(x))?;
        let codes = argmax_codes(&logits.data());
        Ok(Array3::from_shape_vec((b, h, w), codes).expect("one token per cell"))
    }
}

/// The argmax over axis 1 of `(B, K, h, w)` logits, in row-major `(B, h, w)` order.
fn argmax_codes(logits: &ArrayD<f32>) -> Vec<usize> {
    let s = logits.shape();
    let (b, k, h, w) = (s[0], s[1], s[2], s[3]);
    let mut out = Vec::with_capacity(b * h * w);
    for i in 0..b {
        for y in 0..h {
            for x in 0..w {
                out.push(argmax((0..k).map(|c| logits[[i, c, y, x]])));
            }
        }
    }
    out
}

impl Module for Dvae {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_child("encoder.input", &self.enc_input, f);
        visit_list("encoder.blocks", &self.enc_blocks, f);
        visit_child("encoder.output", &self.enc_output, f);
        visit_child("decoder.input", &self.dec_input, f);
        visit_list("decoder.blocks", &self.dec_blocks, f);
        visit_child("decoder.output", &self.dec_output, f);
    }
}

impl ImageTokenizer for Dvae {
    fn encode(&self, images: &Array4<f32>) -> Result<Array3<usize>> {
        self.tokens_of(&Tensor::new(images.clone().into_dyn()))
    }

    fn decode(&self, tokens: &Array3<usize>) -> Result<Array4<f32>> {
        let z = self.one_hot(tokens)?;
        to_array4(&no_grad(|| self.decode_logits(&z))?.sigmoid())
    }

    fn vocab_size(&self) -> usize {
        self.config.num_codes
    }

    fn downsampling(&self) -> usize {
        1 << self.config.downsamples
    }
}
