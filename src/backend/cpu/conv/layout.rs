//! Transposes for the weight gradient's operands: the image channels-last
//! (`xᵀ_n (H*W, C)`) and `dY_n` pixel-major in MR-row slivers, both from NCHW.
//!
//! ```text
//! dst[p * ldd + i] = src[i * lds + p]      i < rows (channels), p < cols (pixels)
//! ```
//!
//! One float at a time down the channels (the loop this replaces) reads
//! `rows` planes in step; when a plane is a multiple of 4 KiB (32 x 32 floats)
//! those rows all fall in the same L1 set, which holds 8 or 12 lines, and
//! every read missed: the CIFAR-10 VQ-VAE spent a tenth of its step there.
//! Tiles of 8 x 8 read 8 rows at a time, and a whole tile is moved with
//! vector loads, shuffles and stores: eight 8-float rows, three rounds of
//! shuffles (the AVX2 micro-kernel's `transpose8`) on the AVX tiers, four
//! 4 x 4 blocks of SSE2 shuffles on the portable tier of x86-64, and the
//! fixed-size array code under [`crate::ops::kernels::simd`] elsewhere. (Left to the compiler on
//! x86-64, the array tile went through the stack one float at a time: the
//! transposes were 8% of the MNIST VQ-VAE's step.)

use crate::backend::cpu::tier::tier;
use std::mem::MaybeUninit;
#[cfg(target_arch = "x86_64")]
use crate::backend::cpu::tier::Tier;
#[cfg(not(target_arch = "x86_64"))]
use crate::ops::kernels::simd;

/// Side of a tile.
const T: usize = 8;

/// `dst[p * ldd + i] = src[i * lds + p]` for `i < rows`, `p < cols` (see the module docs).
/// The rest of `dst` is left as it is.
pub fn transpose(src: &[f32], lds: usize, rows: usize, cols: usize, dst: &mut [f32], ldd: usize) {
    // SAFETY: the same memory seen as possibly uninitialised; only f32 values are written.
    transpose_into(src, lds, rows, cols, unsafe { &mut *(dst as *mut [f32] as *mut [MaybeUninit<f32>]) }, ldd)
}

/// [`transpose`] into memory not yet initialised (a fresh array that the
/// transpose fills): `dst[p * ldd + i]` is written for `i < rows`, `p < cols`.
pub fn transpose_into(src: &[f32], lds: usize, rows: usize, cols: usize, dst: &mut [MaybeUninit<f32>], ldd: usize) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(src.len() >= (rows - 1) * lds + cols && dst.len() >= (cols - 1) * ldd + rows, "transpose: buffers too short");
    // the full tiles, vectorised for the tier
    let (full_rows, full_cols) = (rows / T * T, cols / T * T);
    if full_rows > 0 && full_cols > 0 {
        // (the asserts above keep every full tile inside both buffers)
        let each_tile = |f: &mut dyn FnMut(usize, usize)| {
            for i0 in (0..full_rows).step_by(T) {
                for p0 in (0..full_cols).step_by(T) {
                    f(i0, p0);
                }
            }
        };
        match tier() {
            #[cfg(target_arch = "x86_64")]
            Tier::Avx512 | Tier::Avx2Fma => each_tile(&mut |i0, p0| unsafe {
                x86::tile_avx(src.as_ptr().add(i0 * lds + p0), lds, dst.as_mut_ptr().add(p0 * ldd + i0).cast(), ldd)
            }),
            #[cfg(target_arch = "x86_64")]
            Tier::Portable => each_tile(&mut |i0, p0| unsafe {
                x86::tile_sse2(src.as_ptr().add(i0 * lds + p0), lds, dst.as_mut_ptr().add(p0 * ldd + i0).cast(), ldd)
            }),
            #[cfg(not(target_arch = "x86_64"))]
            _ => simd(|| each_tile(&mut |i0, p0| tile(src, lds, i0, p0, dst, ldd))),
        }
    }
    // the rows below the last full tile: on the AVX tiers as tiles of the
    // rows there are (dY's slivers of 6 or 12 rows were mostly this edge)
    // (p1: the first column of those rows left to the scalar loop below)
    #[cfg(target_arch = "x86_64")]
    let p1 = if matches!(tier(), Tier::Avx512 | Tier::Avx2Fma) && rows > full_rows {
        for p0 in (0..full_cols).step_by(T) {
            // SAFETY: the asserts above keep rows full_rows.. of columns p0..p0 + 8 inside both buffers.
            unsafe { x86::tile_avx_rows(src.as_ptr().add(full_rows * lds + p0), lds, rows - full_rows, dst.as_mut_ptr().add(p0 * ldd + full_rows).cast(), ldd) }
        }
        full_cols
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let p1 = 0;
    // the edges one float at a time, outside `simd` (vectorised, these short
    // strided loops ran slower than scalar code on the AVX2 tier)
    // the rows below the last full tile (the columns not done above), then the columns right of it
    for i in (full_rows..rows).filter(|_| p1 < cols) {
        for (d, &v) in dst[p1 * ldd + i..].iter_mut().step_by(ldd).zip(&src[i * lds + p1..][..cols - p1]) {
            d.write(v);
        }
    }
    for i in (0..full_rows).filter(|_| full_cols < cols) {
        for (d, &v) in dst[full_cols * ldd + i..].iter_mut().step_by(ldd).zip(&src[i * lds + full_cols..][..cols - full_cols]) {
            d.write(v);
        }
    }
}

/// One full `T x T` tile at rows `i0..`, columns `p0..` of `src`.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn tile(src: &[f32], lds: usize, i0: usize, p0: usize, dst: &mut [MaybeUninit<f32>], ldd: usize) {
    let rows: [[f32; T]; T] = std::array::from_fn(|i| src[(i0 + i) * lds + p0..][..T].try_into().expect("T floats"));
    for p in 0..T {
        let col: [f32; T] = std::array::from_fn(|i| rows[i][p]);
        for (d, v) in dst[(p0 + p) * ldd + i0..][..T].iter_mut().zip(col) {
            d.write(v);
        }
    }
}

/// The 8 x 8 tile with x86-64 shuffles: `dst[p * ldd + i] = src[i * lds + p]`, `i, p < 8`.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use crate::backend::cpu::microkernel::avx2::transpose8;
    use std::arch::x86_64::*;

    /// Eight 8-float rows loaded, transposed in registers by the AVX2 micro-kernel's
    /// [`transpose8`](crate::backend::cpu::microkernel::avx2::transpose8), stored as columns.
    ///
    /// # Safety
    /// AVX2 and FMA (both AVX tiers); 8 rows of 8 floats readable at `src` (stride `lds`)
    /// and writable at `dst` (stride `ldd`).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile_avx(src: *const f32, lds: usize, dst: *mut f32, ldd: usize) {
        let rows: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i * lds)));
        for (p, column) in transpose8(rows).into_iter().enumerate() {
            _mm256_storeu_ps(dst.add(p * ldd), column);
        }
    }

    /// [`tile_avx`] of the last `r < 8` rows: those rows loaded (the others
    /// zero), and `r` floats of each column stored.
    ///
    /// # Safety
    /// AVX2 and FMA; `r` rows of 8 floats readable at `src` (stride `lds`),
    /// 8 columns of `r` floats writable at `dst` (stride `ldd`).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile_avx_rows(src: *const f32, lds: usize, r: usize, dst: *mut f32, ldd: usize) {
        match r {
            1 => rows_of::<1>(src, lds, dst, ldd),
            2 => rows_of::<2>(src, lds, dst, ldd),
            3 => rows_of::<3>(src, lds, dst, ldd),
            4 => rows_of::<4>(src, lds, dst, ldd),
            5 => rows_of::<5>(src, lds, dst, ldd),
            6 => rows_of::<6>(src, lds, dst, ldd),
            _ => rows_of::<7>(src, lds, dst, ldd),
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows_of<const R: usize>(src: *const f32, lds: usize, dst: *mut f32, ldd: usize) {
        let rows: [__m256; 8] = std::array::from_fn(|i| if i < R { _mm256_loadu_ps(src.add(i * lds)) } else { _mm256_setzero_ps() });
        for (p, column) in transpose8(rows).into_iter().enumerate() {
            let mut lanes = [0.0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), column);
            // R floats: a fixed-size copy, moved as one or two vector stores
            (dst.add(p * ldd) as *mut [f32; R]).write_unaligned(*(lanes.as_ptr() as *const [f32; R]));
        }
    }

    /// The same as four 4 x 4 blocks of SSE2 shuffles (the x86-64 baseline).
    ///
    /// # Safety
    /// As [`tile_avx`], without AVX.
    pub unsafe fn tile_sse2(src: *const f32, lds: usize, dst: *mut f32, ldd: usize) {
        for (bi, bp) in [(0, 0), (0, 4), (4, 0), (4, 4)] {
            let s = src.add(bi * lds + bp);
            let r: [__m128; 4] = std::array::from_fn(|i| _mm_loadu_ps(s.add(i * lds)));
            let t0 = _mm_unpacklo_ps(r[0], r[1]); // r00 r10 r01 r11
            let t1 = _mm_unpacklo_ps(r[2], r[3]); // r20 r30 r21 r31
            let t2 = _mm_unpackhi_ps(r[0], r[1]); // r02 r12 r03 r13
            let t3 = _mm_unpackhi_ps(r[2], r[3]); // r22 r32 r23 r33
            let d = dst.add(bp * ldd + bi);
            _mm_storeu_ps(d, _mm_movelh_ps(t0, t1));
            _mm_storeu_ps(d.add(ldd), _mm_movehl_ps(t1, t0));
            _mm_storeu_ps(d.add(2 * ldd), _mm_movelh_ps(t2, t3));
            _mm_storeu_ps(d.add(3 * ldd), _mm_movehl_ps(t3, t2));
        }
    }
}

#[cfg(test)]
mod tests {
    /// Against the definition, with partial tiles on both sides and padded strides.
    #[test]
    fn is_a_transpose() {
        for (rows, cols) in [(1, 1), (3, 5), (8, 8), (12, 28), (48, 67), (17, 9), (6, 28), (4, 17), (7, 8), (1, 24), (13, 16), (2, 9)] {
            let (lds, ldd) = (cols + 3, rows + 2);
            let src: Vec<f32> = (0..rows * lds).map(|v| v as f32).collect();
            let mut dst = vec![-1.0f32; cols * ldd];
            super::transpose(&src, lds, rows, cols, &mut dst, ldd);
            for p in 0..cols {
                for i in 0..ldd {
                    let want = if i < rows { src[i * lds + p] } else { -1.0 };
                    assert_eq!(dst[p * ldd + i], want, "({rows}, {cols}): dst[{p}][{i}]");
                }
            }
        }
    }
}
