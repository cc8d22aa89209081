//! Parity tests of the kernels on GPU arrays (`dalle::backend::wgpu::array_ops`) against
//! a plain loop written here and, where the engine has the op, against its CPU op
//! (`Tensor::relu`, `max_pool2d`, `cross_entropy` and their gradients, `optim::Adam`).
//!
//! Tolerances, and why:
//! - ReLU, add, scale, fill, bias adds, max pooling and its gradient: exact. Each
//!   output is one correctly rounded IEEE operation on the same operands as the CPU's
//!   (max pooling's gradient adds the same values in the same order), so any
//!   difference is a bug.
//! - Sums: f32 in another order (256 strided shares, then a tree). Values that are
//!   multiples of 1/4 below 8 in size keep every partial sum of up to 300k terms exact
//!   in f32 (under 2²⁴ quarters), so those sums must be exact: a missing or doubled
//!   term shows. Random values check the rounding against the worst-case bound of
//!   recursive summation, `depth · 2⁻²³ · Σ|x|` with `depth` the additions on the
//!   longest path (terms per share + 8 tree levels).
//! - Softmax and cross-entropy: WGSL's `exp` and `log` may differ from Rust's by a few
//!   ulp (the spec allows `exp` 3 + 2|x| ulp, `log` 2⁻²¹ absolute near 1), and
//!   `lse = m + log s` carries an ulp of the row's largest logit. So a probability may
//!   differ by `p · (2e-6 (1 + |log p|) + 4 ε_f32 · max|x|)`: far below any wrong class,
//!   row or normalisation, which moves it by O(p). The gradient `g (p - onehot) / rows`
//!   from the GPU's own probabilities is checked to 4 ulp (WGSL's `/` may be 2.5 ulp off).
//! - Adam: WGSL may contract `a b + c` into one fused multiply-add and compute `/` and
//!   `sqrt` within 2.5 ulp, so an update may differ by 1e-5 of its size and the
//!   parameter by an ulp per step; a missing bias correction, a misplaced ε (1e-3
//!   here) or the wrong weight-decay form moves it by 1e-4 or more.
//!
//! Without an adapter the tests print a line and pass, unless DALLE_REQUIRE_GPU=1.
//! Run on Mesa's software Vulkan: `WGPU_BACKEND=vulkan DALLE_REQUIRE_GPU=1 cargo test
//! --release --test gpu_arrays`.
#![cfg(feature = "wgpu")]

mod common;
use common::gpu::{ctx, download, param, upload, values};

use dalle::backend::wgpu::array_ops::{self, AdamHyper, Pool2dShape};
use dalle::backend::wgpu::GpuArray;
use dalle::optim::{Adam, Optimizer};
use dalle::{Error, Tensor};
use ndarray::{ArrayD, IxDyn};


/// Multiples of 1/4 in [-`bound`, `bound`]: exact partial sums, ties in pooling windows
/// and exact zeros for ReLU.
fn quarters(len: usize, seed: u64, bound: f32) -> Vec<f32> {
    values(len, seed).into_iter().map(|v| (v * bound * 4.0).round() / 4.0).collect()
}

/// Bit-for-bit equal, except that any NaN matches any NaN and 0 matches -0.
fn assert_exact(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(g == w || (g.is_nan() && w.is_nan()), "{what}[{i}]: gpu {g} vs reference {w}");
    }
}

fn assert_shape_error<T>(what: &str, result: dalle::Result<T>) {
    match result {
        Err(Error::Shape { .. }) => {}
        Err(other) => panic!("{what}: expected a shape error, got {other}"),
        Ok(_) => panic!("{what}: expected a shape error, got Ok"),
    }
}

const SIZES: [usize; 5] = [0, 1, 7, 67 * 45, 300_001];

#[test]
fn relu_and_its_gradient_match_the_definition_and_the_cpu_op() {
    if ctx().is_none() {
        return;
    }
    for (s, &len) in SIZES.iter().enumerate() {
        let x = quarters(len, 1 + s as u64, 2.0); // many exact zeros: the derivative at 0
        let g = values(len, 100 + s as u64);
        let (xg, gg) = (upload(&x), upload(&g));

        let want: Vec<f32> = x.iter().map(|&v| if v > 0.0 { v } else { 0.0 }).collect();
        let y = download(&array_ops::relu(&xg).unwrap());
        assert_exact(&format!("relu, {len} values"), &y, &want);

        let want_dx: Vec<f32> = g.iter().zip(&x).map(|(&g, &x)| if x > 0.0 { g } else { 0.0 }).collect();
        let dx = download(&array_ops::relu_backward(&gg, &xg).unwrap());
        assert_exact(&format!("relu_backward, {len} values"), &dx, &want_dx);

        if len <= 67 * 45 {
            // the engine's CPU op: d/dx Σ g ⊙ relu(x) = g · [x > 0]
            let xt = param(&x, &[len]);
            let yt = xt.relu();
            assert_exact("relu vs Tensor::relu", &y, &yt.to_vec());
            yt.mul(&Tensor::from_vec(g.clone(), &[len]).unwrap()).unwrap().sum().backward();
            let grad = xt.grad().map(|a| a.iter().copied().collect::<Vec<_>>()).unwrap_or_default();
            if len > 0 {
                assert_exact("relu_backward vs Tensor::relu's backward", &dx, &grad);
            }
        }
    }
    let x = upload(&[0.0, 1.0, -1.0, f32::NAN]);
    assert_exact("relu of 0, 1, -1, NaN", &download(&array_ops::relu(&x).unwrap()), &[0.0, 1.0, 0.0, 0.0]);
    assert_shape_error("relu_backward of 4 and 3 values", array_ops::relu_backward(&x, &upload(&[1.0; 3])));
}

#[test]
fn add_scale_fill_and_accumulate_are_exact() {
    if ctx().is_none() {
        return;
    }
    for (s, &len) in SIZES.iter().enumerate() {
        let (a, b) = (values(len, 10 + s as u64), values(len, 20 + s as u64));
        let (ag, bg) = (upload(&a), upload(&b));
        let sum: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        assert_exact(&format!("add, {len} values"), &download(&array_ops::add(&ag, &bg).unwrap()), &sum);

        let scaled: Vec<f32> = a.iter().map(|x| x * -0.37).collect();
        assert_exact(&format!("scale, {len} values"), &download(&array_ops::scale(&ag, -0.37).unwrap()), &scaled);

        assert_exact(&format!("fill, {len} values"), &download(&array_ops::fill(len, 2.5).unwrap()), &vec![2.5; len]);

        // acc = a; acc += b; acc += b
        let acc = upload(&a);
        array_ops::add_assign(&acc, &bg).unwrap();
        array_ops::add_assign(&acc, &bg).unwrap();
        let twice: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y + y).collect();
        assert_exact(&format!("add_assign twice, {len} values"), &download(&acc), &twice);
        assert_exact("add_assign leaves b alone", &download(&bg), &b);
    }
    let (three, four) = (upload(&[1.0; 3]), upload(&[1.0; 4]));
    assert_shape_error("add of 3 and 4 values", array_ops::add(&three, &four));
    assert_shape_error("add_assign of 4 into 3 values", array_ops::add_assign(&three, &four));
    assert!(array_ops::add_assign(&three, &three).is_err(), "acc += acc must be refused, not a wgpu panic");
}

#[test]
fn bias_adds_put_bias_c_on_column_c_and_plane_c() {
    if ctx().is_none() {
        return;
    }
    for (s, &(rows, cols)) in [(67, 45), (1, 1), (0, 5), (300, 1001)].iter().enumerate() {
        let (x, b) = (values(rows * cols, 30 + s as u64), values(cols, 40 + s as u64));
        let want: Vec<f32> = (0..rows * cols).map(|i| x[i] + b[i % cols]).collect();
        let y = array_ops::bias_add_rows(&upload(&x), &upload(&b), rows, cols).unwrap();
        assert_exact(&format!("bias_add_rows ({rows}, {cols})"), &download(&y), &want);
    }
    for (s, &(n, c, q)) in [(2, 3, 7 * 5), (3, 5, 67 * 45), (1, 1, 1), (0, 4, 9)].iter().enumerate() {
        let (x, b) = (values(n * c * q, 50 + s as u64), values(c, 60 + s as u64));
        let want: Vec<f32> = (0..n * c * q).map(|i| x[i] + b[(i / q) % c]).collect();
        let y = array_ops::bias_add_planes(&upload(&x), &upload(&b), n, c, q).unwrap();
        assert_exact(&format!("bias_add_planes ({n}, {c}, {q})"), &download(&y), &want);
    }
    let x = upload(&[0.0; 12]);
    assert_shape_error("bias_add_rows with 4 biases for 3 columns", array_ops::bias_add_rows(&x, &upload(&[0.0; 4]), 4, 3));
    assert_shape_error("bias_add_planes with x of 12 for (2, 3, 3)", array_ops::bias_add_planes(&x, &upload(&[0.0; 3]), 2, 3, 3));
}

/// `Σ` over the listed indices of `x`: the f64 value and Σ|x|.
fn reference_sum(x: &[f32], indices: impl Iterator<Item = usize>) -> (f64, f64) {
    indices.fold((0.0, 0.0), |(s, m), i| (s + x[i] as f64, m + (x[i] as f64).abs()))
}

/// Checks `got` against `(value, Σ|x|)` references of sums of `terms` values each:
/// exactly when `exact`, else within the worst-case rounding bound (module doc).
fn assert_sums(what: &str, got: &[f32], want: &[(f64, f64)], terms: usize, exact: bool) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let depth = terms.div_ceil(256) + 8;
    for (i, (&g, &(value, magnitude))) in got.iter().zip(want).enumerate() {
        let bound = if exact { 0.0 } else { depth as f64 * f32::EPSILON as f64 * magnitude };
        assert!((g as f64 - value).abs() <= bound, "{what}[{i}]: gpu {g} vs {value} (bound {bound})");
    }
}

#[test]
fn sums_over_rows_planes_and_everything() {
    if ctx().is_none() {
        return;
    }
    for exact in [true, false] {
        let make = |len: usize, seed: u64| if exact { quarters(len, seed, 8.0) } else { values(len, seed) };
        let kind = if exact { "quarters, exact" } else { "random, rounding bound" };
        // (2, 70001): more workgroups than 65535, folded into a 2-D grid
        for (s, &(rows, cols)) in [(67, 45), (1, 1), (300, 1001), (0, 4), (3, 0), (2, 70_001)].iter().enumerate() {
            let g = make(rows * cols, 70 + s as u64);
            let want: Vec<(f64, f64)> = (0..cols).map(|c| reference_sum(&g, (0..rows).map(|r| r * cols + c))).collect();
            let got = download(&array_ops::sum_rows(&upload(&g), rows, cols).unwrap());
            assert_sums(&format!("sum_rows ({rows}, {cols}), {kind}"), &got, &want, rows, exact);
        }
        for (s, &(n, c, q)) in [(3, 5, 67 * 45), (2, 3, 1), (1, 1, 300_001), (0, 3, 4)].iter().enumerate() {
            let g = make(n * c * q, 80 + s as u64);
            let want: Vec<(f64, f64)> =
                (0..c).map(|ch| reference_sum(&g, (0..n).flat_map(|b| (0..q).map(move |p| (b * c + ch) * q + p)))).collect();
            let got = download(&array_ops::sum_planes(&upload(&g), n, c, q).unwrap());
            assert_sums(&format!("sum_planes ({n}, {c}, {q}), {kind}"), &got, &want, n * q, exact);
        }
        for (s, &len) in SIZES.iter().enumerate() {
            let x = make(len, 90 + s as u64);
            let got = download(&array_ops::sum_all(&upload(&x)).unwrap());
            assert_sums(&format!("sum_all of {len}, {kind}"), &got, &[reference_sum(&x, 0..len)], len, exact);
        }
    }
    assert_shape_error("sum_rows of 5 values as (2, 3)", array_ops::sum_rows(&upload(&[1.0; 5]), 2, 3));
    assert_shape_error("sum_planes of 5 values as (1, 2, 3)", array_ops::sum_planes(&upload(&[1.0; 5]), 1, 2, 3));
}

/// Max pooling by its definition: each window's value and first maximum (row-major,
/// strictly greater replaces), and dx gathering dy at those maxima.
fn reference_pool(x: &[f32], dy: &[f32], s: &Pool2dShape) -> (Vec<f32>, Vec<f32>) {
    let (oh, ow) = (s.out_height(), s.out_width());
    let mut y = vec![0.0; s.output_len()];
    let mut dx = vec![0.0; x.len()];
    for plane in 0..s.batch * s.channels {
        for i in 0..oh {
            for j in 0..ow {
                let (mut best, mut at) = (f32::NEG_INFINITY, (plane * s.height + i * s.stride) * s.width + j * s.stride);
                for u in 0..s.kernel {
                    for v in 0..s.kernel {
                        let q = (plane * s.height + i * s.stride + u) * s.width + j * s.stride + v;
                        if x[q] > best {
                            (best, at) = (x[q], q);
                        }
                    }
                }
                let o = (plane * oh + i) * ow + j;
                y[o] = best;
                dx[at] += dy[o];
            }
        }
    }
    (y, dx)
}

#[test]
fn max_pool2d_and_its_gradient_match_the_cpu_op_with_ties_and_overlaps() {
    if ctx().is_none() {
        return;
    }
    let shapes = [
        Pool2dShape { batch: 2, channels: 3, height: 7, width: 9, kernel: 2, stride: 2 }, // odd H, W: last row/column unused
        Pool2dShape { batch: 2, channels: 3, height: 9, width: 7, kernel: 3, stride: 2 }, // overlapping windows
        Pool2dShape { batch: 1, channels: 2, height: 6, width: 5, kernel: 3, stride: 1 }, // up to 9 windows per pixel
        Pool2dShape { batch: 3, channels: 5, height: 67, width: 45, kernel: 3, stride: 2 },
        Pool2dShape { batch: 1, channels: 1, height: 1, width: 1, kernel: 1, stride: 1 },
        Pool2dShape { batch: 0, channels: 3, height: 4, width: 4, kernel: 2, stride: 2 },
    ];
    for (t, s) in shapes.iter().enumerate() {
        // 0.25 steps in [-1, 1]: 9 levels, so most windows have tied maxima
        let mut x = quarters(s.input_len(), 200 + t as u64, 1.0);
        if t == 0 {
            x[..s.height * s.width].fill(f32::NEG_INFINITY); // a plane of -inf: the top-left pixel wins
            x[s.height * s.width..2 * s.height * s.width].fill(0.5); // a plane of ties
        }
        let dy = values(s.output_len(), 300 + t as u64);
        let (want_y, want_dx) = reference_pool(&x, &dy, s);
        let xg = upload(&x);
        let y = download(&array_ops::max_pool2d(&xg, s).unwrap());
        assert_exact(&format!("max_pool2d {s:?}"), &y, &want_y);
        let dx = download(&array_ops::max_pool2d_backward(&upload(&dy), &xg, s).unwrap());
        assert_exact(&format!("max_pool2d_backward {s:?}"), &dx, &want_dx);

        if s.batch > 0 {
            let shape4 = [s.batch, s.channels, s.height, s.width];
            let xt = param(&x, &shape4);
            let yt = xt.max_pool2d(s.kernel, s.stride).unwrap();
            assert_eq!(yt.shape(), [s.batch, s.channels, s.out_height(), s.out_width()], "output shape {s:?}");
            assert_exact(&format!("max_pool2d vs Tensor::max_pool2d {s:?}"), &y, &yt.to_vec());
            yt.mul(&Tensor::from_vec(dy.clone(), &yt.shape()).unwrap()).unwrap().sum().backward();
            let grad: Vec<f32> = xt.grad().expect("x has a gradient").iter().copied().collect();
            assert_exact(&format!("max_pool2d_backward vs the CPU op's backward {s:?}"), &dx, &grad);
        }
    }
    let s = Pool2dShape { batch: 1, channels: 1, height: 4, width: 4, kernel: 2, stride: 2 };
    assert_shape_error("max_pool2d of 15 values as 1x1x4x4", array_ops::max_pool2d(&upload(&[0.0; 15]), &s));
    assert_shape_error("max_pool2d_backward with 3 gradients for 4 windows", array_ops::max_pool2d_backward(&upload(&[0.0; 3]), &upload(&[0.0; 16]), &s));
    let too_big = Pool2dShape { kernel: 5, ..s };
    assert_shape_error("a 5x5 window on a 4x4 input", array_ops::max_pool2d(&upload(&[0.0; 16]), &too_big));
}

/// How far a GPU probability may be from the CPU's `p` (module doc: exp/log ulps), for
/// a row whose largest |logit| is `row_scale`.
fn prob_tolerance(p: f32, row_scale: f32) -> f32 {
    if p < 1e-30 {
        return 1e-30; // underflow: both are 0 or subnormal
    }
    (2e-6 * (1.0 + p.ln().abs()) + 4.0 * f32::EPSILON * row_scale) * p
}

#[test]
fn cross_entropy_and_its_gradient_match_the_cpu_op() {
    if ctx().is_none() {
        return;
    }
    // (rows, classes, logit scale): 1000 overflows exp without the row max subtracted;
    // 70001 rows are more workgroups than 65535, folded into a 2-D grid
    for (s, &(rows, classes, spread)) in [(67, 45, 4.0), (5, 1000, 1000.0), (1, 1, 1.0), (3, 300, 10.0), (70_001, 2, 3.0)].iter().enumerate() {
        let logits: Vec<f32> = values(rows * classes, 400 + s as u64).iter().map(|v| v * spread).collect();
        let targets: Vec<usize> = (0..rows).map(|r| (r * 7 + s) % classes).collect();
        let g = 2.5; // the loss's gradient: the CPU's comes from loss · 2.5

        let lt = param(&logits, &[rows, classes]);
        let loss_t = lt.cross_entropy(&targets).unwrap();
        loss_t.scale(g).backward();
        let cpu_loss = loss_t.item();
        let cpu_grad: Vec<f32> = lt.grad().expect("logits have a gradient").iter().copied().collect();

        let t_gpu = upload(&targets.iter().map(|&t| t as f32).collect::<Vec<_>>());
        let (loss, probs) = array_ops::cross_entropy(&upload(&logits), &t_gpu, rows, classes).unwrap();
        let (loss, probs_host) = (download(&loss), download(&probs));
        let dlogits = download(&array_ops::cross_entropy_backward(&probs, &t_gpu, &upload(&[g]), rows, classes).unwrap());

        let what = format!("cross_entropy ({rows}, {classes}), logits in ±{spread}");
        let scale_of = |r: usize| logits[r * classes..(r + 1) * classes].iter().fold(1.0f32, |a, v| a.max(v.abs()));
        let max_scale = (0..rows).map(scale_of).fold(1.0, f32::max);
        let loss_bound = 1e-5 * (1.0 + cpu_loss.abs()) + 4.0 * f32::EPSILON * max_scale;
        assert_eq!(loss.len(), 1, "{what}: one loss value");
        assert!((loss[0] - cpu_loss).abs() <= loss_bound, "{what}: loss gpu {} vs cpu {cpu_loss}", loss[0]);
        assert_eq!(probs_host.len(), rows * classes, "{what}: probs length");
        assert_eq!(dlogits.len(), rows * classes, "{what}: gradient length");
        for i in 0..rows * classes {
            let (r, k) = (i / classes, i % classes);
            let onehot = if k == targets[r] { 1.0 } else { 0.0 };
            let cpu_p = {
                let row = &logits[r * classes..(r + 1) * classes];
                let m = row.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
                let lse = m + row.iter().map(|&v| (v - m).exp()).sum::<f32>().ln();
                (logits[i] - lse).exp() // the CPU op's formula
            };
            let p_bound = prob_tolerance(cpu_p, scale_of(r));
            assert!((probs_host[i] - cpu_p).abs() <= p_bound, "{what}: probs[{r}][{k}] gpu {} vs cpu {cpu_p}", probs_host[i]);
            // the gradient from the GPU's own probabilities: the formula, within the
            // 2.5 ulp WGSL allows a division
            let want = g * (probs_host[i] - onehot) / rows as f32;
            assert!((dlogits[i] - want).abs() <= 4.0 * f32::EPSILON * want.abs(), "{what}: d logits[{r}][{k}] gpu {} vs {want} from its probs", dlogits[i]);
            // and the CPU op's gradient, d = g (p - [k = t]) / rows, within the probabilities' tolerance
            let bound = g / rows as f32 * p_bound + 4.0 * f32::EPSILON * cpu_grad[i].abs();
            assert!((dlogits[i] - cpu_grad[i]).abs() <= bound, "{what}: d logits[{r}][{k}] gpu {} vs cpu {}", dlogits[i], cpu_grad[i]);
        }
    }

    // no rows: NaN as the CPU's mean over nothing; an out-of-range target: NaN
    let (loss, probs) = array_ops::cross_entropy(&upload(&[]), &upload(&[]), 0, 5).unwrap();
    assert!(download(&loss)[0].is_nan() && probs.is_empty(), "cross_entropy of no rows");
    let (loss, _) = array_ops::cross_entropy(&upload(&[0.0; 6]), &upload(&[0.0, 3.0]), 2, 3).unwrap();
    assert!(download(&loss)[0].is_nan(), "target 3 of 3 classes gives NaN");
    assert_shape_error("cross_entropy with 3 targets for 2 rows", array_ops::cross_entropy(&upload(&[0.0; 6]), &upload(&[0.0; 3]), 2, 3));
    assert_shape_error("cross_entropy_backward with g of 2 values", array_ops::cross_entropy_backward(&upload(&[0.0; 6]), &upload(&[0.0; 2]), &upload(&[1.0; 2]), 2, 3));
}

#[test]
fn adam_and_adamw_steps_match_the_cpu_optimiser() {
    if ctx().is_none() {
        return;
    }
    // (Adam or AdamW, λ, ε, length)
    for (s, &(decoupled, weight_decay, eps, len)) in
        [(false, 0.0, 1e-8, 67 * 45), (false, 0.1, 1e-8, 1001), (true, 0.1, 1e-8, 1001), (true, 0.01, 1e-3, 7), (false, 0.0, 1e-8, 0)].iter().enumerate()
    {
        let what = format!("{} λ={weight_decay} ε={eps}, {len} values", if decoupled { "AdamW" } else { "Adam" });
        let theta0: Vec<f32> = values(len, 500 + s as u64).iter().map(|v| v * 3.0).collect();
        let p = param(&theta0, &[len]);
        let lr = 1e-2;
        let mut cpu = if decoupled { Adam::adamw(vec![("p".into(), p.clone())], lr, weight_decay) } else { Adam::new(vec![("p".into(), p.clone())], lr) };
        cpu.weight_decay = weight_decay;
        cpu.eps = eps;
        let (theta, m, v) = (upload(&theta0), array_ops::fill(len, 0.0).unwrap(), array_ops::fill(len, 0.0).unwrap());
        let mut moved = vec![0.0f32; len]; // Σ_t |θ_t - θ_{t-1}|, which scales the tolerance
        for step in 1..=3 {
            let grad = values(len, 600 + 10 * s as u64 + step);
            let before = p.to_vec();
            p.set_grad(Some(ArrayD::from_shape_vec(IxDyn(&[len]), grad.clone()).unwrap()));
            cpu.step();
            let after = p.to_vec();
            let hyper = AdamHyper {
                lr,
                beta1: cpu.betas.0,
                beta2: cpu.betas.1,
                eps,
                weight_decay,
                decoupled,
                bias_correction1: 1.0 - cpu.betas.0.powi(step as i32), // 1 - β₁ᵗ
                bias_correction2: 1.0 - cpu.betas.1.powi(step as i32), // 1 - β₂ᵗ
            };
            array_ops::adam_step(&theta, &upload(&grad), &m, &v, &hyper).unwrap();
            let state: std::collections::HashMap<String, ArrayD<f32>> = cpu.state().into_iter().collect();
            let (cpu_m, cpu_v) = (&state["m.p"], &state["v.p"]);
            let (gpu_theta, gpu_m, gpu_v) = (download(&theta), download(&m), download(&v));
            for i in 0..len {
                moved[i] += (after[i] - before[i]).abs();
                let bound = 1e-5 * moved[i] + 2.0 * step as f32 * f32::EPSILON * after[i].abs();
                assert!((gpu_theta[i] - after[i]).abs() <= bound, "{what}, step {step}: θ[{i}] gpu {} vs cpu {}", gpu_theta[i], after[i]);
                let (cm, cv) = (cpu_m[[i]], cpu_v[[i]]);
                assert!((gpu_m[i] - cm).abs() <= 1e-5 * cm.abs() + 1e-9, "{what}, step {step}: m[{i}] gpu {} vs cpu {cm}", gpu_m[i]);
                assert!((gpu_v[i] - cv).abs() <= 1e-5 * cv.abs() + 1e-12, "{what}, step {step}: v[{i}] gpu {} vs cpu {cv}", gpu_v[i]);
            }
        }
    }
    let hyper = AdamHyper { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: false, bias_correction1: 0.1, bias_correction2: 0.001 };
    let (a, b, c) = (upload(&[0.0; 3]), upload(&[0.0; 3]), upload(&[0.0; 3]));
    assert_shape_error("adam_step with v of 2 values", array_ops::adam_step(&a, &b, &c, &upload(&[0.0; 2]), &hyper));
    assert!(array_ops::adam_step(&a, &b, &c, &c, &hyper).is_err(), "m and v the same array must be refused");
}

/// Kernels on GPU arrays are recorded into one command buffer and submitted together
/// (`Job::enqueue`); a write to a buffer lands before the next submission's commands.
/// Here the input's buffer goes back to the pool while the ReLU reading it is still
/// unsubmitted, and the next upload of the same size gets that buffer: the upload
/// must submit the ReLU first, or the ReLU would read the new values.
#[test]
fn an_upload_into_a_recycled_buffer_waits_for_the_kernels_before_it() {
    let Some(ctx) = ctx() else { return };
    let a: Vec<f32> = (0..1000).map(|i| i as f32 - 500.0).collect();
    let b: Vec<f32> = (0..1000).map(|i| -(i as f32)).collect();
    for _ in 0..3 {
        let before = ctx.stats();
        let x = GpuArray::upload(&a).unwrap();
        let y = array_ops::relu(&x).unwrap();
        drop(x); // its buffer is free again while the ReLU is not yet submitted
        let z = GpuArray::upload(&b).unwrap();
        assert!(ctx.stats().buffers_reused > before.buffers_reused, "the pool did not hand a buffer out again");
        let want: Vec<f32> = a.iter().map(|v| v.max(0.0)).collect();
        assert!(y.to_vec().unwrap() == want, "the ReLU read values uploaded after it");
        assert!(z.to_vec().unwrap() == b, "the upload was lost");
    }
}
