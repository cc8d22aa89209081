//! unCLIP's prior (Ramesh et al. 2022, §2.2): from a caption to a CLIP image embedding. Chapter 10.
//!
//! DALL-E 2 generates in two stages, `P(x | y) = P(x | z_i, y) P(z_i | y)`: a *prior*
//! draws a CLIP image embedding `z_i` for the caption `y`, and a decoder (chapter 11)
//! draws an image for `z_i`. The paper tried two priors and found them comparable,
//! the diffusion one cheaper to train and sample:
//!
//! - [`clip_features`]: the frozen CLIP ([`FrozenClip`], which chapter 11's decoder reads too):
//!   caption token encodings, text embedding `z_t` and image embedding `z_i`, and the prior's
//!   scaling of `z_i`;
//! - [`diffusion_prior`]: a causal transformer that predicts the un-noised `z_i`
//!   (chapter 08's `x_0` objective, schedule and samplers; classifier-free guidance);
//! - [`pca`]: PCA and per-dimension buckets, the discrete code of the autoregressive prior;
//! - [`ar_prior`]: chapter 07's DALL-E transformer predicting that code after the caption;
//! - [`unclip_prior`]: loading the shipped priors and sampling embeddings for captions
//!   ([`UnclipPrior::sample`]), what the decoder of chapter 11 calls.

pub mod ar_prior;
pub mod clip_features;
pub mod diffusion_prior;
pub mod pca;
pub mod unclip_prior;

pub use ar_prior::ArPrior;
pub use clip_features::{check_prompts, embed_scale, normalize_rows, row_cosines, CaptionEncoding, FrozenClip, TextStates};
pub use diffusion_prior::{DiffusionPrior, DiffusionPriorConfig, PriorDenoiser};
pub use pca::{round_trip, Pca, Quantizer};
pub use unclip_prior::{sample_best_of, PriorSampling, UnclipPrior};
