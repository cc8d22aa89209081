#![warn(missing_docs)]
//! # dalle-from-scratch
//!
//! The DALL-E family built from scratch in Rust, one chapter at a time.
//!
//! | chapter | module | what it builds |
//! |---|---|---|
//! | 00 | [`tensor`], [`ops`], [`nn`], [`optim`] | reverse-mode autograd on n-dimensional tensors |
//! | 04 | [`models::vae`] | a VAE: reparameterisation, closed-form Gaussian KL |
//! | 05 | [`nn::quantize`], [`models::vqvae`] | VQ-VAE: nearest code, straight-through, EMA codebook, dead-code restarts |
//! | 06 | [`nn::gumbel`], [`models::dvae`] | DALL-E's dVAE: gumbel-softmax, KL to the uniform prior; [`models::image_tokenizer`] |
//!
//! Data flows one way: `data` -> `models` (built from `nn`, built from `ops` on
//! tensors, whose loops live in `backend`) -> `io` / `eval`.

pub mod backend;
pub mod data;
pub mod error;
pub mod io;
pub mod models;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod tensor;
pub mod tokenizer;
pub mod train;

pub use error::{Error, Result};
pub use tensor::{no_grad, Rng, Tensor};
