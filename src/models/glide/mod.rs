//! GLIDE (Nichol et al. 2021): text-conditional diffusion with classifier-free guidance: chapter 09.
//!
//! GLIDE is chapter 08's U-Net with a caption plugged into its two conditioning hooks
//! (§2.3 of the paper):
//!
//! ```text
//! ids = [SOT, caption..., EOT, PAD...]                     (B, S)
//! h   = TextTransformer(ids)                               (B, S, C_text)   causal, final LN
//! cond    = W_cond h[b, eot_b]      -> added to the timestep embedding      (B, C_emb)
//! context = h, padding masked       -> keys and values of every attention   (B, S, C_text)
//! ```
//!
//! - [`text`]: the text encoder (chapter 03's causal CLIP text transformer, reused) and
//!   its [`text::TextFeatures`]: tokens, padding mask and the end-of-text summary, in a
//!   form other models (chapter 11's decoder) can take as they are;
//! - [`model`]: [`Glide`], the encoder, the `cond` projection and the U-Net, with a warm
//!   start from chapter 08's weights; one model per data set ([`GlideConfig::mnist`],
//!   28x28 grey digits; [`GlideConfig::shapes`], 32x32 RGB Shapes), the shipped weights
//!   loaded with [`load_toy`] (`weights/glide_mnist.*`) and [`load_toy_shapes`]
//!   (`weights/glide_shapes.*`);
//! - [`denoiser`]: the model with its captions fixed, a [`crate::models::diffusion::Denoiser`]
//!   for every chapter 08 sampler, and classifier-free guidance with the empty caption as
//!   the unconditional input (both passes in one batch).

pub mod denoiser;
pub mod model;
pub mod text;

pub use denoiser::{check_guidance_scale, drop_captions, CaptionDenoiser, EMPTY_CAPTION};
#[cfg(feature = "trained-bpe")]
pub use model::{load_toy, load_toy_for, load_toy_shapes};
pub use model::{Glide, GlideConfig};
pub use text::{TextEncoder, TextFeatures};
