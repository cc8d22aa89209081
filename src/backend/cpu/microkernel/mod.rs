//! The GEMM micro-kernels, one per [CPU tier](super::tier): the innermost
//! loop of the packed GEMM ([`super::packed_gemm`]) and of the implicit
//! convolution ([`super::conv::implicit`]).
//!
//! Each keeps an `MR x NR` tile of C in vector registers for a whole `k`
//! loop of rank-1 updates (see [`avx512`] for the picture), sized to the
//! registers its tier has:
//!
//! | kernel | tier | tile | accumulators |
//! |---|---|---|---|
//! | [`avx512::Avx512`] | AVX-512 | 12 x 32 | 24 of the 32 `zmm` (16 floats) |
//! | [`avx2::Avx2`] | AVX2 + FMA | 6 x 16 | 12 of the 16 `ymm` (8 floats) |
//! | [`portable::Portable`] | the baseline | 6 x 8 | 12 of the 16 `xmm` (4 floats), in plain Rust |
//!
//! Everything around the tile (blocking, packing, the edges) is shared and
//! reads the tile's size from [`MicroKernel::MR`] and [`MicroKernel::NR`].

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
pub mod portable;
#[cfg(target_arch = "x86_64")]
pub mod sse2_wide;

#[cfg(target_arch = "x86_64")]
pub use avx2::Avx2;
#[cfg(target_arch = "x86_64")]
pub use avx512::Avx512;
pub use portable::Portable;

/// A GEMM micro-kernel of one CPU tier.
pub trait MicroKernel: Copy + Send + Sync + 'static {
    /// Rows of a micro-tile (the broadcast operand, from packed A).
    const MR: usize;
    /// Columns of a micro-tile (the vector operand, from packed B); at most 32.
    const NR: usize;

    /// `C[0..mr, 0..nr] = alpha * A_sliver · B_panel + beta * C` (beta = 0 never reads C).
    ///
    /// `a` is a packed sliver (`kc` steps of `MR` floats, rows past `mr`
    /// unused), `b` a packed panel (`kc` steps of `NR` floats), `c` row-major
    /// with row stride `rsc`.
    ///
    /// # Safety
    /// The CPU must support the kernel's tier; `1 <= mr <= MR`; `a`, `b` must
    /// hold `kc * MR`, `kc * NR` floats and `c` must address an `mr x nr` tile
    /// with `nr <= NR`.
    #[allow(clippy::too_many_arguments)] // a GEMM's sizes, operands and output
    unsafe fn tile(mr: usize, kc: usize, a: *const f32, b: *const f32, c: *mut f32, rsc: usize, nr: usize, alpha: f32, beta: f32);

    /// How many copies of each value of A [`Self::tile_wide`] reads: 1 (the packed
    /// sliver as it is) for a tier that broadcasts from memory; 4 for the portable
    /// kernel on x86-64, where SSE2 has no broadcast load ([`sse2_wide`]).
    const A_COPIES: usize = 1;

    /// [`Self::tile`] on a sliver [widened](widen) to `A_COPIES` copies of each
    /// value (`kc` steps of `MR * A_COPIES` floats). Callers widen a sliver once
    /// and run it against many panels.
    ///
    /// # Safety
    /// As [`Self::tile`], with `a` holding `kc * MR * A_COPIES` floats.
    #[allow(clippy::too_many_arguments)] // a GEMM's sizes, operands and output
    unsafe fn tile_wide(mr: usize, kc: usize, a: *const f32, b: *const f32, c: *mut f32, rsc: usize, nr: usize, alpha: f32, beta: f32) {
        Self::tile(mr, kc, a, b, c, rsc, nr, alpha, beta)
    }

    /// `dst[p][i] = src[i][p]` for `i < w`, `p < kc`, where `src` row `i`
    /// starts at `src + i * stride` and is contiguous: packing a sliver of a
    /// row-major A (`w = MR`) or a panel of a transposed B (`w = NR`).
    ///
    /// # Safety
    /// The CPU must support the kernel's tier; the `w` rows of `kc` floats must
    /// be readable; `dst` holds at least `kc * w` floats.
    unsafe fn transpose_pack(w: usize, kc: usize, src: *const f32, stride: isize, dst: &mut [f32]) {
        transpose_pack_scalar(w, kc, src, stride, dst)
    }

    /// `dst[l] = src[l]` where bit `l` of `mask` is set, else 0, for `l < NR`:
    /// one panel row of the implicit convolution, whose masked-off lanes fall
    /// in the padding. `inside` says that all `NR` floats at `src` are
    /// readable (then plain loads may be used); otherwise only the masked-in
    /// lanes are, and only they are read.
    ///
    /// # Safety
    /// As stated; the CPU must support the kernel's tier; `dst` holds `NR` floats.
    #[inline]
    unsafe fn masked_row(dst: &mut [f32], src: *const f32, mask: u32, inside: bool) {
        let _ = inside;
        for (l, d) in dst[..Self::NR].iter_mut().enumerate() {
            *d = if mask >> l & 1 == 1 { *src.wrapping_add(l) } else { 0.0 };
        }
    }

    /// Panel rows `first ..` of a stride-1 "same" convolution's `col_n`, one
    /// [`Self::masked_row`] each, `dst.len() / NR` of them: row `r` is `(c, tap) =
    /// (r / KK, r % KK)` and reads plane `c` of the image `x (C, hw)` at
    /// `shifts[tap]` (the panel's `KK` taps). With `merge`, each row is OR-ed
    /// into what `dst` holds (a panel whose lanes come from two images).
    ///
    /// # Safety
    /// The CPU must support the kernel's tier; `x` holds the image's planes and
    /// each shift reads as [`Self::masked_row`] allows.
    unsafe fn shifted_rows(dst: &mut [f32], x: *const f32, hw: usize, first: usize, shifts: &[Shift], merge: bool) {
        shifted_rows::<Self>(dst, x, hw, first, shifts, merge)
    }
}

/// Where one tap of a stride-1 "same" convolution reads for one panel of
/// output pixels (see [`crate::backend::cpu::conv::implicit`]): `NR` floats of a
/// plane from `start`, the lanes of `mask` kept and the others (the padding)
/// zeroed; `inside` when all `NR` floats lie in the plane.
#[derive(Clone, Copy, Debug, Default)]
pub struct Shift {
    /// Plane offset of the panel's first pixel for this tap (may be negative).
    pub start: isize,
    /// Bit `l` set where lane `l` lies inside the image.
    pub mask: u32,
    /// Whether `start .. start + NR` lies inside the plane.
    pub inside: bool,
}

impl Shift {
    /// The read of `nr` floats from `start` with the lanes of `mask`, in a plane of `plane` floats.
    pub fn new(start: isize, mask: u32, nr: usize, plane: usize) -> Shift {
        Shift { start, mask, inside: start >= 0 && start as usize + nr <= plane }
    }
}

/// The rows of [`MicroKernel::shifted_rows`], for each tier to compile with
/// its features (so that its [`MicroKernel::masked_row`] is inlined into the loop).
///
/// # Safety
/// As [`MicroKernel::shifted_rows`].
#[inline(always)]
pub(crate) unsafe fn shifted_rows<K: MicroKernel>(dst: &mut [f32], x: *const f32, hw: usize, first: usize, shifts: &[Shift], merge: bool) {
    if merge {
        shifted_rows_as::<K, true>(dst, x, hw, first, shifts)
    } else {
        shifted_rows_as::<K, false>(dst, x, hw, first, shifts)
    }
}

#[inline(always)]
unsafe fn shifted_rows_as<K: MicroKernel, const MERGE: bool>(dst: &mut [f32], x: *const f32, hw: usize, first: usize, shifts: &[Shift]) {
    let kk = shifts.len();
    let mut lanes = [0.0f32; 32]; // NR <= 32
    // row r of the panel is (c, tap) = (r / KK, r % KK), stepped without a division per row
    let (mut c, mut tap) = (first / kk, first % kk);
    for row in dst.chunks_exact_mut(K::NR) {
        let s = shifts[tap];
        let src = x.wrapping_add(c * hw).wrapping_offset(s.start);
        if MERGE {
            // a masked-off lane is +0.0, all bits zero: OR puts the lanes of both reads together
            K::masked_row(&mut lanes, src, s.mask, s.inside);
            for (d, e) in row.iter_mut().zip(&lanes) {
                *d = f32::from_bits(d.to_bits() | e.to_bits());
            }
        } else {
            K::masked_row(row, src, s.mask, s.inside);
        }
        tap += 1;
        if tap == kk {
            (c, tap) = (c + 1, 0);
        }
    }
}

/// Packed slivers of A in the layout [`MicroKernel::tile_wide`] reads:
/// `wide[j * A_COPIES + r] = a[j]` for every `r < A_COPIES`, into `buf`; `a` itself
/// when the kernel reads one copy.
pub fn widen<'a, K: MicroKernel>(a: &'a [f32], buf: &'a mut Vec<f32>) -> &'a [f32] {
    if K::A_COPIES == 1 {
        return a;
    }
    buf.resize(a.len() * K::A_COPIES, 0.0);
    for (copies, &v) in buf.chunks_exact_mut(K::A_COPIES).zip(a) {
        copies.fill(v); // one vector store per value where A_COPIES is a vector's width
    }
    buf
}

/// [`MicroKernel::transpose_pack`] one float at a time: `w` streams read front to back.
///
/// # Safety
/// As [`MicroKernel::transpose_pack`].
pub(crate) unsafe fn transpose_pack_scalar(w: usize, kc: usize, src: *const f32, stride: isize, dst: &mut [f32]) {
    for (i, col) in (0..w).map(|i| (i, std::slice::from_raw_parts(src.offset(i as isize * stride), kc))) {
        for (p, &v) in col.iter().enumerate() {
            dst[p * w + i] = v;
        }
    }
}
