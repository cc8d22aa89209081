//! Every differentiable operation, one family per file.
//!
//! Each op is a method on [`crate::Tensor`] that computes its output and,
//! right beside it, the backward closure given to [`crate::Tensor::from_op`].
//! The rustdoc of each op states its formula, its derivative and the PyTorch
//! call it matches. Heavy loops (matmul, conv2d) go through [`crate::backend`].

pub mod attention;
pub mod conv;
pub mod elementwise;
pub mod index;
pub mod kernels;
pub mod loss;
pub mod matmul;
pub mod norm;
#[cfg(feature = "wgpu")]
pub(crate) mod on_gpu;
pub mod reduce;
pub mod shape;
mod softmax_blocks;

pub use elementwise::sigmoid;
pub use matmul::matmul_arrays;
