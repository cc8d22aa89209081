//! Finite-difference gradient checks for every differentiable op.
//!
//! For each op `f`, [`gradcheck`] compares the autograd gradient of
//! `L = Σ w ⊙ f(x)` (fixed random `w` in [0.5, 1.5]) with the central
//! difference `(L(x + h eᵢ) - L(x - h eᵢ)) / 2h`, element by element.
//!
//! Tolerance: `H = 1e-2`, `TOL = 1e-2` on `|analytic - numeric| / max(1, |numeric|)`.
//! Why: the forward runs in f32, so each `L` carries a rounding error of about
//! `ε_f32 · Σ|terms| ≈ 6e-8 · 100` for these sizes, which the difference divides
//! by `2h`: about 3e-4. The truncation error of the central difference is
//! `h² f'''/6 ≈ 2e-5 · f'''`. Both stay well below 1e-2, while a wrong
//! derivative (a missing factor, a wrong sign, a dropped broadcast sum) is off
//! by O(1). Ops with kinks (relu, abs, clamp, maximum, max, max_pool2d) get
//! inputs kept at least 5h away from every kink, so the difference never
//! straddles one.

use dalle::tensor::gradcheck::gradcheck;
use dalle::{Result, Rng, Tensor};
use ndarray::{ArrayD, IxDyn};

const H: f32 = 1e-2;
const TOL: f64 = 1e-2;

/// Run the check on every element of every input and assert the tolerance.
fn check(name: &str, f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[ArrayD<f32>]) {
    let report = gradcheck(&f, inputs, H, usize::MAX).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(report.max_error < TOL, "{name}: gradient mismatch {report:?}");
}

fn randn(shape: &[usize], seed: u64) -> ArrayD<f32> {
    Rng::new(seed).normal_array(shape)
}

fn uniform(shape: &[usize], lo: f32, hi: f32, seed: u64) -> ArrayD<f32> {
    Rng::new(seed).uniform_array(shape, lo, hi)
}

/// N(0, 1) values pushed at least `margin` away from each of `kinks`.
fn away_from(shape: &[usize], kinks: &[f32], margin: f32, seed: u64) -> ArrayD<f32> {
    randn(shape, seed).mapv(|mut v| {
        for &k in kinks {
            if (v - k).abs() < margin {
                v = if v >= k { k + margin } else { k - margin };
            }
        }
        v
    })
}

/// Distinct values `0.1 · π(i)` for a random permutation π, centred: every
/// pair differs by at least 0.1 = 10h, so maxima never tie under perturbation.
fn distinct(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let n: usize = shape.iter().product();
    let mut rng = Rng::new(seed);
    let mut perm: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        perm.swap(i, rng.below(i + 1));
    }
    ArrayD::from_shape_vec(IxDyn(shape), perm.iter().map(|&p| 0.1 * p as f32 - 0.05 * n as f32).collect()).unwrap()
}

#[test]
fn binary_arithmetic_same_shape_and_broadcast() {
    // ... plus one value per plane, (B, C, 1, 1) against (B, C, H, W), on either side.
    let shapes: [(&[usize], &[usize]); 7] = [(&[3, 5], &[3, 5]), (&[2, 3, 4], &[3, 1]), (&[4], &[2, 1, 4]), (&[1], &[2, 3]), (&[2, 1, 3], &[1, 5, 1]), (&[2, 3, 4, 5], &[2, 3, 1, 1]), (&[2, 3, 1, 1], &[2, 3, 4, 5])];
    for (k, (sa, sb)) in shapes.iter().enumerate() {
        let (a, b) = (randn(sa, 10 + k as u64), randn(sb, 20 + k as u64));
        let tag = format!("{sa:?} op {sb:?}");
        check(&format!("add {tag}"), |x| x[0].add(&x[1]), &[a.clone(), b.clone()]);
        check(&format!("sub {tag}"), |x| x[0].sub(&x[1]), &[a.clone(), b.clone()]);
        check(&format!("mul {tag}"), |x| x[0].mul(&x[1]), &[a.clone(), b.clone()]);
        // Denominators in ±[0.5, 2]: away from the pole at 0.
        let denom = uniform(sb, 0.5, 2.0, 30 + k as u64) * &randn(sb, 40 + k as u64).mapv(f32::signum);
        check(&format!("div {tag}"), |x| x[0].div(&x[1]), &[a.clone(), denom]);
        // maximum away from ties: |a| >= 0.3 and |b| <= 0.1, so |a - b| >= 0.2 = 20h.
        let (a_far, b_small) = (away_from(sa, &[0.0], 0.3, 60 + k as u64), uniform(sb, -0.1, 0.1, 70 + k as u64));
        check(&format!("maximum {tag}"), |x| x[0].maximum(&x[1]), &[a_far, b_small]);
    }
    // The gradient arriving at a broadcast op may be strided (the output was permuted).
    check("add broadcast then permute", |x| x[0].add(&x[1])?.permute(&[2, 1, 0]), &[randn(&[2, 3, 4], 80), randn(&[3, 4], 81)]);
    check("mul broadcast then permute", |x| x[0].mul(&x[1])?.permute(&[2, 1, 0]), &[randn(&[2, 3, 4], 82), randn(&[3, 4], 83)]);
    check("sub broadcast then transpose", |x| Ok(x[0].sub(&x[1])?.t()), &[randn(&[2, 3, 4], 84), randn(&[3, 1], 85)]);
    // maximum with both operands varying: a and b drawn so that a - b is never within 0.1 of 0.
    let a = distinct(&[4, 5], 1);
    let b = a.mapv(|v| -v) + 0.05;
    check("maximum both varying", |x| x[0].maximum(&x[1]), &[a, b]);
}

/// The per-plane broadcast (a U-Net's timestep shift) at a size split between
/// threads, forward and backward, against ndarray's broadcasting arithmetic.
#[test]
fn per_plane_broadcast_matches_ndarray_past_the_parallel_threshold() {
    let (a, b) = (randn(&[8, 32, 14, 14], 90), randn(&[8, 32, 1, 1], 91));
    let (x, y) = (Tensor::param(a.clone()), Tensor::param(b.clone()));
    let z = x.mul(&y).unwrap().add(&y).unwrap(); // z = a b + b
    assert_eq!(z.to_array(), &a * &b + &b, "forward");
    let g = randn(&[8, 32, 14, 14], 92);
    z.backward_with(g.clone());
    assert_eq!(x.grad().unwrap(), &g * &b, "dz/da = g b");
    // dz/db = Σ_{h,w} g (a + 1): the same products, summed by the engine's reduction
    let want = (&g * &(&a + 1.0)).sum_axis(ndarray::Axis(3)).sum_axis(ndarray::Axis(2)).insert_axis(ndarray::Axis(2)).insert_axis(ndarray::Axis(3));
    let got = y.grad().unwrap();
    for (got, want) in got.iter().zip(want.iter()) {
        assert!((got - want).abs() <= 1e-4 * want.abs().max(1.0), "dz/db: {got} vs {want}");
    }
}

#[test]
fn unary_ops() {
    let x = randn(&[3, 5], 1);
    let pos = uniform(&[3, 5], 0.5, 2.0, 2);
    check("add_scalar", |t| Ok(t[0].add_scalar(0.7)), &[x.clone()]);
    check("scale", |t| Ok(t[0].scale(-2.5)), &[x.clone()]);
    check("neg", |t| Ok(t[0].neg()), &[x.clone()]);
    check("pow 3", |t| Ok(t[0].pow(3.0)), &[x.clone()]);
    check("pow 0.5 (x > 0)", |t| Ok(t[0].pow(0.5)), &[pos.clone()]);
    check("pow -1.5 (x > 0)", |t| Ok(t[0].pow(-1.5)), &[pos.clone()]);
    check("square", |t| Ok(t[0].square()), &[x.clone()]);
    check("sqrt (x > 0)", |t| Ok(t[0].sqrt()), &[pos.clone()]);
    check("exp", |t| Ok(t[0].exp()), &[x.clone()]);
    check("log (x > 0)", |t| Ok(t[0].log()), &[pos.clone()]);
    check("abs (|x| > 0.05)", |t| Ok(t[0].abs()), &[away_from(&[3, 5], &[0.0], 0.05, 3)]);
    check("clamp (away from -0.5, 0.8)", |t| Ok(t[0].clamp(-0.5, 0.8)), &[away_from(&[3, 5], &[-0.5, 0.8], 0.05, 4)]);
    check("tanh", |t| Ok(t[0].tanh()), &[x.clone()]);
    check("sigmoid", |t| Ok(t[0].sigmoid()), &[x.scale_all(3.0)]);
    check("relu (|x| > 0.05)", |t| Ok(t[0].relu()), &[away_from(&[3, 5], &[0.0], 0.05, 5)]);
    check("gelu", |t| Ok(t[0].gelu()), &[x.scale_all(2.0)]);
    check("gelu_tanh", |t| Ok(t[0].gelu_tanh()), &[x.scale_all(2.0)]);
    check("silu", |t| Ok(t[0].silu()), &[x.scale_all(2.0)]);
    check("quick_gelu", |t| Ok(t[0].quick_gelu()), &[x.scale_all(2.0)]);
}

trait ScaleAll {
    fn scale_all(&self, c: f32) -> ArrayD<f32>;
}
impl ScaleAll for ArrayD<f32> {
    fn scale_all(&self, c: f32) -> ArrayD<f32> {
        self.mapv(|v| v * c)
    }
}

#[test]
fn reductions() {
    let x = randn(&[2, 3, 5], 7);
    for keepdim in [false, true] {
        for axes in [&[0isize][..], &[-1], &[0, 2], &[1, -1], &[0, 1, 2]] {
            check(&format!("sum_axes {axes:?} keepdim {keepdim}"), |t| t[0].sum_axes(axes, keepdim), &[x.clone()]);
            check(&format!("mean_axes {axes:?} keepdim {keepdim}"), |t| t[0].mean_axes(axes, keepdim), &[x.clone()]);
            for unbiased in [false, true] {
                check(&format!("var_axes {axes:?} unbiased {unbiased} keepdim {keepdim}"), |t| t[0].var_axes(axes, unbiased, keepdim), &[x.clone()]);
            }
        }
        for axis in [0isize, 1, -1] {
            check(&format!("max_axis {axis} keepdim {keepdim}"), |t| t[0].max_axis(axis, keepdim), &[distinct(&[2, 3, 5], 8)]);
        }
    }
    check("sum (all)", |t| Ok(t[0].sum()), &[x.clone()]);
    check("mean (all)", |t| Ok(t[0].mean()), &[x.clone()]);
    // The gradient arriving at a reduction may be a strided (permuted) array.
    check("sum_axes then transpose", |t| Ok(t[0].sum_axes(&[0], false)?.t().square()), &[x.clone()]);
    check("max_axis then transpose", |t| Ok(t[0].max_axis(0, false)?.t().square()), &[distinct(&[2, 3, 5], 9)]);
    check("sum_axes keepdim of a permuted input", |t| t[0].permute(&[2, 1, 0])?.sum_axes(&[0], true), &[x.clone()]);
    check("sum_axes no axes of a permuted input", |t| t[0].permute(&[2, 1, 0])?.sum_axes(&[], true), &[x.clone()]);
    check("max_axis of a permuted input", |t| t[0].permute(&[2, 1, 0])?.max_axis(0, true), &[distinct(&[2, 3, 5], 10)]);
    check("mean_axes keepdim then permute", |t| Ok(t[0].mean_axes(&[1], true)?.permute(&[2, 1, 0])?.square()), &[x.clone()]);
}

#[test]
fn softmax_and_log_softmax() {
    let x = randn(&[2, 3, 4], 11).mapv(|v| 2.0 * v);
    for axis in [0isize, 1, 2, -1] {
        check(&format!("softmax axis {axis}"), |t| Ok(t[0].softmax(axis)), &[x.clone()]);
        check(&format!("log_softmax axis {axis}"), |t| Ok(t[0].log_softmax(axis)), &[x.clone()]);
    }
    check("softmax of a transposed input", |t| Ok(t[0].t().softmax(-1)), &[x.clone()]);
}

#[test]
fn matmul_shapes() {
    // 2-D x 2-D
    check("matmul (3,4)x(4,5)", |t| t[0].matmul(&t[1]), &[randn(&[3, 4], 1), randn(&[4, 5], 2)]);
    // N-D x N-D, equal batches
    check("matmul (2,3,4)x(2,4,5)", |t| t[0].matmul(&t[1]), &[randn(&[2, 3, 4], 3), randn(&[2, 4, 5], 4)]);
    // broadcast batch: (2,1,3,4) x (3,4,2) -> (2,3,3,2)
    check("matmul broadcast batch", |t| t[0].matmul(&t[1]), &[randn(&[2, 1, 3, 4], 5), randn(&[3, 4, 2], 6)]);
    // 2-D x N-D
    check("matmul (3,4)x(2,4,5)", |t| t[0].matmul(&t[1]), &[randn(&[3, 4], 7), randn(&[2, 4, 5], 8)]);
    // (B, T, K) x (K, N): the folded tall-GEMM path, forward and the dB fold in backward
    check("matmul fold (2,3,4)x(4,5)", |t| t[0].matmul(&t[1]), &[randn(&[2, 3, 4], 9), randn(&[4, 5], 10)]);
    check("matmul fold (2,2,3,4)x(4,5)", |t| t[0].matmul(&t[1]), &[randn(&[2, 2, 3, 4], 11), randn(&[4, 5], 12)]);
    // transposed operands: strided views, no copies
    check("matmul a.t() x b", |t| t[0].t().matmul(&t[1]), &[randn(&[4, 3], 13), randn(&[4, 5], 14)]);
    check("matmul a x b.t()", |t| t[0].matmul(&t[1].t()), &[randn(&[3, 4], 15), randn(&[5, 4], 16)]);
    check("matmul batched a.t() x b.t()", |t| t[0].t().matmul(&t[1].t()), &[randn(&[2, 4, 3], 17), randn(&[2, 5, 4], 18)]);
    // a permuted 3-D input that does not fold: (T, B, K) -> (B, T, K)
    check("matmul permuted (B,T,K)x(K,N)", |t| t[0].permute(&[1, 0, 2])?.matmul(&t[1]), &[randn(&[3, 2, 4], 19), randn(&[4, 5], 20)]);
    // a narrowed input whose rows still fold with a row stride larger than K
    check("matmul narrowed fold", |t| t[0].narrow(2, 1, 4)?.matmul(&t[1]), &[randn(&[2, 3, 6], 21), randn(&[4, 5], 22)]);
    check("matmul (B,T,K)x(K,N).t() weight", |t| t[0].matmul(&t[1].t()), &[randn(&[2, 3, 4], 23), randn(&[5, 4], 24)]);
}

#[test]
fn matmul_t_shapes() {
    check("matmul_t (3,4)x(5,4)ᵀ", |t| t[0].matmul_t(&t[1]), &[randn(&[3, 4], 1), randn(&[5, 4], 2)]);
    check("matmul_t (2,3,4)x(5,4)ᵀ fold", |t| t[0].matmul_t(&t[1]), &[randn(&[2, 3, 4], 3), randn(&[5, 4], 4)]);
    check("matmul_t (2,3,4)x(2,5,4)ᵀ", |t| t[0].matmul_t(&t[1]), &[randn(&[2, 3, 4], 5), randn(&[2, 5, 4], 6)]);
    check("matmul_t broadcast (2,1,3,4)x(3,5,4)ᵀ", |t| t[0].matmul_t(&t[1]), &[randn(&[2, 1, 3, 4], 7), randn(&[3, 5, 4], 8)]);
    check("matmul_t permuted a", |t| t[0].permute(&[1, 0, 2])?.matmul_t(&t[1]), &[randn(&[3, 2, 4], 9), randn(&[5, 4], 10)]);
}

#[test]
fn linear_with_bias_shapes() {
    // The fused `x Wᵀ + b` (bias as the GEMM's starting value), 2-D and with batch dimensions.
    check("linear (3,4)x(5,4)ᵀ+(5)", |t| t[0].linear(&t[1], Some(&t[2])), &[randn(&[3, 4], 11), randn(&[5, 4], 12), randn(&[5], 13)]);
    check("linear (2,3,4)x(5,4)ᵀ+(5)", |t| t[0].linear(&t[1], Some(&t[2])), &[randn(&[2, 3, 4], 14), randn(&[5, 4], 15), randn(&[5], 16)]);
    check("linear permuted x", |t| t[0].permute(&[1, 0, 2])?.linear(&t[1], Some(&t[2])), &[randn(&[3, 2, 4], 17), randn(&[5, 4], 18), randn(&[5], 19)]);
}

#[test]
fn shape_ops() {
    let x = randn(&[2, 3, 4], 3);
    check("reshape", |t| t[0].reshape(&[4, -1]), &[x.clone()]);
    check("reshape of a permuted input", |t| t[0].permute(&[2, 0, 1])?.reshape(&[-1, 6]), &[x.clone()]);
    check("flatten_from", |t| t[0].flatten_from(1), &[x.clone()]);
    check("permute", |t| t[0].permute(&[2, 0, 1]), &[x.clone()]);
    check("transpose", |t| Ok(t[0].transpose(0, -1)), &[x.clone()]);
    check("contiguous", |t| Ok(t[0].t().contiguous()), &[x.clone()]);
    check("narrow", |t| t[0].narrow(-1, 1, 2), &[x.clone()]);
    for i in 0..3 {
        check(&format!("chunk {i} of 3"), |t| Ok(t[0].chunk(3, 1)?[i].clone()), &[x.clone()]);
    }
    check("chunk pieces recombined with weights", |t| {
        let c = t[0].chunk(2, 2)?;
        c[0].mul(&c[1])
    }, &[x.clone()]);
    // Every chunk used: the later ones are added into their slice of the
    // parent's gradient (`GradFn::slice_of_parent`), along each axis.
    for axis in 0..3 {
        check(&format!("all chunks of axis {axis}, weighted"), |t| {
            let c = t[0].chunk(2, axis)?;
            c[0].mul(&c[1])?.add(&c[1].square())
        }, &[randn(&[4, 4, 6], 30 + axis as u64)]);
    }
    check("fused qkv chunks and the parent used directly", |t| {
        let c = t[0].chunk(3, -1)?;
        c[0].mul(&c[1])?.add(&c[2])?.sum_axes(&[-1], true)?.mul(&t[0].sum_axes(&[-1], true)?)
    }, &[randn(&[2, 3, 6], 33)]);
    check("concat axis 1", |t| Tensor::concat(&[&t[0], &t[1], &t[2]], 1), &[randn(&[2, 1, 4], 4), randn(&[2, 3, 4], 5), randn(&[2, 2, 4], 6)]);
    check("concat axis -1", |t| Tensor::concat(&[&t[0], &t[1]], -1), &[randn(&[3, 2], 7), randn(&[3, 5], 8)]);
    check("stack axis 0", |t| Tensor::stack(&[&t[0], &t[1]], 0), &[randn(&[3, 2], 9), randn(&[3, 2], 10)]);
    check("stack axis 2", |t| Tensor::stack(&[&t[0], &t[1], &t[0]], 2), &[randn(&[3, 2], 11), randn(&[3, 2], 12)]);
    check("broadcast_to", |t| t[0].broadcast_to(&[2, 3, 4]), &[randn(&[3, 1], 13)]);
    check("broadcast_to new leading", |t| t[0].broadcast_to(&[5, 4]), &[randn(&[4], 14)]);
    check("unsqueeze", |t| Ok(t[0].unsqueeze(1).mul(&Tensor::new(randn(&[2, 5, 3, 4], 15)))?), &[x.clone()]);
    check("unsqueeze -1", |t| Ok(t[0].unsqueeze(-1)), &[x.clone()]);
    check("squeeze", |t| t[0].squeeze(1), &[randn(&[3, 1, 4], 16)]);
}

#[test]
fn indexing_ops() {
    let x = randn(&[4, 3], 21);
    check("index_select axis 0 with repeats", |t| t[0].index_select(0, &[3, 1, 3, 0]), &[x.clone()]);
    check("index_select axis 1", |t| t[0].index_select(1, &[2, 0]), &[x.clone()]);
    check("embedding", |t| Tensor::embedding(&t[0], &[1, 3, 1, 0, 2, 1], &[2, 3]), &[randn(&[5, 4], 22)]);
    let index = ArrayD::from_shape_vec(IxDyn(&[2, 2, 3]), vec![0, 2, 1, 1, 1, 0, 2, 0, 0, 1, 2, 2]).unwrap();
    check("gather axis 1", |t| t[0].gather(1, &index), &[randn(&[2, 3, 3], 23)]);
    let index0 = ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![1, 0, 1, 1, 1, 0]).unwrap();
    check("gather axis 0", |t| t[0].gather(0, &index0), &[randn(&[2, 3], 24)]);
    let mask = ArrayD::from_shape_vec(IxDyn(&[3, 1]), vec![true, false, true]).unwrap();
    check("masked_fill broadcast mask", |t| t[0].masked_fill(&mask, -3.0), &[randn(&[2, 3, 4], 25)]);
    let cond = ArrayD::from_shape_vec(IxDyn(&[2, 1, 3]), vec![true, false, true, false, false, true]).unwrap();
    check("where_ broadcast", |t| Tensor::where_(&cond, &t[0], &t[1]), &[randn(&[4, 3], 26), randn(&[2, 1, 1], 27)]);
}

#[test]
fn conv2d_cases() {
    // (x shape, weight shape, stride, padding)
    let cases: [(&[usize], &[usize], usize, usize); 7] = [
        (&[2, 3, 5, 5], &[4, 3, 3, 3], 1, 0),
        (&[2, 3, 5, 5], &[4, 3, 3, 3], 1, 1),
        (&[2, 3, 7, 5], &[2, 3, 3, 3], 2, 1),
        (&[1, 2, 6, 6], &[3, 2, 3, 3], 2, 0),
        (&[2, 3, 4, 5], &[5, 3, 1, 1], 1, 0), // 1x1 pointwise path
        (&[1, 2, 5, 4], &[3, 2, 2, 3], 1, 1), // non-square kernel
        (&[1, 2, 5, 5], &[2, 2, 1, 1], 2, 1), // 1x1 but strided and padded: im2col path
    ];
    for (k, (xs, ws, stride, pad)) in cases.iter().enumerate() {
        let (x, w, b) = (randn(xs, 30 + k as u64), randn(ws, 40 + k as u64), randn(&[ws[0]], 50 + k as u64));
        let tag = format!("conv2d x{xs:?} w{ws:?} s{stride} p{pad}");
        check(&format!("{tag} with bias"), |t| t[0].conv2d(&t[1], Some(&t[2]), *stride, *pad), &[x.clone(), w.clone(), b]);
        check(&format!("{tag} no bias"), |t| t[0].conv2d(&t[1], None, *stride, *pad), &[x, w]);
    }
    // 17 images: the dW sum runs over several blocks of images, the last one short
    check("conv2d batch of 17", |t| t[0].conv2d(&t[1], Some(&t[2]), 1, 1), &[randn(&[17, 1, 3, 3], 62), randn(&[2, 1, 2, 2], 63), randn(&[2], 64)]);
    // a permuted (non-contiguous) input
    check("conv2d of an NHWC input permuted to NCHW", |t| t[0].permute(&[0, 3, 1, 2])?.conv2d(&t[1], None, 1, 1), &[randn(&[1, 4, 4, 2], 60), randn(&[3, 2, 3, 3], 61)]);
}

#[test]
fn pooling_and_upsampling() {
    check("upsample_nearest2d x2", |t| t[0].upsample_nearest2d(2), &[randn(&[2, 3, 3, 2], 1)]);
    check("upsample_nearest2d x3", |t| t[0].upsample_nearest2d(3), &[randn(&[1, 1, 2, 3], 2)]);
    check("avg_pool2d k2 s2", |t| t[0].avg_pool2d(2, 2), &[randn(&[2, 3, 4, 6], 3)]);
    check("avg_pool2d k3 s2 odd", |t| t[0].avg_pool2d(3, 2), &[randn(&[1, 2, 7, 5], 4)]);
    check("avg_pool2d k2 s1 overlapping", |t| t[0].avg_pool2d(2, 1), &[randn(&[1, 2, 3, 3], 5)]);
    check("max_pool2d k2 s2", |t| t[0].max_pool2d(2, 2), &[distinct(&[2, 3, 4, 6], 6)]);
    check("max_pool2d k3 s2 odd", |t| t[0].max_pool2d(3, 2), &[distinct(&[1, 2, 7, 5], 7)]);
    check("max_pool2d k2 s1 overlapping", |t| t[0].max_pool2d(2, 1), &[distinct(&[1, 2, 3, 3], 8)]);
}

#[test]
fn normalisation() {
    let gamma = |c: usize, s: u64| randn(&[c], s).mapv(|v| 1.0 + 0.5 * v);
    check("layer_norm (2,3,5)", |t| t[0].layer_norm(&t[1], &t[2], 1e-5), &[randn(&[2, 3, 5], 1), gamma(5, 2), randn(&[5], 3)]);
    check("layer_norm (4,7) large mean", |t| t[0].layer_norm(&t[1], &t[2], 1e-5), &[randn(&[4, 7], 4).mapv(|v| v + 3.0), gamma(7, 5), randn(&[7], 6)]);
    // Groups of 3 values: scaled by 3 so that σ is not tiny (the truncation error
    // of the difference grows like h²/σ², layer norm being scale invariant).
    check("layer_norm of a transposed input", |t| t[0].t().layer_norm(&t[1], &t[2], 1e-5), &[randn(&[3, 5], 7).mapv(|v| 3.0 * v), gamma(3, 8), randn(&[3], 9)]);
    // 130 rows: dγ, dβ are summed over several blocks of 64 rows, the last one short
    check("layer_norm 130 rows", |t| t[0].layer_norm(&t[1], &t[2], 1e-5), &[randn(&[130, 6], 19).mapv(|v| 2.0 * v), gamma(6, 20), randn(&[6], 21)]);
    check("group_norm 2 groups (2,4,3,3)", |t| t[0].group_norm(2, &t[1], &t[2], 1e-5), &[randn(&[2, 4, 3, 3], 10), gamma(4, 11), randn(&[4], 12)]);
    check("group_norm 3 groups (1,6,5)", |t| t[0].group_norm(3, &t[1], &t[2], 1e-5), &[randn(&[1, 6, 5], 13), gamma(6, 14), randn(&[6], 15)]);
    check("group_norm 1 group (2,3,2,2)", |t| t[0].group_norm(1, &t[1], &t[2], 1e-5), &[randn(&[2, 3, 2, 2], 16), gamma(3, 17), randn(&[3], 18)]);
}

#[test]
fn dropout_fixed_seed() {
    // The same seed gives the same mask on every call, so the function is
    // deterministic and has a gradient: mask / (1 - p).
    check("dropout p=0.3", |t| t[0].dropout(0.3, true, &mut Rng::new(5)), &[randn(&[4, 6], 1)]);
    let x = Tensor::new(randn(&[4, 6], 1));
    let a = x.dropout(0.3, true, &mut Rng::new(5)).unwrap().to_vec();
    let b = x.dropout(0.3, true, &mut Rng::new(5)).unwrap().to_vec();
    assert_eq!(a, b, "same seed, same mask");
    assert!(a.iter().any(|&v| v == 0.0) && a.iter().any(|&v| v != 0.0), "p = 0.3 drops some and keeps some");
    check("dropout eval is the identity", |t| t[0].dropout(0.3, false, &mut Rng::new(5)), &[randn(&[4, 6], 1)]);
}

#[test]
fn losses_and_similarities() {
    let logits = randn(&[5, 4], 1).mapv(|v| 2.0 * v);
    check("cross_entropy", |t| t[0].cross_entropy(&[0, 3, 1, 1, 2]), &[logits.clone()]);
    check("cross_entropy ignore_index", |t| t[0].cross_entropy_with(&[0, 7, 1, 7, 2], Some(7), 0.0), &[logits.clone()]);
    check("cross_entropy label smoothing", |t| t[0].cross_entropy_with(&[0, 3, 1, 1, 2], None, 0.1), &[logits.clone()]);
    check("cross_entropy ignore + smoothing", |t| t[0].cross_entropy_with(&[0, 3, 1, 3, 2], Some(3), 0.2), &[logits.clone()]);
    check("mse", |t| t[0].mse(&t[1]), &[randn(&[3, 4], 2), randn(&[3, 4], 3)]);
    check("bce_with_logits", |t| t[0].bce_with_logits(&t[1]), &[randn(&[3, 4], 4).mapv(|v| 2.0 * v), uniform(&[3, 4], 0.0, 1.0, 5)]);
    check("l2_normalize axis -1", |t| t[0].l2_normalize(-1, 1e-12), &[randn(&[3, 4], 6)]);
    check("l2_normalize axis 0", |t| t[0].l2_normalize(0, 1e-12), &[randn(&[3, 4], 7)]);
    check("cosine_similarity axis -1", |t| t[0].cosine_similarity(&t[1], -1, 1e-8), &[randn(&[3, 4], 8), randn(&[3, 4], 9)]);
    check("cosine_similarity axis 1 broadcast", |t| t[0].cosine_similarity(&t[1], 1, 1e-8), &[randn(&[2, 5, 3], 10), randn(&[1, 5, 3], 11)]);
}

#[test]
fn a_graph_that_reuses_a_tensor() {
    // x feeds three branches; the gradients must add up.
    check("x * tanh(x) + x.exp() / x", |t| t[0].mul(&t[0].tanh())?.add(&t[0].exp().div(&t[0])?), &[uniform(&[3, 3], 0.5, 1.5, 1)]);
}
