//! What every training example shares: the command line, progress, metrics, cell headings.

pub mod args;
pub mod budget;
pub mod guard;
pub mod metrics;
pub mod notebook;
pub mod progress;
pub mod resume;

pub use args::{non_negative_finite_f32, non_negative_finite_f64, positive_finite_f64, positive_usize, CommonArgs, DeviceArg};
pub use budget::{load_average, TimeBudget};
pub use guard::check_finite;
pub use metrics::{read_metrics, series, MetricRecord, MetricsLog};
pub use notebook::{cell, wrote};
pub use progress::Progress;
pub use resume::{resume_from, save_or_stop, save_run, Resumed, RunState};
