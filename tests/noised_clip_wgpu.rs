//! CLIP guidance on the wgpu device: the gradient with respect to `x_t` through the frozen
//! noised CLIP, recorded under `enable_grad` inside `no_grad`, equals the CPU's.
//!
//! One test function (the device is process-wide state). Without an adapter it prints why
//! and passes, unless `DALLE_REQUIRE_GPU=1` says one must exist. Tolerance: 1e-3 of the
//! largest gradient entry, since the GPU sums in f32 in another order through layer norms,
//! attention and the backward pass (measured differences are far smaller).

#![cfg(feature = "wgpu")]

use std::path::Path;

use dalle::backend::{set_device, set_min_gpu_intensity, Device, DEFAULT_MIN_GPU_INTENSITY};
use dalle::models::clip::ClipConfig;
use dalle::models::diffusion::{BetaSchedule, NoiseSchedule, Prediction};
use dalle::models::noised_clip::{ClipGuided, NoisedClip, NoisedClipConfig};
use dalle::nn::Module;
use dalle::tensor::no_grad;
use dalle::{Rng, Tensor};

fn gradient(clip: &NoisedClip, schedule: &NoiseSchedule, x: &Tensor, text: &Tensor) -> Vec<f32> {
    let zero = |x: &Tensor, _: &[usize]| Ok(Tensor::zeros(&x.shape()));
    let guided = ClipGuided::new(zero, Prediction::Epsilon, schedule, clip, text.clone(), 1.0).unwrap();
    no_grad(|| guided.score_gradient(x, &[250, 600])).unwrap().to_array().iter().copied().collect()
}

#[test]
fn guidance_gradient_on_wgpu_matches_the_cpu() {
    let json = r#"{
        "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 1,
                        "max_position_embeddings": 6, "vocab_size": 16, "eos_token_id": 2, "pool_at_first_eos": true},
        "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2,
                          "image_size": 28, "patch_size": 7, "num_channels": 1},
        "projection_dim": 16
    }"#;
    let config = NoisedClipConfig {
        clip: ClipConfig::from_json_str(json, Path::new("test.json")).unwrap(),
        time_embed_dim: 16,
        num_train_timesteps: 1000,
        beta_schedule: "linear".into(),
        trained_on_noised_images: true,
    };
    let clip = NoisedClip::new(&config, &mut Rng::new(1)).unwrap();
    clip.image.time_embedding.weight.assign(Rng::new(2).normal_array(&[32, 16])).unwrap();
    let schedule = NoiseSchedule::new(BetaSchedule::linear(1000), 1000).unwrap();
    let x = Tensor::new(Rng::new(3).normal_array(&[2, 1, 28, 28]));
    let text = Tensor::new(Rng::new(4).normal_array(&[2, 16])).l2_normalize(-1, 1e-12).unwrap();
    let cpu = gradient(&clip, &schedule, &x, &text);
    match set_device(Device::Wgpu) {
        Err(e) => {
            assert!(std::env::var("DALLE_REQUIRE_GPU").as_deref() != Ok("1"), "DALLE_REQUIRE_GPU=1 but: {e}");
            eprintln!("skipping: {e}");
        }
        Ok(_) => {
            set_min_gpu_intensity(0.0); // every op on the GPU
            let before = dalle::backend::wgpu::global().unwrap().stats();
            let gpu = gradient(&clip, &schedule, &x, &text);
            let after = dalle::backend::wgpu::global().unwrap().stats();
            // The GPU really ran: operands were uploaded.
            assert!(after.host_uploads + after.resident_uploads > before.host_uploads + before.resident_uploads, "nothing ran on the GPU");
            println!("uploads: {} host, {} resident", after.host_uploads - before.host_uploads, after.resident_uploads - before.resident_uploads);
            set_device(Device::Cpu).unwrap();
            set_min_gpu_intensity(DEFAULT_MIN_GPU_INTENSITY);
            assert!(clip.parameters().iter().all(|p| p.grad().is_none()), "a frozen parameter got a gradient on the GPU");
            let largest = cpu.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let worst = cpu.iter().zip(&gpu).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            println!("largest gradient {largest:.3e}, worst cpu-wgpu difference {worst:.3e}");
            assert!(largest > 1e-4, "a zero gradient would prove nothing");
            assert!(worst <= 1e-3 * largest, "worst difference {worst} against largest {largest}");
        }
    }
}
