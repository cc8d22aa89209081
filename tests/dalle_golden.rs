//! DALL-E 1's forward pass against a PyTorch twin (tests/golden/make_dalle_golden.py,
//! torch 2.5.1): the same weights, the same ids, masks written in Python from
//! their definitions; text and image logits and both cross-entropies, for every mask.
//!
//! The references were computed in float64 from the float32 weights, so what
//! differs is our float32 arithmetic: logits of order 1-10 from four blocks of
//! width 16 (sums of at most 64 products, LayerNorm, softmax, GELU) carry float32
//! rounding of about 1e-6 relative; the tolerance `|a - b| <= 1e-4 (1 + |b|)` is
//! a hundred times that, while a wrong mask cell, a swapped row/column position
//! or a shifted head changes logits by 1e-2 or more (checked below: the row and
//! column references differ from the full one by far more than the tolerance).

use dalle::io::checkpoint::{self, Checkpoint};
use dalle::models::dalle::{Dalle, DalleConfig, MaskPattern};
use dalle::nn::TransformerConfig;
use dalle::tensor::no_grad;
use dalle::Rng;
use ndarray::ArrayD;

const TOL: f32 = 1e-4;

fn golden() -> Checkpoint {
    checkpoint::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/dalle.safetensors")).unwrap()
}

fn worst(ours: &ArrayD<f32>, theirs: &ArrayD<f32>) -> f32 {
    assert_eq!(ours.shape(), theirs.shape());
    ours.iter().zip(theirs.iter()).map(|(a, b)| (a - b).abs() / (1.0 + b.abs())).fold(0.0f32, f32::max)
}

fn check(mask: &str) {
    let ck = golden();
    let config = DalleConfig {
        text_vocab: 20,
        text_len: 5,
        image_vocab: 16,
        grid: (3, 4),
        transformer: TransformerConfig::new(16, 2, 4),
        masks: MaskPattern::parse(mask).unwrap(),
        text_loss_weight: 0.125,
    };
    let model = Dalle::new(config, &mut Rng::new(0)).unwrap();
    ck.load_into(&model, &["golden."]).unwrap();
    let ids: Vec<usize> = ck.get("golden.ids").unwrap().iter().map(|&v| v as usize).collect();
    let s = config.seq_len();
    let inputs: Vec<usize> = ids.chunks(s).flat_map(|r| r[..s - 1].to_vec()).collect();
    let (text, image) = no_grad(|| model.forward(&inputs, 2, s - 1, false)).unwrap();
    let text_err = worst(&text.unwrap().to_array(), ck.get(&format!("golden.{mask}.text_logits")).unwrap());
    let image_err = worst(&image.unwrap().to_array(), ck.get(&format!("golden.{mask}.image_logits")).unwrap());
    eprintln!("{mask}: worst relative difference text {text_err:e}, image {image_err:e}");
    assert!(text_err <= TOL && image_err <= TOL, "{mask}: worst relative difference text {text_err:e}, image {image_err:e}");
    let losses = no_grad(|| model.loss(&ids, 2, false)).unwrap();
    let reference = ck.get(&format!("golden.{mask}.losses")).unwrap();
    assert!((losses.text - reference[0]).abs() <= TOL * (1.0 + reference[0]), "{mask}: CE_text {} vs {}", losses.text, reference[0]);
    assert!((losses.image - reference[1]).abs() <= TOL * (1.0 + reference[1]), "{mask}: CE_image {} vs {}", losses.image, reference[1]);
}

#[test]
fn full_attention_matches_pytorch() {
    check("full");
}

#[test]
fn row_attention_matches_pytorch() {
    check("row");
}

#[test]
fn column_attention_matches_pytorch() {
    check("column");
}

#[test]
fn convolutional_attention_matches_pytorch() {
    check("conv3");
}

#[test]
fn paper_pattern_matches_pytorch() {
    check("paper");
}

/// The comparison can tell masks apart: the references themselves differ by far more than the tolerance.
#[test]
fn the_references_differ_between_masks() {
    let ck = golden();
    let full = ck.get("golden.full.image_logits").unwrap();
    for other in ["row", "column", "conv3", "paper"] {
        let d = worst(ck.get(&format!("golden.{other}.image_logits")).unwrap(), full);
        assert!(d > 100.0 * TOL, "{other} vs full: {d:e}");
    }
}
