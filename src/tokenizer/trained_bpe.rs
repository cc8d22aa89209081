//! A small byte-level BPE trained on your own captions (feature `trained-bpe`).
//!
//! CLIP's 49,408-token vocabulary is far too big for a toy DALL-E trained on MNIST captions
//! on a laptop: its embedding table alone would dwarf the model. This tokenizer learns
//! `vocab_size` (say 512) tokens from the captions at hand with the `tokenizers` crate, using
//! the same recipe as GPT-2 and CLIP (Sennrich et al. 2016; Radford et al. 2019):
//! - normaliser: strip, then lower-case;
//! - pre-tokeniser: byte-level (GPT-2's regex split, bytes shown as printable chars, a space
//!   put before the first word so every word is spelt `Ġword`); any text encodes, nothing is
//!   ever unknown;
//! - model: BPE merges learnt greedily from pair counts until the vocabulary is full;
//! - special tokens: `<pad>` = 0, `<sot>` = 1, `<eot>` = 2.
//!
//! `decode(encode(x)) == x.trim().to_lowercase()` for every string `x`.

use std::path::Path;
use std::str::FromStr;

use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip as StripDecoder;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::normalizers::{Lowercase, NormalizerWrapper, Sequence as NormalizerSequence, Strip};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{AddedToken, Tokenizer, TokenizerBuilder, TokenizerImpl};

use super::TextTokenizer;
use crate::{Error, Result};

/// Padding token, id 0.
pub const PAD: &str = "<pad>";
/// Start-of-text token, id 1.
pub const SOT: &str = "<sot>";
/// End-of-text token, id 2.
pub const EOT: &str = "<eot>";

/// The smallest vocabulary that works: 256 byte symbols and the 3 special tokens.
pub const MIN_VOCAB_SIZE: usize = 256 + 3;

/// A BPE tokenizer trained on captions; see the module docs.
pub struct TrainedBpe {
    tokenizer: Tokenizer,
    pad: u32,
    sot: u32,
    eot: u32,
}

impl TrainedBpe {
    /// Learn a vocabulary of at most `vocab_size` tokens (special tokens included) from
    /// `captions`. Fewer tokens result when the captions hold fewer distinct pairs.
    pub fn train<S: AsRef<str> + Send + Sync>(captions: &[S], vocab_size: usize) -> Result<Self> {
        if vocab_size < MIN_VOCAB_SIZE {
            return Err(Error::Config(format!(
                "vocab_size = {vocab_size}: must be at least {MIN_VOCAB_SIZE} (256 bytes + <pad>, <sot>, <eot>)"
            )));
        }
        let specials = [PAD, SOT, EOT].map(|s| AddedToken::from(s, true)).to_vec();
        let mut trainer = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(specials)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();

        let normalizer = NormalizerSequence::new(vec![Strip::new(true, true).into(), Lowercase.into()]);
        // ByteLevel puts a space before the text; the Strip decoder takes it off again.
        let decoder = DecoderSequence::new(vec![ByteLevel::default().into(), StripDecoder::new(' ', 1, 0).into()]);
        let mut tokenizer: TokenizerImpl<BPE, NormalizerWrapper, ByteLevel, PostProcessorWrapper, DecoderWrapper> =
            TokenizerBuilder::new()
                .with_model(BPE::default())
                .with_normalizer(Some(normalizer.into()))
                .with_pre_tokenizer(Some(ByteLevel::default()))
                .with_post_processor(None)
                .with_decoder(Some(decoder.into()))
                .build()
                .map_err(|e| Error::Msg(format!("trained_bpe: building the tokenizer: {e}")))?;
        tokenizer
            .train(&mut trainer, captions.iter().map(|c| c.as_ref()))
            .map_err(|e| Error::Msg(format!("trained_bpe: training on {} captions: {e}", captions.len())))?;
        Self::from_tokenizer(tokenizer.into()).map_err(Error::Msg)
    }

    /// Wrap a tokenizer, finding its special tokens.
    fn from_tokenizer(tokenizer: Tokenizer) -> std::result::Result<Self, String> {
        let id = |name: &str| tokenizer.token_to_id(name).ok_or_else(|| format!("no special token {name}"));
        Ok(TrainedBpe { pad: id(PAD)?, sot: id(SOT)?, eot: id(EOT)?, tokenizer })
    }

    /// Write the tokenizer as `tokenizers` JSON (the `tokenizer.json` format), atomically:
    /// to `<path>.tmp` first, then renamed over `path`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let json = self
            .tokenizer
            .to_string(true)
            .map_err(|e| Error::Msg(format!("trained_bpe: serialising for {}: {e}", path.display())))?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = Path::new(&tmp);
        std::fs::write(tmp, json).map_err(|e| Error::io(tmp, e))?;
        std::fs::rename(tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(tmp);
            Error::io(path, e)
        })
    }

    /// Read a tokenizer written by [`save`](Self::save).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let json = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let tokenizer = Tokenizer::from_str(&json)
            .map_err(|e| Error::format(path, format!("not a tokenizers JSON file: {e}")))?;
        Self::from_tokenizer(tokenizer).map_err(|what| Error::format(path, what))
    }

    /// The learnt token of `id`, e.g. `"Ġcircle"` (`Ġ` is the byte-level space).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.tokenizer.id_to_token(id)
    }
}

impl TextTokenizer for TrainedBpe {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| Error::Msg(format!("trained_bpe encode {}: {e}", crate::error::quote(text))))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Special tokens are dropped from the text.
    fn decode(&self, ids: &[u32]) -> Result<String> {
        let vocab_size = self.vocab_size();
        if let Some((pos, id)) = ids.iter().enumerate().find(|&(_, &id)| id as usize >= vocab_size) {
            return Err(Error::Msg(format!(
                "trained_bpe decode: token id {id} at position {pos} is beyond the vocabulary of {vocab_size}"
            )));
        }
        self.tokenizer.decode(ids, true).map_err(|e| Error::Msg(format!("trained_bpe decode: {e}")))
    }

    fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }
    fn sot(&self) -> u32 {
        self.sot
    }
    fn eot(&self) -> u32 {
        self.eot
    }
    fn pad(&self) -> u32 {
        self.pad
    }
}
