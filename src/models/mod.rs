//! One module per paper: the models of the book's chapters.

pub mod clip;
pub mod gpt;
pub mod vit;
