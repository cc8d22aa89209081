//! The shipped digit judge (`weights/digit_judge.safetensors`, trained by
//! `cargo run --release --example 00_autograd`) keeps its measured quality:
//! at least 99% accuracy on the full MNIST test set (10,000 images).

use dalle::data::{self, DatasetName, Split};
use dalle::eval::DigitJudge;

#[test]
fn shipped_judge_reaches_99_percent_on_mnist_test() {
    let judge = DigitJudge::pretrained().expect("weights/digit_judge.safetensors loads");
    let test = data::load(DatasetName::Mnist, &data::resolve_data_dir(None), Split::Test, None).expect("MNIST test set");
    assert_eq!(test.len(), 10_000);
    let pred = judge.predict(&test.images).unwrap();
    let correct = pred.iter().zip(&test.labels).filter(|(p, l)| p == l).count();
    let accuracy = correct as f64 / test.len() as f64;
    println!("digit judge test accuracy: {:.2}%", 100.0 * accuracy);
    assert!(accuracy >= 0.99, "accuracy {accuracy}");
    // Fidelity is the same measure seen from the generator's side.
    let fidelity = judge.fidelity(&test.images, &test.labels).unwrap();
    assert!((fidelity as f64 - accuracy).abs() < 1e-6, "fidelity {fidelity} vs accuracy {accuracy}"); // f32 vs f64
}

#[test]
fn judge_rejects_wrong_image_sizes() {
    let judge = DigitJudge::new(&mut dalle::Rng::new(0));
    let err = judge.forward(&dalle::Tensor::zeros(&[2, 3, 32, 32])).unwrap_err().to_string();
    assert!(err.contains("(N, 1, 28, 28)") && err.contains("[2, 3, 32, 32]"), "{err}");
}
