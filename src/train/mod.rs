//! What every training example shares: the command line, progress, metrics, cell headings.

pub mod args;
pub mod budget;
pub mod metrics;
pub mod notebook;
pub mod progress;

pub use args::{CommonArgs, DeviceArg};
pub use budget::TimeBudget;
pub use metrics::{read_metrics, series, MetricRecord, MetricsLog};
pub use notebook::{cell, wrote};
pub use progress::Progress;
