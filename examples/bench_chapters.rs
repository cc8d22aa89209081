//! One training step of every chapter's model, side by side with its PyTorch twin.
//!
//! ```text
//! cargo run --release --example bench_chapters -- --torch
//! cargo run --release --example bench_chapters -- --smoke          # batch 8, 3 steps (CI)
//! cargo run --release --example bench_chapters -- --cases vae,vqvae_mnist --torch
//! ```
//!
//! Each case builds the chapter's model through the library at the example's
//! default configuration, with the example's batch size, optimiser, gradient
//! clipping and loss, and times its training step: three warm-up steps, then
//! the median of 10 to 50 steps (about two seconds' worth). The inputs are
//! random batches of the right shape (images in [0, 1], labels, token ids),
//! made once and fed to every step, so the step time is the model's, not the
//! loader's; the `data` column times the real batching path (a batch gathered
//! from the loaded MNIST or CIFAR-10 set, and for CLIP its captions tokenized)
//! on its own. The step is split where the time goes, with an `Instant` at each
//! border: forward (the model and the loss, and for the VQ-VAE its EMA codebook
//! update), backward, optimiser (zero_grad, gradient clipping, the Adam step)
//! and other (reading the loss and the metrics the example logs).
//!
//! With `--torch`, `benches/torch_chapters.py` builds the same model in PyTorch
//! from the specification this program sends it, right after each case has run
//! here (so that both sides meet the same load on a shared machine), on as many
//! threads as rayon uses here, times it the same way and prints its parameter counts, which
//! must equal ours (the program stops if one differs). The ratio is ours / torch:
//! below 1 we are faster. The generators also time one sampling step (GPT: one
//! token for a batch of 200 through the KV cache, as chapter 01 samples).

use clap::Parser;
use dalle::data::batch::BatchSampler;
use dalle::data::captions::{class_caption, num_templates};
use dalle::data::{self, DatasetName, ImageDataset, Split};
use dalle::eval::DigitJudge;
use dalle::models::clip::{contrastive_loss, ClipConfig, ClipModel, ClipTextConfig, ClipVisionConfig, HiddenAct};
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

#[derive(Parser)]
#[command(about = "Time one training step of every chapter's model against its PyTorch twin")]
struct Args {
    /// Batch 8 and 1 + 2 steps: a check that every case runs, in seconds.
    #[arg(long)]
    smoke: bool,
    /// Also run benches/torch_chapters.py (skipped with a message when python or torch is missing).
    #[arg(long)]
    torch: bool,
    /// Comma-separated cases (default: all): judge, gpt, vit, clip, vae, vqvae_mnist, vqvae_cifar10, dvae.
    #[arg(long, default_value = "judge,gpt,vit,clip,vae,vqvae_mnist,vqvae_cifar10,dvae")]
    cases: String,
    /// The data folder for the `data` column (default: as the examples find it).
    #[arg(long)]
    data_dir: Option<PathBuf>,
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

/// One chapter's model, ready to step.
struct Case {
    name: &'static str,
    /// The example it mirrors and what trains.
    what: String,
    /// Trainable parameters (what the optimiser updates).
    params: usize,
    batch: usize,
    /// What the PyTorch twin needs to build the same model.
    spec: Value,
    step: Step,
    /// One sampling step of a generator (ms per call, how many steps one call makes).
    sample: Option<(Box<dyn FnMut() -> Result<()>>, usize)>,
    /// The real batching path, timed alone.
    data: Option<Box<dyn FnMut()>>,
}

/// Medians of a case's timed steps, in milliseconds.
struct Timing {
    step: f64,
    phases: [f64; 4],
    steps: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Warm-up steps, then the median of enough steps for about two seconds (10 to 50).
/// Keep in sync with `time_steps` in benches/torch_chapters.py.
fn time_steps(step: &mut Step, smoke: bool) -> Result<Timing> {
    let warmup = if smoke { 1 } else { 3 };
    let mut first = 0.0;
    for _ in 0..warmup {
        let t = Instant::now();
        step(&mut Laps::start())?;
        first = t.elapsed().as_secs_f64();
    }
    let reps = if smoke { 2 } else { (2.0 / first.max(1e-6)).ceil().clamp(10.0, 50.0) as usize };
    let (mut totals, mut phases) = (Vec::with_capacity(reps), vec![Vec::with_capacity(reps); 4]);
    for _ in 0..reps {
        let t = Instant::now();
        let mut laps = Laps::start();
        step(&mut laps)?;
        totals.push(t.elapsed().as_secs_f64() * 1e3);
        for (p, ms) in phases.iter_mut().zip(laps.ms) {
            p.push(ms);
        }
    }
    let mut medians = [0.0; 4];
    for (m, p) in medians.iter_mut().zip(phases) {
        *m = median(p);
    }
    Ok(Timing { step: median(totals), phases: medians, steps: reps })
}

/// The median of `reps` calls after one warm-up call, in milliseconds.
fn time_calls(f: &mut dyn FnMut() -> Result<()>, reps: usize) -> Result<f64> {
    f()?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(times))
}

fn trainable(model: &dyn Module) -> Vec<(String, Tensor)> {
    model.named_parameters().into_iter().filter(|(_, t)| t.requires_grad()).collect()
}

fn count(params: &[(String, Tensor)]) -> usize {
    params.iter().map(|(_, t)| t.len()).sum()
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
        let mnist = wanted.iter().any(|c| !matches!(*c, "gpt" | "vqvae_cifar10")).then(|| load(DatasetName::Mnist)).flatten();
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
        opt.zero_grad();
        laps.lap(Phase::Optimizer);
        loss.backward();
        laps.lap(Phase::Backward);
        clip_grad_norm(&all, 1.0);
        opt.set_lr(3e-3);
        opt.step();
        laps.lap(Phase::Optimizer);
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
        sample: Some((Box::new(sample), context - 1)),
        data: None,
    })
}

/// Chapter 02's ViT on MNIST: 7x7 patches, width 64, 4 blocks of 4 heads, batch 64,
/// AdamW 2e-3 (decay 0.05), clipping at 1.
fn vit_case(b: usize, sets: &Sets) -> Result<Case> {
    let config = VitConfig {
        image_size: 28,
        patch_size: 7,
        channels: 1,
        width: 64,
        layers: 4,
        heads: 4,
        mlp_ratio: 4,
        activation: Activation::Gelu,
        ln_pre: false,
        num_classes: Some(10),
        dropout: 0.0,
    };
    let mut rng = Rng::new(0);
    let model = Vit::new(config, &mut rng)?;
    let named = model.named_parameters();
    let params = count(&named);
    let all = model.parameters();
    let mut opt = Adam::adamw(named, 2e-3, 0.05);
    let x = images(&mut rng, b, 1, 28);
    let labels: Vec<usize> = (0..b).map(|_| rng.below(10)).collect();
    let step: Step = Box::new(move |laps| {
        let loss = model.classify(&Tensor::new(x.clone()), true)?.cross_entropy(&labels)?;
        laps.lap(Phase::Forward);
        opt.zero_grad();
        laps.lap(Phase::Optimizer);
        loss.backward();
        laps.lap(Phase::Backward);
        clip_grad_norm(&all, 1.0);
        opt.set_lr(2e-3);
        opt.step();
        laps.lap(Phase::Optimizer);
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
    let config = ClipConfig {
        text_config: ClipTextConfig {
            hidden_size: 64,
            intermediate_size: 256,
            num_attention_heads: 4,
            num_hidden_layers: 2,
            max_position_embeddings: context,
            vocab_size: vocab,
            hidden_act: HiddenAct::QuickGelu,
            layer_norm_eps: 1e-5,
            eos_token_id: eot,
            pool_at_first_eos: true,
        },
        vision_config: ClipVisionConfig {
            hidden_size: 64,
            intermediate_size: 256,
            num_attention_heads: 4,
            num_hidden_layers: 3,
            image_size: 28,
            patch_size: 7,
            num_channels: 1,
            hidden_act: HiddenAct::QuickGelu,
            layer_norm_eps: 1e-5,
        },
        projection_dim: 32,
        logit_scale_init_value: (1.0f64 / 0.07).ln(),
    };
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
        opt.zero_grad();
        laps.lap(Phase::Optimizer);
        loss.backward();
        laps.lap(Phase::Backward);
        clip_grad_norm(&model.parameters(), 1.0);
        opt.set_lr(2e-3);
        opt.step();
        laps.lap(Phase::Optimizer);
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
        opt.zero_grad();
        laps.lap(Phase::Optimizer);
        loss.backward();
        laps.lap(Phase::Backward);
        opt.step();
        laps.lap(Phase::Optimizer);
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
        opt.zero_grad();
        laps.lap(Phase::Optimizer);
        loss.backward();
        laps.lap(Phase::Backward);
        opt.step();
        laps.lap(Phase::Optimizer);
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
        opt.zero_grad();
        laps.lap(Phase::Optimizer);
        loss.backward();
        laps.lap(Phase::Backward);
        opt.step();
        laps.lap(Phase::Optimizer);
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

/// Run benches/torch_chapters.py with `spec`; its last stdout line is JSON. Err says why it was skipped.
fn run_torch(spec: &Value, smoke: bool) -> std::result::Result<Value, String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/torch_chapters.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script).arg("--spec").arg(spec.to_string());
    if smoke {
        cmd.arg("--smoke");
    }
    // As many threads as rayon uses here (see bench_engine).
    let threads = rayon::current_num_threads().to_string();
    for var in ["BENCH_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"] {
        cmd.env(var, &threads);
    }
    let out = cmd.output().map_err(|e| format!("could not run python3: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("");
    let json: Value = serde_json::from_str(last)
        .map_err(|e| format!("{} gave no JSON ({e}); stderr: {}", script.display(), String::from_utf8_lossy(&out.stderr).trim()))?;
    if let Some(err) = json.get("error") {
        return Err(err.to_string());
    }
    Ok(json)
}

/// What this CPU offers the kernels (`DALLE_CPU` may one day pick a lower tier).
fn cpu_tier() -> String {
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
    let known = ["judge", "gpt", "vit", "clip", "vae", "vqvae_mnist", "vqvae_cifar10", "dvae"];
    let wanted: Vec<&str> = args.cases.split(',').map(str::trim).filter(|c| !c.is_empty()).collect();
    if let Some(bad) = wanted.iter().find(|c| !known.contains(c)) {
        return Err(Error::Config(format!("--cases: unknown case {bad:?}, expected some of {known:?}")));
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
            _ => dvae_case(small(64), &sets)?,
        });
    }

    // Each case runs here and then at once in its twin, so that both sides see the same
    // load on a shared machine (a twin per case costs a second of Python start-up).
    let mut timings = Vec::new();
    let mut torch = serde_json::Map::new();
    let mut note = String::from("PyTorch not run (pass --torch)");
    let (mut torch_version, mut twin_failed) = (None, false);
    for case in &mut cases {
        let t = time_steps(&mut case.step, args.smoke)?;
        let sample = match &mut case.sample {
            Some((f, tokens)) => Some(time_calls(f.as_mut(), if args.smoke { 1 } else { 5 })? / *tokens as f64),
            None => None,
        };
        let data = case.data.as_mut().map(|f| {
            time_calls(&mut || -> Result<()> { f(); Ok(()) }, if args.smoke { 2 } else { 20 }).expect("batching cannot fail")
        });
        println!("{:<14} {:>8} params  step {:>8.2} ms (median of {})", case.name, case.params, t.step, t.steps);
        timings.push((t, sample, data));
        if args.torch && !twin_failed {
            match run_torch(&json!({ case.name: case.spec }), args.smoke) {
                Ok(json) => {
                    torch_version = Some(format!("PyTorch {} on {} threads", json["torch"].as_str().unwrap_or("?"), json["threads"]));
                    if let Some(r) = json["cases"].get(case.name) {
                        // The twin must be the same model: equal parameter counts, or no comparison at all.
                        if r["params"].as_u64() != Some(case.params as u64) {
                            return Err(Error::Msg(format!(
                                "{}: the PyTorch twin has {} trainable parameters, ours {}; benches/torch_chapters.py must build the same model",
                                case.name, r["params"], case.params
                            )));
                        }
                        println!("{:<14} {:>8} params  step {:>8.2} ms in PyTorch", "", r["params"], r["step_ms"].as_f64().unwrap_or(f64::NAN));
                        torch.insert(case.name.to_string(), r.clone());
                    }
                }
                Err(why) => {
                    note = format!("PyTorch comparison skipped: {why}");
                    twin_failed = true;
                }
            }
        }
    }
    if let (Some(v), false) = (torch_version, twin_failed) {
        note = v;
    }
    let get = |name: &str, key: &str| torch.get(name).and_then(|v| v[key].as_f64());
    let mut steps = String::from("| model | parameters | batch | ours ms | torch ms | ours/torch | forward | backward | optimiser | other | data (ours) ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let mut split = String::from("| model | ours: forward | backward | optimiser | other | torch: forward | backward | optimiser | other |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let mut sampling = String::from("| model | ours ms / step | torch ms / step | ours/torch |\n|---|---:|---:|---:|\n");
    for (case, (t, sample, data)) in cases.iter().zip(&timings) {
        let phase_ratio = |i: usize| ratio(t.phases[i], get(case.name, &format!("{}_ms", PHASES[i])));
        steps += &format!(
            "| {} | {} | {} | {:.2} | {} | {} | {} | {} | {} | {} | {} |\n",
            case.what,
            case.params,
            case.batch,
            t.step,
            ms(get(case.name, "step_ms")),
            ratio(t.step, get(case.name, "step_ms")),
            phase_ratio(0),
            phase_ratio(1),
            phase_ratio(2),
            phase_ratio(3),
            ms(*data),
        );
        let theirs: Vec<String> = PHASES.iter().map(|p| ms(get(case.name, &format!("{p}_ms")))).collect();
        split += &format!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {} |\n",
            case.what,
            t.phases[0],
            t.phases[1],
            t.phases[2],
            t.phases[3],
            theirs.join(" | ")
        );
        if let Some(s) = sample {
            let theirs = get(case.name, "sample_ms");
            sampling += &format!("| {}: one token for a batch of {}, KV cache | {s:.3} | {} | {} |\n", case.what, case.spec["samples"], ms(theirs), ratio(*s, theirs));
        }
    }
    let tables = format!(
        "CPU tier: {tier}; {} rayon threads; {note}\n\nTraining step (median ms; the phase columns are ours/torch per phase):\n\n{steps}\nWhere the time goes (median ms per phase):\n\n{split}\nSampling:\n\n{sampling}{}",
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
