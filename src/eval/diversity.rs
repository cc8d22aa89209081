//! Diversity within a prompt: how different the images drawn for one caption are.
//!
//! Guidance buys fidelity with diversity (GLIDE §3, unCLIP §5.1): at a high
//! scale every sample of "a handwritten 7" looks alike. The Fréchet distance of
//! [`super::frechet`] sees this only over a whole set; the mean pairwise
//! distance sees it per prompt:
//!
//! ```text
//! d(a, b) = sqrt( 1/D · Σ_i (a_i − b_i)² )               root-mean-square pixel difference
//! diversity = mean over prompts of mean_{j<k} d(x_j, x_k)  over that prompt's n images
//! ```

use crate::{Error, Result};
use ndarray::{ArrayRef4, Axis};

/// The mean over groups of `per_group` consecutive images `(N, C, H, W)` of the
/// mean root-mean-square pixel distance between two images of the group.
pub fn mean_pairwise_distance(images: &ArrayRef4<f32>, per_group: usize) -> Result<f64> {
    let n = images.len_of(Axis(0));
    if per_group < 2 || n == 0 || n % per_group != 0 {
        return Err(Error::shape("mean_pairwise_distance", format!("{n} images are not groups of {per_group} >= 2")));
    }
    let d = images.len() / n;
    let rows: Vec<Vec<f32>> = images.outer_iter().map(|x| x.iter().copied().collect()).collect();
    let mut total = 0.0;
    for group in rows.chunks(per_group) {
        let mut sum = 0.0;
        let mut pairs = 0usize;
        for j in 0..group.len() {
            for k in j + 1..group.len() {
                let sq: f64 = group[j].iter().zip(&group[k]).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
                sum += (sq / d as f64).sqrt(); // d(a, b)
                pairs += 1;
            }
        }
        total += sum / pairs as f64;
    }
    Ok(total / (n / per_group) as f64)
}
