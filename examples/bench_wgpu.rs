//! sgemm on the CPU (matrixmultiply, multithreaded) and on the wgpu backend, side by side.
//!
//! ```text
//! cargo run --release --example bench_wgpu -- --sizes 256,512,1024
//! cargo run --release --example bench_wgpu -- --smoke
//! ```
//!
//! Each row multiplies two n x n matrices. The wgpu columns time a whole call as the
//! engine sees it: "upload" sends both operands and reads C back; "resident" keeps A and
//! B on the GPU (as parameters are) so only the kernel and the read-back remain. The
//! check column is the largest difference from the CPU result relative to max |C|.
//! On a software adapter (lavapipe, llvmpipe) the numbers are a correctness run, not a
//! measure of any GPU.

#[cfg(feature = "wgpu")]
mod bench {
    use std::time::{Duration, Instant};

    use clap::Parser;
    use dalle::backend::wgpu::{global, matmul, MatmulShape, Operand};

    /// sgemm: CPU (matrixmultiply) vs wgpu.
    #[derive(Parser)]
    struct Args {
        /// Square sizes n to multiply (n x n times n x n).
        #[arg(long, value_delimiter = ',', default_values_t = [256usize, 512, 1024])]
        sizes: Vec<usize>,
        /// A quick run: sizes 64 and 128, one timed call each.
        #[arg(long)]
        smoke: bool,
    }

    /// Median of `reps` timed calls of `f` after one untimed warm-up call.
    fn time<T>(reps: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
        let mut out = f();
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps {
            let start = Instant::now();
            out = f();
            times.push(start.elapsed());
        }
        times.sort();
        (times[times.len() / 2], out)
    }

    fn gflops(n: usize, t: Duration) -> f64 {
        2.0 * (n as f64).powi(3) / t.as_secs_f64() / 1e9
    }

    fn cpu_sgemm(a: &[f32], b: &[f32], n: usize) -> Vec<f32> {
        let mut c = vec![0.0f32; n * n];
        // C = 1 · A B + 0 · C, all row-major (row stride n, column stride 1)
        unsafe {
            matrixmultiply::sgemm(
                n,
                n,
                n,
                1.0,
                a.as_ptr(),
                n as isize,
                1,
                b.as_ptr(),
                n as isize,
                1,
                0.0,
                c.as_mut_ptr(),
                n as isize,
                1,
            );
        }
        c
    }

    pub fn main() -> dalle::Result<()> {
        let args = Args::parse();
        let (sizes, reps) = if args.smoke {
            (vec![64, 128], 1)
        } else {
            (args.sizes, 5)
        };
        let ctx = global()?;
        println!("adapter: {}", ctx.describe());
        if ctx.is_software() {
            println!("note: a software rasterizer (device type Cpu): these wgpu numbers are a correctness run, not a GPU speed");
        }
        let threads =
            std::env::var("MATMUL_NUM_THREADS").unwrap_or_else(|_| "physical cores".into());
        println!("cpu: matrixmultiply::sgemm, threads = {threads}; median of {reps} calls after a warm-up\n");
        println!(
            "{:>6} | {:>10} {:>8} | {:>10} {:>8} | {:>10} {:>8} | {:>9}",
            "n", "cpu ms", "GFLOP/s", "upload ms", "GFLOP/s", "resid. ms", "GFLOP/s", "max diff"
        );
        for n in sizes {
            let a: Vec<f32> = (0..n * n)
                .map(|i| ((i * 7 + 3) % 13) as f32 / 13.0 - 0.5)
                .collect();
            let b: Vec<f32> = (0..n * n)
                .map(|i| ((i * 5 + 1) % 11) as f32 / 11.0 - 0.5)
                .collect();
            let shape = MatmulShape::new(n, n, n);
            let (t_cpu, c_cpu) = time(reps, || cpu_sgemm(&a, &b, n));
            let (t_up, c_up) = time(reps, || matmul(ctx, &a, &b, &shape));
            let c_up = c_up?;
            let (t_res, c_res) = time(reps, || {
                matmul(
                    ctx,
                    Operand::resident(1, n as u64, &a),
                    Operand::resident(2, n as u64, &b),
                    &shape,
                )
            });
            let c_res = c_res?;
            let scale = c_cpu.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
            let max_diff = |c: &[f32]| {
                c_cpu
                    .iter()
                    .zip(c)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max)
            };
            let diff = max_diff(&c_up).max(max_diff(&c_res)) / scale;
            println!(
                "{n:>6} | {:>10.2} {:>8.1} | {:>10.2} {:>8.1} | {:>10.2} {:>8.1} | {:>9.1e}",
                t_cpu.as_secs_f64() * 1e3,
                gflops(n, t_cpu),
                t_up.as_secs_f64() * 1e3,
                gflops(n, t_up),
                t_res.as_secs_f64() * 1e3,
                gflops(n, t_res),
                diff
            );
        }
        Ok(())
    }
}

#[cfg(feature = "wgpu")]
fn main() -> dalle::Result<()> {
    bench::main()
}

#[cfg(not(feature = "wgpu"))]
fn main() {
    eprintln!("bench_wgpu needs the `wgpu` feature (on by default)");
}
