//! Denoising diffusion (Ho et al. 2020; Song, Meng & Ermon 2021; Song et al. 2021): chapter 08.
//!
//! - [`schedule`]: `β_t`, `ᾱ_t`, the forward process `q(x_t | x_0)` and the posterior;
//! - [`objective`]: what the network predicts (ε, `x_0`, `v`) and the MSE loss;
//! - [`blocks`], [`unet`]: the denoising U-Net with its conditioning hook;
//! - [`class_cond`]: class labels through that hook, with a null class for guidance;
//! - [`samplers`]: DDPM, DDIM, the probability-flow ODE (Euler, Heun), respacing,
//!   DDIM inversion and classifier-free guidance, all over one [`samplers::Denoiser`];
//! - [`pixels`]: pixels `[0, 1]` to the models' `[-1, 1]` and back.
//!
//! GLIDE (chapter 09) and unCLIP (10, 11) reuse these pieces as they are.

pub mod blocks;
pub mod class_cond;
pub mod objective;
pub mod pixels;
pub mod samplers;
pub mod schedule;
pub mod unet;

pub use class_cond::{drop_labels, ClassConditionalUNet};
pub use objective::{diffusion_loss, Prediction};
pub use pixels::{to_model, to_pixels};
pub use samplers::{ddim_invert, guidance, respace, ClassifierFree, Denoiser, Diffusion, Sampler};
pub use schedule::{BetaSchedule, NoiseSchedule, Variance};
pub use unet::{UNet, UNetConfig};
