//! Chapter 12: a caption to an image with the shipped weights, from the book's three
//! generators (DALL-E 1, GLIDE, unCLIP), and the table that sets them side by side.
//!
//! ```text
//! cargo run --release --example text_to_image -- --model glide "a handwritten seven"
//! cargo run --release --example text_to_image -- --model all "the digit three" "a handwritten 8"
//! cargo run --release --example text_to_image -- --compare        # chapter 12's table and figure
//! ```
//!
//! No training and no data set: only `weights/`. Leaves in `runs/text_to_image/`:
//! `<model>.png` (one row per prompt), `<model>/samples.npy` + `prompts.txt` +
//! `labels.txt`, and with `--compare` also `side_by_side.png` (one row per model, one
//! column per prompt), `compare.csv` and `compare.md`.

use std::time::Instant;

use clap::Parser;
use dalle::data::captions::class_caption;
use dalle::data::{self, DatasetName, Split};
use dalle::eval::{frechet_distance, mean_pairwise_distance, DigitJudge, FeatureStats};
use dalle::io::{save_image_grid, write_samples, GridOptions};
use dalle::models::text_to_image::{load_generator, prompted_digit, TextToImage, MODEL_NAMES};
use dalle::train::{cell, wrote, CommonArgs, Progress};
use dalle::Error;
use ndarray::{concatenate, Array4, Axis};

/// Draw images for captions with the shipped generators.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// The generator: dalle1, glide, unclip, or all.
    #[arg(long, default_value = "all")]
    model: String,
    /// Images per prompt.
    #[arg(long, short = 'n', default_value_t = 8, value_parser = dalle::train::positive_usize)]
    per_prompt: usize,
    /// Also build chapter 12's comparison over digit captions (fidelity, diversity, speed).
    #[arg(long)]
    compare: bool,
    /// Captions per digit in --compare (each with `--per-prompt` images).
    #[arg(long, default_value_t = 5, value_parser = dalle::train::positive_usize)]
    compare_per_digit: usize,
    /// The captions [default: one per digit, "a handwritten 0" ... "a handwritten 9"].
    prompts: Vec<String>,
}

fn main() -> dalle::Result<()> {
    let args = Args::parse();
    let c = &args.common;
    let out = c.start("text_to_image", false, false)?;
    let names: Vec<&str> = match args.model.as_str() {
        "all" => MODEL_NAMES.to_vec(),
        name => vec![MODEL_NAMES.iter().copied().find(|&m| m == name).ok_or_else(|| {
            Error::Config(format!("--model {name:?} is not a generator; use one of {}, or all", MODEL_NAMES.join(", ")))
        })?],
    };
    let prompts = if args.prompts.is_empty() { (0..10).map(|d| class_caption(DatasetName::Mnist, d, 0)).collect() } else { args.prompts.clone() };
    let per_prompt = if c.smoke { args.per_prompt.min(2) } else { args.per_prompt };
    dalle::models::text_to_image::check_request(&prompts, per_prompt)?;

    cell(1, "Load the shipped generators");
    let mut generators: Vec<Box<dyn TextToImage>> = Vec::new();
    for name in &names {
        let timer = Instant::now();
        match load_generator(name, c.smoke) {
            Ok(g) => {
                println!("{name}: {} parameters, loaded in {:.2} s", g.num_parameters(), timer.elapsed().as_secs_f64());
                generators.push(g);
            }
            Err(e) if args.model == "all" => println!("{name}: skipped ({e})"),
            Err(e) => return Err(e),
        }
    }

    cell(2, "Check the prompts against the words each model was trained on");
    for g in &generators {
        for p in &prompts {
            let unknown = g.vocabulary().unknown_words(p);
            if !unknown.is_empty() {
                println!(
                    "warning: {}: {p:?} has words its training captions never used: {}. It may ignore them: a toy model knows only these {} words: {}",
                    g.name(),
                    unknown.join(", "),
                    g.vocabulary().len(),
                    g.vocabulary().iter().collect::<Vec<_>>().join(" ")
                );
            }
        }
    }

    cell(3, "Draw the images");
    let labels: Option<Vec<usize>> = prompts.iter().flat_map(|p| std::iter::repeat_n(prompted_digit(p), per_prompt)).collect();
    let repeated: Vec<String> = prompts.iter().flat_map(|p| std::iter::repeat_n(p.clone(), per_prompt)).collect();
    let judge = DigitJudge::pretrained()?;
    for g in &generators {
        let timer = Instant::now();
        let images = draw(g.as_ref(), &prompts, per_prompt, c.seed)?;
        let secs = timer.elapsed().as_secs_f64();
        let path = out.join(format!("{}.png", g.name()));
        save_image_grid(&path, &images, &GridOptions { scale: 2, ..GridOptions::with_nrow(per_prompt) })?;
        write_samples(out.join(g.name()), &images, &repeated, labels.as_deref())?;
        print!("{}: {} images in {secs:.1} s ({:.2} s per image)", g.name(), images.dim().0, secs / images.dim().0 as f64);
        if let Some(labels) = &labels {
            print!("; the digit judge reads the prompted digit in {:.0} %", 100.0 * judge.fidelity(&images, labels)?);
        }
        println!();
        wrote(&path);
    }

    if args.compare {
        compare(&args, &generators, &judge, &out)?;
    }
    Ok(())
}

/// `generate` with a progress bar over the sampling steps.
fn draw(g: &dyn TextToImage, prompts: &[String], per_prompt: usize, seed: u64) -> dalle::Result<Array4<f32>> {
    let mut progress: Option<Progress> = None;
    let images = g.generate(prompts, per_prompt, seed, &mut |done, total| {
        progress.get_or_insert_with(|| Progress::new(g.name(), total)).update(done, &[]);
    })?;
    if let Some(p) = progress {
        p.finish();
    }
    Ok(images)
}

// ANCHOR: compare
/// Chapter 12's table: the same digit captions and seed for every generator.
fn compare(args: &Args, generators: &[Box<dyn TextToImage>], judge: &DigitJudge, out: &std::path::Path) -> dalle::Result<()> {
    cell(4, "Compare the generators on the same digit captions and seed");
    let c = &args.common;
    let (per_digit, n) = if c.smoke { (1, 2) } else { (args.compare_per_digit, args.per_prompt.max(2)) };
    let prompts: Vec<String> = (0..per_digit).flat_map(|j| (0..10).map(move |d| class_caption(DatasetName::Mnist, d, j))).collect(); // every template in turn
    let labels: Vec<usize> = prompts.iter().flat_map(|p| std::iter::repeat_n(prompted_digit(p).expect("a digit caption"), n)).collect();
    // the first 2000 real test images are the Fréchet reference; later ones, arranged like the
    // generated set (n of the prompted digit per caption), are the row every model is measured against
    let reference_size = if c.smoke { 200 } else { 2000 };
    let (reference, real) = match data::load(DatasetName::Mnist, &c.data_dir(), Split::Test, None) {
        Ok(test) => {
            let r = FeatureStats::from_rows(&judge.feature_rows(&test.images.slice(ndarray::s![..reference_size, .., .., ..]).to_owned())?)?;
            let mut next = reference_size..test.labels.len();
            let picks: Option<Vec<usize>> = labels.iter().map(|&d| next.find(|&i| test.labels[i] == d)).collect(); // each digit's next unused image
            (Some(r), picks.map(|p| test.images.select(Axis(0), &p)))
        }
        Err(e) => {
            println!("no Fréchet distance and no real-digit row: {e}");
            (None, None)
        }
    };
    let mut rows = vec!["model,parameters,images,fidelity,pairwise_distance,frechet,seconds_per_image,training_minutes".to_string()];
    let mut table = vec![
        "| model | parameters | images | digit fidelity | pairwise distance within a prompt | Fréchet distance (judge features) | seconds per image | training minutes |".to_string(),
        "|---|---:|---:|---:|---:|---:|---:|---:|".to_string(),
    ];
    let mut measure = |name: &str, images: &Array4<f32>, params: String, secs: String, minutes: String| -> dalle::Result<()> {
        let fidelity = judge.fidelity(images, &labels)? as f64;
        let pairwise = mean_pairwise_distance(images, n)?;
        let fd = match &reference {
            Some(r) => frechet_distance(&FeatureStats::from_rows(&judge.feature_rows(images)?)?, r),
            None => f64::NAN,
        };
        println!("{name:>12}: fidelity {:.1} %, pairwise distance {pairwise:.3}, Fréchet {fd:.2}, {secs} s per image", 100.0 * fidelity);
        rows.push(format!("{name},{params},{},{fidelity:.4},{pairwise:.4},{fd:.3},{secs},{minutes}", images.dim().0));
        table.push(format!("| {name} | {params} | {} | {:.1} % | {pairwise:.3} | {fd:.2} | {secs} | {minutes} |", images.dim().0, 100.0 * fidelity));
        Ok(())
    };
    if let Some(real) = &real {
        measure("real digits", real, "-".into(), "-".into(), "-".into())?;
    }
    let mut firsts = Vec::new();
    for g in generators {
        let timer = Instant::now();
        let images = draw(g.as_ref(), &prompts, n, c.seed)?; // (P·n, 1, 28, 28)
        let secs = timer.elapsed().as_secs_f64() / images.dim().0 as f64;
        measure(g.name(), &images, g.num_parameters().to_string(), format!("{secs:.3}"), format!("{:.0}", g.training_minutes()))?;
        firsts.push(images.select(Axis(0), &(0..10).map(|p| p * n).collect::<Vec<_>>())); // the first image of each digit
    }
    let csv = out.join("compare.csv");
    std::fs::write(&csv, rows.join("\n") + "\n").map_err(|e| Error::io(&csv, e))?;
    wrote(&csv);
    let md = out.join("compare.md");
    std::fs::write(&md, table.join("\n") + "\n").map_err(|e| Error::io(&md, e))?;
    println!("{}", table.join("\n"));
    wrote(&md);
    if !firsts.is_empty() {
        let views: Vec<_> = firsts.iter().map(|a| a.view()).collect();
        let side = concatenate(Axis(0), &views).map_err(|e| Error::Msg(format!("side by side: {e}")))?; // (models · 10, 1, 28, 28)
        let path = out.join("side_by_side.png");
        save_image_grid(&path, &side, &GridOptions { scale: 3, ..GridOptions::with_nrow(10) })?;
        wrote(&path);
    }
    Ok(())
}
// ANCHOR_END: compare
