//! Diversity within a prompt: the mean pixel distance between samples of the same prompt.
//!
//! Guidance buys fidelity with diversity (Ho & Salimans 2022, §4; GLIDE §5): as the scale
//! grows, the samples of one caption look more alike. The Fréchet distance sees that
//! only mixed with quality; the mean pairwise distance within a prompt sees it alone:
//!
//! ```text
//! D = mean over prompts p of  mean_{i < j, y_i = y_j = p} ‖x_i - x_j‖₂
//! ```

use ndarray::{ArrayRef4, Axis};

use crate::{Error, Result};

// ANCHOR: pairwise
/// `D` above for `images (N, C, H, W)` grouped by `prompts` (N): the mean over the prompts that
/// have at least two images of the mean L2 distance between their pairs. Errors when the
/// lengths differ or no prompt has two images.
pub fn mean_pairwise_distance(images: &ArrayRef4<f32>, prompts: &[usize]) -> Result<f64> {
    if images.dim().0 != prompts.len() {
        return Err(Error::shape("mean_pairwise_distance", format!("{} images but {} prompt ids", images.dim().0, prompts.len())));
    }
    let mut groups: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (i, &p) in prompts.iter().enumerate() {
        groups.entry(p).or_default().push(i);
    }
    let rows: Vec<Vec<f32>> = images.axis_iter(Axis(0)).map(|im| im.iter().copied().collect()).collect();
    let per_prompt: Vec<f64> = groups
        .values()
        .filter(|members| members.len() >= 2)
        .map(|members| {
            let (mut sum, mut pairs) = (0.0f64, 0usize);
            for (a, &i) in members.iter().enumerate() {
                for &j in &members[a + 1..] {
                    sum += rows[i].iter().zip(&rows[j]).map(|(u, v)| ((u - v) as f64).powi(2)).sum::<f64>().sqrt(); // ‖x_i - x_j‖₂
                    pairs += 1;
                }
            }
            sum / pairs as f64
        })
        .collect();
    if per_prompt.is_empty() {
        return Err(Error::Config("mean_pairwise_distance: no prompt has two images".into()));
    }
    Ok(per_prompt.iter().sum::<f64>() / per_prompt.len() as f64)
}
// ANCHOR_END: pairwise

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    #[test]
    fn distance_is_within_prompts_only() {
        // two prompts: images 0, 1 (prompt 0) differ by 3 in one pixel of 4, images 2, 3 (prompt 1)
        // are equal; image 0 and image 2 are far apart but belong to different prompts
        let mut x = Array4::<f32>::zeros((4, 1, 2, 2));
        x[[1, 0, 0, 0]] = 3.0;
        x.slice_mut(ndarray::s![2..4, .., .., ..]).fill(100.0);
        assert!((mean_pairwise_distance(&x, &[0, 0, 1, 1]).unwrap() - 1.5).abs() < 1e-12, "(3 + 0) / 2");
        assert!(mean_pairwise_distance(&x, &[0, 1, 2, 3]).is_err(), "no prompt has two images");
        assert!(mean_pairwise_distance(&x, &[0, 0]).is_err(), "lengths differ");
    }
}
