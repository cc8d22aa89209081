//! Engine benchmark: our CPU kernels and ops, side by side with PyTorch and numpy.
//!
//! ```text
//! cargo run --release --example bench_engine -- --torch
//! cargo run --release --example bench_engine -- --smoke            # tiny sizes, seconds (CI)
//! cargo run --release --example bench_engine -- --cases sgemm,block --torch
//! RAYON_NUM_THREADS=1 cargo run --release --example bench_engine -- --torch   # both sides on one core
//! DALLE_CPU=avx2 cargo run --release --example bench_engine -- --torch        # one lower CPU tier
//! cargo run --release --example bench_engine -- --torch --tiers              # every tier, side by side
//! ```
//!
//! Every case runs twice to warm up, then `reps` times (about one second's
//! worth, 5 to 500); the table shows the median. Forward+backward cases time
//! the forward and `backward_with(dy)` (PyTorch: `y.backward(dy)`), not the
//! copy of `dy` that `backward_with` consumes, nor clearing the gradients. With `--torch`,
//! `benches/torch_bench.py` runs the same cases at the same shapes (2 threads,
//! OpenBLAS's own kernel choice for numpy) and its medians are printed beside
//! ours; `ratio` is ours / theirs, so below 1 means we are faster.
//!
//! CPU tiers: the run uses this process's [tier](dalle::backend::cpu::tier)
//! (the best the CPU has, or the lower one `DALLE_CPU` forces), prints it, and
//! holds PyTorch to the same instruction set (`ATEN_CPU_CAPABILITY`,
//! `ONEDNN_MAX_CPU_ISA`, `MKL_ENABLE_INSTRUCTIONS`; OpenBLAS's
//! `OPENBLAS_CORETYPE` for numpy) so that each ratio compares like with like.
//! `--tiers` runs this program again once per tier the CPU supports, one after
//! another, and prints one table with a column group per tier.
//!
//! The `unet` cases are the shapes of a small diffusion U-Net's training step
//! (chapter 08), batch 64: GroupNorm(8) + SiLU on (64, 64, 28, 28), the 3x3
//! convolutions 64->64 at 14x14 and 128->128 at 7x7, self-attention over
//! 7x7 = 49 tokens of width 128 with 4 heads, and one residual block at
//! (64, 64, 14, 14) with a timestep embedding added, all forward+backward.

use clap::Parser;
use dalle::backend::cpu::gemm::{sgemm, MatPtr};
use dalle::backend::cpu::tier::{detected, tier, Tier};
use dalle::{Rng, Tensor};
use ndarray::{ArrayD, IxDyn};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

#[derive(Parser)]
#[command(about = "Time sgemm, conv2d, layer_norm, softmax, a transformer block and U-Net pieces against PyTorch")]
struct Args {
    /// Tiny sizes and 3 repetitions: a check that every case runs, in seconds.
    #[arg(long)]
    smoke: bool,
    /// Also run benches/torch_bench.py (skipped with a message when python or torch is missing).
    #[arg(long)]
    torch: bool,
    /// Comma-separated cases: sgemm, conv, layernorm, softmax, block, unet
    /// (or one part of it: unet_gn, unet_conv, unet_attn, unet_res).
    #[arg(long, default_value = "sgemm,conv,layernorm,softmax,block,unet")]
    cases: String,
    /// Run every CPU tier this machine supports (each in a child process with
    /// DALLE_CPU set), side by side in one table.
    #[arg(long)]
    tiers: bool,
    /// Where to write the table as markdown.
    #[arg(long, default_value = "runs/bench_engine/bench.md")]
    out: PathBuf,
}

/// The shapes of every case; keep in sync with `shapes()` in benches/torch_bench.py.
struct Shapes {
    sgemm: Vec<usize>,
    /// (N, C, OC, H, W), 3x3 kernel, padding 1.
    conv: (usize, usize, usize, usize, usize),
    /// (B, T, C), normalised over C.
    layernorm: [usize; 3],
    /// (B, H, T, T), softmax over the last axis.
    softmax: [usize; 4],
    /// (B, T, C, heads).
    block: (usize, usize, usize, usize),
    unet: UnetShapes,
}

/// The U-Net cases' shapes (see the module docs).
struct UnetShapes {
    /// (N, C, H, W) and the number of groups of GroupNorm + SiLU.
    gn: ([usize; 4], usize),
    /// (N, C, H, W) of the 3x3 "same" convolutions (C -> C).
    convs: [[usize; 4]; 2],
    /// (B, T, C, heads) of the self-attention.
    attn: (usize, usize, usize, usize),
    /// (N, C, H, W) of the residual block, and the timestep embedding's width.
    res: ([usize; 4], usize),
}

impl Shapes {
    fn new(smoke: bool) -> Shapes {
        if smoke {
            let unet = UnetShapes { gn: ([2, 16, 8, 8], 8), convs: [[2, 16, 6, 6], [2, 32, 3, 3]], attn: (2, 9, 32, 4), res: ([2, 16, 6, 6], 32) };
            Shapes { sgemm: vec![64, 128], conv: (4, 16, 16, 8, 8), layernorm: [4, 16, 32], softmax: [2, 2, 16, 16], block: (2, 8, 32, 4), unet }
        } else {
            let unet = UnetShapes { gn: ([64, 64, 28, 28], 8), convs: [[64, 64, 14, 14], [64, 128, 7, 7]], attn: (64, 49, 128, 4), res: ([64, 64, 14, 14], 256) };
            Shapes { sgemm: vec![256, 512, 1024, 2048], conv: (64, 64, 64, 28, 28), layernorm: [32, 256, 256], softmax: [32, 4, 128, 128], block: (32, 64, 256, 4), unet }
        }
    }
}

/// One row of the table.
struct Row {
    case: String,
    ours_ms: f64,
    /// Multiply-adds x 2, for GFLOP/s (None for the memory-bound cases).
    flops: Option<f64>,
}

/// Two warm-up runs, then the median of `reps` timed runs, in milliseconds.
fn median_ms(smoke: bool, mut f: impl FnMut()) -> f64 {
    median_ms_with(smoke, || (), |()| f())
}

/// As [`median_ms`], timing only `f`: `setup` (untimed) makes its input, e.g. a
/// fresh copy of the output gradient, which `backward_with` consumes.
fn median_ms_with<S>(smoke: bool, mut setup: impl FnMut() -> S, mut f: impl FnMut(S)) -> f64 {
    let mut timed = || {
        let input = setup();
        let t = Instant::now();
        f(input);
        t.elapsed().as_secs_f64()
    };
    timed();
    let first = timed();
    let reps = if smoke { 3 } else { (1.0 / first.max(1e-6)).ceil().clamp(5.0, 500.0) as usize };
    let mut times: Vec<f64> = (0..reps).map(|_| timed() * 1e3).collect();
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}

fn clear_grads(ts: &[&Tensor]) {
    ts.iter().for_each(|t| t.zero_grad());
}

fn bench_sgemm(s: &Shapes, smoke: bool, rows: &mut Vec<Row>) {
    let mut rng = Rng::new(0);
    for &n in &s.sgemm {
        let a = rng.normal_array(&[n, n]).into_raw_vec_and_offset().0;
        let b = rng.normal_array(&[n, n]).into_raw_vec_and_offset().0;
        let mut c = vec![0.0f32; n * n];
        let m = |p: &Vec<f32>| MatPtr { ptr: p.as_ptr(), rs: n as isize, cs: 1 };
        let ms = median_ms(smoke, || unsafe { sgemm(n, n, n, 1.0, m(&a), m(&b), 0.0, c.as_mut_ptr(), n as isize, 1) });
        rows.push(Row { case: format!("sgemm_{n}"), ours_ms: ms, flops: Some(2.0 * (n * n * n) as f64) });
    }
}

fn bench_conv(s: &Shapes, smoke: bool, rows: &mut Vec<Row>) {
    let (n, c, oc, h, w) = s.conv;
    let mut rng = Rng::new(1);
    let x = Tensor::param(rng.normal_array(&[n, c, h, w]));
    let wt = Tensor::param(rng.normal_array(&[oc, c, 3, 3]) * 0.05);
    let b = Tensor::param(ArrayD::zeros(IxDyn(&[oc])));
    let dy = rng.normal_array(&[n, oc, h, w]);
    let fwd_flops = 2.0 * (n * oc * h * w * c * 9) as f64;
    let ms = median_ms(smoke, || {
        dalle::no_grad(|| x.conv2d(&wt, Some(&b), 1, 1).expect("conv shapes"));
    });
    rows.push(Row { case: "conv_fwd".into(), ours_ms: ms, flops: Some(fwd_flops) });
    let ms = median_ms_with(
        smoke,
        || {
            clear_grads(&[&x, &wt, &b]);
            dy.clone()
        },
        |dy| x.conv2d(&wt, Some(&b), 1, 1).expect("conv shapes").backward_with(dy),
    );
    // Backward is two GEMMs of the forward's size (dX and dW).
    rows.push(Row { case: "conv_fwd_bwd".into(), ours_ms: ms, flops: Some(3.0 * fwd_flops) });
}

fn bench_layernorm(s: &Shapes, smoke: bool, rows: &mut Vec<Row>) {
    let mut rng = Rng::new(2);
    let c = s.layernorm[2];
    let x = Tensor::param(rng.normal_array(&s.layernorm));
    let (g, b) = (Tensor::param(ArrayD::ones(IxDyn(&[c]))), Tensor::param(ArrayD::zeros(IxDyn(&[c]))));
    let dy = rng.normal_array(&s.layernorm);
    let ms = median_ms_with(
        smoke,
        || {
            clear_grads(&[&x, &g, &b]);
            dy.clone()
        },
        |dy| x.layer_norm(&g, &b, 1e-5).expect("layer_norm shapes").backward_with(dy),
    );
    rows.push(Row { case: "layernorm_fwd_bwd".into(), ours_ms: ms, flops: None });
}

fn bench_softmax(s: &Shapes, smoke: bool, rows: &mut Vec<Row>) {
    let mut rng = Rng::new(3);
    let x = Tensor::param(rng.normal_array(&s.softmax));
    let dy = rng.normal_array(&s.softmax);
    let ms = median_ms_with(
        smoke,
        || {
            clear_grads(&[&x]);
            dy.clone()
        },
        |dy| x.softmax(-1).backward_with(dy),
    );
    rows.push(Row { case: "softmax_fwd_bwd".into(), ours_ms: ms, flops: None });
}

/// The parameters of one pre-LN transformer block, PyTorch's `(out, in)` weight layout.
struct Block {
    ln1: (Tensor, Tensor),
    qkv: (Tensor, Tensor),
    proj: (Tensor, Tensor),
    ln2: (Tensor, Tensor),
    fc: (Tensor, Tensor),
    fc_out: (Tensor, Tensor),
    heads: usize,
}

impl Block {
    fn new(c: usize, heads: usize, rng: &mut Rng) -> Block {
        let mut lin = |o: usize, i: usize| (Tensor::param(rng.normal_array(&[o, i]) * 0.02), Tensor::param(ArrayD::zeros(IxDyn(&[o]))));
        let norm = || (Tensor::param(ArrayD::ones(IxDyn(&[c]))), Tensor::param(ArrayD::zeros(IxDyn(&[c]))));
        Block { qkv: lin(3 * c, c), proj: lin(c, c), fc: lin(4 * c, c), fc_out: lin(c, 4 * c), ln1: norm(), ln2: norm(), heads }
    }

    fn params(&self) -> Vec<&Tensor> {
        [&self.ln1, &self.qkv, &self.proj, &self.ln2, &self.fc, &self.fc_out].iter().flat_map(|(a, b)| [a, b]).collect()
    }

    /// `x + attn(ln1(x))`, then `h + mlp(ln2(h))`; `mask` is true above the diagonal.
    fn forward(&self, x: &Tensor, mask: &ArrayD<bool>) -> dalle::Result<Tensor> {
        let h = x.layer_norm(&self.ln1.0, &self.ln1.1, 1e-5)?; // (B, T, C)
        let x = x.add(&self_attention(&h, &self.qkv, &self.proj, self.heads, Some(mask))?)?;
        let h = x.layer_norm(&self.ln2.0, &self.ln2.1, 1e-5)?;
        let linear = |x: &Tensor, (w, b): &(Tensor, Tensor)| x.linear(w, Some(b)); // F.linear
        let h = linear(&linear(&h, &self.fc)?.gelu(), &self.fc_out)?; // (B, T, C)
        x.add(&h)
    }
}

/// Multi-head self-attention written from the ops, `proj(softmax(Q Kᵀ / √d (+ mask)) V)`
/// with `Q, K, V` from one `qkv` linear layer; `mask` is true where a score is dropped.
fn self_attention(h: &Tensor, qkv: &(Tensor, Tensor), proj: &(Tensor, Tensor), heads: usize, mask: Option<&ArrayD<bool>>) -> dalle::Result<Tensor> {
    let (bsz, t, c) = (h.dim(0) as isize, h.dim(1) as isize, h.dim(2) as isize);
    let (nh, d) = (heads as isize, c / heads as isize);
    let qkv = h.linear(&qkv.0, Some(&qkv.1))?.chunk(3, -1)?; // 3 x (B, T, C)
    let split = |z: &Tensor| z.reshape(&[bsz, t, nh, d])?.permute(&[0, 2, 1, 3]); // (B, H, T, D)
    let (q, k, v) = (split(&qkv[0])?, split(&qkv[1])?, split(&qkv[2])?);
    let mut att = q.matmul(&k.t())?.scale(1.0 / (d as f32).sqrt()); // (B, H, T, T)
    if let Some(mask) = mask {
        att = att.masked_fill(mask, f32::NEG_INFINITY)?;
    }
    let y = att.softmax(-1).matmul(&v)?.permute(&[0, 2, 1, 3])?.reshape(&[bsz, t, c])?; // (B, T, C)
    y.linear(&proj.0, Some(&proj.1))
}

fn bench_block(s: &Shapes, smoke: bool, rows: &mut Vec<Row>) {
    let (b, t, c, heads) = s.block;
    let mut rng = Rng::new(4);
    let block = Block::new(c, heads, &mut rng);
    let x = Tensor::param(rng.normal_array(&[b, t, c]));
    let dy = rng.normal_array(&[b, t, c]);
    let mask = ArrayD::from_shape_fn(IxDyn(&[t, t]), |i| i[1] > i[0]);
    // Linear layers: 2·B·T·(3C² + C² + 8C²); attention: 2 · 2·B·T²·C.
    let fwd_flops = 2.0 * (b * t) as f64 * (12 * c * c) as f64 + 4.0 * (b * t * t * c) as f64;
    let ms = median_ms(smoke, || {
        dalle::no_grad(|| block.forward(&x, &mask).expect("block shapes"));
    });
    rows.push(Row { case: "block_fwd".into(), ours_ms: ms, flops: Some(fwd_flops) });
    let mut params = block.params();
    params.push(&x);
    let ms = median_ms_with(
        smoke,
        || {
            clear_grads(&params);
            dy.clone()
        },
        |dy| block.forward(&x, &mask).expect("block shapes").backward_with(dy),
    );
    rows.push(Row { case: "block_fwd_bwd".into(), ours_ms: ms, flops: Some(3.0 * fwd_flops) });
}

/// Time `loss(params).backward_with(dy)` (forward and backward), gradients cleared untimed.
fn fwd_bwd(smoke: bool, params: &[&Tensor], dy: &ArrayD<f32>, forward: impl Fn() -> Tensor) -> f64 {
    median_ms_with(
        smoke,
        || {
            clear_grads(params);
            dy.clone()
        },
        |dy| forward().backward_with(dy),
    )
}

/// A 3x3 "same" convolution's weight and bias, `c -> oc` (PyTorch's default scale, roughly).
fn conv_params(c: usize, oc: usize, rng: &mut Rng) -> (Tensor, Tensor) {
    (Tensor::param(rng.normal_array(&[oc, c, 3, 3]) * (1.0 / (9 * c) as f32).sqrt()), Tensor::param(ArrayD::zeros(IxDyn(&[oc]))))
}

/// GroupNorm's γ = 1, β = 0 for `c` channels.
fn norm_params(c: usize) -> (Tensor, Tensor) {
    (Tensor::param(ArrayD::ones(IxDyn(&[c]))), Tensor::param(ArrayD::zeros(IxDyn(&[c]))))
}

/// The parts of the `unet` case, each also a case of its own.
const UNET_PARTS: [&str; 4] = ["unet_gn", "unet_conv", "unet_attn", "unet_res"];

/// The pieces of a small diffusion U-Net's training step (see the module docs),
/// those of `parts` (some of [`UNET_PARTS`]).
fn bench_unet(s: &Shapes, smoke: bool, rows: &mut Vec<Row>, parts: &[&str]) -> dalle::Result<()> {
    let u = &s.unet;
    let mut rng = Rng::new(5);
    if parts.contains(&"unet_gn") {
        bench_unet_gn(u, smoke, rows, &mut rng);
    }
    if parts.contains(&"unet_conv") {
        bench_unet_conv(u, smoke, rows, &mut rng);
    }
    if parts.contains(&"unet_attn") {
        bench_unet_attn(u, smoke, rows, &mut rng);
    }
    if parts.contains(&"unet_res") {
        bench_unet_res(u, smoke, rows, &mut rng);
    }
    Ok(())
}

/// A linear layer's weight `(o, i)` and bias, PyTorch's `(out, in)` layout.
fn lin(o: usize, i: usize, rng: &mut Rng) -> (Tensor, Tensor) {
    (Tensor::param(rng.normal_array(&[o, i]) * 0.02), Tensor::param(ArrayD::zeros(IxDyn(&[o]))))
}

/// GroupNorm(G) + SiLU.
fn bench_unet_gn(u: &UnetShapes, smoke: bool, rows: &mut Vec<Row>, rng: &mut Rng) {
    let (shape, groups) = u.gn;
    let x = Tensor::param(rng.normal_array(&shape));
    let (g, b) = norm_params(shape[1]);
    let dy = rng.normal_array(&shape);
    // As the U-Net computes it (nn::GroupNorm::forward_silu): one op.
    let ms = fwd_bwd(smoke, &[&x, &g, &b], &dy, || x.group_norm_silu(groups, &g, &b, 1e-5).expect("group_norm shapes"));
    rows.push(Row { case: "unet_gn_silu_fwd_bwd".into(), ours_ms: ms, flops: None });
}

/// 3x3 convolutions, C -> C, padding 1.
fn bench_unet_conv(u: &UnetShapes, smoke: bool, rows: &mut Vec<Row>, rng: &mut Rng) {
    for shape in u.convs {
        let [n, c, h, w] = shape;
        let x = Tensor::param(rng.normal_array(&shape));
        let (wt, bias) = conv_params(c, c, rng);
        let dy = rng.normal_array(&shape);
        let ms = fwd_bwd(smoke, &[&x, &wt, &bias], &dy, || x.conv2d(&wt, Some(&bias), 1, 1).expect("conv shapes"));
        let fwd_flops = 2.0 * (n * c * h * w * c * 9) as f64;
        rows.push(Row { case: format!("unet_conv{c}_{h}x{w}_fwd_bwd"), ours_ms: ms, flops: Some(3.0 * fwd_flops) });
    }
}

/// Self-attention over the pixels of a feature map, no mask.
fn bench_unet_attn(u: &UnetShapes, smoke: bool, rows: &mut Vec<Row>, rng: &mut Rng) {
    let (bsz, t, c, heads) = u.attn;
    let (qkv, proj) = (lin(3 * c, c, rng), lin(c, c, rng));
    let x = Tensor::param(rng.normal_array(&[bsz, t, c]));
    let dy = rng.normal_array(&[bsz, t, c]);
    // As the U-Net's attention computes it (nn::ContextAttention): Q, K, V in
    // channel blocks, one op for the heads' attention, then W_O.
    let attention = || -> dalle::Result<Tensor> {
        let qkv = x.linear(&qkv.0, Some(&qkv.1))?.chunk(3, -1)?; // 3 x (B, T, C)
        Tensor::multi_head_attention(&qkv[0], &qkv[1], &qkv[2], heads, None)?.linear(&proj.0, Some(&proj.1)) // (B, T, C)
    };
    let ms = fwd_bwd(smoke, &[&x, &qkv.0, &qkv.1, &proj.0, &proj.1], &dy, || attention().expect("attention shapes"));
    // Linear layers: 2·B·T·4C²; attention: 2 · 2·B·T²·C; backward twice the forward.
    let fwd_flops = 2.0 * (bsz * t) as f64 * (4 * c * c) as f64 + 4.0 * (bsz * t * t * c) as f64;
    rows.push(Row { case: "unet_attn_fwd_bwd".into(), ours_ms: ms, flops: Some(3.0 * fwd_flops) });
}

/// A residual block: h = SiLU(GN(conv1(x))) + W t, out = x + SiLU(GN(conv2(h))).
fn bench_unet_res(u: &UnetShapes, smoke: bool, rows: &mut Vec<Row>, rng: &mut Rng) {
    let (shape, temb) = u.res;
    let [n, c, _, _] = shape;
    let x = Tensor::param(rng.normal_array(&shape));
    let emb = Tensor::param(rng.normal_array(&[n, temb]));
    let (conv1, conv2) = (conv_params(c, c, rng), conv_params(c, c, rng));
    let (gn1, gn2) = (norm_params(c), norm_params(c));
    let t_proj = lin(c, temb, rng);
    let dy = rng.normal_array(&shape);
    let params = [&x, &emb, &conv1.0, &conv1.1, &conv2.0, &conv2.1, &gn1.0, &gn1.1, &gn2.0, &gn2.1, &t_proj.0, &t_proj.1];
    let block = || -> dalle::Result<Tensor> {
        let h = x.conv2d(&conv1.0, Some(&conv1.1), 1, 1)?.group_norm_silu(8, &gn1.0, &gn1.1, 1e-5)?; // (N, C, H, W)
        let t = emb.linear(&t_proj.0, Some(&t_proj.1))?.reshape(&[n as isize, c as isize, 1, 1])?; // (N, C, 1, 1)
        let h = h.add(&t)?.conv2d(&conv2.0, Some(&conv2.1), 1, 1)?.group_norm_silu(8, &gn2.0, &gn2.1, 1e-5)?;
        x.add(&h)
    };
    let ms = fwd_bwd(smoke, &params, &dy, || block().expect("residual block shapes"));
    rows.push(Row { case: "unet_resblock_fwd_bwd".into(), ours_ms: ms, flops: None });
}

/// The environment that holds PyTorch (and numpy's OpenBLAS) to our tier's
/// instruction set: ATen's vectorised kernels, oneDNN (convolutions) and MKL
/// (GEMM) each have their own switch. At the AVX-512 tier they choose for
/// themselves. There is no SSE2-only setting: "portable" holds them to their
/// lowest, ATen's scalar-compiled `default` kernels and SSE4.1/4.2 in oneDNN
/// and MKL.
fn torch_tier_env(tier: Tier) -> Vec<(&'static str, &'static str)> {
    match tier {
        Tier::Avx512 => vec![],
        Tier::Avx2Fma => vec![("ATEN_CPU_CAPABILITY", "avx2"), ("ONEDNN_MAX_CPU_ISA", "AVX2"), ("MKL_ENABLE_INSTRUCTIONS", "AVX2"), ("OPENBLAS_CORETYPE", "Haswell")],
        Tier::Portable => vec![("ATEN_CPU_CAPABILITY", "default"), ("ONEDNN_MAX_CPU_ISA", "SSE41"), ("MKL_ENABLE_INSTRUCTIONS", "SSE4_2"), ("OPENBLAS_CORETYPE", "Nehalem")],
    }
}

/// Run benches/torch_bench.py; its last stdout line is JSON. Err says why it was skipped.
fn run_torch(cases: &str, smoke: bool) -> Result<serde_json::Value, String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/torch_bench.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script).args(["--cases", cases]);
    if smoke {
        cmd.arg("--smoke");
    }
    // As many threads as rayon uses here (2 on the book's machine; RAYON_NUM_THREADS=1 for a
    // one-core comparison). OpenBLAS picks its own kernel for this CPU: these two variables,
    // set on some machines for old OpenBLAS builds, would force a slower one.
    let threads = rayon::current_num_threads().to_string();
    for var in ["BENCH_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"] {
        cmd.env(var, &threads);
    }
    cmd.env_remove("OPENBLAS_CORETYPE").env_remove("OPENBLAS_L2_SIZE");
    for (var, value) in torch_tier_env(tier()) {
        cmd.env(var, value);
    }
    let out = cmd.output().map_err(|e| format!("could not run python3: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("");
    let json: serde_json::Value = serde_json::from_str(last)
        .map_err(|e| format!("{} gave no JSON ({e}); stderr: {}", script.display(), String::from_utf8_lossy(&out.stderr).trim()))?;
    if let Some(err) = json.get("error") {
        return Err(err.to_string());
    }
    Ok(json)
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into())
}

fn fmt_ratio(ours: f64, theirs: Option<f64>) -> String {
    theirs.map(|t| format!("{:.2}", ours / t)).unwrap_or_else(|| "-".into())
}

fn main() {
    // Kernels split their work with rayon; see `on_worker` for why main runs on the pool.
    if let Err(e) = dalle::backend::on_worker(|| run(Args::parse())) {
        eprintln!("bench_engine: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> dalle::Result<()> {
    if args.tiers {
        return run_tiers(&args);
    }
    let shapes = Shapes::new(args.smoke);
    let wanted: Vec<&str> = args.cases.split(',').map(str::trim).collect();
    let known = ["sgemm", "conv", "layernorm", "softmax", "block", "unet", "unet_gn", "unet_conv", "unet_attn", "unet_res"];
    if let Some(bad) = wanted.iter().find(|c| !known.contains(c)) {
        return Err(dalle::Error::Config(format!("--cases: unknown case {bad:?}, expected some of {known:?}")));
    }
    let size = if args.smoke { "smoke" } else { "full" };
    println!("== bench_engine: {} rayon threads, {size} sizes, CPU tier {} (this CPU's best: {})", rayon::current_num_threads(), tier(), detected());
    let mut rows = Vec::new();
    for case in &wanted {
        match *case {
            "sgemm" => bench_sgemm(&shapes, args.smoke, &mut rows),
            "conv" => bench_conv(&shapes, args.smoke, &mut rows),
            "layernorm" => bench_layernorm(&shapes, args.smoke, &mut rows),
            "softmax" => bench_softmax(&shapes, args.smoke, &mut rows),
            "block" => bench_block(&shapes, args.smoke, &mut rows),
            "unet" => bench_unet(&shapes, args.smoke, &mut rows, &UNET_PARTS)?,
            part => bench_unet(&shapes, args.smoke, &mut rows, &[part])?,
        }
    }

    let mut reference: BTreeMap<String, (Option<f64>, Option<f64>)> = BTreeMap::new();
    let mut note = String::from("PyTorch not run (pass --torch)");
    if args.torch {
        match run_torch(&wanted.join(","), args.smoke) {
            Ok(json) => {
                note = format!(
                    "PyTorch {} on {} threads, CPU capability {}; numpy BLAS: {}",
                    json["torch"].as_str().unwrap_or("?"),
                    json["threads"],
                    json["capability"].as_str().unwrap_or("?"),
                    json["blas"].as_str().unwrap_or("?")
                );
                if let Some(cases) = json["cases"].as_object() {
                    for (k, v) in cases {
                        reference.insert(k.clone(), (v["torch_ms"].as_f64(), v["numpy_ms"].as_f64()));
                    }
                }
            }
            Err(why) => note = format!("PyTorch comparison skipped: {why}"),
        }
    }

    let header = "| case | ours ms | torch ms | numpy ms | ours/torch | ours/numpy | ours GFLOP/s |";
    let mut table = format!("{header}\n|---|---:|---:|---:|---:|---:|---:|\n");
    let mut json_rows = Vec::new();
    for r in &rows {
        let (t, np) = reference.get(&r.case).copied().unwrap_or((None, None));
        let gflops = r.flops.map(|f| format!("{:.1}", f / (r.ours_ms * 1e6))).unwrap_or_else(|| "-".into());
        table += &format!(
            "| {} | {:.3} | {} | {} | {} | {} | {} |\n",
            r.case, r.ours_ms, fmt_ms(t), fmt_ms(np), fmt_ratio(r.ours_ms, t), fmt_ratio(r.ours_ms, np), gflops
        );
        json_rows.push(serde_json::json!({ "case": r.case, "ours_ms": r.ours_ms, "torch_ms": t, "numpy_ms": np }));
    }
    let tier_line = format!("CPU tier {} (this CPU's best: {})", tier(), detected());
    println!("{table}\n{tier_line}; {note}");
    let command = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    let md = format!("# bench_engine\n\nCommand: `cargo run --release --example bench_engine -- {command}`\n\n{table}\n{tier_line}; {note}\n");
    write(&args.out, &md)?;
    // The same numbers for `--tiers`, which runs this program once per tier.
    let json = serde_json::json!({ "tier": tier().name(), "note": note, "rows": json_rows });
    write(&args.out.with_extension("json"), &json.to_string())?;
    println!("wrote {}", args.out.display());
    Ok(())
}

/// Write `text` to `path`, making its folder.
fn write(path: &std::path::Path, text: &str) -> dalle::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| dalle::Error::io(dir, e))?;
    }
    std::fs::write(path, text).map_err(|e| dalle::Error::io(path, e))
}

/// `--tiers`: this program again for every tier the CPU supports, highest
/// first, each in a child process with `DALLE_CPU` set (a process picks its
/// tier once), then one table with ours, PyTorch's and the ratio per tier, and
/// the portable tier's time over the AVX2 tier's.
fn run_tiers(args: &Args) -> dalle::Result<()> {
    let tiers = Tier::supported();
    let exe = std::env::current_exe().map_err(|e| dalle::Error::Config(format!("--tiers: cannot find this program: {e}")))?;
    let mut results: Vec<(Tier, serde_json::Value)> = Vec::new();
    for &t in &tiers {
        let out = args.out.with_file_name(format!("bench_{}.md", t.name()));
        let mut cmd = Command::new(&exe);
        cmd.args(["--cases", &args.cases, "--out"]).arg(&out).env("DALLE_CPU", t.name());
        if args.smoke {
            cmd.arg("--smoke");
        }
        if args.torch {
            cmd.arg("--torch");
        }
        let status = cmd.status().map_err(|e| dalle::Error::Config(format!("--tiers: could not run {}: {e}", exe.display())))?;
        if !status.success() {
            return Err(dalle::Error::Config(format!("--tiers: the {t} run failed ({status})")));
        }
        let path = out.with_extension("json");
        let text = std::fs::read_to_string(&path).map_err(|e| dalle::Error::io(&path, e))?;
        let json = serde_json::from_str(&text).map_err(|e| dalle::Error::Config(format!("{}: {e}", path.display())))?;
        results.push((t, json));
    }
    let cell = |v: &serde_json::Value| v.as_f64();
    let mut header = String::from("| case |");
    let mut rule = String::from("|---|");
    for (t, _) in &results {
        header += &format!(" {t} ms | torch ms | ratio |");
        rule += "---:|---:|---:|";
    }
    let compare = tiers.contains(&Tier::Avx2Fma) && tiers.contains(&Tier::Portable);
    if compare {
        header += " portable / avx2 |";
        rule += "---:|";
    }
    let mut table = format!("{header}\n{rule}\n");
    let cases: Vec<String> = results[0].1["rows"].as_array().map(|r| r.iter().filter_map(|r| r["case"].as_str().map(String::from)).collect()).unwrap_or_default();
    for case in &cases {
        let mut line = format!("| {case} |");
        let mut ours_at = BTreeMap::new();
        for (t, json) in &results {
            let row = json["rows"].as_array().and_then(|rs| rs.iter().find(|r| r["case"] == case.as_str()));
            let (ours, torch) = row.map(|r| (cell(&r["ours_ms"]), cell(&r["torch_ms"]))).unwrap_or((None, None));
            ours_at.insert(*t, ours);
            line += &format!(" {} | {} | {} |", fmt_ms(ours), fmt_ms(torch), ours.map(|o| fmt_ratio(o, torch)).unwrap_or_else(|| "-".into()));
        }
        if compare {
            let (p, a) = (ours_at[&Tier::Portable], ours_at[&Tier::Avx2Fma]);
            line += &format!(" {} |", p.map(|p| fmt_ratio(p, a)).unwrap_or_else(|| "-".into()));
        }
        table += &format!("{line}\n");
    }
    let notes: Vec<String> = results.iter().map(|(t, j)| format!("- {t}: {}", j["note"].as_str().unwrap_or("?"))).collect();
    println!("\n== bench_engine --tiers: {} rayon threads, tiers {:?} one after another\n\n{table}\n{}", rayon::current_num_threads(), tiers.iter().map(|t| t.name()).collect::<Vec<_>>(), notes.join("\n"));
    let command = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    write(&args.out, &format!("# bench_engine --tiers\n\nCommand: `cargo run --release --example bench_engine -- {command}`\n\n{table}\n{}\n", notes.join("\n")))?;
    println!("wrote {}", args.out.display());
    Ok(())
}
