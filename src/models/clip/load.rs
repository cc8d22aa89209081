//! Loading a Hugging Face CLIP checkpoint folder of any size.
//!
//! A folder such as `openai/clip-vit-base-patch32` holds `config.json` and
//! `model.safetensors`. The config builds a model of the right shape; then every
//! parameter is looked up by its Hugging Face name and its shape checked, and
//! one error lists every missing, unexpected or mis-shaped tensor (as nanoGPT's
//! `from_pretrained` asserts every key). The `position_ids` buffers that some
//! exports carry are not parameters and are skipped.

use std::path::Path;

use super::config::ClipConfig;
use super::model::ClipModel;
use crate::io::checkpoint;
use crate::tensor::Rng;
use crate::{Error, Result};

/// Buffers in Hugging Face files that are not parameters.
pub const IGNORED_BUFFERS: [&str; 2] = ["text_model.embeddings.position_ids", "vision_model.embeddings.position_ids"];

/// Loads `config.json` and `model.safetensors` from a folder.
pub fn load_pretrained(dir: &Path) -> Result<ClipModel> {
    if !dir.is_dir() {
        return Err(Error::MissingData(format!(
            "{}: not a folder; expected a Hugging Face CLIP folder with config.json and model.safetensors",
            dir.display()
        )));
    }
    load_files(&dir.join("config.json"), &dir.join("model.safetensors"))
}

/// Loads a CLIP from a config file and a safetensors weights file.
///
/// Errors: a bad config names the field; a weights file that does not match
/// the config lists every missing, unexpected and mis-shaped tensor.
///
/// Nothing large is built before the weights file has been opened and its
/// header read: the config is checked against the parameter cap, and the
/// header's parameter count against the config's, so a config far larger
/// than its weights fails in milliseconds instead of after building its model.
pub fn load_files(config_path: &Path, weights_path: &Path) -> Result<ClipModel> {
    let config = ClipConfig::from_file(config_path)?;
    let header = checkpoint::read_header(weights_path)?;
    let in_file: u128 = header
        .tensors
        .iter()
        .filter(|(name, _)| !IGNORED_BUFFERS.contains(&name.as_str()))
        .map(|(_, t)| t.shape.iter().map(|&d| d as u128).product::<u128>())
        .sum();
    // A near miss is worth building the model for: its error lists every name and shape that
    // differs. A config far larger than its weights is refused before anything is allocated.
    let expected = config.num_parameters();
    if in_file != expected && expected > (2 * in_file).max(1 << 20) {
        return Err(Error::Checkpoint(format!(
            "{} holds {in_file} parameters, but {} describes a model of {} (is it the config of these weights?)",
            weights_path.display(),
            config_path.display(),
            expected
        )));
    }
    let model = ClipModel::new(&config, &mut Rng::new(0))?;
    let ckpt = checkpoint::load(weights_path)?;
    ckpt.load_into(&model, &IGNORED_BUFFERS).map_err(|e| {
        Error::Checkpoint(format!(
            "{} (the weights do not match the model built from {}: is it the config of these weights?)",
            e.message(),
            config_path.display()
        ))
    })?;
    Ok(model)
}

/// The config file stored beside a toy checkpoint: `clip_mnist.safetensors` -> `clip_mnist.config.json`.
pub fn config_path_for(weights: &Path) -> std::path::PathBuf {
    weights.with_extension("config.json")
}

/// The tokenizer file stored beside a toy checkpoint: `clip_mnist.safetensors` -> `clip_mnist.tokenizer.json`.
pub fn tokenizer_path_for(weights: &Path) -> std::path::PathBuf {
    weights.with_extension("tokenizer.json")
}

/// Loads a checkpoint trained by this book's chapter 03 with the config and
/// tokenizer stored beside it (see [`config_path_for`], [`tokenizer_path_for`]).
#[cfg(feature = "trained-bpe")]
pub fn load_toy(weights: &Path) -> Result<(ClipModel, crate::tokenizer::TrainedBpe)> {
    let model = load_files(&config_path_for(weights), weights)?;
    let tokenizer = crate::tokenizer::TrainedBpe::load(tokenizer_path_for(weights))?;
    use crate::tokenizer::TextTokenizer;
    if tokenizer.vocab_size() != model.config.text_config.vocab_size {
        return Err(Error::Config(format!(
            "{}: the tokenizer has {} tokens but the model's vocab_size = {}",
            tokenizer_path_for(weights).display(),
            tokenizer.vocab_size(),
            model.config.text_config.vocab_size
        )));
    }
    Ok((model, tokenizer))
}
