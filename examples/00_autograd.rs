//! Chapter 00: autograd, from a scalar chain rule to a CNN on MNIST.
//!
//! `cargo run --release --example 00_autograd` (add `--smoke` for a seconds-long run).

use clap::Parser;
use dalle::data::batch::BatchSampler;
use dalle::data::{self, DatasetName, Split};
use dalle::eval::{argmax_rows, DigitJudge};
use dalle::io::{self, checkpoint, GridOptions, Series};
use dalle::nn::{Activation, Forward, Linear, Module, Sequential};
use dalle::optim::{Adam, Optimizer, WarmupCosine};
use dalle::train::{check_finite, notebook::cell, notebook::wrote, save_run, CommonArgs, MetricsLog, Progress, Resumed, RunState};
use dalle::{no_grad, Result, Rng, Tensor};
use ndarray::{arr0, Array2};
use std::collections::HashMap;

#[derive(Parser)]
#[command(about = "Chapter 00: reverse-mode autograd, a tiny MLP, and the digit judge CNN on MNIST")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> Result<()> {
    // Kernels split their work with rayon; see `on_worker` for why main runs on the pool.
    dalle::backend::on_worker(notebook)
}

fn notebook() -> Result<()> {
    let args = Args::parse();
    let c = &args.common;
    let out = c.start("00_autograd", true, true)?;

    cell(1, "A scalar chain rule");
    // ANCHOR: scalar
    // f(a, b) = tanh(a·b + b²);  ∂f/∂a = (1 - f²)·b,  ∂f/∂b = (1 - f²)·(a + 2b)
    let a = Tensor::param(arr0(0.5f32).into_dyn());
    let b = Tensor::param(arr0(-1.5f32).into_dyn());
    let f = a.mul(&b)?.add(&b.square())?.tanh();
    f.backward();
    // ANCHOR_END: scalar
    let fv = f.item();
    let (ga, gb) = (a.grad().unwrap()[[]], b.grad().unwrap()[[]]);
    println!("f = {fv:.6}");
    println!("autograd: df/da = {ga:.6}, df/db = {gb:.6}");
    println!("by hand:  df/da = {:.6}, df/db = {:.6}", (1.0 - fv * fv) * -1.5, (1.0 - fv * fv) * (0.5 - 3.0));

    cell(2, "The same on tensors: broadcasting and a matmul");
    // ANCHOR: tensors
    let mut rng = Rng::new(c.seed);
    let x = Tensor::new(rng.normal_array(&[4, 3])); // (B, in) = (4, 3)
    let w = Tensor::param(rng.normal_array(&[3, 2])); // (in, out)
    let bias = Tensor::param(rng.normal_array(&[2])); // (out), broadcast over B
    let y = x.matmul(&w)?.add(&bias)?; // (4, 2)
    y.square().mean().backward(); // L = mean(y²)
    // ∂L/∂bias = Σ_B 2y/8: the broadcast dimension is summed in the backward pass
    // ANCHOR_END: tensors
    println!("y {:?}, dL/dw {:?}, dL/dbias {:?}", y.shape(), w.grad().unwrap().shape(), bias.grad().unwrap().shape());

    cell(3, "A tiny MLP on two moons");
    let (points, labels) = two_moons(400, 0.12, &mut rng);
    // ANCHOR: mlp
    let mlp = Sequential::new()
        .push(Linear::new(2, 32, true, &mut rng))
        .push(Activation::Tanh)
        .push(Linear::new(32, 32, true, &mut rng))
        .push(Activation::Tanh)
        .push(Linear::new(32, 2, true, &mut rng));
    let mut opt = Adam::new(mlp.named_parameters(), 0.01);
    let xs = Tensor::new(points.clone().into_dyn()); // (400, 2)
    for step in 0..c.steps_or(600, 100) {
        opt.zero_grad();
        let loss = mlp.forward(&xs)?.cross_entropy(&labels)?; // softmax + NLL
        loss.backward();
        opt.step();
        if step % 100 == 0 {
            println!("step {step:4}  loss {:.4}", loss.item());
        }
    }
    // ANCHOR_END: mlp
    let pred = argmax_rows(&no_grad(|| mlp.forward(&xs))?);
    let acc = pred.iter().zip(&labels).filter(|(p, l)| p == l).count() as f32 / labels.len() as f32;
    println!("two-moons training accuracy: {:.1}%", 100.0 * acc);
    let grid = 60;
    let mut mesh = Array2::<f32>::zeros((grid * grid, 2));
    for i in 0..grid {
        for j in 0..grid {
            mesh[[i * grid + j, 0]] = -1.5 + 4.0 * j as f32 / (grid - 1) as f32; // x from left to right
            mesh[[i * grid + j, 1]] = 2.0 - 3.0 * i as f32 / (grid - 1) as f32; // y from top to bottom
        }
    }
    let probs = no_grad(|| mlp.forward(&Tensor::new(mesh.into_dyn())).map(|l| l.softmax(-1)))?;
    let p1 = Array2::from_shape_fn((grid, grid), |(i, j)| probs.data()[[i * grid + j, 1]]);
    let boundary = out.join("moons_boundary.png");
    io::plot_heatmap(&boundary, "P(class 1) over the plane: x in [-1.5, 2.5], y in [-1, 2]", &p1, &[], &[])?;
    wrote(&boundary);
    let pts: Vec<(f64, f64)> = points.outer_iter().map(|r| (r[0] as f64, r[1] as f64)).collect();
    let scatter = out.join("moons_points.png");
    io::plot_scatter(&scatter, "two moons", &pts, &labels, &["class 0".into(), "class 1".into()])?;
    wrote(&scatter);

    cell(4, "A CNN on MNIST: the digit judge");
    let dir = c.data_dir();
    let train = data::load(DatasetName::Mnist, &dir, Split::Train, c.limit_or(1024))?;
    let test = data::load(DatasetName::Mnist, &dir, Split::Test, c.limit_or(500))?;
    println!("MNIST: {} train, {} test images of {:?}", train.len(), test.len(), train.image_shape());
    let judge = DigitJudge::new(&mut rng);
    println!("digit judge: {} parameters", judge.num_parameters());
    let steps = c.steps_or(3000, 20);
    let base_lr = c.lr_or(1e-3) as f32;
    // Linear warm-up, then cosine decay: the last epochs at a small rate settle the last 0.5%.
    let schedule = WarmupCosine { base_lr, min_lr: base_lr / 100.0, warmup: steps / 20, total: steps };
    let mut opt = Adam::new(judge.named_parameters(), base_lr);
    let mut sampler = BatchSampler::try_new(train.len(), c.batch_size_or(128, 32), c.seed)?;
    // --weights: evaluate a trained judge (e.g. weights/digit_judge.safetensors) without training.
    // --resume: continue a run from the checkpoint it saved (weights, Adam state, step, and the
    // positions of the augmentation generator and the batch order: the same losses as an unbroken run).
    let mut start = 0;
    if let Some(path) = &c.weights {
        checkpoint::load(path)?.load_into(&judge, &["optim."])?;
        start = steps;
        println!("loaded {}; skipping training", path.display());
    } else if let Some(path) = &c.resume {
        let resumed = Resumed::load(path, &judge, &mut opt, steps)?;
        resumed.restore_rng("augment", &mut rng)?;
        resumed.restore_sampler("train", &mut sampler)?;
        start = resumed.step;
        println!("resumed {} at step {start}", path.display());
    }
    let metrics_path = out.join("metrics.jsonl");
    let mut metrics = if c.resume.is_some() { MetricsLog::resume(&metrics_path, start)? } else { MetricsLog::open(&metrics_path, false)? };
    let progress = Progress::new("judge", steps);
    let mut losses = Vec::with_capacity(steps);
    let run_checkpoint = out.join("checkpoint.safetensors");
    let params = judge.named_parameters();
    // ANCHOR: train_judge
    for step in start..steps {
        let (images, labels) = train.batch(&sampler.next_batch()); // (B, 1, 28, 28), (B)
        let images = random_shift(&images, 2, &mut rng); // augmentation: move each digit by up to 2 px
        opt.set_lr(schedule.lr(step));
        opt.zero_grad();
        let loss = judge.forward(&Tensor::new(images.into_dyn()))?.cross_entropy(&labels)?;
        loss.backward();
        check_finite(step, loss.item(), None, &params)?; // a NaN loss stops here, before Adam spreads it
        opt.step();
        // ANCHOR_END: train_judge
        losses.push(loss.item());
        metrics.log(step, &[("loss", loss.item() as f64)])?;
        progress.update(step + 1, &[("loss", loss.item())]);
        let stop = c.stops_after(step + 1, steps);
        if (step + 1) % 500 == 0 || step + 1 == steps || stop {
            // atomic: a crash never loses the previous checkpoint
            let state = RunState::new(step + 1).rng("augment", &rng).sampler("train", &sampler);
            save_run(&run_checkpoint, &judge, &opt, &state)?;
        }
        if stop {
            progress.finish();
            println!("stopped after step {}; continue with --resume {}", step + 1, run_checkpoint.display());
            return Ok(());
        }
    }
    progress.finish();
    if !losses.is_empty() {
        let curve = out.join("judge_loss.png");
        io::plot_lines(&curve, "digit judge training loss", "step", "cross entropy", &[Series::from_values("train", &losses)], true)?;
        wrote(&curve);
    }
    let pred = judge.predict(&test.images)?;
    let correct = pred.iter().zip(&test.labels).filter(|(p, l)| p == l).count();
    let accuracy = correct as f64 / test.len() as f64;
    println!("test accuracy: {:.2}% ({correct}/{}) in {:.1} s of training", 100.0 * accuracy, test.len(), progress.elapsed().as_secs_f64());
    metrics.log(steps, &[("test_accuracy", accuracy)])?;
    let mut meta = HashMap::new();
    meta.insert("test_accuracy".to_string(), format!("{accuracy:.4}"));
    meta.insert("steps".to_string(), steps.to_string());
    let ckpt = out.join("digit_judge.safetensors");
    checkpoint::save(&ckpt, &judge, None, &meta)?;
    wrote(&ckpt);

    cell(5, "What the judge sees");
    let n = test.len().min(32);
    let first = test.images.slice(ndarray::s![..n, .., .., ..]).to_owned();
    let grid_path = out.join("judge_test_grid.png");
    io::save_image_grid(&grid_path, &first, &GridOptions { scale: 2, ..GridOptions::with_nrow(8) })?;
    wrote(&grid_path);
    println!("predictions: {:?}", &pred[..n]);
    println!("labels:      {:?}", &test.labels[..n]);
    Ok(())
}

/// Shift each image by a random offset in `-max..=max` pixels in both directions,
/// filling with zeros: digits may sit anywhere, the label stays the same.
fn random_shift(images: &ndarray::Array4<f32>, max: usize, rng: &mut Rng) -> ndarray::Array4<f32> {
    let (n, _, h, w) = images.dim();
    let mut out = ndarray::Array4::<f32>::zeros(images.raw_dim());
    let span = 2 * max + 1;
    for i in 0..n {
        let (dy, dx) = (rng.below(span) as isize - max as isize, rng.below(span) as isize - max as isize);
        for y in 0..h as isize {
            for x in 0..w as isize {
                let (sy, sx) = (y - dy, x - dx);
                if sy >= 0 && sy < h as isize && sx >= 0 && sx < w as isize {
                    out[[i, 0, y as usize, x as usize]] = images[[i, 0, sy as usize, sx as usize]];
                }
            }
        }
    }
    out
}

/// Two interleaving half circles with Gaussian noise: the classic toy set a
/// straight line cannot separate.
fn two_moons(n: usize, noise: f32, rng: &mut Rng) -> (Array2<f32>, Vec<usize>) {
    let mut points = Array2::<f32>::zeros((n, 2));
    let mut labels = Vec::with_capacity(n);
    let eps = rng.normal_array(&[n, 2]);
    for i in 0..n {
        let class = i % 2;
        let t = std::f32::consts::PI * rng.uniform();
        let (x, y) = if class == 0 { (t.cos(), t.sin()) } else { (1.0 - t.cos(), 0.5 - t.sin()) };
        points[[i, 0]] = x + noise * eps[[i, 0]];
        points[[i, 1]] = y + noise * eps[[i, 1]];
        labels.push(class);
    }
    (points, labels)
}
