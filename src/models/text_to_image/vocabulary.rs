//! The words a toy generator was trained on.
//!
//! A toy model trained on "a handwritten 7" and "the digit seven" knows a few
//! dozen words. Given "a teddy bear", its caption tokenizer still returns ids
//! (byte-pair encoding splits any word), and the model still returns an image:
//! a digit, with nothing to say it ignored the prompt. [`Vocabulary::unknown_words`]
//! finds the words of a prompt that never occur in the training captions, so the
//! command line can warn about them.

use crate::data::captions::{class_caption, class_names, num_templates};
use crate::data::shapes::SHAPES_VOCAB;
use crate::data::DatasetName;
use std::collections::BTreeSet;

/// A set of lower-case words.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Vocabulary {
    words: BTreeSet<String>,
}

impl Vocabulary {
    /// The words of `captions`.
    pub fn from_captions<S: AsRef<str>>(captions: &[S]) -> Self {
        Vocabulary { words: captions.iter().flat_map(|c| words(c.as_ref())).collect() }
    }

    /// Every word a data set's captions use: chapter 03's templates over the classes,
    /// or for Shapes its whole vocabulary ([`SHAPES_VOCAB`]).
    pub fn of_dataset(name: DatasetName) -> Self {
        match name {
            DatasetName::Shapes => Self::from_captions(&SHAPES_VOCAB),
            _ => Self::of_templates(name, &(0..num_templates(name)).collect::<Vec<_>>()),
        }
    }

    /// The captions of `templates` only, for a model trained with some held out.
    pub fn of_templates(name: DatasetName, templates: &[usize]) -> Self {
        let captions: Vec<String> = (0..class_names(name).len()).flat_map(|label| templates.iter().map(move |&t| class_caption(name, label, t))).collect();
        Self::from_captions(&captions)
    }

    /// The words of `prompt` not in this vocabulary, in prompt order, each once.
    pub fn unknown_words(&self, prompt: &str) -> Vec<String> {
        let mut seen = BTreeSet::new();
        words(prompt).filter(|w| !self.words.contains(w) && seen.insert(w.clone())).collect()
    }

    /// How many words.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// No words at all.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The words, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.words.iter().map(String::as_str)
    }
}

/// Lower-case words: runs of letters and digits (punctuation separates them).
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase)
}

/// The digit a prompt asks for: the first digit character or digit word
/// ("a handwritten 7", "the digit seven"), if any. The label the judge checks.
pub fn prompted_digit(prompt: &str) -> Option<usize> {
    words(prompt).find_map(|w| {
        if w.len() == 1 {
            if let Some(d) = w.chars().next().and_then(|c| c.to_digit(10)) {
                return Some(d as usize);
            }
        }
        crate::data::captions::DIGIT_WORDS.iter().position(|&word| word == w)
    })
}
