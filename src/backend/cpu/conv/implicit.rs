//! Convolution as an implicit GEMM on the micro-kernel of the CPU tier
//! ([`crate::backend::cpu::microkernel`]): the im2col matrix is never written out.
//!
//! The packed GEMM ([`crate::backend::cpu::packed_gemm`]) copies its right
//! operand into panels of NR columns (AVX-512: 32, AVX2: 16, portable: 8)
//! before the micro-kernel reads them.
//! For a convolution that operand is `col_n`, and each panel of it can be
//! packed straight from the image, used by every sliver of the packed weights
//! while it is in cache, and forgotten:
//!
//! ```text
//! y_n (OC, OHW) = W (OC, CKK) · col_n (CKK, OHW)
//! panel t: [(c, i, j)][l] = x_n[c, src(i, j, q)],  q = NR t + l     (0 where the tap is in the padding)
//! ```
//!
//! `src(i, j, q)` is the input pixel under output pixel `q` for tap `(i, j)`
//! (`Taps`). For a stride-1 convolution whose output is as wide as its input
//! (a "same" convolution), `src(i, j, q) = q + (i - p) W + (j - p)`: a panel row
//! is NR consecutive floats of one input plane, read by vector loads whose
//! lane masks zero the padding ([`MicroKernel::masked_row`]). A panel's rows
//! are packed by one loop compiled for the tier ([`MicroKernel::shifted_rows`]),
//! so that the masked load is inlined: called once per row, it cost as much as
//! the arithmetic of a 16-channel layer's panel.
//!
//! The gradients are GEMMs of the same kind:
//!
//! ```text
//! dX (stride 1)  dX_n = conv(dY_n, W'),  W'[c, o, i, j] = W[o, c, KH-1-i, KW-1-j], padding KH-1-p
//! dW             dW' (OC, KK*C) += dY_n (OC, OHW) · colᵀ_n (OHW, KK*C)
//!                colᵀ_n[q, (i, j, c)] = xᵀ_n[src(i, j, q), c],  xᵀ_n (H*W, C) the image channels-last
//! ```
//!
//! dX of a stride-1 convolution is the full correlation of dY with the
//! flipped kernel (each input pixel collects every output it fed), which is
//! the forward pass again. dW's GEMM runs along output pixels, so its panels
//! hold NR columns of `(tap, channel)`: with the image transposed to
//! channels-last, a panel row is one contiguous copy again. dW' is dW with its
//! columns in `(i, j, c)` order; it is put back at the end. A strided
//! convolution whose stride divides the kernel is, where it pays, a stride-1
//! convolution of the image space-to-depth ([`super::strided`], forward and
//! dX); any other strided convolution's dX goes through [`super::im2col`]'s col2im.

use super::{im2col, images_per_task, layout, span, strided, with_scratch, ConvGeom};
use crate::backend::cpu::copy_short;
use crate::backend::cpu::gemm::MatPtr;
use crate::backend::cpu::microkernel::{widen, MicroKernel, Shift};
use crate::backend::cpu::packed_gemm::{pack_a, sliver, sliver_count};
use rayon::prelude::*;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::ops::Range;

/// Depth of a k block: the block of a B panel (KC x NR floats, AVX-512: 32 KiB) stays
/// in L1 while every sliver of A passes over it. Depths are balanced: 576 gives
/// three blocks of 192, 840 four of 210. (Tuned on the 64-channel 3x3 conv of
/// `bench_engine`, one thread: 256 ran 5 to 10% faster than 400 or 600.)
pub(super) const KC: usize = 256;

/// Where each tap of the kernel reads in the input, for panels of `K::NR` pixels.
struct Taps<K> {
    /// Output pixels OH * OW.
    ohw: usize,
    /// `src[tap * OHW + q]`, `tap = i * KW + j`: the input pixel `iy * W + ix`
    /// under output pixel `q`, or -1 where it falls in the padding.
    src: Vec<i32>,
    /// For a stride-1 convolution with OW == W, per `(panel, tap)`: where the
    /// tap reads for the panel's pixels (`shifted[t * KK + tap]`).
    shifted: Option<Vec<Shift>>,
    kernel: PhantomData<K>,
}

impl<K: MicroKernel> Taps<K> {
    fn new(g: &ConvGeom) -> Taps<K> {
        let nr = K::NR;
        let (oh, ow) = (g.oh(), g.ow());
        let ohw = oh * ow;
        let mut src = Vec::with_capacity(g.kh * g.kw * ohw);
        for i in 0..g.kh {
            for j in 0..g.kw {
                for y in 0..oh {
                    for x in 0..ow {
                        // (iy, ix) = (y s + i - p, x s + j - p)
                        let iy = (y * g.stride + i) as isize - g.pad as isize;
                        let ix = (x * g.stride + j) as isize - g.pad as isize;
                        let inside = (0..g.h as isize).contains(&iy) && (0..g.w as isize).contains(&ix);
                        src.push(if inside { (iy * g.w as isize + ix) as i32 } else { -1 });
                    }
                }
            }
        }
        let panels = ohw.div_ceil(nr);
        let shifted = (g.stride == 1 && ow == g.w).then(|| {
            let kk = g.kh * g.kw;
            let mut v = vec![Shift::default(); panels * kk];
            for (tap, row) in src.chunks_exact(ohw).enumerate() {
                let shift = g.same_shift(tap / g.kw, tap % g.kw);
                for t in 0..panels {
                    let lanes = &row[t * nr..ohw.min((t + 1) * nr)];
                    debug_assert!(lanes.iter().enumerate().all(|(l, &s)| s < 0 || s as isize == (t * nr + l) as isize + shift));
                    let mask = lanes.iter().enumerate().filter(|&(_, &s)| s >= 0).fold(0u32, |m, (l, _)| m | 1 << l);
                    let start = (t * nr) as isize + shift;
                    v[t * kk + tap] = Shift::new(start, mask, nr, g.h * g.w);
                }
            }
            v
        });
        Taps { ohw, src, shifted, kernel: PhantomData }
    }
}

/// Pack rows `rows` of panel `t` of `col_n (CKK, OHW)` from one image `x (C, H*W)`:
/// `panel[r - rows.start][l] = col_n[r, t*NR + l]`, zero past the last pixel.
///
/// # Safety
/// The CPU must support `K`'s tier.
unsafe fn pack_pixels<K: MicroKernel>(g: &ConvGeom, taps: &Taps<K>, x: &[f32], t: usize, rows: Range<usize>, panel: &mut [f32]) {
    let nr = K::NR;
    let (hw, kk) = (g.h * g.w, g.kh * g.kw);
    let cols = nr.min(taps.ohw - t * nr);
    if let Some(shifted) = &taps.shifted {
        // NR floats of a plane from each tap's start, the lanes in the padding zeroed.
        // Only the masked-in lanes are read when the run crosses an end of the plane.
        return K::shifted_rows(&mut panel[..rows.len() * nr], x.as_ptr(), hw, rows.start, &shifted[t * kk..(t + 1) * kk], false);
    }
    // row r of col_n is (c, tap) = (r / KK, r % KK), stepped without a division per row
    let (mut c, mut tap) = (rows.start / kk, rows.start % kk);
    for row in panel.chunks_exact_mut(nr).take(rows.len()) {
        let plane = &x[c * hw..(c + 1) * hw];
        let src = &taps.src[tap * taps.ohw + t * nr..][..cols];
        for (d, &s) in row.iter_mut().zip(src) {
            *d = if s >= 0 { plane[s as usize] } else { 0.0 };
        }
        row[cols..].fill(0.0);
        tap += 1;
        if tap == kk {
            (c, tap) = (c + 1, 0);
        }
    }
}

/// Pack rows `rows` (output pixels) of panel `t` of `colᵀ_n (OHW, KK*C)`, columns in
/// `(tap, channel)` order, from the channels-last image `xt (H*W, C)`:
/// `panel[q - rows.start][l] = colᵀ_n[q, t*NR + l]`. Past OHW the rows go on into
/// the next image of a run, `xt` holding the run's images one after another.
fn pack_taps<K: MicroKernel>(g: &ConvGeom, taps: &Taps<K>, xt: &[f32], t: usize, rows: Range<usize>, panel: &mut [f32]) {
    let (c, nr) = (g.c, K::NR);
    let cols = nr.min(g.kh * g.kw * c - t * nr);
    // The panel's columns as runs of channels of one tap: (tap, first channel, first lane, length).
    let mut runs = [(0usize, 0usize, 0usize, 0usize); 32]; // NR <= 32
    let (mut count, mut l) = (0, 0);
    while l < cols {
        let (tap, ch) = ((t * nr + l) / c, (t * nr + l) % c);
        let len = (c - ch).min(cols - l);
        runs[count] = (tap, ch, l, len);
        count += 1;
        l += len;
    }
    let hw = g.h * g.w;
    for (q, row) in rows.zip(panel.chunks_exact_mut(nr)) {
        let (image, q) = (q / taps.ohw, q % taps.ohw);
        let xt = &xt[image * hw * c..];
        for &(tap, ch, l, len) in &runs[..count] {
            let s = taps.src[tap * taps.ohw + q];
            let dst = &mut row[l..l + len];
            if s >= 0 {
                copy_run(dst, &xt[s as usize * c + ch..][..len]);
            } else {
                dst.fill(0.0);
            }
        }
        row[cols..].fill(0.0);
    }
}

/// [`copy_short`], with the runs of 1 to 3 floats of an image of 1 to 3 channels
/// copied in place rather than by a call to `memmove`.
#[inline(always)]
fn copy_run(dst: &mut [f32], src: &[f32]) {
    match src.len() {
        1 => dst[0] = src[0],
        2 => dst[..2].copy_from_slice(&<[f32; 2]>::try_from(src).expect("2 floats")),
        3 => dst[..3].copy_from_slice(&<[f32; 3]>::try_from(src).expect("3 floats")),
        _ => copy_short(dst, src),
    }
}

/// `C (m, n) = A · B`, or `C += A · B` when `accumulate`, on this thread.
///
/// A is packed into slivers (`m` rows, `k` deep, as by [`pack_a`]), and
/// [widened](widen) for the kernel when `wide`. B comes in
/// panels of NR columns, one k block at a time: `panel_block(t, rows of B, scratch)`
/// returns the address of rows `rows` of panel `t` in the packed layout
/// (`[p][l]`, NR floats a row), packed into `scratch` or found in place.
/// The columns of panel `t` of C go where `out(t)` says: the address of its
/// first column's row 0 and the row stride (`C.add(t * NR), rsc` for a row-major
/// C); `done(t)` is called once they are complete.
///
/// Each k block of a panel (at most KC x NR floats) is made just before every
/// sliver of A passes over it, so it is read from L1.
///
/// # Safety
/// The CPU must support `K`'s tier; each `out(t)` must address an `m x NR`
/// tile (`m x` the panel's columns) with its row stride; the blocks
/// `panel_block` returns must hold `rows.len() * NR` floats.
#[allow(clippy::too_many_arguments)] // a GEMM's sizes, operands and output, as `sgemm`
pub(super) unsafe fn gemm_panels<K: MicroKernel>(m: usize, k: usize, n: usize, apack: &[f32], wide: bool, mut panel_block: impl FnMut(usize, Range<usize>, &mut [f32]) -> *const f32, scratch: &mut [f32], mut out: impl FnMut(usize) -> (*mut f32, usize), mut done: impl FnMut(usize), accumulate: bool) {
    let (mr, nr) = (K::MR, K::NR);
    let kc_step = k.div_ceil(k.div_ceil(KC));
    for t in 0..n.div_ceil(nr) {
        let cols = nr.min(n - t * nr);
        let (c, rsc) = out(t);
        for pc in (0..k).step_by(kc_step) {
            let kc = kc_step.min(k - pc);
            let b = panel_block(t, pc..pc + kc, scratch);
            let beta = if pc == 0 && !accumulate { 0.0 } else { 1.0 };
            for s in 0..sliver_count::<K>(m) {
                let (row0, rows) = sliver::<K>(m, s);
                let ct = c.add(row0 * rsc);
                if wide {
                    let ac = mr * K::A_COPIES;
                    K::tile_wide(rows, kc, apack.as_ptr().add(s * ac * k + pc * ac), b, ct, rsc, cols, 1.0, beta);
                } else {
                    K::tile(rows, kc, apack.as_ptr().add(s * mr * k + pc * mr), b, ct, rsc, cols, 1.0, beta);
                }
            }
        }
        done(t);
    }
}

/// A row-major `(rows, cols)` matrix packed into MR-row slivers for [`gemm_panels`].
///
/// # Safety
/// The CPU must support `K`'s tier.
pub(super) unsafe fn pack_rows<K: MicroKernel>(rows: usize, cols: usize, a: &[f32], dst: &mut [f32]) {
    // `a` holds rows * cols floats, `dst` sliver_count(rows) * MR * cols.
    pack_a::<K>(rows, cols, MatPtr { ptr: a.as_ptr(), rs: cols as isize, cs: 1 }, dst)
}

/// Forward: `y (N, OC, OH, OW) = conv(x (N, C, H, W), w (OC, C, KH, KW))`, no bias,
/// on the micro-kernel `K`, whose tier the CPU must support (the dispatch in
/// [`super::conv2d_forward`] checks it).
pub fn forward<K: MicroKernel>(g: &ConvGeom, x: &[f32], w: &[f32], y: &mut [f32]) {
    forward_into::<K>(g, x, w, super::as_uninit(y))
}

/// [`forward`] into memory that need not be initialised: every element of `y` is
/// written (the first k block of each GEMM stores with beta = 0, never reading y).
pub fn forward_into<K: MicroKernel>(g: &ConvGeom, x: &[f32], w: &[f32], y: &mut [MaybeUninit<f32>]) {
    if strided::forward_pays::<K>(g) {
        return strided::forward_into::<K>(g, x, w, y);
    }
    let (ohw, ckk, chw) = (g.oh() * g.ow(), g.ckk(), g.c * g.h * g.w);
    let taps = Taps::<K>::new(g);
    let mut wpack = vec![0.0f32; sliver_count::<K>(g.oc) * K::MR * ckk];
    unsafe { pack_rows::<K>(g.oc, ckk, w, &mut wpack) };
    let mut wide = Vec::new();
    let wpack = widen::<K>(&wpack, &mut wide); // packed once, read by every image
    let per_task = images_per_task(g.n);
    if span::worth_it::<K>(g, per_task) {
        return forward_spanning::<K>(g, &taps, wpack, x, y, per_task);
    }
    y.par_chunks_mut(per_task * g.oc * ohw).enumerate().for_each(|(task, ys)| {
        with_scratch([KC * K::NR], |[panel]| {
            for (i, yn) in ys.chunks_mut(g.oc * ohw).enumerate() {
                let xn = &x[(task * per_task + i) * chw..][..chw];
                let yn = yn.as_mut_ptr() as *mut f32;
                // y_n (OC, OHW) = W (OC, CKK) · col_n (CKK, OHW)
                unsafe { gemm_panels::<K>(g.oc, ckk, ohw, wpack, true, |t, rows, p| {
                        pack_pixels(g, &taps, xn, t, rows, p);
                        p.as_ptr()
                    }, panel, |t| (yn.add(t * K::NR), ohw), |_| {}, false) };
            }
        })
    });
}

/// [`forward_into`] of small images ([`span`]): each run of images is one GEMM
/// whose panels go on across image boundaries.
fn forward_spanning<K: MicroKernel>(g: &ConvGeom, taps: &Taps<K>, wpack: &[f32], x: &[f32], y: &mut [MaybeUninit<f32>], per_task: usize) {
    let (ohw, ckk, chw) = (g.oh() * g.ow(), g.ckk(), g.c * g.h * g.w);
    // one plan for the full runs, one for a shorter last run
    let full = span::SpanPlan::new::<K>(g, &taps.src, per_task);
    let short = (g.n % per_task != 0).then(|| span::SpanPlan::new::<K>(g, &taps.src, g.n % per_task));
    y.par_chunks_mut(per_task * g.oc * ohw).enumerate().for_each(|(task, ys)| {
        let images = ys.len() / (g.oc * ohw);
        let plan = if images == per_task { &full } else { short.as_ref().expect("the shorter last run") };
        let xs = &x[task * per_task * chw..][..images * chw];
        let ys = ys.as_mut_ptr() as *mut f32;
        with_scratch([KC * K::NR, g.oc * K::NR], |[panel, tile]| {
            let tile = tile.as_mut_ptr();
            // y_run (OC, G*OHW) = W (OC, CKK) · [col_0 | ... | col_{G-1}]
            unsafe { gemm_panels::<K>(g.oc, ckk, images * ohw, wpack, true, |t, rows, p| {
                    plan.pack::<K>(g, xs, t, rows, p);
                    p.as_ptr()
                }, panel, |t| match plan.within_image(t) {
                    Some((image, p0)) => (ys.add(image * g.oc * ohw + p0), ohw),
                    None => (tile, K::NR),
                }, |t| if plan.within_image(t).is_none() {
                    plan.scatter::<K>(g, t, tile, ys)
                }, false) };
        })
    });
}

/// Backward: given `dy (N, OC, OH, OW)`, write `dX` into `dx` and
/// `dW (OC, C, KH, KW)` into `dw`, each only when asked, on the micro-kernel
/// `K` (whose tier the CPU must support, as for [`forward`]).
pub fn backward<K: MicroKernel>(g: &ConvGeom, x: &[f32], w: &[f32], dy: &[f32], dx: Option<&mut [f32]>, dw: Option<&mut [f32]>) {
    backward_into::<K>(g, x, w, dy, dx.map(super::as_uninit), dw.map(super::as_uninit))
}

/// [`backward`] into memory that need not be initialised: every element of
/// `dx` and `dw` is written.
pub fn backward_into<K: MicroKernel>(g: &ConvGeom, x: &[f32], w: &[f32], dy: &[f32], dx: Option<&mut [MaybeUninit<f32>]>, dw: Option<&mut [MaybeUninit<f32>]>) {
    if let Some(dx) = dx {
        match flipped(g, w) {
            Some((gt, wt)) => forward_into::<K>(&gt, dy, &wt, dx),
            None if strided::input_grad_pays::<K>(g) => strided::input_grad::<K>(g, w, dy, dx),
            // col2im adds into dX: zeros first
            None => im2col::backward(g, x, w, dy, Some(crate::backend::cpu::zero_filled(dx)), None),
        }
    }
    if let Some(dw) = dw {
        weight_grad::<K>(g, x, dy, dw);
    }
}

/// Whether the input gradient is a forward convolution (the kernel flipped, see the module docs): stride 1,
/// a square kernel and `p <= K - 1`.
pub fn input_grad_is_forward(g: &ConvGeom) -> bool {
    g.stride == 1 && g.kh == g.kw && g.pad < g.kh
}

/// For an [`input_grad_is_forward`] convolution, the input gradient as a
/// forward convolution: the geometry of `dX = conv(dY, W')` and
/// `W'[c, o, i, j] = W[o, c, K-1-i, K-1-j]`.
fn flipped(g: &ConvGeom, w: &[f32]) -> Option<(ConvGeom, Vec<f32>)> {
    if !input_grad_is_forward(g) {
        return None;
    }
    let gt = ConvGeom { n: g.n, c: g.oc, h: g.oh(), w: g.ow(), oc: g.c, kh: g.kh, kw: g.kw, stride: 1, pad: g.kh - 1 - g.pad };
    debug_assert_eq!((gt.oh(), gt.ow()), (g.h, g.w));
    let kk = g.kh * g.kw;
    let mut wt = vec![0.0f32; w.len()];
    for (o, wo) in w.chunks_exact(g.c * kk).enumerate() {
        for (c, taps) in wo.chunks_exact(kk).enumerate() {
            // tap (i, j) -> (K-1-i, K-1-j) is index kk-1-tap
            for (tap, &v) in taps.iter().enumerate() {
                wt[(c * g.oc + o) * kk + kk - 1 - tap] = v;
            }
        }
    }
    Some((gt, wt))
}

/// Whether dW on the micro-kernel `K` reads the image in place (zero-padded,
/// channels-last in blocks of NR channels, no packing): stride 1, C a multiple
/// of NR, and at most an eighth of the padded-width grid junk.
pub fn weight_grad_in_place<K: MicroKernel>(g: &ConvGeom) -> bool {
    matches!(TapSource::new::<K>(g), TapSource::Blocked { .. })
}

/// The image as dW's right operand reads it (`colᵀ_n[q, (tap, c)] = x_n[c, src(tap, q)]`),
/// in the panels of NR columns of a micro-kernel `K` (the methods' parameter).
enum TapSource {
    /// `xᵀ_n (H*W, C)`, channels-last; panels are packed by [`pack_taps`].
    ChannelsLast,
    /// Stride 1, C a multiple of NR, and at most an eighth of the grid below
    /// junk (see [`TapSource::new`]): read in place, no packing. The image is
    /// zero-padded to `(HP, WP)` and stored channels-last in blocks of NR
    /// channels, `xb[cb][(y, x)][l] = x_pad[cb*NR + l, y, x]`, each block
    /// `HP*WP + KW` rows (zero past the plane). Over the padded-width grid of
    /// output pixels `q' = y*WP + x`, tap `(i, j)` reads row `q' + i*WP + j` of
    /// a block: a run of rows of NR floats, which is the packed panel layout.
    /// The grid's columns `x >= OW` are junk; the packed dY is zero there.
    Blocked { wp: usize, block_rows: usize },
}

impl TapSource {
    fn new<K: MicroKernel>(g: &ConvGeom) -> TapSource {
        let (hp, wp) = (g.h + 2 * g.pad, g.w + 2 * g.pad);
        // The grid's junk columns are work thrown away: where they are more than an
        // eighth of it (a 7x7 image padded to 9 columns: 2 in 9), packing costs less.
        if g.stride == 1 && g.c.is_multiple_of(K::NR) && 8 * (wp - g.ow()) <= wp {
            TapSource::Blocked { wp, block_rows: hp * wp + g.kw }
        } else {
            TapSource::ChannelsLast
        }
    }

    /// Width of the grid of output pixels that the dW GEMM runs along.
    fn grid_width(&self, g: &ConvGeom) -> usize {
        match self {
            TapSource::ChannelsLast => g.ow(),
            TapSource::Blocked { wp, .. } => *wp,
        }
    }

    /// Floats of the rearranged image.
    fn len(&self, g: &ConvGeom) -> usize {
        match self {
            TapSource::ChannelsLast => g.c * g.h * g.w,
            TapSource::Blocked { block_rows, .. } => g.c * block_rows,
        }
    }

    /// Rearrange one image `x (C, H, W)` into `dst`; the padding of
    /// `Blocked` is never written, so `dst` starts zeroed and is reused for every image.
    /// Both are transposes in tiles ([`layout::transpose`]), not one float at a time.
    fn fill<K: MicroKernel>(&self, g: &ConvGeom, x: &[f32], dst: &mut [f32]) {
        let (hw, nr) = (g.h * g.w, K::NR);
        match *self {
            // xt[p, c] = x[c, p]
            TapSource::ChannelsLast => layout::transpose(x, hw, g.c, hw, dst, g.c),
            // xb[cb][(y + p, x + p)][l] = x[cb*NR + l, y, x], one image row of NR planes at a time
            TapSource::Blocked { wp, block_rows } => {
                for (cb, block) in dst.chunks_exact_mut(block_rows * nr).enumerate() {
                    let planes = &x[cb * nr * hw..(cb + 1) * nr * hw];
                    for y in 0..g.h {
                        let first = (y + g.pad) * wp + g.pad;
                        layout::transpose(&planes[y * g.w..], hw, nr, g.w, &mut block[first * nr..], nr);
                    }
                }
            }
        }
    }

    /// Rows `rows` of panel `t` of `colᵀ_n`, from the image as [`Self::fill`] left it.
    fn panel_block<K: MicroKernel>(&self, g: &ConvGeom, taps: &Taps<K>, xs: &[f32], t: usize, rows: Range<usize>, scratch: &mut [f32]) -> *const f32 {
        let nr = K::NR;
        match *self {
            TapSource::ChannelsLast => {
                pack_taps(g, taps, xs, t, rows, scratch);
                scratch.as_ptr()
            }
            TapSource::Blocked { wp, block_rows } => {
                // columns t*NR.. are channel block cb of tap (i, j)
                let (tap, cb) = (t * nr / g.c, (t * nr % g.c) / nr);
                let (i, j) = (tap / g.kw, tap % g.kw);
                xs[(cb * block_rows + i * wp + j + rows.start) * nr..][..rows.len() * nr].as_ptr()
            }
        }
    }
}

/// `dY_n (OC, OH*OW)` packed into MR-row slivers along a grid of output pixels
/// `width` wide: column `y*width + x` holds `dY_n[o, y, x]` for `x < OW`, 0 past it.
/// A transpose of the sliver's planes ([`layout::transpose`]), one output row
/// at a time when the grid is wider than OW, else the whole plane at once.
/// The slivers are `depth` columns deep and this image's columns start at `first`
/// (several images' columns side by side make one GEMM of a run of images).
fn pack_dy<K: MicroKernel>(g: &ConvGeom, width: usize, dy: &[f32], dst: &mut [f32], depth: usize, first: usize) {
    let mr = K::MR;
    let (oh, ow) = (g.oh(), g.ow());
    let k = oh * width;
    for s in 0..sliver_count::<K>(g.oc) {
        let out = &mut dst[(s * depth + first) * mr..][..k * mr];
        let (row0, rows) = sliver::<K>(g.oc, s);
        if rows < mr || width > ow {
            out.fill(0.0);
        }
        let planes = &dy[row0 * oh * ow..(row0 + rows) * oh * ow];
        if width == ow {
            // out[q][i] = dY[row0 + i, q]
            layout::transpose(planes, oh * ow, rows, oh * ow, out, mr);
        } else {
            for y in 0..oh {
                layout::transpose(&planes[y * ow..], oh * ow, rows, ow, &mut out[y * width * mr..], mr);
            }
        }
    }
}

/// `dW (OC, C, KH, KW) = Σ_n dY_n · col_nᵀ`: each task sums its run of images
/// into its own dW' (tap-major columns); the partial sums are added in run order.
/// Small images packed channels-last (at most KC / 2 output pixels) are summed
/// a run at a time, as one GEMM whose depth is the run's pixels: a GEMM 49
/// deep per 7x7 image spent as long loading and storing its tiles of dW'.
fn weight_grad<K: MicroKernel>(g: &ConvGeom, x: &[f32], dy: &[f32], dw: &mut [MaybeUninit<f32>]) {
    let (ohw, chw) = (g.oh() * g.ow(), g.c * g.h * g.w);
    let (kk, ckk) = (g.kh * g.kw, g.ckk());
    let taps = Taps::<K>::new(g);
    let source = TapSource::new::<K>(g);
    let width = source.grid_width(g);
    let k = g.oh() * width;
    let per_task = images_per_task(g.n);
    let run = if matches!(source, TapSource::ChannelsLast) && 2 * ohw <= KC { per_task } else { 1 };
    let partials: Vec<Vec<f32>> = (0..g.n.div_ceil(per_task))
        .into_par_iter()
        .map(|task| {
            let mut dwt = vec![0.0f32; g.oc * ckk];
            let (first, end) = (task * per_task, g.n.min((task + 1) * per_task));
            with_scratch([KC * K::NR, sliver_count::<K>(g.oc) * K::MR * k * run, source.len(g) * run], |[panel, dypack, xs]| {
                xs.fill(0.0);
                for b0 in (first..end).step_by(run) {
                    let batch = b0..end.min(b0 + run);
                    let depth = k * batch.len();
                    for (i, n) in batch.enumerate() {
                        source.fill::<K>(g, &x[n * chw..(n + 1) * chw], &mut xs[i * source.len(g)..]);
                        pack_dy::<K>(g, width, &dy[n * g.oc * ohw..(n + 1) * g.oc * ohw], dypack, depth, i * k);
                    }
                    // dW' (OC, KK*C) += [dY_n ...] (OC, depth) · [colᵀ_n ...] (depth, KK*C)
                    let dwp = dwt.as_mut_ptr();
                    unsafe { gemm_panels::<K>(g.oc, depth, ckk, dypack, false, |t, rows, p| source.panel_block(g, &taps, xs, t, rows, p), panel, |t| (dwp.add(t * K::NR), ckk), |_| {}, true) };
                }
            });
            dwt
        })
        .collect();
    // dW[o, c, tap] = Σ_tasks dW'[o, tap * C + c]
    for (o, row) in dw.chunks_exact_mut(ckk).enumerate() {
        for (c, taps) in row.chunks_exact_mut(kk).enumerate() {
            for (tap, v) in taps.iter_mut().enumerate() {
                v.write(partials.iter().map(|p| p[o * ckk + tap * g.c + c]).sum());
            }
        }
    }
}
