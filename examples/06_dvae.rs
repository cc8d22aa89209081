//! Chapter 06: DALL-E 1's discrete VAE on MNIST, relaxed with gumbel-softmax.
//!
//! ```text
//! cargo run --release --example 06_dvae
//! cargo run --release --example 06_dvae -- --weights weights/dvae_mnist.safetensors
//! cargo run --release --example 06_dvae -- --smoke
//! ```
//!
//! Leaves in `runs/06_dvae/`: `reconstructions.png` (originals above their
//! reconstructions from the hard argmax tokens), `codes.png`, `curves.png`
//! (reconstruction, KL, τ and β over training), `metrics.jsonl` and `dvae.safetensors`.

use std::collections::HashMap;

use clap::Parser;
use dalle::data::batch::BatchSampler;
use dalle::data::{self, DatasetName, Split};
use dalle::io::{checkpoint, plot_lines, save_image_grid, save_reconstructions, GridOptions};
use dalle::models::dvae::{Dvae, DvaeConfig, DvaeSchedule};
use dalle::models::image_tokenizer::{colour_tokens, ImageTokenizer};
use dalle::nn::Module;
use dalle::optim::{Adam, Optimizer};
use dalle::train::{cell, check_finite, non_negative_finite_f32, resume_from, save_or_stop, series, wrote, CommonArgs, MetricsLog, Progress, RunState, TimeBudget};
use dalle::{Rng, Tensor};

/// Train a dVAE and look at its reconstructions and tokens.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Stop training after this many seconds even if steps remain (0: no limit).
    #[arg(long, default_value_t = 270)]
    time_limit: u64,
    /// Final KL weight β (per-pixel units; see the chapter for the scaling from the paper's 6.6).
    #[arg(long, default_value_t = 0.25, value_parser = non_negative_finite_f32)]
    kl_weight: f32,
}

fn main() -> dalle::Result<()> {
    // Kernels split their work with rayon; see `on_worker` for why main runs on the pool.
    dalle::backend::on_worker(notebook)
}

fn notebook() -> dalle::Result<()> {
    let args = Args::parse();
    let c = &args.common;
    let out = c.start("06_dvae", true, true)?;

    cell(1, "Load MNIST");
    let train = data::load(DatasetName::Mnist, &c.data_dir(), Split::Train, c.limit_or(512))?;
    let test = data::load(DatasetName::Mnist, &c.data_dir(), Split::Test, c.limit_or(256))?;
    println!("{} train and {} test images", train.len(), test.len());

    cell(2, "Build the dVAE");
    let config = DvaeConfig::mnist();
    let mut rng = Rng::new(c.seed);
    let model = Dvae::new(config, &mut rng)?;
    println!("{config:?}\n{} parameters", model.num_parameters());
    if let Some(path) = &c.weights {
        checkpoint::load(path)?.load_into(&model, &[])?;
        println!("loaded {}", path.display());
    }

    // ANCHOR: train
    cell(3, "Train: relaxed ELBO with τ annealed 1 -> 1/16 and β ramped up");
    let steps = if c.weights.is_some() { 0 } else { c.steps_or(900, 20) };
    let schedule = DvaeSchedule { anneal_steps: steps * 4 / 5, kl_ramp_steps: steps / 5, kl_weight_max: args.kl_weight };
    let mut opt = Adam::new(model.named_parameters(), c.lr_or(2e-3) as f32);
    let mut sampler = BatchSampler::try_new(train.len(), c.batch_size_or(64, 16), c.seed)?;
    // --resume: weights, Adam, step (τ and β follow from it), data order, Gumbel noise generator.
    let resumed = resume_from(c, &model, &mut opt, steps)?;
    if let Some(r) = &resumed {
        r.restore_sampler("train", &mut sampler)?;
        r.restore_rng("noise", &mut rng)?;
    }
    let done = resumed.as_ref().map(|r| r.step);
    let mut log = MetricsLog::create_or_resume(&out, done)?;
    let progress = Progress::new("dvae", steps);
    let budget = TimeBudget::new(args.time_limit);
    let named = model.named_parameters();
    for step in done.unwrap_or(0) + 1..=steps {
        let (tau, beta) = (schedule.temperature(step), schedule.kl_weight(step));
        let (images, _) = train.batch(&sampler.next_batch());
        let x = Tensor::new(images.into_dyn());
        let output = model.forward(&x, tau, &mut rng)?;
        let loss = output.reconstruction_loss.add(&output.kl.scale(beta))?; // -ELBO_β per pixel
        opt.zero_grad();
        loss.backward();
        check_finite(step, loss.item(), None, &named)?;
        opt.step();
        let (usage, perplexity) = dalle::nn::quantize::usage_and_perplexity(&dalle::nn::quantize::code_counts(&output.indices, model.vocab_size()));
        let values = [
            ("loss", loss.item() as f64),
            ("reconstruction", output.reconstruction_loss.item() as f64),
            ("kl", output.kl.item() as f64),
            ("mse", output.mse as f64),
            ("tau", tau as f64),
            ("beta", beta as f64),
            ("perplexity", perplexity as f64),
            ("usage", usage as f64),
        ];
        let spent = budget.record_step(step, &values, &mut log, &progress)?;
        let state = RunState::new(step).sampler("train", &sampler).rng("noise", &rng);
        if save_or_stop(c, &out.join("checkpoint.safetensors"), steps, &model, &opt, &state)? {
            return Ok(());
        }
        if spent {
            break;
        }
    }
    progress.finish();
    println!("trained for {:.1} s", budget.elapsed_secs());
    // ANCHOR_END: train

    cell(4, "Evaluate on the test set (hard argmax tokens)");
    let report = model.evaluate(&test, 250)?;
    println!("test ({} images): {report} of {}", test.len(), model.vocab_size());

    cell(5, "Reconstructions from tokens (originals above)");
    let shown: Vec<usize> = (0..16.min(test.len())).collect();
    let (originals, _) = test.batch(&shown);
    let tokens = model.encode(&originals)?;
    let recon = model.decode(&tokens)?;
    let path = out.join("reconstructions.png");
    save_reconstructions(&path, &originals, &recon, 3)?;
    wrote(&path);
    let path = out.join("codes.png");
    save_image_grid(&path, &colour_tokens(&tokens), &GridOptions { scale: 12, ..GridOptions::with_nrow(shown.len()) })?;
    wrote(&path);

    if steps > 0 {
        cell(6, "Curves");
        let records = dalle::train::read_metrics(log.path())?;
        let path = out.join("curves.png");
        plot_lines(&path, "dVAE training", "step", "per pixel", &[series(&records, "reconstruction"), series(&records, "kl"), series(&records, "mse")], true)?;
        wrote(&path);
        let path = out.join("schedule.png");
        plot_lines(&path, "temperature and KL weight", "step", "value", &[series(&records, "tau"), series(&records, "beta")], false)?;
        wrote(&path);

        cell(7, "Save the weights");
        let path = out.join("dvae.safetensors");
        let meta = HashMap::from([("test_mse".to_string(), format!("{:.6}", report.mse)), ("steps".to_string(), steps.to_string())]);
        checkpoint::save(&path, &model, None, &meta)?;
        wrote(&path);
    }
    Ok(())
}
