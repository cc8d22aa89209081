//! Engine benchmark: our CPU kernels and ops, side by side with PyTorch and numpy.
//!
//! ```text
//! cargo run --release --example bench_engine -- --torch
//! cargo run --release --example bench_engine -- --smoke            # tiny sizes, seconds (CI)
//! cargo run --release --example bench_engine -- --cases sgemm,block --torch
//! RAYON_NUM_THREADS=1 cargo run --release --example bench_engine -- --torch   # both sides on one core
//! ```
//!
//! Every case runs twice to warm up, then `reps` times (about one second's
//! worth, 5 to 50); the table shows the median. Forward+backward cases time
//! the forward and `backward_with(dy)` (PyTorch: `y.backward(dy)`), not the
//! copy of `dy` that `backward_with` consumes, nor clearing the gradients. With `--torch`,
//! `benches/torch_bench.py` runs the same cases at the same shapes (2 threads,
//! OpenBLAS's own kernel choice for numpy) and its medians are printed beside
//! ours; `ratio` is ours / theirs, so below 1 means we are faster.

use clap::Parser;
use dalle::backend::cpu::gemm::{sgemm, MatPtr};
use dalle::{Rng, Tensor};
use ndarray::{ArrayD, IxDyn};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

#[derive(Parser)]
#[command(about = "Time sgemm, conv2d, layer_norm, softmax and a transformer block against PyTorch")]
struct Args {
    /// Tiny sizes and 3 repetitions: a check that every case runs, in seconds.
    #[arg(long)]
    smoke: bool,
    /// Also run benches/torch_bench.py (skipped with a message when python or torch is missing).
    #[arg(long)]
    torch: bool,
    /// Comma-separated cases: sgemm, conv, layernorm, softmax, block.
    #[arg(long, default_value = "sgemm,conv,layernorm,softmax,block")]
    cases: String,
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
}

impl Shapes {
    fn new(smoke: bool) -> Shapes {
        if smoke {
            Shapes { sgemm: vec![64, 128], conv: (4, 16, 16, 8, 8), layernorm: [4, 16, 32], softmax: [2, 2, 16, 16], block: (2, 8, 32, 4) }
        } else {
            Shapes { sgemm: vec![256, 512, 1024, 2048], conv: (64, 64, 64, 28, 28), layernorm: [32, 256, 256], softmax: [32, 4, 128, 128], block: (32, 64, 256, 4) }
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
    let reps = if smoke { 3 } else { (1.0 / first.max(1e-6)).ceil().clamp(5.0, 50.0) as usize };
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
        let linear = |x: &Tensor, (w, b): &(Tensor, Tensor)| x.linear(w, Some(b)); // F.linear
        let (bsz, t, c) = (x.dim(0) as isize, x.dim(1) as isize, x.dim(2) as isize);
        let (nh, d) = (self.heads as isize, c / self.heads as isize);
        let h = x.layer_norm(&self.ln1.0, &self.ln1.1, 1e-5)?; // (B, T, C)
        let qkv = linear(&h, &self.qkv)?.chunk(3, -1)?; // 3 x (B, T, C)
        let heads = |z: &Tensor| z.reshape(&[bsz, t, nh, d])?.permute(&[0, 2, 1, 3]); // (B, H, T, D)
        let (q, k, v) = (heads(&qkv[0])?, heads(&qkv[1])?, heads(&qkv[2])?);
        // softmax(Q Kᵀ / √d + causal mask) V
        let att = q.matmul(&k.t())?.scale(1.0 / (d as f32).sqrt()); // (B, H, T, T)
        let att = att.masked_fill(mask, f32::NEG_INFINITY)?.softmax(-1);
        let y = att.matmul(&v)?.permute(&[0, 2, 1, 3])?.reshape(&[bsz, t, c])?; // (B, T, C)
        let x = x.add(&linear(&y, &self.proj)?)?;
        let h = x.layer_norm(&self.ln2.0, &self.ln2.1, 1e-5)?;
        let h = linear(&linear(&h, &self.fc)?.gelu(), &self.fc_out)?; // (B, T, C)
        x.add(&h)
    }
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
    let shapes = Shapes::new(args.smoke);
    let wanted: Vec<&str> = args.cases.split(',').map(str::trim).collect();
    let known = ["sgemm", "conv", "layernorm", "softmax", "block"];
    if let Some(bad) = wanted.iter().find(|c| !known.contains(c)) {
        return Err(dalle::Error::Config(format!("--cases: unknown case {bad:?}, expected some of {known:?}")));
    }
    println!("== bench_engine: {} rayon threads, {} sizes", rayon::current_num_threads(), if args.smoke { "smoke" } else { "full" });
    let mut rows = Vec::new();
    for case in &wanted {
        match *case {
            "sgemm" => bench_sgemm(&shapes, args.smoke, &mut rows),
            "conv" => bench_conv(&shapes, args.smoke, &mut rows),
            "layernorm" => bench_layernorm(&shapes, args.smoke, &mut rows),
            "softmax" => bench_softmax(&shapes, args.smoke, &mut rows),
            _ => bench_block(&shapes, args.smoke, &mut rows),
        }
    }

    let mut reference: BTreeMap<String, (Option<f64>, Option<f64>)> = BTreeMap::new();
    let mut note = String::from("PyTorch not run (pass --torch)");
    if args.torch {
        match run_torch(&wanted.join(","), args.smoke) {
            Ok(json) => {
                note = format!("PyTorch {} on {} threads; numpy BLAS: {}", json["torch"].as_str().unwrap_or("?"), json["threads"], json["blas"].as_str().unwrap_or("?"));
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
    for r in &rows {
        let (t, np) = reference.get(&r.case).copied().unwrap_or((None, None));
        let gflops = r.flops.map(|f| format!("{:.1}", f / (r.ours_ms * 1e6))).unwrap_or_else(|| "-".into());
        table += &format!(
            "| {} | {:.3} | {} | {} | {} | {} | {} |\n",
            r.case, r.ours_ms, fmt_ms(t), fmt_ms(np), fmt_ratio(r.ours_ms, t), fmt_ratio(r.ours_ms, np), gflops
        );
    }
    println!("{table}\n{note}");
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| dalle::Error::io(dir, e))?;
    }
    let md = format!("# bench_engine\n\nCommand: `cargo run --release --example bench_engine -- {}`\n\n{table}\n{note}\n", std::env::args().skip(1).collect::<Vec<_>>().join(" "));
    std::fs::write(&args.out, md).map_err(|e| dalle::Error::io(&args.out, e))?;
    println!("wrote {}", args.out.display());
    Ok(())
}
