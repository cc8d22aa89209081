//! The shipped MNIST tokenizers, re-measured on the full MNIST test set (10 000 images).
//!
//! The numbers in chapters 05 and 06 come from these files; each bound is the
//! claim the chapter makes, so a change that breaks the model or its loading fails here.

use std::path::Path;

use dalle::data::{load, resolve_data_dir, DatasetName, Split};
use dalle::io::checkpoint;
use dalle::models::dvae::{Dvae, DvaeConfig};
use dalle::models::image_tokenizer::ImageTokenizer;
use dalle::models::vqvae::{VqVae, VqVaeConfig};
use dalle::Rng;

#[test]
fn shipped_vqvae_reconstructs_mnist_test_set_within_mse_0_01() {
    let model = VqVae::new(VqVaeConfig::mnist(), &mut Rng::new(0)).unwrap();
    checkpoint::load(Path::new("weights/vqvae_mnist.safetensors")).unwrap().load_into(&model, &[]).unwrap();
    let test = load(DatasetName::Mnist, &resolve_data_dir(None), Split::Test, None).unwrap();
    assert_eq!(test.len(), 10_000);
    let report = model.evaluate(&test, 500).unwrap();
    println!("vq-vae test: {report:?}");
    assert!(report.mse <= 0.01, "test MSE {} exceeds 0.01", report.mse);
    // a healthy codebook: more than a third of the 128 codes in effective use
    assert!(report.perplexity > 40.0, "perplexity {} (codebook collapse?)", report.perplexity);
    // the tokenizer path (encode, then decode) gives the same reconstructions as forward
    let (x, _) = test.batch(&[0, 1, 2, 3]);
    let tokens = model.encode(&x).unwrap();
    assert_eq!(tokens.dim(), (4, 7, 7));
    let mse = (&model.decode(&tokens).unwrap() - &x).mapv(|v| v * v).mean().unwrap();
    assert!(mse < 0.02, "encode/decode MSE {mse} on four test digits");
}

/// Measured when shipped: MSE 0.01355, usage 37.5 % (chapter 06); the bounds leave room for
/// summation-order differences only, not for a worse model.
const DVAE_MSE_BOUND: f64 = 0.0145;
const DVAE_USAGE_BOUND: f32 = 0.3;

#[test]
fn shipped_dvae_reconstructs_mnist_test_set() {
    let model = Dvae::new(DvaeConfig::mnist(), &mut Rng::new(0)).unwrap();
    checkpoint::load(Path::new("weights/dvae_mnist.safetensors")).unwrap().load_into(&model, &[]).unwrap();
    let test = load(DatasetName::Mnist, &resolve_data_dir(None), Split::Test, None).unwrap();
    let report = model.evaluate(&test, 500).unwrap();
    println!("dvae test: {report:?}");
    assert!(report.mse <= DVAE_MSE_BOUND, "test MSE {} exceeds {DVAE_MSE_BOUND}", report.mse);
    assert!(report.usage > DVAE_USAGE_BOUND, "codebook usage {}", report.usage);
}
