//! Helpers shared by the wgpu tests: the shared context (or a skip) and test values.

use dalle::backend::wgpu::{global, GpuArray, WgpuContext};
use dalle::Tensor;
use ndarray::{ArrayD, IxDyn};

/// The shared context, or None (test skipped) when there is no adapter; with
/// `DALLE_REQUIRE_GPU=1` a missing adapter fails the test instead.
pub fn ctx() -> Option<&'static WgpuContext> {
    match global() {
        Ok(ctx) => Some(ctx),
        Err(e) => {
            if std::env::var("DALLE_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("DALLE_REQUIRE_GPU=1 but no wgpu context: {e}");
            }
            eprintln!("skipping wgpu test: {e}");
            None
        }
    }
}

/// Deterministic values in [-1, 1) (xorshift), different for each `seed`.
pub fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// `values` copied to the GPU.
pub fn upload(values: &[f32]) -> GpuArray {
    GpuArray::upload(values).expect("upload")
}

/// The values of a GPU array, read back.
pub fn download(array: &GpuArray) -> Vec<f32> {
    array.to_vec().expect("read-back")
}

/// A leaf tensor of `shape` that requires a gradient.
pub fn param(values: &[f32], shape: &[usize]) -> Tensor {
    Tensor::param(ArrayD::from_shape_vec(IxDyn(shape), values.to_vec()).expect("shape matches the values"))
}
