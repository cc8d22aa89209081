//! Chapter 09 (CLIP guidance): a noised CLIP trained on MNIST (or Shapes) images at every
//! noise level, its zero-shot accuracy against t, then images sampled from an unconditional
//! model and steered by the CLIP's gradient toward a caption. On MNIST the unconditional
//! model is chapter 08's U-Net with no class (the null class); on Shapes it is the Shapes
//! GLIDE of `09_glide --dataset shapes` given the empty caption.
//!
//! ```text
//! cargo run --release --example 09_noised_clip                  # about 10 minutes of training
//! cargo run --release --example 09_noised_clip -- --weights weights/noised_clip_mnist.safetensors   # evaluate only
//! cargo run --release --example 09_noised_clip -- --resume runs/09_noised_clip/checkpoint.safetensors
//! cargo run --release --example 09_noised_clip -- --smoke
//! cargo run --release --example 09_noised_clip -- --dataset shapes --out runs/09_noised_clip_shapes
//! cargo run --release --example 09_noised_clip -- --dataset shapes --weights weights/noised_clip_shapes.safetensors
//! ```
//!
//! Leaves in `runs/09_noised_clip/`: `loss.png`, `zero_shot.csv` and `zero_shot.png` (accuracy
//! against t, the noised CLIP beside chapter 03's: the digit on MNIST, the one-object phrase
//! out of 36 on Shapes), `guidance.csv` and `guidance.png` (judge accuracy against the
//! guidance scale; on Shapes the Shapes judge's rates), `grid_s<scale>.png` (one row per
//! prompt), `samples.npy` + `prompts.txt` + `labels.txt` (the samples at `--scale`),
//! `checkpoint.safetensors` (resumable) and `noised_clip_<dataset>.safetensors`.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use dalle::data::batch::BatchSampler;
use dalle::data::captions::{class_caption, num_templates};
use dalle::data::shapes::{Shapes, ShapesConfig};
use dalle::data::{self, DatasetName, Split};
use dalle::eval::shapes_fidelity::{relation_prompts, single_object_prompts};
use dalle::eval::{DigitJudge, ShapesFidelity};
use dalle::io::{checkpoint, plot_lines, save_image_grid, write_samples, GridOptions, Series};
use dalle::models::clip::load::{load_toy, tokenizer_path_for};
use dalle::models::clip::zero_shot::{dataset_prompts, predict};
use dalle::models::clip::ClipModel;
use dalle::models::diffusion::{respace, to_model, to_pixels, BetaSchedule, ClassConditionalUNet, Diffusion, NoiseSchedule, Prediction, Sampler, UNetConfig, Variance};
use dalle::models::glide::{load_toy_shapes, Glide, EMPTY_CAPTION};
use dalle::models::noised_clip::{ClipGuided, NoisedClip};
use dalle::nn::Module;
use dalle::optim::{clip_grad_norm, Adam, Optimizer, WarmupCosine};
use dalle::tensor::no_grad;
use dalle::tokenizer::{TextTokenizer, TrainedBpe};
use dalle::train::{cell, check_finite, load_average, resume_from, save_or_stop, series, wrote, CommonArgs, MetricsLog, Progress, RunState, TimeBudget};
use dalle::{Error, Rng, Tensor};
use ndarray::{s, Array4, Axis};

/// Train a noised CLIP and sample digits (or shapes) with CLIP guidance.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Stop training after this many minutes even if steps remain (0: no limit).
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Chapter 03's CLIP: its text tower (frozen) and the image tower's start [default:
    /// `weights/clip_<dataset>.safetensors`].
    #[arg(long)]
    clip: Option<PathBuf>,
    /// MNIST: chapter 08's class-conditional U-Net, sampled with the null class.
    #[arg(long, default_value = "weights/ddpm_mnist.safetensors")]
    ddpm: PathBuf,
    /// Shapes: the Shapes GLIDE (its tokenizer beside it), sampled with the empty caption.
    #[arg(long, default_value = "weights/glide_shapes.safetensors")]
    glide: PathBuf,
    /// Shapes images rendered for training.
    #[arg(long, default_value_t = 30_000)]
    shapes_images: usize,
    /// Shapes: two-object relation prompts of the test split at each scale (0: none).
    #[arg(long, default_value_t = 100)]
    shapes_relations: usize,
    /// The guidance scales of the accuracy curve, comma-separated.
    #[arg(long, default_value = "0,50,100,200,400")]
    scales: String,
    /// The scale whose samples are written to samples.npy.
    #[arg(long, default_value_t = 200.0)]
    scale: f32,
    /// Samples per digit (Shapes: per one-object prompt) at each scale.
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

/// Prompt-ensembled class embeddings `(K, E)`: every prompt's unit embedding, averaged, renormalised.
fn class_embeds(clip: &NoisedClip, tokenizer: &dyn TextTokenizer, classes: &[Vec<String>]) -> dalle::Result<Tensor> {
    let rows: Vec<Tensor> = classes.iter().map(|prompts| clip.caption_embeds(tokenizer, prompts)?.mean_axes(&[0], true)?.l2_normalize(-1, 1e-12)).collect::<dalle::Result<_>>()?;
    Tensor::concat(&rows.iter().collect::<Vec<_>>(), 0) // (K, E)
}

/// The zero-shot question of a data set: test images `(N, C, H, W)` in `[0, 1]`, their
/// classes, and each class's prompts. MNIST: the digit, prompt-ensembled over its caption
/// templates. Shapes: which of the 36 one-object phrases (size, colour, shape) a one-object
/// test image shows (chance 1/36).
fn zero_shot_set(dataset: DatasetName, c: &CommonArgs, n: usize) -> dalle::Result<(Array4<f32>, Vec<usize>, Vec<Vec<String>>)> {
    match dataset {
        DatasetName::Shapes => {
            let phrases = single_object_prompts();
            let shapes = Shapes::new(ShapesConfig::for_split(Split::Test))?;
            let samples: Vec<_> = shapes.iter().filter(|s| s.count() == 1).take(n).collect();
            let labels = samples.iter().map(|s| phrases.iter().position(|p| *p == s.caption).ok_or_else(|| Error::Msg(format!("one-object caption {:?} is not a phrase", s.caption)))).collect::<dalle::Result<Vec<usize>>>()?;
            let images = ndarray::stack(Axis(0), &samples.iter().map(|s| s.image.view()).collect::<Vec<_>>()).map_err(|e| Error::Msg(e.to_string()))?;
            Ok((images, labels, phrases.into_iter().map(|p| vec![p]).collect()))
        }
        _ => {
            let test = data::load(dataset, &c.data_dir(), Split::Test, Some(n))?;
            Ok((test.images, test.labels, dataset_prompts(dataset)))
        }
    }
}

/// `per_class` samples of each prompt (prompt-major) and, on Shapes, `relations` two-object
/// test captions after them; labels are prompt indices (36 + k for the k-th relation).
fn guidance_prompts(dataset: DatasetName, per_class: usize, relations: usize) -> dalle::Result<(Vec<String>, Vec<usize>)> {
    let phrases: Vec<String> = match dataset {
        DatasetName::Shapes => single_object_prompts(),
        _ => (0..10).map(|d| class_caption(DatasetName::Mnist, d, 0)).collect(),
    };
    let mut labels: Vec<usize> = (0..phrases.len() * per_class).map(|i| i / per_class).collect();
    let mut prompts: Vec<String> = labels.iter().map(|&l| phrases[l].clone()).collect();
    if dataset == DatasetName::Shapes && relations > 0 {
        let related = relation_prompts(relations)?;
        labels.extend((0..related.len()).map(|k| phrases.len() + k));
        prompts.extend(related);
    }
    Ok((prompts, labels))
}

/// The unconditional model CLIP guidance steers: chapter 08's U-Net (MNIST) or the Shapes GLIDE.
enum Unconditional {
    /// Chapter 08's class-conditional U-Net, run with the null class.
    NullClass(ClassConditionalUNet),
    /// GLIDE with the empty caption, and its tokenizer.
    EmptyCaption(Glide, TrainedBpe),
}

impl Unconditional {
    /// CLIP-guided samples `x_0` (model space) for `text` (B rows) at scale `s` from `x_t`.
    #[allow(clippy::too_many_arguments)]
    fn sample(&self, clip: &NoisedClip, text: Tensor, s: f32, diffusion: &Diffusion, sampler: &Sampler, x_t: Tensor, steps: &[usize], rng: &mut Rng) -> dalle::Result<Tensor> {
        let n = x_t.dim(0);
        let schedule = &diffusion.schedule;
        // ANCHOR: guided
        match self {
            Unconditional::NullClass(unet) => {
                let null = unet.with_labels(vec![unet.null_class(); n]); // ε(x_t, t, ∅)
                let guided = ClipGuided::new(null, Prediction::Epsilon, schedule, clip, text, s)?; // ε - s √(1-ᾱ) ∇ f̂·ĝ
                sampler.sample(&guided, diffusion, x_t, steps, rng, &mut |_, _| {})
            }
            Unconditional::EmptyCaption(glide, tokenizer) => {
                let empty = glide.with_captions(tokenizer, &vec![EMPTY_CAPTION; n], false)?; // ε(x_t, t, "")
                let guided = ClipGuided::new(empty, Prediction::Epsilon, schedule, clip, text, s)?;
                sampler.sample(&guided, diffusion, x_t, steps, rng, &mut |_, _| {})
            }
        }
        // ANCHOR_END: guided
    }

    /// `(C, S)`: image channels and side.
    fn image_shape(&self) -> (usize, usize) {
        let c = match self {
            Unconditional::NullClass(unet) => &unet.unet.config,
            Unconditional::EmptyCaption(glide, _) => &glide.unet.config,
        };
        (c.in_channels, c.image_size)
    }
}

fn notebook() -> dalle::Result<()> {
    let args = Args::parse();
    let c = &args.common;
    let out = c.start("09_noised_clip", true, true)?;
    let smoke = c.smoke;
    let dataset = c.dataset_or(DatasetName::Mnist);
    if !matches!(dataset, DatasetName::Mnist | DatasetName::Shapes) {
        return Err(Error::Config(format!("09_noised_clip trains on captioned MNIST or Shapes, not --dataset {}", dataset.as_str())));
    }
    let clip_path = args.clip.clone().unwrap_or_else(|| PathBuf::from(format!("weights/clip_{}.safetensors", dataset.as_str())));

    cell(1, &format!("Load {}, the diffusion schedule and chapter 03's CLIP", dataset.as_str()));
    let limit = if dataset == DatasetName::Shapes { Some(c.limit_or(256).unwrap_or(args.shapes_images)) } else { c.limit_or(256) };
    let train = data::load(dataset, &c.data_dir(), Split::Train, limit)?;
    let (test_images, test_labels, class_prompts) = zero_shot_set(dataset, c, if smoke { 64 } else { args.eval_images })?;
    let schedule = NoiseSchedule::new(BetaSchedule::linear(NUM_TRAIN_STEPS), NUM_TRAIN_STEPS)?;
    let (toy, tokenizer): (ClipModel, TrainedBpe) = load_toy(&clip_path)?;
    println!("{} train, {} test images; chapter 03's CLIP from {}", train.len(), test_labels.len(), clip_path.display());

    // ANCHOR: build
    cell(2, "The noised CLIP: chapter 03's towers, a time token in place of the class token");
    let clip = match &c.weights {
        Some(path) => NoisedClip::load(path)?,
        None => NoisedClip::from_clip(load_toy(&clip_path)?.0, 32, NUM_TRAIN_STEPS, "linear 1e-4..0.02 (chapter 08)")?,
    };
    match &c.weights {
        Some(path) => println!("loaded {} (trained on noised images)", path.display()),
        None => println!("warm start: image tower from {}, time token = its class token at every t; text tower frozen", clip_path.display()),
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
        let captions: Vec<String> = match &train.captions {
            Some(own) => idx.iter().map(|&i| own[i].clone()).collect(), // Shapes: each image's own caption
            None => labels.iter().map(|&l| class_caption(DatasetName::Mnist, l, rng.below(num_templates(DatasetName::Mnist)))).collect(),
        };
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
        let path = out.join(format!("noised_clip_{}.safetensors", dataset.as_str()));
        clip.save(&path, &HashMap::from([("steps".to_string(), trained.to_string())]))?;
        std::fs::copy(tokenizer_path_for(&clip_path), tokenizer_path_for(&path)).map_err(|e| Error::io(&path, e))?;
        wrote(&path);
    } else if c.weights.is_none() {
        clip.config.trained_on_noised_images = start > 0; // resumed at the end: it was trained
    }

    // ANCHOR: zero_shot
    cell(4, "Zero-shot accuracy against the noise level t (noised CLIP vs chapter 03's)");
    let classes = class_embeds(&clip, &tokenizer, &class_prompts)?.to_array().into_dimensionality::<ndarray::Ix2>().map_err(|e| Error::Msg(e.to_string()))?; // (K, E)
    let x0 = to_model(&test_images);
    let n_test = test_labels.len();
    let mut noise_rng = Rng::new(c.seed + 7);
    let mut rows = Vec::new();
    for &t in &EVAL_T {
        let noise = Tensor::randn(&x0.shape(), &mut noise_rng);
        let x_t = schedule.q_sample(&x0, &vec![t; n_test], &noise)?;
        let acc = |emb: Tensor| -> dalle::Result<f64> {
            let e = emb.to_array().into_dimensionality::<ndarray::Ix2>().map_err(|e| Error::Msg(e.to_string()))?; // (N, E)
            let pred = predict(&e.dot(&classes.t())); // argmax_k f̂ · w_k
            Ok(pred.iter().zip(&test_labels).filter(|(p, l)| p == l).count() as f64 / n_test as f64)
        };
        let (noised, clean) = no_grad(|| -> dalle::Result<(f64, f64)> {
            let mut f = Vec::new();
            let mut g = Vec::new();
            for chunk in (0..n_test).collect::<Vec<_>>().chunks(250) {
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
    plot_lines(&path, &format!("zero-shot accuracy on noised {} test images", dataset.as_str()), "t", "accuracy", &[curve("noised CLIP", 0), curve("chapter 03's CLIP", 1)], false)?;
    wrote(&path);

    cell(5, "CLIP-guided sampling: an unconditional model pushed toward a caption");
    let base = match dataset {
        DatasetName::Shapes => {
            let (glide, glide_tokenizer) = load_toy_shapes(&args.glide)?;
            println!("unconditional model: {} with the empty caption", args.glide.display());
            Unconditional::EmptyCaption(glide, glide_tokenizer)
        }
        _ => {
            let unet = ClassConditionalUNet::new(UNetConfig::mnist(), 10, &mut Rng::new(0))?;
            checkpoint::load(&args.ddpm)?.load_into(&unet, &[])?;
            println!("unconditional model: {} with the null class", args.ddpm.display());
            Unconditional::NullClass(unet)
        }
    };
    let diffusion = Diffusion { schedule: schedule.clone(), prediction: Prediction::Epsilon };
    let scales: Vec<f32> = args.scales.split(',').map(|s| s.trim().parse::<f32>().map_err(|_| Error::Config(format!("--scales: `{s}` is not a number")))).collect::<dalle::Result<_>>()?;
    let per_class = if smoke { 1 } else { args.per_class };
    let steps_list = respace(NUM_TRAIN_STEPS, if smoke { 3 } else { args.sample_steps })?;
    let (prompts, labels) = guidance_prompts(dataset, per_class, if smoke { 4 } else { args.shapes_relations })?;
    let single_n = labels.iter().filter(|&&l| l < class_prompts.len()).count(); // one-object (or digit) prompts first
    let sampler = match args.sampler.as_str() {
        "ddim" => Sampler::Ddim(0.0),
        "ddpm" => Sampler::Ddpm(Variance::Small),
        other => return Err(Error::Config(format!("--sampler {other}: expected ddim or ddpm"))),
    };
    let judge = if dataset == DatasetName::Mnist { Some(DigitJudge::pretrained()?) } else { None };
    let (channels, side) = base.image_shape();
    let mut curve_points = Vec::new();
    let mut chosen = None;
    let mut csv = String::from(match dataset {
        DatasetName::Shapes => "scale,single_images,count,colour,shape,size_colour_shape,all,relation_images,relation_count,relation,relation_all,seconds_per_sample\n",
        _ => "scale,judge_accuracy,seconds_per_sample\n",
    });
    for &s in &scales {
        let started = Instant::now();
        let text = clip.caption_embeds(&tokenizer, &prompts)?; // ĝ(c), (B, E)
        let x_t = Tensor::randn(&[labels.len(), channels, side, side], &mut Rng::new(c.seed + 11)); // the same x_T at every scale
        let x0 = base.sample(&clip, text, s, &diffusion, &sampler, x_t, &steps_list, &mut Rng::new(c.seed + 12))?;
        let images = to_pixels(&x0)?;
        let secs = started.elapsed().as_secs_f64() / labels.len() as f64;
        let headline = match &judge {
            Some(judge) => {
                let acc = judge.fidelity(&images, &labels)? as f64;
                println!("s = {s:>6}: judge accuracy {:>5.1}% over {} samples ({secs:.3} s per sample)", 100.0 * acc, labels.len());
                csv.push_str(&format!("{s},{acc:.4},{secs:.4}\n"));
                acc
            }
            None => {
                // ANCHOR: shapes_judge
                let single = ShapesFidelity::measure(&images.slice(s![..single_n, .., .., ..]).to_owned(), &prompts[..single_n])?;
                let related = (single_n < prompts.len()).then(|| ShapesFidelity::measure(&images.slice(s![single_n.., .., .., ..]).to_owned(), &prompts[single_n..])).transpose()?;
                // ANCHOR_END: shapes_judge
                println!("s = {s:>6}: one object: {} ({secs:.3} s per sample)", single.summary());
                let (n, count, relation, all) = related.map_or((0, f64::NAN, f64::NAN, f64::NAN), |r| (r.images, r.count, r.relation.unwrap_or(f64::NAN), r.all));
                if let Some(r) = &related {
                    println!("s = {s:>6}: two objects in relation: {}", r.summary());
                }
                csv.push_str(&format!("{s},{},{:.4},{:.4},{:.4},{:.4},{:.4},{n},{count:.4},{relation:.4},{all:.4},{secs:.4}\n", single.images, single.count, single.colour, single.shape, single.phrase, single.all));
                single.phrase
            }
        };
        curve_points.push((s as f64, headline));
        let path = out.join(format!("grid_s{s}.png"));
        save_image_grid(&path, &images.slice(s![..single_n, .., .., ..]), &GridOptions { scale: 2, ..GridOptions::with_nrow(per_class.max(if dataset == DatasetName::Shapes { 6 } else { 1 })) })?;
        wrote(&path);
        if s == args.scale || chosen.is_none() {
            chosen = Some(images);
        }
    }
    let path = out.join("guidance.csv");
    std::fs::write(&path, csv).map_err(|e| Error::io(&path, e))?;
    wrote(&path);
    let path = out.join("guidance.png");
    let measure = if dataset == DatasetName::Shapes { "size+colour+shape (one object)" } else { "judge accuracy" };
    plot_lines(&path, &format!("CLIP guidance: {measure} against the scale s"), "s", measure, &[Series::new(sampler.name(), curve_points)], false)?;
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
