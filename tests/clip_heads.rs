//! The three image-text heads: shapes, errors, and that each one can learn a
//! pair task that needs both inputs (XOR-like: the label is 1 when the image
//! and the text agree in sign), which no single input can solve.

use dalle::models::clip::heads::{ConcatMlpHead, FusionTransformerHead, SumHead};
use dalle::nn::Module;
use dalle::optim::{Adam, Optimizer};
use dalle::{Rng, Tensor};

/// Pairs `(a, b)` of `(B, E)` with `label = [sign(a₀) == sign(b₀)]`.
fn agreement_task(n: usize, e: usize, rng: &mut Rng) -> (Tensor, Tensor, Vec<usize>) {
    let a = rng.normal_array(&[n, e]);
    let b = rng.normal_array(&[n, e]);
    let labels = (0..n).map(|i| usize::from((a[[i, 0]] > 0.0) == (b[[i, 0]] > 0.0))).collect();
    (Tensor::new(a), Tensor::new(b), labels)
}

fn train(params: Vec<(String, Tensor)>, mut loss_fn: impl FnMut() -> Tensor, steps: usize) -> (f32, f32) {
    let mut opt = Adam::new(params, 1e-2);
    let first = loss_fn().item();
    let mut last = first;
    for _ in 0..steps {
        let loss = loss_fn();
        opt.zero_grad();
        loss.backward();
        opt.step();
        last = loss.item();
    }
    (first, last)
}

#[test]
fn sum_head_shapes_and_learns_a_shared_direction() {
    // The sum can only solve tasks on a + b: label = [a₀ + b₀ > 0].
    let mut rng = Rng::new(0);
    let head = SumHead::new(8, 2, &mut rng);
    let a = Tensor::new(rng.normal_array(&[64, 8]));
    let b = Tensor::new(rng.normal_array(&[64, 8]));
    let labels: Vec<usize> = (0..64).map(|i| usize::from(a.to_array()[[i, 0]] + b.to_array()[[i, 0]] > 0.0)).collect();
    assert_eq!(head.forward(&a, &b).unwrap().shape(), vec![64, 2]);
    let (first, last) = train(head.named_parameters(), || head.forward(&a, &b).unwrap().cross_entropy(&labels).unwrap(), 200);
    assert!(last < 0.5 * first, "{first} -> {last}");
    assert!(head.forward(&a, &Tensor::zeros(&[64, 7])).is_err());
}

#[test]
fn concat_mlp_head_learns_agreement() {
    let mut rng = Rng::new(1);
    let (a, b, labels) = agreement_task(128, 4, &mut rng);
    let head = ConcatMlpHead::new(4, 32, 2, &mut rng);
    let (first, last) = train(head.named_parameters(), || head.forward(&a, &b).unwrap().cross_entropy(&labels).unwrap(), 300);
    assert!(last < 0.3, "{first} -> {last}");
}

#[test]
fn fusion_transformer_head_reads_both_sequences() {
    let mut rng = Rng::new(2);
    // Image tokens (B, 5, 6), text tokens (B, 3, 4); the label depends on the first image and text token.
    let (a, b, labels) = agreement_task(64, 4, &mut rng);
    let img = Tensor::new(rng.normal_array(&[64, 5, 6]).mapv(|v| 0.1 * v));
    let img = img.add(&Tensor::concat(&[&a.narrow(1, 0, 1).unwrap().reshape(&[64, 1, 1]).unwrap().broadcast_to(&[64, 1, 6]).unwrap(), &Tensor::zeros(&[64, 4, 6])], 1).unwrap()).unwrap();
    let txt = Tensor::new(rng.normal_array(&[64, 3, 4]).mapv(|v| 0.1 * v));
    let txt = txt.add(&Tensor::concat(&[&b.narrow(1, 0, 1).unwrap().reshape(&[64, 1, 1]).unwrap().broadcast_to(&[64, 1, 4]).unwrap(), &Tensor::zeros(&[64, 2, 4])], 1).unwrap()).unwrap();
    let head = FusionTransformerHead::new(6, 4, 16, 2, 1, 2, &mut rng).unwrap();
    assert_eq!(head.forward(&img, &txt).unwrap().shape(), vec![64, 2]);
    let (first, last) = train(head.named_parameters(), || head.forward(&img, &txt).unwrap().cross_entropy(&labels).unwrap(), 150);
    assert!(last < 0.5 * first, "{first} -> {last}");
    assert!(head.forward(&img, &txt.narrow(0, 0, 10).unwrap()).is_err());
}
