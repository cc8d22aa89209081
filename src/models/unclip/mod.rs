//! unCLIP (Ramesh et al. 2022, "Hierarchical Text-Conditional Image Generation with CLIP
//! Latents"): the decoder and the upsampler, chapter 11.
//!
//! ```text
//! caption ──prior (ch. 10)──> z_i ──decoder──> 14x14 image ──upsampler──> 28x28 image
//!                               ↑
//! image ──CLIP──────────────────┘   (variations, interpolations, text diffs)
//! ```
//!
//! - the frozen toy CLIP ([`FrozenClip`], shared with chapter 10's prior): image and caption
//!   embeddings, caption token states;
//! - [`decoder`]: chapter 08's U-Net conditioned on `z_i` (timestep embedding + 4 tokens) and the caption;
//! - [`upsampler`]: a diffusion model of the 28x28 image given the blurred 14x14 one;
//! - [`slerp`](mod@slerp): spherical interpolation on the embedding sphere;
//! - [`edits`]: decode embeddings to images, variations, interpolations, text diffs;
//! - [`pipeline`]: text -> prior (chapter 10) -> decoder -> upsampler in one call;
//! - [`setup`]: the same models for MNIST (14 -> 28) and Shapes (16 -> 32), and the shipped
//!   pipeline of each ([`UnclipPipeline::load_shipped`]).

pub mod decoder;
pub mod edits;
pub mod pipeline;
pub mod setup;
pub mod slerp;
pub mod upsampler;

pub use crate::models::prior::clip_features::{check_prompts, FrozenClip, TextStates};
pub use crate::models::diffusion::{to_model, to_pixels};
pub use edits::{Decoded, Sampling, Unclip};
pub use decoder::{DecoderCondition, DecoderConfig, DecoderDenoiser, UnclipDecoder};
pub use pipeline::{generate, DiffusionImagePrior, ImagePrior, TextEmbeddingPrior};
pub use setup::{UnclipPipeline, UnclipSetup};
pub use slerp::{slerp, slerp_path};
pub use upsampler::{bilinear_upsample, downsample, gaussian_blur, Upsampler, UpsamplerDenoiser};
