//! A folder of generated samples: `samples.npy`, `prompts.txt`, `labels.txt`.
//!
//! Every generating example writes its images the same way, so evaluation
//! (the digit judge, CLIP score) can read any of them:
//! `samples.npy` is `(N, C, H, W)` float32 in `[0, 1]`; `prompts.txt` has line
//! `i` = the prompt of image `i`; `labels.txt` (optional) line `i` = its class.

use std::path::Path;

use ndarray::{Array4, ArrayRef4, Ix4};

use super::atomic::write_atomic;
use super::npy::{read_npy, write_npy};
use crate::{Error, Result};

/// What [`read_samples`] returns.
#[derive(Debug, Clone)]
pub struct SamplesFolder {
    /// `(N, C, H, W)` in `[0, 1]`.
    pub images: Array4<f32>,
    /// One prompt per image.
    pub prompts: Vec<String>,
    /// One class per image, when `labels.txt` exists.
    pub labels: Option<Vec<usize>>,
}

/// Writes `images` (clamped to `[0, 1]`), `prompts` (newlines inside a prompt
/// become spaces) and optional `labels` into folder `dir`.
/// Non-finite pixels are an error: they mean the model diverged.
pub fn write_samples(dir: impl AsRef<Path>, images: &ArrayRef4<f32>, prompts: &[String], labels: Option<&[usize]>) -> Result<()> {
    let dir = dir.as_ref();
    let n = images.dim().0;
    if prompts.len() != n || labels.is_some_and(|l| l.len() != n) {
        return Err(Error::shape(
            "write_samples",
            format!("{n} images, {} prompts, {} labels: expected one each", prompts.len(), labels.map_or(n, <[usize]>::len)),
        ));
    }
    let bad = images.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        return Err(Error::Msg(format!("write_samples to {}: {bad} pixels are NaN or infinite", dir.display())));
    }
    write_npy(dir.join("samples.npy"), &images.mapv(|v| v.clamp(0.0, 1.0)))?;
    let lines: String = prompts.iter().map(|p| format!("{}\n", p.replace(['\n', '\r'], " "))).collect();
    write_atomic(dir.join("prompts.txt"), lines.as_bytes())?;
    if let Some(labels) = labels {
        let lines: String = labels.iter().map(|l| format!("{l}\n")).collect();
        write_atomic(dir.join("labels.txt"), lines.as_bytes())?;
    }
    Ok(())
}

/// Reads a folder written by [`write_samples`], checking that the counts agree.
pub fn read_samples(dir: impl AsRef<Path>) -> Result<SamplesFolder> {
    let dir = dir.as_ref();
    let npy = dir.join("samples.npy");
    let images = read_npy(&npy)?
        .into_dimensionality::<Ix4>()
        .map_err(|_| Error::format(&npy, "expected 4 dimensions (N, C, H, W)"))?;
    let n = images.dim().0;
    let read_lines = |name: &str| -> Result<Vec<String>> {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() != n {
            return Err(Error::format(&path, format!("has {} lines, expected {n} (one per image in samples.npy)", lines.len())));
        }
        Ok(lines)
    };
    let prompts = read_lines("prompts.txt")?;
    let labels = if dir.join("labels.txt").is_file() {
        let path = dir.join("labels.txt");
        let parsed = read_lines("labels.txt")?
            .iter()
            .enumerate()
            .map(|(i, l)| l.trim().parse().map_err(|_| Error::format(&path, format!("line {}: `{l}` is not a class index", i + 1))))
            .collect::<Result<Vec<usize>>>()?;
        Some(parsed)
    } else {
        None
    };
    Ok(SamplesFolder { images, prompts, labels })
}
