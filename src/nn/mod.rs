//! Building blocks with named parameters: layers, composition, initialisers.
//!
//! A model is a struct of layers; it implements [`Module::visit`] to name its
//! parameters (`encoder.blocks.0.attn.qkv.weight`) for checkpoints and
//! optimisers, and a `forward` method of whatever signature it needs.

pub mod attention;
pub mod gumbel;
pub mod init;
pub mod layers;
pub mod module;
pub mod quantize;

pub use layers::{Conv2d, Dropout, Embedding, GroupNorm, LayerNorm, Linear};
pub use module::{visit_child, visit_list, Activation, Forward, Module, Sequential};
