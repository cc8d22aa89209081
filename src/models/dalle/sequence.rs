//! DALL-E 1's input sequence: the caption's tokens, padded to a fixed length,
//! then the image's tokens in raster order.
//!
//! ```text
//! [SOT, caption BPE ids..., EOT, pad_k, pad_k+1, ..., pad_L-1 | i_0, i_1, ..., i_hw-1]
//!  <----------------------- text_len = L -------------------> <---- h × w ---->
//! ```
//!
//! The paper pads the 256 text positions "with a special padding token for
//! each of the 256 text positions" (section 2.2): the padding token of
//! position `p` is its own id, `V_text + p`, so the model can tell *where* the
//! caption ended from the padding alone. The text vocabulary the model
//! embeds is therefore `V_text + L`.

use crate::tokenizer::TextTokenizer;
use crate::{Error, Result};

// ANCHOR: encode
/// The text part of a sequence: `text_len` ids below `vocab_size + text_len`,
/// with the tokenizer's padding replaced by the position's own padding token.
pub fn encode_caption(tokenizer: &dyn TextTokenizer, caption: &str, text_len: usize, truncate: bool) -> Result<Vec<usize>> {
    let ids = tokenizer.encode_padded(caption, text_len, truncate).map_err(|e| match e {
        Error::Msg(m) => Error::Msg(format!("dalle prompt: {m}")),
        other => other,
    })?;
    let (pad, vocab) = (tokenizer.pad(), tokenizer.vocab_size());
    let eot = ids.iter().position(|&t| t == tokenizer.eot()).unwrap_or(text_len);
    Ok(ids
        .iter()
        .enumerate()
        .map(|(p, &t)| if p > eot && t == pad { vocab + p } else { t as usize }) // pad at position p -> V_text + p
        .collect())
}
// ANCHOR_END: encode

/// The caption a row of text ids spells (the words between SOT and EOT): what the
/// model was given after a truncation.
pub fn decode_caption(tokenizer: &dyn TextTokenizer, text: &[usize]) -> Result<String> {
    let words: Vec<u32> = text.iter().skip(1).map(|&t| t as u32).take_while(|&t| t != tokenizer.eot()).collect();
    tokenizer.decode(&words)
}

/// [`encode_caption`] for each caption, row after row: `(B · L)` ids.
pub fn encode_captions(tokenizer: &dyn TextTokenizer, captions: &[String], text_len: usize, truncate: bool) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(captions.len() * text_len);
    for c in captions {
        out.extend(encode_caption(tokenizer, c, text_len, truncate)?);
    }
    Ok(out)
}

/// One training sequence per row: `text (B · L)` and `image (B · N)` ids side by side, `(B · (L + N))`.
pub fn join_sequences(text: &[usize], image: &[usize], text_len: usize, image_len: usize) -> Result<Vec<usize>> {
    let b = text.len() / text_len.max(1);
    if text.len() != b * text_len || image.len() != b * image_len {
        return Err(Error::shape(
            "dalle.join_sequences",
            format!("{} text ids and {} image ids are not B rows of {text_len} and {image_len}", text.len(), image.len()),
        ));
    }
    Ok(text.chunks(text_len).zip(image.chunks(image_len)).flat_map(|(t, i)| t.iter().chain(i).copied()).collect())
}
