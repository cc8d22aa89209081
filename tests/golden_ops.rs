//! Every op against PyTorch 2.5.1: forward values and input gradients.
//!
//! `tests/golden/make_ops_golden.py` ran each case in PyTorch and stored, in
//! `tests/golden/ops.safetensors`, the inputs `NAME.x{i}`, the output
//! `NAME.out`, a random upstream gradient `NAME.gout` and the gradients
//! `NAME.dx{i}` of `sum(out * gout)`. Here the same inputs go through our op;
//! the PyTorch one-liner of each case is pasted above it.
//!
//! Tolerances, `|ours - torch| <= abs + rel · |torch|` per element:
//! - [`ELEMENTWISE`] 1e-5 + 1e-5: one rounding per op, plus libm vs SLEEF
//!   differences of a few ulps (1 ulp = 6e-8 relative) in exp, tanh, erf.
//! - [`REDUCE`] 1e-5 + 1e-4: sums of up to 60 terms in another order carry
//!   about `n · ε · max|x|` ≈ 1e-5 of rounding, and softmax/var divide by sums.
//! - [`GEMM`] 1e-4 + 1e-4: dot products of K ≤ 64 terms, accumulated in a
//!   different order (blocked micro-kernels vs MKL/oneDNN), differ by about
//!   `√K · ε · Σ|aᵢbᵢ|` ≈ 8 · 6e-8 · 40 ≈ 2e-5; conv2d's im2col GEMM likewise.
//! - [`NORM`] 1e-4 + 1e-4: normalisation divides by σ, which amplifies the
//!   rounding of the centred values.

mod common;

use common::Golden;
use dalle::{Result, Tensor};
use ndarray::{ArrayD, IxDyn};
use std::sync::OnceLock;

#[derive(Clone, Copy, Debug)]
struct Tol {
    abs: f32,
    rel: f32,
}
const ELEMENTWISE: Tol = Tol { abs: 1e-5, rel: 1e-5 };
const REDUCE: Tol = Tol { abs: 1e-5, rel: 1e-4 };
const GEMM: Tol = Tol { abs: 1e-4, rel: 1e-4 };
const NORM: Tol = Tol { abs: 1e-4, rel: 1e-4 };

fn golden() -> &'static Golden {
    static FILE: OnceLock<Golden> = OnceLock::new();
    FILE.get_or_init(|| Golden::load("ops.safetensors"))
}

fn has(key: &str) -> bool {
    golden().has(key)
}

fn f32s(key: &str) -> ArrayD<f32> {
    golden().f32s(key)
}

fn indices(key: &str) -> ArrayD<usize> {
    golden().indices(key)
}

fn flat(key: &str) -> Vec<usize> {
    golden().flat(key)
}

fn mask(key: &str) -> ArrayD<bool> {
    golden().mask(key)
}

fn assert_close(what: &str, ours: &ArrayD<f32>, torch: &ArrayD<f32>, tol: Tol) {
    assert_eq!(ours.shape(), torch.shape(), "{what}: shape");
    let mut worst = (0.0f32, 0, 0.0f32, 0.0f32);
    for (i, (&a, &b)) in ours.iter().zip(torch.iter()).enumerate() {
        let excess = (a - b).abs() - (tol.abs + tol.rel * b.abs());
        if !(excess <= worst.0) {
            worst = (if excess.is_nan() { f32::INFINITY } else { excess }, i, a, b);
        }
    }
    assert!(worst.0 <= 0.0, "{what}: element {} is {} here, {} in PyTorch (tolerance {tol:?})", worst.1, worst.2, worst.3);
}

/// Run case `name`: inputs `name.x*` as parameters through `f`, compare the
/// output and, after `backward_with(name.gout)`, every stored `name.dx*`.
fn case(name: &str, tol: Tol, f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    let inputs: Vec<Tensor> = (0..).map(|i| format!("{name}.x{i}")).take_while(|k| has(k)).map(|k| Tensor::param(f32s(&k))).collect();
    assert!(!inputs.is_empty(), "{name}: no inputs in the golden file");
    let out = f(&inputs).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_close(&format!("{name} forward"), &out.to_array(), &f32s(&format!("{name}.out")), tol);
    let gout_key = format!("{name}.gout");
    if !has(&gout_key) {
        return;
    }
    out.backward_with(f32s(&gout_key));
    for (i, x) in inputs.iter().enumerate() {
        let key = format!("{name}.dx{i}");
        if has(&key) {
            let g = x.grad().unwrap_or_else(|| panic!("{name}: no gradient reached input {i}"));
            assert_close(&format!("{name} gradient of input {i}"), &g, &f32s(&key), tol);
        }
    }
}

#[test]
fn elementwise() {
    // a + b, a (2,3,4), b (3,1)
    case("add", ELEMENTWISE, |x| x[0].add(&x[1]));
    // a - b, a (4), b (2,1,4)
    case("sub", ELEMENTWISE, |x| x[0].sub(&x[1]));
    // a * b, a (2,3,4), b (4)
    case("mul", ELEMENTWISE, |x| x[0].mul(&x[1]));
    // a / b, a (3,4), b (1,4)
    case("div", ELEMENTWISE, |x| x[0].div(&x[1]));
    // torch.maximum(a, b), a (3,4), b (4), no ties
    case("maximum", ELEMENTWISE, |x| x[0].maximum(&x[1]));
    // torch.maximum(a, b) with ties: PyTorch gives each side half the gradient
    case("maximum_ties", ELEMENTWISE, |x| x[0].maximum(&x[1]));
    // x + 0.7
    case("add_scalar", ELEMENTWISE, |x| Ok(x[0].add_scalar(0.7)));
    // x * -2.5
    case("scale", ELEMENTWISE, |x| Ok(x[0].scale(-2.5)));
    // -x
    case("neg", ELEMENTWISE, |x| Ok(x[0].neg()));
    // x ** 3
    case("pow3", ELEMENTWISE, |x| Ok(x[0].pow(3.0)));
    // x ** 0.5
    case("pow_half", ELEMENTWISE, |x| Ok(x[0].pow(0.5)));
    // x ** 0.0 at x = 0: PyTorch's gradient is 0, not 0 · 0⁻¹
    case("pow_zero", ELEMENTWISE, |x| Ok(x[0].pow(0.0)));
    // torch.square(x)
    case("square", ELEMENTWISE, |x| Ok(x[0].square()));
    // torch.sqrt(x)
    case("sqrt", ELEMENTWISE, |x| Ok(x[0].sqrt()));
    // torch.exp(x)
    case("exp", ELEMENTWISE, |x| Ok(x[0].exp()));
    // torch.log(x)
    case("log", ELEMENTWISE, |x| Ok(x[0].log()));
    // torch.abs(x), |x| >= 0.1
    case("abs", ELEMENTWISE, |x| Ok(x[0].abs()));
    // torch.clamp(x, -0.5, 0.8)
    case("clamp", ELEMENTWISE, |x| Ok(x[0].clamp(-0.5, 0.8)));
    // torch.tanh(x)
    case("tanh", ELEMENTWISE, |x| Ok(x[0].tanh()));
    // torch.sigmoid(x)
    case("sigmoid", ELEMENTWISE, |x| Ok(x[0].sigmoid()));
    // torch.relu(x), |x| >= 0.1
    case("relu", ELEMENTWISE, |x| Ok(x[0].relu()));
    // F.gelu(x)
    case("gelu", ELEMENTWISE, |x| Ok(x[0].gelu()));
    // F.gelu(x, approximate="tanh")
    case("gelu_tanh", ELEMENTWISE, |x| Ok(x[0].gelu_tanh()));
    // F.silu(x)
    case("silu", ELEMENTWISE, |x| Ok(x[0].silu()));
    // x * torch.sigmoid(1.702 * x)
    case("quick_gelu", ELEMENTWISE, |x| Ok(x[0].quick_gelu()));
}

#[test]
fn reductions() {
    // x.sum(dim=(0, 2))
    case("sum_axes", REDUCE, |x| x[0].sum_axes(&[0, 2], false));
    // x.sum(dim=(0, 2), keepdim=True)
    case("sum_axes_keepdim", REDUCE, |x| x[0].sum_axes(&[0, 2], true));
    // x.mean(dim=-1)
    case("mean_axes", REDUCE, |x| x[0].mean_axes(&[-1], false));
    // x.mean(dim=(1, 2), keepdim=True)
    case("mean_axes_keepdim", REDUCE, |x| x[0].mean_axes(&[1, 2], true));
    // x.amax(dim=1)
    case("max_axis", REDUCE, |x| x[0].max_axis(1, false));
    // x.amax(dim=-1, keepdim=True)
    case("max_axis_keepdim", REDUCE, |x| x[0].max_axis(-1, true));
    // x.amax(dim=1) with ties: the gradient is shared equally by the tied maxima
    case("max_axis_ties", REDUCE, |x| x[0].max_axis(1, false));
    // x.var(dim=(1, 2), unbiased=True)
    case("var_unbiased", REDUCE, |x| x[0].var_axes(&[1, 2], true, false));
    // x.var(dim=-1, unbiased=False, keepdim=True)
    case("var_biased_keepdim", REDUCE, |x| x[0].var_axes(&[-1], false, true));
    // F.softmax(x, dim=0)
    case("softmax0", REDUCE, |x| Ok(x[0].softmax(0)));
    // F.softmax(x, dim=-1)
    case("softmax_last", REDUCE, |x| Ok(x[0].softmax(-1)));
    // F.log_softmax(x, dim=1)
    case("log_softmax1", REDUCE, |x| Ok(x[0].log_softmax(1)));
    // F.log_softmax(x, dim=-1)
    case("log_softmax_last", REDUCE, |x| Ok(x[0].log_softmax(-1)));
}

#[test]
fn matmul() {
    // a @ b, (5,7) x (7,3)
    case("matmul_2d", GEMM, |x| x[0].matmul(&x[1]));
    // a @ b, (2,3,5,7) x (2,3,7,4)
    case("matmul_nd", GEMM, |x| x[0].matmul(&x[1]));
    // a @ b, (2,1,5,7) x (3,7,4): broadcast batch
    case("matmul_bcast", GEMM, |x| x[0].matmul(&x[1]));
    // a @ b, (2,5,7) x (7,4): the folded (B·T, K) path
    case("matmul_fold", GEMM, |x| x[0].matmul(&x[1]));
    // a @ b, (4,64) x (64,3)
    case("matmul_k64", GEMM, |x| x[0].matmul(&x[1]));
    // a.mT @ b, a (7,5)
    case("matmul_at", GEMM, |x| x[0].t().matmul(&x[1]));
    // a @ b.mT, a (2,5,7), b (4,7)
    case("matmul_bt", GEMM, |x| x[0].matmul(&x[1].t()));
    // a.permute(1, 0, 2) @ b, a (5,2,7)
    case("matmul_permuted", GEMM, |x| x[0].permute(&[1, 0, 2])?.matmul(&x[1]));
    // a @ b.transpose(-1, -2), a (2,5,7), b (4,7)
    case("matmul_t", GEMM, |x| x[0].matmul_t(&x[1]));
    // a @ b.transpose(-1, -2), a (2,5,7), b (2,4,7)
    case("matmul_t_batched", GEMM, |x| x[0].matmul_t(&x[1]));
}

#[test]
fn moving_elements() {
    // x.reshape(4, -1)
    case("reshape", ELEMENTWISE, |x| x[0].reshape(&[4, -1]));
    // x.permute(2, 0, 1)
    case("permute", ELEMENTWISE, |x| x[0].permute(&[2, 0, 1]));
    // x.transpose(0, 2)
    case("transpose", ELEMENTWISE, |x| Ok(x[0].transpose(0, 2)));
    // x.transpose(0, 1).contiguous()
    case("contiguous", ELEMENTWISE, |x| Ok(x[0].transpose(0, 1).contiguous()));
    // x.narrow(2, 1, 2)
    case("narrow", ELEMENTWISE, |x| x[0].narrow(2, 1, 2));
    // x.chunk(3, 1)[1]
    case("chunk", ELEMENTWISE, |x| Ok(x[0].chunk(3, 1)?[1].clone()));
    // torch.cat([a, b, c], 1)
    case("concat", ELEMENTWISE, |x| Tensor::concat(&[&x[0], &x[1], &x[2]], 1));
    // torch.stack([a, b], 1)
    case("stack", ELEMENTWISE, |x| Tensor::stack(&[&x[0], &x[1]], 1));
    // x.expand(2, 3, 4), x (3,1)
    case("broadcast_to", ELEMENTWISE, |x| x[0].broadcast_to(&[2, 3, 4]));
    // x.unsqueeze(1)
    case("unsqueeze", ELEMENTWISE, |x| Ok(x[0].unsqueeze(1)));
    // x.squeeze(1)
    case("squeeze", ELEMENTWISE, |x| x[0].squeeze(1));
}

#[test]
fn indexing() {
    // x.index_select(0, idx), idx = [3, 1, 3, 0]
    case("index_select", ELEMENTWISE, |x| x[0].index_select(0, &flat("index_select.idx")));
    // F.embedding(ids, w), ids (2,3)
    case("embedding", ELEMENTWISE, |x| Tensor::embedding(&x[0], &flat("embedding.ids"), &[2, 3]));
    // torch.gather(x, 1, idx)
    case("gather", ELEMENTWISE, |x| x[0].gather(1, &indices("gather.idx")));
    // x.masked_fill(mask, -3.0), mask (3,1)
    case("masked_fill", ELEMENTWISE, |x| x[0].masked_fill(&mask("masked_fill.mask"), -3.0));
    // torch.where(cond, a, b), cond (2,1,3), a (4,3), b (2,1,1)
    case("where", ELEMENTWISE, |x| Tensor::where_(&mask("where.cond"), &x[0], &x[1]));
}

#[test]
fn convolution_and_pooling() {
    // F.conv2d(x, w, b, stride=1, padding=0), x (2,3,6,5), w (4,3,3,3)
    case("conv_s1_p0_bias", GEMM, |x| x[0].conv2d(&x[1], Some(&x[2]), 1, 0));
    // F.conv2d(x, w, b, stride=2, padding=1), x (2,3,7,5)
    case("conv_s2_p1_bias_odd", GEMM, |x| x[0].conv2d(&x[1], Some(&x[2]), 2, 1));
    // F.conv2d(x, w, None, stride=1, padding=1), x (1,5,5,5), w (6,5,3,3)
    case("conv_s1_p1_nobias", GEMM, |x| x[0].conv2d(&x[1], None, 1, 1));
    // F.conv2d(x, w, b), w (5,6,1,1): the pointwise path
    case("conv_pointwise", GEMM, |x| x[0].conv2d(&x[1], Some(&x[2]), 1, 0));
    // F.conv2d(x, w, None, stride=2, padding=1), w (3,2,4,4): the VQ-VAE downsampler
    case("conv_4x4_s2_p1", GEMM, |x| x[0].conv2d(&x[1], None, 2, 1));
    // F.interpolate(x, scale_factor=2, mode="nearest")
    case("upsample", ELEMENTWISE, |x| x[0].upsample_nearest2d(2));
    // F.avg_pool2d(x, 2, 2)
    case("avg_pool", ELEMENTWISE, |x| x[0].avg_pool2d(2, 2));
    // F.avg_pool2d(x, 3, 2), x (1,2,7,5)
    case("avg_pool_k3s2_odd", ELEMENTWISE, |x| x[0].avg_pool2d(3, 2));
    // F.max_pool2d(x, 2, 2)
    case("max_pool", ELEMENTWISE, |x| x[0].max_pool2d(2, 2));
    // F.max_pool2d(x, 3, 2), x (1,2,7,5)
    case("max_pool_k3s2_odd", ELEMENTWISE, |x| x[0].max_pool2d(3, 2));
}

#[test]
fn normalisation() {
    // F.layer_norm(x, (8,), g, b, 1e-5), x (2,3,8)
    case("layer_norm", NORM, |x| x[0].layer_norm(&x[1], &x[2], 1e-5));
    // F.group_norm(x, 2, g, b, 1e-5), x (2,4,3,3)
    case("group_norm", NORM, |x| x[0].group_norm(2, &x[1], &x[2], 1e-5));
}

#[test]
fn losses_and_similarities() {
    // F.cross_entropy(x, t)
    case("cross_entropy", REDUCE, |x| x[0].cross_entropy(&flat("cross_entropy.t")));
    // F.cross_entropy(x, t, ignore_index=5)
    case("cross_entropy_ignore", REDUCE, |x| x[0].cross_entropy_with(&flat("cross_entropy_ignore.t"), Some(5), 0.0));
    // F.cross_entropy(x, t, label_smoothing=0.1)
    case("cross_entropy_smooth", REDUCE, |x| x[0].cross_entropy_with(&flat("cross_entropy_smooth.t"), None, 0.1));
    // F.cross_entropy(x, t, ignore_index=2, label_smoothing=0.2)
    case("cross_entropy_ignore_smooth", REDUCE, |x| x[0].cross_entropy_with(&flat("cross_entropy_ignore_smooth.t"), Some(2), 0.2));
    // F.mse_loss(a, b)
    case("mse", REDUCE, |x| x[0].mse(&x[1]));
    // F.binary_cross_entropy_with_logits(x, y), gradient to both
    case("bce_with_logits", REDUCE, |x| x[0].bce_with_logits(&x[1]));
    // F.normalize(x, dim=-1, eps=1e-12)
    case("l2_normalize", REDUCE, |x| x[0].l2_normalize(-1, 1e-12));
    // F.normalize(x, dim=0, eps=1e-6), the last column all zeros: gradient g / eps, not NaN
    case("l2_normalize_axis0_zero_column", REDUCE, |x| x[0].l2_normalize(0, 1e-6));
    // F.cosine_similarity(a, b, dim=-1, eps=1e-8)
    case("cosine_similarity", REDUCE, |x| x[0].cosine_similarity(&x[1], -1, 1e-8));
    // F.cosine_similarity(a, b, dim=1, eps=1e-8), a (2,5,3), b (1,5,3)
    case("cosine_similarity_bcast", REDUCE, |x| x[0].cosine_similarity(&x[1], 1, 1e-8));
    // F.cosine_similarity(a, b, dim=-1, eps=1e-3), ‖a‖ ≈ 2e-4 < eps (forward only)
    case("cosine_similarity_tiny", REDUCE, |x| x[0].cosine_similarity(&x[1], -1, 1e-3));
}

/// Dropout draws its mask from our generator, not PyTorch's, so no stored
/// values can match; instead check `F.dropout`'s definition on our mask:
/// `out = x · keep / (1 - p)` with `keep ∈ {0, 1}`, `P(keep = 0) ≈ p`, and the
/// gradient is the same mask and scale.
#[test]
fn dropout_matches_pytorch_definition() {
    let (p, n) = (0.25f32, 20_000);
    let x = Tensor::param(ArrayD::from_elem(IxDyn(&[n]), 2.0));
    let y = x.dropout(p, true, &mut dalle::Rng::new(3)).unwrap();
    let kept_value = 2.0 / (1.0 - p);
    let dropped = y.to_vec().iter().filter(|&&v| v == 0.0).count();
    assert!(y.to_vec().iter().all(|&v| v == 0.0 || v == kept_value), "values are 0 or x/(1-p)");
    // Binomial(n, p): standard deviation √(n p (1-p)) ≈ 61; allow 5σ.
    assert!((dropped as f32 - p * n as f32).abs() < 5.0 * 61.3, "dropped {dropped} of {n}, expected about {}", p * n as f32);
    y.sum().backward();
    let g = x.grad().unwrap();
    for (gv, yv) in g.iter().zip(y.to_vec()) {
        assert_eq!(*gv, if yv == 0.0 { 0.0 } else { 1.0 / (1.0 - p) });
    }
}
