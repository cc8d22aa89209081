//! The shipped Shapes noised CLIP (`weights/noised_clip_shapes.safetensors`, trained by
//! `cargo run --release --example 09_noised_clip -- --dataset shapes`) reads one-object
//! phrases from noised images, and its gradient steers the shipped Shapes GLIDE, given the
//! empty caption, toward the caption (DDIM-10, seed 0, judged by the Shapes judge).

use std::path::{Path, PathBuf};

use dalle::data::shapes::{Shapes, ShapesConfig};
use dalle::data::Split;
use dalle::eval::shapes_fidelity::single_object_prompts;
use dalle::eval::ShapesFidelity;
use dalle::models::clip::load::tokenizer_path_for;
use dalle::models::diffusion::{respace, to_model, to_pixels, Diffusion, Prediction, Sampler};
use dalle::models::glide::{load_toy_shapes, EMPTY_CAPTION};
use dalle::models::noised_clip::{ClipGuided, NoisedClip};
use dalle::tokenizer::TrainedBpe;
use dalle::{Rng, Tensor};

fn weights(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("weights").join(name)
}

fn shipped() -> (NoisedClip, TrainedBpe) {
    let path = weights("noised_clip_shapes.safetensors");
    (NoisedClip::load(&path).unwrap(), TrainedBpe::load(tokenizer_path_for(&path)).unwrap())
}

#[test]
fn the_noised_clip_names_one_object_phrases_at_t_300() {
    let (clip, tokenizer) = shipped();
    let phrases = single_object_prompts();
    let shapes = Shapes::new(ShapesConfig::for_split(Split::Test)).unwrap();
    let samples: Vec<_> = shapes.iter().filter(|s| s.count() == 1).take(200).collect();
    let images = ndarray::stack(ndarray::Axis(0), &samples.iter().map(|s| s.image.view()).collect::<Vec<_>>()).unwrap();
    let x0 = to_model(&images);
    let schedule = Diffusion::linear_epsilon().unwrap().schedule;
    let t = vec![300; samples.len()];
    let x_t = schedule.q_sample(&x0, &t, &Tensor::randn(&x0.shape(), &mut Rng::new(0))).unwrap(); // √ᾱ x_0 + √(1-ᾱ) ε
    let f = dalle::no_grad(|| clip.image_embeds(&x_t, &t)).unwrap().to_array(); // (200, E)
    let g = clip.caption_embeds(&tokenizer, &phrases).unwrap().to_array(); // (36, E)
    let f = f.into_dimensionality::<ndarray::Ix2>().unwrap();
    let g = g.into_dimensionality::<ndarray::Ix2>().unwrap();
    let predicted = dalle::models::clip::zero_shot::predict(&f.dot(&g.t()));
    let right = samples.iter().zip(&predicted).filter(|(s, &p)| phrases[p] == s.caption).count();
    println!("t = 300: {right} of 200 one-object test images named among the 36 phrases");
    assert!(right >= MIN_ZERO_SHOT_AT_300, "{right} of 200");
}

/// Measured when the weights were shipped: 79.5 % of 1000 such images at t = 300 (chapter 03's
/// clean CLIP: 9.6 %); 157 of these 200 with noise seed 0. The floor, 140, is three standard
/// errors (5.8 images) below: room for verdicts that floating-point differences between machines
/// flip; chance is 1/36 (6 of 200).
const MIN_ZERO_SHOT_AT_300: usize = 140;

/// The Shapes judge on 36 DDIM-10 samples (one per one-object prompt, seed 0, the same noise at
/// every scale) of the shipped Shapes GLIDE given the empty caption, CLIP-guided at scale `s`.
fn clip_guided(s: f32) -> ShapesFidelity {
    let (clip, tokenizer) = shipped();
    let (glide, glide_tokenizer) = load_toy_shapes(&weights("glide_shapes.safetensors")).unwrap();
    let prompts = single_object_prompts();
    let text = clip.caption_embeds(&tokenizer, &prompts).unwrap(); // ĝ(c), (36, E)
    let empty = glide.with_captions(&glide_tokenizer, &vec![EMPTY_CAPTION; prompts.len()], false).unwrap(); // ε(x_t, t, "")
    let diffusion = Diffusion::linear_epsilon().unwrap();
    let guided = ClipGuided::new(empty, Prediction::Epsilon, &diffusion.schedule, &clip, text, s).unwrap();
    let mut rng = Rng::new(0);
    let x_t = Tensor::randn(&[prompts.len(), 3, 32, 32], &mut rng);
    let x0 = Sampler::Ddim(0.0).sample(&guided, &diffusion, x_t, &respace(1000, 10).unwrap(), &mut rng, &mut |_, _| {}).unwrap();
    let fidelity = ShapesFidelity::measure(&to_pixels(&x0).unwrap(), &prompts).unwrap();
    println!("CLIP guidance s = {s}: {}", fidelity.summary());
    fidelity
}

#[test]
fn clip_guidance_steers_the_unconditional_glide_toward_the_caption() {
    let unguided = clip_guided(0.0);
    let guided = clip_guided(GUIDED_SCALE);
    assert!(unguided.colour <= MAX_UNGUIDED_COLOUR, "unguided colour {}: the empty caption should not know it", unguided.colour);
    assert!(guided.colour >= MIN_GUIDED_COLOUR && guided.colour > unguided.colour, "guided colour {} (unguided {})", guided.colour, unguided.colour);
}

/// The scale of the test and the bounds of its verdicts. Measured when the weights were shipped
/// (seed 0, 36 images, DDIM-10): s = 0 gives colour 1 of 36, s = 300 gives 5 of 36 (size, colour
/// and shape all right in 3). The bounds leave room for two verdicts to change with
/// floating-point differences between machines; a gradient that pointed nowhere would leave the
/// guided samples at the unguided rate.
const GUIDED_SCALE: f32 = 300.0;
const MIN_GUIDED_COLOUR: f64 = 3.0 / 36.0;
const MAX_UNGUIDED_COLOUR: f64 = 3.0 / 36.0;
