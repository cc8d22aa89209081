//! A packed, cache-blocked SGEMM in the style of GotoBLAS / BLIS, on one thread.
//!
//! `C (m x n) = alpha * A (m x k) · B (k x n) + beta * C`, C row-major.
//!
//! # Why block and pack
//!
//! A naive triple loop does 2 flops per 2 loads and waits on memory. The fast
//! way keeps a `MR x NR` tile of C in registers while the `k` loop streams a
//! sliver of A (`MR x kc`) and a panel of B (`kc x NR`) through the
//! [micro-kernel](super::microkernel). For those streams to come from cache,
//! the matrices are cut into blocks sized for each level, and each block is
//! copied ("packed") once into the exact order the micro-kernel reads it:
//!
//! ```text
//! for ic in 0..m step MC                      rows of C
//!   for pc in 0..k step KC                    k block: kc <= KC
//!     pack A[ic.., pc..] (mc x kc)            into MR-row slivers: sliver s = [p][i] = A[ic + s*MR + i, pc + p]
//!     for jc in 0..n step NC                  B block (kc x nc), packed into NR-column panels
//!       if ic == 0: pack B[pc.., jc..]          (kept for later ic when B is small) panel t = [p][j] = B[pc + p, jc + t*NR + j]
//!       for each A sliver (MR rows)           stays in L1 (12 x 384 floats = 18 KiB)
//!         for each B panel (NR columns)       streams from L2 (the B block: 384 x 384 floats = 576 KiB)
//!           micro-kernel: C tile (MR x NR) = alpha * sliver · panel + beta' * C tile
//! ```
//!
//! The steps are balanced (k = 576 gives two k blocks of 288, not 384 + 192),
//! and a short last sliver is merged with the one before it and halved
//! (64 rows: four slivers of 12, two of 8), because a 4-row tile wastes most
//! of the kernel's work per load.
//!
//! `beta' = beta` for the first k block and 1 afterwards (the later blocks add
//! to what the first one wrote). Packing costs `O(mk + kn)` copies against
//! `O(mnk)` multiply-adds, and it also turns any strides (a transposed
//! operand is just swapped strides) into unit-stride streams, so one kernel
//! serves `A B`, `A Bᵀ`, `Aᵀ B`. Edge slivers and panels are padded with
//! zeros; the kernel's masked stores write only the valid part of C.
//!
//! Sizes for this machine (48 KiB L1d, 2 MiB L2 per core): the A sliver
//! (`MR x KC`) and one line of B per step fit L1; the packed B block
//! (`KC x NC`, 576 KiB) fits L2. The packed A block (`MC x KC`) need not: it is
//! read one sliver (18 KiB) at a time, from L2 or L3, for a whole B block's
//! worth of arithmetic. So MC is large (1032 rows): a B too large to keep
//! is packed again for every row block, and with MC = 384 that re-packing
//! took about a seventh of sgemm 2048's time (1032 made it 5% faster). KC and
//! NC were tuned on sgemm 256 to 2048 (one thread, on a machine shared with
//! other jobs, so to about 10 %): a B block of 256 x 512 ran at 60 % of this
//! speed for n >= 1024, while 384 x 384 and 256 x 256 were within noise of each
//! other; re-tune on another CPU.

use super::gemm::MatPtr;
use super::aligned;
use super::microkernel::{tile_rows, MR, NR};
use std::cell::RefCell;

/// Depth of a k block.
const KC: usize = 384;
/// Rows of C per A block (a multiple of MR).
const MC: usize = 1032;
/// Columns of a B block (a multiple of NR).
const NC: usize = 384;
/// The largest packed B (floats: 4 MiB) kept whole across row blocks of C.
const KEEP_B: usize = 1 << 20;

thread_local! {
    /// Per-thread packing buffers, reused across calls (no allocation per GEMM).
    static PACK: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// How `mc` rows split into slivers: full slivers of MR rows, and a short
/// remainder of at most 6 rows merged with the last full one and halved
/// (64 = 4 x 12 + 8 + 8, not 5 x 12 + 4): a 4-row tile does a third of the
/// FMAs per load of a 12-row one, an 8-row tile two thirds.
pub(crate) fn sliver_count(mc: usize) -> usize {
    mc.div_ceil(MR)
}

/// (first row, rows) of sliver `s` of an `mc`-row block.
pub(crate) fn sliver(mc: usize, s: usize) -> (usize, usize) {
    let (q, r) = (mc / MR, mc % MR);
    if r == 0 || s + 1 < q {
        return (s * MR, MR);
    }
    if r > 6 || q == 0 {
        return (s * MR, if s < q { MR } else { r });
    }
    let first = (MR + r).div_ceil(2);
    if s + 1 == q {
        ((q - 1) * MR, first)
    } else {
        ((q - 1) * MR + first, MR + r - first)
    }
}

/// `len` cut into equal blocks of at most `max`, each rounded up to a multiple of `unit`:
/// k = 576 gives two k blocks of 288 rather than 384 + 192.
fn balanced(len: usize, max: usize, unit: usize) -> usize {
    len.div_ceil(len.div_ceil(max)).div_ceil(unit) * unit
}

/// `dst[p][i] = src[i][p]` for `i < W`, `p < kc`, where `src` row `i` starts at
/// `src + i * stride` and is contiguous: packing a sliver of a row-major A or a
/// panel of a transposed B. Blocks of 16 x 16 are loaded as 16 row vectors,
/// transposed in registers ([`transpose16`]) and stored as 16 rows of `dst`; the
/// last `kc % 16` columns go one float at a time.
#[target_feature(enable = "avx512f")]
unsafe fn transpose_pack<const W: usize>(kc: usize, src: *const f32, stride: isize, dst: &mut [f32]) {
    use std::arch::x86_64::*;
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
unsafe fn transpose16(r: [std::arch::x86_64::__m512; 16]) -> [std::arch::x86_64::__m512; 16] {
    use std::arch::x86_64::*;
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

/// Copy A's `mc x kc` block into slivers: `dst[s][p][i] = A[row0(s) + i, p]`, zero-padded to MR.
pub(crate) unsafe fn pack_a(mc: usize, kc: usize, a: MatPtr, dst: &mut [f32]) {
    if a.rs == 1 && a.cs != 1 {
        // Columns of A are contiguous (A is a transposed row-major matrix, as dyᵀ in a
        // weight gradient): read each column once, front to back, and deal its pieces
        // to the slivers (reading down one sliver at a time instead touches a new
        // column at every step, which the prefetcher does not follow; see `pack_b`).
        let slivers = sliver_count(mc);
        for p in 0..kc {
            let col = std::slice::from_raw_parts(a.ptr.offset(p as isize * a.cs), mc);
            for s in 0..slivers {
                let (row0, rows) = self::sliver(mc, s);
                let at = s * MR * kc + p * MR;
                super::copy_short::<MR>(&mut dst[at..at + rows], &col[row0..row0 + rows]);
                dst[at + rows..at + MR].fill(0.0);
            }
        }
        return;
    }
    for (s, sliver) in dst.chunks_exact_mut(MR * kc).take(sliver_count(mc)).enumerate() {
        let (row0, rows) = self::sliver(mc, s);
        let a0 = a.ptr.offset(row0 as isize * a.rs);
        if a.cs == 1 && rows == MR {
            // Rows of A are contiguous: a transpose, see `transpose_pack`.
            transpose_pack::<MR>(kc, a0, a.rs, sliver);
        } else if a.cs == 1 {
            // A short edge sliver: read each row once, write it down a column of the sliver.
            for i in 0..rows {
                let src = std::slice::from_raw_parts(a0.offset(i as isize * a.rs), kc);
                for (p, &v) in src.iter().enumerate() {
                    sliver[p * MR + i] = v;
                }
            }
        } else {
            for p in 0..kc {
                for i in 0..rows {
                    sliver[p * MR + i] = *a0.offset(i as isize * a.rs + p as isize * a.cs);
                }
            }
        }
        if rows < MR {
            for p in 0..kc {
                sliver[p * MR + rows..(p + 1) * MR].fill(0.0);
            }
        }
    }
}

/// Copy B's `kc x nc` block into NR-column panels: `dst[t][p][j] = B[p, t*NR + j]`, zero-padded.
unsafe fn pack_b(kc: usize, nc: usize, b: MatPtr, dst: &mut [f32]) {
    if b.cs == 1 {
        // Rows of B are contiguous: read each row once, front to back, and deal its
        // NR-float pieces out to the panels. (Reading down one panel at a time
        // instead touches a new row at every step, a stride the hardware
        // prefetcher does not follow once B is larger than L2: about a fifth of
        // sgemm 2048's time went to those misses.)
        for p in 0..kc {
            let row = std::slice::from_raw_parts(b.ptr.offset(p as isize * b.rs), nc);
            for (t, piece) in row.chunks(NR).enumerate() {
                let at = t * NR * kc + p * NR;
                super::copy_short::<NR>(&mut dst[at..at + piece.len()], piece);
                dst[at + piece.len()..at + NR].fill(0.0);
            }
        }
        return;
    }
    for (t, panel) in dst.chunks_exact_mut(NR * kc).take(nc.div_ceil(NR)).enumerate() {
        let cols = NR.min(nc - t * NR);
        let b0 = b.ptr.offset((t * NR) as isize * b.cs);
        if cols == NR {
            // Columns of B are contiguous (B is a transposed row-major matrix, as the
            // weight of a linear layer `x Wᵀ`): a transpose, see `transpose_pack`.
            transpose_pack::<NR>(kc, b0, b.cs, panel);
        } else {
            // A narrow edge panel of a transposed B.
            for j in 0..cols {
                let col = b0.offset(j as isize * b.cs);
                for p in 0..kc {
                    panel[p * NR + j] = *col.offset(p as isize * b.rs);
                }
            }
            if cols < NR {
                for p in 0..kc {
                    panel[p * NR + cols..(p + 1) * NR].fill(0.0);
                }
            }
        }
    }
}

/// `C = alpha * A B + beta * C` on the calling thread, C row-major (`csc == 1`).
///
/// # Safety
/// The CPU must support AVX-512F; A, B, C must address valid memory for the
/// sizes and strides, C must not alias A or B; `m, n, k >= 1`.
pub unsafe fn gemm(m: usize, k: usize, n: usize, alpha: f32, a: MatPtr, b: MatPtr, beta: f32, c: *mut f32, rsc: usize) {
    PACK.with(|bufs| {
        let mut bufs = bufs.borrow_mut();
        let (abuf, bbuf) = &mut *bufs;
        let (mc_step, kc_step, nc_step) = (balanced(m, MC, MR), balanced(k, KC, 1), balanced(n, NC, NR));
        // A B of at most KEEP_B floats is packed once, block by block while the first
        // row block of C uses it (so each block is fresh in cache for that use), and
        // kept for the others: block (pc, jc) (kc x nc, NR-column panels) sits at
        // pc * n_pad + jc * kc (nc_step is a multiple of NR, so only a row's last block
        // is padded). Packing it again for every row block made the linear layers of a
        // transformer re-pack their weight m / MC times. A larger B is packed per row
        // block into one block-sized buffer, which then stays in L2.
        let n_pad = n.div_ceil(NR) * NR;
        let keep = k * n_pad <= KEEP_B;
        let ball = aligned(bbuf, if keep { k * n_pad } else { kc_step * nc_step });
        for ic in (0..m).step_by(mc_step) {
            let mc = mc_step.min(m - ic);
            for pc in (0..k).step_by(kc_step) {
                let kc = kc_step.min(k - pc);
                let beta_p = if pc == 0 { beta } else { 1.0 };
                let apack = aligned(abuf, sliver_count(mc) * MR * kc);
                pack_a(mc, kc, MatPtr { ptr: a.ptr.offset(ic as isize * a.rs + pc as isize * a.cs), ..a }, apack);
                for jc in (0..n).step_by(nc_step) {
                    let nc = nc_step.min(n - jc);
                    let start = if keep { pc * n_pad + jc * kc } else { 0 };
                    let bpack = &mut ball[start..start + nc.div_ceil(NR) * NR * kc];
                    if ic == 0 || !keep {
                        pack_b(kc, nc, MatPtr { ptr: b.ptr.offset(pc as isize * b.rs + jc as isize * b.cs), ..b }, bpack);
                    }
                    let bpack = &*bpack;
                    // Each A sliver stays in L1 while every B panel of the block streams past it.
                    for (s, sliver_buf) in apack.chunks_exact(MR * kc).enumerate() {
                        let (row0, mr) = sliver(mc, s);
                        for (t, panel) in bpack.chunks_exact(NR * kc).enumerate() {
                            let nr = NR.min(nc - t * NR);
                            let ct = c.add((ic + row0) * rsc + jc + t * NR);
                            tile_rows(mr, kc, sliver_buf.as_ptr(), panel.as_ptr(), ct, rsc, nr, alpha, beta_p);
                        }
                    }
                }
            }
        }
    });
}
