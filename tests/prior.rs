//! Chapter 10's prior: the transformer against its PyTorch twin, the PCA and
//! quantization round trip, properties the math gives, and bad input.

use std::path::Path;

use dalle::io::checkpoint;
use dalle::models::prior::unclip_prior::save;
use dalle::models::prior::{round_trip, row_cosines, CaptionEncoding, DiffusionPrior, DiffusionPriorConfig, FrozenClip, Pca, PriorDenoiser, Quantizer, UnclipPrior};
use dalle::models::diffusion::Denoiser;
use dalle::nn::TransformerConfig;
use dalle::tensor::no_grad;
use dalle::{Rng, Tensor};
use ndarray::{Array2, Array3};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn tiny_config() -> DiffusionPriorConfig {
    DiffusionPriorConfig { embed_dim: 6, text_width: 5, text_len: 3, num_train_steps: 50, transformer: TransformerConfig::new(8, 2, 2) }
}

/// The twin's reference was computed in float64 from the float32 weights: what differs is our
/// float32 arithmetic, about 1e-6 relative through two blocks of width 8 (LayerNorm, softmax,
/// GELU, sums of at most 32 products). `|a - b| <= 1e-4 (1 + |b|)` is a hundred times that; a
/// wrong token order, a missing null swap or a shifted timestep frequency moves the outputs
/// by 1e-2 or more (the second half of the test checks that the unconditional row is sensitive).
#[test]
fn prior_forward_matches_pytorch() {
    let ck = checkpoint::load(&root().join("tests/golden/prior.safetensors")).unwrap();
    let prior = DiffusionPrior::new(tiny_config(), &mut Rng::new(0)).unwrap();
    ck.load_into(&prior, &["golden."]).unwrap();
    let get = |n: &str| Tensor::new(ck.get(&format!("golden.{n}")).unwrap().clone());
    let t: Vec<usize> = ck.get("golden.t").unwrap().iter().map(|&v| v as usize).collect();
    let keep: Vec<bool> = ck.get("golden.keep").unwrap().iter().map(|&v| v > 0.5).collect();
    let ours = no_grad(|| prior.forward(&get("tokens"), &get("text_embeds"), &get("x_t"), &t, &keep)).unwrap().to_array();
    let theirs = ck.get("golden.x0").unwrap();
    let worst = ours.iter().zip(theirs.iter()).map(|(a, b)| (a - b).abs() / (1.0 + b.abs())).fold(0.0f32, f32::max);
    eprintln!("worst relative difference {worst:e}");
    assert!(worst <= 1e-4, "x̂_0 differs from PyTorch's by {worst:e}");
    // the same rows all conditional: the middle row changes by far more than the tolerance
    let all = no_grad(|| prior.forward(&get("tokens"), &get("text_embeds"), &get("x_t"), &t, &[true; 3])).unwrap().to_array();
    let moved = (0..6).map(|j| (all[[1, j]] - ours[[1, j]]).abs()).fold(0.0f32, f32::max);
    assert!(moved > 1e-2, "dropping the caption moved the output by only {moved}");
}

/// Without its caption (`keep = false`) a row's prediction cannot depend on the caption.
#[test]
fn unconditional_rows_ignore_the_caption() {
    let prior = DiffusionPrior::new(tiny_config(), &mut Rng::new(1)).unwrap();
    let mut rng = Rng::new(2);
    let x_t = Tensor::randn(&[2, 6], &mut rng);
    let tokens_a = Tensor::randn(&[2, 3, 5], &mut rng);
    let tokens_b = Tensor::randn(&[2, 3, 5], &mut rng);
    let text = Tensor::randn(&[2, 6], &mut rng);
    let text_b = Tensor::randn(&[2, 6], &mut rng);
    let a = no_grad(|| prior.forward(&tokens_a, &text, &x_t, &[3, 40], &[false, true])).unwrap().to_array();
    let b = no_grad(|| prior.forward(&tokens_b, &text_b, &x_t, &[3, 40], &[false, true])).unwrap().to_array();
    for j in 0..6 {
        assert_eq!(a[[0, j]], b[[0, j]], "the unconditional row moved with the caption");
    }
    assert!((0..6).any(|j| (a[[1, j]] - b[[1, j]]).abs() > 1e-4), "the conditional row ignored its caption");
}

/// Embeddings with a structure PCA can find: 3 strong directions plus small noise in 8 dimensions.
fn structured(n: usize, seed: u64) -> Array2<f32> {
    let mut rng = Rng::new(seed);
    let big = Tensor::randn(&[n, 3], &mut rng).to_array();
    let small = Tensor::randn(&[n, 8], &mut rng).to_array();
    Array2::from_shape_fn((n, 8), |(i, j)| if j < 3 { 3.0 * big[[i, j]] + 0.01 * small[[i, j]] } else { 0.01 * small[[i, j]] } + 0.5)
}

#[test]
fn pca_components_are_orthonormal_and_sorted() {
    let x = structured(2000, 3);
    let pca = Pca::fit(&x, 8).unwrap();
    let gram = pca.components.dot(&pca.components.t());
    for i in 0..8 {
        for j in 0..8 {
            let want = if i == j { 1.0 } else { 0.0 };
            assert!((gram[[i, j]] - want).abs() < 1e-4, "V_kᵀ V_k [{i}, {j}] = {}", gram[[i, j]]);
        }
    }
    assert!(pca.variances.windows(2).all(|w| w[0] >= w[1]), "variances not sorted: {:?}", pca.variances);
    // three directions of variance 9 carry all but (5 · 1e-4) / (27 + 8e-4) of the total
    assert_eq!(pca.components_for(0.999), 3, "{:?}", pca.variances);
    // with every component kept, PCA alone is exact to float32 rounding
    let back = pca.reconstruct(&pca.project(&x).unwrap()).unwrap();
    let err = (&back - &x).iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(err < 1e-4, "full PCA round trip off by {err}");
}

/// The round trip's error is the dropped components' variance plus the bucket widths:
/// with k = 3 of the structured data and 64 buckets, each kept coefficient (std 3) lands
/// within half a bucket of its value: equal-mass buckets of a Gaussian are at most about
/// 0.05 std wide in the middle and wider in the tails, so the mean squared error per
/// coefficient is below (0.1 · 3)² and the mean cosine above 0.999. The stated test bound
/// on real CLIP embeddings (chapter 10): cos >= 0.99 with k for 99% of the variance, 32 buckets.
#[test]
fn pca_and_quantization_round_trip_within_stated_error() {
    let x = structured(4000, 4);
    let pca = Pca::fit(&x, 3).unwrap();
    let quantizer = Quantizer::fit(&pca.project(&x).unwrap(), 64).unwrap();
    let codes = quantizer.encode(&pca.project(&x).unwrap()).unwrap();
    assert!(codes.iter().all(|&q| q < 64));
    // equal mass: every bucket of every dimension holds about 4000 / 64 = 62.5 values
    for j in 0..3 {
        let mut counts = [0usize; 64];
        codes.iter().skip(j).step_by(3).for_each(|&q| counts[q] += 1);
        assert!(counts.iter().all(|&c| (61..=64).contains(&c)), "dimension {j}: {counts:?}");
    }
    let back = round_trip(&pca, &quantizer, &x).unwrap();
    let mse = (&back - &x).mapv(|v| v * v).mean().unwrap();
    assert!(mse < 0.09 * 3.0 / 8.0, "round trip mean squared error {mse}");
    let (cos, _) = row_cosines(&back, &x).unwrap();
    assert!(cos > 0.999, "round trip mean cosine {cos}");
    // the centres decode to what they encode
    let centres = quantizer.decode(&codes).unwrap();
    assert_eq!(quantizer.encode(&centres).unwrap(), codes);
}

#[test]
fn round_trip_on_the_toy_clip_embeddings_is_within_the_stated_error() {
    // the embeddings of the 50 captions stand in for image embeddings (no MNIST in this test)
    let clip = FrozenClip::load_toy(&root().join("weights/clip_mnist.safetensors")).unwrap();
    let captions: Vec<String> = (0..50).map(|i| dalle::data::captions::class_caption(dalle::data::DatasetName::Mnist, i % 10, i / 10)).collect();
    let z = clip.encode_captions(&captions).unwrap().text_embeds;
    let pca = Pca::fit(&z, 32).unwrap();
    let k = pca.components_for(0.99);
    let pca = Pca::fit(&z, k).unwrap();
    let quantizer = Quantizer::fit(&pca.project(&z).unwrap(), 16).unwrap();
    let (cos, _) = row_cosines(&round_trip(&pca, &quantizer, &z).unwrap(), &z).unwrap();
    eprintln!("k = {k}, mean cosine after the round trip {cos:.4}");
    assert!(cos >= 0.99, "mean cosine {cos} below the stated 0.99");
}

#[test]
fn bad_input_gives_clear_errors() {
    let x = structured(100, 5);
    let pca = Pca::fit(&x, 3).unwrap();
    let wrong = Array2::<f32>::zeros((2, 7));
    let err = pca.project(&wrong).unwrap_err().to_string();
    assert!(err.contains("width 7") && err.contains("8"), "{err}");
    // an image embedding of the wrong width for the prior
    let prior = DiffusionPrior::new(tiny_config(), &mut Rng::new(0)).unwrap();
    let x_t = Tensor::new(Array2::<f32>::zeros((2, 7)).into_dyn());
    let tokens = Tensor::new(Array3::<f32>::zeros((2, 3, 5)).into_dyn());
    let text = Tensor::new(Array2::<f32>::zeros((2, 6)).into_dyn());
    let err = prior.forward(&tokens, &text, &x_t, &[0, 1], &[true, true]).unwrap_err().to_string();
    assert!(err.contains("x_t") && err.contains("[2, 7]") && err.contains("[2, 6]"), "{err}");
    // a CLIP whose embedding width differs from the prior's: the toy CLIP (E = 32) with a prior built for E = 6
    let clip = FrozenClip::load_toy(&root().join("weights/clip_mnist.safetensors")).unwrap();
    let encoded = clip.encode_captions(&["a handwritten 3".to_string()]).unwrap();
    let err = PriorDenoiser::new(&prior, &encoded, vec![true]).err().expect("width mismatch").to_string();
    assert!(err.contains("width 32") && err.contains("6"), "{err}");
    let dir = std::env::temp_dir().join(format!("prior_test_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny_prior.safetensors");
    save(&path, &prior, None, &Default::default()).unwrap();
    let err = UnclipPrior::load(&path, clip).err().expect("CLIP mismatch").to_string();
    assert!(err.contains("embedding width 6") && err.contains("32"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
    // an empty prompt
    let clip = FrozenClip::load_toy(&root().join("weights/clip_mnist.safetensors")).unwrap();
    let err = clip.encode_captions(&["a handwritten 1".to_string(), "  ".to_string()]).err().expect("empty prompt").to_string();
    assert!(err.contains("caption 1 is empty"), "{err}");
    // images of the wrong size for CLIP
    let err = clip.image_embeddings(&ndarray::Array4::<f32>::zeros((1, 1, 14, 14))).unwrap_err().to_string();
    assert!(err.contains("1x14x14") && err.contains("1x28x28"), "{err}");
}

/// The sampler returns unit rows whatever the network, and the same seed gives the same rows.
#[test]
fn samples_are_unit_vectors_and_seeded() {
    let clip = FrozenClip::load_toy(&root().join("weights/clip_mnist.safetensors")).unwrap();
    let config = DiffusionPriorConfig { num_train_steps: 100, transformer: TransformerConfig::new(16, 2, 1), ..DiffusionPriorConfig::mnist(32, 64, 12) };
    let prior = DiffusionPrior::new(config, &mut Rng::new(0)).unwrap();
    let diffusion = config.diffusion().unwrap();
    let encoded: CaptionEncoding = clip.encode_captions(&["a handwritten 3".to_string(), "the digit five".to_string()]).unwrap();
    let a = prior.sample(&diffusion, &encoded, 5, 2.0, &mut Rng::new(7)).unwrap();
    let b = prior.sample(&diffusion, &encoded, 5, 2.0, &mut Rng::new(7)).unwrap();
    assert_eq!(a, b);
    for row in a.rows() {
        assert!((row.dot(&row) - 1.0).abs() < 1e-5);
    }
    // guidance scale 1 is the conditional model alone: the same as the unguided denoiser
    let x = Tensor::randn(&[2, 32], &mut Rng::new(3));
    let cond = prior.denoiser(&encoded).unwrap().predict(&x, &[10, 10]).unwrap().to_array();
    let guided = prior.guided(&encoded, 1.0).unwrap().predict(&x, &[10, 10]).unwrap().to_array();
    let diff = (&cond - &guided).iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(diff < 1e-5, "s = 1 differs from the conditional prediction by {diff}");
}
