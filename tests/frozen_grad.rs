//! Engine support for CLIP guidance (chapter 09): `enable_grad` inside `no_grad`, and
//! frozen parameters that pass a gradient with respect to the input through a network
//! without receiving one themselves.

use dalle::nn::{Activation, Forward, Linear, Module, Sequential};
use dalle::tensor::{enable_grad, is_grad_enabled, no_grad};
use dalle::{Rng, Tensor};
use ndarray::ArrayD;

fn mlp(rng: &mut Rng) -> Sequential {
    Sequential::new().push(Linear::new(6, 8, true, rng)).push(Activation::Tanh).push(Linear::new(8, 3, true, rng))
}

/// `L(x) = Σ w ⊙ net(x)` for fixed weights `w`, in f64 from f32 outputs.
fn score(net: &Sequential, x: &ArrayD<f32>, w: &[f32]) -> f64 {
    no_grad(|| net.forward(&Tensor::new(x.clone())).unwrap()).to_array().iter().zip(w).map(|(&a, &b)| a as f64 * b as f64).sum()
}

#[test]
fn enable_grad_records_inside_no_grad_and_restores_the_state() {
    let x = Tensor::param(ArrayD::from_elem(ndarray::IxDyn(&[3]), 2.0));
    no_grad(|| {
        assert!(!is_grad_enabled());
        assert!(!x.scale(2.0).requires_grad(), "no_grad records nothing");
        enable_grad(|| {
            assert!(is_grad_enabled());
            let y = x.scale(2.0);
            assert!(y.requires_grad() && !y.is_leaf(), "enable_grad records again inside no_grad");
            no_grad(|| assert!(!x.scale(2.0).requires_grad(), "a no_grad inside enable_grad switches it off again"));
            assert!(is_grad_enabled(), "the inner no_grad restored enable_grad's state");
        });
        assert!(!is_grad_enabled(), "leaving enable_grad returns to no_grad");
    });
    assert!(is_grad_enabled());
}

#[test]
fn input_gradient_through_a_frozen_network_inside_no_grad_matches_finite_differences() {
    let mut rng = Rng::new(7);
    let net = mlp(&mut rng);
    net.freeze();
    let x0 = rng.normal_array(&[4, 6]);
    let w: Vec<f32> = rng.uniform_array(&[4, 3], 0.5, 1.5).iter().copied().collect();
    // As a sampler does: everything runs in no_grad; one step turns recording back on.
    let grad = no_grad(|| {
        enable_grad(|| {
            let x = Tensor::param(x0.clone());
            let out = net.forward(&x).unwrap(); // (4, 3)
            let loss = out.mul(&Tensor::from_vec(w.clone(), &[4, 3]).unwrap()).unwrap().sum();
            loss.backward();
            x.grad().expect("the input got a gradient")
        })
    });
    for p in net.parameters() {
        assert!(p.grad().is_none(), "a frozen parameter received a gradient");
    }
    // Central differences in f64 over every element; h = 1e-2 on O(1) inputs keeps the
    // f32 rounding of L (about 1e-7 · |L| / h ≈ 1e-5) well below the tolerance.
    let h = 1e-2f32;
    let mut worst = 0.0f64;
    for i in 0..x0.len() {
        let (mut plus, mut minus) = (x0.clone(), x0.clone());
        plus.as_slice_mut().unwrap()[i] += h;
        minus.as_slice_mut().unwrap()[i] -= h;
        let numeric = (score(&net, &plus, &w) - score(&net, &minus, &w)) / (2.0 * h as f64);
        let analytic = grad.as_slice().unwrap()[i] as f64;
        worst = worst.max((analytic - numeric).abs() / numeric.abs().max(1.0));
    }
    // The O(h²) truncation error of the central difference for a tanh MLP is ~1e-4 here.
    assert!(worst < 2e-3, "worst relative error {worst}");
}

#[test]
fn frozen_parameters_get_no_gradient_and_unfreezing_restores_it() {
    let mut rng = Rng::new(3);
    let net = mlp(&mut rng);
    let x = Tensor::new(rng.normal_array(&[2, 6]));
    net.freeze();
    assert!(net.parameters().iter().all(|p| p.is_frozen() && !p.requires_grad()));
    let out = net.forward(&x).unwrap().sum();
    assert!(!out.requires_grad(), "a frozen network on a constant input records no graph");
    net.unfreeze();
    net.forward(&x).unwrap().sum().backward();
    assert!(net.parameters().iter().all(|p| p.grad().is_some()), "every unfrozen parameter gets a gradient");
}

#[test]
fn freezing_a_computed_tensor_is_an_error() {
    let p = Tensor::param(ArrayD::zeros(ndarray::IxDyn(&[2])));
    let y = p.scale(3.0);
    let err = y.freeze().unwrap_err().to_string();
    assert!(err.contains("only a leaf") && err.contains("computed by"), "{err}");
}
