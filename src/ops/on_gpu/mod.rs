//! The GPU twins of the ops, for tensors that stay on the GPU ([`backend::resident`]).
//!
//! Each function here is called first by its op in the sibling files. It returns `None`
//! when the op should run on the CPU: tensors do not stay on the GPU, the op is not
//! worth moving there (below), or the GPU failed (said once on stderr). Otherwise it
//! runs the op's kernels on the inputs' GPU copies (uploading those not there yet: a
//! batch of images, a parameter changed on the host) and returns a tensor whose values
//! stay on the GPU, with a backward closure that runs on the GPU as well. The formulas
//! are those of the CPU ops they mirror.
//!
//! Where an op runs: a light op (about one operation per value it reads: ReLU, add,
//! pooling, a loss) runs on the GPU only when one of its inputs is already there, so a
//! model the GPU does not cover never ships values over the bus for it. A heavy op
//! (linear, conv2d) starts a GPU chain when its floating-point operations per byte it
//! must upload reach [`backend::min_gpu_intensity`]; parameters are not counted, since
//! they are uploaded once and stay.

use crate::backend::wgpu::GpuArray;
use crate::backend;
use crate::tensor::{DeviceValue, Tensor};
use crate::Result;

mod elementwise;
mod movement;
mod products;
mod rowwise;
mod training;

pub(crate) use movement::{concat2, masked_fill, max_pool2d, narrow, permute, reshape, select_rows, upsample_nearest2d};
pub(crate) use elementwise::{add, bce_with_logits, mul, scale, sub, sum, sum_last, unary, unary_named};
pub(crate) use products::{conv2d, linear, matmul};
pub(crate) use rowwise::{cross_entropy, layer_norm, softmax};
pub(crate) use training::{adam_step, code_sums, nearest_codes, scaled, squared_norm};

/// `Some(f())` when tensors stay on the GPU and the kernels succeed, else `None`.
fn attempt<T>(f: impl FnOnce() -> Result<T>) -> Option<T> {
    if !backend::resident() {
        return None;
    }
    match f() {
        Ok(t) => Some(t),
        Err(e) => {
            backend::report_gpu_error(&e);
            None
        }
    }
}

/// Whether a light op runs on the GPU: one of its inputs is already there.
fn any_on_gpu(inputs: &[&Tensor]) -> bool {
    backend::resident() && inputs.iter().any(|t| t.is_on_device())
}

/// Whether a heavy op of `flops` runs on the GPU: every input is there, or the flops
/// per byte still to upload reach the threshold. A parameter is not counted: it is
/// uploaded once and stays (until the host changes it).
fn pays(flops: f64, inputs: &[&Tensor]) -> bool {
    let upload: usize = inputs.iter().filter(|t| !t.is_on_device() && t.param_key().is_none()).map(|t| 4 * t.len()).sum();
    backend::resident() && (upload == 0 || flops >= backend::min_gpu_intensity() as f64 * upload as f64)
}

/// A GPU array as a value of `shape`.
fn value(array: GpuArray, shape: &[usize]) -> DeviceValue {
    DeviceValue::new(array, shape)
}

/// The axes of an `n`-axis array with `axis` moved last.
fn axis_last(n: usize, axis: usize) -> Vec<usize> {
    (0..n).filter(|&a| a != axis).chain([axis]).collect()
}

/// The permutation that undoes `order`.
fn inverse(order: &[usize]) -> Vec<usize> {
    let mut back = vec![0; order.len()];
    for (i, &a) in order.iter().enumerate() {
        back[a] = i;
    }
    back
}
