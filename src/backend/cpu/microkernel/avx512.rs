//! The AVX-512 micro-kernel: one `R x 32` tile of C from a packed sliver of A
//! and a packed panel of B (`R <= MR = 12`).
//!
//! An AVX-512 register (`zmm`, `__m512`) holds 16 floats, and there are 32 of
//! them. The tile keeps `12 x 32` partial sums of C in 24 registers, two per
//! row, for the whole `k` loop. Each step `p` of that loop is a rank-1 update:
//!
//! ```text
//! b0, b1   = B_panel[p, 0..16], B_panel[p, 16..32]        two vector loads
//! for i in 0..12:
//!     a_i  = broadcast(A_sliver[p, i])                    one scalar, 16 copies
//!     acc[i][0] += a_i * b0;   acc[i][1] += a_i * b1      two FMAs
//! ```
//!
//! 24 FMAs for 2 loads and 12 broadcasts (which fold into the FMA as a memory
//! operand): the FMA units, not memory, set the pace, which is the point of
//! the register tile. Only when the `k` loop is done is C touched, once:
//! `C = alpha * acc + beta * C`, with masked loads and stores for the columns
//! past `nr` so that edge tiles need no scratch copy.

use std::arch::x86_64::*;

/// Rows of a micro-tile (the broadcast operand, from packed A).
pub const MR: usize = 12;
/// Columns of a micro-tile: two 16-float AVX-512 vectors (from packed B).
pub const NR: usize = 32;

/// The AVX-512 micro-kernel (see the module docs), for [`super::MicroKernel`].
#[derive(Clone, Copy, Debug)]
pub struct Avx512;

impl super::MicroKernel for Avx512 {
    const MR: usize = MR;
    const NR: usize = NR;

    unsafe fn tile(mr: usize, kc: usize, a: *const f32, b: *const f32, c: *mut f32, rsc: usize, nr: usize, alpha: f32, beta: f32) {
        tile_rows(mr, kc, a, b, c, rsc, nr, alpha, beta)
    }

    unsafe fn transpose_pack(w: usize, kc: usize, src: *const f32, stride: isize, dst: &mut [f32]) {
        match w {
            MR => transpose_pack::<MR>(kc, src, stride, dst),
            NR => transpose_pack::<NR>(kc, src, stride, dst),
            _ => super::transpose_pack_scalar(w, kc, src, stride, dst),
        }
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
#[target_feature(enable = "avx512f")]
unsafe fn shifted_rows(dst: &mut [f32], x: *const f32, hw: usize, first: usize, shifts: &[super::Shift], merge: bool) {
    super::shifted_rows::<Avx512>(dst, x, hw, first, shifts, merge)
}

/// The lane mask for the first `n` of 16 lanes.
fn lanes(n: usize) -> __mmask16 {
    if n >= 16 {
        0xFFFF
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

/// `C[0..R, 0..nr] = alpha * A_sliver · B_panel + beta * C` (beta = 0 never reads C).
///
/// `a` is a packed sliver (`kc` steps of `MR` floats, rows past `R` unused),
/// `b` a packed panel (`kc` steps of `NR` floats), `c` row-major with row
/// stride `rsc`.
///
/// # Safety
/// The CPU must support AVX-512F; `a`, `b` must hold `kc * MR`, `kc * NR`
/// floats and `c` must address an `R x nr` tile with `nr <= NR`.
#[target_feature(enable = "avx512f")]
pub unsafe fn tile<const R: usize>(kc: usize, a: *const f32, b: *const f32, c: *mut f32, rsc: usize, nr: usize, alpha: f32, beta: f32) {
    // Ask for the C tile now: it is needed only after the k loop, which hides the
    // trip to L2/L3 (C rows are far apart in memory and rarely in L1).
    for i in 0..R {
        _mm_prefetch::<_MM_HINT_T0>(c.add(i * rsc) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(c.add(i * rsc + 16) as *const i8);
    }
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    let (mut a, mut b) = (a, b);
    for _ in 0..kc {
        let b0 = _mm512_loadu_ps(b);
        let b1 = _mm512_loadu_ps(b.add(16));
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = _mm512_set1_ps(*a.add(i));
            row[0] = _mm512_fmadd_ps(ai, b0, row[0]);
            row[1] = _mm512_fmadd_ps(ai, b1, row[1]);
        }
        a = a.add(MR);
        b = b.add(NR);
    }
    let (m0, m1) = (lanes(nr), lanes(nr.saturating_sub(16)));
    let (va, vb) = (_mm512_set1_ps(alpha), _mm512_set1_ps(beta));
    for (i, row) in acc.iter().enumerate() {
        let cp = c.add(i * rsc);
        let (mut r0, mut r1) = (row[0], row[1]);
        if alpha != 1.0 {
            r0 = _mm512_mul_ps(va, r0);
            r1 = _mm512_mul_ps(va, r1);
        }
        if beta != 0.0 {
            // Masked loads never fault on the lanes they skip.
            r0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, cp), r0);
            r1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, cp.add(16)), r1);
        }
        _mm512_mask_storeu_ps(cp, m0, r0);
        _mm512_mask_storeu_ps(cp.add(16), m1, r1);
    }
}

/// [`tile`] for a run-time row count `mr` in `1..=MR`: fewer rows, fewer FMAs.
///
/// # Safety
/// As [`tile`], with `1 <= mr <= MR`.
#[inline]
pub unsafe fn tile_rows(mr: usize, kc: usize, a: *const f32, b: *const f32, c: *mut f32, rsc: usize, nr: usize, alpha: f32, beta: f32) {
    match mr {
        12 => tile::<12>(kc, a, b, c, rsc, nr, alpha, beta),
        11 => tile::<11>(kc, a, b, c, rsc, nr, alpha, beta),
        10 => tile::<10>(kc, a, b, c, rsc, nr, alpha, beta),
        9 => tile::<9>(kc, a, b, c, rsc, nr, alpha, beta),
        8 => tile::<8>(kc, a, b, c, rsc, nr, alpha, beta),
        7 => tile::<7>(kc, a, b, c, rsc, nr, alpha, beta),
        6 => tile::<6>(kc, a, b, c, rsc, nr, alpha, beta),
        5 => tile::<5>(kc, a, b, c, rsc, nr, alpha, beta),
        4 => tile::<4>(kc, a, b, c, rsc, nr, alpha, beta),
        3 => tile::<3>(kc, a, b, c, rsc, nr, alpha, beta),
        2 => tile::<2>(kc, a, b, c, rsc, nr, alpha, beta),
        1 => tile::<1>(kc, a, b, c, rsc, nr, alpha, beta),
        _ => unreachable!("micro-tile rows must be 1..={MR}, got {mr}"),
    }
}

/// `dst[p][i] = src[i][p]` for `i < W`, `p < kc`, where `src` row `i` starts at
/// `src + i * stride` and is contiguous: packing a sliver of a row-major A or a
/// panel of a transposed B. Blocks of 16 x 16 are loaded as 16 row vectors,
/// transposed in registers ([`transpose16`]) and stored as 16 rows of `dst`; the
/// last `kc % 16` columns go one float at a time.
#[target_feature(enable = "avx512f")]
unsafe fn transpose_pack<const W: usize>(kc: usize, src: *const f32, stride: isize, dst: &mut [f32]) {
    let rows: [*const f32; W] = std::array::from_fn(|i| src.offset(i as isize * stride));
    let dst = &mut dst[..kc * W];
    let full = kc / 16 * 16;
    for p0 in (0..full).step_by(16) {
        for g in (0..W).step_by(16) {
            let n = 16.min(W - g); // rows in this group of up to 16
            let mut r = [_mm512_setzero_ps(); 16];
            for (v, row) in r.iter_mut().zip(&rows[g..g + n]) {
                *v = _mm512_loadu_ps(row.add(p0)); // src[g + i][p0 .. p0 + 16]
            }
            for (j, v) in transpose16(r).into_iter().enumerate() {
                // dst[p0 + j][g .. g + n] = src[g .. g + n][p0 + j]
                let at = dst.as_mut_ptr().add((p0 + j) * W + g);
                _mm512_mask_storeu_ps(at, ((1u32 << n) - 1) as u16, v);
            }
        }
    }
    for p in full..kc {
        for (o, row) in dst[p * W..(p + 1) * W].iter_mut().zip(&rows) {
            *o = *row.add(p);
        }
    }
}

/// The transpose of a 16 x 16 block held as 16 row vectors: output vector `j` holds
/// element `j` of every input vector. Three rounds of shuffles: pairs of rows
/// (32-bit interleave), pairs of pairs (64-bit), then 128-bit lanes twice.
#[target_feature(enable = "avx512f")]
unsafe fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
    // t[2i], t[2i + 1]: rows 2i and 2i + 1 interleaved element by element (per 128-bit lane)
    let t: [__m512; 16] = std::array::from_fn(|x| {
        let (a, b) = (r[x / 2 * 2], r[x / 2 * 2 + 1]);
        if x % 2 == 0 { _mm512_unpacklo_ps(a, b) } else { _mm512_unpackhi_ps(a, b) }
    });
    // u: 4 x 4 blocks transposed inside each 128-bit lane (rows 4q .. 4q + 3)
    let u: [__m512; 16] = std::array::from_fn(|x| {
        let (q, k) = (x / 4 * 4, x % 4);
        let (a, b) = (_mm512_castps_pd(t[q + k / 2]), _mm512_castps_pd(t[q + k / 2 + 2]));
        _mm512_castpd_ps(if k % 2 == 0 { _mm512_unpacklo_pd(a, b) } else { _mm512_unpackhi_pd(a, b) })
    });
    // v: 128-bit lanes exchanged between row groups q and q + 1 (q = 0, 2)
    let v: [__m512; 16] = std::array::from_fn(|x| {
        let (half, k) = (x / 8 * 8, x % 8);
        let (a, b) = (u[half + k % 4], u[half + k % 4 + 4]);
        if k < 4 { _mm512_shuffle_f32x4::<0x88>(a, b) } else { _mm512_shuffle_f32x4::<0xdd>(a, b) }
    });
    // w: 128-bit lanes exchanged between the two halves
    std::array::from_fn(|x| {
        let (a, b) = (v[x % 8], v[x % 8 + 8]);
        if x < 8 { _mm512_shuffle_f32x4::<0x88>(a, b) } else { _mm512_shuffle_f32x4::<0xdd>(a, b) }
    })
}

#[cfg(test)]
mod transpose_tests {
    /// transpose16 against the definition on distinct values.
    #[test]
    fn transpose16_is_a_transpose() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        let m: Vec<f32> = (0..256).map(|i| i as f32).collect();
        let mut out = vec![0.0f32; 256];
        unsafe {
            use std::arch::x86_64::*;
            let r: [__m512; 16] = std::array::from_fn(|i| _mm512_loadu_ps(m.as_ptr().add(16 * i)));
            for (j, v) in super::transpose16(r).into_iter().enumerate() {
                _mm512_storeu_ps(out.as_mut_ptr().add(16 * j), v);
            }
        }
        for i in 0..16 {
            for j in 0..16 {
                assert_eq!(out[16 * j + i], m[16 * i + j], "element ({i}, {j})");
            }
        }
    }
}

/// [`super::MicroKernel::masked_row`] for two 16-lane halves. Inside the
/// image: plain loads, then the padding lanes zeroed (faster than masked
/// loads). At its ends a masked load, which never touches its masked-off
/// lanes, so nothing outside the image is read.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn masked_row(dst: &mut [f32], p: *const f32, mask: u32, inside: bool) {
    let (m0, m1) = (mask as __mmask16, (mask >> 16) as __mmask16);
    let (v0, v1) = if inside {
        (_mm512_maskz_mov_ps(m0, _mm512_loadu_ps(p)), _mm512_maskz_mov_ps(m1, _mm512_loadu_ps(p.add(16))))
    } else {
        (_mm512_maskz_loadu_ps(m0, p), _mm512_maskz_loadu_ps(m1, p.wrapping_add(16)))
    };
    let dst = &mut dst[..NR];
    _mm512_storeu_ps(dst.as_mut_ptr(), v0);
    _mm512_storeu_ps(dst.as_mut_ptr().add(16), v1);
}
