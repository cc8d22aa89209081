//! The ViT and the tiny GPT: validated configs, shapes, parameter names,
//! and cached generation equal to argmax decoding with the full forward.

use dalle::models::gpt::{Gpt, GptConfig};
use dalle::models::vit::{Vit, VitConfig};
use dalle::nn::{Activation, Module, TransformerConfig};
use dalle::{no_grad, Rng, Tensor};

fn config() -> VitConfig {
    VitConfig {
        image_size: 28,
        patch_size: 7,
        channels: 1,
        width: 16,
        layers: 2,
        heads: 2,
        mlp_ratio: 4,
        activation: Activation::Gelu,
        ln_pre: false,
        num_classes: Some(10),
        dropout: 0.0,
    }
}

#[test]
fn vit_config_errors_name_the_value() {
    let mut rng = Rng::new(0);
    let err = Vit::new(VitConfig { patch_size: 5, ..config() }, &mut rng).err().unwrap().to_string();
    assert!(err.contains("image size 28 is not divisible by patch 5"), "{err}");
    let err = Vit::new(VitConfig { heads: 3, ..config() }, &mut rng).err().unwrap().to_string();
    assert!(err.contains("width 16 is not divisible by 3 heads"), "{err}");
    let err = Vit::new(VitConfig { num_classes: Some(0), ..config() }, &mut rng).err().unwrap().to_string();
    assert!(err.contains("num_classes 0"), "{err}");
    let vit = Vit::new(config(), &mut rng).unwrap();
    let err = vit.forward(&Tensor::zeros(&[2, 3, 28, 28]), false).err().unwrap().to_string();
    assert!(err.contains("[2, 3, 28, 28]") && err.contains("(B, 1, 28, 28)"), "{err}");
    let headless = Vit::new(VitConfig { num_classes: None, ..config() }, &mut rng).unwrap();
    assert!(headless.classify(&Tensor::zeros(&[1, 1, 28, 28]), false).is_err());
}

#[test]
fn vit_shapes_and_names() {
    let vit = Vit::new(VitConfig { ln_pre: true, ..config() }, &mut Rng::new(0)).unwrap();
    let x = Tensor::new(Rng::new(1).uniform_array(&[3, 1, 28, 28], 0.0, 1.0));
    let o = vit.forward(&x, false).unwrap();
    assert_eq!(o.class_embedding.shape(), [3, 16]);
    assert_eq!(o.patch_embeddings.shape(), [3, 16, 16]);
    assert_eq!(o.attention.len(), 2);
    assert_eq!(o.attention[1].shape(), [3, 2, 17, 17]);
    assert_eq!(vit.classify(&x, false).unwrap().shape(), [3, 10]);
    let names: Vec<String> = vit.named_parameters().into_iter().map(|(n, _)| n).collect();
    for expected in ["patch_embed.weight", "class_embedding", "positional_embedding", "ln_pre.weight", "blocks.0.attn.qkv.weight", "blocks.1.mlp.proj.bias", "ln_f.weight", "head.weight"] {
        assert!(names.iter().any(|n| n == expected), "missing {expected} in {names:?}");
    }
    // Images differ only in one patch: the other patch tokens differ too (all tokens attend to all).
    let mut y = x.to_array();
    y.slice_mut(ndarray::s![.., .., 0..7, 0..7]).fill(0.5);
    let o2 = vit.forward(&Tensor::new(y), false).unwrap();
    let far = |t: &Tensor| t.narrow(1, 15, 1).unwrap().to_array();
    assert!(far(&o.patch_embeddings) != far(&o2.patch_embeddings));
}

#[test]
fn vit_learns_to_separate_two_classes() {
    // Bright top half vs bright bottom half: a few steps of Adam must fit this.
    let vit = Vit::new(VitConfig { num_classes: Some(2), ..config() }, &mut Rng::new(0)).unwrap();
    let mut images = ndarray::Array4::<f32>::zeros((8, 1, 28, 28));
    let labels: Vec<usize> = (0..8).map(|i| i % 2).collect();
    for (i, &l) in labels.iter().enumerate() {
        let rows = if l == 0 { 0..14 } else { 14..28 };
        images.slice_mut(ndarray::s![i, 0, rows, ..]).fill(1.0);
    }
    let x = Tensor::new(images.into_dyn());
    let mut opt = dalle::optim::Adam::new(vit.named_parameters(), 3e-3);
    use dalle::optim::Optimizer;
    let first = vit.classify(&x, true).unwrap().cross_entropy(&labels).unwrap().item();
    for _ in 0..30 {
        opt.zero_grad();
        vit.classify(&x, true).unwrap().cross_entropy(&labels).unwrap().backward();
        opt.step();
    }
    let last = vit.classify(&x, false).unwrap().cross_entropy(&labels).unwrap().item();
    assert!(last < 0.1 * first, "loss {first} -> {last}");
}

#[test]
fn gpt_cached_greedy_generation_equals_full_forward_argmax() {
    let config = GptConfig { vocab_size: 11, context_length: 12, transformer: TransformerConfig::new(16, 2, 2) };
    let gpt = Gpt::new(config, &mut Rng::new(3)).unwrap();
    let prompt = vec![1usize, 4];
    let cached = gpt.generate(std::slice::from_ref(&prompt), 10, 0.0, None, &mut Rng::new(0)).unwrap().remove(0);
    // The same decoding without a cache: run the whole prefix each step.
    let mut seq = prompt;
    while seq.len() < 10 {
        let (logits, _) = no_grad(|| gpt.forward(&seq, 1, seq.len(), false)).unwrap();
        let last = logits.narrow(1, seq.len() - 1, 1).unwrap().to_vec();
        let next = last.iter().enumerate().fold(0, |b, (i, &v)| if v > last[b] { i } else { b });
        seq.push(next);
    }
    assert_eq!(cached, seq);
    assert!(gpt.generate(&[vec![1]], 13, 0.0, None, &mut Rng::new(0)).is_err(), "max_len beyond the context");
}
