//! Parity tests of the row and slice kernels on GPU arrays (`dalle::backend::wgpu::rows`)
//! against the engine's CPU ops (`Tensor::softmax`, `layer_norm`, `narrow`, `chunk`,
//! `concat`, `masked_fill` and their gradients) and plain loops written here.
//!
//! Tolerances, and why:
//! - narrow, its gradient, concat2, masked_fill and its gradient: exact. They move values
//!   (or write 0 or the fill value) without arithmetic, so any difference is a bug.
//! - Softmax: WGSL's `exp` may be 3 + 2|x| ulp off (the spec's bound) where the CPU's is
//!   2 ulp, and the row sum is added in another order (f32, a tree): a probability may
//!   differ by `p · (8 + 2|x - max|) ε_f32` from the exp plus `(depth) ε_f32` from the
//!   sum. [`SOFTMAX_RELATIVE`] = 1e-5 of `p` covers |x - max| up to 16 (the scores here);
//!   a wrong row, max or normaliser moves `p` by O(p). Entries of `-inf` must give exactly
//!   0, and a row of all `-inf` NaN, as the CPU. Its gradient `y (g - Σ g y)` is held to
//!   1e-5 of `y (|g| + 2 Σ |g| y)`, the size of its terms.
//! - Layer norm: the CPU keeps μ as its first value plus an f32 mean of `x - x₀` (as
//!   exact as the spread of the row allows), the GPU as one f32. The f32 sums of at most
//!   300 terms (a share of 2, then 8 tree levels) are good to about 1e-6 of the row scale,
//!   so [`NORM_RELATIVE`] = 1e-5 relative to the size of each term (`|γ| (1 + |x̂|) + |β|`
//!   for y). Beyond that the GPU stores μ as an f32, which rounds it by up to half an ulp,
//!   `ε_f32 |μ| / 2`: with a common offset of 1000 that moves x̂ by up to `3e-5 / σ`, the
//!   resolution of the f32 inputs themselves (an ulp of 1000 is 6e-5). The tolerance adds
//!   `ε_f32 |μ| / σ` to x̂'s error for that. Not centering (or centering by a mean that
//!   lost the offset's precision to a plain f32 sum, 1e-4 off) fails it.
//!
//! Without an adapter the tests print a line and pass, unless DALLE_REQUIRE_GPU=1.
//! Run on Mesa's software Vulkan: `WGPU_BACKEND=vulkan DALLE_REQUIRE_GPU=1 cargo test
//! --release --test gpu_rows`.
#![cfg(feature = "wgpu")]

mod common;
use common::gpu::{ctx, download, param, upload, values};

use dalle::backend::wgpu::rows::{self, broadcast_strides};
use dalle::{Error, Tensor};
use ndarray::{ArrayD, IxDyn};

/// Softmax: relative error allowed on each probability (see the module doc).
const SOFTMAX_RELATIVE: f32 = 1e-5;
/// Layer norm: relative error allowed against the size of the terms (see the module doc).
const NORM_RELATIVE: f32 = 1e-5;


fn array(values: &[f32], shape: &[usize]) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(shape), values.to_vec()).expect("shape matches the values")
}

/// The gradient accumulated in `t`, flattened.
fn grad_of(t: &Tensor) -> Vec<f32> {
    t.grad().map(|a| a.iter().copied().collect()).expect("a gradient")
}

/// Bit-for-bit equal, except that any NaN matches any NaN and 0 matches -0.
fn assert_exact(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(g == w || (g.is_nan() && w.is_nan()), "{what}[{i}]: gpu {g} vs reference {w}");
    }
}

/// `|got - want| <= tolerance(i)` for each `i`; NaN only against NaN, infinities equal.
fn assert_close(what: &str, got: &[f32], want: &[f32], tolerance: impl Fn(usize) -> f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_nan() || g.is_nan() { g.is_nan() && w.is_nan() } else { g == w || (g - w).abs() <= tolerance(i) };
        assert!(ok, "{what}[{i}]: gpu {g} vs reference {w} (tolerance {})", tolerance(i));
    }
}

fn assert_shape_error<T>(what: &str, result: dalle::Result<T>) {
    match result {
        Err(Error::Shape { .. }) => {}
        Err(other) => panic!("{what}: expected a shape error, got {other}"),
        Ok(_) => panic!("{what}: expected a shape error, got Ok"),
    }
}

/// Softmax over rows of `x (rows, d)` on the GPU against `Tensor::softmax(-1)`, forward
/// and gradient for the upstream `g`.
fn check_softmax(what: &str, x: &[f32], g: &[f32], rows: usize, d: usize) {
    let y = download(&rows::softmax_rows(&upload(x), rows, d).unwrap());
    let xt = param(x, &[rows, d]);
    let yt = xt.softmax(-1);
    let want = yt.to_vec();
    assert_close(&format!("softmax_rows, {what}"), &y, &want, |i| SOFTMAX_RELATIVE * want[i]);

    let dx = download(&rows::softmax_rows_backward(&upload(g), &upload(&y), rows, d).unwrap());
    yt.backward_with(array(g, &[rows, d]));
    let want_dx = grad_of(&xt);
    // the size of the terms of y (g - Σ g y), per row
    let scale: Vec<f32> = (0..rows).map(|r| (0..d).map(|k| g[r * d + k].abs() * want[r * d + k]).sum()).collect();
    assert_close(&format!("softmax_rows_backward, {what}"), &dx, &want_dx, |i| SOFTMAX_RELATIVE * want[i] * (g[i].abs() + 2.0 * scale[i / d]));
}

#[test]
fn softmax_rows_and_its_gradient_match_tensor_softmax() {
    if ctx().is_none() {
        return;
    }
    for (s, &d) in [1usize, 7, 67, 300].iter().enumerate() {
        let rows = 5;
        // scores in [-8, 8), each row shifted by its own offset (+100 overflows e^x
        // unless the row's max is subtracted; -100 underflows it)
        let offsets = [0.0, 100.0, -100.0, 3.5, 0.0];
        let x: Vec<f32> = values(rows * d, 1 + s as u64).iter().enumerate().map(|(i, v)| 8.0 * v + offsets[i / d]).collect();
        let g = values(rows * d, 10 + s as u64);
        check_softmax(&format!("({rows}, {d})"), &x, &g, rows, d);

        // a causal mask on (t, d) scores: -inf after position t, and one row all -inf
        let causal: Vec<f32> = x.iter().enumerate().map(|(i, &v)| if i % d > (i / d) % d { f32::NEG_INFINITY } else { v }).collect();
        let mut masked = causal.clone();
        masked[2 * d..3 * d].fill(f32::NEG_INFINITY);
        check_softmax(&format!("causal ({rows}, {d}) with a row of -inf"), &masked, &g, rows, d);
        let y = download(&rows::softmax_rows(&upload(&masked), rows, d).unwrap());
        for (i, (&p, &v)) in y.iter().zip(&masked).enumerate() {
            let row = i / d;
            assert!(if row == 2 { p.is_nan() } else if v == f32::NEG_INFINITY { p == 0.0 } else { p > 0.0 }, "causal softmax[{i}] = {p} for score {v}");
        }
    }
    // 66 000 rows: more workgroups than 65 535, folded into a 2-D grid
    let (rows, d) = (66_000, 3);
    let x = values(rows * d, 30);
    check_softmax("(66000, 3)", &x, &values(rows * d, 31), rows, d);

    let empty = upload(&[]);
    assert!(download(&rows::softmax_rows(&empty, 0, 5).unwrap()).is_empty());
    assert!(download(&rows::softmax_rows(&empty, 4, 0).unwrap()).is_empty());
    assert!(download(&rows::softmax_rows_backward(&empty, &empty, 0, 5).unwrap()).is_empty());
    assert_shape_error("softmax_rows of 5 values as (2, 3)", rows::softmax_rows(&upload(&[0.0; 5]), 2, 3));
    assert_shape_error("softmax_rows_backward with y of 5 values", rows::softmax_rows_backward(&upload(&[0.0; 6]), &upload(&[0.0; 5]), 2, 3));
}

/// `(μ, 1/σ)` of each row in f64, `1/σ = 1/√(σ² + ε)` with the biased variance.
fn reference_stats(x: &[f32], rows: usize, d: usize, eps: f32) -> Vec<(f64, f64)> {
    (0..rows)
        .map(|r| {
            let row = &x[r * d..(r + 1) * d];
            let mu = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
            let var = row.iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>() / d as f64;
            (mu, 1.0 / (var + eps as f64).sqrt())
        })
        .collect()
}

/// Layer norm of `x (rows, d)` on the GPU against `Tensor::layer_norm`: y, the saved
/// statistics, and dx, dγ, dβ for the upstream `g`.
fn check_layer_norm(what: &str, x: &[f32], gamma: &[f32], beta: &[f32], g: &[f32], rows: usize, d: usize) {
    let eps = 1e-5;
    let (y, stats) = rows::layer_norm_rows(&upload(x), &upload(gamma), &upload(beta), rows, d, eps).unwrap();
    let (xg, gammag) = (upload(x), upload(gamma));
    let (dx, dgamma, dbeta) = rows::layer_norm_rows_backward(&upload(g), &xg, &gammag, &stats, rows, d).unwrap();
    let (y, stats, dx, dgamma, dbeta) = (download(&y), download(&stats), download(&dx), download(&dgamma), download(&dbeta));

    let (xt, gt, bt) = (param(x, &[rows, d]), param(gamma, &[d]), param(beta, &[d]));
    let yt = xt.layer_norm(&gt, &bt, eps).unwrap();
    yt.backward_with(array(g, &[rows, d]));

    let reference = reference_stats(x, rows, d, eps);
    let xhat = |i: usize| {
        let (mu, rs) = reference[i / d];
        ((x[i] as f64 - mu) * rs) as f32
    };
    // x̂'s error beyond the sums: μ rounded to f32, in units of σ (module doc)
    let mu_rounding: Vec<f32> = reference.iter().map(|&(mu, rs)| f32::EPSILON * (mu * rs).abs() as f32).collect();
    let xhat_error = |i: usize| NORM_RELATIVE * (1.0 + xhat(i).abs()) + mu_rounding[i / d];

    let want_y = yt.to_vec();
    assert_close(&format!("layer_norm_rows y, {what}"), &y, &want_y, |i| gamma[i % d].abs() * xhat_error(i) + NORM_RELATIVE * beta[i % d].abs());
    for (r, &(mu, rs)) in reference.iter().enumerate() {
        let (got_mu, got_rs) = (stats[2 * r] as f64, stats[2 * r + 1] as f64);
        assert!((got_mu - mu).abs() <= (NORM_RELATIVE as f64 / rs) + f32::EPSILON as f64 * mu.abs(), "layer_norm_rows μ of row {r}, {what}: gpu {got_mu} vs {mu}");
        assert!((got_rs - rs).abs() <= NORM_RELATIVE as f64 * rs, "layer_norm_rows 1/σ of row {r}, {what}: gpu {got_rs} vs {rs}");
    }

    // dx = (ĝ - mean(ĝ) - x̂ mean(ĝ x̂)) / σ: its terms are of the size of max |ĝ| / σ
    let g_hat_max: Vec<f32> = (0..rows).map(|r| (0..d).map(|j| (gamma[j] * g[r * d + j]).abs()).fold(0.0, f32::max)).collect();
    let want_dx = grad_of(&xt);
    assert_close(&format!("layer_norm_rows_backward dx, {what}"), &dx, &want_dx, |i| {
        let r = i / d;
        reference[r].1 as f32 * g_hat_max[r] * 4.0 * xhat_error(i)
    });
    // dγ_c = Σ_r g x̂, dβ_c = Σ_r g: errors of the size of Σ_r |g| (|x̂| error + ...)
    let column_error = |c: usize| (0..rows).map(|r| g[r * d + c].abs() * xhat_error(r * d + c)).sum::<f32>();
    let column_size = |c: usize| (0..rows).map(|r| g[r * d + c].abs()).sum::<f32>();
    assert_close(&format!("layer_norm_rows_backward dγ, {what}"), &dgamma, &grad_of(&gt), |c| 2.0 * column_error(c));
    assert_close(&format!("layer_norm_rows_backward dβ, {what}"), &dbeta, &grad_of(&bt), |c| NORM_RELATIVE * column_size(c));
}

#[test]
fn layer_norm_rows_and_its_gradients_match_tensor_layer_norm() {
    if ctx().is_none() {
        return;
    }
    for (s, &(rows, d)) in [(5usize, 1usize), (5, 7), (5, 67), (3, 300), (300, 67)].iter().enumerate() {
        for offset in [0.0f32, 1000.0] {
            let seed = 100 + 10 * s as u64 + (offset > 0.0) as u64;
            let x: Vec<f32> = values(rows * d, seed).iter().map(|v| 2.0 * v + offset).collect();
            let gamma: Vec<f32> = values(d, seed + 1).iter().map(|v| 1.0 + 0.5 * v).collect();
            let beta = values(d, seed + 2);
            let g = values(rows * d, seed + 3);
            check_layer_norm(&format!("({rows}, {d}) + {offset}"), &x, &gamma, &beta, &g, rows, d);
        }
    }

    // no rows: empty y, stats and dx; dγ = dβ = 0 (a sum of nothing)
    let (empty, ones) = (upload(&[]), upload(&[1.0; 4]));
    let (y, stats) = rows::layer_norm_rows(&empty, &ones, &ones, 0, 4, 1e-5).unwrap();
    assert!(download(&y).is_empty() && download(&stats).is_empty());
    let (dx, dgamma, dbeta) = rows::layer_norm_rows_backward(&empty, &empty, &ones, &stats, 0, 4).unwrap();
    assert!(download(&dx).is_empty());
    assert_exact("dγ of no rows", &download(&dgamma), &[0.0; 4]);
    assert_exact("dβ of no rows", &download(&dbeta), &[0.0; 4]);
    // rows of length 0
    let (y, stats) = rows::layer_norm_rows(&empty, &empty, &empty, 3, 0, 1e-5).unwrap();
    assert!(download(&y).is_empty());
    assert_exact("stats of rows of length 0", &download(&stats), &[0.0; 6]);

    let x = upload(&[0.0; 6]);
    assert_shape_error("layer_norm_rows with 4 gammas for rows of 3", rows::layer_norm_rows(&x, &ones, &upload(&[0.0; 3]), 2, 3, 1e-5));
    assert_shape_error("layer_norm_rows_backward with stats of 3 values", rows::layer_norm_rows_backward(&x, &x, &upload(&[1.0; 3]), &upload(&[0.0; 3]), 2, 3));
}

/// `shape` as (outer, len, inner) around `axis`.
fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (shape[..axis].iter().product(), shape[axis], shape[axis + 1..].iter().product())
}

#[test]
fn narrow_and_its_gradient_match_tensor_narrow_and_chunk() {
    if ctx().is_none() {
        return;
    }
    for (s, (shape, axis)) in [(vec![2usize, 9, 3], 1usize), (vec![2, 3, 8, 5], 2), (vec![4, 7], 0), (vec![3, 10], 1)].into_iter().enumerate() {
        let (outer, len, inner) = split_at_axis(&shape, axis);
        let x = values(outer * len * inner, 200 + s as u64);
        let xg = upload(&x);
        // the start, a middle and the end of the axis
        for (start, width) in [(0, 2), (len / 2 - 1, 3), (len - 3, 3), (0, len), (len, 0)] {
            let what = format!("{shape:?} axis {axis}, {start}..{}", start + width);
            let xt = param(&x, &shape);
            let yt = xt.narrow(axis as isize, start, width).unwrap();
            let y = download(&rows::narrow(&xg, outer, len, inner, start, width).unwrap());
            assert_exact(&format!("narrow {what}"), &y, &yt.to_vec());

            let g = values(y.len(), 300 + start as u64);
            let dx = download(&rows::narrow_backward(&upload(&g), outer, len, inner, start, width).unwrap());
            if !g.is_empty() {
                yt.backward_with(array(&g, &yt.shape()));
                assert_exact(&format!("narrow_backward {what}"), &dx, &grad_of(&xt));
            } else {
                assert_exact(&format!("narrow_backward {what}"), &dx, &vec![0.0; x.len()]);
            }
        }
    }
    // chunk(3, 1) of a fused (B, 3C, T) projection is three narrows
    let (b, c, t) = (2, 4, 5);
    let x = values(b * 3 * c * t, 400);
    let pieces = Tensor::from_vec(x.clone(), &[b, 3 * c, t]).unwrap().chunk(3, 1).unwrap();
    for (i, piece) in pieces.iter().enumerate() {
        let y = download(&rows::narrow(&upload(&x), b, 3 * c, t, i * c, c).unwrap());
        assert_exact(&format!("chunk {i} of 3"), &y, &piece.to_vec());
    }

    assert_shape_error("narrow 4..7 of an axis of 6", rows::narrow(&upload(&[0.0; 12]), 2, 6, 1, 4, 3));
    assert_shape_error("narrow of 11 values as (2, 6, 1)", rows::narrow(&upload(&[0.0; 11]), 2, 6, 1, 0, 3));
    assert_shape_error("narrow_backward with g of 5 values for (2, 3, 1)", rows::narrow_backward(&upload(&[0.0; 5]), 2, 6, 1, 0, 3));
}

#[test]
fn concat2_matches_tensor_concat() {
    if ctx().is_none() {
        return;
    }
    // a key cache (B, H, T, D) growing along T by one position, and by several; an empty cache
    for (s, &(outer, len_a, len_b, inner)) in [(2 * 3, 5, 1, 4), (6, 5, 3, 4), (6, 0, 2, 4), (1, 3, 4, 1), (4, 2, 0, 3)].iter().enumerate() {
        let (a, b) = (values(outer * len_a * inner, 500 + s as u64), values(outer * len_b * inner, 600 + s as u64));
        let (at, bt) = (Tensor::from_vec(a.clone(), &[outer, len_a, inner]).unwrap(), Tensor::from_vec(b.clone(), &[outer, len_b, inner]).unwrap());
        let want = Tensor::concat(&[&at, &bt], 1).unwrap().to_vec();
        let y = download(&rows::concat2(&upload(&a), &upload(&b), outer, len_a, len_b, inner).unwrap());
        assert_exact(&format!("concat2 ({outer}, {len_a} + {len_b}, {inner})"), &y, &want);
    }
    assert_shape_error("concat2 with b of 5 values for (2, 3, 1)", rows::concat2(&upload(&[0.0; 4]), &upload(&[0.0; 5]), 2, 2, 3, 1));
}

/// masked_fill of `x (out_shape)` by `mask (mask_shape)` on the GPU against
/// `Tensor::masked_fill`, forward and gradient, both exact.
fn check_masked_fill(what: &str, out_shape: &[usize], mask: &[bool], mask_shape: &[usize], value: f32) {
    let n: usize = out_shape.iter().product();
    let x = values(n, 700 + n as u64);
    let g = values(n, 800 + n as u64);
    let mask_values: Vec<f32> = mask.iter().map(|&m| if m { 1.0 } else { 0.0 }).collect();
    let strides = broadcast_strides(mask_shape, out_shape).unwrap();
    let maskg = upload(&mask_values);

    let y = download(&rows::masked_fill(&upload(&x), out_shape, &maskg, &strides, value).unwrap());
    let dx = download(&rows::masked_fill_backward(&upload(&g), out_shape, &maskg, &strides).unwrap());

    let xt = param(&x, out_shape);
    let mask_array = ArrayD::from_shape_vec(IxDyn(mask_shape), mask.to_vec()).unwrap();
    let yt = xt.masked_fill(&mask_array, value).unwrap();
    assert_exact(&format!("masked_fill, {what}"), &y, &yt.to_vec());
    yt.backward_with(array(&g, out_shape));
    assert_exact(&format!("masked_fill_backward, {what}"), &dx, &grad_of(&xt));
    assert!(y.iter().zip(&x).any(|(a, b)| a != b) && y.iter().zip(&x).any(|(a, b)| a == b), "{what}: some values filled, some kept");
}

#[test]
fn masked_fill_broadcasts_causal_and_padding_masks_as_tensor_masked_fill() {
    if ctx().is_none() {
        return;
    }
    let (b, h, t, s) = (2, 3, 5, 7);
    // causal over a cache: query t sees keys up to s - T + t
    let causal: Vec<bool> = (0..t * s).map(|i| i % s > (i / s) + (s - t)).collect();
    assert_eq!(broadcast_strides(&[t, s], &[b, h, t, s]).unwrap(), [0, 0, s, 1]);
    check_masked_fill("causal (T, S) to (B, H, T, S), -inf", &[b, h, t, s], &causal, &[t, s], f32::NEG_INFINITY);
    check_masked_fill("causal (1, 1, T, S) to (B, H, T, S), -1e9", &[b, h, t, s], &causal, &[1, 1, t, s], -1e9);

    // padding: batch item 0 has 4 real keys, item 1 all 7
    let padding: Vec<bool> = (0..b * s).map(|i| i / s == 0 && i % s >= 4).collect();
    assert_eq!(broadcast_strides(&[b, 1, 1, s], &[b, h, t, s]).unwrap(), [s, 0, 0, 1]);
    check_masked_fill("padding (B, 1, 1, S) to (B, H, T, S), -inf", &[b, h, t, s], &padding, &[b, 1, 1, s], f32::NEG_INFINITY);
    // the same mask on every axis of an 8-axis array
    let full: Vec<bool> = values(2 * 3 * 2 * 2 * 2 * 3 * 2 * 2, 900).iter().map(|&v| v > 0.3).collect();
    let eight = [2, 3, 2, 2, 2, 3, 2, 2];
    check_masked_fill("8 axes, no broadcast, 0.5", &eight, &full, &eight, 0.5);

    let (x, mask) = (upload(&[0.0; 70]), upload(&[0.0; 10]));
    assert!(download(&rows::masked_fill(&upload(&[]), &[2, 0, 7], &mask, &[0, 7, 1], 1.0).unwrap()).is_empty());
    assert_shape_error("broadcast_strides of (3, 7) to (2, 5, 7)", broadcast_strides(&[3, 7], &[2, 5, 7]));
    assert_shape_error("masked_fill with 2 strides for 3 axes", rows::masked_fill(&x, &[2, 5, 7], &mask, &[7, 1], 1.0));
    assert_shape_error("masked_fill reading a mask of 10 values as (5, 7)", rows::masked_fill(&x, &[2, 5, 7], &mask, &[0, 7, 1], 1.0));
    assert_shape_error("masked_fill of 70 values as (2, 5, 6)", rows::masked_fill(&x, &[2, 5, 6], &mask, &[0, 0, 1], 1.0));
    assert_shape_error("masked_fill with 9 axes", rows::masked_fill(&upload(&[0.0]), &[1; 9], &mask, &[0; 9], 1.0));
}
