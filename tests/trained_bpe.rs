//! The caption-trained BPE: round trips, merges of frequent words, save and load.
#![cfg(feature = "trained-bpe")]

use std::sync::OnceLock;

use dalle::tokenizer::trained_bpe::{TrainedBpe, MIN_VOCAB_SIZE};
use dalle::tokenizer::TextTokenizer;
use dalle::Error;

/// 600 MNIST-like and shapes-like captions built from a few templates.
fn captions() -> Vec<String> {
    let digits = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];
    let colours = ["red", "green", "blue", "yellow"];
    let shapes = ["circle", "square", "triangle"];
    let places = ["on the left", "on the right", "at the top", "in the middle"];
    let mut out = Vec::new();
    for i in 0..600 {
        out.push(match i % 3 {
            0 => format!("a handwritten digit {}", digits[i % 10]),
            1 => format!("A {} {} {}", colours[i % 4], shapes[(i / 4) % 3], places[(i / 12) % 4]),
            _ => format!("the number {} written in {} ink", digits[(i / 3) % 10], colours[(i / 7) % 4]),
        });
    }
    out
}

fn trained() -> &'static TrainedBpe {
    static TOKENIZER: OnceLock<TrainedBpe> = OnceLock::new();
    TOKENIZER.get_or_init(|| TrainedBpe::train(&captions(), 512).unwrap())
}

#[test]
fn special_tokens_come_first_and_vocab_is_bounded() {
    let tok = trained();
    assert_eq!((tok.pad(), tok.sot(), tok.eot()), (0, 1, 2));
    // 256 bytes + 3 specials + at least one merge per distinct caption word, at most 512.
    assert!(tok.vocab_size() > 300 && tok.vocab_size() <= 512, "vocab {}", tok.vocab_size());
}

#[test]
fn decode_inverts_encode_up_to_lowercase_and_strip() {
    let tok = trained();
    for text in [
        "a handwritten digit seven",
        "A Blue TRIANGLE at the top",
        "  words never seen: zebra, quokka!  ",
        "café 東京 🐱 and  two   spaces",
        "",
    ] {
        let ids = tok.encode(text).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), text.trim().to_lowercase(), "ids {ids:?}");
    }
}

#[test]
fn frequent_words_become_single_tokens() {
    let tok = trained();
    for word in ["digit", "circle", "square", "triangle", "handwritten", "seven"] {
        let ids = tok.encode(word).unwrap();
        assert_eq!(ids.len(), 1, "{word} -> {:?}", ids.iter().map(|&i| tok.id_to_token(i)).collect::<Vec<_>>());
    }
    // A word never seen is spelt with several smaller pieces.
    assert!(tok.encode("xylophone").unwrap().len() > 1);
    // Captions are short in tokens: one per word here.
    assert_eq!(tok.encode("a red circle on the left").unwrap().len(), 6);
}

#[test]
fn encode_batch_pads_and_checks_length() {
    let tok = trained();
    let batch = tok.encode_batch(&["a red circle", ""], 8, false).unwrap();
    assert_eq!(batch.dim(), (2, 8));
    let row0 = batch.row(0).to_vec();
    let ids = tok.encode("a red circle").unwrap();
    assert_eq!(row0[0], tok.sot());
    assert_eq!(row0[1..1 + ids.len()], ids[..]);
    assert_eq!(row0[1 + ids.len()], tok.eot());
    assert!(row0[2 + ids.len()..].iter().all(|&t| t == tok.pad()));
    assert_eq!(batch.row(1).to_vec(), [1, 2, 0, 0, 0, 0, 0, 0]);

    let long = "a handwritten digit seven ".repeat(4);
    assert!(tok.encode_batch(&[long.as_str()], 8, false).is_err());
    let cut = tok.encode_batch(&[long.as_str()], 8, true).unwrap();
    assert_eq!(cut[[0, 7]], tok.eot());
}

#[test]
fn save_then_load_gives_the_same_ids() {
    let dir = std::env::temp_dir().join(format!("dalle_trained_bpe_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("captions_bpe.json");
    trained().save(&path).unwrap();
    assert!(!dir.join("captions_bpe.json.tmp").exists(), "temp file left behind");
    let loaded = TrainedBpe::load(&path).unwrap();
    for text in ["a green square in the middle", "the number nine written in red ink", "unseen words ü"] {
        assert_eq!(loaded.encode(text).unwrap(), trained().encode(text).unwrap());
    }
    assert_eq!(loaded.vocab_size(), trained().vocab_size());

    let garbage = dir.join("garbage.json");
    std::fs::write(&garbage, "{\"not\": \"a tokenizer\"}").unwrap();
    let err = TrainedBpe::load(&garbage).err().unwrap();
    assert!(matches!(err, Error::Format { .. }) && err.to_string().contains("garbage.json"), "{err}");
    let err = TrainedBpe::load(dir.join("absent.json")).err().unwrap();
    assert!(matches!(err, Error::Io { .. }) && err.to_string().contains("absent.json"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn errors_instead_of_panics() {
    assert!(matches!(TrainedBpe::train(&["a b c"], MIN_VOCAB_SIZE - 1), Err(Error::Config(_))));
    let err = trained().decode(&[3, 100_000]).unwrap_err();
    assert!(err.to_string().contains("token id 100000 at position 1"), "{err}");
}
