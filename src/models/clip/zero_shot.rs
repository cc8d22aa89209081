//! Zero-shot classification: name the classes in words, pick the closest caption.
//!
//! For each class `k` and prompt template `j` ("a photo of a {}", ...):
//!
//! ```text
//! w_k = normalize( mean_j normalize(T(template_j(class_k))) )     (K, E)
//! ŷ(image) = argmax_k cos(I_e(image), w_k)
//! ```
//!
//! No label is used: the classifier's weights are the text embeddings of the
//! class names (section 3.1.4 of the paper, "prompt ensembling").

use ndarray::{s, Array2, ArrayView4, Axis};

use super::model::ClipModel;
use crate::tokenizer::TextTokenizer;
use crate::tensor::{no_grad, Tensor};
use crate::Result;

/// Unit-length text embeddings of `texts`, `(len, E)`, in batches of `batch`.
pub fn text_embeddings(model: &ClipModel, tokenizer: &dyn TextTokenizer, texts: &[String], batch: usize) -> Result<Array2<f32>> {
    let context = model.config.text_config.max_position_embeddings;
    let mut rows = Vec::new();
    for chunk in texts.chunks(batch.max(1)) {
        let refs: Vec<&str> = chunk.iter().map(|s| s.as_str()).collect();
        let ids = tokenizer.encode_batch(&refs, context, false)?; // (b, T)
        let e = no_grad(|| model.get_text_features(&ids).and_then(|f| f.l2_normalize(-1, 1e-12)))?; // (b, E)
        rows.push(e.to_array().into_dimensionality::<ndarray::Ix2>().expect("2-D"));
    }
    let views: Vec<_> = rows.iter().map(|a| a.view()).collect();
    Ok(ndarray::concatenate(Axis(0), &views).expect("same width"))
}

/// Unit-length image embeddings of preprocessed `images (N, C, S, S)`, `(N, E)`.
pub fn image_embeddings(model: &ClipModel, images: ArrayView4<f32>, batch: usize) -> Result<Array2<f32>> {
    let n = images.len_of(Axis(0));
    let mut out = Array2::<f32>::zeros((n, model.config.projection_dim));
    for start in (0..n).step_by(batch.max(1)) {
        let end = (start + batch.max(1)).min(n);
        let x = Tensor::new(images.slice(s![start..end, .., .., ..]).to_owned().into_dyn());
        let e = no_grad(|| model.get_image_features(&x).and_then(|f| f.l2_normalize(-1, 1e-12)))?; // (b, E)
        out.slice_mut(s![start..end, ..]).assign(&e.to_array().into_dimensionality::<ndarray::Ix2>().expect("2-D"));
    }
    Ok(out)
}

/// One unit vector per class: the normalised mean of its prompts' embeddings.
/// `prompts[k]` holds class `k`'s prompts (one per template).
pub fn class_embeddings(model: &ClipModel, tokenizer: &dyn TextTokenizer, prompts: &[Vec<String>]) -> Result<Array2<f32>> {
    let mut out = Array2::<f32>::zeros((prompts.len(), model.config.projection_dim)); // (K, E)
    for (k, class_prompts) in prompts.iter().enumerate() {
        let e = text_embeddings(model, tokenizer, class_prompts, 64)?; // (J, E)
        let mean = e.mean_axis(Axis(0)).expect("at least one prompt"); // (E)
        let norm = mean.dot(&mean).sqrt().max(1e-12);
        out.row_mut(k).assign(&(mean / norm));
    }
    Ok(out)
}

/// Cosine similarities of unit vectors: `a bᵀ`, `(N, K)`.
pub fn cosine_similarity(a: &Array2<f32>, b: &Array2<f32>) -> Array2<f32> {
    a.dot(&b.t())
}

/// The class of each row: `argmax_k sim[n, k]`.
pub fn predict(similarity: &Array2<f32>) -> Vec<usize> {
    similarity
        .rows()
        .into_iter()
        .map(|r| r.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (k, &v)| if v > best.1 { (k, v) } else { best }).0)
        .collect()
}

/// The fraction of `predicted` equal to `labels`.
pub fn accuracy(predicted: &[usize], labels: &[usize]) -> f64 {
    if labels.is_empty() {
        return 0.0;
    }
    predicted.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / labels.len() as f64
}

/// Every class's prompts under every caption template of a data set (prompt
/// ensembling): `result[k][j]` is class `k` under template `j`.
pub fn dataset_prompts(name: crate::data::DatasetName) -> Vec<Vec<String>> {
    use crate::data::captions::{class_caption, class_names, num_templates};
    (0..class_names(name).len()).map(|k| (0..num_templates(name)).map(|j| class_caption(name, k, j)).collect()).collect()
}

/// Zero-shot accuracy of `model` on a labelled set whose images are in `[0, 1]`
/// (mapped to `[-1, 1]` as the toy models of this book expect): each image gets the
/// class whose ensembled prompt embedding is closest. Returns `(accuracy, predictions)`.
pub fn evaluate(
    model: &ClipModel,
    tokenizer: &dyn TextTokenizer,
    set: &crate::data::ImageDataset,
    prompts: &[Vec<String>],
) -> Result<(f64, Vec<usize>)> {
    let class_emb = class_embeddings(model, tokenizer, prompts)?; // (K, E)
    let image_emb = image_embeddings(model, super::preprocess::normalize_unit(&set.images).view(), 500)?; // (N, E)
    let predicted = predict(&cosine_similarity(&image_emb, &class_emb)); // argmax_k cos(I, w_k)
    Ok((accuracy(&predicted, &set.labels), predicted))
}
