//! The shipped toy CLIP (`weights/clip_mnist.safetensors`, trained by
//! `cargo run --release --example 03_clip`) classifies the FULL MNIST test set
//! zero-shot, from prompts alone, at 95% or better, as chapter 03 claims.

use std::path::Path;

use dalle::data::{self, DatasetName, Split};
use dalle::models::clip::load::load_toy;
use dalle::models::clip::zero_shot::{dataset_prompts, evaluate};

#[test]
fn shipped_mnist_clip_zero_shot_accuracy_is_at_least_95_percent() {
    let weights = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/clip_mnist.safetensors");
    let size = std::fs::metadata(&weights).expect("weights/clip_mnist.safetensors is shipped").len();
    assert!(size < 5 << 20, "{size} bytes: shipped weights must stay under 5 MB");
    let (model, tokenizer) = load_toy(&weights).unwrap();
    let test = data::load(DatasetName::Mnist, &data::resolve_data_dir(None), Split::Test, None).unwrap();
    assert_eq!(test.len(), 10_000, "the full MNIST test set");
    let (acc, predicted) = evaluate(&model, &tokenizer, &test, &dataset_prompts(DatasetName::Mnist)).unwrap();
    println!("zero-shot accuracy on the MNIST test set: {:.2}%", 100.0 * acc);
    assert!(acc >= 0.95, "zero-shot accuracy {acc:.4} < 0.95");
    // Not a constant answer: every digit is predicted for some image.
    assert!((0..10).all(|k| predicted.contains(&k)));
}
