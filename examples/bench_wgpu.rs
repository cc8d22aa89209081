//! sgemm, the matmul kernels alone, the bus, and three training steps (chapter 00's
//! digit judge CNN and chapter 05's CIFAR-10 VQ-VAE at batch 128, and two pre-LN
//! transformer blocks of width 256 on 32 sequences of 64 tokens) on the CPU
//! and on the wgpu backend, side by side; with `--torch`, PyTorch's CUDA time for the
//! same cases (`benches/torch_gpu_bench.py`).
//!
//! ```text
//! cargo run --release --example bench_wgpu                      # 1024..8192 on a GPU
//! cargo run --release --example bench_wgpu -- --sizes 256,512,1024 --torch
//! cargo run --release --example bench_wgpu -- --kernels-only    # kernels and bus only
//! cargo run --release --example bench_wgpu -- --smoke
//! ```
//!
//! Each sgemm row multiplies two n x n matrices. The wgpu columns time a whole call as
//! the engine sees it: "upload" sends both operands and reads C back; "resident" keeps A
//! and B on the GPU (as parameters are) so only the kernel and the read-back remain.
//! The check column is the largest difference from the CPU result relative to max |C|.
//! The kernel table times each kernel alone (many dispatches in one submission, no
//! transfers), with and without wgpu's injected bounds checks (the engine uses them
//! without), beside PyTorch's sgemm. Training steps run on four set-ups: the CPU; tensors on
//! the host with every matmul and conv sent to the GPU; the same with the default
//! arithmetic-intensity threshold (`dalle::backend::set_min_gpu_intensity`); and tensors
//! resident on the GPU (`dalle::backend::set_resident`, the default for `--device wgpu`),
//! each with the megabytes one step moves over the bus. `RAYON_NUM_THREADS` sets the CPU threads (the project's numbers use 2).
//! On a software adapter (lavapipe, llvmpipe) the numbers are a correctness run, not a
//! measure of any GPU.

#[cfg(feature = "wgpu")]
mod bench {
    use std::time::{Duration, Instant};

    use clap::Parser;
    use dalle::backend::wgpu::{
        global, matmul, time_matmul_pipeline, MatmulShape, Operand, WgpuContext, MATMUL128_WGSL, MATMUL_WGSL,
    };

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
        /// Only the kernel variants and the transfer speeds (no CPU, no training steps).
        #[arg(long)]
        kernels_only: bool,
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
        let row_major = |p: &[f32]| MatPtr {
            ptr: p.as_ptr(),
            rs: n as isize,
            cs: 1,
        };
        // C = 1 · A B + 0 · C, all row-major: the engine's own CPU GEMM on every thread
        unsafe {
            sgemm(
                n,
                n,
                n,
                1.0,
                row_major(a),
                row_major(b),
                0.0,
                c.as_mut_ptr(),
                n as isize,
                1,
            )
        };
        c
    }

    /// One model's training step, built on each device in turn: its parameters and a
    /// closure computing the loss of one fixed batch.
    type Step = (Vec<(String, dalle::Tensor)>, Box<dyn Fn() -> dalle::Result<dalle::Tensor>>);

    /// One training step's timing on one set-up.
    struct StepTime {
        /// Median milliseconds per step.
        ms: f64,
        /// The first step's loss.
        loss: f32,
        /// MB sent to and fetched from the GPU per step.
        mb_up: f64,
        mb_down: f64,
        /// GPU queue submissions per step.
        submissions: f64,
    }

    /// The four set-ups a step is timed on: the CPU; tensors on the host with every
    /// matmul and conv sent to the GPU (threshold 0); the same with the default
    /// arithmetic-intensity threshold; tensors resident on the GPU (every op with a GPU
    /// kernel runs there and leaves its output there).
    const SETUPS: [(&str, Option<f32>, bool); 4] = [
        ("cpu", None, false),
        ("wgpu, every op", Some(0.0), false),
        ("wgpu, by intensity", Some(dalle::backend::DEFAULT_MIN_GPU_INTENSITY), false),
        ("wgpu, resident", Some(dalle::backend::DEFAULT_MIN_GPU_INTENSITY), true),
    ];

    /// Median time of one Adam step on each of [`SETUPS`].
    fn train_step(reps: usize, build: impl Fn() -> dalle::Result<Step>) -> dalle::Result<Vec<StepTime>> {
        use dalle::backend::{set_device, set_min_gpu_intensity, set_resident, Device, DEFAULT_MIN_GPU_INTENSITY};
        use dalle::optim::{Adam, Optimizer};
        let ctx = global()?;
        let mut out = Vec::new();
        for (_, threshold, resident) in SETUPS {
            set_device(if threshold.is_some() { Device::Wgpu } else { Device::Cpu })?;
            set_resident(resident);
            set_min_gpu_intensity(threshold.unwrap_or(DEFAULT_MIN_GPU_INTENSITY));
            let (params, loss_of) = build()?;
            let mut opt = Adam::new(params, 1e-3);
            let mut first_loss = None;
            let mut step = || -> dalle::Result<()> {
                opt.zero_grad();
                let loss = loss_of()?;
                loss.backward();
                opt.step();
                first_loss.get_or_insert(loss.item());
                Ok(())
            };
            step()?;
            let before = ctx.stats();
            let (t, result) = time(reps, &mut step);
            result?;
            let after = ctx.stats();
            let per_step = |a: u64, b: u64| (a - b) as f64 / 1e6 / (reps + 1) as f64;
            out.push(StepTime {
                ms: t.as_secs_f64() * 1e3,
                loss: first_loss.unwrap_or(0.0),
                mb_up: per_step(after.bytes_uploaded, before.bytes_uploaded),
                mb_down: per_step(after.bytes_downloaded, before.bytes_downloaded),
                submissions: (after.submissions - before.submissions) as f64 / (reps + 1) as f64,
            });
        }
        set_device(Device::Cpu)?;
        set_min_gpu_intensity(DEFAULT_MIN_GPU_INTENSITY);
        set_resident(true);
        Ok(out)
    }

    /// Chapter 00's digit judge on a batch of `batch` 28x28 images.
    fn judge(batch: usize) -> dalle::Result<Step> {
        use dalle::eval::DigitJudge;
        use dalle::nn::Module;
        use dalle::{Rng, Tensor};
        let mut rng = Rng::new(1);
        let judge = DigitJudge::new(&mut rng);
        let x = Tensor::new(rng.uniform_array(&[batch, 1, 28, 28], 0.0, 1.0));
        let y: Vec<usize> = (0..batch).map(|i| i % 10).collect();
        let params = judge.named_parameters();
        Ok((params, Box::new(move || judge.forward(&x)?.cross_entropy(&y))))
    }

    /// Chapter 05's CIFAR-10 VQ-VAE with `hidden` channels on `batch` 32x32 images.
    fn vq_vae(batch: usize, hidden: usize) -> dalle::Result<Step> {
        use dalle::models::vqvae::{VqVae, VqVaeConfig};
        use dalle::nn::Module;
        use dalle::{Rng, Tensor};
        let mut rng = Rng::new(2);
        let model = VqVae::new(VqVaeConfig { hidden, ..VqVaeConfig::cifar10() }, &mut rng)?;
        let x = Tensor::new(rng.uniform_array(&[batch, 3, 32, 32], 0.0, 1.0));
        let params = model.named_parameters();
        Ok((params, Box::new(move || model.forward(&x, true)?.loss())))
    }

    /// Two pre-LN transformer blocks (chapters 01 to 03; width `dim`, 4 heads, GELU, final
    /// LayerNorm, causal mask) on `batch` sequences of 64 tokens; the loss is `mean(y²)`.
    fn transformer(batch: usize, dim: usize) -> dalle::Result<Step> {
        use dalle::nn::attention::causal_mask;
        use dalle::nn::transformer::{Transformer, TransformerConfig};
        use dalle::nn::Module;
        use dalle::{Rng, Tensor};
        let mut rng = Rng::new(4);
        let model = Transformer::new(TransformerConfig::new(dim, 4, 2), &mut rng)?;
        let x = Tensor::new(rng.normal_array(&[batch, 64, dim]));
        let mask = causal_mask(64, 64);
        let params = model.named_parameters();
        Ok((params, Box::new(move || Ok(model.forward(&x, Some(&mask), true)?.output.square().mean()))))
    }

    /// GFLOP/s of each matmul kernel alone, with and without wgpu's injected bounds checks,
    /// and PyTorch's sgemm when `torch` holds its times.
    fn kernel_variants(
        ctx: &WgpuContext,
        sizes: &[usize],
        reps: usize,
        torch: Option<&serde_json::Value>,
        md: &mut String,
    ) -> dalle::Result<()> {
        let sources = [
            ("tile 64", 64, MATMUL_WGSL),
            ("tile 128", 128, MATMUL128_WGSL),
        ];
        let mut variants = Vec::new();
        for (name, tile, source) in sources {
            variants.push((format!("{name} checked"), tile, ctx.compile_pipeline(name, source, "matmul")?));
            // SAFETY: both kernels guard every index against the matrix sizes
            let unchecked = unsafe { ctx.compile_pipeline_unchecked(name, source, "matmul")? };
            variants.push((format!("{name} unchecked"), tile, unchecked));
        }
        let mut names: Vec<&str> = variants.iter().map(|v| v.0.as_str()).collect();
        names.push("torch");
        println!("\nkernel alone, GFLOP/s ({} dispatches in one submission):\n{:>6} | {}", reps.max(3), "n", names.join(" | "));
        md.push_str(&format!("\n| n | {} |\n|---|{}\n", names.join(" | "), "---|".repeat(names.len())));
        for &n in sizes {
            let shape = MatmulShape::new(n, n, n);
            let mut rates = Vec::new();
            for (_, tile, pipeline) in &variants {
                rates.push(format!("{:.0}", shape.flops() / time_matmul_pipeline(ctx, pipeline, *tile, &shape, reps.max(3))? / 1e9));
            }
            let torch_ms = torch.and_then(|t| t["sgemm"][n.to_string()].as_f64());
            rates.push(torch_ms.map(|ms| format!("{:.0}", shape.flops() / (ms * 1e-3) / 1e9)).unwrap_or_else(|| "-".into()));
            println!("{n:>6} | {}", rates.join(" | "));
            md.push_str(&format!("| {n} | {} |\n", rates.join(" | ")));
        }
        Ok(())
    }

    /// Host -> GPU and GPU -> host speed for `len` f32 values.
    fn transfers(ctx: &WgpuContext, len: usize, md: &mut String) -> dalle::Result<()> {
        let (up, down) = ctx.time_transfers(len)?;
        let mb = len as f64 * 4.0 / 1e6;
        let line = format!("transfers of {mb:.1} MB: upload {:.2} GB/s, read-back {:.2} GB/s", mb / 1e3 / up, mb / 1e3 / down);
        println!("\n{line}");
        md.push_str(&format!("\n{line}\n"));
        Ok(())
    }

    /// PyTorch's CUDA numbers, or None (with the reason printed).
    fn torch_gpu(sizes: &[usize]) -> Option<serde_json::Value> {
        let list: Vec<String> = sizes.iter().map(|s| s.to_string()).collect();
        let out = std::process::Command::new("python3")
            .args(["benches/torch_gpu_bench.py", "--sizes", &list.join(",")])
            .output();
        let value = out.ok().and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .last()
                .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        });
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
        let (sizes, reps) = if args.smoke {
            (vec![64, 128], 1)
        } else {
            (args.sizes.clone().unwrap_or_default(), 5)
        };
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
            if ctx.is_software() {
                vec![256, 512, 1024]
            } else {
                vec![1024, 2048, 4096, 8192]
            }
        } else {
            sizes
        };
        let torch = if args.torch { torch_gpu(&sizes) } else { None };
        println!(
            "cpu: the engine's sgemm on {} threads; median of {reps} calls after a warm-up\n",
            rayon::current_num_threads()
        );
        let mut md = format!(
            "adapter: {}\n\n| n | cpu ms | GFLOP/s | wgpu upload ms | GFLOP/s | wgpu resident ms | GFLOP/s | max diff |\n|---|---|---|---|---|---|---|---|\n",
            ctx.describe()
        );
        println!(
            "{:>6} | {:>10} {:>8} | {:>10} {:>8} | {:>10} {:>8} | {:>9}",
            "n", "cpu ms", "GFLOP/s", "upload ms", "GFLOP/s", "resid. ms", "GFLOP/s", "max diff"
        );
        for &n in sizes.iter().filter(|_| !args.kernels_only) {
            let a: Vec<f32> = (0..n * n)
                .map(|i| ((i * 7 + 3) % 13) as f32 / 13.0 - 0.5)
                .collect();
            let b: Vec<f32> = (0..n * n)
                .map(|i| ((i * 5 + 1) % 11) as f32 / 11.0 - 0.5)
                .collect();
            let shape = MatmulShape::new(n, n, n);
            // two CPU calls at n >= 4096 (seconds each on 2 threads)
            let (t_cpu, c_cpu) = time(if n >= 4096 { reps.min(2) } else { reps }, || cpu_sgemm(&a, &b, n));
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
        kernel_variants(ctx, &sizes, reps, torch.as_ref(), &mut md)?;
        transfers(ctx, if args.smoke { 1 << 16 } else { 1 << 24 }, &mut md)?;
        let batch = if args.smoke { 8 } else { 128 };
        let step_reps = if args.smoke { 1 } else { reps };
        let hidden = if args.smoke { 8 } else { 128 };
        md.push_str(&format!(
            "\n| training step (Adam, batch {batch}) | set-up | ms | cpu / this | MB to GPU | MB from GPU | GPU submissions | loss difference |\n|---|---|---|---|---|---|---|---|\n"
        ));
        println!("\ntraining steps (Adam, batch {batch}), median of {step_reps} after a warm-up:");
        let (seqs, width) = if args.smoke { (2, 32) } else { (32, 256) };
        let steps: [(&str, String, &dyn Fn() -> dalle::Result<Step>); 3] = [
            ("judge", "chapter 00 digit judge (CNN, 28x28)".to_string(), &|| judge(batch)),
            ("vq_vae", format!("chapter 05 VQ-VAE, CIFAR-10 config, hidden {hidden} (32x32)"), &|| vq_vae(batch, hidden)),
            ("transformer", format!("two pre-LN blocks, width {width}, 4 heads ({seqs} x 64 tokens)"), &|| transformer(seqs, width)),
        ];
        for (key, name, build) in steps.into_iter().filter(|_| !args.kernels_only) {
            let times = train_step(step_reps, build)?;
            let cpu = &times[0];
            println!("  {name}:");
            for ((setup, _, _), t) in SETUPS.iter().zip(&times) {
                let line = format!(
                    "{:.1} | {:.2} | {:.3} | {:.3} | {:.0} | {:.1e}",
                    t.ms,
                    cpu.ms / t.ms,
                    t.mb_up,
                    t.mb_down,
                    t.submissions,
                    (t.loss - cpu.loss).abs()
                );
                println!("    {setup:<20} {line}   (ms | cpu/this | MB up | MB down | submissions | loss diff)");
                md.push_str(&format!("| {name} | {setup} | {line} |\n"));
            }
            if let Some(ms) = torch.as_ref().and_then(|t| t[format!("{key}_step_ms")].as_f64()) {
                println!("    {:<20} {ms:.2} ms ({:.0}x faster than our cpu)", "torch cuda", cpu.ms / ms);
                md.push_str(&format!("| {name} | torch cuda | {ms:.2} | {:.1} | | | | |\n", cpu.ms / ms));
            }
        }
        if let Some(t) = &torch {
            md.push_str(&format!(
                "\nPyTorch sgemm on {} (TF32 off), ms: {}\n",
                t["device"], t["sgemm"]
            ));
        }
        let path = args.out.join("bench.md");
        dalle::io::write_atomic(&path, md.as_bytes())?;
        println!("wrote {}", path.display());
        Ok(())
    }
}

#[cfg(feature = "wgpu")]
fn main() -> dalle::Result<()> {
    // Kernels split their work with rayon; see `on_worker` for why main runs on the pool.
    dalle::backend::on_worker(bench::main)
}

#[cfg(not(feature = "wgpu"))]
fn main() {
    eprintln!("bench_wgpu needs the `wgpu` feature (on by default)");
}
