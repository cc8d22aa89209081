//! The flags every example takes, as one clap struct to flatten into its own.
//!
//! ```no_run
//! use clap::Parser;
//! use dalle::train::CommonArgs;
//!
//! /// Train a VQ-VAE on MNIST.
//! #[derive(Parser)]
//! struct Args {
//!     #[command(flatten)]
//!     common: CommonArgs,
//!     /// Codebook size.
//!     #[arg(long, default_value_t = 64)]
//!     codes: usize,
//! }
//!
//! let args = Args::parse();
//! let steps = args.common.steps_or(2000, 20);
//! ```

use std::path::PathBuf;

use crate::data::download::{allow_downloads, DataCache};
use crate::data::{resolve_data_dir, DatasetName};
use crate::{Error, Result};

/// Where tensors are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceArg {
    /// The CPU kernels (always available).
    Cpu,
    /// The wgpu compute kernels (a GPU through Vulkan, Metal or DX12).
    Wgpu,
    /// wgpu when an adapter is found, else the CPU.
    Auto,
}

/// Flags shared by every example; `#[command(flatten)]` it into the example's own `Args`.
///
/// Steps, batch size and learning rate are `Option`s: each example has its own
/// defaults, given to [`CommonArgs::steps_or`] and friends.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct CommonArgs {
    /// Run a tiny version (few steps, a small slice of the data) to check that everything works end to end.
    #[arg(long)]
    pub smoke: bool,
    /// Number of optimisation steps (default: the example's own, smaller with --smoke).
    #[arg(long, value_parser = positive_usize)]
    pub steps: Option<usize>,
    /// Images per training step (default: the example's own).
    #[arg(long, value_parser = positive_usize)]
    pub batch_size: Option<usize>,
    /// Learning rate (default: the example's own).
    #[arg(long, value_parser = positive_finite_f64)]
    pub lr: Option<f64>,
    /// Seed for initialisation, shuffling and sampling: the same seed gives the same run.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Data set to train on (default: the example's own).
    #[arg(long, value_enum)]
    pub dataset: Option<DatasetName>,
    /// Folder holding mnist/, fashion-mnist/, cifar10-jpeg/ ... [default: ../shared/data if present, else ./data]
    #[arg(long, env = "DALLE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Never download a data set that is missing from the data folder and the cache (also DALLE_NO_DOWNLOAD=1).
    #[arg(long, env = "DALLE_NO_DOWNLOAD", value_parser = clap::builder::FalseyValueParser::new())]
    pub no_download: bool,
    /// Folder for this run's artefacts (PNGs, metrics.jsonl, checkpoints) [default: runs/EXAMPLE_NAME]
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Compute device.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// Resume training from this checkpoint (weights, optimiser state and step).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Start from these model weights (a .safetensors file) instead of a random initialisation.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Stop after this step as if interrupted, saving a resumable checkpoint
    /// (continue with --resume OUT/checkpoint.safetensors and the same flags).
    #[arg(long, value_parser = positive_usize)]
    pub stop_at: Option<usize>,
}

impl CommonArgs {
    /// `--steps` if given, else `smoke` under `--smoke`, else `full`.
    pub fn steps_or(&self, full: usize, smoke: usize) -> usize {
        self.steps.unwrap_or(if self.smoke { smoke } else { full })
    }

    /// `--batch-size` if given, else `smoke` under `--smoke`, else `full`.
    pub fn batch_size_or(&self, full: usize, smoke: usize) -> usize {
        self.batch_size.unwrap_or(if self.smoke { smoke } else { full })
    }

    /// Whether the loop should stop after `done` of its `steps` steps because of
    /// `--stop-at` (saving a resumable checkpoint first).
    pub fn stops_after(&self, done: usize, steps: usize) -> bool {
        self.stop_at == Some(done) && done < steps
    }

    /// `--lr` if given, else `default`.
    pub fn lr_or(&self, default: f64) -> f64 {
        self.lr.unwrap_or(default)
    }

    /// `--dataset` if given, else `default`.
    pub fn dataset_or(&self, default: DatasetName) -> DatasetName {
        self.dataset.unwrap_or(default)
    }

    /// How many images to load: `Some(smoke)` under `--smoke`, else all (`None`).
    pub fn limit_or(&self, smoke: usize) -> Option<usize> {
        self.smoke.then_some(smoke)
    }

    /// The data directory (see [`resolve_data_dir`]).
    pub fn data_dir(&self) -> PathBuf {
        resolve_data_dir(self.data_dir.clone())
    }

    /// `--out` if given, else `runs/<example>`.
    pub fn out_dir(&self, example: &str) -> PathBuf {
        self.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(example))
    }

    /// [`CommonArgs::out_dir`], created if missing.
    pub fn create_out_dir(&self, example: &str) -> Result<PathBuf> {
        let dir = self.out_dir(example);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        // Temporary files of a save that a crash interrupted are never renamed: remove them.
        crate::io::remove_stale_temps(&dir)?;
        Ok(dir)
    }

    /// Make `--device` take effect for the heavy kernels: `wgpu` errors when no
    /// adapter exists, `auto` falls back to the CPU with a message. Returns a
    /// description of the device for the example's first line.
    pub fn apply_device(&self) -> Result<String> {
        use crate::backend::{select_auto, set_device, Device};
        match self.device {
            DeviceArg::Cpu => set_device(Device::Cpu)?,
            DeviceArg::Wgpu => set_device(Device::Wgpu)?,
            DeviceArg::Auto => select_auto(),
        };
        Ok(crate::backend::describe())
    }

    /// Refuse `--resume` / `--weights` when this example does not implement
    /// them, rather than silently ignoring a flag the user asked for; refuse
    /// both at once (`--weights` skips training, `--resume` continues it).
    pub fn refuse_unsupported(&self, example: &str, resume: bool, weights: bool) -> Result<()> {
        if self.resume.is_some() && self.weights.is_some() {
            return Err(Error::Config(
                "--resume and --weights together: --resume continues training from a checkpoint, --weights only samples or evaluates; pick one".into(),
            ));
        }
        if !resume && self.resume.is_some() {
            return Err(Error::Config(format!("{example} does not support --resume yet")));
        }
        if !weights && self.weights.is_some() {
            return Err(Error::Config(format!("{example} does not support --weights yet")));
        }
        Ok(())
    }

    /// The data cache this run's loaders use: [`DataCache::from_env`], downloads off under `--no-download`.
    pub fn data_cache(&self) -> DataCache {
        let mut cache = DataCache::from_env();
        cache.download &= !self.no_download;
        cache
    }

    /// The first lines of every example: refuse the flags it does not
    /// implement, make `--no-download` hold for every loader, apply `--device`
    /// (printing which), and create the output folder `--out` or
    /// `runs/<example>`, which is returned.
    pub fn start(&self, example: &str, resume: bool, weights: bool) -> Result<PathBuf> {
        self.refuse_unsupported(example, resume, weights)?;
        allow_downloads(!self.no_download);
        println!("device: {}", self.apply_device()?);
        self.create_out_dir(example)
    }
}

/// A clap value parser for sizes and counts that must be at least 1
/// (`--batch-size 0` would ask for empty batches): `#[arg(value_parser = positive_usize)]`.
pub fn positive_usize(text: &str) -> std::result::Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a whole number ({e})")),
    }
}

/// A clap value parser for rates and scales that must be finite and above zero
/// (`--lr NaN`, `--lr -1` and `--lr inf` train nothing but noise).
pub fn positive_finite_f64(text: &str) -> std::result::Result<f64, String> {
    let v: f64 = text.parse().map_err(|e| format!("not a number ({e})"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("must be a finite number above 0, got {v}"));
    }
    Ok(v)
}

/// A clap value parser for values that must be finite and at least 0 (a weight
/// decay, a loss weight, a temperature of 0 meaning greedy...).
pub fn non_negative_finite_f64(text: &str) -> std::result::Result<f64, String> {
    let v: f64 = text.parse().map_err(|e| format!("not a number ({e})"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("must be a finite number of at least 0, got {v}"));
    }
    Ok(v)
}

/// [`non_negative_finite_f64`] for an `f32` flag.
pub fn non_negative_finite_f32(text: &str) -> std::result::Result<f32, String> {
    non_negative_finite_f64(text).map(|v| v as f32)
}
