//! The noised CLIP and CLIP guidance (chapter 09) on a tiny random model: the guidance
//! gradient against finite differences, scale 0 as the wrapped prediction exactly, the
//! ε-form shift for every kind of prediction, and the errors for bad input.

use std::path::Path;

use dalle::models::clip::ClipConfig;
use dalle::models::diffusion::{BetaSchedule, Denoiser, NoiseSchedule, Prediction};
use dalle::models::noised_clip::{ClipGuided, NoisedClip, NoisedClipConfig};
use dalle::nn::Module;
use dalle::tensor::no_grad;
use dalle::{Rng, Tensor};

/// A ViT on 8x8 images in 4x4 patches, 8 wide, one layer; a one-layer text tower; E = 4.
fn tiny_config() -> NoisedClipConfig {
    let json = r#"{
        "text_config": {"hidden_size": 8, "intermediate_size": 16, "num_attention_heads": 2, "num_hidden_layers": 1,
                        "max_position_embeddings": 6, "vocab_size": 16, "eos_token_id": 2, "pool_at_first_eos": true},
        "vision_config": {"hidden_size": 8, "intermediate_size": 16, "num_attention_heads": 2, "num_hidden_layers": 1,
                          "image_size": 8, "patch_size": 4, "num_channels": 1},
        "projection_dim": 4
    }"#;
    let clip = ClipConfig::from_json_str(json, Path::new("tiny.json")).unwrap();
    NoisedClipConfig { clip, time_embed_dim: 6, num_train_timesteps: 1000, beta_schedule: "linear".into(), trained_on_noised_images: true }
}

fn tiny() -> (NoisedClip, NoiseSchedule) {
    let clip = NoisedClip::new(&tiny_config(), &mut Rng::new(5)).unwrap();
    // The from-clip start has a zero time map; give it random weights so that t matters.
    clip.image.time_embedding.weight.assign(Rng::new(6).normal_array(&[8, 6])).unwrap();
    (clip, NoiseSchedule::new(BetaSchedule::linear(1000), 1000).unwrap())
}

fn unit_rows(b: usize, e: usize, seed: u64) -> Tensor {
    Tensor::new(Rng::new(seed).normal_array(&[b, e])).l2_normalize(-1, 1e-12).unwrap()
}

/// A stand-in denoiser whose output depends on x_t and t.
fn toy_denoiser(x: &Tensor, t: &[usize]) -> dalle::Result<Tensor> {
    let per_row = Tensor::from_vec(t.iter().map(|&t| 1.0 + t as f32 / 1000.0).collect(), &[t.len(), 1, 1, 1])?;
    x.tanh().mul(&per_row)
}

#[test]
fn guidance_gradient_matches_finite_differences() {
    let (clip, schedule) = tiny();
    let text = unit_rows(2, 4, 9);
    let t = [300usize, 800];
    let x0 = Rng::new(11).normal_array(&[2, 1, 8, 8]);
    let zero = |x: &Tensor, _: &[usize]| Ok(Tensor::zeros(&x.shape()));
    let s = 2.5f32;
    let guided = ClipGuided::new(zero, Prediction::Epsilon, &schedule, &clip, text.clone(), s).unwrap();
    // With ε̂ = 0 the guided output is -s √(1 - ᾱ_t) ∇, computed inside no_grad as a sampler would.
    let out = no_grad(|| guided.predict(&Tensor::new(x0.clone()), &t)).unwrap().to_array();
    let ab = schedule.alpha_bar(&t).unwrap();
    // The score Σ_b f̂(x_b, t_b) · ĝ_b, in f64 from f32 embeddings.
    let score = |x: &ndarray::ArrayD<f32>| -> f64 {
        let f = no_grad(|| clip.image_embeds(&Tensor::new(x.clone()), &t)).unwrap().to_array();
        f.iter().zip(text.to_array().iter()).map(|(&a, &b)| a as f64 * b as f64).sum()
    };
    let h = 1e-2f32;
    let (mut worst, mut largest) = (0.0f64, 0.0f64);
    for i in 0..x0.len() {
        let (mut plus, mut minus) = (x0.clone(), x0.clone());
        plus.as_slice_mut().unwrap()[i] += h;
        minus.as_slice_mut().unwrap()[i] -= h;
        let numeric = (score(&plus) - score(&minus)) / (2.0 * h as f64);
        let row = i / 64;
        let analytic = -(out.as_slice().unwrap()[i] as f64) / (s as f64 * (1.0 - ab[row] as f64).sqrt());
        worst = worst.max((analytic - numeric).abs());
        largest = largest.max(numeric.abs());
    }
    println!("largest |∂score/∂x| {largest:.4}, worst |analytic - numeric| {worst:.2e}");
    assert!(largest > 1e-3, "the score does not depend on x_t: the test would prove nothing");
    // f32 rounding of the score (~1e-7) over 2h gives ~1e-5; the O(h²) truncation of the
    // central difference through layer norms and GELU is of the same order. 2% of the largest.
    assert!(worst < 0.02 * largest, "worst error {worst:.2e} against largest gradient {largest:.2e}");
}

#[test]
fn scale_zero_is_the_wrapped_prediction_exactly() {
    let (clip, schedule) = tiny();
    for seed in 0..5u64 {
        let mut rng = Rng::new(seed);
        let b = 1 + rng.below(4);
        let t: Vec<usize> = (0..b).map(|_| rng.below(1000)).collect();
        let x = Tensor::randn(&[b, 1, 8, 8], &mut rng);
        for prediction in [Prediction::Epsilon, Prediction::X0, Prediction::V] {
            let guided = ClipGuided::new(toy_denoiser, prediction, &schedule, &clip, unit_rows(b, 4, seed + 100), 0.0).unwrap();
            let got = guided.predict(&x, &t).unwrap().to_array();
            let want = toy_denoiser(&x, &t).unwrap().to_array();
            assert_eq!(got, want, "seed {seed}, {prediction:?}: scale 0 changed the prediction");
        }
    }
}

#[test]
fn every_prediction_kind_gets_the_same_noise_shift() {
    // Whatever the wrapped model outputs (ε, x_0 or v), the guided output implies
    // ε̂' = ε̂ - s √(1 - ᾱ_t) ∇ once converted back to ε.
    let (clip, schedule) = tiny();
    let mut rng = Rng::new(21);
    let t = vec![100usize, 500, 900];
    let x = Tensor::randn(&[3, 1, 8, 8], &mut rng);
    let text = unit_rows(1, 4, 22); // one caption for every row
    let ab = schedule.alpha_bar(&t).unwrap();
    let s = 4.0f32;
    let eps_guided = ClipGuided::new(toy_denoiser, Prediction::Epsilon, &schedule, &clip, text.clone(), s).unwrap();
    let grad = eps_guided.score_gradient(&x, &t).unwrap().to_array();
    assert!(grad.iter().any(|v| v.abs() > 1e-4), "a zero gradient would make this test vacuous");
    for prediction in [Prediction::X0, Prediction::V] {
        let guided = ClipGuided::new(toy_denoiser, prediction, &schedule, &clip, text.clone(), s).unwrap();
        let out = guided.predict(&x, &t).unwrap();
        let (_, eps) = prediction.to_x0_eps(&out, &x, &ab).unwrap();
        let raw = toy_denoiser(&x, &t).unwrap();
        let (_, eps_raw) = prediction.to_x0_eps(&raw, &x, &ab).unwrap();
        let shift = eps_raw.sub(&eps).unwrap().to_array();
        let expected_shift = |i: usize, g: f32| s * (1.0 - ab[i / 64]).sqrt() * g;
        let bad = shift.iter().zip(grad.iter()).enumerate().map(|(i, (a, &g))| (a - expected_shift(i, g)).abs()).fold(0.0f32, f32::max);
        // Round trips through x_0 divide by √ᾱ (≥ 0.08 at t = 900): f32 error ~1e-5.
        assert!(bad < 1e-3, "{prediction:?}: shift off by {bad}");
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let (clip, schedule) = tiny();
    let text = unit_rows(2, 4, 1);
    let err = ClipGuided::new(toy_denoiser, Prediction::Epsilon, &schedule, &clip, text.clone(), -1.0).err().unwrap().to_string();
    assert!(err.contains("scale") && err.contains("-1"), "{err}");
    let err = ClipGuided::new(toy_denoiser, Prediction::Epsilon, &schedule, &clip, text.clone(), f32::NAN).err().unwrap().to_string();
    assert!(err.contains("scale"), "{err}");
    // Text embeddings of the wrong width, or a count that fits neither B nor 1.
    let err = ClipGuided::new(toy_denoiser, Prediction::Epsilon, &schedule, &clip, unit_rows(2, 5, 1), 1.0).err().unwrap().to_string();
    assert!(err.contains("(B, 4)"), "{err}");
    let guided = ClipGuided::new(toy_denoiser, Prediction::Epsilon, &schedule, &clip, text, 1.0).unwrap();
    let err = guided.predict(&Tensor::zeros(&[3, 1, 8, 8]), &[1, 2, 3]).unwrap_err().to_string();
    assert!(err.contains("2 caption embeddings for a batch of 3"), "{err}");
    let err = guided.predict(&Tensor::zeros(&[2, 1, 8, 8]), &[1, 1000]).unwrap_err().to_string();
    assert!(err.contains("timestep 1000"), "{err}");
    // Another schedule length.
    let short = NoiseSchedule::new(BetaSchedule::linear(100), 100).unwrap();
    let err = ClipGuided::new(toy_denoiser, Prediction::Epsilon, &short, &clip, unit_rows(1, 4, 1), 1.0).err().unwrap().to_string();
    assert!(err.contains("1000-step") && err.contains("100 steps"), "{err}");
}

#[test]
fn a_clip_not_trained_on_noised_images_is_refused() {
    // Chapter 03's CLIP file has no noised-CLIP record.
    let toy = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/clip_mnist.safetensors");
    let err = NoisedClip::load(&toy).err().unwrap().to_string();
    assert!(err.contains("this CLIP was not trained on noised images") && err.contains("clip_mnist.safetensors"), "{err}");
    // A noised-CLIP model whose config says it was not trained on noised images: refused at
    // load and by the guidance wrapper.
    let mut config = tiny_config();
    config.trained_on_noised_images = false;
    let clip = NoisedClip::new(&config, &mut Rng::new(0)).unwrap();
    let dir = std::env::temp_dir().join(format!("noised_clip_test_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("clean.safetensors");
    clip.save(&path, &Default::default()).unwrap();
    let err = NoisedClip::load(&path).err().unwrap().to_string();
    assert!(err.contains("this CLIP was not trained on noised images") && err.contains("trained_on_noised_images = false"), "{err}");
    let schedule = NoiseSchedule::new(BetaSchedule::linear(1000), 1000).unwrap();
    let err = ClipGuided::new(toy_denoiser, Prediction::Epsilon, &schedule, &clip, unit_rows(1, 4, 1), 1.0).err().unwrap().to_string();
    assert!(err.contains("this CLIP was not trained on noised images"), "{err}");
    // Save and load round trip of a noised one.
    let (noised, _) = tiny();
    let path = dir.join("noised.safetensors");
    noised.save(&path, &Default::default()).unwrap();
    let back = NoisedClip::load(&path).unwrap();
    let x = Tensor::new(Rng::new(3).normal_array(&[2, 1, 8, 8]));
    assert_eq!(noised.image_embeds(&x, &[5, 700]).unwrap().to_array(), back.image_embeds(&x, &[5, 700]).unwrap().to_array());
    assert!(back.text_model.parameters().iter().all(|p| p.is_frozen()), "the loaded text tower is frozen");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn every_sampler_runs_clip_guided() {
    // Each chapter 08 sampler runs inside no_grad; the guidance must still get its gradient
    // (enable_grad) and move the sample, and scale 0 must give the unguided sample exactly.
    use dalle::models::diffusion::{respace, Diffusion, Sampler, Variance};
    let (clip, schedule) = tiny();
    let diffusion = Diffusion { schedule: schedule.clone(), prediction: Prediction::Epsilon };
    let steps = respace(1000, 4).unwrap();
    for sampler in [Sampler::Ddpm(Variance::Small), Sampler::Ddim(0.0), Sampler::Euler, Sampler::Heun] {
        let run = |s: f32| {
            let guided = ClipGuided::new(toy_denoiser, Prediction::Epsilon, &schedule, &clip, unit_rows(2, 4, 3), s).unwrap();
            let mut rng = Rng::new(8);
            let x_t = Tensor::randn(&[2, 1, 8, 8], &mut rng);
            sampler.sample(&guided, &diffusion, x_t, &steps, &mut rng, &mut |_, _| {}).unwrap().to_array()
        };
        let unguided = {
            let mut rng = Rng::new(8);
            let x_t = Tensor::randn(&[2, 1, 8, 8], &mut rng);
            sampler.sample(&toy_denoiser, &diffusion, x_t, &steps, &mut rng, &mut |_, _| {}).unwrap().to_array()
        };
        assert_eq!(run(0.0), unguided, "{}: scale 0 is not the unguided sample", sampler.name());
        let guided = run(50.0);
        assert!(guided.iter().all(|v| v.is_finite()), "{}: non-finite guided sample", sampler.name());
        let moved = guided.iter().zip(unguided.iter()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(moved > 1e-3, "{}: guidance did not move the sample ({moved})", sampler.name());
    }
}
