//! A packed, cache-blocked SGEMM in the style of GotoBLAS / BLIS, on one thread,
//! generic over the [micro-kernel](super::microkernel) of the CPU tier.
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
//!       for each A sliver (MR rows)           stays in L1 (AVX-512: 12 x 384 floats = 18 KiB)
//!         for each B panel (NR columns)       streams from L2 (the B block: 384 x 384 floats = 576 KiB)
//!           micro-kernel: C tile (MR x NR) = alpha * sliver · panel + beta' * C tile
//! ```
//!
//! The steps are balanced (k = 576 gives two k blocks of 288, not 384 + 192),
//! and a short last sliver is merged with the one before it and halved
//! (AVX-512's MR = 12, 64 rows: four slivers of 12, two of 8), because a
//! 4-row tile wastes most of the kernel's work per load.
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
//! other; re-tune on another CPU. The AVX2 and portable kernels use the
//! same blocks (their tiles are narrower, so each sliver and panel is smaller still).

use super::gemm::MatPtr;
use super::aligned;
use super::microkernel::{widen, MicroKernel};
use std::cell::RefCell;

/// Depth of a k block.
const KC: usize = 384;
/// Rows of C per A block (a multiple of every kernel's MR: 12 and 6).
const MC: usize = 1032;
/// Columns of a B block (a multiple of every kernel's NR: 32, 16, 8).
const NC: usize = 384;
/// The largest packed B (floats: 4 MiB) kept whole across row blocks of C.
const KEEP_B: usize = 1 << 20;

thread_local! {
    /// Per-thread packing buffers, reused across calls (no allocation per GEMM):
    /// A, B and one sliver of A [widened](widen) for the kernel.
    static PACK: RefCell<(Vec<f32>, Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// How `mc` rows split into slivers of the kernel `K`: full slivers of MR
/// rows, and a short remainder of at most MR / 2 rows merged with the last
/// full one and halved (AVX-512: 64 = 4 x 12 + 8 + 8, not 5 x 12 + 4): a 4-row
/// tile does a third of the FMAs per load of a 12-row one, an 8-row tile two thirds.
pub(crate) fn sliver_count<K: MicroKernel>(mc: usize) -> usize {
    mc.div_ceil(K::MR)
}

/// (first row, rows) of sliver `s` of an `mc`-row block.
pub(crate) fn sliver<K: MicroKernel>(mc: usize, s: usize) -> (usize, usize) {
    let mr = K::MR;
    let (q, r) = (mc / mr, mc % mr);
    if r == 0 || s + 1 < q {
        return (s * mr, mr);
    }
    if r > mr / 2 || q == 0 {
        return (s * mr, if s < q { mr } else { r });
    }
    let first = (mr + r).div_ceil(2);
    if s + 1 == q {
        ((q - 1) * mr, first)
    } else {
        ((q - 1) * mr + first, mr + r - first)
    }
}

/// `len` cut into equal blocks of at most `max`, each rounded up to a multiple of `unit`:
/// k = 576 gives two k blocks of 288 rather than 384 + 192.
fn balanced(len: usize, max: usize, unit: usize) -> usize {
    len.div_ceil(len.div_ceil(max)).div_ceil(unit) * unit
}

/// Copy A's `mc x kc` block into slivers: `dst[s][p][i] = A[row0(s) + i, p]`, zero-padded to MR.
pub(crate) unsafe fn pack_a<K: MicroKernel>(mc: usize, kc: usize, a: MatPtr, dst: &mut [f32]) {
    let mr = K::MR;
    if a.rs == 1 && a.cs != 1 {
        // Columns of A are contiguous (A is a transposed row-major matrix, as dyᵀ in a
        // weight gradient): read each column once, front to back, and deal its pieces
        // to the slivers (reading down one sliver at a time instead touches a new
        // column at every step, which the prefetcher does not follow; see `pack_b`).
        let slivers = sliver_count::<K>(mc);
        // the slivers of MR rows (all but the last one or two) as fixed-size copies
        let full = (0..slivers).take_while(|&s| self::sliver::<K>(mc, s).1 == mr).count();
        for p in 0..kc {
            let col = std::slice::from_raw_parts(a.ptr.offset(p as isize * a.cs), mc);
            deal(mr, kc, p, col, full, dst);
            for s in full..slivers {
                let (row0, rows) = self::sliver::<K>(mc, s);
                let at = s * mr * kc + p * mr;
                super::copy_short(&mut dst[at..at + rows], &col[row0..row0 + rows]);
                dst[at + rows..at + mr].fill(0.0);
            }
        }
        return;
    }
    for (s, sliver) in dst.chunks_exact_mut(mr * kc).take(sliver_count::<K>(mc)).enumerate() {
        let (row0, rows) = self::sliver::<K>(mc, s);
        let a0 = a.ptr.offset(row0 as isize * a.rs);
        if a.cs == 1 && rows == mr {
            // Rows of A are contiguous: a transpose, see `MicroKernel::transpose_pack`.
            K::transpose_pack(mr, kc, a0, a.rs, sliver);
        } else if a.cs == 1 {
            // A short edge sliver: read each row once, write it down a column of the sliver.
            for i in 0..rows {
                let src = std::slice::from_raw_parts(a0.offset(i as isize * a.rs), kc);
                for (p, &v) in src.iter().enumerate() {
                    sliver[p * mr + i] = v;
                }
            }
        } else {
            for p in 0..kc {
                for i in 0..rows {
                    sliver[p * mr + i] = *a0.offset(i as isize * a.rs + p as isize * a.cs);
                }
            }
        }
        if rows < mr {
            for p in 0..kc {
                sliver[p * mr + rows..(p + 1) * mr].fill(0.0);
            }
        }
    }
}

/// Step `p` of the first `count` blocks of `w` (MR slivers or NR panels, each
/// `w * kc` floats): `dst[t][p][..w] = src[t*w..(t + 1)*w]`. The width is the
/// tier's MR or NR, so each piece is a copy of a length known at compile time,
/// moved by vector loads and stores in the loop (a call to [`super::copy_short`]
/// and a zero fill per piece cost more than the copy: the weight gradients of
/// the prior's width-64 layers spent a tenth of their time there).
#[inline(always)]
fn deal(w: usize, kc: usize, p: usize, src: &[f32], count: usize, dst: &mut [f32]) {
    match w {
        32 => deal_fixed::<32>(kc, p, src, count, dst),
        16 => deal_fixed::<16>(kc, p, src, count, dst),
        12 => deal_fixed::<12>(kc, p, src, count, dst),
        8 => deal_fixed::<8>(kc, p, src, count, dst),
        6 => deal_fixed::<6>(kc, p, src, count, dst),
        _ => {
            for t in 0..count {
                let at = t * w * kc + p * w;
                dst[at..at + w].copy_from_slice(&src[t * w..(t + 1) * w]);
            }
        }
    }
}

#[inline(always)]
fn deal_fixed<const W: usize>(kc: usize, p: usize, src: &[f32], count: usize, dst: &mut [f32]) {
    for (t, piece) in src.chunks_exact(W).take(count).enumerate() {
        let at = t * W * kc + p * W;
        let d: &mut [f32; W] = (&mut dst[at..at + W]).try_into().expect("W floats");
        *d = piece.try_into().expect("W floats");
    }
}

/// Copy B's `kc x nc` block into NR-column panels: `dst[t][p][j] = B[p, t*NR + j]`, zero-padded.
unsafe fn pack_b<K: MicroKernel>(kc: usize, nc: usize, b: MatPtr, dst: &mut [f32]) {
    let nr = K::NR;
    if b.cs == 1 {
        // Rows of B are contiguous: read each row once, front to back, and deal its
        // NR-float pieces out to the panels. (Reading down one panel at a time
        // instead touches a new row at every step, a stride the hardware
        // prefetcher does not follow once B is larger than L2: about a fifth of
        // sgemm 2048's time went to those misses.)
        let full = nc / nr;
        for p in 0..kc {
            let row = std::slice::from_raw_parts(b.ptr.offset(p as isize * b.rs), nc);
            deal(nr, kc, p, row, full, dst);
            if full < nc.div_ceil(nr) {
                let (piece, at) = (&row[full * nr..], full * nr * kc + p * nr);
                super::copy_short(&mut dst[at..at + piece.len()], piece);
                dst[at + piece.len()..at + nr].fill(0.0);
            }
        }
        return;
    }
    for (t, panel) in dst.chunks_exact_mut(nr * kc).take(nc.div_ceil(nr)).enumerate() {
        let cols = nr.min(nc - t * nr);
        let b0 = b.ptr.offset((t * nr) as isize * b.cs);
        if cols == nr {
            // Columns of B are contiguous (B is a transposed row-major matrix, as the
            // weight of a linear layer `x Wᵀ`): a transpose, see `MicroKernel::transpose_pack`.
            K::transpose_pack(nr, kc, b0, b.cs, panel);
        } else {
            // A narrow edge panel of a transposed B.
            for j in 0..cols {
                let col = b0.offset(j as isize * b.cs);
                for p in 0..kc {
                    panel[p * nr + j] = *col.offset(p as isize * b.rs);
                }
            }
            if cols < nr {
                for p in 0..kc {
                    panel[p * nr + cols..(p + 1) * nr].fill(0.0);
                }
            }
        }
    }
}

/// `C = alpha * A B + beta * C` on the calling thread, C row-major (`csc == 1`),
/// on the micro-kernel `K`.
///
/// # Safety
/// The CPU must support `K`'s tier; A, B, C must address valid memory for the
/// sizes and strides, C must not alias A or B; `m, n, k >= 1`.
pub unsafe fn gemm<K: MicroKernel>(m: usize, k: usize, n: usize, alpha: f32, a: MatPtr, b: MatPtr, beta: f32, c: *mut f32, rsc: usize) {
    PACK.with(|bufs| {
        let mut bufs = bufs.borrow_mut();
        let (abuf, bbuf, wbuf) = &mut *bufs;
        let (mr, nr) = (K::MR, K::NR);
        let (mc_step, kc_step, nc_step) = (balanced(m, MC, mr), balanced(k, KC, 1), balanced(n, NC, nr));
        // A B of at most KEEP_B floats is packed once, block by block while the first
        // row block of C uses it (so each block is fresh in cache for that use), and
        // kept for the others: block (pc, jc) (kc x nc, NR-column panels) sits at
        // pc * n_pad + jc * kc (nc_step is a multiple of NR, so only a row's last block
        // is padded). Packing it again for every row block made the linear layers of a
        // transformer re-pack their weight m / MC times. A larger B is packed per row
        // block into one block-sized buffer, which then stays in L2.
        let n_pad = n.div_ceil(nr) * nr;
        let keep = k * n_pad <= KEEP_B;
        let ball = aligned(bbuf, if keep { k * n_pad } else { kc_step * nc_step });
        for ic in (0..m).step_by(mc_step) {
            let mc = mc_step.min(m - ic);
            for pc in (0..k).step_by(kc_step) {
                let kc = kc_step.min(k - pc);
                let beta_p = if pc == 0 { beta } else { 1.0 };
                let apack = aligned(abuf, sliver_count::<K>(mc) * mr * kc);
                pack_a::<K>(mc, kc, MatPtr { ptr: a.ptr.offset(ic as isize * a.rs + pc as isize * a.cs), ..a }, apack);
                for jc in (0..n).step_by(nc_step) {
                    let nc = nc_step.min(n - jc);
                    let start = if keep { pc * n_pad + jc * kc } else { 0 };
                    let bpack = &mut ball[start..start + nc.div_ceil(nr) * nr * kc];
                    if ic == 0 || !keep {
                        pack_b::<K>(kc, nc, MatPtr { ptr: b.ptr.offset(pc as isize * b.rs + jc as isize * b.cs), ..b }, bpack);
                    }
                    let bpack = &*bpack;
                    // Each A sliver stays in L1 while every B panel of the block streams past it.
                    for (s, sliver_buf) in apack.chunks_exact(mr * kc).enumerate() {
                        let (row0, rows) = sliver::<K>(mc, s);
                        let wide = widen::<K>(sliver_buf, wbuf);
                        for (t, panel) in bpack.chunks_exact(nr * kc).enumerate() {
                            let cols = nr.min(nc - t * nr);
                            let ct = c.add((ic + row0) * rsc + jc + t * nr);
                            K::tile_wide(rows, kc, wide.as_ptr(), panel.as_ptr(), ct, rsc, cols, alpha, beta_p);
                        }
                    }
                }
            }
        }
    });
}
