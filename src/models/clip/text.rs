//! The text tower: a causal transformer over BPE tokens, summarised at EOT.
//!
//! ```text
//! x₀ = token_embedding[ids] + position_embedding[0..T]      (B, T, C)
//! x  = final_layer_norm(Encoder(x₀, causal mask))           (B, T, C)
//! pooled_b = x[b, eot_b]                                    (B, C)
//! ```
//!
//! The causal mask lets token `t` see tokens `0..=t` only, so the hidden state
//! at the end-of-text token is the only one that has read the whole caption:
//! it is the text's summary. Hugging Face: `CLIPTextTransformer`.

use ndarray::Array2;

use super::config::ClipTextConfig;
use super::layers::{layer_norm, ClipEncoder, EncoderSpec};
use crate::nn::attention::causal_mask;
use crate::nn::{visit_child, Embedding, Forward, LayerNorm, Module};
use crate::tensor::{Rng, Tensor};
use crate::{Error, Result};

/// Token and position embeddings. HF: `CLIPTextEmbeddings`.
pub struct ClipTextEmbeddings {
    /// `(vocab_size, C)`
    pub token_embedding: Embedding,
    /// `(max_position_embeddings, C)`
    pub position_embedding: Embedding,
}

impl Module for ClipTextEmbeddings {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_child("token_embedding", &self.token_embedding, f);
        visit_child("position_embedding", &self.position_embedding, f);
    }
}

/// The text tower's outputs.
pub struct TextOutput {
    /// Every token's final hidden state, `(B, T, C)`.
    pub last_hidden_state: Tensor,
    /// The hidden state at each text's end-of-text token, `(B, C)`.
    pub pooled_output: Tensor,
}

/// The text transformer. HF: `CLIPTextTransformer` (names `embeddings.*`, `encoder.*`, `final_layer_norm.*`).
pub struct ClipTextTransformer {
    /// Token + position embeddings.
    pub embeddings: ClipTextEmbeddings,
    /// The causal encoder.
    pub encoder: ClipEncoder,
    /// LN after the last layer.
    pub final_layer_norm: LayerNorm,
    /// The hyper-parameters.
    pub config: ClipTextConfig,
}

impl ClipTextTransformer {
    /// Random init as CLIP's: token embeddings `N(0, 0.02²)`, positions `N(0, 0.01²)`.
    pub fn new(config: &ClipTextConfig, rng: &mut Rng) -> Result<Self> {
        let c = config.hidden_size;
        let spec = EncoderSpec {
            width: c,
            intermediate: config.intermediate_size,
            heads: config.num_attention_heads,
            layers: config.num_hidden_layers,
            act: config.hidden_act,
            eps: config.layer_norm_eps as f32,
        };
        Ok(ClipTextTransformer {
            embeddings: ClipTextEmbeddings {
                token_embedding: Embedding::new(config.vocab_size, c, 0.02, rng),
                position_embedding: Embedding::new(config.max_position_embeddings, c, 0.01, rng),
            },
            encoder: ClipEncoder::new(&spec, rng)?,
            final_layer_norm: layer_norm(c, spec.eps),
            config: config.clone(),
        })
    }

    /// The position each text is summarised at: Hugging Face's rule, the first
    /// `eos_token_id`, or (old configs with `eos_token_id == 2`) the largest id.
    /// A text without its end token is an error.
    pub fn eot_positions(&self, ids: &Array2<u32>) -> Result<Vec<usize>> {
        let argmax = self.config.pools_at_argmax();
        ids.rows()
            .into_iter()
            .enumerate()
            .map(|(b, row)| {
                let pos = if argmax {
                    // torch.argmax returns the first maximum.
                    let max = row.iter().copied().max().unwrap_or(0);
                    row.iter().position(|&i| i == max)
                } else {
                    row.iter().position(|&i| i == self.config.eos_token_id)
                };
                pos.ok_or_else(|| {
                    Error::Msg(format!("clip text: text {b} has no end-of-text token (id {})", self.config.eos_token_id))
                })
            })
            .collect()
    }

    /// Checks `ids (B, T)`: `T` within the context length, every id in the vocabulary.
    pub fn check_ids(&self, ids: &Array2<u32>) -> Result<()> {
        let (b, t) = ids.dim();
        if b == 0 || t == 0 {
            return Err(Error::shape("clip text", format!("empty batch of token ids {:?}", ids.dim())));
        }
        if t > self.config.max_position_embeddings {
            return Err(Error::shape(
                "clip text",
                format!("{t} tokens exceed the context length max_position_embeddings = {}", self.config.max_position_embeddings),
            ));
        }
        if let Some(((row, col), &bad)) = ids.indexed_iter().find(|(_, &i)| i as usize >= self.config.vocab_size) {
            return Err(Error::shape(
                "clip text",
                format!("token id {bad} (text {row}, position {col}) is beyond the vocabulary of vocab_size = {}", self.config.vocab_size),
            ));
        }
        Ok(())
    }

    /// `ids (B, T)` -> every token's state `(B, T, C)` and the pooled summary `(B, C)`.
    pub fn forward(&self, ids: &Array2<u32>) -> Result<TextOutput> {
        self.check_ids(ids)?;
        let (b, t) = ids.dim();
        let c = self.config.hidden_size;
        let flat: Vec<usize> = ids.iter().map(|&i| i as usize).collect();
        let tok = self.embeddings.token_embedding.forward(&flat, &[b, t])?; // (B, T, C)
        let pos = self.embeddings.position_embedding.weight.narrow(0, 0, t)?; // (T, C)
        let x = tok.add(&pos)?; // (B, T, C)
        let mask = causal_mask(t, t); // (T, T), true above the diagonal
        let h = self.encoder.forward(&x, Some(&mask))?; // (B, T, C)
        let h = self.final_layer_norm.forward(&h)?; // (B, T, C)
        let rows: Vec<usize> = self.eot_positions(ids)?.iter().enumerate().map(|(i, &p)| i * t + p).collect();
        let pooled = h.reshape(&[(b * t) as isize, c as isize])?.index_select(0, &rows)?; // (B, C)
        Ok(TextOutput { last_hidden_state: h, pooled_output: pooled })
    }
}

impl Module for ClipTextTransformer {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_child("embeddings", &self.embeddings, f);
        visit_child("encoder", &self.encoder, f);
        visit_child("final_layer_norm", &self.final_layer_norm, f);
    }
}
