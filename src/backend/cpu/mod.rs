//! The CPU loops: a packed AVX-512 GEMM (with `matrixmultiply` as the portable
//! fallback) and convolution by im2col, both parallel with rayon.

pub mod conv;
pub mod gemm;
#[cfg(target_arch = "x86_64")]
pub mod microkernel;
#[cfg(target_arch = "x86_64")]
pub mod packed_gemm;

/// `dst.copy_from_slice(src)` for the short copies of im2col and packing (a
/// few dozen floats): fixed 8-float moves inline into vector loads and stores,
/// where a variable-length `copy_from_slice` is a call to `memmove` per row.
#[inline]
pub(crate) fn copy_short(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len(), "copy_short: lengths differ");
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (d8, s8) in (&mut d).zip(&mut s) {
        let s8: &[f32; 8] = s8.try_into().expect("chunks of 8");
        let d8: &mut [f32; 8] = d8.try_into().expect("chunks of 8");
        *d8 = *s8;
    }
    for (x, y) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *x = *y;
    }
}
