//! GLIDE (chapter 09): properties of the caption-conditioned denoiser, classifier-free guidance on
//! captions, and the errors for bad input. A tiny random model; every parameter is perturbed
//! away from its initialisation, since the U-Net's zero-initialised layers would otherwise make
//! the output blind to the caption and the properties trivially true.

use dalle::models::clip::ClipTextConfig;
use dalle::models::diffusion::{respace, Denoiser, Diffusion, Sampler, UNetConfig, Variance};
use dalle::models::glide::{drop_captions, Glide, GlideConfig, EMPTY_CAPTION};
use dalle::nn::Module;
use dalle::tokenizer::TrainedBpe;
use dalle::{Rng, Tensor};
use ndarray::Array2;

fn tokenizer() -> TrainedBpe {
    TrainedBpe::load(concat!(env!("CARGO_MANIFEST_DIR"), "/weights/clip_mnist.tokenizer.json")).unwrap()
}

/// An 8x8 U-Net (8/16 channels, attention at 4x4) and a 1-block, 16-wide text encoder over 12 tokens.
fn tiny_glide(seed: u64) -> Glide {
    let text = ClipTextConfig { hidden_size: 16, intermediate_size: 32, num_attention_heads: 2, num_hidden_layers: 1, ..GlideConfig::mnist().text };
    let unet = UNetConfig { base_channels: 8, image_size: 8, channel_mult: vec![1, 2], attention_resolutions: vec![4], groups: 4, heads: 2, context_dim: Some(16), ..UNetConfig::mnist() };
    let mut rng = Rng::new(seed);
    let model = Glide::new(GlideConfig { unet, text }, &mut rng).unwrap();
    for (_, p) in model.named_parameters() {
        let noise = rng.normal_array(&p.shape()).mapv(|v| 0.2 * v);
        p.assign(&p.to_array() + &noise).unwrap();
    }
    model
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    a.to_vec().iter().zip(b.to_vec()).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

const CAPTIONS: [&str; 2] = ["a handwritten 7", "the digit three"];

#[test]
fn guidance_scale_1_is_exactly_the_conditional_prediction_and_0_the_unconditional() {
    let (model, tok) = (tiny_glide(1), tokenizer());
    let x_t = Tensor::randn(&[2, 1, 8, 8], &mut Rng::new(2));
    let t = [300, 700];
    for (scale, half) in [(1.0, 0), (0.0, 1)] {
        let guided = model.guided(&tok, &CAPTIONS, scale, false).unwrap();
        // the two halves of the doubled batch that guidance mixes: rows 0..B captioned, B..2B empty
        let both = guided.model.predict(&Tensor::concat(&[&x_t, &x_t], 0).unwrap(), &[300, 700, 300, 700]).unwrap();
        let expected = both.narrow(0, 2 * half, 2).unwrap();
        assert_eq!(guided.predict(&x_t, &t).unwrap().to_vec(), expected.to_vec(), "scale {scale}: not bit for bit");
    }
    // and the same as separate passes with the captions and with the empty caption (other batch
    // sizes, so only up to the kernels' rounding)
    let cond = model.with_captions(&tok, &CAPTIONS, false).unwrap().predict(&x_t, &t).unwrap();
    let uncond = model.with_captions(&tok, &[EMPTY_CAPTION; 2], false).unwrap().predict(&x_t, &t).unwrap();
    assert!(max_abs_diff(&cond, &uncond) > 1e-2, "the caption must matter for the test to mean anything");
    let at = |s: f32| model.guided(&tok, &CAPTIONS, s, false).unwrap().predict(&x_t, &t).unwrap();
    assert!(max_abs_diff(&at(1.0), &cond) < 1e-5 && max_abs_diff(&at(0.0), &uncond) < 1e-5);
    // s = 3: ε_u + 3 (ε_c - ε_u)
    let by_hand = uncond.add(&cond.sub(&uncond).unwrap().scale(3.0)).unwrap();
    assert!(max_abs_diff(&at(3.0), &by_hand) < 1e-4, "{}", max_abs_diff(&at(3.0), &by_hand));
}

#[test]
fn the_unconditional_half_does_not_depend_on_the_captions() {
    let (model, tok) = (tiny_glide(3), tokenizer());
    let x_t = Tensor::randn(&[2, 1, 8, 8], &mut Rng::new(4));
    let a = model.guided(&tok, &CAPTIONS, 0.0, false).unwrap().predict(&x_t, &[500, 500]).unwrap();
    let b = model.guided(&tok, &["a handwritten 1", "a picture of the number nine"], 0.0, false).unwrap().predict(&x_t, &[500, 500]).unwrap();
    assert_eq!(a.to_vec(), b.to_vec());
}

#[test]
fn tokens_after_the_end_of_text_are_masked() {
    // The text transformer is causal and the U-Net's attention masks the padding, so whatever
    // ids follow EOT cannot change the prediction.
    let (model, tok) = (tiny_glide(5), tokenizer());
    let ids = model.text.tokenize(&tok, &CAPTIONS, false).unwrap(); // (2, 12)
    let eot = ids.row(0).iter().position(|&i| i == 2).unwrap();
    let mut other = ids.clone();
    for j in eot + 1..ids.ncols() {
        other[[0, j]] = 300 + j as u32; // words instead of padding after EOT
    }
    let features = model.text.encode(&ids).unwrap();
    assert_eq!(features.padding.shape(), &[2, 12]);
    assert!((0..12).all(|j| features.padding[[0, j]] == (j > eot)), "padding is exactly the positions after EOT");
    let x_t = Tensor::randn(&[2, 1, 8, 8], &mut Rng::new(6));
    let a = model.forward_ids(&x_t, &[100, 900], &ids).unwrap();
    let b = model.forward_ids(&x_t, &[100, 900], &other).unwrap();
    assert!(max_abs_diff(&a, &b) < 1e-6, "{}", max_abs_diff(&a, &b));
    // while a word before EOT does change it
    let mut changed = ids.clone();
    changed[[0, 1]] = 300;
    assert!(max_abs_diff(&model.forward_ids(&x_t, &[100, 900], &changed).unwrap(), &a) > 1e-3);
}

#[test]
fn every_chapter_08_sampler_runs_the_guided_denoiser() {
    let (model, tok) = (tiny_glide(7), tokenizer());
    let d = Diffusion::linear_epsilon().unwrap();
    let guided = model.guided(&tok, &CAPTIONS, 3.0, false).unwrap();
    let steps = respace(1000, 3).unwrap();
    for sampler in [Sampler::Ddpm(Variance::Small), Sampler::Ddim(0.0), Sampler::Euler, Sampler::Heun] {
        let x = sampler.sample(&guided, &d, Tensor::randn(&[2, 1, 8, 8], &mut Rng::new(8)), &steps, &mut Rng::new(9), &mut |_, _| {}).unwrap();
        assert_eq!(x.shape(), vec![2, 1, 8, 8], "{sampler:?}");
        assert!(x.to_vec().iter().all(|v| v.is_finite()), "{sampler:?}");
    }
}

#[test]
fn a_caption_longer_than_the_context_is_an_error_unless_truncated() {
    let (model, tok) = (tiny_glide(10), tokenizer());
    let long = "a handwritten seven and a handwritten three and a handwritten one";
    let err = model.with_captions(&tok, &[long], false).err().expect("12 tokens cannot hold it").message();
    assert!(err.contains("context length 12") && err.contains("truncate"), "{err}");
    let ids: Array2<u32> = model.text.tokenize(&tok, &[long], true).unwrap();
    assert_eq!((ids.ncols(), ids[[0, 11]]), (12, 2), "cut to 12 tokens, EOT last");
    assert!(model.with_captions(&tok, &[long], true).is_ok());
}

#[test]
fn a_negative_or_non_finite_guidance_scale_is_an_error() {
    let (model, tok) = (tiny_glide(11), tokenizer());
    for bad in [-1.0, f32::NAN, f32::INFINITY] {
        let err = model.guided(&tok, &CAPTIONS, bad, false).err().expect("refused").message();
        assert!(err.contains(&format!("s = {bad}")) && err.contains(">= 0"), "{err}");
    }
}

#[test]
fn captions_and_images_must_pair_up() {
    let (model, tok) = (tiny_glide(12), tokenizer());
    let denoiser = model.with_captions(&tok, &CAPTIONS, false).unwrap();
    let err = denoiser.predict(&Tensor::zeros(&[3, 1, 8, 8]), &[1, 1, 1]).err().expect("3 images, 2 captions").message();
    assert!(err.contains("2 captions for a batch of 3 images"), "{err}");
}

#[test]
fn drop_captions_empties_about_p_of_them() {
    let captions = vec!["a handwritten 1".to_string(); 10_000];
    let dropped = drop_captions(&captions, 0.2, &mut Rng::new(13));
    let empty = dropped.iter().filter(|c| c.as_str() == EMPTY_CAPTION).count();
    // binomial(10 000, 0.2): standard deviation 40; allowed 5 of them
    assert!((empty as i64 - 2000).abs() < 200, "{empty}");
}

#[test]
fn the_shapes_model_takes_32x32_rgb_and_every_shapes_caption_fits_its_context() {
    use dalle::data::shapes::{Shapes, ShapesConfig};
    use dalle::data::{DatasetName, Split};
    let config = GlideConfig::for_dataset(DatasetName::Shapes).unwrap();
    assert_eq!(config, GlideConfig::shapes());
    assert_eq!((config.unet.in_channels, config.unet.image_size, config.text.max_position_embeddings), (3, 32, 16));
    let model = Glide::new(config, &mut Rng::new(14)).unwrap();
    let tok = TrainedBpe::load(concat!(env!("CARGO_MANIFEST_DIR"), "/weights/glide_shapes.tokenizer.json")).unwrap();
    // 2000 training captions, among them three-object ones (the longest kind): none is refused
    let shapes = Shapes::new(ShapesConfig::for_split(Split::Train)).unwrap();
    let captions: Vec<String> = shapes.iter().take(2000).map(|s| s.caption).collect();
    let refs: Vec<&str> = captions.iter().map(String::as_str).collect();
    let ids = model.text.tokenize(&tok, &refs, false).unwrap();
    let longest = ids.rows().into_iter().map(|r| r.iter().position(|&id| id == 2).unwrap() + 1).max().unwrap();
    assert_eq!(longest, 16, "three objects: 14 words, SOT and EOT fill the context exactly");
    // a fourth object does not fit, and says so
    let four = "a small red circle, a large cyan square, a small blue triangle and a large green circle";
    assert!(model.text.tokenize(&tok, &[four], false).err().expect("too long").message().contains("context length 16"));
    // the denoiser keeps the image's shape: (B, 3, 32, 32)
    let denoiser = model.with_captions(&tok, &refs[..2], false).unwrap();
    assert_eq!(denoiser.predict(&Tensor::zeros(&[2, 3, 32, 32]), &[10, 900]).unwrap().shape(), vec![2, 3, 32, 32]);
    // there is no GLIDE for a data set without captions the chapter trains on
    let err = GlideConfig::for_dataset(DatasetName::Cifar10).err().expect("refused").message();
    assert!(err.contains("cifar10") && err.contains("MNIST or Shapes"), "{err}");
}
