//! PCA and per-dimension quantization: the autoregressive prior's discrete code
//! (unCLIP §2.2: "we reduce the dimensionality of the CLIP image embeddings z_i by
//! applying PCA ... we quantize the 319 resulting dimensions into 1,024 discrete buckets").
//!
//! ```text
//! Σ = 1/N Σ_n (z_n - μ)(z_n - μ)ᵀ = V Λ Vᵀ,   λ_1 ≥ λ_2 ≥ ...              (E × E)
//! project:      c = V_kᵀ (z - μ)                  the k leading components    (k)
//! quantize:     q_j = #{edges_j below c_j}        B equal-mass buckets a dimension
//! reconstruct:  ẑ = μ + V_k ĉ,  ĉ_j = centre of bucket q_j (the mean of its training values)
//! ```
//!
//! Sorting by eigenvalue puts the dimensions that carry the most variance first, so
//! the transformer predicts the coarse structure of the embedding before its details.
//! The round trip loses the `E - k` dropped components (their variance, `Σ_{j>k} λ_j`)
//! plus each kept component's distance to its bucket's centre.

use ndarray::{Array1, Array2, Axis};

use super::clip_features::check_width;
use crate::eval::frechet::symmetric_eigen;
use crate::{Error, Result};

/// A fitted PCA: the mean, every eigenvalue and the `k` leading eigenvectors.
#[derive(Clone, Debug)]
pub struct Pca {
    /// `μ (E)`.
    pub mean: Array1<f32>,
    /// `V_kᵀ (k, E)`: one unit-length component per row, by decreasing variance.
    pub components: Array2<f32>,
    /// Every eigenvalue `λ_1 ≥ ... ≥ λ_E` (the variance along each component).
    pub variances: Vec<f64>,
}

impl Pca {
    /// Fit on the rows of `data (N, E)` and keep the `k` leading components.
    pub fn fit(data: &Array2<f32>, k: usize) -> Result<Self> {
        let (n, e) = data.dim();
        if n < 2 || k == 0 || k > e {
            return Err(Error::Config(format!("pca: {n} rows of width {e} and k = {k} components (need N >= 2 and 1 <= k <= E)")));
        }
        let x = data.mapv(|v| v as f64);
        let mean = x.mean_axis(Axis(0)).expect("rows"); // μ
        let centred = &x - &mean;
        let cov = centred.t().dot(&centred) / n as f64; // Σ = 1/N Xᶜᵀ Xᶜ, (E, E)
        let (values, vectors) = symmetric_eigen(&cov);
        let mut order: Vec<usize> = (0..e).collect();
        order.sort_by(|&a, &b| values[b].total_cmp(&values[a])); // largest variance first
        let components = Array2::from_shape_fn((k, e), |(j, d)| vectors[[d, order[j]]] as f32); // V_kᵀ
        Ok(Pca { mean: mean.mapv(|v| v as f32), components, variances: order.iter().map(|&j| values[j].max(0.0)).collect() })
    }

    /// The number of components kept, `k`.
    pub fn num_components(&self) -> usize {
        self.components.nrows()
    }

    /// The share of the total variance the first `k` components carry, `Σ_{j≤k} λ_j / Σ_j λ_j`.
    pub fn explained(&self, k: usize) -> f64 {
        let total: f64 = self.variances.iter().sum();
        self.variances.iter().take(k).sum::<f64>() / total.max(f64::MIN_POSITIVE)
    }

    /// The fewest components that carry at least `fraction` of the variance.
    pub fn components_for(&self, fraction: f64) -> usize {
        (1..=self.variances.len()).find(|&k| self.explained(k) >= fraction).unwrap_or(self.variances.len())
    }

    /// `c = V_kᵀ (z - μ)` for each row of `z (N, E)`: `(N, k)`.
    pub fn project(&self, z: &Array2<f32>) -> Result<Array2<f32>> {
        check_width("the image embedding given to the PCA", z, self.mean.len())?;
        Ok((z - &self.mean).dot(&self.components.t()))
    }

    /// `ẑ = μ + V_k c` for each row of `c (N, k)`: `(N, E)`.
    pub fn reconstruct(&self, c: &Array2<f32>) -> Result<Array2<f32>> {
        if c.ncols() != self.num_components() {
            return Err(Error::shape("pca", format!("{} coefficients a row; this PCA keeps {}", c.ncols(), self.num_components())));
        }
        Ok(c.dot(&self.components) + &self.mean)
    }
}

/// `B` buckets per dimension with equal training mass; each decodes to its mean.
#[derive(Clone, Debug)]
pub struct Quantizer {
    /// The `B - 1` inner bucket edges of each dimension, increasing, `(k, B - 1)`.
    pub edges: Array2<f32>,
    /// The value each bucket decodes to, `(k, B)`.
    pub centres: Array2<f32>,
}

impl Quantizer {
    /// Fit `buckets` equal-mass buckets to each column of `c (N, k)`.
    pub fn fit(c: &Array2<f32>, buckets: usize) -> Result<Self> {
        let (n, k) = c.dim();
        if buckets < 2 || n < buckets {
            return Err(Error::Config(format!("quantizer: {buckets} buckets from {n} values (need 2 <= B <= N)")));
        }
        let mut edges = Array2::<f32>::zeros((k, buckets - 1));
        let mut centres = Array2::<f32>::zeros((k, buckets));
        for j in 0..k {
            let mut col: Vec<f32> = c.column(j).to_vec();
            col.sort_by(f32::total_cmp);
            let at = |q: usize| q * n / buckets; // the first value of bucket q
            for q in 1..buckets {
                edges[[j, q - 1]] = 0.5 * (col[at(q) - 1] + col[at(q)]); // halfway between neighbouring buckets
            }
            for q in 0..buckets {
                let part = &col[at(q)..at(q + 1)];
                centres[[j, q]] = part.iter().sum::<f32>() / part.len() as f32; // the bucket's mean
            }
        }
        Ok(Quantizer { edges, centres })
    }

    /// `B`, the buckets per dimension.
    pub fn buckets(&self) -> usize {
        self.centres.ncols()
    }

    /// The bucket of every value of `c (N, k)`, row after row: `N · k` ids below `B`.
    pub fn encode(&self, c: &Array2<f32>) -> Result<Vec<usize>> {
        if c.ncols() != self.edges.nrows() {
            return Err(Error::shape("quantizer", format!("{} values a row; fitted to {}", c.ncols(), self.edges.nrows())));
        }
        Ok(c.rows()
            .into_iter()
            .flat_map(|row| row.iter().enumerate().map(|(j, &v)| self.edges.row(j).iter().filter(|&&e| v > e).count()).collect::<Vec<_>>())
            .collect())
    }

    /// The centres of `codes` (`N · k` ids, row after row): `(N, k)`.
    pub fn decode(&self, codes: &[usize]) -> Result<Array2<f32>> {
        let (k, b) = self.centres.dim();
        if !codes.len().is_multiple_of(k) {
            return Err(Error::shape("quantizer", format!("{} codes is not a whole number of rows of {k}", codes.len())));
        }
        if let Some(bad) = codes.iter().find(|&&q| q >= b) {
            return Err(Error::Config(format!("quantizer: code {bad} is past the {b} buckets")));
        }
        Ok(Array2::from_shape_fn((codes.len() / k, k), |(n, j)| self.centres[[j, codes[n * k + j]]]))
    }
}

/// PCA then quantization, and back: the round trip the autoregressive prior's codes make.
pub fn round_trip(pca: &Pca, quantizer: &Quantizer, z: &Array2<f32>) -> Result<Array2<f32>> {
    pca.reconstruct(&quantizer.decode(&quantizer.encode(&pca.project(z)?)?)?)
}
