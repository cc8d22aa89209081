//! Chapter 08: denoising diffusion on MNIST labels, and four samplers of one network.
//!
//! ```text
//! cargo run --release --example 08_ddpm                       # MNIST, about 30 minutes of training
//! cargo run --release --example 08_ddpm -- --weights weights/ddpm_mnist.safetensors   # sample only
//! cargo run --release --example 08_ddpm -- --resume runs/08_ddpm/checkpoint.safetensors
//! cargo run --release --example 08_ddpm -- --dataset fashion-mnist
//! cargo run --release --example 08_ddpm -- --smoke
//! ```
//!
//! Leaves in `runs/08_ddpm/`: `forward.png` (one image noised to several t),
//! `schedules.png` (ᾱ_t of the linear and cosine schedules), `loss.png`, `strip.png`
//! (x_t as t goes to 0, one row per class), `grid_<sampler>.png`, `guidance.png`,
//! `quality.png` (judge accuracy and Fréchet distance against network evaluations),
//! `inversion.png`, `eval.jsonl`, `samples.npy` + `prompts.txt` + `labels.txt`,
//! `checkpoint.safetensors` (weights, EMA, Adam, step) and `ddpm_ema.safetensors`.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use clap::Parser;
use dalle::data::batch::BatchSampler;
use dalle::data::{self, DatasetName, Split};
use dalle::eval::{frechet_distance, DigitJudge, FeatureStats};
use dalle::io::checkpoint::{self, Checkpoint};
use dalle::io::{plot_lines, save_image_grid, write_samples, GridOptions, Series};
use dalle::models::diffusion::samplers::ddpm_sample;
use dalle::models::diffusion::{
    ddim_invert, diffusion_loss, drop_labels, respace, BetaSchedule, ClassConditionalUNet, ClassifierFree, Diffusion, NoiseSchedule, Sampler, UNetConfig, Variance, to_model, to_pixels,
};
use dalle::nn::Module;
use dalle::optim::{Adam, Ema, Optimizer};
use dalle::train::{cell, check_finite, series, wrote, CommonArgs, MetricsLog, Progress, TimeBudget};
use dalle::{Error, Rng, Tensor};
use ndarray::{s, Array4, Axis};

/// Train a class-conditional DDPM and compare its samplers.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Stop training after this many seconds even if steps remain (0: no limit).
    #[arg(long, default_value_t = 1800)]
    time_limit: u64,
    /// Channels of the U-Net's first level (levels have 1x, 2x, 2x) [default: UNetConfig::mnist's 16].
    #[arg(long)]
    base_channels: Option<usize>,
    /// Share of training labels replaced by the null class (for classifier-free guidance).
    #[arg(long, default_value_t = 0.1)]
    p_uncond: f32,
    /// Classifier-free guidance scale s of the guided samples.
    #[arg(long, default_value_t = 3.0)]
    guidance: f32,
    /// Samples per class for each sampler's accuracy and Fréchet distance (DDIM, Euler, Heun).
    #[arg(long, default_value_t = 100)]
    eval_per_class: usize,
    /// Samples per class for the 1000-step DDPM sampler (slow: 1000 evaluations each).
    #[arg(long, default_value_t = 10)]
    ddpm_per_class: usize,
    /// Samples per class for each point of the guidance-scale curve (DDIM-25).
    #[arg(long, default_value_t = 20)]
    scale_per_class: usize,
    /// The evaluated samplers and their steps (ddpm-N, ddim-N, euler-N, heun-N), comma-separated.
    #[arg(long, default_value = "ddpm-1000,ddim-50,heun-25,ddim-10,heun-5")]
    samplers: String,
    /// An `eval.jsonl` of an earlier run of these weights whose sampler rows join this run's
    /// accuracy and Fréchet plots (repeatable: evaluations split over several processes).
    #[arg(long)]
    plot_with: Vec<std::path::PathBuf>,
    /// Images per sampling batch (guidance doubles it inside the network).
    #[arg(long, default_value_t = 250)]
    sample_batch: usize,
}

/// `T`, the training schedule's length.
const NUM_TRAIN_STEPS: usize = 1000;

fn main() -> dalle::Result<()> {
    // Kernels split their work with rayon; see `on_worker` for why main runs on the pool.
    dalle::backend::on_worker(notebook)
}

/// A run's checkpoint: the weights, their EMA (`ema.*`), Adam's state and the step.
fn save_checkpoint(path: &Path, model: &ClassConditionalUNet, ema: &Ema, opt: &Adam, step: usize) -> dalle::Result<()> {
    let mut tensors: Vec<(String, ndarray::ArrayD<f32>)> = model.named_parameters().into_iter().map(|(n, t)| (n, t.to_array())).collect();
    tensors.extend(ema.shadow().iter().map(|(n, t)| (format!("ema.{n}"), t.to_array())));
    tensors.extend(opt.state().into_iter().map(|(n, a)| (format!("optim.{n}"), a)));
    checkpoint::save_tensors(path, &tensors, &HashMap::from([("step".to_string(), step.to_string())]))
}

/// The EMA weights of a run checkpoint (`ema.*`), or a file of plain weights (the shipped one).
fn ema_weights(ck: &Checkpoint) -> Checkpoint {
    let ema: HashMap<String, ndarray::ArrayD<f32>> = ck.tensors.iter().filter_map(|(k, v)| k.strip_prefix("ema.").map(|n| (n.to_string(), v.clone()))).collect();
    let tensors = if ema.is_empty() { ck.tensors.clone() } else { ema };
    Checkpoint { path: ck.path.clone(), tensors, metadata: ck.metadata.clone() }
}

/// `labels.len()` samples of `sampler` over `steps` timesteps, guided with scale `scale` when given,
/// in batches; returns the images in `[0, 1]` and the seconds per image.
#[allow(clippy::too_many_arguments)]
fn generate(
    model: &ClassConditionalUNet,
    diffusion: &Diffusion,
    sampler: Sampler,
    steps: usize,
    labels: &[usize],
    scale: Option<f32>,
    batch: usize,
    rng: &mut Rng,
) -> dalle::Result<(Array4<f32>, f64)> {
    let start = Instant::now();
    let timesteps = respace(NUM_TRAIN_STEPS, steps)?;
    let c = &model.unet.config;
    let mut parts = Vec::new();
    for chunk in labels.chunks(batch.max(1)) {
        let b = chunk.len();
        let x_t = Tensor::randn(&[b, c.in_channels, c.image_size, c.image_size], rng); // x_T ~ N(0, I)
        let x0 = match scale {
            Some(s) => {
                // ANCHOR: guided
                let doubled: Vec<usize> = chunk.iter().copied().chain(std::iter::repeat_n(model.null_class(), b)).collect();
                let guided = ClassifierFree { model: model.with_labels(doubled), scale: s };
                sampler.sample(&guided, diffusion, x_t, &timesteps, rng, &mut |_, _| {})?
                // ANCHOR_END: guided
            }
            None => sampler.sample(&model.with_labels(chunk.to_vec()), diffusion, x_t, &timesteps, rng, &mut |_, _| {})?,
        };
        parts.push(to_pixels(&x0)?);
    }
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    let images = ndarray::concatenate(Axis(0), &views).map_err(|e| Error::Msg(format!("samples: {e}")))?;
    Ok((images, start.elapsed().as_secs_f64() / labels.len().max(1) as f64))
}

/// `"ddpm-1000,ddim-50"` -> (sampler, steps, samples per class); DDPM gets `ddpm_per_class`.
fn parse_samplers(list: &str, per_class: usize, ddpm_per_class: usize) -> dalle::Result<Vec<(Sampler, usize, usize)>> {
    list.split(',')
        .map(|item| {
            let bad = || Error::Config(format!("--samplers: `{item}` is not ddpm-N, ddim-N, euler-N or heun-N"));
            let (name, steps) = item.trim().split_once('-').ok_or_else(bad)?;
            let steps: usize = steps.parse().map_err(|_| bad())?;
            Ok(match name {
                "ddpm" => (Sampler::Ddpm(Variance::Small), steps, ddpm_per_class),
                "ddim" => (Sampler::Ddim(0.0), steps, per_class),
                "euler" => (Sampler::Euler, steps, per_class),
                "heun" => (Sampler::Heun, steps, per_class),
                _ => return Err(bad()),
            })
        })
        .collect()
}

/// The sampler rows of an `eval.jsonl` (the guidance-curve rows, `"ddim-25 s=3"`, are left out):
/// (sampler name, network evaluations, guided, accuracy, Fréchet distance).
fn read_eval_rows(path: &Path) -> dalle::Result<Vec<(String, f64, bool, f64, f64)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |what: &str| Error::Msg(format!("{}: line {}: {what}", path.display(), i + 1));
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(&e.to_string()))?;
        let sampler = v["sampler"].as_str().ok_or_else(|| bad("no `sampler`"))?;
        if sampler.contains(' ') {
            continue;
        }
        let name = sampler.split('-').next().unwrap_or(sampler).to_string();
        let number = |key: &str| v[key].as_f64().ok_or_else(|| bad(&format!("no number `{key}`")));
        let guided = v["guided"].as_bool().ok_or_else(|| bad("no `guided`"))?;
        rows.push((name, number("evaluations")?, guided, number("accuracy")?, number("frechet")?));
    }
    Ok(rows)
}

/// `per_class` labels of each of `classes` classes: 0, 1, ..., K-1, 0, 1, ...
fn balanced_labels(classes: usize, per_class: usize) -> Vec<usize> {
    (0..classes * per_class).map(|i| i % classes).collect()
}

fn notebook() -> dalle::Result<()> {
    let args = Args::parse();
    let c = &args.common;
    let out = c.start("08_ddpm", true, true)?;
    let dataset = c.dataset_or(DatasetName::Mnist);
    let smoke = c.smoke;
    println!("CPU kernel tier: {} (DALLE_CPU forces one)", dalle::backend::cpu::tier::tier().name());

    cell(1, "Load the data");
    let train = data::load(dataset, &c.data_dir(), Split::Train, c.limit_or(256))?;
    let test = data::load(dataset, &c.data_dir(), Split::Test, c.limit_or(200))?;
    let classes = train.classes.len();
    println!("{} train and {} test images of shape {:?}, {classes} classes", train.len(), test.len(), train.image_shape());

    // ANCHOR: forward_process
    cell(2, "The forward process: q(x_t | x_0) on one image");
    let diffusion = Diffusion::linear_epsilon()?;
    let cosine = NoiseSchedule::new(BetaSchedule::Cosine, NUM_TRAIN_STEPS)?;
    let shown_t = [0, 50, 100, 200, 350, 500, 700, 999];
    let x0 = to_model(&test.images.slice(s![0..1, .., .., ..]).to_owned()); // (1, C, H, W)
    let mut rng = Rng::new(c.seed);
    let noise = Tensor::randn(&x0.shape(), &mut rng);
    let noised: Vec<Tensor> = shown_t.iter().map(|&t| diffusion.schedule.q_sample(&x0, &[t], &noise)).collect::<dalle::Result<_>>()?;
    let strip = to_pixels(&Tensor::concat(&noised.iter().collect::<Vec<_>>(), 0)?)?;
    for &t in &shown_t {
        let ab = diffusion.schedule.alphas_cumprod[t];
        println!("t = {t:>3}: ᾱ_t = {ab:.4}, signal √ᾱ = {:.3}, noise √(1-ᾱ) = {:.3}", ab.sqrt(), (1.0 - ab).sqrt());
    }
    // ANCHOR_END: forward_process
    let path = out.join("forward.png");
    save_image_grid(&path, &strip, &GridOptions { scale: 3, ..GridOptions::with_nrow(shown_t.len()) })?;
    wrote(&path);
    let curve = |s: &NoiseSchedule, name: &str| Series::new(name, s.alphas_cumprod.iter().enumerate().map(|(t, &a)| (t as f64, a as f64)).collect());
    let path = out.join("schedules.png");
    plot_lines(&path, "ᾱ_t: the share of signal variance left at step t", "t", "ᾱ_t", &[curve(&diffusion.schedule, "linear"), curve(&cosine, "cosine")], false)?;
    wrote(&path);

    cell(3, "Build the class-conditional U-Net");
    let (ch, h, _) = train.image_shape();
    let base = args.base_channels.unwrap_or(if smoke { 8 } else { UNetConfig::mnist().base_channels });
    let config = UNetConfig { in_channels: ch, image_size: h, base_channels: base, attention_resolutions: vec![h / 4], ..UNetConfig::mnist() };
    let model = ClassConditionalUNet::new(config.clone(), classes, &mut Rng::new(c.seed))?;
    println!("{config:?}");
    println!("{} parameters; null class = {}", model.num_parameters(), model.null_class());
    let params = model.named_parameters();
    if let Some(path) = &c.weights {
        ema_weights(&checkpoint::load(path)?).load_into(&model, &["optim."])?;
        println!("loaded {}; sampling without training", path.display());
    }
    let mut ema = Ema::new(&params, 0.999); // starts at the current weights (the loaded ones with --weights)
    let mut opt = Adam::new(params.clone(), c.lr_or(2e-3) as f32);
    let steps = c.steps_or(20_000, 3);
    let batch_size = c.batch_size_or(64, 8);
    let mut sampler = BatchSampler::new(train.len(), batch_size, c.seed);
    let mut start = 0;
    if c.weights.is_some() {
        start = steps;
    } else if let Some(path) = &c.resume {
        let ck = checkpoint::load(path)?;
        ck.load_into(&model, &["optim.", "ema."])?;
        ema_weights(&ck).load_into(&Shadow(&ema), &["optim."])?;
        ck.load_optimizer(&mut opt)?;
        start = ck.metadata.get("step").and_then(|v| v.parse().ok()).ok_or_else(|| Error::Checkpoint(format!("{}: no `step` in the metadata", path.display())))?;
        if start > steps {
            return Err(Error::Config(format!("--resume: {} is at step {start}, past --steps {steps}", path.display())));
        }
        (0..start).for_each(|_| drop(sampler.next_batch())); // the same batch order as an unbroken run
        println!("resumed {} at step {start}", path.display());
    }

    // ANCHOR: train
    cell(4, "Train: ‖ε - ε_θ(x_t, t, y)‖², labels dropped 10% of the time");
    let mut log = MetricsLog::open(out.join("metrics.jsonl"), start > 0)?;
    let progress = Progress::new("ddpm", steps);
    let budget = TimeBudget::new(args.time_limit);
    let run_checkpoint = out.join("checkpoint.safetensors");
    let base_lr = opt.lr();
    let mut trained = start;
    for step in start..steps {
        let (images, labels) = train.batch(&sampler.next_batch()); // (B, C, H, W) in [0, 1], (B)
        let x0 = to_model(&images); // [-1, 1]
        let mut rng = Rng::new(c.seed.wrapping_mul(1_000_003).wrapping_add(step as u64)); // per step: resumable
        let t: Vec<usize> = (0..labels.len()).map(|_| rng.below(NUM_TRAIN_STEPS)).collect(); // t ~ U{0, ..., T-1}
        let noise = Tensor::randn(&x0.shape(), &mut rng); // ε ~ N(0, I)
        let labels = drop_labels(&labels, args.p_uncond, model.null_class(), &mut rng); // y or ∅
        let loss = diffusion_loss(&diffusion.schedule, diffusion.prediction, |x_t, t| model.forward(x_t, t, &labels), &x0, &t, &noise)?;
        opt.set_lr(base_lr * ((step + 1) as f32 / 100.0).min(1.0)); // linear warm-up over 100 steps
        opt.zero_grad();
        loss.backward();
        check_finite(step, loss.item(), None, &params)?; // a NaN loss stops the run before it reaches the weights
        opt.step();
        ema.update_at(step, &params); // θ̄ ← d θ̄ + (1 - d) θ, d warmed up
        trained = step + 1;
        if trained % 200 == 0 {
            save_checkpoint(&run_checkpoint, &model, &ema, &opt, trained)?; // atomic
        }
        if budget.record_step(step, &[("loss", loss.item() as f64)], &mut log, &progress)? {
            break;
        }
    }
    progress.finish();
    // ANCHOR_END: train
    if trained > start {
        let secs = budget.elapsed_secs();
        println!("trained steps {start}..{trained} in {secs:.0} s: {:.2} s per step of {batch_size}", secs / (trained - start) as f64);
        save_checkpoint(&run_checkpoint, &model, &ema, &opt, trained)?;
        wrote(&run_checkpoint);
        let records = dalle::train::read_metrics(log.path())?;
        let path = out.join("loss.png");
        plot_lines(&path, "training loss (MSE on ε)", "step", "loss", &[series(&records, "loss")], true)?;
        wrote(&path);
    }
    ema.copy_to(&params); // from here on, the EMA weights
    let path = out.join("ddpm_ema.safetensors");
    let meta = HashMap::from([("dataset".to_string(), dataset.as_str().to_string()), ("steps".to_string(), trained.to_string())]);
    checkpoint::save(&path, &model, None, &meta)?;
    wrote(&path);

    // ANCHOR: strip
    cell(5, "x_t as t goes to 0 (DDPM ancestral, guided, one row per class)");
    let strip_steps = if smoke { 4 } else { 100 };
    let timesteps = respace(NUM_TRAIN_STEPS, strip_steps)?;
    let labels: Vec<usize> = (0..classes).collect();
    let doubled: Vec<usize> = labels.iter().copied().chain(std::iter::repeat_n(model.null_class(), classes)).collect();
    let guided = ClassifierFree { model: model.with_labels(doubled), scale: args.guidance };
    let x_t = Tensor::randn(&[classes, ch, h, h], &mut rng);
    let mut frames = vec![to_pixels(&x_t)?];
    let every = (strip_steps / 7).max(1);
    ddpm_sample(&guided, &diffusion, x_t, &timesteps, Variance::Small, &mut rng, &mut |i, x| {
        if (i + 1) % every == 0 || i + 1 == strip_steps {
            frames.push(to_pixels(x).expect("4-D samples"));
        }
    })?;
    // ANCHOR_END: strip
    let cols = frames.len();
    let strip = Array4::from_shape_fn((classes * cols, ch, h, h), |(i, c, y, x)| frames[i % cols][[i / cols, c, y, x]]);
    let path = out.join("strip.png");
    save_image_grid(&path, &strip, &GridOptions { scale: 2, ..GridOptions::with_nrow(cols) })?;
    wrote(&path);

    cell(6, "Grids per sampler, accuracy and Fréchet distance");
    let judge = if dataset == DatasetName::Mnist { Some(DigitJudge::pretrained()?) } else { None };
    let batch = args.sample_batch;
    // the real test images' judge features: reference set and an equally large second set (the floor)
    let n_eval = classes * if smoke { 1 } else { args.eval_per_class };
    let real_stats = |from: usize, n: usize| -> dalle::Result<Option<FeatureStats>> {
        let n = n.min(test.len().saturating_sub(from));
        match &judge {
            Some(j) if n >= 2 => Ok(Some(FeatureStats::from_rows(&j.feature_rows(&test.images.slice(s![from..from + n, .., .., ..]).to_owned())?)?)),
            _ => Ok(None),
        }
    };
    let reference = real_stats(0, test.len() / 2)?;
    let mut eval_log = std::fs::File::create(out.join("eval.jsonl")).map_err(|e| Error::io(out.join("eval.jsonl"), e))?;
    let mut report = |name: &str, nfe: usize, guided: bool, images: &Array4<f32>, labels: &[usize], secs: f64| -> dalle::Result<(f64, f64)> {
        let (mut acc, mut fd) = (f64::NAN, f64::NAN);
        if let (Some(j), Some(r)) = (&judge, &reference) {
            acc = j.fidelity(images, labels)? as f64;
            if images.dim().0 >= 2 {
                fd = frechet_distance(&FeatureStats::from_rows(&j.feature_rows(images)?)?, r);
            }
        }
        let line = format!(
            "{{\"sampler\": \"{name}\", \"evaluations\": {nfe}, \"guided\": {guided}, \"images\": {}, \"accuracy\": {acc:.4}, \"frechet\": {fd:.3}, \"seconds_per_image\": {secs:.4}}}",
            images.dim().0
        );
        println!("{line}");
        writeln!(eval_log, "{line}").map_err(|e| Error::io(out.join("eval.jsonl"), e))?;
        Ok((acc, fd))
    };
    if let Some(floor) = real_stats(test.len() / 2, n_eval)? {
        let r = reference.as_ref().expect("judge present");
        println!("real vs real ({} vs {} test images): Fréchet distance {:.3} (the floor)", floor.count, r.count, frechet_distance(&floor, r));
    }
    // (sampler, steps, samples per class); DDPM with all 1000 steps is slow, so it gets fewer samples
    let runs: Vec<(Sampler, usize, usize)> = if smoke {
        vec![(Sampler::Ddpm(Variance::Small), 5, 1), (Sampler::Ddim(0.0), 3, 1), (Sampler::Ddim(0.0), 2, 1), (Sampler::Euler, 3, 1), (Sampler::Heun, 2, 1)]
    } else {
        parse_samplers(&args.samplers, args.eval_per_class, args.ddpm_per_class)?
    };
    let mut curves: HashMap<(String, bool), (Vec<(f64, f64)>, Vec<(f64, f64)>)> = HashMap::new();
    let mut shipped: Option<(Array4<f32>, Vec<usize>)> = None;
    for &(sampler, steps, per_class) in &runs {
        if per_class == 0 {
            continue;
        }
        let labels = balanced_labels(classes, per_class);
        let nfe = sampler.evaluations(steps);
        for guided in [true, false] {
            let scale = guided.then_some(args.guidance);
            let (images, secs) = generate(&model, &diffusion, sampler, steps, &labels, scale, batch, &mut Rng::new(c.seed + 1))?;
            let name = format!("{}-{steps}", sampler.name());
            let (acc, fd) = report(&name, nfe, guided, &images, &labels, secs)?;
            let entry = curves.entry((sampler.name(), guided)).or_default();
            entry.0.push((nfe as f64, acc));
            entry.1.push((nfe as f64, fd));
            if guided {
                let path = out.join(format!("grid_{name}.png"));
                let first: Vec<usize> = (0..classes * per_class.min(10)).collect();
                save_image_grid(&path, &images.select(Axis(0), &first), &GridOptions { scale: 2, ..GridOptions::with_nrow(classes) })?;
                wrote(&path);
                if shipped.is_none() && sampler == Sampler::Ddim(0.0) {
                    shipped = Some((images, labels.clone()));
                }
            }
        }
    }
    for path in &args.plot_with {
        for (name, nfe, guided, acc, fd) in read_eval_rows(path)? {
            let entry = curves.entry((name, guided)).or_default();
            entry.0.push((nfe, acc));
            entry.1.push((nfe, fd));
        }
    }
    if judge.is_some() && curves.values().any(|(acc, _)| acc.len() >= 2) {
        let mut acc_series = Vec::new();
        let mut fd_series = Vec::new();
        // a sampler with one step count (DDPM-1000) is one point: no line, and it would stretch the axis
        let mut keys: Vec<_> = curves.iter().filter(|(_, (acc, _))| acc.len() >= 2).map(|(k, _)| k.clone()).collect();
        keys.sort();
        for key in keys {
            let (mut acc, mut fd) = curves[&key].clone();
            acc.sort_by(|a, b| a.0.total_cmp(&b.0));
            fd.sort_by(|a, b| a.0.total_cmp(&b.0));
            let name = format!("{}{}", key.0, if key.1 { " guided" } else { "" });
            acc_series.push(Series::new(name.clone(), acc));
            fd_series.push(Series::new(name, fd));
        }
        let path = out.join("quality.png");
        plot_lines(&path, "judge accuracy against network evaluations", "network evaluations", "judge accuracy", &acc_series, false)?;
        wrote(&path);
        let path = out.join("frechet.png");
        plot_lines(&path, "Fréchet distance (judge features) against network evaluations", "network evaluations", "Fréchet distance", &fd_series, true)?;
        wrote(&path);
    }

    cell(7, "The guidance scale: ε_uncond + s (ε_cond - ε_uncond)");
    let per_class = if smoke { 1 } else { args.scale_per_class };
    let labels = balanced_labels(classes, per_class);
    let mut acc_curve = Vec::new();
    let mut fd_curve = Vec::new();
    let scales: &[f32] = if per_class == 0 { &[] } else { &[0.0, 1.0, 2.0, 3.0, 5.0] };
    for &scale in scales {
        let steps = if smoke { 2 } else { 25 };
        let (images, secs) = generate(&model, &diffusion, Sampler::Ddim(0.0), steps, &labels, Some(scale), batch, &mut Rng::new(c.seed + 2))?;
        let (acc, fd) = report(&format!("ddim-{steps} s={scale}"), steps, true, &images, &labels, secs)?;
        acc_curve.push((scale as f64, acc));
        fd_curve.push((scale as f64, fd));
    }
    if judge.is_some() && !scales.is_empty() {
        let path = out.join("guidance.png");
        plot_lines(&path, "guidance scale s: judge accuracy and Fréchet distance / 100", "s", "value", &[Series::new("accuracy", acc_curve), Series::new("Fréchet / 100", fd_curve.iter().map(|&(s, f)| (s, f / 100.0)).collect())], false)?;
        wrote(&path);
    }

    cell(8, "DDIM inversion: x_0 -> x_T -> x_0");
    let n = classes.min(test.len());
    let (images, labels) = test.batch(&(0..n).collect::<Vec<_>>());
    let x0 = to_model(&images);
    let steps = respace(NUM_TRAIN_STEPS, if smoke { 3 } else { 50 })?;
    let denoiser = model.with_labels(labels.clone());
    let x_t = ddim_invert(&denoiser, &diffusion, &x0, &steps)?;
    let back = Sampler::Euler.sample(&denoiser, &diffusion, x_t.clone(), &steps, &mut rng, &mut |_, _| {})?;
    let err = back.sub(&x0)?.abs();
    println!("x_T: mean {:.3}, std {:.3}; |x_0 - sample(invert(x_0))|: mean {:.4}, max {:.4} (pixels in [-1, 1])", x_t.mean().item(), x_t.var_axes(&[0, 1, 2, 3], false, false)?.item().sqrt(), err.mean().item(), err.to_vec().iter().fold(0.0f32, |m, v| m.max(*v)));
    let shown = ndarray::concatenate(Axis(0), &[images.view(), to_pixels(&x_t.scale(0.5))?.view(), to_pixels(&back)?.view()]).map_err(|e| Error::Msg(e.to_string()))?;
    let path = out.join("inversion.png");
    save_image_grid(&path, &shown, &GridOptions { scale: 2, ..GridOptions::with_nrow(n) })?;
    wrote(&path);

    cell(9, "Write the samples");
    let (images, labels) = match shipped {
        Some(s) => s,
        None => generate(&model, &diffusion, Sampler::Ddim(0.0), if smoke { 2 } else { 50 }, &balanced_labels(classes, 1), Some(args.guidance), batch, &mut Rng::new(c.seed + 3)).map(|(i, _)| (i, balanced_labels(classes, 1)))?,
    };
    let names = dataset.classes();
    let prompts: Vec<String> = labels.iter().map(|&y| names.get(y).cloned().unwrap_or_else(|| y.to_string())).collect();
    write_samples(&out, &images, &prompts, Some(&labels))?;
    wrote(out.join("samples.npy"));
    Ok(())
}

/// The EMA's shadow tensors as a module, so that a checkpoint's `ema.*` entries load into them by name.
struct Shadow<'a>(&'a Ema);

impl Module for Shadow<'_> {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        for (name, t) in self.0.shadow() {
            f(name, t);
        }
    }
}
