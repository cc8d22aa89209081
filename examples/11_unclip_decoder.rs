//! Chapter 11: unCLIP's decoder and upsampler on MNIST, and what CLIP's image embedding lets them do.
//!
//! ```text
//! cargo run --release --example 11_unclip_decoder                   # train both (about 30 + 15 minutes), then evaluate
//! cargo run --release --example 11_unclip_decoder -- --weights weights/unclip_decoder_mnist.safetensors \
//!     --upsampler-weights weights/unclip_upsampler_mnist.safetensors     # sample and evaluate only
//! cargo run --release --example 11_unclip_decoder -- --train decoder --minutes 60
//! cargo run --release --example 11_unclip_decoder -- --resume runs/11_unclip_decoder/checkpoint.safetensors
//! cargo run --release --example 11_unclip_decoder -- --smoke
//! ```
//!
//! Leaves in `runs/11_unclip_decoder/`: `loss.png`, `upsampler_loss.png`, `fidelity.png` (test
//! images, decoded from their own CLIP embedding), `upsampling.png`, `variations.png`,
//! `interpolation.png`, `text_diffs.png`, `pipeline_standin.png`, `pipeline_prior.png`, `eval.jsonl`, `samples.npy` +
//! `prompts.txt` + `labels.txt`, the resumable `checkpoint.safetensors` (decoder) and
//! `upsampler_checkpoint.safetensors`, and the EMA weights `unclip_decoder_ema.safetensors`,
//! `unclip_upsampler_ema.safetensors`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};
use dalle::data::batch::BatchSampler;
use dalle::data::captions::{class_caption, num_templates};
use dalle::data::{self, DatasetName, Split};
use dalle::eval::DigitJudge;
use dalle::io::checkpoint;
use dalle::io::{plot_lines, save_image_grid, write_samples, GridOptions};
use dalle::models::diffusion::{diffusion_loss, Diffusion};
use dalle::models::prior::{FrozenClip as PriorClip, PriorSampling, UnclipPrior};
use dalle::models::unclip::pipeline::{generate, DiffusionImagePrior, ImagePrior, TextEmbeddingPrior};
use dalle::models::unclip::upsampler::{SAMPLE_BLUR_SIGMA, TRAIN_BLUR_SIGMA};
use dalle::models::unclip::{
    bilinear_upsample, downsample, gaussian_blur, to_model, DecoderCondition, DecoderConfig, FrozenClip, Sampling, Unclip, UnclipDecoder, Upsampler,
};
use dalle::nn::Module;
use dalle::optim::{Adam, Ema, Optimizer};
use dalle::train::resume::{save_or_stop, Resumed, RunState};
use dalle::train::{cell, check_finite, series, wrote, CommonArgs, MetricsLog, Progress, TimeBudget};
use dalle::{Error, Rng, Tensor};
use ndarray::{s, Array2, Array4, Axis};

/// Which models this run trains.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    /// The decoder and the upsampler, one after the other.
    Both,
    /// Only the decoder (the upsampler comes from --upsampler-weights or weights/).
    Decoder,
    /// Only the upsampler (the decoder comes from --weights or weights/).
    Upsampler,
}

/// Train unCLIP's decoder and upsampler on MNIST; variations, interpolations, text diffs.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Which models to train (the others are loaded).
    #[arg(long, value_enum, default_value_t = Part::Both)]
    train: Part,
    /// Stop the decoder's training after this many minutes even if steps remain (0: no limit).
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    /// The upsampler's steps (--steps is the decoder's).
    #[arg(long)]
    upsampler_steps: Option<usize>,
    /// Stop the upsampler's training after this many minutes (0: no limit).
    #[arg(long, default_value_t = 15.0)]
    upsampler_minutes: f64,
    /// The upsampler's weights (skips its training); --weights are the decoder's.
    #[arg(long)]
    upsampler_weights: Option<PathBuf>,
    /// Resume the upsampler's training from this checkpoint (--resume is the decoder's).
    #[arg(long)]
    resume_upsampler: Option<PathBuf>,
    /// The frozen CLIP (chapter 03's toy checkpoint, its config and tokenizer beside it).
    #[arg(long, default_value = "weights/clip_mnist.safetensors")]
    clip: PathBuf,
    /// Share of training examples whose CLIP image embedding is set to zero.
    #[arg(long, default_value_t = 0.1)]
    p_drop_image: f32,
    /// Share of training examples whose caption is dropped.
    #[arg(long, default_value_t = 0.5)]
    p_drop_text: f32,
    /// Classifier-free guidance scale of the decoder.
    #[arg(long, default_value_t = 3.0)]
    guidance: f32,
    /// DDIM steps of the decoder.
    #[arg(long, default_value_t = 10)]
    decoder_steps: usize,
    /// DDIM steps of the upsampler.
    #[arg(long, default_value_t = 10)]
    upsampler_sample_steps: usize,
    /// Test images per digit for the fidelity, upsampling and variation measurements.
    #[arg(long, default_value_t = 20)]
    eval_per_class: usize,
    /// Captions per digit for the pipeline's prompt fidelity with the prior (the stand-in gets --eval-per-class).
    #[arg(long, default_value_t = 100)]
    pipeline_per_class: usize,
    /// Chapter 10's prior for the pipeline (skipped, with a note, when the file is absent).
    #[arg(long, default_value = "weights/unclip_prior_mnist.safetensors")]
    prior: PathBuf,
    /// The prior's classifier-free guidance scale.
    #[arg(long, default_value_t = 1.0)]
    prior_guidance: f32,
    /// Embeddings the prior draws per caption, keeping the one closest to the caption's (unCLIP §2.2).
    #[arg(long, default_value_t = 1)]
    prior_candidates: usize,
    /// Images per sampling batch (guidance doubles it inside the decoder).
    #[arg(long, default_value_t = 250)]
    sample_batch: usize,
}

/// `T`, the training schedule's length (both models).
const NUM_TRAIN_STEPS: usize = 1000;
/// Where the shipped weights live.
const SHIPPED_DECODER: &str = "weights/unclip_decoder_mnist.safetensors";
const SHIPPED_UPSAMPLER: &str = "weights/unclip_upsampler_mnist.safetensors";

fn main() -> dalle::Result<()> {
    dalle::backend::on_worker(notebook)
}

/// One model's training settings.
struct Training<'a> {
    name: &'a str,
    steps: usize,
    batch_size: usize,
    lr: f32,
    minutes: f64,
    resume: Option<&'a Path>,
    checkpoint: PathBuf,
    metrics: PathBuf,
}

/// The loop both models share: Adam with a 100-step warm-up, EMA 0.999, a resumable
/// checkpoint every 500 steps; `loss(indices, rng)` is one step's loss on those examples.
fn train(common: &CommonArgs, t: &Training, model: &dyn Module, n_train: usize, mut loss: impl FnMut(&[usize], &mut Rng) -> dalle::Result<Tensor>) -> dalle::Result<usize> {
    let params = model.named_parameters();
    let mut opt = Adam::new(params.clone(), t.lr);
    let mut ema = Ema::new(&params, 0.999);
    let mut sampler = BatchSampler::new(n_train, t.batch_size, common.seed);
    let mut start = 0;
    if let Some(path) = t.resume {
        let r = Resumed::load(path, model, &mut opt, t.steps)?;
        r.restore_sampler("train", &mut sampler)?;
        r.restore_ema(&ema)?;
        start = r.step;
        println!("resumed {} at step {start}", path.display());
    }
    let mut log = if start > 0 { MetricsLog::resume(&t.metrics, start)? } else { MetricsLog::open(&t.metrics, false)? };
    let progress = Progress::new(t.name, t.steps);
    let budget = TimeBudget::new((t.minutes * 60.0) as u64);
    let mut trained = start;
    for step in start..t.steps {
        let indices = sampler.next_batch();
        let mut rng = Rng::new(common.seed.wrapping_mul(1_000_003).wrapping_add(step as u64)); // per step: resumable
        let loss = loss(&indices, &mut rng)?;
        opt.set_lr(t.lr * ((step + 1) as f32 / 100.0).min(1.0)); // linear warm-up over 100 steps
        opt.zero_grad();
        loss.backward();
        check_finite(step, loss.item(), None, &params)?;
        opt.step();
        ema.update_at(step, &params); // θ̄ ← d θ̄ + (1 - d) θ
        trained = step + 1;
        let spent = budget.record_step(step, &[("loss", loss.item() as f64)], &mut log, &progress)?;
        let state = RunState::new(trained).sampler("train", &sampler).ema(&ema);
        if spent {
            dalle::train::resume::save_run(&t.checkpoint, model, &opt, &state)?;
            break;
        }
        if save_or_stop(common, &t.checkpoint, t.steps, model, &opt, &state)? {
            break;
        }
    }
    progress.finish();
    if trained > start {
        println!("{}: steps {start}..{trained} in {:.0} s ({:.2} s per step of {})", t.name, budget.elapsed_secs(), budget.elapsed_secs() / (trained - start) as f64, t.batch_size);
    }
    ema.copy_to(&params); // from here on, the EMA weights
    Ok(trained)
}

/// Loads plain weights, or the `ema.*` weights of a run checkpoint, into `model`.
fn load_weights(path: &Path, model: &dyn Module) -> dalle::Result<()> {
    let ck = checkpoint::load(path)?;
    let has_ema = ck.tensors.keys().any(|k| k.starts_with("ema."));
    let tensors = if has_ema { ck.tensors.iter().filter_map(|(k, v)| k.strip_prefix("ema.").map(|n| (n.to_string(), v.clone()))).collect() } else { ck.tensors.clone() };
    checkpoint::Checkpoint { path: ck.path.clone(), tensors, metadata: ck.metadata.clone() }.load_into(model, &["optim."])?;
    println!("loaded {}", path.display());
    Ok(())
}

fn plot_loss(metrics: &Path, out: &Path, title: &str) -> dalle::Result<()> {
    let records = dalle::train::read_metrics(metrics)?;
    plot_lines(out, title, "step", "loss", &[series(&records, "loss")], true)?;
    wrote(out);
    Ok(())
}

/// `per_class` indices of each digit among `labels`, interleaved 0, 1, ..., 9, 0, 1, ...
fn balanced_indices(labels: &[usize], classes: usize, per_class: usize) -> Vec<usize> {
    let by_class: Vec<Vec<usize>> = (0..classes).map(|k| labels.iter().enumerate().filter(|(_, &y)| y == k).map(|(i, _)| i).take(per_class).collect()).collect();
    let n = by_class.iter().map(Vec::len).min().unwrap_or(0);
    (0..n).flat_map(|j| by_class.iter().map(move |c| c[j])).collect()
}

fn log_eval(file: &mut std::fs::File, path: &Path, line: String) -> dalle::Result<()> {
    println!("{line}");
    writeln!(file, "{line}").map_err(|e| Error::io(path, e))
}

/// Mean absolute pixel difference of each row of `a` to row `i / per` of `b`.
fn mean_pixel_distance(a: &Array4<f32>, b: &Array4<f32>, per: usize) -> f64 {
    let n = a.dim().0;
    (0..n).map(|i| (&a.slice(s![i, .., .., ..]) - &b.slice(s![i / per, .., .., ..])).mapv(|v| v.abs() as f64).mean().unwrap_or(0.0)).sum::<f64>() / n.max(1) as f64
}

fn notebook() -> dalle::Result<()> {
    let args = Args::parse();
    let c = &args.common;
    let out = c.start("11_unclip_decoder", true, true)?;
    if c.dataset.is_some_and(|d| d != DatasetName::Mnist) {
        return Err(Error::Config("--dataset: this chapter's CLIP, captions and judge are MNIST's; only mnist is supported".into()));
    }
    let smoke = c.smoke;

    cell(1, "Load MNIST, the frozen CLIP and the digit judge");
    let train_set = data::load(DatasetName::Mnist, &c.data_dir(), Split::Train, c.limit_or(256))?;
    let test = data::load(DatasetName::Mnist, &c.data_dir(), Split::Test, c.limit_or(200))?;
    let clip = FrozenClip::load_toy(&args.clip)?;
    let judge = DigitJudge::pretrained()?;
    let classes = 10;
    println!("{} train and {} test images; CLIP: E = {}, text states {} wide", train_set.len(), test.len(), clip.embed_dim(), clip.text_dim());

    // ANCHOR: precompute
    cell(2, "Caption token states and, to train the decoder, CLIP image embeddings, computed once");
    let started = std::time::Instant::now();
    let templates = num_templates(DatasetName::Mnist);
    let captions: Vec<String> = (0..classes * templates).map(|i| class_caption(DatasetName::Mnist, i / templates, i % templates)).collect();
    let caption_states = clip.text_states(&captions)?; // (10·5, T, C_text): row y·5 + j is digit y in template j
    let train_decoder = args.train != Part::Upsampler && c.weights.is_none();
    let (train_embeds, train_low) = if train_decoder {
        let z = clip.image_embeddings(&train_set.images)?; // (N, E), z_i = normalize(I_e(x))
        let low = downsample(&train_set.images, 2).mapv(|v| 2.0 * v - 1.0); // (N, 1, 14, 14) in [-1, 1]
        (z, low)
    } else {
        (Array2::zeros((0, clip.embed_dim())), Array4::zeros((0, 1, 14, 14)))
    };
    // ANCHOR_END: precompute
    println!("{} captions' token states {:?} and {} image embeddings in {:.1} s", captions.len(), caption_states.tokens.dim(), train_embeds.dim().0, started.elapsed().as_secs_f64());

    cell(3, "Build the decoder and the upsampler");
    let mut dconfig = DecoderConfig::mnist();
    let mut uconfig = Upsampler::mnist_config();
    let train_upsampler = args.train != Part::Decoder && args.upsampler_weights.is_none();
    // --smoke shrinks the models it trains; loaded weights keep the chapter's sizes
    if smoke && train_decoder {
        dconfig.unet.base_channels = 8;
    }
    if smoke && train_upsampler {
        uconfig.base_channels = 8;
    }
    let decoder = UnclipDecoder::new(dconfig.clone(), &mut Rng::new(c.seed))?;
    let upsampler = Upsampler::new(uconfig.clone(), 2, &mut Rng::new(c.seed + 1))?;
    println!("decoder: {dconfig:?}\n  {} parameters", decoder.num_parameters());
    println!("upsampler: {uconfig:?}\n  {} parameters", upsampler.num_parameters());
    let diffusion = Diffusion::linear_epsilon()?;
    if !train_decoder {
        load_weights(&c.weights.clone().unwrap_or_else(|| PathBuf::from(SHIPPED_DECODER)), &decoder)?;
    }
    let mut have_upsampler = train_upsampler;
    if !train_upsampler {
        let path = args.upsampler_weights.clone().unwrap_or_else(|| PathBuf::from(SHIPPED_UPSAMPLER));
        if path.exists() || args.upsampler_weights.is_some() {
            load_weights(&path, &upsampler)?;
            have_upsampler = true;
        } else {
            println!("no upsampler weights ({}): bilinear interpolation stands in for it", path.display());
        }
    }

    // ANCHOR: train_decoder
    cell(4, "Train the decoder: ‖ε - ε_θ(x_t, t, z_i, caption)‖², z_i dropped 10%, caption 50%");
    if train_decoder {
        let t = Training {
            name: "decoder",
            steps: c.steps_or(100_000, 3),
            batch_size: c.batch_size_or(64, 8),
            lr: c.lr_or(2e-3) as f32,
            minutes: args.minutes,
            resume: c.resume.as_deref(),
            checkpoint: out.join("checkpoint.safetensors"),
            metrics: out.join("metrics.jsonl"),
        };
        let trained = train(c, &t, &decoder, train_set.len(), |indices, rng| {
            let x0 = Tensor::new(train_low.select(Axis(0), indices).into_dyn()); // (B, 1, 14, 14)
            let rows: Vec<usize> = indices.iter().map(|&i| train_set.labels[i] * templates + rng.below(templates)).collect(); // a random template
            let cond = DecoderCondition { image_embeds: train_embeds.select(Axis(0), indices), text: Some(caption_states.select(&rows)) };
            let cond = cond.drop_at_random(args.p_drop_image, args.p_drop_text, rng); // classifier-free training
            let t: Vec<usize> = (0..indices.len()).map(|_| rng.below(NUM_TRAIN_STEPS)).collect(); // t ~ U{0..T-1}
            let noise = Tensor::randn(&x0.shape(), rng); // ε ~ N(0, I)
            diffusion_loss(&diffusion.schedule, diffusion.prediction, |x_t, t| decoder.forward(x_t, t, &cond), &x0, &t, &noise)
        })?;
        plot_loss(&t.metrics, &out.join("loss.png"), "decoder: training loss (MSE on ε)")?;
        let path = out.join("unclip_decoder_ema.safetensors");
        checkpoint::save(&path, &decoder, None, &HashMap::from([("steps".to_string(), trained.to_string())]))?;
        wrote(&path);
    } else {
        println!("skipped: the decoder's weights were loaded");
    }
    // ANCHOR_END: train_decoder

    // ANCHOR: train_upsampler
    cell(5, "Train the upsampler: 28x28 given the blurred 14x14 (σ ~ U[0.4, 0.6])");
    if train_upsampler {
        let t = Training {
            name: "upsampler",
            steps: args.upsampler_steps.unwrap_or(if smoke { 3 } else { 100_000 }),
            batch_size: c.batch_size_or(32, 8),
            lr: c.lr_or(2e-3) as f32,
            minutes: args.upsampler_minutes,
            resume: args.resume_upsampler.as_deref(),
            checkpoint: out.join("upsampler_checkpoint.safetensors"),
            metrics: out.join("upsampler_metrics.jsonl"),
        };
        let trained = train(c, &t, &upsampler, train_set.len(), |indices, rng| {
            let (images, _) = train_set.batch(indices); // (B, 1, 28, 28) in [0, 1]
            let sigma = TRAIN_BLUR_SIGMA.0 + (TRAIN_BLUR_SIGMA.1 - TRAIN_BLUR_SIGMA.0) * rng.uniform();
            let low = to_model(&gaussian_blur(&downsample(&images, 2), sigma)); // y: (B, 1, 14, 14), the corrupted input
            let x0 = to_model(&images);
            let t: Vec<usize> = (0..indices.len()).map(|_| rng.below(NUM_TRAIN_STEPS)).collect();
            let noise = Tensor::randn(&x0.shape(), rng);
            diffusion_loss(&diffusion.schedule, diffusion.prediction, |x_t, t| upsampler.forward(x_t, t, &low), &x0, &t, &noise)
        })?;
        plot_loss(&t.metrics, &out.join("upsampler_loss.png"), "upsampler: training loss (MSE on ε)")?;
        let path = out.join("unclip_upsampler_ema.safetensors");
        checkpoint::save(&path, &upsampler, None, &HashMap::from([("steps".to_string(), trained.to_string())]))?;
        wrote(&path);
        have_upsampler = true;
    } else {
        println!("skipped: the upsampler's weights were loaded (or are absent)");
    }
    // ANCHOR_END: train_upsampler

    let unclip = Unclip {
        clip: &clip,
        decoder: &decoder,
        upsampler: have_upsampler.then_some(&upsampler),
        diffusion: &diffusion,
        sampling: Sampling {
            decoder_steps: if smoke { 2 } else { args.decoder_steps },
            guidance: args.guidance,
            upsampler_steps: if smoke { 2 } else { args.upsampler_sample_steps },
            blur_sigma: SAMPLE_BLUR_SIGMA,
            batch: args.sample_batch,
        },
    };
    let eval_path = out.join("eval.jsonl");
    let mut eval_log = std::fs::File::create(&eval_path).map_err(|e| Error::io(&eval_path, e))?;
    let per_class = if smoke { 1 } else { args.eval_per_class };
    let picked = balanced_indices(&test.labels, classes, per_class);
    let (sources, source_labels) = test.batch(&picked); // (10·k, 1, 28, 28), digits 0..9 interleaved

    if source_labels.is_empty() {
        println!("cells 6 to 10 skipped: --eval-per-class 0");
    } else {
        // ANCHOR: fidelity
        cell(6, "Decode test images' own CLIP embeddings: does the judge see the same digit?");
        let z = clip.image_embeddings(&sources)?; // (N, E)
        let prompts: Vec<String> = source_labels.iter().map(|&y| class_caption(DatasetName::Mnist, y, 0)).collect();
        for captioned in [false, true] {
            let cond = unclip.condition(z.clone(), captioned.then_some(prompts.as_slice()))?;
            let decoded = unclip.decode(&cond, None, &mut Rng::new(c.seed + 10))?;
            let acc_low = judge.fidelity(&bilinear_upsample(&decoded.low, 2), &source_labels)?;
            let acc_high = judge.fidelity(&decoded.high, &source_labels)?;
            log_eval(
                &mut eval_log,
                &eval_path,
                format!("{{\"eval\": \"decode_true_embedding\", \"caption\": {captioned}, \"images\": {}, \"guidance\": {}, \"judge_low_bilinear\": {acc_low:.4}, \"judge_upsampled\": {acc_high:.4}}}", source_labels.len(), args.guidance),
            )?;
            if !captioned {
                let shown = (classes * 2).min(source_labels.len());
                let grid = ndarray::concatenate(Axis(0), &[sources.slice(s![..shown, .., .., ..]), decoded.high.slice(s![..shown, .., .., ..])]).map_err(|e| Error::Msg(e.to_string()))?;
                let path = out.join("fidelity.png");
                save_image_grid(&path, &grid, &GridOptions { scale: 2, ..GridOptions::with_nrow(classes) })?;
                wrote(&path);
            }
        }
        // ANCHOR_END: fidelity

        cell(7, "The upsampler against interpolation, on real 14x14 test images");
        let low_real = downsample(&sources, 2); // (N, 1, 14, 14)
        let bilinear = bilinear_upsample(&low_real, 2);
        let upsampled = unclip.upsample(&low_real, &mut Rng::new(c.seed + 11))?;
        let acc_real = judge.fidelity(&sources, &source_labels)?;
        let acc_bilinear = judge.fidelity(&bilinear, &source_labels)?;
        let acc_up = judge.fidelity(&upsampled, &source_labels)?;
        let mse = |a: &Array4<f32>| (a - &sources).mapv(|v| (v * v) as f64).mean().unwrap_or(0.0);
        log_eval(
            &mut eval_log,
            &eval_path,
            format!(
                "{{\"eval\": \"upsampler\", \"images\": {}, \"judge_real_28\": {acc_real:.4}, \"judge_bilinear\": {acc_bilinear:.4}, \"judge_upsampler\": {acc_up:.4}, \"mse_bilinear\": {:.5}, \"mse_upsampler\": {:.5}, \"upsampler\": {have_upsampler}}}",
                source_labels.len(),
                mse(&bilinear),
                mse(&upsampled)
            ),
        )?;
        let shown = classes.min(source_labels.len());
        let nearest = Tensor::new(low_real.slice(s![..shown, .., .., ..]).to_owned().into_dyn()).upsample_nearest2d(2)?.to_array().into_dimensionality::<ndarray::Ix4>().map_err(|e| Error::Msg(e.to_string()))?;
        let rows = [nearest.view(), bilinear.slice(s![..shown, .., .., ..]), upsampled.slice(s![..shown, .., .., ..]), sources.slice(s![..shown, .., .., ..])];
        let grid = ndarray::concatenate(Axis(0), &rows).map_err(|e| Error::Msg(e.to_string()))?;
        let path = out.join("upsampling.png");
        save_image_grid(&path, &grid, &GridOptions { scale: 3, ..GridOptions::with_nrow(shown) })?;
        wrote(&path);

        // ANCHOR: variations
        cell(8, "Variations: CLIP's embedding of an image, decoded from new noise");
        let per_image = if smoke { 2 } else { 4 };
        let variations = unclip.variations(&sources, per_image, &mut Rng::new(c.seed + 12))?;
        let expected: Vec<usize> = source_labels.iter().flat_map(|&y| std::iter::repeat_n(y, per_image)).collect();
        let kept = judge.fidelity(&variations.high, &expected)?;
        let distance = mean_pixel_distance(&variations.high, &sources, per_image);
        // ANCHOR_END: variations
        let between: f64 = {
            // the same measure between different test images of the same digit: how far "another 7" is
            let n = source_labels.len();
            let pairs: Vec<(usize, usize)> = (0..n).filter_map(|i| (i + classes < n).then_some((i, i + classes))).collect();
            pairs.iter().map(|&(i, j)| (&sources.slice(s![i, .., .., ..]) - &sources.slice(s![j, .., .., ..])).mapv(|v| v.abs() as f64).mean().unwrap_or(0.0)).sum::<f64>() / pairs.len().max(1) as f64
        };
        log_eval(
            &mut eval_log,
            &eval_path,
            format!("{{\"eval\": \"variations\", \"sources\": {}, \"per_source\": {per_image}, \"class_kept\": {kept:.4}, \"mean_abs_pixel_distance\": {distance:.4}, \"same_digit_other_image_distance\": {between:.4}}}", source_labels.len()),
        )?;
        let shown = 8.min(source_labels.len());
        let mut rows = Vec::new();
        for i in 0..shown {
            rows.push(sources.slice(s![i..i + 1, .., .., ..]).to_owned());
            rows.push(variations.high.slice(s![i * per_image..(i + 1) * per_image, .., .., ..]).to_owned());
        }
        let grid = ndarray::concatenate(Axis(0), &rows.iter().map(|r| r.view()).collect::<Vec<_>>()).map_err(|e| Error::Msg(e.to_string()))?;
        let path = out.join("variations.png");
        save_image_grid(&path, &grid, &GridOptions { scale: 2, ..GridOptions::with_nrow(per_image + 1) })?;
        wrote(&path);

        cell(9, "Interpolations: slerp between two images' embeddings, one shared x_T");
        let steps = if smoke { 3 } else { 8 };
        let pairs: Vec<(usize, usize)> = (0..4.min(source_labels.len() / 2)).map(|i| (2 * i, 2 * i + 1)).collect();
        let mut rows = Vec::new();
        for (k, &(i, j)) in pairs.iter().enumerate() {
            let a = sources.slice(s![i..i + 1, .., .., ..]).to_owned();
            let b = sources.slice(s![j..j + 1, .., .., ..]).to_owned();
            let path = unclip.interpolate(&a, &b, steps, &mut Rng::new(c.seed + 20 + k as u64))?;
            rows.extend([a, path.high, b]);
        }
        if !rows.is_empty() {
            let grid = ndarray::concatenate(Axis(0), &rows.iter().map(|r| r.view()).collect::<Vec<_>>()).map_err(|e| Error::Msg(e.to_string()))?;
            let path = out.join("interpolation.png");
            save_image_grid(&path, &grid, &GridOptions { scale: 2, ..GridOptions::with_nrow(steps + 2) })?;
            wrote(&path);
        }

        // ANCHOR: text_diffs
        cell(10, "Text diffs: move an image's embedding towards another caption");
        let thetas: Vec<f32> = if smoke { vec![0.0, 0.5] } else { vec![0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6] };
        let edits = [(1usize, 7usize), (3, 8), (4, 9), (6, 0)]; // (from digit, to digit)
        let mut rows = Vec::new();
        let mut diff_labels = Vec::new();
        for &(from, to) in &edits {
            let Some(i) = source_labels.iter().position(|&y| y == from) else { continue };
            let image = sources.slice(s![i..i + 1, .., .., ..]).to_owned();
            let (cf, ct) = (class_caption(DatasetName::Mnist, from, 0), class_caption(DatasetName::Mnist, to, 0));
            let moved = unclip.text_diff(&image, &cf, &ct, &thetas, &mut Rng::new(c.seed + 30))?;
            let judged = judge.predict(&moved.high)?;
            println!("{cf:?} -> {ct:?}: judge at θ = {thetas:?}: {judged:?}");
            diff_labels.push(judged);
            rows.extend([image, moved.high]);
        }
        // ANCHOR_END: text_diffs
        if !rows.is_empty() {
            let grid = ndarray::concatenate(Axis(0), &rows.iter().map(|r| r.view()).collect::<Vec<_>>()).map_err(|e| Error::Msg(e.to_string()))?;
            let path = out.join("text_diffs.png");
            save_image_grid(&path, &grid, &GridOptions { scale: 2, ..GridOptions::with_nrow(thetas.len() + 1) })?;
            wrote(&path);
        }
    }

    // ANCHOR: pipeline
    cell(11, "The pipeline: caption -> prior -> decoder -> upsampler");
    let prior = if args.prior.exists() { Some(UnclipPrior::load(&args.prior, PriorClip::load_toy(&args.clip)?)?) } else { None };
    let sampling = PriorSampling { guidance: args.prior_guidance, candidates: args.prior_candidates, ..PriorSampling::default() };
    let baseline = TextEmbeddingPrior { clip: &clip };
    let mut runs: Vec<(&str, &dyn ImagePrior, usize)> = vec![("clip_text_embedding (stand-in)", &baseline, args.eval_per_class)];
    let diffusion_prior = prior.as_ref().map(|p| DiffusionImagePrior { prior: p, sampling });
    match &diffusion_prior {
        Some(p) => runs.push(("diffusion prior (chapter 10)", p, args.pipeline_per_class)),
        None => println!("no prior at {}: only the stand-in runs", args.prior.display()),
    }
    let mut written = None;
    for (name, prior, per_class) in runs {
        let n_per = if smoke { 1 } else { per_class };
        if n_per == 0 {
            continue;
        }
        let labels: Vec<usize> = (0..classes * n_per).map(|i| i % classes).collect();
        let prompts: Vec<String> = labels.iter().enumerate().map(|(i, &y)| class_caption(DatasetName::Mnist, y, (i / classes) % templates)).collect();
        let images = generate(&unclip, prior, &prompts, &mut Rng::new(c.seed + 40))?; // caption -> z_i -> 14x14 -> 28x28
        let acc = judge.fidelity(&images.high, &labels)?;
        let acc_low = judge.fidelity(&bilinear_upsample(&images.low, 2), &labels)?;
        log_eval(&mut eval_log, &eval_path, format!("{{\"eval\": \"pipeline\", \"prior\": \"{name}\", \"images\": {}, \"judge_upsampled\": {acc:.4}, \"judge_low_bilinear\": {acc_low:.4}}}", labels.len()))?;
        let shown: Vec<usize> = (0..(classes * 4).min(labels.len())).collect();
        let path = out.join(if name.starts_with("diffusion") { "pipeline_prior.png" } else { "pipeline_standin.png" });
        save_image_grid(&path, &images.high.select(Axis(0), &shown), &GridOptions { scale: 2, ..GridOptions::with_nrow(classes) })?;
        wrote(&path);
        written = Some((images.high, prompts, labels)); // the last run: the prior's when there is one
    }
    // ANCHOR_END: pipeline

    cell(12, "Write the samples");
    let (images, prompts, labels) = written.ok_or_else(|| Error::Config("no pipeline samples to write: --eval-per-class 0 and no prior".into()))?;
    write_samples(&out, &images, &prompts, Some(&labels))?;
    wrote(out.join("samples.npy"));
    Ok(())
}
