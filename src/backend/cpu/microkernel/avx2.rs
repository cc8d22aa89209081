//! The AVX2 micro-kernel: one `R x 16` tile of C from a packed sliver of A
//! and a packed panel of B (`R <= MR = 6`).
//!
//! An AVX2 register (`ymm`, `__m256`) holds 8 floats, and there are only 16
//! of them (AVX-512 has 32 of twice the width). The tile keeps `6 x 16`
//! partial sums of C in 12 registers, two per row, for the whole `k` loop;
//! two more hold the row of B and one the broadcast of A, 15 of 16 in all.
//! Each step `p` is a rank-1 update, as in the [AVX-512 kernel](super::avx512):
//!
//! ```text
//! b0, b1   = B_panel[p, 0..8], B_panel[p, 8..16]          two vector loads
//! for i in 0..6:
//!     a_i  = broadcast(A_sliver[p, i])                    one scalar, 8 copies
//!     acc[i][0] += a_i * b0;   acc[i][1] += a_i * b1      two FMAs
//! ```
//!
//! 12 FMAs for 2 loads and 6 broadcasts: enough to keep both FMA units of a
//! Zen or Haswell core busy (each FMA has a latency of 4 to 5 cycles, so 12
//! independent chains hide it). This is the shape of BLIS's and OpenBLAS's
//! Haswell sgemm kernel. C is touched once, after the `k` loop:
//! `C = alpha * acc + beta * C`, with masked loads and stores (`vmaskmovps`,
//! which never faults on a masked-off lane) for the columns past `nr`.

use std::arch::x86_64::*;

/// Rows of a micro-tile (the broadcast operand, from packed A).
pub const MR: usize = 6;
/// Columns of a micro-tile: two 8-float AVX2 vectors (from packed B).
pub const NR: usize = 16;

/// The AVX2 + FMA micro-kernel (see the module docs), for [`super::MicroKernel`].
#[derive(Clone, Copy, Debug)]
pub struct Avx2;

impl super::MicroKernel for Avx2 {
    const MR: usize = MR;
    const NR: usize = NR;

    unsafe fn tile(mr: usize, kc: usize, a: *const f32, b: *const f32, c: *mut f32, rsc: usize, nr: usize, alpha: f32, beta: f32) {
        match mr {
            6 => tile::<6>(kc, a, b, c, rsc, nr, alpha, beta),
            5 => tile::<5>(kc, a, b, c, rsc, nr, alpha, beta),
            4 => tile::<4>(kc, a, b, c, rsc, nr, alpha, beta),
            3 => tile::<3>(kc, a, b, c, rsc, nr, alpha, beta),
            2 => tile::<2>(kc, a, b, c, rsc, nr, alpha, beta),
            1 => tile::<1>(kc, a, b, c, rsc, nr, alpha, beta),
            _ => unreachable!("micro-tile rows must be 1..={MR}, got {mr}"),
        }
    }

    unsafe fn transpose_pack(w: usize, kc: usize, src: *const f32, stride: isize, dst: &mut [f32]) {
        transpose_pack(w, kc, src, stride, dst)
    }

    #[inline]
    unsafe fn masked_row(dst: &mut [f32], src: *const f32, mask: u32, inside: bool) {
        masked_row(dst, src, mask, inside)
    }

    unsafe fn shifted_rows(dst: &mut [f32], x: *const f32, hw: usize, first: usize, shifts: &[super::Shift], merge: bool) {
        shifted_rows(dst, x, hw, first, shifts, merge)
    }
}

/// [`super::shifted_rows`] compiled with this tier's features, [`masked_row`] inlined.
#[target_feature(enable = "avx2,fma")]
unsafe fn shifted_rows(dst: &mut [f32], x: *const f32, hw: usize, first: usize, shifts: &[super::Shift], merge: bool) {
    super::shifted_rows::<Avx2>(dst, x, hw, first, shifts, merge)
}

/// The lane mask for the lanes of `bits` (bit `l` for lane `l` of 8), as
/// `vmaskmovps` reads it: all ones in a lane to keep, zero to skip.
#[inline(always)]
unsafe fn lane_mask(bits: u32) -> __m256i {
    let lane_bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    let m = _mm256_and_si256(_mm256_set1_epi32(bits as i32), lane_bits);
    _mm256_cmpeq_epi32(m, lane_bits)
}

/// The first `n` of 8 lanes, as a mask bit field.
fn first(n: usize) -> u32 {
    (1u32 << n.min(8)) - 1
}

/// `C[0..R, 0..nr] = alpha * A_sliver · B_panel + beta * C` (beta = 0 never reads C).
///
/// # Safety
/// The CPU must support AVX2 and FMA; `a`, `b` must hold `kc * MR`, `kc * NR`
/// floats and `c` must address an `R x nr` tile with `nr <= NR`.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)] // a GEMM's sizes, operands and output
unsafe fn tile<const R: usize>(kc: usize, a: *const f32, b: *const f32, c: *mut f32, rsc: usize, nr: usize, alpha: f32, beta: f32) {
    // Ask for the C tile now: it is needed only after the k loop (see the AVX-512 kernel).
    for i in 0..R {
        _mm_prefetch::<_MM_HINT_T0>(c.add(i * rsc) as *const i8);
    }
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    let (mut a, mut b) = (a, b);
    for _ in 0..kc {
        let b0 = _mm256_loadu_ps(b);
        let b1 = _mm256_loadu_ps(b.add(8));
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = _mm256_broadcast_ss(&*a.add(i));
            row[0] = _mm256_fmadd_ps(ai, b0, row[0]);
            row[1] = _mm256_fmadd_ps(ai, b1, row[1]);
        }
        a = a.add(MR);
        b = b.add(NR);
    }
    let full = nr == NR;
    let (m0, m1) = (lane_mask(first(nr)), lane_mask(first(nr.saturating_sub(8))));
    let (va, vb) = (_mm256_set1_ps(alpha), _mm256_set1_ps(beta));
    for (i, row) in acc.iter().enumerate() {
        let cp = c.add(i * rsc);
        let (mut r0, mut r1) = (row[0], row[1]);
        if alpha != 1.0 {
            r0 = _mm256_mul_ps(va, r0);
            r1 = _mm256_mul_ps(va, r1);
        }
        if full {
            if beta != 0.0 {
                r0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(cp), r0);
                r1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(cp.add(8)), r1);
            }
            _mm256_storeu_ps(cp, r0);
            _mm256_storeu_ps(cp.add(8), r1);
        } else {
            if beta != 0.0 {
                r0 = _mm256_fmadd_ps(vb, _mm256_maskload_ps(cp, m0), r0);
                r1 = _mm256_fmadd_ps(vb, _mm256_maskload_ps(cp.add(8), m1), r1);
            }
            _mm256_maskstore_ps(cp, m0, r0);
            _mm256_maskstore_ps(cp.add(8), m1, r1);
        }
    }
}

/// [`super::MicroKernel::transpose_pack`] in blocks of 8 x 8: groups of up to
/// 8 rows are loaded as 8 row vectors (missing rows as zeros), transposed in
/// registers ([`transpose8`]) and stored as rows of `dst`, the first `n`
/// lanes of each; the last `kc % 8` columns go one float at a time.
#[target_feature(enable = "avx2,fma")]
unsafe fn transpose_pack(w: usize, kc: usize, src: *const f32, stride: isize, dst: &mut [f32]) {
    let dst = &mut dst[..kc * w];
    let full = kc / 8 * 8;
    for g in (0..w).step_by(8) {
        let n = 8.min(w - g); // rows in this group of up to 8
        let keep = lane_mask(first(n));
        for p0 in (0..full).step_by(8) {
            let r: [__m256; 8] = std::array::from_fn(|i| if i < n { _mm256_loadu_ps(src.offset((g + i) as isize * stride).add(p0)) } else { _mm256_setzero_ps() });
            for (j, v) in transpose8(r).into_iter().enumerate() {
                // dst[p0 + j][g .. g + n] = src[g .. g + n][p0 + j]
                let at = (p0 + j) * w + g;
                if n == 8 || (w < 8 && at + 8 <= kc * w) {
                    // A plain store: all 8 lanes are wanted, or (one group narrower than 8)
                    // the lanes past n fall on later rows of dst, which are written after
                    // this one. `vmaskmovps` to memory costs many times a store on AMD's cores.
                    _mm256_storeu_ps(dst.as_mut_ptr().add(at), v);
                } else {
                    _mm256_maskstore_ps(dst.as_mut_ptr().add(at), keep, v);
                }
            }
        }
    }
    for p in full..kc {
        for (i, o) in dst[p * w..(p + 1) * w].iter_mut().enumerate() {
            *o = *src.offset(i as isize * stride).add(p);
        }
    }
}

/// The transpose of an 8 x 8 block held as 8 row vectors: output vector `j`
/// holds element `j` of every input vector. Pairs of rows interleaved (32-bit),
/// then pairs of pairs (64-bit), then the 128-bit halves exchanged.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    // t[2i], t[2i + 1]: rows 2i and 2i + 1 interleaved element by element (per 128-bit lane)
    let t: [__m256; 8] = std::array::from_fn(|x| {
        let (a, b) = (r[x / 2 * 2], r[x / 2 * 2 + 1]);
        if x % 2 == 0 { _mm256_unpacklo_ps(a, b) } else { _mm256_unpackhi_ps(a, b) }
    });
    // u: 4 x 4 blocks transposed inside each 128-bit lane (rows 4q .. 4q + 3)
    let u: [__m256; 8] = std::array::from_fn(|x| {
        let (q, k) = (x / 4 * 4, x % 4);
        let (a, b) = (_mm256_castps_pd(t[q + k / 2]), _mm256_castps_pd(t[q + k / 2 + 2]));
        _mm256_castpd_ps(if k % 2 == 0 { _mm256_unpacklo_pd(a, b) } else { _mm256_unpackhi_pd(a, b) })
    });
    // the low halves of rows q and q + 4 make output q, the high halves output q + 4
    std::array::from_fn(|x| {
        let (a, b) = (u[x % 4], u[x % 4 + 4]);
        if x < 4 { _mm256_permute2f128_ps::<0x20>(a, b) } else { _mm256_permute2f128_ps::<0x31>(a, b) }
    })
}

/// [`super::MicroKernel::masked_row`] for two 8-lane halves: plain loads and
/// a blend inside the image, masked loads (which never read a masked-off
/// lane) at its ends.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn masked_row(dst: &mut [f32], p: *const f32, mask: u32, inside: bool) {
    let (m0, m1) = (lane_mask(mask & 0xFF), lane_mask(mask >> 8 & 0xFF));
    let (v0, v1) = if inside {
        (_mm256_and_ps(_mm256_loadu_ps(p), _mm256_castsi256_ps(m0)), _mm256_and_ps(_mm256_loadu_ps(p.add(8)), _mm256_castsi256_ps(m1)))
    } else {
        (_mm256_maskload_ps(p, m0), _mm256_maskload_ps(p.wrapping_add(8), m1))
    };
    let dst = &mut dst[..NR];
    _mm256_storeu_ps(dst.as_mut_ptr(), v0);
    _mm256_storeu_ps(dst.as_mut_ptr().add(8), v1);
}

#[cfg(test)]
mod tests {
    /// transpose8 against the definition on distinct values.
    #[test]
    fn transpose8_is_a_transpose() {
        if !(std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")) {
            return;
        }
        let m: Vec<f32> = (0..64).map(|i| i as f32).collect();
        let mut out = vec![0.0f32; 64];
        unsafe {
            use std::arch::x86_64::*;
            let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(m.as_ptr().add(8 * i)));
            for (j, v) in super::transpose8(r).into_iter().enumerate() {
                _mm256_storeu_ps(out.as_mut_ptr().add(8 * j), v);
            }
        }
        for i in 0..8 {
            for j in 0..8 {
                assert_eq!(out[8 * j + i], m[8 * i + j], "element ({i}, {j})");
            }
        }
    }
}
