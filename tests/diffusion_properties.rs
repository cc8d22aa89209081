//! Properties the math of chapter 08 gives, and the errors bad input must raise.

use dalle::eval::{frechet_distance, FeatureStats};
use dalle::models::diffusion::samplers::{ddim_sample, ode_sample};
use dalle::models::diffusion::{
    guidance, respace, BetaSchedule, ClassConditionalUNet, ClassifierFree, Denoiser, Diffusion, Prediction, Sampler, UNet, UNetConfig, Variance,
};
use dalle::nn::context_attention::ContextAttention;
use dalle::nn::Module;
use dalle::optim::Ema;
use dalle::{Rng, Tensor};
use ndarray::Array2;

fn linear() -> Diffusion {
    Diffusion::linear_epsilon().unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    a.to_vec().iter().zip(b.to_vec()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// A tiny U-Net whose output is not zero (its zero-initialised output conv is filled),
/// so that samplers have something to follow.
fn tiny_model(seed: u64) -> ClassConditionalUNet {
    let config = UNetConfig { base_channels: 8, image_size: 8, channel_mult: vec![1, 2], attention_resolutions: vec![4], groups: 4, heads: 2, ..UNetConfig::mnist() };
    let mut rng = Rng::new(seed);
    let model = ClassConditionalUNet::new(config, 3, &mut rng).unwrap();
    model.unet.out_conv.weight.assign(rng.normal_array(&[1, 8, 3, 3]).mapv(|v| 0.1 * v)).unwrap();
    model
}

#[test]
fn q_sample_has_the_moments_of_q_xt_given_x0() {
    // 20 000 draws of x_t for 4 pixels of x_0 at t = 300: mean √ᾱ x_0, variance 1 - ᾱ.
    // Standard errors: mean √((1-ᾱ)/n) ≈ 0.006, variance (1-ᾱ)√(2/n) ≈ 0.008; allowed: 5 of them.
    let d = linear();
    let (n, t) = (20_000, 300);
    let x0_row = [-1.0f32, -0.3, 0.4, 1.0];
    let x0 = Tensor::from_vec(x0_row.iter().cycle().take(4 * n).copied().collect(), &[n, 1, 1, 4]).unwrap();
    let noise = Tensor::randn(&[n, 1, 1, 4], &mut Rng::new(1));
    let x_t = d.schedule.q_sample(&x0, &vec![t; n], &noise).unwrap().to_array();
    let ab = d.schedule.alphas_cumprod[t];
    for (j, &x) in x0_row.iter().enumerate() {
        let column: Vec<f32> = (0..n).map(|i| x_t[[i, 0, 0, j]]).collect();
        let mean = column.iter().sum::<f32>() / n as f32;
        let var = column.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / (n - 1) as f32;
        let se_mean = ((1.0 - ab) / n as f32).sqrt();
        let se_var = (1.0 - ab) * (2.0 / n as f32).sqrt();
        assert!((mean - ab.sqrt() * x).abs() < 5.0 * se_mean, "pixel {j}: mean {mean}, expected {}", ab.sqrt() * x);
        assert!((var - (1.0 - ab)).abs() < 5.0 * se_var, "pixel {j}: variance {var}, expected {}", 1.0 - ab);
    }
}

#[test]
fn a_posterior_step_with_the_true_x0_is_the_closed_form() {
    // With the network replaced by the truth (x_0, or the ε that made x_t), one ancestral step
    // is q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t I) of Ho et al. eq. 6-7, computed from the schedule's arrays.
    let mut d = linear();
    let mut rng = Rng::new(2);
    let x0 = Tensor::rand(&[3, 1, 4, 4], &mut rng).scale(2.0).add_scalar(-1.0);
    let eps = Tensor::randn(&[3, 1, 4, 4], &mut rng);
    let z = Tensor::randn(&[3, 1, 4, 4], &mut rng);
    for t in [1usize, 10, 500, 999] {
        let x_t = d.schedule.q_sample(&x0, &[t; 3], &eps).unwrap();
        let (mean, var) = d.schedule.q_posterior(&x0, &x_t, &[t; 3]).unwrap();
        let expected = mean.add(&z.scale(var[0].sqrt())).unwrap();
        // closed form by hand for one element: μ̃ = √ᾱ_{t-1} β_t/(1-ᾱ_t) x_0 + √α_t (1-ᾱ_{t-1})/(1-ᾱ_t) x_t
        // (in f64 from the betas: 1 - ᾱ_1 from a float32 ᾱ_1 would keep 3 digits)
        let betas = BetaSchedule::linear(1000).betas(1000);
        let alpha_bar = |t: usize| betas[..=t].iter().map(|b| 1.0 - b).product::<f64>();
        let (ab, abp, b) = (alpha_bar(t), alpha_bar(t - 1), betas[t]);
        let by_hand = abp.sqrt() * b / (1.0 - ab) * x0.to_vec()[0] as f64 + (1.0 - b).sqrt() * (1.0 - abp) / (1.0 - ab) * x_t.to_vec()[0] as f64;
        assert!((mean.to_vec()[0] as f64 - by_hand).abs() < 1e-5, "t = {t}: μ̃ {} by hand {by_hand}", mean.to_vec()[0]);
        assert!((var[0] as f64 - (1.0 - abp) / (1.0 - ab) * b).abs() < 1e-7 + 1e-5 * var[0] as f64);
        for (prediction, output) in [(Prediction::X0, &x0), (Prediction::Epsilon, &eps)] {
            d.prediction = prediction;
            let step = d.ddpm_step(output, &x_t, t, Some(t - 1), &z, Variance::Small, false).unwrap();
            // float32: x_0 recovered from ε divides by √ᾱ_t (0.006 at t = 999)
            let tol = if prediction == Prediction::Epsilon { 2e-3 } else { 1e-5 };
            assert!(max_abs_diff(&step, &expected) < tol, "{prediction:?} at t = {t}: off by {}", max_abs_diff(&step, &expected));
        }
    }
}

#[test]
fn prediction_targets_convert_back_to_x0_and_eps() {
    let mut rng = Rng::new(3);
    let x0 = Tensor::randn(&[2, 1, 3, 3], &mut rng);
    let eps = Tensor::randn(&[2, 1, 3, 3], &mut rng);
    let d = linear();
    let t = [100, 900];
    let ab = d.schedule.alpha_bar(&t).unwrap();
    let x_t = d.schedule.q_sample(&x0, &t, &eps).unwrap();
    for p in [Prediction::Epsilon, Prediction::X0, Prediction::V] {
        let target = p.target(&x0, &eps, &ab).unwrap();
        let (x0_back, eps_back) = p.to_x0_eps(&target, &x_t, &ab).unwrap();
        assert!(max_abs_diff(&x0_back, &x0) < 2e-3, "{p:?}: x_0 off by {}", max_abs_diff(&x0_back, &x0));
        assert!(max_abs_diff(&eps_back, &eps) < 2e-3, "{p:?}: ε off by {}", max_abs_diff(&eps_back, &eps));
    }
}

#[test]
fn respacing_to_every_step_is_no_respacing() {
    let d = linear();
    assert_eq!(respace(1000, 1000).unwrap(), (0..1000).rev().collect::<Vec<_>>());
    let fifty = respace(1000, 50).unwrap();
    assert_eq!((fifty[0], fifty[49], fifty.len()), (999, 19, 50));
    // the respaced step's β' = 1 - ᾱ_t/ᾱ_{t-1} is the schedule's own β_t when no step is skipped,
    // so an ancestral step over respace(T, T) is the plain DDPM step
    let mut rng = Rng::new(4);
    let (x_t, out, z) = (Tensor::randn(&[1, 1, 2, 2], &mut rng), Tensor::randn(&[1, 1, 2, 2], &mut rng), Tensor::randn(&[1, 1, 2, 2], &mut rng));
    for t in [1usize, 250, 999] {
        let respaced = 1.0 - d.schedule.alphas_cumprod[t] as f64 / d.schedule.alphas_cumprod[t - 1] as f64;
        assert!((respaced - d.schedule.betas[t] as f64).abs() < 1e-5 * d.schedule.betas[t] as f64 + 1e-7, "t = {t}");
        let step = d.ddpm_step(&out, &x_t, t, Some(t - 1), &z, Variance::Small, false).unwrap();
        let x0 = d.prediction.to_x0_eps(&out, &x_t, &[d.schedule.alphas_cumprod[t]]).unwrap().0;
        let (mean, var) = d.schedule.q_posterior(&x0, &x_t, &[t]).unwrap();
        assert!(max_abs_diff(&step, &mean.add(&z.scale(var[0].sqrt())).unwrap()) < 1e-4, "t = {t}");
    }
}

#[test]
fn ddim_with_eta_0_is_deterministic_and_euler_is_ddim() {
    let model = tiny_model(5);
    let d = linear();
    let denoiser = model.with_labels(vec![0, 1]);
    let x_t = Tensor::randn(&[2, 1, 8, 8], &mut Rng::new(6));
    let steps = respace(1000, 10).unwrap();
    let a = ddim_sample(&denoiser, &d, x_t.clone(), &steps, 0.0, &mut Rng::new(7), &mut |_, _| {}).unwrap();
    let b = ddim_sample(&denoiser, &d, x_t.clone(), &steps, 0.0, &mut Rng::new(8), &mut |_, _| {}).unwrap();
    assert_eq!(a.to_vec(), b.to_vec(), "η = 0 must not depend on the generator");
    let c = ddim_sample(&denoiser, &d, x_t.clone(), &steps, 1.0, &mut Rng::new(8), &mut |_, _| {}).unwrap();
    assert!(max_abs_diff(&a, &c) > 1e-2, "η = 1 should add noise");
    // Euler on dx̃/dσ = ε̂ is the unclipped DDIM update
    let mut x = x_t.clone();
    for (i, &t) in steps.iter().enumerate() {
        let out = denoiser.predict(&x, &[t, t]).unwrap();
        x = d.ddim_step(&out, &x, t, steps.get(i + 1).copied(), 0.0, None, false).unwrap();
    }
    let euler = ode_sample(&denoiser, &d, x_t, &steps, false, false, &mut |_, _| {}).unwrap();
    // and with x̂_0 clipped on both sides, the Euler sampler is the DDIM sampler
    let euler_clipped = Sampler::Euler.sample(&denoiser, &d, Tensor::randn(&[2, 1, 8, 8], &mut Rng::new(6)), &steps, &mut Rng::new(0), &mut |_, _| {}).unwrap();
    assert!(max_abs_diff(&euler_clipped, &a) < 1e-3, "clipped Euler and DDIM differ by {}", max_abs_diff(&euler_clipped, &a));
    assert!(max_abs_diff(&euler, &x) < 1e-3 * (1.0 + x.abs().to_vec().iter().fold(0.0f32, |m, v| m.max(*v))), "Euler and DDIM differ by {}", max_abs_diff(&euler, &x));
}

#[test]
fn guidance_scale_1_is_the_conditional_model_and_0_the_unconditional() {
    let model = tiny_model(9);
    let x_t = Tensor::randn(&[2, 1, 8, 8], &mut Rng::new(10));
    let t = [400, 400];
    let cond = model.forward(&x_t, &t, &[0, 2]).unwrap();
    let uncond = model.forward(&x_t, &t, &[3, 3]).unwrap();
    for (scale, expected) in [(1.0, &cond), (0.0, &uncond)] {
        let guided = ClassifierFree { model: model.with_labels(vec![0, 2, 3, 3]), scale };
        assert!(max_abs_diff(&guided.predict(&x_t, &t).unwrap(), expected) < 1e-5, "scale {scale}");
    }
    let g = guidance(&cond, &uncond, 3.0).unwrap(); // ε_u + 3 (ε_c - ε_u)
    let by_hand = uncond.add(&cond.sub(&uncond).unwrap().scale(3.0)).unwrap();
    assert!(max_abs_diff(&g, &by_hand) < 1e-6);
}

#[test]
fn context_attention_without_context_is_multi_head_attention() {
    let mut rng = Rng::new(11);
    let layer = ContextAttention::new(8, 2, Some(5), &mut rng).unwrap();
    let x = Tensor::randn(&[2, 6, 8], &mut rng);
    let (reference, _) = layer.attn.forward(&x, None).unwrap();
    assert_eq!(layer.forward(&x, None).unwrap().to_vec(), reference.to_vec());
    let names: Vec<String> = layer.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"context_kv.weight".to_string()) && names.contains(&"attn.qkv.weight".to_string()), "{names:?}");
}

#[test]
fn ema_decay_warms_up() {
    let p = vec![("w".to_string(), Tensor::param(ndarray::ArrayD::zeros(ndarray::IxDyn(&[1]))))];
    let ema = Ema::new(&p, 0.999);
    assert!((ema.warmup_decay(0) - 0.1).abs() < 1e-6, "d_0 = 1/10");
    assert!((ema.warmup_decay(90) - 0.91).abs() < 1e-6, "d_90 = 91/100");
    assert_eq!(ema.warmup_decay(1_000_000), 0.999);
}

#[test]
fn frechet_distance_of_gaussians_with_known_answer() {
    // Diagonal covariances: d² = ‖μ₁ - μ₂‖² + Σ (√a_i - √b_i)². Draw the features with those
    // moments exactly (±1 patterns), so the sample statistics are the true ones.
    let n = 1000;
    let (a, b) = ([1.0f64, 4.0, 0.25], [4.0f64, 1.0, 0.25]);
    let rows = |scale: &[f64; 3], shift: f32| {
        Array2::from_shape_fn((n, 3), |(i, j)| shift + (scale[j].sqrt() * if (i >> j) % 2 == 0 { 1.0 } else { -1.0 }) as f32)
    };
    let fa = FeatureStats::from_rows(&rows(&a, 0.0)).unwrap();
    let fb = FeatureStats::from_rows(&rows(&b, 0.5)).unwrap();
    let correction = n as f64 / (n - 1) as f64; // the n - 1 of the sample covariance
    let expected: f64 = 3.0 * 0.25 + a.iter().zip(&b).map(|(x, y)| (x.sqrt() - y.sqrt()).powi(2)).sum::<f64>() * correction;
    let got = frechet_distance(&fa, &fb);
    assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
    assert!(frechet_distance(&fa, &fa).abs() < 1e-9);
}

#[test]
fn bad_input_gives_clear_errors() {
    let err = |r: Result<_, dalle::Error>| -> String { r.err().map(|e| e.to_string()).unwrap_or_default() };
    let mut rng = Rng::new(12);
    let four_levels = UNetConfig { channel_mult: vec![1, 2, 2, 2], ..UNetConfig::mnist() };
    let e = err(UNet::new(four_levels, &mut rng).map(|_| ()));
    assert!(e.contains("image size 28 cannot be halved 3 times"), "{e}");
    let d = linear();
    let x = Tensor::zeros(&[1, 1, 2, 2]);
    let e = err(d.schedule.q_sample(&x, &[1000], &x).map(|_| ()));
    assert!(e.contains("timestep 1000 is outside [0, T = 1000)"), "{e}");
    let e = err(respace(1000, 1001).map(|_| ()));
    assert!(e.contains("1001 steps") && e.contains("T = 1000"), "{e}");
    let model = tiny_model(13);
    let e = err(model.forward(&Tensor::zeros(&[1, 1, 8, 8]), &[0], &[4]).map(|_| ()));
    assert!(e.contains("class id 4 is past the 3 classes"), "{e}");
    let e = err(model.forward(&Tensor::zeros(&[1, 1, 28, 28]), &[0], &[0]).map(|_| ()));
    assert!(e.contains("expected (B, 1, 8, 8)"), "{e}");
}
