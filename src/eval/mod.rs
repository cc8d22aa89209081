//! Measuring models: the digit judge for prompt fidelity, and metrics.

pub mod judge;

pub use judge::{argmax_rows, DigitJudge};
