//! CLIP against Hugging Face `transformers.CLIPModel` on two tiny random-weight checkpoints,
//! and the loader's errors on bad checkpoints, configs and inputs.
//!
//! Fixtures: `tests/golden/make_clip_golden.py` (torch 2.5.1, transformers 4.46.3).
//! Tolerance 1e-4 absolute: both sides compute in f32, and the only differences come
//! from the order of accumulation in sums over widths <= 64 (matmuls, layer norms,
//! softmax) through at most 3 layers, which keeps them near 1e-6; 1e-4 leaves margin
//! while a wrong weight, bias, activation or pooling position moves outputs by > 1e-2.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use dalle::io::checkpoint;
use dalle::models::clip::{load_files, load_pretrained, ClipModel};
use dalle::{no_grad, Tensor};
use ndarray::{Array2, ArrayD, Ix2};

const TOL: f32 = 1e-4;

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(format!("clip_tiny_{name}"))
}

fn ids_of(a: &ArrayD<f32>) -> Array2<u32> {
    a.mapv(|v| v as u32).into_dimensionality::<Ix2>().unwrap()
}

fn assert_close(what: &str, got: &ArrayD<f32>, want: &ArrayD<f32>) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let max = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    eprintln!("{what}: max abs diff {max:e}");
    assert!(max < TOL, "{what}: max |diff| = {max:e} >= {TOL:e}");
    // The outputs are not trivially small: a test on zeros would prove nothing.
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(scale > 1e-2, "{what}: reference is ~0 ({scale})");
}

fn check_parity(name: &str) {
    let model = load_pretrained(&golden(name)).unwrap();
    let exp = checkpoint::load(&golden(name).join("expected.safetensors")).unwrap();
    let pixels = Tensor::new(exp.tensors["pixel_values"].clone());
    let ids = ids_of(&exp.tensors["input_ids"]);
    let out = no_grad(|| model.forward(&pixels, &ids)).unwrap();
    let eot: Vec<usize> = exp.tensors["eot_positions"].iter().map(|&v| v as usize).collect();
    assert_eq!(model.text_model.eot_positions(&ids).unwrap(), eot, "{name}: pooling positions");
    assert_close(&format!("{name} image_embeds"), &out.image_embeds.to_array(), &exp.tensors["image_embeds"]);
    assert_close(&format!("{name} text_embeds"), &out.text_embeds.to_array(), &exp.tensors["text_embeds"]);
    assert_close(&format!("{name} logits_per_image"), &out.logits_per_image.to_array(), &exp.tensors["logits_per_image"]);
    assert_close(&format!("{name} text_pooled"), &out.text_pooled.to_array(), &exp.tensors["text_pooled"]);
    assert_close(&format!("{name} text_last_hidden_state"), &out.text_tokens.to_array(), &exp.tensors["text_last_hidden_state"]);
    let image_pooled = no_grad(|| model.vision_model.forward(&pixels)).unwrap().pooled_output;
    assert_close(&format!("{name} image_pooled"), &image_pooled.to_array(), &exp.tensors["image_pooled"]);
}

#[test]
fn parity_quick_gelu_config_a() {
    check_parity("a");
}

#[test]
fn parity_gelu_legacy_eos_config_b() {
    check_parity("b");
}

#[test]
fn the_two_configs_really_differ() {
    let (a, b) = (load_pretrained(&golden("a")).unwrap(), load_pretrained(&golden("b")).unwrap());
    assert_ne!(a.config.text_config.hidden_size, b.config.text_config.hidden_size);
    assert_ne!(a.config.vision_config.patch_size, b.config.vision_config.patch_size);
    assert_ne!(a.config.text_config.hidden_act, b.config.text_config.hidden_act);
    assert_ne!(a.config.vision_config.num_hidden_layers, b.config.vision_config.num_hidden_layers);
}

/// A temp copy of checkpoint `a` with its tensors edited by `edit`.
fn edited_copy(tag: &str, edit: impl FnOnce(&mut HashMap<String, ArrayD<f32>>)) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("clip_parity_{tag}_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(golden("a").join("config.json"), dir.join("config.json")).unwrap();
    let mut tensors = checkpoint::load(&golden("a").join("model.safetensors")).unwrap().tensors;
    edit(&mut tensors);
    let list: Vec<(String, ArrayD<f32>)> = tensors.into_iter().collect();
    checkpoint::save_tensors(&dir.join("model.safetensors"), &list, &HashMap::new()).unwrap();
    dir
}

#[test]
fn missing_tensor_is_named() {
    let dir = edited_copy("missing", |t| {
        t.remove("vision_model.encoder.layers.1.mlp.fc2.bias");
    });
    let err = load_pretrained(&dir).err().expect("must fail").to_string();
    assert!(err.contains("missing `vision_model.encoder.layers.1.mlp.fc2.bias`"), "{err}");
}

#[test]
fn misshaped_tensor_is_named_with_both_shapes() {
    let dir = edited_copy("shape", |t| {
        t.insert("text_projection.weight".into(), ArrayD::zeros(ndarray::IxDyn(&[24, 31])));
    });
    let err = load_pretrained(&dir).err().expect("must fail").to_string();
    assert!(err.contains("`text_projection.weight` has shape [24, 31], the model expects [24, 32]"), "{err}");
}

#[test]
fn position_ids_buffers_are_ignored() {
    let dir = edited_copy("posids", |t| {
        t.insert("text_model.embeddings.position_ids".into(), ArrayD::zeros(ndarray::IxDyn(&[1, 16])));
        t.insert("vision_model.embeddings.position_ids".into(), ArrayD::zeros(ndarray::IxDyn(&[1, 17])));
    });
    load_pretrained(&dir).unwrap();
}

#[test]
fn config_that_does_not_match_the_weights() {
    // config b with weights a: every width differs.
    let err = load_files(&golden("b").join("config.json"), &golden("a").join("model.safetensors")).err().expect("must fail").to_string();
    assert!(err.contains("does not match") || err.contains("do not match"), "{err}");
    assert!(err.contains("`text_model.embeddings.token_embedding.weight` has shape [99, 32], the model expects [120, 48]"), "{err}");
    assert!(err.contains("missing `text_model.encoder.layers.2."), "{err}");
}

#[test]
fn invalid_config_names_the_value() {
    let dir = std::env::temp_dir().join(format!("clip_parity_badcfg_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(golden("a").join("config.json")).unwrap().replace("\"patch_size\": 4", "\"patch_size\": 5");
    std::fs::write(dir.join("config.json"), text).unwrap();
    std::fs::copy(golden("a").join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    let err = load_pretrained(&dir).err().expect("must fail").to_string();
    assert!(err.contains("image_size = 16 is not a multiple of patch_size = 5"), "{err}");
}

#[test]
fn token_id_beyond_vocabulary() {
    let model = load_pretrained(&golden("a")).unwrap();
    let mut ids = Array2::<u32>::zeros((1, 4));
    ids[[0, 3]] = 98;
    ids[[0, 1]] = 99;
    let err = model.get_text_features(&ids).expect_err("must fail").to_string();
    assert!(err.contains("token id 99") && err.contains("vocab_size = 99"), "{err}");
}

#[test]
fn text_over_context_length() {
    let model: ClipModel = load_pretrained(&golden("a")).unwrap();
    let mut ids = Array2::<u32>::zeros((1, 17));
    ids[[0, 16]] = 98;
    let err = model.get_text_features(&ids).expect_err("must fail").to_string();
    assert!(err.contains("17 tokens exceed the context length max_position_embeddings = 16"), "{err}");
}

#[test]
fn wrong_image_size_is_an_error() {
    let model = load_pretrained(&golden("a")).unwrap();
    let err = model.get_image_features(&Tensor::zeros(&[1, 3, 32, 32])).expect_err("must fail").to_string();
    assert!(err.contains("expected (B, 3, 16, 16)"), "{err}");
}

#[test]
fn contrastive_loss_is_symmetric_mean_of_cross_entropies() {
    // logits = [[2, 0], [1, 3]]: CE over rows = ½(ln(1+e⁻²) + ln(1+e⁻²)), CE over columns = ½(ln(1+e⁻¹) + ln(1+e⁻³)).
    let logits = Tensor::from_vec(vec![2.0, 0.0, 1.0, 3.0], &[2, 2]).unwrap();
    let loss = dalle::models::clip::contrastive_loss(&logits).unwrap().item();
    let sp = |x: f32| (1.0 + (-x).exp()).ln();
    let want = 0.5 * (0.5 * (sp(2.0) + sp(2.0)) + 0.5 * (sp(1.0) + sp(3.0)));
    assert!((loss - want).abs() < 1e-6, "{loss} vs {want}");
}

#[test]
fn logit_scale_is_clamped_at_100() {
    let model = load_pretrained(&golden("a")).unwrap();
    model.logit_scale.assign(ArrayD::from_elem(ndarray::IxDyn(&[]), 10.0)).unwrap();
    assert!((model.logit_scale_exp().item() - 100.0).abs() < 1e-3);
}

#[test]
fn preprocess_resizes_crops_and_normalises() {
    use dalle::models::clip::preprocess::{preprocess, CLIP_MEAN, CLIP_STD};
    // A 40x20 image, left half red (200, 10, 10), right half blue: shorter side -> 16 gives
    // 32x16, the centre crop keeps columns 8..24, so the crop's left half is red.
    let img = image::RgbImage::from_fn(40, 20, |x, _| if x < 20 { image::Rgb([200, 10, 10]) } else { image::Rgb([10, 10, 200]) });
    let out = preprocess(&image::DynamicImage::ImageRgb8(img), 16).unwrap();
    assert_eq!(out.shape(), &[1, 3, 16, 16]);
    let want_red = (200.0 / 255.0 - CLIP_MEAN[0]) / CLIP_STD[0];
    assert!((out[[0, 0, 8, 2]] - want_red).abs() < 1e-5, "{}", out[[0, 0, 8, 2]]);
    let want_blue = (200.0 / 255.0 - CLIP_MEAN[2]) / CLIP_STD[2];
    assert!((out[[0, 2, 8, 13]] - want_blue).abs() < 1e-5, "{}", out[[0, 2, 8, 13]]);
}

#[test]
fn zero_shot_class_embedding_is_the_renormalised_mean_of_its_prompts() {
    use dalle::models::clip::zero_shot::{class_embeddings, text_embeddings};
    use dalle::tokenizer::TextTokenizer;
    /// Characters as ids 3.., SOT = 1, EOT = 98 (config a's eos_token_id), PAD = 0.
    struct Chars;
    impl TextTokenizer for Chars {
        fn encode(&self, text: &str) -> dalle::Result<Vec<u32>> {
            Ok(text.bytes().map(|b| 3 + (b as u32 % 80)).collect())
        }
        fn decode(&self, _: &[u32]) -> dalle::Result<String> {
            Ok(String::new())
        }
        fn vocab_size(&self) -> usize {
            99
        }
        fn sot(&self) -> u32 {
            1
        }
        fn eot(&self) -> u32 {
            98
        }
        fn pad(&self) -> u32 {
            0
        }
    }
    let model = load_pretrained(&golden("a")).unwrap();
    let prompts = vec![vec!["a cat".to_string(), "cat photo".to_string()], vec!["a dog".to_string()]];
    let classes = class_embeddings(&model, &Chars, &prompts).unwrap();
    let each = text_embeddings(&model, &Chars, &prompts[0], 8).unwrap();
    let mean = (&each.row(0) + &each.row(1)) / 2.0;
    let want = &mean / mean.dot(&mean).sqrt();
    for (a, b) in classes.row(0).iter().zip(want.iter()) {
        assert!((a - b).abs() < 1e-6);
    }
    let norm = classes.row(1).dot(&classes.row(1)).sqrt();
    assert!((norm - 1.0).abs() < 1e-5);
}
