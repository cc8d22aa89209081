//! Tensors that stay on the GPU (`dalle::backend::set_resident`, on by default with
//! the wgpu device): the same numbers as the CPU, and no values crossing the bus
//! between the ops of a training step.
//!
//! One test function: the device is process-wide state. Without an adapter it prints
//! why and passes, unless `DALLE_REQUIRE_GPU=1` says one must exist. Run on Mesa's
//! software Vulkan: `WGPU_BACKEND=vulkan DALLE_REQUIRE_GPU=1 cargo test --release --test
//! gpu_resident`.
//!
//! Tolerance: 1e-4 relative to the largest magnitude of each compared array. The GPU
//! sums in f32 in another order than the CPU (the error grows like √K · ε_f32, about
//! 1e-6 for the K ≤ 600 here) and its exp/log differ from Rust's by a few ulp; a wrong
//! or missing term is far larger (about 1/K of the scale).
#![cfg(feature = "wgpu")]

use dalle::backend::{set_device, Device};
use dalle::eval::DigitJudge;
use dalle::nn::Module;
use dalle::optim::{Adam, Optimizer};
use dalle::{Rng, Tensor};

fn close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = a.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(worst <= 1e-4 * scale, "{what}: max diff {worst} vs scale {scale}");
}

/// Named results (forward values and gradients) of small graphs that mix GPU ops
/// with CPU-only ops, so gradients cross the bus both ways.
fn graphs() -> Vec<(String, Vec<f32>)> {
    let mut rng = Rng::new(5);
    // a parameter, placed on the GPU when tensors stay there (light ops run on the GPU
    // only for inputs already there)
    let param = |values: ndarray::ArrayD<f32>| {
        let t = Tensor::param(values);
        if dalle::backend::resident() {
            t.to_device().unwrap();
        }
        t
    };
    // when tensors stay on the GPU, the op ran there
    let ran_on_gpu = |t: &Tensor, what: &str| assert!(!dalle::backend::resident() || t.is_on_device(), "{what} ran on the CPU");
    let mut out = Vec::new();
    let grad = |t: &Tensor| t.grad().expect("a gradient").iter().copied().collect::<Vec<f32>>();
    // relu on values with exact zeros (derivative 0 there), then a CPU sum of squares
    let mut v = rng.normal_array(&[7, 67]);
    v.iter_mut().step_by(5).for_each(|x| *x = 0.0);
    let x = param(v);
    let y = x.relu();
    y.square().sum().backward();
    ran_on_gpu(&y, "relu");
    out.push(("relu forward".into(), y.to_vec()));
    out.push(("relu dx".into(), grad(&x)));
    // x + x: the two gradients of one tensor summed (on the GPU)
    let x = param(rng.normal_array(&[5, 9]));
    let y = x.add(&x).unwrap().relu();
    y.tanh().sum().backward();
    out.push(("add dx".into(), grad(&x)));
    // linear on a 3-D input with a bias, then tanh on the CPU
    let x = param(rng.normal_array(&[3, 5, 45]));
    let w = param(rng.normal_array(&[33, 45]));
    let b = param(rng.normal_array(&[33]));
    let y = x.linear(&w, Some(&b)).unwrap();
    y.tanh().sum().backward();
    ran_on_gpu(&y, "linear");
    out.push(("linear forward".into(), y.to_vec()));
    for (n, t) in [("dx", &x), ("dw", &w), ("db", &b)] {
        out.push((format!("linear {n}"), grad(t)));
    }
    // conv (stride 2, padding 1, bias) -> relu -> max pool -> flatten -> linear -> cross-entropy
    let x = param(rng.normal_array(&[4, 3, 13, 11]));
    let w = param(rng.normal_array(&[6, 3, 3, 3]));
    let b = param(rng.normal_array(&[6]));
    let h = x.conv2d(&w, Some(&b), 2, 1).unwrap().relu().max_pool2d(2, 2).unwrap(); // (4, 6, 3, 3)
    let fc = param(rng.normal_array(&[5, 54]));
    let logits = h.flatten_from(1).unwrap().linear(&fc, None).unwrap();
    let loss = logits.cross_entropy(&[0, 4, 2, 2]).unwrap();
    loss.backward();
    ran_on_gpu(&loss, "conv chain");
    out.push(("chain pooled".into(), h.to_vec()));
    out.push(("chain loss".into(), vec![loss.item()]));
    for (n, t) in [("dx", &x), ("dw", &w), ("db", &b), ("dfc", &fc)] {
        out.push((format!("chain {n}"), grad(t)));
    }
    // overlapping max-pool windows with ties (values on a coarse grid)
    let mut v = rng.normal_array(&[2, 3, 9, 8]);
    v.mapv_inplace(|x| (x * 2.0).round() / 2.0);
    let x = param(v);
    let y = x.max_pool2d(3, 2).unwrap();
    y.square().sum().backward();
    out.push(("pool k3 s2 forward".into(), y.to_vec()));
    out.push(("pool k3 s2 dx".into(), grad(&x)));
    // sigmoid, tanh, square, sub, mul, scale, mean and sum on the GPU, chained
    let a = param(rng.normal_array(&[3, 7, 11]));
    let b = param(rng.normal_array(&[3, 7, 11]));
    let y = a.sigmoid().mul(&b.tanh()).unwrap().sub(&b).unwrap().square().scale(0.5);
    let loss = y.mean().add(&y.sum()).unwrap();
    loss.backward();
    ran_on_gpu(&loss, "pointwise chain");
    out.push(("pointwise forward".into(), y.to_vec()));
    out.push(("pointwise loss".into(), vec![loss.item()]));
    out.push(("pointwise da".into(), grad(&a)));
    out.push(("pointwise db".into(), grad(&b)));
    // binary cross-entropy on logits, with a target that needs a gradient too
    let x = param(rng.normal_array(&[5, 13]).mapv(|v| 4.0 * v));
    let t = param(rng.uniform_array(&[5, 13], 0.0, 1.0));
    let loss = x.relu().bce_with_logits(&t).unwrap();
    loss.backward();
    ran_on_gpu(&loss, "bce");
    out.push(("bce loss".into(), vec![loss.item()]));
    out.push(("bce dx".into(), grad(&x)));
    out.push(("bce dt".into(), grad(&t)));
    // permute, rows picked from a table (an embedding) and nearest upsampling
    let x = param(rng.normal_array(&[2, 3, 5, 4]));
    let table = param(rng.normal_array(&[9, 4]));
    let rows = x.relu().permute(&[0, 2, 1, 3]).unwrap().reshape(&[-1, 4]).unwrap(); // (30, 4)
    let ids: Vec<usize> = (0..30).map(|i| (i * 7) % 9).collect();
    let picked = Tensor::embedding(&table, &ids, &[30]).unwrap(); // (30, 4)
    let map = rows.add(&picked).unwrap().reshape(&[2, 5, 3, 4]).unwrap().permute(&[0, 2, 1, 3]).unwrap();
    let up = map.upsample_nearest2d(3).unwrap(); // (2, 3, 15, 12)
    up.tanh().sum().backward();
    ran_on_gpu(&up, "layout chain");
    out.push(("layout forward".into(), up.to_vec()));
    out.push(("layout dx".into(), grad(&x)));
    out.push(("layout dtable".into(), grad(&table)));
    // batched matmuls: per-item B, a B shared by the batch, and matmul_t of both kinds
    let a = param(rng.normal_array(&[2, 3, 5, 7]));
    let b = param(rng.normal_array(&[2, 3, 7, 4]));
    let w = param(rng.normal_array(&[7, 6]));
    let bt = param(rng.normal_array(&[2, 3, 9, 7]));
    let wt = param(rng.normal_array(&[8, 7]));
    let y1 = a.matmul(&b).unwrap(); // (2, 3, 5, 4)
    let y2 = a.matmul(&w).unwrap(); // (2, 3, 5, 6)
    let y3 = a.matmul_t(&bt).unwrap(); // (2, 3, 5, 9)
    let y4 = a.matmul_t(&wt).unwrap(); // (2, 3, 5, 8)
    let loss = y1.tanh().sum().add(&y2.square().sum()).unwrap().add(&y3.sigmoid().sum()).unwrap().add(&y4.exp().scale(0.01).sum()).unwrap();
    loss.backward();
    for (n, y) in [("A B", &y1), ("A W", &y2), ("A Btᵀ", &y3), ("A Wtᵀ", &y4)] {
        ran_on_gpu(y, n);
        out.push((format!("matmul {n} forward"), y.to_vec()));
    }
    for (n, t) in [("dA", &a), ("dB", &b), ("dW", &w), ("dBt", &bt), ("dWt", &wt)] {
        out.push((format!("matmul {n}"), grad(t)));
    }
    // attention's pieces: a fused QKV cut in three, masked scores, softmax, layer norm, concat
    let x = param(rng.normal_array(&[2, 7, 24]));
    let gamma = param(rng.normal_array(&[8]));
    let beta = param(rng.normal_array(&[8]));
    let parts = x.chunk(3, -1).unwrap(); // 3 x (2, 7, 8)
    let scores = parts[0].matmul_t(&parts[1]).unwrap(); // (2, 7, 7)
    let masked = scores.masked_fill(&dalle::nn::attention::causal_mask(7, 7), f32::NEG_INFINITY).unwrap();
    let weights = masked.softmax(-1);
    let mixed = weights.matmul(&parts[2]).unwrap().layer_norm(&gamma, &beta, 1e-5).unwrap(); // (2, 7, 8)
    let joined = Tensor::concat(&[&mixed, &parts[2]], 1).unwrap(); // (2, 14, 8)
    joined.tanh().sum().backward();
    for (n, t) in [("q", &parts[0]), ("k", &parts[1]), ("scores", &scores), ("masked", &masked), ("weights", &weights), ("mixed", &mixed), ("joined", &joined)] {
        ran_on_gpu(t, n);
        out.push((format!("attention {n}"), t.to_vec()));
    }
    for (n, t) in [("dx", &x), ("dgamma", &gamma), ("dbeta", &beta)] {
        out.push((format!("attention {n}"), grad(t)));
    }
    // a Gaussian KL as the VAE computes it: add_scalar, sums over the last axis
    let mu = param(rng.normal_array(&[5, 11]));
    let log_var = param(rng.normal_array(&[5, 11]));
    let inner = log_var.add_scalar(1.0).sub(&mu.square()).unwrap().sub(&log_var.exp()).unwrap();
    let kl = inner.sum_axes(&[-1], false).unwrap().scale(-0.5); // (5)
    let kept = inner.sum_axes(&[-1], true).unwrap(); // (5, 1)
    kl.mean().add(&kept.tanh().sum()).unwrap().backward();
    ran_on_gpu(&kl, "kl");
    out.push(("kl forward".into(), kl.to_vec()));
    out.push(("kl keepdim".into(), kept.to_vec()));
    out.push(("kl dmu".into(), grad(&mu)));
    out.push(("kl dlog_var".into(), grad(&log_var)));
    // softmax and log-softmax over the channel axis of a feature map and over the last axis
    let x = param(rng.normal_array(&[2, 5, 3, 4]).mapv(|v| 3.0 * v));
    let p1 = x.softmax(1);
    let l1 = x.log_softmax(1);
    let l3 = x.log_softmax(-1);
    p1.mul(&l1).unwrap().sum().add(&l3.tanh().sum()).unwrap().backward();
    for (n, t) in [("softmax axis 1", &p1), ("log_softmax axis 1", &l1), ("log_softmax last", &l3)] {
        ran_on_gpu(t, n);
        out.push((n.to_string(), t.to_vec()));
    }
    out.push(("softmaxes dx".into(), grad(&x)));
    // gradient clipping by global norm, with the gradients on the GPU
    let x = param(rng.normal_array(&[6, 20]));
    let w = param(rng.normal_array(&[12, 20]));
    x.linear(&w, None).unwrap().square().sum().backward();
    let norm = dalle::optim::clip_grad_norm(&[x.clone(), w.clone()], 0.5);
    assert!(!dalle::backend::resident() || matches!(w.grad_value(), Some(dalle::tensor::Value::Device(_))), "clipping moved a gradient to the host");
    out.push(("clip norm".into(), vec![norm]));
    out.push(("clip dx".into(), grad(&x)));
    out.push(("clip dw".into(), grad(&w)));
    // the GELU family, SiLU and exp, after a transpose made contiguous
    let x = param(rng.normal_array(&[4, 3, 33]).mapv(|v| 3.0 * v));
    let h = x.transpose(0, 1).contiguous(); // (3, 4, 33)
    let y = h.gelu().add(&h.gelu_tanh()).unwrap().add(&h.silu()).unwrap().add(&h.quick_gelu()).unwrap().sub(&h.scale(0.1).exp()).unwrap();
    y.square().sum().backward();
    ran_on_gpu(&y, "activations");
    out.push(("activations forward".into(), y.to_vec()));
    out.push(("activations dx".into(), grad(&x)));
    out
}

/// Chapter 05's VQ-VAE (CIFAR-10 configuration, narrow, batch 16): `steps` Adam steps
/// on one batch; the losses.
fn vq_vae_losses(steps: usize) -> Vec<f32> {
    use dalle::models::vqvae::{VqVae, VqVaeConfig};
    let mut rng = Rng::new(6);
    let model = VqVae::new(VqVaeConfig { hidden: 16, ..VqVaeConfig::cifar10() }, &mut rng).unwrap();
    let x = Tensor::new(rng.uniform_array(&[16, 3, 32, 32], 0.0, 1.0));
    if dalle::backend::resident() {
        x.to_device().unwrap(); // the batch on the GPU: every op after it follows
    }
    let mut opt = Adam::new(model.named_parameters(), 1e-3);
    (0..steps)
        .map(|_| {
            opt.zero_grad();
            let loss = model.forward(&x, true).unwrap().loss().unwrap();
            loss.backward();
            opt.step();
            loss.item()
        })
        .collect()
}

/// Chapter 00's digit judge: `steps` Adam steps on one batch; the losses, and the
/// parameters and Adam state after them.
fn judge_steps(steps: usize) -> (Vec<f32>, Vec<(String, Vec<f32>)>) {
    let mut rng = Rng::new(3);
    let judge = DigitJudge::new(&mut rng);
    let images = Tensor::new(rng.uniform_array(&[16, 1, 28, 28], 0.0, 1.0));
    let labels: Vec<usize> = (0..16).map(|i| i % 10).collect();
    let mut opt = Adam::new(judge.named_parameters(), 1e-3);
    let losses = (0..steps)
        .map(|_| {
            opt.zero_grad();
            let loss = judge.forward(&images).unwrap().cross_entropy(&labels).unwrap();
            loss.backward();
            opt.step();
            loss.item()
        })
        .collect();
    let mut after: Vec<(String, Vec<f32>)> = judge.named_parameters().into_iter().map(|(n, p)| (n, p.to_vec())).collect();
    after.extend(opt.state().into_iter().map(|(n, a)| (format!("adam {n}"), a.iter().copied().collect())));
    (losses, after)
}

/// A two-block pre-LN transformer (width 32, 4 heads, causal mask): `steps` Adam steps
/// on one batch with gradient clipping; the losses, and the bytes the last step moved
/// (up, down) with its queue submissions.
fn transformer_steps(steps: usize) -> (Vec<f32>, (u64, u64, u64)) {
    use dalle::nn::attention::causal_mask;
    use dalle::nn::transformer::{Transformer, TransformerConfig};
    let mut rng = Rng::new(12);
    let model = Transformer::new(TransformerConfig::new(32, 4, 2), &mut rng).unwrap();
    let x = Tensor::new(rng.normal_array(&[3, 9, 32]));
    if dalle::backend::resident() {
        x.to_device().unwrap();
    }
    let mask = causal_mask(9, 9);
    let params = model.named_parameters();
    let mut opt = Adam::new(params.clone(), 1e-3);
    let tensors: Vec<Tensor> = params.iter().map(|(_, p)| p.clone()).collect();
    let step = || {
        opt.zero_grad();
        let out = model.forward(&x, Some(&mask), true).unwrap().output; // (3, 9, 32)
        let loss = out.tanh().square().mean();
        loss.backward();
        dalle::optim::clip_grad_norm(&tensors, 1.0);
        opt.step();
        loss.item()
    };
    run_steps(steps, step)
}

/// Chapter 04's VAE (MNIST, latent 2, batch 16): `steps` Adam steps on one batch; the
/// losses, and the bytes the last step moved (up, down) with its queue submissions.
fn vae_steps(steps: usize) -> (Vec<f32>, (u64, u64, u64)) {
    use dalle::models::vae::{Vae, VaeConfig};
    let mut rng = Rng::new(13);
    let model = Vae::new(VaeConfig::mnist(2), &mut rng).unwrap();
    let x = Tensor::new(rng.uniform_array(&[16, 1, 28, 28], 0.0, 1.0));
    if dalle::backend::resident() {
        x.to_device().unwrap();
    }
    let mut opt = Adam::new(model.named_parameters(), 1e-3);
    let mut noise = Rng::new(14);
    let step = || {
        opt.zero_grad();
        let loss = model.forward(&x, &mut noise).unwrap().loss().unwrap();
        loss.backward();
        opt.step();
        loss.item()
    };
    run_steps(steps, step)
}

/// Chapter 06's dVAE (MNIST, batch 8, τ = 1): `steps` Adam steps on one batch (Gumbel
/// noise from a fixed seed); the losses, and the bytes the last step moved (up, down)
/// with its queue submissions.
fn dvae_steps(steps: usize) -> (Vec<f32>, (u64, u64, u64)) {
    use dalle::models::dvae::{Dvae, DvaeConfig};
    let mut rng = Rng::new(15);
    let model = Dvae::new(DvaeConfig::mnist(), &mut rng).unwrap();
    let x = Tensor::new(rng.uniform_array(&[8, 1, 28, 28], 0.0, 1.0));
    if dalle::backend::resident() {
        x.to_device().unwrap();
    }
    let mut opt = Adam::new(model.named_parameters(), 1e-3);
    let mut noise = Rng::new(16);
    let step = || {
        opt.zero_grad();
        let out = model.forward(&x, 1.0, &mut noise).unwrap();
        let loss = out.reconstruction_loss.add(&out.kl).unwrap();
        loss.backward();
        opt.step();
        loss.item()
    };
    run_steps(steps, step)
}

/// `steps` calls of `step` (each returning its loss): the losses, and the bytes the last
/// call moved (up, down) with its queue submissions (zeros when tensors stay on the host).
fn run_steps(steps: usize, mut step: impl FnMut() -> f32) -> (Vec<f32>, (u64, u64, u64)) {
    let mut losses = vec![step()];
    let mut moved = (0, 0, 0);
    for _ in 1..steps {
        if dalle::backend::resident() {
            moved = traffic_and_submissions(|| losses.push(step()));
        } else {
            losses.push(step());
        }
    }
    (losses, moved)
}

/// Deterministic normal values of `shape`.
fn rng_values(shape: &[usize], seed: u64) -> ndarray::ArrayD<f32> {
    Rng::new(seed).normal_array(shape)
}

/// Bytes sent to and fetched from the GPU by `f`.
fn traffic(f: impl FnOnce()) -> (u64, u64) {
    let (up, down, _) = traffic_and_submissions(f);
    (up, down)
}

/// Bytes sent to and fetched from the GPU by `f`, and the queue submissions it made.
fn traffic_and_submissions(f: impl FnOnce()) -> (u64, u64, u64) {
    let ctx = dalle::backend::wgpu::global().unwrap();
    let before = ctx.stats();
    f();
    let after = ctx.stats();
    (after.bytes_uploaded - before.bytes_uploaded, after.bytes_downloaded - before.bytes_downloaded, after.submissions - before.submissions)
}

#[test]
fn resident_tensors_match_the_cpu_and_stay_on_the_gpu() {
    let cpu = graphs();
    let cpu_vq = vq_vae_losses(2);
    let (cpu_tf, _) = transformer_steps(3);
    let (cpu_vae, _) = vae_steps(3);
    let (cpu_dvae, _) = dvae_steps(3);
    let (cpu_losses, _) = judge_steps(3);
    let (_, cpu_after) = judge_steps(1);
    if let Err(e) = set_device(Device::Wgpu) {
        assert!(std::env::var("DALLE_REQUIRE_GPU").as_deref() != Ok("1"), "DALLE_REQUIRE_GPU=1 but: {e}");
        eprintln!("skipping: {e}");
        return;
    }
    assert!(dalle::backend::resident(), "the wgpu device keeps tensors on the GPU by default");
    let gpu = graphs();
    let (gpu_tf, tf_traffic) = transformer_steps(3);
    let (gpu_vae, vae_traffic) = vae_steps(3);
    let (gpu_dvae, dvae_traffic) = dvae_steps(3);
    let (gpu_vq, vq_traffic) = {
        let mut losses = Vec::new();
        let t = traffic_and_submissions(|| losses = vq_vae_losses(2));
        (losses, t)
    };
    let (gpu_losses, _) = judge_steps(3);
    let (_, gpu_after) = judge_steps(1);

    // Where ops run: a light op on host values stays on the CPU, and so does a heavy op
    // whose arithmetic does not pay for uploading its inputs; one that pays starts a
    // GPU chain that the next light op follows.
    let host = Tensor::new(rng_values(&[64, 64], 8));
    let (up, _) = traffic(|| {
        host.relu();
    });
    assert_eq!(up, 0, "a ReLU of host values went to the GPU");
    assert!(!host.relu().is_on_device());
    let thin_w = Tensor::new(rng_values(&[4, 64], 9)); // 2·64·64·4 FLOP over 17 KB: 2 FLOP/byte
    assert!(!host.linear(&thin_w, None).unwrap().is_on_device(), "a thin linear went to the GPU");
    let wide_w = Tensor::new(rng_values(&[512, 64], 10)); // 2·64·64·512 FLOP over 147 KB: 29 FLOP/byte
    let wide_x = Tensor::new(rng_values(&[1024, 64], 11)); // 2·1024·64·512 FLOP over 393 KB: 171 FLOP/byte
    assert!(!host.linear(&wide_w, None).unwrap().is_on_device());
    let y = wide_x.linear(&wide_w, None).unwrap();
    assert!(y.is_on_device(), "a linear of 171 FLOP per uploaded byte stayed on the CPU");
    assert!(y.relu().is_on_device(), "a ReLU of GPU values left the GPU");

    // A training step moves almost nothing: after the first step (which uploads the
    // images and the parameters), each step sends the labels and fetches the loss.
    let mut rng = Rng::new(4);
    let judge = DigitJudge::new(&mut rng);
    let images = Tensor::new(rng.uniform_array(&[32, 1, 28, 28], 0.0, 1.0));
    let labels: Vec<usize> = (0..32).map(|i| i % 10).collect();
    let mut opt = Adam::new(judge.named_parameters(), 1e-3);
    let mut step = || {
        opt.zero_grad();
        let loss = judge.forward(&images).unwrap().cross_entropy(&labels).unwrap();
        loss.backward();
        opt.step();
        loss.item()
    };
    let (first_up, _) = traffic(|| {
        step();
    });
    let (up, down) = traffic(|| {
        step();
        step();
    });
    // the parameters read back on the host: the GPU's Adam changed them
    let host_weight = judge.conv1.weight.to_vec();
    // a host change drops the GPU copy, and the next step uploads it again
    judge.conv1.weight.update(|w| w.mapv_inplace(|v| v * 0.5));
    let (reupload, _) = traffic(|| {
        step();
    });
    set_device(Device::Cpu).unwrap();

    for ((name, a), (_, b)) in cpu.iter().zip(&gpu) {
        close(a, b, name);
    }
    for (i, (c, g)) in cpu_losses.iter().zip(&gpu_losses).enumerate() {
        assert!((c - g).abs() <= 1e-4 * c.abs(), "judge step {i}: cpu loss {c}, gpu loss {g}");
    }
    for ((name, a), (_, b)) in cpu_after.iter().zip(&gpu_after) {
        if name.starts_with("adam") {
            close(a, b, &format!("judge after 1 step: {name}"));
        } else {
            // Adam's step m̂ / (√v̂ + ε) is about ±lr whatever the gradient's size, so
            // where a gradient is near zero its last bits decide the step: allow 0.1 lr
            // per step. A wrong update (say, a missing bias correction: 3 lr at step 1)
            // is far beyond it.
            let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            assert!(worst <= 0.1 * 1e-3, "judge after 1 step: {name}: max diff {worst}");
        }
    }
    for (i, (c, g)) in cpu_dvae.iter().zip(&gpu_dvae).enumerate() {
        assert!((c - g).abs() <= 1e-4 * c.abs(), "dVAE step {i}: cpu loss {c}, gpu loss {g}");
    }
    // a dVAE step after the first: the Gumbel noise (8 x 128 x 7 x 7) and the seed up;
    // down, the code logits (the same size, for the step's code statistics) and scalars
    let noise_bytes = 8 * 128 * 7 * 7 * 4;
    assert!(dvae_traffic.0 <= noise_bytes + 16 && dvae_traffic.1 <= noise_bytes + 16, "a dVAE step moved {dvae_traffic:?} bytes");
    println!("dVAE losses cpu {cpu_dvae:?} gpu {gpu_dvae:?}; the third step moved {} B up, {} B down in {} submissions", dvae_traffic.0, dvae_traffic.1, dvae_traffic.2);
    for (i, (c, g)) in cpu_vae.iter().zip(&gpu_vae).enumerate() {
        assert!((c - g).abs() <= 1e-4 * c.abs(), "VAE step {i}: cpu loss {c}, gpu loss {g}");
    }
    // a VAE step after the first: the noise ε (16 x 2) and the seed up, the loss down
    assert!(vae_traffic.0 <= 16 * 2 * 4 + 16 && vae_traffic.1 <= 8, "a VAE step moved {vae_traffic:?} bytes");
    println!("VAE losses cpu {cpu_vae:?} gpu {gpu_vae:?}; the third step moved {} B up, {} B down in {} submissions", vae_traffic.0, vae_traffic.1, vae_traffic.2);
    for (i, (c, g)) in cpu_tf.iter().zip(&gpu_tf).enumerate() {
        assert!((c - g).abs() <= 1e-4 * c.abs(), "transformer step {i}: cpu loss {c}, gpu loss {g}");
    }
    // a transformer step after the first: the causal mask of each block (81 values) and
    // the loss's seed up, the gradients' norm and the loss down
    assert!(tf_traffic.0 <= 2 * 81 * 4 + 16 && tf_traffic.1 <= 16, "a transformer step moved {tf_traffic:?} bytes");
    println!("transformer losses cpu {cpu_tf:?} gpu {gpu_tf:?}; the third step moved {} B up, {} B down in {} submissions", tf_traffic.0, tf_traffic.1, tf_traffic.2);
    for (i, (c, g)) in cpu_vq.iter().zip(&gpu_vq).enumerate() {
        assert!((c - g).abs() <= 1e-4 * c.abs(), "VQ-VAE step {i}: cpu loss {c}, gpu loss {g}");
    }
    // What a VQ-VAE step reads back: the nearest code of each of the 16 · 8 · 8 rows of
    // z_e (searched on the GPU) and the EMA's per-code sums of z_e (256 codes x D = 32,
    // summed on the GPU), a few scalars; not z_e itself (16 · 8 · 8 · 32 values).
    let (rows, codes_bytes) = (16 * 8 * 8, 256 * 32 * 4);
    assert!(vq_traffic.1 <= 2 * (rows * 4 + codes_bytes + 32), "two VQ-VAE steps fetched {} bytes", vq_traffic.1);
    println!("VQ-VAE losses cpu {cpu_vq:?} gpu {gpu_vq:?}; two steps moved {} B up, {} B down in {} submissions", vq_traffic.0, vq_traffic.1, vq_traffic.2);
    let params: u64 = judge.named_parameters().iter().map(|(_, p)| p.len() as u64 * 4).sum();
    assert!(first_up >= params, "the first step uploads the parameters ({first_up} < {params} bytes)");
    // per step: 32 labels (128 bytes) and the loss's seed gradient 1 (4 bytes) up,
    // the loss (4 bytes) down
    assert_eq!(up, 2 * (128 + 4), "two steps uploaded {up} bytes");
    assert_eq!(down, 2 * 4, "two steps fetched {down} bytes: more than the two losses");
    assert!(host_weight.iter().all(|v| v.is_finite()) && host_weight.len() == 32 * 9);
    let conv1 = 32 * 9 * 4;
    assert!(reupload >= conv1 && reupload < params, "after a host update the step uploaded {reupload} bytes");
    println!("judge losses cpu {cpu_losses:?} gpu {gpu_losses:?}; first step up {first_up} B, then {up} B up / {down} B down for two steps");
}
