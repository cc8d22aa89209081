#![warn(missing_docs)]
//! # dalle-from-scratch
//!
//! The DALL-E family built from scratch in Rust, one chapter at a time. Each
//! chapter of the book (`chapters/`) has an example (`examples/NN_name.rs`) and
//! the library modules below.
//!
//! | chapter | modules | what it builds |
//! |---|---|---|
//! | 00 autograd | [`tensor`], [`ops`], [`nn`], [`optim`], [`eval`] | reverse-mode autograd on n-dimensional tensors; the digit judge |
//! | 01 attention | [`nn::attention`], [`nn::mha`], [`nn::transformer`], [`models::gpt`] | attention, masks, KV cache, pre-LN transformer |
//! | 02 ViT | [`models::vit`] | the Vision Transformer |
//! | 03 CLIP | [`tokenizer`], [`models::clip`] | CLIP's BPE; two towers, contrastive loss, zero-shot, Hugging Face checkpoints |
//! | 04 VAE | [`models::vae`] | a VAE: reparameterisation, closed-form Gaussian KL |
//! | 05 VQ-VAE | [`nn::quantize`], [`models::vqvae`] | VQ-VAE: nearest code, straight-through, EMA codebook, dead-code restarts |
//! | 06 dVAE | [`nn::gumbel`], [`models::dvae`] | DALL-E's dVAE: gumbel-softmax, KL to the uniform prior; [`models::image_tokenizer`] |
//! | 07 DALL-E 1 | [`models::dalle`], [`eval::shapes`] | one transformer over caption and image tokens, sparse masks, KV-cached top-k/top-p sampling, CLIP reranking; the Shapes judge |
//! | 08 DDPM | [`models::diffusion`], [`nn::context_attention`], [`eval::frechet`] | noise schedules, the U-Net with its conditioning hook, DDPM/DDIM/ODE samplers, classifier-free guidance, EMA; the Fréchet distance |
//! | 09 GLIDE | [`models::glide`], [`models::noised_clip`] | a text transformer's tokens in every U-Net attention layer, classifier-free guidance on captions; CLIP guidance with a noised CLIP |
//! | 10 unCLIP prior | [`models::prior`] | a diffusion prior and an autoregressive prior (PCA + buckets) from a caption to a CLIP image embedding |
//! | 11 unCLIP decoder | [`models::unclip`] | the decoder (CLIP image embedding in the timestep embedding and as 4 tokens), the diffusion upsampler, slerp, variations, interpolations, text diffs, the text -> prior -> decoder -> upsampler pipeline |
//! | 12 side by side | [`models::text_to_image`] | one `TextToImage` interface over DALL-E 1, GLIDE and unCLIP; the `text_to_image` example and its comparison |
//!
//! Around them: [`data`] (MNIST, Fashion-MNIST, CIFAR-10, Shapes, captions),
//! [`io`] (checkpoints, PNG grids, `.npy`, plots), [`train`] (the command line
//! every example shares, progress, metrics) and [`backend`] (the CPU loops and
//! the wgpu kernels behind one seam).
//!
//! Data flows one way: [`data`] → [`models`] (built from [`nn`], built from
//! [`ops`] on tensors, whose loops live in [`backend`]) → [`io`] / [`eval`].
//!
//! ```
//! use dalle::{Rng, Tensor};
//! let mut rng = Rng::new(0);
//! let w = Tensor::param(rng.normal_array(&[3, 2]));   // a parameter (3, 2)
//! let x = Tensor::new(rng.normal_array(&[4, 3]));     // a batch (4, 3)
//! let loss = x.matmul(&w)?.tanh().mean();             // a scalar
//! loss.backward();                                    // dloss/dw into w.grad()
//! assert_eq!(w.grad().unwrap().shape(), &[3, 2]);
//! # Ok::<(), dalle::Error>(())
//! ```

pub mod backend;
pub mod data;
pub mod error;
pub mod eval;
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
