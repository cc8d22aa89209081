//! Shapes: a procedural captioned data set that needs no download.
//!
//! Each image is a black canvas (default 32x32 RGB) with one to three coloured
//! circles, squares or triangles, small or large, and a caption that says what
//! is there:
//!
//! ```text
//! a large yellow square
//! a small red circle above a large blue square
//! two small green triangles
//! a small red circle, a large cyan square and a small blue triangle
//! ```
//!
//! The vocabulary is tiny ([`SHAPES_VOCAB`]), so a text-to-image model trained
//! for minutes on a CPU can learn to follow it, and whether it did can be
//! measured: every attribute is known ([`ShapeObject`]), objects never overlap
//! or touch, and colours are pure, so colour, size and shape can be read back
//! from the pixels (the test `tests/shapes.rs` does exactly that).
//!
//! Sample `i` of seed `s` is a pure function of `(s, i)`: the set is infinite and
//! any sample can be regenerated without the others.
//!
//! Layout: a relation "A above B" puts A in the top half and B in the bottom
//! half (with a blank row between), so the caption is true by construction;
//! several objects without a relation go into distinct quadrants. Each half or
//! quadrant leaves its last row and column empty, so neighbours never touch.

use ndarray::{s, Array3, Array4};
use ndarray_rand::rand::rngs::StdRng;
use ndarray_rand::rand::{Rng, SeedableRng};
use rayon::prelude::*;

use super::{ImageDataset, Split};
use crate::{Error, Result};

/// Images [`super::load`] renders for the train split.
pub const DEFAULT_TRAIN_SIZE: usize = 10_000;
/// Images [`super::load`] renders for the test split.
pub const DEFAULT_TEST_SIZE: usize = 2_000;

/// Every word a Shapes caption can contain (the comma is its own token).
pub const SHAPES_VOCAB: [&str; 24] = [
    "a", "two", "three", "small", "large", "red", "green", "blue", "yellow", "magenta", "cyan", "circle",
    "circles", "square", "squares", "triangle", "triangles", "above", "below", "left", "right", "of", "and", ",",
];

/// The kind of a shape. Its index is the class label ([`super::captions::SHAPES_CLASSES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ShapeKind {
    /// A filled disc: fills about pi/4 = 0.785 of its bounding box.
    Circle,
    /// A filled square: fills all of its bounding box.
    Square,
    /// A filled triangle, apex up: fills about half of its bounding box.
    Triangle,
}

impl ShapeKind {
    /// All kinds, in label order.
    pub const ALL: [ShapeKind; 3] = [ShapeKind::Circle, ShapeKind::Square, ShapeKind::Triangle];
    /// The noun: `circle`, `square`, `triangle`.
    pub fn name(self) -> &'static str {
        ["circle", "square", "triangle"][self as usize]
    }
}

/// The colour of a shape: pure RGB primaries and secondaries, easy to tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Colour {
    /// (1, 0, 0)
    Red,
    /// (0, 1, 0)
    Green,
    /// (0, 0, 1)
    Blue,
    /// (1, 1, 0)
    Yellow,
    /// (1, 0, 1)
    Magenta,
    /// (0, 1, 1)
    Cyan,
}

impl Colour {
    /// All colours.
    pub const ALL: [Colour; 6] = [Colour::Red, Colour::Green, Colour::Blue, Colour::Yellow, Colour::Magenta, Colour::Cyan];
    /// The adjective: `red`, `green`, ...
    pub fn name(self) -> &'static str {
        ["red", "green", "blue", "yellow", "magenta", "cyan"][self as usize]
    }
    /// Its RGB value in `[0, 1]`.
    pub fn rgb(self) -> [f32; 3] {
        match self {
            Colour::Red => [1.0, 0.0, 0.0],
            Colour::Green => [0.0, 1.0, 0.0],
            Colour::Blue => [0.0, 0.0, 1.0],
            Colour::Yellow => [1.0, 1.0, 0.0],
            Colour::Magenta => [1.0, 0.0, 1.0],
            Colour::Cyan => [0.0, 1.0, 1.0],
        }
    }
    /// The colour whose RGB is exactly `rgb`, if any.
    pub fn from_rgb(rgb: [f32; 3]) -> Option<Colour> {
        Colour::ALL.into_iter().find(|c| c.rgb() == rgb)
    }
}

/// Small or large.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SizeKind {
    /// Bounding box `canvas / 4` pixels wide (8 on 32x32).
    Small,
    /// Bounding box `canvas / 2 - 2` pixels wide (14 on 32x32).
    Large,
}

impl SizeKind {
    /// Both sizes.
    pub const ALL: [SizeKind; 2] = [SizeKind::Small, SizeKind::Large];
    /// The adjective: `small` or `large`.
    pub fn name(self) -> &'static str {
        ["small", "large"][self as usize]
    }
}

/// Where the first object of a two-object caption is, relative to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Relation {
    /// Every row of the first object is above every row of the second.
    Above,
    /// Every row of the first object is below every row of the second.
    Below,
    /// Every column of the first object is left of every column of the second.
    LeftOf,
    /// Every column of the first object is right of every column of the second.
    RightOf,
}

impl Relation {
    /// All relations.
    pub const ALL: [Relation; 4] = [Relation::Above, Relation::Below, Relation::LeftOf, Relation::RightOf];
    /// The words in a caption: `above`, `below`, `left of`, `right of`.
    pub fn phrase(self) -> &'static str {
        ["above", "below", "left of", "right of"][self as usize]
    }
}

/// One shape on the canvas, with every attribute a test or metric may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShapeObject {
    /// Circle, square or triangle.
    pub shape: ShapeKind,
    /// Its colour.
    pub colour: Colour,
    /// Small or large.
    pub size: SizeKind,
    /// Column of the bounding box's left edge.
    pub x: usize,
    /// Row of the bounding box's top edge.
    pub y: usize,
    /// Width and height of the bounding box in pixels (the drawn shape touches all four sides).
    pub extent: usize,
}

impl ShapeObject {
    /// Whether pixel `(row, col)` of the canvas belongs to this shape.
    ///
    /// With `u, v` the offsets inside the box and `e` its extent, pixel centres
    /// are at `u + 1/2, v + 1/2`; doubled to stay in integers:
    /// circle `(2u+1-e)^2 + (2v+1-e)^2 <= e^2`, triangle (apex up) `|2u+1-e| <= v+1`.
    pub fn contains(&self, row: usize, col: usize) -> bool {
        if row < self.y || col < self.x || row >= self.y + self.extent || col >= self.x + self.extent {
            return false;
        }
        let e = self.extent as i64;
        let (u, v) = ((col - self.x) as i64, (row - self.y) as i64);
        match self.shape {
            ShapeKind::Square => true,
            ShapeKind::Circle => (2 * u + 1 - e).pow(2) + (2 * v + 1 - e).pow(2) <= e * e,
            ShapeKind::Triangle => (2 * u + 1 - e).abs() <= v + 1,
        }
    }

    /// `small red circle`.
    pub fn phrase(&self) -> String {
        format!("{} {} {}", self.size.name(), self.colour.name(), self.shape.name())
    }
}

/// One rendered image with its caption and attributes.
#[derive(Debug, Clone)]
pub struct ShapesSample {
    /// Pixels, `(3, H, W)` in `[0, 1]`: black background, pure colours.
    pub image: Array3<f32>,
    /// What the image shows, in [`SHAPES_VOCAB`] words.
    pub caption: String,
    /// The objects, in the order the caption names them.
    pub objects: Vec<ShapeObject>,
    /// For a two-object caption "A rel B": the relation of `objects[0]` to `objects[1]`.
    pub relation: Option<Relation>,
}

impl ShapesSample {
    /// How many objects the image holds (1..=3).
    pub fn count(&self) -> usize {
        self.objects.len()
    }
}

/// Settings of a Shapes generator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShapesConfig {
    /// Width and height of the square canvas, in pixels (32..=256).
    pub canvas: usize,
    /// The seed; sample `i` depends only on `(seed, i)`.
    pub seed: u64,
    /// At most this many objects per image (1..=3).
    pub max_objects: usize,
    /// Probability that a multi-object image repeats one object ("two small red circles").
    pub identical_prob: f64,
}

impl Default for ShapesConfig {
    fn default() -> Self {
        ShapesConfig { canvas: 32, seed: 0, max_objects: 3, identical_prob: 0.3 }
    }
}

impl ShapesConfig {
    /// The default settings with the seed of a split (train 0, test 1), so the
    /// test images are not the training images.
    pub fn for_split(split: Split) -> Self {
        ShapesConfig { seed: if split == Split::Train { 0 } else { 1 }, ..Default::default() }
    }
}

/// A Shapes generator: renders sample `i` on demand.
#[derive(Debug, Clone)]
pub struct Shapes {
    config: ShapesConfig,
}

/// An axis-aligned area where an object's bounding box must fit: `(x, y, width, height)`.
type Region = (usize, usize, usize, usize);

impl Shapes {
    /// A generator; checks the settings.
    pub fn new(config: ShapesConfig) -> Result<Self> {
        if !(32..=256).contains(&config.canvas) {
            return Err(Error::Config(format!("shapes: canvas = {} is out of range 32..=256", config.canvas)));
        }
        if !(1..=3).contains(&config.max_objects) {
            return Err(Error::Config(format!("shapes: max_objects = {} is out of range 1..=3", config.max_objects)));
        }
        if !(0.0..=1.0).contains(&config.identical_prob) {
            return Err(Error::Config(format!("shapes: identical_prob = {} is not a probability", config.identical_prob)));
        }
        Ok(Shapes { config })
    }

    /// The settings.
    pub fn config(&self) -> &ShapesConfig {
        &self.config
    }

    /// Bounding-box side of a shape of size `size` on this canvas.
    pub fn extent(&self, size: SizeKind) -> usize {
        match size {
            SizeKind::Small => self.config.canvas / 4,
            SizeKind::Large => self.config.canvas / 2 - 2,
        }
    }

    /// Sample `index`: always the same for the same seed and index.
    pub fn sample(&self, index: u64) -> ShapesSample {
        // Mix (seed, index) into one well-spread seed (SplitMix64's multiplier).
        let mut rng = StdRng::seed_from_u64(self.config.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index);
        let count = rng.random_range(1..=self.config.max_objects);
        let identical = count > 1 && rng.random_bool(self.config.identical_prob);
        let first = self.random_attributes(&mut rng);
        let mut objects: Vec<ShapeObject> =
            (0..count).map(|i| if identical || i == 0 { first } else { self.random_attributes(&mut rng) }).collect();

        let s = self.config.canvas;
        let h = s / 2;
        // Halves and quadrants leave their last row/column blank: (x, y, w, h).
        let (top, bottom) = ((0, 0, s, h - 1), (0, h, s, s - h));
        let (left, right) = ((0, 0, h - 1, s), (h, 0, s - h, s));
        let quadrants = [(0, 0, h - 1, h - 1), (h, 0, s - h, h - 1), (0, h, h - 1, s - h), (h, h, s - h, s - h)];

        let mut relation = None;
        let regions: Vec<Region> = if count == 1 {
            vec![(0, 0, s, s)]
        } else if count == 2 && !identical {
            let rel = Relation::ALL[rng.random_range(0..4)];
            relation = Some(rel);
            match rel {
                Relation::Above => vec![top, bottom],
                Relation::Below => vec![bottom, top],
                Relation::LeftOf => vec![left, right],
                Relation::RightOf => vec![right, left],
            }
        } else {
            let mut order = [0, 1, 2, 3];
            ndarray_rand::rand::seq::SliceRandom::shuffle(&mut order[..], &mut rng);
            order[..count].iter().map(|&q| quadrants[q]).collect()
        };
        for (obj, (rx, ry, rw, rh)) in objects.iter_mut().zip(regions) {
            obj.x = rx + rng.random_range(0..=rw - obj.extent);
            obj.y = ry + rng.random_range(0..=rh - obj.extent);
        }

        let caption = caption(&objects, relation, identical);
        ShapesSample { image: self.render(&objects), caption, objects, relation }
    }

    /// Samples `0, 1, 2, ...` without end.
    pub fn iter(&self) -> impl Iterator<Item = ShapesSample> + '_ {
        (0u64..).map(move |i| self.sample(i))
    }

    /// Samples `0..n` as an [`ImageDataset`] (rendered in parallel): label = the
    /// first object's shape, captions filled in.
    pub fn dataset(&self, n: usize) -> Result<ImageDataset> {
        let s = self.config.canvas;
        let samples: Vec<ShapesSample> = (0..n as u64).into_par_iter().map(|i| self.sample(i)).collect();
        let mut images = Array4::<f32>::zeros((n, 3, s, s));
        for (i, sample) in samples.iter().enumerate() {
            images.slice_mut(s![i, .., .., ..]).assign(&sample.image);
        }
        Ok(ImageDataset {
            images,
            labels: samples.iter().map(|x| x.objects[0].shape as usize).collect(),
            classes: super::DatasetName::Shapes.classes(),
            captions: Some(samples.into_iter().map(|x| x.caption).collect()),
        })
    }

    /// Draws `objects` on a black canvas: `(3, S, S)`.
    pub fn render(&self, objects: &[ShapeObject]) -> Array3<f32> {
        let s = self.config.canvas;
        let mut image = Array3::<f32>::zeros((3, s, s));
        for obj in objects {
            let rgb = obj.colour.rgb();
            for row in obj.y..obj.y + obj.extent {
                for col in obj.x..obj.x + obj.extent {
                    if obj.contains(row, col) {
                        for (c, v) in rgb.iter().enumerate() {
                            image[[c, row, col]] = *v;
                        }
                    }
                }
            }
        }
        image
    }

    fn random_attributes(&self, rng: &mut StdRng) -> ShapeObject {
        let size = SizeKind::ALL[rng.random_range(0..2)];
        ShapeObject {
            shape: ShapeKind::ALL[rng.random_range(0..3)],
            colour: Colour::ALL[rng.random_range(0..6)],
            size,
            x: 0,
            y: 0,
            extent: self.extent(size),
        }
    }
}

/// The caption of `objects`: one object, an identical group, a relation, or a list.
fn caption(objects: &[ShapeObject], relation: Option<Relation>, identical: bool) -> String {
    let first = &objects[0];
    match (objects.len(), relation) {
        (1, _) => format!("a {}", first.phrase()),
        (2, Some(rel)) => format!("a {} {} a {}", first.phrase(), rel.phrase(), objects[1].phrase()),
        (n, _) if identical => {
            let count = if n == 2 { "two" } else { "three" };
            format!("{count} {}s", first.phrase())
        }
        _ => {
            let phrases: Vec<String> = objects.iter().map(|o| format!("a {}", o.phrase())).collect();
            let (last, rest) = phrases.split_last().expect("at least one object");
            format!("{} and {last}", rest.join(", "))
        }
    }
}
