//! Chapter 09 (CLIP guidance): a noised CLIP trained on MNIST images at every noise level,
//! its zero-shot accuracy against t, then digits sampled from chapter 08's U-Net with no
//! class (the null class) and steered by the CLIP's gradient toward a caption.
//!
//! ```text
//! cargo run --release --example 09_noised_clip                  # about 10 minutes of training
//! cargo run --release --example 09_noised_clip -- --weights weights/noised_clip_mnist.safetensors   # evaluate only
//! cargo run --release --example 09_noised_clip -- --resume runs/09_noised_clip/checkpoint.safetensors
//! cargo run --release --example 09_noised_clip -- --smoke
//! ```
//!
//! Leaves in `runs/09_noised_clip/`: `loss.png`, `zero_shot.csv` and `zero_shot.png` (accuracy
//! against t, the noised CLIP beside chapter 03's), `guidance.csv` and `guidance.png` (judge
//! accuracy against the guidance scale), `grid_s<scale>.png` (one row per digit),
//! `samples.npy` + `prompts.txt` + `labels.txt` (the samples at `--scale`),
//! `checkpoint.safetensors` (resumable) and `noised_clip_mnist.safetensors`.

use std::collections::HashMap;
use std::io::Write;
use std::time::Instant;

use clap::Parser;
use dalle::data::batch::BatchSampler;
use dalle::data::captions::{class_caption, num_templates};
use dalle::data::{self, DatasetName, Split};
use dalle::eval::DigitJudge;
use dalle::io::{checkpoint, plot_lines, save_image_grid, write_samples, GridOptions, Series};
use dalle::models::clip::load::{load_toy, tokenizer_path_for};
use dalle::models::clip::zero_shot::dataset_prompts;
use dalle::models::clip::ClipModel;
use dalle::models::diffusion::{respace, to_model, to_pixels, BetaSchedule, ClassConditionalUNet, Diffusion, NoiseSchedule, Prediction, Sampler, UNetConfig, Variance};
use dalle::models::noised_clip::{ClipGuided, NoisedClip};
use dalle::nn::Module;
use dalle::optim::{clip_grad_norm, Adam, Optimizer, WarmupCosine};
use dalle::tensor::no_grad;
use dalle::tokenizer::{TextTokenizer, TrainedBpe};
use dalle::train::{cell, check_finite, resume_from, save_or_stop, series, wrote, CommonArgs, MetricsLog, Progress, RunState, TimeBudget};
use dalle::{Error, Rng, Tensor};
use ndarray::{Array2, Axis};

/// Train a noised CLIP and sample digits with CLIP guidance.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Stop training after this many minutes even if steps remain (0: no limit).
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Chapter 03's CLIP: its text tower (frozen) and the image tower's start.
    #[arg(long, default_value = "weights/clip_mnist.safetensors")]
    clip: std::path::PathBuf,
    /// Chapter 08's class-conditional U-Net, sampled with the null class.
    #[arg(long, default_value = "weights/ddpm_mnist.safetensors")]
    ddpm: std::path::PathBuf,
    /// The guidance scales of the accuracy curve, comma-separated.
    #[arg(long, default_value = "0,50,100,200,400")]
    scales: String,
    /// The scale whose samples are written to samples.npy.
    #[arg(long, default_value_t = 200.0)]
    scale: f32,
    /// Samples per digit at each scale.
    #[arg(long, default_value_t = 10)]
    per_class: usize,
    /// Steps of guided sampling.
    #[arg(long, default_value_t = 50)]
    sample_steps: usize,
    /// The sampler of guided sampling: `ddim` (η = 0) or `ddpm` (ancestral, β̃ variance).
    #[arg(long, default_value = "ddpm")]
    sampler: String,
    /// Test images per noise level for zero-shot accuracy.
    #[arg(long, default_value_t = 1000)]
    eval_images: usize,
}

/// `T` of chapter 08's schedule (that of weights/ddpm_mnist).
const NUM_TRAIN_STEPS: usize = 1000;
/// The noise levels of the zero-shot table.
const EVAL_T: [usize; 10] = [0, 100, 200, 300, 400, 500, 600, 700, 800, 900];

fn main() -> dalle::Result<()> {
    dalle::backend::on_worker(notebook)
}

/// Prompt-ensembled class embeddings `(K, E)`: every template's unit embedding, averaged, renormalised.
fn class_embeds(clip: &NoisedClip, tokenizer: &dyn TextTokenizer) -> dalle::Result<Tensor> {
    let rows: Vec<Tensor> = dataset_prompts(DatasetName::Mnist)
        .iter()
        .map(|prompts| clip.caption_embeds(tokenizer, prompts)?.mean_axes(&[0], true)?.l2_normalize(-1, 1e-12))
        .collect::<dalle::Result<_>>()?;
    Tensor::concat(&rows.iter().collect::<Vec<_>>(), 0) // (K, E)
}

fn argmax_rows(a: &Array2<f32>) -> Vec<usize> {
    a.rows().into_iter().map(|r| r.iter().enumerate().fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0).collect()
}

fn notebook() -> dalle::Result<()> {
    let args = Args::parse();
    let c = &args.common;
    let out = c.start("09_noised_clip", true, true)?;
    let smoke = c.smoke;

    cell(1, "Load MNIST, the diffusion schedule and chapter 03's CLIP");
    let train = data::load(DatasetName::Mnist, &c.data_dir(), Split::Train, c.limit_or(256))?;
    let test = data::load(DatasetName::Mnist, &c.data_dir(), Split::Test, Some(if smoke { 64 } else { args.eval_images }))?;
    let schedule = NoiseSchedule::new(BetaSchedule::linear(NUM_TRAIN_STEPS), NUM_TRAIN_STEPS)?;
    let (toy, tokenizer): (ClipModel, TrainedBpe) = load_toy(&args.clip)?;
    println!("{} train, {} test images; chapter 03's CLIP from {}", train.len(), test.len(), args.clip.display());

    // ANCHOR: build
    cell(2, "The noised CLIP: chapter 03's towers, a time token in place of the class token");
    let clip = match &c.weights {
        Some(path) => NoisedClip::load(path)?,
        None => NoisedClip::from_clip(load_toy(&args.clip)?.0, 32, NUM_TRAIN_STEPS, "linear 1e-4..0.02 (chapter 08)")?,
    };
    match &c.weights {
        Some(path) => println!("loaded {} (trained on noised images)", path.display()),
        None => println!("warm start: image tower from {}, time token = its class token at every t; text tower frozen", args.clip.display()),
    }
    // ANCHOR_END: build
    let trainable: Vec<(String, Tensor)> = clip.named_parameters().into_iter().filter(|(_, p)| p.requires_grad()).collect();
    println!(
        "{} parameters, {} trained (image tower, time token, temperature); text tower frozen",
        clip.num_parameters(),
        trainable.iter().map(|(_, p)| p.len()).sum::<usize>()
    );

    cell(3, "Contrastive training on x_t at random t");
    let steps = c.steps_or(3000, 4);
    let batch = c.batch_size_or(128, 16);
    let schedule_lr = WarmupCosine { base_lr: c.lr_or(5e-4) as f32, min_lr: 1e-5, warmup: 50.min(steps / 5).max(1), total: steps };
    let mut opt = Adam::adamw(trainable.clone(), schedule_lr.base_lr, 0.01);
    let mut sampler = BatchSampler::try_new(train.len(), batch, c.seed)?;
    let mut rng = Rng::new(c.seed + 1);
    let mut start = 0;
    if c.weights.is_some() {
        start = steps;
    } else if let Some(r) = resume_from(c, &clip, &mut opt, steps)? {
        r.restore_sampler("train", &mut sampler)?;
        r.restore_rng("noise", &mut rng)?;
        start = r.step;
    }
    let mut log = MetricsLog::create_or_resume(&out, (start > 0 && c.weights.is_none()).then_some(start))?;
    let progress = Progress::new("noised clip", steps);
    let budget = TimeBudget::new((args.minutes * 60.0) as u64);
    let mut trained = start;
    for step in start..steps {
        // ANCHOR: train_step
        let idx = sampler.next_batch();
        let (images, labels) = train.batch(&idx);
        let captions: Vec<String> = labels.iter().map(|&l| class_caption(DatasetName::Mnist, l, rng.below(num_templates(DatasetName::Mnist)))).collect();
        let ids = clip.tokenize(&tokenizer, &captions)?; // (N, T)
        let t: Vec<usize> = (0..labels.len()).map(|_| rng.below(NUM_TRAIN_STEPS)).collect(); // t ~ U{0, ..., T-1}
        let x0 = to_model(&images);
        let noise = Tensor::randn(&x0.shape(), &mut rng); // ε ~ N(0, I)
        let x_t = schedule.q_sample(&x0, &t, &noise)?; // √ᾱ_t x_0 + √(1-ᾱ_t) ε
        let loss = clip.loss(&x_t, &t, &ids)?; // chapter 03's symmetric contrastive loss
        opt.zero_grad();
        loss.backward();
        let norm = clip_grad_norm(&opt_params(&trainable), 1.0);
        check_finite(step + 1, loss.item(), Some(norm), &trainable)?;
        opt.set_lr(schedule_lr.lr(step));
        opt.step();
        // ANCHOR_END: train_step
        trained = step + 1;
        let spent = budget.record_step(trained, &[("loss", loss.item() as f64), ("logit_scale", clip.logit_scale_exp().item() as f64)], &mut log, &progress)?;
        let state = RunState::new(trained).sampler("train", &sampler).rng("noise", &rng);
        if save_or_stop(c, &out.join("checkpoint.safetensors"), steps, &clip, &opt, &state)? {
            return Ok(());
        }
        if spent {
            dalle::train::save_run(&out.join("checkpoint.safetensors"), &clip, &opt, &state)?; // --resume continues from here
            break;
        }
    }
    progress.finish();
    let mut clip = clip;
    if trained > start {
        let secs = budget.elapsed_secs();
        println!("trained steps {start}..{trained} in {secs:.0} s: {:.3} s per step of {batch} (load: {})", secs / (trained - start) as f64, load_average());
        let records = dalle::train::read_metrics(log.path())?;
        let path = out.join("loss.png");
        plot_lines(&path, "contrastive loss on noised images", "step", "loss", &[series(&records, "loss")], false)?;
        wrote(&path);
        clip.config.trained_on_noised_images = true;
        let path = out.join("noised_clip_mnist.safetensors");
        clip.save(&path, &HashMap::from([("steps".to_string(), trained.to_string())]))?;
        std::fs::copy(tokenizer_path_for(&args.clip), tokenizer_path_for(&path)).map_err(|e| Error::io(&path, e))?;
        wrote(&path);
    } else if c.weights.is_none() {
        clip.config.trained_on_noised_images = start > 0; // resumed at the end: it was trained
    }

    // ANCHOR: zero_shot
    cell(4, "Zero-shot accuracy against the noise level t (noised CLIP vs chapter 03's)");
    let classes = class_embeds(&clip, &tokenizer)?.to_array().into_dimensionality::<ndarray::Ix2>().map_err(|e| Error::Msg(e.to_string()))?; // (10, E)
    let x0 = to_model(&test.images);
    let mut noise_rng = Rng::new(c.seed + 7);
    let mut rows = Vec::new();
    for &t in &EVAL_T {
        let noise = Tensor::randn(&x0.shape(), &mut noise_rng);
        let x_t = schedule.q_sample(&x0, &vec![t; test.len()], &noise)?;
        let acc = |emb: Tensor| -> dalle::Result<f64> {
            let e = emb.to_array().into_dimensionality::<ndarray::Ix2>().map_err(|e| Error::Msg(e.to_string()))?; // (N, E)
            let pred = argmax_rows(&e.dot(&classes.t()));
            Ok(pred.iter().zip(&test.labels).filter(|(p, l)| p == l).count() as f64 / test.len() as f64)
        };
        let (noised, clean) = no_grad(|| -> dalle::Result<(f64, f64)> {
            let mut f = Vec::new();
            let mut g = Vec::new();
            for chunk in (0..test.len()).collect::<Vec<_>>().chunks(250) {
                let xb = x_t.index_select(0, chunk)?;
                f.push(clip.image_embeds(&xb, &vec![t; chunk.len()])?);
                g.push(toy.get_image_features(&xb)?.l2_normalize(-1, 1e-12)?);
            }
            Ok((acc(Tensor::concat(&f.iter().collect::<Vec<_>>(), 0)?)?, acc(Tensor::concat(&g.iter().collect::<Vec<_>>(), 0)?)?))
        })?;
        println!("t = {t:>3}  ᾱ_t = {:.3}  noised CLIP {:>5.1}%  chapter 03's CLIP {:>5.1}%", schedule.alphas_cumprod[t], 100.0 * noised, 100.0 * clean);
        rows.push((t, noised, clean));
    }
    // ANCHOR_END: zero_shot
    let path = out.join("zero_shot.csv");
    let mut csv = String::from("t,alpha_bar,noised_clip,clip03\n");
    rows.iter().for_each(|(t, n, cl)| csv.push_str(&format!("{t},{:.4},{n:.4},{cl:.4}\n", schedule.alphas_cumprod[*t])));
    std::fs::write(&path, csv).map_err(|e| Error::io(&path, e))?;
    wrote(&path);
    let path = out.join("zero_shot.png");
    let curve = |name: &str, k: usize| Series::new(name, rows.iter().map(|r| (r.0 as f64, if k == 0 { r.1 } else { r.2 })).collect());
    plot_lines(&path, "zero-shot accuracy on noised MNIST test images", "t", "accuracy", &[curve("noised CLIP", 0), curve("chapter 03's CLIP", 1)], false)?;
    wrote(&path);

    cell(5, "CLIP-guided sampling: chapter 08's U-Net with the null class, pushed toward a caption");
    let unet = ClassConditionalUNet::new(UNetConfig::mnist(), 10, &mut Rng::new(0))?;
    checkpoint::load(&args.ddpm)?.load_into(&unet, &[])?;
    let diffusion = Diffusion { schedule: schedule.clone(), prediction: Prediction::Epsilon };
    let scales: Vec<f32> = args.scales.split(',').map(|s| s.trim().parse::<f32>().map_err(|_| Error::Config(format!("--scales: `{s}` is not a number")))).collect::<dalle::Result<_>>()?;
    let per_class = if smoke { 1 } else { args.per_class };
    let steps_list = respace(NUM_TRAIN_STEPS, if smoke { 3 } else { args.sample_steps })?;
    let labels: Vec<usize> = (0..10 * per_class).map(|i| i % 10).collect();
    let prompts: Vec<String> = labels.iter().map(|&l| class_caption(DatasetName::Mnist, l, 0)).collect();
    let sampler = match args.sampler.as_str() {
        "ddim" => Sampler::Ddim(0.0),
        "ddpm" => Sampler::Ddpm(Variance::Small),
        other => return Err(Error::Config(format!("--sampler {other}: expected ddim or ddpm"))),
    };
    let judge = DigitJudge::pretrained()?;
    let mut curve_points = Vec::new();
    let mut chosen = None;
    let mut csv = String::from("scale,judge_accuracy,seconds_per_sample\n");
    for &s in &scales {
        let started = Instant::now();
        // ANCHOR: guided
        let text = clip.caption_embeds(&tokenizer, &prompts)?; // ĝ(c), (B, E)
        let null = unet.with_labels(vec![unet.null_class(); labels.len()]); // ε(x_t, t, ∅)
        let guided = ClipGuided::new(null, Prediction::Epsilon, &schedule, &clip, text, s)?;
        let x_t = Tensor::randn(&[labels.len(), 1, 28, 28], &mut Rng::new(c.seed + 11)); // the same x_T at every scale
        let x0 = sampler.sample(&guided, &diffusion, x_t, &steps_list, &mut Rng::new(c.seed + 12), &mut |_, _| {})?;
        // ANCHOR_END: guided
        let images = to_pixels(&x0)?;
        let secs = started.elapsed().as_secs_f64() / labels.len() as f64;
        let acc = judge.fidelity(&images, &labels)?;
        println!("s = {s:>6}: judge accuracy {:>5.1}% over {} samples ({secs:.3} s per sample)", 100.0 * acc, labels.len());
        csv.push_str(&format!("{s},{acc:.4},{secs:.4}\n"));
        curve_points.push((s as f64, acc as f64));
        let order: Vec<usize> = (0..10).flat_map(|d| (0..per_class).map(move |k| k * 10 + d)).collect(); // one row per digit
        let path = out.join(format!("grid_s{s}.png"));
        save_image_grid(&path, &images.select(Axis(0), &order), &GridOptions { scale: 2, ..GridOptions::with_nrow(per_class) })?;
        wrote(&path);
        if s == args.scale || chosen.is_none() {
            chosen = Some(images);
        }
    }
    let path = out.join("guidance.csv");
    std::fs::write(&path, csv).map_err(|e| Error::io(&path, e))?;
    wrote(&path);
    let path = out.join("guidance.png");
    plot_lines(&path, "CLIP guidance: judge accuracy against the scale s", "s", "judge accuracy", &[Series::new(sampler.name(), curve_points)], false)?;
    wrote(&path);
    let images = chosen.expect("at least one scale");
    write_samples(&out, &images, &prompts, Some(&labels))?;
    wrote(out.join("samples.npy"));
    std::io::stdout().flush().ok();
    Ok(())
}

/// The parameters in an optimiser's list.
fn opt_params(named: &[(String, Tensor)]) -> Vec<Tensor> {
    named.iter().map(|(_, p)| p.clone()).collect()
}

/// `/proc/loadavg`'s first three fields, for the timing line.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_else(|_| "?".into())
}
