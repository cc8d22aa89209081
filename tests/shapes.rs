//! The Shapes data set says what it draws: attributes read back from the pixels
//! (connected components by colour) must agree with the labels and the caption.

use std::collections::BTreeMap;

use dalle::data::shapes::{Colour, ShapeKind, Shapes, ShapesConfig, SizeKind, SHAPES_VOCAB};
use dalle::data::{load, DatasetName, Split};
use dalle::eval::shapes::{components, judge, parse_caption, CaptionContent};

/// Checks one sample's pixels against its labels and, through the Shapes judge
/// (src/eval/shapes.rs), against its caption; returns the caption kind.
fn check_sample(shapes: &Shapes, index: u64) -> &'static str {
    let canvas = shapes.config().canvas;
    let sample = shapes.sample(index);
    let ctx = format!("sample {index}: {:?}", sample.caption);
    // The generator draws exact palette colours on black, nothing else.
    for px in sample.image.view().into_shape_with_order((3, canvas * canvas)).unwrap().columns() {
        let rgb = [px[0], px[1], px[2]];
        assert!(rgb == [0.0; 3] || Colour::from_rgb(rgb).is_some(), "{ctx}: colour {rgb:?} outside the palette");
    }
    let comps = components(&sample.image, 1);

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

    // Pixels vs caption: the judge reads the caption without the generator's help.
    let verdict = judge(&sample.image, &sample.caption, 1).unwrap();
    assert!(verdict.all(), "{ctx}: {verdict:?} for {comps:?}");
    match parse_caption(&sample.caption).unwrap() {
        CaptionContent::Identical { .. } => "identical",
        CaptionContent::Relation { .. } => {
            assert_eq!(verdict.relation, Some(true));
            "relation"
        }
        CaptionContent::Objects(p) if p.len() == 1 => "single",
        CaptionContent::Objects(_) => "list",
    }
}

/// The judge says no when the picture and the caption disagree.
#[test]
fn the_judge_rejects_wrong_captions() {
    let shapes = Shapes::new(ShapesConfig::default()).unwrap();
    let (mut relations, mut singles) = (0, 0);
    for i in 0..200 {
        let s = shapes.sample(i);
        match parse_caption(&s.caption).unwrap() {
            CaptionContent::Relation { first, relation, second } if first != second => {
                // The same two objects the other way round cannot hold (objects that
                // read the same would satisfy it by swapping them, so they are skipped).
                let swapped = format!("a {second} {} a {first}", relation.phrase());
                let v = judge(&s.image, &swapped, 1).unwrap();
                assert_eq!(v.relation, Some(false), "{:?} judged as {swapped:?}: {v:?}", s.caption);
                assert!(v.colours && v.shapes && v.count);
                relations += 1;
            }
            CaptionContent::Objects(p) if p.len() == 1 => {
                let o = s.objects[0];
                let other_colour = Colour::ALL[(o.colour as usize + 1) % 6];
                let other_shape = ShapeKind::ALL[(o.shape as usize + 1) % 3];
                let v = judge(&s.image, &format!("a {} {} {}", o.size.name(), other_colour.name(), o.shape.name()), 1).unwrap();
                assert!(!v.colours && v.shapes && v.count && !v.all(), "{v:?}");
                let v = judge(&s.image, &format!("a {} {} {}", o.size.name(), o.colour.name(), other_shape.name()), 1).unwrap();
                assert!(v.colours && !v.shapes && !v.all(), "{v:?}");
                let v = judge(&s.image, &format!("two {}s", o.phrase()), 1).unwrap();
                assert!(!v.count && !v.all(), "{v:?}");
                singles += 1;
            }
            _ => {}
        }
    }
    assert!(relations >= 20 && singles >= 20, "{relations} relation and {singles} single-object captions");
    // A dimmed copy on a grey background (as a decoder might draw it) reads the same.
    let s = shapes.sample(3);
    let noisy = s.image.mapv(|v| 0.2 + 0.6 * v);
    assert!(judge(&noisy, &s.caption, 4).unwrap().all());
    assert!(parse_caption("a small red").is_ok_and(|c| c.phrases() == ["small red"]));
    assert!(parse_caption("two small red circle").is_err());
    assert!(parse_caption("small red circle").unwrap_err().to_string().contains("no article"));
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
