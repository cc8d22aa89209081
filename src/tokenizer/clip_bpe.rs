//! OpenAI CLIP's byte-level BPE tokenizer, a port of `clip/simple_tokenizer.py`.
//!
//! Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
//! Supervision", section 2.4: "a lower-cased byte pair encoding (BPE) representation of the
//! text with a 49,152 vocab size ... bracketed with \[SOS\] and \[EOS\] tokens", 76 tokens long.
//!
//! The pipeline, step by step:
//! 1. clean: `whitespace_clean(basic_clean(text)).lower()` ([`super::text_clean`]);
//! 2. split into pieces with CLIP's regex ([`super::pretokenize`]);
//! 3. write each piece's UTF-8 bytes as printable chars ([`bytes_to_unicode`]) so BPE never
//!    sees a space or a control byte, and mark the last char of the piece with `</w>`;
//! 4. BPE (Sennrich et al. 2016): repeatedly merge the adjacent pair of lowest rank in the
//!    merges list until no pair is in the list; each final symbol is one token id.
//!
//! The vocabulary (49,408 ids) is, in order: the 256 byte chars, the same with `</w>`, the
//! 48,894 merges joined, then `<|startoftext|>` (49406) and `<|endoftext|>` (49407).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use ndarray::Array2;

use super::pretokenize::{pretokenize, EOT_TEXT, SOT_TEXT};
use super::text_clean::{basic_clean, whitespace_clean};
use super::TextTokenizer;
use crate::{Error, Result};

/// The number of merges CLIP keeps from the file: `49152 - 256 - 2`.
pub const NUM_MERGES: usize = 49152 - 256 - 2;
/// CLIP's vocabulary size: 2 x 256 byte symbols + the merges + 2 special tokens.
pub const VOCAB_SIZE: usize = 2 * 256 + NUM_MERGES + 2;
/// CLIP's text context: `clip.tokenize(..., context_length=77)`.
pub const CONTEXT_LENGTH: usize = 77;
const _: () = assert!(NUM_MERGES < 1 << 16, "merge ranks share a u64 with 48-bit positions in `merge_pairs`");
/// File name of CLIP's merges list.
pub const BPE_FILE: &str = "bpe_simple_vocab_16e6.txt.gz";

/// Largest decompressed merges file accepted (the real one is 1.7 MB).
const MAX_BPE_BYTES: u64 = 64 << 20;
/// The BPE cache is cleared when it holds this many pieces, bounding its memory.
const MAX_CACHE_ENTRIES: usize = 1 << 18;
/// Pieces longer than this (in byte chars) are not cached.
const MAX_CACHED_PIECE_BYTES: usize = 1 << 10;

/// Where CLIP's merges file is: the copy shipped in this repository,
/// `<crate root>/assets/clip/bpe_simple_vocab_16e6.txt.gz` (OpenAI's file, unchanged, MIT licence
/// beside it), so the tokenizer needs no data folder. [`ClipBpe::load`] reads any other copy.
pub fn default_bpe_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets").join("clip").join(BPE_FILE)
}

/// GPT-2's reversible map from the 256 byte values to printable chars.
///
/// Printable Latin-1 bytes (`!`..`~`, `¡`..`¬`, `®`..`ÿ`) map to themselves; the other 68
/// bytes (space, controls, ...) map to U+0100 onwards in byte order. Returned in CLIP's
/// vocabulary order: `result[i]` is the (byte, char) pair of token id `i`.
pub fn bytes_to_unicode() -> Vec<(u8, char)> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut table: Vec<(u8, char)> =
        (0..=255u8).filter(|&b| printable(b)).map(|b| (b, char::from(b))).collect();
    let shifted = (0..=255u8).filter(|&b| !printable(b));
    for (n, b) in shifted.enumerate() {
        table.push((b, char::from_u32(256 + n as u32).expect("U+0100..U+0143 are chars")));
    }
    table
}

/// CLIP's BPE tokenizer. Cheap to share across threads (`&self` everywhere; the cache locks).
pub struct ClipBpe {
    /// Byte value -> printable char.
    byte_encoder: [char; 256],
    /// Printable char -> byte value.
    byte_decoder: HashMap<char, u8>,
    /// Printable char -> its token id (its place in [`bytes_to_unicode`]).
    byte_char_id: HashMap<char, u32>,
    /// Symbol -> token id.
    encoder: HashMap<String, u32>,
    /// Token id -> symbol.
    decoder: Vec<String>,
    /// (left id, right id) -> (rank, merged id). Lower rank merges first.
    merges: HashMap<(u32, u32), (u32, u32), BuildHasherDefault<PairHasher>>,
    /// Piece (in byte chars) -> its token ids.
    cache: RwLock<HashMap<String, Vec<u32>>>,
}

impl ClipBpe {
    /// Load from [`default_bpe_path`], with a message saying where the file should be if missing.
    pub fn load_default() -> Result<Self> {
        let path = default_bpe_path();
        if !path.exists() {
            return Err(Error::MissingData(format!(
                "CLIP's merges list {} not found: it ships with the repository (assets/clip/); \
                 restore it with `git checkout -- assets/clip`, or load another copy with ClipBpe::load",
                path.display()
            )));
        }
        Self::load(&path)
    }

    /// Load CLIP's gzipped merges file (`bpe_simple_vocab_16e6.txt.gz`).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(file)
            .take(MAX_BPE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(path, e))?;
        if bytes.len() as u64 > MAX_BPE_BYTES {
            return Err(Error::format(path, format!("decompresses to over {MAX_BPE_BYTES} bytes")));
        }
        let text = String::from_utf8(bytes)
            .map_err(|e| Error::format(path, format!("not UTF-8 text: {e}")))?;
        Self::from_merges_text(&text).map_err(|what| Error::format(path, what))
    }

    /// Build from the decompressed merges text: a header line, then `left right` per line.
    /// CLIP keeps lines `1..=NUM_MERGES`, i.e. `lines[1 : 49152-256-2+1]`.
    fn from_merges_text(text: &str) -> std::result::Result<Self, String> {
        let lines: Vec<&str> = text.split('\n').collect();
        if lines.len() < NUM_MERGES + 1 {
            return Err(format!(
                "expected a header and at least {NUM_MERGES} merge lines, found {} lines",
                lines.len()
            ));
        }
        let mut pairs = Vec::with_capacity(NUM_MERGES);
        for (n, line) in lines[1..=NUM_MERGES].iter().enumerate() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts[..] {
                [left, right] => pairs.push((left, right)),
                _ => return Err(format!("line {}: expected two symbols, found {}", n + 2, crate::error::quote(line))),
            }
        }

        let table = bytes_to_unicode();
        let mut byte_encoder = ['\0'; 256];
        for &(b, c) in &table {
            byte_encoder[b as usize] = c;
        }
        let byte_decoder = table.iter().map(|&(b, c)| (c, b)).collect();
        let byte_char_id = table.iter().enumerate().map(|(id, &(_, c))| (c, id as u32)).collect();

        let mut decoder: Vec<String> = table.iter().map(|&(_, c)| c.to_string()).collect();
        decoder.extend(table.iter().map(|&(_, c)| format!("{c}</w>")));
        decoder.extend(pairs.iter().map(|(l, r)| format!("{l}{r}")));
        decoder.push(SOT_TEXT.to_string());
        decoder.push(EOT_TEXT.to_string());
        // `dict(zip(vocab, range(len(vocab))))`: a repeated symbol keeps its last id.
        let encoder: HashMap<String, u32> =
            decoder.iter().enumerate().map(|(id, s)| (s.clone(), id as u32)).collect();

        let id_of = |s: &str| {
            encoder.get(s).copied().ok_or_else(|| format!("merge symbol {s:?} is not in the vocabulary"))
        };
        let mut merges = HashMap::with_capacity_and_hasher(NUM_MERGES, BuildHasherDefault::default());
        for (rank, (l, r)) in pairs.iter().enumerate() {
            let key = (id_of(l)?, id_of(r)?);
            // `dict(zip(merges, range(...)))`: a repeated pair keeps its last rank.
            merges.insert(key, (rank as u32, id_of(&format!("{l}{r}"))?));
        }

        let cache = HashMap::from([
            (SOT_TEXT.to_string(), vec![encoder[SOT_TEXT]]),
            (EOT_TEXT.to_string(), vec![encoder[EOT_TEXT]]),
        ]);
        Ok(ClipBpe { byte_encoder, byte_decoder, byte_char_id, encoder, decoder, merges, cache: RwLock::new(cache) })
    }

    /// The token ids of one piece, already written in byte chars.
    fn bpe(&self, piece: &str) -> Vec<u32> {
        if let Some(ids) = self.cache.read().unwrap_or_else(|e| e.into_inner()).get(piece) {
            return ids.clone();
        }
        // Every char of a piece is a byte char: ids 0..256 as themselves, 256..512 with `</w>`.
        let mut word: Vec<u32> = piece.chars().map(|c| self.byte_char_id[&c]).collect();
        *word.last_mut().expect("pieces are never empty") += 256;

        let word = self.merge_pairs(word);

        if piece.len() > MAX_CACHED_PIECE_BYTES {
            return word; // a megabyte-long "word" would pin a megabyte in the cache
        }
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHE_ENTRIES {
            cache.retain(|k, _| k == SOT_TEXT || k == EOT_TEXT);
        }
        cache.insert(piece.to_string(), word.clone());
        word
    }

    /// BPE's merge loop on one piece's symbol ids, in O(n log n).
    ///
    /// `simple_tokenizer.py` repeats: find the adjacent pair of lowest rank, merge
    /// every occurrence left to right; each round rescans the word, so a word of n
    /// symbols costs O(n²) (112 s for a 1 MB word). Here the symbols form a linked
    /// list and every adjacent pair with a rank waits in a min-heap keyed by
    /// (rank, position). A round pops every entry of the lowest rank, merges those
    /// still valid left to right (the same non-overlapping choice as the reference),
    /// and only then pushes the pairs the merges created: the same rounds, the
    /// same result, each merge O(log n).
    fn merge_pairs(&self, mut word: Vec<u32>) -> Vec<u32> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let n = word.len();
        if n < 2 {
            return word;
        }
        // Linked list over positions: `next[i]` / `prev[i]` (n = none); a merged-away position is dead.
        let none = usize::MAX;
        let mut next: Vec<usize> = (1..=n).map(|i| if i < n { i } else { none }).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| if i == 0 { none } else { i - 1 }).collect();
        let mut alive = vec![true; n];
        // Entries are `rank << 48 | left position` (ranks < NUM_MERGES < 2^16), 8 bytes: the
        // heap's pops are its cost, and small entries keep them in cache. (A rank names one
        // pair, so an entry is still valid when the pair now at its position has that rank.)
        let mut heap: BinaryHeap<Reverse<u64>> = BinaryHeap::with_capacity(n);
        let rank_of = |l: u32, r: u32| self.merges.get(&(l, r)).copied();
        let push = |heap: &mut BinaryHeap<Reverse<u64>>, i: usize, l: u32, r: u32| {
            if let Some((rank, _)) = rank_of(l, r) {
                heap.push(Reverse((rank as u64) << 48 | i as u64));
            }
        };
        for i in 0..n - 1 {
            push(&mut heap, i, word[i], word[i + 1]);
        }
        let (mut round, mut created) = (Vec::new(), Vec::new());
        while let Some(&Reverse(first)) = heap.peek() {
            let rank = first >> 48;
            round.clear();
            created.clear();
            while let Some(&Reverse(entry)) = heap.peek() {
                if entry >> 48 != rank {
                    break;
                }
                round.push((entry & 0xffff_ffff_ffff) as usize);
                heap.pop();
            }
            round.sort_unstable(); // left to right
            for &i in &round {
                // Still a pair of this rank here? (Earlier merges may have used either side.)
                let j = next[i];
                if !alive[i] || j == none {
                    continue;
                }
                let Some((r, merged)) = rank_of(word[i], word[j]) else { continue };
                if r as u64 != rank {
                    continue;
                }
                word[i] = merged;
                alive[j] = false;
                next[i] = next[j];
                if next[j] != none {
                    prev[next[j]] = i;
                }
                created.push(i);
            }
            // The new neighbours of each merged symbol join the queue after the round.
            for &i in &created {
                if alive[i] {
                    if prev[i] != none {
                        push(&mut heap, prev[i], word[prev[i]], word[i]);
                    }
                    if next[i] != none {
                        push(&mut heap, i, word[i], word[next[i]]);
                    }
                }
            }
        }
        (0..n).filter(|&i| alive[i]).map(|i| word[i]).collect()
    }

    /// Token ids of `text`, without start and end tokens.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.encode_prefix(text, usize::MAX)
    }

    /// The first `max_ids` token ids of `text` (all when fewer): BPE stops at the
    /// first piece past the limit, so truncating a long text does not encode all of it.
    pub fn encode_prefix(&self, text: &str, max_ids: usize) -> Vec<u32> {
        let text = whitespace_clean(&basic_clean(text)).to_lowercase();
        let mut ids = Vec::new();
        for piece in pretokenize(&text) {
            if ids.len() >= max_ids {
                break;
            }
            let bytes: String = piece.bytes().map(|b| self.byte_encoder[b as usize]).collect();
            ids.extend(self.bpe(&bytes));
        }
        ids.truncate(max_ids);
        ids
    }

    /// Text of `ids`: symbols joined, byte chars back to bytes, UTF-8 decoded with U+FFFD for
    /// invalid sequences, and each `</w>` turned into a space (so words end with a space).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let mut symbols = String::new();
        for (pos, &id) in ids.iter().enumerate() {
            let symbol = self.decoder.get(id as usize).ok_or_else(|| {
                Error::Msg(format!(
                    "clip_bpe decode: token id {id} at position {pos} is beyond the vocabulary of {}",
                    self.decoder.len()
                ))
            })?;
            symbols.push_str(symbol);
        }
        let bytes: Vec<u8> = symbols.chars().map(|c| self.byte_decoder[&c]).collect();
        Ok(String::from_utf8_lossy(&bytes).replace("</w>", " "))
    }

    /// `clip.tokenize(texts, context_length, truncate)`: one row per text,
    /// `[SOT, ids..., EOT, 0, 0, ...]`. See [`TextTokenizer::encode_batch`].
    pub fn tokenize(&self, texts: &[&str], context_length: usize, truncate: bool) -> Result<Array2<u32>> {
        self.encode_batch(texts, context_length, truncate)
    }

    /// The id of a symbol of the vocabulary, e.g. `"cat</w>"`.
    pub fn token_id(&self, symbol: &str) -> Option<u32> {
        self.encoder.get(symbol).copied()
    }
}

impl TextTokenizer for ClipBpe {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(ClipBpe::encode(self, text))
    }
    fn encode_prefix(&self, text: &str, max_ids: usize) -> Result<Vec<u32>> {
        Ok(ClipBpe::encode_prefix(self, text, max_ids))
    }
    fn decode(&self, ids: &[u32]) -> Result<String> {
        ClipBpe::decode(self, ids)
    }
    fn vocab_size(&self) -> usize {
        self.decoder.len()
    }
    fn sot(&self) -> u32 {
        self.encoder[SOT_TEXT]
    }
    fn eot(&self) -> u32 {
        self.encoder[EOT_TEXT]
    }
    /// CLIP pads with 0 (the id of `!`); its text encoder reads the EOT position as the
    /// argmax of the ids, which works because EOT has the largest id.
    fn pad(&self) -> u32 {
        0
    }
}

/// A hasher for pairs of token ids: one multiply-xor per word (as rustc's FxHasher),
/// several times faster than the default SipHash on BPE's millions of pair lookups.
/// The keys are ids, not user-chosen strings, so hash flooding is not a concern.
#[derive(Default)]
struct PairHasher(u64);

impl Hasher for PairHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(v as u64);
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}
