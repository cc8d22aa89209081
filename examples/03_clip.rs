//! Chapter 03: CLIP trained from scratch on captioned MNIST (or Shapes), then
//! zero-shot classification, a similarity heatmap and text-to-image retrieval.
//!
//! ```text
//! cargo run --release --example 03_clip                       # MNIST, ~15 min on 2 cores
//! cargo run --release --example 03_clip -- --dataset shapes   # Shapes: colour / shape / count
//! cargo run --release --example 03_clip -- --smoke            # seconds
//! cargo run --release --example 03_clip -- --weights weights/clip_mnist.safetensors   # evaluate only
//! cargo run --release --example 03_clip -- zero-shot --weights path/to/clip-vit-base-patch32 \
//!     --image cat.jpg --labels "a cat,a dog"
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use dalle::data::captions::{class_caption, num_templates};
use dalle::data::shapes::{Colour, ShapeKind, ShapesSample, SizeKind};
use dalle::data::batch::BatchSampler;
use dalle::data::{self, DatasetName, ImageDataset, Split};
use dalle::io::{self, checkpoint, GridOptions};
use dalle::models::clip::load::{config_path_for, tokenizer_path_for};
use dalle::models::clip::preprocess::{load_image, normalize_unit};
use dalle::models::clip::zero_shot::{accuracy, dataset_prompts, class_embeddings, cosine_similarity, image_embeddings, predict, text_embeddings};
use dalle::models::clip::{contrastive_loss, ClipConfig, ClipModel};
use dalle::nn::Module;
use dalle::optim::{clip_grad_norm, Adam, Optimizer, WarmupCosine};
use dalle::tokenizer::{ClipBpe, TextTokenizer, TrainedBpe};
use dalle::train::notebook::{cell, wrote};
use dalle::train::{check_finite, resume_from, save_or_stop, CommonArgs, MetricsLog, Progress, RunState};
use dalle::{Error, Rng, Tensor};
use ndarray::{s, Array2, Array4, Axis};

#[derive(Parser)]
#[command(about = "CLIP: contrastive text-image training, zero-shot classification, retrieval")]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Classify one image among labels with a CLIP: a Hugging Face folder or a checkpoint of this chapter.
    ZeroShot {
        /// A Hugging Face CLIP folder (config.json + model.safetensors) or a `.safetensors` trained here.
        #[arg(long)]
        weights: PathBuf,
        /// The image to classify (PNG or JPEG).
        #[arg(long)]
        image: PathBuf,
        /// Comma-separated labels, e.g. "a cat,a dog".
        #[arg(long)]
        labels: String,
        /// The prompt around each label; `{}` is replaced by the label.
        #[arg(long, default_value = "a photo of {}.")]
        template: String,
    },
}


/// Every caption a data set can produce, for training the tokenizer.
fn tokenizer_corpus(dataset: DatasetName, train: &ImageDataset) -> Vec<String> {
    match &train.captions {
        Some(c) => c.clone(),
        None => (0..train.classes.len()).flat_map(|l| (0..num_templates(dataset)).map(move |t| class_caption(dataset, l, t))).collect(),
    }
}

fn images_tensor(images: &Array4<f32>) -> Tensor {
    Tensor::new(normalize_unit(images).into_dyn())
}

// ANCHOR: train_step
/// One step: embed the batch's images and captions, score all N x N pairs, and
/// pull the N matching pairs together while pushing the N² - N others apart.
fn train_step(model: &ClipModel, opt: &mut Adam, images: &Array4<f32>, ids: &Array2<u32>, lr: f32, step: usize) -> dalle::Result<(f32, f32)> {
    let out = model.forward(&images_tensor(images), ids)?; // logits (N, N)
    let loss = contrastive_loss(&out.logits_per_image)?; // ½ (CE rows + CE columns)
    opt.zero_grad();
    loss.backward();
    let norm = clip_grad_norm(&model.parameters(), 1.0);
    check_finite(step, loss.item(), Some(norm), &model.named_parameters())?; // NaN stops the run here
    opt.set_lr(lr);
    opt.step();
    Ok((loss.item(), model.logit_scale_exp().item()))
}
// ANCHOR_END: train_step

/// Trains a CLIP; `None` when `--stop-at` stopped it (a resumable checkpoint is saved).
fn train(args: &CommonArgs, dataset: DatasetName, out: &Path) -> dalle::Result<Option<(ClipModel, TrainedBpe)>> {
    cell(1, "Load the data and train a tokenizer on the captions");
    let dir = args.data_dir();
    let limit = match dataset {
        DatasetName::Shapes => Some(if args.smoke { 256 } else { 30_000 }),
        _ => args.limit_or(512),
    };
    let train_set = data::load(dataset, &dir, Split::Train, limit)?;
    let corpus = tokenizer_corpus(dataset, &train_set);
    let tokenizer = TrainedBpe::train(&corpus, 512)?;
    println!("{} training images {:?}; tokenizer: {} tokens", train_set.len(), train_set.image_shape(), tokenizer.vocab_size());
    let example = &corpus[0];
    println!("caption {example:?} -> ids {:?}", tokenizer.encode(example)?);

    cell(2, "Build the two towers");
    let config = ClipConfig::toy(dataset, tokenizer.vocab_size(), tokenizer.eot());
    let mut rng = Rng::new(args.seed);
    let model = ClipModel::new(&config, &mut rng)?;
    println!(
        "vision: {} patches of {}x{}, text: context {}; {} parameters",
        config.vision_config.grid().pow(2),
        config.vision_config.patch_size,
        config.vision_config.patch_size,
        config.text_config.max_position_embeddings,
        model.num_parameters()
    );

    cell(3, "Contrastive training");
    let steps = args.steps_or(if dataset == DatasetName::Shapes { 2000 } else { 2500 }, 20);
    let batch = args.batch_size_or(128, 16);
    let schedule = WarmupCosine { base_lr: args.lr_or(2e-3) as f32, min_lr: 1e-5, warmup: 200.min(steps / 5).max(1), total: steps };
    let mut opt = Adam::adamw(model.named_parameters(), schedule.base_lr, 0.01);
    let mut sampler = BatchSampler::try_new(train_set.len(), batch, args.seed)?;
    let mut caption_rng = Rng::new(args.seed + 1);
    // --resume: weights, AdamW, step, the data order and the caption templates' generator.
    let resumed = resume_from(args, &model, &mut opt, steps)?;
    if let Some(r) = &resumed {
        r.restore_sampler("train", &mut sampler)?;
        r.restore_rng("captions", &mut caption_rng)?;
        r.restore_rng("model", &mut rng)?;
    }
    let mut log = MetricsLog::create_or_resume(out, resumed.as_ref().map(|r| r.step))?;
    let progress = Progress::new("clip", steps);
    let context = config.text_config.max_position_embeddings;
    for step in resumed.as_ref().map_or(0, |r| r.step)..steps {
        let idx = sampler.next_batch();
        let (images, labels) = train_set.batch(&idx);
        let captions: Vec<String> = match &train_set.captions {
            Some(c) => idx.iter().map(|&i| c[i].clone()).collect(),
            // A fresh template each time the image is seen: "a handwritten 7", "the digit seven", ...
            None => labels.iter().map(|&l| class_caption(dataset, l, caption_rng.below(num_templates(dataset)))).collect(),
        };
        let refs: Vec<&str> = captions.iter().map(|c| c.as_str()).collect();
        let ids = tokenizer.encode_batch(&refs, context, true)?; // (N, T)
        let (loss, scale) = train_step(&model, &mut opt, &images, &ids, schedule.lr(step), step + 1)?;
        log.log(step + 1, &[("loss", loss as f64), ("logit_scale", scale as f64)])?;
        progress.update(step + 1, &[("loss", loss), ("exp(t)", scale)]);
        let state = RunState::new(step + 1).sampler("train", &sampler).rng("captions", &caption_rng).rng("model", &rng);
        if save_or_stop(args, &out.join("checkpoint.safetensors"), steps, &model, &opt, &state)? {
            return Ok(None);
        }
    }
    progress.finish();
    println!("trained {steps} steps of {batch} pairs in {:.0} s", progress.elapsed().as_secs_f64());
    let records = dalle::train::metrics::read_metrics(log.path())?;
    let plot = out.join("loss.png");
    io::plot_lines(&plot, "contrastive loss", "step", "loss", &[dalle::train::metrics::series(&records, "loss")], false)?;
    wrote(&plot);

    let weights = out.join(format!("clip_{}.safetensors", dataset.as_str().replace('-', "_")));
    checkpoint::save(&weights, &model, None, &HashMap::new())?;
    std::fs::write(config_path_for(&weights), config.to_json()).map_err(|e| Error::io(config_path_for(&weights), e))?;
    tokenizer.save(tokenizer_path_for(&weights))?;
    wrote(&weights);
    Ok(Some((model, tokenizer)))
}

fn evaluate_mnist(args: &CommonArgs, model: &ClipModel, tokenizer: &dyn TextTokenizer, dataset: DatasetName, out: &Path) -> dalle::Result<()> {
    // ANCHOR: zero_shot
    cell(4, "Zero-shot classification on the test set (prompts only, no labels)");
    let test = data::load(dataset, &args.data_dir(), Split::Test, args.limit_or(500))?;
    let class_emb = class_embeddings(model, tokenizer, &dataset_prompts(dataset))?; // (10, E)
    let image_emb = image_embeddings(model, normalize_unit(&test.images).view(), 500)?; // (N, E)
    let predicted = predict(&cosine_similarity(&image_emb, &class_emb)); // argmax_k cos(I, w_k)
    println!("zero-shot accuracy on {} test images: {:.2}%", test.len(), 100.0 * accuracy(&predicted, &test.labels));
    // ANCHOR_END: zero_shot

    cell(5, "The similarity matrix: one test image per class against every class prompt");
    let firsts: Vec<usize> = (0..10).filter_map(|k| test.labels.iter().position(|&l| l == k)).collect();
    let sims = cosine_similarity(&image_emb.select(Axis(0), &firsts), &class_emb); // (10, 10)
    let columns: Vec<String> = test.classes.iter().map(|c| format!("\"{c}\"")).collect();
    let rows: Vec<String> = firsts.iter().map(|&i| format!("image of {}", test.labels[i])).collect();
    let heat = out.join("similarity.png");
    io::plot_heatmap(&heat, "cosine similarity: test images x class prompt ensembles", &sims, &rows, &columns)?;
    wrote(&heat);

    cell(6, "Text-to-image retrieval: the 5 test images closest to a prompt");
    let queries = ["a handwritten 3", "the digit seven", "a picture of the number zero", "an image of a handwritten 8"];
    let query_emb = text_embeddings(model, tokenizer, &queries.iter().map(|q| q.to_string()).collect::<Vec<_>>(), 8)?;
    let scores = cosine_similarity(&query_emb, &image_emb); // (Q, N)
    let mut picks = Vec::new();
    for (q, row) in queries.iter().zip(scores.rows()) {
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        let top: Vec<usize> = order[..5.min(order.len())].to_vec();
        println!("{q:?}: top-5 labels {:?}", top.iter().map(|&i| test.labels[i]).collect::<Vec<_>>());
        picks.extend(top);
    }
    let grid = out.join("retrieval.png");
    let (images, _) = test.batch(&picks);
    io::save_image_grid(&grid, &images, &GridOptions { scale: 3, ..GridOptions::with_nrow(5) })?;
    wrote(&grid);
    Ok(())
}

/// Shapes zero-shot probes: colour and shape on one-object images, count on
/// images of one to three identical objects ("two small red circles").
fn evaluate_shapes(args: &CommonArgs, model: &ClipModel, tokenizer: &dyn TextTokenizer, out: &Path) -> dalle::Result<()> {
    cell(4, "Zero-shot colour, shape and count on Shapes test images");
    let shapes = data::shapes::Shapes::new(data::shapes::ShapesConfig::for_split(Split::Test))?;
    let n = if args.smoke { 200 } else { 6000 };
    let samples: Vec<ShapesSample> = (0..n as u64).map(|i| shapes.sample(i)).collect();
    let identical = |s: &ShapesSample| s.objects.iter().all(|o| o.shape == s.objects[0].shape && o.colour == s.objects[0].colour && o.size == s.objects[0].size);
    let single: Vec<&ShapesSample> = samples.iter().filter(|s| s.count() == 1).collect();
    let counted: Vec<&ShapesSample> = samples.iter().filter(|s| identical(s)).collect();
    let stack = |set: &[&ShapesSample]| {
        let mut a = Array4::<f32>::zeros((set.len(), 3, 32, 32));
        for (i, s) in set.iter().enumerate() {
            a.slice_mut(s![i, .., .., ..]).assign(&s.image);
        }
        a
    };
    let colours = Colour::ALL;
    let kinds = ShapeKind::ALL;
    let sizes = ["small", "large"];
    // Class prompts, ensembled over the attributes that are not being asked about.
    let phrase = |count: usize, size: &str, colour: Colour, kind: ShapeKind| match count {
        1 => format!("a {size} {} {}", colour.name(), kind.name()),
        c => format!("{} {size} {} {}s", ["", "", "two", "three"][c], colour.name(), kind.name()),
    };
    let every = |f: &dyn Fn(usize, &str, Colour, ShapeKind) -> bool| -> Vec<String> {
        let mut v = Vec::new();
        for c in 1..=3 {
            for size in sizes {
                for &col in &colours {
                    for &k in &kinds {
                        if f(c, size, col, k) {
                            v.push(phrase(c, size, col, k));
                        }
                    }
                }
            }
        }
        v
    };
    let colour_prompts: Vec<Vec<String>> = colours.iter().map(|&c| every(&|n, _, col, _| n == 1 && col == c)).collect();
    let kind_prompts: Vec<Vec<String>> = kinds.iter().map(|&k| every(&|n, _, _, kind| n == 1 && kind == k)).collect();
    let count_prompts: Vec<Vec<String>> = (1..=3).map(|c| every(&|n, _, _, _| n == c)).collect();

    let single_emb = image_embeddings(model, normalize_unit(&stack(&single)).view(), 500)?;
    let counted_emb = image_embeddings(model, normalize_unit(&stack(&counted)).view(), 500)?;
    let probe = |name: &str, prompts: &[Vec<String>], emb: &Array2<f32>, truth: Vec<usize>| -> dalle::Result<Vec<usize>> {
        let pred = predict(&cosine_similarity(emb, &class_embeddings(model, tokenizer, prompts)?));
        println!("zero-shot {name}: {:.1}% of {} images", 100.0 * accuracy(&pred, &truth), truth.len());
        Ok(pred)
    };
    probe("colour", &colour_prompts, &single_emb, single.iter().map(|s| colours.iter().position(|&c| c == s.objects[0].colour).unwrap()).collect())?;
    let shape_truth: Vec<usize> = single.iter().map(|s| s.objects[0].shape as usize).collect();
    let shape_pred = probe("shape", &kind_prompts, &single_emb, shape_truth.clone())?;
    for size in [SizeKind::Small, SizeKind::Large] {
        let keep: Vec<usize> = (0..single.len()).filter(|&i| single[i].objects[0].size == size).collect();
        let pick = |v: &[usize]| keep.iter().map(|&i| v[i]).collect::<Vec<_>>();
        println!("   shape of {} objects: {:.1}% of {}", size.name(), 100.0 * accuracy(&pick(&shape_pred), &pick(&shape_truth)), keep.len());
    }
    // The same question with the other attributes given: "a small red ___" among the three shapes.
    let mut given = Vec::new();
    for s in &single {
        let o = s.objects[0];
        given.extend(kinds.iter().map(|&k| phrase(1, o.size.name(), o.colour, k)));
    }
    let given_emb = text_embeddings(model, tokenizer, &given, 256)?; // (3 · images, E)
    let given_pred: Vec<usize> = (0..single.len())
        .map(|i| predict(&cosine_similarity(&single_emb.slice(s![i..i + 1, ..]).to_owned(), &given_emb.slice(s![3 * i..3 * i + 3, ..]).to_owned()))[0])
        .collect();
    println!("   shape with size and colour given in the prompt: {:.1}%", 100.0 * accuracy(&given_pred, &shape_truth));
    let count_truth: Vec<usize> = counted.iter().map(|s| s.count() - 1).collect();
    let count_pred = probe("count", &count_prompts, &counted_emb, count_truth.clone())?;
    let mut given = Vec::new();
    for s in &counted {
        let o = s.objects[0];
        given.extend((1..=3).map(|c| phrase(c, o.size.name(), o.colour, o.shape)));
    }
    let given_emb = text_embeddings(model, tokenizer, &given, 256)?; // (3 · images, E)
    let given_pred: Vec<usize> = (0..counted.len())
        .map(|i| predict(&cosine_similarity(&counted_emb.slice(s![i..i + 1, ..]).to_owned(), &given_emb.slice(s![3 * i..3 * i + 3, ..]).to_owned()))[0])
        .collect();
    println!("   count with size, colour and shape given in the prompt: {:.1}%", 100.0 * accuracy(&given_pred, &count_truth));
    let mut given_confusion = Array2::<f32>::zeros((3, 3));
    for (&t, &p) in count_truth.iter().zip(&given_pred) {
        given_confusion[[t, p]] += 1.0;
    }
    println!("   its confusion (rows: true 1, 2, 3; columns: predicted 1, 2, 3):\n{given_confusion}");
    let mut confusion = Array2::<f32>::zeros((3, 3));
    for (&t, &p) in count_truth.iter().zip(&count_pred) {
        confusion[[t, p]] += 1.0;
    }
    println!("count confusion (rows: true 1, 2, 3; columns: predicted 1, 2, 3):\n{confusion}");
    let labels: Vec<String> = ["one", "two", "three"].iter().map(|s| s.to_string()).collect();
    let heat = out.join("count_confusion.png");
    io::plot_heatmap(&heat, "count: true (rows) x predicted", &confusion, &labels, &labels)?;
    wrote(&heat);
    Ok(())
}

/// Zero-shot on one image with a real (Hugging Face) CLIP or a checkpoint trained here.
fn zero_shot_one(weights: &Path, image: &Path, labels: &str, template: &str) -> dalle::Result<()> {
    let labels: Vec<String> = labels.split(',').map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
    if labels.len() < 2 {
        return Err(Error::Config(format!("--labels {labels:?}: give at least two comma-separated labels")));
    }
    if template.matches("{}").count() != 1 {
        // Without `{}` every label gets the same prompt, and the answer is a coin toss.
        return Err(Error::Config(format!("--template {}: must hold `{{}}` once, where the label goes", dalle::error::quote(template))));
    }
    let prompts: Vec<Vec<String>> = labels.iter().map(|l| vec![template.replace("{}", l)]).collect();
    let (model, tokenizer, pixels): (ClipModel, Box<dyn TextTokenizer>, Array4<f32>) = if weights.is_dir() {
        let model = dalle::models::clip::load_pretrained(weights)?;
        let pixels = load_image(image, model.config.vision_config.image_size)?;
        (model, Box::new(ClipBpe::load_default()?), pixels)
    } else {
        let model = dalle::models::clip::load_files(&config_path_for(weights), weights)?;
        let v = &model.config.vision_config;
        if v.num_channels != 1 && v.num_channels != 3 {
            return Err(Error::Config(format!(
                "{}: num_channels = {}, but an image file gives 1 (grey) or 3 (RGB) channels",
                config_path_for(weights).display(),
                v.num_channels
            )));
        }
        let img = image::open(image).map_err(|e| Error::format(image, format!("cannot read image: {e}")))?;
        let img = img.resize_exact(v.image_size as u32, v.image_size as u32, image::imageops::FilterType::Triangle);
        let mut a = Array4::<f32>::zeros((1, v.num_channels, v.image_size, v.image_size));
        let rgb = img.to_rgb8();
        for (x, y, p) in rgb.enumerate_pixels() {
            for c in 0..v.num_channels {
                let value = if v.num_channels == 1 { (p[0] as f32 + p[1] as f32 + p[2] as f32) / 765.0 } else { p[c] as f32 / 255.0 };
                a[[0, c, y as usize, x as usize]] = 2.0 * value - 1.0;
            }
        }
        (model, Box::new(TrainedBpe::load(tokenizer_path_for(weights))?), a)
    };
    let class_emb = class_embeddings(&model, tokenizer.as_ref(), &prompts)?;
    let image_emb = image_embeddings(&model, pixels.view(), 1)?;
    let logits = cosine_similarity(&image_emb, &class_emb).mapv(|v| v * model.logit_scale_exp().item()); // (1, K)
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let z: f32 = logits.iter().map(|&v| (v - max).exp()).sum();
    for (k, l) in labels.iter().enumerate() {
        println!("{:>6.2}%  {l}", 100.0 * (logits[[0, k]] - max).exp() / z);
    }
    Ok(())
}

fn main() -> dalle::Result<()> {
    // Kernels split their work with rayon; see `on_worker` for why main runs on the pool.
    dalle::backend::on_worker(notebook)
}

fn notebook() -> dalle::Result<()> {
    let args = Args::parse();
    if let Some(Command::ZeroShot { weights, image, labels, template }) = &args.command {
        return zero_shot_one(weights, image, labels, template);
    }
    let common = &args.common;
    let dataset = common.dataset_or(DatasetName::Mnist);
    let out = common.start(&format!("03_clip/{}", dataset.as_str()), true, true)?;
    let (model, tokenizer) = match &common.weights {
        // A checkpoint of this chapter (with its .config.json and .tokenizer.json): evaluate only.
        Some(weights) => {
            cell(1, "Load a trained CLIP (no training)");
            let loaded = dalle::models::clip::load::load_toy(weights)?;
            println!("loaded {}", weights.display());
            loaded
        }
        None => match train(common, dataset, &out)? {
            Some(trained) => trained,
            None => return Ok(()), // --stop-at
        },
    };
    match dataset {
        DatasetName::Shapes => evaluate_shapes(common, &model, &tokenizer, &out),
        _ => evaluate_mnist(common, &model, &tokenizer, dataset, &out),
    }
}
