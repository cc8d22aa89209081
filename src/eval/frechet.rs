//! The Fréchet distance between two sets of features (Heusel et al. 2017, the "FID").
//!
//! Each set is summarised by the mean `μ` and covariance `Σ` of its feature
//! vectors, read as a Gaussian; the distance between the two Gaussians is
//!
//! ```text
//! d² = ‖μ₁ - μ₂‖² + tr(Σ₁ + Σ₂ - 2 (Σ₁ Σ₂)^{1/2})
//! ```
//!
//! FID uses Inception-v3's pool features of 50 000 images; this project uses the
//! digit judge's penultimate layer ([`super::DigitJudge::features`]: `fc1` after
//! its ReLU, 128 values per image), so the numbers are comparable within the
//! book only. The estimate is biased upwards for small sets: always compare with
//! the same counts, and with the real-vs-real distance as the floor.
//!
//! `tr (Σ₁ Σ₂)^{1/2}` is computed as `tr (S Σ₂ S)^{1/2}` with `S = Σ₁^{1/2}`: the
//! matrix `S Σ₂ S` is symmetric positive semi-definite with the same eigenvalues as
//! `Σ₁ Σ₂`, so both square roots come from a symmetric eigen-decomposition (Jacobi).

use ndarray::{Array1, Array2, ArrayRef2, Axis};

/// The mean and covariance of a set of feature vectors, in f64.
#[derive(Debug, Clone)]
pub struct FeatureStats {
    /// `μ (D)`
    pub mean: Array1<f64>,
    /// `Σ (D, D)`, with the `n - 1` denominator (`numpy.cov`).
    pub cov: Array2<f64>,
    /// The number of vectors.
    pub count: usize,
}

impl FeatureStats {
    /// Statistics of the rows of `features (N, D)`; `N >= 2`.
    pub fn from_rows(features: &ArrayRef2<f32>) -> crate::Result<Self> {
        let n = features.nrows();
        if n < 2 {
            return Err(crate::Error::shape("frechet", format!("{n} feature vectors: a covariance needs at least 2")));
        }
        let x = features.mapv(|v| v as f64);
        let mean = x.mean_axis(Axis(0)).expect("n >= 2");
        let centred = &x - &mean;
        let cov = centred.t().dot(&centred) / (n - 1) as f64; // Σ = Xᶜᵀ Xᶜ / (n - 1)
        Ok(FeatureStats { mean, cov, count: n })
    }
}

// ANCHOR: frechet
/// `‖μ₁ - μ₂‖² + tr(Σ₁ + Σ₂ - 2 (Σ₁ Σ₂)^{1/2})`.
pub fn frechet_distance(a: &FeatureStats, b: &FeatureStats) -> f64 {
    let diff = &a.mean - &b.mean;
    let s = sqrt_psd(&a.cov); // Σ₁^{1/2}
    let middle = s.dot(&b.cov).dot(&s); // Σ₁^{1/2} Σ₂ Σ₁^{1/2}, same eigenvalues as Σ₁ Σ₂
    let tr_sqrt: f64 = symmetric_eigen(&middle).0.iter().map(|l| l.max(0.0).sqrt()).sum(); // tr (Σ₁ Σ₂)^{1/2}
    diff.dot(&diff) + a.cov.diag().sum() + b.cov.diag().sum() - 2.0 * tr_sqrt
}
// ANCHOR_END: frechet

/// The square root of a symmetric positive semi-definite matrix, `V diag(√λ) Vᵀ`
/// (negative rounding-error eigenvalues become 0).
pub fn sqrt_psd(m: &Array2<f64>) -> Array2<f64> {
    let (values, vectors) = symmetric_eigen(m);
    let scaled = &vectors * &values.mapv(|l| l.max(0.0).sqrt()); // column j times √λ_j
    scaled.dot(&vectors.t())
}

/// Eigenvalues and eigenvectors (columns) of a symmetric matrix by cyclic Jacobi
/// rotations (Golub & Van Loan §8.5), to f64 rounding.
pub fn symmetric_eigen(m: &Array2<f64>) -> (Array1<f64>, Array2<f64>) {
    let n = m.nrows();
    let mut a = m.clone();
    let mut v = Array2::<f64>::eye(n);
    let scale: f64 = a.iter().map(|x| x * x).sum::<f64>().max(f64::MIN_POSITIVE);
    for _sweep in 0..100 {
        let off: f64 = (0..n).flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j))).map(|(i, j)| a[[i, j]] * a[[i, j]]).sum();
        if off <= 1e-24 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[[p, q]];
                if apq.abs() < 1e-300 {
                    continue;
                }
                // the rotation that zeroes a[p][q]: tan 2θ = 2 a_pq / (a_qq - a_pp)
                let theta = (a[[q, q]] - a[[p, p]]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[[k, p]], a[[k, q]]);
                    a[[k, p]] = c * akp - s * akq;
                    a[[k, q]] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[[p, k]], a[[q, k]]);
                    a[[p, k]] = c * apk - s * aqk;
                    a[[q, k]] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[[k, p]], v[[k, q]]);
                    v[[k, p]] = c * vkp - s * vkq;
                    v[[k, q]] = s * vkp + c * vkq;
                }
            }
        }
    }
    (a.diag().to_owned(), v)
}
