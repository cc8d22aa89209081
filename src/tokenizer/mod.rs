//! Text to token ids, for the models that read captions (CLIP, DALL-E, GLIDE, unCLIP).
//!
//! - [`clip_bpe`]: OpenAI CLIP's 49,408-token byte-level BPE, id for id (checked against
//!   CLIP's `simple_tokenizer.py` on a golden fixture);
//! - `trained_bpe` (feature `trained-bpe`): a small BPE trained on your own captions with the
//!   `tokenizers` crate, for toy models whose embedding table should stay small.
//!
//! Both implement [`TextTokenizer`], so a model takes `&dyn TextTokenizer` and never cares
//! which one it got.

pub mod clip_bpe;
mod clip_tables;
pub mod pretokenize;
pub mod text_clean;
#[cfg(feature = "trained-bpe")]
pub mod trained_bpe;

pub use clip_bpe::ClipBpe;
#[cfg(feature = "trained-bpe")]
pub use trained_bpe::TrainedBpe;

use ndarray::Array2;

use crate::{Error, Result};

/// What a text-conditioned model needs from a tokenizer.
pub trait TextTokenizer: Send + Sync {
    /// Token ids of `text`, without start, end or padding tokens.
    fn encode(&self, text: &str) -> Result<Vec<u32>>;
    /// Text of `ids`; an error for an id outside the vocabulary.
    fn decode(&self, ids: &[u32]) -> Result<String>;
    /// Number of ids, special tokens included: every id is `< vocab_size()`.
    fn vocab_size(&self) -> usize;
    /// Start-of-text id.
    fn sot(&self) -> u32;
    /// End-of-text id.
    fn eot(&self) -> u32;
    /// Padding id, written after the end token.
    fn pad(&self) -> u32;

    /// The first `max_ids` ids of [`encode`](TextTokenizer::encode); a tokenizer
    /// that can stop early (CLIP's BPE) overrides it, so truncation does not
    /// encode a whole megabyte to keep 77 tokens.
    fn encode_prefix(&self, text: &str, max_ids: usize) -> Result<Vec<u32>> {
        let mut ids = self.encode(text)?;
        ids.truncate(max_ids);
        Ok(ids)
    }

    /// `[SOT, ids..., EOT, PAD, ...]`, exactly `context_length` long.
    ///
    /// Too long a text is an error unless `truncate`, which keeps the first
    /// `context_length` tokens and overwrites the last with EOT (as `clip.tokenize` does).
    fn encode_padded(&self, text: &str, context_length: usize, truncate: bool) -> Result<Vec<u32>> {
        if context_length < 2 {
            return Err(Error::Config(format!(
                "context_length = {context_length}: must be at least 2 to hold SOT and EOT"
            )));
        }
        let mut tokens = vec![self.sot()];
        // One id more than fits tells whether the text is too long, without encoding all of it.
        tokens.extend(self.encode_prefix(text, context_length - 1)?);
        tokens.push(self.eot());
        if tokens.len() > context_length {
            if !truncate {
                return Err(Error::Msg(format!(
                    "text {} is over the context length {context_length} with SOT and EOT \
                     (pass truncate = true to cut it)",
                    crate::error::quote(text),
                )));
            }
            tokens.truncate(context_length);
            tokens[context_length - 1] = self.eot();
        }
        tokens.resize(context_length, self.pad());
        Ok(tokens)
    }

    /// [`encode_padded`](TextTokenizer::encode_padded) for each text: `(texts.len(), context_length)`.
    fn encode_batch(&self, texts: &[&str], context_length: usize, truncate: bool) -> Result<Array2<u32>> {
        let mut batch = Array2::from_elem((texts.len(), context_length), self.pad()); // (B, T)
        for (mut row, text) in batch.rows_mut().into_iter().zip(texts) {
            let tokens = self.encode_padded(text, context_length, truncate)?;
            row.iter_mut().zip(tokens).for_each(|(slot, t)| *slot = t);
        }
        Ok(batch)
    }
}
