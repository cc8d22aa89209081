//! The shipped noised CLIP (`weights/noised_clip_mnist.safetensors`, trained by
//! `cargo run --release --example 09_noised_clip`) steers chapter 08's shipped U-Net, run
//! with no class (the null class), toward the captioned digit; its caption errors are clear.

use std::path::{Path, PathBuf};

use dalle::eval::DigitJudge;
use dalle::io::checkpoint;
use dalle::models::clip::load::tokenizer_path_for;
use dalle::models::diffusion::{respace, BetaSchedule, ClassConditionalUNet, Diffusion, NoiseSchedule, Prediction, Sampler, UNetConfig};
use dalle::models::noised_clip::{ClipGuided, NoisedClip};
use dalle::tokenizer::TrainedBpe;
use dalle::{Rng, Tensor};

fn weights(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("weights").join(name)
}

fn shipped() -> (NoisedClip, TrainedBpe) {
    let path = weights("noised_clip_mnist.safetensors");
    (NoisedClip::load(&path).unwrap(), TrainedBpe::load(tokenizer_path_for(&path)).unwrap())
}

/// Judge accuracy of `n` guided DDIM-10 samples (digits 0..9 in turn) at scale `s`, seed 0.
fn guided_accuracy(clip: &NoisedClip, tokenizer: &TrainedBpe, s: f32, n: usize) -> f32 {
    let unet = ClassConditionalUNet::new(UNetConfig::mnist(), 10, &mut Rng::new(0)).unwrap();
    checkpoint::load(&weights("ddpm_mnist.safetensors")).unwrap().load_into(&unet, &[]).unwrap();
    let schedule = NoiseSchedule::new(BetaSchedule::linear(1000), 1000).unwrap();
    let diffusion = Diffusion { schedule: schedule.clone(), prediction: Prediction::Epsilon };
    let labels: Vec<usize> = (0..n).map(|i| i % 10).collect();
    let prompts: Vec<String> = labels.iter().map(|&l| dalle::data::captions::class_caption(dalle::data::DatasetName::Mnist, l, 0)).collect();
    let text = clip.caption_embeds(tokenizer, &prompts).unwrap();
    let null = unet.with_labels(vec![unet.null_class(); n]);
    let guided = ClipGuided::new(null, Prediction::Epsilon, &schedule, clip, text, s).unwrap();
    let mut rng = Rng::new(0);
    let x_t = Tensor::randn(&[n, 1, 28, 28], &mut rng);
    let x0 = Sampler::Ddim(0.0).sample(&guided, &diffusion, x_t, &respace(1000, 10).unwrap(), &mut rng, &mut |_, _| {}).unwrap();
    let pixels = x0.to_array().into_dimensionality::<ndarray::Ix4>().unwrap().mapv(|v| ((v + 1.0) / 2.0).clamp(0.0, 1.0));
    DigitJudge::pretrained().unwrap().fidelity(&pixels, &labels).unwrap()
}

#[test]
fn clip_guidance_steers_the_unconditional_unet_to_the_caption() {
    let (clip, tokenizer) = shipped();
    let unguided = guided_accuracy(&clip, &tokenizer, 0.0, 30);
    let guided = guided_accuracy(&clip, &tokenizer, GUIDED_SCALE, 30);
    println!("judge accuracy of 30 DDIM-10 samples from the same noise: s = 0 {unguided}, s = {GUIDED_SCALE} {guided}");
    assert!(unguided <= MAX_UNGUIDED, "unguided accuracy {unguided}: the null class should not know the caption");
    assert!(guided >= MIN_GUIDED, "guided accuracy {guided}");
}

/// The scale of the test and the bounds of its verdicts. Measured when the weights were
/// shipped (seed 0, 30 samples, DDIM-10): s = 0 gives 2 of 30 (0.067), s = 100 gives 21 of 30
/// (0.7); with chapter 08's later U-Net (1312 steps instead of 743) s = 0 gives 2 and
/// s = 100 gives 24 of 30 (0.8). The floor leaves room for 6 verdicts to change with floating-point differences
/// between machines; chance is 0.1, and a CLIP whose gradient pointed nowhere would stay there.
const GUIDED_SCALE: f32 = 100.0;
const MIN_GUIDED: f32 = 0.5;
const MAX_UNGUIDED: f32 = 0.3;

#[test]
fn captions_longer_than_the_context_and_clean_clips_are_refused() {
    let (clip, tokenizer) = shipped();
    let long = vec!["a handwritten digit seven drawn in thick black ink on a plain white sheet of paper".to_string()];
    let err = clip.caption_embeds(&tokenizer, &long).err().unwrap().to_string();
    assert!(err.contains("context") && err.contains("12 tokens"), "{err}");
    let err = NoisedClip::load(&weights("clip_mnist.safetensors")).err().unwrap().to_string();
    assert!(err.contains("this CLIP was not trained on noised images"), "{err}");
}
