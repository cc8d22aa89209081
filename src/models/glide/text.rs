//! GLIDE's text encoder (§2.3): a causal transformer over the caption's tokens.
//!
//! The transformer is chapter 03's CLIP text tower ([`ClipTextTransformer`]) with its own
//! (small) configuration, trained from scratch with the diffusion loss. It gives two things:
//!
//! ```text
//! tokens  = LN(Transformer(embed(ids)))     (B, S, C)   every position, for attention
//! pooled  = tokens[b, eot_b]                (B, C)      the only position that read the whole caption
//! padding = (position > eot_b)              (B, S)      true where attention must not look
//! ```
//!
//! Positions up to the end-of-text token (SOT, the words, EOT) stay visible; the empty
//! caption is `[SOT, EOT]`, which is what the model sees as "no caption".

use ndarray::{Array2, ArrayD, IxDyn};

use crate::models::clip::text::ClipTextTransformer;
use crate::models::clip::ClipTextConfig;
use crate::nn::context_attention::Context;
use crate::nn::{visit_child, Module};
use crate::tensor::{Rng, Tensor};
use crate::tokenizer::TextTokenizer;
use crate::{Error, Result};

/// What the text encoder hands to a diffusion model.
pub struct TextFeatures {
    /// Every position's final state, `(B, S, C)`.
    pub tokens: Tensor,
    /// The state at each caption's end-of-text token, `(B, C)`.
    pub pooled: Tensor,
    /// `(B, S)`, `true` at the padding after each caption's end-of-text token.
    pub padding: ArrayD<bool>,
}

impl TextFeatures {
    /// The tokens and their padding mask as [`Context`] for [`crate::nn::ContextAttention`].
    pub fn context(&self) -> Context<'_> {
        Context { tokens: &self.tokens, padding: Some(&self.padding) }
    }

    /// Rows `rows` of every feature (the same caption features for a sub-batch).
    pub fn select(&self, rows: &[usize]) -> Result<TextFeatures> {
        let padding = ArrayD::from_shape_fn(IxDyn(&[rows.len(), self.padding.shape()[1]]), |ix| self.padding[[rows[ix[0]], ix[1]]]);
        Ok(TextFeatures { tokens: self.tokens.index_select(0, rows)?, pooled: self.pooled.index_select(0, rows)?, padding })
    }
}

/// The caption encoder: chapter 03's causal text transformer. Parameter names
/// `transformer.embeddings.*`, `transformer.encoder.*`, `transformer.final_layer_norm.*`.
pub struct TextEncoder {
    /// The causal transformer with a final layer norm.
    pub transformer: ClipTextTransformer,
}

impl TextEncoder {
    /// A randomly initialised encoder of `config` (its `max_position_embeddings` is the
    /// context length, its `eos_token_id` the tokenizer's end-of-text id).
    /// Errors name the value that cannot work.
    pub fn new(config: &ClipTextConfig, rng: &mut Rng) -> Result<Self> {
        let c = config;
        if c.hidden_size == 0 || c.intermediate_size == 0 || c.num_hidden_layers == 0 || c.vocab_size == 0 || c.max_position_embeddings < 2 || c.eos_token_id as usize >= c.vocab_size {
            return Err(Error::Config(format!(
                "glide text encoder: hidden_size = {}, intermediate_size = {}, num_hidden_layers = {}, vocab_size = {} must be positive, max_position_embeddings = {} at least 2 (SOT and EOT), eos_token_id = {} below vocab_size",
                c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.vocab_size, c.max_position_embeddings, c.eos_token_id
            )));
        }
        Ok(TextEncoder { transformer: ClipTextTransformer::new(config, rng)? })
    }

    /// The number of token positions `S` a caption is padded to.
    pub fn context_length(&self) -> usize {
        self.transformer.config.max_position_embeddings
    }

    /// The width `C` of every token feature.
    pub fn width(&self) -> usize {
        self.transformer.config.hidden_size
    }

    /// `captions` -> ids `(B, S)`: `[SOT, ..., EOT, PAD, ...]`. A caption longer than the
    /// context is an error that names it, unless `truncate` (then it is cut, EOT kept last).
    pub fn tokenize(&self, tokenizer: &dyn TextTokenizer, captions: &[&str], truncate: bool) -> Result<Array2<u32>> {
        tokenizer.encode_batch(captions, self.context_length(), truncate).map_err(|e| Error::Msg(format!("glide text encoder: {}", e.message())))
    }

    // ANCHOR: encode
    /// `ids (B, S)` -> tokens `(B, S, C)`, the end-of-text summary `(B, C)` and the padding mask.
    pub fn encode(&self, ids: &Array2<u32>) -> Result<TextFeatures> {
        let out = self.transformer.forward(ids)?; // causal, final LN: (B, S, C), (B, C)
        let eot = self.transformer.eot_positions(ids)?;
        let padding = ArrayD::from_shape_fn(IxDyn(&[ids.nrows(), ids.ncols()]), |ix| ix[1] > eot[ix[0]]); // after EOT
        Ok(TextFeatures { tokens: out.last_hidden_state, pooled: out.pooled_output, padding })
    }
    // ANCHOR_END: encode
}

impl Module for TextEncoder {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_child("transformer", &self.transformer, f);
    }
}
