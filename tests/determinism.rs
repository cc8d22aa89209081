//! Same seed, same numbers: a small training loop run twice in one process
//! gives bit-identical losses and weights.
//!
//! The loop goes through every parallel kernel whose result could depend on
//! thread scheduling: the row-blocked GEMM, conv2d's per-image dW sums (96
//! images: several blocks), layer norm's dγ/dβ sums (96 rows: two blocks of
//! 64), group norm, and seeded dropout. A reduction that followed rayon's
//! work stealing would change the last bits from run to run.

use dalle::{Rng, Tensor};

/// Train for `steps` plain SGD steps from `seed`; return every loss and the final weights.
fn train(seed: u64, steps: usize) -> (Vec<f32>, Vec<Vec<f32>>) {
    let mut rng = Rng::new(seed);
    let x = Tensor::randn(&[96, 3, 6, 6], &mut rng); // (N, C, H, W)
    let labels: Vec<usize> = (0..96).map(|_| rng.below(4)).collect();
    let p = |shape: &[usize], scale: f32, rng: &mut Rng| Tensor::param(rng.normal_array(shape) * scale);
    let params = vec![
        p(&[8, 3, 3, 3], 0.2, &mut rng), // conv weight
        p(&[8], 0.1, &mut rng),          // conv bias
        Tensor::param(ndarray::ArrayD::ones(ndarray::IxDyn(&[8]))), // group norm γ
        p(&[8], 0.1, &mut rng),          // group norm β
        p(&[16, 72], 0.1, &mut rng),     // linear 1
        Tensor::param(ndarray::ArrayD::ones(ndarray::IxDyn(&[16]))), // layer norm γ
        p(&[16], 0.1, &mut rng),         // layer norm β
        p(&[4, 16], 0.3, &mut rng),      // linear 2
    ];
    let mut dropout_rng = rng.fork();
    let mut losses = Vec::new();
    for _ in 0..steps {
        let h = x.conv2d(&params[0], Some(&params[1]), 1, 1).unwrap(); // (96, 8, 6, 6)
        let h = h.group_norm(2, &params[2], &params[3], 1e-5).unwrap().silu();
        let h = h.avg_pool2d(2, 2).unwrap().flatten_from(1).unwrap(); // (96, 72)
        let h = h.matmul_t(&params[4]).unwrap().layer_norm(&params[5], &params[6], 1e-5).unwrap(); // (96, 16)
        let h = h.gelu().dropout(0.1, true, &mut dropout_rng).unwrap();
        let loss = h.matmul_t(&params[7]).unwrap().cross_entropy(&labels).unwrap(); // (96, 4) -> ()
        losses.push(loss.item());
        params.iter().for_each(Tensor::zero_grad);
        loss.backward();
        for w in &params {
            let g = w.grad().unwrap();
            w.update(|d| d.scaled_add(-0.1, &g));
        }
    }
    (losses, params.iter().map(Tensor::to_vec).collect())
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn same_seed_gives_bit_identical_training() {
    let (losses, weights) = train(42, 15);
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(losses[14] < losses[0], "the loop learns: {losses:?}");
    for run in 0..3 {
        let (again, weights_again) = train(42, 15);
        assert_eq!(bits(&losses), bits(&again), "run {run}: losses differ");
        for (i, (a, b)) in weights.iter().zip(&weights_again).enumerate() {
            assert_eq!(bits(a), bits(b), "run {run}: parameter {i} differs");
        }
    }
    let (other, _) = train(43, 15);
    assert_ne!(bits(&losses), bits(&other), "another seed gives other numbers");
}
