//! The attention masks of DALL-E 1 (Ramesh et al. 2021, appendix B.1, figure 11).
//!
//! The sequence is `L` text tokens followed by the `h × w` image grid in raster
//! order. Every mask is causal; text queries see the earlier text only; image
//! queries always see every text token, and the image keys they see depend
//! on the layer's pattern. With the query at grid cell `(r, c)` and a key at
//! `(r', c')`, both earlier or equal in raster order:
//!
//! ```text
//! full            every earlier image token
//! row             r' = r                          (the row so far)
//! column          c' = c                          (the column so far)
//! convolutional   |r' - r| <= k/2 and |c' - c| <= k/2   (a k × k window of the past)
//! ```
//!
//! The paper's 64-layer model uses the column mask in layers `i` with
//! `(i - 2) mod 4 = 0`, the row mask in the others and the convolutional mask
//! in the last ([`MaskPattern::Paper`]). Each pattern costs the same here (the
//! masked scores are computed, then set to `-∞`): the masks show *what* the
//! sparse transformer lets a token see, which is what changes the loss; the
//! speed-up needs kernels that skip the masked blocks, as Child et al. (2019) wrote.

use ndarray::{Array2, ArrayD, IxDyn};

use crate::{Error, Result};

/// Which image tokens an image query may attend to (always causal, always all the text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageAttention {
    /// Every earlier image token (dense causal attention).
    Full,
    /// The earlier tokens of the query's own row.
    Row,
    /// The earlier tokens of the query's own column.
    Column,
    /// The earlier tokens inside a `kernel × kernel` window centred on the query (`kernel` odd).
    Conv {
        /// The window's side, odd.
        kernel: usize,
    },
}

/// The mask of each layer of a stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskPattern {
    /// The same [`ImageAttention`] in every layer.
    Uniform(ImageAttention),
    /// The paper's mix: column in layers with `(i - 2) mod 4 = 0` (1-based `i`), row
    /// otherwise, and a convolutional window of `kernel` in the last layer.
    Paper {
        /// The last layer's window side, odd.
        kernel: usize,
    },
}

impl ImageAttention {
    /// Errors on an even or zero convolution window.
    pub fn validate(&self) -> Result<()> {
        match *self {
            ImageAttention::Conv { kernel } if kernel == 0 || kernel.is_multiple_of(2) => {
                Err(Error::Config(format!("convolutional attention: kernel {kernel} must be odd and positive")))
            }
            _ => Ok(()),
        }
    }

    /// Whether image query `q` may see image key `k` (raster indices in a grid `w` wide), before causality.
    pub fn allows(&self, q: usize, k: usize, w: usize) -> bool {
        let ((qr, qc), (kr, kc)) = ((q / w, q % w), (k / w, k % w));
        match *self {
            ImageAttention::Full => true,
            ImageAttention::Row => kr == qr,
            ImageAttention::Column => kc == qc,
            ImageAttention::Conv { kernel } => qr.abs_diff(kr) <= kernel / 2 && qc.abs_diff(kc) <= kernel / 2,
        }
    }

    /// A short name for plots and logs: `full`, `row`, `column`, `conv3`.
    pub fn name(&self) -> String {
        match *self {
            ImageAttention::Full => "full".into(),
            ImageAttention::Row => "row".into(),
            ImageAttention::Column => "column".into(),
            ImageAttention::Conv { kernel } => format!("conv{kernel}"),
        }
    }
}

impl MaskPattern {
    /// The pattern of layer `layer` (0-based) of `n_layer`.
    pub fn layer(&self, layer: usize, n_layer: usize) -> ImageAttention {
        match *self {
            MaskPattern::Uniform(a) => a,
            MaskPattern::Paper { kernel } if layer + 1 == n_layer => ImageAttention::Conv { kernel },
            MaskPattern::Paper { .. } if (layer + 1) % 4 == 2 => ImageAttention::Column, // (i - 2) mod 4 = 0, i = layer + 1
            MaskPattern::Paper { .. } => ImageAttention::Row,
        }
    }

    /// Errors on an invalid window.
    pub fn validate(&self) -> Result<()> {
        match *self {
            MaskPattern::Uniform(a) => a.validate(),
            MaskPattern::Paper { kernel } => ImageAttention::Conv { kernel }.validate(),
        }
    }

    /// Parse `full`, `row`, `column`, `conv3` (any odd size), `paper` (a 3 × 3 window last) or `paper5` (5 × 5 last).
    pub fn parse(text: &str) -> Result<Self> {
        let pattern = match text {
            "full" => MaskPattern::Uniform(ImageAttention::Full),
            "row" => MaskPattern::Uniform(ImageAttention::Row),
            "column" => MaskPattern::Uniform(ImageAttention::Column),
            "paper" => MaskPattern::Paper { kernel: 3 },
            _ => match (text.strip_prefix("conv"), text.strip_prefix("paper")) {
                (Some(k), _) if k.parse::<usize>().is_ok() => MaskPattern::Uniform(ImageAttention::Conv { kernel: k.parse().expect("checked") }),
                (_, Some(k)) if k.parse::<usize>().is_ok() => MaskPattern::Paper { kernel: k.parse().expect("checked") },
                _ => {
                    return Err(Error::Config(format!(
                        "attention mask {text:?}: expected full, row, column, convK (K odd), paper or paperK (last layer convK)"
                    )))
                }
            },
        };
        pattern.validate()?;
        Ok(pattern)
    }

    /// A short name that [`MaskPattern::parse`] reads back: the uniform mask's, `paper` or `paperK`.
    pub fn name(&self) -> String {
        match *self {
            MaskPattern::Uniform(a) => a.name(),
            MaskPattern::Paper { kernel: 3 } => "paper".into(),
            MaskPattern::Paper { kernel } => format!("paper{kernel}"),
        }
    }
}

// ANCHOR: mask
/// Whether query position `q` may attend to key position `k` of the sequence
/// `[text (text_len), image (grid_w wide, raster order)]`.
pub fn allowed(attention: ImageAttention, q: usize, k: usize, text_len: usize, grid_w: usize) -> bool {
    if k > q {
        return false; // causal
    }
    if q < text_len || k < text_len {
        return true; // text sees earlier text; image sees all text
    }
    attention.allows(q - text_len, k - text_len, grid_w)
}

/// The mask `(t, s)` for queries at positions `s - t .. s` over keys `0..s`
/// (`t = s` for a whole sequence, `t = 1` for one cached step), `true` = not allowed,
/// as [`crate::nn::attention::scaled_dot_product_attention`] takes it.
pub fn dalle_mask(attention: ImageAttention, t: usize, s: usize, text_len: usize, grid_w: usize) -> ArrayD<bool> {
    let offset = s.saturating_sub(t);
    ArrayD::from_shape_fn(IxDyn(&[t, s]), |ix| !allowed(attention, ix[0] + offset, ix[1], text_len, grid_w))
}
// ANCHOR_END: mask

/// A mask as a picture for the chapter: `1.0` where attention is allowed, `(T, T)`.
pub fn mask_picture(mask: &ArrayD<bool>) -> Array2<f32> {
    let s = mask.shape();
    Array2::from_shape_fn((s[0], s[1]), |(i, j)| if mask[[i, j]] { 0.0 } else { 1.0 })
}
