//! Shapes prompt fidelity: one set of prompts and one score for every Shapes generator.
//!
//! Chapters 07 (DALL-E 1), 09 (GLIDE), 11 (unCLIP) and 12 (the comparison) ask
//! the same two questions of a model trained on Shapes, with the same prompts:
//!
//! - **attributes**: given "a small red circle", is there one object, of that
//!   colour, that shape and that size? ([`single_object_prompts`]: all 36
//!   size × colour × shape phrases);
//! - **relations**: given "a small red circle above a large blue square", are
//!   both objects there and does the relation hold? ([`relation_prompts`]:
//!   captions of the test split's two-object images).
//!
//! [`ShapesFidelity::measure`] reads every image back with the pixel judge of
//! [`super::shapes`] and turns the verdicts into rates.

use ndarray::{Array4, Axis};

use super::shapes::judge;
use crate::data::shapes::{Colour, ShapeKind, Shapes, ShapesConfig, SizeKind};
use crate::data::Split;
use crate::{Error, Result};

/// Connected regions smaller than this are specks, not objects, in a generated
/// 32x32 image (a small triangle has about 32 pixels, a small circle 52).
pub const GENERATED_MIN_PIXELS: usize = 6;

/// Every one-object caption: "a {small|large} {colour} {circle|square|triangle}", 36 in all.
pub fn single_object_prompts() -> Vec<String> {
    let mut prompts = Vec::with_capacity(36);
    for size in SizeKind::ALL {
        for colour in Colour::ALL {
            for shape in ShapeKind::ALL {
                prompts.push(format!("a {} {} {}", size.name(), colour.name(), shape.name()));
            }
        }
    }
    prompts
}

/// The first `n` captions "A {above|below|left of|right of} B" of the test split
/// (seed 1): prompts no training image carried with the same picture.
pub fn relation_prompts(n: usize) -> Result<Vec<String>> {
    let shapes = Shapes::new(ShapesConfig::for_split(Split::Test))?;
    Ok(shapes.iter().filter(|s| s.relation.is_some()).take(n).map(|s| s.caption).collect())
}

/// Rates of what the Shapes judge read back from generated images, each in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShapesFidelity {
    /// Images judged.
    pub images: usize,
    /// As many objects as the caption names.
    pub count: f64,
    /// The caption's colours (as a multiset; the count must match).
    pub colour: f64,
    /// The caption's shapes.
    pub shape: f64,
    /// Every object's size, colour and shape together.
    pub phrase: f64,
    /// Among relation captions: both objects right and in the named relation (`None` without any).
    pub relation: Option<f64>,
    /// Everything the caption says.
    pub all: f64,
}

impl ShapesFidelity {
    /// Judges `images (N, 3, H, W)` in `[0, 1]` against `captions` (one each).
    pub fn measure(images: &Array4<f32>, captions: &[String]) -> Result<ShapesFidelity> {
        let n = images.len_of(Axis(0));
        if n == 0 || n != captions.len() || images.len_of(Axis(1)) != 3 {
            return Err(Error::Config(format!(
                "shapes fidelity: expected (N, 3, H, W) images with one caption each, N > 0; got {:?} and {} captions",
                images.shape(),
                captions.len()
            )));
        }
        let (mut count, mut colour, mut shape, mut phrase, mut all) = (0, 0, 0, 0, 0);
        let (mut related, mut relations) = (0, 0);
        for (image, caption) in images.outer_iter().zip(captions) {
            let v = judge(&image.to_owned(), caption, GENERATED_MIN_PIXELS)?;
            count += v.count as usize;
            colour += v.colours as usize;
            shape += v.shapes as usize;
            phrase += v.phrases as usize;
            all += v.all() as usize;
            if let Some(r) = v.relation {
                relations += 1;
                related += r as usize;
            }
        }
        let rate = |k: usize| k as f64 / n as f64;
        Ok(ShapesFidelity {
            images: n,
            count: rate(count),
            colour: rate(colour),
            shape: rate(shape),
            phrase: rate(phrase),
            relation: (relations > 0).then(|| related as f64 / relations as f64),
            all: rate(all),
        })
    }

    /// One line for a log: `count 98.0 %  colour 95.0 %  ...`.
    pub fn summary(&self) -> String {
        let pct = |x: f64| format!("{:.1} %", 100.0 * x);
        let relation = self.relation.map_or(String::new(), |r| format!("  relation {}", pct(r)));
        format!(
            "{} images: count {}  colour {}  shape {}  size+colour+shape {}{relation}  all {}",
            self.images,
            pct(self.count),
            pct(self.colour),
            pct(self.shape),
            pct(self.phrase),
            pct(self.all)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::stack;

    #[test]
    fn drawn_images_score_one_and_wrong_captions_do_not() {
        let shapes = Shapes::new(ShapesConfig::for_split(Split::Test)).unwrap();
        let samples: Vec<_> = shapes.iter().filter(|s| s.count() <= 2).take(40).collect();
        let images = stack(Axis(0), &samples.iter().map(|s| s.image.view()).collect::<Vec<_>>()).unwrap();
        let captions: Vec<String> = samples.iter().map(|s| s.caption.clone()).collect();
        let right = ShapesFidelity::measure(&images, &captions).unwrap();
        assert_eq!((right.all, right.colour, right.count), (1.0, 1.0, 1.0), "{}", right.summary());
        assert_eq!(right.relation, Some(1.0));
        // Every image judged against the next image's caption: mostly wrong.
        let shifted: Vec<String> = captions.iter().cycle().skip(1).take(captions.len()).cloned().collect();
        let wrong = ShapesFidelity::measure(&images, &shifted).unwrap();
        assert!(wrong.all < 0.3, "{}", wrong.summary());
    }

    #[test]
    fn prompt_sets() {
        let single = single_object_prompts();
        assert_eq!(single.len(), 36);
        assert!(single.contains(&"a large cyan triangle".to_string()));
        let rel = relation_prompts(20).unwrap();
        assert_eq!(rel.len(), 20);
        assert!(rel.iter().all(|c| [" above ", " below ", " left of ", " right of "].iter().any(|r| c.contains(r))));
        assert_eq!(rel, relation_prompts(20).unwrap(), "deterministic");
    }

    #[test]
    fn mismatched_input_is_an_error() {
        let images = Array4::<f32>::zeros((2, 3, 32, 32));
        assert!(ShapesFidelity::measure(&images, &["a small red circle".to_string()]).is_err());
        assert!(ShapesFidelity::measure(&Array4::<f32>::zeros((1, 1, 32, 32)), &["a small red circle".to_string()]).is_err());
    }
}
