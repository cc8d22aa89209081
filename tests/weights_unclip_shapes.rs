//! The shipped Shapes unCLIP (`weights/unclip_prior_shapes.safetensors`, from
//! `10_unclip_prior --dataset shapes`; `weights/unclip_decoder_shapes.safetensors` and
//! `weights/unclip_upsampler_shapes.safetensors`, from `11_unclip_decoder --dataset shapes`)
//! keeps its measured (weak: undertrained, see chapter 11) quality, loaded through `UnclipPipeline::load_shipped(Shapes)`: the
//! prior's embeddings are closer to the true image embeddings than the caption's own text
//! embedding, the upsampler learned something (far closer to real images than an untrained
//! one, though not as close as interpolation), and the pipeline's 16x16 images show the
//! colour a one-object caption names more often than chance.

use dalle::data::{self, DatasetName, Split};
use dalle::eval::shapes_fidelity::{single_object_prompts, ShapesFidelity};
use dalle::models::prior::{row_cosines, PriorSampling};
use dalle::models::unclip::{bilinear_upsample, downsample, Unclip, UnclipPipeline, Upsampler};
use dalle::Rng;
use ndarray::s;

/// The shipped pipeline, its prior sampled with 16 ODE steps (64 in the chapter) to keep the test short.
fn pipeline() -> UnclipPipeline {
    let mut p = UnclipPipeline::load_shipped(DatasetName::Shapes).expect("the shipped Shapes unCLIP");
    p.prior_sampling = PriorSampling { steps: 16, ..PriorSampling::default() };
    p
}

/// The first `n` Shapes test images and their captions.
fn test_images(n: usize) -> (ndarray::Array4<f32>, Vec<String>) {
    let test = data::load(DatasetName::Shapes, &data::resolve_data_dir(None), Split::Test, Some(n)).unwrap();
    (test.images, test.captions.unwrap())
}

#[test]
fn the_pipeline_draws_the_colour_a_caption_names_at_16x16() {
    // The 36 one-object phrases once each, seed 0, prior with 16 steps, decoder DDIM-10 s = 3.
    let p = pipeline();
    let prompts = single_object_prompts();
    let images = p.generate(&prompts, &mut Rng::new(0)).unwrap();
    assert_eq!(images.high.dim(), (36, 3, 32, 32));
    assert_eq!(images.low.dim(), (36, 3, 16, 16));
    let low = ShapesFidelity::measure(&bilinear_upsample(&images.low, 2), &prompts).unwrap();
    let high = ShapesFidelity::measure(&images.high, &prompts).unwrap();
    println!("pipeline, 36 one-object captions: decoder (16x16, bilinear to 32) {}; after the upsampler {}", low.summary(), high.summary());
    assert!(low.colour >= MIN_LOW_COLOUR, "{}", low.summary());
    assert!(low.count >= MIN_LOW_COUNT, "{}", low.summary());
}

/// Measured when the weights were shipped (these 36 captions, seed 0): at 16x16 count 20/36,
/// colour 20/36 (chance, given one object: 1/6), shape 11/36. The floors (16/36) leave room for
/// 4 verdicts to change with floating-point differences between machines; an untrained decoder
/// draws noise, which the judge reads as no object (0 %). After the upsampler: count 9/36,
/// colour 3/36: its background colour cast (chapter 11) breaks the pixel judge, so the test
/// does not assert on it.
const MIN_LOW_COLOUR: f64 = 0.44;
const MIN_LOW_COUNT: f64 = 0.44;

#[test]
fn the_prior_beats_the_text_embedding() {
    let p = pipeline();
    let (images, captions) = test_images(N);
    let true_z = p.prior.clip.image_embeddings(&images.slice(s![..N, .., .., ..])).unwrap(); // (N, 32)
    let baseline = row_cosines(&p.prior.encode(&captions).unwrap().text_embeds, &true_z).unwrap().0;
    let z = p.prior.sample(&captions, &p.prior_sampling, &mut Rng::new(0)).unwrap();
    let prior = row_cosines(&z, &true_z).unwrap().0;
    println!("{N} test captions: cos(z_t, z_i) = {baseline:.4}, cos(prior's z_i, z_i) = {prior:.4}");
    assert!(prior >= baseline + MARGIN, "prior {prior:.4} vs baseline {baseline:.4}");
}

const N: usize = 100;
/// Measured when the weights were shipped (seed 0, these 100 captions): baseline 0.9570,
/// prior 0.9864, a gap of 0.029. An untrained prior draws directions at random (cosine about 0).
const MARGIN: f64 = 0.02;

#[test]
fn the_upsampler_is_far_closer_to_real_images_than_an_untrained_one() {
    let p = pipeline();
    let (images, _) = test_images(16);
    let low = downsample(&images, 2); // (16, 3, 16, 16)
    let mse = |a: &ndarray::Array4<f32>| (a - &images).mapv(|v| v * v).mean().unwrap();
    let trained = mse(&p.unclip().upsample(&low, &mut Rng::new(0)).unwrap());
    let untrained_upsampler = Upsampler::new(Upsampler::shapes_config(), 2, &mut Rng::new(0)).unwrap();
    let untrained = mse(&Unclip { upsampler: Some(&untrained_upsampler), ..p.unclip() }.upsample(&low, &mut Rng::new(0)).unwrap());
    let bilinear = mse(&bilinear_upsample(&low, 2));
    println!("16 test images from 16x16, MSE to the 32x32 originals: upsampler {trained}, untrained upsampler {untrained}, bilinear {bilinear}");
    assert!(trained < untrained / 2.0, "upsampler {trained} vs untrained {untrained}");
}
// Measured when the weights were shipped (the first 16 test images, seed 0): upsampler 0.126,
// untrained 0.501, bilinear 0.006. The shipped upsampler is *worse* than bilinear interpolation
// (chapter 11): 1908 steps leave a colour cast over the black background. The test guards what
// it did learn (a quarter of the untrained error; the bound is half).
