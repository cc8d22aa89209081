//! 2-D convolution on the CPU: a GEMM whose one operand is made of image patches.
//!
//! Every output pixel is a dot product of the weights with one receptive field,
//! so the convolution of image `n` is the matrix product
//!
//! ```text
//! out_n (OC, OH*OW) = W (OC, C*KH*KW) · col_n (C*KH*KW, OH*OW)
//!                     col_n[(c, i, j), (y, x)] = x_pad[n, c, y*s + i, x*s + j]
//! ```
//!
//! Three ways to run it:
//!
//! - [`implicit`] (every tier, on its micro-kernel): `col_n` is never stored.
//!   The GEMM reads its right operand in panels of NR columns, and each panel
//!   is packed straight from the image; both gradients are GEMMs of the same kind.
//!   Small images (7x7, 14x14 at AVX-512) are taken a run at a time as one GEMM
//!   whose panels go on across image boundaries ([`span`]), so that the last
//!   panel of every image is not mostly empty. A stride that divides the
//!   kernel (4x4, stride 2) is, where it pays, a stride-1 convolution of the
//!   image rearranged space-to-depth ([`strided`]), whose panel rows are
//!   vector copies rather than gathers of every second pixel.
//! - [`im2col`] (the other strided convolutions' dX): `col_n` is written out as a
//!   matrix and handed to the general GEMM; `dX` comes back through `col2im`.
//! - [`direct`] (stride 1, few output channels or few channels): no GEMM, the
//!   sums taken straight from the zero-padded image, where a micro-tile would
//!   be mostly empty (a decoder's last layer, the dVAE's narrow layers).
//!
//! Both cut the batch into a fixed number of runs of images, spread over
//! rayon's threads, with single-threaded GEMMs inside a run and scratch
//! buffers kept per thread.

pub mod direct;
pub mod im2col;
pub mod implicit;
pub mod lanes;
pub mod layout;
pub mod span;
pub mod strided;

#[cfg(target_arch = "x86_64")]
use super::microkernel::{Avx2, Avx512};
use super::microkernel::{MicroKernel, Portable};
use super::tier::tier;
#[cfg(target_arch = "x86_64")]
use super::tier::Tier;

use std::cell::RefCell;
use std::mem::MaybeUninit;

/// The sizes of one convolution (NCHW input, OIHW weight).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    /// Batch size N.
    pub n: usize,
    /// Input channels C.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub oc: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride (both directions).
    pub stride: usize,
    /// Zero padding (both directions).
    pub pad: usize,
}

impl ConvGeom {
    /// Output height: `(H + 2p - KH) / s + 1`.
    pub fn oh(&self) -> usize {
        (self.h + 2 * self.pad - self.kh) / self.stride + 1
    }
    /// Output width: `(W + 2p - KW) / s + 1`.
    pub fn ow(&self) -> usize {
        (self.w + 2 * self.pad - self.kw) / self.stride + 1
    }
    /// Rows of the im2col matrix: `C * KH * KW`.
    pub fn ckk(&self) -> usize {
        self.c * self.kh * self.kw
    }
    /// For a stride-1 convolution as wide as its input: how far tap `(i, j)`
    /// reads from output pixel `q` in the input plane, `src = q + (i - p) W + (j - p)`
    /// wherever the tap is inside the image.
    fn same_shift(&self, i: usize, j: usize) -> isize {
        (i * self.w + j) as isize - (self.pad * self.w + self.pad) as isize
    }
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }
}

/// How many runs of images the batch is cut into (fewer for a small batch).
/// The cut depends only on N, never on the thread count or rayon's scheduling,
/// so the dW sum (added run by run, in order) gives the same bits every time.
const IMAGE_BLOCKS: usize = 8;

/// Images per rayon task.
fn images_per_task(n: usize) -> usize {
    n.div_ceil(IMAGE_BLOCKS).max(1)
}

thread_local! {
    /// Per-thread scratch buffers (im2col columns, packed panels), reused across tasks and calls.
    static SCRATCH: RefCell<[Vec<f32>; 3]> = const { RefCell::new([Vec::new(), Vec::new(), Vec::new()]) };
}

/// Run `f` with `B <= 3` of this thread's scratch buffers, 64-byte aligned and
/// `lens[b]` long (contents unspecified).
fn with_scratch<const B: usize, R>(lens: [usize; B], f: impl FnOnce([&mut [f32]; B]) -> R) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let mut bufs = s.iter_mut().zip(lens);
        f(std::array::from_fn(|_| {
            let (buf, len) = bufs.next().expect("at most 3 scratch buffers");
            super::aligned(buf, len)
        }))
    })
}

/// Forward: `y (N, OC, OH, OW) = conv(x (N, C, H, W), w (OC, C, KH, KW))`, no bias.
pub fn conv2d_forward(g: &ConvGeom, x: &[f32], w: &[f32], y: &mut [f32]) {
    conv2d_forward_into(g, x, w, as_uninit(y))
}

/// [`conv2d_forward`] into fresh memory: every element of `y` is written, so it
/// need not be zero-filled first (the output of a conv layer skips that pass).
pub fn conv2d_forward_into(g: &ConvGeom, x: &[f32], w: &[f32], y: &mut [MaybeUninit<f32>]) {
    if direct::forward_fits(g) {
        return direct::forward_into(g, x, w, y);
    }
    match tier() {
        #[cfg(target_arch = "x86_64")]
        Tier::Avx512 => implicit::forward_into::<Avx512>(g, x, w, y),
        #[cfg(target_arch = "x86_64")]
        Tier::Avx2Fma => implicit::forward_into::<Avx2>(g, x, w, y),
        _ => implicit::forward_into::<Portable>(g, x, w, y),
    }
}

/// An initialised slice seen as possibly-uninitialised memory, for a function
/// that only writes it (sound: every write stores a valid f32).
fn as_uninit(y: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: MaybeUninit<f32> has f32's layout, and the callers only write f32 values.
    unsafe { &mut *(y as *mut [f32] as *mut [MaybeUninit<f32>]) }
}

/// Backward: given `dy (N, OC, OH, OW)`, write `dX (N, C, H, W)` into `dx` and
/// `dW (OC, C, KH, KW)` into `dw`, each only when asked. The dW sum over the
/// batch is deterministic: it is added in a fixed order of runs of images.
pub fn conv2d_backward(g: &ConvGeom, x: &[f32], w: &[f32], dy: &[f32], dx: Option<&mut [f32]>, dw: Option<&mut [f32]>) {
    conv2d_backward_into(g, x, w, dy, dx.map(as_uninit), dw.map(as_uninit))
}

/// [`conv2d_backward`] into fresh memory: every element of `dx` and `dw` is
/// written, so neither need be zero-filled first.
pub fn conv2d_backward_into(g: &ConvGeom, x: &[f32], w: &[f32], dy: &[f32], dx: Option<&mut [MaybeUninit<f32>]>, dw: Option<&mut [MaybeUninit<f32>]>) {
    let nr = match tier() {
        #[cfg(target_arch = "x86_64")]
        Tier::Avx512 => Avx512::NR,
        #[cfg(target_arch = "x86_64")]
        Tier::Avx2Fma => Avx2::NR,
        _ => Portable::NR,
    };
    let dw = match dw {
        Some(dw) if direct::weight_grad_fits(g, nr) => {
            direct::weight_grad(g, x, dy, dw);
            None
        }
        dw => dw,
    };
    match tier() {
        // dW reads the image in place where C is a multiple of the panel's width, and
        // packs it otherwise. At 16, 48, 80 ... channels that is AVX2's 16 but not AVX-512's
        // 32, and the AVX2 kernel reading in place beat the AVX-512 one packing (the DDPM
        // U-Net's layers, batch 64, 2 threads, Zen 4, the two alternated call by call: dW
        // of 16->16 at 28x28 in 0.68x the time, 48->16 0.74x; 48->32 at 14x14 1.04x).
        #[cfg(target_arch = "x86_64")]
        Tier::Avx512 if dw.is_some() && !implicit::weight_grad_in_place::<Avx512>(g) && implicit::weight_grad_in_place::<Avx2>(g) => {
            implicit::backward_into::<Avx512>(g, x, w, dy, dx, None);
            implicit::backward_into::<Avx2>(g, x, w, dy, None, dw)
        }
        #[cfg(target_arch = "x86_64")]
        Tier::Avx512 => implicit::backward_into::<Avx512>(g, x, w, dy, dx, dw),
        #[cfg(target_arch = "x86_64")]
        Tier::Avx2Fma => implicit::backward_into::<Avx2>(g, x, w, dy, dx, dw),
        _ => implicit::backward_into::<Portable>(g, x, w, dy, dx, dw),
    }
}
