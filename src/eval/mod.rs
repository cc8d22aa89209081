//! Measuring models: the digit judge for prompt fidelity, the Shapes judge, and metrics.

pub mod diversity;
pub mod frechet;
pub mod judge;
pub mod shapes;
pub mod shapes_fidelity;

pub use diversity::mean_pairwise_distance;
pub use frechet::{frechet_distance, FeatureStats};
pub use judge::{argmax_rows, DigitJudge};
pub use shapes_fidelity::ShapesFidelity;
