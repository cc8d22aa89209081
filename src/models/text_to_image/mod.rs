//! One interface for the book's three text-to-image generators (chapter 12).
//!
//! DALL-E 1 (chapter 07) draws image tokens one at a time after the caption's
//! tokens, GLIDE (chapter 09) denoises pixels with the caption in every attention
//! layer, unCLIP (chapters 10-11) first draws a CLIP image embedding from the
//! caption and then decodes it. From outside they do the same thing:
//!
//! ```text
//! prompts (P), n per prompt, seed  ->  images (P·n, C, H, W) in [0, 1], prompt-major
//! ```
//!
//! [`TextToImage`] is that contract; each generator's adapter lives in its own
//! file and holds its sampler settings. [`Vocabulary`] lists the words a toy model
//! was trained on, so that a prompt with words it never saw gets a warning instead
//! of a silently meaningless image.

pub mod dalle1;
pub mod glide;
pub mod unclip;
pub mod vocabulary;

pub use dalle1::Dalle1;
pub use glide::GlideGenerator;
pub use unclip::UnclipGenerator;
pub use vocabulary::{prompted_digit, Vocabulary};

use crate::data::DatasetName;
use crate::{Error, Result};
use ndarray::Array4;
use std::path::PathBuf;

// ANCHOR: trait
/// A text-to-image generator: prompts in, images in `[0, 1]` out.
pub trait TextToImage {
    /// The name on the command line: `dalle1`, `glide`, `unclip`.
    fn name(&self) -> &'static str;
    /// The data set its captions and images come from.
    fn dataset(&self) -> DatasetName;
    /// Parameters of every network that runs while sampling (the judge excluded).
    fn num_parameters(&self) -> usize;
    /// The words of the captions the model was trained on.
    fn vocabulary(&self) -> &Vocabulary;
    /// Minutes the shipped weights trained, all networks together, as recorded in
    /// `chapters/results.md` (on this project's shared two-core machine, under load).
    fn training_minutes(&self) -> f64;
    /// `per_prompt` images for each prompt, `(P · per_prompt, C, H, W)` in `[0, 1]`,
    /// the images of prompt `p` at rows `p · per_prompt ..`. `progress(done, total)`
    /// is called after each sampling step. The same seed gives the same images.
    fn generate(&self, prompts: &[String], per_prompt: usize, seed: u64, progress: &mut dyn FnMut(usize, usize)) -> Result<Array4<f32>>;
}
// ANCHOR_END: trait

/// The generator names [`TextToImage::name`] may return, in the book's order.
pub const MODEL_NAMES: [&str; 3] = ["dalle1", "glide", "unclip"];

/// Errors for what no generator can draw: no prompt, an empty prompt, zero images.
pub fn check_request(prompts: &[String], per_prompt: usize) -> Result<()> {
    if prompts.is_empty() {
        return Err(Error::Config("text-to-image: no prompt given; pass at least one, e.g. \"a handwritten seven\"".into()));
    }
    if let Some(i) = prompts.iter().position(|p| p.trim().is_empty()) {
        return Err(Error::Config(format!("text-to-image: prompt {} is empty; write what to draw, e.g. \"a handwritten seven\"", i + 1)));
    }
    if per_prompt == 0 {
        return Err(Error::Config("text-to-image: 0 images per prompt; ask for at least 1".into()));
    }
    Ok(())
}

/// [`crate::io::shipped_weights`], or an error naming the file when it is not there.
pub fn require_shipped(name: &str) -> Result<PathBuf> {
    let path = crate::io::shipped_weights(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::Config(format!("{}: no such shipped weights file", path.display())))
    }
}

/// The data sets generators are shipped for: captioned MNIST and Shapes.
pub const DATASETS: [DatasetName; 2] = [DatasetName::Mnist, DatasetName::Shapes];

/// The shipped generator called `name` (one of [`MODEL_NAMES`]) trained on `dataset`
/// (one of [`DATASETS`]); `quick` trades quality for seconds (fewer candidates or
/// sampling steps), for smoke runs and tests.
pub fn load_generator(name: &str, dataset: DatasetName, quick: bool) -> Result<Box<dyn TextToImage>> {
    if !DATASETS.contains(&dataset) {
        return Err(Error::Config(format!(
            "no generator is shipped for {}; the data sets are {}",
            dataset.as_str(),
            DATASETS.map(|d| d.as_str()).join(", ")
        )));
    }
    match name {
        "dalle1" => {
            let mut g = Dalle1::shipped_for(dataset)?;
            if quick {
                g.candidates = 2;
            }
            Ok(Box::new(g))
        }
        "glide" => {
            let mut g = GlideGenerator::shipped_for(dataset)?;
            if quick && dataset == DatasetName::Mnist {
                g.steps = 4; // the under-trained Shapes model needs its 10 steps to draw anything the judge can read
            }
            Ok(Box::new(g))
        }
        "unclip" => {
            let mut g = UnclipGenerator::shipped_for(dataset)?;
            if quick {
                g.pipeline.prior_sampling.steps = 16;
                g.pipeline.sampling.decoder_steps = 4;
                g.pipeline.sampling.upsampler_steps = 4;
            }
            Ok(Box::new(g))
        }
        other => Err(Error::Config(format!("no generator called {other:?}; the generators are {}", MODEL_NAMES.join(", ")))),
    }
}
