//! One module per paper: the models of the book's chapters.

pub mod clip;
pub mod dalle;
pub mod diffusion;
pub mod dvae;
pub mod glide;
pub mod gpt;
pub mod image_tokenizer;
pub mod noised_clip;
pub mod prior;
pub mod text_to_image;
pub mod unclip;
pub mod vae;
pub mod vit;
pub mod vqvae;
