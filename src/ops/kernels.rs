//! The small elementwise loops shared by the ops: map one array, or two
//! broadcast arrays, in parallel when the array is large enough to pay off.

use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, Axis, CowArray, IxDyn, Zip};
use rayon::prelude::*;
use std::mem::MaybeUninit;
use crate::backend::cpu::tier::{tier, PORTABLE_HAS_FMA};
#[cfg(target_arch = "x86_64")]
use crate::backend::cpu::tier::Tier;

/// Arrays smaller than this are mapped on one thread: rayon's overhead would dominate.
pub const PARALLEL_MIN_LEN: usize = 1 << 15;

/// Elements per rayon task in the slice fast paths. Each element is computed
/// on its own (no sums), so the split never changes a result bit.
const CHUNK: usize = 1 << 13;

// Fast paths. ndarray's `Zip` over `IxDyn` arrays is fast only when every
// operand is contiguous in the same order; a broadcast operand (stride 0)
// sends it to a per-element path with dynamic index arithmetic, and even the
// contiguous path calls the closure through several layers that can keep a
// loop like GELU's from vectorising. So the loops below work on plain slices
// whenever the data allows it (row-major, `as_slice()` is `Some`), and fall
// back to `Zip` otherwise (permuted views, or broadcasts other than these):
//   - same shape, all contiguous: one flat loop;
//   - a scalar operand (one element): a flat loop over the others with the
//     scalar captured in the closure;
//   - an operand whose shape is a suffix of the output shape, e.g. a bias
//     (C) against (B, T, C): the output is a stack of rows of that operand's
//     length, and each row is a flat loop against the same small slice;
//   - an operand with one value per plane, e.g. a per-channel shift
//     (B, C, 1, 1) against (B, C, H, W) (a U-Net's timestep embedding): each
//     plane is a flat loop against one captured value.

/// How a polynomial multiplies and adds: [`Fused`] (`a·b + c` rounded once,
/// `f32::mul_add`) or [`Plain`] (a multiply, then an add: two roundings).
///
/// `f32::mul_add` is one instruction only where the code is compiled with
/// FMA enabled (the AVX2 and AVX-512 tiers, and aarch64); elsewhere it is a
/// call to the exactly rounded software `fmaf`, about fifteen times slower
/// than the multiply and add it replaces (softmax took 14x PyTorch's time on
/// an AVX2 CPU that way). So the polynomials ([`exp`], [`erf`], GELU) take
/// the choice as a type parameter, the op picks it from the tier
/// ([`with_mul_add!`](crate::with_mul_add)), and [`simd_as`] refuses to
/// compile a `Fused` kernel for a tier without FMA. The two differ by at most
/// one rounding per Horner step: a few ulp of the result (see the tier tests).
pub trait MulAdd: Copy + Send + Sync + 'static {
    /// Whether [`MulAdd::mul_add`] is fused (needs FMA in hardware to be fast).
    const FUSED: bool;
    /// `a · b + c`.
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
}

/// `a · b + c` with one rounding (`f32::mul_add`): for code under an FMA tier only.
#[derive(Clone, Copy, Debug)]
pub struct Fused;

/// `a · b + c` as a multiply and an add: for the portable tier.
#[derive(Clone, Copy, Debug)]
pub struct Plain;

impl MulAdd for Fused {
    const FUSED: bool = true;
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

impl MulAdd for Plain {
    const FUSED: bool = false;
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// Evaluates `$body` with the type `$m` set to the [`MulAdd`] of this
/// process's tier: [`Fused`] where the tier has FMA, else [`Plain`]. The body
/// is compiled once for each, e.g.
/// `with_mul_add!(M => map_as::<M>(x, |v| exp::<M>(v)))`.
#[macro_export]
macro_rules! with_mul_add {
    ($m:ident => $body:expr) => {
        if $crate::backend::cpu::tier::tier().fused() {
            type $m = $crate::ops::kernels::Fused;
            $body
        } else {
            type $m = $crate::ops::kernels::Plain;
            $body
        }
    };
}

/// Runs `f` compiled for this process's [CPU tier](crate::backend::cpu::tier):
/// AVX-512 (16 floats per instruction), AVX2 with FMA (8), or as the portable
/// build compiled it (SSE2 on x86-64: 4 floats).
///
/// Rust builds for a baseline CPU unless told otherwise; a function marked
/// `#[target_feature]` may use more, and the generic `f` is inlined into it,
/// so the loops inside `f` vectorise at the wider width. Only the instruction
/// width changes: without fast-math the compiler keeps every operation and its
/// order (no fused multiply-add is formed unless the code asks for one with
/// [`Fused`]), so every tier gives the same bits for plain arithmetic.
#[inline(always)]
pub fn simd<R>(f: impl FnOnce() -> R) -> R {
    simd_as::<Plain, R>(f)
}

/// [`simd`] for a kernel whose polynomials use the multiply-add `M`. A
/// [`Fused`] kernel is compiled only into the FMA tiers: its portable copy
/// (which would call the software `fmaf`) is never generated, and asking for
/// it is a panic, not a slow path (the callers pick `M` with [`with_mul_add!`](crate::with_mul_add)).
#[inline(always)]
pub fn simd_as<M: MulAdd, R>(f: impl FnOnce() -> R) -> R {
    match tier() {
        // SAFETY: `tier()` returns a tier only when this CPU has its features.
        #[cfg(target_arch = "x86_64")]
        Tier::Avx512 => unsafe { avx512(f) },
        #[cfg(target_arch = "x86_64")]
        Tier::Avx2Fma => unsafe { avx2(f) },
        _ if M::FUSED && !PORTABLE_HAS_FMA => unreachable!("a fused multiply-add kernel on the portable tier"),
        _ => f(),
    }
}

/// `f()`, compiled with AVX-512 enabled (see [`simd`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// `f()`, compiled with AVX2 and FMA enabled (see [`simd`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// A `Vec` of `len` floats that `write` fills through its spare capacity: no
/// zero fill of memory that is about to be overwritten.
///
/// # Safety
/// `write` must initialise every one of the `len` elements it is given.
pub(crate) unsafe fn uninit_vec(len: usize, write: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(len);
    write(&mut v.spare_capacity_mut()[..len]);
    // SAFETY: the caller's `write` initialised all `len` elements.
    unsafe { v.set_len(len) };
    v
}

/// Fills `out[i] = f(i-th element)` by calling `kernel(out_chunk, start)` on
/// chunks of `chunk` elements (on rayon when large, each chunk under
/// [`simd_as`] with the multiply-add `M`), where `start` is the chunk's offset in the flat output. The
/// kernel must write every element of its chunk: the buffer is not zeroed first.
fn fill<M: MulAdd>(len: usize, chunk: usize, kernel: impl Fn(&mut [MaybeUninit<f32>], usize) + Sync + Send) -> Vec<f32> {
    // SAFETY: every kernel writes each element of its chunk, and the chunks cover 0..len.
    unsafe {
        uninit_vec(len, |spare| {
            if len < PARALLEL_MIN_LEN {
                simd_as::<M, _>(#[inline(always)] || kernel(spare, 0));
            } else {
                spare.par_chunks_mut(chunk).enumerate().for_each(|(i, o)| simd_as::<M, _>(#[inline(always)] || kernel(o, i * chunk)));
            }
        })
    }
}

/// The row length `p` when `small` (a contiguous array) repeats along the
/// leading dimensions of `shape`: its shape, without leading 1s, is a suffix of
/// `shape`. `None` otherwise.
fn suffix_period(small: &ArrayD<f32>, shape: &[usize]) -> Option<usize> {
    let s: Vec<usize> = small.shape().iter().copied().skip_while(|&d| d == 1).collect();
    if small.is_empty() || s.len() > shape.len() || s[..] != shape[shape.len() - s.len()..] || small.as_slice().is_none() {
        return None;
    }
    Some(small.len())
}

/// Chunk size for a periodic operand of row length `p`: whole rows, about
/// [`CHUNK`] elements each.
fn row_chunk(p: usize) -> usize {
    (CHUNK / p).max(1) * p
}

/// `out[i] = f(x[i])`.
pub fn map(x: &ArrayD<f32>, f: impl Fn(f32) -> f32 + Sync + Send) -> ArrayD<f32> {
    map_as::<Plain>(x, f)
}

/// [`map`] whose `f` uses the multiply-add `M` (see [`MulAdd`]).
pub fn map_as<M: MulAdd>(x: &ArrayD<f32>, f: impl Fn(f32) -> f32 + Sync + Send) -> ArrayD<f32> {
    if let Some(xs) = x.as_slice() {
        let out = fill::<M>(xs.len(), CHUNK, #[inline(always)] |o, s| {
            for (o, &v) in o.iter_mut().zip(&xs[s..]) {
                o.write(f(v));
            }
        });
        return ArrayD::from_shape_vec(x.raw_dim(), out).expect("same length");
    }
    // A strided x: copied to row-major first, so that `f` runs only inside the
    // tier's compiled loop (a [`Fused`] `f` must never run outside it).
    map_as::<M>(&to_standard(&x.view()), f)
}

/// `out[i] = f(x[i], y[i])` for two arrays of the same shape.
pub fn map2(x: &ArrayD<f32>, y: &ArrayD<f32>, f: impl Fn(f32, f32) -> f32 + Sync + Send) -> ArrayD<f32> {
    map2_as::<Plain>(x, y, f)
}

/// [`map2`] whose `f` uses the multiply-add `M` (see [`MulAdd`]).
pub fn map2_as<M: MulAdd>(x: &ArrayD<f32>, y: &ArrayD<f32>, f: impl Fn(f32, f32) -> f32 + Sync + Send) -> ArrayD<f32> {
    if let (Some(xs), Some(ys)) = (x.as_slice(), y.as_slice()) {
        let out = fill::<M>(xs.len(), CHUNK, #[inline(always)] |o, s| {
            for ((o, &a), &b) in o.iter_mut().zip(&xs[s..]).zip(&ys[s..]) {
                o.write(f(a, b));
            }
        });
        return ArrayD::from_shape_vec(x.raw_dim(), out).expect("same length");
    }
    // Strided operands: copied to row-major first (see `map_as`).
    map2_as::<M>(&to_standard(&x.view()), &to_standard(&y.view()), f)
}

/// `out[i] = f(x[i], y[i], z[i])` for three arrays of the same shape.
pub fn map3(x: &ArrayD<f32>, y: &ArrayD<f32>, z: &ArrayD<f32>, f: impl Fn(f32, f32, f32) -> f32 + Sync + Send) -> ArrayD<f32> {
    map3_as::<Plain>(x, y, z, f)
}

/// [`map3`] whose `f` uses the multiply-add `M` (see [`MulAdd`]).
pub fn map3_as<M: MulAdd>(x: &ArrayD<f32>, y: &ArrayD<f32>, z: &ArrayD<f32>, f: impl Fn(f32, f32, f32) -> f32 + Sync + Send) -> ArrayD<f32> {
    if let (Some(xs), Some(ys), Some(zs)) = (x.as_slice(), y.as_slice(), z.as_slice()) {
        let out = fill::<M>(xs.len(), CHUNK, #[inline(always)] |o, s| {
            for (((o, &a), &b), &c) in o.iter_mut().zip(&xs[s..]).zip(&ys[s..]).zip(&zs[s..]) {
                o.write(f(a, b, c));
            }
        });
        return ArrayD::from_shape_vec(x.raw_dim(), out).expect("same length");
    }
    // Strided operands: copied to row-major first (see `map_as`).
    let (x, y, z) = (standard_layout(x), standard_layout(y), standard_layout(z));
    map3_as::<M>(&x.into_owned(), &y.into_owned(), &z.into_owned(), f)
}

/// `out[i] = f(full[i], small[i mod p])`: `small` (length `p`) repeated along
/// the leading dimensions of the output, row by row.
fn map_rows2(full: &[f32], small: &[f32], f: impl Fn(f32, f32) -> f32 + Sync + Send) -> Vec<f32> {
    let p = small.len();
    fill::<Plain>(full.len(), row_chunk(p), #[inline(always)] |o, s| {
        for (o, xr) in o.chunks_mut(p).zip(full[s..].chunks(p)) {
            for ((o, &a), &b) in o.iter_mut().zip(xr).zip(small) {
                o.write(f(a, b));
            }
        }
    })
}

/// The plane length `p` when `small` holds one value per plane of `shape`'s
/// trailing axes: its shape is `shape`'s first `k` dimensions, then 1s
/// (`(B, C, 1, 1)` against `(B, C, H, W)`, a per-channel shift: `p = H W`).
/// `None` otherwise, or when `small` is not contiguous.
fn plane_period(small: &ArrayD<f32>, shape: &[usize]) -> Option<usize> {
    let s = small.shape();
    let k = s.iter().rposition(|&d| d != 1).map_or(0, |i| i + 1);
    (s.len() == shape.len() && !small.is_empty() && small.as_slice().is_some() && s[..k] == shape[..k]).then(|| shape[k..].iter().product())
}

/// `out[i] = f(full[i], small[i / p])`: one value of `small` per plane of `p`
/// values (see [`plane_period`]), whole planes per task.
fn map_planes2(full: &[f32], small: &[f32], p: usize, f: impl Fn(f32, f32) -> f32 + Sync + Send) -> Vec<f32> {
    fill::<Plain>(full.len(), row_chunk(p), #[inline(always)] |o, s| {
        for ((o, xr), &b) in o.chunks_mut(p).zip(full[s..].chunks(p)).zip(&small[s / p..]) {
            for (o, &a) in o.iter_mut().zip(xr) {
                o.write(f(a, b));
            }
        }
    })
}

/// `out[i] = f(g[i], full[i], small[i / p])`, as [`map_planes2`].
fn map_planes3(g: &[f32], full: &[f32], small: &[f32], p: usize, f: impl Fn(f32, f32, f32) -> f32 + Sync + Send) -> Vec<f32> {
    fill::<Plain>(full.len(), row_chunk(p), #[inline(always)] |o, s| {
        for (((o, gr), xr), &b) in o.chunks_mut(p).zip(g[s..].chunks(p)).zip(full[s..].chunks(p)).zip(&small[s / p..]) {
            for ((o, &g), &a) in o.iter_mut().zip(gr).zip(xr) {
                o.write(f(g, a, b));
            }
        }
    })
}

/// `out[i] = f(g[i], full[i], small[i mod p])`, as [`map_rows2`].
fn map_rows3(g: &[f32], full: &[f32], small: &[f32], f: impl Fn(f32, f32, f32) -> f32 + Sync + Send) -> Vec<f32> {
    let p = small.len();
    fill::<Plain>(full.len(), row_chunk(p), #[inline(always)] |o, s| {
        for ((o, gr), xr) in o.chunks_mut(p).zip(g[s..].chunks(p)).zip(full[s..].chunks(p)) {
            for (((o, &g), &a), &b) in o.iter_mut().zip(gr).zip(xr).zip(small) {
                o.write(f(g, a, b));
            }
        }
    })
}

/// A row-wise op over contiguous rows of `d` values: each output row starts as
/// a copy of `init`'s row and `f(row, other_row)` then updates it in place
/// (`other` is empty or as long as `init`; an empty `other` gives `f` an empty
/// row). One pass over memory: the row is copied while it is in cache, and
/// rows run in parallel blocks under [`simd`]. Pass `f` as an
/// `#[inline(always)]` closure so that its loops are compiled wide.
pub fn rows_from(init: &[f32], other: &[f32], d: usize, f: impl Fn(&mut [f32], &[f32]) + Sync + Send) -> Vec<f32> {
    rows_from_as::<Plain>(init, other, d, f)
}

/// [`rows_from`] whose `f` uses the multiply-add `M` (see [`MulAdd`]).
pub fn rows_from_as<M: MulAdd>(init: &[f32], other: &[f32], d: usize, f: impl Fn(&mut [f32], &[f32]) + Sync + Send) -> Vec<f32> {
    assert!(d > 0 && init.len() % d == 0 && (other.is_empty() || other.len() == init.len()), "rows_from: rows of {d} over {} and {} values", init.len(), other.len());
    fill::<M>(init.len(), row_chunk(d), #[inline(always)] |o, s| {
        for (r, o_row) in o.chunks_mut(d).enumerate() {
            let start = s + r * d;
            for (o, &v) in o_row.iter_mut().zip(&init[start..start + d]) {
                o.write(v);
            }
            // SAFETY: every element of the row was written just above.
            let row = unsafe { &mut *(o_row as *mut [MaybeUninit<f32>] as *mut [f32]) };
            f(row, if other.is_empty() { &[] } else { &other[start..start + d] });
        }
    })
}

/// `rows` copies of `row`, one after another (a bias as the starting value
/// of every output row of a linear layer), written in parallel when large.
pub fn repeat_rows(row: &[f32], rows: usize) -> Vec<f32> {
    let p = row.len();
    if p == 0 {
        return Vec::new();
    }
    fill::<Plain>(p * rows, row_chunk(p), #[inline(always)] |o, _| {
        for o_row in o.chunks_mut(p) {
            for (o, &v) in o_row.iter_mut().zip(row) {
                o.write(v);
            }
        }
    })
}

/// `x` itself when it is row-major, else its row-major copy by [`to_standard`]:
/// ndarray's `as_standard_layout` with this module's fast copies (whole rows,
/// or tiled transposes where ndarray moves one strided float at a time).
pub fn standard_layout(x: &ArrayD<f32>) -> CowArray<'_, f32, IxDyn> {
    if x.is_standard_layout() {
        x.view().into()
    } else {
        to_standard(&x.view()).into()
    }
}

/// A row-major copy of `x`, whatever its strides, in parallel when large.
///
/// Reshape, permute, narrow and the gradients that undo them all end in such
/// a copy. When the last axis has unit stride (a contiguous array, a slice of
/// one, a permute that keeps the last axis) the copy moves whole rows with
/// `memcpy`: row `r` of the output starts at the offset of index
/// `(unravel(r), 0)` in `x`. A last axis of stride 0 (broadcast along it, as
/// the gradient of a sum over it) fills each row with its one value. A view
/// whose unit-stride axis was moved before the last (a permute from channels-last
/// to channels-first, as a vector quantizer's `(B, H, W, D) -> (B, D, H, W)`, or
/// back) is a batch of 2-D transposes ([`transposed_copy`]). Other layouts go
/// through ndarray's element-by-element copy.
pub fn to_standard(x: &ArrayViewD<f32>) -> ArrayD<f32> {
    let (shape, strides) = (x.shape(), x.strides());
    let nd = shape.len();
    if nd == 0 || x.is_empty() || (shape[nd - 1] > 1 && strides[nd - 1] != 1 && strides[nd - 1] != 0) {
        if let Some(out) = transposed_copy(x) {
            return out;
        }
        return x.as_standard_layout().into_owned();
    }
    let d = shape[nd - 1];
    let repeat = d > 1 && strides[nd - 1] == 0;
    let base = x.as_ptr() as usize;
    let out = fill::<Plain>(x.len(), row_chunk(d), #[inline(always)] |o, s| {
        // The rows of this chunk: unravel the first row's index once, then count up.
        let mut idx: Vec<usize> = vec![0; nd - 1];
        let mut r = s / d;
        for ax in (0..nd - 1).rev() {
            idx[ax] = r % shape[ax];
            r /= shape[ax];
        }
        for o_row in o.chunks_mut(d) {
            let off: isize = idx.iter().zip(strides).map(|(&i, &st)| i as isize * st).sum();
            if repeat {
                // SAFETY: `idx` is a valid index of `x`'s leading axes; the row is one element.
                let v = unsafe { *(base as *const f32).offset(off) };
                o_row.iter_mut().for_each(|o| _ = o.write(v));
            } else {
                // SAFETY: `idx` is a valid index of `x`'s leading axes, so the row of `d`
                // unit-stride elements at `off` lies inside `x`.
                let row = unsafe { std::slice::from_raw_parts((base as *const f32).offset(off), d) };
                for (o, &v) in o_row.iter_mut().zip(row) {
                    o.write(v);
                }
            }
            for ax in (0..nd - 1).rev() {
                idx[ax] += 1;
                if idx[ax] < shape[ax] {
                    break;
                }
                idx[ax] = 0;
            }
        }
    });
    ArrayD::from_shape_vec(x.raw_dim(), out).expect("same length")
}

/// `x` read as a batch of 2-D transposes, when it is one: with size-1 axes
/// dropped and axes that are adjacent in memory merged, its shape is
/// `(outer..., L, N)` with strides `(..., 1, s_N)`, the unit-stride axis next to
/// last. Each `(L, N)` block of the row-major copy is then the transpose of an
/// `(N, L)` matrix of row stride `s_N`, moved in 8 x 8 tiles
/// ([`layout::transpose_into`](crate::backend::cpu::conv::layout::transpose_into)),
/// not one strided float at a time. `None` for any other layout (or negative strides).
pub fn transposed_copy(x: &ArrayViewD<f32>) -> Option<ArrayD<f32>> {
    // (length, stride) of each axis, merged where axis k+1 continues axis k in memory
    let mut dims: Vec<(usize, isize)> = Vec::new();
    for (&d, &s) in x.shape().iter().zip(x.strides()).filter(|&(&d, _)| d > 1) {
        match dims.last_mut() {
            Some(last) if last.1 == d as isize * s => *last = (last.0 * d, s),
            _ => dims.push((d, s)),
        }
    }
    let k = dims.len();
    if k < 2 || dims.iter().any(|&(_, s)| s <= 0) || dims[k - 2].1 != 1 {
        return None;
    }
    let ((l, _), (n, s_n)) = (dims[k - 2], dims[k - 1]);
    let outer = &dims[..k - 2];
    let (block, s_n) = (l * n, s_n as usize);
    // the source of one block: rows j < n of l floats, j * s_n apart
    let src_len = (n - 1) * s_n + l;
    let base = x.as_ptr() as usize;
    let copy = |o: &mut [MaybeUninit<f32>], b: usize| {
        // the offset of block b: its outer index unravelled over the outer axes
        let (mut r, mut off) = (b, 0isize);
        for &(d, s) in outer.iter().rev() {
            off += (r % d) as isize * s;
            r /= d;
        }
        // SAFETY: block b of the view spans offsets off .. off + src_len of x's memory.
        let src = unsafe { std::slice::from_raw_parts((base as *const f32).offset(off), src_len) };
        crate::backend::cpu::conv::layout::transpose_into(src, s_n, n, l, o, n); // o[p * n + j] = src[j * s_n + p]
    };
    let len = x.len();
    // SAFETY: the blocks cover 0..len and each transpose writes all of its block.
    let out = unsafe {
        uninit_vec(len, |spare| {
            if len < PARALLEL_MIN_LEN {
                spare.chunks_mut(block).enumerate().for_each(|(b, o)| copy(o, b));
            } else {
                spare.par_chunks_mut(block).enumerate().for_each(|(b, o)| copy(o, b));
            }
        })
    };
    Some(ArrayD::from_shape_vec(x.raw_dim(), out).expect("same length"))
}

/// `a[i] += g[i]` over two slices (of one length), one thread; call it under
/// [`simd`] for the wide loop.
#[inline(always)]
pub(crate) fn add_into(a: &mut [f32], g: &[f32]) {
    for (a, &g) in a.iter_mut().zip(g) {
        *a += g;
    }
}

/// `acc += g` for two arrays of one shape, in parallel when large (the
/// gradient sums of a backward pass).
pub fn add_assign(acc: &mut ArrayD<f32>, g: &ArrayD<f32>) {
    add_assign_view(&mut acc.view_mut(), g)
}

/// [`add_assign`] into a view, e.g. the slice of a gradient that one chunk of
/// a fused projection feeds: flat when both are contiguous, else row by row
/// along the last axis.
pub fn add_assign_view(acc: &mut ArrayViewMutD<f32>, g: &ArrayD<f32>) {
    let same = acc.shape() == g.shape();
    let big = g.len() >= PARALLEL_MIN_LEN;
    if let (true, Some(gs)) = (same, g.as_slice()) {
        if let Some(a) = acc.as_slice_mut() {
            if big {
                a.par_chunks_mut(CHUNK).zip(gs.par_chunks(CHUNK)).for_each(|(a, g)| simd(#[inline(always)] || add_into(a, g)));
            } else {
                simd(#[inline(always)] || add_into(a, gs));
            }
            return;
        }
        let last = Axis(acc.ndim().saturating_sub(1));
        if acc.ndim() > 0 && acc.strides()[last.0] == 1 {
            let rows = Zip::from(acc.lanes_mut(last)).and(g.lanes(last));
            let row = |mut a: ndarray::ArrayViewMut1<f32>, g: ndarray::ArrayView1<f32>| {
                simd(#[inline(always)] || add_into(a.as_slice_mut().expect("unit stride"), g.as_slice().expect("contiguous")))
            };
            if big {
                rows.par_for_each(row);
            } else {
                rows.for_each(row);
            }
            return;
        }
    }
    *acc += g;
}

/// `out = f(a, b)` with `a` and `b` broadcast to `shape`.
pub fn broadcast_map2(a: &ArrayD<f32>, b: &ArrayD<f32>, shape: &[usize], f: impl Fn(f32, f32) -> f32 + Sync + Send) -> ArrayD<f32> {
    let dim = IxDyn(shape);
    let n: usize = shape.iter().product();
    // Fast paths (see the comment at the top): scalar, then suffix broadcast.
    if a.shape() == shape && a.as_slice().is_some() {
        if b.len() == 1 {
            let s = b.iter().next().copied().unwrap_or(0.0);
            return map(a, |x| f(x, s));
        }
        if let (Some(_), Some(xs)) = (suffix_period(b, shape), a.as_slice()) {
            let ys = b.as_slice().expect("checked contiguous");
            return ArrayD::from_shape_vec(dim, map_rows2(xs, ys, f)).expect("same length");
        }
        if let (Some(p), Some(xs)) = (plane_period(b, shape), a.as_slice()) {
            let ys = b.as_slice().expect("checked contiguous");
            return ArrayD::from_shape_vec(dim, map_planes2(xs, ys, p, f)).expect("same length");
        }
    }
    if b.shape() == shape && b.as_slice().is_some() {
        if a.len() == 1 {
            let s = a.iter().next().copied().unwrap_or(0.0);
            return map(b, |y| f(s, y));
        }
        if let (Some(_), Some(ys)) = (suffix_period(a, shape), b.as_slice()) {
            let xs = a.as_slice().expect("checked contiguous");
            return ArrayD::from_shape_vec(dim, map_rows2(ys, xs, |y, x| f(x, y))).expect("same length");
        }
        if let (Some(p), Some(ys)) = (plane_period(a, shape), b.as_slice()) {
            let xs = a.as_slice().expect("checked contiguous");
            return ArrayD::from_shape_vec(dim, map_planes2(ys, xs, p, |y, x| f(x, y))).expect("same length");
        }
    }
    let av = a.broadcast(dim.clone()).expect("shapes were checked to broadcast");
    let bv = b.broadcast(dim.clone()).expect("shapes were checked to broadcast");
    let mut out = ArrayD::<f32>::zeros(dim);
    if n < PARALLEL_MIN_LEN {
        Zip::from(&mut out).and(&av).and(&bv).for_each(|o, &x, &y| *o = f(x, y));
    } else {
        Zip::from(&mut out).and(&av).and(&bv).par_for_each(|o, &x, &y| *o = f(x, y));
    }
    out
}

/// `f(g, a, b)` with all three broadcast to the shape of `g` (the output gradient).
pub fn broadcast_map3(g: &ArrayD<f32>, a: &ArrayD<f32>, b: &ArrayD<f32>, f: impl Fn(f32, f32, f32) -> f32 + Sync + Send) -> ArrayD<f32> {
    let dim = g.raw_dim();
    let shape = g.shape();
    // Fast paths (see the comment at the top), when `g` is contiguous.
    if let Some(gs) = g.as_slice() {
        if a.shape() == shape && b.shape() == shape {
            return map3(g, a, b, f);
        }
        if let Some(xs) = a.as_slice().filter(|_| a.shape() == shape) {
            if b.len() == 1 {
                let s = b.iter().next().copied().unwrap_or(0.0);
                return map2(g, a, |g, x| f(g, x, s));
            }
            if suffix_period(b, shape).is_some() {
                let ys = b.as_slice().expect("checked contiguous");
                return ArrayD::from_shape_vec(dim, map_rows3(gs, xs, ys, f)).expect("same length");
            }
            if let Some(p) = plane_period(b, shape) {
                let ys = b.as_slice().expect("checked contiguous");
                return ArrayD::from_shape_vec(dim, map_planes3(gs, xs, ys, p, f)).expect("same length");
            }
        }
        if let Some(ys) = b.as_slice().filter(|_| b.shape() == shape) {
            if a.len() == 1 {
                let s = a.iter().next().copied().unwrap_or(0.0);
                return map2(g, b, |g, y| f(g, s, y));
            }
            if suffix_period(a, shape).is_some() {
                let xs = a.as_slice().expect("checked contiguous");
                return ArrayD::from_shape_vec(dim, map_rows3(gs, ys, xs, |g, y, x| f(g, x, y))).expect("same length");
            }
            if let Some(p) = plane_period(a, shape) {
                let xs = a.as_slice().expect("checked contiguous");
                return ArrayD::from_shape_vec(dim, map_planes3(gs, ys, xs, p, |g, y, x| f(g, x, y))).expect("same length");
            }
        }
    }
    let av = a.broadcast(dim.clone()).expect("shapes were checked to broadcast");
    let bv = b.broadcast(dim.clone()).expect("shapes were checked to broadcast");
    let mut out = ArrayD::<f32>::zeros(dim);
    if out.len() < PARALLEL_MIN_LEN {
        Zip::from(&mut out).and(g).and(&av).and(&bv).for_each(|o, &g, &x, &y| *o = f(g, x, y));
    } else {
        Zip::from(&mut out).and(g).and(&av).and(&bv).par_for_each(|o, &g, &x, &y| *o = f(g, x, y));
    }
    out
}

/// The error function, erf(x), to about 3e-7 absolute: the erfc series of
/// Numerical Recipes' `erfcc` (fractional error below 1.2e-7), evaluated in
/// f32. (Abramowitz & Stegun 7.1.26, at 1.5e-7 before rounding, loses more to
/// cancellation near 0.) GELU's error is then at most |x|/2 · 3e-7, far inside
/// the golden tests' 1e-5; f32 keeps `exp` in single precision, which halves
/// the time GELU takes in a transformer block. Inlined, so that the
/// elementwise loops calling it vectorise. The polynomials (here and in
/// [`exp`]) are evaluated by Horner's rule in the multiply-adds of `M`:
/// fused (one rounding per step, one instruction) on a tier with FMA, where
/// GELU's forward and backward took 1.6 times as long with separate
/// multiplies and adds; a multiply and an add on the portable tier (see [`MulAdd`]).
#[inline(always)]
pub fn erf<M: MulAdd>(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    // -z² - 1.26551223 + t (1.00002368 + t (0.37409196 + ...)), Horner's rule with fused multiply-adds
    const C: [f32; 10] = [-1.265_512_2, 1.000_023_7, 0.374_091_96, 0.096_784_18, -0.186_288_06, 0.278_868_07, -1.135_204, 1.488_515_9, -0.822_152_2, 0.170_872_77];
    let mut p = C[9];
    for &c in C[..9].iter().rev() {
        p = M::mul_add(p, t, c);
    }
    let poly = M::mul_add(-z, z, p);
    let r = M::mul_add(-t, exp::<M>(poly), 1.0); // 1 - t·exp(poly)
    if x >= 0.0 { r } else { -r }
}

/// `ln(1 + u)` for `u` in `[0, 1]` from arithmetic alone (no libm call), so that
/// loops calling it vectorise: with `s = u / (2 + u)` (in `[0, 1/3]`),
/// `ln(1 + u) = 2 atanh(s) = 2 (s + s³/3 + s⁵/5 + ...)`. Eight terms leave out
/// at most `(1/9)⁸ / 17` of the sum, 2e-9 relative; with the rounding, within
/// 3e-7 of libm's `ln_1p` on the whole interval. The softplus of
/// [`crate::Tensor::bce_with_logits`], `ln(1 + e^{-|x|})`, calls it.
#[inline(always)]
pub fn ln_1p_unit<M: MulAdd>(u: f32) -> f32 {
    let s = u / (2.0 + u);
    let s2 = s * s;
    let mut p = 1.0 / 15.0;
    for c in [1.0 / 13.0, 1.0 / 11.0, 1.0 / 9.0, 1.0 / 7.0, 1.0 / 5.0, 1.0 / 3.0, 1.0] {
        p = M::mul_add(p, s2, c); // 1 + s²/3 + s⁴/5 + ... by Horner's rule
    }
    2.0 * s * p
}

/// `eˣ` in f32 from arithmetic alone (no libm call), so that loops calling it
/// vectorise: Cephes' `expf`. With `n = round(x / ln 2)` and `r = x - n ln 2`
/// (|r| <= ln2 / 2), `eˣ = 2ⁿ · eʳ`, where `eʳ` is a degree-7 polynomial and
/// `2ⁿ` is written straight into the exponent bits. Relative error about
/// 2e-7 (2 ulp); 0 below -87.3 (where libm gives a denormal or 0) and
/// e^88.38 ≈ 2.4e38 above 88.38 (libm: up to 3.4e38, then inf); NaN stays NaN.
/// Softmax and GELU only ever pass arguments <= 0 (softmax) or < 1 (erf).
#[inline(always)]
pub fn exp<M: MulAdd>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4; // ln 2 split in two, so that n·LN2_HI is exact
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2²³: adding it rounds to an integer
    let xc = x.clamp(-87.336_55, 88.376_26); // keeps n within -126..=127, a normal 2ⁿ
    let shifted = xc * LOG2E + ROUND; // n sits in the low mantissa bits
    let n = shifted - ROUND;
    let r = M::mul_add(-n, LN2_LO, M::mul_add(-n, LN2_HI, xc)); // x - n ln 2, in two exact-ish steps
    let mut q = 1.987_569_1e-4f32;
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 5.000_000_1e-1] {
        q = M::mul_add(q, r, c);
    }
    let p = M::mul_add(q * r, r, r) + 1.0; // 1 + r + r² q(r)
    // 2ⁿ: the biased exponent n + 127 shifted into place. n is read from the
    // mantissa bits of `shifted` (bits(ROUND + n) = bits(ROUND) + n), integer
    // arithmetic only: `n as i32` (a saturating float-to-int cast) would
    // keep the loops calling `exp` from vectorising.
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let two_n = f32::from_bits(n_bits.wrapping_add(127) << 23);
    if x < -87.336_55 { 0.0 } else { p * two_n }
}
