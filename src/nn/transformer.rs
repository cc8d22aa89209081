//! The pre-LayerNorm transformer (GPT-2, CLIP, ViT): a stack of residual blocks
//!
//! ```text
//! x = x + Attention(LN_1(x))
//! x = x + MLP(LN_2(x)),      MLP(x) = W_2 act(W_1 x + b_1) + b_2,  W_1: C -> 4C
//! ```
//!
//! Normalising the input of each branch (rather than the sum, as the original
//! post-LN transformer of Vaswani et al. did) leaves an identity path from the
//! first block to the last, which is what lets deep stacks train without a
//! careful warm-up (Xiong et al. 2020). A last LayerNorm `ln_f` follows the stack.
//!
//! Parameter names follow GPT-2/CLIP: `blocks.0.ln_1.weight`, `blocks.0.attn.qkv.weight`,
//! `blocks.0.attn.proj.weight`, `blocks.0.ln_2.bias`, `blocks.0.mlp.fc.weight`,
//! `blocks.0.mlp.proj.weight`, ..., `ln_f.weight`.

use super::layers::{Dropout, LayerNorm, Linear};
use super::mha::{KvCache, LayerKv, MultiHeadAttention};
use super::module::{visit_child, visit_list, Activation, Forward, Module};
use crate::tensor::{Rng, Tensor};
use crate::{Error, Result};
use ndarray::ArrayD;

/// The shape of a transformer stack.
#[derive(Clone, Copy, Debug)]
pub struct TransformerConfig {
    /// Width `C` of every token vector.
    pub dim: usize,
    /// Attention heads `H` per block (must divide `dim`).
    pub n_head: usize,
    /// Number of blocks.
    pub n_layer: usize,
    /// Hidden width of the MLP as a multiple of `dim` (4 in GPT-2, CLIP, ViT).
    pub mlp_ratio: usize,
    /// The MLP's non-linearity: [`Activation::Gelu`] (GPT-2, ViT) or [`Activation::QuickGelu`] (CLIP).
    pub activation: Activation,
    /// Dropout after the attention and MLP branches (0 = none).
    pub dropout: f32,
    /// Whether a final LayerNorm `ln_f` follows the blocks.
    pub final_ln: bool,
}

impl TransformerConfig {
    /// `n_layer` blocks of width `dim` with `n_head` heads, MLP ratio 4, GELU, no dropout, with `ln_f`.
    pub fn new(dim: usize, n_head: usize, n_layer: usize) -> Self {
        TransformerConfig { dim, n_head, n_layer, mlp_ratio: 4, activation: Activation::Gelu, dropout: 0.0, final_ln: true }
    }

    /// Errors name the value that cannot work.
    pub fn validate(&self) -> Result<()> {
        if self.dim == 0 || self.n_head == 0 || !self.dim.is_multiple_of(self.n_head) {
            return Err(Error::Config(format!("transformer: width {} is not divisible by {} heads", self.dim, self.n_head)));
        }
        if self.mlp_ratio == 0 {
            return Err(Error::Config("transformer: mlp_ratio 0 leaves the MLP without hidden units".into()));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::Config(format!("transformer: dropout {} must be in [0, 1)", self.dropout)));
        }
        Ok(())
    }
}

// ANCHOR: mlp
/// The position-wise feed-forward network: `proj(act(fc(x)))`, `C -> rC -> C`.
pub struct Mlp {
    /// `W_1`: `Linear(C, rC)`.
    pub fc: Linear,
    /// `W_2`: `Linear(rC, C)`.
    pub proj: Linear,
    /// The non-linearity between them.
    pub activation: Activation,
}

impl Mlp {
    /// `dim -> hidden -> dim` with `activation`.
    pub fn new(dim: usize, hidden: usize, activation: Activation, rng: &mut Rng) -> Self {
        Mlp { fc: Linear::new(dim, hidden, true, rng), proj: Linear::new(hidden, dim, true, rng), activation }
    }
}

impl Forward for Mlp {
    /// `(..., C) -> (..., C)`
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.activation.apply(&self.fc.forward(x)?); // (..., rC)
        self.proj.forward(&h) // (..., C)
    }
}
// ANCHOR_END: mlp

impl Module for Mlp {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_child("fc", &self.fc, f);
        visit_child("proj", &self.proj, f);
    }
}

/// One pre-LN residual block: attention then MLP, each on a normalised input.
pub struct Block {
    /// LayerNorm before attention.
    pub ln_1: LayerNorm,
    /// Multi-head self-attention.
    pub attn: MultiHeadAttention,
    /// LayerNorm before the MLP.
    pub ln_2: LayerNorm,
    /// The feed-forward network.
    pub mlp: Mlp,
    /// Dropout after each branch (residual dropout), if any.
    pub dropout: Option<Dropout>,
}

impl Block {
    /// A block of `config`'s shape (the config is validated).
    pub fn new(config: &TransformerConfig, rng: &mut Rng) -> Result<Self> {
        config.validate()?;
        let c = config.dim;
        let dropout = if config.dropout > 0.0 { Some(Dropout::new(config.dropout, rng.below(usize::MAX) as u64)?) } else { None };
        Ok(Block {
            ln_1: LayerNorm::new(c),
            attn: MultiHeadAttention::new(c, config.n_head, true, rng)?,
            ln_2: LayerNorm::new(c),
            mlp: Mlp::new(c, config.mlp_ratio * c, config.activation, rng),
            dropout,
        })
    }

    fn drop(&self, x: Tensor, training: bool) -> Result<Tensor> {
        match &self.dropout {
            Some(d) => d.forward(&x, training),
            None => Ok(x),
        }
    }

    // ANCHOR: block
    /// `x (B, T, C)` -> `(B, T, C)` and the attention weights `(B, H, T, T)`.
    pub fn forward(&self, x: &Tensor, mask: Option<&ArrayD<bool>>, training: bool) -> Result<(Tensor, Tensor)> {
        let (a, weights) = self.attn.forward(&self.ln_1.forward(x)?, mask)?;
        let x = x.add(&self.drop(a, training)?)?; // x + Attention(LN_1(x))
        let m = self.mlp.forward(&self.ln_2.forward(&x)?)?;
        let x = x.add(&self.drop(m, training)?)?; // x + MLP(LN_2(x))
        Ok((x, weights))
    }
    // ANCHOR_END: block

    /// [`Block::forward`] for the next positions of a causal decoder, with the
    /// keys and values of earlier positions in `cache` (no dropout).
    pub fn forward_cached(&self, x_new: &Tensor, cache: &mut LayerKv) -> Result<(Tensor, Tensor)> {
        let (a, weights) = self.attn.forward_cached(&self.ln_1.forward(x_new)?, cache)?;
        let x = x_new.add(&a)?;
        let x = x.add(&self.mlp.forward(&self.ln_2.forward(&x)?)?)?;
        Ok((x, weights))
    }

    /// [`Block::forward_cached`] with an explicit attention `mask (t, s₀ + t)`
    /// (see [`MultiHeadAttention::forward_cached_masked`]).
    pub fn forward_cached_masked(&self, x_new: &Tensor, cache: &mut LayerKv, mask: &ArrayD<bool>) -> Result<(Tensor, Tensor)> {
        let (a, weights) = self.attn.forward_cached_masked(&self.ln_1.forward(x_new)?, cache, mask)?;
        let x = x_new.add(&a)?;
        let x = x.add(&self.mlp.forward(&self.ln_2.forward(&x)?)?)?;
        Ok((x, weights))
    }
}

impl Module for Block {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_child("ln_1", &self.ln_1, f);
        visit_child("attn", &self.attn, f);
        visit_child("ln_2", &self.ln_2, f);
        visit_child("mlp", &self.mlp, f);
    }
}

/// A stack of [`Block`]s and an optional final LayerNorm `ln_f`.
pub struct Transformer {
    /// The blocks, named `blocks.0`, `blocks.1`, ...
    pub blocks: Vec<Block>,
    /// The final LayerNorm, if configured.
    pub ln_f: Option<LayerNorm>,
    /// The configuration it was built from.
    pub config: TransformerConfig,
}

/// What a transformer returns: the output and every block's attention weights.
pub struct TransformerOutput {
    /// `(B, T, C)`
    pub output: Tensor,
    /// One `(B, H, T, S)` tensor per block, for plots.
    pub attention: Vec<Tensor>,
}

impl Transformer {
    /// A stack of `config.n_layer` blocks; errors name the invalid value.
    pub fn new(config: TransformerConfig, rng: &mut Rng) -> Result<Self> {
        config.validate()?;
        let blocks = (0..config.n_layer).map(|_| Block::new(&config, rng)).collect::<Result<Vec<_>>>()?;
        Ok(Transformer { blocks, ln_f: config.final_ln.then(|| LayerNorm::new(config.dim)), config })
    }

    fn finish(&self, x: Tensor, attention: Vec<Tensor>) -> Result<TransformerOutput> {
        let output = match &self.ln_f {
            Some(ln) => ln.forward(&x)?,
            None => x,
        };
        Ok(TransformerOutput { output, attention })
    }

    /// `x (B, T, C)` through every block, with an optional attention `mask`.
    pub fn forward(&self, x: &Tensor, mask: Option<&ArrayD<bool>>, training: bool) -> Result<TransformerOutput> {
        let mut h = x.clone();
        let mut attention = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            let (next, w) = block.forward(&h, mask, training)?;
            h = next;
            attention.push(w);
        }
        self.finish(h, attention)
    }

    /// Causal decoding of the next positions `x_new (B, t, C)` given `cache`
    /// (one [`LayerKv`] per block; create it with [`Transformer::new_cache`]).
    pub fn forward_cached(&self, x_new: &Tensor, cache: &mut KvCache) -> Result<TransformerOutput> {
        if cache.layers.len() != self.blocks.len() {
            return Err(Error::shape("transformer", format!("a cache of {} layers for {} blocks", cache.layers.len(), self.blocks.len())));
        }
        let mut h = x_new.clone();
        let mut attention = Vec::with_capacity(self.blocks.len());
        for (block, layer) in self.blocks.iter().zip(cache.layers.iter_mut()) {
            let (next, w) = block.forward_cached(&h, layer)?;
            h = next;
            attention.push(w);
        }
        self.finish(h, attention)
    }

    /// An empty key/value cache with one layer per block.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.blocks.len())
    }
}

impl Module for Transformer {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_list("blocks", &self.blocks, f);
        if let Some(ln) = &self.ln_f {
            visit_child("ln_f", ln, f);
        }
    }
}
