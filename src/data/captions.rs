//! Captions for class-labelled images, from class names and a few templates.
//!
//! MNIST, Fashion-MNIST and CIFAR-10 come with labels, not text. A text-to-image
//! model needs text, so each label is turned into a short caption with one of a
//! few templates ("a handwritten 7", "the digit seven", "a photo of a cat"),
//! chosen by a seeded random generator so that runs are reproducible. The same
//! templates give CLIP's zero-shot prompts ([`class_prompts`]).

use ndarray_rand::rand::rngs::StdRng;
use ndarray_rand::rand::{Rng, SeedableRng};

use super::DatasetName;

/// MNIST's classes: the digits, in label order.
pub const MNIST_CLASSES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
/// The digits as words, indexed by digit.
pub const DIGIT_WORDS: [&str; 10] = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];
/// Fashion-MNIST's official class names, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];
/// Fashion-MNIST's classes as nouns for captions, in label order.
pub const FASHION_MNIST_NOUNS: [&str; 10] =
    ["t-shirt", "pair of trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"];
/// CIFAR-10's official class names, in label order.
pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];
/// The Shapes set's classes (the shape of its first object).
pub const SHAPES_CLASSES: [&str; 3] = ["circle", "square", "triangle"];

/// The class names of a data set, in label order.
pub fn class_names(name: DatasetName) -> &'static [&'static str] {
    match name {
        DatasetName::Mnist => &MNIST_CLASSES,
        DatasetName::FashionMnist => &FASHION_MNIST_CLASSES,
        DatasetName::Cifar10 => &CIFAR10_CLASSES,
        DatasetName::Shapes => &SHAPES_CLASSES,
    }
}

/// How many caption templates a data set has (template indices are `0..n`).
pub fn num_templates(name: DatasetName) -> usize {
    match name {
        DatasetName::Mnist => 5,
        DatasetName::FashionMnist | DatasetName::Cifar10 => 4,
        DatasetName::Shapes => 1,
    }
}

/// The caption of class `label` with template `template` (taken modulo [`num_templates`]).
///
/// Template 0 is the plain prompt used for zero-shot classification.
pub fn class_caption(name: DatasetName, label: usize, template: usize) -> String {
    let t = template % num_templates(name);
    match name {
        DatasetName::Mnist => {
            let (digit, word) = (MNIST_CLASSES[label], DIGIT_WORDS[label]);
            match t {
                0 => format!("a handwritten {digit}"),
                1 => format!("the digit {word}"),
                2 => format!("a picture of the number {word}"),
                3 => format!("{} {word} written by hand", article(word)),
                _ => format!("an image of a handwritten {digit}"),
            }
        }
        DatasetName::FashionMnist => {
            let noun = FASHION_MNIST_NOUNS[label];
            let a = article(noun);
            match t {
                0 => format!("a picture of {a} {noun}"),
                1 => format!("a photo of {a} {noun}"),
                2 => format!("{a} {noun}"),
                _ => format!("a black and white picture of {a} {noun}"),
            }
        }
        DatasetName::Cifar10 => {
            let noun = CIFAR10_CLASSES[label];
            let a = article(noun);
            match t {
                0 => format!("a photo of {a} {noun}"),
                1 => format!("a picture of {a} {noun}"),
                2 => format!("a blurry photo of {a} {noun}"),
                _ => format!("a small photo of the {noun}"),
            }
        }
        DatasetName::Shapes => format!("a {}", SHAPES_CLASSES[label]),
    }
}

/// One caption per label, each with a template drawn from a generator seeded by `seed`.
pub fn captions_for(name: DatasetName, labels: &[usize], seed: u64) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    labels
        .iter()
        .map(|&l| class_caption(name, l, rng.random_range(0..num_templates(name))))
        .collect()
}

/// The zero-shot prompt of every class (template 0), in label order.
pub fn class_prompts(name: DatasetName) -> Vec<String> {
    (0..class_names(name).len()).map(|l| class_caption(name, l, 0)).collect()
}

/// `"an"` before a vowel sound (by first letter, "one" excepted: enough for these nouns), else `"a"`.
pub fn article(word: &str) -> &'static str {
    if word.starts_with("one") {
        return "a";
    }
    match word.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    }
}
