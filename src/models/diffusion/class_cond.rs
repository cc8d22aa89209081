//! A class-conditional U-Net: a class embedding through the conditioning hook.
//!
//! Each class `y` has a learned vector of the embedding's width, added to the
//! timestep embedding (`cond` of [`UNet::forward`]). One extra row, the *null
//! class* `y = K`, stands for "no label": training replaces the label by it for
//! a fraction of the examples (Ho & Salimans 2022, Algorithm 1), so the same
//! network predicts both `ε(x_t, t, y)` and `ε(x_t, t, ∅)` and classifier-free
//! guidance can mix them at sampling time.

use super::samplers::Denoiser;
use super::unet::{UNet, UNetConfig};
use crate::nn::{visit_child, Embedding, Module};
use crate::tensor::{Rng, Tensor};
use crate::{Error, Result};

/// A [`UNet`] and a class embedding table of `num_classes + 1` rows (the last is the null class).
pub struct ClassConditionalUNet {
    /// The denoiser.
    pub unet: UNet,
    /// `(num_classes + 1, C_emb)`.
    pub class_embedding: Embedding,
    /// `K`; the null class is `K`.
    pub num_classes: usize,
}

impl ClassConditionalUNet {
    /// A U-Net for `config` with `num_classes` classes plus the null class.
    pub fn new(config: UNetConfig, num_classes: usize, rng: &mut Rng) -> Result<Self> {
        let emb_dim = config.emb_dim();
        Ok(ClassConditionalUNet { unet: UNet::new(config, rng)?, class_embedding: Embedding::new(num_classes + 1, emb_dim, 1.0, rng), num_classes })
    }

    /// The id that means "no class".
    pub fn null_class(&self) -> usize {
        self.num_classes
    }

    /// `x_t (B, C, H, W)` at integer timesteps `t`, classes `labels` (B; `num_classes` = null).
    pub fn forward(&self, x: &Tensor, t: &[usize], labels: &[usize]) -> Result<Tensor> {
        if let Some(bad) = labels.iter().find(|&&y| y > self.num_classes) {
            return Err(Error::Config(format!("class id {bad} is past the {} classes (ids 0..{}, {} = no class)", self.num_classes, self.num_classes - 1, self.num_classes)));
        }
        let cond = self.class_embedding.forward(labels, &[labels.len()])?; // (B, C_emb)
        let t: Vec<f32> = t.iter().map(|&t| t as f32).collect();
        self.unet.forward(x, &t, Some(&cond), None)
    }

    /// A [`Denoiser`] that asks for `labels` (one per row of the batch it is given).
    pub fn with_labels(&self, labels: Vec<usize>) -> ClassDenoiser<'_> {
        ClassDenoiser { model: self, labels }
    }
}

impl Module for ClassConditionalUNet {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_child("unet", &self.unet, f);
        visit_child("class_embedding", &self.class_embedding, f);
    }
}

/// The model with its labels fixed: what the samplers call.
pub struct ClassDenoiser<'a> {
    model: &'a ClassConditionalUNet,
    labels: Vec<usize>,
}

impl Denoiser for ClassDenoiser<'_> {
    fn predict(&self, x_t: &Tensor, t: &[usize]) -> Result<Tensor> {
        self.model.forward(x_t, t, &self.labels)
    }
}

/// `labels` with each replaced by `null` with probability `p` (classifier-free training).
pub fn drop_labels(labels: &[usize], p: f32, null: usize, rng: &mut Rng) -> Vec<usize> {
    labels.iter().map(|&y| if rng.uniform() < p { null } else { y }).collect()
}
