//! Layers, optimisers and checkpoints.

use dalle::io::checkpoint;
use dalle::nn::{Forward, Linear, Module, Sequential, Activation};
use dalle::optim::{clip_grad_norm, Adam, Ema, Optimizer, Sgd, WarmupCosine};
use dalle::{Rng, Tensor};
use std::collections::HashMap;

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("dalle-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn mlp(seed: u64) -> Sequential {
    let mut rng = Rng::new(seed);
    Sequential::new().push(Linear::new(3, 8, true, &mut rng)).push(Activation::Tanh).push(Linear::new(8, 2, true, &mut rng))
}

#[test]
fn parameter_names_follow_pytorch() {
    let names: Vec<String> = mlp(0).named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["0.weight", "0.bias", "2.weight", "2.bias"]);
}

#[test]
fn checkpoint_round_trip_and_no_temp_files() {
    let dir = tmpdir("ckpt");
    let path = dir.join("model.safetensors");
    let a = mlp(1);
    let mut meta = HashMap::new();
    meta.insert("step".to_string(), "7".to_string());
    checkpoint::save(&path, &a, None, &meta).unwrap();
    let b = mlp(2);
    let ck = checkpoint::load(&path).unwrap();
    assert_eq!(ck.metadata["step"], "7");
    ck.load_into(&b, &[]).unwrap();
    for ((_, pa), (_, pb)) in a.named_parameters().iter().zip(b.named_parameters().iter()) {
        assert_eq!(pa.to_vec(), pb.to_vec());
    }
    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains("tmp")).collect();
    assert!(leftovers.is_empty());
}

#[test]
fn checkpoint_errors_name_every_problem() {
    let dir = tmpdir("ckpt-bad");
    let path = dir.join("bad.safetensors");
    let t = |s: &[usize]| ndarray::ArrayD::<f32>::zeros(ndarray::IxDyn(s));
    // 0.weight wrong shape, 2.bias missing, `extra` unexpected.
    let tensors = vec![
        ("0.weight".to_string(), t(&[8, 4])),
        ("0.bias".to_string(), t(&[8])),
        ("2.weight".to_string(), t(&[2, 8])),
        ("extra".to_string(), t(&[1])),
    ];
    checkpoint::save_tensors(&path, &tensors, &HashMap::new()).unwrap();
    let err = checkpoint::load(&path).unwrap().load_into(&mlp(0), &[]).unwrap_err().to_string();
    assert!(err.contains("bad.safetensors"), "{err}");
    assert!(err.contains("`0.weight` has shape [8, 4], the model expects [8, 3]"), "{err}");
    assert!(err.contains("missing `2.bias`"), "{err}");
    assert!(err.contains("unexpected `extra`"), "{err}");
    // Not a safetensors file at all.
    std::fs::write(&path, b"garbage").unwrap();
    let err = checkpoint::load(&path).err().unwrap().to_string();
    assert!(err.contains("bad.safetensors") && err.contains("safetensors"), "{err}");
}

#[test]
fn optimizer_state_round_trips() {
    let dir = tmpdir("optim");
    let path = dir.join("run.safetensors");
    let m = mlp(3);
    let mut opt = Adam::new(m.named_parameters(), 1e-2);
    let x = Tensor::new(Rng::new(0).normal_array(&[4, 3]));
    for _ in 0..3 {
        opt.zero_grad();
        m.forward(&x).unwrap().square().mean().backward();
        opt.step();
    }
    checkpoint::save(&path, &m, Some(&opt), &HashMap::new()).unwrap();
    let m2 = mlp(4);
    let mut opt2 = Adam::new(m2.named_parameters(), 1e-2);
    let ck = checkpoint::load(&path).unwrap();
    ck.load_into(&m2, &["optim."]).unwrap();
    ck.load_optimizer(&mut opt2).unwrap();
    assert_eq!(opt2.steps(), 3);
    // One more identical step on both gives identical parameters.
    for (mm, o) in [(&m, &mut opt as &mut dyn Optimizer), (&m2, &mut opt2)] {
        o.zero_grad();
        mm.forward(&x).unwrap().square().mean().backward();
        o.step();
    }
    assert_eq!(m.parameters()[0].to_vec(), m2.parameters()[0].to_vec());
}

#[test]
fn sgd_momentum_matches_formula() {
    // v1 = g, θ1 = θ0 - η g; v2 = μ g + g, θ2 = θ1 - η v2 for f = θ²/2 (g = θ).
    let p = Tensor::param(ndarray::arr1(&[1.0f32]).into_dyn());
    let mut opt = Sgd::new(vec![("p".into(), p.clone())], 0.1, 0.9);
    p.scale(1.0).square().scale(0.5).sum().backward();
    opt.step();
    assert!((p.item() - 0.9).abs() < 1e-6);
    opt.zero_grad();
    p.square().scale(0.5).sum().backward();
    opt.step();
    // v2 = 0.9 * 1.0 + 0.9 = 1.8, θ2 = 0.9 - 0.18 = 0.72
    assert!((p.item() - 0.72).abs() < 1e-6, "{}", p.item());
}

#[test]
fn adam_first_step_moves_by_lr() {
    // With bias correction, Adam's first step is η · g/|g| (up to ε).
    let p = Tensor::param(ndarray::arr1(&[2.0f32, -3.0]).into_dyn());
    let mut opt = Adam::new(vec![("p".into(), p.clone())], 0.01);
    p.square().sum().backward();
    opt.step();
    let v = p.to_vec();
    assert!((v[0] - 1.99).abs() < 1e-6 && (v[1] + 2.99).abs() < 1e-6, "{v:?}");
}

#[test]
fn clip_grad_norm_scales_to_max() {
    let a = Tensor::param(ndarray::arr1(&[3.0f32]).into_dyn());
    let b = Tensor::param(ndarray::arr1(&[4.0f32]).into_dyn());
    a.set_grad(Some(ndarray::arr1(&[3.0f32]).into_dyn()));
    b.set_grad(Some(ndarray::arr1(&[4.0f32]).into_dyn()));
    let norm = clip_grad_norm(&[a.clone(), b.clone()], 1.0);
    assert!((norm - 5.0).abs() < 1e-6);
    assert!((a.grad().unwrap()[[0]] - 0.6).abs() < 1e-5 && (b.grad().unwrap()[[0]] - 0.8).abs() < 1e-5);
}

#[test]
fn warmup_cosine_shape() {
    let s = WarmupCosine { base_lr: 1.0, min_lr: 0.1, warmup: 10, total: 110 };
    assert!((s.lr(0) - 0.1).abs() < 1e-6);
    assert!((s.lr(9) - 1.0).abs() < 1e-6);
    assert!((s.lr(60) - 0.55).abs() < 1e-5); // halfway through the cosine
    assert!((s.lr(110) - 0.1).abs() < 1e-6);
}

#[test]
fn ema_follows_formula() {
    let p = Tensor::param(ndarray::arr1(&[0.0f32]).into_dyn());
    let params = vec![("p".to_string(), p.clone())];
    let mut ema = Ema::new(&params, 0.9);
    p.update(|d| d.fill(1.0));
    ema.update(&params);
    ema.update(&params);
    // 0 → 0.1 → 0.19
    assert!((ema.shadow()[0].1.item() - 0.19).abs() < 1e-6);
}
