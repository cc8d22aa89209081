//! The Shapes judge: what a Shapes image shows, read back from its pixels.
//!
//! A generated image is judged against its caption the way the digit judge
//! judges a digit, but without training anything: the Shapes set draws pure
//! colours on black, so each pixel is classified by thresholding its channels
//! at 1/2 (red = (1, 0, 0), yellow = (1, 1, 0), ...; dark or white pixels are
//! background), 4-connected regions of one colour are the objects, and each
//! object's shape follows from how much of its bounding box it fills:
//!
//! ```text
//! fill = pixels / (height · width)     square 1.0,  circle π/4 ≈ 0.79,  triangle ≈ 1/2
//! ```
//!
//! Size splits halfway between the small (canvas/4) and large (canvas/2 - 2)
//! extents; a relation "A above B" holds when every row of A is above every row of B.
//! `tests/shapes.rs` checks the judge on every kind of caption the generator writes.

use std::collections::BTreeMap;

use ndarray::Array3;

use crate::data::shapes::{Colour, Relation, ShapeKind, SizeKind};
use crate::{Error, Result};

/// A 4-connected region of one colour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    /// Its colour.
    pub colour: Colour,
    /// First and last row.
    pub rows: (usize, usize),
    /// First and last column.
    pub cols: (usize, usize),
    /// How many pixels it has.
    pub pixels: usize,
}

impl Component {
    /// Bounding box height.
    pub fn height(&self) -> usize {
        self.rows.1 - self.rows.0 + 1
    }

    /// Bounding box width.
    pub fn width(&self) -> usize {
        self.cols.1 - self.cols.0 + 1
    }

    /// Shape from the fill ratio of the bounding box: square 1.0, disc π/4 = 0.785
    /// (0.81 at 8 px), triangle about 1/2 (0.625 at 8 px, rows of 2, 2, 4, 4, ...).
    pub fn shape(&self) -> ShapeKind {
        let fill = self.pixels as f64 / (self.height() * self.width()) as f64;
        if fill > 0.95 {
            ShapeKind::Square
        } else if fill > 0.70 {
            ShapeKind::Circle
        } else {
            ShapeKind::Triangle
        }
    }

    /// Small boxes are canvas/4 wide, large ones canvas/2 - 2: split halfway.
    pub fn size(&self, canvas: usize) -> SizeKind {
        if 2 * self.width().max(self.height()) < canvas / 4 + canvas / 2 - 2 {
            SizeKind::Small
        } else {
            SizeKind::Large
        }
    }

    /// `small red circle`, as a caption names it.
    pub fn words(&self, canvas: usize) -> String {
        format!("{} {} {}", self.size(canvas).name(), self.colour.name(), self.shape().name())
    }

    /// Whether `relation` holds from this component to `other` (strictly, box against box).
    pub fn relation_to(&self, relation: Relation, other: &Component) -> bool {
        match relation {
            Relation::Above => self.rows.1 < other.rows.0,
            Relation::Below => self.rows.0 > other.rows.1,
            Relation::LeftOf => self.cols.1 < other.cols.0,
            Relation::RightOf => self.cols.0 > other.cols.1,
        }
    }
}

/// The palette colour of a pixel, each channel thresholded at 1/2; `None` for background.
pub fn pixel_colour(rgb: [f32; 3]) -> Option<Colour> {
    let on = rgb.map(|v| if v > 0.5 { 1.0 } else { 0.0 });
    Colour::from_rgb(on)
}

// ANCHOR: components
/// The objects of an image `(3, H, W)` in `[0, 1]`: 4-connected regions of one
/// palette colour with at least `min_pixels` pixels (1 for drawn data; more
/// for generated images, to ignore specks), in raster order of their first pixel.
pub fn components(image: &Array3<f32>, min_pixels: usize) -> Vec<Component> {
    let (_, h, w) = image.dim();
    let colour_at = |r: usize, c: usize| pixel_colour([image[[0, r, c]], image[[1, r, c]], image[[2, r, c]]]);
    let mut seen = vec![false; h * w];
    let mut found = Vec::new();
    for r0 in 0..h {
        for c0 in 0..w {
            let Some(colour) = colour_at(r0, c0).filter(|_| !seen[r0 * w + c0]) else { continue };
            let mut comp = Component { colour, rows: (r0, r0), cols: (c0, c0), pixels: 0 };
            let mut stack = vec![(r0, c0)];
            seen[r0 * w + c0] = true;
            while let Some((r, c)) = stack.pop() {
                comp.pixels += 1;
                comp.rows = (comp.rows.0.min(r), comp.rows.1.max(r));
                comp.cols = (comp.cols.0.min(c), comp.cols.1.max(c));
                for (nr, nc) in [(r.wrapping_sub(1), c), (r + 1, c), (r, c.wrapping_sub(1)), (r, c + 1)] {
                    if nr < h && nc < w && !seen[nr * w + nc] && colour_at(nr, nc) == Some(colour) {
                        seen[nr * w + nc] = true;
                        stack.push((nr, nc));
                    }
                }
            }
            if comp.pixels >= min_pixels {
                found.push(comp);
            }
        }
    }
    found
}
// ANCHOR_END: components

/// What a Shapes caption asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptionContent {
    /// "a small red circle" or "a small red circle, a large blue square and ...": one phrase per object.
    Objects(Vec<String>),
    /// "two small red circles": `count` copies of one phrase.
    Identical {
        /// The singular phrase, `small red circle`.
        phrase: String,
        /// 2 or 3.
        count: usize,
    },
    /// "a small red circle above a large blue square".
    Relation {
        /// The first object's phrase.
        first: String,
        /// Where it is.
        relation: Relation,
        /// The second object's phrase.
        second: String,
    },
}

impl CaptionContent {
    /// The phrase of every object the caption names.
    pub fn phrases(&self) -> Vec<String> {
        match self {
            CaptionContent::Objects(p) => p.clone(),
            CaptionContent::Identical { phrase, count } => vec![phrase.clone(); *count],
            CaptionContent::Relation { first, second, .. } => vec![first.clone(), second.clone()],
        }
    }
}

/// Parses a caption written by [`crate::data::shapes`]; the error quotes the caption.
pub fn parse_caption(caption: &str) -> Result<CaptionContent> {
    let bad = |why: &str| Error::Msg(format!("shapes judge: caption {caption:?}: {why}"));
    for (word, count) in [("two ", 2), ("three ", 3)] {
        if let Some(rest) = caption.strip_prefix(word) {
            let phrase = rest.strip_suffix('s').ok_or_else(|| bad("a count without a plural noun"))?;
            return Ok(CaptionContent::Identical { phrase: phrase.to_string(), count });
        }
    }
    let article = |p: &str| p.strip_prefix("a ").map(str::to_string).ok_or_else(|| bad(&format!("phrase {p:?} has no article")));
    for relation in Relation::ALL {
        if let Some((a, b)) = caption.split_once(&format!(" {} ", relation.phrase())) {
            return Ok(CaptionContent::Relation { first: article(a)?, relation, second: article(b)? });
        }
    }
    Ok(CaptionContent::Objects(caption.split(", ").flat_map(|p| p.split(" and ")).map(article).collect::<Result<_>>()?))
}

/// The judge's verdict on one image: which parts of the caption the pixels show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShapesVerdict {
    /// As many objects as the caption names.
    pub count: bool,
    /// The same multiset of colours.
    pub colours: bool,
    /// The same multiset of shapes.
    pub shapes: bool,
    /// The same multiset of whole phrases (size, colour and shape together).
    pub phrases: bool,
    /// For "A rel B": whether two objects that read as A and B stand in that relation.
    pub relation: Option<bool>,
}

impl ShapesVerdict {
    /// Everything the caption says is in the picture.
    pub fn all(&self) -> bool {
        self.count && self.colours && self.shapes && self.phrases && self.relation.unwrap_or(true)
    }
}

fn multiset<I: IntoIterator<Item = String>>(items: I) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in items {
        *m.entry(s).or_insert(0) += 1;
    }
    m
}

// ANCHOR: judge
/// Judges `image (3, H, W)` against `caption`; objects smaller than `min_pixels` are ignored.
pub fn judge(image: &Array3<f32>, caption: &str, min_pixels: usize) -> Result<ShapesVerdict> {
    let canvas = image.dim().1;
    let content = parse_caption(caption)?;
    let comps = components(image, min_pixels);
    let phrases = content.phrases();
    let word = |p: &String, i: usize| p.split(' ').nth(i).unwrap_or("").to_string(); // size colour shape
    let relation = match &content {
        CaptionContent::Relation { first, relation, second } => Some(comps.len() == 2 && [(0, 1), (1, 0)].iter().any(|&(i, j)| {
            comps[i].words(canvas) == *first && comps[j].words(canvas) == *second && comps[i].relation_to(*relation, &comps[j])
        })),
        _ => None,
    };
    Ok(ShapesVerdict {
        count: comps.len() == phrases.len(),
        colours: multiset(comps.iter().map(|c| c.colour.name().to_string())) == multiset(phrases.iter().map(|p| word(p, 1))),
        shapes: multiset(comps.iter().map(|c| c.shape().name().to_string())) == multiset(phrases.iter().map(|p| word(p, 2))),
        phrases: multiset(comps.iter().map(|c| c.words(canvas))) == multiset(phrases.iter().cloned()),
        relation,
    })
}
// ANCHOR_END: judge
