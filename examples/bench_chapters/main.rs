//! One training step of every chapter's model, side by side with its PyTorch twin.
//!
//! ```text
//! cargo run --release --example bench_chapters -- --torch
//! cargo run --release --example bench_chapters -- --smoke          # batch 8, 3 steps (CI)
//! cargo run --release --example bench_chapters -- --cases vae,vqvae_mnist --torch
//! cargo run --release --example bench_chapters -- --cases dalle,ddpm,glide,noised_clip,prior,decoder,upsampler --torch
//! cargo run --release --example bench_chapters -- --sampling       # samplers of chapters 08 and 09
//! ```
//!
//! Each case builds the chapter's model through the library at the example's
//! default configuration, with the example's batch size, optimiser, gradient
//! clipping and loss, and times its training step. The inputs are random
//! batches of the right shape (images in [0, 1], labels, token ids), made once
//! and fed to every step, so the step time is the model's, not the loader's;
//! the `data` column times the real batching path (a batch gathered from the
//! loaded MNIST or CIFAR-10 set, and for CLIP its captions tokenized) on its
//! own. The step is split where the time goes, with an `Instant` at each
//! border: forward (the model and the loss, and for the VQ-VAE its EMA codebook
//! update), backward, optimiser (zero_grad, gradient clipping, the Adam step)
//! and other (reading the loss and the metrics the example logs).
//!
//! With `--torch`, `benches/torch_chapters.py` runs beside this program on as
//! many threads as rayon uses here (and, when `DALLE_CPU` forces a lower tier, held
//! to the same instruction set, as bench_engine holds it), builds the same model in PyTorch from the
//! specification sent to it, and reports its trainable parameter count, which
//! must equal ours (the program stops if it differs). Each case then alternates
//! three blocks of steps on each side (ours, PyTorch, ours, ...; each block
//! two warm-up steps and about a second of timed ones, 4 to 16), so that both
//! sides meet the same load on a shared machine; the tables give the median
//! over all timed steps of a side. The ratio is ours / torch: below 1 we are
//! faster. The generators also time one sampling step (GPT: one token for a
//! batch of 200 through the KV cache, as chapter 01 samples; the later chapters'
//! cases, in `generators.rs`, say theirs).

use clap::Parser;
use dalle::data::batch::BatchSampler;
use dalle::data::captions::{class_caption, num_templates};
use dalle::data::{self, DatasetName, ImageDataset, Split};
use dalle::eval::DigitJudge;
use dalle::models::clip::{contrastive_loss, ClipConfig, ClipModel};
use dalle::models::dvae::{Dvae, DvaeConfig};
use dalle::models::gpt::{Gpt, GptConfig};
use dalle::models::vae::{Vae, VaeConfig};
use dalle::models::vit::{Vit, VitConfig};
use dalle::models::vqvae::{VqVae, VqVaeConfig};
use dalle::nn::quantize::{code_counts, usage_and_perplexity};
use dalle::nn::{Activation, Module, TransformerConfig};
use dalle::optim::{clip_grad_norm, Adam, Optimizer};
use dalle::tokenizer::{TextTokenizer, TrainedBpe};
use dalle::{Error, Result, Rng, Tensor};
use ndarray::{Array2, ArrayD};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

mod generators;
mod sampling;

/// Every case, in the order of the tables.
const CASES: [&str; 15] = [
    "judge", "gpt", "vit", "clip", "vae", "vqvae_mnist", "vqvae_cifar10", "dvae", "dalle", "ddpm", "glide", "noised_clip", "prior", "decoder", "upsampler",
];

#[derive(Parser)]
#[command(about = "Time one training step of every chapter's model against its PyTorch twin")]
struct Args {
    /// Batch 8 and 1 + 2 steps: a check that every case runs, in seconds.
    #[arg(long)]
    smoke: bool,
    /// Also run benches/torch_chapters.py (skipped with a message when python or torch is missing).
    #[arg(long)]
    torch: bool,
    /// Comma-separated cases (default: all): judge, gpt, vit, clip, vae, vqvae_mnist, vqvae_cifar10, dvae,
    /// dalle, ddpm, glide, noised_clip, prior, decoder, upsampler.
    #[arg(long, default_value = "judge,gpt,vit,clip,vae,vqvae_mnist,vqvae_cifar10,dvae,dalle,ddpm,glide,noised_clip,prior,decoder,upsampler")]
    cases: String,
    /// The data folder for the `data` column (default: as the examples find it).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Instead of the training steps: chapter 08's samplers (DDPM 1000 steps, DDIM 50, the ODE
    /// by Euler and Heun over 50) and chapter 09's guidance as two passes or one batch, in
    /// images per second (written to sampling.md beside --out).
    #[arg(long)]
    sampling: bool,
    /// Skip the generators' sampling steps (to profile the training steps alone).
    #[arg(long)]
    no_sampling: bool,
    /// Where to write the tables as markdown.
    #[arg(long, default_value = "runs/bench_chapters/bench.md")]
    out: PathBuf,
}

/// The parts of a training step, in the order of the table's columns.
#[derive(Clone, Copy)]
enum Phase {
    Forward,
    Backward,
    Optimizer,
    Other,
}

const PHASES: [&str; 4] = ["forward", "backward", "optimizer", "other"];

/// A stopwatch that adds the time since its last lap to a phase.
struct Laps {
    last: Instant,
    ms: [f64; 4],
}

impl Laps {
    fn start() -> Laps {
        Laps { last: Instant::now(), ms: [0.0; 4] }
    }

    fn lap(&mut self, phase: Phase) {
        let now = Instant::now();
        self.ms[phase as usize] += (now - self.last).as_secs_f64() * 1e3;
        self.last = now;
    }
}

type Step = Box<dyn FnMut(&mut Laps) -> Result<()>>;
type Sampler = Box<dyn FnMut() -> Result<()>>;

/// A generator's sampling call, how many sampling steps (tokens, network evaluations) it makes,
/// and what one step is, for the table.
struct Sampling {
    call: Sampler,
    steps: usize,
    what: String,
}

/// One chapter's model, ready to step.
struct Case {
    name: &'static str,
    /// The example it mirrors and what trains.
    what: String,
    /// Trainable parameters (what the optimiser updates).
    params: Params,
    batch: usize,
    /// What the PyTorch twin needs to build the same model.
    spec: Value,
    step: Step,
    /// A generator's sampling call.
    sample: Option<Sampling>,
    /// The real batching path, timed alone.
    data: Option<Box<dyn FnMut()>>,
}

/// Every timed step of one side (ours or the twin), in milliseconds.
#[derive(Default)]
struct Samples {
    step: Vec<f64>,
    phases: [Vec<f64>; 4],
    /// Sampling calls, ms per generated token.
    sample: Vec<f64>,
}

impl Samples {
    fn push(&mut self, step: f64, phases: [f64; 4]) {
        self.step.push(step);
        for (p, ms) in self.phases.iter_mut().zip(phases) {
            p.push(ms);
        }
    }

    /// The twin's reply: lists of the same measurements (its sampling calls divided by `sample_steps`).
    fn extend_from_json(&mut self, reply: &Value, sample_steps: usize) {
        let list = |key: &str| -> Vec<f64> { reply[key].as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default() };
        self.step.extend(list("step_ms"));
        for (p, name) in self.phases.iter_mut().zip(PHASES) {
            p.extend(list(&format!("{name}_ms")));
        }
        self.sample.extend(list("sample_ms").iter().map(|ms| ms / sample_steps.max(1) as f64));
    }

    fn median_step(&self) -> Option<f64> {
        median(&self.step)
    }

    fn median_phase(&self, i: usize) -> Option<f64> {
        median(&self.phases[i])
    }
}

fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied()
}

/// `warmup` untimed steps, then `reps` timed ones, each split into phases.
/// Keep in sync with `run_steps` in benches/torch_chapters.py.
fn run_steps(step: &mut Step, warmup: usize, reps: usize, out: &mut Samples) -> Result<()> {
    for _ in 0..warmup {
        step(&mut Laps::start())?;
    }
    for _ in 0..reps {
        let t = Instant::now();
        let mut laps = Laps::start();
        step(&mut laps)?;
        out.push(t.elapsed().as_secs_f64() * 1e3, laps.ms);
    }
    Ok(())
}

/// The median of `reps` calls in milliseconds, after one warm-up call.
fn time_calls(f: &mut dyn FnMut() -> Result<()>, reps: usize) -> Result<Vec<f64>> {
    f()?;
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f()?;
            Ok(t.elapsed().as_secs_f64() * 1e3)
        })
        .collect()
}

fn trainable(model: &dyn Module) -> Vec<(String, Tensor)> {
    model.named_parameters().into_iter().filter(|(_, t)| t.requires_grad()).collect()
}

/// What the optimiser updates: how many numbers, and the sorted shapes of its tensors.
struct Params {
    total: usize,
    shapes: Vec<Vec<usize>>,
}

fn count(params: &[(String, Tensor)]) -> Params {
    let mut shapes: Vec<Vec<usize>> = params.iter().map(|(_, t)| t.shape().to_vec()).collect();
    shapes.sort();
    Params { total: params.iter().map(|(_, t)| t.len()).sum(), shapes }
}

/// Random images in [0, 1], `(B, C, H, W)`.
fn images(rng: &mut Rng, b: usize, c: usize, s: usize) -> ArrayD<f32> {
    rng.uniform_array(&[b, c, s, s], 0.0, 1.0)
}

/// The loaded training images the `data` column batches from (a few thousand are plenty).
struct Sets {
    mnist: Option<ImageDataset>,
    cifar10: Option<ImageDataset>,
    note: String,
}

impl Sets {
    fn load(dir: &std::path::Path, wanted: &[&str], smoke: bool) -> Sets {
        let limit = Some(if smoke { 64 } else { 4096 });
        let mut note = String::new();
        let mut load = |name: DatasetName| match data::load(name, dir, Split::Train, limit) {
            Ok(set) => Some(set),
            Err(e) => {
                note += &format!("no {} for the data column ({e}); ", name.as_str());
                None
            }
        };
        let mnist = wanted.iter().any(|c| !matches!(*c, "gpt" | "vqvae_cifar10" | "dalle" | "noised_clip" | "prior" | "decoder")).then(|| load(DatasetName::Mnist)).flatten();
        let cifar10 = wanted.contains(&"vqvae_cifar10").then(|| load(DatasetName::Cifar10)).flatten();
        Sets { mnist, cifar10, note }
    }
}

/// A `data` closure that gathers batches of `batch` images from `set`, as the examples do.
fn batching(set: &Option<ImageDataset>, batch: usize) -> Option<Box<dyn FnMut()>> {
    let set = set.clone()?;
    let mut sampler = BatchSampler::new(set.len(), batch, 0);
    Some(Box::new(move || {
        let (x, labels) = set.batch(&sampler.next_batch());
        std::hint::black_box((Tensor::new(x.into_dyn()), labels));
    }))
}

/// Chapter 00's digit judge: batch 128, Adam 1e-3 (the warm-up cosine sets the rate each step), cross-entropy.
/// What every chapter's step does after its forward, each part lapped as its phase: zero the
/// gradients, walk back, clip to norm 1 at the example's learning rate where the example clips
/// (`clip = Some((parameters, lr))`), and take the Adam step.
fn backward_and_step(laps: &mut Laps, loss: &Tensor, opt: &mut Adam, clip: Option<(&[Tensor], f32)>) {
    opt.zero_grad();
    laps.lap(Phase::Optimizer);
    loss.backward();
    laps.lap(Phase::Backward);
    if let Some((params, lr)) = clip {
        clip_grad_norm(params, 1.0);
        opt.set_lr(lr);
    }
    opt.step();
    laps.lap(Phase::Optimizer);
}

fn judge_case(b: usize, sets: &Sets) -> Result<Case> {
    let mut rng = Rng::new(0);
    let judge = DigitJudge::new(&mut rng);
    let named = judge.named_parameters();
    let params = count(&named);
    let mut opt = Adam::new(named, 1e-3);
    let x = images(&mut rng, b, 1, 28);
    let labels: Vec<usize> = (0..b).map(|_| rng.below(10)).collect();
    let step: Step = Box::new(move |laps| {
        opt.set_lr(1e-3);
        opt.zero_grad();
        laps.lap(Phase::Optimizer);
        let loss = judge.forward(&Tensor::new(x.clone()))?.cross_entropy(&labels)?;
        laps.lap(Phase::Forward);
        loss.backward();
        laps.lap(Phase::Backward);
        opt.step();
        laps.lap(Phase::Optimizer);
        std::hint::black_box(loss.item());
        laps.lap(Phase::Other);
        Ok(())
    });
    Ok(Case {
        name: "judge",
        what: "00 digit judge CNN (MNIST)".into(),
        params,
        batch: b,
        spec: json!({"batch": b, "lr": 1e-3}),
        step,
        sample: None,
        data: batching(&sets.mnist, b),
    })
}

/// Chapter 01's tiny GPT on Shapes captions: width 64, 4 heads, 2 blocks, context 24, batch 64,
/// AdamW 3e-3 (decay 0.01), clipping at 1. The longest Shapes caption is 16 tokens
/// (`<sot> a small red circle , a large blue square and a small green triangle <eot>`),
/// so a batch of 64 random captions pads to 16 and the model reads 15 positions.
fn gpt_case(b: usize, samples: usize) -> Result<Case> {
    let (vocab, context, t) = (27, 24, 16); // Shapes' 24 words + <pad>, <sot>, <eot>
    let config = GptConfig {
        vocab_size: vocab,
        context_length: context,
        transformer: TransformerConfig { activation: Activation::Gelu, ..TransformerConfig::new(64, 4, 2) },
    };
    let model = std::rc::Rc::new(Gpt::new(config, &mut Rng::new(0))?);
    let named = model.named_parameters();
    let params = count(&named);
    let all = model.parameters();
    let mut opt = Adam::adamw(named, 3e-3, 0.01);
    let mut rng = Rng::new(1);
    let ids: Vec<usize> = (0..b * t).map(|_| 3 + rng.below(vocab - 3)).collect(); // no padding: every target counts
    let m = model.clone();
    let step: Step = Box::new(move |laps| {
        let loss = m.loss(&ids, b, t, Some(0), true)?;
        laps.lap(Phase::Forward);
        backward_and_step(laps, &loss, &mut opt, Some((&all[..], 3e-3)));
        std::hint::black_box(loss.item());
        laps.lap(Phase::Other);
        Ok(())
    });
    // Sampling as chapter 01 does it: `samples` sequences from <sot>, temperature 1, no stop
    // token, so every call decodes context - 1 = 23 tokens through the KV cache.
    let mut sample_rng = Rng::new(2);
    let sample = move || -> Result<()> {
        std::hint::black_box(model.generate(&vec![vec![1]; samples], context, 1.0, None, &mut sample_rng)?);
        Ok(())
    };
    Ok(Case {
        name: "gpt",
        what: "01 GPT (Shapes captions)".into(),
        params,
        batch: b,
        spec: json!({"batch": b, "vocab": vocab, "context": context, "t": t, "width": 64, "heads": 4, "layers": 2, "samples": samples}),
        step,
        sample: Some(Sampling { call: Box::new(sample), steps: context - 1, what: format!("one token for a batch of {samples}, KV cache") }),
        data: None,
    })
}

/// Chapter 02's ViT on MNIST: 7x7 patches, width 64, 4 blocks of 4 heads, batch 64,
/// AdamW 2e-3 (decay 0.05), clipping at 1.
fn vit_case(b: usize, sets: &Sets) -> Result<Case> {
    let mut rng = Rng::new(0);
    let model = Vit::new(VitConfig::mnist(), &mut rng)?;
    let named = model.named_parameters();
    let params = count(&named);
    let all = model.parameters();
    let mut opt = Adam::adamw(named, 2e-3, 0.05);
    let x = images(&mut rng, b, 1, 28);
    let labels: Vec<usize> = (0..b).map(|_| rng.below(10)).collect();
    let step: Step = Box::new(move |laps| {
        let loss = model.classify(&Tensor::new(x.clone()), true)?.cross_entropy(&labels)?;
        laps.lap(Phase::Forward);
        backward_and_step(laps, &loss, &mut opt, Some((&all[..], 2e-3)));
        std::hint::black_box(loss.item());
        laps.lap(Phase::Other);
        Ok(())
    });
    Ok(Case {
        name: "vit",
        what: "02 ViT (MNIST)".into(),
        params,
        batch: b,
        spec: json!({"batch": b, "width": 64, "layers": 4, "heads": 4, "patch": 7}),
        step,
        sample: None,
        data: batching(&sets.mnist, b),
    })
}

/// Chapter 03's toy CLIP on captioned MNIST, with the example's configuration and its
/// tokenizer (a BPE of 512 trained on the class captions): batch 128, AdamW 2e-3 (decay
/// 0.01), clipping at 1, the symmetric contrastive loss.
fn clip_case(b: usize, sets: &Sets) -> Result<Case> {
    let dataset = DatasetName::Mnist;
    let corpus: Vec<String> = (0..10).flat_map(|l| (0..num_templates(dataset)).map(move |t| class_caption(dataset, l, t))).collect();
    let tokenizer = TrainedBpe::train(&corpus, 512)?;
    let (vocab, eot, context) = (tokenizer.vocab_size(), tokenizer.eot(), 12);
    let config = ClipConfig::toy(dataset, vocab, eot);
    let mut rng = Rng::new(0);
    let model = ClipModel::new(&config, &mut rng)?;
    let named = model.named_parameters();
    let params = count(&named);
    let mut opt = Adam::adamw(named, 2e-3, 0.01);
    let x = rng.uniform_array(&[b, 1, 28, 28], -1.0, 1.0); // normalize_unit's range
    // Random tokens (never EOT), then EOT at a random position in 3..T-1, then padding 0.
    let mut ids = Array2::<u32>::zeros((b, context));
    for mut row in ids.rows_mut() {
        let end = 3 + rng.below(context - 4);
        for v in row.iter_mut().take(end) {
            *v = loop {
                let id = rng.below(vocab) as u32;
                if id != eot {
                    break id;
                }
            };
        }
        row[end] = eot;
    }
    let step: Step = Box::new(move |laps| {
        let out = model.forward(&Tensor::new(x.clone()), &ids)?;
        let loss = contrastive_loss(&out.logits_per_image)?;
        laps.lap(Phase::Forward);
        backward_and_step(laps, &loss, &mut opt, Some((&model.parameters()[..], 2e-3)));
        std::hint::black_box((loss.item(), model.logit_scale_exp().item()));
        laps.lap(Phase::Other);
        Ok(())
    });
    // The data column: a batch of images and a fresh caption for each, tokenized.
    let data = sets.mnist.clone().map(|set| -> Box<dyn FnMut()> {
        let mut sampler = BatchSampler::new(set.len(), b, 0);
        let mut caption_rng = Rng::new(1);
        Box::new(move || {
            let (images, labels) = set.batch(&sampler.next_batch());
            let captions: Vec<String> = labels.iter().map(|&l| class_caption(dataset, l, caption_rng.below(num_templates(dataset)))).collect();
            let refs: Vec<&str> = captions.iter().map(String::as_str).collect();
            let ids = tokenizer.encode_batch(&refs, context, true).expect("class captions tokenize");
            let pixels = dalle::models::clip::preprocess::normalize_unit(&images);
            std::hint::black_box((Tensor::new(pixels.into_dyn()), ids));
        })
    });
    Ok(Case {
        name: "clip",
        what: "03 CLIP (MNIST + captions)".into(),
        params,
        batch: b,
        spec: json!({"batch": b, "vocab": vocab, "eot": eot, "context": context, "width": 64, "intermediate": 256, "heads": 4,
                     "text_layers": 2, "vision_layers": 3, "patch": 7, "projection": 32}),
        step,
        sample: None,
        data,
    })
}

/// Chapter 04's VAE on MNIST: hidden 32, latent 2, batch 128, Adam 2e-3, -ELBO.
fn vae_case(b: usize, sets: &Sets) -> Result<Case> {
    let mut rng = Rng::new(0);
    let model = Vae::new(VaeConfig::mnist(2), &mut rng)?;
    let named = model.named_parameters();
    let params = count(&named);
    let mut opt = Adam::new(named, 2e-3);
    let x = images(&mut rng, b, 1, 28);
    let step: Step = Box::new(move |laps| {
        let output = model.forward(&Tensor::new(x.clone()), &mut rng)?;
        let loss = output.loss()?;
        laps.lap(Phase::Forward);
        backward_and_step(laps, &loss, &mut opt, None);
        std::hint::black_box((loss.item(), output.reconstruction.item(), output.kl.item()));
        laps.lap(Phase::Other);
        Ok(())
    });
    Ok(Case {
        name: "vae",
        what: "04 VAE (MNIST, latent 2)".into(),
        params,
        batch: b,
        spec: json!({"batch": b, "hidden": 32, "latent": 2}),
        step,
        sample: None,
        data: batching(&sets.mnist, b),
    })
}

/// Chapter 05's VQ-VAE: the data set's configuration (EMA codebook, restarts after 20
/// idle steps), batch 64, Adam 2e-3 on the trainable parameters.
fn vqvae_case(cifar: bool, b: usize, sets: &Sets) -> Result<Case> {
    let config = if cifar { VqVaeConfig::cifar10() } else { VqVaeConfig::mnist() };
    let mut rng = Rng::new(0);
    let model = VqVae::new(config, &mut rng)?;
    let named = trainable(&model);
    let params = count(&named);
    let mut opt = Adam::new(named, 2e-3);
    let (c, s) = if cifar { (3, 32) } else { (1, 28) };
    let x = images(&mut rng, b, c, s);
    let step: Step = Box::new(move |laps| {
        let output = model.forward(&Tensor::new(x.clone()), true)?; // with the EMA codebook update
        let loss = output.loss()?;
        laps.lap(Phase::Forward);
        backward_and_step(laps, &loss, &mut opt, None);
        let q = &output.quantized;
        std::hint::black_box((loss.item(), output.reconstruction_loss.item(), q.commitment_loss.item()));
        laps.lap(Phase::Other);
        Ok(())
    });
    let q = config.quantizer;
    Ok(Case {
        name: if cifar { "vqvae_cifar10" } else { "vqvae_mnist" },
        what: format!("05 VQ-VAE ({}, hidden {}, K {})", if cifar { "CIFAR-10" } else { "MNIST" }, config.hidden, q.num_codes),
        params,
        batch: b,
        spec: json!({"batch": b, "channels": c, "size": s, "hidden": config.hidden, "codes": q.num_codes, "dim": q.dim,
                     "loss": if cifar { "mse" } else { "bce" }}),
        step,
        sample: None,
        data: batching(if cifar { &sets.cifar10 } else { &sets.mnist }, b),
    })
}

/// Chapter 06's dVAE on MNIST: hidden 8, K 128, batch 64, Adam 2e-3; τ and β at mid-training values.
fn dvae_case(b: usize, sets: &Sets) -> Result<Case> {
    let config = DvaeConfig::mnist();
    let mut rng = Rng::new(0);
    let model = Dvae::new(config, &mut rng)?;
    let named = model.named_parameters();
    let params = count(&named);
    let mut opt = Adam::new(named, 2e-3);
    let x = images(&mut rng, b, 1, 28);
    let (tau, beta) = (0.5, 0.25);
    let k = config.num_codes;
    let step: Step = Box::new(move |laps| {
        let output = model.forward(&Tensor::new(x.clone()), tau, &mut rng)?;
        let loss = output.reconstruction_loss.add(&output.kl.scale(beta))?;
        laps.lap(Phase::Forward);
        backward_and_step(laps, &loss, &mut opt, None);
        let stats = usage_and_perplexity(&code_counts(&output.indices, k));
        std::hint::black_box((loss.item(), output.reconstruction_loss.item(), output.kl.item(), stats));
        laps.lap(Phase::Other);
        Ok(())
    });
    Ok(Case {
        name: "dvae",
        what: format!("06 dVAE (MNIST, hidden {}, K {k})", config.hidden),
        params,
        batch: b,
        spec: json!({"batch": b, "hidden": config.hidden, "codes": k, "tau": tau, "beta": beta}),
        step,
        sample: None,
        data: batching(&sets.mnist, b),
    })
}

/// benches/torch_chapters.py, kept running: it answers one JSON line per request on stdin.
struct Twin {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    /// "PyTorch 2.5.1 on 2 threads"
    about: String,
}

impl Twin {
    /// Start the twin on as many threads as rayon uses here; Err says why it cannot run.
    fn start() -> std::result::Result<Twin, String> {
        use std::process::Stdio;
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/torch_chapters.py");
        let mut cmd = Command::new("python3");
        cmd.arg(&script).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let threads = rayon::current_num_threads().to_string();
        for var in ["BENCH_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"] {
            cmd.env(var, &threads);
        }
        // Our tier, forced lower with DALLE_CPU, holds PyTorch to the same instruction set (as
        // bench_engine does); a variable already set by the caller wins.
        for (var, value) in torch_tier_env() {
            if std::env::var_os(var).is_none() {
                cmd.env(var, value);
            }
        }
        let mut child = cmd.spawn().map_err(|e| format!("could not run python3: {e}"))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = std::io::BufReader::new(child.stdout.take().expect("piped"));
        let mut twin = Twin { child, stdin, stdout, about: String::new() };
        let hello = twin.read()?; // {"torch": "2.5.1", "threads": 2, "capability": "AVX512"} or {"error": ...}
        twin.about = format!("PyTorch {} on {} threads, ATen capability {}", hello["torch"].as_str().unwrap_or("?"), hello["threads"], hello["capability"].as_str().unwrap_or("?"));
        Ok(twin)
    }

    fn read(&mut self) -> std::result::Result<Value, String> {
        use std::io::BufRead;
        let mut line = String::new();
        self.stdout.read_line(&mut line).map_err(|e| format!("reading from benches/torch_chapters.py: {e}"))?;
        let json: Value = serde_json::from_str(line.trim()).map_err(|e| format!("benches/torch_chapters.py answered {line:?} ({e}); its error is above"))?;
        match json.get("error") {
            Some(err) => Err(err.as_str().unwrap_or("?").to_string()),
            None => Ok(json),
        }
    }

    /// Run `reps` steps (and `sample_reps` sampling calls) of case `name` built from `spec`.
    fn run(&mut self, name: &str, spec: &Value, warmup: usize, reps: usize, sample_reps: usize) -> std::result::Result<Value, String> {
        use std::io::Write;
        let request = json!({"case": name, "spec": spec, "warmup": warmup, "reps": reps, "sample_reps": sample_reps});
        writeln!(self.stdin, "{request}").and_then(|()| self.stdin.flush()).map_err(|e| format!("writing to benches/torch_chapters.py: {e}"))?;
        self.read()
    }
}

impl Drop for Twin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What this CPU offers the kernels, and `DALLE_CPU` when it is set (the switch that picks a
/// lower tier for the kernels is issue 12's; this bench only reports it).
fn cpu_tier() -> String {
    let hardware = hardware_tier();
    match std::env::var("DALLE_CPU") {
        Ok(v) if !v.is_empty() => format!("{hardware}, DALLE_CPU={v}"),
        _ => hardware,
    }
}

/// The switches that hold ATen's kernels, oneDNN and MKL to the tier `DALLE_CPU` forces
/// (`avx2` or `portable`; nothing at the best tier): the same as bench_engine's.
fn torch_tier_env() -> Vec<(&'static str, &'static str)> {
    match std::env::var("DALLE_CPU").unwrap_or_default().as_str() {
        "avx2" => vec![("ATEN_CPU_CAPABILITY", "avx2"), ("ONEDNN_MAX_CPU_ISA", "AVX2"), ("MKL_ENABLE_INSTRUCTIONS", "AVX2"), ("OPENBLAS_CORETYPE", "Haswell")],
        "portable" => vec![("ATEN_CPU_CAPABILITY", "default"), ("ONEDNN_MAX_CPU_ISA", "SSE41"), ("MKL_ENABLE_INSTRUCTIONS", "SSE4_2"), ("OPENBLAS_CORETYPE", "Nehalem")],
        _ => vec![],
    }
}

fn hardware_tier() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let tier = if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
            "avx512"
        } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            "avx2"
        } else {
            "sse2 (no avx2)"
        };
        let model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
            .unwrap_or_else(|| "unknown CPU".into());
        format!("{tier} ({model})")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::env::consts::ARCH.to_string()
    }
}

fn ratio(ours: f64, theirs: Option<f64>) -> String {
    theirs.map(|t| format!("{:.2}", ours / t)).unwrap_or_else(|| "-".into())
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into())
}

fn main() {
    // Kernels split their work with rayon; see `on_worker` for why main runs on the pool.
    if let Err(e) = dalle::backend::on_worker(|| run(Args::parse())) {
        eprintln!("bench_chapters: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    if args.sampling {
        return sampling::run(&args);
    }
    let wanted: Vec<&str> = args.cases.split(',').map(str::trim).filter(|c| !c.is_empty()).collect();
    if let Some(bad) = wanted.iter().find(|c| !CASES.contains(c)) {
        return Err(Error::Config(format!("--cases: unknown case {bad:?}, expected some of {CASES:?}")));
    }
    let tier = cpu_tier();
    println!("== bench_chapters: {} rayon threads, CPU tier {tier}, {} run", rayon::current_num_threads(), if args.smoke { "smoke" } else { "full" });
    let small = |full: usize| if args.smoke { 8 } else { full };
    let sets = Sets::load(&data::resolve_data_dir(args.data_dir.clone()), &wanted, args.smoke);
    let mut cases = Vec::new();
    for name in &wanted {
        cases.push(match *name {
            "judge" => judge_case(small(128), &sets)?,
            "gpt" => gpt_case(small(64), if args.smoke { 8 } else { 200 })?,
            "vit" => vit_case(small(64), &sets)?,
            "clip" => clip_case(small(128), &sets)?,
            "vae" => vae_case(small(128), &sets)?,
            "vqvae_mnist" => vqvae_case(false, small(64), &sets)?,
            "vqvae_cifar10" => vqvae_case(true, small(64), &sets)?,
            "dvae" => dvae_case(small(64), &sets)?,
            // The sampling batches are the examples': 07 draws 400 candidates at a time, 08 and
            // 11 sample 250 images a batch, 09 200, 10 evaluates 1000 captions at once.
            "dalle" => generators::dalle_case(small(64), if args.smoke { 8 } else { 400 })?,
            "ddpm" => generators::ddpm_case(small(64), if args.smoke { 8 } else { 250 }, &sets)?,
            "glide" => generators::glide_case(small(64), if args.smoke { 8 } else { 200 }, &sets)?,
            "noised_clip" => generators::noised_clip_case(small(128))?,
            "prior" => generators::prior_case(small(256), if args.smoke { 8 } else { 1000 })?,
            "decoder" => generators::decoder_case(small(64), if args.smoke { 8 } else { 250 })?,
            _ => generators::upsampler_case(small(32), if args.smoke { 8 } else { 250 }, &sets)?,
        });
    }

    // The twin runs beside us: each case alternates blocks of steps here and in PyTorch
    // (ours, theirs, ours, theirs, ...), so that both sides meet the same load on a shared machine.
    let mut twin = None;
    let mut note = String::from("PyTorch not run (pass --torch)");
    if args.torch {
        match Twin::start() {
            Ok(t) => {
                note = t.about.clone();
                twin = Some(t);
            }
            Err(why) => note = format!("PyTorch comparison skipped: {why}"),
        }
    }
    let (rounds, warmup) = if args.smoke { (1, 1) } else { (3, 2) };
    let mut results = Vec::new();
    for case in &mut cases {
        if args.no_sampling {
            case.sample = None;
        }
        let (mut ours, mut theirs) = (Samples::default(), Samples::default());
        // Steps per block: about one second's worth, 4 to 16 (3 blocks a side: 12 to 48 steps).
        let t = Instant::now();
        run_steps(&mut case.step, 1, 0, &mut ours)?;
        let reps = if args.smoke { 2 } else { (1.0 / t.elapsed().as_secs_f64().max(1e-6)).ceil().clamp(4.0, 16.0) as usize };
        let sample_reps = if case.sample.is_none() { 0 } else if args.smoke { 1 } else { 2 };
        for _ in 0..rounds {
            run_steps(&mut case.step, warmup, reps, &mut ours)?;
            if let Some(s) = &mut case.sample {
                ours.sample.extend(time_calls(s.call.as_mut(), sample_reps)?.iter().map(|ms| ms / s.steps as f64));
            }
            if let Some(tw) = twin.as_mut() {
                match tw.run(case.name, &case.spec, warmup, reps, sample_reps) {
                    Ok(reply) => {
                        // The twin must be the same model: equal parameter counts and tensor shapes,
                        // or no comparison at all.
                        let shapes: Option<Vec<Vec<usize>>> = serde_json::from_value(reply["shapes"].clone()).ok();
                        if reply["params"].as_u64() != Some(case.params.total as u64) || shapes.as_ref() != Some(&case.params.shapes) {
                            return Err(Error::Msg(format!(
                                "{}: the PyTorch twin has {} trainable parameters in tensors of shapes {}, ours {} in {:?}; \
                                 benches/torch_chapters.py must build the same model",
                                case.name, reply["params"], reply["shapes"], case.params.total, case.params.shapes
                            )));
                        }
                        theirs.extend_from_json(&reply, case.sample.as_ref().map_or(1, |s| s.steps));
                    }
                    Err(why) => {
                        note = format!("PyTorch comparison skipped from case {}: {why}", case.name);
                        twin = None;
                    }
                }
            }
        }
        let data = match case.data.as_mut() {
            Some(f) => median(&time_calls(&mut || -> Result<()> { f(); Ok(()) }, if args.smoke { 2 } else { 20 })?),
            None => None,
        };
        println!(
            "{:<14} {:>8} params  step {:>8.2} ms, PyTorch {} ms (medians of {} steps a side)",
            case.name,
            case.params.total,
            ours.median_step().unwrap_or(f64::NAN),
            ms(theirs.median_step()),
            ours.step.len()
        );
        results.push((ours, theirs, data));
    }
    drop(twin);

    let mut steps = String::from("| model | parameters | batch | ours ms | torch ms | ours/torch | forward | backward | optimiser | other | data (ours) ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let mut split = String::from("| model | ours: forward | backward | optimiser | other | torch: forward | backward | optimiser | other |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let mut sampling = String::from("| model | ours ms / step | torch ms / step | ours/torch |\n|---|---:|---:|---:|\n");
    for (case, (ours, theirs, data)) in cases.iter().zip(&results) {
        let step = ours.median_step().unwrap_or(f64::NAN);
        let phase_ratio = |i: usize| ratio(ours.median_phase(i).unwrap_or(f64::NAN), theirs.median_phase(i));
        steps += &format!(
            "| {} | {} | {} | {step:.2} | {} | {} | {} | {} | {} | {} | {} |\n",
            case.what,
            case.params.total,
            case.batch,
            ms(theirs.median_step()),
            ratio(step, theirs.median_step()),
            phase_ratio(0),
            phase_ratio(1),
            phase_ratio(2),
            phase_ratio(3),
            ms(*data),
        );
        let side = |s: &Samples| (0..4).map(|i| ms(s.median_phase(i))).collect::<Vec<_>>().join(" | ");
        split += &format!("| {} | {} | {} |\n", case.what, side(ours), side(theirs));
        if let Some(s) = median(&ours.sample) {
            let t = median(&theirs.sample);
            let what = case.sample.as_ref().map_or("", |s| s.what.as_str());
            sampling += &format!("| {}: {what} | {s:.3} | {} | {} |\n", case.what, ms(t), ratio(s, t));
        }
    }
    let tables = format!(
        "CPU tier: {tier}; rayon threads: {}; {note}\n\nTraining step (median ms; the phase columns are ours/torch per phase):\n\n{steps}\nWhere the time goes (median ms per phase):\n\n{split}\nSampling:\n\n{sampling}{}",
        rayon::current_num_threads(),
        if sets.note.is_empty() { String::new() } else { format!("\nData column: {}\n", sets.note) }
    );
    println!("\n{tables}");
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let md = format!("# bench_chapters\n\nCommand: `cargo run --release --example bench_chapters -- {}`\n\n{tables}", std::env::args().skip(1).collect::<Vec<_>>().join(" "));
    std::fs::write(&args.out, md).map_err(|e| Error::io(&args.out, e))?;
    println!("wrote {}", args.out.display());
    Ok(())
}
