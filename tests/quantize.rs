//! The vector quantizer and the gumbel-softmax: PyTorch goldens, gradient checks, properties.

use dalle::io::checkpoint;
use dalle::nn::gumbel::{gumbel_softmax, gumbel_softmax_with_noise};
use dalle::nn::quantize::{usage_and_perplexity, ProductQuantizer, QuantizerConfig, VectorQuantizer};
use dalle::tensor::gradcheck::gradcheck;
use dalle::{Rng, Tensor};
use ndarray::ArrayD;
use std::path::Path;

fn golden() -> checkpoint::Checkpoint {
    checkpoint::load(Path::new("tests/golden/quantize.safetensors")).expect("run tests/golden/make_quantize_golden.py")
}

fn max_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// A loss-driven quantizer whose codebook is `codebook`.
fn quantizer_with(codebook: &ArrayD<f32>, beta: f32) -> VectorQuantizer {
    let (k, d) = (codebook.shape()[0], codebook.shape()[1]);
    let q = VectorQuantizer::new(QuantizerConfig { beta, ..QuantizerConfig::new(k, d) }, &mut Rng::new(0)).unwrap();
    q.codebook.assign(codebook.clone()).unwrap();
    q
}

// Tolerance 1e-5: a handful of f32 products and sums on values of order 1; the
// indices must match exactly (the fixture has no near ties: checked below).
#[test]
fn quantizer_matches_pytorch() {
    let g = golden();
    let q = quantizer_with(g.get("vq.codebook").unwrap(), 0.25);
    let z = Tensor::param(g.get("vq.z").unwrap().clone());
    let out = q.forward(&z, false).unwrap();
    let want: Vec<usize> = g.get("vq.indices").unwrap().iter().map(|&v| v as usize).collect();
    assert_eq!(out.indices, want);
    assert!(max_diff(&out.z_q.to_array(), g.get("vq.z_q").unwrap()) < 1e-6);
    assert!((out.codebook_loss.item() - g.get("vq.codebook_loss").unwrap()[[0]]).abs() < 1e-5);
    assert!((out.commitment_loss.item() - g.get("vq.commitment_loss").unwrap()[[0]]).abs() < 1e-5);
    // total = Σ w ⊙ z_q + codebook loss + commitment loss
    let w = Tensor::new(g.get("vq.w").unwrap().clone());
    out.z_q.mul(&w).unwrap().sum().add(&out.loss().unwrap()).unwrap().backward();
    assert!(max_diff(&z.grad().unwrap(), g.get("vq.grad_z").unwrap()) < 1e-5);
    assert!(max_diff(&q.codebook.grad().unwrap(), g.get("vq.grad_codebook").unwrap()) < 1e-5);
}

#[test]
fn gumbel_softmax_matches_pytorch() {
    let g = golden();
    let noise = Tensor::new(g.get("gumbel.noise").unwrap().clone());
    let w = Tensor::new(g.get("gumbel.w").unwrap().clone());
    for (name, hard) in [("soft", false), ("hard", true)] {
        let logits = Tensor::param(g.get("gumbel.logits").unwrap().clone());
        let y = gumbel_softmax_with_noise(&logits, &noise, 0.5, hard, -1).unwrap();
        assert!(max_diff(&y.to_array(), g.get(&format!("gumbel.{name}.y")).unwrap()) < 1e-6, "{name} y");
        y.mul(&w).unwrap().sum().backward();
        assert!(max_diff(&logits.grad().unwrap(), g.get(&format!("gumbel.{name}.grad_logits")).unwrap()) < 1e-5, "{name} grad");
    }
}

// ANCHOR: straight_through_test
/// Straight-through: the gradient reaching z_e is exactly the gradient arriving at z_q.
#[test]
fn straight_through_passes_the_gradient_unchanged() {
    let mut rng = Rng::new(7);
    let q = quantizer_with(&rng.normal_array(&[16, 8]), 0.0);
    let z = Tensor::param(rng.normal_array(&[32, 8]));
    let upstream = rng.normal_array(&[32, 8]);
    let out = q.forward(&z, false).unwrap();
    out.z_q.mul(&Tensor::new(upstream.clone())).unwrap().sum().backward();
    assert_eq!(z.grad().unwrap(), upstream);
    // and the forward value is the chosen code itself
    let codes = q.lookup(&out.indices).unwrap();
    assert!(max_diff(&out.z_q.to_array(), &codes.to_array()) < 1e-6);
}
// ANCHOR_END: straight_through_test

#[test]
fn nearest_is_the_brute_force_argmin() {
    let mut rng = Rng::new(3);
    let e = rng.normal_array(&[50, 6]);
    let z = rng.normal_array(&[40, 6]);
    let q = quantizer_with(&e, 0.25);
    let got = q.nearest(&z).unwrap();
    for (i, &k) in got.iter().enumerate() {
        let dist = |j: usize| (0..6).map(|d| (z[[i, d]] - e[[j, d]]).powi(2)).sum::<f32>();
        let best = (0..50).min_by(|&a, &b| dist(a).total_cmp(&dist(b))).unwrap();
        assert!(dist(k) <= dist(best) + 1e-5, "row {i}: picked {k}, nearest is {best}");
    }
    assert!(q.nearest(&rng.normal_array(&[3, 5])).is_err(), "a wrong dimension is an error");
}

/// The codebook loss w.r.t. the codebook (z fixed) and the commitment loss
/// w.r.t. z (codebook fixed), by finite differences; h = 1e-3 is far below the
/// distance margins, so no index switches. (Each loss's gradient w.r.t. the
/// other input is zero by design, sg[·], so it is not a derivative to check.)
#[test]
fn quantizer_losses_pass_gradcheck() {
    let mut rng = Rng::new(11);
    let (z, codebook) = (rng.normal_array(&[10, 4]), rng.normal_array(&[6, 4]));
    let zc = Tensor::new(z.clone());
    let codebook_loss = |xs: &[Tensor]| VectorQuantizer::from_codebook(xs[0].clone(), 0.25)?.forward(&zc, false).map(|o| o.codebook_loss);
    let report = gradcheck(&codebook_loss, std::slice::from_ref(&codebook), 1e-3, 64).unwrap();
    assert!(report.max_error < 1e-2, "codebook loss: {}", report.worst);
    let q = VectorQuantizer::from_codebook(Tensor::new(codebook), 0.25).unwrap();
    let commitment = |xs: &[Tensor]| q.forward(&xs[0], false).map(|o| o.commitment_loss);
    let report = gradcheck(&commitment, &[z], 1e-3, 64).unwrap();
    assert!(report.max_error < 1e-2, "commitment loss: {}", report.worst);
}

#[test]
fn gumbel_softmax_passes_gradcheck() {
    let mut rng = Rng::new(5);
    let noise = Tensor::new(rng.gumbel_array(&[4, 6]));
    let f = |xs: &[Tensor]| gumbel_softmax_with_noise(&xs[0], &noise, 0.7, false, -1);
    let report = gradcheck(&f, &[rng.normal_array(&[4, 6])], 1e-3, 64).unwrap();
    assert!(report.max_error < 1e-2, "{}", report.worst);
}

/// At τ = 0.05 a soft sample is nearly one-hot.
#[test]
fn gumbel_softmax_at_low_temperature_is_near_one_hot() {
    let mut rng = Rng::new(1);
    let logits = Tensor::new(rng.normal_array(&[2000, 8]));
    let y = gumbel_softmax(&logits, 0.05, false, -1, &mut rng).unwrap().to_array();
    let near = y.rows().into_iter().filter(|r| r.iter().cloned().fold(0.0, f32::max) > 0.99).count();
    // max((ℓ+g)/τ) beats the runner-up by < ln(99)·τ ≈ 0.23 only for a minority of draws
    assert!(near as f32 > 0.8 * 2000.0, "only {near} of 2000 samples are within 1% of one-hot");
}

/// The mean of many samples approaches softmax(logits): exactly for the hard
/// (gumbel-max) samples, and for soft samples as τ -> 0.
#[test]
fn gumbel_softmax_mean_approaches_softmax() {
    let mut rng = Rng::new(2);
    let row = [1.0f32, 0.0, -1.0, 2.0, 0.5];
    let n = 20000;
    let logits = Tensor::new(ndarray::Array2::from_shape_fn((n, 5), |(_, j)| row[j]).into_dyn());
    let p = Tensor::from_vec(row.to_vec(), &[5]).unwrap().softmax(-1).to_vec();
    for (tau, hard) in [(1.0, true), (0.1, false)] {
        let y = gumbel_softmax(&logits, tau, hard, -1, &mut rng).unwrap().to_array();
        let mean = y.mean_axis(ndarray::Axis(0)).unwrap();
        for j in 0..5 {
            // std of the mean <= 0.5/√n ≈ 0.0035; 0.015 is > 4σ
            assert!((mean[j] - p[j]).abs() < 0.015, "tau {tau} hard {hard}: code {j} mean {} vs softmax {}", mean[j], p[j]);
        }
    }
}

#[test]
fn ema_codebook_moves_codes_to_their_cluster_means() {
    let mut rng = Rng::new(4);
    let cfg = QuantizerConfig::new(4, 3).with_ema();
    let cfg = QuantizerConfig { update: dalle::nn::quantize::CodebookUpdate::Ema { decay: 0.0, epsilon: 1e-9 }, ..cfg };
    let q = VectorQuantizer::new(cfg, &mut rng).unwrap();
    q.codebook.assign(rng.normal_array(&[4, 3])).unwrap();
    let z = Tensor::new(rng.normal_array(&[64, 3]));
    let out = q.forward(&z, true).unwrap();
    let e = q.codebook.to_array();
    let zd = z.to_array();
    for k in 0..4 {
        let rows: Vec<usize> = (0..64).filter(|&i| out.indices[i] == k).collect();
        if rows.is_empty() {
            continue;
        }
        for d in 0..3 {
            let mean = rows.iter().map(|&i| zd[[i, d]]).sum::<f32>() / rows.len() as f32;
            assert!((e[[k, d]] - mean).abs() < 1e-4, "code {k} dim {d}: {} vs cluster mean {mean}", e[[k, d]]);
        }
    }
    assert_eq!(out.codebook_loss.item(), 0.0, "an EMA codebook has no codebook loss");
}

#[test]
fn dead_codes_are_restarted_onto_encoder_outputs() {
    let mut rng = Rng::new(8);
    let q = VectorQuantizer::new(QuantizerConfig::new(3, 2).with_restarts(2), &mut rng).unwrap();
    // code 2 is far from every input and never picked
    q.codebook.assign(ndarray::arr2(&[[0.0, 0.0], [1.0, 1.0], [100.0, 100.0]]).into_dyn()).unwrap();
    let z = Tensor::new(rng.uniform_array(&[16, 2], 0.0, 1.0));
    q.forward(&z, true).unwrap();
    assert_eq!(q.codebook.to_array()[[2, 0]], 100.0, "one idle step is not yet dead");
    q.forward(&z, true).unwrap();
    let e2: Vec<f32> = q.codebook.to_array().index_axis(ndarray::Axis(0), 2).iter().copied().collect();
    let zd = z.to_array();
    assert!(zd.rows().into_iter().any(|r| r.to_vec() == e2), "code 2 {e2:?} should now be one of the inputs");
}

#[test]
fn perplexity_is_k_for_uniform_use_and_one_for_collapse() {
    let (u, p) = usage_and_perplexity(&[5, 5, 5, 5]);
    assert_eq!(u, 1.0);
    assert!((p - 4.0).abs() < 1e-5);
    let (u, p) = usage_and_perplexity(&[0, 9, 0, 0]);
    assert_eq!(u, 0.25);
    assert!((p - 1.0).abs() < 1e-6);
}

#[test]
fn product_quantizer_quantizes_groups_separately() {
    let mut rng = Rng::new(9);
    let pq = ProductQuantizer::new(2, 8, 6, 5, &mut rng).unwrap();
    let z = Tensor::param(rng.normal_array(&[10, 6]));
    let (y, idx, loss) = pq.forward(&z, false).unwrap();
    assert_eq!(y.shape(), vec![10, 5]);
    assert_eq!(idx.len(), 20);
    // group 1's index of row 0 is the nearest code of z[0, 3..6] in group 1's codebook
    let z0 = z.to_array().slice(ndarray::s![0..1, 3..6]).to_owned().into_dyn();
    assert_eq!(idx[1], pq.groups[1].nearest(&z0).unwrap()[0]);
    loss.add(&y.sum()).unwrap().backward();
    assert!(z.grad().is_some());
    assert!(ProductQuantizer::new(4, 8, 6, 5, &mut rng).is_err(), "6 dims do not split into 4 groups");
}
