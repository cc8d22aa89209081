//! Chapter 09: GLIDE on captioned MNIST (or Shapes), and the guidance scale's trade of
//! diversity for fidelity.
//!
//! ```text
//! cargo run --release --example 09_glide                       # MNIST captions, 35 minutes of training
//! cargo run --release --example 09_glide -- --weights weights/glide_mnist.safetensors   # sample only
//! cargo run --release --example 09_glide -- --resume runs/09_glide/checkpoint.safetensors
//! cargo run --release --example 09_glide -- --smoke
//! cargo run --release --example 09_glide -- --dataset shapes --minutes 30 --out runs/09_glide_shapes
//! cargo run --release --example 09_glide -- --dataset shapes --weights weights/glide_shapes.safetensors
//! ```
//!
//! On Shapes the captions are the images' own ("a small red circle above a large blue
//! square"), the U-Net is chapter 08's at 32x32 RGB, trained from scratch, and cells 5 to 10
//! measure with the Shapes judge (`dalle::eval::shapes_fidelity`) instead of the digit judge:
//! `scales.png`, `guidance.csv` (count, colour, shape, size+colour+shape, relation, all,
//! pairwise distance, per guidance and scale), `grid_<guidance>_single.png` and
//! `grid_<guidance>_relations.png` with `grid_relations.txt`.
//!
//! Leaves in `runs/09_glide/`: `tokens.txt` (captions as ids and padding masks), `loss.png`,
//! `scales.png` (the same prompts and noise at every guidance scale), `grid_seen.png`,
//! `grid_held_out.png`, `guidance.csv` + `guidance.png` + `tradeoff.png` (judge accuracy,
//! Fréchet distance and pairwise distance against the scale, classifier-free and, with
//! chapter 09b's noised CLIP, CLIP guidance), `samples.npy` + `prompts.txt` +
//! `labels.txt`, `checkpoint.safetensors` (weights, EMA, Adam, step) and
//! `glide_ema.safetensors` with its `glide_ema.tokenizer.json`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use dalle::data::batch::BatchSampler;
use dalle::data::captions::{class_caption, num_templates};
use dalle::data::{self, DatasetName, Split};
use dalle::eval::shapes_fidelity::{relation_prompts, single_object_prompts};
use dalle::eval::{frechet_distance, mean_pairwise_distance, DigitJudge, FeatureStats, ShapesFidelity};
use dalle::io::checkpoint;
use dalle::io::{plot_lines, save_image_grid, write_samples, GridOptions, Series};
use dalle::models::clip::load::tokenizer_path_for;
use dalle::models::diffusion::{diffusion_loss, respace, to_model, to_pixels, Diffusion, Sampler};
use dalle::models::glide::{drop_captions, Glide, GlideConfig, EMPTY_CAPTION};
use dalle::models::noised_clip::{ClipGuided, NoisedClip};
use dalle::nn::Module;
use dalle::optim::{Adam, Ema, Optimizer};
use dalle::tokenizer::{TextTokenizer, TrainedBpe};
use dalle::train::resume::{resume_from, save_or_stop, save_run, RunState};
use dalle::train::{cell, check_finite, load_average, series, wrote, CommonArgs, MetricsLog, Progress, TimeBudget};
use dalle::{Error, Rng, Tensor};
use ndarray::{s, Array4, ArrayRef4, Axis};

/// Train GLIDE on captioned MNIST or Shapes and sweep the guidance scale.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Stop training after this many minutes even if steps remain (0: no limit).
    #[arg(long, default_value_t = 35.0)]
    minutes: f64,
    /// The tokenizer to train with [default: the toy CLIP's BPE of chapter 03 for the data
    /// set, `weights/clip_<dataset>.tokenizer.json`].
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Chapter 08's weights to start the U-Net from ("none": a random U-Net) [default: MNIST
    /// `weights/ddpm_mnist.safetensors`; Shapes "none", as chapter 08's U-Net is 1-channel 28x28].
    #[arg(long)]
    warm_start: Option<String>,
    /// Shapes images rendered for training (captioned MNIST uses its 60 000).
    #[arg(long, default_value_t = 30_000)]
    shapes_images: usize,
    /// The EMA decay of the sampled weights.
    #[arg(long, default_value_t = 0.999)]
    ema_decay: f32,
    /// Share of training captions replaced by the empty caption (GLIDE: 20%).
    #[arg(long, default_value_t = 0.2)]
    p_uncond: f32,
    /// The caption template kept out of training, for the held-out phrasing at test time.
    #[arg(long, default_value_t = 2)]
    held_out_template: usize,
    /// The guidance scales of the sweep, comma-separated.
    #[arg(long, default_value = "0,1,2,3,5,8")]
    scales: String,
    /// The scale whose accuracy is measured on the most samples.
    #[arg(long, default_value_t = 3.0)]
    guidance: f32,
    /// Samples per digit at each scale of the sweep (0: skip the sweep).
    #[arg(long, default_value_t = 20)]
    curve_per_digit: usize,
    /// Samples per digit at the chosen scale (`--guidance`), for each phrasing (0: skip).
    #[arg(long, default_value_t = 100)]
    eval_per_digit: usize,
    /// The noised CLIP of CLIP guidance (chapter 09b), its tokenizer beside it [default:
    /// `weights/noised_clip_<dataset>.safetensors`].
    #[arg(long)]
    noised_clip: Option<PathBuf>,
    /// The CLIP guidance scales, comma-separated.
    #[arg(long, default_value = "0,50,100,200,400")]
    clip_scales: String,
    /// Samples per digit at each CLIP guidance scale (0: skip CLIP guidance; on Shapes any
    /// other value means the same prompt sets as classifier-free guidance).
    #[arg(long, default_value_t = 10)]
    clip_per_digit: usize,
    /// Shapes: samples of each of the 36 one-object prompts at each scale.
    #[arg(long, default_value_t = 8)]
    shapes_per_prompt: usize,
    /// Shapes: two-object relation prompts of the test split at each scale (one sample each).
    #[arg(long, default_value_t = 200)]
    shapes_relations: usize,
    /// DDIM steps of every sample.
    #[arg(long, default_value_t = 10)]
    sample_steps: usize,
    /// Images per sampling batch (guidance doubles it inside the network).
    #[arg(long, default_value_t = 200)]
    sample_batch: usize,
}

/// `T`, the training schedule's length (chapter 08's).
const NUM_TRAIN_STEPS: usize = 1000;

fn main() -> dalle::Result<()> {
    dalle::backend::on_worker(notebook)
}

/// The caption templates training sees: all of MNIST's but the held-out one.
fn training_templates(held_out: usize) -> Vec<usize> {
    (0..num_templates(DatasetName::Mnist)).filter(|&t| t != held_out).collect()
}

/// `per_digit` captions of each digit with template `template`, digits cycling 0..9; and their labels.
fn digit_prompts(template: usize, per_digit: usize) -> (Vec<String>, Vec<usize>) {
    let labels: Vec<usize> = (0..10 * per_digit).map(|i| i % 10).collect();
    (labels.iter().map(|&d| class_caption(DatasetName::Mnist, d, template)).collect(), labels)
}

/// How a sample is steered toward its caption.
#[derive(Clone, Copy)]
enum Guidance<'a> {
    /// Classifier-free: `ε_∅ + s (ε_c - ε_∅)`.
    ClassifierFree(f32),
    /// The captioned model's ε shifted by `s √(1 - ᾱ_t) ∇_{x_t} f̂(x_t, t) · ĝ(c)` of a noised CLIP.
    Clip { scale: f32, clip: &'a NoisedClip, tokenizer: &'a dyn TextTokenizer },
}

impl Guidance<'_> {
    fn name(&self) -> &'static str {
        match self {
            Guidance::ClassifierFree(_) => "classifier-free",
            Guidance::Clip { .. } => "noised CLIP",
        }
    }
    fn scale(&self) -> f32 {
        match *self {
            Guidance::ClassifierFree(s) | Guidance::Clip { scale: s, .. } => s,
        }
    }
}

/// DDIM samples of `captions` with `guidance`, in batches; images in `[0, 1]` and seconds per image.
#[allow(clippy::too_many_arguments)]
fn generate(model: &Glide, tokenizer: &dyn TextTokenizer, diffusion: &Diffusion, captions: &[String], guidance: Guidance, steps: usize, batch: usize, rng: &mut Rng) -> dalle::Result<(Array4<f32>, f64)> {
    let start = Instant::now();
    let timesteps = respace(NUM_TRAIN_STEPS, steps)?;
    let c = &model.unet.config;
    let mut parts = Vec::new();
    for chunk in captions.chunks(batch.max(1)) {
        let x_t = Tensor::randn(&[chunk.len(), c.in_channels, c.image_size, c.image_size], rng); // x_T ~ N(0, I)
        let texts: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let x0 = match guidance {
            Guidance::ClassifierFree(scale) => {
                // ANCHOR: sample
                let guided = model.guided(tokenizer, &texts, scale, false)?; // ε_∅ + s (ε_c - ε_∅), one batch of 2B
                Sampler::Ddim(0.0).sample(&guided, diffusion, x_t, &timesteps, rng, &mut |_, _| {})?
                // ANCHOR_END: sample
            }
            Guidance::Clip { scale, clip, tokenizer: clip_tokenizer } => {
                // ANCHOR: clip_sample
                let text = clip.caption_embeds(clip_tokenizer, chunk)?; // ĝ(c), (B, E)
                let captioned = model.with_captions(tokenizer, &texts, false)?; // ε(x_t | c)
                let guided = ClipGuided::new(captioned, diffusion.prediction, &diffusion.schedule, clip, text, scale)?;
                Sampler::Ddim(0.0).sample(&guided, diffusion, x_t, &timesteps, rng, &mut |_, _| {})?
                // ANCHOR_END: clip_sample
            }
        };
        parts.push(to_pixels(&x0)?);
    }
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    let images = ndarray::concatenate(Axis(0), &views).map_err(|e| Error::Msg(format!("samples: {e}")))?;
    Ok((images, start.elapsed().as_secs_f64() / captions.len().max(1) as f64))
}

/// The mean pairwise distance within each label of `images` (labels in any order, `per_label` each).
fn pairwise_within_labels(images: &ArrayRef4<f32>, labels: &[usize], per_label: usize) -> dalle::Result<f64> {
    let mut order: Vec<usize> = (0..labels.len()).collect();
    order.sort_by_key(|&i| labels[i]); // stable: each label's images consecutive
    mean_pairwise_distance(&images.select(Axis(0), &order), per_label)
}

/// One row of the guidance sweep.
struct Row {
    guidance: &'static str,
    scale: f32,
    phrasing: &'static str,
    images: usize,
    accuracy: f64,
    frechet: f64,
    pairwise: f64,
    seconds_per_image: f64,
}

fn notebook() -> dalle::Result<()> {
    let args = Args::parse();
    let c = &args.common;
    let out = c.start("09_glide", true, true)?;
    let smoke = c.smoke;
    let dataset = c.dataset_or(DatasetName::Mnist);
    let base_config = GlideConfig::for_dataset(dataset)?; // MNIST or Shapes; anything else refused here
    if args.held_out_template >= num_templates(DatasetName::Mnist) {
        return Err(Error::Config(format!("--held-out-template {}: MNIST has templates 0..{}", args.held_out_template, num_templates(DatasetName::Mnist) - 1)));
    }
    let parse_scales = |flag: &str, list: &str| -> dalle::Result<Vec<f32>> {
        let scales = list.split(',').map(|v| v.trim().parse::<f32>().map_err(|_| Error::Config(format!("{flag}: `{v}` is not a number")))).collect::<dalle::Result<Vec<f32>>>()?;
        for &s in &scales {
            dalle::models::glide::check_guidance_scale(s).map_err(|e| Error::Config(format!("{flag}: {}", e.message())))?;
        }
        Ok(scales)
    };
    let scales = parse_scales("--scales", &args.scales)?;
    let clip_scales = parse_scales("--clip-scales", &args.clip_scales)?;
    dalle::models::glide::check_guidance_scale(args.guidance).map_err(|e| Error::Config(format!("--guidance: {}", e.message())))?;

    cell(1, &format!("Load captioned {} and the tokenizer", dataset.as_str()));
    let limit = match dataset {
        DatasetName::Shapes => Some(c.limit_or(256).unwrap_or(args.shapes_images)),
        _ => c.limit_or(256),
    };
    let train = data::load(dataset, &c.data_dir(), Split::Train, limit)?;
    // with --weights, the tokenizer saved beside the weights
    let tokenizer_path = match (&c.weights, &args.tokenizer) {
        (Some(w), _) if tokenizer_path_for(w).exists() => tokenizer_path_for(w),
        (_, Some(t)) => t.clone(),
        _ => PathBuf::from(format!("weights/clip_{}.tokenizer.json", dataset.as_str())),
    };
    let tokenizer = TrainedBpe::load(&tokenizer_path)?;
    let templates = training_templates(args.held_out_template);
    println!("{} train images; tokenizer {} ({} tokens)", train.len(), tokenizer_path.display(), tokenizer.vocab_size());
    match &train.captions {
        Some(own) => {
            // Shapes: every image carries its own caption; the longest must fit the text context.
            let lengths = own.iter().map(|c| tokenizer.encode(c).map(|ids| ids.len())).collect::<dalle::Result<Vec<usize>>>()?;
            let longest = (0..own.len()).max_by_key(|&i| lengths[i]).unwrap_or(0);
            println!("own captions, e.g. {:?}; the longest, {:?}, is {} tokens with SOT and EOT (context {})", own[0], own[longest], lengths[longest] + 2, base_config.text.max_position_embeddings);
        }
        None => {
            for t in 0..num_templates(DatasetName::Mnist) {
                let role = if templates.contains(&t) { "train" } else { "held out" };
                println!("template {t} ({role}): {}", class_caption(DatasetName::Mnist, 7, t));
            }
        }
    }

    // ANCHOR: build
    cell(2, "Build GLIDE: a text transformer and chapter 08's U-Net");
    let config = GlideConfig { text: dalle::models::clip::ClipTextConfig { vocab_size: tokenizer.vocab_size(), ..base_config.text.clone() }, ..base_config };
    let model = Glide::new(config, &mut Rng::new(c.seed))?;
    let count = |m: &dyn Module| m.num_parameters();
    println!("text encoder {} + cond projection {} + U-Net {} = {} parameters", count(&model.text), count(&model.cond_proj), count(&model.unet), count(&model));
    // MNIST starts from chapter 08's U-Net; Shapes cannot (1 channel at 28x28 against 3 at 32x32)
    let warm_start = args.warm_start.clone().unwrap_or_else(|| if dataset == DatasetName::Mnist { "weights/ddpm_mnist.safetensors".into() } else { "none".into() });
    if let Some(path) = &c.weights {
        checkpoint::load(path)?.load_into(&model, &[])?;
        println!("loaded {}; sampling without training", path.display());
    } else if warm_start != "none" && c.resume.is_none() {
        let copied = model.warm_start_unet(&checkpoint::load(Path::new(&warm_start))?)?;
        println!("warm start: {copied} U-Net tensors from {warm_start} (the context projections start random)");
    } else if c.resume.is_none() {
        println!("no warm start: the U-Net starts random");
    }
    // ANCHOR_END: build

    // ANCHOR: tokens
    cell(3, "Captions to tokens: [SOT, words, EOT, PAD...] and the padding mask");
    let (shown, too_long) = match &train.captions {
        Some(own) => {
            let longest = own.iter().max_by_key(|c| c.len()).cloned().unwrap_or_default();
            let relation = own.iter().find(|c| c.contains(" above ") || c.contains(" left of ")).cloned().unwrap_or_default();
            ([relation, longest, EMPTY_CAPTION.to_string()], "a small red circle, a large cyan square, a small blue triangle and a large green circle")
        }
        None => (
            [class_caption(DatasetName::Mnist, 7, 0), class_caption(DatasetName::Mnist, 3, args.held_out_template), EMPTY_CAPTION.to_string()],
            "a handwritten seven and a handwritten three and a handwritten one",
        ),
    };
    let shown_refs: Vec<&str> = shown.iter().map(String::as_str).collect();
    let ids = model.text.tokenize(&tokenizer, &shown_refs, false)?; // (3, S)
    let features = dalle::no_grad(|| model.text.encode(&ids))?;
    let mut lines = Vec::new();
    for (i, caption) in shown.iter().enumerate() {
        let row: Vec<String> = ids.row(i).iter().map(|v| v.to_string()).collect();
        let mask: String = (0..ids.ncols()).map(|j| if features.padding[[i, j]] { '.' } else { '#' }).collect();
        lines.push(format!("{caption:?}\n  ids  {}\n  seen {mask}", row.join(" ")));
    }
    let refused = model.text.tokenize(&tokenizer, &[too_long], false).err().map(|e| e.message()).unwrap_or_default();
    lines.push(format!("too long, refused: {refused}"));
    // ANCHOR_END: tokens
    for l in &lines {
        println!("{l}");
    }
    let path = out.join("tokens.txt");
    std::fs::write(&path, lines.join("\n") + "\n").map_err(|e| Error::io(&path, e))?;
    wrote(&path);

    let diffusion = Diffusion::linear_epsilon()?;
    let params = model.named_parameters();
    let mut ema = Ema::new(&params, args.ema_decay); // starts at the current weights
    let mut opt = Adam::new(params.clone(), c.lr_or(1e-3) as f32);
    let steps = c.steps_or(20_000, 3);
    let batch_size = c.batch_size_or(64, 8);
    let mut sampler = BatchSampler::new(train.len(), batch_size, c.seed);
    let mut start = 0;
    if c.weights.is_some() {
        start = steps;
    } else if let Some(r) = resume_from(c, &model, &mut opt, steps)? {
        r.restore_ema(&ema)?;
        r.restore_sampler("train", &mut sampler)?;
        start = r.step;
    }

    // ANCHOR: train
    cell(4, "Train: ‖ε - ε_θ(x_t, t, caption)‖², captions emptied 20% of the time");
    let mut log = MetricsLog::create_or_resume(&out, (start > 0).then_some(start))?;
    let progress = Progress::new("glide", steps);
    let budget = TimeBudget::new(if smoke { 0 } else { (args.minutes * 60.0) as u64 });
    let run_checkpoint = out.join("checkpoint.safetensors");
    let base_lr = opt.lr();
    let mut trained = start;
    for step in start..steps {
        let idx = sampler.next_batch();
        let (images, labels) = train.batch(&idx); // (B, C, H, W) in [0, 1], (B)
        let x0 = to_model(&images); // [-1, 1]
        let mut rng = Rng::new(c.seed.wrapping_mul(1_000_003).wrapping_add(step as u64)); // per step: resumable
        let t: Vec<usize> = (0..labels.len()).map(|_| rng.below(NUM_TRAIN_STEPS)).collect(); // t ~ U{0, ..., T-1}
        let noise = Tensor::randn(&x0.shape(), &mut rng); // ε ~ N(0, I)
        let captions: Vec<String> = match &train.captions {
            Some(own) => idx.iter().map(|&i| own[i].clone()).collect(), // Shapes: each image's own caption
            None => labels.iter().map(|&y| class_caption(DatasetName::Mnist, y, templates[rng.below(templates.len())])).collect(),
        };
        let captions = drop_captions(&captions, args.p_uncond, &mut rng); // c or ∅
        let texts: Vec<&str> = captions.iter().map(String::as_str).collect();
        let ids = model.text.tokenize(&tokenizer, &texts, false)?; // (B, S)
        let loss = diffusion_loss(&diffusion.schedule, diffusion.prediction, |x_t, t| model.forward_ids(x_t, t, &ids), &x0, &t, &noise)?;
        opt.set_lr(base_lr * ((step + 1) as f32 / 100.0).min(1.0)); // linear warm-up over 100 steps
        opt.zero_grad();
        loss.backward();
        check_finite(step, loss.item(), None, &params)?; // a NaN loss stops the run before it reaches the weights
        opt.step();
        ema.update_at(step, &params); // θ̄ ← d θ̄ + (1 - d) θ, d warmed up
        trained = step + 1;
        let state = RunState::new(trained).sampler("train", &sampler).ema(&ema);
        let spent = budget.record_step(step, &[("loss", loss.item() as f64)], &mut log, &progress)?;
        if trained % 100 == 0 || spent {
            save_run(&run_checkpoint, &model, &opt, &state)?; // atomic
        }
        if save_or_stop(c, &run_checkpoint, steps, &model, &opt, &state)? {
            return Ok(());
        }
        if spent {
            break;
        }
    }
    progress.finish();
    // ANCHOR_END: train
    if trained > start {
        let secs = budget.elapsed_secs();
        println!("trained steps {start}..{trained} in {secs:.0} s: {:.2} s per step of {batch_size} (load: {})", secs / (trained - start) as f64, load_average());
        let records = dalle::train::read_metrics(log.path())?;
        let path = out.join("loss.png");
        plot_lines(&path, "training loss (MSE on ε)", "step", "loss", &[series(&records, "loss")], true)?;
        wrote(&path);
    }
    ema.copy_to(&params); // from here on, the EMA weights
    let path = out.join("glide_ema.safetensors");
    let meta = std::collections::HashMap::from([("steps".to_string(), trained.to_string()), ("warm_start".to_string(), warm_start.clone()), ("dataset".to_string(), dataset.as_str().to_string())]);
    checkpoint::save(&path, &model, None, &meta)?;
    std::fs::copy(&tokenizer_path, tokenizer_path_for(&path)).map_err(|e| Error::io(&tokenizer_path, e))?;
    wrote(&path);

    let noised_clip = args.noised_clip.clone().unwrap_or_else(|| PathBuf::from(format!("weights/noised_clip_{}.safetensors", dataset.as_str())));
    let eval = Eval { model: &model, tokenizer: &tokenizer, diffusion: &diffusion, steps: if smoke { 2 } else { args.sample_steps }, batch: args.sample_batch, out: &out };
    match dataset {
        DatasetName::Shapes => evaluate_shapes(&args, &eval, &scales, &clip_scales, &noised_clip),
        _ => evaluate_mnist(&args, &eval, &scales, &clip_scales, &noised_clip),
    }
}

/// What every evaluation cell shares: the model, its tokenizer and schedule, the DDIM steps,
/// the sampling batch and the output folder.
struct Eval<'a> {
    model: &'a Glide,
    tokenizer: &'a TrainedBpe,
    diffusion: &'a Diffusion,
    steps: usize,
    batch: usize,
    out: &'a Path,
}

impl Eval<'_> {
    /// DDIM samples of `captions` with `guidance` from seed `seed` (images in `[0, 1]`, seconds per image).
    fn generate(&self, captions: &[String], guidance: Guidance, seed: u64) -> dalle::Result<(Array4<f32>, f64)> {
        generate(self.model, self.tokenizer, self.diffusion, captions, guidance, self.steps, self.batch, &mut Rng::new(seed))
    }
}

/// Cells 5 to 10 on captioned MNIST: the digit judge, Fréchet distance and pairwise distance.
fn evaluate_mnist(args: &Args, eval: &Eval, scales: &[f32], clip_scales: &[f32], noised_clip: &Path) -> dalle::Result<()> {
    let c = &args.common;
    let (smoke, out, steps) = (c.smoke, eval.out, eval.steps);
    let test = data::load(DatasetName::Mnist, &c.data_dir(), Split::Test, c.limit_or(200))?;
    cell(5, "The same prompts and noise at every guidance scale");
    let (captions, _) = digit_prompts(0, 1);
    let mut rows = Vec::new();
    for &scale in scales {
        rows.push(eval.generate(&captions, Guidance::ClassifierFree(scale), c.seed + 2)?.0); // same x_T for every scale
    }
    let views: Vec<_> = rows.iter().map(|r| r.view()).collect();
    let grid = ndarray::concatenate(Axis(0), &views).map_err(|e| Error::Msg(e.to_string()))?;
    let path = out.join("scales.png");
    save_image_grid(&path, &grid, &GridOptions { scale: 2, ..GridOptions::with_nrow(10) })?;
    println!("rows: s = {scales:?}; columns: {:?} ... {:?}", captions[0], captions[9]);
    wrote(&path);

    // ANCHOR: sweep
    cell(6, "Fidelity against diversity as the scale grows");
    let judge = DigitJudge::pretrained()?;
    let reference = FeatureStats::from_rows(&judge.feature_rows(&test.images.slice(s![0..test.len() / 2, .., .., ..]).to_owned())?)?;
    // the floor: the first `per` test images of each digit after the reference half
    let per = args.curve_per_digit.clamp(2, 100);
    let mut real: Vec<usize> = Vec::new();
    for d in 0..10 {
        real.extend((test.len() / 2..test.len()).filter(|&i| test.labels[i] == d).take(per));
    }
    let real_images = test.images.select(Axis(0), &real);
    let real_labels: Vec<usize> = real.iter().map(|&i| test.labels[i]).collect();
    let floor_n = real.len();
    let floor_fd = frechet_distance(&FeatureStats::from_rows(&judge.feature_rows(&real_images)?)?, &reference);
    let floor_pairwise = if real_labels.iter().all(|&d| real_labels.iter().filter(|&&e| e == d).count() == per) { pairwise_within_labels(&real_images, &real_labels, per)? } else { f64::NAN };
    println!("real test images ({floor_n} vs {}): Fréchet distance {floor_fd:.2}, pairwise distance within a digit {floor_pairwise:.4} (the floor)", reference.count);
    let measure = |guidance: Guidance, phrasing: &'static str, template: usize, per_digit: usize, seed: u64| -> dalle::Result<(Row, Array4<f32>, Vec<String>, Vec<usize>)> {
        let (captions, labels) = digit_prompts(template, per_digit);
        let (images, secs) = eval.generate(&captions, guidance, seed)?;
        let accuracy = judge.fidelity(&images, &labels)? as f64;
        let frechet = frechet_distance(&FeatureStats::from_rows(&judge.feature_rows(&images)?)?, &reference);
        let pairwise = if per_digit >= 2 { pairwise_within_labels(&images, &labels, per_digit)? } else { f64::NAN };
        let (name, scale) = (guidance.name(), guidance.scale());
        let row = Row { guidance: name, scale, phrasing, images: labels.len(), accuracy, frechet, pairwise, seconds_per_image: secs };
        println!("{name} s = {scale}, {phrasing} phrasing, {} images: accuracy {:.4}, Fréchet {frechet:.2}, pairwise {pairwise:.4} ({secs:.3} s per image)", row.images, accuracy);
        Ok((row, images, captions, labels))
    };
    let curve_n = if smoke { 2 } else { args.curve_per_digit };
    let mut table = Vec::new();
    for &scale in if curve_n > 0 { scales } else { &[] } {
        table.push(measure(Guidance::ClassifierFree(scale), "held-out", args.held_out_template, curve_n, c.seed + 3)?.0);
    }
    // ANCHOR_END: sweep

    cell(7, "The chosen scale on more samples: seen and held-out phrasings");
    let eval_n = if smoke { 2 } else { args.eval_per_digit };
    let mut shipped = None;
    if eval_n > 0 {
        let (seen, seen_images, seen_captions, seen_labels) = measure(Guidance::ClassifierFree(args.guidance), "seen", 0, eval_n, c.seed + 4)?;
        let (held, held_images, _, _) = measure(Guidance::ClassifierFree(args.guidance), "held-out", args.held_out_template, eval_n, c.seed + 5)?;
        let first: Vec<usize> = (0..10 * eval_n.min(8)).collect();
        for (name, images) in [("grid_seen.png", &seen_images), ("grid_held_out.png", &held_images)] {
            let path = out.join(name);
            save_image_grid(&path, &images.select(Axis(0), &first), &GridOptions { scale: 2, ..GridOptions::with_nrow(10) })?;
            wrote(&path);
        }
        table.push(seen);
        table.push(held);
        shipped = Some((seen_images, seen_captions, seen_labels));
    } else {
        println!("skipped (--eval-per-digit 0)");
    }

    cell(8, "CLIP guidance: the captioned model steered by a noised CLIP's gradient");
    let clip_n = if smoke { 2 } else { args.clip_per_digit };
    if clip_n > 0 {
        let clip = NoisedClip::load(noised_clip)?; // refuses a CLIP not trained on noised images
        let clip_tokenizer = TrainedBpe::load(tokenizer_path_for(noised_clip))?;
        for &scale in clip_scales {
            let guidance = Guidance::Clip { scale, clip: &clip, tokenizer: &clip_tokenizer };
            table.push(measure(guidance, "held-out", args.held_out_template, clip_n, c.seed + 3)?.0);
        }
    } else {
        println!("skipped (--clip-per-digit 0)");
    }

    cell(9, "The sweep as a table and two plots");
    let path = out.join("guidance.csv");
    let mut csv = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
    writeln!(csv, "guidance,scale,phrasing,images,sampler,accuracy,frechet,pairwise,seconds_per_image").map_err(|e| Error::io(&path, e))?;
    writeln!(csv, "real test images,,,{floor_n},,,{floor_fd:.4},{floor_pairwise:.4},").map_err(|e| Error::io(&path, e))?;
    for r in &table {
        writeln!(csv, "{},{},{},{},ddim-{steps},{:.4},{:.4},{:.4},{:.4}", r.guidance, r.scale, r.phrasing, r.images, r.accuracy, r.frechet, r.pairwise, r.seconds_per_image).map_err(|e| Error::io(&path, e))?;
    }
    wrote(&path);
    let curve = |name: &str, n: usize| -> Vec<&Row> { table.iter().filter(|r| r.guidance == name && r.images == 10 * n && r.phrasing == "held-out").collect() };
    let (cfg, clip) = (curve("classifier-free", curve_n), curve("noised CLIP", clip_n));
    if cfg.len() >= 2 {
        let against_scale = |f: &dyn Fn(&Row) -> f64| cfg.iter().map(|r| (r.scale as f64, f(r))).collect::<Vec<_>>();
        let path = out.join("guidance.png");
        plot_lines(
            &path,
            "classifier-free guidance: accuracy, Fréchet / 100, pairwise distance",
            "guidance scale s",
            "value",
            &[
                Series::new("judge accuracy", against_scale(&|r| r.accuracy)),
                Series::new("Fréchet distance / 100", against_scale(&|r| r.frechet / 100.0)),
                Series::new("pairwise RMS distance", against_scale(&|r| r.pairwise)),
            ],
            false,
        )?;
        wrote(&path);
    }
    let tradeoff: Vec<Series> = [("classifier-free", &cfg), ("noised CLIP", &clip)]
        .iter()
        .filter(|(_, rows)| rows.len() >= 2)
        .map(|(name, rows)| Series::new(*name, rows.iter().map(|r| (r.pairwise, r.accuracy)).collect()))
        .collect();
    if !tradeoff.is_empty() {
        let path = out.join("tradeoff.png");
        plot_lines(&path, "fidelity against diversity, one point per guidance scale", "mean pairwise RMS distance within a prompt", "judge accuracy", &tradeoff, false)?;
        wrote(&path);
    }

    cell(10, "Write the samples");
    let (images, captions, labels) = match shipped {
        Some(set) => set,
        None => {
            let (captions, labels) = digit_prompts(0, 1);
            (eval.generate(&captions, Guidance::ClassifierFree(args.guidance), c.seed + 4)?.0, captions, labels)
        }
    };
    write_samples(&out, &images, &captions, Some(&labels))?;
    wrote(out.join("samples.npy"));
    Ok(())
}

/// The Shapes prompt sets of `dalle::eval::shapes_fidelity`: each of the 36 one-object
/// prompts `per_prompt` times (prompt-major: a prompt's samples are consecutive) and the first
/// `relations` two-object captions of the test split; a label is the prompt's index (36 + k
/// for the k-th relation caption).
fn shapes_prompt_sets(per_prompt: usize, relations: usize) -> dalle::Result<[(Vec<String>, Vec<usize>); 2]> {
    let single = single_object_prompts();
    let labels: Vec<usize> = (0..single.len() * per_prompt).map(|i| i / per_prompt).collect();
    let captions = labels.iter().map(|&p| single[p].clone()).collect();
    let related = if relations > 0 { relation_prompts(relations)? } else { Vec::new() };
    let related_labels = (0..related.len()).map(|k| single.len() + k).collect();
    Ok([(captions, labels), (related, related_labels)])
}

/// One row of the Shapes sweep: the judge's rates on both prompt sets.
struct ShapesRow {
    guidance: &'static str,
    scale: f32,
    single: ShapesFidelity,
    relations: Option<ShapesFidelity>,
    pairwise: f64,
    seconds_per_image: f64,
}

/// Cells 5 to 9 on Shapes: colour, shape, count and relation read back from the pixels by the
/// Shapes judge, under classifier-free guidance and CLIP guidance at several scales.
fn evaluate_shapes(args: &Args, eval: &Eval, scales: &[f32], clip_scales: &[f32], noised_clip: &Path) -> dalle::Result<()> {
    let c = &args.common;
    let (smoke, out, steps) = (c.smoke, eval.out, eval.steps);
    let (per_prompt, relations) = if smoke { (2, 4) } else { (args.shapes_per_prompt.max(2), args.shapes_relations) };
    let (scales, clip_scales) = if smoke { (&scales[..scales.len().min(2)], &clip_scales[..clip_scales.len().min(2)]) } else { (scales, clip_scales) }; // --smoke: seconds
    let [(mut single, mut single_labels), (related, related_labels)] = shapes_prompt_sets(per_prompt, relations)?;
    if smoke {
        single.truncate(6 * per_prompt); // the first 6 prompts
        single_labels.truncate(6 * per_prompt);
    }

    cell(5, "The same prompts and noise at every guidance scale");
    let single_shown: Vec<String> = single_object_prompts().into_iter().step_by(7).take(6).collect(); // sizes, colours and shapes mixed
    let shown: Vec<String> = single_shown.into_iter().chain(relation_prompts(6)?).collect();
    let mut rows = Vec::new();
    for &scale in scales {
        rows.push(eval.generate(&shown, Guidance::ClassifierFree(scale), c.seed + 2)?.0); // same x_T for every scale
    }
    let views: Vec<_> = rows.iter().map(|r| r.view()).collect();
    let grid = ndarray::concatenate(Axis(0), &views).map_err(|e| Error::Msg(e.to_string()))?;
    let path = out.join("scales.png");
    save_image_grid(&path, &grid, &GridOptions { scale: 3, ..GridOptions::with_nrow(shown.len()) })?;
    println!("rows: s = {scales:?}; columns: {shown:?}");
    wrote(&path);

    // ANCHOR: shapes_sweep
    cell(6, "Classifier-free guidance: what the Shapes judge reads back, scale by scale");
    let measure = |guidance: Guidance, seed: u64| -> dalle::Result<(ShapesRow, Array4<f32>, Array4<f32>)> {
        let (images, secs) = eval.generate(&single, guidance, seed)?; // (36 · per_prompt, 3, 32, 32)
        let single_fidelity = ShapesFidelity::measure(&images, &single)?; // colour, shape, size, count
        let pairwise = mean_pairwise_distance(&images, per_prompt)?; // within each prompt's samples
        let (related_images, relations) = if related.is_empty() {
            (Array4::zeros((0, 3, 32, 32)), None)
        } else {
            let (images, _) = eval.generate(&related, guidance, seed + 1)?;
            let fidelity = ShapesFidelity::measure(&images, &related)?; // both objects, and where they are
            (images, Some(fidelity))
        };
        let (name, scale) = (guidance.name(), guidance.scale());
        println!("{name} s = {scale}: one object: {}", single_fidelity.summary());
        if let Some(r) = &relations {
            println!("{name} s = {scale}: two objects in relation: {}", r.summary());
        }
        println!("{name} s = {scale}: pairwise distance within a prompt {pairwise:.4} ({secs:.3} s per image)");
        Ok((ShapesRow { guidance: name, scale, single: single_fidelity, relations, pairwise, seconds_per_image: secs }, images, related_images))
    };
    // ANCHOR_END: shapes_sweep
    let save_grids = |name: &str, images: &Array4<f32>, related_images: &Array4<f32>| -> dalle::Result<()> {
        // the first two samples of every one-object prompt, 12 prompts per row
        let order: Vec<usize> = (0..2).flat_map(|k| (0..single.len() / per_prompt).map(move |p| p * per_prompt + k)).collect();
        let path = out.join(format!("grid_{name}_single.png"));
        save_image_grid(&path, &images.select(Axis(0), &order), &GridOptions { scale: 3, ..GridOptions::with_nrow(12) })?;
        wrote(&path);
        if related_images.len_of(Axis(0)) > 0 {
            let first: Vec<usize> = (0..related_images.len_of(Axis(0)).min(24)).collect();
            let path = out.join(format!("grid_{name}_relations.png"));
            save_image_grid(&path, &related_images.select(Axis(0), &first), &GridOptions { scale: 3, ..GridOptions::with_nrow(8) })?;
            wrote(&path);
        }
        Ok(())
    };
    let path = out.join("grid_relations.txt");
    let listing: String = related.iter().take(24).enumerate().map(|(i, p)| format!("row {} column {}: {p}\n", i / 8, i % 8)).collect();
    std::fs::write(&path, listing).map_err(|e| Error::io(&path, e))?;
    wrote(&path);
    let mut table = Vec::new();
    let mut shipped = None;
    for &scale in scales.iter().chain(std::iter::once(&args.guidance).filter(|s| !scales.contains(s))) {
        let (row, images, related_images) = measure(Guidance::ClassifierFree(scale), c.seed + 3)?; // the same noise at every scale
        if scale == args.guidance {
            save_grids("classifier-free", &images, &related_images)?;
            shipped = Some((images, related_images));
        }
        table.push(row);
    }

    cell(7, "CLIP guidance: the captioned model steered by a noised CLIP's gradient");
    if args.clip_per_digit > 0 {
        let clip = NoisedClip::load(noised_clip)?; // refuses a CLIP not trained on noised images
        let clip_tokenizer = TrainedBpe::load(tokenizer_path_for(noised_clip))?;
        let strongest = clip_scales.iter().copied().fold(0.0, f32::max); // its grids are saved
        for &scale in clip_scales {
            let (row, images, related_images) = measure(Guidance::Clip { scale, clip: &clip, tokenizer: &clip_tokenizer }, c.seed + 3)?;
            if scale == strongest {
                save_grids("clip", &images, &related_images)?;
            }
            table.push(row);
        }
    } else {
        println!("skipped (--clip-per-digit 0)");
    }

    cell(8, "The sweep as a table and a plot");
    let path = out.join("guidance.csv");
    let mut csv = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
    let csv_err = |e| Error::io(&path, e);
    writeln!(csv, "guidance,scale,sampler,single_images,count,colour,shape,size_colour_shape,all,relation_images,relation_count,relation,relation_all,pairwise,seconds_per_image").map_err(csv_err)?;
    for r in &table {
        let f = &r.single;
        let (n, count, relation, all) = r.relations.map_or((0, f64::NAN, f64::NAN, f64::NAN), |g| (g.images, g.count, g.relation.unwrap_or(f64::NAN), g.all));
        writeln!(
            csv,
            "{},{},ddim-{steps},{},{:.4},{:.4},{:.4},{:.4},{:.4},{n},{count:.4},{relation:.4},{all:.4},{:.4},{:.4}",
            r.guidance, r.scale, f.images, f.count, f.colour, f.shape, f.phrase, f.all, r.pairwise, r.seconds_per_image
        )
        .map_err(csv_err)?;
    }
    wrote(&path);
    let cfg: Vec<&ShapesRow> = table.iter().filter(|r| r.guidance == "classifier-free").collect();
    if cfg.len() >= 2 {
        let against_scale = |f: &dyn Fn(&ShapesRow) -> f64| cfg.iter().map(|r| (r.scale as f64, f(r))).collect::<Vec<_>>();
        let path = out.join("guidance.png");
        plot_lines(
            &path,
            "classifier-free guidance on Shapes: judge rates and pairwise distance",
            "guidance scale s",
            "value",
            &[
                Series::new("colour (one object)", against_scale(&|r| r.single.colour)),
                Series::new("shape (one object)", against_scale(&|r| r.single.shape)),
                Series::new("size+colour+shape (one object)", against_scale(&|r| r.single.phrase)),
                Series::new("relation (two objects)", against_scale(&|r| r.relations.and_then(|g| g.relation).unwrap_or(f64::NAN))),
                Series::new("pairwise RMS distance", against_scale(&|r| r.pairwise)),
            ],
            false,
        )?;
        wrote(&path);
    }

    cell(9, "Write the samples");
    let (images, related_images) = match shipped {
        Some(set) => set,
        None => unreachable!("--guidance is always measured"),
    };
    let views = [images.view(), related_images.view()];
    let all = ndarray::concatenate(Axis(0), &views).map_err(|e| Error::Msg(e.to_string()))?;
    let captions: Vec<String> = single.iter().chain(&related).cloned().collect();
    let labels: Vec<usize> = single_labels.iter().chain(&related_labels).copied().collect();
    write_samples(out, &all, &captions, Some(&labels))?;
    println!("samples at classifier-free s = {}: labels are prompt indices (0..36 one object, 36.. relations)", args.guidance);
    wrote(out.join("samples.npy"));
    Ok(())
}
