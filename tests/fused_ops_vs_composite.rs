//! The fused, vectorised layer_norm, group_norm, softmax, linear and multi-head (self-)attention against the same
//! formulas written from elementary ops (mean, var, exp, sum), whose values
//! and gradients come from the generic autograd: values and every gradient
//! must agree to 1e-5 (f32 rounding of sums over at most a few thousand terms).
//! Sizes are large enough to take the parallel paths (>= 2^15 elements).

use dalle::{Rng, Tensor};

fn assert_close(a: &ndarray::ArrayD<f32>, b: &ndarray::ArrayD<f32>, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}: shapes");
    for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
        assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()) + 1e-5, "{what}[{i}]: fused {x}, composite {y}");
    }
}

/// Run `f` on fresh parameter copies of `inputs`, backpropagate `dy`, return (output, grads).
fn run(f: &dyn Fn(&[Tensor]) -> Tensor, inputs: &[ndarray::ArrayD<f32>], dy: &ndarray::ArrayD<f32>) -> (ndarray::ArrayD<f32>, Vec<ndarray::ArrayD<f32>>) {
    let ts: Vec<Tensor> = inputs.iter().map(|a| Tensor::param(a.clone())).collect();
    let y = f(&ts);
    y.backward_with(dy.clone());
    (y.to_array(), ts.iter().map(|t| t.grad().expect("every input gets a gradient")).collect())
}

fn compare(fused: &dyn Fn(&[Tensor]) -> Tensor, composite: &dyn Fn(&[Tensor]) -> Tensor, inputs: &[ndarray::ArrayD<f32>], out_shape: &[usize], what: &str) {
    let dy = Rng::new(9).normal_array(out_shape);
    let (y1, g1) = run(fused, inputs, &dy);
    let (y2, g2) = run(composite, inputs, &dy);
    assert_close(&y1, &y2, &format!("{what} value"));
    for (i, (a, b)) in g1.iter().zip(&g2).enumerate() {
        assert_close(a, b, &format!("{what} grad of input {i}"));
    }
}

#[test]
fn layer_norm_matches_composite() {
    let mut rng = Rng::new(1);
    let (b, t, c) = (8, 37, 130); // C not a multiple of the 8 lanes
    let x = rng.normal_array(&[b, t, c]) * 3.0 + 1.5;
    let g = rng.normal_array(&[c]);
    let beta = rng.normal_array(&[c]);
    let fused = |v: &[Tensor]| v[0].layer_norm(&v[1], &v[2], 1e-5).unwrap();
    let composite = |v: &[Tensor]| {
        // y = (x - μ) / √(σ² + ε) · γ + β
        let mu = v[0].mean_axes(&[-1], true).unwrap();
        let var = v[0].var_axes(&[-1], false, true).unwrap();
        let xhat = v[0].sub(&mu).unwrap().div(&var.add_scalar(1e-5).sqrt()).unwrap();
        xhat.mul(&v[1]).unwrap().add(&v[2]).unwrap()
    };
    compare(&fused, &composite, &[x, g, beta], &[b, t, c], "layer_norm");
}

#[test]
fn group_norm_matches_composite() {
    let mut rng = Rng::new(2);
    let (n, c, h, w, groups) = (4, 12, 13, 11, 3);
    let x = rng.normal_array(&[n, c, h, w]) - 0.7;
    let g = rng.normal_array(&[c]);
    let beta = rng.normal_array(&[c]);
    let fused = |v: &[Tensor]| v[0].group_norm(groups, &v[1], &v[2], 1e-5).unwrap();
    let composite = |v: &[Tensor]| {
        let xs = v[0].reshape(&[n as isize, groups as isize, -1]).unwrap();
        let mu = xs.mean_axes(&[-1], true).unwrap();
        let var = xs.var_axes(&[-1], false, true).unwrap();
        let xhat = xs.sub(&mu).unwrap().div(&var.add_scalar(1e-5).sqrt()).unwrap();
        let xhat = xhat.reshape(&[n as isize, c as isize, h as isize, w as isize]).unwrap();
        let p = |t: &Tensor| t.reshape(&[1, c as isize, 1, 1]).unwrap();
        xhat.mul(&p(&v[1])).unwrap().add(&p(&v[2])).unwrap()
    };
    compare(&fused, &composite, &[x, g, beta], &[n, c, h, w], "group_norm");
}

#[test]
fn softmax_and_log_softmax_on_last_and_middle_axes_match_composite() {
    let mut rng = Rng::new(3);
    let shape = [6, 4, 33, 50];
    let x = rng.normal_array(&shape) * 4.0;
    for axis in [-1isize, 1] {
        let fused = move |v: &[Tensor]| v[0].softmax(axis);
        let composite = move |v: &[Tensor]| {
            // e^{x - max} / Σ e^{x - max}, with the max as a constant (it cancels in the ratio)
            let m = Tensor::new(v[0].detach().max_axis(axis, true).unwrap().to_array());
            let e = v[0].sub(&m).unwrap().exp();
            e.div(&e.sum_axes(&[axis], true).unwrap()).unwrap()
        };
        compare(&fused, &composite, &[x.clone()], &shape, &format!("softmax(axis {axis})"));
        let fused = move |v: &[Tensor]| v[0].log_softmax(axis);
        let composite = move |v: &[Tensor]| {
            // x - max - ln Σ e^{x - max}
            let m = Tensor::new(v[0].detach().max_axis(axis, true).unwrap().to_array());
            let shifted = v[0].sub(&m).unwrap();
            shifted.sub(&shifted.exp().sum_axes(&[axis], true).unwrap().log()).unwrap()
        };
        compare(&fused, &composite, &[x.clone()], &shape, &format!("log_softmax(axis {axis})"));
    }
}

/// The worst distance of `erf::<M>` from the f64 series at x = -6..6 in steps of 1e-3.
#[inline(always)] // into `simd_as`'s compiled copy, where `Fused` is one instruction
fn erf_error<M: dalle::ops::kernels::MulAdd>() -> f64 {
    // Reference: the same Numerical Recipes erfcc series in f64 (fractional error 1.2e-7),
    // checked where GELU's inputs live.
    let erf64 = |x: f64| {
        let z = x.abs();
        let t = 1.0 / (1.0 + 0.5 * z);
        let p = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
        let r = 1.0 - t * p.exp();
        if x >= 0.0 { r } else { -r }
    };
    let mut worst = 0.0f64;
    for i in -6000..=6000 {
        let x = i as f32 * 1e-3;
        worst = worst.max((dalle::ops::kernels::erf::<M>(x) as f64 - erf64(x as f64)).abs());
    }
    // erf(1) = 0.8427007929497149 (a table value), erf(-x) = -erf(x), erf(0) = 0 (within the series error).
    assert!((dalle::ops::kernels::erf::<M>(1.0) - 0.842_700_8).abs() < 3e-7);
    assert_eq!(dalle::ops::kernels::erf::<M>(-0.5), -dalle::ops::kernels::erf::<M>(0.5));
    assert!(dalle::ops::kernels::erf::<M>(0.0).abs() < 3e-7);
    worst
}

/// The worst relative distance of `exp::<M>` from libm's over the whole finite
/// range where e^x is a normal f32, and its edges.
#[inline(always)]
fn exp_error<M: dalle::ops::kernels::MulAdd>() -> f64 {
    let mut worst = 0.0f64;
    let mut x = -87.0f32;
    while x < 88.3 {
        let (got, want) = (dalle::ops::kernels::exp::<M>(x) as f64, (x as f64).exp());
        worst = worst.max((got - want).abs() / want);
        x += 0.001_7;
    }
    assert_eq!(dalle::ops::kernels::exp::<M>(f32::NEG_INFINITY), 0.0, "masked logits must give exactly 0");
    assert_eq!(dalle::ops::kernels::exp::<M>(0.0), 1.0);
    assert!(dalle::ops::kernels::exp::<M>(f32::NAN).is_nan());
    worst
}

/// The worst relative distance of `ln_1p_unit::<M>` from f64's `ln_1p` on `[0, 1]`
/// (what softplus(-|x|) passes it, u = e^{-|x|}), densely, ends included.
#[inline(always)]
fn ln_1p_error<M: dalle::ops::kernels::MulAdd>() -> f64 {
    let mut worst = 0.0f64;
    for i in 0..=200_000 {
        let u = i as f32 / 200_000.0;
        let (got, want) = (dalle::ops::kernels::ln_1p_unit::<M>(u) as f64, (u as f64).ln_1p());
        worst = worst.max((got - want).abs() / want.max(f64::MIN_POSITIVE));
    }
    assert_eq!(dalle::ops::kernels::ln_1p_unit::<M>(0.0), 0.0);
    worst
}

/// `$error::<M>()` below `$bound` for the plain multiply-adds and, where this tier has
/// FMA, the fused ones (each run inside the tier's compiled copy, where `Fused` is one instruction).
macro_rules! below_for_both_mul_adds {
    ($what:expr, $error:ident, $bound:expr) => {{
        use dalle::ops::kernels::{simd_as, Fused, Plain};
        let plain = simd_as::<Plain, _>(#[inline(always)] || $error::<Plain>());
        assert!(plain < $bound, "{} (plain multiply-adds): error {plain}", $what);
        if dalle::backend::cpu::tier::tier().fused() {
            let fused = simd_as::<Fused, _>(#[inline(always)] || $error::<Fused>());
            assert!(fused < $bound, "{} (fused multiply-adds): error {fused}", $what);
        }
    }};
}

#[test]
fn arithmetic_ln_1p_is_within_3e_7_relative_of_f64() {
    below_for_both_mul_adds!("ln_1p_unit, relative to f64", ln_1p_error, 3e-7);
}

#[test]
fn f32_erf_stays_within_3e_7_of_f64_reference() {
    // Fused multiply-adds round once per Horner step, the plain ones twice: the
    // bound holds for both (the series itself is good to 1.2e-7).
    below_for_both_mul_adds!("f32 erf, from the f64 series", erf_error, 3e-7);
}

#[test]
fn arithmetic_exp_is_within_3e_7_relative_of_libm() {
    below_for_both_mul_adds!("exp, relative to libm", exp_error, 3e-7);
}

#[test]
fn linear_matches_matmul_t_plus_bias() {
    // K = 300 spans two k blocks of the packed GEMM, so the bias is added before the
    // second block's sum (a different rounding order than `matmul_t` then `add`).
    let mut rng = Rng::new(4);
    let (b, t, k, n) = (4, 33, 300, 70);
    let inputs = [rng.normal_array(&[b, t, k]), rng.normal_array(&[n, k]) * 0.1, rng.normal_array(&[n])];
    compare(&|t| t[0].linear(&t[1], Some(&t[2])).unwrap(), &|t| t[0].matmul_t(&t[1]).unwrap().add(&t[2]).unwrap(), &inputs, &[b, t, n], "linear");
}

#[test]
fn multi_head_attention_matches_split_sdpa_merge() {
    use dalle::nn::attention::{causal_mask, scaled_dot_product_attention};
    // (B, T, C) with 4 heads of 8; S = T for the causal case, S != T (a padding-like
    // mask on the keys, broadcast over heads and queries) for cross-attention.
    let (b, t, s, heads, d) = (6, 13, 9, 4, 8);
    let c = heads * d;
    let composite = |mask: Option<ndarray::ArrayD<bool>>| {
        move |v: &[Tensor]| {
            let split = |x: &Tensor| x.reshape(&[b as isize, x.dim(1) as isize, heads as isize, d as isize]).unwrap().transpose(1, 2); // (B, H, T, D)
            let (y, _) = scaled_dot_product_attention(&split(&v[0]), &split(&v[1]), &split(&v[2]), mask.as_ref()).unwrap();
            y.transpose(1, 2).reshape(&[b as isize, v[0].dim(1) as isize, c as isize]).unwrap() // (B, T, C)
        }
    };
    let mut rng = Rng::new(21);
    let causal = causal_mask(t, t);
    let x = [rng.normal_array(&[b, t, c]), rng.normal_array(&[b, t, c]), rng.normal_array(&[b, t, c])];
    let fused = |v: &[Tensor]| Tensor::multi_head_attention(&v[0], &v[1], &v[2], heads, Some(&causal)).unwrap();
    compare(&fused, &composite(Some(causal.clone())), &x, &[b, t, c], "multi_head_attention, causal");

    let padding = ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&[b, 1, 1, s]), |ix| ix[3] >= s - ix[0] % 3);
    let x = [rng.normal_array(&[b, t, c]), rng.normal_array(&[b, s, c]), rng.normal_array(&[b, s, c])];
    let fused = |v: &[Tensor]| Tensor::multi_head_attention(&v[0], &v[1], &v[2], heads, Some(&padding)).unwrap();
    compare(&fused, &composite(Some(padding.clone())), &x, &[b, t, c], "multi_head_attention, keys padded");
    let fused = |v: &[Tensor]| Tensor::multi_head_attention(&v[0], &v[1], &v[2], heads, None).unwrap();
    compare(&fused, &composite(None), &x, &[b, t, c], "multi_head_attention, no mask");

    let bad = Tensor::multi_head_attention(&Tensor::new(x[0].clone()), &Tensor::new(x[1].clone()), &Tensor::new(x[2].clone()), 5, None);
    assert!(bad.unwrap_err().to_string().contains("5 heads"), "C = 32 into 5 heads must be refused, naming the count");
}

#[test]
fn multi_head_self_attention_matches_chunk_split_sdpa_merge() {
    use dalle::nn::attention::{causal_mask, scaled_dot_product_attention};
    // qkv (B, T, 3C) with 3 heads of 5 (D odd, C = 15 not a multiple of the lanes): the
    // fused op reads Q, K, V at channels 0, C, 2C with row stride 3C, and writes dQ, dK,
    // dV into one (B, T, 3C) gradient. A causal mask, a per-item padding mask, none.
    let (b, t, heads, d) = (5, 11, 3, 5);
    let c = heads * d;
    let composite = |mask: Option<ndarray::ArrayD<bool>>| {
        move |v: &[Tensor]| {
            let parts = v[0].chunk(3, -1).unwrap(); // 3 x (B, T, C)
            let split = |x: &Tensor| x.reshape(&[b as isize, t as isize, heads as isize, d as isize]).unwrap().transpose(1, 2); // (B, H, T, D)
            let (y, w) = scaled_dot_product_attention(&split(&parts[0]), &split(&parts[1]), &split(&parts[2]), mask.as_ref()).unwrap();
            (y.transpose(1, 2).reshape(&[b as isize, t as isize, c as isize]).unwrap(), w) // (B, T, C), (B, H, T, T)
        }
    };
    let mut rng = Rng::new(22);
    let causal = causal_mask(t, t);
    let padding = ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&[b, 1, 1, t]), |ix| ix[3] >= t - ix[0] % 4);
    for (mask, what) in [(Some(causal), "causal"), (Some(padding), "keys padded"), (None, "no mask")] {
        let x = [rng.normal_array(&[b, t, 3 * c]) * 1.5];
        let reference = composite(mask.clone());
        let fused = |v: &[Tensor]| Tensor::multi_head_self_attention(&v[0], heads, mask.as_ref()).unwrap().0;
        compare(&fused, &|v: &[Tensor]| reference(v).0, &x, &[b, t, c], &format!("multi_head_self_attention, {what}"));
        // The weights, a tensor outside the graph: the composite's softmax, (B, H, T, T).
        let (_, w1) = Tensor::multi_head_self_attention(&Tensor::new(x[0].clone()), heads, mask.as_ref()).unwrap();
        let (_, w2) = reference(&[Tensor::new(x[0].clone())]);
        assert_close(&w1.to_array(), &w2.to_array(), &format!("multi_head_self_attention, {what}: weights"));
        assert!(!w1.requires_grad(), "the weights are for plots, outside the graph");
    }
    let bad = Tensor::multi_head_self_attention(&Tensor::zeros(&[2, 3, 3 * c]), 4, None).unwrap_err().to_string();
    assert!(bad.contains("4 heads") && bad.contains("[2, 3, 45]"), "C = 15 into 4 heads must be refused, naming the shape and count: {bad}");
    let bad = Tensor::multi_head_self_attention(&Tensor::zeros(&[2, 3, 16]), 2, None).unwrap_err().to_string();
    assert!(bad.contains("(B, T, 3C)"), "a width that is not 3C must be refused: {bad}");
    let bad = Tensor::multi_head_self_attention(&Tensor::zeros(&[2, 3, 3 * c]), heads, Some(&causal_mask(4, 4))).unwrap_err().to_string();
    assert!(bad.contains("mask [4, 4]"), "a mask of the wrong size must be refused, naming its shape: {bad}");
}

#[test]
fn multi_head_attention_layer_fused_matches_composed() {
    // MultiHeadAttention::forward (the fused op) against forward_composed (chapter 01's
    // split, sdpa, merge): output, weights and the gradients of x and of all four parameters.
    use dalle::nn::attention::causal_mask;
    use dalle::nn::{Module, MultiHeadAttention};
    let (b, t, c, heads) = (3, 9, 24, 4);
    let mut rng = Rng::new(23);
    let layer = MultiHeadAttention::new(c, heads, true, &mut rng).unwrap();
    let x = rng.normal_array(&[b, t, c]);
    let dy = rng.normal_array(&[b, t, c]);
    let mask = causal_mask(t, t);
    let run = |fused: bool| {
        layer.parameters().iter().for_each(|p| p.zero_grad());
        let xt = Tensor::param(x.clone());
        let (y, w) = if fused { layer.forward(&xt, Some(&mask)) } else { layer.forward_composed(&xt, Some(&mask)) }.unwrap();
        y.backward_with(dy.clone());
        let grads: Vec<_> = std::iter::once(xt.grad().unwrap()).chain(layer.parameters().iter().map(|p| p.grad().unwrap())).collect();
        (y.to_array(), w.to_array(), grads)
    };
    let (y1, w1, g1) = run(true);
    let (y2, w2, g2) = run(false);
    assert_close(&y1, &y2, "attention layer output");
    assert_close(&w1, &w2, "attention layer weights");
    assert_eq!(g1.len(), 5, "x and qkv.weight, qkv.bias, proj.weight, proj.bias");
    for (i, (a, b)) in g1.iter().zip(&g2).enumerate() {
        assert_close(a, b, &format!("attention layer grad {i}"));
    }
}

#[test]
fn group_norm_silu_matches_group_norm_then_silu() {
    // (N, C, H, W) = (4, 16, 24, 24): 8 groups of 2 channels, 147 456 values (parallel paths);
    // γ, β away from 1, 0 so that the affine sits inside SiLU's derivative.
    let (n, c, h, w, groups) = (4, 16, 24, 24, 8);
    let mut rng = Rng::new(31);
    let x = rng.normal_array(&[n, c, h, w]) * 2.0 + 0.5;
    let (g, beta) = (rng.normal_array(&[c]) * 0.5 + 1.0, rng.normal_array(&[c]));
    let fused = |v: &[Tensor]| v[0].group_norm_silu(groups, &v[1], &v[2], 1e-5).unwrap();
    let composite = |v: &[Tensor]| v[0].group_norm(groups, &v[1], &v[2], 1e-5).unwrap().silu();
    compare(&fused, &composite, &[x, g, beta], &[n, c, h, w], "group_norm_silu");
}
