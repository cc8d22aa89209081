//! Finite-difference gradient checks, used by the tests of every op and layer.
//!
//! For `L(x) = Σ w ⊙ f(x)` with fixed random weights `w` (so every output
//! element matters), compare the autograd gradient `∂L/∂x_i` with the central
//! difference `(L(x + h e_i) - L(x - h e_i)) / 2h`, accumulated in f64.
//! The arithmetic is f32, so the difference carries rounding error of order
//! `ε_f32 · |L| / h`; the tolerance must allow for it.

use super::{Rng, Tensor};
use ndarray::ArrayD;

/// The worst disagreement found by [`gradcheck`].
#[derive(Debug, Clone)]
pub struct GradcheckReport {
    /// Largest `|analytic - numeric| / max(1, |numeric|)` over all checked elements.
    pub max_error: f64,
    /// Which input and element gave it, with both values.
    pub worst: String,
}

/// Check the gradients of `f` with respect to each of `inputs`.
///
/// `h` is the finite-difference step; `max_elements` bounds how many elements
/// of each input are perturbed (chosen evenly), to keep large inputs cheap.
pub fn gradcheck(
    f: &dyn Fn(&[Tensor]) -> crate::Result<Tensor>,
    inputs: &[ArrayD<f32>],
    h: f32,
    max_elements: usize,
) -> crate::Result<GradcheckReport> {
    let params: Vec<Tensor> = inputs.iter().map(|a| Tensor::param(a.clone())).collect();
    let out = f(&params)?;
    let mut rng = Rng::new(1234);
    let w = Tensor::new(rng.uniform_array(&out.shape(), 0.5, 1.5));
    let loss = out.mul(&w)?.sum();
    loss.backward();
    let wd = w.to_array();
    let eval = |xs: &[ArrayD<f32>]| -> crate::Result<f64> {
        let ts: Vec<Tensor> = xs.iter().map(|a| Tensor::new(a.clone())).collect();
        let o = super::no_grad(|| f(&ts))?;
        let total = o.data().iter().zip(wd.iter()).map(|(&a, &b)| a as f64 * b as f64).sum();
        Ok(total)
    };
    let mut report = GradcheckReport { max_error: 0.0, worst: String::new() };
    for (k, p) in params.iter().enumerate() {
        let analytic = p.grad().unwrap_or_else(|| ArrayD::zeros(p.data().raw_dim()));
        let n = inputs[k].len();
        let step = (n / max_elements.max(1)).max(1);
        for i in (0..n).step_by(step) {
            let mut xs: Vec<ArrayD<f32>> = inputs.to_vec();
            let orig = xs[k].as_slice().expect("standard layout input")[i];
            xs[k].as_slice_mut().expect("standard")[i] = orig + h;
            let plus = eval(&xs)?;
            xs[k].as_slice_mut().expect("standard")[i] = orig - h;
            let minus = eval(&xs)?;
            let numeric = (plus - minus) / (2.0 * h as f64);
            let a = analytic.as_standard_layout()[ndarray::IxDyn(&unravel(i, inputs[k].shape()))] as f64;
            let err = (a - numeric).abs() / numeric.abs().max(1.0);
            if err > report.max_error {
                report.max_error = err;
                report.worst = format!("input {k} element {i}: analytic {a:.6}, numeric {numeric:.6}");
            }
        }
    }
    Ok(report)
}

fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = i % shape[d];
        i /= shape[d];
    }
    idx
}
