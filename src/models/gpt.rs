//! A tiny GPT (Radford et al. 2018/2019): a causal transformer that predicts
//! the next token, `p(x_t | x_<t) = softmax(W_head h_t)`, trained with the
//! cross-entropy `L = -1/T Σ_t log p(x_{t+1} | x_≤t)`.
//!
//! ```text
//! h_0 = W_te[x] + W_pe[0..T]          token and learned position embeddings
//! h_L = Transformer(h_0, causal mask)  position t sees positions 0..=t only
//! logits = h_L W_headᵀ                 (B, T, V)
//! ```
//!
//! Chapter 1 trains one on Shapes captions; DALL-E 1 (chapter 7) is the same
//! decoder over text tokens followed by image tokens. Sampling decodes one
//! token at a time with a [`crate::nn::KvCache`], so each step costs one position.
//! Parameter names follow GPT-2: `wte.weight`, `wpe.weight`, `blocks.*`, `ln_f.*`, `lm_head.weight`.

use crate::nn::attention::causal_mask;
use crate::nn::{visit_child, Embedding, Forward, LearnedPositionEmbedding, Linear, Module, Transformer, TransformerConfig};
use crate::tensor::{no_grad, Rng, Tensor};
use crate::{Error, Result};

/// The shape of a [`Gpt`].
#[derive(Clone, Copy, Debug)]
pub struct GptConfig {
    /// Vocabulary size `V`.
    pub vocab_size: usize,
    /// The longest sequence `T_max` (rows of the position table).
    pub context_length: usize,
    /// The transformer stack (width, heads, layers, activation, dropout).
    pub transformer: TransformerConfig,
}

/// A decoder-only causal transformer language model.
pub struct Gpt {
    /// Token embedding `W_te (V, C)`.
    pub wte: Embedding,
    /// Learned positions `W_pe (T_max, C)`.
    pub wpe: LearnedPositionEmbedding,
    /// The blocks and `ln_f`.
    pub transformer: Transformer,
    /// `W_head (V, C)`, no bias.
    pub lm_head: Linear,
    /// The configuration.
    pub config: GptConfig,
}

impl Gpt {
    /// A model of `config`; errors name an invalid value.
    pub fn new(config: GptConfig, rng: &mut Rng) -> Result<Self> {
        if config.vocab_size == 0 || config.context_length == 0 {
            return Err(Error::Config(format!(
                "gpt: vocab_size {} and context_length {} must be positive",
                config.vocab_size, config.context_length
            )));
        }
        let c = config.transformer.dim;
        Ok(Gpt {
            wte: Embedding::new(config.vocab_size, c, 0.02, rng),
            wpe: LearnedPositionEmbedding::new(config.context_length, c, 0.02, rng),
            transformer: Transformer::new(config.transformer, rng)?,
            lm_head: Linear::new(c, config.vocab_size, false, rng),
            config,
        })
    }

    fn embed(&self, ids: &[usize], b: usize, t: usize, offset: usize) -> Result<Tensor> {
        let tokens = self.wte.forward(ids, &[b, t])?; // (B, T, C)
        tokens.add(&self.wpe.forward(t, offset)?) // + (T, C), broadcast over B
    }

    // ANCHOR: forward
    /// `ids` (row-major `(B, T)`) -> logits `(B, T, V)` and every block's attention `(B, H, T, T)`.
    pub fn forward(&self, ids: &[usize], b: usize, t: usize, training: bool) -> Result<(Tensor, Vec<Tensor>)> {
        let h = self.embed(ids, b, t, 0)?; // (B, T, C)
        let out = self.transformer.forward(&h, Some(&causal_mask(t, t)), training)?; // (B, T, C)
        Ok((self.lm_head.forward(&out.output)?, out.attention)) // (B, T, V)
    }
    // ANCHOR_END: forward

    /// The next-token loss of a batch of sequences `ids (B, T)`: predict
    /// `ids[:, 1:]` from `ids[:, :-1]`; targets equal to `ignore` (padding) do not count.
    pub fn loss(&self, ids: &[usize], b: usize, t: usize, ignore: Option<usize>, training: bool) -> Result<Tensor> {
        if t < 2 || ids.len() != b * t {
            return Err(Error::shape("gpt.loss", format!("{} ids for (B, T) = ({b}, {t}); need T >= 2", ids.len())));
        }
        let inputs: Vec<usize> = ids.chunks(t).flat_map(|row| row[..t - 1].iter().copied()).collect();
        let targets: Vec<usize> = ids.chunks(t).flat_map(|row| row[1..].iter().copied()).collect();
        let (logits, _) = self.forward(&inputs, b, t - 1, training)?; // (B, T-1, V)
        logits.reshape(&[(b * (t - 1)) as isize, self.config.vocab_size as isize])?.cross_entropy_with(&targets, ignore, 0.0)
    }

    // ANCHOR: generate
    /// Continue each prompt (all of one length) until `stop` or `max_len` tokens,
    /// one token per step through a [`crate::nn::KvCache`]. `temperature = 0` is greedy
    /// (argmax); otherwise sample from `softmax(logits / temperature)`.
    pub fn generate(&self, prompts: &[Vec<usize>], max_len: usize, temperature: f32, stop: Option<usize>, rng: &mut Rng) -> Result<Vec<Vec<usize>>> {
        let b = prompts.len();
        let t0 = prompts.first().map_or(0, Vec::len);
        if t0 == 0 || prompts.iter().any(|p| p.len() != t0) || max_len > self.config.context_length {
            return Err(Error::shape("gpt.generate", format!("prompts need one positive length and max_len {max_len} <= {}", self.config.context_length)));
        }
        no_grad(|| {
            let mut seqs = prompts.to_vec();
            let mut done = vec![false; b];
            let mut cache = self.transformer.new_cache();
            let mut step_ids: Vec<usize> = seqs.iter().flatten().copied().collect(); // the whole prompt first
            while seqs[0].len() < max_len && !done.iter().all(|&d| d) {
                let t = step_ids.len() / b;
                let h = self.embed(&step_ids, b, t, cache.len())?; // positions cache.len()..
                let out = self.transformer.forward_cached(&h, &mut cache)?.output; // (B, t, C)
                let last = self.lm_head.forward(&out.narrow(1, t - 1, 1)?)?.to_array(); // (B, 1, V)
                step_ids.clear();
                for (i, seq) in seqs.iter_mut().enumerate() {
                    let logits: Vec<f32> = last.index_axis(ndarray::Axis(0), i).iter().copied().collect();
                    let next = if done[i] { stop.unwrap_or(0) } else { pick(&logits, temperature, rng) };
                    done[i] |= Some(next) == stop;
                    seq.push(next);
                    step_ids.push(next);
                }
            }
            Ok(seqs)
        })
    }
    // ANCHOR_END: generate
}

/// Argmax when `temperature <= 0`, else a sample from `softmax(logits / temperature)`.
fn pick(logits: &[f32], temperature: f32, rng: &mut Rng) -> usize {
    let argmax = logits.iter().enumerate().fold(0, |best, (i, &v)| if v > logits[best] { i } else { best });
    if temperature <= 0.0 {
        return argmax;
    }
    let m = logits[argmax];
    let weights: Vec<f64> = logits.iter().map(|&l| (((l - m) / temperature) as f64).exp()).collect();
    let mut u = rng.uniform() as f64 * weights.iter().sum::<f64>();
    for (i, w) in weights.iter().enumerate() {
        u -= w;
        if u <= 0.0 {
            return i;
        }
    }
    argmax
}

impl Module for Gpt {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_child("wte", &self.wte, f);
        visit_child("wpe", &self.wpe, f);
        self.transformer.visit(f);
        visit_child("lm_head", &self.lm_head, f);
    }
}
