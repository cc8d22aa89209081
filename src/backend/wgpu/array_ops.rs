//! Elementwise maps, bias adds, sums, max pooling, cross-entropy and the Adam step on
//! [`GpuArray`]s: the ops around the matmuls and convolutions of a training step, so
//! that its values stay in GPU memory from the input batch to the optimiser step.
//!
//! Each function is the GPU twin of a CPU loop (named in its doc) and computes the same
//! formula in the same order where the order shows in the bits: ReLU's derivative at
//! exactly 0 is 0, max pooling sends a window's gradient to its first maximum in
//! row-major order, Adam rounds as `src/optim/adam.rs`. Sums differ from the CPU's
//! only in their f32 rounding (256 strided shares added as a tree).
//!
//! | function | computes | kernel (`array_ops.wgsl`) |
//! |---|---|---|
//! | [`relu`], [`relu_backward`] | `max(x, 0)`, `g · [x > 0]` | `relu`, `relu_backward` |
//! | [`add`], [`add_assign`], [`scale`], [`fill`] | `a + b`, `acc += b`, `s x`, `v` | `add`, `add_assign`, `scale`, `fill` |
//! | [`bias_add_rows`], [`bias_add_planes`] | `x[r][c] + b[c]`, `x[n][c][q] + b[c]` | `bias_add` |
//! | [`sum_rows`], [`sum_planes`], [`sum_all`] | `Σ_r g[r][c]`, `Σ_{n,q} g[n][c][q]`, `Σ x` | `sum_planes`, `sum_all` |
//! | [`max_pool2d`], [`max_pool2d_backward`] | window max, gradient to the first max | `max_pool2d`, `max_pool2d_backward` |
//! | [`cross_entropy`], [`cross_entropy_backward`] | `mean_r -log softmax(x_r)[t_r]`, `(p - onehot) g / rows` | `cross_entropy_rows`, `sum_all`, `cross_entropy_backward` |
//! | [`adam_step`] | Adam / AdamW in place | `adam_step` |
//!
//! Every result is a new array of the global context ([`super::global`]), queued without
//! waiting for the GPU. A length that does not match the shape given is
//! [`Error::Shape`]; a GPU failure is [`Error::Device`]. Empty arrays give empty results
//! (a sum of nothing is 0) without a dispatch.
//!
//! ```no_run
//! use dalle::backend::wgpu::{array_ops, GpuArray};
//! # fn main() -> dalle::Result<()> {
//! let x = GpuArray::upload(&[-1.0, 2.0, -3.0, 4.0])?; // (2, 2)
//! let b = GpuArray::upload(&[10.0, 20.0])?;
//! let y = array_ops::bias_add_rows(&array_ops::relu(&x)?, &b, 2, 2)?;
//! assert_eq!(y.to_vec()?, [10.0, 22.0, 10.0, 24.0]);
//! # Ok(()) }
//! ```

use super::array::{map_kernel, GpuArray};
use crate::{Error, Result};

/// The WGSL source of every kernel here.
const SOURCE: &str = include_str!("array_ops.wgsl");

/// The pipeline of `array_ops.wgsl`'s `entry`, compiled on first use and kept
/// ([`super::WgpuContext`]'s cache; called before a job opens).
fn pipeline(entry: &'static str) -> Result<wgpu::ComputePipeline> {
    GpuArray::context()?.cached_pipeline("array_ops.wgsl", SOURCE, entry)
}

/// The uniform `Params` of `array_ops.wgsl` (16 words; see the field comments there).
#[derive(Clone, Copy, Default)]
struct Params {
    batch: usize,
    channels: usize,
    plane: usize,
    height: usize,
    width: usize,
    kernel: usize,
    stride: usize,
    decoupled: bool,
    scalar: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    bias_correction1: f32,
    bias_correction2: f32,
}

impl Params {
    /// The 16 words of the uniform for a dispatch over `total` elements. Every count
    /// fits a u32: the arrays passed the adapter's binding limit (under 2³² bytes).
    fn words(&self, total: usize) -> [u32; 16] {
        [
            total as u32,
            self.batch as u32,
            self.channels as u32,
            self.plane as u32,
            self.height as u32,
            self.width as u32,
            self.kernel as u32,
            self.stride as u32,
            self.decoupled as u32,
            self.scalar.to_bits(),
            self.beta1.to_bits(),
            self.beta2.to_bits(),
            self.eps.to_bits(),
            self.weight_decay.to_bits(),
            self.bias_correction1.to_bits(),
            self.bias_correction2.to_bits(),
        ]
    }
}

/// `Err(Error::Shape)` naming `op` and each `(what, found, expected)` length that differs.
pub(super) fn check(op: &'static str, lengths: &[(&str, usize, usize)]) -> Result<()> {
    let wrong: Vec<String> = lengths
        .iter()
        .filter(|(_, found, expected)| found != expected)
        .map(|(what, found, expected)| format!("{what} has {found} values, expected {expected}"))
        .collect();
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(Error::shape(op, wrong.join("; ")))
    }
}

/// A new array of `len` values, one invocation of `entry` per value, reading `inputs`
/// (bindings 2, 3, ...).
fn map(op: &'static str, entry: &'static str, params: Params, inputs: &[&GpuArray], len: usize) -> Result<GpuArray> {
    map_kernel(op, ("array_ops.wgsl", SOURCE, entry), &params.words(len), inputs, len)
}

/// `entry` once per value of `written` (binding 1, updated in place), reading or
/// updating `others` (bindings 2, 3, ...). Each array is bound once: a buffer bound
/// twice, once writable, fails wgpu's validation, so aliases are refused here.
fn update(op: &'static str, entry: &'static str, params: Params, written: &GpuArray, others: &[&GpuArray]) -> Result<()> {
    let mut all = vec![written];
    all.extend_from_slice(others);
    for (i, a) in all.iter().enumerate() {
        if all[..i].iter().any(|b| std::ptr::eq(*a, *b)) {
            return Err(Error::Config(format!("{op}: the same array is passed twice; each argument must be its own array")));
        }
    }
    let kernel = pipeline(entry)?;
    let mut job = GpuArray::context()?.job(op)?;
    let buffers: Vec<&wgpu::Buffer> = all.iter().map(|a| a.buffer()).collect();
    job.dispatch_elementwise(&kernel, &params.words(written.len()), &buffers, written.len())?;
    job.enqueue();
    job.finish()
}

/// The grid of one workgroup per output: WebGPU guarantees 65535 workgroups per
/// dimension, so more outputs fold into y (the kernels read `x + y · groups_x`).
pub(super) fn one_workgroup_each(outputs: usize) -> [u32; 3] {
    let x = outputs.min(65_535);
    let y = if x == 0 { 0 } else { outputs.div_ceil(x) };
    [x as u32, y as u32, 1]
}

/// A new array of `outputs` values, one 256-wide workgroup of `entry` per value
/// (reductions), reading `inputs`.
fn reduce(op: &'static str, entry: &'static str, params: Params, inputs: &[&GpuArray], outputs: usize) -> Result<GpuArray> {
    let kernel = pipeline(entry)?;
    let mut job = GpuArray::context()?.job(op)?;
    let out = job.output(entry, outputs)?;
    let mut buffers = vec![out.buffer()];
    buffers.extend(inputs.iter().map(|a| a.buffer()));
    job.dispatch(&kernel, &params.words(outputs), &buffers, one_workgroup_each(outputs))?;
    job.enqueue();
    job.finish()?;
    Ok(out)
}

/// `y = max(x, 0)` (NaN gives 0, as `f32::max(x, 0.0)` on the CPU).
pub fn relu(x: &GpuArray) -> Result<GpuArray> {
    map("wgpu relu", "relu", Params::default(), &[x], x.len())
}

/// `dx = g · [x > 0]`: the derivative at exactly 0 is 0, as the CPU's ReLU.
pub fn relu_backward(g: &GpuArray, x: &GpuArray) -> Result<GpuArray> {
    check("wgpu relu_backward", &[("x", x.len(), g.len())])?;
    map("wgpu relu_backward", "relu_backward", Params::default(), &[g, x], g.len())
}

/// `y = a + b` (same lengths).
pub fn add(a: &GpuArray, b: &GpuArray) -> Result<GpuArray> {
    check("wgpu add", &[("b", b.len(), a.len())])?;
    map("wgpu add", "add", Params::default(), &[a, b], a.len())
}

/// `acc ← acc + b` in place (gradient accumulation); `b` must be another array.
pub fn add_assign(acc: &GpuArray, b: &GpuArray) -> Result<()> {
    check("wgpu add_assign", &[("b", b.len(), acc.len())])?;
    update("wgpu add_assign", "add_assign", Params::default(), acc, &[b])
}

/// `y = s x`.
pub fn scale(x: &GpuArray, s: f32) -> Result<GpuArray> {
    map("wgpu scale", "scale", Params { scalar: s, ..Params::default() }, &[x], x.len())
}

/// `len` copies of `value` (e.g. zeros for Adam's moments).
pub fn fill(len: usize, value: f32) -> Result<GpuArray> {
    map("wgpu fill", "fill", Params { scalar: value, ..Params::default() }, &[], len)
}

/// `y[r][c] = x[r][c] + b[c]` for `x (rows, cols)`: a linear layer's bias.
pub fn bias_add_rows(x: &GpuArray, bias: &GpuArray, rows: usize, cols: usize) -> Result<GpuArray> {
    // a (rows, cols) matrix is `rows` samples of `cols` channels of one value each
    bias_add("wgpu bias_add_rows", x, bias, rows, cols, 1)
}

/// `y[n][c][q] = x[n][c][q] + b[c]` for `x (batch, channels, plane)`: a convolution's bias.
pub fn bias_add_planes(x: &GpuArray, bias: &GpuArray, batch: usize, channels: usize, plane: usize) -> Result<GpuArray> {
    bias_add("wgpu bias_add_planes", x, bias, batch, channels, plane)
}

fn bias_add(op: &'static str, x: &GpuArray, bias: &GpuArray, batch: usize, channels: usize, plane: usize) -> Result<GpuArray> {
    check(op, &[("x", x.len(), batch * channels * plane), ("bias", bias.len(), channels)])?;
    let params = Params { batch, channels, plane, ..Params::default() };
    map(op, "bias_add", params, &[x, bias], x.len())
}

/// `s[c] = Σ_r g[r][c]` for `g (rows, cols)`: a linear layer's bias gradient.
pub fn sum_rows(g: &GpuArray, rows: usize, cols: usize) -> Result<GpuArray> {
    sum_per_channel("wgpu sum_rows", g, rows, cols, 1)
}

/// `s[c] = Σ_{n,q} g[n][c][q]` for `g (batch, channels, plane)`: a convolution's bias gradient.
pub fn sum_planes(g: &GpuArray, batch: usize, channels: usize, plane: usize) -> Result<GpuArray> {
    sum_per_channel("wgpu sum_planes", g, batch, channels, plane)
}

fn sum_per_channel(op: &'static str, g: &GpuArray, batch: usize, channels: usize, plane: usize) -> Result<GpuArray> {
    check(op, &[("g", g.len(), batch * channels * plane)])?;
    reduce(op, "sum_planes", Params { batch, channels, plane, ..Params::default() }, &[g], channels)
}

/// `s = Σ_i x[i]`, one value (0 for an empty array).
pub fn sum_all(x: &GpuArray) -> Result<GpuArray> {
    sum_divided("wgpu sum_all", x, 1.0)
}

/// `Σ_i x[i] / divisor` into one value, by one workgroup of 256 strided shares.
fn sum_divided(op: &'static str, x: &GpuArray, divisor: f32) -> Result<GpuArray> {
    let kernel = pipeline("sum_all")?;
    let mut job = GpuArray::context()?.job(op)?;
    let out = job.output("sum", 1)?;
    let params = Params { scalar: divisor, ..Params::default() };
    job.dispatch(&kernel, &params.words(x.len()), &[out.buffer(), x.buffer()], [1, 1, 1])?;
    job.enqueue();
    job.finish()?;
    Ok(out)
}

/// The sizes of a max pooling over NCHW arrays: square `kernel x kernel` windows every
/// `stride` pixels, no padding (as the CPU's `Tensor::max_pool2d(k, s)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dShape {
    /// N.
    pub batch: usize,
    /// C.
    pub channels: usize,
    /// H of the input.
    pub height: usize,
    /// W of the input.
    pub width: usize,
    /// Window side k.
    pub kernel: usize,
    /// Stride s.
    pub stride: usize,
}

impl Pool2dShape {
    /// `Ho = (H - k) / s + 1` (0 when `H < k`).
    pub fn out_height(&self) -> usize {
        (self.height + self.stride).saturating_sub(self.kernel) / self.stride.max(1)
    }

    /// `Wo = (W - k) / s + 1` (0 when `W < k`).
    pub fn out_width(&self) -> usize {
        (self.width + self.stride).saturating_sub(self.kernel) / self.stride.max(1)
    }

    /// `N C H W`.
    pub fn input_len(&self) -> usize {
        self.batch * self.channels * self.height * self.width
    }

    /// `N C Ho Wo`.
    pub fn output_len(&self) -> usize {
        self.batch * self.channels * self.out_height() * self.out_width()
    }

    /// `Err` unless the window and stride are positive and the window fits the input.
    fn validate(&self, op: &'static str) -> Result<()> {
        if self.kernel == 0 || self.stride == 0 || self.height < self.kernel || self.width < self.kernel {
            return Err(Error::shape(
                op,
                format!("input {}x{} with window {} and stride {}: need k, s >= 1 and H, W >= k", self.height, self.width, self.kernel, self.stride),
            ));
        }
        Ok(())
    }

    fn params(&self) -> Params {
        Params { height: self.height, width: self.width, kernel: self.kernel, stride: self.stride, ..Params::default() }
    }
}

/// `y[n][c][i][j] = max_{u,v < k} x[n][c][s i + u][s j + v]`, `(N, C, Ho, Wo)`.
pub fn max_pool2d(x: &GpuArray, shape: &Pool2dShape) -> Result<GpuArray> {
    shape.validate("wgpu max_pool2d")?;
    check("wgpu max_pool2d", &[("x", x.len(), shape.input_len())])?;
    map("wgpu max_pool2d", "max_pool2d", shape.params(), &[x], shape.output_len())
}

/// `dx (N, C, H, W)`: each window's gradient `g[n][c][i][j]` goes to the window's
/// first maximum in row-major order (the CPU's tie rule), recomputed from `x`; a
/// pixel that is the maximum of several overlapping windows gets their sum.
pub fn max_pool2d_backward(g: &GpuArray, x: &GpuArray, shape: &Pool2dShape) -> Result<GpuArray> {
    shape.validate("wgpu max_pool2d_backward")?;
    check("wgpu max_pool2d_backward", &[("g", g.len(), shape.output_len()), ("x", x.len(), shape.input_len())])?;
    map("wgpu max_pool2d_backward", "max_pool2d_backward", shape.params(), &[x, g], x.len())
}

/// Mean cross-entropy of `logits (rows, classes)` against `targets` (rows class indices
/// stored as f32, exact below 2²⁴), as `Tensor::cross_entropy`:
///
/// `loss = (1 / rows) Σ_r -log softmax(x_r)[t_r]`, with
/// `log softmax(x)_k = x_k - lse`, `lse = m + log Σ_k exp(x_k - m)`, `m = max_k x_k`.
///
/// Returns the loss (one value; NaN for zero rows, as the CPU; a row whose target is
/// not a class index makes it NaN) and `probs = softmax(logits)` `(rows, classes)` for
/// [`cross_entropy_backward`].
pub fn cross_entropy(logits: &GpuArray, targets: &GpuArray, rows: usize, classes: usize) -> Result<(GpuArray, GpuArray)> {
    const OP: &str = "wgpu cross_entropy";
    check(OP, &[("logits", logits.len(), rows * classes), ("targets", targets.len(), rows)])?;
    if rows > 0 && classes == 0 {
        return Err(Error::shape(OP, format!("logits ({rows}, 0) have no class for the targets to name")));
    }
    let params = Params { batch: rows, channels: classes, ..Params::default() };
    let kernel = pipeline("cross_entropy_rows")?;
    let mut job = GpuArray::context()?.job(OP)?;
    let probs = job.output("probs", rows * classes)?;
    let row_loss = job.output("row losses", rows)?;
    let buffers = [probs.buffer(), logits.buffer(), targets.buffer(), row_loss.buffer()];
    job.dispatch(&kernel, &params.words(rows), &buffers, one_workgroup_each(rows))?; // one per row
    job.enqueue();
    job.finish()?;
    // loss = Σ_r row_loss[r] / rows  (0 / 0 = NaN for no rows)
    let loss = if rows == 0 { fill(1, f32::NAN)? } else { sum_divided(OP, &row_loss, rows as f32)? };
    Ok((loss, probs))
}

/// `d logits[r][k] = g (probs[r][k] - [k = t_r]) / rows`, `(rows, classes)`: the
/// gradient of [`cross_entropy`]'s mean, `g` (one value) being the loss's gradient.
pub fn cross_entropy_backward(probs: &GpuArray, targets: &GpuArray, g: &GpuArray, rows: usize, classes: usize) -> Result<GpuArray> {
    const OP: &str = "wgpu cross_entropy_backward";
    check(OP, &[("probs", probs.len(), rows * classes), ("targets", targets.len(), rows), ("g", g.len(), 1)])?;
    let params = Params { batch: rows, channels: classes, ..Params::default() };
    map(OP, "cross_entropy_backward", params, &[probs, targets, g], rows * classes)
}

/// The hyper-parameters of one Adam step (see [`adam_step`]); the fields of
/// `crate::optim::Adam` at step t.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamHyper {
    /// Learning rate η.
    pub lr: f32,
    /// β₁.
    pub beta1: f32,
    /// β₂.
    pub beta2: f32,
    /// ε, added to `√v̂`.
    pub eps: f32,
    /// Weight decay λ.
    pub weight_decay: f32,
    /// `true` for AdamW: `θ ← θ - ηλθ`; `false` for Adam: `g ← g + λθ`.
    pub decoupled: bool,
    /// `1 - β₁ᵗ`.
    pub bias_correction1: f32,
    /// `1 - β₂ᵗ`.
    pub bias_correction2: f32,
}

/// One Adam (Kingma & Ba 2015, Algorithm 1) or AdamW (Loshchilov & Hutter 2019) step,
/// updating `param`, `m` and `v` in place in the order of `crate::optim::Adam`:
///
/// ```text
/// g ← g + λθ (Adam)   or   θ ← θ - ηλθ (AdamW)
/// m ← β₁ m + (1 - β₁) g
/// v ← β₂ v + (1 - β₂) g²
/// θ ← θ - η (m / (1 - β₁ᵗ)) / (√(v / (1 - β₂ᵗ)) + ε)
/// ```
///
/// All four arrays have one length and are four different arrays.
pub fn adam_step(param: &GpuArray, grad: &GpuArray, m: &GpuArray, v: &GpuArray, hyper: &AdamHyper) -> Result<()> {
    let n = param.len();
    check("wgpu adam_step", &[("grad", grad.len(), n), ("m", m.len(), n), ("v", v.len(), n)])?;
    let params = Params {
        decoupled: hyper.decoupled,
        scalar: hyper.lr,
        beta1: hyper.beta1,
        beta2: hyper.beta2,
        eps: hyper.eps,
        weight_decay: hyper.weight_decay,
        bias_correction1: hyper.bias_correction1,
        bias_correction2: hyper.bias_correction2,
        ..Params::default()
    };
    update("wgpu adam_step", "adam_step", params, param, &[grad, m, v])
}
