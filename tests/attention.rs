//! Attention, multi-head attention, the transformer block and position
//! embeddings: finite-difference gradients, the key/value cache, names, errors.
//!
//! Gradchecks run in f32 with h = 1e-2: the central difference then carries
//! rounding of order ε_f32 |L| / h ≈ 1e-4 and truncation of order h² ≈ 1e-4,
//! so 1e-2 (relative to max(1, |numeric|)) passes correct gradients and fails
//! any missing term (a dropped softmax Jacobian term is off by O(1)).

use dalle::nn::attention::{causal_mask, combine_masks, padding_mask, scaled_dot_product_attention};
use dalle::nn::{
    sinusoidal_table, Block, LayerNorm, LearnedPositionEmbedding, Linear, Mlp, Module, MultiHeadAttention, Transformer,
    TransformerConfig,
};
use dalle::nn::Activation;
use dalle::tensor::gradcheck::gradcheck;
use dalle::{no_grad, Rng, Tensor};
use ndarray::ArrayD;

const GRAD_TOL: f64 = 1e-2;

fn sdpa_gradcheck(mask: &ArrayD<bool>) {
    let mut rng = Rng::new(1);
    let inputs = [rng.normal_array(&[2, 2, 4, 3]), rng.normal_array(&[2, 2, 4, 3]), rng.normal_array(&[2, 2, 4, 3])];
    let r = gradcheck(&|x| Ok(scaled_dot_product_attention(&x[0], &x[1], &x[2], Some(mask))?.0), &inputs, 1e-2, 100).unwrap();
    assert!(r.max_error < GRAD_TOL, "{r:?}");
}

#[test]
fn sdpa_gradcheck_causal() {
    sdpa_gradcheck(&causal_mask(4, 4));
}

#[test]
fn sdpa_gradcheck_padding_and_causal() {
    sdpa_gradcheck(&padding_mask(&[4, 2], 4));
    sdpa_gradcheck(&combine_masks(&causal_mask(4, 4), &padding_mask(&[4, 2], 4)).unwrap());
}

#[test]
fn masked_keys_get_zero_weight_and_zero_gradient() {
    let mut rng = Rng::new(2);
    let (q, k, v) = (Tensor::param(rng.normal_array(&[1, 1, 3, 2])), Tensor::param(rng.normal_array(&[1, 1, 3, 2])), Tensor::param(rng.normal_array(&[1, 1, 3, 2])));
    let (out, w) = scaled_dot_product_attention(&q, &k, &v, Some(&causal_mask(3, 3))).unwrap();
    let w = w.to_array();
    assert_eq!(w[[0, 0, 0, 1]], 0.0);
    assert_eq!(w[[0, 0, 0, 2]], 0.0);
    assert_eq!(w[[0, 0, 1, 2]], 0.0);
    // Only the last query sees the last key and value.
    out.narrow(2, 0, 2).unwrap().sum().backward();
    assert!(v.grad().unwrap().index_axis(ndarray::Axis(2), 2).iter().all(|&g| g == 0.0));
}

fn mha_from(x: &[Tensor], n_head: usize) -> MultiHeadAttention {
    MultiHeadAttention {
        qkv: Linear::from_tensors(x[1].clone(), Some(x[2].clone())),
        proj: Linear::from_tensors(x[3].clone(), Some(x[4].clone())),
        n_head,
    }
}

#[test]
fn multi_head_attention_gradcheck() {
    let mut rng = Rng::new(3);
    let c = 6;
    let inputs = [
        rng.normal_array(&[2, 4, c]),
        rng.normal_array(&[3 * c, c]) * 0.5,
        rng.normal_array(&[3 * c]) * 0.1,
        rng.normal_array(&[c, c]) * 0.5,
        rng.normal_array(&[c]) * 0.1,
    ];
    let mask = causal_mask(4, 4);
    let r = gradcheck(&|x| Ok(mha_from(x, 3).forward(&x[0], Some(&mask))?.0), &inputs, 1e-2, 60).unwrap();
    assert!(r.max_error < GRAD_TOL, "{r:?}");
}

#[test]
fn transformer_block_gradcheck() {
    let mut rng = Rng::new(4);
    let c = 4;
    let n = |s: &[usize], scale: f32, rng: &mut Rng| rng.normal_array(s) * scale;
    let inputs = [
        n(&[2, 3, c], 1.0, &mut rng),
        n(&[3 * c, c], 0.5, &mut rng),
        n(&[3 * c], 0.1, &mut rng),
        n(&[c, c], 0.5, &mut rng),
        n(&[c], 0.1, &mut rng),
        n(&[c], 0.3, &mut rng).mapv(|v| v + 1.0), // ln_1 γ
        n(&[c], 0.3, &mut rng),                   // ln_1 β
        n(&[c], 0.3, &mut rng).mapv(|v| v + 1.0), // ln_2 γ
        n(&[c], 0.3, &mut rng),                   // ln_2 β
        n(&[4 * c, c], 0.5, &mut rng),
        n(&[4 * c], 0.1, &mut rng),
        n(&[c, 4 * c], 0.5, &mut rng),
        n(&[c], 0.1, &mut rng),
    ];
    let mask = causal_mask(3, 3);
    let f = |x: &[Tensor]| {
        let block = Block {
            ln_1: LayerNorm { weight: x[5].clone(), bias: x[6].clone(), eps: 1e-5 },
            attn: mha_from(x, 2),
            ln_2: LayerNorm { weight: x[7].clone(), bias: x[8].clone(), eps: 1e-5 },
            mlp: Mlp {
                fc: Linear::from_tensors(x[9].clone(), Some(x[10].clone())),
                proj: Linear::from_tensors(x[11].clone(), Some(x[12].clone())),
                activation: Activation::Gelu,
            },
            dropout: None,
        };
        Ok(block.forward(&x[0], Some(&mask), false)?.0)
    };
    let r = gradcheck(&f, &inputs, 1e-2, 40).unwrap();
    assert!(r.max_error < GRAD_TOL, "{r:?}");
}

#[test]
fn cached_decoding_equals_the_full_causal_forward() {
    let mut rng = Rng::new(5);
    let mut config = TransformerConfig::new(8, 2, 3);
    config.activation = Activation::QuickGelu;
    let model = Transformer::new(config, &mut rng).unwrap();
    let x = Tensor::new(rng.normal_array(&[2, 6, 8]));
    no_grad(|| {
        let full = model.forward(&x, Some(&causal_mask(6, 6)), false).unwrap();
        let mut cache = model.new_cache();
        // A prompt of 2 positions at once, then one position at a time.
        let mut steps = vec![model.forward_cached(&x.narrow(1, 0, 2).unwrap(), &mut cache).unwrap().output];
        assert_eq!(cache.len(), 2);
        for t in 2..6 {
            let step = model.forward_cached(&x.narrow(1, t, 1).unwrap(), &mut cache).unwrap();
            assert_eq!(step.attention[0].shape(), [2, 2, 1, t + 1], "step {t} attends to all {} cached positions", t + 1);
            steps.push(step.output);
        }
        assert_eq!(cache.len(), 6);
        let cached = Tensor::concat(&steps.iter().collect::<Vec<_>>(), 1).unwrap();
        let worst = full.output.to_array().iter().zip(cached.to_array().iter()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-5, "cached and full outputs differ by {worst}");
        // Without the causal mask the full forward is different: the test can fail.
        let unmasked = model.forward(&x, None, false).unwrap().output;
        let diff = unmasked.to_array().iter().zip(cached.to_array().iter()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(diff > 1e-3);
    });
}

#[test]
fn parameter_names_follow_gpt_and_clip() {
    let model = Transformer::new(TransformerConfig::new(8, 2, 2), &mut Rng::new(0)).unwrap();
    let names: Vec<String> = model.named_parameters().into_iter().map(|(n, _)| n).collect();
    let block0 = [
        "blocks.0.ln_1.weight", "blocks.0.ln_1.bias", "blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.bias",
        "blocks.0.attn.proj.weight", "blocks.0.attn.proj.bias", "blocks.0.ln_2.weight", "blocks.0.ln_2.bias",
        "blocks.0.mlp.fc.weight", "blocks.0.mlp.fc.bias", "blocks.0.mlp.proj.weight", "blocks.0.mlp.proj.bias",
    ];
    assert_eq!(&names[..12], &block0);
    assert_eq!(names[12], "blocks.1.ln_1.weight");
    assert_eq!(&names[24..], ["ln_f.weight", "ln_f.bias"]);
    let shapes: Vec<Vec<usize>> = model.named_parameters().iter().map(|(_, t)| t.shape()).collect();
    assert_eq!(shapes[2], [24, 8]);
    assert_eq!(shapes[8], [32, 8]);
    // 2 blocks of (4·8 + 3·8·8 + 3·8 + 8·8 + 8 + 8·32 + 32 + 32·8 + 8) + ln_f.
    assert_eq!(model.num_parameters(), 2 * (32 + 192 + 24 + 64 + 8 + 256 + 32 + 256 + 8) + 16);
}

#[test]
fn shape_errors_are_errors() {
    let mut rng = Rng::new(0);
    let err = MultiHeadAttention::new(10, 3, true, &mut rng).err().unwrap().to_string();
    assert!(err.contains("width 10 is not divisible by 3 heads"), "{err}");
    let err = Transformer::new(TransformerConfig::new(8, 3, 1), &mut rng).err().unwrap().to_string();
    assert!(err.contains("width 8 is not divisible by 3 heads"), "{err}");
    let mha = MultiHeadAttention::new(8, 2, true, &mut rng).unwrap();
    let err = mha.forward(&Tensor::zeros(&[2, 5, 6]), None).err().unwrap().to_string();
    assert!(err.contains("[2, 5, 6]") && err.contains("C = 8"), "{err}");
    let err = mha.forward(&Tensor::zeros(&[5, 8]), None).err().unwrap().to_string();
    assert!(err.contains("[5, 8]"), "{err}");
    let err = mha.forward(&Tensor::zeros(&[1, 5, 8]), Some(&causal_mask(4, 4))).err().unwrap().to_string();
    assert!(err.contains("mask"), "{err}");
    let model = Transformer::new(TransformerConfig::new(8, 2, 2), &mut rng).unwrap();
    let mut wrong = dalle::nn::KvCache::new(1);
    assert!(model.forward_cached(&Tensor::zeros(&[1, 1, 8]), &mut wrong).is_err());
}

#[test]
fn sinusoidal_table_follows_vaswani() {
    let d = 6;
    let pe = sinusoidal_table(50, d).unwrap();
    for pos in [0usize, 1, 7, 49] {
        for i in 0..d / 2 {
            let angle = pos as f64 / 10000f64.powf(2.0 * i as f64 / d as f64);
            assert!((pe[[pos, 2 * i]] as f64 - angle.sin()).abs() < 1e-6);
            assert!((pe[[pos, 2 * i + 1]] as f64 - angle.cos()).abs() < 1e-6);
        }
    }
    assert!(sinusoidal_table(4, 5).err().unwrap().to_string().contains("width 5"));
}

#[test]
fn learned_positions_slice_with_offset_and_check_the_range() {
    let pos = LearnedPositionEmbedding::new(10, 4, 0.02, &mut Rng::new(0));
    let w = pos.weight.to_array();
    let rows = pos.forward(3, 5).unwrap().to_array();
    assert_eq!(rows.shape(), [3, 4]);
    assert_eq!(rows.index_axis(ndarray::Axis(0), 0), w.index_axis(ndarray::Axis(0), 5));
    let err = pos.forward(3, 8).err().unwrap().to_string();
    assert!(err.contains("8..11") && err.contains("10 positions"), "{err}");
}
