//! Chapter 05: a VQ-VAE on MNIST (or CIFAR-10, or Shapes): images as grids of discrete codes.
//!
//! ```text
//! cargo run --release --example 05_vq_vae                       # MNIST, a few minutes
//! cargo run --release --example 05_vq_vae -- --dataset cifar10
//! cargo run --release --example 05_vq_vae -- --dataset shapes --steps 3000 --time-limit 900
//! cargo run --release --example 05_vq_vae -- --weights weights/vqvae_mnist.safetensors
//! cargo run --release --example 05_vq_vae -- --smoke
//! ```
//!
//! Leaves in `runs/05_vq_vae/`: `reconstructions.png` (originals above their
//! reconstructions), `codes.png` (each image's code grid, one colour per code),
//! `curves.png` and `codebook.png` (loss, codebook usage and perplexity over
//! training), `metrics.jsonl` and `vqvae.safetensors`.

use std::collections::HashMap;

use clap::Parser;
use dalle::data::batch::BatchSampler;
use dalle::data::{self, DatasetName, Split};
use dalle::eval::shapes_fidelity::ShapesFidelity;
use dalle::io::{checkpoint, plot_lines, save_image_grid, save_reconstructions, GridOptions};
use dalle::models::image_tokenizer::{colour_tokens, reconstruct, ImageTokenizer};
use dalle::models::vqvae::{to_array4, VqVae, VqVaeConfig};
use dalle::nn::Module;
use dalle::optim::{Adam, Optimizer};
use dalle::train::{cell, check_finite, positive_usize, resume_from, save_or_stop, series, wrote, CommonArgs, MetricsLog, Progress, RunState, TimeBudget};
use dalle::{Rng, Tensor};

/// Train a VQ-VAE and look at its reconstructions and codes.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Stop training after this many seconds even if steps remain (0: no limit).
    #[arg(long, default_value_t = 270)]
    time_limit: u64,
    /// Hidden channels (default: the data set's configuration).
    #[arg(long, value_parser = positive_usize)]
    hidden: Option<usize>,
    /// Codebook size K (default: the data set's configuration).
    #[arg(long, value_parser = positive_usize)]
    codes: Option<usize>,
}

fn main() -> dalle::Result<()> {
    // Kernels split their work with rayon; see `on_worker` for why main runs on the pool.
    dalle::backend::on_worker(notebook)
}

fn notebook() -> dalle::Result<()> {
    let args = Args::parse();
    let c = &args.common;
    let out = c.start("05_vq_vae", true, true)?;
    let dataset = c.dataset_or(DatasetName::Mnist);

    cell(1, "Load the data");
    let train = data::load(dataset, &c.data_dir(), Split::Train, c.limit_or(512))?;
    let test = data::load(dataset, &c.data_dir(), Split::Test, c.limit_or(256))?;
    println!("{} train and {} test images of shape {:?}", train.len(), test.len(), train.image_shape());

    cell(2, "Build the model");
    let mut config = VqVaeConfig::for_dataset(dataset);
    config.hidden = args.hidden.unwrap_or(config.hidden);
    config.quantizer.num_codes = args.codes.unwrap_or(config.quantizer.num_codes);
    let mut rng = Rng::new(c.seed);
    let model = VqVae::new(config, &mut rng)?;
    println!("{config:?}");
    println!("{} parameters (and buffers)", model.num_parameters());
    if let Some(path) = &c.weights {
        checkpoint::load(path)?.load_into(&model, &[])?;
        println!("loaded {}", path.display());
    }

    // ANCHOR: train
    cell(3, "Train: reconstruction + codebook + commitment (eq. 3)");
    let steps = if c.weights.is_some() { 0 } else { c.steps_or(1000, 20) };
    let trainable: Vec<_> = model.named_parameters().into_iter().filter(|(_, t)| t.requires_grad()).collect();
    let mut opt = Adam::new(trainable, c.lr_or(2e-3) as f32);
    let mut sampler = BatchSampler::try_new(train.len(), c.batch_size_or(64, 16), c.seed)?;
    // --resume: weights and EMA codebook buffers, Adam, step, data order, and the quantizer's
    // dead-code bookkeeping (idle counts and its restart generator).
    let resumed = resume_from(c, &model, &mut opt, steps)?;
    if let Some(r) = &resumed {
        r.restore_sampler("train", &mut sampler)?;
        r.restore_rng("model", &mut rng)?;
        model.quantizer.set_restart_state(r.value("quantizer")?)?;
    }
    let done = resumed.as_ref().map(|r| r.step);
    let mut log = MetricsLog::create_or_resume(&out, done)?;
    let progress = Progress::new("vq-vae", steps);
    let budget = TimeBudget::new(args.time_limit);
    let named = model.named_parameters();
    for step in done.unwrap_or(0) + 1..=steps {
        let (images, _) = train.batch(&sampler.next_batch());
        let x = Tensor::new(images.into_dyn());
        let output = model.forward(&x, true)?;
        let loss = output.loss()?;
        opt.zero_grad();
        loss.backward();
        check_finite(step, loss.item(), None, &named)?;
        opt.step();
        let q = &output.quantized;
        let values = [
            ("loss", loss.item() as f64),
            ("reconstruction", output.reconstruction_loss.item() as f64),
            ("mse", output.mse as f64),
            ("commitment", q.commitment_loss.item() as f64),
            ("usage", q.usage as f64),
            ("perplexity", q.perplexity as f64),
        ];
        let spent = budget.record_step(step, &values, &mut log, &progress)?;
        let state = RunState::new(step).sampler("train", &sampler).rng("model", &rng).value("quantizer", model.quantizer.restart_state());
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

    cell(4, "Evaluate on the test set");
    let report = model.evaluate(&test, 250)?;
    println!("test ({} images): {report} of {}", test.len(), model.vocab_size());
    let judged = match &test.captions {
        Some(captions) => {
            // Shapes: read every reconstruction back with the Shapes judge, against its own caption.
            let fidelity = ShapesFidelity::measure(&reconstruct(&model, &test, 250)?, captions)?;
            println!("Shapes judge on the reconstructions: {}", fidelity.summary());
            Some(fidelity)
        }
        None => None,
    };

    cell(5, "Reconstructions (originals above, reconstructions below)");
    let shown: Vec<usize> = (0..16.min(test.len())).collect();
    let (originals, _) = test.batch(&shown);
    let tokens = model.encode(&originals)?; // (16, h, w)
    let recon = model.decode(&tokens)?;
    let path = out.join("reconstructions.png");
    save_reconstructions(&path, &originals, &recon, 3)?;
    wrote(&path);

    cell(6, "The code grids: one colour per code");
    println!("grid {:?}, first image's codes:\n{}", model.grid(originals.dim().2, originals.dim().3), tokens.index_axis(ndarray::Axis(0), 0));
    let path = out.join("codes.png");
    save_image_grid(&path, &colour_tokens(&tokens), &GridOptions { scale: 12, ..GridOptions::with_nrow(shown.len()) })?;
    wrote(&path);
    let random_codes = ndarray::Array3::from_shape_fn((8, tokens.dim().1, tokens.dim().2), |_| rng.below(model.vocab_size()));
    let path = out.join("random_codes.png");
    save_image_grid(&path, &to_array4(&model.decode_codes(&random_codes)?)?, &GridOptions { scale: 3, ..GridOptions::with_nrow(8) })?;
    wrote(&path);

    if steps > 0 {
        cell(7, "Curves");
        let records = dalle::train::read_metrics(log.path())?;
        let path = out.join("curves.png");
        plot_lines(&path, "VQ-VAE training", "step", "loss", &[series(&records, "reconstruction"), series(&records, "mse"), series(&records, "commitment")], true)?;
        wrote(&path);
        let path = out.join("codebook.png");
        plot_lines(&path, "codebook perplexity (per batch)", "step", "perplexity", &[series(&records, "perplexity")], false)?;
        wrote(&path);

        cell(8, "Save the weights");
        let path = out.join("vqvae.safetensors");
        let meta = HashMap::from([
            ("dataset".to_string(), dataset.as_str().to_string()),
            ("test_mse".to_string(), format!("{:.6}", report.mse)),
            ("steps".to_string(), steps.to_string()),
        ]);
        let meta = meta.into_iter().chain(judged.map(|f| ("shapes_all".to_string(), format!("{:.4}", f.all)))).collect();
        checkpoint::save(&path, &model, None, &meta)?;
        wrote(&path);
    }
    Ok(())
}

