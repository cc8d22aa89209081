//! A noised CLIP and CLIP guidance (GLIDE, Nichol et al. 2022, §2.4 and Appendix): chapter 09.
//!
//! - [`model`]: the noised CLIP. Its image encoder `f(x_t, t)` is chapter 03's ViT with the
//!   class token replaced by a per-timestep embedding, trained contrastively on images noised
//!   to random `t`; its text encoder `g(c)` is chapter 03's text tower, frozen;
//! - [`guidance`]: [`ClipGuided`], a chapter 08 [`Denoiser`](crate::models::diffusion::Denoiser)
//!   that shifts any wrapped prediction along `∇_{x_t} f(x_t, t) · g(c)`, so every sampler
//!   can be CLIP-guided.

pub mod guidance;
pub mod model;

pub use guidance::ClipGuided;
pub use model::{NoisedClip, NoisedClipConfig, NoisedImageEncoder, NOISED_CLIP_KEY};
