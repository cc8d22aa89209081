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

use super::kernels::simd;
use crate::tensor::Tensor;
use crate::Result;
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Normalise each contiguous group of `group` values of `x` (row-major), then
/// apply the affine `γ`, `β` as `affine` says.
struct Groups {
    group: usize,
    eps: f32,
    affine: Affine,
}

/// Which `γ`, `β` a value of a group gets.
#[derive(Clone, Copy)]
enum Affine {
    /// Layer norm: `γ[i]` for the i-th value of every group.
    PerElement,
    /// Group norm: a group is `channels` runs of `spatial` values (its
    /// channels in NCHW), and group `k` (counting over the whole batch) is
    /// group `k mod G` of its sample, so run `j` is channel `(k mod G) · channels + j`.
    PerChannel { channels: usize, spatial: usize },
}

/// `Σ_i f(a[i], b[i])` in 8 independent f64 lanes, so that the loop vectorises;
/// the lanes are added in a fixed order, so the result is deterministic.
#[inline(always)]
fn sum_f64(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ac.remainder().iter().zip(bc.remainder()).map(|(&x, &y)| f(x, y)).sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += f(x[l], y[l]);
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Per-group statistics saved by the forward pass: `(μ, 1/σ)`, in f64 so that
/// the backward pass recomputes `x̂` bit for bit instead of storing it.
type Stats = (f64, f64);

/// Groups per rayon task in the backward pass. Fixed, so that the partial sums
/// of dγ, dβ (one per block, added in block order) do not depend on how rayon
/// happened to split the work: the same run gives the same bits.
const GROUPS_PER_BLOCK: usize = 64;

/// A `Vec` of `len` floats whose elements `kernel` writes through the chunks
/// it is given (see [`super::kernels::simd`] for the compilation, and
/// `kernels::fill` for the pattern): no zero-fill first.
fn uninit_vec(len: usize, write: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(len);
    write(&mut v.spare_capacity_mut()[..len]);
    // SAFETY: the callers' kernels write every element of every chunk.
    unsafe { v.set_len(len) };
    v
}

impl Groups {
    /// `x̂` for one group: `x̂ = (x - μ) / σ`, the same expression in forward and backward.
    #[inline(always)]
    fn xhat(x: f32, (mu, rs): Stats) -> f32 {
        ((x as f64 - mu) * rs) as f32
    }

    /// The first channel of group `k` for [`Affine::PerChannel`] with `nparams` channels in all.
    fn first_channel(k: usize, channels: usize, nparams: usize) -> usize {
        k % (nparams / channels) * channels
    }

    /// Returns y and `(μ, 1/σ)` per group.
    fn forward(&self, x: &[f32], gamma: &[f32], beta: &[f32]) -> (Vec<f32>, Vec<Stats>) {
        let n = self.group;
        let groups_per_task = (8192 / n.max(1)).max(1);
        let mut stats = vec![(0.0, 0.0); x.len() / n.max(1)];
        let y = uninit_vec(x.len(), |y| {
            let tasks = y.par_chunks_mut(groups_per_task * n).zip(stats.par_chunks_mut(groups_per_task)).zip(x.par_chunks(groups_per_task * n));
            tasks.enumerate().for_each(|(task, ((y, st), x))| {
                simd(#[inline(always)] || {
                    for (i, ((y, st), x)) in y.chunks_mut(n).zip(st.iter_mut()).zip(x.chunks(n)).enumerate() {
                        // Statistics in f64: the golden tests compare to 1e-5.
                        let mu = sum_f64(x, x, |v, _| v as f64) / n as f64;
                        let var = sum_f64(x, x, |v, _| (v as f64 - mu) * (v as f64 - mu)) / n as f64;
                        *st = (mu, 1.0 / (var + self.eps as f64).sqrt());
                        // y = γ x̂ + β
                        match self.affine {
                            Affine::PerElement => {
                                for (((y, &x), &g), &b) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
                                    y.write(g * Self::xhat(x, *st) + b);
                                }
                            }
                            Affine::PerChannel { channels, spatial } => {
                                let c0 = Self::first_channel(task * groups_per_task + i, channels, gamma.len());
                                for (j, (y, x)) in y.chunks_mut(spatial).zip(x.chunks(spatial)).enumerate() {
                                    let (g, b) = (gamma[c0 + j], beta[c0 + j]);
                                    y.iter_mut().zip(x).for_each(|(y, &x)| {
                                        y.write(g * Self::xhat(x, *st) + b);
                                    });
                                }
                            }
                        }
                    }
                })
            });
        });
        (y, stats)
    }

    /// Returns dx, dγ and dβ, recomputing `x̂` from `x` and the saved statistics.
    /// The groups are cut into blocks of [`GROUPS_PER_BLOCK`], each block sums
    /// its share of dγ, dβ on one thread, and the block sums are added in block order.
    fn backward(&self, dy: &[f32], x: &[f32], stats: &[Stats], gamma: &[f32], nparams: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let n = self.group;
        let block = GROUPS_PER_BLOCK * n;
        let mut partials: Vec<(Vec<f32>, Vec<f32>)> = Vec::new();
        let dx = uninit_vec(dy.len(), |dx| {
            partials = dx
                .par_chunks_mut(block)
                .zip(dy.par_chunks(block))
                .zip(x.par_chunks(block))
                .zip(stats.par_chunks(GROUPS_PER_BLOCK))
                .enumerate()
                .map(|(b, (((dx, dy), x), st))| simd(#[inline(always)] || self.backward_block(b * GROUPS_PER_BLOCK, dx, dy, x, st, gamma, nparams)))
                .collect();
        });
        let (mut dgamma, mut dbeta) = (vec![0.0f32; nparams], vec![0.0f32; nparams]);
        for (dg, db) in &partials {
            dgamma.iter_mut().zip(dg).for_each(|(a, b)| *a += b);
            dbeta.iter_mut().zip(db).for_each(|(a, b)| *a += b);
        }
        (dx, dgamma, dbeta)
    }

    /// One block of groups of [`Self::backward`], the first of them group
    /// `first` overall: writes its dx, returns its share of dγ, dβ.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)] // the block's place, its slices and the parameters
    fn backward_block(&self, first: usize, dx: &mut [MaybeUninit<f32>], dy: &[f32], x: &[f32], stats: &[Stats], gamma: &[f32], nparams: usize) -> (Vec<f32>, Vec<f32>) {
        let n = self.group;
        let (mut dg, mut db) = (vec![0.0f32; nparams], vec![0.0f32; nparams]);
        // x̂ and ĝ = γ · dy, one group at a time.
        let (mut xh, mut gh) = (vec![0.0f32; n], vec![0.0f32; n]);
        for (i, (((dx, dy), x), &st)) in dx.chunks_mut(n).zip(dy.chunks(n)).zip(x.chunks(n)).zip(stats).enumerate() {
            xh.iter_mut().zip(x).for_each(|(h, &x)| *h = Self::xhat(x, st));
            match self.affine {
                Affine::PerElement => {
                    gh.iter_mut().zip(dy).zip(gamma).for_each(|((h, &d), &g)| *h = g * d);
                    for (((dg, db), &d), &x) in dg.iter_mut().zip(db.iter_mut()).zip(dy).zip(&xh) {
                        *dg += d * x;
                        *db += d;
                    }
                }
                Affine::PerChannel { channels, spatial } => {
                    // dγ_c = Σ dy x̂, dβ_c = Σ dy over the channel's run (and, summed by the caller, the batch)
                    let c0 = Self::first_channel(first + i, channels, nparams);
                    let runs = gh.chunks_mut(spatial).zip(dy.chunks(spatial)).zip(xh.chunks(spatial));
                    for (j, ((gh, dy), xh)) in runs.enumerate() {
                        let g = gamma[c0 + j];
                        gh.iter_mut().zip(dy).for_each(|(h, &d)| *h = g * d);
                        dg[c0 + j] += sum_f64(dy, xh, |d, x| d as f64 * x as f64) as f32;
                        db[c0 + j] += sum_f64(dy, dy, |d, _| d as f64) as f32;
                    }
                }
            }
            let mean_g = (sum_f64(&gh, &gh, |h, _| h as f64) / n as f64) as f32;
            let mean_gx = (sum_f64(&gh, &xh, |h, x| h as f64 * x as f64) / n as f64) as f32;
            // dx = (ĝ - mean(ĝ) - x̂ · mean(ĝ x̂)) / σ
            let r = st.1 as f32;
            for ((dx, &h), &x) in dx.iter_mut().zip(&gh).zip(&xh) {
                dx.write((h - mean_g - x * mean_gx) * r);
            }
        }
        (dg, db)
    }
}

fn norm_op(op: &'static str, x: &Tensor, gamma: &Tensor, beta: &Tensor, groups: Groups) -> Tensor {
    let shape = x.shape();
    let (g, b) = (gamma.to_vec(), beta.to_vec());
    let (y, stats) = {
        let data = x.data();
        let xs = data.as_standard_layout(); // a copy only when x is strided
        groups.forward(xs.as_slice().expect("standard"), &g, &b)
    };
    let out = ArrayD::from_shape_vec(IxDyn(&shape), y).expect("same size");
    let nparams = g.len();
    let (x_c, gamma_c) = (x.clone(), gamma.clone());
    Tensor::from_op(out, op, &[x, gamma, beta], move |dy, _| {
        let dy = dy.as_standard_layout();
        let data = x_c.data();
        let xs = data.as_standard_layout();
        let g = gamma_c.to_vec();
        let (dx, dg, db) = groups.backward(dy.as_slice().expect("standard"), xs.as_slice().expect("standard"), &stats, &g, nparams);
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
        #[cfg(feature = "wgpu")]
        if let Some(y) = super::on_gpu::layer_norm(self, gamma, beta, eps) {
            return Ok(y);
        }
        Ok(norm_op("layer_norm", self, gamma, beta, Groups { group: c, eps, affine: Affine::PerElement }))
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
        // Groups are contiguous in NCHW: each (n, g) block of C/G · spatial
        // values is normalised, and its channels' γ, β applied, in one pass.
        let affine = Affine::PerChannel { channels: per_group, spatial };
        Ok(norm_op("group_norm", self, gamma, beta, Groups { group: per_group * spatial, eps, affine }))
    }
}
