//! The digit judge: a small CNN trained on MNIST that scores generated digits.
//!
//! The generating chapters ask "did the model draw the digit it was asked
//! for?". The judge answers: *prompt fidelity* is the share of generated
//! images that the judge assigns to the prompted class. It reaches >= 99% on
//! the MNIST test set (re-measured by `tests/weights_judge.rs`), so a fidelity
//! far below that is the generator's fault, not the judge's.
//!
//! Architecture (LeCun-style): `conv 3×3 1→32, ReLU, max-pool 2` →
//! `conv 3×3 32→64, ReLU, max-pool 2` → `linear 3136→128, ReLU` → `linear 128→10`.

use crate::io::checkpoint;
use crate::nn::{visit_child, Conv2d, Forward, Linear, Module};
use crate::tensor::{no_grad, Rng, Tensor};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// Where the project's trained judge ships.
pub const JUDGE_WEIGHTS: &str = "weights/digit_judge.safetensors";

/// The digit-judging CNN.
pub struct DigitJudge {
    /// `conv1`: 1 → 32 channels.
    pub conv1: Conv2d,
    /// `conv2`: 32 → 64 channels.
    pub conv2: Conv2d,
    /// `fc1`: 64·7·7 → 128.
    pub fc1: Linear,
    /// `fc2`: 128 → 10 classes.
    pub fc2: Linear,
}

impl DigitJudge {
    /// A freshly initialised judge.
    pub fn new(rng: &mut Rng) -> Self {
        DigitJudge {
            conv1: Conv2d::new(1, 32, 3, 1, 1, true, rng),
            conv2: Conv2d::new(32, 64, 3, 1, 1, true, rng),
            fc1: Linear::new(64 * 7 * 7, 128, true, rng),
            fc2: Linear::new(128, 10, true, rng),
        }
    }

    /// The shipped judge (`weights/digit_judge.safetensors` in the crate).
    pub fn pretrained() -> Result<Self> {
        Self::load(&default_path())
    }

    /// A judge from a checkpoint written by [`checkpoint::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let judge = DigitJudge::new(&mut Rng::new(0));
        checkpoint::load(path)?.load_into(&judge, &["optim."])?;
        Ok(judge)
    }

    /// Class logits: `(N, 1, 28, 28)` in [0, 1] → `(N, 10)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let s = x.shape();
        if s.len() != 4 || s[1..] != [1, 28, 28] {
            return Err(Error::shape("digit_judge", format!("expected images (N, 1, 28, 28), got {s:?}")));
        }
        self.fc2.forward(&self.features(x)?) // (N, 10)
    }

    /// The penultimate layer: `fc1`'s output after its ReLU, `(N, 1, 28, 28)` → `(N, 128)`
    /// (the features of [`super::frechet`]).
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        let s = x.shape();
        if s.len() != 4 || s[1..] != [1, 28, 28] {
            return Err(Error::shape("digit_judge", format!("expected images (N, 1, 28, 28), got {s:?}")));
        }
        let h = self.conv1.forward(x)?.relu().max_pool2d(2, 2)?; // (N, 32, 14, 14)
        let h = self.conv2.forward(&h)?.relu().max_pool2d(2, 2)?; // (N, 64, 7, 7)
        Ok(self.fc1.forward(&h.flatten_from(1)?)?.relu()) // (N, 128)
    }

    /// [`DigitJudge::features`] of every image, in batches of 500, without a graph: `(N, 128)`.
    pub fn feature_rows(&self, images: &ndarray::Array4<f32>) -> Result<ndarray::Array2<f32>> {
        let mut rows = Vec::with_capacity(images.shape()[0] * 128);
        for start in (0..images.shape()[0]).step_by(500) {
            let end = (start + 500).min(images.shape()[0]);
            let batch = Tensor::new(images.slice(ndarray::s![start..end, .., .., ..]).to_owned().into_dyn());
            rows.extend(no_grad(|| self.features(&batch))?.to_vec());
        }
        ndarray::Array2::from_shape_vec((images.shape()[0], 128), rows).map_err(|e| Error::Msg(format!("judge features: {e}")))
    }

    /// The predicted class of each image, in batches of 500, without a graph.
    pub fn predict(&self, images: &ndarray::Array4<f32>) -> Result<Vec<usize>> {
        let mut out = Vec::with_capacity(images.shape()[0]);
        for start in (0..images.shape()[0]).step_by(500) {
            let end = (start + 500).min(images.shape()[0]);
            let batch = Tensor::new(images.slice(ndarray::s![start..end, .., .., ..]).to_owned().into_dyn());
            let logits = no_grad(|| self.forward(&batch))?;
            out.extend(argmax_rows(&logits));
        }
        Ok(out)
    }

    /// Prompt fidelity: the share of `images` that the judge assigns to `prompted`.
    pub fn fidelity(&self, images: &ndarray::Array4<f32>, prompted: &[usize]) -> Result<f32> {
        let pred = self.predict(images)?;
        if pred.len() != prompted.len() {
            return Err(Error::shape("fidelity", format!("{} images but {} prompted classes", pred.len(), prompted.len())));
        }
        let hits = pred.iter().zip(prompted).filter(|(a, b)| a == b).count();
        Ok(hits as f32 / pred.len().max(1) as f32)
    }
}

impl Module for DigitJudge {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_child("conv1", &self.conv1, f);
        visit_child("conv2", &self.conv2, f);
        visit_child("fc1", &self.fc1, f);
        visit_child("fc2", &self.fc2, f);
    }
}

/// `weights/digit_judge.safetensors` inside this crate's folder.
pub fn default_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(JUDGE_WEIGHTS)
}

/// The index of the largest value in each row of `(N, K)` logits.
pub fn argmax_rows(logits: &Tensor) -> Vec<usize> {
    let d = logits.data();
    d.outer_iter()
        .map(|row| row.iter().enumerate().fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) }).0)
        .collect()
}
