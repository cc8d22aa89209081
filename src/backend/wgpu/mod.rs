//! The wgpu compute backend: WGSL kernels for matmul, conv2d and the ops around them.
//!
//! Two ways in. With host data: [`matmul`] and the conv functions take slices (or
//! parameters named `(id, version)`, kept resident) and return `Vec`s, so each call
//! crosses the bus; the engine uses them for tensors that live on the host. With
//! [`GpuArray`]s: [`matmul_array`], the `conv2d_*_array` functions and the kernels of
//! [`array_ops`] (ReLU, add, bias, sums, pooling, cross-entropy, Adam), [`pointwise`]
//! (activations, sub, mul, BCE), [`layout`] (permute, row gather and scatter,
//! upsampling) and [`rows`] (softmax, layer norm, narrow, concat, masked_fill) read and
//! write GPU memory and queue their work without waiting (one submission per 16
//! operations, or before a write or a read-back), so a chain of them never leaves the
//! GPU; the engine uses them for tensors that stay on the GPU
//! ([`crate::backend::set_resident`], `crate::tensor::DeviceValue`).
//!
//! The host-data functions:
//!
//! | function | computes | kernels |
//! |---|---|---|
//! | [`matmul`] | `C[b] = op(A[b]) · op(B[b])`, transposes and batch broadcast | `matmul.wgsl` (64×64 tiles) or `matmul128.wgsl` (128×128, for large products; [`MatmulKernel::for_shape`]) |
//! | [`conv2d_forward`] | `y = conv2d(x, W) + bias` | `conv.wgsl::im2col`, matmul, `bias_add` |
//! | [`conv2d_backward_input`] | `dx = col2im(Wᵀ · dy)` | matmul, `conv.wgsl::col2im` |
//! | [`conv2d_backward_weight`] | `dW = Σ_b dy[b] · im2col(x[b])ᵀ` | `im2col`, matmul summed over the batch |
//!
//! Inputs are [`Operand`]s: plain host data, or a parameter named `(id, version)` that is
//! uploaded only when its version changes ([`Operand::Resident`]). Temporaries come from
//! a buffer pool. Every GPU failure (no adapter, shader compile error, validation error,
//! out of memory, device loss, a failed read-back) comes back as
//! [`crate::Error::Device`]; nothing here panics on purpose.
//!
//! Because every host-data call sends its inputs over the bus and fetches its output,
//! the engine hands such an op to the GPU only when its arithmetic pays for the trip
//! ([`crate::backend::set_min_gpu_intensity`]). Measured on an H200 (the book's
//! Performance page): the matmul kernels alone reach 29 to 30 TFLOP/s at n = 4096 to
//! 8192, 0.57 of cuBLAS's fp32; a training step is bound by the bus and the CPU-side ops.
//!
//! ```no_run
//! use dalle::backend::wgpu::{global, matmul, MatmulShape, Operand};
//! # fn main() -> dalle::Result<()> {
//! let ctx = global()?;                   // Error::Device when there is no adapter
//! let w = vec![1.0f32; 3 * 4];           // parameter #0, version 0, stays on the GPU
//! let x = vec![2.0f32; 4 * 5];
//! let y = matmul(ctx, Operand::resident(0, 0, &w), &x, &MatmulShape::new(3, 4, 5))?;
//! assert_eq!(y.len(), 3 * 5);
//! # Ok(()) }
//! ```
//!
//! The backend is chosen by `WGPU_BACKEND` (`vulkan`, `metal`, `dx12`, `gl`); unset, the
//! primary backends are tried (not GL, whose shader compiles take tens of seconds).

mod array;
pub mod array_ops;
pub mod codes;
pub mod layout;
pub mod pointwise;
pub mod rows;
mod context;
mod conv;
mod conv_array;
mod matmul;
mod memory;

use std::sync::OnceLock;

pub use array::GpuArray;
pub use context::WgpuContext;
pub use conv_array::{conv2d_backward_input_array, conv2d_backward_weight_array, conv2d_forward_array, matmul_array};
pub use conv::{
    bias_add, conv2d_backward_input, conv2d_backward_weight, conv2d_forward, Conv2dShape,
};
pub use matmul::{
    matmul, time_matmul_pipeline, MatmulKernel, MatmulShape, MATMUL128_WGSL,
    MATMUL_WGSL,
};
pub use memory::{GpuStats, Operand};

use crate::{Error, Result};

/// The process-wide context, created on first use (its error message when creation failed).
static GLOBAL: OnceLock<std::result::Result<WgpuContext, String>> = OnceLock::new();

/// The process-wide [`WgpuContext`], created on the first call.
///
/// Creation is tried once; when it failed, every call returns the same
/// [`Error::Device`] (e.g. `no wgpu adapter found ...`).
pub fn global() -> Result<&'static WgpuContext> {
    let slot = GLOBAL.get_or_init(|| {
        WgpuContext::new().map_err(|e| match e {
            Error::Device(message) => message,
            other => other.to_string(),
        })
    });
    slot.as_ref()
        .map_err(|message| Error::Device(message.clone()))
}

/// Whether the process-wide context exists (creating it on first call).
pub fn is_available() -> bool {
    global().is_ok()
}
