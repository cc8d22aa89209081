//! The shipped Shapes unCLIP (`weights/unclip_prior_shapes.safetensors`, from
//! `10_unclip_prior --dataset shapes`; `weights/unclip_decoder_shapes.safetensors` and
//! `weights/unclip_upsampler_shapes.safetensors`, from `11_unclip_decoder --dataset shapes`)
//! keeps its measured quality, loaded through `UnclipPipeline::load_shipped(Shapes)`: the
//! prior's embeddings are closer to the true image embeddings than the caption's own text
//! embedding, the upsampler beats interpolation on real 16x16 images, and the whole pipeline
//! draws the colour and the shape that a one-object caption names.

use dalle::data::{self, DatasetName, Split};
use dalle::eval::shapes_fidelity::{single_object_prompts, ShapesFidelity};
use dalle::models::prior::{row_cosines, PriorSampling};
use dalle::models::unclip::{bilinear_upsample, downsample, UnclipPipeline};
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
fn the_pipeline_draws_the_colour_and_shape_a_caption_names() {
    // 12 of the 36 one-object phrases, every colour and size, the shapes in turn; seed 0.
    let p = pipeline();
    let all = single_object_prompts(); // size, colour, shape: index 18·size + 3·colour + shape
    let prompts: Vec<String> = (0..12).map(|i| all[3 * i + i % 3].clone()).collect();
    let images = p.generate(&prompts, &mut Rng::new(0)).unwrap();
    assert_eq!(images.high.dim(), (12, 3, 32, 32));
    assert_eq!(images.low.dim(), (12, 3, 16, 16));
    let f = ShapesFidelity::measure(&images.high, &prompts).unwrap();
    println!("pipeline, 12 one-object captions: {}", f.summary());
    assert!(f.colour >= MIN_COLOUR, "{}", f.summary());
    assert!(f.shape >= MIN_SHAPE, "{}", f.summary());
}

/// Measured when the weights were shipped (these 12 captions, seed 0): colour 12/12, shape 10/12
/// (FILL). The floors leave room for 2 verdicts to change with floating-point differences between
/// machines; an untrained pipeline draws noise, whose colour and shape rates are 0.
const MIN_COLOUR: f64 = 0.8;
const MIN_SHAPE: f64 = 0.6;

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
/// Measured when the weights were shipped (seed 0, these 100 captions): baseline FILL,
/// prior FILL. An untrained prior draws directions at random (cosine about 0).
const MARGIN: f64 = 0.0;

#[test]
fn the_upsampler_beats_interpolation_on_real_16x16_images() {
    let p = pipeline();
    let (images, captions) = test_images(16);
    let low = downsample(&images, 2); // (16, 3, 16, 16)
    let up = p.unclip().upsample(&low, &mut Rng::new(0)).unwrap();
    let bilinear = bilinear_upsample(&low, 2);
    let mse = |a: &ndarray::Array4<f32>| (a - &images).mapv(|v| v * v).mean().unwrap();
    let judged = ShapesFidelity::measure(&up, &captions).unwrap();
    println!("16 test images from 16x16: upsampler MSE {}, bilinear {}; judge on the upsampled: {}", mse(&up), mse(&bilinear), judged.summary());
    assert!(mse(&up) < mse(&bilinear), "upsampler {} vs bilinear {}", mse(&up), mse(&bilinear));
    assert!(judged.all >= MIN_UPSAMPLED_ALL, "{}", judged.summary());
}

/// Measured when the weights were shipped (the first 16 test images, seed 0): FILL.
const MIN_UPSAMPLED_ALL: f64 = 0.0;
