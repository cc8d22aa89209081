//! The CPU loops: a packed AVX-512 GEMM (with `matrixmultiply` as the portable
//! fallback) and convolution by im2col, both parallel with rayon.

pub mod conv;
pub mod gemm;
#[cfg(target_arch = "x86_64")]
pub mod microkernel;
#[cfg(target_arch = "x86_64")]
pub mod packed_gemm;
