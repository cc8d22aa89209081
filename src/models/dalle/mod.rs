//! DALL-E 1 (Ramesh et al. 2021, "Zero-Shot Text-to-Image Generation"): one
//! decoder-only transformer over a caption's tokens followed by an image's tokens.
//!
//! An image tokenizer (the dVAE of chapter 06 or the VQ-VAE of chapter 05)
//! turns an image into an `h × w` grid of ids below `K`; the caption is `L`
//! BPE ids ([`sequence`]). The model learns the joint distribution by the
//! chain rule, one token at a time, text first:
//!
//! ```text
//! p(t, i) = Π_{j<L} p(t_j | t_<j) · Π_{n<hw} p(i_n | t, i_<n)
//! h_0[p] = W_text[t_p] + P_text[p]                       p <  L   (text)
//! h_0[p] = W_image[i_n] + P_row[n / w] + P_col[n mod w]  p = L + n (image, raster order)
//! h     = Transformer(h_0, mask)                         causal, optionally sparse ([`masks`])
//! logits at a text position  = W_text_head h   (V_text + L ids: text, then the padding tokens)
//! logits at an image position = W_image_head h (K ids: only image tokens can follow)
//! L = 1/8 · CE_text + 7/8 · CE_image                    (section 2.2, each CE a mean over its tokens)
//! ```
//!
//! Files: [`sequence`] builds the token sequence, [`masks`] the row, column
//! and convolutional attention masks, [`sample`] draws image tokens with
//! temperature, top-k and top-p through a key/value cache, [`rerank`] orders
//! candidates by CLIP score, [`pipeline`] loads the trained pieces of one data set together
//! and draws ranked candidates.

pub mod masks;
pub mod pipeline;
pub mod rerank;
pub mod sample;
pub mod sequence;

use ndarray::ArrayD;

use crate::nn::{visit_child, Embedding, Forward, LearnedPositionEmbedding, Linear, Module, Transformer, TransformerConfig};
use crate::tensor::{Rng, Tensor};
use crate::{Error, Result};
pub use masks::{dalle_mask, ImageAttention, MaskPattern};

/// Text positions of the Shapes model. The longest Shapes captions list three objects ("a small
/// red circle, a large cyan square and a small blue triangle"): 14 words and a comma, one BPE id
/// each in the Shapes CLIP's tokenizer, plus SOT and EOT (`tests/weights_dalle_shapes.rs` checks
/// the longest word of every slot).
pub const SHAPES_TEXT_LEN: usize = 16;

/// The shape of a [`Dalle`].
#[derive(Clone, Copy, Debug)]
pub struct DalleConfig {
    /// The text tokenizer's vocabulary `V_text` (the model adds `L` padding tokens to it).
    pub text_vocab: usize,
    /// Text positions `L`: every caption is padded (or cut) to this length.
    pub text_len: usize,
    /// The image tokenizer's codebook size `K`.
    pub image_vocab: usize,
    /// The image token grid `(h, w)`.
    pub grid: (usize, usize),
    /// The transformer stack.
    pub transformer: TransformerConfig,
    /// The attention mask of each layer over the image part.
    pub masks: MaskPattern,
    /// The weight of the text loss; the image loss gets `1 - text_loss_weight` (paper: 1/8 and 7/8).
    pub text_loss_weight: f32,
}

impl DalleConfig {
    /// The toy MNIST model: `L = 10` text positions for the toy CLIP's BPE, a
    /// `7 × 7` grid of 128 codes, width 128, 4 heads, 4 layers.
    pub fn mnist(text_vocab: usize) -> Self {
        DalleConfig {
            text_vocab,
            text_len: 10,
            image_vocab: 128,
            grid: (7, 7),
            transformer: TransformerConfig::new(128, 4, 4),
            masks: MaskPattern::Uniform(ImageAttention::Full),
            text_loss_weight: 1.0 / 8.0,
        }
    }

    /// The toy Shapes model: `L = SHAPES_TEXT_LEN` text positions (the longest Shapes caption,
    /// three objects, in the Shapes CLIP's BPE, with SOT and EOT), an `8 × 8` grid of 128
    /// codes (chapter 05's Shapes VQ-VAE), and the MNIST model's transformer.
    pub fn shapes(text_vocab: usize) -> Self {
        DalleConfig { text_len: SHAPES_TEXT_LEN, grid: (8, 8), ..Self::mnist(text_vocab) }
    }

    /// Image tokens per sequence, `N = h · w`.
    pub fn image_len(&self) -> usize {
        self.grid.0 * self.grid.1
    }

    /// The whole sequence, `L + N`.
    pub fn seq_len(&self) -> usize {
        self.text_len + self.image_len()
    }

    /// Errors name the value that cannot work.
    pub fn validate(&self) -> Result<()> {
        if self.text_vocab == 0 || self.image_vocab == 0 || self.text_len < 2 || self.grid.0 == 0 || self.grid.1 == 0 {
            return Err(Error::Config(format!(
                "dalle: text_vocab {}, image_vocab {}, grid {:?} must be positive and text_len {} at least 2 (SOT, EOT)",
                self.text_vocab, self.image_vocab, self.grid, self.text_len
            )));
        }
        if !(0.0..=1.0).contains(&self.text_loss_weight) {
            return Err(Error::Config(format!("dalle: text_loss_weight {} must be in [0, 1]", self.text_loss_weight)));
        }
        self.masks.validate()?;
        self.transformer.validate()
    }
}

/// The losses of one batch: the weighted sum to minimise and its two parts.
pub struct DalleLoss {
    /// `w · CE_text + (1 - w) · CE_image`.
    pub loss: Tensor,
    /// Mean cross-entropy over the `L - 1` predicted text tokens (nats).
    pub text: f32,
    /// Mean cross-entropy over the `N` image tokens (nats).
    pub image: f32,
}

/// DALL-E 1's transformer. Parameter names: `text_embedding.weight`,
/// `text_position.weight`, `image_embedding.weight`, `image_row.weight`,
/// `image_column.weight`, `blocks.*`, `ln_f.*`, `text_head.weight`, `image_head.weight`.
pub struct Dalle {
    /// `W_text (V_text + L, C)`: text ids, then one padding token per position.
    pub text_embedding: Embedding,
    /// `P_text (L, C)`.
    pub text_position: LearnedPositionEmbedding,
    /// `W_image (K, C)`.
    pub image_embedding: Embedding,
    /// `P_row (h, C)`.
    pub image_row: Embedding,
    /// `P_col (w, C)`.
    pub image_column: Embedding,
    /// The blocks and `ln_f`.
    pub transformer: Transformer,
    /// `C -> V_text + L`, no bias.
    pub text_head: Linear,
    /// `C -> K`, no bias.
    pub image_head: Linear,
    /// The configuration.
    pub config: DalleConfig,
}

impl Dalle {
    /// A randomly initialised model; errors name an invalid value of `config`.
    pub fn new(config: DalleConfig, rng: &mut Rng) -> Result<Self> {
        config.validate()?;
        let c = config.transformer.dim;
        let (l, (h, w)) = (config.text_len, config.grid);
        Ok(Dalle {
            text_embedding: Embedding::new(config.text_vocab + l, c, 0.02, rng),
            text_position: LearnedPositionEmbedding::new(l, c, 0.02, rng),
            image_embedding: Embedding::new(config.image_vocab, c, 0.02, rng),
            image_row: Embedding::new(h, c, 0.02, rng),
            image_column: Embedding::new(w, c, 0.02, rng),
            transformer: Transformer::new(config.transformer, rng)?,
            text_head: Linear::new(c, config.text_vocab + l, false, rng),
            image_head: Linear::new(c, config.image_vocab, false, rng),
            config,
        })
    }

    /// Errors when `tokenizer_vocab` or `grid` differ from what the model was built for.
    pub fn check_image_tokenizer(&self, tokenizer_vocab: usize, grid: (usize, usize)) -> Result<()> {
        if tokenizer_vocab != self.config.image_vocab || grid != self.config.grid {
            return Err(Error::Config(format!(
                "dalle: the image tokenizer has {tokenizer_vocab} codes on a {}x{} grid, the model expects {} codes on {}x{}",
                grid.0, grid.1, self.config.image_vocab, self.config.grid.0, self.config.grid.1
            )));
        }
        Ok(())
    }

    // ANCHOR: embed
    /// `ids (B, t)` at sequence positions `offset .. offset + t` -> `(B, t, C)`:
    /// text embeddings and positions before `L`, image embeddings and row + column positions after.
    pub fn embed(&self, ids: &[usize], b: usize, t: usize, offset: usize) -> Result<Tensor> {
        let (l, w) = (self.config.text_len, self.config.grid.1);
        if ids.len() != b * t || offset + t > self.config.seq_len() || t == 0 {
            return Err(Error::shape("dalle.embed", format!("{} ids at positions {offset}..{} for B = {b}, sequence {}", ids.len(), offset + t, self.config.seq_len())));
        }
        let n_text = l.saturating_sub(offset).min(t); // how many of the t positions are text
        let mut parts = Vec::with_capacity(2);
        if n_text > 0 {
            let text_ids: Vec<usize> = ids.chunks(t).flat_map(|row| row[..n_text].iter().copied()).collect();
            let e = self.text_embedding.forward(&text_ids, &[b, n_text])?; // (B, t_text, C)
            parts.push(e.add(&self.text_position.forward(n_text, offset)?)?); // + P_text[p]
        }
        if n_text < t {
            let n_image = t - n_text;
            let first = offset + n_text - l; // raster index of the first image position
            let image_ids: Vec<usize> = ids.chunks(t).flat_map(|row| row[n_text..].iter().copied()).collect();
            let cells: Vec<usize> = (first..first + n_image).collect();
            let rows: Vec<usize> = cells.iter().map(|n| n / w).collect();
            let cols: Vec<usize> = cells.iter().map(|n| n % w).collect();
            let e = self.image_embedding.forward(&image_ids, &[b, n_image])?; // (B, t_image, C)
            let pos = self.image_row.forward(&rows, &[n_image])?.add(&self.image_column.forward(&cols, &[n_image])?)?; // (t_image, C)
            parts.push(e.add(&pos)?); // + P_row[n / w] + P_col[n mod w]
        }
        let refs: Vec<&Tensor> = parts.iter().collect();
        Tensor::concat(&refs, 1) // (B, t, C)
    }
    // ANCHOR_END: embed

    /// The mask of every layer for queries at `offset .. offset + t` over keys `0 .. offset + t`.
    pub fn layer_masks(&self, t: usize, offset: usize) -> Vec<ArrayD<bool>> {
        let n = self.transformer.blocks.len();
        (0..n)
            .map(|layer| dalle_mask(self.config.masks.layer(layer, n), t, offset + t, self.config.text_len, self.config.grid.1))
            .collect()
    }

    // ANCHOR: forward
    /// `ids (B, T)` from position 0 -> the final hidden states `(B, T, C)`, each
    /// layer with its own mask.
    pub fn hidden(&self, ids: &[usize], b: usize, t: usize, training: bool) -> Result<Tensor> {
        let mut h = self.embed(ids, b, t, 0)?; // (B, T, C)
        for (block, mask) in self.transformer.blocks.iter().zip(self.layer_masks(t, 0)) {
            h = block.forward(&h, Some(&mask), training)?.0; // (B, T, C)
        }
        match &self.transformer.ln_f {
            Some(ln) => ln.forward(&h),
            None => Ok(h),
        }
    }

    /// `ids (B, T)` from position 0 -> the text logits `(B, min(T, L - 1), V_text + L)` of the
    /// positions that predict text and the image logits `(B, T - L + 1, K)` of those that
    /// predict image tokens (position `L - 1 + n` predicts image token `n`).
    pub fn forward(&self, ids: &[usize], b: usize, t: usize, training: bool) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let h = self.hidden(ids, b, t, training)?; // (B, T, C)
        self.heads(&h, 0)
    }

    /// The two heads over hidden states `h (B, t, C)` at positions `offset .. offset + t`.
    pub fn heads(&self, h: &Tensor, offset: usize) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let t = h.shape()[1];
        let split = (self.config.text_len - 1).saturating_sub(offset).min(t); // positions that predict text
        let text = if split > 0 { Some(self.text_head.forward(&h.narrow(1, 0, split)?)?) } else { None }; // (B, split, V_text + L)
        let image = if split < t { Some(self.image_head.forward(&h.narrow(1, split, t - split)?)?) } else { None }; // (B, t - split, K)
        Ok((text, image))
    }
    // ANCHOR_END: forward

    // ANCHOR: loss
    /// The loss of whole sequences `ids (B, L + N)` ([`sequence::join_sequences`]):
    /// predict `ids[:, 1:]` from `ids[:, :-1]`, `w · CE_text + (1 - w) · CE_image`.
    pub fn loss(&self, ids: &[usize], b: usize, training: bool) -> Result<DalleLoss> {
        let (l, n, s) = (self.config.text_len, self.config.image_len(), self.config.seq_len());
        if ids.len() != b * s {
            return Err(Error::shape("dalle.loss", format!("{} ids are not B = {b} sequences of L + N = {s}", ids.len())));
        }
        let inputs: Vec<usize> = ids.chunks(s).flat_map(|row| row[..s - 1].iter().copied()).collect();
        let text_targets: Vec<usize> = ids.chunks(s).flat_map(|row| row[1..l].iter().copied()).collect();
        let image_targets: Vec<usize> = ids.chunks(s).flat_map(|row| row[l..].iter().copied()).collect();
        let (text_logits, image_logits) = self.forward(&inputs, b, s - 1, training)?;
        let (text_logits, image_logits) = (text_logits.expect("L >= 2"), image_logits.expect("N >= 1"));
        let vt = (self.config.text_vocab + l) as isize;
        let ce_text = text_logits.reshape(&[(b * (l - 1)) as isize, vt])?.cross_entropy(&text_targets)?; // mean over text tokens
        let ce_image = image_logits.reshape(&[(b * n) as isize, self.config.image_vocab as isize])?.cross_entropy(&image_targets)?; // mean over image tokens
        let w = self.config.text_loss_weight;
        let loss = ce_text.scale(w).add(&ce_image.scale(1.0 - w))?; // 1/8 CE_text + 7/8 CE_image
        Ok(DalleLoss { text: ce_text.item(), image: ce_image.item(), loss })
    }
    // ANCHOR_END: loss
}

impl Module for Dalle {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_child("text_embedding", &self.text_embedding, f);
        visit_child("text_position", &self.text_position, f);
        visit_child("image_embedding", &self.image_embedding, f);
        visit_child("image_row", &self.image_row, f);
        visit_child("image_column", &self.image_column, f);
        self.transformer.visit(f);
        visit_child("text_head", &self.text_head, f);
        visit_child("image_head", &self.image_head, f);
    }
}

impl DalleConfig {
    /// The configuration as checkpoint metadata (`dalle.text_vocab`, ..., `dalle.masks`).
    pub fn metadata(&self) -> Vec<(String, String)> {
        let t = &self.transformer;
        [
            ("text_vocab", self.text_vocab.to_string()),
            ("text_len", self.text_len.to_string()),
            ("image_vocab", self.image_vocab.to_string()),
            ("grid", format!("{}x{}", self.grid.0, self.grid.1)),
            ("dim", t.dim.to_string()),
            ("n_head", t.n_head.to_string()),
            ("n_layer", t.n_layer.to_string()),
            ("masks", self.masks.name()),
            ("text_loss_weight", self.text_loss_weight.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("dalle.{k}"), v))
        .collect()
    }

    /// The configuration stored by [`DalleConfig::metadata`]; the error names a missing or bad field.
    pub fn from_metadata(meta: &std::collections::HashMap<String, String>) -> Result<Self> {
        let get = |k: &str| meta.get(&format!("dalle.{k}")).ok_or_else(|| Error::Checkpoint(format!("no `dalle.{k}` in the checkpoint's metadata")));
        let num = |k: &str| -> Result<usize> {
            let v = get(k)?;
            v.parse().map_err(|_| Error::Checkpoint(format!("`dalle.{k}` = {v:?} is not a count")))
        };
        let grid = get("grid")?;
        let (h, w) = grid
            .split_once('x')
            .and_then(|(h, w)| Some((h.parse().ok()?, w.parse().ok()?)))
            .ok_or_else(|| Error::Checkpoint(format!("`dalle.grid` = {grid:?} is not HxW")))?;
        let weight = get("text_loss_weight")?;
        let config = DalleConfig {
            text_vocab: num("text_vocab")?,
            text_len: num("text_len")?,
            image_vocab: num("image_vocab")?,
            grid: (h, w),
            transformer: TransformerConfig::new(num("dim")?, num("n_head")?, num("n_layer")?),
            masks: MaskPattern::parse(get("masks")?)?,
            text_loss_weight: weight.parse().map_err(|_| Error::Checkpoint(format!("`dalle.text_loss_weight` = {weight:?} is not a number")))?,
        };
        config.validate()?;
        Ok(config)
    }
}

impl Dalle {
    /// A model from a checkpoint written with [`DalleConfig::metadata`]: the shape
    /// from the metadata, every parameter checked by name and shape.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let ckpt = crate::io::checkpoint::load(path)?;
        let config = DalleConfig::from_metadata(&ckpt.metadata).map_err(|e| Error::Checkpoint(format!("{}: {e}", path.display())))?;
        let model = Dalle::new(config, &mut Rng::new(0))?;
        ckpt.load_into(&model, &["optim."])?;
        Ok(model)
    }
}
