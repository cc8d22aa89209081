//! The Shapes data set says what it draws: attributes read back from the pixels
//! (connected components by colour) must agree with the labels and the caption.

use std::collections::BTreeMap;

use dalle::data::shapes::{Colour, ShapeKind, Shapes, ShapesConfig, SizeKind, SHAPES_VOCAB};
use dalle::data::{load, DatasetName, Split};
use ndarray::Array3;

/// A 4-connected region of one exact colour.
#[derive(Debug, Clone)]
struct Component {
    colour: Colour,
    rows: (usize, usize),
    cols: (usize, usize),
    pixels: usize,
}

impl Component {
    fn height(&self) -> usize {
        self.rows.1 - self.rows.0 + 1
    }
    fn width(&self) -> usize {
        self.cols.1 - self.cols.0 + 1
    }
    /// Shape from the fill ratio of the bounding box: square 1.0, disc pi/4 = 0.785
    /// (0.81 at 8 px), triangle about 1/2 (0.625 at 8 px, rows of 2, 2, 4, 4, ...).
    fn shape(&self) -> ShapeKind {
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
    fn size(&self, canvas: usize) -> SizeKind {
        if 2 * self.width() < canvas / 4 + canvas / 2 - 2 {
            SizeKind::Small
        } else {
            SizeKind::Large
        }
    }
    fn words(&self, canvas: usize) -> String {
        format!("{} {} {}", self.size(canvas).name(), self.colour.name(), self.shape().name())
    }
}

fn pixel(image: &Array3<f32>, r: usize, c: usize) -> [f32; 3] {
    [image[[0, r, c]], image[[1, r, c]], image[[2, r, c]]]
}

fn components(image: &Array3<f32>) -> Vec<Component> {
    let (_, h, w) = image.dim();
    let mut seen = vec![false; h * w];
    let mut found = Vec::new();
    for r0 in 0..h {
        for c0 in 0..w {
            let rgb = pixel(image, r0, c0);
            if seen[r0 * w + c0] || rgb == [0.0; 3] {
                continue;
            }
            let colour = Colour::from_rgb(rgb).unwrap_or_else(|| panic!("pixel ({r0}, {c0}) has a colour {rgb:?} outside the palette"));
            let mut comp = Component { colour, rows: (r0, r0), cols: (c0, c0), pixels: 0 };
            let mut stack = vec![(r0, c0)];
            seen[r0 * w + c0] = true;
            while let Some((r, c)) = stack.pop() {
                comp.pixels += 1;
                comp.rows = (comp.rows.0.min(r), comp.rows.1.max(r));
                comp.cols = (comp.cols.0.min(c), comp.cols.1.max(c));
                let neighbours = [(r.wrapping_sub(1), c), (r + 1, c), (r, c.wrapping_sub(1)), (r, c + 1)];
                for (nr, nc) in neighbours {
                    if nr < h && nc < w && !seen[nr * w + nc] && pixel(image, nr, nc) == rgb {
                        seen[nr * w + nc] = true;
                        stack.push((nr, nc));
                    }
                }
            }
            found.push(comp);
        }
    }
    found
}

fn multiset<I: IntoIterator<Item = String>>(items: I) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in items {
        *m.entry(s).or_insert(0) += 1;
    }
    m
}

/// Checks one sample's pixels against its labels and its caption; returns the caption kind.
fn check_sample(shapes: &Shapes, index: u64) -> &'static str {
    let canvas = shapes.config().canvas;
    let sample = shapes.sample(index);
    let comps = components(&sample.image);
    let ctx = format!("sample {index}: {:?}", sample.caption);

    // Pixels vs labels: same number of objects, same attributes, same boxes.
    assert_eq!(comps.len(), sample.count(), "{ctx}: components {comps:?}");
    for c in &comps {
        assert_eq!(c.height(), c.width(), "{ctx}: bounding box of {c:?} is not square");
    }
    let mut by_position: Vec<_> = comps.iter().map(|c| (c.rows.0, c.cols.0, c.width(), c.words(canvas))).collect();
    let mut labelled: Vec<_> = sample.objects.iter().map(|o| (o.y, o.x, o.extent, o.phrase())).collect();
    by_position.sort();
    labelled.sort();
    assert_eq!(by_position, labelled, "{ctx}");

    // Pixels vs caption, parsed without the generator's help.
    let caption = sample.caption.as_str();
    let pixel_words = multiset(comps.iter().map(|c| c.words(canvas)));
    for (word, n) in [("two ", 2), ("three ", 3)] {
        if let Some(rest) = caption.strip_prefix(word) {
            let singular = rest.strip_suffix('s').expect("plural noun");
            assert_eq!(pixel_words, multiset(vec![singular.to_string(); n]), "{ctx}");
            return "identical";
        }
    }
    for rel in ["above", "below", "left of", "right of"] {
        if let Some((a, b)) = caption.split_once(&format!(" {rel} ")) {
            let (a, b) = (a.strip_prefix("a ").unwrap(), b.strip_prefix("a ").unwrap());
            assert_eq!(comps.len(), 2, "{ctx}");
            let holds = |p: &Component, q: &Component| match rel {
                "above" => p.rows.1 < q.rows.0,
                "below" => p.rows.0 > q.rows.1,
                "left of" => p.cols.1 < q.cols.0,
                _ => p.cols.0 > q.cols.1,
            };
            let ok = [(0, 1), (1, 0)].iter().any(|&(i, j)| {
                comps[i].words(canvas) == a && comps[j].words(canvas) == b && holds(&comps[i], &comps[j])
            });
            assert!(ok, "{ctx}: no pair of components makes the relation true: {comps:?}");
            return "relation";
        }
    }
    let phrases: Vec<String> = caption
        .split(", ")
        .flat_map(|p| p.split(" and "))
        .map(|p| p.strip_prefix("a ").unwrap_or_else(|| panic!("{ctx}: phrase {p:?} has no article")).to_string())
        .collect();
    assert_eq!(pixel_words, multiset(phrases), "{ctx}");
    if comps.len() == 1 { "single" } else { "list" }
}

#[test]
fn pixels_agree_with_labels_and_captions_on_32px() {
    let shapes = Shapes::new(ShapesConfig::default()).unwrap();
    let mut kinds = BTreeMap::new();
    for i in 0..400 {
        *kinds.entry(check_sample(&shapes, i)).or_insert(0) += 1;
    }
    // Every kind of caption was exercised, not just the easy ones.
    for kind in ["single", "identical", "relation", "list"] {
        assert!(kinds.get(kind).copied().unwrap_or(0) >= 20, "caption kind {kind} seen too rarely: {kinds:?}");
    }
}

#[test]
fn pixels_agree_with_labels_and_captions_on_64px() {
    let shapes = Shapes::new(ShapesConfig { canvas: 64, seed: 9, ..Default::default() }).unwrap();
    for i in 0..100 {
        check_sample(&shapes, i);
    }
}

#[test]
fn every_attribute_value_occurs() {
    let shapes = Shapes::new(ShapesConfig::default()).unwrap();
    let samples: Vec<_> = (0..300).map(|i| shapes.sample(i)).collect();
    let objects: Vec<_> = samples.iter().flat_map(|s| s.objects.clone()).collect();
    for k in ShapeKind::ALL {
        assert!(objects.iter().any(|o| o.shape == k), "{k:?} never drawn");
    }
    for c in Colour::ALL {
        assert!(objects.iter().any(|o| o.colour == c), "{c:?} never drawn");
    }
    for z in SizeKind::ALL {
        assert!(objects.iter().any(|o| o.size == z), "{z:?} never drawn");
    }
    for n in 1..=3 {
        assert!(samples.iter().any(|s| s.count() == n), "no image with {n} objects");
    }
    for rel in dalle::data::shapes::Relation::ALL {
        assert!(samples.iter().any(|s| s.relation == Some(rel)), "{rel:?} never used");
    }
}

#[test]
fn captions_use_only_the_small_vocabulary() {
    let shapes = Shapes::new(ShapesConfig::default()).unwrap();
    for s in shapes.iter().take(300) {
        for token in s.caption.replace(',', " , ").split_whitespace() {
            assert!(SHAPES_VOCAB.contains(&token), "{token:?} in {:?} is not in SHAPES_VOCAB", s.caption);
        }
    }
}

#[test]
fn samples_are_a_pure_function_of_seed_and_index() {
    let a = Shapes::new(ShapesConfig::default()).unwrap();
    let b = Shapes::new(ShapesConfig::default()).unwrap();
    let other = Shapes::new(ShapesConfig { seed: 1, ..Default::default() }).unwrap();
    for i in [0, 17, 12345] {
        let (x, y) = (a.sample(i), b.sample(i));
        assert_eq!(x.image, y.image);
        assert_eq!(x.caption, y.caption);
        assert_eq!(x.objects, y.objects);
    }
    let differ = (0..20).filter(|&i| a.sample(i).caption != other.sample(i).caption).count();
    assert!(differ >= 10, "seeds 0 and 1 give the same captions at {} of 20 indices", 20 - differ);
}

#[test]
fn dataset_matches_samples_and_load_gives_shapes() {
    let shapes = Shapes::new(ShapesConfig::default()).unwrap();
    let set = shapes.dataset(40).unwrap();
    assert_eq!(set.images.dim(), (40, 3, 32, 32));
    let captions = set.captions.as_ref().unwrap();
    for i in [0usize, 7, 39] {
        let s = shapes.sample(i as u64);
        assert_eq!(set.images.index_axis(ndarray::Axis(0), i), s.image);
        assert_eq!(captions[i], s.caption);
        assert_eq!(set.labels[i], s.objects[0].shape as usize);
        assert_eq!(set.classes[set.labels[i]], s.objects[0].shape.name());
    }
    let train = load(DatasetName::Shapes, std::path::Path::new("unused"), Split::Train, Some(5)).unwrap();
    let test = load(DatasetName::Shapes, std::path::Path::new("unused"), Split::Test, Some(5)).unwrap();
    assert_eq!(train.len(), 5);
    assert_ne!(train.captions, test.captions, "train and test splits must use different seeds");
}

#[test]
fn bad_settings_are_refused_with_the_value() {
    let err = Shapes::new(ShapesConfig { canvas: 16, ..Default::default() }).unwrap_err().to_string();
    assert!(err.contains("canvas = 16"), "{err}");
    let err = Shapes::new(ShapesConfig { max_objects: 4, ..Default::default() }).unwrap_err().to_string();
    assert!(err.contains("max_objects = 4"), "{err}");
}
