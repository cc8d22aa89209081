//! Elementwise operations: arithmetic with broadcasting, and the activations.
//!
//! For `z = f(x, y)` broadcast to a common shape, the chain rule gives
//! `dL/dx = reduce(dL/dz * df/dx)`, where `reduce` sums over the dimensions
//! along which `x` was stretched ([`reduce_to_shape`]).

use super::kernels::{broadcast_map2, broadcast_map3, erf, exp, map, map2, map2_as, map3_as, map_as, MulAdd, Plain};
use crate::tensor::{broadcast_shapes, reduce_to_shape, reduce_to_shape_ref, Tensor};
use crate::Result;
use ndarray::ArrayD;

// ANCHOR: binary
/// A binary op with broadcasting: value `f`, and the two partial derivatives
/// `dfdx(g, x, y) = g * df/dx` and `dfdy(g, x, y) = g * df/dy`.
fn binary(
    op: &'static str,
    a: &Tensor,
    b: &Tensor,
    f: impl Fn(f32, f32) -> f32 + Copy + Send + Sync + 'static,
    dfdx: impl Fn(f32, f32, f32) -> f32 + Copy + Send + Sync + 'static,
    dfdy: impl Fn(f32, f32, f32) -> f32 + Copy + Send + Sync + 'static,
) -> Result<Tensor> {
    let (sa, sb) = (a.shape(), b.shape());
    let shape = broadcast_shapes(op, &sa, &sb)?;
    let out = {
        let (x, y) = (a.data(), b.data());
        if sa == sb { map2(&x, &y, f) } else { broadcast_map2(&x, &y, &shape, f) }
    };
    let (ac, bc) = (a.clone(), b.clone());
    Ok(Tensor::from_op(out, op, &[a, b], move |g, _| {
        let (x, y) = (ac.data(), bc.data());
        let ga = ac.requires_grad().then(|| reduce_to_shape(broadcast_map3(g, &x, &y, dfdx), &sa));
        let gb = bc.requires_grad().then(|| reduce_to_shape(broadcast_map3(g, &x, &y, dfdy), &sb));
        vec![ga, gb]
    }))
}
// ANCHOR_END: binary

/// GELU's value `x Φ(x)`, `#[inline(always)]` so that the elementwise loops
/// inline it and vectorise.
#[inline(always)]
fn gelu<M: MulAdd>(x: f32) -> f32 {
    let h = 0.5 * x;
    M::mul_add(h, erf::<M>(x * std::f32::consts::FRAC_1_SQRT_2), h) // x/2 + x/2 · erf(x/√2)
}

/// GELU's `g * d/dx = g (Φ(x) + x φ(x))`.
#[inline(always)]
fn gelu_grad<M: MulAdd>(g: f32, x: f32) -> f32 {
    let cdf = M::mul_add(0.5, erf::<M>(x * std::f32::consts::FRAC_1_SQRT_2), 0.5); // Φ(x) = (1 + erf(x/√2)) / 2
    let pdf = exp::<M>(-0.5 * x * x) * 0.398_942_3; // φ(x) = e^{-x²/2} / √(2π)
    g * M::mul_add(x, pdf, cdf)
}

/// The logistic function `σ(x) = 1 / (1 + e^{-x})` from [`exp`], so that the
/// loops calling it vectorise (SiLU's; [`sigmoid`] calls libm's `expf`, one
/// element at a time). `e^{-x}` is 0 for x > 87.3 and at most 2.4e38 for
/// x < -88.4, so σ goes smoothly to 1 and to 0 without overflow.
#[inline(always)]
pub(crate) fn logistic<M: MulAdd>(x: f32) -> f32 {
    1.0 / (1.0 + exp::<M>(-x))
}

/// A unary op whose derivative needs the input only: `dfdx(g, x) = g * f'(x)`,
/// a two-operand loop over the gradient and the input (the output is not read).
fn unary_x(op: &'static str, a: &Tensor, f: impl Fn(f32) -> f32 + Send + Sync + 'static, dfdx: impl Fn(f32, f32) -> f32 + Copy + Send + Sync + 'static) -> Tensor {
    unary_x_as::<Plain>(op, a, f, dfdx)
}

/// [`unary_x`] for `f` and `dfdx` that use the multiply-add `M` (see [`MulAdd`]).
fn unary_x_as<M: MulAdd>(op: &'static str, a: &Tensor, f: impl Fn(f32) -> f32 + Send + Sync + 'static, dfdx: impl Fn(f32, f32) -> f32 + Copy + Send + Sync + 'static) -> Tensor {
    #[cfg(feature = "wgpu")]
    if let Some(y) = super::on_gpu::unary_named(a, op) {
        return y;
    }
    let out = map_as::<M>(&a.data(), f);
    let ac = a.clone();
    Tensor::from_op(out, op, &[a], move |g, _| vec![Some(map2_as::<M>(g, &ac.data(), dfdx))])
}

/// A unary op whose derivative is computed from the input `x` and the output `y`:
/// `dfdx(g, x, y) = g * f'(x)`.
fn unary(op: &'static str, a: &Tensor, f: impl Fn(f32) -> f32 + Send + Sync + 'static, dfdx: impl Fn(f32, f32, f32) -> f32 + Copy + Send + Sync + 'static) -> Tensor {
    #[cfg(feature = "wgpu")]
    if let Some(y) = super::on_gpu::unary_named(a, op) {
        return y;
    }
    let out = map(&a.data(), f);
    let ac = a.clone();
    Tensor::from_op(out, op, &[a], move |g, y| {
        let x = ac.data();
        vec![Some(map3_as::<Plain>(g, &x, y, dfdx))]
    })
}

impl Tensor {
    /// `a + b` with broadcasting. d/da = 1, d/db = 1. PyTorch: `a + b`.
    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        let (sa, sb) = (self.shape(), other.shape());
        let shape = broadcast_shapes("add", &sa, &sb)?;
        #[cfg(feature = "wgpu")]
        if let Some(y) = super::on_gpu::add(self, other) {
            return Ok(y);
        }
        let out = {
            let (x, y) = (self.data(), other.data());
            if sa == sb { map2(&x, &y, |p, q| p + q) } else { broadcast_map2(&x, &y, &shape, |p, q| p + q) }
        };
        let (ra, rb) = (self.requires_grad(), other.requires_grad());
        Ok(Tensor::from_op(out, "add", &[self, other], move |g, _| {
            vec![ra.then(|| reduce_to_shape_ref(g, &sa)), rb.then(|| reduce_to_shape_ref(g, &sb))]
        }))
    }

    /// `a - b` with broadcasting. d/da = 1, d/db = -1. PyTorch: `a - b`.
    pub fn sub(&self, other: &Tensor) -> Result<Tensor> {
        let (sa, sb) = (self.shape(), other.shape());
        let shape = broadcast_shapes("sub", &sa, &sb)?;
        #[cfg(feature = "wgpu")]
        if let Some(y) = super::on_gpu::sub(self, other) {
            return Ok(y);
        }
        let out = {
            let (x, y) = (self.data(), other.data());
            if sa == sb { map2(&x, &y, |p, q| p - q) } else { broadcast_map2(&x, &y, &shape, |p, q| p - q) }
        };
        let (ra, rb) = (self.requires_grad(), other.requires_grad());
        Ok(Tensor::from_op(out, "sub", &[self, other], move |g, _| {
            vec![ra.then(|| reduce_to_shape_ref(g, &sa)), rb.then(|| reduce_to_shape(map(g, |v| -v), &sb))]
        }))
    }

    // ANCHOR: mul
    /// `a * b` with broadcasting. d/da = b, d/db = a. PyTorch: `a * b`.
    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        #[cfg(feature = "wgpu")]
        if let Some(y) = super::on_gpu::mul(self, other) {
            return Ok(y);
        }
        binary("mul", self, other, |x, y| x * y, |g, _, y| g * y, |g, x, _| g * x)
    }
    // ANCHOR_END: mul

    /// `a / b` with broadcasting. d/da = 1/b, d/db = -a/b². PyTorch: `a / b`.
    pub fn div(&self, other: &Tensor) -> Result<Tensor> {
        binary("div", self, other, |x, y| x / y, |g, _, y| g / y, |g, x, y| -g * x / (y * y))
    }

    /// `max(a, b)` elementwise; the gradient goes to the larger, and is split
    /// in halves on ties (as PyTorch does). PyTorch: `torch.maximum(a, b)`.
    pub fn maximum(&self, other: &Tensor) -> Result<Tensor> {
        fn share(g: f32, mine: f32, theirs: f32) -> f32 {
            if mine > theirs {
                g
            } else if mine == theirs {
                0.5 * g
            } else {
                0.0
            }
        }
        binary("maximum", self, other, f32::max, |g, x, y| share(g, x, y), |g, x, y| share(g, y, x))
    }

    /// `x + c` for a constant c. d/dx = 1.
    pub fn add_scalar(&self, c: f32) -> Tensor {
        #[cfg(feature = "wgpu")]
        if let Some(y) = super::on_gpu::unary(self, crate::backend::wgpu::pointwise::Unary::AddScalar(c), "add_scalar") {
            return y;
        }
        let out = map(&self.data(), move |v| v + c);
        Tensor::from_op(out, "add_scalar", &[self], |g, _| vec![Some(g.clone())])
    }

    /// `c * x` for a constant c. d/dx = c. PyTorch: `x * c`.
    pub fn scale(&self, c: f32) -> Tensor {
        #[cfg(feature = "wgpu")]
        if let Some(y) = super::on_gpu::scale(self, c) {
            return y;
        }
        let out = map(&self.data(), move |v| v * c);
        Tensor::from_op(out, "scale", &[self], move |g, _| vec![Some(map(g, move |v| v * c))])
    }

    /// `-x`. d/dx = -1.
    pub fn neg(&self) -> Tensor {
        self.scale(-1.0)
    }

    /// `x^p` for a constant exponent. d/dx = p x^(p-1), and exactly 0 for
    /// `p = 0` (where `0 · 0⁻¹` would give NaN at x = 0). PyTorch: `x ** p`.
    pub fn pow(&self, p: f32) -> Tensor {
        let out = map(&self.data(), move |v| v.powf(p));
        let ac = self.clone();
        Tensor::from_op(out, "pow", &[self], move |g, _| {
            if p == 0.0 {
                return vec![Some(ArrayD::zeros(g.raw_dim()))];
            }
            vec![Some(map2(g, &ac.data(), move |g, x| g * p * x.powf(p - 1.0)))]
        })
    }

    /// `x²`. d/dx = 2x.
    pub fn square(&self) -> Tensor {
        unary_x("square", self, |x| x * x, |g, x| 2.0 * g * x)
    }

    /// `√x`. d/dx = 1 / (2√x).
    pub fn sqrt(&self) -> Tensor {
        unary("sqrt", self, f32::sqrt, |g, _, y| g * 0.5 / y)
    }

    /// `eˣ`. d/dx = eˣ.
    pub fn exp(&self) -> Tensor {
        unary("exp", self, f32::exp, |g, _, y| g * y)
    }

    /// `ln x`. d/dx = 1/x.
    pub fn log(&self) -> Tensor {
        unary_x("log", self, f32::ln, |g, x| g / x)
    }

    /// `|x|`. d/dx = sign(x) (0 at 0, as PyTorch).
    pub fn abs(&self) -> Tensor {
        unary_x("abs", self, f32::abs, |g, x| if x > 0.0 { g } else if x < 0.0 { -g } else { 0.0 })
    }

    /// `min(max(x, lo), hi)`. d/dx = 1 inside [lo, hi], else 0. PyTorch: `clamp`.
    pub fn clamp(&self, lo: f32, hi: f32) -> Tensor {
        let out = map(&self.data(), move |v| v.clamp(lo, hi));
        let ac = self.clone();
        Tensor::from_op(out, "clamp", &[self], move |g, _| {
            vec![Some(map2(g, &ac.data(), move |g, x| if x >= lo && x <= hi { g } else { 0.0 }))]
        })
    }

    // ANCHOR: tanh
    /// `tanh x`. d/dx = 1 - tanh²x.
    pub fn tanh(&self) -> Tensor {
        unary("tanh", self, f32::tanh, |g, _, y| g * (1.0 - y * y))
    }
    // ANCHOR_END: tanh

    /// `σ(x) = 1 / (1 + e⁻ˣ)`. d/dx = σ(x)(1 - σ(x)).
    pub fn sigmoid(&self) -> Tensor {
        unary("sigmoid", self, sigmoid, |g, _, y| g * y * (1.0 - y))
    }

    /// `max(x, 0)`. d/dx = 1 for x > 0, else 0.
    pub fn relu(&self) -> Tensor {
        unary_x("relu", self, |x| x.max(0.0), |g, x| if x > 0.0 { g } else { 0.0 })
    }

    /// GELU, exact: `x Φ(x) = x (1 + erf(x/√2)) / 2`. d/dx = Φ(x) + x φ(x).
    /// PyTorch: `F.gelu(x)`.
    pub fn gelu(&self) -> Tensor {
        // Closures marked `#[inline(always)]` so that the vectorised loops of
        // `kernels::simd` inline them (a plain fn item reaches them through a shim that is not inlined).
        crate::with_mul_add!(M => unary_x_as::<M>("gelu", self, #[inline(always)] |x| gelu::<M>(x), #[inline(always)] |g, x| gelu_grad::<M>(g, x)))
    }

    /// GELU, tanh approximation: `x/2 (1 + tanh(√(2/π) (x + 0.044715 x³)))`.
    /// PyTorch: `F.gelu(x, approximate="tanh")`.
    pub fn gelu_tanh(&self) -> Tensor {
        const K: f32 = 0.797_884_6; // √(2/π)
        unary_x("gelu_tanh", self, |x| 0.5 * x * (1.0 + (K * (x + 0.044715 * x * x * x)).tanh()), |g, x| {
            let t = (K * (x + 0.044715 * x * x * x)).tanh();
            // d/dx = ½(1 + t) + ½ x (1 - t²) √(2/π) (1 + 3·0.044715 x²)
            g * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * K * (1.0 + 0.134145 * x * x))
        })
    }

    /// SiLU (swish): `x σ(x)`. d/dx = σ(x)(1 + x(1 - σ(x))). PyTorch: `F.silu`.
    pub fn silu(&self) -> Tensor {
        crate::with_mul_add!(M => unary_x_as::<M>("silu", self, #[inline(always)] |x| x * logistic::<M>(x), #[inline(always)] |g, x| {
            let s = logistic::<M>(x);
            g * s * (1.0 + x * (1.0 - s))
        }))
    }

    /// CLIP's QuickGELU: `x σ(1.702 x)`. d/dx = σ(1.702x)(1 + 1.702 x (1 - σ(1.702x))).
    pub fn quick_gelu(&self) -> Tensor {
        crate::with_mul_add!(M => unary_x_as::<M>("quick_gelu", self, #[inline(always)] |x| x * logistic::<M>(1.702 * x), #[inline(always)] |g, x| {
            let s = logistic::<M>(1.702 * x);
            g * s * (1.0 + 1.702 * x * (1.0 - s))
        }))
    }
}

/// The logistic function, computed without overflow for large |x|.
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}
