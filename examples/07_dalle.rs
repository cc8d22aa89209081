//! Chapter 07: DALL-E 1 on captioned MNIST: one transformer over caption and
//! image tokens, KV-cached sampling, CLIP reranking.
//!
//! ```text
//! cargo run --release --example 07_dalle
//! cargo run --release --example 07_dalle -- --weights weights/dalle_mnist.safetensors
//! cargo run --release --example 07_dalle -- --smoke
//! cargo run --release --example 07_dalle -- --weights weights/dalle_mnist.safetensors --prompt "the digit three"
//! cargo run --release --example 07_dalle -- --weights weights/dalle_mnist.safetensors --compare-masks 150 --batch-size 32
//! ```
//!
//! Leaves in `runs/07_dalle/`: `masks.png` (the attention masks), `curves.png`,
//! `samples.npy`, `prompts.txt`, `labels.txt` (the CLIP-best candidate of every
//! prompt), `reranked.png` (one prompt per digit, its candidates sorted by CLIP
//! score), `first_samples.png`, `metrics.jsonl`, `checkpoint.safetensors` and `dalle.safetensors`;
//! with `--prompt`, `prompt.png`; with `--compare-masks`, `masks_loss.png` and one `masks_*.jsonl` per mask.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use clap::Parser;
use dalle::data::batch::BatchSampler;
use dalle::data::captions::{class_caption, num_templates};
use dalle::data::{self, DatasetName, ImageDataset, Split};
use dalle::eval::DigitJudge;
use dalle::io::{checkpoint, plot_lines, save_image_grid, write_samples, GridOptions};
use dalle::models::clip::load::load_toy;
use dalle::models::dalle::masks::mask_picture;
use dalle::models::dalle::rerank::{clip_scores, rank_groups};
use dalle::models::dalle::sample::SamplingConfig;
use dalle::models::dalle::sequence::{decode_caption, encode_caption, encode_captions, join_sequences};
use dalle::models::dalle::{dalle_mask, Dalle, DalleConfig, ImageAttention, MaskPattern};
use dalle::models::image_tokenizer::ImageTokenizer;
use dalle::models::vqvae::{VqVae, VqVaeConfig};
use dalle::nn::{Module, TransformerConfig};
use dalle::optim::{Adam, Optimizer, WarmupCosine};
use dalle::tokenizer::TrainedBpe;
use dalle::train::{cell, check_finite, series, wrote, CommonArgs, MetricsLog, Progress, TimeBudget};
use dalle::{Error, Result, Rng};
use ndarray::{s, Array4, Axis};

/// Train DALL-E 1 on captioned MNIST, sample with a KV cache, rerank with CLIP.
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
    /// Image tokenizer weights (the VQ-VAE of chapter 05).
    #[arg(long, default_value = "weights/vqvae_mnist.safetensors")]
    image_tokenizer: std::path::PathBuf,
    /// The toy CLIP of chapter 03 (its BPE is also the caption tokenizer).
    #[arg(long, default_value = "weights/clip_mnist.safetensors")]
    clip: std::path::PathBuf,
    /// Prompts per digit for the fidelity measurement.
    #[arg(long)]
    per_digit: Option<usize>,
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
    labels: &'a [usize],
    /// `captions[label][template]`: the encoded text of every caption.
    captions: Vec<Vec<Vec<usize>>>,
}

impl TrainData<'_> {
    /// One batch of whole sequences: each image's tokens after a caption of its label,
    /// the template drawn by `rng` (a fresh caption every time the image comes back).
    fn batch(&self, indices: &[usize], image_len: usize, rng: &mut Rng) -> Result<Vec<usize>> {
        let text: Vec<usize> = indices.iter().flat_map(|&i| self.captions[self.labels[i]][rng.below(self.captions[0].len())].clone()).collect();
        let image: Vec<usize> = indices.iter().flat_map(|&i| self.image_tokens[i * image_len..(i + 1) * image_len].iter().copied()).collect();
        join_sequences(&text, &image, self.captions[0][0].len(), image_len)
    }
}

/// Mean test loss (weighted, text, image) over up to `limit` test sequences.
fn test_loss(model: &Dalle, data: &TrainData, limit: usize) -> Result<(f32, f32, f32)> {
    let n = (data.labels.len()).min(limit);
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
    let mut sampler = BatchSampler::new(data.labels.len(), c.batch_size_or(64, 8), c.seed);
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
    if dataset != DatasetName::Mnist {
        return Err(Error::Config(format!("07_dalle: --dataset {} is not supported; DALL-E here trains on mnist only", dataset.as_str())));
    }
    let sampling = SamplingConfig { temperature: args.temperature, top_k: args.top_k, top_p: args.top_p };
    sampling.validate()?;

    cell(1, "Load MNIST, the image tokenizer (VQ-VAE, chapter 05) and the caption tokenizer (CLIP's BPE, chapter 03)");
    let train_set = data::load(dataset, &c.data_dir(), Split::Train, c.limit_or(512))?;
    let test_set = data::load(dataset, &c.data_dir(), Split::Test, c.limit_or(256))?;
    let vqvae = VqVae::new(VqVaeConfig::mnist(), &mut Rng::new(0))?;
    checkpoint::load(&args.image_tokenizer)?.load_into(&vqvae, &["optim."])?;
    let (clip, bpe): (_, TrainedBpe) = load_toy(&args.clip)?;
    let timer = Instant::now();
    let train_tokens = tokenize_images(&vqvae, &train_set)?;
    let test_tokens = tokenize_images(&vqvae, &test_set)?;
    let grid = vqvae.grid(28, 28);
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
            let mut config = DalleConfig::mnist(dalle::tokenizer::TextTokenizer::vocab_size(&bpe));
            config.transformer = TransformerConfig::new(args.dim, args.heads, args.layers);
            config.masks = MaskPattern::parse(&args.masks)?;
            (Dalle::new(config, &mut rng)?, 0)
        }
    };
    model.check_image_tokenizer(vqvae.vocab_size(), grid)?;
    let config = model.config;
    println!("{config:?}\n{} parameters", model.num_parameters());
    let example = class_caption(dataset, 7, 2);
    println!("caption {example:?} -> text ids {:?} (padding tokens are V_text + position)", encode_caption(&bpe, &example, config.text_len, false)?);
    let captions: Vec<Vec<Vec<usize>>> = (0..10)
        .map(|label| (0..num_templates(dataset)).map(|t| encode_caption(&bpe, &class_caption(dataset, label, t), config.text_len, false)).collect())
        .collect::<Result<_>>()?;
    let train_data = TrainData { image_tokens: &train_tokens, labels: &train_set.labels, captions: captions.clone() };
    let test_data = TrainData { image_tokens: &test_tokens, labels: &test_set.labels, captions };
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
    let done = train(&model, &train_data, c, &mut opt, start, steps, &budget, &mut log, Some(&out.join("checkpoint.safetensors")))?;
    if steps > start {
        let secs = budget.elapsed_secs();
        println!("trained steps {start}..{done} in {secs:.1} s ({:.2} s/step)", secs / (done - start).max(1) as f64);
        let records = dalle::train::read_metrics(log.path())?;
        let path = out.join("curves.png");
        plot_lines(&path, "DALL-E training loss", "step", "cross-entropy (nats)", &[series(&records, "loss"), series(&records, "text"), series(&records, "image")], true)?;
        wrote(&path);
    }
    let (loss, text, image) = test_loss(&model, &test_data, if c.smoke { 64 } else { 2000 })?;
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
    let prompts: Vec<String> = (0..8).map(|d| class_caption(dataset, d, 0)).collect();
    let text = encode_captions(&bpe, &prompts, config.text_len, false)?;
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

    // ANCHOR: rerank
    cell(6, "Prompt fidelity: N candidates per caption, the first and the CLIP-best judged");
    let per_digit = args.per_digit.unwrap_or(if c.smoke { 2 } else { 100 });
    let n = args.candidates.max(1);
    let mut prompts = Vec::new();
    let mut labels = Vec::new();
    for digit in 0..10 {
        for j in 0..per_digit {
            prompts.push(class_caption(dataset, digit, j)); // every template in turn
            labels.push(digit);
        }
    }
    let repeated: Vec<String> = prompts.iter().flat_map(|p| std::iter::repeat_n(p.clone(), n)).collect(); // candidates of prompt g at g·n..(g+1)·n
    let timer = Instant::now();
    let mut images = Vec::new();
    for chunk in repeated.chunks(400) {
        let sampled = model.sample(&encode_captions(&bpe, chunk, config.text_len, false)?, &sampling, true, &mut rng)?;
        images.push(vqvae.decode(&sampled.tokens)?); // (b, 1, 28, 28)
    }
    let views: Vec<_> = images.iter().map(|a| a.view()).collect();
    let candidates = ndarray::concatenate(Axis(0), &views).expect("same shape"); // (P · N, 1, 28, 28)
    println!("{} candidates ({} prompts x {n}) drawn and decoded in {:.1} s", candidates.dim().0, prompts.len(), timer.elapsed().as_secs_f64());
    let scores = clip_scores(&clip, &bpe, &candidates, &repeated)?;
    let ranked = rank_groups(&scores, n)?; // per prompt, best first
    let first: Vec<usize> = (0..prompts.len()).map(|g| g * n).collect();
    let best: Vec<usize> = ranked.iter().map(|order| order[0]).collect();
    let judge = DigitJudge::pretrained()?;
    let first_images = candidates.select(Axis(0), &first);
    let best_images = candidates.select(Axis(0), &best);
    let fidelity_first = judge.fidelity(&first_images, &labels)?;
    let fidelity_best = judge.fidelity(&best_images, &labels)?;
    println!("prompt fidelity ({} prompts, {per_digit} per digit): first sample {:.1}%, CLIP best of {n} {:.1}%", prompts.len(), 100.0 * fidelity_first, 100.0 * fidelity_best);
    // ANCHOR_END: rerank
    log.log(done, &[("fidelity_first", fidelity_first as f64), ("fidelity_reranked", fidelity_best as f64)])?;
    write_samples(&out, &best_images, &prompts, Some(&labels))?;
    wrote(out.join("samples.npy"));

    cell(7, "Grids: first samples, and one prompt per digit with its candidates sorted by CLIP score");
    let shown: Vec<usize> = (0..10).flat_map(|d| (0..per_digit.min(8)).map(move |j| d * per_digit + j)).collect();
    let path = out.join("first_samples.png");
    save_image_grid(&path, &first_images.select(Axis(0), &shown), &GridOptions { scale: 2, ..GridOptions::with_nrow(per_digit.min(8)) })?;
    wrote(&path);
    let sorted: Vec<usize> = (0..10).flat_map(|d| ranked[d * per_digit].clone()).collect();
    let path = out.join("reranked.png");
    save_image_grid(&path, &candidates.select(Axis(0), &sorted), &GridOptions { scale: 2, ..GridOptions::with_nrow(n) })?;
    wrote(&path);
    for d in 0..10 {
        let order = &ranked[d * per_digit];
        let line: Vec<String> = order.iter().map(|&i| format!("{:.3}", scores[i])).collect();
        println!("{:?}: CLIP scores best first {}", prompts[d * per_digit], line.join(" "));
    }

    if let Some(prompt) = &args.prompt {
        cell(8, "Your caption: candidates sorted by CLIP score");
        let ids = encode_caption(&bpe, prompt, config.text_len, args.truncate)?; // too long: an error, unless --truncate
        let prompt = &decode_caption(&bpe, &ids)?; // what the model sees
        let text: Vec<usize> = std::iter::repeat_n(ids, n).flatten().collect();
        let images = vqvae.decode(&model.sample(&text, &sampling, true, &mut rng)?.tokens)?;
        let scores = clip_scores(&clip, &bpe, &images, &vec![prompt.clone(); n])?;
        let order = &rank_groups(&scores, n)?[0];
        println!("{prompt:?}: CLIP scores best first {:?}", order.iter().map(|&i| (scores[i] * 1000.0).round() / 1000.0).collect::<Vec<_>>());
        let path = out.join("prompt.png");
        save_image_grid(&path, &images.select(Axis(0), order), &GridOptions { scale: 2, ..GridOptions::with_nrow(n) })?;
        wrote(&path);
    }

    if steps > start {
        cell(9, "Save the weights");
        let path = out.join("dalle.safetensors");
        let mut meta: HashMap<String, String> = config.metadata().into_iter().collect();
        meta.insert("steps".into(), done.to_string());
        meta.insert("fidelity_first".into(), format!("{fidelity_first:.4}"));
        meta.insert("fidelity_reranked".into(), format!("{fidelity_best:.4}"));
        checkpoint::save(&path, &model, None, &meta)?;
        wrote(&path);
    }
    Ok(())
}
