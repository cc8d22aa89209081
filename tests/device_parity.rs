//! The same ops on the CPU and on the wgpu device give the same numbers.
//!
//! One test function (the device is process-wide state). Without an adapter
//! it prints why and passes, unless `DALLE_REQUIRE_GPU=1` says one must exist.
//! Tolerance: 1e-4 relative to the largest magnitude, since the GPU sums in f32
//! in another order (error grows like √K · ε_f32 ≈ 1e-6 for these sizes).

#![cfg(feature = "wgpu")]

use dalle::backend::{set_device, set_min_gpu_intensity, Device, DEFAULT_MIN_GPU_INTENSITY};
use dalle::{Rng, Tensor};

fn close(a: &[f32], b: &[f32], what: &str) {
    let scale = a.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(worst <= 1e-4 * scale, "{what}: max diff {worst} vs scale {scale}");
}

fn run_all() -> Vec<(String, Vec<f32>)> {
    let mut rng = Rng::new(7);
    let mut out = Vec::new();
    // matmul with broadcast batch and a transposed (matmul_t) parameter.
    let x = Tensor::param(rng.normal_array(&[3, 67, 45]));
    let w = Tensor::param(rng.normal_array(&[33, 45]));
    let y = x.matmul_t(&w).unwrap();
    let z = Tensor::param(rng.normal_array(&[3, 33, 29]));
    let loss = y.matmul(&z).unwrap().tanh().sum();
    loss.backward();
    out.push(("matmul forward".into(), y.to_vec()));
    for (n, t) in [("dx", &x), ("dw", &w), ("dz", &z)] {
        out.push((format!("matmul {n}"), t.grad().unwrap().iter().copied().collect()));
    }
    // conv2d with stride and padding, bias.
    for (stride, pad) in [(1, 1), (2, 0), (2, 2)] {
        let x = Tensor::param(rng.normal_array(&[2, 5, 13, 11]));
        let w = Tensor::param(rng.normal_array(&[7, 5, 3, 3]));
        let b = Tensor::param(rng.normal_array(&[7]));
        let y = x.conv2d(&w, Some(&b), stride, pad).unwrap();
        y.square().sum().backward();
        out.push((format!("conv s{stride} p{pad} forward"), y.to_vec()));
        out.push((format!("conv s{stride} p{pad} dx"), x.grad().unwrap().iter().copied().collect()));
        out.push((format!("conv s{stride} p{pad} dw"), w.grad().unwrap().iter().copied().collect()));
    }
    out
}

/// Three Adam steps of chapter 00's digit judge on one MNIST-shaped batch: the losses.
fn judge_training_losses() -> Vec<f32> {
    use dalle::eval::DigitJudge;
    use dalle::nn::Module;
    use dalle::optim::{Adam, Optimizer};
    let mut rng = Rng::new(3);
    let judge = DigitJudge::new(&mut rng);
    let images = Tensor::new(rng.uniform_array(&[16, 1, 28, 28], 0.0, 1.0));
    let labels: Vec<usize> = (0..16).map(|i| i % 10).collect();
    let mut opt = Adam::new(judge.named_parameters(), 1e-3);
    (0..3)
        .map(|_| {
            opt.zero_grad();
            let loss = judge.forward(&images).unwrap().cross_entropy(&labels).unwrap();
            loss.backward();
            opt.step();
            loss.item()
        })
        .collect()
}

#[test]
fn wgpu_matches_cpu_through_the_engine() {
    let cpu_losses = judge_training_losses();
    let cpu = run_all();
    match set_device(Device::Wgpu) {
        Err(e) => {
            assert!(std::env::var("DALLE_REQUIRE_GPU").as_deref() != Ok("1"), "DALLE_REQUIRE_GPU=1 but: {e}");
            eprintln!("skipping: {e}");
        }
        Ok(_) => {
            intensity_threshold_routes_ops();
            // every op big enough on the GPU, whatever its arithmetic intensity
            set_min_gpu_intensity(0.0);
            let before = dalle::backend::wgpu::global().unwrap().stats();
            let gpu = run_all();
            let gpu_losses = judge_training_losses();
            let after = dalle::backend::wgpu::global().unwrap().stats();
            // The GPU really ran: operands were uploaded.
            assert!(after.host_uploads + after.resident_uploads > before.host_uploads + before.resident_uploads);
            set_device(Device::Cpu).unwrap();
            set_min_gpu_intensity(DEFAULT_MIN_GPU_INTENSITY);
            for ((name, a), (_, b)) in cpu.iter().zip(&gpu) {
                close(a, b, name);
            }
            // A training step of a chapter model: same losses on both devices, to
            // 1e-4 relative (f32 sums in another order, through 4 layers and 3 steps).
            for (step, (c, g)) in cpu_losses.iter().zip(&gpu_losses).enumerate() {
                assert!((c - g).abs() <= 1e-4 * c.abs(), "judge step {step}: cpu loss {c}, wgpu loss {g}");
            }
            println!("judge losses cpu {cpu_losses:?} wgpu {gpu_losses:?}");
        }
    }
}

/// With tensors on the host (`set_resident(false)`) and the default threshold, a matmul
/// of intensity 2 FLOP/byte stays on the CPU and one of about 85 FLOP/byte goes to the
/// GPU (the device must already be wgpu).
fn intensity_threshold_routes_ops() {
    // tensors on the host: each matmul's operands and result cross the bus
    dalle::backend::set_resident(false);
    set_min_gpu_intensity(DEFAULT_MIN_GPU_INTENSITY);
    let ctx = dalle::backend::wgpu::global().unwrap();
    let mut rng = Rng::new(11);
    let uploads = || {
        let s = ctx.stats();
        s.host_uploads + s.resident_uploads
    };
    let (p, q) = (Tensor::new(rng.normal_array(&[1000, 4])), Tensor::new(rng.normal_array(&[4, 1000])));
    let a = Tensor::new(rng.normal_array(&[512, 512]));
    let b = Tensor::new(rng.normal_array(&[512, 512]));
    let before = uploads();
    // (1000, 4) · (4, 1000): 8e6 FLOP over 4 (4000 + 4000 + 1e6) bytes
    p.matmul(&q).unwrap();
    let thin_uploads = uploads() - before;
    // (512, 512) · (512, 512): 2.7e8 FLOP over 4 (3 · 262144) bytes = 85 FLOP/byte
    let square = a.matmul(&b).unwrap();
    let square_uploads = uploads() - before - thin_uploads;
    assert_eq!(thin_uploads, 0, "a low-intensity matmul went to the GPU");
    assert!(square_uploads > 0, "a high-intensity matmul stayed on the CPU");
    // and it is the right product
    let two_d = |t: &Tensor| t.data().view().into_dimensionality::<ndarray::Ix2>().unwrap().to_owned();
    let want = two_d(&a).dot(&two_d(&b));
    close(want.as_slice().unwrap(), &square.to_vec(), "512 matmul");
    dalle::backend::set_resident(true);
}
