//! Chapter 10: unCLIP's prior, from a caption to a CLIP image embedding, two ways.
//!
//! ```text
//! cargo run --release --example 10_unclip_prior                        # train both priors (--minutes 25)
//! cargo run --release --example 10_unclip_prior -- --weights weights/unclip_prior_mnist.safetensors   # evaluate only
//! cargo run --release --example 10_unclip_prior -- --resume runs/10_unclip_prior/checkpoint.safetensors
//! cargo run --release --example 10_unclip_prior -- --smoke
//! cargo run --release --example 10_unclip_prior -- --dataset shapes --no-ar --batch-size 128 --minutes 18
//! cargo run --release --example 10_unclip_prior -- --dataset shapes --weights weights/unclip_prior_shapes.safetensors
//! ```
//!
//! `--dataset shapes` trains on each Shapes image's own caption over the Shapes CLIP
//! (`weights/clip_shapes.*`) and measures on the test split's captions, top-1 over the 36
//! one-object phrases.
//!
//! Leaves in `runs/10_unclip_prior/`: `pca.png` (the variance the leading components
//! carry), `loss.png`, `eval.csv` (cosine similarity to the true image embedding and
//! zero-shot top-1 of each prior and of the baseline, on seen and held-out phrasings,
//! and the spread: how varied the embeddings of one digit are),
//! `cost.csv` (parameters, training seconds per step, sampling seconds per embedding),
//! `scatter_true.png` / `scatter_diffusion.png` / `scatter_ar.png` (test embeddings on
//! the first two principal components, by digit), `nearest.png` (for each generated
//! embedding, the training image whose CLIP embedding is closest: one row per digit),
//! `embeddings.npy` (the generated embeddings), `samples.npy` + `prompts.txt` +
//! `labels.txt` (those nearest images, for the judge), `checkpoint.safetensors` and
//! `unclip_prior.safetensors` (both priors, EMA weights).

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use dalle::data::batch::BatchSampler;
use dalle::data::captions::{class_caption, num_templates};
use dalle::data::shapes::Colour;
use dalle::data::{self, DatasetName, ImageDataset, Split};
use dalle::eval::shapes_fidelity::{single_object_prompts, ShapesFidelity};
use dalle::eval::DigitJudge;
use dalle::io::{plot_lines, plot_scatter, save_image_grid, write_npy, write_samples, GridOptions, Series};
use dalle::models::clip::zero_shot::predict;
use dalle::models::dalle::sample::SamplingConfig;
use dalle::models::dalle::sequence::encode_captions;
use dalle::models::diffusion::diffusion_loss;
use dalle::models::prior::clip_features::normalize_rows;
use dalle::models::prior::unclip_prior::save as save_priors;
use dalle::models::prior::{
    embed_scale, round_trip, row_cosines, sample_best_of, ArPrior, CaptionEncoding, DiffusionPrior, DiffusionPriorConfig, FrozenClip, Pca,
    PriorSampling, Quantizer, UnclipPrior,
};
use dalle::models::unclip::UnclipSetup;
use dalle::nn::{visit_child, Module, TransformerConfig};
use dalle::optim::{clip_grad_norm, Adam, Ema, Optimizer};
use dalle::train::{cell, check_finite, read_metrics, resume_from, save_run, series, wrote, CommonArgs, MetricsLog, Progress, RunState, TimeBudget};
use dalle::{Error, Rng, Tensor};
use ndarray::{Array2, Array4, Axis};

/// Train unCLIP's diffusion and autoregressive priors on captioned MNIST or Shapes and compare them.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Stop training after this many minutes even if steps remain (0: no limit).
    #[arg(long, default_value_t = 25.0)]
    minutes: f64,
    /// The frozen CLIP (chapter 03's toy model; its config and tokenizer sit beside it)
    /// [default: weights/clip_{mnist,shapes}.safetensors].
    #[arg(long)]
    clip: Option<PathBuf>,
    /// Share of training rows whose text conditioning is dropped (classifier-free guidance).
    #[arg(long, default_value_t = 0.1)]
    p_uncond: f32,
    /// Guidance scales evaluated for the diffusion prior, comma-separated (1: no guidance).
    #[arg(long, default_value = "1,2,4")]
    scales: String,
    /// Respaced timesteps of the diffusion prior's sampler (the paper: 64).
    #[arg(long, default_value_t = 64)]
    sample_steps: usize,
    /// Keep the fewest principal components that carry this share of the variance.
    #[arg(long, default_value_t = 0.99)]
    pca_variance: f64,
    /// Buckets per principal component (equal mass).
    #[arg(long, default_value_t = 32)]
    buckets: usize,
    /// Train only the diffusion prior (the autoregressive one costs 1.7 times its step on Shapes).
    #[arg(long)]
    no_ar: bool,
    /// Held-out test images evaluated (each under a seen and an unseen phrasing).
    #[arg(long, default_value_t = 1000)]
    eval_images: usize,
}

/// MNIST's caption template held out of training: "an image of a handwritten {digit}".
const HELD_OUT_TEMPLATE: usize = 4;

fn main() -> dalle::Result<()> {
    dalle::backend::on_worker(notebook)
}

/// Both priors as one module (`diffusion.*`, `ar.*`), trained side by side by one Adam
/// (the diffusion prior alone under `--no-ar`).
struct Priors<'a> {
    diffusion: &'a DiffusionPrior,
    ar: Option<&'a ArPrior>,
}

impl Module for Priors<'_> {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_child("diffusion", self.diffusion, f);
        if let Some(ar) = self.ar {
            visit_child("ar", &ar.transformer, f);
        }
    }
}

/// Every caption the run uses, encoded once, and for each training row which one it has.
struct CaptionTable {
    encoded: CaptionEncoding,
    ar_text: Vec<usize>,
    text_len: usize,
}

impl CaptionTable {
    fn new(clip: &FrozenClip, captions: &[String]) -> dalle::Result<Self> {
        let text_len = clip.context_length();
        Ok(CaptionTable { ar_text: encode_captions(clip.tokenizer.as_ref(), captions, text_len, false)?, encoded: clip.encode_captions(captions)?, text_len })
    }
    fn ar_rows(&self, ids: &[usize]) -> Vec<usize> {
        ids.iter().flat_map(|&i| self.ar_text[i * self.text_len..(i + 1) * self.text_len].iter().copied()).collect()
    }
}

/// The evaluation rows of one phrasing: which caption, which image embedding, and the
/// class a caption names when it names one of the data set's classes (MNIST: its digit;
/// Shapes: one of the 36 one-object phrases) for zero-shot top-1.
struct EvalSet {
    name: &'static str,
    caption_ids: Vec<usize>,
    image_embeds: Array2<f32>,
    labels: Vec<Option<usize>>,
}

/// The captions of one data set: the table, each training row's caption, the evaluation
/// sets, and the classes top-1 is measured over.
struct Captioning {
    table: CaptionTable,
    train_caption: Vec<usize>,
    eval_sets: Vec<EvalSet>,
    /// One caption per class (`"a handwritten 3"`, `"a small red circle"`).
    class_prompts: Vec<String>,
    /// The class of each training row, where its caption names one.
    train_classes: Vec<Option<usize>>,
    /// Scatter plots colour points by group (MNIST: digit; Shapes: colour).
    group_names: Vec<String>,
}

impl Captioning {
    /// MNIST: every `(digit, template)` caption; training rows take templates 0..3 at random,
    /// and the test images are evaluated under a seen and the held-out phrasing.
    fn mnist(clip: &FrozenClip, train: &ImageDataset, test_labels: &[usize], test_z: Array2<f32>, seed: u64) -> dalle::Result<Self> {
        let classes = train.classes.len();
        let id = |label: usize, template: usize| template * classes + label;
        let captions: Vec<String> = (0..classes * num_templates(DatasetName::Mnist)).map(|i| class_caption(DatasetName::Mnist, i % classes, i / classes)).collect();
        let mut rng = Rng::new(seed);
        let train_caption = train.labels.iter().map(|&y| id(y, rng.below(HELD_OUT_TEMPLATE))).collect();
        let labels: Vec<Option<usize>> = test_labels.iter().map(|&y| Some(y)).collect();
        let seen = EvalSet { name: "seen phrasing", caption_ids: test_labels.iter().map(|&y| id(y, rng.below(HELD_OUT_TEMPLATE))).collect(), image_embeds: test_z.clone(), labels: labels.clone() };
        let unseen = EvalSet { name: "held-out phrasing", caption_ids: test_labels.iter().map(|&y| id(y, HELD_OUT_TEMPLATE)).collect(), image_embeds: test_z, labels };
        for (i, caption) in captions.iter().enumerate().filter(|(i, _)| i % classes == 7) {
            println!("template {}: {caption:?}{}", i / classes, if i / classes == HELD_OUT_TEMPLATE { "  (held out of training)" } else { "" });
        }
        Ok(Captioning {
            table: CaptionTable::new(clip, &captions)?,
            train_caption,
            eval_sets: vec![seen, unseen],
            class_prompts: (0..classes).map(|y| captions[id(y, 0)].clone()).collect(),
            train_classes: train.labels.iter().map(|&y| Some(y)).collect(),
            group_names: (0..classes).map(|d| d.to_string()).collect(),
        })
    }

    /// Shapes: each image's own caption; the test images (another seed, so mostly captions no
    /// training image had) are one evaluation set, top-1 over the 36 one-object phrases.
    fn shapes(clip: &FrozenClip, train: &ImageDataset, test_captions: &[String], test_z: Array2<f32>) -> dalle::Result<Self> {
        let train_captions = train.captions.as_ref().ok_or_else(|| Error::Config("shapes: the training set has no captions".into()))?;
        let mut distinct: Vec<String> = Vec::new();
        let mut id: HashMap<String, usize> = HashMap::new();
        let mut id_of = |c: &String| {
            *id.entry(c.clone()).or_insert_with(|| {
                distinct.push(c.clone());
                distinct.len() - 1
            })
        };
        let train_caption: Vec<usize> = train_captions.iter().map(&mut id_of).collect();
        let caption_ids: Vec<usize> = test_captions.iter().map(&mut id_of).collect();
        let class_prompts = single_object_prompts();
        let class_of = |c: &String| class_prompts.iter().position(|p| p == c);
        let unseen = test_captions.iter().filter(|c| !train_captions.contains(c)).count();
        println!("{} distinct captions; {unseen} of {} test captions never caption a training image", distinct.len(), test_captions.len());
        Ok(Captioning {
            table: CaptionTable::new(clip, &distinct)?,
            train_caption,
            eval_sets: vec![EvalSet { name: "test captions", caption_ids, image_embeds: test_z, labels: test_captions.iter().map(class_of).collect() }],
            train_classes: train_captions.iter().map(class_of).collect(),
            group_names: Colour::ALL.iter().map(|c| c.name().to_string()).collect(),
            class_prompts,
        })
    }

    /// The scatter group of a class: MNIST's digit, the colour of a Shapes phrase
    /// (`single_object_prompts` runs size, colour, shape: index = 18·size + 3·colour + shape).
    fn group(&self, class: usize) -> usize {
        if self.group_names.len() == self.class_prompts.len() { class } else { (class / 3) % self.group_names.len() }
    }
}

fn notebook() -> dalle::Result<()> {
    let args = Args::parse();
    let c = &args.common;
    // flags that cannot work are refused before the data is loaded
    let scales: Vec<f32> = args.scales.split(',').map(|s| s.trim().parse::<f32>().ok().filter(|v| v.is_finite() && *v >= 0.0).ok_or_else(|| Error::Config(format!("--scales: `{s}` is not a finite number >= 0")))).collect::<dalle::Result<_>>()?;
    if !((0.0..1.0).contains(&args.p_uncond) && args.pca_variance > 0.0 && args.pca_variance <= 1.0) {
        return Err(Error::Config(format!("--p-uncond {} must be in [0, 1) and --pca-variance {} in (0, 1]", args.p_uncond, args.pca_variance)));
    }
    let out = c.start("10_unclip_prior", true, true)?;
    let dataset = c.dataset_or(DatasetName::Mnist);
    let setup = UnclipSetup::for_dataset(dataset)?;
    let smoke = c.smoke;

    // ANCHOR: data
    cell(1, "The frozen CLIP: caption token encodings, z_t and z_i");
    let clip = FrozenClip::load_toy(args.clip.as_ref().unwrap_or(&setup.clip))?;
    let e = clip.embed_dim();
    let train = data::load(dataset, &c.data_dir(), Split::Train, c.limit_or(512))?;
    let test = data::load(dataset, &c.data_dir(), Split::Test, c.limit_or(100))?;
    let started = Instant::now();
    let train_z = clip.image_embeddings(&train.images)?; // (N, E), unit rows
    let n_eval = args.eval_images.min(test.len());
    let test_z = clip.image_embeddings(&test.images.slice(ndarray::s![..n_eval, .., .., ..]))?; // (N_eval, E)
    let captioning = match &test.captions {
        Some(captions) => Captioning::shapes(&clip, &train, &captions[..n_eval], test_z)?,
        None => Captioning::mnist(&clip, &train, &test.labels[..n_eval], test_z, c.seed)?,
    };
    let (table, train_caption) = (&captioning.table, &captioning.train_caption);
    println!("{} train and {n_eval} test images embedded in {:.1} s; E = {e}, caption tokens {:?}", train.len(), started.elapsed().as_secs_f64(), table.encoded.tokens.dim());
    // ANCHOR_END: data

    cell(2, "PCA of z_i and the quantized code of the autoregressive prior");
    let full = Pca::fit(&train_z, e)?;
    let k = full.components_for(args.pca_variance);
    let mut explained = Vec::new();
    for j in 1..=e {
        explained.push((j as f64, full.explained(j)));
    }
    let path = out.join("pca.png");
    plot_lines(&path, "share of the variance of z_i in the leading principal components", "components kept", "variance explained", &[Series::new("PCA", explained)], false)?;
    wrote(&path);
    let fitted = match &c.weights {
        Some(path) => Some(UnclipPrior::load(path, FrozenClip::load_toy(args.clip.as_ref().unwrap_or(&setup.clip))?)?),
        None => None,
    };
    let (pca, quantizer) = match fitted.as_ref().and_then(|f| f.ar.as_ref()) {
        Some(ar) => (ar.pca.clone(), ar.quantizer.clone()), // the shipped code, so that evaluation uses what the AR prior learned
        None => {
            let pca = Pca::fit(&train_z, k)?;
            let quantizer = Quantizer::fit(&pca.project(&train_z)?, args.buckets.min(train.len()))?;
            (pca, quantizer)
        }
    };
    let k = pca.num_components();
    println!("kept k = {k} of {e} components: {:.2}% of the variance (asked >= {:.0}%); {} buckets each", 100.0 * full.explained(k), 100.0 * args.pca_variance, quantizer.buckets());
    for (name, set) in [("train", &train_z), ("test", &captioning.eval_sets[0].image_embeds)] {
        let back = normalize_rows(&round_trip(&pca, &quantizer, set)?);
        let pca_only = normalize_rows(&pca.reconstruct(&pca.project(set)?)?);
        println!("round trip on {name}: mean cos(z, PCA only) = {:.4}, mean cos(z, PCA + buckets) = {:.4}", row_cosines(set, &pca_only)?.0, row_cosines(set, &back)?.0);
    }

    cell(3, "Build the priors");
    let config = DiffusionPriorConfig::mnist(e, clip.text_width(), clip.context_length()); // the same shape for Shapes, over its 24-token captions
    let config = if smoke { DiffusionPriorConfig { transformer: TransformerConfig::new(16, 2, 1), ..config } } else { config };
    let ar_transformer = if smoke { TransformerConfig::new(16, 2, 1) } else { TransformerConfig::new(64, 4, 4) };
    let (prior, ar) = match fitted {
        Some(f) => (f.prior, f.ar),
        None => {
            let ar = if args.no_ar { None } else { Some(ArPrior::new(clip.tokenizer.vocab_size(), clip.context_length(), pca, quantizer, ar_transformer, &mut Rng::new(c.seed + 1))?) };
            (DiffusionPrior::new(config, &mut Rng::new(c.seed))?, ar)
        }
    };
    let diffusion = prior.config.diffusion()?;
    println!("diffusion prior: {:?}, {} parameters; sequence of {} positions", prior.config.transformer, prior.num_parameters(), prior.config.seq_len());
    match &ar {
        Some(ar) => println!("autoregressive prior: {:?}, {} parameters; {} caption ids then {k} codes", ar.transformer.config.transformer, ar.transformer.num_parameters(), ar.transformer.config.text_len),
        None => println!("no autoregressive prior (--no-ar, or the --weights file holds none)"),
    }
    let priors = Priors { diffusion: &prior, ar: ar.as_ref() };

    // ANCHOR: train
    cell(4, "Train both priors on the same rows: ‖z_i - x̂_0‖² and CE(codes)");
    let params = priors.named_parameters();
    let d_params = prior.named_parameters();
    let steps = c.steps_or(20_000, 3);
    let batch_size = c.batch_size_or(256, 8);
    let mut opt = Adam::new(params.clone(), c.lr_or(1e-3) as f32);
    let mut ema = Ema::new(&d_params, 0.999); // the diffusion prior's weights, averaged
    let mut sampler = BatchSampler::new(train.len(), batch_size, c.seed);
    let resumed = if c.weights.is_some() { None } else { resume_from(c, &priors, &mut opt, steps)? };
    if let Some(r) = &resumed {
        r.restore_ema(&ema)?;
        r.restore_sampler("train", &mut sampler)?;
    }
    let start = if c.weights.is_some() { steps } else { resumed.as_ref().map_or(0, |r| r.step) };
    let mut log = MetricsLog::create_or_resume(&out, resumed.as_ref().map(|r| r.step))?;
    let progress = Progress::new("priors", steps);
    let budget = TimeBudget::new((args.minutes * 60.0) as u64);
    let scale = embed_scale(e);
    let (mut d_secs, mut ar_secs, mut trained) = (0.0f64, 0.0f64, start);
    let base_lr = opt.lr();
    for step in start..steps {
        let rows = sampler.next_batch();
        let mut rng = Rng::new(c.seed.wrapping_mul(1_000_003).wrapping_add(step as u64)); // per step: resumable
        let ids: Vec<usize> = rows.iter().map(|&r| train_caption[r]).collect();
        let z = train_z.select(Axis(0), &rows); // (B, E), unit rows
        let lap = Instant::now();
        let captions = table.encoded.select(&ids);
        let x0 = Tensor::new(z.mapv(|v| v * scale).into_dyn()); // √E z_i, (B, E)
        let t: Vec<usize> = rows.iter().map(|_| rng.below(prior.config.num_train_steps)).collect(); // t ~ U{0..T-1}
        let noise = Tensor::randn(&x0.shape(), &mut rng); // ε
        let keep: Vec<bool> = rows.iter().map(|_| rng.uniform() >= args.p_uncond).collect(); // drop the caption 10% of the time
        let tokens = Tensor::new(captions.tokens.clone().into_dyn());
        let text_embeds = Tensor::new(captions.text_embeds.clone().into_dyn());
        let d_loss = diffusion_loss(&diffusion.schedule, diffusion.prediction, |x_t, t| prior.forward(&tokens, &text_embeds, x_t, t, &keep), &x0, &t, &noise)?;
        opt.zero_grad();
        d_loss.backward();
        d_secs += lap.elapsed().as_secs_f64();
        let lap = Instant::now();
        let ar_loss = match &ar {
            Some(ar) => {
                let loss = ar.loss(&table.ar_rows(&ids), &z, true)?.loss;
                loss.backward();
                loss.item()
            }
            None => 0.0,
        };
        ar_secs += lap.elapsed().as_secs_f64();
        let norm = clip_grad_norm(&opt_params(&params), 1.0);
        check_finite(step + 1, d_loss.item() + ar_loss, Some(norm), &params)?;
        opt.set_lr(base_lr * ((step + 1) as f32 / 200.0).min(1.0)); // linear warm-up over 200 steps
        opt.step();
        ema.update_at(step, &d_params);
        trained = step + 1;
        if trained % 500 == 0 || trained == steps {
            save_run(&out.join("checkpoint.safetensors"), &priors, &opt, &RunState::new(trained).ema(&ema).sampler("train", &sampler))?;
        }
        let spent = budget.record_step(trained, &[("diffusion_mse", d_loss.item() as f64), ("ar_ce", ar_loss as f64)], &mut log, &progress)?;
        if c.stops_after(trained, steps) {
            save_run(&out.join("checkpoint.safetensors"), &priors, &opt, &RunState::new(trained).ema(&ema).sampler("train", &sampler))?;
            println!("stopped after step {trained}; continue with --resume {}", out.join("checkpoint.safetensors").display());
            return Ok(());
        }
        if spent {
            break;
        }
    }
    progress.finish();
    // ANCHOR_END: train
    let mut cost: Vec<(&str, usize, f64)> = vec![("diffusion", prior.num_parameters(), f64::NAN)];
    cost.extend(ar.as_ref().map(|ar| ("autoregressive", ar.transformer.num_parameters(), f64::NAN)));
    if trained > start {
        let n = (trained - start) as f64;
        let ar_cost = if ar.is_some() { format!(", AR prior {:.3} s/step", ar_secs / n) } else { String::new() };
        println!("trained steps {start}..{trained} of {batch_size} rows: diffusion prior {:.3} s/step{ar_cost} (forward + backward; load: {})", d_secs / n, dalle::train::load_average());
        cost[0].2 = d_secs / n;
        if let Some(row) = cost.get_mut(1) {
            row.2 = ar_secs / n;
        }
        save_run(&out.join("checkpoint.safetensors"), &priors, &opt, &RunState::new(trained).ema(&ema).sampler("train", &sampler))?;
        let records = read_metrics(log.path())?;
        let path = out.join("loss.png");
        plot_lines(&path, "training losses: diffusion prior MSE on √E z_i, AR prior CE over codes", "step", "loss", &[series(&records, "diffusion_mse"), series(&records, "ar_ce")], true)?;
        wrote(&path);
    }
    ema.copy_to(&d_params); // from here on, the diffusion prior's EMA weights
    let shipped = out.join("unclip_prior.safetensors");
    save_priors(&shipped, &prior, ar.as_ref(), &HashMap::from([("steps".to_string(), trained.to_string()), ("dataset".to_string(), dataset.to_string())]))?;
    wrote(&shipped);

    // ANCHOR: evaluate
    cell(5, "Held-out captions: cos(generated z_i, true z_i) and zero-shot top-1");
    let classes = captioning.class_prompts.len();
    let class_embeds = clip.text_embeddings(&captioning.class_prompts)?; // "a handwritten {d}" or "a {size} {colour} {shape}", (K, E)
    let class_means = normalize_rows(&Array2::from_shape_fn((classes, e), |(y, j)| {
        let rows: Vec<usize> = (0..train.len()).filter(|&r| captioning.train_classes[r] == Some(y)).collect();
        rows.iter().map(|&r| train_z[[r, j]]).sum::<f32>() / rows.len().max(1) as f32
    })); // the mean training z_i of each class: the best single guess per caption
    let sample_steps = if smoke { 4 } else { args.sample_steps };
    let mut csv = String::from("phrasing,method,cosine,top1,spread,seconds_per_embedding\n");
    let mut generated: HashMap<&str, Array2<f32>> = HashMap::new();
    for set in &captioning.eval_sets {
        let captions = table.encoded.select(&set.caption_ids);
        let classed: Vec<usize> = (0..set.labels.len()).filter(|&i| set.labels[i].is_some()).collect(); // rows whose caption names a class
        let labels: Vec<usize> = classed.iter().filter_map(|&i| set.labels[i]).collect();
        let mut report = |method: &str, z: &Array2<f32>, secs: f64| -> dalle::Result<()> {
            let oracle = method.contains("oracle"); // a class mean exists only for the rows whose caption names a class
            let rows: Vec<usize> = if oracle { classed.clone() } else { (0..z.nrows()).collect() };
            let (cos, _) = row_cosines(&z.select(Axis(0), &rows), &set.image_embeds.select(Axis(0), &rows))?;
            let z_classed = z.select(Axis(0), &classed);
            let top1 = dalle::models::clip::zero_shot::accuracy(&predict(&z_classed.dot(&class_embeds.t())), &labels);
            let spread = spread(&z_classed, &labels, classes);
            println!("{:<18} {method:<28} cos {cos:.4}  top-1 {:>5.1}% of {}  spread {spread:.4}  {secs:.4} s/embedding", set.name, 100.0 * top1, labels.len());
            csv.push_str(&format!("{},{method},{cos:.4},{top1:.4},{spread:.4},{secs:.5}\n", set.name));
            Ok(())
        };
        report("true z_i (CLIP itself)", &set.image_embeds, 0.0)?;
        report("baseline: z_t", &captions.text_embeds, 0.0)?;
        let oracle: Vec<usize> = set.labels.iter().map(|y| y.unwrap_or(0)).collect();
        report("class mean z_i (oracle)", &class_means.select(Axis(0), &oracle), 0.0)?; // top-1 and spread read only the classed rows
        for &s in &scales {
            let lap = Instant::now();
            let z = sample_best_of(&prior, &diffusion, &captions, &PriorSampling { steps: sample_steps, guidance: s, candidates: 1 }, &mut Rng::new(c.seed + 2))?;
            report(&format!("diffusion prior s={s}"), &z, lap.elapsed().as_secs_f64() / z.nrows() as f64)?;
            if s == scales[0] {
                generated.insert(set.name, z);
            }
        }
        let lap = Instant::now();
        let z = sample_best_of(&prior, &diffusion, &captions, &PriorSampling { steps: sample_steps, guidance: scales[0], candidates: 2 }, &mut Rng::new(c.seed + 2))?;
        report(&format!("diffusion prior s={} best of 2", scales[0]), &z, lap.elapsed().as_secs_f64() / z.nrows() as f64)?;
        if let Some(ar) = &ar {
            let lap = Instant::now();
            let z_ar = ar.sample(&table.ar_rows(&set.caption_ids), &SamplingConfig::default(), &mut Rng::new(c.seed + 3))?;
            report("autoregressive prior T=1", &z_ar, lap.elapsed().as_secs_f64() / z_ar.nrows() as f64)?;
            if set.name == captioning.eval_sets[0].name {
                generated.insert("ar", z_ar);
            }
        }
    }
    // ANCHOR_END: evaluate
    if dataset == DatasetName::Shapes {
        // Does the embedding carry the relation? "A above B" against the flipped "A below B".
        let set = &captioning.eval_sets[0];
        let related: Vec<(usize, String)> = set.caption_ids.iter().enumerate().filter_map(|(i, &id)| flip_relation(&table.encoded.captions[id]).map(|f| (i, f))).collect();
        if !related.is_empty() {
            let rows: Vec<usize> = related.iter().map(|(i, _)| *i).collect();
            let true_z = set.image_embeds.select(Axis(0), &rows); // (R, E)
            let captions = table.encoded.select(&rows.iter().map(|&i| set.caption_ids[i]).collect::<Vec<_>>());
            let flipped = clip.encode_captions(&related.iter().map(|(_, f)| f.clone()).collect::<Vec<_>>())?;
            let closer = |a: &Array2<f32>, b: &Array2<f32>| (0..a.nrows()).filter(|&r| true_z.row(r).dot(&a.row(r)) > true_z.row(r).dot(&b.row(r))).count() as f64 / a.nrows() as f64;
            let sampling = PriorSampling { steps: sample_steps, guidance: scales[0], candidates: 1 };
            let z_right = sample_best_of(&prior, &diffusion, &captions, &sampling, &mut Rng::new(c.seed + 5))?;
            let z_flipped = sample_best_of(&prior, &diffusion, &flipped, &sampling, &mut Rng::new(c.seed + 5))?;
            println!(
                "relations, {} test captions \"A above B\" against the flipped \"A below B\": the image's z_i is closer to the right caption's z_t in {:.1}%, to the prior's embedding of the right caption in {:.1}% (chance: 50%)",
                rows.len(),
                100.0 * closer(&captions.text_embeds, &flipped.text_embeds),
                100.0 * closer(&z_right, &z_flipped)
            );
        }
    }
    let path = out.join("eval.csv");
    std::fs::write(&path, &csv).map_err(|err| Error::io(&path, err))?;
    wrote(&path);

    cell(6, "Cost: parameters, training and sampling time");
    let mut cost_csv = String::from("prior,parameters,train_seconds_per_step,network_evaluations_per_embedding\n");
    for (name, params, secs) in &cost {
        let nfe = if *name == "diffusion" { format!("{sample_steps} (x2 guided)") } else { format!("{k} positions (KV cache)") };
        let train = if secs.is_nan() { "not trained in this run".to_string() } else { format!("{secs:.3} s per training step of {batch_size}") };
        println!("{name:<15} {params:>8} parameters, {train}, {nfe}");
        cost_csv.push_str(&format!("{name},{params},{secs:.4},{nfe}\n"));
    }
    let path = out.join("cost.csv");
    std::fs::write(&path, &cost_csv).map_err(|err| Error::io(&path, err))?;
    wrote(&path);

    cell(7, "Where the generated embeddings lie: the first two principal components");
    let plane = Pca::fit(&train_z, 2)?;
    let first = &captioning.eval_sets[0];
    let shown: Vec<usize> = (0..first.labels.len()).filter(|&i| first.labels[i].is_some()).collect(); // captions that name a class
    let groups: Vec<usize> = shown.iter().filter_map(|&i| first.labels[i]).map(|y| captioning.group(y)).collect();
    let mut planes = vec![("true", &first.image_embeds), ("diffusion", &generated[first.name])];
    planes.extend(generated.get("ar").map(|z| ("ar", z)));
    for (name, z) in planes {
        let p = plane.project(&z.select(Axis(0), &shown))?;
        let points: Vec<(f64, f64)> = p.rows().into_iter().map(|r| (r[0] as f64, r[1] as f64)).collect();
        let path = out.join(format!("scatter_{name}.png"));
        plot_scatter(&path, &format!("{name} z_i of test captions on PC1, PC2"), &points, &groups, &captioning.group_names)?;
        wrote(&path);
    }

    cell(8, "The nearest training image to each generated embedding (8 per row)");
    let per_class = if smoke { 2 } else if dataset == DatasetName::Shapes { 4 } else { 8 };
    let prompts: Vec<String> = (0..classes * per_class).map(|i| captioning.class_prompts[i / per_class].clone()).collect();
    let labels: Vec<usize> = (0..classes * per_class).map(|i| i / per_class).collect();
    let captions = clip.encode_captions(&prompts)?;
    let z = sample_best_of(&prior, &diffusion, &captions, &PriorSampling { steps: sample_steps, guidance: scales[0], candidates: 1 }, &mut Rng::new(c.seed + 4))?;
    let nearest = predict(&z.dot(&train_z.t())); // argmax_n cos(z, z_i of training image n)
    let images: Array4<f32> = train.images.select(Axis(0), &nearest);
    let path = out.join("nearest.png");
    save_image_grid(&path, &images, &GridOptions { scale: 2, ..GridOptions::with_nrow(8) })?;
    wrote(&path);
    if dataset == DatasetName::Shapes {
        println!("Shapes judge on the nearest images: {}", ShapesFidelity::measure(&images, &prompts)?.summary());
    } else if let Ok(judge) = DigitJudge::pretrained() {
        println!("digit judge on the nearest images: {:.1}% show the prompted digit", 100.0 * judge.fidelity(&images, &labels)?);
    }
    write_npy(out.join("embeddings.npy"), &z)?;
    write_samples(&out, &images, &prompts, Some(&labels))?;
    wrote(out.join("samples.npy"));
    let mut readme = std::fs::File::create(out.join("samples_README.txt")).map_err(|err| Error::io(out.join("samples_README.txt"), err))?;
    writeln!(readme, "samples.npy: for each prompt, the training image whose CLIP embedding is closest to the prior's sample; embeddings.npy: the samples (unit rows, E = {e}).").map_err(|err| Error::io(out.join("samples_README.txt"), err))?;
    Ok(())
}

/// How varied the embeddings of one digit are: `1 - mean_n cos(z_n, mean of z_n's digit)`
/// (0 when every caption of a digit gets the same embedding; compare with the true z_i's).
fn spread(z: &Array2<f32>, labels: &[usize], classes: usize) -> f64 {
    let z = normalize_rows(z);
    let mut centres = Array2::<f32>::zeros((classes, z.ncols()));
    for (row, &y) in z.rows().into_iter().zip(labels) {
        let mut c = centres.row_mut(y);
        c += &row;
    }
    let centres = normalize_rows(&centres);
    let total: f64 = z.rows().into_iter().zip(labels).map(|(row, &y)| row.dot(&centres.row(y)) as f64).sum();
    1.0 - total / labels.len().max(1) as f64
}

/// The caption with its relation reversed ("above" <-> "below", "left of" <-> "right of"),
/// `None` for a caption without one.
fn flip_relation(caption: &str) -> Option<String> {
    [(" above ", " below "), (" below ", " above "), (" left of ", " right of "), (" right of ", " left of ")]
        .iter()
        .find(|(from, _)| caption.contains(from))
        .map(|(from, to)| caption.replacen(from, to, 1))
}

/// The parameters as the list [`clip_grad_norm`] takes.
fn opt_params(named: &[(String, Tensor)]) -> Vec<Tensor> {
    named.iter().map(|(_, t)| t.clone()).collect()
}

