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

/// Whether this CPU runs the AVX-512 kernel (checked once by std, then cached).
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
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
