//! Chapter 11's pieces without trained weights: slerp against its closed form, the decoder's
//! and the upsampler's shapes, the corruption and resizing helpers, and clear errors on bad input.

use std::path::Path;

use dalle::models::diffusion::{Diffusion, UNetConfig};
use dalle::models::unclip::{
    bilinear_upsample, check_prompts, downsample, gaussian_blur, generate, slerp, ImagePrior, slerp_path, DecoderCondition, DecoderConfig, FrozenClip, Sampling,
    TextEmbeddingPrior, TextStates, Unclip, UnclipDecoder, Upsampler,
};
use dalle::{Rng, Tensor};
use ndarray::{array, Array1, Array2, Array3, Array4};

fn unit(v: Array1<f32>) -> Array1<f32> {
    let n = v.dot(&v).sqrt();
    v / n
}

fn angle(a: &Array1<f32>, b: &Array1<f32>) -> f64 {
    (a.dot(b) as f64 / (a.dot(a) as f64 * b.dot(b) as f64).sqrt()).clamp(-1.0, 1.0).acos()
}

#[test]
fn slerp_matches_its_closed_form() {
    // In the plane of e_0 and e_1 the great circle is (cos φ, sin φ): from φ = 0 to θ, slerp at t is at φ = tθ.
    let theta = 1.2f32;
    let a = array![1.0f32, 0.0, 0.0];
    let b = array![theta.cos(), theta.sin(), 0.0];
    for t in [0.0f32, 0.25, 0.5, 0.9, 1.0] {
        let s = slerp(a.view(), b.view(), t).unwrap();
        let expected = array![(t * theta).cos(), (t * theta).sin(), 0.0];
        // f32 round-off on unit vectors: a few ulps of 1
        assert!((&s - &expected).iter().all(|d| d.abs() < 1e-6), "t = {t}: {s} vs {expected}");
    }
}

#[test]
fn slerp_hits_the_endpoints_stays_on_the_sphere_and_steps_at_constant_angle() {
    let mut rng = Rng::new(3);
    let a = unit(Array1::from(rng.normal_array(&[32]).into_raw_vec_and_offset().0));
    let b = unit(Array1::from(rng.normal_array(&[32]).into_raw_vec_and_offset().0));
    let path = slerp_path(a.view(), b.view(), 9).unwrap();
    assert!((&path[0] - &a).iter().all(|d| d.abs() < 1e-6), "t = 0 is a");
    assert!((&path[8] - &b).iter().all(|d| d.abs() < 1e-6), "t = 1 is b");
    let total = angle(&a, &b);
    for (i, p) in path.iter().enumerate() {
        assert!((p.dot(p).sqrt() - 1.0).abs() < 1e-5, "point {i} has norm {}", p.dot(p).sqrt());
    }
    for w in path.windows(2) {
        // each of the 8 steps turns by θ/8 (acos loses precision near 0: 1e-3 rad)
        assert!((angle(&w[0], &w[1]) - total / 8.0).abs() < 1e-3, "step of {} rad, expected {}", angle(&w[0], &w[1]), total / 8.0);
    }
    // unnormalised inputs give the same path: slerp works on directions
    let s = slerp((&a * 3.0).view(), (&b * 0.5).view(), 0.3).unwrap();
    assert!((&s - &slerp(a.view(), b.view(), 0.3).unwrap()).iter().all(|d| d.abs() < 1e-6));
}

#[test]
fn slerp_refuses_mismatched_widths_and_zero_vectors() {
    let e = slerp(array![1.0f32, 0.0].view(), array![1.0f32, 0.0, 0.0].view(), 0.5).unwrap_err().to_string();
    assert!(e.contains("widths 2 and 3"), "{e}");
    let e = slerp(array![0.0f32, 0.0].view(), array![1.0f32, 0.0].view(), 0.5).unwrap_err().to_string();
    assert!(e.contains("norm"), "{e}");
    // parallel vectors: the straight line, still unit length
    let s = slerp(array![1.0f32, 0.0].view(), array![2.0f32, 0.0].view(), 0.5).unwrap();
    assert_eq!(s, array![1.0f32, 0.0]);
}

fn tiny_decoder() -> UnclipDecoder {
    let mut config = DecoderConfig::mnist();
    config.unet.base_channels = 8;
    UnclipDecoder::new(config, &mut Rng::new(0)).unwrap()
}

fn condition(b: usize, e: usize, t: usize, c: usize) -> DecoderCondition {
    let mut rng = Rng::new(1);
    let image_embeds = Array2::from_shape_vec((b, e), rng.normal_array(&[b * e]).into_raw_vec_and_offset().0).unwrap();
    let tokens = Array3::from_shape_vec((b, t, c), rng.normal_array(&[b * t * c]).into_raw_vec_and_offset().0).unwrap();
    let padding = Array2::from_shape_fn((b, t), |(_, j)| j > 3);
    DecoderCondition { image_embeds, text: Some(TextStates { tokens, padding }) }
}

#[test]
fn decoder_output_has_the_input_shape_with_and_without_a_caption() {
    let decoder = tiny_decoder();
    let x = Tensor::randn(&[3, 1, 14, 14], &mut Rng::new(2));
    let cond = condition(3, 32, 12, 64);
    assert_eq!(decoder.forward(&x, &[0, 500, 999], &cond).unwrap().shape(), vec![3, 1, 14, 14]);
    let uncaptioned = DecoderCondition { text: None, ..cond.clone() };
    assert_eq!(decoder.forward(&x, &[0, 500, 999], &uncaptioned).unwrap().shape(), vec![3, 1, 14, 14]);
    // guidance doubles the rows: the second half has everything dropped
    let both = cond.with_unconditional();
    assert_eq!(both.len(), 6);
    assert!(both.image_embeds.rows().into_iter().skip(3).all(|r| r.iter().all(|&v| v == 0.0)));
    assert!(both.text.as_ref().unwrap().padding.rows().into_iter().skip(3).all(|r| r.iter().all(|&p| p)));
}

#[test]
fn the_image_embedding_reaches_the_output_through_both_hooks() {
    // Every block ends in a zero layer at initialisation, so the output is 0 whatever the
    // input: give every parameter random weights, then change only z_i: the prediction must change.
    let decoder = tiny_decoder();
    let mut rng = Rng::new(5);
    for (_, p) in dalle::nn::Module::named_parameters(&decoder) {
        p.assign(rng.normal_array(&p.shape()).mapv(|v| 0.2 * v)).unwrap();
    }
    let x = Tensor::randn(&[2, 1, 14, 14], &mut Rng::new(2));
    let cond = condition(2, 32, 12, 64);
    let a = decoder.forward(&x, &[100, 100], &cond).unwrap().to_array();
    let mut other = cond.clone();
    other.image_embeds.row_mut(1).mapv_inplace(|v| -v);
    let b = decoder.forward(&x, &[100, 100], &other).unwrap().to_array();
    let row_diff = |r: usize| (&a.index_axis(ndarray::Axis(0), r) - &b.index_axis(ndarray::Axis(0), r)).mapv(f32::abs).sum();
    assert_eq!(row_diff(0), 0.0, "row 0's condition did not change");
    assert!(row_diff(1) > 1e-4, "row 1's z_i changed but its prediction did not");
}

#[test]
fn dropped_conditions_zero_the_embedding_and_mask_the_caption() {
    let cond = condition(4, 32, 12, 64);
    let d = cond.dropped(&[true, false, false, true], &[false, true, false, true]);
    assert!(d.image_embeds.row(0).iter().all(|&v| v == 0.0) && d.image_embeds.row(1) == cond.image_embeds.row(1));
    let p = &d.text.as_ref().unwrap().padding;
    assert!(p.row(1).iter().all(|&m| m) && p.row(0) == cond.text.as_ref().unwrap().padding.row(0));
    // drop rates: about 10% and 50% of 4000 rows (binomial sd 19 and 32 rows; 5 sd allowed)
    let many = DecoderCondition { image_embeds: Array2::ones((4000, 2)), text: Some(TextStates { tokens: Array3::zeros((4000, 1, 1)), padding: Array2::from_elem((4000, 1), false) }) };
    let d = many.drop_at_random(0.1, 0.5, &mut Rng::new(9));
    let images = d.image_embeds.column(0).iter().filter(|&&v| v == 0.0).count();
    let texts = d.text.unwrap().padding.iter().filter(|&&m| m).count();
    assert!((images as i64 - 400).abs() < 95, "{images} image embeddings dropped of 4000 at p = 0.1");
    assert!((texts as i64 - 2000).abs() < 160, "{texts} captions dropped of 4000 at p = 0.5");
}

#[test]
fn the_decoder_refuses_an_embedding_of_the_wrong_width() {
    let decoder = tiny_decoder();
    let x = Tensor::randn(&[2, 1, 14, 14], &mut Rng::new(2));
    let e = decoder.forward(&x, &[1, 1], &condition(2, 48, 12, 64)).unwrap_err().to_string();
    assert!(e.contains("width 48") && e.contains("E = 32"), "{e}");
    let e = decoder.forward(&x, &[1, 1], &condition(3, 32, 12, 64)).unwrap_err().to_string();
    assert!(e.contains("3 image embeddings for a batch of 2"), "{e}");
    let e = decoder.forward(&x, &[1, 1], &condition(2, 32, 12, 32)).unwrap_err().to_string();
    assert!(e.contains("C_text = 64"), "{e}");
}

#[test]
fn upsampler_predicts_the_full_resolution_image_and_checks_its_input() {
    let mut config = Upsampler::mnist_config();
    config.base_channels = 8;
    let up = Upsampler::new(config.clone(), 2, &mut Rng::new(0)).unwrap();
    let x = Tensor::randn(&[2, 1, 28, 28], &mut Rng::new(1));
    let low = Tensor::randn(&[2, 1, 14, 14], &mut Rng::new(2));
    assert_eq!(up.forward(&x, &[3, 700], &low).unwrap().shape(), vec![2, 1, 28, 28]);
    let e = up.forward(&x, &[3, 700], &Tensor::randn(&[2, 1, 28, 28], &mut Rng::new(2))).unwrap_err().to_string();
    assert!(e.contains("(B = 2, 1, 14, 14)"), "{e}");
    let e = Upsampler::new(UNetConfig { in_channels: 3, ..config }, 2, &mut Rng::new(0)).err().unwrap().to_string();
    assert!(e.contains("in_channels = 3"), "{e}");
}

#[test]
fn blur_downsample_and_bilinear_keep_constants_and_mass() {
    let constant = Array4::from_elem((1, 1, 6, 6), 0.7f32);
    for out in [gaussian_blur(&constant, 0.5), bilinear_upsample(&constant, 2), downsample(&constant, 2)] {
        assert!(out.iter().all(|&v| (v - 0.7).abs() < 1e-6));
    }
    // a single bright pixel in the interior: the 3x3 blur spreads it, keeping the sum;
    // σ = 0.5: the centre keeps 1/(1 + 2e^{-2})² = 0.6193 of it
    let mut dot = Array4::<f32>::zeros((1, 1, 7, 7));
    dot[[0, 0, 3, 3]] = 1.0;
    let b = gaussian_blur(&dot, 0.5);
    assert!((b.sum() - 1.0).abs() < 1e-6 && (b[[0, 0, 3, 3]] - 0.619_3).abs() < 1e-3, "sum {}, centre {}", b.sum(), b[[0, 0, 3, 3]]);
    // 2x2 averaging, and bilinear up of a ramp (PyTorch: F.interpolate([[0, 1]], scale_factor=2, mode="bilinear") = [0, .25, .75, 1])
    let ramp = Array4::from_shape_vec((1, 1, 1, 2), vec![0.0f32, 1.0]).unwrap();
    assert_eq!(bilinear_upsample(&ramp, 2).slice(ndarray::s![0, 0, 1, ..]).to_vec(), vec![0.0, 0.25, 0.75, 1.0]);
    let block = Array4::from_shape_vec((1, 1, 2, 2), vec![0.0f32, 1.0, 1.0, 0.0]).unwrap();
    assert_eq!(downsample(&block, 2)[[0, 0, 0, 0]], 0.5);
}

fn toy_clip() -> FrozenClip {
    FrozenClip::load_toy(&Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/clip_mnist.safetensors")).unwrap()
}

#[test]
fn clip_text_states_mask_everything_after_the_end_token() {
    let clip = toy_clip();
    let states = clip.text_states(&["a handwritten 7".to_string(), "the digit seven".to_string()]).unwrap();
    assert_eq!(states.tokens.dim(), (2, 12, 64));
    for row in states.padding.rows() {
        let visible = row.iter().filter(|&&m| !m).count();
        assert!((3..12).contains(&visible), "{visible} visible tokens");
        assert!(row.iter().skip(visible).all(|&m| m), "padding is a suffix");
    }
}

#[test]
fn empty_prompts_and_wrong_image_sizes_are_clear_errors() {
    let clip = toy_clip();
    let e = check_prompts(&["a handwritten 3".into(), "  ".into()]).unwrap_err().to_string();
    assert!(e.contains("caption 1 is empty"), "{e}");
    assert!(check_prompts(&[]).unwrap_err().to_string().contains("no captions"));
    let e = clip.image_embeddings(&Array4::zeros((2, 1, 14, 14))).unwrap_err().to_string();
    assert!(e.contains("(2, 1, 14, 14)") && e.contains("(N >= 1, 1, 28, 28)"), "{e}");

    let decoder = tiny_decoder();
    let diffusion = Diffusion::linear_epsilon().unwrap();
    let unclip = Unclip {
        clip: &clip,
        decoder: &decoder,
        upsampler: None,
        diffusion: &diffusion,
        sampling: Sampling { decoder_steps: 2, guidance: 3.0, upsampler_steps: 2, blur_sigma: 0.5, batch: 8 },
    };
    let mut rng = Rng::new(0);
    let e = unclip.variations(&Array4::zeros((1, 1, 32, 32)), 2, &mut rng).unwrap_err().to_string();
    assert!(e.contains("(1, 1, 32, 32)"), "variation of a 32x32 image: {e}");
    let prior = TextEmbeddingPrior { clip: &clip };
    let e = generate(&unclip, &prior, &["a handwritten 1".into(), "".into()], &mut rng).unwrap_err().to_string();
    assert!(e.contains("caption 1 is empty"), "{e}");
    let e = unclip.condition(Array2::zeros((1, 16)), None).unwrap_err().to_string();
    assert!(e.contains("width 16"), "{e}");
    // a prior whose embeddings are not the decoder's width
    struct Narrow;
    impl ImagePrior for Narrow {
        fn embed_dim(&self) -> usize {
            16
        }
        fn image_embeddings(&self, captions: &[String], _: &mut Rng) -> dalle::Result<Array2<f32>> {
            Ok(Array2::zeros((captions.len(), 16)))
        }
    }
    let e = generate(&unclip, &Narrow, &["a handwritten 1".into()], &mut rng).unwrap_err().to_string();
    assert!(e.contains("width 16") && e.contains("E = 32"), "{e}");
    // the whole path runs on good input: text -> stand-in prior -> decoder -> bilinear
    let images = generate(&unclip, &prior, &["a handwritten 1".into()], &mut rng).unwrap();
    assert_eq!((images.low.dim(), images.high.dim()), ((1, 1, 14, 14), (1, 1, 28, 28)));
}
