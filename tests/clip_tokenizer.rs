//! CLIP's tokenizer against the golden ids of OpenAI's `simple_tokenizer.py`.
//!
//! Fixture: `tests/golden/clip_tokenizer.json`, written by
//! `tests/golden/clip_tokenizer_fixture.py` (ftfy 6.3.1, regex 2026.5.9). Token ids are
//! integers: the tolerance is zero, every id of every string must agree.

use std::io::Write;
use std::sync::OnceLock;

use dalle::tokenizer::clip_bpe::{bytes_to_unicode, default_bpe_path, ClipBpe, CONTEXT_LENGTH, VOCAB_SIZE};
use dalle::tokenizer::pretokenize::{is_letter, is_number, pretokenize};
use dalle::tokenizer::TextTokenizer;
use dalle::Error;
use serde_json::Value;

fn fixture() -> &'static Value {
    static FIXTURE: OnceLock<Value> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/clip_tokenizer.json");
        serde_json::from_str(&std::fs::read_to_string(path).expect("read fixture")).expect("parse fixture")
    })
}

fn tokenizer() -> &'static ClipBpe {
    static TOKENIZER: OnceLock<ClipBpe> = OnceLock::new();
    TOKENIZER.get_or_init(|| ClipBpe::load_default().unwrap_or_else(|e| panic!("{e}")))
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// The ids this port must give: CLIP's, or where ftfy's mojibake repair or NFC changes them,
/// the ids CLIP gives without those two steps (which is what this port implements).
fn expected_ids(case: &Value) -> Vec<u32> {
    ids(case.get("ids_without_mojibake_fix_and_nfc").unwrap_or(&case["ids"]))
}

fn cases() -> &'static Vec<Value> {
    fixture()["cases"].as_array().unwrap()
}

#[test]
fn fixture_is_large_and_varied() {
    assert!(cases().len() >= 200, "{} strings", cases().len());
    assert_eq!(fixture()["vocab_size"], 49408);
}

#[test]
fn every_golden_string_encodes_to_clips_ids() {
    let tok = tokenizer();
    let mut failures = Vec::new();
    let mut ftfy_only = Vec::new();
    for case in cases() {
        let text = case["text"].as_str().unwrap();
        if case.get("ids_without_mojibake_fix_and_nfc").is_some() {
            ftfy_only.push(text.to_string());
        }
        let expected = expected_ids(case);
        let got = tok.encode(text);
        if got != expected {
            failures.push(format!("{text:?}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} strings differ:\n{}", failures.len(), cases().len(), failures.join("\n"));
    // The strings that need ftfy's mojibake repair or NFC are exactly these (see text_clean.rs).
    assert_eq!(
        ftfy_only,
        [
            "\u{645}\u{64f}\u{62d}\u{64e}\u{645}\u{651}\u{64e}\u{62f}",
            "e\u{301}",
            "cafe\u{301}",
            "caf\u{c3}\u{a9}",
            "\u{e2}\u{20ac}\u{153}mojibake\u{e2}\u{20ac}\u{9d}",
            "voil\u{c3}\u{a0} le travail",
            "T\u{301}A\u{301}L\u{5b57}sL\u{1f600}Q",
        ]
    );
}

#[test]
fn decode_matches_clip() {
    let tok = tokenizer();
    for case in cases() {
        let decoded = tok.decode(&ids(&case["ids"])).unwrap();
        assert_eq!(decoded, case["decoded"].as_str().unwrap(), "text {:?}", case["text"]);
    }
}

#[test]
fn tokenize_pads_and_truncates_like_clip_tokenize() {
    let tok = tokenizer();
    let (sot, eot) = (tok.sot(), tok.eot());
    assert_eq!((sot, eot, tok.pad(), tok.vocab_size()), (49406, 49407, 0, VOCAB_SIZE));
    let mut long = 0;
    for case in cases() {
        let text = case["text"].as_str().unwrap();
        match case.get("tokenize_77_truncate") {
            Some(row) => {
                long += 1;
                let err = tok.encode_padded(text, CONTEXT_LENGTH, false).unwrap_err();
                assert!(err.to_string().contains("over the context length 77"), "{err}");
                let got = tok.tokenize(&[text], CONTEXT_LENGTH, true).unwrap();
                assert_eq!(got.row(0).to_vec(), ids(row), "text {text:?}");
            }
            None => {
                let mut want = vec![sot];
                want.extend(expected_ids(case));
                want.push(eot);
                want.resize(CONTEXT_LENGTH, 0);
                assert_eq!(tok.encode_padded(text, CONTEXT_LENGTH, false).unwrap(), want, "text {text:?}");
            }
        }
    }
    assert!(long >= 5, "only {long} strings longer than the context");
    let batch = tok.tokenize(&["a photo of a cat", ""], CONTEXT_LENGTH, false).unwrap();
    assert_eq!(batch.dim(), (2, 77));
    assert_eq!(batch.row(1).to_vec()[..3], [sot, eot, 0]);
    assert!(matches!(tok.encode_padded("x", 1, true), Err(Error::Config(_))));
}

#[test]
fn decode_rejects_ids_beyond_the_vocabulary() {
    let err = tokenizer().decode(&[320, 49408]).unwrap_err();
    assert!(err.to_string().contains("token id 49408 at position 1"), "{err}");
}

/// `\p{L}`, `\p{N}` and `\s` of Python `regex` (as ranges in the fixture) against the Rust
/// classes on every code point. Code points that Python's tables leave unassigned but a
/// newer Unicode in Rust assigns could differ; none do today, so the tolerance is zero.
#[test]
fn char_classes_agree_with_python_regex_on_every_code_point() {
    let in_any = |ranges: &Value, cp: u32| {
        ranges.as_array().unwrap().iter().any(|r| r[0].as_u64().unwrap() as u32 <= cp && cp <= r[1].as_u64().unwrap() as u32)
    };
    let mut mismatches = Vec::new();
    for cp in (0..0x11_0000u32).filter(|cp| !(0xD800..0xE000).contains(cp)) {
        let c = char::from_u32(cp).unwrap();
        let checks = [
            ("letter", is_letter(c), &fixture()["letter_ranges"]),
            ("number", is_number(c), &fixture()["number_ranges"]),
            ("space", c.is_whitespace(), &fixture()["space_ranges"]),
        ];
        for (class, ours, theirs) in checks {
            if ours != in_any(theirs, cp) {
                mismatches.push(format!("U+{cp:04X} {class}: rust says {ours}"));
            }
        }
    }
    assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches[..mismatches.len().min(50)].join("\n"));
}

#[test]
fn pretokenize_follows_the_regex_alternatives_in_order() {
    assert_eq!(pretokenize("it's a dog's life"), ["it", "'s", "a", "dog", "'s", "life"]);
    assert_eq!(pretokenize("!!'s 2023"), ["!!'", "s", "2", "0", "2", "3"]);
    assert_eq!(pretokenize("a<|endoftext|>b"), ["a", "<|endoftext|>", "b"]);
    assert_eq!(pretokenize("it'\u{17f}"), ["it", "'\u{17f}"]);
}

#[test]
fn bytes_to_unicode_is_a_bijection_onto_printable_chars() {
    let table = bytes_to_unicode();
    assert_eq!(table.len(), 256);
    assert_eq!(table[0], (b'!', '!'));
    assert_eq!(table[188], (0, '\u{100}')); // first non-printable byte: NUL
    assert_eq!(table.iter().find(|(b, _)| *b == b' ').unwrap().1, '\u{120}'); // GPT-2's 'Ġ'
    let mut chars: Vec<char> = table.iter().map(|&(_, c)| c).collect();
    chars.sort();
    chars.dedup();
    assert_eq!(chars.len(), 256);
    assert!(chars.iter().all(|c| !c.is_whitespace() && !c.is_control()));
}

#[test]
fn known_words_are_single_tokens() {
    let tok = tokenizer();
    assert_eq!(tok.encode("cat"), [tok.token_id("cat</w>").unwrap()]);
    assert_eq!(tok.encode("A Photo"), tok.encode("a photo"));
}

#[test]
fn bad_files_give_errors_that_name_them() {
    let dir = std::env::temp_dir().join(format!("dalle_clip_bpe_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let missing = dir.join("missing.txt.gz");
    let err = ClipBpe::load(&missing).err().expect("missing file must fail");
    assert!(matches!(err, Error::Io { .. }) && err.to_string().contains("missing.txt.gz"), "{err}");

    let short = dir.join("short.txt.gz");
    let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(&short).unwrap(), Default::default());
    gz.write_all(b"#version: 0.2\ni n\nt h\n").unwrap();
    gz.finish().unwrap();
    let err = ClipBpe::load(&short).err().expect("short file must fail");
    assert!(matches!(err, Error::Format { .. }) && err.to_string().contains("short.txt.gz"), "{err}");
    assert!(err.to_string().contains("48894 merge lines"), "{err}");

    let not_gzip = dir.join("plain.txt.gz");
    std::fs::write(&not_gzip, b"#version: 0.2\ni n\n").unwrap();
    let err = ClipBpe::load(&not_gzip).err().expect("plain text must fail");
    assert!(err.to_string().contains("plain.txt.gz"), "{err}");

    std::fs::remove_dir_all(&dir).unwrap();
    assert!(default_bpe_path().ends_with("clip/bpe_simple_vocab_16e6.txt.gz"));
}

/// A benchmark line, not a timed test: a 1 MB single word and 1 MB of nested `&amp;`
/// used to take 112 s and minutes (both quadratic); each is now one BPE heap pass
/// and one cleaning pass. The assertions check the results, the timings are printed
/// (`cargo test --release --test clip_tokenizer -- --nocapture long_inputs`).
/// This thread's CPU seconds (user + system) where Linux tells them, to print beside the
/// wall time: on a loaded machine the wall time says more about the neighbours.
fn thread_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

/// (wall seconds, CPU seconds) of `f`.
fn timed<T>(f: impl FnOnce() -> T) -> (T, String) {
    let (cpu, wall) = (thread_cpu_secs(), std::time::Instant::now());
    let out = f();
    let cpu = match (cpu, thread_cpu_secs()) {
        (Some(a), Some(b)) => format!(", {:.2} s CPU", b - a),
        _ => String::new(),
    };
    (out, format!("{:.3} s wall{cpu}", wall.elapsed().as_secs_f64()))
}

#[test]
fn long_inputs_encode_in_one_pass() {
    let bpe = tokenizer();
    let word: String = "abcdefghijklmnopqrstuvwxyz".chars().cycle().take(1 << 20).collect();
    let (ids, word_time) = timed(|| bpe.encode(&word));
    // BPE only regroups the bytes: decoding gives the word back (with the `</w>` space).
    assert_eq!(bpe.decode(&ids).unwrap(), format!("{word} "));

    let nested = format!("&{}", "amp;".repeat((1 << 20) / 4));
    let (nested_ids, nested_time) = timed(|| bpe.encode(&nested));
    // Every level unescapes: ftfy's loop ends at a single `&`.
    assert_eq!(nested_ids, bpe.encode("&"));

    let long_text = "a photo of a cat ".repeat(60_000);
    let (row, truncate_time) = timed(|| bpe.encode_padded(&long_text, CONTEXT_LENGTH, true).unwrap());
    assert_eq!(row.len(), CONTEXT_LENGTH);
    println!(
        "bench: 1 MB single word {word_time} ({} ids); 1 MB nested &amp; {nested_time}; \
         1 MB text truncated to {CONTEXT_LENGTH} tokens {truncate_time}",
        ids.len()
    );
}
