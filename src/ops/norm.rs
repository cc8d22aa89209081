//! Normalisation layers, fused: one pass forward, one pass backward.
//!
//! Over a group of `n` values: `μ = mean(x)`, `σ² = mean((x - μ)²)` (biased),
//! `x̂ = (x - μ) / √(σ² + ε)`, `y = γ x̂ + β`. The backward pass, with
//! `ĝ = γ · dy`:
//!
//! ```text
//! dx = (ĝ - mean(ĝ) - x̂ · mean(ĝ x̂)) / √(σ² + ε)
//! dγ = Σ dy · x̂,   dβ = Σ dy
//! ```

use crate::tensor::Tensor;
use crate::Result;
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

/// Normalise each contiguous group of `group` values of `x` (row-major), with a
/// per-position affine `gamma[pos(i)]`, `beta[pos(i)]` where `pos` maps an
/// element's index within its group to its parameter index.
struct Groups {
    group: usize,
    eps: f32,
}

impl Groups {
    /// Returns y, x̂ and 1/σ per group.
    fn forward(&self, x: &[f32], param_of: &(dyn Fn(usize) -> usize + Sync), gamma: &[f32], beta: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let n = self.group;
        let mut y = vec![0.0f32; x.len()];
        let mut xhat = vec![0.0f32; x.len()];
        let mut rstd = vec![0.0f32; x.len() / n.max(1)];
        y.par_chunks_mut(n)
            .zip(xhat.par_chunks_mut(n))
            .zip(rstd.par_iter_mut())
            .zip(x.par_chunks(n))
            .for_each(|(((y, xh), r), x)| {
                // Statistics in f64: the golden tests compare to 1e-5.
                let mu = x.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
                let var = x.iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>() / n as f64;
                let rs = 1.0 / (var + self.eps as f64).sqrt();
                *r = rs as f32;
                for i in 0..n {
                    xh[i] = ((x[i] as f64 - mu) * rs) as f32;
                    let p = param_of(i);
                    y[i] = gamma[p] * xh[i] + beta[p];
                }
            });
        (y, xhat, rstd)
    }

    /// Returns dx, dγ and dβ. The groups are cut into blocks of a fixed size,
    /// each block sums its share of dγ, dβ on one thread, and the block sums
    /// are added in block order: the result does not depend on how rayon
    /// happened to split the work, so the same run gives the same bits.
    fn backward(&self, dy: &[f32], xhat: &[f32], rstd: &[f32], param_of: &(dyn Fn(usize) -> usize + Sync), gamma: &[f32], nparams: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        const GROUPS_PER_BLOCK: usize = 64;
        let n = self.group;
        let block = GROUPS_PER_BLOCK * n;
        let mut dx = vec![0.0f32; dy.len()];
        let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
            .par_chunks_mut(block)
            .zip(dy.par_chunks(block))
            .zip(xhat.par_chunks(block))
            .zip(rstd.par_chunks(GROUPS_PER_BLOCK))
            .map(|(((dx, dy), xh), rs)| {
                let (mut dg, mut db) = (vec![0.0f32; nparams], vec![0.0f32; nparams]);
                for (((dx, dy), xh), &r) in dx.chunks_mut(n).zip(dy.chunks(n)).zip(xh.chunks(n)).zip(rs) {
                    let (mut mean_g, mut mean_gx) = (0.0f64, 0.0f64);
                    for i in 0..n {
                        let p = param_of(i);
                        let gh = (gamma[p] * dy[i]) as f64; // ĝ = γ · dy
                        mean_g += gh;
                        mean_gx += gh * xh[i] as f64;
                        dg[p] += dy[i] * xh[i];
                        db[p] += dy[i];
                    }
                    mean_g /= n as f64;
                    mean_gx /= n as f64;
                    for i in 0..n {
                        let gh = (gamma[param_of(i)] * dy[i]) as f64;
                        // dx = (ĝ - mean(ĝ) - x̂ · mean(ĝ x̂)) / σ
                        dx[i] = ((gh - mean_g - xh[i] as f64 * mean_gx) * r as f64) as f32;
                    }
                }
                (dg, db)
            })
            .collect();
        let (mut dgamma, mut dbeta) = (vec![0.0f32; nparams], vec![0.0f32; nparams]);
        for (dg, db) in &partials {
            dgamma.iter_mut().zip(dg).for_each(|(a, b)| *a += b);
            dbeta.iter_mut().zip(db).for_each(|(a, b)| *a += b);
        }
        (dx, dgamma, dbeta)
    }
}

fn norm_op(op: &'static str, x: &Tensor, gamma: &Tensor, beta: &Tensor, groups: Groups, param_of: impl Fn(usize) -> usize + Sync + Send + 'static) -> Tensor {
    let shape = x.shape();
    let xs = x.data().as_standard_layout().into_owned();
    let (g, b) = (gamma.to_vec(), beta.to_vec());
    let (y, xhat, rstd) = groups.forward(xs.as_slice().expect("standard"), &param_of, &g, &b);
    let out = ArrayD::from_shape_vec(IxDyn(&shape), y).expect("same size");
    let nparams = g.len();
    let gamma_c = gamma.clone();
    Tensor::from_op(out, op, &[x, gamma, beta], move |dy, _| {
        let dy = dy.as_standard_layout();
        let g = gamma_c.to_vec();
        let (dx, dg, db) = groups.backward(dy.as_slice().expect("standard"), &xhat, &rstd, &param_of, &g, nparams);
        vec![
            Some(ArrayD::from_shape_vec(IxDyn(&shape), dx).expect("same size")),
            Some(ArrayD::from_shape_vec(IxDyn(&[nparams]), dg).expect("same size")),
            Some(ArrayD::from_shape_vec(IxDyn(&[nparams]), db).expect("same size")),
        ]
    })
}

impl Tensor {
    /// Layer normalisation over the last dimension `C`, with `gamma`, `beta` of
    /// shape `(C)`. PyTorch: `F.layer_norm(x, (C,), gamma, beta, eps)`.
    pub fn layer_norm(&self, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<Tensor> {
        let shape = self.shape();
        let c = *shape.last().ok_or_else(|| crate::Error::shape("layer_norm", "a 0-D tensor has no last dimension"))?;
        if gamma.shape() != [c] || beta.shape() != [c] {
            return Err(crate::Error::shape("layer_norm", format!("input {shape:?} needs gamma and beta of shape [{c}], got {:?} and {:?}", gamma.shape(), beta.shape())));
        }
        Ok(norm_op("layer_norm", self, gamma, beta, Groups { group: c, eps }, |i| i))
    }

    /// Group normalisation: `x (N, C, ...)` split into `groups` groups of
    /// channels, each normalised over its channels and all spatial positions;
    /// then a per-channel affine. PyTorch: `F.group_norm(x, groups, gamma, beta, eps)`.
    pub fn group_norm(&self, groups: usize, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<Tensor> {
        let shape = self.shape();
        if shape.len() < 2 || groups == 0 || shape[1] % groups != 0 {
            return Err(crate::Error::shape("group_norm", format!("input {shape:?}: channels must split into {groups} groups")));
        }
        let c = shape[1];
        if gamma.shape() != [c] || beta.shape() != [c] {
            return Err(crate::Error::shape("group_norm", format!("input {shape:?} needs gamma and beta of shape [{c}], got {:?} and {:?}", gamma.shape(), beta.shape())));
        }
        let spatial: usize = shape[2..].iter().product();
        let per_group = c / groups;
        // Groups are contiguous in NCHW: normalise each (n, g) block of
        // C/G · spatial values without affine, then apply γ, β per channel.
        let xs = self.reshape(&[shape[0] as isize, groups as isize, -1])?;
        let ones = Tensor::ones(&[1]);
        let zeros = Tensor::zeros(&[1]);
        let normed = norm_op("group_norm", &xs, &ones, &zeros, Groups { group: per_group * spatial, eps }, |_| 0);
        let mut pshape = vec![1isize, c as isize];
        pshape.extend(std::iter::repeat_n(1, shape.len() - 2));
        let y = normed.reshape(&shape.iter().map(|&d| d as isize).collect::<Vec<_>>())?;
        y.mul(&gamma.reshape(&pshape)?)?.add(&beta.reshape(&pshape)?)
    }
}
