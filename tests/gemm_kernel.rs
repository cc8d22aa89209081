//! The packed GEMM against a naive triple loop, on sizes that hit every edge:
//! smaller than one micro-tile (AVX-512: 12 x 32), not a multiple of it (including
//! remainders that are split into two shorter slivers: 64 and 28 rows), several k
//! blocks (KC = 256), transposed and strided operands, beta 0 and 1.
//!
//! Tolerance: the naive loop sums in f64; f32 with k <= 600 terms of size ~1
//! accumulates a relative error near k · 2^-24 ≈ 4e-5, so 1e-4 · (1 + |c|) is
//! loose enough for rounding and far too tight for a wrong index (the split-over-k
//! cases sum up to 3001 terms, but of random sign: their error grows as √k, ~3e-6).

use dalle::backend::cpu::gemm::{sgemm, sgemm_serial, MatPtr};
use dalle::backend::BatchedGemm;

/// Deterministic values in [-1, 1) (an LCG: no dependence on the Rng's stream).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Layout {
    RowMajor,
    Transposed,
    /// Row-major inside a larger buffer: row stride = cols + 3.
    Padded,
}

/// Storage for an `r x c` matrix in `layout`, and its (rs, cs).
fn store(r: usize, c: usize, layout: Layout, seed: u64) -> (Vec<f32>, isize, isize) {
    match layout {
        Layout::RowMajor => (values(r * c, seed), c as isize, 1),
        Layout::Transposed => (values(r * c, seed), 1, r as isize),
        Layout::Padded => (values(r * (c + 3), seed), (c + 3) as isize, 1),
    }
}

fn at(buf: &[f32], rs: isize, cs: isize, i: usize, j: usize) -> f64 {
    buf[(i as isize * rs + j as isize * cs) as usize] as f64
}

fn check(m: usize, k: usize, n: usize, la: Layout, lb: Layout, alpha: f32, beta: f32, parallel: bool) {
    check_with(m, k, n, la, lb, alpha, beta, &format!("parallel {parallel}"), |ap, bp, c| unsafe {
        if parallel {
            sgemm(m, k, n, alpha, ap, bp, beta, c.as_mut_ptr(), n as isize, 1);
        } else {
            sgemm_serial(m, k, n, alpha, ap, bp, beta, c.as_mut_ptr(), n as isize, 1);
        }
    })
}

/// `run(A, B, C)` computes `C = alpha A B + beta C` (C row-major `m x n`); checked against f64 loops.
#[allow(clippy::too_many_arguments)]
fn check_with(m: usize, k: usize, n: usize, la: Layout, lb: Layout, alpha: f32, beta: f32, what: &str, run: impl Fn(MatPtr, MatPtr, &mut [f32])) {
    let (a, ars, acs) = store(m, k, la, 1 + m as u64);
    let (b, brs, bcs) = store(k, n, lb, 2 + n as u64);
    let c0 = values(m * n, 3 + k as u64);
    let mut c = c0.clone();
    let (ap, bp) = (MatPtr { ptr: a.as_ptr(), rs: ars, cs: acs }, MatPtr { ptr: b.as_ptr(), rs: brs, cs: bcs });
    run(ap, bp, &mut c);
    for i in 0..m {
        for j in 0..n {
            let dot: f64 = (0..k).map(|p| at(&a, ars, acs, i, p) * at(&b, brs, bcs, p, j)).sum();
            let want = alpha as f64 * dot + beta as f64 * c0[i * n + j] as f64;
            let got = c[i * n + j] as f64;
            assert!(
                (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                "{m}x{k}x{n} A {la:?} B {lb:?} alpha {alpha} beta {beta} {what}: C[{i},{j}] = {got}, expected {want}"
            );
        }
    }
}

const SIZES: [(usize, usize, usize); 10] = [(1, 1, 1), (64, 576, 100), (28, 40, 50), (67, 45, 33), (129, 257, 65), (5, 300, 7), (11, 17, 31), (12, 32, 32), (13, 600, 33), (200, 40, 3)];

#[test]
fn serial_matches_naive_on_odd_sizes_and_layouts() {
    for &(m, k, n) in &SIZES {
        for la in [Layout::RowMajor, Layout::Transposed, Layout::Padded] {
            for lb in [Layout::RowMajor, Layout::Transposed, Layout::Padded] {
                for beta in [0.0, 1.0] {
                    check(m, k, n, la, lb, 1.0, beta, false);
                }
            }
        }
    }
}

/// Every micro-kernel this CPU can run (not only the tier `DALLE_CPU` picked),
/// called through the packed GEMM on the same odd sizes: the AVX-512 (12 x 32),
/// AVX2 (6 x 16) and portable (6 x 8) tiles each meet their own edges here.
#[test]
fn every_micro_kernel_this_cpu_runs_matches_naive() {
    use dalle::backend::cpu::microkernel::MicroKernel;
    use dalle::backend::cpu::packed_gemm::gemm;
    use dalle::backend::cpu::tier::Tier;
    fn each_size<K: MicroKernel>(name: &str) {
        for &(m, k, n) in SIZES.iter().chain(&[(64, 33, 48), (7, 9, 17), (1100, 40, 20)]) {
            for (la, lb) in [(Layout::RowMajor, Layout::RowMajor), (Layout::RowMajor, Layout::Transposed), (Layout::Transposed, Layout::Padded)] {
                for (alpha, beta) in [(1.0, 0.0), (0.5, 1.0)] {
                    let what = format!("kernel {name}");
                    check_with(m, k, n, la, lb, alpha, beta, &what, |ap, bp, c| unsafe { gemm::<K>(m, k, n, alpha, ap, bp, beta, c.as_mut_ptr(), n) });
                }
            }
        }
    }
    for tier in Tier::supported() {
        match tier {
            #[cfg(target_arch = "x86_64")]
            Tier::Avx512 => each_size::<dalle::backend::cpu::microkernel::Avx512>("avx512"),
            #[cfg(target_arch = "x86_64")]
            Tier::Avx2Fma => each_size::<dalle::backend::cpu::microkernel::Avx2>("avx2"),
            _ => each_size::<dalle::backend::cpu::microkernel::Portable>("portable"),
        }
    }
}

#[test]
fn several_row_blocks_reuse_or_repack_b() {
    // m past one row block of C (MC = 1032), k and n past one block: B (k x n) of 240 K
    // floats is packed once and kept for the later row blocks; one of 1.1 M floats
    // (past the 1 M kept whole) is packed again for each row block.
    for &(m, k, n) in &[(1100, 500, 450), (1040, 1100, 1000)] {
        for (la, lb) in [(Layout::RowMajor, Layout::RowMajor), (Layout::RowMajor, Layout::Transposed)] {
            check(m, k, n, la, lb, 1.0, 1.0, false);
        }
    }
}

#[test]
fn parallel_matches_naive_when_split_by_rows_or_columns() {
    // Tall (split over rows) and wide (split over columns), both past the parallel threshold.
    for &(m, k, n) in &[(301, 129, 67), (67, 129, 301), (256, 256, 256)] {
        for (la, lb) in [(Layout::RowMajor, Layout::RowMajor), (Layout::Transposed, Layout::Padded), (Layout::Padded, Layout::Transposed)] {
            check(m, k, n, la, lb, 1.0, 0.0, true);
            check(m, k, n, la, lb, 0.5, 1.0, true);
        }
    }
}

#[test]
fn parallel_matches_naive_when_split_over_k() {
    // A long k over a small C (a weight gradient dW = dyᵀ x): split over k, each part's
    // product summed into C. Three threads make three parts (two in the scratch buffer),
    // one part's run of k shorter than the others; A transposed as dyᵀ is.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
    pool.install(|| {
        for &(m, k, n) in &[(64, 2000, 48), (20, 3001, 30), (3, 1100, 130)] {
            for (la, lb) in [(Layout::Transposed, Layout::RowMajor), (Layout::RowMajor, Layout::Padded), (Layout::Padded, Layout::Transposed)] {
                check(m, k, n, la, lb, 1.0, 0.0, true);
                check(m, k, n, la, lb, 0.5, 1.0, true);
            }
        }
        // Column-major C (row stride 1): the parts are added through C's own strides.
        let (m, k, n) = (24, 1600, 40);
        let (a, b) = (values(m * k, 11), values(k * n, 12));
        let mut c = vec![1.0f32; m * n]; // C[i, j] at j * m + i
        unsafe { sgemm(m, k, n, 1.0, MatPtr { ptr: a.as_ptr(), rs: k as isize, cs: 1 }, MatPtr { ptr: b.as_ptr(), rs: n as isize, cs: 1 }, 1.0, c.as_mut_ptr(), 1, m as isize) };
        for i in 0..m {
            for j in 0..n {
                let want: f64 = 1.0 + (0..k).map(|p| a[i * k + p] as f64 * b[p * n + j] as f64).sum::<f64>();
                assert!((c[j * m + i] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()), "column-major C[{i},{j}] = {}, expected {want}", c[j * m + i]);
            }
        }
    });
}

#[test]
fn beta_zero_ignores_nan_in_c() {
    // beta = 0 must overwrite C without reading it (BLAS semantics): NaN garbage stays out.
    let (m, k, n) = (13, 5, 35);
    let (a, b) = (values(m * k, 7), values(k * n, 8));
    let mut c = vec![f32::NAN; m * n];
    unsafe { sgemm_serial(m, k, n, 1.0, MatPtr { ptr: a.as_ptr(), rs: k as isize, cs: 1 }, MatPtr { ptr: b.as_ptr(), rs: n as isize, cs: 1 }, 0.0, c.as_mut_ptr(), n as isize, 1) };
    assert!(c.iter().all(|v| v.is_finite()), "beta = 0 read the NaNs already in C");
}

#[test]
fn column_major_c_is_computed_as_row_major_transpose() {
    let (m, k, n) = (29, 70, 41);
    let (a, b) = (values(m * k, 9), values(k * n, 10));
    let mut c = vec![0.0f32; m * n]; // column-major: C[i, j] at j * m + i
    unsafe { sgemm_serial(m, k, n, 1.0, MatPtr { ptr: a.as_ptr(), rs: k as isize, cs: 1 }, MatPtr { ptr: b.as_ptr(), rs: n as isize, cs: 1 }, 0.0, c.as_mut_ptr(), 1, m as isize) };
    for i in 0..m {
        for j in 0..n {
            let want: f64 = (0..k).map(|p| a[i * k + p] as f64 * b[p * n + j] as f64).sum();
            assert!((c[j * m + i] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()), "C[{i},{j}]");
        }
    }
}

#[test]
fn batched_gemm_accumulates_per_item() {
    // Three items of (7 x 9) · (9 x 40), accumulated onto C = 1.
    let (m, k, n, batch) = (7, 9, 40, 3);
    let (a, b) = (values(batch * m * k, 11), values(batch * k * n, 12));
    let a_off: Vec<isize> = (0..batch).map(|i| (i * m * k) as isize).collect();
    let b_off: Vec<isize> = (0..batch).map(|i| (i * k * n) as isize).collect();
    let g = BatchedGemm { m, k, n, a: a.as_ptr(), a_strides: (k as isize, 1), a_offsets: &a_off, b: b.as_ptr(), b_strides: (n as isize, 1), b_offsets: &b_off };
    let mut c = vec![1.0f32; batch * m * n];
    unsafe { g.run(&mut c, true) };
    for t in 0..batch {
        for i in 0..m {
            for j in 0..n {
                let want: f64 = 1.0 + (0..k).map(|p| a[t * m * k + i * k + p] as f64 * b[t * k * n + p * n + j] as f64).sum::<f64>();
                assert!((c[(t * m + i) * n + j] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()), "item {t} C[{i},{j}]");
            }
        }
    }
}

#[test]
fn batched_gemm_into_uninitialised_memory_writes_every_element() {
    // `run_uninit` is how a matmul fills its fresh output without zeroing it
    // first: every element must be written, whatever was in memory (NaN here),
    // for one item (split across threads), many items (one per thread), edge
    // tiles, and k = 0 (the product is all zeros).
    for &(m, k, n, batch) in &[(67, 45, 33, 1), (130, 70, 300, 1), (13, 9, 35, 5), (4, 0, 5, 2)] {
        let (a, b) = (values(batch * m * k, 13), values(batch * k * n, 14));
        let a_off: Vec<isize> = (0..batch).map(|i| (i * m * k) as isize).collect();
        let b_off: Vec<isize> = (0..batch).map(|i| (i * k * n) as isize).collect();
        let g = BatchedGemm { m, k, n, a: a.as_ptr(), a_strides: (k as isize, 1), a_offsets: &a_off, b: b.as_ptr(), b_strides: (n as isize, 1), b_offsets: &b_off };
        let mut c = vec![std::mem::MaybeUninit::new(f32::NAN); batch * m * n];
        unsafe { g.run_uninit(&mut c) };
        // SAFETY: MaybeUninit<f32> has f32's layout, and every element holds a value (NaN or written).
        let c: Vec<f32> = c.iter().map(|v| unsafe { v.assume_init() }).collect();
        for t in 0..batch {
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k).map(|p| a[t * m * k + i * k + p] as f64 * b[t * k * n + p * n + j] as f64).sum();
                    let got = c[(t * m + i) * n + j] as f64;
                    assert!((got - want).abs() < 1e-4 * (1.0 + want.abs()), "({m}, {k}, {n}) x {batch}: item {t} C[{i},{j}] = {got}, want {want}");
                }
            }
        }
    }
}
