//! Elementwise kernels on [`GpuArray`]s beyond those of [`super::array_ops`]: sigmoid,
//! tanh, square, exp and the GELU family with their derivatives, same-shape subtraction and product, a scalar
//! spread over an array (the gradient of a sum or a mean), and the binary cross-entropy
//! on logits. Kernels in `pointwise.wgsl`; each result is a new array, queued without
//! waiting.

use super::array::{map_kernel, GpuArray};
use super::array_ops::sum_all;
use crate::{Error, Result};

const FILE: &str = "pointwise.wgsl";
const SOURCE: &str = include_str!("pointwise.wgsl");

/// The unary maps of [`unary`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    /// `σ(x) = 1 / (1 + e^{-x})`; derivative `σ (1 - σ)`.
    Sigmoid,
    /// `tanh x`; derivative `1 - tanh² x`.
    Tanh,
    /// `x²`; derivative `2x`.
    Square,
    /// `eˣ`; derivative `eˣ`.
    Exp,
    /// GELU, exact: `x Φ(x)`; derivative `Φ(x) + x φ(x)`.
    Gelu,
    /// GELU, tanh approximation; derivative as `Tensor::gelu_tanh`.
    GeluTanh,
    /// SiLU: `x σ(x)`; derivative `σ(x) (1 + x (1 - σ(x)))`.
    Silu,
    /// CLIP's QuickGELU: `x σ(1.702 x)`.
    QuickGelu,
    /// `x + c` for a constant `c`; derivative 1.
    AddScalar(f32),
}

impl Unary {
    fn code(self) -> u32 {
        match self {
            Unary::Sigmoid => 0,
            Unary::Tanh => 1,
            Unary::Square => 2,
            Unary::Exp => 3,
            Unary::Gelu => 4,
            Unary::GeluTanh => 5,
            Unary::Silu => 6,
            Unary::QuickGelu => 7,
            Unary::AddScalar(_) => 8,
        }
    }

    /// The constant of [`Unary::AddScalar`], else 0.
    fn scalar(self) -> f32 {
        match self {
            Unary::AddScalar(c) => c,
            _ => 0.0,
        }
    }
}

/// The uniform of `pointwise.wgsl`: `[total, op, scalar bits, 0 ...]`.
fn words(total: usize, op: u32, scalar: f32) -> [u32; 16] {
    let mut w = [0u32; 16];
    w[0] = total as u32;
    w[1] = op;
    w[2] = scalar.to_bits();
    w
}

fn same_length(op: &'static str, a: &GpuArray, b: &GpuArray) -> Result<()> {
    if a.len() != b.len() {
        return Err(Error::shape(op, format!("the arrays have {} and {} values; they must be the same length", a.len(), b.len())));
    }
    Ok(())
}

/// `y = f(x)` elementwise.
pub fn unary(f: Unary, x: &GpuArray) -> Result<GpuArray> {
    map_kernel("wgpu unary", (FILE, SOURCE, "unary"), &words(x.len(), f.code(), f.scalar()), &[x], x.len())
}

/// `dx = g · f'(x)` elementwise.
pub fn unary_backward(f: Unary, g: &GpuArray, x: &GpuArray) -> Result<GpuArray> {
    same_length("wgpu unary_backward", g, x)?;
    map_kernel("wgpu unary_backward", (FILE, SOURCE, "unary_backward"), &words(x.len(), f.code(), f.scalar()), &[g, x], x.len())
}

/// `a - b` elementwise.
pub fn sub(a: &GpuArray, b: &GpuArray) -> Result<GpuArray> {
    same_length("wgpu sub", a, b)?;
    map_kernel("wgpu sub", (FILE, SOURCE, "binary"), &words(a.len(), 0, 0.0), &[a, b], a.len())
}

/// `a · b` elementwise.
pub fn mul(a: &GpuArray, b: &GpuArray) -> Result<GpuArray> {
    same_length("wgpu mul", a, b)?;
    map_kernel("wgpu mul", (FILE, SOURCE, "binary"), &words(a.len(), 1, 0.0), &[a, b], a.len())
}

/// `y[i] = s · g[0]` for `i < len`: a one-value gradient spread over an array.
pub fn broadcast_scalar(g: &GpuArray, len: usize, s: f32) -> Result<GpuArray> {
    if g.len() != 1 {
        return Err(Error::shape("wgpu broadcast_scalar", format!("the scalar has {} values, expected 1", g.len())));
    }
    map_kernel("wgpu broadcast_scalar", (FILE, SOURCE, "broadcast_scalar"), &words(len, 0, s), &[g], len)
}

/// The mean binary cross-entropy on logits `x` against targets `y`:
/// `mean(max(x, 0) - x y + ln(1 + e^{-|x|}))`, one value.
pub fn bce_with_logits(x: &GpuArray, y: &GpuArray) -> Result<GpuArray> {
    same_length("wgpu bce_with_logits", x, y)?;
    let terms = map_kernel("wgpu bce_with_logits", (FILE, SOURCE, "bce_terms"), &words(x.len(), 0, 0.0), &[x, y], x.len())?;
    let total = sum_all(&terms)?;
    super::array_ops::scale(&total, 1.0 / x.len().max(1) as f32)
}

/// The logits' gradient of [`bce_with_logits`]: `dx = g[0] (σ(x) - y) / n`.
pub fn bce_with_logits_backward(x: &GpuArray, y: &GpuArray, g: &GpuArray) -> Result<GpuArray> {
    same_length("wgpu bce_with_logits_backward", x, y)?;
    if g.len() != 1 {
        return Err(Error::shape("wgpu bce_with_logits_backward", format!("the loss gradient has {} values, expected 1", g.len())));
    }
    map_kernel("wgpu bce_with_logits_backward", (FILE, SOURCE, "bce_backward"), &words(x.len(), 0, 1.0 / x.len().max(1) as f32), &[x, y, g], x.len())
}
