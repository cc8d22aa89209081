//! Training progress: a live bar in a terminal, plain lines in logs and CI.
//!
//! In a terminal an indicatif bar shows the step, the latest metrics, it/s and
//! the ETA. When standard error is not a terminal, or `CI` is set (`true`/`1`),
//! the bar is hidden and a plain line is printed every `print_every` steps
//! instead, so logs stay readable:
//!
//! ```text
//! step   200/2000  loss 0.1234  12.5 it/s  eta 2m24s
//! ```

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Progress of a training loop of `total` steps.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    total: usize,
    print_every: usize,
    start: Instant,
}

/// Whether a live bar makes sense: standard error is a terminal and `CI` is not set.
pub fn is_interactive() -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    !ci && std::io::stderr().is_terminal()
}

impl Progress {
    /// A bar if [`is_interactive`], else plain lines about 20 times per run.
    pub fn new(label: &str, total: usize) -> Self {
        let print_every = (total / 20).max(1);
        if is_interactive() {
            let bar = ProgressBar::new(total as u64);
            let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} {per_sec} eta {eta}")
                .expect("the template is valid")
                .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(label.to_string());
            Progress { bar: Some(bar), total, print_every, start: Instant::now() }
        } else {
            Progress::plain(total, print_every)
        }
    }

    /// Always plain lines, one every `print_every` steps (and at the last step).
    pub fn plain(total: usize, print_every: usize) -> Self {
        Progress { bar: None, total, print_every: print_every.max(1), start: Instant::now() }
    }

    /// Records that `step` steps (1-based) are done, with the latest metrics,
    /// e.g. `progress.update(step, &[("loss", loss)])`.
    pub fn update(&self, step: usize, values: &[(&str, f32)]) {
        let metrics = format_metrics(values);
        match &self.bar {
            Some(bar) => {
                bar.set_position(step as u64);
                bar.set_message(metrics);
            }
            None if step.is_multiple_of(self.print_every) || step == self.total => println!("{}", self.status_line(step, &metrics)),
            None => {}
        }
    }

    /// Prints a line above the bar (or plainly) without breaking it.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => println!("{line}"),
        }
    }

    /// Closes the bar, leaving its last state on screen.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }

    /// Time since the progress was created.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// `step   200/2000  loss 0.1234  12.5 it/s  eta 2m24s`.
    pub fn status_line(&self, step: usize, metrics: &str) -> String {
        let secs = self.start.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { step as f64 / secs } else { 0.0 };
        let eta = if rate > 0.0 { self.total.saturating_sub(step) as f64 / rate } else { 0.0 };
        let width = self.total.to_string().len();
        format!("step {step:>width$}/{}  {metrics}  {rate:.1} it/s  eta {}", self.total, format_duration(eta))
    }
}

/// `loss 0.1234  acc 0.9000` (small values in scientific notation).
pub fn format_metrics(values: &[(&str, f32)]) -> String {
    values
        .iter()
        .map(|(name, v)| if *v != 0.0 && v.abs() < 1e-3 { format!("{name} {v:.3e}") } else { format!("{name} {v:.4}") })
        .collect::<Vec<_>>()
        .join("  ")
}

/// `2m24s`, `1h05m`, `42s`.
pub fn format_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}
