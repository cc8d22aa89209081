//! Chapter 04: a convolutional VAE on MNIST.
//!
//! ```text
//! cargo run --release --example 04_vae                     # 2-D latent: manifold and scatter plots
//! cargo run --release --example 04_vae -- --latent-dim 16
//! cargo run --release --example 04_vae -- --smoke
//! ```
//!
//! Leaves in `runs/04_vae/`: `reconstructions.png`, `samples.png` (decodes of
//! z ~ N(0, I)), `interpolation.png`, for a 2-D latent `manifold.png` and
//! `latents.png` (test means coloured by digit), `curves.png`, `metrics.jsonl`, `vae.safetensors`.

use std::collections::HashMap;

use clap::Parser;
use dalle::data::batch::BatchSampler;
use dalle::data::{self, DatasetName, Split};
use dalle::io::{checkpoint, plot_lines, plot_scatter, save_image_grid, save_reconstructions, GridOptions};
use dalle::models::vae::{Vae, VaeConfig};
use dalle::nn::Module;
use dalle::optim::{Adam, Optimizer};
use dalle::train::{cell, check_finite, positive_usize, resume_from, save_or_stop, series, wrote, CommonArgs, MetricsLog, Progress, RunState, TimeBudget};
use dalle::{no_grad, Rng, Tensor};

/// Train a VAE and walk its latent space.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Latent dimension (2 draws the manifold and the latent scatter).
    #[arg(long, default_value_t = 2, value_parser = positive_usize)]
    latent_dim: usize,
    /// Stop training after this many seconds even if steps remain (0: no limit).
    #[arg(long, default_value_t = 180)]
    time_limit: u64,
}

fn main() -> dalle::Result<()> {
    // Kernels split their work with rayon; see `on_worker` for why main runs on the pool.
    dalle::backend::on_worker(notebook)
}

fn notebook() -> dalle::Result<()> {
    let args = Args::parse();
    let c = &args.common;
    let out = c.start("04_vae", true, true)?;

    cell(1, "Load MNIST");
    let train = data::load(DatasetName::Mnist, &c.data_dir(), Split::Train, c.limit_or(512))?;
    let test = data::load(DatasetName::Mnist, &c.data_dir(), Split::Test, c.limit_or(256))?;
    println!("{} train and {} test images", train.len(), test.len());

    cell(2, "Build the VAE");
    let config = VaeConfig::mnist(args.latent_dim);
    let mut rng = Rng::new(c.seed);
    let model = Vae::new(config, &mut rng)?;
    println!("{config:?}\n{} parameters", model.num_parameters());
    if let Some(path) = &c.weights {
        checkpoint::load(path)?.load_into(&model, &[])?;
        println!("loaded {}", path.display());
    }

    // ANCHOR: train
    cell(3, "Train: minimise -ELBO = reconstruction + KL");
    let steps = if c.weights.is_some() { 0 } else { c.steps_or(1500, 20) };
    let mut opt = Adam::new(model.named_parameters(), c.lr_or(2e-3) as f32);
    let mut sampler = BatchSampler::try_new(train.len(), c.batch_size_or(128, 16), c.seed)?;
    // --resume: weights, Adam, step, the data order and the noise generator (ε of z = μ + σε).
    let resumed = resume_from(c, &model, &mut opt, steps)?;
    if let Some(r) = &resumed {
        r.restore_sampler("train", &mut sampler)?;
        r.restore_rng("noise", &mut rng)?;
    }
    let done = resumed.as_ref().map(|r| r.step);
    let mut log = MetricsLog::create_or_resume(&out, done)?;
    let progress = Progress::new("vae", steps);
    let budget = TimeBudget::new(args.time_limit);
    let named = model.named_parameters();
    for step in done.unwrap_or(0) + 1..=steps {
        let (images, _) = train.batch(&sampler.next_batch());
        let output = model.forward(&Tensor::new(images.into_dyn()), &mut rng)?;
        let loss = output.loss()?; // -ELBO, nats per image
        opt.zero_grad();
        loss.backward();
        check_finite(step, loss.item(), None, &named)?;
        opt.step();
        let values = [("neg_elbo", loss.item() as f64), ("reconstruction", output.reconstruction.item() as f64), ("kl", output.kl.item() as f64)];
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

    cell(4, "Test-set ELBO (one z per image)");
    let (neg_elbo, rec, kl) = model.evaluate(&test, 500, &mut rng)?;
    println!("test ({} images): -ELBO {neg_elbo:.2} nats/image = reconstruction {rec:.2} + KL {kl:.2}", test.len());

    cell(5, "Reconstructions, prior samples, an interpolation");
    let shown: Vec<usize> = (0..16.min(test.len())).collect();
    let (originals, _) = test.batch(&shown);
    let x = Tensor::new(originals.clone().into_dyn());
    let recon = no_grad(|| -> dalle::Result<_> { Ok(model.decode(&model.encode(&x)?.0)?.sigmoid().to_array()) })?;
    let recon = recon.into_dimensionality::<ndarray::Ix4>().expect("(B, C, H, W)");
    let path = out.join("reconstructions.png");
    save_reconstructions(&path, &originals, &recon, 3)?;
    let grid = |n| GridOptions { scale: 3, ..GridOptions::with_nrow(n) };
    wrote(&path);
    let samples = model.sample_prior(64, &mut rng)?; // (64, 1, 28, 28) decodes of z ~ N(0, I)
    let path = out.join("samples.png");
    save_image_grid(&path, &samples, &grid(8))?;
    wrote(&path);
    // samples.npy + prompts.txt (empty lines: unconditional samples), for any scoring tool.
    dalle::io::write_samples(&out, &samples, &vec![String::new(); samples.dim().0], None)?;
    wrote(out.join("samples.npy"));
    let (a, b) = (x.narrow(0, 0, 1)?, x.narrow(0, 1.min(shown.len() - 1), 1)?);
    let path = out.join("interpolation.png");
    save_image_grid(&path, &model.interpolate(&a, &b, 10)?, &grid(10))?;
    wrote(&path);

    if args.latent_dim == 2 {
        cell(6, "The 2-D latent: manifold and test means by digit");
        let path = out.join("manifold.png");
        save_image_grid(&path, &model.manifold(15, 2.5)?, &GridOptions { padding: 0, scale: 2, ..GridOptions::with_nrow(15) })?;
        wrote(&path);
        let n = test.len().min(5000);
        let (images, labels) = test.batch(&(0..n).collect::<Vec<_>>());
        let mu = no_grad(|| model.encode(&Tensor::new(images.into_dyn())))?.0.to_array();
        let points: Vec<(f64, f64)> = (0..n).map(|i| (mu[[i, 0]] as f64, mu[[i, 1]] as f64)).collect();
        let path = out.join("latents.png");
        plot_scatter(&path, "test images' posterior means", &points, &labels, &test.classes)?;
        wrote(&path);
    }

    if steps > 0 {
        cell(7, "Curves and weights");
        let records = dalle::train::read_metrics(log.path())?;
        let path = out.join("curves.png");
        plot_lines(&path, "VAE training (nats per image)", "step", "nats", &[series(&records, "reconstruction"), series(&records, "kl"), series(&records, "neg_elbo")], false)?;
        wrote(&path);
        let path = out.join("vae.safetensors");
        let meta = HashMap::from([("test_neg_elbo".to_string(), format!("{neg_elbo:.3}")), ("latent_dim".to_string(), args.latent_dim.to_string())]);
        checkpoint::save(&path, &model, None, &meta)?;
        wrote(&path);
    }
    Ok(())
}
