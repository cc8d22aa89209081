//! Where the arithmetic runs: the kernel seam between the ops and the loops.
//!
//! The ops in [`crate::ops`] never loop over heavy arithmetic themselves for
//! matmul and conv2d: they call [`gemm_batched`], [`conv2d_forward`] and
//! [`conv2d_backward`] here, which run the CPU loops in [`cpu`] or, when the
//! device is [`Device::Wgpu`], the WGSL kernels of the wgpu backend. A GPU
//! failure at run time is reported once on stderr and the CPU loop takes over,
//! so a result is always produced.
//!
//! Operands that are parameters carry a [`Key`] `(tensor id, version)`: the GPU
//! keeps them resident and uploads them again only after an optimiser step
//! changed their version.

pub mod cpu;
#[cfg(feature = "wgpu")]
pub mod wgpu;
#[cfg(feature = "wgpu")]
mod wgpu_dispatch;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};

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

/// Identifies a parameter's current values for GPU residency: `(tensor id, version)`.
pub type Key = Option<(u64, u64)>;

static DEVICE: AtomicU8 = AtomicU8::new(0);

/// The device the heavy kernels currently run on.
pub fn device() -> Device {
    match DEVICE.load(Ordering::Relaxed) {
        1 => Device::Wgpu,
        _ => Device::Cpu,
    }
}

/// Choose the device for the heavy kernels. Asking for [`Device::Wgpu`] when
/// no adapter exists (or the crate was built without the `wgpu` feature) is an
/// [`crate::Error::Device`] that says why; the device then stays the CPU.
pub fn set_device(d: Device) -> crate::Result<Device> {
    if d == Device::Wgpu {
        #[cfg(feature = "wgpu")]
        wgpu::global()?;
        #[cfg(not(feature = "wgpu"))]
        return Err(crate::Error::Device("this build has no wgpu backend (enable the `wgpu` feature)".into()));
    }
    DEVICE.store(if d == Device::Wgpu { 1 } else { 0 }, Ordering::Relaxed);
    Ok(device())
}

/// Whether tensors computed on the GPU stay there (see [`set_resident`]).
static RESIDENT: AtomicBool = AtomicBool::new(true);

/// On [`Device::Wgpu`], with `resident` (the default) every operation that has a GPU
/// kernel runs on the GPU and leaves its output there: the next GPU operation reads
/// it in place, and only what the CPU reads crosses the bus ([`crate::Tensor::data`],
/// an operation without a GPU kernel, a loss printed). Without it, tensors live on the
/// host and only matmuls and convolutions go to the GPU, each sending its operands and
/// fetching its result (when [`set_min_gpu_intensity`] says the trip pays).
pub fn set_resident(resident: bool) {
    RESIDENT.store(resident, Ordering::Relaxed);
}

/// Whether operations run on the GPU with their outputs kept there: the device is
/// [`Device::Wgpu`] and [`set_resident`] is on.
pub fn resident() -> bool {
    device() == Device::Wgpu && RESIDENT.load(Ordering::Relaxed)
}

#[cfg(feature = "wgpu")]
static GPU_ERROR_REPORTED: AtomicBool = AtomicBool::new(false);

/// Says once on stderr that the GPU failed and the CPU takes over.
#[cfg(feature = "wgpu")]
pub(crate) fn report_gpu_error(e: &crate::Error) {
    if !GPU_ERROR_REPORTED.swap(true, Ordering::Relaxed) {
        eprintln!("wgpu: {e}; falling back to the CPU for this and any later failing call");
    }
}

/// Default of [`set_min_gpu_intensity`]: 64 FLOP per byte moved.
///
/// Measured on an H200 behind a virtual machine's PCIe (upload about 7 GB/s, read-back
/// about 1.2 GB/s) against 2 CPU cores at about 200 GFLOP/s: an op with fewer
/// floating-point operations per byte it sends and fetches finishes sooner on the CPU.
pub const DEFAULT_MIN_GPU_INTENSITY: f32 = 64.0;

/// The current threshold, as f32 bits (see [`set_min_gpu_intensity`]).
static MIN_GPU_INTENSITY: AtomicU32 = AtomicU32::new(DEFAULT_MIN_GPU_INTENSITY.to_bits());

/// On [`Device::Wgpu`], a matmul or convolution runs on the GPU only when its
/// arithmetic intensity (floating-point operations per byte of operands and results
/// crossing the bus) reaches `flops_per_byte`; below it the CPU is faster, because the
/// values must travel to the GPU and back. 0 sends every op large enough to the GPU
/// (tests use it to exercise the kernels).
pub fn set_min_gpu_intensity(flops_per_byte: f32) {
    MIN_GPU_INTENSITY.store(flops_per_byte.max(0.0).to_bits(), Ordering::Relaxed);
}

/// The threshold set by [`set_min_gpu_intensity`].
pub fn min_gpu_intensity() -> f32 {
    f32::from_bits(MIN_GPU_INTENSITY.load(Ordering::Relaxed))
}

/// `auto`: the wgpu device when an adapter exists, else the CPU (with a message saying why).
pub fn select_auto() -> Device {
    match set_device(Device::Wgpu) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("device auto: {e}; using the CPU");
            Device::Cpu
        }
    }
}

/// Runs `f` on one of rayon's worker threads and returns its result: the
/// examples and benchmarks wrap their `main` in it.
///
/// The CPU kernels split their work with rayon (`join`, parallel iterators).
/// Called from the program's own main thread, each split is handed to the
/// pool while main sleeps until the pool hands the result back: a wake-up and
/// a hand-back per op, tens of microseconds each, over the hundreds of ops of
/// a training step (about 3 ms of a transformer block's 55 ms forward and
/// backward on 2 threads). Called from a worker, a split runs one half in
/// place while the other worker, still spinning from the previous op, takes
/// the other half. PyTorch's main thread likewise works as OpenMP's thread 0.
pub fn on_worker<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    // `scope` runs its body on a worker of the global pool (moving there if needed).
    rayon::scope(|_| f())
}

/// A description of the active device, for the examples' first lines.
pub fn describe() -> String {
    match device() {
        Device::Cpu => format!("cpu ({} threads)", rayon::current_num_threads()),
        #[cfg(feature = "wgpu")]
        Device::Wgpu => wgpu::global().map(|c| format!("wgpu: {}", c.describe())).unwrap_or_else(|e| e.to_string()),
        #[cfg(not(feature = "wgpu"))]
        Device::Wgpu => "wgpu (unavailable)".into(),
    }
}

/// `C[i] = A[i] B[i]` for a batch of strided matrices; C row-major (batch, m, n).
/// `a_key`/`b_key` name operands that are parameters (GPU residency).
///
/// # Safety
/// As [`BatchedGemm::run`]: every operand must lie in valid memory.
pub unsafe fn gemm_batched(g: &BatchedGemm, c: &mut [f32], accumulate: bool, a_key: Key, b_key: Key) {
    #[cfg(feature = "wgpu")]
    if device() == Device::Wgpu && wgpu_dispatch::gemm(g, c, accumulate, a_key, b_key) {
        return;
    }
    let _ = (a_key, b_key);
    g.run(c, accumulate)
}

/// [`gemm_batched`] into fresh memory that every element of the product
/// overwrites (`c` need not be initialised: no zero fill before the GEMM).
///
/// # Safety
/// As [`gemm_batched`].
pub unsafe fn gemm_batched_uninit(g: &BatchedGemm, c: &mut [std::mem::MaybeUninit<f32>], a_key: Key, b_key: Key) {
    #[cfg(feature = "wgpu")]
    if device() == Device::Wgpu {
        return gemm_batched(g, cpu::zero_filled(c), false, a_key, b_key);
    }
    let _ = (a_key, b_key);
    g.run_uninit(c)
}

/// Convolution forward (NCHW, OIHW, no bias): see [`cpu::conv::conv2d_forward`].
/// `w_key` names the weight when it is a parameter (GPU residency).
pub fn conv2d_forward(g: &ConvGeom, x: &[f32], w: &[f32], y: &mut [f32], w_key: Key) {
    #[cfg(feature = "wgpu")]
    if device() == Device::Wgpu && wgpu_dispatch::conv_forward(g, x, w, y, w_key) {
        return;
    }
    let _ = w_key;
    cpu::conv::conv2d_forward(g, x, w, y)
}

/// [`conv2d_forward`] into fresh memory that the convolution overwrites in
/// full (`y` need not be initialised: no zero fill before the kernel).
pub fn conv2d_forward_uninit(g: &ConvGeom, x: &[f32], w: &[f32], y: &mut [std::mem::MaybeUninit<f32>], w_key: Key) {
    #[cfg(feature = "wgpu")]
    if device() == Device::Wgpu {
        return conv2d_forward(g, x, w, cpu::zero_filled(y), w_key);
    }
    let _ = w_key;
    cpu::conv::conv2d_forward_into(g, x, w, y)
}

/// Convolution backward: see [`cpu::conv::conv2d_backward`].
pub fn conv2d_backward(g: &ConvGeom, x: &[f32], w: &[f32], dy: &[f32], dx: Option<&mut [f32]>, dw: Option<&mut [f32]>, w_key: Key) {
    #[cfg(feature = "wgpu")]
    let (dx, dw) = if device() == Device::Wgpu {
        match wgpu_dispatch::conv_backward(g, x, w, dy, dx, dw, w_key) {
            None => return,
            Some(rest) => rest,
        }
    } else {
        (dx, dw)
    };
    let _ = w_key;
    cpu::conv::conv2d_backward(g, x, w, dy, dx, dw)
}

/// [`conv2d_backward`] into fresh memory that it overwrites in full (`dx` and
/// `dw` need not be initialised: no zero fill of the gradients first).
pub fn conv2d_backward_uninit(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dx: Option<&mut [std::mem::MaybeUninit<f32>]>,
    dw: Option<&mut [std::mem::MaybeUninit<f32>]>,
    w_key: Key,
) {
    #[cfg(feature = "wgpu")]
    if device() == Device::Wgpu {
        return conv2d_backward(g, x, w, dy, dx.map(cpu::zero_filled), dw.map(cpu::zero_filled), w_key);
    }
    let _ = w_key;
    cpu::conv::conv2d_backward_into(g, x, w, dy, dx, dw)
}
