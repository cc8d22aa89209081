//! Chapter 07: DALL-E 1 on captioned MNIST or Shapes: one transformer over caption and
//! image tokens, KV-cached sampling, CLIP reranking.
//!
//! ```text
//! cargo run --release --example 07_dalle
//! cargo run --release --example 07_dalle -- --dataset shapes
//! cargo run --release --example 07_dalle -- --dataset shapes --weights weights/dalle_shapes.safetensors
//! cargo run --release --example 07_dalle -- --weights weights/dalle_mnist.safetensors
//! cargo run --release --example 07_dalle -- --smoke
//! cargo run --release --example 07_dalle -- --weights weights/dalle_mnist.safetensors --prompt "the digit three"
//! cargo run --release --example 07_dalle -- --weights weights/dalle_mnist.safetensors --compare-masks 150 --batch-size 32
//! ```
//!
//! Leaves in `runs/07_dalle/`: `masks.png` (the attention masks), `curves.png`,
//! `samples.npy`, `prompts.txt`, `labels.txt` (the CLIP-best candidate of every
//! prompt; the label is the digit, or on Shapes the first named object's shape),
//! `reranked.png` (one prompt per digit, or ten Shapes prompts, its candidates sorted
//! by CLIP score), `first_samples.png`, `metrics.jsonl`, `checkpoint.safetensors` and `dalle.safetensors`;
//! with `--prompt`, `prompt.png`; with `--compare-masks`, `masks_loss.png` and one `masks_*.jsonl` per mask.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use dalle::data::batch::BatchSampler;
use dalle::data::captions::{class_caption, num_templates};
use dalle::data::shapes::ShapeKind;
use dalle::data::{self, DatasetName, ImageDataset, Split};
use dalle::eval::shapes::parse_caption;
use dalle::eval::shapes_fidelity::{relation_prompts, single_object_prompts};
use dalle::eval::{DigitJudge, ShapesFidelity};
use dalle::io::{checkpoint, plot_lines, save_image_grid, write_samples, GridOptions};
use dalle::models::clip::load::load_toy;
use dalle::models::dalle::masks::mask_picture;
use dalle::models::dalle::pipeline::{image_side, load_image_tokenizer, Candidates, DalleParts};
use dalle::models::dalle::sample::SamplingConfig;
use dalle::models::dalle::sequence::{decode_caption, encode_caption, encode_captions, join_sequences};
use dalle::models::dalle::{dalle_mask, Dalle, DalleConfig, ImageAttention, MaskPattern};
use dalle::models::image_tokenizer::ImageTokenizer;
use dalle::nn::{Module, TransformerConfig};
use dalle::optim::{Adam, Optimizer, WarmupCosine};
use dalle::tokenizer::TextTokenizer;
use dalle::train::{cell, check_finite, series, wrote, CommonArgs, MetricsLog, Progress, TimeBudget};
use dalle::{Error, Result, Rng};
use ndarray::{s, Array4, Axis};

/// Train DALL-E 1 on captioned MNIST or Shapes, sample with a KV cache, rerank with CLIP.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Stop training after this many seconds even if steps remain (0: no limit).
    #[arg(long, default_value_t = 1500)]
    time_limit: u64,
    /// Attention over the image part: full, row, column, convK (K odd) or paper.
    #[arg(long, default_value = "full")]
    masks: String,
    /// Transformer width.
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// Transformer blocks.
    #[arg(long, default_value_t = 4)]
    layers: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Image tokenizer weights, the VQ-VAE of chapter 05 (default: weights/vqvae_DATASET.safetensors).
    #[arg(long)]
    image_tokenizer: Option<PathBuf>,
    /// The toy CLIP of chapter 03; its BPE is also the caption tokenizer (default: weights/clip_DATASET.safetensors).
    #[arg(long)]
    clip: Option<PathBuf>,
    /// MNIST: prompts per digit for the fidelity measurement.
    #[arg(long)]
    per_digit: Option<usize>,
    /// Shapes: prompts per one-object phrase (36 phrases) for the attribute fidelity.
    #[arg(long)]
    per_phrase: Option<usize>,
    /// Shapes: two-object captions of the test split for the relation fidelity.
    #[arg(long)]
    relations: Option<usize>,
    /// Candidates per prompt for CLIP reranking.
    #[arg(long, default_value_t = 8)]
    candidates: usize,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Keep only the k most likely image tokens.
    #[arg(long)]
    top_k: Option<usize>,
    /// Nucleus sampling: keep the most likely tokens up to this probability, in (0, 1].
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Also draw candidates for this caption of your own and sort them by CLIP score (`prompt.png`).
    #[arg(long)]
    prompt: Option<String>,
    /// Cut a `--prompt` longer than the model's text length instead of refusing it.
    #[arg(long)]
    truncate: bool,
    /// Also train a fresh model for this many steps with each mask (full, row, column, conv3, paper) and compare losses (0: skip).
    #[arg(long, default_value_t = 0)]
    compare_masks: usize,
}

fn main() -> Result<()> {
    // Kernels split their work with rayon; see `on_worker` for why main runs on the pool.
    dalle::backend::on_worker(notebook)
}

/// The image tokens `(N · h · w)` of every image, encoded in batches.
fn tokenize_images(tokenizer: &dyn ImageTokenizer, data: &ImageDataset) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(data.len() * 49);
    for start in (0..data.len()).step_by(1000) {
        let batch = data.images.slice(s![start..(start + 1000).min(data.len()), .., .., ..]).to_owned();
        out.extend(tokenizer.encode(&batch)?.iter().copied());
    }
    Ok(out)
}

/// Everything one training run needs besides the model.
struct TrainData<'a> {
    image_tokens: &'a [usize],
    /// `caption_set[i]`: the set of captions image `i` draws from (MNIST: its label; Shapes: its own).
    caption_set: Vec<usize>,
    /// `captions[set][k]`: the encoded text of every caption (MNIST: a set per digit, one caption
    /// per template; Shapes: a set per image, its one caption).
    captions: Vec<Vec<Vec<usize>>>,
}

impl TrainData<'_> {
    /// The captions of `data`, encoded: the digit templates of its label on MNIST, each image's own on Shapes.
    fn new<'a>(dataset: DatasetName, data: &ImageDataset, image_tokens: &'a [usize], bpe: &dyn TextTokenizer, text_len: usize) -> Result<TrainData<'a>> {
        let (caption_set, captions) = match &data.captions {
            Some(own) => ((0..own.len()).collect(), own.iter().map(|c| Ok(vec![encode_caption(bpe, c, text_len, false)?])).collect::<Result<_>>()?),
            None => {
                let templates = |label| (0..num_templates(dataset)).map(|t| encode_caption(bpe, &class_caption(dataset, label, t), text_len, false)).collect();
                (data.labels.clone(), (0..10).map(templates).collect::<Result<_>>()?)
            }
        };
        Ok(TrainData { image_tokens, caption_set, captions })
    }

    fn len(&self) -> usize {
        self.caption_set.len()
    }

    /// One batch of whole sequences: each image's tokens after one of its captions, drawn by
    /// `rng` (on MNIST a fresh template every time the image comes back).
    fn batch(&self, indices: &[usize], image_len: usize, rng: &mut Rng) -> Result<Vec<usize>> {
        let text: Vec<usize> = indices
            .iter()
            .flat_map(|&i| {
                let set = &self.captions[self.caption_set[i]];
                set[rng.below(set.len())].clone()
            })
            .collect();
        let image: Vec<usize> = indices.iter().flat_map(|&i| self.image_tokens[i * image_len..(i + 1) * image_len].iter().copied()).collect();
        join_sequences(&text, &image, self.captions[0][0].len(), image_len)
    }
}

/// Mean test loss (weighted, text, image) over up to `limit` test sequences.
fn test_loss(model: &Dalle, data: &TrainData, limit: usize) -> Result<(f32, f32, f32)> {
    let n = data.len().min(limit);
    let mut rng = Rng::new(1234);
    let (mut sum, mut text, mut image, mut batches) = (0.0, 0.0, 0.0, 0.0);
    for start in (0..n).step_by(250) {
        let idx: Vec<usize> = (start..(start + 250).min(n)).collect();
        let ids = data.batch(&idx, model.config.image_len(), &mut rng)?;
        let l = dalle::tensor::no_grad(|| model.loss(&ids, idx.len(), false))?;
        sum += l.loss.item();
        text += l.text;
        image += l.image;
        batches += 1.0;
    }
    Ok((sum / batches, text / batches, image / batches))
}

/// Train `model` for `steps` (from `start`), logging to `log`; saves `checkpoint` every 200 steps.
#[allow(clippy::too_many_arguments)]
fn train(model: &Dalle, data: &TrainData, c: &CommonArgs, opt: &mut Adam, start: usize, steps: usize, budget: &TimeBudget, log: &mut MetricsLog, checkpoint_path: Option<&Path>) -> Result<usize> {
    let base_lr = c.lr_or(1e-3) as f32;
    let schedule = WarmupCosine { base_lr, min_lr: base_lr / 10.0, warmup: (steps / 20).max(1), total: steps };
    let mut sampler = BatchSampler::new(data.len(), c.batch_size_or(64, 8), c.seed);
    (0..start).for_each(|_| drop(sampler.next_batch())); // the same batch order as an unbroken run
    let progress = Progress::new("dalle", steps);
    let mut last = start;
    let params = model.named_parameters();
    // ANCHOR: train
    for step in start..steps {
        let mut caption_rng = Rng::new(c.seed.wrapping_mul(1_000_003).wrapping_add(step as u64)); // per step, so --resume draws the same
        let ids = data.batch(&sampler.next_batch(), model.config.image_len(), &mut caption_rng)?; // (B, L + N)
        let loss = model.loss(&ids, ids.len() / model.config.seq_len(), true)?;
        opt.set_lr(schedule.lr(step));
        opt.zero_grad();
        loss.loss.backward();
        check_finite(step, loss.loss.item(), None, &params)?; // a NaN loss stops the run before it reaches the weights
        opt.step();
        // ANCHOR_END: train
        last = step + 1;
        let values = [("loss", loss.loss.item() as f64), ("text", loss.text as f64), ("image", loss.image as f64)];
        let out_of_time = budget.record_step(last, &values, log, &progress)?;
        if let Some(path) = checkpoint_path.filter(|_| last % 200 == 0 || last == steps || out_of_time) {
            let meta: HashMap<String, String> = model.config.metadata().into_iter().chain([("step".to_string(), last.to_string())]).collect();
            checkpoint::save(path, model, Some(&*opt), &meta)?; // atomic: a crash keeps the previous one
        }
        if out_of_time {
            break;
        }
    }
    progress.finish();
    Ok(last)
}

fn notebook() -> Result<()> {
    let args = Args::parse();
    let c = &args.common;
    let out = c.start("07_dalle", true, true)?;
    let dataset = c.dataset_or(DatasetName::Mnist);
    if !matches!(dataset, DatasetName::Mnist | DatasetName::Shapes) {
        return Err(Error::Config(format!("07_dalle: --dataset {} is not supported; DALL-E here trains on mnist or shapes", dataset.as_str())));
    }
    let sampling = SamplingConfig { temperature: args.temperature, top_k: args.top_k, top_p: args.top_p };
    sampling.validate()?;

    cell(1, "Load the data, the image tokenizer (VQ-VAE, chapter 05) and the caption tokenizer (CLIP's BPE, chapter 03)");
    let train_limit = match dataset {
        DatasetName::Shapes => Some(if c.smoke { 512 } else { 30_000 }), // as many as chapter 03's Shapes CLIP saw
        _ => c.limit_or(512),
    };
    let train_set = data::load(dataset, &c.data_dir(), Split::Train, train_limit)?;
    let test_set = data::load(dataset, &c.data_dir(), Split::Test, c.limit_or(256))?;
    let shipped = |model: &str| PathBuf::from(format!("weights/{model}_{}.safetensors", dataset.as_str()));
    let vqvae = load_image_tokenizer(dataset, args.image_tokenizer.as_ref().unwrap_or(&shipped("vqvae")))?;
    let (clip, bpe) = load_toy(args.clip.as_ref().unwrap_or(&shipped("clip")))?;
    let timer = Instant::now();
    let train_tokens = tokenize_images(&vqvae, &train_set)?;
    let test_tokens = tokenize_images(&vqvae, &test_set)?;
    let side = image_side(dataset);
    let grid = vqvae.grid(side, side);
    println!("{} train and {} test images -> {}x{} grids of {} codes in {:.1} s", train_set.len(), test_set.len(), grid.0, grid.1, vqvae.vocab_size(), timer.elapsed().as_secs_f64());

    cell(2, "Build DALL-E: the sequence, the embeddings, the masks");
    let mut rng = Rng::new(c.seed);
    let (model, start) = match (&c.weights, &c.resume) {
        (Some(path), _) | (None, Some(path)) => {
            let model = Dalle::load(path)?;
            let step = match checkpoint::load(path)?.metadata.get("step") {
                Some(v) => v.parse().map_err(|_| Error::Config(format!("{}: metadata `step` is {}, not a step count", path.display(), dalle::error::quote(v))))?,
                None => 0,
            };
            println!("loaded {}", path.display());
            (model, step)
        }
        (None, None) => {
            let mut config = match dataset {
                DatasetName::Shapes => DalleConfig::shapes(bpe.vocab_size()),
                _ => DalleConfig::mnist(bpe.vocab_size()),
            };
            config.transformer = TransformerConfig::new(args.dim, args.heads, args.layers);
            config.masks = MaskPattern::parse(&args.masks)?;
            (Dalle::new(config, &mut rng)?, 0)
        }
    };
    let parts = DalleParts { model, vqvae, clip, bpe, dataset };
    parts.check()?; // the image tokenizer's codebook and grid, the caption tokenizer's vocabulary
    let (model, bpe) = (&parts.model, &parts.bpe);
    let config = model.config;
    println!("{config:?}\n{} parameters", model.num_parameters());
    let example = match &train_set.captions {
        Some(own) => own.iter().max_by_key(|caption| bpe.encode(caption).map_or(0, |ids| ids.len())).expect("a caption per image").clone(), // the longest
        None => class_caption(dataset, 7, 2),
    };
    println!("caption {example:?} -> text ids {:?} (padding tokens are V_text + position)", encode_caption(bpe, &example, config.text_len, false)?);
    let train_data = TrainData::new(dataset, &train_set, &train_tokens, bpe, config.text_len)?;
    let test_data = TrainData::new(dataset, &test_set, &test_tokens, bpe, config.text_len)?;
    // ANCHOR: masks
    let kinds = [ImageAttention::Full, ImageAttention::Row, ImageAttention::Column, ImageAttention::Conv { kernel: 3 }];
    let pictures: Vec<Array4<f32>> = kinds
        .iter()
        .map(|&kind| {
            let mask = dalle_mask(kind, config.seq_len(), config.seq_len(), config.text_len, config.grid.1); // (T, T)
            mask_picture(&mask).insert_axis(Axis(0)).insert_axis(Axis(0)) // (1, 1, T, T), white = may attend
        })
        .collect();
    // ANCHOR_END: masks
    let views: Vec<_> = pictures.iter().map(|p| p.view()).collect();
    let path = out.join("masks.png");
    let options = GridOptions { scale: 4, padding: 3, pad_value: 0.5, nrow: kinds.len() };
    save_image_grid(&path, &ndarray::concatenate(Axis(0), &views).expect("same shape"), &options)?;
    wrote(&path);
    println!("masks (white = may attend, grey = border): full, row, column, conv3; the paper's layers mix row and column and end with conv3");

    cell(3, "Train: L = 1/8 CE_text + 7/8 CE_image");
    let steps = if c.weights.is_some() { 0 } else { c.steps_or(1500, 6) };
    let mut opt = Adam::new(model.named_parameters(), c.lr_or(1e-3) as f32);
    if c.resume.is_some() && start > steps {
        return Err(Error::Config(format!("--resume: the checkpoint is at step {start}, past --steps {steps}")));
    }
    if let Some(path) = &c.resume {
        checkpoint::load(path)?.load_optimizer(&mut opt)?;
        println!("resumed at step {start}");
    }
    let mut log = MetricsLog::open(out.join("metrics.jsonl"), start > 0)?;
    let budget = TimeBudget::new(args.time_limit);
    let done = train(model, &train_data, c, &mut opt, start, steps, &budget, &mut log, Some(&out.join("checkpoint.safetensors")))?;
    if steps > start {
        let secs = budget.elapsed_secs();
        println!("trained steps {start}..{done} in {secs:.1} s ({:.2} s/step)", secs / (done - start).max(1) as f64);
        let records = dalle::train::read_metrics(log.path())?;
        let path = out.join("curves.png");
        plot_lines(&path, "DALL-E training loss", "step", "cross-entropy (nats)", &[series(&records, "loss"), series(&records, "text"), series(&records, "image")], true)?;
        wrote(&path);
    }
    let (loss, text, image) = test_loss(model, &test_data, if c.smoke { 64 } else { 2000 })?;
    println!("test loss {loss:.4} (text {text:.4}, image {image:.4} nats per token)");
    log.log(done, &[("test_loss", loss as f64), ("test_text", text as f64), ("test_image", image as f64)])?;

    if args.compare_masks > 0 {
        cell(4, "The sparse masks side by side: a short run with each");
        let mut curves = Vec::new();
        for p in ["full", "row", "column", "conv3", "paper"] {
            let probe = Dalle::new(DalleConfig { masks: MaskPattern::parse(p)?, ..config }, &mut Rng::new(c.seed))?;
            let mut opt = Adam::new(probe.named_parameters(), c.lr_or(1e-3) as f32);
            let mut log = MetricsLog::open(out.join(format!("masks_{p}.jsonl")), false)?;
            let timer = Instant::now();
            train(&probe, &train_data, c, &mut opt, 0, args.compare_masks, &TimeBudget::new(0), &mut log, None)?;
            let (loss, text, image) = test_loss(&probe, &test_data, 2000)?;
            println!("{p:>7}: test loss {loss:.4} (text {text:.4}, image {image:.4}) after {} steps in {:.0} s", args.compare_masks, timer.elapsed().as_secs_f64());
            let mut curve = series(&dalle::train::read_metrics(log.path())?, "image");
            curve.name = p.to_string();
            curves.push(curve);
        }
        let path = out.join("masks_loss.png");
        plot_lines(&path, "image loss by attention mask", "step", "CE_image (nats)", &curves, true)?;
        wrote(&path);
    }

    // ANCHOR: speed
    cell(5, "Sampling with and without the key/value cache");
    let prompts: Vec<String> = match dataset {
        DatasetName::Shapes => single_object_prompts().into_iter().step_by(4).take(8).collect(),
        _ => (0..8).map(|d| class_caption(dataset, d, 0)).collect(),
    };
    let text = encode_captions(bpe, &prompts, config.text_len, false)?;
    let mut timings = Vec::new();
    let mut logits = Vec::new();
    for cached in [false, true] {
        let timer = Instant::now();
        let sampled = model.sample(&text, &SamplingConfig { temperature: 0.0, ..sampling }, cached, &mut Rng::new(c.seed))?;
        timings.push(timer.elapsed().as_secs_f64());
        logits.push(sampled.logits);
    }
    let tokens = (prompts.len() * config.image_len()) as f64;
    let gap = (&logits[0] - &logits[1]).iter().fold(0f32, |m, v| m.max(v.abs()));
    println!("{} image tokens for {} prompts: uncached {:.0} tokens/s, cached {:.0} tokens/s ({:.1}x); max |logit difference| {gap:.2e}", tokens, prompts.len(), tokens / timings[0], tokens / timings[1], timings[0] / timings[1]);
    // ANCHOR_END: speed

    cell(6, "Prompt fidelity: N candidates per caption, the first and the CLIP-best judged");
    let n = args.candidates.max(1);
    let timer = Instant::now();
    let fidelity = match dataset {
        DatasetName::Shapes => shapes_fidelity(&parts, &args, &sampling, &mut rng)?,
        _ => digit_fidelity(&parts, &args, &sampling, &mut rng)?,
    };
    let candidates = &fidelity.candidates;
    println!("{} candidates ({} prompts x {n}) drawn, decoded and scored in {:.1} s", candidates.images.dim().0, fidelity.prompts.len(), timer.elapsed().as_secs_f64());
    log.log(done, &fidelity.metrics.iter().map(|(k, v)| (k.as_str(), *v)).collect::<Vec<_>>())?;
    write_samples(&out, &candidates.best(), &fidelity.prompts, Some(&fidelity.labels))?;
    wrote(out.join("samples.npy"));

    cell(7, "Grids: first samples, and some prompts with their candidates sorted by CLIP score");
    let path = out.join("first_samples.png");
    save_image_grid(&path, &candidates.first().select(Axis(0), &fidelity.first_shown), &GridOptions { scale: 2, ..GridOptions::with_nrow(fidelity.first_row) })?;
    wrote(&path);
    let sorted: Vec<usize> = fidelity.ranked_shown.iter().flat_map(|&g| candidates.ranked[g].clone()).collect();
    let path = out.join("reranked.png");
    save_image_grid(&path, &candidates.images.select(Axis(0), &sorted), &GridOptions { scale: 2, ..GridOptions::with_nrow(n) })?;
    wrote(&path);
    for &g in &fidelity.ranked_shown {
        let line: Vec<String> = candidates.ranked[g].iter().map(|&i| format!("{:.3}", candidates.scores[i])).collect();
        println!("{:?}: CLIP scores best first {}", fidelity.prompts[g], line.join(" "));
    }

    if let Some(prompt) = &args.prompt {
        cell(8, "Your caption: candidates sorted by CLIP score");
        let ids = encode_caption(bpe, prompt, config.text_len, args.truncate)?; // too long: an error, unless --truncate
        let prompt = decode_caption(bpe, &ids)?; // what the model sees
        let drawn = parts.draw(std::slice::from_ref(&prompt), n, &sampling, 400, &mut rng)?;
        let order = &drawn.ranked[0];
        println!("{prompt:?}: CLIP scores best first {:?}", order.iter().map(|&i| (drawn.scores[i] * 1000.0).round() / 1000.0).collect::<Vec<_>>());
        let path = out.join("prompt.png");
        save_image_grid(&path, &drawn.images.select(Axis(0), order), &GridOptions { scale: 2, ..GridOptions::with_nrow(n) })?;
        wrote(&path);
    }

    if steps > start {
        cell(9, "Save the weights");
        let path = out.join("dalle.safetensors");
        let mut meta: HashMap<String, String> = config.metadata().into_iter().collect();
        meta.insert("steps".into(), done.to_string());
        meta.insert("dataset".into(), dataset.as_str().into());
        meta.extend(fidelity.metrics.iter().map(|(k, v)| (k.clone(), format!("{v:.4}"))));
        checkpoint::save(&path, model, None, &meta)?;
        wrote(&path);
    }
    Ok(())
}

/// What cell 6 measured, and which prompts the grids of cell 7 show.
struct Fidelity {
    /// One per caption.
    prompts: Vec<String>,
    /// The digit, or the shape of the first object a Shapes caption names.
    labels: Vec<usize>,
    /// `n` per caption.
    candidates: Candidates,
    /// `(name, rate)` for the metrics log and the checkpoint.
    metrics: Vec<(String, f64)>,
    /// Captions whose first sample `first_samples.png` shows, `first_row` per row.
    first_shown: Vec<usize>,
    first_row: usize,
    /// Captions whose candidates `reranked.png` shows, one row each.
    ranked_shown: Vec<usize>,
}

// ANCHOR: rerank
/// MNIST: `--per-digit` captions per digit (the templates in turn), the digit judge on the
/// first and the CLIP-best candidate of each.
fn digit_fidelity(parts: &DalleParts, args: &Args, sampling: &SamplingConfig, rng: &mut Rng) -> Result<Fidelity> {
    let per_digit = args.per_digit.unwrap_or(if args.common.smoke { 2 } else { 100 });
    let (prompts, labels): (Vec<String>, Vec<usize>) = (0..10).flat_map(|digit| (0..per_digit).map(move |j| (class_caption(DatasetName::Mnist, digit, j), digit))).unzip();
    let candidates = parts.draw(&prompts, args.candidates.max(1), sampling, 400, rng)?; // (P · N, 1, 28, 28), ranked by CLIP
    let judge = DigitJudge::pretrained()?;
    let fidelity_first = judge.fidelity(&candidates.first(), &labels)?;
    let fidelity_best = judge.fidelity(&candidates.best(), &labels)?;
    println!("prompt fidelity ({} prompts, {per_digit} per digit): first sample {:.1}%, CLIP best of {} {:.1}%", prompts.len(), 100.0 * fidelity_first, args.candidates.max(1), 100.0 * fidelity_best);
    // ANCHOR_END: rerank
    Ok(Fidelity {
        first_shown: (0..10).flat_map(|d| (0..per_digit.min(8)).map(move |j| d * per_digit + j)).collect(),
        first_row: per_digit.min(8),
        ranked_shown: (0..10).map(|d| d * per_digit).collect(),
        metrics: vec![("fidelity_first".into(), fidelity_first as f64), ("fidelity_reranked".into(), fidelity_best as f64)],
        prompts,
        labels,
        candidates,
    })
}

// ANCHOR: shapes_fidelity
/// Shapes: the 36 one-object phrases `--per-phrase` times each and `--relations` two-object
/// captions of the test split, the Shapes judge on the first and the CLIP-best candidate of each.
fn shapes_fidelity(parts: &DalleParts, args: &Args, sampling: &SamplingConfig, rng: &mut Rng) -> Result<Fidelity> {
    let smoke = args.common.smoke;
    let per_phrase = args.per_phrase.unwrap_or(if smoke { 1 } else { 8 });
    let mut phrases = single_object_prompts(); // "a small red circle", ...: 36
    if smoke {
        phrases.truncate(12);
    }
    let single: Vec<String> = (0..per_phrase).flat_map(|_| phrases.iter().cloned()).collect();
    let relations = relation_prompts(args.relations.unwrap_or(if smoke { 2 } else { 200 }))?; // "a small red circle above a large blue square", ...
    let prompts: Vec<String> = single.iter().chain(&relations).cloned().collect();
    let n = args.candidates.max(1);
    let candidates = parts.draw(&prompts, n, sampling, 400, rng)?; // (P · N, 3, 32, 32), ranked by CLIP
    let (first, best) = (candidates.first(), candidates.best());
    let k = single.len();
    let mut metrics = Vec::new();
    for (set, range, names) in [
        ("one-object phrases", 0..k, ["colour", "shape", "count", "phrase", "all"]),
        ("relation captions", k..prompts.len(), ["relation", "colour", "shape", "count", "all"]),
    ] {
        let captions = &prompts[range.clone()];
        let judged = |images: &ndarray::Array4<f32>| ShapesFidelity::measure(&images.slice(ndarray::s![range.clone(), .., .., ..]).to_owned(), captions);
        let (f, b) = (judged(&first)?, judged(&best)?);
        println!("{set}, first sample:         {}", f.summary());
        println!("{set}, CLIP best of {n}:      {}", b.summary());
        for name in names {
            let rate = |x: &ShapesFidelity| match name {
                "colour" => x.colour,
                "shape" => x.shape,
                "count" => x.count,
                "phrase" => x.phrase,
                "relation" => x.relation.unwrap_or(0.0),
                _ => x.all,
            };
            let prefix = if range.start == 0 { "single" } else { "relation" };
            metrics.push((format!("{prefix}_{name}_first"), rate(&f)));
            metrics.push((format!("{prefix}_{name}_reranked"), rate(&b)));
        }
    }
    // ANCHOR_END: shapes_fidelity
    let labels = prompts.iter().map(|p| first_shape(p)).collect::<Result<_>>()?;
    let shown_phrases: Vec<usize> = (0..phrases.len().min(k)).step_by(5).collect(); // 8 phrases across sizes, colours and shapes
    Ok(Fidelity {
        first_shown: (0..k.min(2 * phrases.len())).collect(), // each phrase twice
        first_row: 9,
        ranked_shown: shown_phrases.into_iter().chain((k..prompts.len()).take(4)).collect(),
        metrics,
        prompts,
        labels,
        candidates,
    })
}

/// The label of a Shapes caption: the shape of the first object it names.
fn first_shape(caption: &str) -> Result<usize> {
    let phrases = parse_caption(caption)?.phrases();
    let noun = phrases[0].rsplit(' ').next().unwrap_or("");
    ShapeKind::ALL.iter().position(|k| k.name() == noun).ok_or_else(|| Error::Msg(format!("caption {caption:?} names no shape first")))
}
