//! CLIP: Contrastive Language-Image Pre-training (Radford et al. 2021).
//!
//! Hugging Face's layout, file by file:
//! - [`config`]: `config.json`'s fields, validated;
//! - [`layers`]: the pre-LN encoder layer (`self_attn`, `layer_norm1`, `mlp`, `layer_norm2`);
//! - [`text`]: the causal text transformer pooled at the end-of-text token;
//! - [`vision`]: the ViT with a class token, `pre_layrnorm` and `post_layernorm`;
//! - [`model`]: projections, the learned temperature, the symmetric contrastive loss;
//! - [`load`]: a Hugging Face `model.safetensors` + `config.json` of any size, every name and shape checked;
//! - [`preprocess`]: resize, center crop and CLIP's normalisation;
//! - [`zero_shot`]: prompt-ensembled class embeddings, cosine similarity, accuracy;
//! - [`heads`]: small classifiers on top of frozen CLIP embeddings.

pub mod config;
pub mod heads;
pub mod layers;
pub mod load;
pub mod model;
pub mod preprocess;
pub mod text;
pub mod vision;
pub mod zero_shot;

pub use config::{ClipConfig, ClipTextConfig, ClipVisionConfig, HiddenAct};
pub use load::{load_files, load_pretrained};
pub use model::{contrastive_loss, ClipModel, ClipOutput};
