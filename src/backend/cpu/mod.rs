//! The CPU loops: GEMM on `matrixmultiply` and convolution by im2col, both parallel with rayon.

pub mod conv;
pub mod gemm;
