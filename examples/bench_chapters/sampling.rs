//! `--sampling`: the samplers of chapters 08 and 09 side by side in one run, for the Sampling
//! table of chapters/performance.md (images per second; no PyTorch side).
//!
//! - Chapter 08's class-conditional U-Net (`UNetConfig::mnist`, random weights: the cost of a
//!   step does not depend on them), one image per class, guided at s = 3 (conditional and
//!   unconditional rows in one batch of 20, as `08_ddpm` samples): DDPM ancestral over all
//!   1000 steps, DDIM over 50, and the probability-flow ODE over 50 steps by Euler (50 network
//!   evaluations) and by Heun (99).
//! - Chapter 09's GLIDE (`GlideConfig::mnist`), 64 captions, 10 DDIM steps at s = 3 (`09_glide`'s
//!   defaults): classifier-free guidance as two passes of 64 rows (conditional, then empty
//!   captions) against one pass of 128 (`Glide::guided`), alternated twice.

use super::Args;
use dalle::models::diffusion::{guidance, respace, ClassConditionalUNet, ClassifierFree, Diffusion, Sampler, UNetConfig, Variance};
use dalle::models::glide::{Glide, GlideConfig};
use dalle::nn::Module;
use dalle::{no_grad, Error, Result, Rng, Tensor};
use ndarray::Array2;
use std::time::Instant;

/// Seconds of `f`, run once.
fn seconds(f: impl FnOnce() -> Result<Tensor>) -> Result<f64> {
    let t = Instant::now();
    std::hint::black_box(f()?);
    Ok(t.elapsed().as_secs_f64())
}

/// Caption ids `(B, S)`: `[SOT, 1 to 4 random words, EOT, PAD ...]`, or the empty caption `[SOT, EOT]`.
fn captions(rng: &mut Rng, b: usize, s: usize, vocab: usize, empty: bool) -> Array2<u32> {
    let mut ids = Array2::<u32>::zeros((b, s));
    for mut row in ids.rows_mut() {
        let end = if empty { 1 } else { 2 + rng.below(4) };
        row[0] = 1;
        for v in row.iter_mut().take(end).skip(1) {
            *v = (3 + rng.below(vocab - 3)) as u32;
        }
        row[end] = 2;
    }
    ids
}

pub(super) fn run(args: &Args) -> Result<()> {
    let smoke = args.smoke;
    let mut table = String::from("| model | sampler | network evaluations | batch in the network | seconds | images / s |\n|---|---|---:|---:|---:|---:|\n");
    let load = || std::fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default();
    println!("== bench_chapters --sampling: {} rayon threads, load average {}", rayon::current_num_threads(), load());

    // Chapter 08: four samplers of one guided network.
    let model = ClassConditionalUNet::new(UNetConfig::mnist(), 10, &mut Rng::new(0))?;
    let diffusion = Diffusion::linear_epsilon()?;
    let n = 10;
    let doubled: Vec<usize> = (0..n).chain(std::iter::repeat_n(model.null_class(), n)).collect();
    let guided = ClassifierFree { model: model.with_labels(doubled), scale: 3.0 };
    let x_t = Tensor::new(Rng::new(1).normal_array(&[n, 1, 28, 28]));
    let full = if smoke { 4 } else { 1000 };
    let few = if smoke { 2 } else { 50 };
    let runs = [(Sampler::Ddim(0.0), few), (Sampler::Euler, few), (Sampler::Heun, few), (Sampler::Ddpm(Variance::Small), full), (Sampler::Ddim(0.0), few)];
    for (sampler, steps) in runs {
        let timesteps = respace(1000, steps)?;
        let secs = seconds(|| sampler.sample(&guided, &diffusion, x_t.clone(), &timesteps, &mut Rng::new(2), &mut |_, _| {}))?;
        let row = format!("| 08 DDPM U-Net ({} parameters) | {}-{steps}, guided | {} | {} | {secs:.2} | {:.2} |\n", model.num_parameters(), sampler.name(), sampler.evaluations(steps), 2 * n, n as f64 / secs);
        print!("{row}");
        table += &row;
    }

    // Chapter 09: guidance as two passes or one batch.
    let glide = Glide::new(GlideConfig::mnist(), &mut Rng::new(0))?;
    let (s, vocab) = (glide.config.text.max_position_embeddings, glide.config.text.vocab_size);
    let b = if smoke { 4 } else { 64 };
    let steps = if smoke { 2 } else { 10 };
    let mut rng = Rng::new(3);
    let (cond_ids, empty_ids) = (captions(&mut rng, b, s, vocab, false), captions(&mut rng, b, s, vocab, true));
    let both_ids = ndarray::concatenate(ndarray::Axis(0), &[cond_ids.view(), empty_ids.view()]).map_err(|e| Error::Msg(e.to_string()))?;
    let (cond, empty, both) = no_grad(|| -> Result<_> { Ok((glide.text.encode(&cond_ids)?, glide.text.encode(&empty_ids)?, glide.text.encode(&both_ids)?)) })?;
    let one_batch = ClassifierFree { model: |x: &Tensor, t: &[usize]| glide.forward(x, t, &both), scale: 3.0 };
    let two_passes = |x: &Tensor, t: &[usize]| -> Result<Tensor> { guidance(&glide.forward(x, t, &cond)?, &glide.forward(x, t, &empty)?, 3.0) };
    let timesteps = respace(1000, steps)?;
    let x_t = Tensor::new(Rng::new(4).normal_array(&[b, 1, 28, 28]));
    for round in 0..2 {
        for (name, rows) in [("two passes", b), ("one batch", 2 * b)] {
            let secs = if rows == b {
                seconds(|| Sampler::Ddim(0.0).sample(&two_passes, &diffusion, x_t.clone(), &timesteps, &mut Rng::new(5), &mut |_, _| {}))?
            } else {
                seconds(|| Sampler::Ddim(0.0).sample(&one_batch, &diffusion, x_t.clone(), &timesteps, &mut Rng::new(5), &mut |_, _| {}))?
            };
            let row = format!("| 09 GLIDE (round {}) | ddim-{steps}, s = 3, {name} | {} | {rows} | {secs:.2} | {:.2} |\n", round + 1, 2 * steps, b as f64 / secs);
            print!("{row}");
            table += &row;
        }
    }
    let md = format!(
        "# bench_chapters --sampling\n\nCommand: `cargo run --release --example bench_chapters -- {}`; {} rayon threads; load average at the end {}\n\n{table}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        rayon::current_num_threads(),
        load()
    );
    let out = args.out.with_file_name("sampling.md");
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::write(&out, md).map_err(|e| Error::io(&out, e))?;
    println!("wrote {}", out.display());
    Ok(())
}
