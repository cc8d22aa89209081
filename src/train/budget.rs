//! A wall-clock budget for a training loop, so a full run stays within minutes
//! whatever the machine: the examples' `--time-limit` seconds.

use super::{MetricsLog, Progress};
use crate::Result;
use std::time::Instant;

/// Started when created; `limit_secs = 0` means no limit.
pub struct TimeBudget {
    start: Instant,
    limit_secs: u64,
}

impl TimeBudget {
    /// A budget of `limit_secs` seconds from now (0: unlimited).
    pub fn new(limit_secs: u64) -> Self {
        TimeBudget { start: Instant::now(), limit_secs }
    }

    /// Whether the budget is spent after `step`; when it is, says so through `progress`.
    pub fn spent(&self, step: usize, progress: &Progress) -> bool {
        let spent = self.limit_secs > 0 && self.start.elapsed().as_secs() >= self.limit_secs;
        if spent {
            progress.println(&format!("time limit of {} s reached at step {step}", self.limit_secs));
        }
        spent
    }

    /// The end of one training step: `values` go to the metrics log and the progress
    /// line; true when the budget is spent and the loop should stop.
    pub fn record_step(&self, step: usize, values: &[(&str, f64)], log: &mut MetricsLog, progress: &Progress) -> Result<bool> {
        log.log(step, values)?;
        let shown: Vec<(&str, f32)> = values.iter().map(|&(name, v)| (name, v as f32)).collect();
        progress.update(step, &shown);
        Ok(self.spent(step, progress))
    }

    /// Seconds since the budget started.
    pub fn elapsed_secs(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}

/// `/proc/loadavg`'s first three fields (1, 5 and 15 minutes), for timing lines: a
/// steps-per-second figure means little without the load it was measured under.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_else(|_| "unknown".into())
}
