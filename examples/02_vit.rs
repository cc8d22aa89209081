//! Chapter 2: a Vision Transformer classifies MNIST digits.
//!
//! ```text
//! cargo run --release --example 02_vit            # full run: a few minutes on 2 cores
//! cargo run --release --example 02_vit -- --smoke # seconds: checks the pipeline
//! ```
//!
//! Cells: [1] load MNIST, [2] build the ViT and walk one batch through it,
//! [3] train with AdamW and a warm-up cosine schedule, [4] measure accuracy on
//! the whole test set, [5] write the loss curve, predictions, mistakes and the
//! class token's attention.

use std::time::Instant;

use clap::Parser;
use dalle::data::batch::BatchSampler;
use dalle::data::{self, DatasetName, ImageDataset, Split};
use dalle::io::image_grid::{save_image_grid, GridOptions};
use dalle::io::plot::{plot_heatmap, plot_lines, Series};
use dalle::models::vit::{Vit, VitConfig};
use dalle::nn::Module;
use dalle::optim::{clip_grad_norm, Adam, Optimizer, WarmupCosine};
use dalle::train::notebook::{cell, wrote};
use dalle::train::{check_finite, resume_from, save_or_stop, CommonArgs, MetricsLog, Progress, RunState};
use dalle::{no_grad, Result, Rng, Tensor};
use ndarray::{Array2, Array4, Axis};

/// Train a ViT on MNIST.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

// ANCHOR: config
fn vit_config(smoke: bool) -> VitConfig {
    let config = VitConfig::mnist(); // 16 patches of 7 x 7 pixels + 1 class token, width 64, 4 blocks
    if smoke {
        VitConfig { width: 32, layers: 2, ..config }
    } else {
        config
    }
}
// ANCHOR_END: config

/// Predicted classes of `images (N, 1, 28, 28)`, in batches, without a graph.
fn predict(model: &Vit, images: &Array4<f32>) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(images.len_of(Axis(0)));
    for start in (0..images.len_of(Axis(0))).step_by(500) {
        let end = (start + 500).min(images.len_of(Axis(0)));
        let batch = Tensor::new(images.slice(ndarray::s![start..end, .., .., ..]).to_owned().into_dyn());
        let logits = no_grad(|| model.classify(&batch, false))?.to_array(); // (b, 10)
        out.extend(logits.outer_iter().map(|row| row.iter().enumerate().fold(0, |best, (i, &v)| if v > row[best] { i } else { best })));
    }
    Ok(out)
}

fn main() -> Result<()> {
    // Kernels split their work with rayon; see `on_worker` for why main runs on the pool.
    dalle::backend::on_worker(notebook)
}

fn notebook() -> Result<()> {
    let args = Args::parse();
    let common = &args.common;
    let out = common.start("02_vit", true, false)?;

    cell(1, "Load MNIST");
    let dir = common.data_dir();
    let name = common.dataset_or(DatasetName::Mnist); // any 1 x 28 x 28 set: mnist, fashion-mnist
    let train = data::load(name, &dir, Split::Train, common.limit_or(1024))?;
    let test = data::load(name, &dir, Split::Test, common.limit_or(500))?;
    println!("train {} images, test {} images, shape {:?}", train.len(), test.len(), train.image_shape());

    cell(2, "Build the ViT and walk one batch through it");
    let config = vit_config(common.smoke);
    let mut rng = Rng::new(common.seed);
    let model = Vit::new(config, &mut rng)?;
    println!("{config:?}");
    println!("{} parameters", model.num_parameters());
    // ANCHOR: shapes
    let (x, _) = train.batch(&[0, 1.min(train.len() - 1)]); // (a data set of one image shows it twice)
    let x = Tensor::new(x.into_dyn()); // (B, 1, 28, 28)
    let tokens = model.embed(&x)?; // (B, N + 1, C)
    let o = model.forward(&x, false)?;
    println!("images {:?} -> tokens {:?} -> class embedding {:?}, patches {:?}, attention per block {:?}",
        x.shape(), tokens.shape(), o.class_embedding.shape(), o.patch_embeddings.shape(), o.attention[0].shape());
    // ANCHOR_END: shapes

    cell(3, "Train");
    // ANCHOR: train
    let steps = common.steps_or(3000, 30);
    let batch_size = common.batch_size_or(64, 32);
    let schedule = WarmupCosine { base_lr: common.lr_or(2e-3) as f32, min_lr: 1e-5, warmup: steps / 20, total: steps };
    let mut opt = Adam::adamw(model.named_parameters(), schedule.base_lr, 0.05);
    let params = model.parameters();
    let mut sampler = BatchSampler::try_new(train.len(), batch_size, common.seed)?;
    let resumed = resume_from(common, &model, &mut opt, steps)?; // weights, AdamW, step, data order
    if let Some(r) = &resumed {
        r.restore_sampler("train", &mut sampler)?;
        r.restore_rng("model", &mut rng)?;
    }
    let mut log = MetricsLog::create_or_resume(&out, resumed.as_ref().map(|r| r.step))?;
    let progress = Progress::new("vit", steps);
    let mut losses = Vec::with_capacity(steps);
    let named = model.named_parameters();
    let start = Instant::now();
    for step in resumed.as_ref().map_or(0, |r| r.step)..steps {
        let (images, labels) = train.batch(&sampler.next_batch());
        let logits = model.classify(&Tensor::new(images.into_dyn()), true)?; // (B, 10)
        let loss = logits.cross_entropy(&labels)?;
        opt.zero_grad();
        loss.backward();
        let norm = clip_grad_norm(&params, 1.0);
        check_finite(step + 1, loss.item(), Some(norm), &named)?;
        opt.set_lr(schedule.lr(step));
        opt.step();
        losses.push(loss.item());
        log.log(step + 1, &[("loss", loss.item() as f64), ("lr", opt.lr() as f64)])?;
        progress.update(step + 1, &[("loss", loss.item())]);
        let state = RunState::new(step + 1).sampler("train", &sampler).rng("model", &rng);
        if save_or_stop(common, &out.join("checkpoint.safetensors"), steps, &model, &opt, &state)? {
            return Ok(());
        }
    }
    progress.finish();
    // ANCHOR_END: train
    let train_secs = start.elapsed().as_secs_f64();
    println!("{steps} steps of {batch_size} images in {train_secs:.0} s ({:.2} epochs)", (steps * batch_size) as f64 / train.len() as f64);

    cell(4, "Accuracy on the test set");
    let start = Instant::now();
    let predictions = predict(&model, &test.images)?;
    let correct = predictions.iter().zip(&test.labels).filter(|(p, l)| p == l).count();
    println!(
        "test accuracy {:.2}% ({correct}/{}) in {:.1} s",
        100.0 * correct as f64 / test.len() as f64,
        test.len(),
        start.elapsed().as_secs_f64()
    );
    dalle::io::checkpoint::save(&out.join("vit.safetensors"), &model, None, &Default::default())?;
    wrote(out.join("vit.safetensors"));

    cell(5, "Figures");
    write_figures(&out, &model, &test, &predictions, &losses)?;
    Ok(())
}

fn write_figures(out: &std::path::Path, model: &Vit, test: &ImageDataset, predictions: &[usize], losses: &[f32]) -> Result<()> {
    // Loss per step and its running mean over 50 steps.
    let smooth: Vec<f32> = (0..losses.len()).map(|i| {
        let w = &losses[i.saturating_sub(49)..=i];
        w.iter().sum::<f32>() / w.len() as f32
    }).collect();
    let path = out.join("loss.png");
    plot_lines(&path, "ViT on MNIST: training loss", "step", "cross-entropy",
        &[Series::from_values("loss", losses), Series::from_values("mean of 50", &smooth)], true)?;
    wrote(&path);

    let n = 32.min(test.len());
    let (first, _) = test.batch(&(0..n).collect::<Vec<_>>());
    let path = out.join("predictions.png");
    save_image_grid(&path, &first, &GridOptions { scale: 2, ..GridOptions::with_nrow(8) })?;
    wrote(&path);
    for row in 0..n.div_ceil(8) {
        let r = row * 8..(row * 8 + 8).min(n);
        let cells: Vec<String> = r.map(|i| if predictions[i] == test.labels[i] { format!(" {} ", predictions[i]) } else { format!("{}({})", predictions[i], test.labels[i]) }).collect();
        println!("   predictions row {row}: {}", cells.join(" "));
    }

    let wrong: Vec<usize> = (0..test.len()).filter(|&i| predictions[i] != test.labels[i]).take(32).collect();
    if !wrong.is_empty() {
        let (imgs, _) = test.batch(&wrong);
        let path = out.join("mistakes.png");
        save_image_grid(&path, &imgs, &GridOptions { scale: 2, ..GridOptions::with_nrow(8) })?;
        wrote(&path);
        let pairs: Vec<String> = wrong.iter().map(|&i| format!("{}->{}", test.labels[i], predictions[i])).collect();
        println!("   mistakes (true->predicted): {}", pairs.join(" "));
    }

    // Where the class token looks in the last block, averaged over heads: a 4 x 4 map per image.
    let (imgs, _) = test.batch(&[0]);
    let o = no_grad(|| model.forward(&Tensor::new(imgs.into_dyn()), false))?;
    let last = o.attention.last().expect("at least one block").to_array(); // (1, H, N + 1, N + 1)
    let side = model.config.image_size / model.config.patch_size;
    let heads = last.shape()[1];
    let map = Array2::from_shape_fn((side, side), |(r, c)| {
        (0..heads).map(|h| last[[0, h, 0, 1 + r * side + c]]).sum::<f32>() / heads as f32
    });
    let path = out.join("class_attention.png");
    plot_heatmap(&path, &format!("class token -> patches, last block (digit {})", test.labels[0]), &map, &[], &[])?;
    wrote(&path);
    Ok(())
}
