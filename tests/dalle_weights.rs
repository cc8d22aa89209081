//! The shipped DALL-E (weights/dalle_mnist.safetensors, trained by
//! `cargo run --release --example 07_dalle`) draws the digit it is asked for:
//! with a fixed seed, one caption per digit, 4 candidates each decoded by the
//! shipped VQ-VAE and reranked by the shipped CLIP, the digit judge reads the
//! prompted digit in the CLIP-best candidate of at least 9 of the 10 captions.
//! (The example measures 100 captions per digit; see chapter 07 for the rates.)

use dalle::data::captions::class_caption;
use dalle::data::DatasetName;
use dalle::eval::DigitJudge;
use dalle::io::checkpoint;
use dalle::models::clip::load::load_toy;
use dalle::models::dalle::rerank::{clip_scores, rank_groups};
use dalle::models::dalle::sample::SamplingConfig;
use dalle::models::dalle::sequence::encode_captions;
use dalle::models::dalle::Dalle;
use dalle::models::image_tokenizer::ImageTokenizer;
use dalle::models::vqvae::{VqVae, VqVaeConfig};
use dalle::Rng;
use ndarray::Axis;
use std::path::Path;

fn weights(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("weights").join(name)
}

#[test]
fn shipped_dalle_draws_the_prompted_digit() {
    let model = Dalle::load(&weights("dalle_mnist.safetensors")).unwrap();
    let vqvae = VqVae::new(VqVaeConfig::mnist(), &mut Rng::new(0)).unwrap();
    checkpoint::load(&weights("vqvae_mnist.safetensors")).unwrap().load_into(&vqvae, &["optim."]).unwrap();
    model.check_image_tokenizer(vqvae.vocab_size(), vqvae.grid(28, 28)).unwrap();
    let (clip, bpe) = load_toy(&weights("clip_mnist.safetensors")).unwrap();
    let n = 4;
    let prompts: Vec<String> = (0..10).flat_map(|d| std::iter::repeat_n(class_caption(DatasetName::Mnist, d, 1), n)).collect();
    let text = encode_captions(&bpe, &prompts, model.config.text_len, false).unwrap();
    let sampled = model.sample(&text, &SamplingConfig::default(), true, &mut Rng::new(2024)).unwrap();
    let images = vqvae.decode(&sampled.tokens).unwrap(); // (40, 1, 28, 28)
    let ranked = rank_groups(&clip_scores(&clip, &bpe, &images, &prompts).unwrap(), n).unwrap();
    let best: Vec<usize> = ranked.iter().map(|order| order[0]).collect();
    let verdict = DigitJudge::pretrained().unwrap().predict(&images.select(Axis(0), &best)).unwrap();
    let hits = verdict.iter().enumerate().filter(|(d, &p)| *d == p).count();
    eprintln!("the judge read {verdict:?} for the digits 0..9 ({hits}/10)");
    assert!(hits >= 9, "the judge read {verdict:?} for the digits 0..9 ({hits}/10)");
}
