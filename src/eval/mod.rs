//! Measuring models: the digit judge for prompt fidelity, and metrics.

pub mod frechet;
pub mod judge;

pub use frechet::{frechet_distance, FeatureStats};
pub use judge::{argmax_rows, DigitJudge};
