//! The portable tier's micro-kernel on x86-64, where the baseline is SSE2: the
//! same `6 x 8` tile as [`super::portable`], fed from a *widened* sliver of A.
//!
//! SSE2 has no broadcast load. The plain kernel builds each `a_i` of a step
//! from one float with a load and a shuffle (`movss` + `shufps`), 6 shuffles
//! for 24 multiplies and adds, and on AMD's cores shuffles share the ports of
//! the multiplies and adds. Here the sliver is first rewritten so that each
//! value of A sits four times in a row,
//!
//! ```text
//! narrow:  A[p, 0] A[p, 1] ... A[p, 5]                     (kc steps of MR floats)
//! wide:    A[p, 0] x4, A[p, 1] x4, ... A[p, 5] x4          (kc steps of 4 * MR floats)
//! ```
//!
//! and every broadcast becomes a plain 16-byte load (load ports, not
//! shuffles). The caller widens a sliver once ([`super::widen`]) and runs it
//! against many panels (48 for a B block of 384 columns in the packed GEMM),
//! so the rewrite costs about 2 % of the arithmetic. One step of `k`:
//!
//! ```text
//! b0, b1 = B_panel[p, 0..4], B_panel[p, 4..8]           two loads
//! for i in 0..6:
//!     a_i = wide[p, i, 0..4]                              one load, no shuffle
//!     acc[i][0] += a_i * b0;   acc[i][1] += a_i * b1      two multiplies, two adds
//! ```
//!
//! On a Zen 4 core, one thread, operands in cache (a micro-benchmark of the
//! inner loop alone, kc = 384): 51.7 GFLOP/s against 39.5 for the plain
//! kernel and 117 for the AVX2 + FMA kernel, whose 16 flops per instruction
//! against SSE2's 4 without FMA put the best this tier can do at half the AVX2
//! kernel's rate (here: 0.44).

use std::arch::x86_64::*;

use super::portable::{MR, NR};

/// [`super::MicroKernel::tile_wide`] for the portable kernel on x86-64.
///
/// # Safety
/// As [`super::MicroKernel::tile_wide`] with four copies of each value of A.
#[allow(clippy::too_many_arguments)] // a GEMM's sizes, operands and output
pub(super) unsafe fn tile(mr: usize, kc: usize, w: *const f32, b: *const f32, c: *mut f32, rsc: usize, nr: usize, alpha: f32, beta: f32) {
    match mr {
        6 => tile_rows::<6>(kc, w, b, c, rsc, nr, alpha, beta),
        5 => tile_rows::<5>(kc, w, b, c, rsc, nr, alpha, beta),
        4 => tile_rows::<4>(kc, w, b, c, rsc, nr, alpha, beta),
        3 => tile_rows::<3>(kc, w, b, c, rsc, nr, alpha, beta),
        2 => tile_rows::<2>(kc, w, b, c, rsc, nr, alpha, beta),
        1 => tile_rows::<1>(kc, w, b, c, rsc, nr, alpha, beta),
        _ => unreachable!("micro-tile rows must be 1..={MR}, got {mr}"),
    }
}

/// `C[0..R, 0..nr] = alpha * A_wide · B_panel + beta * C` (beta = 0 never reads C).
///
/// # Safety
/// `w` holds `kc * 4 * MR` floats, `b` holds `kc * NR`; `c` addresses an
/// `R x nr` tile with `nr <= NR`.
#[allow(clippy::too_many_arguments)] // a GEMM's sizes, operands and output
unsafe fn tile_rows<const R: usize>(kc: usize, w: *const f32, b: *const f32, c: *mut f32, rsc: usize, nr: usize, alpha: f32, beta: f32) {
    let mut acc = [[_mm_setzero_ps(); 2]; R];
    let (mut w, mut b) = (w, b);
    for _ in 0..kc {
        let (b0, b1) = (_mm_loadu_ps(b), _mm_loadu_ps(b.add(4)));
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = _mm_loadu_ps(w.add(4 * i));
            row[0] = _mm_add_ps(row[0], _mm_mul_ps(ai, b0)); // acc[i][0..4] += a_i * b0
            row[1] = _mm_add_ps(row[1], _mm_mul_ps(ai, b1)); // acc[i][4..8] += a_i * b1
        }
        (w, b) = (w.add(4 * MR), b.add(NR));
    }
    let (va, vb) = (_mm_set1_ps(alpha), _mm_set1_ps(beta));
    for (i, row) in acc.iter().enumerate() {
        // Raw pointers, not a slice: with beta = 0, C may be uninitialised memory.
        let cr = c.add(i * rsc);
        let r = [_mm_mul_ps(va, row[0]), _mm_mul_ps(va, row[1])]; // alpha * acc
        if nr == NR {
            for (h, &rh) in r.iter().enumerate() {
                let ch = cr.add(4 * h);
                // C = alpha * acc + beta * C
                _mm_storeu_ps(ch, if beta != 0.0 { _mm_add_ps(rh, _mm_mul_ps(vb, _mm_loadu_ps(ch))) } else { rh });
            }
        } else {
            let mut s = [0.0f32; NR];
            _mm_storeu_ps(s.as_mut_ptr(), r[0]);
            _mm_storeu_ps(s.as_mut_ptr().add(4), r[1]);
            for (j, &v) in s[..nr].iter().enumerate() {
                *cr.add(j) = if beta != 0.0 { v + beta * *cr.add(j) } else { v };
            }
        }
    }
}
