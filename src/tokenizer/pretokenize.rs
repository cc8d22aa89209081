//! CLIP's pre-tokenisation: split cleaned, lower-cased text into the pieces BPE runs on.
//!
//! CLIP uses Python `regex` with `re.IGNORECASE`:
//!
//! ```text
//! <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
//! ```
//!
//! `re.findall` tries the alternatives in order at each position and skips a position where
//! none matches (white space). This file does the same by hand, with the classes
//! - `\s`: Unicode `White_Space` = [`char::is_whitespace`];
//! - `\p{N}`: `Nd | Nl | No` = [`char::is_numeric`];
//! - `\p{L}`: [`is_letter`], Rust's `Alphabetic` less numbers and a table of combining signs.
//!
//! Two quirks of `IGNORECASE` are reproduced: `ſ` (U+017F, long s) case-folds to `s`, so
//! `'ſ` matches `'s` and `<|ſtartoftext|>` matches the start token; and U+0345 (combining
//! ypogegrammeni) folds to the letter `ι`, so the negated class `[^\s\p{L}\p{N}]` refuses it
//! while `[\p{L}]` does not take it either: no alternative matches and it is dropped.
//! `tests/clip_tokenizer.rs` checks the three classes against `regex`'s on every code point.

use super::clip_tables::ALPHABETIC_NOT_LETTER;

/// CLIP's start-of-text marker, matched as one piece.
pub const SOT_TEXT: &str = "<|startoftext|>";
/// CLIP's end-of-text marker, matched as one piece.
pub const EOT_TEXT: &str = "<|endoftext|>";

/// The contraction alternatives, in the regex's order.
const CONTRACTIONS: [&str; 7] = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"];

/// `\p{L}` of Python `regex`.
pub fn is_letter(c: char) -> bool {
    c.is_alphabetic() && !c.is_numeric() && !in_ranges(ALPHABETIC_NOT_LETTER, c as u32)
}

/// `\p{N}` of Python `regex`.
pub fn is_number(c: char) -> bool {
    c.is_numeric()
}

/// `[^\s\p{L}\p{N}]` under `IGNORECASE` (which excludes U+0345, see the module docs).
pub fn is_other(c: char) -> bool {
    !c.is_whitespace() && !is_letter(c) && !is_number(c) && c != '\u{345}'
}

/// Split `text` as `re.findall(pat, text)` does. `text` should already be lower-cased.
pub fn pretokenize(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let len = if let Some(len) = literal_at(rest) {
            len
        } else if is_letter(c) {
            run_len(rest, is_letter)
        } else if is_number(c) {
            c.len_utf8()
        } else if is_other(c) {
            run_len(rest, is_other)
        } else {
            // white space (or U+0345): no alternative matches here.
            rest = &rest[c.len_utf8()..];
            continue;
        };
        pieces.push(&rest[..len]);
        rest = &rest[len..];
    }
    pieces
}

/// Byte length of the special markers or contractions matching at the start of `text`.
fn literal_at(text: &str) -> Option<usize> {
    [SOT_TEXT, EOT_TEXT].into_iter().chain(CONTRACTIONS).find_map(|lit| folded_prefix_len(text, lit))
}

/// Byte length of the prefix of `text` equal to `literal` up to `IGNORECASE` (the text is
/// lower case already; the one extra fold that can reach these literals is `ſ` -> `s`).
fn folded_prefix_len(text: &str, literal: &str) -> Option<usize> {
    let mut len = 0;
    let mut chars = text.chars();
    for want in literal.chars() {
        let got = chars.next()?;
        if got != want && !(want == 's' && got == 'ſ') {
            return None;
        }
        len += got.len_utf8();
    }
    Some(len)
}

/// Byte length of the longest prefix of `text` whose chars all satisfy `class`.
fn run_len(text: &str, class: fn(char) -> bool) -> usize {
    text.char_indices().find(|&(_, c)| !class(c)).map_or(text.len(), |(i, _)| i)
}

/// Whether `code` lies in one of the sorted, inclusive, disjoint `ranges`.
pub(crate) fn in_ranges(ranges: &[(u32, u32)], code: u32) -> bool {
    let i = ranges.partition_point(|&(_, hi)| hi < code);
    i < ranges.len() && ranges[i].0 <= code
}
