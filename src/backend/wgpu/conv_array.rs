//! Convolution and matmul on [`GpuArray`]s: the same kernels as [`super::conv`] and
//! [`super::matmul`], reading and writing GPU memory, so the result stays there.
//!
//! A batch whose im2col columns pass the largest binding runs in chunks of samples; the
//! chunk's input is copied out of the array on the GPU and its output copied back in.

use super::array::GpuArray;
use super::conv::{encode_im2col, Conv2dShape};
use super::matmul::{encode_matmul, BatchMode, MatmulShape};
use crate::Result;

/// `C[b] = op(A[b]) · op(B[b])` on GPU arrays; C `(batch, m, n)` stays on the GPU.
pub fn matmul_array(a: &GpuArray, b: &GpuArray, shape: &MatmulShape) -> Result<GpuArray> {
    let ctx = GpuArray::context()?;
    shape.check(a.len(), b.len())?;
    let out_len = shape.batch * shape.m * shape.n;
    let mut job = ctx.job("wgpu matmul (arrays)")?;
    let c = job.output("C", out_len)?;
    if out_len > 0 {
        if shape.k == 0 {
            job.clear(c.buffer(), out_len);
        } else {
            encode_matmul(&mut job, ctx, [a.buffer(), b.buffer(), c.buffer()], shape, BatchMode::PerEntry)?;
        }
    }
    job.enqueue();
    job.finish()?;
    Ok(c)
}

/// `y = conv2d(x, w) + bias` on GPU arrays, `(N, Cout, Ho, Wo)`.
pub fn conv2d_forward_array(x: &GpuArray, w: &GpuArray, bias: Option<&GpuArray>, s: &Conv2dShape) -> Result<GpuArray> {
    let ctx = GpuArray::context()?;
    s.check(&[("x", x.len(), s.input_len()), ("w", w.len(), s.weight_len())])?;
    if let Some(bias) = bias {
        s.check(&[("bias", bias.len(), s.out_channels)])?;
    }
    let mut job = ctx.job("wgpu conv2d_forward (arrays)")?;
    let y = job.output("y", s.output_len())?;
    if s.output_len() == 0 {
        job.finish()?;
        return Ok(y);
    }
    let chunk = s.chunk(ctx)?;
    let (x_per, y_per, cols_per) = s.per_sample();
    let cols = job.scratch("im2col columns", chunk * cols_per)?;
    let staged = chunk < s.batch;
    let x_tmp = if staged { Some(job.scratch("x chunk", chunk * x_per)?) } else { None };
    let y_tmp = if staged { Some(job.scratch("y chunk", chunk * y_per)?) } else { None };
    for start in (0..s.batch).step_by(chunk) {
        let count = chunk.min(s.batch - start);
        let x_buf = match &x_tmp {
            Some(t) => {
                job.copy(x.buffer(), start * x_per, t, 0, count * x_per);
                t
            }
            None => x.buffer(),
        };
        let y_buf = y_tmp.as_ref().unwrap_or(y.buffer());
        encode_im2col(&mut job, ctx, s, x_buf, &cols, count)?;
        // y[b] (Cout, Ho Wo) = W (Cout, C kh kw) · cols[b] (C kh kw, Ho Wo)
        let mm = MatmulShape::batched(count, s.out_channels, s.patch_len(), s.out_plane()).strides(0, cols_per);
        encode_matmul(&mut job, ctx, [w.buffer(), &cols, y_buf], &mm, BatchMode::PerEntry)?;
        if let Some(bias) = bias {
            let total = count * y_per;
            job.dispatch_elementwise(&ctx.pipelines.bias_add, &s.params(count, total), &[bias.buffer(), y_buf], total)?;
        }
        if let Some(t) = &y_tmp {
            job.copy(t, 0, y.buffer(), start * y_per, count * y_per);
        }
    }
    job.enqueue();
    job.finish()?;
    Ok(y)
}

/// The input gradient `dx = col2im(Wᵀ · dy)` on GPU arrays, `(N, C, H, W)`.
pub fn conv2d_backward_input_array(dy: &GpuArray, w: &GpuArray, s: &Conv2dShape) -> Result<GpuArray> {
    let ctx = GpuArray::context()?;
    s.check(&[("dy", dy.len(), s.output_len()), ("w", w.len(), s.weight_len())])?;
    let mut job = ctx.job("wgpu conv2d_backward_input (arrays)")?;
    let dx = job.output("dx", s.input_len())?;
    if s.input_len() == 0 {
        job.finish()?;
        return Ok(dx);
    }
    let chunk = s.chunk(ctx)?;
    let (x_per, y_per, cols_per) = s.per_sample();
    let dcols = job.scratch("column gradient", chunk * cols_per)?;
    let staged = chunk < s.batch;
    let dy_tmp = if staged { Some(job.scratch("dy chunk", chunk * y_per)?) } else { None };
    let dx_tmp = if staged { Some(job.scratch("dx chunk", chunk * x_per)?) } else { None };
    for start in (0..s.batch).step_by(chunk) {
        let count = chunk.min(s.batch - start);
        let dy_buf = match &dy_tmp {
            Some(t) => {
                job.copy(dy.buffer(), start * y_per, t, 0, count * y_per);
                t
            }
            None => dy.buffer(),
        };
        let dx_buf = dx_tmp.as_ref().unwrap_or(dx.buffer());
        // dcols[b] (C kh kw, Ho Wo) = Wᵀ (C kh kw, Cout) · dy[b] (Cout, Ho Wo)
        let mm = MatmulShape::batched(count, s.patch_len(), s.out_channels, s.out_plane()).transposed(true, false).strides(0, y_per);
        encode_matmul(&mut job, ctx, [w.buffer(), dy_buf, &dcols], &mm, BatchMode::PerEntry)?;
        let total = count * x_per;
        job.dispatch_elementwise(&ctx.pipelines.col2im, &s.params(count, total), &[&dcols, dx_buf], total)?;
        if let Some(t) = &dx_tmp {
            job.copy(t, 0, dx.buffer(), start * x_per, total);
        }
    }
    job.enqueue();
    job.finish()?;
    Ok(dx)
}

/// The weight gradient `dW = Σ_b dy[b] · im2col(x[b])ᵀ` on GPU arrays, `(Cout, C, kh, kw)`.
pub fn conv2d_backward_weight_array(x: &GpuArray, dy: &GpuArray, s: &Conv2dShape) -> Result<GpuArray> {
    let ctx = GpuArray::context()?;
    s.check(&[("x", x.len(), s.input_len()), ("dy", dy.len(), s.output_len())])?;
    let mut job = ctx.job("wgpu conv2d_backward_weight (arrays)")?;
    let dw = job.output("dw", s.weight_len())?;
    if s.weight_len() == 0 {
        job.finish()?;
        return Ok(dw);
    }
    if s.batch == 0 {
        job.clear(dw.buffer(), s.weight_len());
        job.enqueue();
        job.finish()?;
        return Ok(dw);
    }
    let chunk = s.chunk(ctx)?;
    let (x_per, y_per, cols_per) = s.per_sample();
    let cols = job.scratch("im2col columns", chunk * cols_per)?;
    let staged = chunk < s.batch;
    let x_tmp = if staged { Some(job.scratch("x chunk", chunk * x_per)?) } else { None };
    for (i, start) in (0..s.batch).step_by(chunk).enumerate() {
        let count = chunk.min(s.batch - start);
        let x_buf = match &x_tmp {
            Some(t) => {
                job.copy(x.buffer(), start * x_per, t, 0, count * x_per);
                t
            }
            None => x.buffer(),
        };
        encode_im2col(&mut job, ctx, s, x_buf, &cols, count)?;
        // dW (Cout, C kh kw) (+)= Σ_b dy[b] (Cout, Ho Wo) · cols[b]ᵀ (Ho Wo, C kh kw);
        // dy's samples are read in place: the chunk's first sample is at start · y_per
        let mm = MatmulShape::batched(count, s.out_channels, s.out_plane(), s.patch_len()).transposed(false, true).strides(y_per, cols_per);
        let mode = if i == 0 { BatchMode::Sum } else { BatchMode::SumInto };
        if start == 0 {
            encode_matmul(&mut job, ctx, [dy.buffer(), &cols, dw.buffer()], &mm, mode)?;
        } else {
            // the kernel reads A from the start of its binding: stage this chunk's dy
            let dy_tmp = job.scratch("dy chunk", count * y_per)?;
            job.copy(dy.buffer(), start * y_per, &dy_tmp, 0, count * y_per);
            encode_matmul(&mut job, ctx, [&dy_tmp, &cols, dw.buffer()], &mm, mode)?;
        }
    }
    job.enqueue();
    job.finish()?;
    Ok(dw)
}
