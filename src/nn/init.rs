//! Parameter initialisers, all from an explicit seeded [`Rng`].
//!
//! `fan_in` of a weight is the number of inputs feeding one output: `in` for a
//! linear `(out, in)` weight, `C·KH·KW` for a conv `(OC, C, KH, KW)` weight.

use crate::tensor::{Rng, Tensor};

/// `(fan_in, fan_out)` of a weight shape, as PyTorch computes them.
pub fn fans(shape: &[usize]) -> (usize, usize) {
    match shape.len() {
        0 => (1, 1),
        1 => (shape[0], shape[0]),
        _ => {
            let receptive: usize = shape[2..].iter().product();
            (shape[1] * receptive, shape[0] * receptive)
        }
    }
}

/// `N(0, std²)` parameter.
pub fn normal(shape: &[usize], std: f32, rng: &mut Rng) -> Tensor {
    Tensor::param(rng.normal_array(shape) * std)
}

/// `U(-bound, bound)` parameter.
pub fn uniform(shape: &[usize], bound: f32, rng: &mut Rng) -> Tensor {
    Tensor::param(rng.uniform_array(shape, -bound, bound))
}

/// Xavier/Glorot uniform: `bound = √(6 / (fan_in + fan_out))`. PyTorch: `nn.init.xavier_uniform_`.
pub fn xavier_uniform(shape: &[usize], rng: &mut Rng) -> Tensor {
    let (fi, fo) = fans(shape);
    uniform(shape, (6.0 / (fi + fo) as f32).sqrt(), rng)
}

/// Kaiming/He uniform for a leaky-ReLU slope `a`: `bound = √(6 / ((1 + a²) fan_in))`.
/// With `a = √5` this is PyTorch's default for `nn.Linear` and `nn.Conv2d` weights,
/// `bound = 1/√fan_in`. PyTorch: `nn.init.kaiming_uniform_`.
pub fn kaiming_uniform(shape: &[usize], a: f32, rng: &mut Rng) -> Tensor {
    let (fi, _) = fans(shape);
    uniform(shape, (6.0 / ((1.0 + a * a) * fi.max(1) as f32)).sqrt(), rng)
}

/// A parameter of zeros.
pub fn zeros(shape: &[usize]) -> Tensor {
    Tensor::param(ndarray::ArrayD::zeros(ndarray::IxDyn(shape)))
}

/// A parameter of ones.
pub fn ones(shape: &[usize]) -> Tensor {
    Tensor::param(ndarray::ArrayD::ones(ndarray::IxDyn(shape)))
}
