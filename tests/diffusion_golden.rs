//! Schedules and sampler steps against `diffusers` 0.31.0, the U-Net's pieces against
//! PyTorch 2.5.1 (tests/golden/make_diffusion_golden.py).
//!
//! Tolerances, and why:
//! - `β_t`: both sides evaluate the same closed form (diffusers' linear one in float32,
//!   ours in f64 then rounded): `|a - b| <= 1e-6 (1 + |b|)`.
//! - `ᾱ_t`: diffusers multiplies its thousand factors in float32, we in f64; a float32
//!   product of n factors drifts by up to ~n·6e-8 relative, so `|a - b| <= 1e-4 |b| + 1e-7`
//!   (a schedule off by one step is off by 1e-2 relative or more).
//! - sampler steps: the inputs are of order 1 and a step is a handful of float32 operations,
//!   but the coefficients come from ᾱ (see above): `|a - b| <= 1e-4 (1 + |b|)`.
//! - U-Net pieces: references in float64 from the same float32 inputs; sums of at most
//!   9·12 + 16 products and a softmax: `|a - b| <= 1e-4 (1 + |b|)`. A missing SiLU, a wrong
//!   group split or an unmasked padding token moves values by 1e-2 or more.

use dalle::io::checkpoint::{self, Checkpoint};
use dalle::models::diffusion::blocks::{timestep_embedding, AttentionBlock, ResBlock};
use dalle::models::diffusion::{BetaSchedule, Diffusion, NoiseSchedule, Variance};
use dalle::nn::context_attention::Context;
use dalle::nn::Module;
use dalle::{Rng, Tensor};
use ndarray::ArrayD;

fn golden() -> Checkpoint {
    checkpoint::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/diffusion.safetensors")).unwrap()
}

fn assert_close(what: &str, ours: &ArrayD<f32>, theirs: &ArrayD<f32>, rel: f32, abs: f32) {
    assert_eq!(ours.shape(), theirs.shape(), "{what}: shape");
    for (i, (a, b)) in ours.iter().zip(theirs.iter()).enumerate() {
        assert!((a - b).abs() <= abs + rel * b.abs(), "{what}[{i}]: ours {a}, reference {b}");
    }
}

fn tensor(ck: &Checkpoint, name: &str) -> Tensor {
    Tensor::new(ck.get(name).unwrap().clone())
}

fn param(ck: &Checkpoint, name: &str) -> Tensor {
    Tensor::param(ck.get(name).unwrap().clone())
}

fn vec1(values: &[f32]) -> ArrayD<f32> {
    ndarray::Array1::from(values.to_vec()).into_dyn()
}

#[test]
fn schedules_match_diffusers() {
    let ck = golden();
    for (name, kind) in [("linear", BetaSchedule::linear(1000)), ("cosine", BetaSchedule::Cosine)] {
        let s = NoiseSchedule::new(kind, 1000).unwrap();
        assert_close(&format!("{name}.betas"), &vec1(&s.betas), ck.get(&format!("{name}.betas")).unwrap(), 1e-6, 1e-6);
        assert_close(&format!("{name}.alphas_cumprod"), &vec1(&s.alphas_cumprod), ck.get(&format!("{name}.alphas_cumprod")).unwrap(), 1e-4, 1e-7);
    }
}

fn linear_diffusion() -> Diffusion {
    Diffusion::linear_epsilon().unwrap()
}

#[test]
fn ddpm_step_matches_diffusers() {
    let ck = golden();
    let d = linear_diffusion();
    let (output, sample) = (tensor(&ck, "step.model_output"), tensor(&ck, "step.sample"));
    // (key, t, t') as DDPMScheduler walks them: all 1000 steps, set_timesteps(50) ("leading": 500 -> 480), the last step
    for (key, t, t_prev) in [("ddpm_t500_full", 500, Some(499)), ("ddpm_t500_50", 500, Some(480)), ("ddpm_t0", 0, None)] {
        let noise = tensor(&ck, &format!("{key}.noise"));
        let prev = d.ddpm_step(&output, &sample, t, t_prev, &noise, Variance::Small, false).unwrap();
        assert_close(key, &prev.to_array(), ck.get(&format!("{key}.prev")).unwrap(), 1e-4, 1e-4);
    }
}

#[test]
fn ddim_step_matches_diffusers_for_eta_0_and_1() {
    let ck = golden();
    let d = linear_diffusion();
    let (output, sample, z) = (tensor(&ck, "step.model_output"), tensor(&ck, "step.sample"), tensor(&ck, "ddim.variance_noise"));
    for (key, t, t_prev, eta) in [("ddim_t500_eta0", 500, Some(480), 0.0), ("ddim_t500_eta1", 500, Some(480), 1.0), ("ddim_t0_eta0", 0, None, 0.0)] {
        let prev = d.ddim_step(&output, &sample, t, t_prev, eta, Some(&z), false).unwrap();
        assert_close(key, &prev.to_array(), ck.get(&format!("{key}.prev")).unwrap(), 1e-4, 1e-4);
    }
}

#[test]
fn timestep_embedding_matches_improved_diffusion() {
    let ck = golden();
    let t: Vec<f32> = ck.get("temb.t").unwrap().iter().copied().collect();
    assert_close("temb", &timestep_embedding(&t, 16).unwrap().to_array(), ck.get("temb.out").unwrap(), 1e-4, 1e-4);
}

#[test]
fn group_norm_silu_forward_and_backward_match_pytorch() {
    let ck = golden();
    let (x, g, b) = (param(&ck, "gn.x"), param(&ck, "gn.weight"), param(&ck, "gn.bias"));
    let y = x.group_norm(4, &g, &b, 1e-5).unwrap().silu();
    y.mul(&tensor(&ck, "gn.w")).unwrap().sum().backward();
    assert_close("gn.out", &y.to_array(), ck.get("gn.out").unwrap(), 1e-4, 1e-4);
    for (name, t) in [("x", &x), ("weight", &g), ("bias", &b)] {
        assert_close(&format!("gn.grad.{name}"), &t.grad().unwrap(), ck.get(&format!("gn.grad.{name}")).unwrap(), 1e-4, 1e-4);
    }
}

/// Copy `prefix.<name>` of the golden file into each parameter of `module`.
fn load(module: &dyn Module, ck: &Checkpoint, prefix: &str) -> Vec<(String, Tensor)> {
    let params = module.named_parameters();
    for (name, p) in &params {
        p.assign(ck.get(&format!("{prefix}.{name}")).unwrap().clone()).unwrap();
    }
    params
}

#[test]
fn residual_block_forward_and_backward_match_pytorch() {
    let ck = golden();
    let block = ResBlock::new(8, 12, 16, 4, &mut Rng::new(0)).unwrap();
    let params = load(&block, &ck, "res");
    assert_eq!(params.len(), 12, "norm1, conv1, emb_proj, norm2, conv2, skip: weight and bias each");
    let (x, emb) = (param(&ck, "res.x"), param(&ck, "res.emb"));
    let y = block.forward(&x, &emb).unwrap();
    y.mul(&tensor(&ck, "res.w")).unwrap().sum().backward();
    assert_close("res.out", &y.to_array(), ck.get("res.out").unwrap(), 1e-4, 1e-4);
    assert_close("res.grad.x", &x.grad().unwrap(), ck.get("res.grad.x").unwrap(), 1e-4, 1e-4);
    assert_close("res.grad.emb", &emb.grad().unwrap(), ck.get("res.grad.emb").unwrap(), 1e-4, 1e-4);
    for (name, p) in &params {
        assert_close(&format!("res.grad.{name}"), &p.grad().unwrap(), ck.get(&format!("res.grad.{name}")).unwrap(), 1e-4, 1e-4);
    }
}

#[test]
fn attention_block_with_context_tokens_forward_and_backward_match_pytorch() {
    let ck = golden();
    let block = AttentionBlock::new(8, 2, 4, Some(6), &mut Rng::new(0)).unwrap();
    let params = load(&block, &ck, "attn");
    assert_eq!(params.len(), 8, "norm, attn.qkv, attn.proj, context_kv: weight and bias each");
    let (x, ctx) = (param(&ck, "attn.x"), param(&ck, "attn.context"));
    let padding = ck.get("attn.padding").unwrap().mapv(|v| v > 0.5);
    let y = block.forward(&x, Some(Context { tokens: &ctx, padding: Some(&padding) })).unwrap();
    y.mul(&tensor(&ck, "attn.w")).unwrap().sum().backward();
    assert_close("attn.out", &y.to_array(), ck.get("attn.out").unwrap(), 1e-4, 1e-4);
    assert_close("attn.grad.x", &x.grad().unwrap(), ck.get("attn.grad.x").unwrap(), 1e-4, 1e-4);
    assert_close("attn.grad.context", &ctx.grad().unwrap(), ck.get("attn.grad.context").unwrap(), 1e-4, 1e-4);
    // the padding token of item 1 gets no gradient: it was never attended to
    let g = ctx.grad().unwrap();
    assert!(g.slice(ndarray::s![1, 2, ..]).iter().all(|v| *v == 0.0), "a padding token received gradient");
    for (name, p) in &params {
        assert_close(&format!("attn.grad.{name}"), &p.grad().unwrap(), ck.get(&format!("attn.grad.{name}")).unwrap(), 1e-4, 1e-4);
    }
}
