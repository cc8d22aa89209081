//! Translating the CPU seam's strided operands into the wgpu kernels' layouts.
//!
//! Each function returns whether the GPU did the work; on a GPU error it says
//! so once on stderr and returns `false`, and the caller runs the CPU loop.

use super::cpu::conv::ConvGeom;
use super::cpu::gemm::BatchedGemm;
use super::wgpu::{self, Conv2dShape, MatmulShape, Operand};
use super::Key;

/// Below this many multiply-adds the upload costs more than the GPU saves.
const GPU_MIN_FLOPS: usize = 1 << 16;

/// Whether `flops` floating-point operations on `values` f32s crossing the bus (sent
/// and fetched) pay for the trip: intensity = flops / (4 · values) >= the threshold.
fn worth_it(flops: f64, values: usize) -> bool {
    flops >= super::min_gpu_intensity() as f64 * 4.0 * values as f64
}

fn report(e: crate::Error) {
    super::report_gpu_error(&e)
}

fn operand<'a>(data: &'a [f32], key: Key) -> Operand<'a> {
    match key {
        Some((id, version)) => Operand::resident(id, version, data),
        None => Operand::host(data),
    }
}

/// One strided operand as the kernel wants it: contiguous per batch item,
/// maybe transposed, with a constant batch stride.
struct Packed<'a> {
    data: std::borrow::Cow<'a, [f32]>,
    trans: bool,
    batch_stride: usize,
    /// Whether `data` is the caller's memory as it is (so a residency key still applies).
    borrowed: bool,
}

/// `rows x cols` items at `offsets` with strides `(rs, cs)` from `base`.
unsafe fn pack<'a>(base: *const f32, rs: isize, cs: isize, offsets: &[isize], rows: usize, cols: usize) -> Packed<'a> {
    let size = rows * cols;
    let stride = if offsets.len() > 1 { offsets[1] - offsets[0] } else { 0 };
    let uniform = offsets.iter().enumerate().all(|(i, &o)| o == offsets[0] + i as isize * stride) && stride >= 0 && offsets[0] >= 0;
    let layout = if cs == 1 && (rs == cols as isize || rows == 1) {
        Some(false)
    } else if rs == 1 && (cs == rows as isize || cols == 1) {
        Some(true)
    } else {
        None
    };
    if let (true, Some(trans)) = (uniform, layout) {
        if stride == 0 || stride as usize >= size {
            let len = offsets[0] as usize + (offsets.len() - 1) * stride as usize + size;
            let slice = std::slice::from_raw_parts(base.offset(offsets[0]), len - offsets[0] as usize);
            return Packed { data: std::borrow::Cow::Borrowed(slice), trans, batch_stride: stride as usize, borrowed: true };
        }
    }
    // Any other layout: copy into row-major items.
    let mut out = Vec::with_capacity(offsets.len() * size);
    for &o in offsets {
        for i in 0..rows {
            for j in 0..cols {
                out.push(*base.offset(o + i as isize * rs + j as isize * cs));
            }
        }
    }
    Packed { data: std::borrow::Cow::Owned(out), trans: false, batch_stride: size, borrowed: false }
}

/// Run a [`BatchedGemm`] on the GPU; `false` when it should run on the CPU.
pub(super) unsafe fn gemm(g: &BatchedGemm, c: &mut [f32], accumulate: bool, a_key: Key, b_key: Key) -> bool {
    let batch = g.a_offsets.len();
    // every operand counts, parameters too: training changes them every step
    let values = batch * (g.m * g.k + g.k * g.n + g.m * g.n);
    if g.m * g.n * g.k < GPU_MIN_FLOPS || !worth_it(2.0 * (batch * g.m * g.n * g.k) as f64, values) {
        return false;
    }
    let Ok(ctx) = wgpu::global() else { return false };
    let a = pack(g.a, g.a_strides.0, g.a_strides.1, g.a_offsets, g.m, g.k);
    let b = pack(g.b, g.b_strides.0, g.b_strides.1, g.b_offsets, g.k, g.n);
    let shape = MatmulShape::batched(batch, g.m, g.k, g.n).transposed(a.trans, b.trans).strides(a.batch_stride, b.batch_stride);
    let a_op = operand(&a.data, if a.borrowed { a_key } else { None });
    let b_op = operand(&b.data, if b.borrowed { b_key } else { None });
    match wgpu::matmul(ctx, a_op, b_op, &shape) {
        Ok(out) => {
            if accumulate {
                c.iter_mut().zip(&out).for_each(|(c, o)| *c += o);
            } else {
                c.copy_from_slice(&out);
            }
            true
        }
        Err(e) => {
            report(e);
            false
        }
    }
}


/// Convolution forward on the GPU; `false` when it should run on the CPU.
pub(super) fn conv_forward(g: &ConvGeom, x: &[f32], w: &[f32], y: &mut [f32], w_key: Key) -> bool {
    if !worth_it(Conv2dShape::from(g).flops(), x.len() + w.len() + y.len()) {
        return false;
    }
    let Ok(ctx) = wgpu::global() else { return false };
    match wgpu::conv2d_forward(ctx, Operand::host(x), operand(w, w_key), None, &Conv2dShape::from(g)) {
        Ok(out) => {
            y.copy_from_slice(&out);
            true
        }
        Err(e) => {
            report(e);
            false
        }
    }
}

/// Convolution backward on the GPU. Returns `None` when done, or the outputs
/// still to be computed on the CPU.
pub(super) fn conv_backward<'a>(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dx: Option<&'a mut [f32]>,
    dw: Option<&'a mut [f32]>,
    w_key: Key,
) -> Option<(Option<&'a mut [f32]>, Option<&'a mut [f32]>)> {
    let s = Conv2dShape::from(g);
    // dx reads dy and W and returns dx; dW reads x and dy and returns dW
    let dx_values = dx.as_ref().map_or(0, |d| dy.len() + w.len() + d.len());
    let dw_values = dw.as_ref().map_or(0, |d| x.len() + dy.len() + d.len());
    let passes = dx.is_some() as usize + dw.is_some() as usize;
    if !worth_it(passes as f64 * s.flops(), dx_values + dw_values) {
        return Some((dx, dw));
    }
    let Ok(ctx) = wgpu::global() else { return Some((dx, dw)) };
    let dx_gpu = dx.as_ref().map(|_| wgpu::conv2d_backward_input(ctx, Operand::host(dy), operand(w, w_key), &s));
    let dw_gpu = dw.as_ref().map(|_| wgpu::conv2d_backward_weight(ctx, Operand::host(x), Operand::host(dy), &s));
    match (dx_gpu.transpose(), dw_gpu.transpose()) {
        (Ok(a), Ok(b)) => {
            let (mut dx, mut dw) = (dx, dw);
            if let (Some(dst), Some(src)) = (dx.as_deref_mut(), a) {
                dst.copy_from_slice(&src);
            }
            if let (Some(dst), Some(src)) = (dw.as_deref_mut(), b) {
                dst.copy_from_slice(&src);
            }
            None
        }
        (Err(e), _) | (_, Err(e)) => {
            report(e);
            Some((dx, dw))
        }
    }
}
