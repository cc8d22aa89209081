//! Chapter 12: a caption to an image with the shipped weights, from the book's three
//! generators (DALL-E 1, GLIDE, unCLIP), and the table that sets them side by side.
//!
//! ```text
//! cargo run --release --example text_to_image -- --model glide "a handwritten seven"
//! cargo run --release --example text_to_image -- --model all "the digit three" "a handwritten 8"
//! cargo run --release --example text_to_image -- --dataset shapes "a small red circle above a large blue square"
//! cargo run --release --example text_to_image -- --compare        # chapter 12's tables and figure
//! ```
//!
//! No training and no data set: only `weights/`. Leaves in `runs/text_to_image/`:
//! `<model>.png` (one row per prompt), `<model>/samples.npy` + `prompts.txt` +
//! `labels.txt`, and with `--compare` also `side_by_side.png` (one row per model, one
//! column per prompt: ten digit captions, then Shapes captions), `compare.csv`,
//! `compare.md`, `compare_shapes.csv` and `compare_shapes.md`.

use std::time::Instant;

use clap::Parser;
use dalle::data::captions::class_caption;
use dalle::data::shapes::{Shapes, ShapesConfig};
use dalle::data::{self, DatasetName, Split};
use dalle::eval::shapes::parse_caption;
use dalle::eval::shapes_fidelity::{relation_prompts, single_object_prompts};
use dalle::eval::{frechet_distance, mean_pairwise_distance, DigitJudge, FeatureStats, ShapesFidelity};
use dalle::io::{save_image_grid, write_samples, GridOptions};
use dalle::models::text_to_image::{load_generator, prompted_digit, TextToImage, DATASETS, MODEL_NAMES};
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
    /// Two-object Shapes captions in --compare (each with `--per-prompt` images; the 36
    /// one-object captions are always there).
    #[arg(long, default_value_t = 50, value_parser = dalle::train::positive_usize)]
    compare_relations: usize,
    /// The captions [default: one per digit, "a handwritten 0" ... "a handwritten 9";
    /// with `--dataset shapes`, the Shapes captions of the figure].
    prompts: Vec<String>,
}

/// The Shapes captions of chapter 12's figure (and the default with `--dataset shapes`).
const SHAPES_SHOWCASE: [&str; 6] = [
    "a small red circle",
    "a large blue square",
    "a large green triangle",
    "a small yellow square above a large cyan circle",
    "a large magenta triangle left of a small green circle",
    "two small blue squares",
];

/// The shipped generators called `names` for `dataset`; a missing one is an error
/// when `required`, else a line saying it was skipped.
fn load_generators(names: &[&str], dataset: DatasetName, quick: bool, required: bool) -> dalle::Result<Vec<Box<dyn TextToImage>>> {
    let mut generators: Vec<Box<dyn TextToImage>> = Vec::new();
    for name in names {
        let timer = Instant::now();
        match load_generator(name, dataset, quick) {
            Ok(g) => {
                println!("{name} ({}): {} parameters, loaded in {:.2} s", dataset.as_str(), g.num_parameters(), timer.elapsed().as_secs_f64());
                generators.push(g);
            }
            Err(e) if !required => println!("{name} ({}): skipped ({e})", dataset.as_str()),
            Err(e) => return Err(e),
        }
    }
    Ok(generators)
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
    let dataset = c.dataset_or(DatasetName::Mnist);
    if !DATASETS.contains(&dataset) {
        return Err(Error::Config(format!("--dataset {}: generators are shipped for {}", dataset.as_str(), DATASETS.map(|d| d.as_str()).join(", "))));
    }
    let prompts: Vec<String> = match (args.prompts.is_empty(), dataset) {
        (false, _) => args.prompts.clone(),
        (true, DatasetName::Shapes) => SHAPES_SHOWCASE.iter().map(|p| p.to_string()).collect(),
        (true, _) => (0..10).map(|d| class_caption(DatasetName::Mnist, d, 0)).collect(),
    };
    let per_prompt = if c.smoke { args.per_prompt.min(2) } else { args.per_prompt };
    dalle::models::text_to_image::check_request(&prompts, per_prompt)?;

    cell(1, "Load the shipped generators");
    let generators = load_generators(&names, dataset, c.smoke, args.model != "all")?;

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
    // the judge's label: the prompted digit (MNIST), none for Shapes
    let labels: Option<Vec<usize>> = match dataset {
        DatasetName::Mnist => prompts.iter().flat_map(|p| std::iter::repeat_n(prompted_digit(p), per_prompt)).collect(),
        _ => None,
    };
    let repeated: Vec<String> = prompts.iter().flat_map(|p| std::iter::repeat_n(p.clone(), per_prompt)).collect();
    let shapes_captions = dataset == DatasetName::Shapes && prompts.iter().all(|p| parse_caption(p).is_ok());
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
        if shapes_captions {
            print!("; the Shapes judge: {}", ShapesFidelity::measure(&images, &repeated)?.summary());
        }
        println!();
        wrote(&path);
    }

    if args.compare {
        let mnist = load_generators(&names, DatasetName::Mnist, c.smoke, false)?;
        let digits = compare(&args, &mnist, &judge, &out)?;
        let shapes = load_generators(&names, DatasetName::Shapes, c.smoke, false)?;
        let drawn = compare_shapes(&args, &shapes, &out)?;
        side_by_side(&names, &digits, &drawn, &out)?;
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
/// Returns each generator's first image of each digit, by name.
fn compare(args: &Args, generators: &[Box<dyn TextToImage>], judge: &DigitJudge, out: &std::path::Path) -> dalle::Result<Vec<(&'static str, Array4<f32>)>> {
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
        firsts.push((g.name(), images.select(Axis(0), &(0..10).map(|p| p * n).collect::<Vec<_>>()))); // the first image of each digit
    }
    write_table(out, "compare", &rows, &table)?;
    Ok(firsts)
}
// ANCHOR_END: compare

/// Writes `NAME.csv` and `NAME.md` and prints the table.
fn write_table(out: &std::path::Path, name: &str, rows: &[String], table: &[String]) -> dalle::Result<()> {
    let csv = out.join(format!("{name}.csv"));
    std::fs::write(&csv, rows.join("\n") + "\n").map_err(|e| Error::io(&csv, e))?;
    wrote(&csv);
    let md = out.join(format!("{name}.md"));
    std::fs::write(&md, table.join("\n") + "\n").map_err(|e| Error::io(&md, e))?;
    println!("{}", table.join("\n"));
    wrote(&md);
    Ok(())
}

// ANCHOR: compare_shapes
/// Chapter 12's Shapes table: the 36 one-object captions and `--compare-relations`
/// two-object captions, the same for every generator, read back by the Shapes judge.
/// Returns each generator's images of [`SHAPES_SHOWCASE`], by name.
fn compare_shapes(args: &Args, generators: &[Box<dyn TextToImage>], out: &std::path::Path) -> dalle::Result<Vec<(&'static str, Array4<f32>)>> {
    cell(5, "Compare the generators on the same Shapes captions and seed");
    let c = &args.common;
    let n = if c.smoke { 2 } else { args.per_prompt.max(2) };
    let single: Vec<String> = if c.smoke { single_object_prompts()[..2].to_vec() } else { single_object_prompts() };
    let relations = relation_prompts(if c.smoke { 2 } else { args.compare_relations })?;
    let repeat = |prompts: &[String]| -> Vec<String> { prompts.iter().flat_map(|p| std::iter::repeat_n(p.clone(), n)).collect() };
    let mut rows = vec!["model,parameters,images,count,colour,shape,size_colour_shape,relation,relation_all,pairwise_distance,seconds_per_image,training_minutes".to_string()];
    let mut table = vec![
        "| model | parameters | images | one object: count | colour | shape | size + colour + shape | two objects: relation | everything | pairwise distance within a prompt | seconds per image | training minutes |".to_string(),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|".to_string(),
    ];
    // one row: images for one-object captions and for relation captions, each with its captions
    let mut measure = |name: &str, one: (&Array4<f32>, &[String]), two: (&Array4<f32>, &[String]), pairwise: Option<f64>, params: String, secs: String, minutes: String| -> dalle::Result<()> {
        let a = ShapesFidelity::measure(one.0, one.1)?;
        let r = ShapesFidelity::measure(two.0, two.1)?;
        let (relation, pct) = (r.relation.unwrap_or(f64::NAN), |x: f64| format!("{:.1} %", 100.0 * x));
        let pw = pairwise.map_or("-".to_string(), |p| format!("{p:.3}"));
        println!("{name:>12}: one object {}; two objects {}", a.summary(), r.summary());
        rows.push(format!("{name},{params},{},{:.4},{:.4},{:.4},{:.4},{relation:.4},{:.4},{pw},{secs},{minutes}", a.images + r.images, a.count, a.colour, a.shape, a.phrase, r.all));
        table.push(format!(
            "| {name} | {params} | {} | {} | {} | {} | {} | {} | {} | {pw} | {secs} | {minutes} |",
            a.images + r.images,
            pct(a.count),
            pct(a.colour),
            pct(a.shape),
            pct(a.phrase),
            pct(relation),
            pct(r.all)
        ));
        Ok(())
    };
    // the judge's floor: drawn test images of the same kinds (one object; two objects in a relation)
    let test = Shapes::new(ShapesConfig::for_split(Split::Test))?;
    let real = |keep: &dyn Fn(&dalle::data::shapes::ShapesSample) -> bool, count: usize| -> (Array4<f32>, Vec<String>) {
        let picked: Vec<_> = test.iter().filter(|s| keep(s)).take(count).collect();
        let views: Vec<_> = picked.iter().map(|s| s.image.view()).collect();
        (ndarray::stack(Axis(0), &views).expect("same size"), picked.into_iter().map(|s| s.caption).collect())
    };
    let (real_one, real_one_captions) = real(&|s| s.count() == 1, single.len() * n);
    let (real_two, real_two_captions) = real(&|s| s.relation.is_some(), relations.len() * n);
    // the drawn images carry their own captions: the same kinds of caption, not the same ones
    let none = || "-".to_string();
    measure("drawn Shapes", (&real_one, &real_one_captions), (&real_two, &real_two_captions), None, none(), none(), none())?;
    let (one_captions, two_captions) = (repeat(&single), repeat(&relations));
    let mut shown = Vec::new();
    for g in generators {
        let timer = Instant::now();
        let one = draw(g.as_ref(), &single, n, c.seed)?; // (36·n, 3, 32, 32)
        let two = draw(g.as_ref(), &relations, n, c.seed)?;
        let secs = timer.elapsed().as_secs_f64() / (one.dim().0 + two.dim().0) as f64;
        let pairwise = (mean_pairwise_distance(&one, n)? * one.dim().0 as f64 + mean_pairwise_distance(&two, n)? * two.dim().0 as f64) / (one.dim().0 + two.dim().0) as f64;
        let minutes = format!("{:.0}", g.training_minutes());
        measure(g.name(), (&one, &one_captions), (&two, &two_captions), Some(pairwise), g.num_parameters().to_string(), format!("{secs:.3}"), minutes)?;
        let showcase: Vec<String> = SHAPES_SHOWCASE.iter().map(|p| p.to_string()).collect();
        shown.push((g.name(), draw(g.as_ref(), &showcase, 1, c.seed)?));
    }
    if !generators.is_empty() {
        write_table(out, "compare_shapes", &rows, &table)?;
    }
    Ok(shown)
}
// ANCHOR_END: compare_shapes

/// MNIST `(N, 1, 28, 28)` as `(N, 3, 32, 32)`: grey to RGB with a 2-pixel black border,
/// so digits and Shapes images share one grid.
fn as_rgb32(images: &Array4<f32>) -> Array4<f32> {
    let (n, _, h, w) = images.dim();
    let mut rgb = Array4::<f32>::zeros((n, 3, h + 4, w + 4));
    for ch in 0..3 {
        rgb.slice_mut(ndarray::s![.., ch, 2..h + 2, 2..w + 2]).assign(&images.slice(ndarray::s![.., 0, .., ..]));
    }
    rgb
}

/// Chapter 12's figure: one row per generator, the ten digit captions then the
/// Shapes captions of [`SHAPES_SHOWCASE`] (black where no weights are shipped).
fn side_by_side(names: &[&str], digits: &[(&str, Array4<f32>)], shapes: &[(&str, Array4<f32>)], out: &std::path::Path) -> dalle::Result<()> {
    let columns = 10 + SHAPES_SHOWCASE.len();
    let mut rows = Vec::new();
    for name in names {
        let mut row = Array4::<f32>::zeros((columns, 3, 32, 32));
        if let Some((_, d)) = digits.iter().find(|(n, _)| n == name) {
            row.slice_mut(ndarray::s![..10, .., .., ..]).assign(&as_rgb32(d));
        }
        if let Some((_, s)) = shapes.iter().find(|(n, _)| n == name) {
            row.slice_mut(ndarray::s![10.., .., .., ..]).assign(s);
        }
        rows.push(row);
    }
    if rows.is_empty() {
        return Ok(());
    }
    let views: Vec<_> = rows.iter().map(|a| a.view()).collect();
    let grid = concatenate(Axis(0), &views).map_err(|e| Error::Msg(format!("side by side: {e}")))?; // (models · columns, 3, 32, 32)
    let path = out.join("side_by_side.png");
    save_image_grid(&path, &grid, &GridOptions { scale: 3, ..GridOptions::with_nrow(columns) })?;
    wrote(&path);
    println!("side_by_side.png: rows {}; columns: the digits 0-9, then {}", names.join(", "), SHAPES_SHOWCASE.join(" | "));
    Ok(())
}
