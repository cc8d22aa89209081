//! A run's metrics as JSON lines: `metrics.jsonl`, one object per logged step.
//!
//! ```text
//! {"step":100,"loss":0.2311,"lr":0.001}
//! {"step":200,"loss":0.1873,"lr":0.001}
//! ```
//!
//! Lines are appended and flushed as training goes, so a crashed run keeps its
//! curve; [`read_metrics`] loads it back for plots ([`series`]).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::io::plot::Series;
use crate::{Error, Result};

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRecord {
    /// The training step.
    pub step: usize,
    /// Named values at that step (NaN where the log holds `null`).
    pub values: BTreeMap<String, f64>,
}

/// An open `metrics.jsonl`, appended to one line per [`MetricsLog::log`].
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    writer: BufWriter<File>,
}

impl MetricsLog {
    /// Creates `path` (truncating an old log), or appends to it when `append`
    /// (resuming a run). Parent folders are created.
    pub fn open(path: impl AsRef<Path>, append: bool) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(MetricsLog { path, writer: BufWriter::new(file) })
    }

    /// Continues the log at `path` for a resumed run whose next logged step is
    /// `next_step`: lines with a step at or after it (logged after the checkpoint
    /// by the run that stopped) and a torn last line are dropped, so no step
    /// appears twice. A missing log starts empty.
    pub fn resume(path: impl AsRef<Path>, next_step: usize) -> Result<Self> {
        let path = path.as_ref();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::io(path, e)),
        };
        let kept: String = text
            .lines()
            .filter(|line| {
                let step = serde_json::from_str::<serde_json::Value>(line).ok().and_then(|v| v.get("step").and_then(|s| s.as_u64()));
                step.is_some_and(|s| (s as usize) < next_step)
            })
            .map(|line| format!("{line}\n"))
            .collect();
        crate::io::write_atomic(path, kept.as_bytes())?;
        MetricsLog::open(path, true)
    }

    /// `dir/metrics.jsonl` for a run that logs steps from 1: created afresh, or,
    /// when the run resumed after step `resumed` ([`crate::train::resume`]),
    /// continued after it ([`MetricsLog::resume`] from `resumed + 1`).
    pub fn create_or_resume(dir: impl AsRef<Path>, resumed: Option<usize>) -> Result<Self> {
        match resumed {
            Some(step) => MetricsLog::resume(dir.as_ref().join("metrics.jsonl"), step + 1),
            None => MetricsLog::create_in(dir),
        }
    }

    /// `dir/metrics.jsonl`, created afresh.
    pub fn create_in(dir: impl AsRef<Path>) -> Result<Self> {
        MetricsLog::open(dir.as_ref().join("metrics.jsonl"), false)
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `{"step": step, name: value, ...}` and flushes it to the file.
    /// Non-finite values are written as `null` (JSON has no NaN).
    pub fn log(&mut self, step: usize, values: &[(&str, f64)]) -> Result<()> {
        let mut object = serde_json::Map::new();
        object.insert("step".into(), step.into());
        for (name, v) in values {
            let json = serde_json::Number::from_f64(*v).map_or(serde_json::Value::Null, serde_json::Value::Number);
            object.insert((*name).to_string(), json);
        }
        let line = serde_json::Value::Object(object).to_string();
        writeln!(self.writer, "{line}").and_then(|_| self.writer.flush()).map_err(|e| Error::io(&self.path, e))
    }
}

/// Reads a `metrics.jsonl` back; errors name the line that is not a metrics object.
pub fn read_metrics(path: impl AsRef<Path>) -> Result<Vec<MetricRecord>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |what: &str| Error::format(path, format!("line {}: {what}", i + 1));
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(&format!("not JSON ({e})")))?;
        let object = value.as_object().ok_or_else(|| bad("not a JSON object"))?;
        let step = object.get("step").and_then(|s| s.as_u64()).ok_or_else(|| bad("no integer \"step\""))? as usize;
        let values = object
            .iter()
            .filter(|(k, _)| k.as_str() != "step")
            .map(|(k, v)| match v {
                serde_json::Value::Null => Ok((k.clone(), f64::NAN)),
                v => v.as_f64().map(|x| (k.clone(), x)).ok_or_else(|| bad(&format!("\"{k}\" is not a number"))),
            })
            .collect::<Result<BTreeMap<_, _>>>()?;
        records.push(MetricRecord { step, values });
    }
    Ok(records)
}

/// The `(step, value)` points of metric `name`, for [`crate::io::plot_lines`].
pub fn series(records: &[MetricRecord], name: &str) -> Series {
    Series::new(name, records.iter().filter_map(|r| r.values.get(name).map(|&v| (r.step as f64, v))).collect())
}
