//! The portable micro-kernel: one `R x 8` tile of C from a packed sliver of A
//! and a packed panel of B (`R <= MR = 6`), in plain Rust.
//!
//! The baseline of x86-64 is SSE2: 16 `xmm` registers of 4 floats, and no
//! fused multiply-add. The tile keeps `6 x 8` partial sums in 12 of them, two
//! per row; the row of B, the broadcast of A and the product take the other
//! four. Each step of the `k` loop is the same rank-1 update as in the
//! [AVX-512 kernel](super::avx512), written as loops over fixed-size arrays
//! that the compiler unrolls and keeps in registers (the generated loop has
//! no loads or stores of the accumulators):
//!
//! ```text
//! for i in 0..6:
//!     acc[i][0..8] += A_sliver[p, i] * B_panel[p, 0..8]    a multiply and an add per 4 floats
//! ```
//!
//! Without FMA and at half AVX2's width, this tier does at best half the
//! AVX2 kernel's work per cycle (and the broadcasts of A share the
//! floating-point ports on AMD's cores).
//!
//! On x86-64 the packed GEMM and the convolution's forward pass run
//! [`super::sse2_wide`]'s tile instead, on slivers of A rewritten once so that
//! SSE2 needs no shuffles to broadcast A.
//!
//! On aarch64 the same code compiles to NEON, where the multiply-add is one
//! fused instruction ([`PORTABLE_HAS_FMA`]). C is touched once, after the
//! `k` loop; edge tiles write only their `nr` valid columns.

use crate::backend::cpu::tier::PORTABLE_HAS_FMA;

/// Rows of a micro-tile (the broadcast operand, from packed A).
pub const MR: usize = 6;
/// Columns of a micro-tile: two 4-float SSE2 vectors (from packed B).
pub const NR: usize = 8;

/// The portable micro-kernel (see the module docs), for [`super::MicroKernel`].
#[derive(Clone, Copy, Debug)]
pub struct Portable;

impl super::MicroKernel for Portable {
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

    /// On x86-64 each value of A comes four times ([`super::sse2_wide`]), so that
    /// SSE2 broadcasts it with a plain load; the same sums, in the same order.
    #[cfg(target_arch = "x86_64")]
    const A_COPIES: usize = 4;

    #[cfg(target_arch = "x86_64")]
    unsafe fn tile_wide(mr: usize, kc: usize, a: *const f32, b: *const f32, c: *mut f32, rsc: usize, nr: usize, alpha: f32, beta: f32) {
        super::sse2_wide::tile(mr, kc, a, b, c, rsc, nr, alpha, beta)
    }

    /// Inside the image: one load of the 8 floats and an AND with the lanes'
    /// masks from a table (no branch per lane; SSE2 and NEON both vectorise it).
    /// At the image's ends only the masked-in lanes are read.
    #[inline]
    unsafe fn masked_row(dst: &mut [f32], src: *const f32, mask: u32, inside: bool) {
        let dst = &mut dst[..NR];
        if inside {
            let row = &*(src as *const [f32; NR]);
            let (lo, hi) = (&NIBBLE_MASKS[(mask & 0xF) as usize], &NIBBLE_MASKS[(mask >> 4 & 0xF) as usize]);
            for l in 0..NR {
                let keep = if l < 4 { lo[l] } else { hi[l - 4] };
                dst[l] = f32::from_bits(row[l].to_bits() & keep);
            }
        } else {
            for (l, d) in dst.iter_mut().enumerate() {
                *d = if mask >> l & 1 == 1 { *src.wrapping_add(l) } else { 0.0 };
            }
        }
    }
}

/// `NIBBLE_MASKS[m][l]`: all ones where bit `l` of the 4-bit `m` is set, else 0.
static NIBBLE_MASKS: [[u32; 4]; 16] = {
    let mut t = [[0u32; 4]; 16];
    let mut m = 0;
    while m < 16 {
        let mut l = 0;
        while l < 4 {
            t[m][l] = if m >> l & 1 == 1 { u32::MAX } else { 0 };
            l += 1;
        }
        m += 1;
    }
    t
};

/// `a · b + c`: one fused instruction where the baseline has it (aarch64), a
/// multiply and an add elsewhere (never a call to the software `fmaf`).
#[inline(always)]
fn mul_add(a: f32, b: f32, c: f32) -> f32 {
    if PORTABLE_HAS_FMA { a.mul_add(b, c) } else { a * b + c }
}

/// `C[0..R, 0..nr] = alpha * A_sliver · B_panel + beta * C` (beta = 0 never reads C).
///
/// # Safety
/// `a`, `b` must hold `kc * MR`, `kc * NR` floats and `c` must address an
/// `R x nr` tile with `nr <= NR`.
#[allow(clippy::too_many_arguments)] // a GEMM's sizes, operands and output
unsafe fn tile<const R: usize>(kc: usize, a: *const f32, b: *const f32, c: *mut f32, rsc: usize, nr: usize, alpha: f32, beta: f32) {
    let mut acc = [[0.0f32; NR]; R];
    let (a, b) = (std::slice::from_raw_parts(a, kc * MR), std::slice::from_raw_parts(b, kc * NR));
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        let bp: &[f32; NR] = bp.try_into().expect("a panel row");
        for (row, &ai) in acc.iter_mut().zip(ap) {
            for (s, &bj) in row.iter_mut().zip(bp) {
                *s = mul_add(ai, bj, *s);
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        // Raw pointers, not a slice: with beta = 0, C may be uninitialised memory.
        let cr = c.add(i * rsc);
        for (j, &s) in row[..nr].iter().enumerate() {
            let r = if alpha != 1.0 { alpha * s } else { s };
            *cr.add(j) = if beta != 0.0 { mul_add(beta, *cr.add(j), r) } else { r };
        }
    }
}
