//! The loops that do the arithmetic, apart from the autograd bookkeeping.

#[cfg(feature = "wgpu")]
pub mod wgpu;
