//! Chapter 1: a tiny causal transformer learns the language of Shapes captions.
//!
//! ```text
//! cargo run --release --example 01_attention            # full run: about a minute on 2 cores
//! cargo run --release --example 01_attention -- --smoke # seconds
//! ```
//!
//! Cells: [1] captions and a word-level vocabulary, [2] the model and one
//! batch's shapes, [3] train on next-token prediction, [4] held-out loss,
//! [5] sample captions (greedy and with temperature) through the KV cache,
//! [6] attention maps of one caption (one heatmap per block and head) and the loss curve.

use clap::Parser;
use dalle::data::shapes::{Shapes, ShapesConfig, SHAPES_VOCAB};
use dalle::data::Split;
use dalle::io::plot::{plot_heatmap, plot_lines, Series};
use dalle::models::gpt::{Gpt, GptConfig};
use dalle::nn::{Activation, Module, TransformerConfig};
use dalle::optim::{clip_grad_norm, Adam, Optimizer, WarmupCosine};
use dalle::train::notebook::{cell, wrote};
use dalle::train::{check_finite, resume_from, save_or_stop, CommonArgs, MetricsLog, Progress, RunState};
use dalle::{no_grad, Error, Result, Rng};
use std::collections::HashSet;

/// Train a tiny causal transformer on Shapes captions.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

// ANCHOR: vocab
/// Word-level tokens: `<pad>` = 0, `<sot>` = 1, `<eot>` = 2, then the Shapes words.
const PAD: usize = 0;
const SOT: usize = 1;
const EOT: usize = 2;

fn token_name(id: usize) -> &'static str {
    match id {
        PAD => "<pad>",
        SOT => "<sot>",
        EOT => "<eot>",
        _ => SHAPES_VOCAB[id - 3],
    }
}

/// `"a red circle, a blue square"` -> `[<sot>, a, red, circle, ",", a, blue, square, <eot>]`.
fn encode(caption: &str) -> Result<Vec<usize>> {
    let mut ids = vec![SOT];
    for word in caption.replace(',', " ,").split_whitespace() {
        let i = SHAPES_VOCAB.iter().position(|w| *w == word).ok_or_else(|| Error::Msg(format!("`{word}` is not a Shapes word")))?;
        ids.push(i + 3);
    }
    ids.push(EOT);
    Ok(ids)
}

fn decode(ids: &[usize]) -> String {
    let words: Vec<&str> = ids.iter().filter(|&&i| i > EOT).map(|&i| token_name(i)).collect();
    words.join(" ").replace(" ,", ",")
}
// ANCHOR_END: vocab

/// Pad sequences to their longest with `<pad>`: row-major `(B, T)` and `T`.
fn pad_batch(seqs: &[&Vec<usize>]) -> (Vec<usize>, usize) {
    let t = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
    let ids = seqs.iter().flat_map(|s| s.iter().copied().chain(std::iter::repeat_n(PAD, t - s.len()))).collect();
    (ids, t)
}

fn captions(split: Split, n: usize) -> Result<Vec<String>> {
    let shapes = Shapes::new(ShapesConfig::for_split(split))?;
    Ok((0..n as u64).map(|i| shapes.sample(i).caption).collect())
}

fn main() -> Result<()> {
    // Kernels split their work with rayon; see `on_worker` for why main runs on the pool.
    dalle::backend::on_worker(notebook)
}

fn notebook() -> Result<()> {
    let args = Args::parse();
    let common = &args.common;
    let out = common.start("01_attention", true, false)?;

    cell(1, "Shapes captions and a word-level vocabulary");
    let n_train = if common.smoke { 500 } else { 10_000 };
    let train_text = captions(Split::Train, n_train)?;
    let test_text = captions(Split::Test, if common.smoke { 100 } else { 2_000 })?;
    let train: Vec<Vec<usize>> = train_text.iter().map(|c| encode(c)).collect::<Result<_>>()?;
    let test: Vec<Vec<usize>> = test_text.iter().map(|c| encode(c)).collect::<Result<_>>()?;
    let vocab_size = SHAPES_VOCAB.len() + 3;
    let longest = train.iter().chain(&test).map(Vec::len).max().unwrap_or(0);
    println!("{} training captions, {} test captions, vocabulary {vocab_size}, longest {longest} tokens", train.len(), test.len());
    println!("e.g. {:?} -> {:?}", train_text[0], train[0]);

    cell(2, "A tiny GPT");
    // ANCHOR: model
    let config = GptConfig {
        vocab_size,
        context_length: 24,
        transformer: TransformerConfig { activation: Activation::Gelu, ..TransformerConfig::new(64, 4, 2) },
    };
    let model = Gpt::new(config, &mut Rng::new(common.seed))?;
    // ANCHOR_END: model
    println!("{} parameters: width 64, 4 heads of 16, 2 blocks", model.num_parameters());
    let (ids, t) = pad_batch(&[&train[0], &train[1]]);
    let (logits, attention) = model.forward(&ids, 2, t, false)?;
    println!("ids (2, {t}) -> logits {:?}; attention per block {:?}", logits.shape(), attention[0].shape());

    cell(3, "Train on next-token prediction");
    let steps = common.steps_or(1500, 20);
    let batch_size = common.batch_size_or(64, 16);
    let schedule = WarmupCosine { base_lr: common.lr_or(3e-3) as f32, min_lr: 1e-4, warmup: steps / 20, total: steps };
    let mut opt = Adam::adamw(model.named_parameters(), schedule.base_lr, 0.01);
    let params = model.parameters();
    let mut rng = Rng::new(common.seed + 1);
    // --resume: weights, AdamW's moments, the step and the batch generator's position.
    let resumed = resume_from(common, &model, &mut opt, steps)?;
    if let Some(r) = &resumed {
        r.restore_rng("batches", &mut rng)?;
    }
    let first = resumed.as_ref().map_or(0, |r| r.step);
    let mut log = MetricsLog::create_or_resume(&out, resumed.as_ref().map(|r| r.step))?;
    let progress = Progress::new("gpt", steps);
    let mut losses = Vec::with_capacity(steps);
    let named = model.named_parameters();
    let start = std::time::Instant::now();
    for step in first..steps {
        let batch: Vec<&Vec<usize>> = (0..batch_size).map(|_| &train[rng.below(train.len())]).collect();
        let (ids, t) = pad_batch(&batch);
        let loss = model.loss(&ids, batch_size, t, Some(PAD), true)?; // padding targets do not count
        opt.zero_grad();
        loss.backward();
        let norm = clip_grad_norm(&params, 1.0);
        check_finite(step + 1, loss.item(), Some(norm), &named)?;
        opt.set_lr(schedule.lr(step));
        opt.step();
        losses.push(loss.item());
        log.log(step + 1, &[("loss", loss.item() as f64)])?;
        progress.update(step + 1, &[("loss", loss.item())]);
        if save_or_stop(common, &out.join("checkpoint.safetensors"), steps, &model, &opt, &RunState::new(step + 1).rng("batches", &rng))? {
            return Ok(());
        }
    }
    progress.finish();
    println!("{steps} steps of {batch_size} captions in {:.0} s", start.elapsed().as_secs_f64());

    cell(4, "Held-out loss");
    let mut total = 0.0;
    for chunk in test.chunks(250) {
        let (ids, t) = pad_batch(&chunk.iter().collect::<Vec<_>>());
        total += no_grad(|| model.loss(&ids, chunk.len(), t, Some(PAD), false))?.item() as f64 * chunk.len() as f64;
    }
    let test_loss = total / test.len() as f64; // mean over batches weighted by captions (close to per token)
    println!("test loss {test_loss:.3} nats/token, perplexity {:.2} (uniform guess: {vocab_size})", test_loss.exp());

    cell(5, "Sample captions through the KV cache");
    // ANCHOR: sample
    let known: HashSet<String> = captions(Split::Train, 50_000)?.into_iter().collect();
    let prompts = [vec![SOT], encode("two")?[..2].to_vec(), encode("a large")?[..3].to_vec()];
    for p in &prompts {
        let greedy = model.generate(std::slice::from_ref(p), config.context_length, 0.0, Some(EOT), &mut rng)?;
        let prompt: Vec<&str> = p.iter().map(|&i| token_name(i)).collect();
        println!("greedy from {:<14} {}", prompt.join(" "), decode(&greedy[0]));
    }
    let n_samples = if common.smoke { 8 } else { 200 };
    let sampled = model.generate(&vec![vec![SOT]; n_samples], config.context_length, 1.0, Some(EOT), &mut rng)?;
    let texts: Vec<String> = sampled.iter().map(|s| decode(s)).collect();
    for s in texts.iter().take(8) {
        println!("T = 1.0: {s}");
    }
    let valid = texts.iter().filter(|s| known.contains(*s)).count();
    println!("{valid}/{n_samples} samples at T = 1.0 are captions that Shapes generates (among 50 000 of them)");
    // ANCHOR_END: sample

    cell(6, "Attention maps and the loss curve");
    let caption = "a small red circle above a large blue square";
    let ids = encode(caption)?;
    let labels: Vec<String> = ids.iter().map(|&i| token_name(i).to_string()).collect();
    let (_, attention) = no_grad(|| model.forward(&ids, 1, ids.len(), false))?;
    for (l, a) in attention.iter().enumerate() {
        let a = a.to_array(); // (1, H, T, T)
        for h in 0..a.shape()[1] {
            let map = a.slice(ndarray::s![0, h, .., ..]).to_owned();
            let path = out.join(format!("attention_block{l}_head{h}.png"));
            plot_heatmap(&path, &format!("block {l}, head {h}: row = query, column = key"), &map, &labels, &labels)?;
            wrote(&path);
        }
    }
    let path = out.join("loss.png");
    plot_lines(&path, "next-token loss on Shapes captions", "step", "cross-entropy (nats)", &[Series::from_values("loss", &losses)], true)?;
    wrote(&path);
    Ok(())
}
