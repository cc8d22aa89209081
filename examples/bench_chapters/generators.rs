//! The cases of chapters 07 to 11: DALL-E 1's transformer, the class-conditional DDPM U-Net,
//! GLIDE and chapter 09b's noised CLIP, the unCLIP diffusion prior, decoder and upsampler, each built through the library at
//! its example's default configuration (see main.rs for how a case is timed).
//!
//! The diffusion steps draw `t ~ U{0..T-1}`, `ε ~ N(0, I)` and the dropped conditioning of
//! classifier-free training each step, as the examples do (inside the *forward* phase); the
//! images, embeddings and caption states are random and made once. Every diffusion example
//! keeps an EMA of its weights after the Adam step: it is timed in the *optimiser* phase. The
//! sampling step of each generator is one network evaluation of the sampler its example uses,
//! at its example's sampling batch and guidance.

use super::{backward_and_step, batching, count, Case, Laps, Phase, Sampling, Sets, Step};
use dalle::data::DatasetName;
use dalle::models::clip::ClipConfig;
use dalle::models::dalle::sample::SamplingConfig;
use dalle::models::dalle::{Dalle, DalleConfig};
use dalle::models::diffusion::samplers::ode_sample;
use dalle::models::diffusion::{diffusion_loss, drop_labels, respace, ClassConditionalUNet, ClassifierFree, Diffusion, Sampler, UNetConfig};
use dalle::models::glide::{Glide, GlideConfig};
use dalle::models::noised_clip::{NoisedClip, NoisedClipConfig};
use dalle::models::prior::{embed_scale, normalize_rows, CaptionEncoding, DiffusionPrior, DiffusionPriorConfig};
use dalle::models::unclip::{DecoderCondition, DecoderConfig, TextStates, UnclipDecoder, Upsampler};
use dalle::nn::Module;
use dalle::optim::{Adam, Ema, Optimizer};
use dalle::tokenizer::{TextTokenizer, TrainedBpe};
use dalle::{no_grad, Error, Result, Rng, Tensor};
use ndarray::{Array2, Array3, Ix2};
use serde_json::{json, Value};
use std::hint::black_box;
use std::rc::Rc;

/// `T` of chapters 08, 09 and 11 (and of the prior's cosine schedule).
const NUM_TRAIN_STEPS: usize = 1000;

/// The guidance scale of the examples' guided samples (08, 09 and 11: `--guidance 3`).
const GUIDANCE: f32 = 3.0;

/// `t ~ U{0..T-1}` and `ε ~ N(0, I)` for a batch of `b` images shaped like `x0`, drawn each step.
fn draw_t_and_noise(rng: &mut Rng, b: usize, x0: &Tensor) -> (Vec<usize>, Tensor) {
    let t = (0..b).map(|_| rng.below(NUM_TRAIN_STEPS)).collect();
    (t, Tensor::randn(&x0.shape(), rng))
}

/// The rest of a diffusion example's step once its loss is computed: the backward pass, Adam at
/// the example's learning rate (`lr`) or clipping (`clip`), and the EMA of the weights, each
/// in its phase.
fn finish_diffusion_step(laps: &mut Laps, loss: &Tensor, opt: &mut Adam, lr: Option<f32>, clip: Option<(&[Tensor], f32)>, ema: &mut Averaged) -> Result<()> {
    laps.lap(Phase::Forward);
    if let Some(lr) = lr {
        opt.set_lr(lr);
    }
    backward_and_step(laps, loss, opt, clip);
    ema.update(laps);
    black_box(loss.item());
    laps.lap(Phase::Other);
    Ok(())
}

/// A U-Net's configuration for the twin.
fn unet_spec(c: &UNetConfig) -> Value {
    json!({"in_channels": c.in_channels, "image_size": c.image_size, "base": c.base_channels, "mult": c.channel_mult,
           "res_blocks": c.num_res_blocks, "attn": c.attention_resolutions, "heads": c.heads, "groups": c.groups,
           "context_dim": c.context_dim})
}

/// Unit rows `(B, E)`, like CLIP's embeddings.
fn unit_rows(rng: &mut Rng, b: usize, e: usize) -> Result<Array2<f32>> {
    let z = rng.normal_array(&[b, e]).into_dimensionality::<Ix2>().map_err(|e| Error::Msg(e.to_string()))?;
    Ok(normalize_rows(&z))
}

/// The end of each row's caption for `b` rows of `s` positions: SOT, 1 to `s - 3` words, EOT
/// (the empty caption `[SOT, EOT]` in a share `p_empty` of the rows).
fn caption_ends(rng: &mut Rng, b: usize, s: usize, p_empty: f32) -> Vec<usize> {
    (0..b).map(|_| if rng.uniform() < p_empty { 1 } else { 2 + rng.below(s - 3) }).collect()
}

/// Caption ids `(B, S)` of a BPE with `<pad>` 0, `<sot>` 1, `<eot>` 2: random words before each end.
fn caption_ids(rng: &mut Rng, ends: &[usize], s: usize, vocab: usize) -> Array2<u32> {
    let mut ids = Array2::<u32>::zeros((ends.len(), s));
    for (mut row, &end) in ids.rows_mut().into_iter().zip(ends) {
        row[0] = 1;
        for v in row.iter_mut().take(end).skip(1) {
            *v = (3 + rng.below(vocab - 3)) as u32;
        }
        row[end] = 2;
    }
    ids
}

/// The per-step EMA of the diffusion examples, `θ̄ ← d θ̄ + (1 - d) θ` with the warmed-up decay, lapped as optimiser time.
struct Averaged {
    ema: Ema,
    params: Vec<(String, Tensor)>,
    step: usize,
}

impl Averaged {
    fn new(params: Vec<(String, Tensor)>) -> Averaged {
        Averaged { ema: Ema::new(&params, 0.999), params, step: 0 }
    }

    fn update(&mut self, laps: &mut Laps) {
        self.ema.update_at(self.step, &self.params);
        self.step += 1;
        laps.lap(Phase::Optimizer);
    }
}

/// Chapter 07's DALL-E on MNIST: `DalleConfig::mnist` over the toy CLIP's BPE (L = 10 text
/// positions, a 7x7 grid of 128 VQ-VAE codes, width 128, 4 heads, 4 layers, full masks),
/// batch 64, Adam 1e-3 (the warm-up cosine sets the rate each step), 1/8 CE_text + 7/8 CE_image.
/// Sampling: `samples` captions, every image token through the KV cache, temperature 1.
pub(super) fn dalle_case(b: usize, samples: usize) -> Result<Case> {
    let bpe = TrainedBpe::load(dalle::io::shipped_weights("clip_mnist.tokenizer.json"))?;
    let config = DalleConfig::mnist(bpe.vocab_size());
    let model = Rc::new(Dalle::new(config, &mut Rng::new(0))?);
    let named = model.named_parameters();
    let params = count(&named);
    let mut opt = Adam::new(named, 1e-3);
    let (l, n, s, k) = (config.text_len, config.image_len(), config.seq_len(), config.image_vocab);
    let vt = config.text_vocab + l; // text ids and the padding tokens V_text + p
    let mut rng = Rng::new(1);
    // Random sequences (B, L + N): L text ids below V_text + L, then N image ids below K.
    let mut ids = Vec::with_capacity(b * s);
    for _ in 0..b {
        ids.extend((0..l).map(|_| rng.below(vt)));
        ids.extend((0..n).map(|_| rng.below(k)));
    }
    let m = model.clone();
    let step: Step = Box::new(move |laps| {
        let loss = m.loss(&ids, b, true)?; // reads CE_text and CE_image, as the example logs them
        laps.lap(Phase::Forward);
        opt.set_lr(1e-3);
        backward_and_step(laps, &loss.loss, &mut opt, None);
        black_box(loss.loss.item());
        laps.lap(Phase::Other);
        Ok(())
    });
    let text: Vec<usize> = (0..samples * l).map(|_| rng.below(vt)).collect();
    let sampling = SamplingConfig { temperature: 1.0, top_k: None, top_p: 1.0 };
    let mut sample_rng = Rng::new(2);
    let call = move || -> Result<()> {
        black_box(model.sample(&text, &sampling, true, &mut sample_rng)?);
        Ok(())
    };
    let t = &config.transformer;
    Ok(Case {
        name: "dalle",
        what: format!("07 DALL-E (MNIST, {} text + {n} image tokens, width {})", l, t.dim),
        params,
        batch: b,
        spec: json!({"batch": b, "text_vocab": vt, "text_len": l, "image_vocab": k, "grid": [config.grid.0, config.grid.1],
                     "width": t.dim, "heads": t.n_head, "layers": t.n_layer, "text_weight": config.text_loss_weight, "samples": samples}),
        step,
        sample: Some(Sampling { call: Box::new(call), steps: n, what: format!("one image token for a batch of {samples}, KV cache") }),
        data: None,
    })
}

/// Chapter 08's class-conditional U-Net on MNIST (`UNetConfig::mnist`, 10 classes and the
/// null class), batch 64, Adam 2e-3 (the warm-up sets the rate each step), labels dropped
/// 10% of the time, `‖ε - ε_θ(x_t, t, y)‖²`, EMA 0.999. Sampling: one DDIM step (one U-Net
/// evaluation) for `samples` images guided at s = 3, conditional and unconditional rows in one batch of 2·`samples`.
pub(super) fn ddpm_case(b: usize, samples: usize, sets: &Sets) -> Result<Case> {
    let config = UNetConfig::mnist(); // the example's: attention at 28 / 4 = 7
    let model = Rc::new(ClassConditionalUNet::new(config.clone(), 10, &mut Rng::new(0))?);
    let named = model.named_parameters();
    let params = count(&named);
    let mut opt = Adam::new(named.clone(), 2e-3);
    let mut ema = Averaged::new(named);
    let diffusion = Diffusion::linear_epsilon()?;
    let mut rng = Rng::new(1);
    let x0 = Tensor::new(rng.uniform_array(&[b, 1, 28, 28], -1.0, 1.0)); // to_model's range
    let labels: Vec<usize> = (0..b).map(|_| rng.below(10)).collect();
    let (m, d) = (model.clone(), diffusion.clone());
    let mut step_rng = Rng::new(4); // t, ε and the dropped conditioning, drawn each step
    let step: Step = Box::new(move |laps| {
        let (t, noise) = draw_t_and_noise(&mut step_rng, b, &x0); // t ~ U{0..T-1}, ε ~ N(0, I)
        let labels = drop_labels(&labels, 0.1, m.null_class(), &mut step_rng); // y or ∅
        let loss = diffusion_loss(&d.schedule, d.prediction, |x_t, t| m.forward(x_t, t, &labels), &x0, &t, &noise)?;
        finish_diffusion_step(laps, &loss, &mut opt, Some(2e-3), None, &mut ema)
    });
    let doubled: Vec<usize> = (0..samples).map(|i| i % 10).chain(std::iter::repeat_n(model.null_class(), samples)).collect();
    let x_t = Tensor::new(Rng::new(2).normal_array(&[samples, 1, 28, 28]));
    let mut sample_rng = Rng::new(3);
    let call = move || -> Result<()> {
        let guided = ClassifierFree { model: model.with_labels(doubled.clone()), scale: GUIDANCE };
        black_box(Sampler::Ddim(0.0).sample(&guided, &diffusion, x_t.clone(), &[999], &mut sample_rng, &mut |_, _| {})?);
        Ok(())
    };
    Ok(Case {
        name: "ddpm",
        what: format!("08 DDPM U-Net (MNIST, {}/{}/{} channels)", config.base_channels, 2 * config.base_channels, 2 * config.base_channels),
        params,
        batch: b,
        spec: json!({"batch": b, "unet": unet_spec(&config), "classes": 10, "p_uncond": 0.1, "lr": 2e-3, "samples": samples}),
        step,
        sample: Some(Sampling { call: Box::new(call), steps: 1, what: format!("one guided DDIM step for {samples} images (U-Net at batch {})", 2 * samples) }),
        data: batching(&sets.mnist, b),
    })
}

/// Chapter 09's GLIDE on captioned MNIST (`GlideConfig::mnist`: chapter 08's U-Net with 64-wide
/// context tokens and a 2-block text transformer over 12 tokens), batch 64, Adam 1e-3, captions
/// emptied 20% of the time, `‖ε - ε_θ(x_t, t, caption)‖²` with gradients through the text
/// encoder, EMA 0.999. Sampling: one DDIM step for `samples` captions at s = 3, the captions
/// encoded once (as `Glide::guided` does), the conditional and empty-caption rows in one batch.
pub(super) fn glide_case(b: usize, samples: usize, sets: &Sets) -> Result<Case> {
    let config = GlideConfig::mnist();
    let model = Rc::new(Glide::new(config.clone(), &mut Rng::new(0))?);
    let named = model.named_parameters();
    let params = count(&named);
    let mut opt = Adam::new(named.clone(), 1e-3);
    let mut ema = Averaged::new(named);
    let diffusion = Diffusion::linear_epsilon()?;
    let (s, vocab) = (config.text.max_position_embeddings, config.text.vocab_size);
    let mut rng = Rng::new(1);
    let x0 = Tensor::new(rng.uniform_array(&[b, 1, 28, 28], -1.0, 1.0));
    let ends = caption_ends(&mut rng, b, s, 0.2);
    let ids = caption_ids(&mut rng, &ends, s, vocab);
    let ends_of_ids = ends_json(&ids);
    let (m, d) = (model.clone(), diffusion.clone());
    let mut step_rng = Rng::new(4); // t, ε and the dropped conditioning, drawn each step
    let step: Step = Box::new(move |laps| {
        let (t, noise) = draw_t_and_noise(&mut step_rng, b, &x0); // t ~ U{0..T-1}, ε ~ N(0, I)
        let loss = diffusion_loss(&d.schedule, d.prediction, |x_t, t| m.forward_ids(x_t, t, &ids), &x0, &t, &noise)?;
        finish_diffusion_step(laps, &loss, &mut opt, Some(1e-3), None, &mut ema)
    });
    // The sampling captions, then as many empty ones: encoded once, as Glide::guided does.
    let mut ends = caption_ends(&mut rng, samples, s, 0.0);
    ends.extend(std::iter::repeat_n(1, samples));
    let text = no_grad(|| model.text.encode(&caption_ids(&mut rng, &ends, s, vocab)))?;
    let x_t = Tensor::new(Rng::new(2).normal_array(&[samples, 1, 28, 28]));
    let mut sample_rng = Rng::new(3);
    let call = move || -> Result<()> {
        let both = |x: &Tensor, t: &[usize]| model.forward(x, t, &text);
        let guided = ClassifierFree { model: both, scale: GUIDANCE };
        black_box(Sampler::Ddim(0.0).sample(&guided, &diffusion, x_t.clone(), &[999], &mut sample_rng, &mut |_, _| {})?);
        Ok(())
    };
    let tc = &config.text;
    Ok(Case {
        name: "glide",
        what: format!("09 GLIDE (MNIST captions, {s} tokens)"),
        params,
        batch: b,
        spec: json!({"batch": b, "unet": unet_spec(&config.unet), "vocab": vocab, "context": s, "width": tc.hidden_size,
                     "intermediate": tc.intermediate_size, "heads": tc.num_attention_heads, "layers": tc.num_hidden_layers,
                     "ends": ends_of_ids, "lr": 1e-3, "samples": samples}),
        step,
        sample: Some(Sampling { call: Box::new(call), steps: 1, what: format!("one guided DDIM step for {samples} captions (U-Net at batch {})", 2 * samples) }),
        data: batching(&sets.mnist, b),
    })
}

/// Each row's EOT position, for the twin to build captions of the same lengths.
fn ends_json(ids: &Array2<u32>) -> Value {
    json!(ids.rows().into_iter().map(|r| r.iter().position(|&v| v == 2).unwrap_or(0)).collect::<Vec<_>>())
}

/// Chapter 10's diffusion prior over the toy MNIST CLIP (E = 32, caption states 12 x 64):
/// `DiffusionPriorConfig::mnist` (width 64, 4 heads, 4 layers, cosine schedule, `x_0`
/// prediction), batch 256, Adam 1e-3, clipping at 1, captions dropped 10% of the time,
/// `‖√E z_i - x̂_0‖²`, EMA 0.999. The example trains the autoregressive prior beside it on the
/// same rows by default; that one is DALL-E's transformer and is not timed here (`--no-ar`).
/// Sampling: one Euler step of the probability-flow ODE for `samples` captions, unguided (s = 1,
/// the first of the example's scales), as `DiffusionPrior::sample` takes it.
pub(super) fn prior_case(b: usize, samples: usize) -> Result<Case> {
    let clip = ClipConfig::toy(DatasetName::Mnist, 340, 2);
    let (e, w, s) = (clip.projection_dim, clip.text_config.hidden_size, clip.text_config.max_position_embeddings);
    let config = DiffusionPriorConfig::mnist(e, w, s);
    let prior = Rc::new(DiffusionPrior::new(config, &mut Rng::new(0))?);
    let diffusion = config.diffusion()?;
    let named = prior.named_parameters();
    let params = count(&named);
    let all = prior.parameters();
    let mut opt = Adam::new(named.clone(), 1e-3);
    let mut ema = Averaged::new(named);
    let mut rng = Rng::new(1);
    let scale = embed_scale(e);
    let x0 = Tensor::new(unit_rows(&mut rng, b, e)?.mapv(|v| v * scale).into_dyn()); // √E z_i, (B, E)
    let tokens = Tensor::new(rng.normal_array(&[b, s, w])); // CLIP's caption token states (B, T, C_text)
    let text_embeds = Tensor::new(unit_rows(&mut rng, b, e)?.into_dyn()); // z_t (B, E)
    let (p, d) = (prior.clone(), diffusion.clone());
    let mut step_rng = Rng::new(4); // t, ε and the dropped conditioning, drawn each step
    let step: Step = Box::new(move |laps| {
        let (t, noise) = draw_t_and_noise(&mut step_rng, b, &x0); // t ~ U{0..T-1}, ε ~ N(0, I)
        let keep: Vec<bool> = (0..b).map(|_| step_rng.uniform() >= 0.1).collect(); // drop the caption 10% of the time
        let loss = diffusion_loss(&d.schedule, d.prediction, |x_t, t| p.forward(&tokens, &text_embeds, x_t, t, &keep), &x0, &t, &noise)?;
        finish_diffusion_step(laps, &loss, &mut opt, None, Some((&all[..], 1e-3)), &mut ema)
    });
    let captions = CaptionEncoding {
        captions: vec![String::new(); samples],
        ids: Array2::zeros((samples, s)),
        tokens: rng.normal_array(&[samples, s, w]).into_dimensionality().map_err(|e| Error::Msg(e.to_string()))?,
        text_embeds: unit_rows(&mut rng, samples, e)?,
    };
    let steps = respace(NUM_TRAIN_STEPS, 64)?; // the example's 64 sampling steps; the timed one is the second
    let x_t = Tensor::new(Rng::new(2).normal_array(&[samples, e]));
    let call = move || -> Result<()> {
        let denoiser = prior.denoiser(&captions)?;
        black_box(ode_sample(&denoiser, &diffusion, x_t.clone(), &steps[1..2], false, false, &mut |_, _| {})?);
        Ok(())
    };
    let t = &config.transformer;
    Ok(Case {
        name: "prior",
        what: format!("10 unCLIP diffusion prior (MNIST CLIP, E {e}, width {})", t.dim),
        params,
        batch: b,
        spec: json!({"batch": b, "embed": e, "text_width": w, "text_len": s, "width": t.dim, "heads": t.n_head, "layers": t.n_layer,
                     "lr": 1e-3, "samples": samples}),
        step,
        sample: Some(Sampling { call: Box::new(call), steps: 1, what: format!("one Euler ODE step for {samples} captions, unguided") }),
        data: None,
    })
}

/// Chapter 11's decoder on MNIST (`DecoderConfig::mnist`: a 14x14 U-Net, 16/32 channels, two
/// residual blocks a level, attention at 7x7, over 4 CLIP image-embedding tokens and the caption's
/// 12 token states), batch 64, Adam 2e-3, z_i dropped 10% and the caption 50% of the time,
/// `‖ε - ε_θ(x_t, t, z_i, caption)‖²`, EMA 0.999. Sampling: one DDIM step for `samples` images
/// at s = 3, the unconditional rows in the same batch (`UnclipDecoder::guided`).
pub(super) fn decoder_case(b: usize, samples: usize) -> Result<Case> {
    let config = DecoderConfig::mnist();
    let decoder = Rc::new(UnclipDecoder::new(config.clone(), &mut Rng::new(0))?);
    let named = decoder.named_parameters();
    let params = count(&named);
    let mut opt = Adam::new(named.clone(), 2e-3);
    let mut ema = Averaged::new(named);
    let diffusion = Diffusion::linear_epsilon()?;
    let (side, e, w, s) = (config.unet.image_size, config.clip_dim, config.text_dim, 12);
    let mut rng = Rng::new(1);
    let condition = |rng: &mut Rng, n: usize| -> Result<DecoderCondition> {
        let ends = caption_ends(rng, n, s, 0.0);
        let padding = Array2::from_shape_fn((n, s), |(i, j)| j > ends[i]); // after EOT
        let tokens: Array3<f32> = rng.normal_array(&[n, s, w]).into_dimensionality().map_err(|e| Error::Msg(e.to_string()))?;
        Ok(DecoderCondition { image_embeds: unit_rows(rng, n, e)?, text: Some(TextStates { tokens, padding }) })
    };
    let cond = condition(&mut rng, b)?;
    let x0 = Tensor::new(rng.uniform_array(&[b, 1, side, side], -1.0, 1.0));
    let (dec, d) = (decoder.clone(), diffusion.clone());
    let mut step_rng = Rng::new(4); // t, ε and the dropped conditioning, drawn each step
    let step: Step = Box::new(move |laps| {
        let cond = cond.drop_at_random(0.1, 0.5, &mut step_rng); // classifier-free training
        let (t, noise) = draw_t_and_noise(&mut step_rng, b, &x0); // t ~ U{0..T-1}, ε ~ N(0, I)
        let loss = diffusion_loss(&d.schedule, d.prediction, |x_t, t| dec.forward(x_t, t, &cond), &x0, &t, &noise)?;
        finish_diffusion_step(laps, &loss, &mut opt, Some(2e-3), None, &mut ema)
    });
    let sample_cond = condition(&mut rng, samples)?;
    let x_t = Tensor::new(Rng::new(2).normal_array(&[samples, 1, side, side]));
    let mut sample_rng = Rng::new(3);
    let call = move || -> Result<()> {
        let guided = decoder.guided(&sample_cond, GUIDANCE);
        black_box(Sampler::Ddim(0.0).sample(&guided, &diffusion, x_t.clone(), &[999], &mut sample_rng, &mut |_, _| {})?);
        Ok(())
    };
    Ok(Case {
        name: "decoder",
        what: format!("11 unCLIP decoder (MNIST {side}x{side})"),
        params,
        batch: b,
        spec: json!({"batch": b, "unet": unet_spec(&config.unet), "clip_dim": e, "text_dim": w, "text_len": s,
                     "image_tokens": config.image_tokens, "lr": 2e-3, "samples": samples}),
        step,
        sample: Some(Sampling { call: Box::new(call), steps: 1, what: format!("one guided DDIM step for {samples} images (U-Net at batch {})", 2 * samples) }),
        data: None,
    })
}

/// Chapter 11's upsampler on MNIST (`Upsampler::mnist_config`: 14 -> 28, a U-Net over
/// `[x_t ; up(y)]`, 16/32/32 channels, attention only in the middle), batch 32, Adam 2e-3,
/// `‖ε - ε̂‖²` on the image channel, EMA 0.999. The blurred low-resolution inputs are random
/// and made once (the example blurs each batch: array code outside the model). Sampling: one
/// DDIM step for `samples` images, unguided, as the pipeline runs the upsampler.
pub(super) fn upsampler_case(b: usize, samples: usize, sets: &Sets) -> Result<Case> {
    let config = Upsampler::mnist_config();
    let factor = 2;
    let upsampler = Rc::new(Upsampler::new(config.clone(), factor, &mut Rng::new(0))?);
    let named = upsampler.named_parameters();
    let params = count(&named);
    let mut opt = Adam::new(named.clone(), 2e-3);
    let mut ema = Averaged::new(named);
    let diffusion = Diffusion::linear_epsilon()?;
    let (high, low) = (config.image_size, config.image_size / factor);
    let mut rng = Rng::new(1);
    let x0 = Tensor::new(rng.uniform_array(&[b, 1, high, high], -1.0, 1.0));
    let y = Tensor::new(rng.uniform_array(&[b, 1, low, low], -1.0, 1.0));
    let (u, d) = (upsampler.clone(), diffusion.clone());
    let mut step_rng = Rng::new(4); // t, ε and the dropped conditioning, drawn each step
    let step: Step = Box::new(move |laps| {
        let (t, noise) = draw_t_and_noise(&mut step_rng, b, &x0); // t ~ U{0..T-1}, ε ~ N(0, I)
        let loss = diffusion_loss(&d.schedule, d.prediction, |x_t, t| u.forward(x_t, t, &y), &x0, &t, &noise)?;
        finish_diffusion_step(laps, &loss, &mut opt, Some(2e-3), None, &mut ema)
    });
    let y_s = Tensor::new(rng.uniform_array(&[samples, 1, low, low], -1.0, 1.0));
    let x_t = Tensor::new(Rng::new(2).normal_array(&[samples, 1, high, high]));
    let mut sample_rng = Rng::new(3);
    let call = move || -> Result<()> {
        let denoiser = upsampler.with_low(y_s.clone());
        black_box(Sampler::Ddim(0.0).sample(&denoiser, &diffusion, x_t.clone(), &[999], &mut sample_rng, &mut |_, _| {})?);
        Ok(())
    };
    Ok(Case {
        name: "upsampler",
        what: format!("11 unCLIP upsampler (MNIST {low} -> {high})"),
        params,
        batch: b,
        spec: json!({"batch": b, "unet": unet_spec(&config), "factor": factor, "lr": 2e-3, "samples": samples}),
        step,
        sample: Some(Sampling { call: Box::new(call), steps: 1, what: format!("one DDIM step for {samples} images") }),
        data: batching(&sets.mnist, b),
    })
}

/// Chapter 09b's noised CLIP on MNIST: chapter 03's toy CLIP with a time token in place of the
/// class token (`NoisedClip::new`, time embedding 32 wide), the image tower and the temperature
/// trained, the text tower frozen (run each step without a graph, as the example's loss does);
/// batch 128, AdamW 5e-4 (decay 0.01, the warm-up cosine sets the rate each step), clipping at 1,
/// the symmetric contrastive loss of captions against images noised to a random `t`.
pub(super) fn noised_clip_case(b: usize) -> Result<Case> {
    let bpe = TrainedBpe::load(dalle::io::shipped_weights("clip_mnist.tokenizer.json"))?;
    let clip = ClipConfig::toy(DatasetName::Mnist, bpe.vocab_size(), bpe.eot());
    let config = NoisedClipConfig { clip: clip.clone(), time_embed_dim: 32, num_train_timesteps: NUM_TRAIN_STEPS, beta_schedule: "linear".into(), trained_on_noised_images: false };
    let model = NoisedClip::new(&config, &mut Rng::new(0))?;
    let named: Vec<(String, Tensor)> = model.named_parameters().into_iter().filter(|(_, p)| p.requires_grad()).collect();
    let params = count(&named);
    let trainable: Vec<Tensor> = named.iter().map(|(_, p)| p.clone()).collect();
    let mut opt = Adam::adamw(named, 5e-4, 0.01);
    let schedule = Diffusion::linear_epsilon()?.schedule;
    let (tc, vc) = (&clip.text_config, &clip.vision_config);
    let (s, vocab) = (tc.max_position_embeddings, tc.vocab_size);
    let mut rng = Rng::new(1);
    let x0 = Tensor::new(rng.uniform_array(&[b, vc.num_channels, vc.image_size, vc.image_size], -1.0, 1.0));
    let ends = caption_ends(&mut rng, b, s, 0.0);
    let ids = caption_ids(&mut rng, &ends, s, vocab);
    let ends_of_ids = ends_json(&ids);
    let mut step_rng = Rng::new(4);
    let step: Step = Box::new(move |laps| {
        let (t, noise) = draw_t_and_noise(&mut step_rng, b, &x0); // t ~ U{0..T-1}, ε ~ N(0, I)
        let x_t = schedule.q_sample(&x0, &t, &noise)?; // √ᾱ_t x_0 + √(1-ᾱ_t) ε
        let loss = model.loss(&x_t, &t, &ids)?;
        laps.lap(Phase::Forward);
        backward_and_step(laps, &loss, &mut opt, Some((&trainable[..], 5e-4)));
        black_box((loss.item(), model.logit_scale_exp().item()));
        laps.lap(Phase::Other);
        Ok(())
    });
    Ok(Case {
        name: "noised_clip",
        what: "09b noised CLIP (MNIST, image tower trained)".into(),
        params,
        batch: b,
        spec: json!({"batch": b, "vocab": vocab, "context": s, "width": tc.hidden_size, "intermediate": tc.intermediate_size,
                     "heads": tc.num_attention_heads, "text_layers": tc.num_hidden_layers, "vision_layers": vc.num_hidden_layers,
                     "patch": vc.patch_size, "projection": clip.projection_dim, "time_embed": 32, "ends": ends_of_ids}),
        step,
        sample: None,
        data: None,
    })
}
