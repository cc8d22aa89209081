//! Where the arithmetic runs: the kernel seam between the ops and the loops.
//!
//! The ops in [`crate::ops`] never loop over heavy arithmetic themselves for
//! matmul and conv2d: they call [`gemm_batched`], [`conv2d_forward`] and
//! [`conv2d_backward`] here, which run the CPU loops in [`cpu`] or, when the
//! device is [`Device::Wgpu`], the WGSL kernels of the wgpu backend.

pub mod cpu;

use std::sync::atomic::{AtomicU8, Ordering};

pub use cpu::conv::ConvGeom;
pub use cpu::gemm::BatchedGemm;

/// A compute device for the heavy kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// The CPU loops (always available).
    Cpu,
    /// The wgpu compute backend (a GPU, or a software Vulkan adapter).
    Wgpu,
}

static DEVICE: AtomicU8 = AtomicU8::new(0);

/// The device the heavy kernels currently run on.
pub fn device() -> Device {
    match DEVICE.load(Ordering::Relaxed) {
        1 => Device::Wgpu,
        _ => Device::Cpu,
    }
}

/// Choose the device for the heavy kernels. Returns the device actually in use.
pub fn set_device(d: Device) -> crate::Result<Device> {
    DEVICE.store(if d == Device::Wgpu { 1 } else { 0 }, Ordering::Relaxed);
    Ok(device())
}

/// `C[i] = A[i] B[i]` for a batch of strided matrices; C row-major (batch, m, n).
///
/// # Safety
/// As [`BatchedGemm::run`]: every operand must lie in valid memory.
pub unsafe fn gemm_batched(g: &BatchedGemm, c: &mut [f32], accumulate: bool) {
    g.run(c, accumulate)
}

/// Convolution forward (NCHW, OIHW, no bias): see [`cpu::conv::conv2d_forward`].
pub fn conv2d_forward(g: &ConvGeom, x: &[f32], w: &[f32], y: &mut [f32]) {
    cpu::conv::conv2d_forward(g, x, w, y)
}

/// Convolution backward: see [`cpu::conv::conv2d_backward`].
pub fn conv2d_backward(g: &ConvGeom, x: &[f32], w: &[f32], dy: &[f32], dx: Option<&mut [f32]>, dw: Option<&mut [f32]>) {
    cpu::conv::conv2d_backward(g, x, w, dy, dx, dw)
}
