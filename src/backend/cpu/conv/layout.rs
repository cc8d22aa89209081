//! Transposes for the weight gradient's operands: the image channels-last
//! (`xᵀ_n (H*W, C)`) and `dY_n` pixel-major in MR-row slivers, both from NCHW.
//!
//! ```text
//! dst[p * ldd + i] = src[i * lds + p]      i < rows (channels), p < cols (pixels)
//! ```
//!
//! One float at a time down the channels (the loop this replaces) reads
//! `rows` planes in step; when a plane is a multiple of 4 KiB (32 x 32 floats)
//! those rows all fall in the same L1 set, which holds 8 or 12 lines, and
//! every read missed: the CIFAR-10 VQ-VAE spent a tenth of its step there.
//! Tiles of 8 x 8 read 8 rows at a time, and a whole tile is moved with
//! vector loads, shuffles and stores (the compiler vectorises the fixed-size
//! tile under [`simd`], for the CPU tier).

use crate::ops::kernels::simd;

/// Side of a tile.
const T: usize = 8;

/// `dst[p * ldd + i] = src[i * lds + p]` for `i < rows`, `p < cols` (see the module docs).
/// The rest of `dst` is left as it is.
pub fn transpose(src: &[f32], lds: usize, rows: usize, cols: usize, dst: &mut [f32], ldd: usize) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(src.len() >= (rows - 1) * lds + cols && dst.len() >= (cols - 1) * ldd + rows, "transpose: buffers too short");
    // the full tiles, vectorised for the tier
    let (full_rows, full_cols) = (rows / T * T, cols / T * T);
    if full_rows > 0 && full_cols > 0 {
        simd(|| {
            for i0 in (0..full_rows).step_by(T) {
                for p0 in (0..full_cols).step_by(T) {
                    tile(src, lds, i0, p0, dst, ldd);
                }
            }
        });
    }
    // the edges one float at a time, outside `simd` (vectorised, these short
    // strided loops ran slower than scalar code on the AVX2 tier)
    // the rows below the last full tile (every column), then the columns right of it
    for i in full_rows..rows {
        for (d, &v) in dst[i..].iter_mut().step_by(ldd).zip(&src[i * lds..][..cols]) {
            *d = v;
        }
    }
    for i in (0..full_rows).filter(|_| full_cols < cols) {
        for (d, &v) in dst[full_cols * ldd + i..].iter_mut().step_by(ldd).zip(&src[i * lds + full_cols..][..cols - full_cols]) {
            *d = v;
        }
    }
}

/// One full `T x T` tile at rows `i0..`, columns `p0..` of `src`.
#[inline(always)]
fn tile(src: &[f32], lds: usize, i0: usize, p0: usize, dst: &mut [f32], ldd: usize) {
    let rows: [[f32; T]; T] = std::array::from_fn(|i| src[(i0 + i) * lds + p0..][..T].try_into().expect("T floats"));
    for p in 0..T {
        let col: [f32; T] = std::array::from_fn(|i| rows[i][p]);
        dst[(p0 + p) * ldd + i0..][..T].copy_from_slice(&col);
    }
}

#[cfg(test)]
mod tests {
    /// Against the definition, with partial tiles on both sides and padded strides.
    #[test]
    fn is_a_transpose() {
        for (rows, cols) in [(1, 1), (3, 5), (8, 8), (12, 28), (48, 67), (17, 9)] {
            let (lds, ldd) = (cols + 3, rows + 2);
            let src: Vec<f32> = (0..rows * lds).map(|v| v as f32).collect();
            let mut dst = vec![-1.0f32; cols * ldd];
            super::transpose(&src, lds, rows, cols, &mut dst, ldd);
            for p in 0..cols {
                for i in 0..ldd {
                    let want = if i < rows { src[i * lds + p] } else { -1.0 };
                    assert_eq!(dst[p * ldd + i], want, "({rows}, {cols}): dst[{p}][{i}]");
                }
            }
        }
    }
}
