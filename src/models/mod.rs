//! One module per paper: the models of the book's chapters.

pub mod image_tokenizer;
pub mod vqvae;
pub mod dvae;
pub mod vae;
