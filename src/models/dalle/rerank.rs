//! Reranking with CLIP (section 2.5 of the paper): draw `N` candidates per
//! caption, score each by the cosine similarity of its CLIP image embedding
//! with the caption's CLIP text embedding, keep the best.
//!
//! ```text
//! score(x, y) = cos(I_e(x), T_e(y))      best = argmax_{n < N} score(x_n, y)
//! ```
//!
//! The paper draws 512 candidates and keeps 32; the toy here draws 8 and keeps 1.

use ndarray::ArrayRef4;

use crate::models::clip::preprocess::normalize_unit;
use crate::models::clip::zero_shot::{image_embeddings, text_embeddings};
use crate::models::clip::ClipModel;
use crate::tokenizer::TextTokenizer;
use crate::{Error, Result};

// ANCHOR: clip_score
/// `cos(I_e(images[i]), T_e(prompts[i]))` for each `i`; `images (M, C, H, W)` in `[0, 1]`.
pub fn clip_scores(clip: &ClipModel, tokenizer: &dyn TextTokenizer, images: &ArrayRef4<f32>, prompts: &[String]) -> Result<Vec<f32>> {
    if images.dim().0 != prompts.len() {
        return Err(Error::shape("clip_scores", format!("{} images but {} prompts", images.dim().0, prompts.len())));
    }
    let image_emb = image_embeddings(clip, normalize_unit(images).view(), 256)?; // (M, E), unit rows
    let mut unique: Vec<String> = prompts.to_vec();
    unique.sort();
    unique.dedup();
    let text_emb = text_embeddings(clip, tokenizer, &unique, 64)?; // (U, E), unit rows
    Ok(prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let u = unique.binary_search(p).expect("every prompt is in the list");
            image_emb.row(i).dot(&text_emb.row(u)) // cosine of unit vectors
        })
        .collect())
}
// ANCHOR_END: clip_score

/// Candidates come in groups of `n` (group `g` = indices `g·n .. (g+1)·n`): each
/// group's indices ordered by `scores`, best first.
pub fn rank_groups(scores: &[f32], n: usize) -> Result<Vec<Vec<usize>>> {
    if n == 0 || !scores.len().is_multiple_of(n) {
        return Err(Error::shape("rank_groups", format!("{} scores are not groups of {n} candidates", scores.len())));
    }
    Ok((0..scores.len() / n)
        .map(|g| {
            let mut order: Vec<usize> = (g * n..(g + 1) * n).collect();
            order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
            order
        })
        .collect())
}
