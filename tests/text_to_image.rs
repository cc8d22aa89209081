//! Chapter 12's common interface: every shipped generator behind `TextToImage`
//! draws the digit its caption asks for (digit judge, fixed seed), and the
//! command-line checks (unknown words, empty prompts, unknown models) say so.

use dalle::eval::mean_pairwise_distance;
use dalle::models::text_to_image::{check_request, load_generator, prompted_digit, Vocabulary, MODEL_NAMES};
use dalle::data::DatasetName;
use dalle::eval::shapes_fidelity::single_object_prompts;
use dalle::eval::{DigitJudge, ShapesFidelity};
use ndarray::Array4;

/// One caption per digit, 2 images each; the judge must read the prompted digit
/// in at least 17 of the 20 (the generators' measured fidelity is 90 % or more at
/// these settings; 17/20 leaves room for the seed without letting a broken
/// conditioning, 10 % by chance, pass).
fn judge_generator(name: &str) {
    let g = load_generator(name, DatasetName::Mnist, true).unwrap();
    let prompts: Vec<String> = ["a handwritten 0", "the digit one", "a handwritten 2", "the digit three", "a handwritten 4", "the digit five", "a handwritten 6", "the digit seven", "a handwritten 8", "the digit nine"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut steps = 0;
    let images = g.generate(&prompts, 2, 7, &mut |done, _| steps = done).unwrap();
    assert_eq!(images.dim(), (20, 1, 28, 28));
    assert!(steps > 0, "{name}: no progress reported");
    assert!(images.iter().all(|v| (0.0..=1.0).contains(v)), "{name}: pixels outside [0, 1]");
    let labels: Vec<usize> = (0..20).map(|i| i / 2).collect();
    let verdict = DigitJudge::pretrained().unwrap().predict(&images).unwrap();
    let hits = verdict.iter().zip(&labels).filter(|(a, b)| a == b).count();
    eprintln!("{name}: the judge read {verdict:?} ({hits}/20)");
    assert!(hits >= 17, "{name}: the judge read {verdict:?} for 2 images of each digit 0..9 ({hits}/20)");
    // the same seed gives the same images
    let again = g.generate(&prompts[..2], 1, 7, &mut |_, _| {}).unwrap();
    let first = g.generate(&prompts[..2], 1, 7, &mut |_, _| {}).unwrap();
    assert_eq!(again, first, "{name}: the same seed gave different images");
}

#[test]
fn dalle1_draws_the_prompted_digit() {
    judge_generator("dalle1");
}

#[test]
fn glide_draws_the_prompted_digit() {
    judge_generator("glide");
}

#[test]
fn unclip_draws_the_prompted_digit() {
    judge_generator("unclip");
}

#[test]
fn unknown_model_and_empty_prompts_are_errors() {
    let e = load_generator("dalle3", DatasetName::Mnist, true).err().expect("no such model").to_string();
    assert!(e.contains("dalle3") && MODEL_NAMES.iter().all(|m| e.contains(m)), "{e}");
    let e = load_generator("glide", DatasetName::Cifar10, true).err().expect("no CIFAR-10 generator").to_string();
    assert!(e.contains("cifar10") && e.contains("mnist, shapes"), "{e}");
    assert!(check_request(&[], 1).unwrap_err().to_string().contains("no prompt"));
    let e = check_request(&["a handwritten 1".into(), "  ".into()], 1).unwrap_err().to_string();
    assert!(e.contains("prompt 2 is empty"), "{e}");
    assert!(check_request(&["a handwritten 1".into()], 0).is_err());
}

#[test]
fn unknown_words_are_listed_once_in_prompt_order() {
    let v = Vocabulary::of_dataset(DatasetName::Mnist);
    assert!(v.unknown_words("A handwritten 7").is_empty(), "case and digits are known");
    assert!(v.unknown_words("the digit seven, written by hand").is_empty());
    assert_eq!(v.unknown_words("a teddy bear, a teddy"), vec!["teddy", "bear"]);
    assert_eq!(Vocabulary::from_captions(&["x y"]).len(), 2);
    let shapes = Vocabulary::of_dataset(DatasetName::Shapes);
    assert!(shapes.unknown_words("a small red circle left of two large cyan squares").is_empty());
    assert_eq!(shapes.unknown_words("a handwritten 7"), vec!["handwritten", "7"]);
}

#[test]
fn the_prompted_digit_is_read_from_digits_and_words() {
    assert_eq!(prompted_digit("a handwritten 7"), Some(7));
    assert_eq!(prompted_digit("The digit Three"), Some(3));
    assert_eq!(prompted_digit("a picture of the number zero"), Some(0));
    assert_eq!(prompted_digit("a teddy bear"), None);
    assert_eq!(prompted_digit("17 apples"), None, "a number of two digits is no digit");
}

#[test]
fn pairwise_distance_is_zero_for_copies_and_exact_for_two_images() {
    let copies = Array4::from_elem((4, 1, 2, 2), 0.5f32);
    assert_eq!(mean_pairwise_distance(&copies, 2).unwrap(), 0.0);
    // two images differing by 1 in one pixel of 4: sqrt(1/4) = 0.5
    let mut two = Array4::zeros((2, 1, 2, 2));
    two[[1, 0, 0, 0]] = 1.0f32;
    assert!((mean_pairwise_distance(&two, 2).unwrap() - 0.5).abs() < 1e-12);
    assert!(mean_pairwise_distance(&two, 3).is_err(), "2 images are no groups of 3");
    assert!(mean_pairwise_distance(&two, 1).is_err(), "a group of 1 has no pairs");
}

/// Every shipped Shapes generator behind `TextToImage`, at the quick settings, on the 18
/// large one-object captions (one image each, fixed seed): the Shapes judge must read the
/// caption's colour in at least `colour_floor` of them. Floors from `--compare` at commit
/// time (chapter 12), with room for the quick settings; chance is 3 in 18 for colour.
fn judge_shapes_generator(name: &str, colour_floor: usize) {
    let g = load_generator(name, DatasetName::Shapes, true).unwrap();
    assert_eq!(g.dataset(), DatasetName::Shapes);
    let prompts: Vec<String> = single_object_prompts().into_iter().filter(|p| p.starts_with("a large")).collect(); // (18)
    let images = g.generate(&prompts, 1, 3, &mut |_, _| {}).unwrap();
    assert_eq!(images.dim(), (18, 3, 32, 32));
    assert!(images.iter().all(|v| (0.0..=1.0).contains(v)), "{name}: pixels outside [0, 1]");
    let f = ShapesFidelity::measure(&images, &prompts).unwrap();
    eprintln!("{name} on Shapes: {}", f.summary());
    let colour = (f.colour * 18.0).round() as usize;
    assert!(colour >= colour_floor, "{name}: colour right in {colour}/18 < {colour_floor}: {}", f.summary());
}

#[test]
fn dalle1_draws_the_shapes_colours() {
    judge_shapes_generator("dalle1", 13); // measured 16/18 (two candidates, seed 3)
}

/// The shipped Shapes GLIDE is under-trained (chapter 09: colour right in 7 % of one-object
/// samples at s = 3): measured 0/18 here, so this checks only that the adapter runs,
/// with the right shape and range, on the Shapes model.
#[test]
fn glide_draws_shapes_images() {
    judge_shapes_generator("glide", 0);
}

#[test]
fn unclip_draws_the_shapes_colours() {
    judge_shapes_generator("unclip", 0);
}
