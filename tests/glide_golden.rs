//! GLIDE's text-conditioned attention against PyTorch 2.5.1 (tests/golden/make_glide_golden.py):
//! token ids through the text encoder, its tokens as the attention block's context with the
//! padding after EOT masked, and its EOT feature projected to `cond`; forward and backward.
//! (tests/diffusion_golden.rs checks the attention block alone on random context tokens.)
//!
//! Tolerance: references in float64 from the same float32 parameters; each value is a chain
//! of a few dozen float32 products, sums, two softmaxes and three layer/group norms:
//! `|a - b| <= 1e-4 (1 + |b|)`. Pooling at the wrong token, an unmasked padding token or a
//! missing causal mask moves values by 1e-2 or more.

use dalle::io::checkpoint::{self, Checkpoint};
use dalle::models::clip::ClipTextConfig;
use dalle::models::diffusion::blocks::AttentionBlock;
use dalle::models::glide::{GlideConfig, TextEncoder};
use dalle::nn::{Forward, Linear, Module};
use dalle::{Rng, Tensor};
use ndarray::{Array2, ArrayD};

fn golden() -> Checkpoint {
    checkpoint::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/glide.safetensors")).unwrap()
}

fn assert_close(what: &str, ours: &ArrayD<f32>, theirs: &ArrayD<f32>) {
    assert_eq!(ours.shape(), theirs.shape(), "{what}: shape");
    for (i, (a, b)) in ours.iter().zip(theirs.iter()).enumerate() {
        assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{what}[{i}]: ours {a}, reference {b}");
    }
}

/// Copy `prefix.<name>` of the golden file into each parameter of `module`.
fn load(module: &dyn Module, ck: &Checkpoint, prefix: &str) -> Vec<(String, Tensor)> {
    let params = module.named_parameters();
    for (name, p) in &params {
        p.assign(ck.get(&format!("{prefix}.{name}")).unwrap().clone()).unwrap();
    }
    params.into_iter().map(|(n, p)| (format!("{prefix}.{n}"), p)).collect()
}

#[test]
fn caption_conditioned_attention_forward_and_backward_match_pytorch() {
    let ck = golden();
    let config = ClipTextConfig { hidden_size: 8, intermediate_size: 16, num_attention_heads: 2, num_hidden_layers: 1, max_position_embeddings: 6, vocab_size: 12, ..GlideConfig::mnist().text };
    let mut rng = Rng::new(0);
    let text = TextEncoder::new(&config, &mut rng).unwrap();
    let cond_proj = Linear::new(8, 16, true, &mut rng);
    let block = AttentionBlock::new(8, 2, 4, Some(8), &mut rng).unwrap();
    let mut params = load(&text, &ck, "text");
    params.extend(load(&cond_proj, &ck, "cond_proj"));
    params.extend(load(&block, &ck, "attn"));
    assert_eq!(params.len(), 30, "18 text, 2 cond_proj, 8 attention block tensors");

    let ids: Array2<u32> = ck.get("ids").unwrap().mapv(|v| v as u32).into_dimensionality().unwrap(); // (2, 6)
    let x = Tensor::param(ck.get("x").unwrap().clone()); // (2, 8, 3, 3)
    let features = text.encode(&ids).unwrap();
    assert_eq!(features.padding.mapv(|b| b as u8 as f32), *ck.get("padding").unwrap(), "padding = after the first EOT");
    let cond = cond_proj.forward(&features.pooled).unwrap(); // (2, 16)
    let y = block.forward(&x, Some(features.context())).unwrap(); // (2, 8, 3, 3)
    let w = |name: &str| Tensor::new(ck.get(name).unwrap().clone());
    y.mul(&w("w")).unwrap().sum().add(&cond.mul(&w("w_cond")).unwrap().sum()).unwrap().backward();

    assert_close("out", &y.to_array(), ck.get("out").unwrap());
    assert_close("cond", &cond.to_array(), ck.get("cond").unwrap());
    assert_close("grad.x", &x.grad().unwrap(), ck.get("grad.x").unwrap());
    for (name, p) in &params {
        assert_close(&format!("grad.{name}"), &p.grad().unwrap(), ck.get(&format!("grad.{name}")).unwrap());
    }
    // the padding id 0 occurs only after EOT: its embedding was never seen, so it has no gradient
    let token_grad = params.iter().find(|(n, _)| n.ends_with("token_embedding.weight")).unwrap().1.grad().unwrap();
    assert!(token_grad.index_axis(ndarray::Axis(0), 0).iter().all(|v| *v == 0.0), "the padding token's embedding received gradient");
}
