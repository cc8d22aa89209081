//! The CPU loops: a packed AVX-512 GEMM (with `matrixmultiply` as the portable
//! fallback) and convolution by im2col, both parallel with rayon.

pub mod conv;
pub mod gemm;
pub mod memory;
#[cfg(target_arch = "x86_64")]
pub mod microkernel;
#[cfg(target_arch = "x86_64")]
pub mod packed_gemm;
pub mod pool;
pub mod upsample;

/// `dst.copy_from_slice(src)` for the short copies of packing (one panel row
/// of `N` floats, or fewer at an edge). A copy of a compile-time length is
/// inlined as vector moves; a variable-length one is a call to `memmove`,
/// which costs more than moving 128 bytes.
#[inline]
pub(crate) fn copy_short<const N: usize>(dst: &mut [f32], src: &[f32]) {
    match (<&mut [f32; N]>::try_from(&mut *dst), <&[f32; N]>::try_from(src)) {
        (Ok(d), Ok(s)) => *d = *s,
        _ => dst.copy_from_slice(src),
    }
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
