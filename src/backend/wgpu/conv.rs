//! 2-D convolution (NCHW, square stride and padding, dilation 1, one group) as
//! im2col + matmul, forward and backward, with the data kept on the GPU between steps.
//!
//! With `cols[b] = im2col(x[b])`, `(C kh kw, Ho Wo)`, and the weight viewed as
//! `W (Cout, C kh kw)`:
//!
//! - forward:          `y[b] = W · cols[b] + bias`                 (matmul, A broadcast)
//! - input gradient:   `dx[b] = col2im(Wᵀ · dy[b])`                (matmul trans_a, then col2im)
//! - weight gradient:  `dW = Σ_b dy[b] · cols[b]ᵀ`                  (matmul trans_b, summed over b)
//!
//! Large batches are split into chunks whose column matrix fits one GPU binding.

use super::context::{Job, WgpuContext};
use super::matmul::{encode_matmul, BatchMode, MatmulShape};
use super::memory::Operand;
use crate::backend::ConvGeom;
use crate::{Error, Result};

/// The shape of a 2-D convolution: input `(batch, in_channels, height, width)`, weight
/// `(out_channels, in_channels, kernel_h, kernel_w)`, output
/// `(batch, out_channels, out_height(), out_width())`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dShape {
    /// Samples N.
    pub batch: usize,
    /// Input channels C.
    pub in_channels: usize,
    /// Input height H.
    pub height: usize,
    /// Input width W.
    pub width: usize,
    /// Output channels Cout.
    pub out_channels: usize,
    /// Kernel height kh.
    pub kernel_h: usize,
    /// Kernel width kw.
    pub kernel_w: usize,
    /// Step between output positions, both axes (>= 1).
    pub stride: usize,
    /// Zeros added on every side, both axes.
    pub padding: usize,
}

impl From<&ConvGeom> for Conv2dShape {
    /// The geometry the CPU convolution uses, as the GPU kernels take it.
    fn from(g: &ConvGeom) -> Self {
        Conv2dShape {
            batch: g.n,
            in_channels: g.c,
            height: g.h,
            width: g.w,
            out_channels: g.oc,
            kernel_h: g.kh,
            kernel_w: g.kw,
            stride: g.stride,
            padding: g.pad,
        }
    }
}

impl Conv2dShape {
    /// `2 · N · Cout · Ho · Wo · C · kh · kw`: the floating-point operations of one pass.
    pub fn flops(&self) -> f64 {
        let outputs = self.batch * self.out_channels * self.out_height() * self.out_width();
        2.0 * outputs as f64 * (self.in_channels * self.kernel_h * self.kernel_w) as f64
    }

    /// `Ho = (H + 2 pad - kh) / stride + 1`.
    pub fn out_height(&self) -> usize {
        (self.height + 2 * self.padding - self.kernel_h) / self.stride + 1
    }

    /// `Wo = (W + 2 pad - kw) / stride + 1`.
    pub fn out_width(&self) -> usize {
        (self.width + 2 * self.padding - self.kernel_w) / self.stride + 1
    }

    /// Elements of the input `N C H W`.
    pub fn input_len(&self) -> usize {
        self.batch * self.in_channels * self.height * self.width
    }

    /// Elements of the weight `Cout C kh kw`.
    pub fn weight_len(&self) -> usize {
        self.out_channels * self.patch_len()
    }

    /// Elements of the output `N Cout Ho Wo`.
    pub fn output_len(&self) -> usize {
        self.batch * self.out_channels * self.out_plane()
    }

    /// `C kh kw`: one column of im2col, one row of the flattened weight.
    pub(super) fn patch_len(&self) -> usize {
        self.in_channels * self.kernel_h * self.kernel_w
    }

    pub(super) fn out_plane(&self) -> usize {
        self.out_height() * self.out_width()
    }

    /// Per sample: input length `C H W`, output length `Cout Ho Wo` and im2col
    /// length `C kh kw · Ho Wo` (the batch must not be empty).
    pub(super) fn per_sample(&self) -> (usize, usize, usize) {
        (self.input_len() / self.batch, self.out_channels * self.out_plane(), self.patch_len() * self.out_plane())
    }

    /// Checks the hyper-parameters and that each tensor has the length the shape needs.
    pub(super) fn check(&self, tensors: &[(&str, usize, usize)]) -> Result<()> {
        if self.stride == 0 || self.kernel_h == 0 || self.kernel_w == 0 {
            return Err(Error::shape(
                "wgpu conv2d",
                format!("{self:?}: stride and kernel must be >= 1"),
            ));
        }
        if self.height + 2 * self.padding < self.kernel_h
            || self.width + 2 * self.padding < self.kernel_w
        {
            return Err(Error::shape(
                "wgpu conv2d",
                format!(
                    "kernel {}x{} is larger than the padded input {}x{}",
                    self.kernel_h,
                    self.kernel_w,
                    self.height + 2 * self.padding,
                    self.width + 2 * self.padding
                ),
            ));
        }
        for &(name, got, want) in tensors {
            if got != want {
                return Err(Error::shape(
                    "wgpu conv2d",
                    format!("{name} has {got} elements, {self:?} expects {want}"),
                ));
            }
        }
        Ok(())
    }

    /// The uniform block of `conv.wgsl` for `batch` samples writing `total` elements.
    pub(super) fn params(&self, batch: usize, total: usize) -> [u32; 16] {
        [
            batch as u32,
            self.in_channels as u32,
            self.height as u32,
            self.width as u32,
            self.kernel_h as u32,
            self.kernel_w as u32,
            self.stride as u32,
            self.padding as u32,
            self.out_height() as u32,
            self.out_width() as u32,
            self.out_channels as u32,
            self.out_plane() as u32,
            total as u32,
            0,
            0,
            0,
        ]
    }

    /// Samples per chunk so that every per-chunk buffer fits one binding.
    pub(super) fn chunk(&self, ctx: &WgpuContext) -> Result<usize> {
        let per_sample = [
            self.patch_len() * self.out_plane(),
            self.in_channels * self.height * self.width,
            self.out_channels * self.out_plane(),
        ]
        .into_iter()
        .max()
        .unwrap_or(1)
        .max(1) as u64
            * 4;
        let max = ctx.max_binding_bytes();
        if per_sample > max {
            return Err(Error::Device(format!(
                "wgpu conv2d: one sample of {self:?} needs {per_sample} bytes of columns, more than the adapter's largest binding ({max} bytes)"
            )));
        }
        Ok(((max / per_sample) as usize).clamp(1, self.batch.max(1)))
    }
}

/// The samples `[start, start + count)` of a tensor whose samples have `per` elements.
fn samples(data: &[f32], per: usize, start: usize, count: usize) -> &[f32] {
    &data[start * per..(start + count) * per]
}

/// Records im2col of `count` samples in `x` into `cols`.
pub(super) fn encode_im2col(
    job: &mut Job<'_>,
    ctx: &WgpuContext,
    s: &Conv2dShape,
    x: &wgpu::Buffer,
    cols: &wgpu::Buffer,
    count: usize,
) -> Result<()> {
    let total = count * s.patch_len() * s.out_plane();
    job.dispatch_elementwise(
        &ctx.pipelines.im2col,
        &s.params(count, total),
        &[x, cols],
        total,
    )
}

/// Convolution forward: `y = conv2d(x, w) + bias`, returned as `(N, Cout, Ho, Wo)`.
///
/// `x` is `(N, C, H, W)`, `w` is `(Cout, C, kh, kw)`, `bias` (optional) is `(Cout)`.
/// Pass the weight and bias as [`Operand::Resident`] to keep them on the GPU.
pub fn conv2d_forward<'a>(
    ctx: &WgpuContext,
    x: impl Into<Operand<'a>>,
    w: impl Into<Operand<'a>>,
    bias: Option<Operand<'a>>,
    s: &Conv2dShape,
) -> Result<Vec<f32>> {
    let (x, w) = (x.into(), w.into());
    s.check(&[
        ("x", x.len(), s.input_len()),
        ("w", w.len(), s.weight_len()),
    ])?;
    if let Some(bias) = &bias {
        s.check(&[("bias", bias.len(), s.out_channels)])?;
    }
    if s.output_len() == 0 {
        return Ok(Vec::new());
    }
    let chunk = s.chunk(ctx)?;
    let (x_per, y_per, cols_per) = s.per_sample();
    let mut job = ctx.job("wgpu conv2d_forward")?;
    let w_buf = job.upload("w", &w)?;
    let bias_buf = bias.as_ref().map(|b| job.upload("bias", b)).transpose()?;
    let x_buf = job.scratch("x chunk", chunk * x_per)?;
    let cols = job.scratch("im2col columns", chunk * cols_per)?;
    let y_buf = job.scratch("y chunk", chunk * y_per)?;
    let mut y = Vec::with_capacity(s.output_len());
    for start in (0..s.batch).step_by(chunk) {
        let count = chunk.min(s.batch - start);
        job.write(&x_buf, samples(x.data(), x_per, start, count));
        encode_im2col(&mut job, ctx, s, &x_buf, &cols, count)?;
        // y[b] (Cout, Ho Wo) = W (Cout, C kh kw) · cols[b] (C kh kw, Ho Wo)
        let mm = MatmulShape::batched(count, s.out_channels, s.patch_len(), s.out_plane())
            .strides(0, cols_per);
        encode_matmul(
            &mut job,
            ctx,
            [&w_buf, &cols, &y_buf],
            &mm,
            BatchMode::PerEntry,
        )?;
        if let Some(bias_buf) = &bias_buf {
            let total = count * y_per;
            job.dispatch_elementwise(
                &ctx.pipelines.bias_add,
                &s.params(count, total),
                &[bias_buf, &y_buf],
                total,
            )?;
        }
        y.extend(job.read(&y_buf, count * y_per)?);
    }
    job.finish()?;
    Ok(y)
}

/// Convolution input gradient: `dx = col2im(Wᵀ · dy)`, returned as `(N, C, H, W)`.
///
/// `dy` is `(N, Cout, Ho, Wo)`, `w` is `(Cout, C, kh, kw)`.
pub fn conv2d_backward_input<'a>(
    ctx: &WgpuContext,
    dy: impl Into<Operand<'a>>,
    w: impl Into<Operand<'a>>,
    s: &Conv2dShape,
) -> Result<Vec<f32>> {
    let (dy, w) = (dy.into(), w.into());
    s.check(&[
        ("dy", dy.len(), s.output_len()),
        ("w", w.len(), s.weight_len()),
    ])?;
    if s.input_len() == 0 {
        return Ok(Vec::new());
    }
    let chunk = s.chunk(ctx)?;
    let (x_per, y_per, cols_per) = s.per_sample();
    let mut job = ctx.job("wgpu conv2d_backward_input")?;
    let w_buf = job.upload("w", &w)?;
    let dy_buf = job.scratch("dy chunk", chunk * y_per)?;
    let dcols = job.scratch("column gradient", chunk * cols_per)?;
    let dx_buf = job.scratch("dx chunk", chunk * x_per)?;
    let mut dx = Vec::with_capacity(s.input_len());
    for start in (0..s.batch).step_by(chunk) {
        let count = chunk.min(s.batch - start);
        job.write(&dy_buf, samples(dy.data(), y_per, start, count));
        // dcols[b] (C kh kw, Ho Wo) = Wᵀ (C kh kw, Cout) · dy[b] (Cout, Ho Wo)
        let mm = MatmulShape::batched(count, s.patch_len(), s.out_channels, s.out_plane())
            .transposed(true, false)
            .strides(0, y_per);
        encode_matmul(
            &mut job,
            ctx,
            [&w_buf, &dy_buf, &dcols],
            &mm,
            BatchMode::PerEntry,
        )?;
        let total = count * x_per;
        job.dispatch_elementwise(
            &ctx.pipelines.col2im,
            &s.params(count, total),
            &[&dcols, &dx_buf],
            total,
        )?;
        dx.extend(job.read(&dx_buf, total)?);
    }
    job.finish()?;
    Ok(dx)
}

/// Convolution weight gradient: `dW = Σ_b dy[b] · im2col(x[b])ᵀ`, returned as
/// `(Cout, C, kh, kw)`.
///
/// `x` is `(N, C, H, W)`, `dy` is `(N, Cout, Ho, Wo)`. (The bias gradient,
/// `Σ_{b,q} dy[b][co][q]`, is a plain sum and stays with the caller.)
pub fn conv2d_backward_weight<'a>(
    ctx: &WgpuContext,
    x: impl Into<Operand<'a>>,
    dy: impl Into<Operand<'a>>,
    s: &Conv2dShape,
) -> Result<Vec<f32>> {
    let (x, dy) = (x.into(), dy.into());
    s.check(&[
        ("x", x.len(), s.input_len()),
        ("dy", dy.len(), s.output_len()),
    ])?;
    if s.weight_len() == 0 {
        return Ok(Vec::new());
    }
    if s.batch == 0 {
        return Ok(vec![0.0; s.weight_len()]);
    }
    let chunk = s.chunk(ctx)?;
    let (x_per, y_per, cols_per) = s.per_sample();
    let mut job = ctx.job("wgpu conv2d_backward_weight")?;
    let x_buf = job.scratch("x chunk", chunk * x_per)?;
    let dy_buf = job.scratch("dy chunk", chunk * y_per)?;
    let cols = job.scratch("im2col columns", chunk * cols_per)?;
    let dw = job.scratch("dw", s.weight_len())?;
    for (i, start) in (0..s.batch).step_by(chunk).enumerate() {
        let count = chunk.min(s.batch - start);
        job.write(&x_buf, samples(x.data(), x_per, start, count));
        job.write(&dy_buf, samples(dy.data(), y_per, start, count));
        encode_im2col(&mut job, ctx, s, &x_buf, &cols, count)?;
        // dW (Cout, C kh kw) (+)= Σ_b dy[b] (Cout, Ho Wo) · cols[b]ᵀ (Ho Wo, C kh kw)
        let mm = MatmulShape::batched(count, s.out_channels, s.out_plane(), s.patch_len())
            .transposed(false, true)
            .strides(y_per, cols_per);
        let mode = if i == 0 {
            BatchMode::Sum
        } else {
            BatchMode::SumInto
        };
        encode_matmul(&mut job, ctx, [&dy_buf, &cols, &dw], &mm, mode)?;
        // the next chunk overwrites x_buf and dy_buf: let this one finish first
        job.submit()?;
    }
    let dw_host = job.read(&dw, s.weight_len())?;
    job.finish()?;
    Ok(dw_host)
}

/// `y[b][c][q] += bias[c]` for `y` of shape `(batch, channels, plane)`; returns y.
pub fn bias_add<'a>(
    ctx: &WgpuContext,
    y: impl Into<Operand<'a>>,
    bias: impl Into<Operand<'a>>,
    batch: usize,
    channels: usize,
    plane: usize,
) -> Result<Vec<f32>> {
    let (y, bias) = (y.into(), bias.into());
    let total = batch * channels * plane;
    if y.len() != total || bias.len() != channels {
        return Err(Error::shape(
            "wgpu bias_add",
            format!("y has {} elements and bias {}; ({batch}, {channels}, {plane}) expects {total} and {channels}", y.len(), bias.len()),
        ));
    }
    if total == 0 {
        return Ok(Vec::new());
    }
    let mut job = ctx.job("wgpu bias_add")?;
    let y_buf = job.scratch("y", total)?;
    job.write(&y_buf, y.data());
    let bias_buf = job.upload("bias", &bias)?;
    let mut params = [0u32; 16];
    params[10] = channels as u32;
    params[11] = plane as u32;
    params[12] = total as u32;
    job.dispatch_elementwise(
        &ctx.pipelines.bias_add,
        &params,
        &[&bias_buf, &y_buf],
        total,
    )?;
    let out = job.read(&y_buf, total)?;
    job.finish()?;
    Ok(out)
}
