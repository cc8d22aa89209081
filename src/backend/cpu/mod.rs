//! The CPU loops: a packed GEMM with one micro-kernel per [CPU tier](tier)
//! (AVX-512, AVX2 + FMA, portable), and convolution as an implicit GEMM on
//! the same kernels, all parallel with rayon.

pub mod conv;
pub mod gemm;
pub mod memory;
pub mod microkernel;
pub mod packed_gemm;
pub mod pool;
pub mod tier;
pub mod upsample;

/// `dst.copy_from_slice(src)` for the short copies of packing (one panel row
/// of NR floats or one sliver column of MR, or fewer at an edge). A copy of a
/// compile-time length is inlined as vector moves; a variable-length one is a
/// call to `memmove`, which costs more than moving 128 bytes. So the widths
/// of the micro-kernels' tiles get a fixed-length copy each.
#[inline]
pub(crate) fn copy_short(dst: &mut [f32], src: &[f32]) {
    match src.len() {
        32 => copy_fixed::<32>(dst, src),
        16 => copy_fixed::<16>(dst, src),
        12 => copy_fixed::<12>(dst, src),
        8 => copy_fixed::<8>(dst, src),
        6 => copy_fixed::<6>(dst, src),
        4 => copy_fixed::<4>(dst, src),
        _ => dst.copy_from_slice(src),
    }
}

/// [`copy_short`] of exactly `N` floats.
#[inline(always)]
fn copy_fixed<const N: usize>(dst: &mut [f32], src: &[f32]) {
    let d: &mut [f32; N] = dst.try_into().expect("lengths checked by copy_short");
    *d = src.try_into().expect("lengths checked by copy_short");
}

/// Fresh memory zeroed and seen as initialised: for a path that adds into its
/// output (im2col's col2im) or takes an initialised slice (the GPU paths of the
/// backend's `_uninit` entry points, which copy their result into it).
pub(crate) fn zero_filled(y: &mut [std::mem::MaybeUninit<f32>]) -> &mut [f32] {
    y.iter_mut().for_each(|v| {
        v.write(0.0);
    });
    // SAFETY: every element was written just above; MaybeUninit<f32> has f32's layout.
    unsafe { &mut *(y as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) }
}

/// A 64-byte aligned window of `len` floats inside `buf` (grown when needed).
pub(crate) fn aligned(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len + 16 {
        buf.resize(len + 16, 0.0);
    }
    let skip = buf.as_ptr().align_offset(64).min(15);
    &mut buf[skip..skip + len]
}

/// Image planes per rayon task for a loop that does `work_per_plane` element steps on
/// each plane: enough planes that a task pays for itself on small images, at least one.
pub(crate) fn planes_per_task(work_per_plane: usize) -> usize {
    (crate::ops::kernels::PARALLEL_MIN_LEN / work_per_plane.max(1)).max(1)
}
