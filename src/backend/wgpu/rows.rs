//! Kernels over the last axis and slices of [`GpuArray`]s: the GPU twins of the CPU ops
//! of the transformer chapters (softmax over attention rows, layer norm, the Q/K/V
//! chunks of a fused projection, a key/value cache, attention masks).
//!
//! | function | computes | CPU twin |
//! |---|---|---|
//! | [`softmax_rows`], [`softmax_rows_backward`] | `y = e^{x - max} / Σ e^{x - max}`, `dx = y ⊙ (g - Σ g y)` | `Tensor::softmax(-1)` |
//! | [`log_softmax_rows`], [`log_softmax_rows_backward`] | `y = x - max - ln Σ e^{x - max}`, `dx = g - e^y Σ g` | `Tensor::log_softmax(-1)` |
//! | [`layer_norm_rows`], [`layer_norm_rows_backward`] | `y = γ (x - μ) / σ + β`; dx, dγ, dβ | `Tensor::layer_norm` |
//! | [`narrow`], [`narrow_backward`] | `x[:, start .. start + width, :]`; g put back among zeros | `Tensor::narrow`, `chunk` |
//! | [`concat2`] | `[a, b]` along the middle axis of `(outer, len, inner)` | `Tensor::concat` of two |
//! | [`masked_fill`], [`masked_fill_backward`] | `value` where the broadcast mask is set; g zeroed there | `Tensor::masked_fill` |
//!
//! The row kernels (`rows.wgsl`) run one 256-wide workgroup per row, each thread taking
//! a strided share and the workgroup adding the shares as a tree; they compute in f32
//! as the CPU's layer norm does (which sums in 32 lanes, and keeps μ as a shift plus an
//! f32 mean of `x - shift`), so they agree to the rounding
//! of f32 sums (see `tests/gpu_rows.rs`). The rest are one invocation per output value
//! and move values without arithmetic, so they are exact.
//!
//! Every result is a new array, queued without waiting. A length that does not match the
//! shape given is [`Error::Shape`]; a GPU failure is [`Error::Device`]. Empty inputs
//! give empty results.
//!
//! ```no_run
//! use dalle::backend::wgpu::{rows, GpuArray};
//! # fn main() -> dalle::Result<()> {
//! let scores = GpuArray::upload(&[0.0, f32::NEG_INFINITY, 1.0, 1.0])?; // (2, 2)
//! let p = rows::softmax_rows(&scores, 2, 2)?;
//! assert_eq!(p.to_vec()?, [1.0, 0.0, 0.5, 0.5]);
//! # Ok(()) }
//! ```

use super::array::{map_kernel, GpuArray};
use super::array_ops::{check, one_workgroup_each};
use super::layout::MAX_AXES;
use crate::{Error, Result};

const FILE: &str = "rows.wgsl";
const SOURCE: &str = include_str!("rows.wgsl");

/// The uniform `Params` of `rows.wgsl` (see the field comments there).
#[derive(Clone, Copy, Default)]
struct Params {
    rows: usize,
    d: usize,
    eps: f32,
    len: usize,
    inner: usize,
    start: usize,
    width: usize,
    axes: usize,
    value: f32,
    shape: [usize; MAX_AXES],
    mask_strides: [usize; MAX_AXES],
}

impl Params {
    /// The 28 words of the uniform for a dispatch writing `total` values (or rows).
    fn words(&self, total: usize) -> [u32; 28] {
        let mut w = [0u32; 28];
        w[..12].copy_from_slice(&[
            total as u32,
            self.rows as u32,
            self.d as u32,
            self.eps.to_bits(),
            self.len as u32,
            self.inner as u32,
            self.start as u32,
            self.width as u32,
            self.axes as u32,
            self.value.to_bits(),
            0,
            0,
        ]);
        for a in 0..MAX_AXES {
            w[12 + a] = self.shape[a] as u32;
            w[20 + a] = self.mask_strides[a] as u32;
        }
        w
    }
}

/// The pipeline of `rows.wgsl`'s `entry`, compiled on first use and kept (called before
/// a job opens).
fn pipeline(entry: &'static str) -> Result<wgpu::ComputePipeline> {
    GpuArray::context()?.cached_pipeline(FILE, SOURCE, entry)
}

/// A new array of `rows · d` values written by `entry`, one workgroup per row, reading `inputs`.
fn per_row(op: &'static str, entry: &'static str, params: Params, inputs: &[&GpuArray]) -> Result<GpuArray> {
    let kernel = pipeline(entry)?;
    let mut job = GpuArray::context()?.job(op)?;
    let out = job.output(entry, params.rows * params.d)?;
    if params.d > 0 {
        let mut buffers = vec![out.buffer()];
        buffers.extend(inputs.iter().map(|a| a.buffer()));
        job.dispatch(&kernel, &params.words(params.rows), &buffers, one_workgroup_each(params.rows))?;
        job.enqueue();
    }
    job.finish()?;
    Ok(out)
}

/// Softmax over each row of `x (rows, d)`, as `Tensor::softmax(-1)`:
///
/// `y_j = e^{x_j - m} · (1 / Σ_k e^{x_k - m})`, `m = max_k x_k`.
///
/// `-inf` entries (a masked score) give 0; a row whose maximum is infinite (all `-inf`,
/// or a `+inf`) is all NaN, as on the CPU.
pub fn softmax_rows(x: &GpuArray, rows: usize, d: usize) -> Result<GpuArray> {
    check("wgpu softmax_rows", &[("x", x.len(), rows * d)])?;
    per_row("wgpu softmax_rows", "softmax_rows", Params { rows, d, ..Params::default() }, &[x])
}

/// The gradient of [`softmax_rows`] from its output `y` and the upstream `g`, both
/// `(rows, d)`: `dx_j = y_j (g_j - Σ_k g_k y_k)`.
pub fn softmax_rows_backward(g: &GpuArray, y: &GpuArray, rows: usize, d: usize) -> Result<GpuArray> {
    check("wgpu softmax_rows_backward", &[("g", g.len(), rows * d), ("y", y.len(), rows * d)])?;
    per_row("wgpu softmax_rows_backward", "softmax_rows_backward", Params { rows, d, ..Params::default() }, &[g, y])
}

/// `y = x - m - ln Σ_k e^{x_k - m}` (`m = max_k x_k`) over each row of `x (rows, d)`,
/// as `Tensor::log_softmax` over the last axis.
pub fn log_softmax_rows(x: &GpuArray, rows: usize, d: usize) -> Result<GpuArray> {
    check("wgpu log_softmax_rows", &[("x", x.len(), rows * d)])?;
    per_row("wgpu log_softmax_rows", "log_softmax_rows", Params { rows, d, ..Params::default() }, &[x])
}

/// The gradient of [`log_softmax_rows`] from its output `y` and the upstream `g`:
/// `dx_j = g_j - e^{y_j} Σ_k g_k`.
pub fn log_softmax_rows_backward(g: &GpuArray, y: &GpuArray, rows: usize, d: usize) -> Result<GpuArray> {
    check("wgpu log_softmax_rows_backward", &[("g", g.len(), rows * d), ("y", y.len(), rows * d)])?;
    per_row("wgpu log_softmax_rows_backward", "log_softmax_rows_backward", Params { rows, d, ..Params::default() }, &[g, y])
}

/// Layer normalisation of each row of `x (rows, d)` with `gamma`, `beta` of length `d`,
/// as `Tensor::layer_norm(gamma, beta, eps)`:
///
/// `μ = mean(x)`, `σ² = mean((x - μ)²)` (biased), `y = γ (x - μ) / √(σ² + ε) + β`.
///
/// Returns `y (rows, d)` and `stats`, `(μ, 1/σ)` for each row (`2 rows` values, `1/σ =
/// 1/√(σ² + ε)`), for [`layer_norm_rows_backward`]. The mean is summed relative to the
/// row's first value, so that a large common offset does not cost it its precision; a
/// row of length 0 has stats `(0, 0)`.
pub fn layer_norm_rows(x: &GpuArray, gamma: &GpuArray, beta: &GpuArray, rows: usize, d: usize, eps: f32) -> Result<(GpuArray, GpuArray)> {
    const OP: &str = "wgpu layer_norm_rows";
    check(OP, &[("x", x.len(), rows * d), ("gamma", gamma.len(), d), ("beta", beta.len(), d)])?;
    let kernel = pipeline("layer_norm_rows")?;
    let mut job = GpuArray::context()?.job(OP)?;
    let y = job.output("y", rows * d)?;
    let stats = job.output("stats", 2 * rows)?;
    if d == 0 {
        job.clear(stats.buffer(), 2 * rows);
    } else {
        let buffers = [y.buffer(), x.buffer(), gamma.buffer(), beta.buffer(), stats.buffer()];
        job.dispatch(&kernel, &Params { rows, d, eps, ..Params::default() }.words(rows), &buffers, one_workgroup_each(rows))?;
    }
    job.enqueue();
    job.finish()?;
    Ok((y, stats))
}

/// The gradients of [`layer_norm_rows`] from the upstream `g (rows, d)`, the input `x`,
/// `gamma` and the forward's `stats`: `(dx (rows, d), dγ (d), dβ (d))` with
///
/// ```text
/// ĝ = γ g,   x̂ = (x - μ) / σ
/// dx = (ĝ - mean(ĝ) - x̂ · mean(ĝ x̂)) / σ     (means along the row)
/// dγ = Σ_rows g x̂,   dβ = Σ_rows g
/// ```
pub fn layer_norm_rows_backward(g: &GpuArray, x: &GpuArray, gamma: &GpuArray, stats: &GpuArray, rows: usize, d: usize) -> Result<(GpuArray, GpuArray, GpuArray)> {
    const OP: &str = "wgpu layer_norm_rows_backward";
    check(OP, &[("g", g.len(), rows * d), ("x", x.len(), rows * d), ("gamma", gamma.len(), d), ("stats", stats.len(), 2 * rows)])?;
    let (dx_kernel, param_kernel) = (pipeline("layer_norm_rows_backward")?, pipeline("layer_norm_param_grads")?);
    let mut job = GpuArray::context()?.job(OP)?;
    let dx = job.output("dx", rows * d)?;
    let (dgamma, dbeta) = (job.output("dgamma", d)?, job.output("dbeta", d)?);
    if d > 0 {
        let words = Params { rows, d, ..Params::default() }.words(rows);
        let row_buffers = [dx.buffer(), g.buffer(), x.buffer(), stats.buffer(), gamma.buffer()];
        job.dispatch(&dx_kernel, &words, &row_buffers, one_workgroup_each(rows))?;
        // one workgroup per column; with no rows it writes dγ = dβ = 0
        let column_buffers = [dgamma.buffer(), g.buffer(), x.buffer(), stats.buffer(), dbeta.buffer()];
        job.dispatch(&param_kernel, &words, &column_buffers, one_workgroup_each(d))?;
        job.enqueue();
    }
    job.finish()?;
    Ok((dx, dgamma, dbeta))
}

/// `Err` unless `start .. start + width` lies within an axis of length `len`.
fn check_slice(op: &'static str, len: usize, start: usize, width: usize) -> Result<()> {
    if start + width > len {
        return Err(Error::shape(op, format!("the slice {start}..{} is outside an axis of length {len}", start + width)));
    }
    Ok(())
}

/// The slice `x[:, start .. start + width, :]` of `x (outer, len, inner)`, `(outer, width,
/// inner)`: `Tensor::narrow(axis, start, width)` with `outer` the product of the axes
/// before `axis` and `inner` of those after (`chunk(n, axis)` is `n` of these).
pub fn narrow(x: &GpuArray, outer: usize, len: usize, inner: usize, start: usize, width: usize) -> Result<GpuArray> {
    const OP: &str = "wgpu narrow";
    check_slice(OP, len, start, width)?;
    check(OP, &[("x", x.len(), outer * len * inner)])?;
    let params = Params { len, inner, start, width, ..Params::default() };
    let total = outer * width * inner;
    map_kernel(OP, (FILE, SOURCE, "narrow"), &params.words(total), &[x], total)
}

/// The gradient of [`narrow`]: `g (outer, width, inner)` placed at `start .. start + width`
/// of the middle axis of an `(outer, len, inner)` array of zeros.
pub fn narrow_backward(g: &GpuArray, outer: usize, len: usize, inner: usize, start: usize, width: usize) -> Result<GpuArray> {
    const OP: &str = "wgpu narrow_backward";
    check_slice(OP, len, start, width)?;
    check(OP, &[("g", g.len(), outer * width * inner)])?;
    let params = Params { len, inner, start, width, ..Params::default() };
    let total = outer * len * inner;
    map_kernel(OP, (FILE, SOURCE, "narrow_backward"), &params.words(total), &[g], total)
}

/// `a (outer, len_a, inner)` and `b (outer, len_b, inner)` joined along the middle axis,
/// `(outer, len_a + len_b, inner)`: `Tensor::concat(&[a, b], axis)`, e.g. a key/value
/// cache growing by `b`'s positions. Its gradient is two [`narrow`]s.
pub fn concat2(a: &GpuArray, b: &GpuArray, outer: usize, len_a: usize, len_b: usize, inner: usize) -> Result<GpuArray> {
    const OP: &str = "wgpu concat2";
    check(OP, &[("a", a.len(), outer * len_a * inner), ("b", b.len(), outer * len_b * inner)])?;
    let params = Params { len: len_a, inner, width: len_b, ..Params::default() };
    let total = outer * (len_a + len_b) * inner;
    map_kernel(OP, (FILE, SOURCE, "concat2"), &params.words(total), &[a, b], total)
}

/// The strides of a `mask_shape` array broadcast to `out_shape` (NumPy's rule: shapes
/// aligned on the right, a missing or size-1 axis repeats), for [`masked_fill`]: the
/// mask's row-major stride along each output axis, 0 where it broadcasts.
pub fn broadcast_strides(mask_shape: &[usize], out_shape: &[usize]) -> Result<Vec<usize>> {
    if mask_shape.len() > out_shape.len() {
        return Err(Error::shape("wgpu broadcast_strides", format!("mask {mask_shape:?} has more axes than {out_shape:?}")));
    }
    let offset = out_shape.len() - mask_shape.len();
    let mut strides = vec![0; out_shape.len()];
    let mut step = 1;
    for (a, &n) in mask_shape.iter().enumerate().rev() {
        if n == out_shape[offset + a] {
            strides[offset + a] = step;
        } else if n != 1 {
            return Err(Error::shape("wgpu broadcast_strides", format!("mask {mask_shape:?} does not broadcast to {out_shape:?}")));
        }
        step *= n;
    }
    Ok(strides)
}

/// `y[i] = value` where the mask is set, `x[i]` elsewhere, as `Tensor::masked_fill`:
/// `x` has `out_shape` (at most 8 axes), `mask` holds 1.0 where masked and 0.0 elsewhere
/// (any nonzero value masks) at its own shape, read at `Σ_a i_a · mask_strides[a]`
/// ([`broadcast_strides`]; 0 on an axis where the mask broadcasts). `value` may be `-inf`.
pub fn masked_fill(x: &GpuArray, out_shape: &[usize], mask: &GpuArray, mask_strides: &[usize], value: f32) -> Result<GpuArray> {
    masked("wgpu masked_fill", x, out_shape, mask, mask_strides, value)
}

/// The gradient of [`masked_fill`]: `g` with zeros where the mask is set.
pub fn masked_fill_backward(g: &GpuArray, out_shape: &[usize], mask: &GpuArray, mask_strides: &[usize]) -> Result<GpuArray> {
    masked("wgpu masked_fill_backward", g, out_shape, mask, mask_strides, 0.0)
}

fn masked(op: &'static str, x: &GpuArray, out_shape: &[usize], mask: &GpuArray, mask_strides: &[usize], value: f32) -> Result<GpuArray> {
    if out_shape.len() > MAX_AXES || mask_strides.len() != out_shape.len() {
        return Err(Error::shape(op, format!("{} mask strides for the {} axes of {out_shape:?} (at most {MAX_AXES} axes)", mask_strides.len(), out_shape.len())));
    }
    let total: usize = out_shape.iter().product();
    check(op, &[("x", x.len(), total)])?;
    // the last value the mask is read at
    let last = out_shape.iter().zip(mask_strides).fold(0usize, |at, (&n, &s)| at.saturating_add(n.saturating_sub(1).saturating_mul(s)));
    if total > 0 && mask.len() <= last {
        return Err(Error::shape(op, format!("the mask has {} values; strides {mask_strides:?} over {out_shape:?} read up to value {last}", mask.len())));
    }
    let mut params = Params { axes: out_shape.len(), value, ..Params::default() };
    params.shape[..out_shape.len()].copy_from_slice(out_shape);
    params.mask_strides[..out_shape.len()].copy_from_slice(mask_strides);
    map_kernel(op, (FILE, SOURCE, "masked_fill"), &params.words(total), &[x, mask], total)
}
