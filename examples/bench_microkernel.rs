//! The GEMM micro-kernel of every CPU tier alone, on operands that stay in
//! cache: the most multiply-adds per second each tier's inner loop can do, and
//! so the best ratio between tiers that any GEMM-bound case can reach.
//!
//! ```sh
//! RAYON_NUM_THREADS=1 cargo run --release --example bench_microkernel
//! cargo run --release --example bench_microkernel -- --smoke
//! ```
//!
//! Each kernel computes one full `MR x NR` tile from a packed sliver of A and
//! a packed panel of B, `kc = 384` deep (the packed GEMM's k block), again and
//! again; the best of several timed rounds is reported in GFLOP/s (2 flops per
//! multiply-add), beside the AVX2 kernel's rate. The portable kernel is timed
//! twice on x86-64: on the sliver as packed (a shuffle per broadcast of A) and
//! on the widened sliver the packed GEMM gives it (`MicroKernel::tile_wide`).

use clap::Parser;
use dalle::backend::cpu::microkernel::{MicroKernel, Portable};
use dalle::backend::cpu::tier::Tier;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(about = "Time each CPU tier's GEMM micro-kernel on operands in cache")]
struct Args {
    /// A few repetitions: a check that every kernel runs, in well under a second.
    #[arg(long)]
    smoke: bool,
    /// Where to write the table as markdown.
    #[arg(long, default_value = "runs/bench_microkernel")]
    out: PathBuf,
}

/// Depth of the k loop: the packed GEMM's k block.
const KC: usize = 384;

/// One kernel's rate: GFLOP/s of full tiles, best of `rounds` rounds of `reps` tiles.
fn rate<K: MicroKernel>(wide: bool, reps: usize, rounds: usize) -> f64 {
    let copies = if wide { K::A_COPIES } else { 1 };
    let a: Vec<f32> = (0..KC * K::MR * copies).map(|i| (i % 7) as f32 * 0.125).collect();
    let b: Vec<f32> = (0..KC * K::NR).map(|i| (i % 5) as f32 * 0.25).collect();
    let mut c = vec![0.0f32; K::MR * K::NR];
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..reps {
            // SAFETY: the CPU runs this tier (checked by the caller); a, b, c hold
            // the sizes `tile` asks for; beta = 1 keeps every tile's result live.
            unsafe {
                if wide {
                    K::tile_wide(K::MR, KC, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), K::NR, K::NR, 1.0, 1.0)
                } else {
                    K::tile(K::MR, KC, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), K::NR, K::NR, 1.0, 1.0)
                }
            }
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    assert!(c.iter().all(|v| v.is_finite()), "the kernel wrote a non-finite value");
    (2 * K::MR * K::NR * KC * reps) as f64 / best / 1e9 // 2 flops per multiply-add
}

fn main() {
    let args = Args::parse();
    let (reps, rounds) = if args.smoke { (20, 2) } else { (20_000, 15) };
    let tiers = Tier::supported();
    let mut rows: Vec<(String, String, f64)> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        use dalle::backend::cpu::microkernel::{Avx2, Avx512};
        if tiers.contains(&Tier::Avx512) {
            rows.push(("AVX-512".into(), format!("{} x {}", Avx512::MR, Avx512::NR), rate::<Avx512>(false, reps, rounds)));
        }
        if tiers.contains(&Tier::Avx2Fma) {
            rows.push(("AVX2 + FMA".into(), format!("{} x {}", Avx2::MR, Avx2::NR), rate::<Avx2>(false, reps, rounds)));
        }
    }
    let shape = format!("{} x {}", Portable::MR, Portable::NR);
    rows.push(("portable, sliver as packed".into(), shape.clone(), rate::<Portable>(false, reps, rounds)));
    if Portable::A_COPIES > 1 {
        rows.push(("portable, widened sliver (the GEMM's)".into(), shape, rate::<Portable>(true, reps, rounds)));
    }
    let avx2 = rows.iter().find(|r| r.0 == "AVX2 + FMA").map(|r| r.2);
    let mut table = String::from("| kernel | tile | GFLOP/s | AVX2 / this |\n|---|---|---:|---:|\n");
    for (name, tile, gflops) in &rows {
        let ratio = avx2.map_or("-".to_string(), |a| format!("{:.2}", a / gflops));
        table += &format!("| {name} | {tile} | {gflops:.1} | {ratio} |\n");
    }
    println!("GEMM micro-kernels, kc = {KC}, operands in cache, one thread ({})", if args.smoke { "smoke" } else { "full" });
    print!("{table}");
    if let Err(e) = std::fs::create_dir_all(&args.out).and_then(|_| std::fs::write(args.out.join("microkernel.md"), &table)) {
        eprintln!("bench_microkernel: cannot write {}: {e}", args.out.display());
        std::process::exit(1);
    }
}
