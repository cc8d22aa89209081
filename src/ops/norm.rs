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
//!
//! Group norm can also apply SiLU to its output, `y = u σ(u)` with `u = γ x̂ + β`
//! (the U-Net's `SiLU(GroupNorm(x))`): the backward then first turns `dy` into
//! `du = dy · σ(u)(1 + u(1 - σ(u)))`, one group at a time in cache, and goes on
//! with `du` in place of `dy`. One pass over memory each way instead of two.

use super::elementwise::logistic;
use super::kernels::{simd_as, standard_layout, uninit_vec, MulAdd, Plain};
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

/// Independent partial sums per sum in [`lane_sums`]: 32 f32 accumulators are
/// four `ymm` registers at the AVX2 tier (two `zmm` at AVX-512, eight `xmm`
/// portable), enough to hide the add latency at every width.
const LANES: usize = 32;

/// `K` sums `Σ_i f(a[i], b[i], c[i])` at once, each in [`LANES`] independent
/// f32 accumulators so that the loop vectorises at the tier's width; the lanes
/// are then added in a fixed order, so the result is deterministic and the
/// same on every tier (plain arithmetic, no reassociation by the compiler).
/// Pass one slice twice where `f` needs fewer than three.
#[inline(always)]
fn lane_sums<const K: usize>(a: &[f32], b: &[f32], c: &[f32], f: impl Fn(f32, f32, f32) -> [f32; K]) -> [f32; K] {
    let mut acc = [[0.0f32; LANES]; K];
    let (ac, bc, cc) = (a.chunks_exact(LANES), b.chunks_exact(LANES), c.chunks_exact(LANES));
    let (ar, br, cr) = (ac.remainder(), bc.remainder(), cc.remainder());
    for ((x, y), z) in ac.zip(bc).zip(cc) {
        for l in 0..LANES {
            let v = f(x[l], y[l], z[l]);
            (0..K).for_each(|k| acc[k][l] += v[k]);
        }
    }
    // The tail after the body, so that memory is read in order (the prefetcher follows).
    let mut out = [0.0f32; K];
    for ((&x, &y), &z) in ar.iter().zip(br).zip(cr) {
        let v = f(x, y, z);
        (0..K).for_each(|k| out[k] += v[k]);
    }
    for (o, lanes) in out.iter_mut().zip(&acc) {
        *o += lanes.iter().sum::<f32>();
    }
    out
}

/// Per-group statistics saved by the forward pass. The mean is kept as
/// `μ = s + δ`, a shift `s` (the group's first value) and the mean `δ` of
/// `x - s`: `x - s` is exact for values near each other, so `x̂` keeps the
/// precision of the spread of the group, not of its offset (an f32 `μ` of
/// values near 1000 would be off by 3e-5, a whole ulp of the inputs), and the
/// sums stay in f32, at full vector width on every tier.
#[derive(Clone, Copy)]
struct Stats {
    /// `s`, the group's first value.
    shift: f32,
    /// `δ = mean(x - s)`.
    delta: f32,
    /// `1/σ = 1/√(σ² + ε)`.
    rs: f32,
}

impl Stats {
    /// The statistics of one group: two passes, `δ` first, then
    /// `σ² = mean(((x - s) - δ)²)` over the centred values (no cancellation).
    #[inline(always)]
    fn of(x: &[f32], eps: f32) -> Stats {
        let n = x.len() as f32;
        let shift = x.first().copied().unwrap_or(0.0);
        let [sum] = lane_sums(x, x, x, |v, _, _| [v - shift]);
        let delta = sum / n;
        let [ss] = lane_sums(x, x, x, |v, _, _| {
            let c = (v - shift) - delta;
            [c * c]
        });
        Stats { shift, delta, rs: 1.0 / (ss / n + eps).sqrt() }
    }

    /// `x̂ = (x - μ) / σ = ((x - s) - δ) / σ`, the same expression in forward and backward.
    #[inline(always)]
    fn xhat(&self, x: f32) -> f32 {
        ((x - self.shift) - self.delta) * self.rs
    }
}

/// Groups per rayon task in the backward pass. Fixed, so that the partial sums
/// of dγ, dβ (one per block, added in block order) do not depend on how rayon
/// happened to split the work: the same run gives the same bits.
const GROUPS_PER_BLOCK: usize = 64;

impl Groups {
    /// The first channel of group `k` for [`Affine::PerChannel`] with `nparams` channels in all.
    fn first_channel(k: usize, channels: usize, nparams: usize) -> usize {
        k % (nparams / channels) * channels
    }

    /// Returns y and the statistics of every group; `SILU`: y = SiLU(γ x̂ + β).
    fn forward<M: MulAdd, const SILU: bool>(&self, x: &[f32], gamma: &[f32], beta: &[f32]) -> (Vec<f32>, Vec<Stats>) {
        let n = self.group;
        let groups_per_task = (8192 / n.max(1)).max(1);
        let mut stats = vec![Stats { shift: 0.0, delta: 0.0, rs: 0.0 }; x.len() / n.max(1)];
        // SAFETY: each task writes y for every element of its groups (both affine cases).
        let y = unsafe { uninit_vec(x.len(), |y| {
            let tasks = y.par_chunks_mut(groups_per_task * n).zip(stats.par_chunks_mut(groups_per_task)).zip(x.par_chunks(groups_per_task * n));
            tasks.enumerate().for_each(|(task, ((y, st), x))| {
                simd_as::<M, _>(#[inline(always)] || {
                    for (i, ((y, st), x)) in y.chunks_mut(n).zip(st.iter_mut()).zip(x.chunks(n)).enumerate() {
                        *st = Stats::of(x, self.eps);
                        let st = *st;
                        // y = γ x̂ + β
                        match self.affine {
                            Affine::PerElement => {
                                for (((y, &x), &g), &b) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
                                    y.write(g * st.xhat(x) + b);
                                }
                            }
                            Affine::PerChannel { channels, spatial } => {
                                let c0 = Self::first_channel(task * groups_per_task + i, channels, gamma.len());
                                for (j, (y, x)) in y.chunks_mut(spatial).zip(x.chunks(spatial)).enumerate() {
                                    let (g, b) = (gamma[c0 + j], beta[c0 + j]);
                                    y.iter_mut().zip(x).for_each(|(y, &x)| {
                                        y.write(activation::<M, SILU>(g * st.xhat(x) + b));
                                    });
                                }
                            }
                        }
                    }
                })
            });
        }) };
        (y, stats)
    }

    /// Returns dx, dγ and dβ, recomputing `x̂` from `x` and the saved statistics.
    /// The groups are cut into blocks of [`GROUPS_PER_BLOCK`], each block sums
    /// its share of dγ, dβ on one thread, and the block sums are added in block order.
    fn backward<M: MulAdd, const SILU: bool>(&self, dy: &[f32], x: &[f32], stats: &[Stats], gamma: &[f32], beta: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let nparams = gamma.len();
        let n = self.group;
        let block = GROUPS_PER_BLOCK * n;
        let mut partials: Vec<(Vec<f32>, Vec<f32>)> = Vec::new();
        // SAFETY: backward_block writes dx for every element of its block.
        let dx = unsafe { uninit_vec(dy.len(), |dx| {
            partials = dx
                .par_chunks_mut(block)
                .zip(dy.par_chunks(block))
                .zip(x.par_chunks(block))
                .zip(stats.par_chunks(GROUPS_PER_BLOCK))
                .enumerate()
                .map(|(b, (((dx, dy), x), st))| simd_as::<M, _>(#[inline(always)] || self.backward_block::<M, SILU>(b * GROUPS_PER_BLOCK, dx, dy, x, st, gamma, beta)))
                .collect();
        }) };
        let (mut dgamma, mut dbeta) = (vec![0.0f32; nparams], vec![0.0f32; nparams]);
        for (dg, db) in &partials {
            dgamma.iter_mut().zip(dg).for_each(|(a, b)| *a += b);
            dbeta.iter_mut().zip(db).for_each(|(a, b)| *a += b);
        }
        (dx, dgamma, dbeta)
    }

    /// One block of groups of [`Self::backward`], the first of them group
    /// `first` overall: writes its dx, returns its share of dγ, dβ. Two passes
    /// over each group, no temporaries: the sums `Σ ĝ`, `Σ ĝ x̂` (and dγ, dβ),
    /// then dx.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)] // the block's place, its slices and the parameters
    fn backward_block<M: MulAdd, const SILU: bool>(&self, first: usize, dx: &mut [MaybeUninit<f32>], dy: &[f32], x: &[f32], stats: &[Stats], gamma: &[f32], beta: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let n = self.group;
        let nparams = gamma.len();
        let (mut dg, mut db) = (vec![0.0f32; nparams], vec![0.0f32; nparams]);
        // With SiLU: the group's du = dy · SiLU'(u), written here and read as dy below
        let mut du = vec![0.0f32; if SILU { n } else { 0 }];
        for (i, (((dx, dy), x), &st)) in dx.chunks_mut(n).zip(dy.chunks(n)).zip(x.chunks(n)).zip(stats).enumerate() {
            match self.affine {
                Affine::PerElement => {
                    // dγ_i += dy x̂, dβ_i += dy (summed over the block's rows)
                    for (((dg, db), &d), &x) in dg.iter_mut().zip(db.iter_mut()).zip(dy).zip(x) {
                        *dg += d * st.xhat(x);
                        *db += d;
                    }
                    // Σ ĝ and Σ ĝ x̂ with ĝ = γ · dy
                    let [sum_g, sum_gx] = lane_sums(dy, x, gamma, |d, x, g| {
                        let gh = g * d;
                        [gh, gh * st.xhat(x)]
                    });
                    let (mean_g, mean_gx) = (sum_g / n as f32, sum_gx / n as f32);
                    // dx = (ĝ - mean(ĝ) - x̂ · mean(ĝ x̂)) / σ
                    for (((dx, &d), &x), &g) in dx.iter_mut().zip(dy).zip(x).zip(gamma) {
                        dx.write((g * d - mean_g - st.xhat(x) * mean_gx) * st.rs);
                    }
                }
                Affine::PerChannel { channels, spatial } => {
                    // Within channel c's run ĝ = γ_c dy, so Σ ĝ = Σ_c γ_c Σ dy and
                    // Σ ĝ x̂ = Σ_c γ_c Σ dy x̂: the sums of dβ_c and dγ_c, weighted.
                    let c0 = Self::first_channel(first + i, channels, nparams);
                    let dy = if SILU {
                        for (j, ((du, dy), x)) in du.chunks_mut(spatial).zip(dy.chunks(spatial)).zip(x.chunks(spatial)).enumerate() {
                            let (g, b) = (gamma[c0 + j], beta[c0 + j]);
                            for ((du, &d), &x) in du.iter_mut().zip(dy).zip(x) {
                                // SiLU'(u) = σ(u) (1 + u (1 - σ(u))), u = γ x̂ + β
                                let u = g * st.xhat(x) + b;
                                let s = logistic::<M>(u);
                                *du = d * s * (1.0 + u * (1.0 - s));
                            }
                        }
                        &du[..]
                    } else {
                        dy
                    };
                    let (mut sum_g, mut sum_gx) = (0.0f32, 0.0f32);
                    for (j, (dy, x)) in dy.chunks(spatial).zip(x.chunks(spatial)).enumerate() {
                        let [s_dy, s_dyx] = lane_sums(dy, x, x, |d, x, _| [d, d * st.xhat(x)]);
                        // dγ_c = Σ dy x̂, dβ_c = Σ dy over the channel's run (and, summed by the caller, the batch)
                        dg[c0 + j] += s_dyx;
                        db[c0 + j] += s_dy;
                        sum_g += gamma[c0 + j] * s_dy;
                        sum_gx += gamma[c0 + j] * s_dyx;
                    }
                    let (mean_g, mean_gx) = (sum_g / n as f32, sum_gx / n as f32);
                    // dx = (ĝ - mean(ĝ) - x̂ · mean(ĝ x̂)) / σ
                    for (j, ((dx, dy), x)) in dx.chunks_mut(spatial).zip(dy.chunks(spatial)).zip(x.chunks(spatial)).enumerate() {
                        let g = gamma[c0 + j];
                        for ((dx, &d), &x) in dx.iter_mut().zip(dy).zip(x) {
                            dx.write((g * d - mean_g - st.xhat(x) * mean_gx) * st.rs);
                        }
                    }
                }
            }
        }
        (dg, db)
    }
}

/// `u`, or `SiLU(u) = u σ(u)` when `SILU`.
#[inline(always)]
fn activation<M: MulAdd, const SILU: bool>(u: f32) -> f32 {
    if SILU { u * logistic::<M>(u) } else { u }
}

/// The op: [`Groups`] forward, and its backward, with SiLU on the output when `SILU`
/// (its exp then uses the tier's multiply-add `M`).
fn norm_op<M: MulAdd, const SILU: bool>(op: &'static str, x: &Tensor, gamma: &Tensor, beta: &Tensor, groups: Groups) -> Tensor {
    let shape = x.shape();
    let (g, b) = (gamma.to_vec(), beta.to_vec());
    let (y, stats) = {
        let data = x.data();
        let xs = standard_layout(&data); // a copy only when x is strided
        groups.forward::<M, SILU>(xs.as_slice().expect("standard"), &g, &b)
    };
    let out = ArrayD::from_shape_vec(IxDyn(&shape), y).expect("same size");
    let nparams = g.len();
    let (x_c, gamma_c, beta_c) = (x.clone(), gamma.clone(), beta.clone());
    Tensor::from_op(out, op, &[x, gamma, beta], move |dy, _| {
        let dy = standard_layout(dy);
        let data = x_c.data();
        let xs = standard_layout(&data);
        let (g, b) = (gamma_c.to_vec(), if SILU { beta_c.to_vec() } else { Vec::new() });
        let (dx, dg, db) = groups.backward::<M, SILU>(dy.as_slice().expect("standard"), xs.as_slice().expect("standard"), &stats, &g, &b);
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
        Ok(norm_op::<Plain, false>("layer_norm", self, gamma, beta, Groups { group: c, eps, affine: Affine::PerElement }))
    }

    /// Group normalisation: `x (N, C, ...)` split into `groups` groups of
    /// channels, each normalised over its channels and all spatial positions;
    /// then a per-channel affine. PyTorch: `F.group_norm(x, groups, gamma, beta, eps)`.
    pub fn group_norm(&self, groups: usize, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<Tensor> {
        Ok(norm_op::<Plain, false>("group_norm", self, gamma, beta, self.group_norm_groups(groups, gamma, beta, eps)?))
    }

    /// `SiLU(group_norm(x))` in one op: the same values as
    /// `x.group_norm(groups, gamma, beta, eps)?.silu()`, one pass over memory
    /// forward and one backward instead of two each. PyTorch:
    /// `F.silu(F.group_norm(x, groups, gamma, beta, eps))`.
    pub fn group_norm_silu(&self, groups: usize, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<Tensor> {
        let g = self.group_norm_groups(groups, gamma, beta, eps)?;
        Ok(crate::with_mul_add!(M => norm_op::<M, true>("group_norm_silu", self, gamma, beta, g)))
    }

    /// The [`Groups`] of a group norm of `self`, or the error that names the bad shape.
    fn group_norm_groups(&self, groups: usize, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<Groups> {
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
        Ok(Groups { group: per_group * spatial, eps, affine })
    }
}
