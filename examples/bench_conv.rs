//! One convolution layer at a time on the CPU: forward, input gradient and
//! weight gradient of each geometry, timed alone, with the path each takes
//! (`conv::direct`, `conv::strided`, `conv::implicit`, `conv::im2col`). The
//! chapters' training steps (`bench_chapters`) say which model is slow; this
//! says which of its layers, and whether a change to one path helped it.
//!
//! ```sh
//! RAYON_NUM_THREADS=2 cargo run --release --example bench_conv
//! DALLE_CPU=avx2 cargo run --release --example bench_conv -- --layer 32,32,14,14,4,2,1 --batch 64
//! cargo run --release --example bench_conv -- --smoke
//! ```
//!
//! The default layers are chapter 05's MNIST VQ-VAE (batch 64). Each pass
//! runs 10 times untimed, then `--reps` times; the table gives the median and
//! the fastest in milliseconds, and GFLOP/s of the median (2 flops per
//! multiply-add of the layer, padding excluded or not: `C KH KW` per output).
//! Run it on a quiet machine and compare binaries by alternating them.

use clap::Parser;
use dalle::backend::cpu::conv::{conv2d_backward, conv2d_forward, direct, implicit, strided, ConvGeom};
use dalle::backend::cpu::microkernel::MicroKernel;
use dalle::backend::cpu::tier::{tier, Tier};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(about = "Time single convolution layers on the CPU: forward, dX and dW, and the path each takes")]
struct Args {
    /// A layer as `C,OC,H,W,K,S,P` (channels in and out, image height and width, square kernel,
    /// stride, padding); repeat the flag for several. Default: chapter 05's MNIST VQ-VAE layers.
    #[arg(long = "layer")]
    layers: Vec<String>,
    /// Images per batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Timed repetitions of each pass.
    #[arg(long, default_value_t = 100)]
    reps: usize,
    /// Batch 2 and 2 repetitions of one small layer: a check that every pass runs.
    #[arg(long)]
    smoke: bool,
    /// Where to write the table as markdown (`conv.md` in this folder).
    #[arg(long, default_value = "runs/bench_conv")]
    out: PathBuf,
}

/// Chapter 05's MNIST VQ-VAE: the two 4x4 stride-2 downsamplings, the 3x3 and
/// 1x1 convolutions of the residual blocks at 7x7, and the decoder's 3x3
/// convolutions at 14x14 and 28x28 (the last one to one channel).
const VQ_VAE_LAYERS: [&str; 6] = ["1,32,28,28,4,2,1", "32,32,14,14,4,2,1", "32,32,7,7,3,1,1", "32,32,7,7,1,1,0", "32,32,14,14,3,1,1", "32,1,28,28,3,1,1"];

fn parse(layer: &str, n: usize) -> Result<ConvGeom, String> {
    let v: Vec<usize> = layer.split(',').map(|s| s.trim().parse::<usize>()).collect::<Result<_, _>>().map_err(|e| format!("--layer {layer:?}: {e}"))?;
    let [c, oc, h, w, k, stride, pad] = v[..] else {
        return Err(format!("--layer {layer:?}: expected 7 numbers C,OC,H,W,K,S,P, got {}", v.len()));
    };
    if c == 0 || oc == 0 || k == 0 || stride == 0 || h + 2 * pad < k || w + 2 * pad < k {
        return Err(format!("--layer {layer:?}: channels, kernel and stride must be positive and the kernel no larger than the padded image"));
    }
    Ok(ConvGeom { n, c, h, w, oc, kh: k, kw: k, stride, pad })
}

/// Which path the dispatch in `dalle::backend::cpu::conv` takes, forward and dX and dW
/// (asked of the predicates the dispatch itself calls, in its order).
fn paths(g: &ConvGeom) -> (String, String, String) {
    fn on<K: MicroKernel>(g: &ConvGeom) -> (String, String, String) {
        let fwd = if direct::forward_fits(g) {
            "direct"
        } else if strided::forward_pays::<K>(g) {
            "strided"
        } else {
            "implicit"
        };
        let dx = if implicit::input_grad_is_forward(g) {
            "implicit (flipped)"
        } else if strided::input_grad_pays::<K>(g) {
            "strided"
        } else {
            "im2col"
        };
        let dw = if direct::weight_grad_fits(g, K::NR) { "direct" } else { "implicit" };
        (fwd.into(), dx.into(), dw.into())
    }
    match tier() {
        #[cfg(target_arch = "x86_64")]
        Tier::Avx512 => on::<dalle::backend::cpu::microkernel::Avx512>(g),
        #[cfg(target_arch = "x86_64")]
        Tier::Avx2Fma => on::<dalle::backend::cpu::microkernel::Avx2>(g),
        _ => on::<dalle::backend::cpu::microkernel::Portable>(g),
    }
}

/// Median and fastest of `reps` calls in milliseconds, after 10 untimed ones.
fn time(reps: usize, mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..10 {
        f();
    }
    let mut ms: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], ms[0])
}

/// Deterministic values in [-0.5, 0.5).
fn values(len: usize, seed: usize) -> Vec<f32> {
    (0..len).map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 1000.0 - 0.5).collect()
}

fn main() {
    let args = Args::parse();
    let (batch, reps) = if args.smoke { (2, 2) } else { (args.batch, args.reps) };
    let layers: Vec<String> = if args.smoke {
        vec!["3,4,9,9,4,2,1".into()]
    } else if args.layers.is_empty() {
        VQ_VAE_LAYERS.iter().map(|s| s.to_string()).collect()
    } else {
        args.layers.clone()
    };
    let geoms: Vec<ConvGeom> = match layers.iter().map(|l| parse(l, batch)).collect() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("bench_conv: {e}");
            std::process::exit(2);
        }
    };
    let head = format!("== bench_conv: {} rayon threads, CPU tier {}, batch {batch}, {reps} timed repetitions", rayon::current_num_threads(), tier());
    println!("{head}");
    let mut table = String::from("| layer (C, OC, H, W, K, S, P) | pass | path | median ms | fastest ms | GFLOP/s |\n|---|---|---|---:|---:|---:|\n");
    print!("{table}");
    dalle::backend::on_worker(|| {
        for g in &geoms {
            let x = values(g.n * g.c * g.h * g.w, 1);
            let w = values(g.oc * g.c * g.kh * g.kw, 2);
            let dy = values(g.n * g.oc * g.oh() * g.ow(), 3);
            let (mut y, mut dx, mut dw) = (vec![0.0f32; dy.len()], vec![0.0f32; x.len()], vec![0.0f32; w.len()]);
            let flops = 2.0 * (g.n * g.oc * g.oh() * g.ow() * g.ckk()) as f64;
            let (pf, px, pw) = paths(g);
            let runs = [
                ("forward", pf, time(reps, || conv2d_forward(g, &x, &w, &mut y))),
                ("dX", px, time(reps, || conv2d_backward(g, &x, &w, &dy, Some(&mut dx), None))),
                ("dW", pw, time(reps, || conv2d_backward(g, &x, &w, &dy, None, Some(&mut dw)))),
            ];
            assert!(y.iter().chain(&dx).chain(&dw).all(|v| v.is_finite()), "a pass wrote a non-finite value");
            let name = format!("{}, {}, {}, {}, {}, {}, {}", g.c, g.oc, g.h, g.w, g.kh, g.stride, g.pad);
            for (pass, path, (median, fastest)) in runs {
                let row = format!("| {name} | {pass} | {path} | {median:.3} | {fastest:.3} | {:.1} |\n", flops / median / 1e6);
                print!("{row}");
                table.push_str(&row);
            }
        }
    });
    let mut md = String::new();
    let _ = writeln!(md, "{head}\n\n{table}");
    if let Err(e) = std::fs::create_dir_all(&args.out).and_then(|_| std::fs::write(args.out.join("conv.md"), md)) {
        eprintln!("bench_conv: cannot write {}: {e}", args.out.display());
        std::process::exit(1);
    }
}
