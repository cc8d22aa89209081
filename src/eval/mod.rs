//! Measuring models: the digit judge for prompt fidelity, the Shapes judge, and metrics.

pub mod judge;
pub mod shapes;

pub use judge::{argmax_rows, DigitJudge};
