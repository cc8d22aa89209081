//! Chapter 11: unCLIP's decoder and upsampler on MNIST, and what CLIP's image embedding lets them do.
//!
//! ```text
//! cargo run --release --example 11_unclip_decoder                   # train both (about 30 + 15 minutes), then evaluate
//! cargo run --release --example 11_unclip_decoder -- --weights weights/unclip_decoder_mnist.safetensors \
//!     --upsampler-weights weights/unclip_upsampler_mnist.safetensors     # sample and evaluate only
//! cargo run --release --example 11_unclip_decoder -- --train decoder --minutes 60
//! cargo run --release --example 11_unclip_decoder -- --resume runs/11_unclip_decoder/checkpoint.safetensors
//! cargo run --release --example 11_unclip_decoder -- --smoke
//! cargo run --release --example 11_unclip_decoder -- --dataset shapes --train decoder --minutes 30
//! cargo run --release --example 11_unclip_decoder -- --dataset shapes --weights weights/unclip_decoder_shapes.safetensors
//! ```
//!
//! `--dataset shapes`: a 3x16x16 decoder and a 16 -> 32 upsampler over the Shapes CLIP
//! ([`UnclipSetup`]), judged by the Shapes pixel judge (`eval::shapes_fidelity`): the 36
//! one-object phrases `--shapes-per-prompt` times each and `--relation-prompts` test captions.
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
use dalle::data::shapes::Colour;
use dalle::data::{self, DatasetName, ImageDataset, Split};
use dalle::eval::shapes_fidelity::{relation_prompts, single_object_prompts, ShapesFidelity};
use dalle::eval::DigitJudge;
use dalle::io::checkpoint;
use dalle::io::{plot_lines, save_image_grid, write_samples, GridOptions};
use dalle::models::diffusion::{diffusion_loss, Diffusion};
use dalle::models::prior::{PriorSampling, UnclipPrior};
use dalle::models::unclip::pipeline::{generate, DiffusionImagePrior, ImagePrior, TextEmbeddingPrior};
use dalle::models::unclip::upsampler::{SAMPLE_BLUR_SIGMA, TRAIN_BLUR_SIGMA};
use dalle::models::unclip::{
    bilinear_upsample, downsample, gaussian_blur, to_model, DecoderCondition, FrozenClip, Sampling, TextStates, Unclip, UnclipDecoder, UnclipSetup, Upsampler,
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

/// Train unCLIP's decoder and upsampler on MNIST or Shapes; variations, interpolations, text diffs.
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
    /// The frozen CLIP (chapter 03's toy checkpoint, its config and tokenizer beside it)
    /// [default: weights/clip_{mnist,shapes}.safetensors].
    #[arg(long)]
    clip: Option<PathBuf>,
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
    /// Chapter 10's prior for the pipeline (skipped, with a note, when the file is absent)
    /// [default: weights/unclip_prior_{mnist,shapes}.safetensors].
    #[arg(long)]
    prior: Option<PathBuf>,
    /// The prior's classifier-free guidance scale.
    #[arg(long, default_value_t = 1.0)]
    prior_guidance: f32,
    /// Embeddings the prior draws per caption, keeping the one closest to the caption's (unCLIP §2.2).
    #[arg(long, default_value_t = 1)]
    prior_candidates: usize,
    /// Shapes: samples per one-object phrase (36 phrases) in the pipeline's measurement.
    #[arg(long, default_value_t = 8)]
    shapes_per_prompt: usize,
    /// Shapes: relation captions of the test split in the pipeline's measurement.
    #[arg(long, default_value_t = 200)]
    relation_prompts: usize,
    /// Images per sampling batch (guidance doubles it inside the decoder).
    #[arg(long, default_value_t = 250)]
    sample_batch: usize,
}

/// `T`, the training schedule's length (both models).
const NUM_TRAIN_STEPS: usize = 1000;

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

/// The captions a training image may carry: rows of one table of caption token states.
struct TrainCaptions {
    /// Token states of every distinct caption, `(K, T, C_text)`.
    states: TextStates,
    /// For image `i`, the rows of `states` that describe it (MNIST: its digit in each
    /// template; Shapes: its own caption).
    choices: Vec<Vec<usize>>,
}

impl TrainCaptions {
    fn new(clip: &FrozenClip, set: &ImageDataset, dataset: DatasetName) -> dalle::Result<Self> {
        match &set.captions {
            Some(captions) => {
                let mut distinct: Vec<String> = Vec::new();
                let mut row_of: HashMap<&str, usize> = HashMap::new();
                let choices = captions
                    .iter()
                    .map(|c| {
                        vec![*row_of.entry(c.as_str()).or_insert_with(|| {
                            distinct.push(c.clone());
                            distinct.len() - 1
                        })]
                    })
                    .collect();
                Ok(TrainCaptions { states: clip.text_states(&distinct)?, choices })
            }
            None => {
                let (classes, templates) = (set.classes.len(), num_templates(dataset));
                let captions: Vec<String> = (0..classes * templates).map(|i| class_caption(dataset, i / templates, i % templates)).collect();
                let choices = set.labels.iter().map(|&y| (0..templates).map(|j| y * templates + j).collect()).collect(); // row y·5 + j: digit y in template j
                Ok(TrainCaptions { states: clip.text_states(&captions)?, choices })
            }
        }
    }

    /// One caption row for each image of `indices`, drawn at random among its captions.
    fn draw(&self, indices: &[usize], rng: &mut Rng) -> TextStates {
        let rows: Vec<usize> = indices.iter().map(|&i| self.choices[i][rng.below(self.choices[i].len())]).collect();
        self.states.select(&rows)
    }
}

fn notebook() -> dalle::Result<()> {
    let args = Args::parse();
    let c = &args.common;
    let out = c.start("11_unclip_decoder", true, true)?;
    let dataset = c.dataset_or(DatasetName::Mnist);
    let setup = UnclipSetup::for_dataset(dataset)?;
    let smoke = c.smoke;

    cell(1, "Load the data set, the frozen CLIP and the judge");
    let train_set = data::load(dataset, &c.data_dir(), Split::Train, c.limit_or(256))?;
    let test = data::load(dataset, &c.data_dir(), Split::Test, c.limit_or(200))?;
    let clip = FrozenClip::load_toy(args.clip.as_ref().unwrap_or(&setup.clip))?;
    let judge = Judge::for_dataset(dataset)?;
    let factor = setup.factor;
    println!("{dataset}: {} train and {} test images {:?}; CLIP: E = {}, text states {} wide", train_set.len(), test.len(), train_set.image_shape(), clip.embed_dim(), clip.text_width());

    // ANCHOR: precompute
    cell(2, "Caption token states and, to train the decoder, CLIP image embeddings, computed once");
    let started = std::time::Instant::now();
    let train_decoder = args.train != Part::Upsampler && c.weights.is_none();
    let (train_captions, train_embeds, train_low) = if train_decoder {
        let captions = TrainCaptions::new(&clip, &train_set, dataset)?; // (K, T, C_text) and which rows caption which image
        let z = clip.image_embeddings(&train_set.images)?; // (N, E), z_i = normalize(I_e(x))
        let low = downsample(&train_set.images, factor).mapv(|v| 2.0 * v - 1.0); // (N, C, h, h) in [-1, 1]
        (Some(captions), z, low)
    } else {
        (None, Array2::zeros((0, clip.embed_dim())), Array4::zeros((0, 1, 1, 1)))
    };
    // ANCHOR_END: precompute
    if let Some(tc) = &train_captions {
        println!("{} distinct captions' token states {:?} and {} image embeddings in {:.1} s", tc.states.len(), tc.states.tokens.dim(), train_embeds.dim().0, started.elapsed().as_secs_f64());
    }

    cell(3, "Build the decoder and the upsampler");
    let mut dconfig = setup.decoder_config.clone();
    let mut uconfig = setup.upsampler_config.clone();
    let train_upsampler = args.train != Part::Decoder && args.upsampler_weights.is_none();
    // --smoke shrinks the models it trains; loaded weights keep the chapter's sizes
    if smoke && train_decoder {
        dconfig.unet.base_channels = 8;
    }
    if smoke && train_upsampler {
        uconfig.base_channels = 8;
    }
    let decoder = UnclipDecoder::new(dconfig.clone(), &mut Rng::new(c.seed))?;
    let upsampler = Upsampler::new(uconfig.clone(), factor, &mut Rng::new(c.seed + 1))?;
    println!("decoder: {dconfig:?}\n  {} parameters", decoder.num_parameters());
    println!("upsampler: {uconfig:?}\n  {} parameters", upsampler.num_parameters());
    let diffusion = Diffusion::linear_epsilon()?;
    if !train_decoder {
        load_weights(c.weights.as_ref().unwrap_or(&setup.decoder), &decoder)?;
    }
    let mut have_upsampler = train_upsampler;
    if !train_upsampler {
        let path = args.upsampler_weights.clone().unwrap_or_else(|| setup.upsampler.clone());
        if path.exists() || args.upsampler_weights.is_some() {
            load_weights(&path, &upsampler)?;
            have_upsampler = true;
        } else {
            println!("no upsampler weights ({}): bilinear interpolation stands in for it", path.display());
        }
    }
    let (low_side, high_side) = (dconfig.unet.image_size, uconfig.image_size);

    // ANCHOR: train_decoder
    cell(4, "Train the decoder: ‖ε - ε_θ(x_t, t, z_i, caption)‖², z_i dropped 10%, caption 50%");
    if let Some(train_captions) = &train_captions {
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
            let x0 = Tensor::new(train_low.select(Axis(0), indices).into_dyn()); // (B, C, h, h)
            let cond = DecoderCondition { image_embeds: train_embeds.select(Axis(0), indices), text: Some(train_captions.draw(indices, rng)) };
            let cond = cond.drop_at_random(args.p_drop_image, args.p_drop_text, rng); // classifier-free training
            let t: Vec<usize> = (0..indices.len()).map(|_| rng.below(NUM_TRAIN_STEPS)).collect(); // t ~ U{0..T-1}
            let noise = Tensor::randn(&x0.shape(), rng); // ε ~ N(0, I)
            diffusion_loss(&diffusion.schedule, diffusion.prediction, |x_t, t| decoder.forward(x_t, t, &cond), &x0, &t, &noise)
        })?;
        plot_loss(&t.metrics, &out.join("loss.png"), "decoder: training loss (MSE on ε)")?;
        let path = out.join("unclip_decoder_ema.safetensors");
        checkpoint::save(&path, &decoder, None, &HashMap::from([("steps".to_string(), trained.to_string()), ("dataset".to_string(), dataset.to_string())]))?;
        wrote(&path);
    } else {
        println!("skipped: the decoder's weights were loaded");
    }
    // ANCHOR_END: train_decoder

    // ANCHOR: train_upsampler
    cell(5, &format!("Train the upsampler: {high_side}x{high_side} given the blurred {low_side}x{low_side} (σ ~ U[0.4, 0.6])"));
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
            let (images, _) = train_set.batch(indices); // (B, C, H, W) in [0, 1]
            let sigma = TRAIN_BLUR_SIGMA.0 + (TRAIN_BLUR_SIGMA.1 - TRAIN_BLUR_SIGMA.0) * rng.uniform();
            let low = to_model(&gaussian_blur(&downsample(&images, factor), sigma)); // y: (B, C, h, h), the corrupted input
            let x0 = to_model(&images);
            let t: Vec<usize> = (0..indices.len()).map(|_| rng.below(NUM_TRAIN_STEPS)).collect();
            let noise = Tensor::randn(&x0.shape(), rng);
            diffusion_loss(&diffusion.schedule, diffusion.prediction, |x_t, t| upsampler.forward(x_t, t, &low), &x0, &t, &noise)
        })?;
        plot_loss(&t.metrics, &out.join("upsampler_loss.png"), "upsampler: training loss (MSE on ε)")?;
        let path = out.join("unclip_upsampler_ema.safetensors");
        checkpoint::save(&path, &upsampler, None, &HashMap::from([("steps".to_string(), trained.to_string()), ("dataset".to_string(), dataset.to_string())]))?;
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
    let classes = test.classes.len();
    let per_class = if smoke { 1 } else { args.eval_per_class };
    let picked = balanced_indices(&test.labels, classes, per_class);
    let (sources, source_labels) = test.batch(&picked); // (classes·k, C, H, W), labels 0, 1, ... interleaved
    let source_captions = captions_of(&test, &picked, dataset); // what each source shows

    if source_labels.is_empty() {
        println!("cells 6 to 10 skipped: --eval-per-class 0");
    } else {
        // ANCHOR: fidelity
        cell(6, "Decode test images' own CLIP embeddings: does the judge see what the image showed?");
        let z = clip.image_embeddings(&sources)?; // (N, E)
        for captioned in [false, true] {
            let cond = unclip.condition(z.clone(), captioned.then_some(source_captions.as_slice()))?;
            let decoded = unclip.decode(&cond, None, &mut Rng::new(c.seed + 10))?;
            let low = judge.judge(&bilinear_upsample(&decoded.low, factor), &source_captions, &source_labels)?;
            let high = judge.judge(&decoded.high, &source_captions, &source_labels)?;
            log_eval(
                &mut eval_log,
                &eval_path,
                format!("{{\"eval\": \"decode_true_embedding\", \"caption\": {captioned}, \"images\": {}, \"guidance\": {}, \"judge_low_bilinear\": {}, \"judge_upsampled\": {}}}", source_labels.len(), args.guidance, low.json, high.json),
            )?;
            if !captioned {
                let shown = (classes * 2).min(source_labels.len());
                let grid = ndarray::concatenate(Axis(0), &[sources.slice(s![..shown, .., .., ..]), decoded.high.slice(s![..shown, .., .., ..])]).map_err(|e| Error::Msg(e.to_string()))?;
                let path = out.join("fidelity.png");
                save_image_grid(&path, &grid, &GridOptions { scale: 2, ..GridOptions::with_nrow(shown) })?;
                wrote(&path);
            }
        }
        // ANCHOR_END: fidelity

        cell(7, &format!("The upsampler against interpolation, on real {low_side}x{low_side} test images"));
        let low_real = downsample(&sources, factor); // (N, C, h, h)
        let bilinear = bilinear_upsample(&low_real, factor);
        let upsampled = unclip.upsample(&low_real, &mut Rng::new(c.seed + 11))?;
        let on_real = judge.judge(&sources, &source_captions, &source_labels)?;
        let on_bilinear = judge.judge(&bilinear, &source_captions, &source_labels)?;
        let on_upsampled = judge.judge(&upsampled, &source_captions, &source_labels)?;
        let mse = |a: &Array4<f32>| (a - &sources).mapv(|v| (v * v) as f64).mean().unwrap_or(0.0);
        log_eval(
            &mut eval_log,
            &eval_path,
            format!(
                "{{\"eval\": \"upsampler\", \"images\": {}, \"judge_real\": {}, \"judge_bilinear\": {}, \"judge_upsampler\": {}, \"mse_bilinear\": {:.5}, \"mse_upsampler\": {:.5}, \"upsampler\": {have_upsampler}}}",
                source_labels.len(),
                on_real.json,
                on_bilinear.json,
                on_upsampled.json,
                mse(&bilinear),
                mse(&upsampled)
            ),
        )?;
        let shown = classes.max(8).min(source_labels.len());
        let nearest = Tensor::new(low_real.slice(s![..shown, .., .., ..]).to_owned().into_dyn()).upsample_nearest2d(factor)?.to_array().into_dimensionality::<ndarray::Ix4>().map_err(|e| Error::Msg(e.to_string()))?;
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
        let expected_captions: Vec<String> = source_captions.iter().flat_map(|y| std::iter::repeat_n(y.clone(), per_image)).collect();
        let kept = judge.judge(&variations.high, &expected_captions, &expected)?;
        let distance = mean_pixel_distance(&variations.high, &sources, per_image);
        // ANCHOR_END: variations
        let between: f64 = {
            // the same measure between different test images of the same label: how far "another 7" is
            let n = source_labels.len();
            let pairs: Vec<(usize, usize)> = (0..n).filter_map(|i| (i + classes < n).then_some((i, i + classes))).collect();
            pairs.iter().map(|&(i, j)| (&sources.slice(s![i, .., .., ..]) - &sources.slice(s![j, .., .., ..])).mapv(|v| v.abs() as f64).mean().unwrap_or(0.0)).sum::<f64>() / pairs.len().max(1) as f64
        };
        log_eval(
            &mut eval_log,
            &eval_path,
            format!("{{\"eval\": \"variations\", \"sources\": {}, \"per_source\": {per_image}, \"kept\": {}, \"mean_abs_pixel_distance\": {distance:.4}, \"same_label_other_image_distance\": {between:.4}}}", source_labels.len(), kept.json),
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
        let mut rows = Vec::new();
        for (i, from, to) in text_diff_edits(&source_captions, &source_labels, dataset) {
            let image = sources.slice(s![i..i + 1, .., .., ..]).to_owned();
            let moved = unclip.text_diff(&image, &from, &to, &thetas, &mut Rng::new(c.seed + 30))?;
            let verdicts: Vec<String> = (0..thetas.len())
                .map(|k| {
                    let one = moved.high.slice(s![k..k + 1, .., .., ..]).to_owned();
                    let to_label = source_labels.iter().zip(&source_captions).find(|(_, cap)| **cap == to).map_or(0, |(&y, _)| y);
                    judge.judge(&one, std::slice::from_ref(&to), &[to_label]).map(|v| if v.rate == 1.0 { "to" } else { "-" }.to_string())
                })
                .collect::<dalle::Result<_>>()?;
            println!("{from:?} -> {to:?}: shows the new caption at θ = {thetas:?}: {verdicts:?}");
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
    let prior_path = args.prior.clone().unwrap_or_else(|| setup.prior.clone());
    let prior = if prior_path.exists() { Some(UnclipPrior::load(&prior_path, FrozenClip::load_toy(args.clip.as_ref().unwrap_or(&setup.clip))?)?) } else { None };
    let sampling = PriorSampling { guidance: args.prior_guidance, candidates: args.prior_candidates, ..PriorSampling::default() };
    let baseline = TextEmbeddingPrior { clip: &clip };
    let mut runs: Vec<(&str, &dyn ImagePrior, usize)> = vec![("clip_text_embedding (stand-in)", &baseline, args.eval_per_class)];
    let diffusion_prior = prior.as_ref().map(|p| DiffusionImagePrior { prior: p, sampling });
    match &diffusion_prior {
        Some(p) => runs.push(("diffusion prior (chapter 10)", p, args.pipeline_per_class)),
        None => println!("no prior at {}: only the stand-in runs", prior_path.display()),
    }
    let mut written = None;
    for (name, prior, per_class) in runs {
        if per_class == 0 {
            continue;
        }
        for set in pipeline_prompts(dataset, if smoke { 1 } else { per_class }, &args, smoke)? {
            if set.prompts.is_empty() {
                continue;
            }
            let images = generate(&unclip, prior, &set.prompts, &mut Rng::new(c.seed + 40))?; // caption -> z_i -> h x h -> H x H
            let high = judge.judge(&images.high, &set.prompts, &set.labels)?;
            let low = judge.judge(&bilinear_upsample(&images.low, factor), &set.prompts, &set.labels)?;
            log_eval(
                &mut eval_log,
                &eval_path,
                format!("{{\"eval\": \"pipeline\", \"prior\": \"{name}\", \"prompts\": \"{}\", \"images\": {}, \"judge_upsampled\": {}, \"judge_low_bilinear\": {}}}", set.name, set.prompts.len(), high.json, low.json),
            )?;
            let shown: Vec<usize> = (0..(set.per_row * 8).min(set.prompts.len())).collect();
            let stem = if name.starts_with("diffusion") { "pipeline_prior" } else { "pipeline_standin" };
            let path = out.join(format!("{stem}{}.png", set.suffix));
            save_image_grid(&path, &images.high.select(Axis(0), &shown), &GridOptions { scale: 2, ..GridOptions::with_nrow(set.per_row) })?;
            wrote(&path);
            written = Some((images.high, set.prompts, set.labels)); // the last run: the prior's when there is one
        }
    }
    // ANCHOR_END: pipeline

    cell(12, "Write the samples");
    let (images, prompts, labels) = written.ok_or_else(|| Error::Config("no pipeline samples to write: --eval-per-class 0 and no prior".into()))?;
    write_samples(&out, &images, &prompts, Some(&labels))?;
    wrote(out.join("samples.npy"));
    Ok(())
}

/// What a data set's images are judged by: the digit classifier (MNIST) or the Shapes pixel judge.
enum Judge {
    Digits(DigitJudge),
    Shapes,
}

/// One measurement: the headline rate (digit fidelity, or Shapes' "everything the caption says")
/// and every rate as a JSON object.
struct Verdict {
    rate: f64,
    json: String,
}

impl Judge {
    fn for_dataset(dataset: DatasetName) -> dalle::Result<Self> {
        Ok(if dataset == DatasetName::Shapes { Judge::Shapes } else { Judge::Digits(DigitJudge::pretrained()?) })
    }

    /// How many of `images` show what `captions` say (the digit judge reads `labels`).
    fn judge(&self, images: &Array4<f32>, captions: &[String], labels: &[usize]) -> dalle::Result<Verdict> {
        match self {
            Judge::Digits(judge) => {
                let rate = judge.fidelity(images, labels)? as f64;
                Ok(Verdict { rate, json: format!("{{\"judge\": {rate:.4}}}") })
            }
            Judge::Shapes => {
                let f = ShapesFidelity::measure(images, captions)?;
                let relation = f.relation.map_or("null".to_string(), |r| format!("{r:.4}"));
                Ok(Verdict {
                    rate: f.all,
                    json: format!(
                        "{{\"count\": {:.4}, \"colour\": {:.4}, \"shape\": {:.4}, \"size_colour_shape\": {:.4}, \"relation\": {relation}, \"all\": {:.4}}}",
                        f.count, f.colour, f.shape, f.phrase, f.all
                    ),
                })
            }
        }
    }
}

/// The caption of each of `indices` in `set`: its own (Shapes) or its digit's first template.
fn captions_of(set: &ImageDataset, indices: &[usize], dataset: DatasetName) -> Vec<String> {
    match &set.captions {
        Some(captions) => indices.iter().map(|&i| captions[i].clone()).collect(),
        None => indices.iter().map(|&i| class_caption(dataset, set.labels[i], 0)).collect(),
    }
}

/// `(source row, from caption, to caption)` of the text-diff row: MNIST moves four digits
/// to another digit, Shapes recolours four one-object images.
fn text_diff_edits(captions: &[String], labels: &[usize], dataset: DatasetName) -> Vec<(usize, String, String)> {
    if dataset == DatasetName::Shapes {
        let colours: Vec<&str> = Colour::ALL.iter().map(|c| c.name()).collect();
        return captions
            .iter()
            .enumerate()
            .filter(|(_, cap)| cap.split(' ').count() == 4) // "a small red circle": one object
            .take(4)
            .map(|(i, cap)| {
                let words: Vec<&str> = cap.split(' ').collect();
                let k = colours.iter().position(|&c| c == words[2]).unwrap_or(0);
                let to = format!("{} {} {} {}", words[0], words[1], colours[(k + 2) % colours.len()], words[3]); // red -> blue, green -> yellow, ...
                (i, cap.clone(), to)
            })
            .collect();
    }
    [(1usize, 7usize), (3, 8), (4, 9), (6, 0)] // (from digit, to digit)
        .iter()
        .filter_map(|&(from, to)| labels.iter().position(|&y| y == from).map(|i| (i, class_caption(dataset, from, 0), class_caption(dataset, to, 0))))
        .collect()
}

/// One set of pipeline prompts, with the digit labels the MNIST judge reads.
struct PromptSet {
    name: &'static str,
    prompts: Vec<String>,
    labels: Vec<usize>,
    /// Images per grid row (and the grid shows 8 rows).
    per_row: usize,
    /// The grid's file name ends with this.
    suffix: &'static str,
}

/// MNIST: `per_class` captions of each digit, templates in turn. Shapes: the 36 one-object
/// phrases `--shapes-per-prompt` times each, and `--relation-prompts` test relation captions.
fn pipeline_prompts(dataset: DatasetName, per_class: usize, args: &Args, smoke: bool) -> dalle::Result<Vec<PromptSet>> {
    if dataset == DatasetName::Shapes {
        let per_prompt = if smoke { 1 } else { args.shapes_per_prompt };
        let single: Vec<String> = single_object_prompts().into_iter().flat_map(|p| std::iter::repeat_n(p, per_prompt)).collect();
        let relations = relation_prompts(if smoke { 4 } else { args.relation_prompts })?;
        return Ok(vec![
            PromptSet { name: "one object", labels: vec![0; single.len()], prompts: single, per_row: per_prompt.max(1), suffix: "" },
            PromptSet { name: "relations", labels: vec![0; relations.len()], prompts: relations, per_row: 8, suffix: "_relations" },
        ]);
    }
    let (classes, templates) = (10, num_templates(dataset));
    let labels: Vec<usize> = (0..classes * per_class).map(|i| i % classes).collect();
    let prompts = labels.iter().enumerate().map(|(i, &y)| class_caption(dataset, y, (i / classes) % templates)).collect();
    Ok(vec![PromptSet { name: "digits", prompts, labels, per_row: classes, suffix: "" }])
}
