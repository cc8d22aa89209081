//! The shipped tokenizers, re-measured: the MNIST ones on the full MNIST test set (10 000
//! images), the Shapes VQ-VAE on the Shapes test split (2 000 images) through the Shapes judge.
//!
//! The numbers in chapters 05 and 06 come from these files; each bound is the
//! claim the chapter makes, so a change that breaks the model or its loading fails here.

use std::path::Path;

use dalle::data::{load, resolve_data_dir, DatasetName, Split};
use dalle::io::checkpoint;
use dalle::models::dvae::{Dvae, DvaeConfig};
use dalle::eval::ShapesFidelity;
use dalle::models::dalle::pipeline::load_image_tokenizer;
use dalle::models::image_tokenizer::{reconstruct, ImageTokenizer};
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

/// Measured when shipped (`05_vq_vae --dataset shapes`, 1 849 steps): MSE 0.00027, and the
/// Shapes judge reads back 98.2 % of the 2 000 test reconstructions exactly as their captions say
/// (count 99.6 %, colour 99.6 %, shape 98.3 %, relation 98.9 %). The floors sit a little under
/// these: room for summation-order differences, not for a blurrier tokenizer (a square that
/// loses three pixels of its 64 already reads as a circle).
const SHAPES_VQ_MSE_BOUND: f64 = 0.0005;
const SHAPES_VQ_ALL_FLOOR: f64 = 0.96;

#[test]
fn shipped_shapes_vqvae_reconstructions_pass_the_shapes_judge() {
    let model = load_image_tokenizer(DatasetName::Shapes, Path::new("weights/vqvae_shapes.safetensors")).unwrap();
    let test = load(DatasetName::Shapes, &resolve_data_dir(None), Split::Test, None).unwrap();
    assert_eq!((test.len(), model.grid(32, 32), model.vocab_size()), (2_000, (8, 8), 128));
    let report = model.evaluate(&test, 500).unwrap();
    println!("shapes vq-vae test: {report:?}");
    assert!(report.mse <= SHAPES_VQ_MSE_BOUND, "test MSE {} exceeds {SHAPES_VQ_MSE_BOUND}", report.mse);
    let fidelity = ShapesFidelity::measure(&reconstruct(&model, &test, 500).unwrap(), test.captions.as_ref().unwrap()).unwrap();
    println!("Shapes judge on the reconstructions: {}", fidelity.summary());
    assert!(fidelity.all >= SHAPES_VQ_ALL_FLOOR, "{}", fidelity.summary());
    // the MNIST tokenizer is not a Shapes tokenizer: one input channel, a clear error naming the file
    let err = load_image_tokenizer(DatasetName::Shapes, Path::new("weights/vqvae_mnist.safetensors")).err().expect("a 1-channel VQ-VAE loaded as the Shapes tokenizer");
    assert!(err.to_string().contains("vqvae_mnist.safetensors"), "{err}");
}
