//! sgemm and one training step of a chapter model (the digit judge CNN of
//! chapter 00, batch 128) on the CPU and on the wgpu backend, side by side; with
//! `--torch`, PyTorch's CUDA time for the same cases (`benches/torch_gpu_bench.py`).
//!
//! ```text
//! cargo run --release --example bench_wgpu                      # 1024..8192 on a GPU
//! cargo run --release --example bench_wgpu -- --sizes 256,512,1024 --torch
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

    /// sgemm and a training step: CPU vs wgpu.
    #[derive(Parser)]
    struct Args {
        /// Square sizes n to multiply (n x n times n x n).
        /// Default: 1024,2048,4096,8192 on a GPU; 256,512,1024 on a software adapter.
        #[arg(long, value_delimiter = ',')]
        sizes: Option<Vec<usize>>,
        /// Also run `python3 benches/torch_gpu_bench.py` (PyTorch on CUDA, TF32 off).
        #[arg(long)]
        torch: bool,
        /// A quick run: sizes 64 and 128, one timed call each.
        #[arg(long)]
        smoke: bool,
        /// Folder for `bench.md`, the table as Markdown.
        #[arg(long, default_value = "runs/bench_wgpu")]
        out: std::path::PathBuf,
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
        use dalle::backend::cpu::gemm::{sgemm, MatPtr};
        let mut c = vec![0.0f32; n * n];
        let row_major = |p: &[f32]| MatPtr { ptr: p.as_ptr(), rs: n as isize, cs: 1 };
        // C = 1 · A B + 0 · C, all row-major: the engine's own CPU GEMM on every thread
        unsafe { sgemm(n, n, n, 1.0, row_major(a), row_major(b), 0.0, c.as_mut_ptr(), n as isize, 1) };
        c
    }

    /// Median time of one Adam step of the digit judge on the CPU and on wgpu, and
    /// the difference of the first step's loss between the two.
    fn judge_step(batch: usize, reps: usize) -> dalle::Result<(f64, f64, f32)> {
        use dalle::backend::{set_device, Device};
        use dalle::eval::DigitJudge;
        use dalle::nn::Module;
        use dalle::optim::{Adam, Optimizer};
        use dalle::{Rng, Tensor};
        let mut per_device = Vec::new();
        for device in [Device::Cpu, Device::Wgpu] {
            set_device(device)?;
            let mut rng = Rng::new(1);
            let judge = DigitJudge::new(&mut rng);
            let x = Tensor::new(rng.uniform_array(&[batch, 1, 28, 28], 0.0, 1.0));
            let y: Vec<usize> = (0..batch).map(|i| i % 10).collect();
            let mut opt = Adam::new(judge.named_parameters(), 1e-3);
            let mut first_loss = None;
            let (t, _) = time(reps, || {
                opt.zero_grad();
                let loss = judge.forward(&x).and_then(|l| l.cross_entropy(&y)).expect("shapes are fixed");
                loss.backward();
                opt.step();
                first_loss.get_or_insert(loss.item());
            });
            per_device.push((t.as_secs_f64() * 1e3, first_loss.unwrap_or(0.0)));
        }
        set_device(Device::Cpu)?;
        Ok((per_device[0].0, per_device[1].0, (per_device[0].1 - per_device[1].1).abs()))
    }

    /// PyTorch's CUDA numbers, or None (with the reason printed).
    fn torch_gpu(sizes: &[usize]) -> Option<serde_json::Value> {
        let list: Vec<String> = sizes.iter().map(|s| s.to_string()).collect();
        let out = std::process::Command::new("python3").args(["benches/torch_gpu_bench.py", "--sizes", &list.join(",")]).output();
        let value = out.ok().and_then(|o| String::from_utf8_lossy(&o.stdout).lines().last().and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok()));
        match value {
            Some(v) if v.get("error").is_none() => Some(v),
            Some(v) => {
                println!("torch: {}", v["error"]);
                None
            }
            None => {
                println!("torch: could not run python3 benches/torch_gpu_bench.py");
                None
            }
        }
    }

    pub fn main() -> dalle::Result<()> {
        let args = Args::parse();
        let (sizes, reps) = if args.smoke { (vec![64, 128], 1) } else { (args.sizes.clone().unwrap_or_default(), 5) };
        let ctx = match global() {
            Ok(ctx) => ctx,
            Err(e) => {
                println!("{e}: nothing to benchmark on wgpu");
                return Ok(());
            }
        };
        println!("adapter: {}", ctx.describe());
        if ctx.is_software() {
            println!("note: a software rasterizer (device type Cpu): these wgpu numbers are a correctness run, not a GPU speed");
        }
        let sizes = if sizes.is_empty() {
            if ctx.is_software() { vec![256, 512, 1024] } else { vec![1024, 2048, 4096, 8192] }
        } else {
            sizes
        };
        let torch = if args.torch { torch_gpu(&sizes) } else { None };
        println!("cpu: the engine's sgemm on {} threads; median of {reps} calls after a warm-up\n", rayon::current_num_threads());
        let mut md = format!(
            "adapter: {}\n\n| n | cpu ms | GFLOP/s | wgpu upload ms | GFLOP/s | wgpu resident ms | GFLOP/s | max diff |\n|---|---|---|---|---|---|---|---|\n",
            ctx.describe()
        );
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
            md.push_str(&format!(
                "| {n} | {:.2} | {:.1} | {:.2} | {:.1} | {:.2} | {:.1} | {:.1e} |\n",
                t_cpu.as_secs_f64() * 1e3,
                gflops(n, t_cpu),
                t_up.as_secs_f64() * 1e3,
                gflops(n, t_up),
                t_res.as_secs_f64() * 1e3,
                gflops(n, t_res),
                diff
            ));
        }
        let (cpu_ms, gpu_ms, loss_diff) = judge_step(if args.smoke { 8 } else { 128 }, if args.smoke { 1 } else { reps })?;
        let torch_ms = torch.as_ref().and_then(|t| t["judge_step_ms"].as_f64());
        println!("\ntraining step, chapter 00 digit judge (batch {}): cpu {cpu_ms:.1} ms, wgpu {gpu_ms:.1} ms ({:.2}x), |loss difference| {loss_diff:.1e}{}",
            if args.smoke { 8 } else { 128 }, cpu_ms / gpu_ms,
            torch_ms.map(|t| format!(", torch cuda {t:.2} ms")).unwrap_or_default());
        md.push_str(&format!("\n| training step (digit judge, batch {}) | cpu ms | wgpu ms | cpu / wgpu | torch cuda ms |\n|---|---|---|---|---|\n| | {cpu_ms:.1} | {gpu_ms:.1} | {:.2} | {} |\n",
            if args.smoke { 8 } else { 128 }, cpu_ms / gpu_ms, torch_ms.map(|t| format!("{t:.2}")).unwrap_or("-".into())));
        if let Some(t) = &torch {
            md.push_str(&format!("\nPyTorch sgemm on {} (TF32 off), ms: {}\n", t["device"], t["sgemm"]));
        }
        let path = args.out.join("bench.md");
        dalle::io::write_atomic(&path, md.as_bytes())?;
        println!("wrote {}", path.display());
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
