//! DALL-E 1 (chapter 07): the sequence, the masks against a dense reference,
//! cached against uncached decoding, sampling filters and bad input.

use dalle::models::dalle::masks::{allowed, dalle_mask, ImageAttention, MaskPattern};
use dalle::models::dalle::sample::SamplingConfig;
use dalle::models::dalle::sequence::{decode_caption, encode_caption, join_sequences};
use dalle::models::dalle::{Dalle, DalleConfig};
use dalle::nn::TransformerConfig;
use dalle::tensor::no_grad;
use dalle::tokenizer::{TextTokenizer, TrainedBpe};
use dalle::Rng;

const TEXT_LEN: usize = 6;
const GRID: (usize, usize) = (3, 4);

fn tiny(masks: MaskPattern) -> Dalle {
    let config = DalleConfig {
        text_vocab: 20,
        text_len: TEXT_LEN,
        image_vocab: 16,
        grid: GRID,
        transformer: TransformerConfig::new(16, 2, 4),
        masks,
        text_loss_weight: 0.125,
    };
    Dalle::new(config, &mut Rng::new(7)).unwrap()
}

fn all_patterns() -> Vec<MaskPattern> {
    ["full", "row", "column", "conv3", "paper"].iter().map(|p| MaskPattern::parse(p).unwrap()).collect()
}

fn random_sequence(model: &Dalle, b: usize, rng: &mut Rng) -> Vec<usize> {
    let c = model.config;
    (0..b)
        .flat_map(|_| (0..c.seq_len()).map(|p| if p < c.text_len { rng.below(c.text_vocab + c.text_len) } else { rng.below(c.image_vocab) }).collect::<Vec<_>>())
        .collect()
}

/// The allowed keys of each query written out as sets, by cell coordinates,
/// independently of `ImageAttention::allows`.
fn reference_keys(attention: ImageAttention, q: usize) -> Vec<usize> {
    let (l, w) = (TEXT_LEN, GRID.1);
    if q < l {
        return (0..=q).collect(); // causal text
    }
    let (r, c) = ((q - l) / w, (q - l) % w);
    let mut keys: Vec<usize> = (0..l).collect(); // all the text
    for kr in 0..GRID.0 {
        for kc in 0..w {
            let k = l + kr * w + kc;
            let inside = match attention {
                ImageAttention::Full => true,
                ImageAttention::Row => kr == r,
                ImageAttention::Column => kc == c,
                ImageAttention::Conv { kernel } => {
                    let half = (kernel / 2) as isize;
                    (kr as isize - r as isize).abs() <= half && (kc as isize - c as isize).abs() <= half
                }
            };
            if k <= q && inside {
                keys.push(k);
            }
        }
    }
    keys
}

#[test]
fn masks_match_a_dense_reference() {
    let s = TEXT_LEN + GRID.0 * GRID.1;
    for attention in [ImageAttention::Full, ImageAttention::Row, ImageAttention::Column, ImageAttention::Conv { kernel: 3 }] {
        let mask = dalle_mask(attention, s, s, TEXT_LEN, GRID.1);
        for q in 0..s {
            let seen: Vec<usize> = (0..s).filter(|&k| !mask[[q, k]]).collect();
            assert_eq!(seen, reference_keys(attention, q), "{attention:?}, query {q}");
        }
        // One cached step's mask is the last row of the whole mask.
        let step = dalle_mask(attention, 1, s, TEXT_LEN, GRID.1);
        assert!((0..s).all(|k| step[[0, k]] == mask[[s - 1, k]]), "{attention:?}: cached row");
    }
    // Row (3 x 4 grid): the first cell of row 1 sees the text and itself only.
    assert_eq!(reference_keys(ImageAttention::Row, TEXT_LEN + 4), [0, 1, 2, 3, 4, 5, TEXT_LEN + 4]);
}

#[test]
fn paper_pattern_puts_column_in_every_fourth_layer_and_conv_last() {
    let p = MaskPattern::Paper { kernel: 3 };
    let layers: Vec<ImageAttention> = (0..8).map(|i| p.layer(i, 8)).collect();
    use ImageAttention::*;
    assert_eq!(layers, [Row, Column, Row, Row, Row, Column, Row, Conv { kernel: 3 }]);
}

/// With a sparse mask in every layer, the hidden state at a position must not
/// change when a token it may not see (even through other positions) changes.
#[test]
fn sparse_masks_block_information_flow() {
    let mut rng = Rng::new(3);
    let (l, w) = (TEXT_LEN, GRID.1);
    for (attention, hidden_from) in [(ImageAttention::Row, l + w + 2), (ImageAttention::Column, l + 2 * w + 1)] {
        let model = tiny(MaskPattern::Uniform(attention));
        let ids = random_sequence(&model, 1, &mut rng);
        let s = model.config.seq_len();
        let base = no_grad(|| model.hidden(&ids, 1, s, false)).unwrap().to_array();
        // Change a token the query cannot see: the cell just before it in raster order for
        // column attention (another column), the cell above it for row attention (another row).
        let hidden = if attention == ImageAttention::Row { hidden_from - w } else { hidden_from - 1 };
        assert!(!allowed(attention, hidden_from, hidden, l, w));
        let mut changed = ids.clone();
        changed[hidden] = (changed[hidden] + 1) % model.config.image_vocab;
        let after = no_grad(|| model.hidden(&changed, 1, s, false)).unwrap().to_array();
        let d = model.config.transformer.dim;
        let at = |a: &ndarray::ArrayD<f32>, p: usize| a.as_slice().unwrap()[p * d..(p + 1) * d].to_vec();
        assert_eq!(at(&base, hidden_from), at(&after, hidden_from), "{attention:?}: position {hidden_from} saw token {hidden}");
        // ... while with full attention the same change reaches it.
        let full = tiny(MaskPattern::Uniform(ImageAttention::Full));
        let (a, b) = no_grad(|| (full.hidden(&ids, 1, s, false).unwrap().to_array(), full.hidden(&changed, 1, s, false).unwrap().to_array()));
        assert_ne!(at(&a, hidden_from), at(&b, hidden_from));
    }
}

#[test]
fn cached_and_uncached_logits_agree_at_every_position() {
    for masks in all_patterns() {
        let model = tiny(masks);
        let mut rng = Rng::new(11);
        let text: Vec<usize> = random_sequence(&model, 3, &mut rng).chunks(model.config.seq_len()).flat_map(|r| r[..TEXT_LEN].to_vec()).collect();
        let sampling = SamplingConfig { temperature: 1.0, top_k: Some(8), top_p: 0.9 };
        let cached = model.sample(&text, &sampling, true, &mut Rng::new(5)).unwrap();
        let reference = model.sample(&text, &sampling, false, &mut Rng::new(5)).unwrap();
        let gap = (&cached.logits - &reference.logits).iter().fold(0f32, |m, v| m.max(v.abs()));
        // f32 sums in a different order (one row at a time against the whole sequence): ~1e-6.
        assert!(gap < 1e-4, "{masks:?}: max |cached - uncached| logit = {gap}");
        assert_eq!(cached.tokens, reference.tokens, "{masks:?}");
        // And the teacher-forced forward pass of the finished sequence gives the same logits again.
        let n = model.config.image_len();
        let ids: Vec<usize> = (0..3).flat_map(|i| text[i * TEXT_LEN..(i + 1) * TEXT_LEN].iter().copied().chain(cached.tokens.index_axis(ndarray::Axis(0), i).iter().copied()).collect::<Vec<_>>()).collect();
        let inputs: Vec<usize> = ids.chunks(TEXT_LEN + n).flat_map(|r| r[..TEXT_LEN + n - 1].to_vec()).collect();
        let (_, image) = no_grad(|| model.forward(&inputs, 3, TEXT_LEN + n - 1, false)).unwrap();
        let forward = image.unwrap().to_array();
        let gap = forward.iter().zip(cached.logits.iter()).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(gap < 1e-4, "{masks:?}: forward vs cached {gap}");
    }
}

#[test]
fn loss_weighs_text_and_image_parts() {
    let model = tiny(MaskPattern::Uniform(ImageAttention::Full));
    let ids = random_sequence(&model, 4, &mut Rng::new(2));
    let l = no_grad(|| model.loss(&ids, 4, false)).unwrap();
    let expected = 0.125 * l.text + 0.875 * l.image;
    assert!((l.loss.item() - expected).abs() < 1e-5, "{} vs {expected}", l.loss.item());
    // At initialisation the logits are small (Linear's U(±1/√C) heads on unit-variance
    // features: std ≈ 0.6), so each CE is near ln V, a little above it.
    assert!(l.image > 16f32.ln() - 0.05 && l.image < 16f32.ln() + 0.4, "image CE {} vs ln 16", l.image);
    assert!(l.text > 26f32.ln() - 0.05 && l.text < 26f32.ln() + 0.4, "text CE {} vs ln 26", l.text);
}

#[test]
fn training_lowers_the_loss() {
    let model = tiny(MaskPattern::Paper { kernel: 3 });
    let ids = random_sequence(&model, 4, &mut Rng::new(9));
    let mut opt = dalle::optim::Adam::new(dalle::nn::Module::named_parameters(&model), 3e-3);
    let first = model.loss(&ids, 4, true).unwrap().loss.item();
    for _ in 0..30 {
        let l = model.loss(&ids, 4, true).unwrap();
        dalle::optim::Optimizer::zero_grad(&mut opt);
        l.loss.backward();
        dalle::optim::Optimizer::step(&mut opt);
    }
    let last = model.loss(&ids, 4, true).unwrap().loss.item();
    assert!(last < 0.8 * first, "{first} -> {last}");
}

fn bpe() -> TrainedBpe {
    TrainedBpe::load(concat!(env!("CARGO_MANIFEST_DIR"), "/weights/clip_mnist.tokenizer.json")).unwrap()
}

#[test]
fn captions_pad_with_one_token_per_position() {
    let bpe = bpe();
    let v = bpe.vocab_size();
    let ids = encode_caption(&bpe, "a handwritten 7", 10, false).unwrap();
    assert_eq!(ids[0], bpe.sot() as usize);
    let eot = ids.iter().position(|&t| t == bpe.eot() as usize).unwrap();
    assert!(eot >= 2);
    for (p, &t) in ids.iter().enumerate().skip(eot + 1) {
        assert_eq!(t, v + p, "position {p}");
    }
    let err = encode_caption(&bpe, "a picture of the number seven written by hand in an image of a handwritten 7", 10, false).unwrap_err().to_string();
    assert!(err.contains("over the context length 10") && err.contains("dalle prompt"), "{err}");
    let cut = encode_caption(&bpe, "a picture of the number seven written by hand in an image of a handwritten 7", 10, true).unwrap();
    assert_eq!((cut.len(), cut[9]), (10, bpe.eot() as usize));
    // What the model sees after the cut: the first 8 tokens of the caption.
    assert_eq!(decode_caption(&bpe, &ids).unwrap(), "a handwritten 7");
    assert_eq!(decode_caption(&bpe, &cut).unwrap(), "a picture of the number seven written by");
    assert!(join_sequences(&[1, 2, 3], &[4, 5], 2, 1).is_err());
}

#[test]
fn sampling_filters_keep_what_they_say() {
    let logits = [2.0f32, 1.0, 0.0, -1.0, 3.0];
    let top2 = SamplingConfig { temperature: 1.0, top_k: Some(2), top_p: 1.0 }.probabilities(&logits);
    assert_eq!(top2.iter().filter(|&&p| p > 0.0).count(), 2);
    assert!(top2[4] > top2[0] && top2[0] > 0.0);
    // softmax of [3, 2, 1, 0, -1]: 0.636, 0.234, 0.086, ...: p = 0.8 keeps the first two (0.87).
    let nucleus = SamplingConfig { temperature: 1.0, top_k: None, top_p: 0.8 }.probabilities(&logits);
    assert_eq!(nucleus.iter().map(|&p| p > 0.0).collect::<Vec<_>>(), [true, false, false, false, true]);
    assert!((nucleus.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    // p = 0.5 keeps only the most likely; greedy picks it too.
    let greedy = SamplingConfig { temperature: 0.0, ..Default::default() };
    assert_eq!(greedy.pick(&logits, &mut Rng::new(0)), 4);
    let one = SamplingConfig { top_p: 0.5, ..Default::default() };
    assert!((0..20).all(|s| one.pick(&logits, &mut Rng::new(s)) == 4));
}

#[test]
fn bad_input_gives_clear_errors() {
    for (cfg, needle) in [
        (SamplingConfig { top_p: 0.0, ..Default::default() }, "top_p 0 must be in (0, 1]"),
        (SamplingConfig { top_p: 1.5, ..Default::default() }, "top_p 1.5 must be in (0, 1]"),
        (SamplingConfig { top_k: Some(0), ..Default::default() }, "top_k = 0"),
        (SamplingConfig { temperature: -1.0, ..Default::default() }, "temperature -1"),
    ] {
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains(needle), "{err}");
    }
    let model = tiny(MaskPattern::Uniform(ImageAttention::Full));
    let err = model.sample(&[1; TEXT_LEN], &SamplingConfig { top_p: 2.0, ..Default::default() }, true, &mut Rng::new(0)).err().unwrap().to_string();
    assert!(err.contains("top_p 2"), "{err}");
    let err = model.check_image_tokenizer(128, (7, 7)).unwrap_err().to_string();
    assert!(err.contains("128 codes on a 7x7 grid") && err.contains("expects 16 codes on 3x4"), "{err}");
    let err = MaskPattern::parse("conv4").unwrap_err().to_string();
    assert!(err.contains("kernel 4 must be odd"), "{err}");
    let err = MaskPattern::parse("diagonal").unwrap_err().to_string();
    assert!(err.contains("\"diagonal\""), "{err}");
    let err = model.loss(&[0; 5], 1, false).err().unwrap().to_string();
    assert!(err.contains("5 ids"), "{err}");
}

#[test]
fn config_round_trips_through_checkpoint_metadata() {
    let model = tiny(MaskPattern::Paper { kernel: 5 });
    let meta = model.config.metadata().into_iter().collect();
    let back = DalleConfig::from_metadata(&meta).unwrap();
    assert_eq!(format!("{:?}", back), format!("{:?}", model.config));
    let mut broken = meta.clone();
    broken.insert("dalle.grid".into(), "7by7".into());
    assert!(DalleConfig::from_metadata(&broken).unwrap_err().to_string().contains("\"7by7\""));
}
