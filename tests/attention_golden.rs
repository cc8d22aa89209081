//! Attention and a pre-LN block against PyTorch 2.5.1 (tests/golden/make_attention_golden.py).
//!
//! The references were computed in float64 from the same float32 inputs, so
//! what differs is our float32 arithmetic. Every value here is of order 1 and
//! comes from sums of at most 4C = 32 products, so float32 rounding
//! (ε = 6e-8 per operation, a few hundred operations deep through LayerNorm,
//! softmax and the MLP) stays far below the tolerance `|a - b| <= 1e-4 (1 + |b|)`;
//! a wrong mask, a wrong head split or a missing 1/√d is off by 1e-2 or more.

use dalle::io::checkpoint::{self, Checkpoint};
use dalle::nn::attention::{causal_mask, padding_mask, scaled_dot_product_attention};
use dalle::nn::{Block, Module, TransformerConfig};
use dalle::{Rng, Tensor};
use ndarray::ArrayD;

const TOL: f32 = 1e-4;

fn golden() -> Checkpoint {
    checkpoint::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/attention.safetensors")).unwrap()
}

fn assert_close(what: &str, ours: &ArrayD<f32>, theirs: &ArrayD<f32>) {
    assert_eq!(ours.shape(), theirs.shape(), "{what}: shape");
    let worst = ours.iter().zip(theirs.iter()).map(|(a, b)| (a - b).abs() / (1.0 + b.abs())).fold(0.0f32, f32::max);
    assert!(worst <= TOL, "{what}: worst relative difference {worst:e} > {TOL:e}");
}

fn param(ck: &Checkpoint, name: &str) -> Tensor {
    Tensor::param(ck.get(name).unwrap().clone())
}

fn check_sdpa(case: &str, mask: &ArrayD<bool>) {
    let ck = golden();
    let (q, k, v) = (param(&ck, "sdpa.q"), param(&ck, "sdpa.k"), param(&ck, "sdpa.v"));
    let (out, weights) = scaled_dot_product_attention(&q, &k, &v, Some(mask)).unwrap();
    out.mul(&Tensor::new(ck.get("sdpa.w").unwrap().clone())).unwrap().sum().backward();
    assert_close(&format!("{case}.out"), &out.to_array(), ck.get(&format!("{case}.out")).unwrap());
    assert_close(&format!("{case}.weights"), &weights.to_array(), ck.get(&format!("{case}.weights")).unwrap());
    for (name, t) in [("dq", &q), ("dk", &k), ("dv", &v)] {
        assert_close(&format!("{case}.{name}"), &t.grad().unwrap(), ck.get(&format!("{case}.{name}")).unwrap());
    }
}

#[test]
fn sdpa_with_causal_mask_matches_pytorch() {
    check_sdpa("causal", &causal_mask(5, 5));
}

#[test]
fn sdpa_with_padding_mask_matches_pytorch() {
    // Batch item 1 holds 3 real keys out of 5.
    check_sdpa("padding", &padding_mask(&[5, 3], 5));
}

#[test]
fn pre_ln_block_forward_and_backward_match_pytorch() {
    let ck = golden();
    let block = Block::new(&TransformerConfig::new(8, 2, 1), &mut Rng::new(0)).unwrap();
    let params = block.named_parameters();
    assert_eq!(params.len(), 12, "ln_1, attn.qkv, attn.proj, ln_2, mlp.fc, mlp.proj: weight and bias each");
    for (name, p) in &params {
        p.assign(ck.get(&format!("block.{name}")).unwrap().clone()).unwrap();
    }
    let x = param(&ck, "block.x");
    let (out, _) = block.forward(&x, Some(&causal_mask(5, 5)), false).unwrap();
    out.mul(&Tensor::new(ck.get("block.w").unwrap().clone())).unwrap().sum().backward();
    assert_close("block.out", &out.to_array(), ck.get("block.out").unwrap());
    assert_close("block.grad.x", &x.grad().unwrap(), ck.get("block.grad.x").unwrap());
    for (name, p) in &params {
        assert_close(&format!("grad {name}"), &p.grad().unwrap(), ck.get(&format!("block.grad.{name}")).unwrap());
    }
}
