//! Building blocks with named parameters: layers, composition, initialisers.
//!
//! A model is a struct of layers; it implements [`Module::visit`] to name its
//! parameters (`encoder.blocks.0.attn.qkv.weight`) for checkpoints and
//! optimisers, and a `forward` method of whatever signature it needs.

pub mod attention;
pub mod context_attention;
pub mod gumbel;
pub mod init;
pub mod layers;
pub mod mha;
pub mod module;
pub mod position;
pub mod quantize;
pub mod transformer;

pub use layers::{Conv2d, Dropout, Embedding, GroupNorm, LayerNorm, Linear};
pub use context_attention::ContextAttention;
pub use mha::{KvCache, LayerKv, MultiHeadAttention};
pub use position::{sinusoidal_table, LearnedPositionEmbedding, SinusoidalPositionEmbedding};
pub use transformer::{Block, Mlp, Transformer, TransformerConfig, TransformerOutput};
pub use module::{visit_child, visit_list, Activation, Forward, Module, Sequential};
