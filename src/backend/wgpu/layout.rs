//! Moving values on [`GpuArray`]s: permute, row gather and its scatter-add, nearest
//! upsampling and its gradient. Kernels in `layout.wgsl`; each result is a new array,
//! queued without waiting.

use super::array::{map_kernel, GpuArray};
use crate::{Error, Result};

const FILE: &str = "layout.wgsl";
const SOURCE: &str = include_str!("layout.wgsl");

/// Most axes [`permute`] handles.
pub const MAX_AXES: usize = 8;

/// The uniform of `layout.wgsl`: `[total, a, b, c]`, the output shape (8), the input
/// strides of the output axes (8), padding (4).
fn words(total: usize, a: usize, b: usize, c: usize) -> [u32; 24] {
    let mut w = [0u32; 24];
    w[..4].copy_from_slice(&[total as u32, a as u32, b as u32, c as u32]);
    w
}

/// `x` of `shape` with its axes reordered: `out.shape[i] = shape[axes[i]]`, row-major.
pub fn permute(x: &GpuArray, shape: &[usize], axes: &[usize]) -> Result<GpuArray> {
    let n: usize = shape.iter().product();
    let mut seen = vec![false; shape.len()];
    if x.len() != n || axes.len() != shape.len() || shape.len() > MAX_AXES || axes.iter().any(|&a| a >= shape.len() || std::mem::replace(&mut seen[a], true)) {
        return Err(Error::shape("wgpu permute", format!("{} values of shape {shape:?} cannot be permuted by {axes:?} (at most {MAX_AXES} axes)", x.len())));
    }
    // row-major strides of the input
    let mut strides = vec![1usize; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    let mut w = words(n, shape.len(), 0, 0);
    for (i, &a) in axes.iter().enumerate() {
        w[4 + i] = shape[a] as u32; // out.shape[i]
        w[12 + i] = strides[a] as u32; // the input's step along output axis i
    }
    map_kernel("wgpu permute", (FILE, SOURCE, "permute"), &w, &[x], n)
}

/// `out[r] = table[index[r]]` for a `table (K, D)` and `n` row indices (as f32).
pub fn gather_rows(table: &GpuArray, index: &GpuArray, rows: usize, dim: usize) -> Result<GpuArray> {
    if dim == 0 || table.len() % dim != 0 || index.len() != rows {
        return Err(Error::shape("wgpu gather_rows", format!("table of {} values with rows of {dim}, {} indices for {rows} rows", table.len(), index.len())));
    }
    map_kernel("wgpu gather_rows", (FILE, SOURCE, "gather_rows"), &words(rows * dim, rows, dim, 0), &[table, index], rows * dim)
}

/// `dtable[k] = Σ_{r : index[r] = k} g[r]`, `(K, D)`: the gradient of [`gather_rows`].
pub fn scatter_rows(g: &GpuArray, index: &GpuArray, rows: usize, dim: usize, table_rows: usize) -> Result<GpuArray> {
    if g.len() != rows * dim || index.len() != rows {
        return Err(Error::shape("wgpu scatter_rows", format!("gradient of {} values and {} indices for {rows} rows of {dim}", g.len(), index.len())));
    }
    map_kernel("wgpu scatter_rows", (FILE, SOURCE, "scatter_rows"), &words(table_rows * dim, rows, dim, table_rows), &[g, index], table_rows * dim)
}

/// Nearest upsampling of `planes` planes `(h, w)` by `factor`: `(planes, h f, w f)`.
pub fn upsample_nearest(x: &GpuArray, planes: usize, h: usize, w: usize, factor: usize) -> Result<GpuArray> {
    if x.len() != planes * h * w || factor == 0 {
        return Err(Error::shape("wgpu upsample_nearest", format!("{} values for {planes} planes of ({h}, {w}), factor {factor}", x.len())));
    }
    let n = x.len() * factor * factor;
    map_kernel("wgpu upsample_nearest", (FILE, SOURCE, "upsample"), &words(n, factor, h, w), &[x], n)
}

/// The gradient of [`upsample_nearest`]: each input pixel sums its `f × f` copies.
pub fn upsample_nearest_backward(g: &GpuArray, planes: usize, h: usize, w: usize, factor: usize) -> Result<GpuArray> {
    if g.len() != planes * h * w * factor * factor || factor == 0 {
        return Err(Error::shape("wgpu upsample_nearest_backward", format!("{} values for {planes} planes of ({h}, {w}) upsampled by {factor}", g.len())));
    }
    map_kernel("wgpu upsample_nearest_backward", (FILE, SOURCE, "upsample_backward"), &words(planes * h * w, factor, h, w), &[g], planes * h * w)
}
