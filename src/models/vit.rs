//! The Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words").
//!
//! An image is cut into `N = (H/P)·(W/P)` patches of `P x P` pixels; each is
//! flattened and projected to a token of width `C` (eq. 1):
//!
//! ```text
//! z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos,   E ∈ R^{(P²·ch) x C}, E_pos ∈ R^{(N+1) x C}
//! z_ℓ = pre-LN transformer blocks                     (eqs. 2–3)
//! y   = LN(z_L^0)                                      (eq. 4)
//! ```
//!
//! The projection `E` of every non-overlapping patch is a convolution with
//! kernel = stride = `P`. The class token `x_class` is a learned vector that
//! attends to every patch; its final state is the image's embedding, which a
//! linear head turns into class logits (ViT) or a projection turns into a joint
//! image-text embedding (CLIP).
//!
//! Parameter names: `patch_embed.weight`, `class_embedding`, `positional_embedding`,
//! `ln_pre.*` (if enabled, as in CLIP), `blocks.0.*`, ..., `ln_f.*`, `head.*`.

use crate::nn::{visit_child, Activation, Conv2d, Forward, LayerNorm, Linear, Module, Transformer, TransformerConfig};
use crate::tensor::{Rng, Tensor};
use crate::{Error, Result};

/// The hyper-parameters of a ViT, validated by [`Vit::new`].
#[derive(Clone, Copy, Debug)]
pub struct VitConfig {
    /// Height and width of the (square) input image.
    pub image_size: usize,
    /// Height and width of a patch `P`; must divide `image_size`.
    pub patch_size: usize,
    /// Input channels (1 for MNIST, 3 for colour).
    pub channels: usize,
    /// Token width `C`.
    pub width: usize,
    /// Number of transformer blocks.
    pub layers: usize,
    /// Attention heads per block (must divide `width`).
    pub heads: usize,
    /// MLP hidden width as a multiple of `width`.
    pub mlp_ratio: usize,
    /// The MLP's activation (GELU for ViT, QuickGELU for OpenAI's CLIP).
    pub activation: Activation,
    /// A LayerNorm on the tokens before the first block (CLIP's `ln_pre`).
    pub ln_pre: bool,
    /// Classes of the linear head on the class token; `None` for no head.
    pub num_classes: Option<usize>,
    /// Residual dropout in the blocks.
    pub dropout: f32,
}

impl VitConfig {
    // ANCHOR: mnist
    /// Chapter 02's ViT for MNIST (`weights/vit_mnist.safetensors`): 4 × 4 = 16 patches of
    /// 7 × 7 pixels plus a class token, 64 wide, 4 blocks of 4 heads.
    pub fn mnist() -> Self {
        VitConfig {
            image_size: 28,
            patch_size: 7,
            channels: 1,
            width: 64,
            layers: 4,
            heads: 4,
            mlp_ratio: 4,
            activation: Activation::Gelu,
            ln_pre: false,
            num_classes: Some(10),
            dropout: 0.0,
        }
    }
    // ANCHOR_END: mnist

    /// `N = (image_size / patch_size)²`, the number of patch tokens.
    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size.max(1)).pow(2)
    }

    /// Checks every value; the error names it (`image size 28 is not divisible by patch 5`).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("vit: {m}")));
        if self.patch_size == 0 || self.image_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return bad(format!("image size {} is not divisible by patch {}", self.image_size, self.patch_size));
        }
        if self.channels == 0 {
            return bad("channels 0: an image needs at least one channel".into());
        }
        if self.width == 0 || self.heads == 0 || !self.width.is_multiple_of(self.heads) {
            return bad(format!("width {} is not divisible by {} heads", self.width, self.heads));
        }
        if self.num_classes == Some(0) {
            return bad("num_classes 0: a classification head needs at least one class".into());
        }
        Ok(())
    }

    fn transformer(&self) -> TransformerConfig {
        TransformerConfig {
            dim: self.width,
            n_head: self.heads,
            n_layer: self.layers,
            mlp_ratio: self.mlp_ratio,
            activation: self.activation,
            dropout: self.dropout,
            final_ln: true,
        }
    }
}

/// A Vision Transformer.
pub struct Vit {
    /// Patch projection `E`: `Conv2d(ch, C, P, stride P)`.
    pub patch_embed: Conv2d,
    /// `x_class`, `(C)`.
    pub class_embedding: Tensor,
    /// `E_pos`, `(N + 1, C)`; row 0 belongs to the class token.
    pub positional_embedding: Tensor,
    /// CLIP's LayerNorm before the blocks, if configured.
    pub ln_pre: Option<LayerNorm>,
    /// The pre-LN blocks and the final LayerNorm `ln_f` (eq. 4's LN).
    pub transformer: Transformer,
    /// The classification head on the class token, if configured.
    pub head: Option<Linear>,
    /// The configuration.
    pub config: VitConfig,
}

/// What the ViT computes for a batch.
pub struct VitOutput {
    /// The final (normalised) class token `y`, `(B, C)`.
    pub class_embedding: Tensor,
    /// The final (normalised) patch tokens, `(B, N, C)`.
    pub patch_embeddings: Tensor,
    /// Every block's attention weights, `(B, H, N + 1, N + 1)`.
    pub attention: Vec<Tensor>,
}

impl Vit {
    /// A ViT of `config` (validated first); class and position embeddings `N(0, 0.02²)`.
    pub fn new(config: VitConfig, rng: &mut Rng) -> Result<Self> {
        config.validate()?;
        let (c, p) = (config.width, config.patch_size);
        Ok(Vit {
            patch_embed: Conv2d::new(config.channels, c, p, p, 0, true, rng),
            class_embedding: crate::nn::init::normal(&[c], 0.02, rng),
            positional_embedding: crate::nn::init::normal(&[config.num_patches() + 1, c], 0.02, rng),
            ln_pre: config.ln_pre.then(|| LayerNorm::new(c)),
            transformer: Transformer::new(config.transformer(), rng)?,
            head: config.num_classes.map(|k| Linear::new(c, k, true, rng)),
            config,
        })
    }

    // ANCHOR: embed
    /// `images (B, ch, H, W)` -> tokens `z_0 (B, N + 1, C)` (eq. 1).
    pub fn embed(&self, images: &Tensor) -> Result<Tensor> {
        let s = images.shape();
        let cfg = &self.config;
        if s.len() != 4 || s[1] != cfg.channels || s[2] != cfg.image_size || s[3] != cfg.image_size {
            return Err(Error::shape(
                "vit",
                format!("images {s:?}, expected (B, {}, {}, {})", cfg.channels, cfg.image_size, cfg.image_size),
            ));
        }
        let (b, c, n) = (s[0] as isize, cfg.width as isize, cfg.num_patches() as isize);
        let patches = self.patch_embed.forward(images)?; // (B, C, H/P, W/P): x_p^i E for every patch
        let patches = patches.reshape(&[b, c, n])?.transpose(1, 2); // (B, N, C)
        let class = self.class_embedding.reshape(&[1, 1, c])?.broadcast_to(&[b as usize, 1, cfg.width])?; // (B, 1, C)
        let tokens = Tensor::concat(&[&class, &patches], 1)?; // (B, N + 1, C)
        tokens.add(&self.positional_embedding) // + E_pos, broadcast over B
    }
    // ANCHOR_END: embed

    // ANCHOR: forward
    /// `images (B, ch, H, W)` -> the class embedding `(B, C)`, the patch
    /// embeddings `(B, N, C)` and the attention maps.
    pub fn forward(&self, images: &Tensor, training: bool) -> Result<VitOutput> {
        let mut z = self.embed(images)?; // (B, N + 1, C)
        if let Some(ln) = &self.ln_pre {
            z = ln.forward(&z)?;
        }
        let out = self.transformer.forward(&z, None, training)?; // every token sees every token
        let z = out.output; // (B, N + 1, C), after ln_f
        let (b, n1) = (z.shape()[0], z.shape()[1]);
        Ok(VitOutput {
            class_embedding: z.narrow(1, 0, 1)?.reshape(&[b as isize, self.config.width as isize])?, // y = LN(z_L^0)
            patch_embeddings: z.narrow(1, 1, n1 - 1)?,
            attention: out.attention,
        })
    }

    /// Class logits `(B, K)` from the head on the class embedding; errors when
    /// the model was built without a head.
    pub fn classify(&self, images: &Tensor, training: bool) -> Result<Tensor> {
        let head = self.head.as_ref().ok_or_else(|| Error::Config("vit: built with num_classes = None, so it has no head".into()))?;
        head.forward(&self.forward(images, training)?.class_embedding)
    }
    // ANCHOR_END: forward
}

impl Module for Vit {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_child("patch_embed", &self.patch_embed, f);
        f("class_embedding", &self.class_embedding);
        f("positional_embedding", &self.positional_embedding);
        if let Some(ln) = &self.ln_pre {
            visit_child("ln_pre", ln, f);
        }
        self.transformer.visit(f);
        if let Some(h) = &self.head {
            visit_child("head", h, f);
        }
    }
}
