//! Single-precision GEMM on the CPU: `C = alpha * A B + beta * C` with arbitrary
//! strides, parallelised with rayon.
//!
//! The work runs in our own packed GEMM ([`super::packed_gemm`]) on the
//! micro-kernel of this process's [CPU tier](super::tier)
//! ([`super::microkernel`]); only a C that is strided both ways goes to
//! `matrixmultiply` (which picks its own kernel).
//!
//! Strides are in elements, so a transposed operand is the same memory with
//! its row and column strides swapped: no copy is ever made to transpose.

#[cfg(target_arch = "x86_64")]
use super::microkernel::{Avx2, Avx512};
use super::microkernel::{MicroKernel, Portable};
use super::tier::tier;
#[cfg(target_arch = "x86_64")]
use super::tier::Tier;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// A raw pointer that may cross rayon's thread boundary. Every use writes to
/// disjoint rows of C (or only reads), which is what makes the sharing sound.
#[derive(Clone, Copy)]
struct SendPtr<T>(T);
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

/// Below this many multiply-adds a GEMM runs on one thread: splitting costs more than it saves.
const PARALLEL_MIN_FLOPS: usize = 1 << 18;

/// One strided matrix operand: element (i, j) is at `ptr + i * rs + j * cs`.
#[derive(Clone, Copy, Debug)]
pub struct MatPtr {
    /// Address of element (0, 0).
    pub ptr: *const f32,
    /// Row stride in elements.
    pub rs: isize,
    /// Column stride in elements.
    pub cs: isize,
}

/// `C (m x n) = alpha * A (m x k) B (k x n) + beta * C` on one thread.
///
/// # Safety
/// The pointers and strides must address valid memory for the given sizes,
/// and C must not alias A or B.
pub unsafe fn sgemm_serial(m: usize, k: usize, n: usize, alpha: f32, a: MatPtr, b: MatPtr, beta: f32, c: *mut f32, rsc: isize, csc: isize) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // matrixmultiply handles k = 0, but make the beta scaling explicit.
        for i in 0..m {
            for j in 0..n {
                let p = c.offset(i as isize * rsc + j as isize * csc);
                *p = if beta == 0.0 { 0.0 } else { beta * *p };
            }
        }
        return;
    }
    match tier() {
        #[cfg(target_arch = "x86_64")]
        Tier::Avx512 => sgemm_packed::<Avx512>(m, k, n, alpha, a, b, beta, c, rsc, csc),
        #[cfg(target_arch = "x86_64")]
        Tier::Avx2Fma => sgemm_packed::<Avx2>(m, k, n, alpha, a, b, beta, c, rsc, csc),
        _ => sgemm_packed::<Portable>(m, k, n, alpha, a, b, beta, c, rsc, csc),
    }
}

/// [`sgemm_serial`] on the micro-kernel `K`, for a C with one unit stride.
///
/// # Safety
/// As [`sgemm_serial`], and the CPU must support `K`'s tier.
#[allow(clippy::too_many_arguments)] // a GEMM's sizes, operands and output
unsafe fn sgemm_packed<K: MicroKernel>(m: usize, k: usize, n: usize, alpha: f32, a: MatPtr, b: MatPtr, beta: f32, c: *mut f32, rsc: isize, csc: isize) {
    if csc == 1 && rsc >= 0 {
        return super::packed_gemm::gemm::<K>(m, k, n, alpha, a, b, beta, c, rsc as usize);
    }
    if rsc == 1 && csc >= 0 {
        // A column-major C is a row-major Cᵀ: Cᵀ (n x m) = Bᵀ (n x k) · Aᵀ (k x m).
        let (at, bt) = (MatPtr { ptr: a.ptr, rs: a.cs, cs: a.rs }, MatPtr { ptr: b.ptr, rs: b.cs, cs: b.rs });
        return super::packed_gemm::gemm::<K>(n, k, m, alpha, bt, at, beta, c, csc as usize);
    }
    matrixmultiply::sgemm(m, k, n, alpha, a.ptr, a.rs, a.cs, b.ptr, b.rs, b.cs, beta, c, rsc, csc);
}

/// (rows, columns) of this tier's micro-tile: parallel blocks of C are
/// multiples of it, so that no tile straddles two threads.
fn tile_size() -> (usize, usize) {
    match tier() {
        #[cfg(target_arch = "x86_64")]
        Tier::Avx512 => (Avx512::MR, Avx512::NR),
        #[cfg(target_arch = "x86_64")]
        Tier::Avx2Fma => (Avx2::MR, Avx2::NR),
        _ => (Portable::MR, Portable::NR),
    }
}

/// `C = alpha * A B + beta * C`, split across rayon's threads when large: over
/// rows of C when it is taller than wide, else over columns (each thread packs
/// its own copy of the shared operand, a cost of `O(mk + kn)` per thread); over
/// `k` when `k` is long and C small (a weight gradient: each thread packs only its
/// share of both operands, and the partial products are summed into C).
///
/// # Safety
/// As [`sgemm_serial`].
pub unsafe fn sgemm(m: usize, k: usize, n: usize, alpha: f32, a: MatPtr, b: MatPtr, beta: f32, c: *mut f32, rsc: isize, csc: isize) {
    let threads = rayon::current_num_threads();
    if threads <= 1 || m * n * k < PARALLEL_MIN_FLOPS || (m < 32 && n < 64 && k < SPLIT_K_MIN * threads) {
        return sgemm_serial(m, k, n, alpha, a, b, beta, c, rsc, csc);
    }
    if k >= SPLIT_K_RATIO * m.max(n) && k >= SPLIT_K_MIN * threads {
        return sgemm_split_k(m, k, n, alpha, a, b, beta, c, rsc, csc, threads);
    }
    let by_rows = m >= n;
    // Blocks a multiple of the micro-tile so that no tile straddles two threads.
    let (mr, nr) = tile_size();
    let (len, unit) = if by_rows { (m, mr) } else { (n, nr) };
    let block = len.div_ceil(threads).div_ceil(unit) * unit;
    let (ap, bp, cp) = (SendPtr(a), SendPtr(b), SendPtr(c));
    (0..len.div_ceil(block)).into_par_iter().for_each(|blk| {
        let (a, b, c) = (ap, bp, cp);
        let r0 = blk * block;
        let size = block.min(len - r0);
        if by_rows {
            let a_blk = MatPtr { ptr: a.0.ptr.offset(r0 as isize * a.0.rs), ..a.0 };
            sgemm_serial(size, k, n, alpha, a_blk, b.0, beta, c.0.offset(r0 as isize * rsc), rsc, csc);
        } else {
            let b_blk = MatPtr { ptr: b.0.ptr.offset(r0 as isize * b.0.cs), ..b.0 };
            sgemm_serial(m, k, size, alpha, a.0, b_blk, beta, c.0.offset(r0 as isize * csc), rsc, csc);
        }
    });
}

/// `k` at least this many times the larger side of C: split the GEMM over `k`.
const SPLIT_K_RATIO: usize = 4;
/// The fewest steps of `k` a thread gets when the GEMM is split over `k`.
const SPLIT_K_MIN: usize = 256;

/// [`sgemm`] split over `k`, for a small C over a long `k`: the weight gradient of
/// a linear layer, `dW (N, K) = dyᵀ (N, rows) · x (rows, K)`, sums over every row
/// of the batch. Split over the rows of C, each thread would pack all of `x`
/// (`rows x K`) for its half of dW; split over `k`, thread `p` packs only its
/// share of both operands and computes the partial product
///
/// ```text
/// C_p = A[:, k_p] B[k_p, :]      k_p: the p-th of `parts` equal runs of k
/// C   = alpha (C_0 + C_1 + ...) + beta C
/// ```
///
/// `C_0` goes straight into C (with beta), the others into a scratch buffer of
/// `m x n` each, added to C at the end in a fixed order (the result does not
/// depend on which thread ran first).
///
/// # Safety
/// As [`sgemm_serial`].
#[allow(clippy::too_many_arguments)] // a GEMM's sizes, operands and output, and the split
unsafe fn sgemm_split_k(m: usize, k: usize, n: usize, alpha: f32, a: MatPtr, b: MatPtr, beta: f32, c: *mut f32, rsc: isize, csc: isize, threads: usize) {
    let parts = threads.min(k / SPLIT_K_MIN).max(1);
    let run = k.div_ceil(parts);
    let mut scratch = vec![0.0f32; (parts - 1) * m * n]; // C_1, C_2, ... row-major (m, n)
    let (ap, bp, cp, sp) = (SendPtr(a), SendPtr(b), SendPtr(c), SendPtr(scratch.as_mut_ptr()));
    (0..parts).into_par_iter().for_each(|p| {
        let (a, b, c, s) = (ap, bp, cp, sp);
        let k0 = p * run;
        let kk = run.min(k - k0);
        let a_p = MatPtr { ptr: a.0.ptr.offset(k0 as isize * a.0.cs), ..a.0 }; // A[:, k_p]
        let b_p = MatPtr { ptr: b.0.ptr.offset(k0 as isize * b.0.rs), ..b.0 }; // B[k_p, :]
        if p == 0 {
            sgemm_serial(m, kk, n, alpha, a_p, b_p, beta, c.0, rsc, csc); // alpha C_0 + beta C
        } else {
            sgemm_serial(m, kk, n, alpha, a_p, b_p, 0.0, s.0.add((p - 1) * m * n), n as isize, 1); // alpha C_p
        }
    });
    for part in scratch.chunks_exact(m * n) {
        for (i, row) in part.chunks_exact(n).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                *c.offset(i as isize * rsc + j as isize * csc) += v;
            }
        }
    }
}

unsafe impl Sync for BatchedGemm<'_> {}

/// A batch of GEMMs of one size: `C[i] = A[i] B[i] (+ C[i] when accumulate)`,
/// where the operands of item `i` start at the given element offsets and C is
/// row-major `(m, n)` per item.
pub struct BatchedGemm<'a> {
    /// Rows of A and C.
    pub m: usize,
    /// Columns of A, rows of B.
    pub k: usize,
    /// Columns of B and C.
    pub n: usize,
    /// Address of A's element (0, 0) of item 0's storage base (offsets are added to it).
    pub a: *const f32,
    /// (row stride, column stride) of A.
    pub a_strides: (isize, isize),
    /// Element offset of each item's A.
    pub a_offsets: &'a [isize],
    /// Address of B's storage base.
    pub b: *const f32,
    /// (row stride, column stride) of B.
    pub b_strides: (isize, isize),
    /// Element offset of each item's B.
    pub b_offsets: &'a [isize],
}

impl BatchedGemm<'_> {
    /// Run the batch into `c` (`len = batch * m * n`, row-major), overwriting or accumulating.
    ///
    /// # Safety
    /// Every item's A and B, at its offset and strides, must lie in valid memory.
    pub unsafe fn run(&self, c: &mut [f32], accumulate: bool) {
        assert_eq!(c.len(), self.a_offsets.len() * self.m * self.n);
        self.run_raw(c.as_mut_ptr(), accumulate)
    }

    /// Run the batch into fresh memory, overwriting every element: `c` need
    /// not be initialised (the output of a matmul skips the zero fill).
    ///
    /// # Safety
    /// As [`BatchedGemm::run`]; `c.len() == batch * m * n`.
    pub unsafe fn run_uninit(&self, c: &mut [MaybeUninit<f32>]) {
        assert_eq!(c.len(), self.a_offsets.len() * self.m * self.n);
        // Never read before written: beta = 0 makes the micro-kernel store without loading.
        self.run_raw(c.as_mut_ptr() as *mut f32, false)
    }

    /// [`BatchedGemm::run`] on a raw pointer to `batch * m * n` floats.
    unsafe fn run_raw(&self, c: *mut f32, accumulate: bool) {
        let (m, k, n) = (self.m, self.k, self.n);
        let batch = self.a_offsets.len();
        assert_eq!(batch, self.b_offsets.len());
        let beta = if accumulate { 1.0 } else { 0.0 };
        let a_base = SendPtr(self.a);
        let b_base = SendPtr(self.b);
        let c_base = SendPtr(c);
        let item = |i: usize, parallel: bool| unsafe {
            let (a_base, b_base, c_base) = (a_base, b_base, c_base);
            let a = MatPtr { ptr: a_base.0.offset(self.a_offsets[i]), rs: self.a_strides.0, cs: self.a_strides.1 };
            let b = MatPtr { ptr: b_base.0.offset(self.b_offsets[i]), rs: self.b_strides.0, cs: self.b_strides.1 };
            let ci = c_base.0.add(i * m * n);
            if parallel {
                sgemm(m, k, n, 1.0, a, b, beta, ci, n as isize, 1);
            } else {
                sgemm_serial(m, k, n, 1.0, a, b, beta, ci, n as isize, 1);
            }
        };
        if m * n == 0 {
            return;
        }
        let threads = rayon::current_num_threads();
        if batch >= threads && batch > 1 {
            // Many matrices (attention heads, images): one thread per matrix.
            (0..batch).into_par_iter().for_each(|i| item(i, false));
        } else {
            (0..batch).for_each(|i| item(i, true));
        }
    }
}
