//! The shipped unCLIP decoder and upsampler (`weights/unclip_decoder_mnist.safetensors`,
//! `weights/unclip_upsampler_mnist.safetensors`, the EMA weights of
//! `cargo run --release --example 11_unclip_decoder`) keep their measured quality: the
//! decoder turns test digits' own CLIP embeddings back into the same digits, the upsampler
//! keeps the digit of a 14x14 test image, and the pipeline draws the digits a caption asks for.

use std::path::Path;

use dalle::data::{self, DatasetName, Split};
use dalle::eval::DigitJudge;
use dalle::io::checkpoint;
use dalle::models::diffusion::Diffusion;
use dalle::models::prior::{PriorSampling, UnclipPrior};
use dalle::models::unclip::{bilinear_upsample, downsample, generate, DecoderConfig, DiffusionImagePrior, FrozenClip, ImagePrior, Sampling, TextEmbeddingPrior, Unclip, UnclipDecoder, Upsampler};
use dalle::Rng;

fn weights(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("weights").join(name)
}

struct Shipped {
    clip: FrozenClip,
    decoder: UnclipDecoder,
    upsampler: Upsampler,
    diffusion: Diffusion,
}

fn shipped() -> Shipped {
    let clip = FrozenClip::load_toy(&weights("clip_mnist.safetensors")).unwrap();
    let decoder = UnclipDecoder::new(DecoderConfig::mnist(), &mut Rng::new(0)).unwrap();
    checkpoint::load(&weights("unclip_decoder_mnist.safetensors")).unwrap().load_into(&decoder, &[]).unwrap();
    let upsampler = Upsampler::new(Upsampler::mnist_config(), 2, &mut Rng::new(0)).unwrap();
    checkpoint::load(&weights("unclip_upsampler_mnist.safetensors")).unwrap().load_into(&upsampler, &[]).unwrap();
    let diffusion = Diffusion::linear_epsilon().unwrap();
    Shipped { clip, decoder, upsampler, diffusion }
}

fn unclip(s: &Shipped) -> Unclip<'_> {
    Unclip {
        clip: &s.clip,
        decoder: &s.decoder,
        upsampler: Some(&s.upsampler),
        diffusion: &s.diffusion,
        sampling: Sampling { decoder_steps: 10, guidance: 3.0, upsampler_steps: 10, blur_sigma: 0.5, batch: 64 },
    }
}

/// The first `n` MNIST test images.
fn test_images(n: usize) -> (ndarray::Array4<f32>, Vec<usize>) {
    let test = data::load(DatasetName::Mnist, &data::resolve_data_dir(None), Split::Test, Some(n)).expect("MNIST test set");
    (test.images, test.labels)
}

#[test]
fn variations_of_test_digits_keep_their_digit() {
    // The first 20 test images, each decoded once from its own CLIP embedding (no caption),
    // DDIM-10 with guidance 3, then upsampled (DDIM-10); seed 0.
    let s = shipped();
    let (images, labels) = test_images(20);
    let decoded = unclip(&s).variations(&images, 1, &mut Rng::new(0)).unwrap();
    let judge = DigitJudge::pretrained().unwrap();
    let kept = judge.fidelity(&decoded.high, &labels).unwrap();
    println!("variations of 20 test digits judged as their source's digit: {kept}");
    assert!(kept >= MIN_KEPT, "{kept}");
}

/// Measured when the weights were shipped: 20 of 20. The floor leaves room for 3 verdicts to
/// change with floating-point differences between machines; an untrained decoder scores about 0.1.
const MIN_KEPT: f32 = 0.85;

#[test]
fn the_upsampler_keeps_the_digit_of_a_14x14_test_image() {
    let s = shipped();
    let (images, labels) = test_images(20);
    let up = unclip(&s).upsample(&downsample(&images, 2), &mut Rng::new(0)).unwrap();
    let judge = DigitJudge::pretrained().unwrap();
    let acc = judge.fidelity(&up, &labels).unwrap();
    let mse = (&up - &images).mapv(|v| v * v).mean().unwrap();
    let bilinear = (&bilinear_upsample(&downsample(&images, 2), 2) - &images).mapv(|v| v * v).mean().unwrap();
    println!("upsampled 14x14 test digits: judge {acc}, MSE to the 28x28 originals {mse} (bilinear: {bilinear})");
    assert!(acc >= MIN_UPSAMPLED, "{acc}");
    assert!(mse < MAX_UPSAMPLE_MSE && mse < bilinear, "upsampler MSE {mse}, bilinear {bilinear}");
}

/// Measured when the weights were shipped: 20 of 20, MSE 0.0047 (pixels in [0, 1]), against
/// 0.0152 for bilinear interpolation of the same inputs. The bound is twice the measured
/// MSE and the upsampler must also beat interpolation; an untrained one outputs noise (MSE above 0.3).
const MIN_UPSAMPLED: f32 = 0.9;
const MAX_UPSAMPLE_MSE: f32 = 0.01;

/// The judge's verdict on the pipeline's images for 20 captions (2 per digit), seed 0.
fn pipeline_fidelity(s: &Shipped, prior: &dyn ImagePrior) -> f32 {
    let labels: Vec<usize> = (0..20).map(|i| i % 10).collect();
    let captions: Vec<String> = labels.iter().map(|&y| dalle::data::captions::class_caption(DatasetName::Mnist, y, 0)).collect();
    let images = generate(&unclip(s), prior, &captions, &mut Rng::new(0)).unwrap();
    DigitJudge::pretrained().unwrap().fidelity(&images.high, &labels).unwrap()
}

#[test]
fn the_pipeline_with_the_shipped_prior_draws_the_digit_its_caption_names() {
    // Chapter 10's diffusion prior (16 ODE steps, guidance 1), then the decoder and the upsampler.
    let s = shipped();
    let prior = UnclipPrior::load_shipped().unwrap();
    let acc = pipeline_fidelity(&s, &DiffusionImagePrior { prior: &prior, sampling: PriorSampling { steps: 16, ..PriorSampling::default() } });
    println!("pipeline with the prior, 20 captions: judge {acc}");
    assert!(acc >= MIN_PIPELINE, "{acc}");
}

#[test]
fn the_pipeline_with_the_stand_in_prior_draws_the_digit_its_caption_names() {
    let s = shipped();
    let acc = pipeline_fidelity(&s, &TextEmbeddingPrior { clip: &s.clip });
    println!("pipeline with the stand-in prior (CLIP text embedding), 20 captions: judge {acc}");
    assert!(acc >= MIN_PIPELINE, "{acc}");
}

/// Measured when the weights were shipped: 20 of 20 with the prior, 19 of 20 with the stand-in.
/// The floor leaves room for 3 more verdicts to change; an untrained model scores about 0.1.
const MIN_PIPELINE: f32 = 0.8;
