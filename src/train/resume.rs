//! Exact resume: a run stopped at step k and resumed gives, bit for bit, the
//! losses of a run that never stopped (on the same machine).
//!
//! That needs more than the weights. A resumable checkpoint ([`save_run`]) holds
//! the model's parameters, the optimiser's state (`optim.` tensors), the EMA's
//! averages where there is one (`ema.` tensors), and in its metadata the step
//! and the exact position of every random stream the loop draws from: each
//! [`Rng`] (initialisation, augmentation, noise, captions...) by
//! [`Rng::state`], each [`BatchSampler`] (the data order) by
//! [`BatchSampler::state`]. Restoring a position is O(1): no replaying of
//! `step` batches.
//!
//! ```no_run
//! # use dalle::{Result, Rng};
//! # use dalle::data::batch::BatchSampler;
//! # use dalle::nn::Module;
//! # use dalle::optim::Adam;
//! # use dalle::train::resume::{save_run, Resumed, RunState};
//! # fn run(model: &dyn Module, opt: &mut Adam, rng: &mut Rng, sampler: &mut BatchSampler,
//! #        resume: Option<&std::path::Path>, steps: usize, out: &std::path::Path) -> Result<()> {
//! let mut start = 0;
//! if let Some(path) = resume {
//!     let r = Resumed::load(path, model, opt, steps)?; // weights, Adam, step (<= steps)
//!     r.restore_rng("augment", rng)?;
//!     r.restore_sampler("train", sampler)?;
//!     start = r.step;
//! }
//! for step in start..steps {
//!     // ... draw from sampler and rng, train ...
//! }
//! let state = RunState::new(steps).rng("augment", rng).sampler("train", sampler);
//! save_run(&out.join("checkpoint.safetensors"), model, opt, &state)?;
//! # Ok(()) }
//! ```
//!
//! The metrics log continues with [`crate::train::MetricsLog::resume`] (lines
//! at or after the resumed step are dropped, so no step appears twice), and
//! stale temporary files of a crashed save are removed by
//! [`crate::io::remove_stale_temps`] (which [`crate::train::CommonArgs::start`] calls).

use std::collections::HashMap;
use std::path::Path;

use crate::data::batch::BatchSampler;
use crate::io::checkpoint::{self, Checkpoint};
use crate::nn::Module;
use crate::optim::{Ema, Optimizer};
use crate::train::CommonArgs;
use crate::{Error, Result, Rng};

/// The metadata key of the step a checkpoint was saved at.
pub const STEP_KEY: &str = "step";

/// What a resumable checkpoint holds besides the model and the optimiser.
pub struct RunState<'a> {
    /// Steps done: the resumed loop starts at this step.
    pub step: usize,
    rngs: Vec<(&'a str, &'a Rng)>,
    samplers: Vec<(&'a str, &'a BatchSampler)>,
    values: Vec<(&'a str, String)>,
    ema: Option<&'a Ema>,
}

impl<'a> RunState<'a> {
    /// The state after `step` steps, with no generator yet.
    pub fn new(step: usize) -> Self {
        RunState { step, rngs: Vec::new(), samplers: Vec::new(), values: Vec::new(), ema: None }
    }

    /// Save generator `rng` under `name` (restore it with [`Resumed::restore_rng`]).
    pub fn rng(mut self, name: &'a str, rng: &'a Rng) -> Self {
        self.rngs.push((name, rng));
        self
    }

    /// Save the position of sampler `sampler` under `name`.
    pub fn sampler(mut self, name: &'a str, sampler: &'a BatchSampler) -> Self {
        self.samplers.push((name, sampler));
        self
    }

    /// Save any other state as text under `name` (a module's hidden counters and
    /// generator, e.g. [`crate::nn::quantize::VectorQuantizer::restart_state`]); read it back with [`Resumed::value`].
    pub fn value(mut self, name: &'a str, text: String) -> Self {
        self.values.push((name, text));
        self
    }

    /// Save an EMA's averages (as `ema.<param>` tensors).
    pub fn ema(mut self, ema: &'a Ema) -> Self {
        self.ema = Some(ema);
        self
    }

    fn metadata(&self) -> HashMap<String, String> {
        let mut meta = HashMap::from([(STEP_KEY.to_string(), self.step.to_string())]);
        meta.extend(self.rngs.iter().map(|(n, r)| (format!("rng.{n}"), r.state())));
        meta.extend(self.samplers.iter().map(|(n, s)| (format!("sampler.{n}"), s.state())));
        meta.extend(self.values.iter().map(|(n, v)| (format!("state.{n}"), v.clone())));
        meta
    }
}

/// Writes a resumable checkpoint (atomically): `model`'s parameters, `optimizer`'s
/// state, and `state`. Refuses non-finite parameters, as [`checkpoint::save`] does.
pub fn save_run(path: &Path, model: &dyn Module, optimizer: &dyn Optimizer, state: &RunState) -> Result<()> {
    let extra = state.ema.map_or_else(Vec::new, |e| e.shadow().iter().map(|(n, t)| (format!("ema.{n}"), t.to_array())).collect());
    checkpoint::save_with(path, model, Some(optimizer), &extra, &state.metadata())
}

/// A resumable checkpoint read back, its weights and optimiser state already restored.
pub struct Resumed {
    /// The checkpoint, for anything else it holds.
    pub checkpoint: Checkpoint,
    /// Steps done when it was saved: the loop continues from here.
    pub step: usize,
}

impl Resumed {
    /// Loads `path` into `model` and `optimizer` and reads its step, which must
    /// not exceed `total_steps` (the run's `--steps`).
    pub fn load(path: &Path, model: &dyn Module, optimizer: &mut dyn Optimizer, total_steps: usize) -> Result<Resumed> {
        let checkpoint = checkpoint::load(path)?;
        let step = checkpoint.step()?;
        if step > total_steps {
            return Err(Error::Config(format!(
                "{} was saved at step {step}, beyond this run's {total_steps} steps: pass --steps {step} or more",
                path.display()
            )));
        }
        checkpoint.load_into(model, &["optim.", "ema."])?;
        checkpoint.load_optimizer(optimizer)?;
        Ok(Resumed { checkpoint, step })
    }

    fn meta(&self, key: &str) -> Result<&str> {
        self.checkpoint.metadata.get(key).map(String::as_str).ok_or_else(|| {
            Error::Checkpoint(format!(
                "{}: no `{key}` in the metadata (not a resumable checkpoint of this example?)",
                self.checkpoint.path.display()
            ))
        })
    }

    /// Puts `rng` where the generator saved as `name` stood.
    pub fn restore_rng(&self, name: &str, rng: &mut Rng) -> Result<()> {
        *rng = Rng::from_state(self.meta(&format!("rng.{name}"))?)
            .map_err(|e| Error::Checkpoint(format!("{}: `rng.{name}`: {}", self.checkpoint.path.display(), e.message())))?;
        Ok(())
    }

    /// Puts `sampler` where the sampler saved as `name` stood.
    pub fn restore_sampler(&self, name: &str, sampler: &mut BatchSampler) -> Result<()> {
        sampler
            .restore(self.meta(&format!("sampler.{name}"))?)
            .map_err(|e| Error::Checkpoint(format!("{}: `sampler.{name}`: {}", self.checkpoint.path.display(), e.message())))
    }

    /// The text saved with [`RunState::value`] under `name`.
    pub fn value(&self, name: &str) -> Result<&str> {
        self.meta(&format!("state.{name}"))
    }

    /// Copies the saved `ema.` averages into `ema`.
    pub fn restore_ema(&self, ema: &Ema) -> Result<()> {
        for (name, shadow) in ema.shadow() {
            let saved = self.checkpoint.get(&format!("ema.{name}"))?;
            shadow.assign(saved.clone())?;
        }
        Ok(())
    }
}

/// How often a training loop saves its resumable checkpoint, in steps (and at its last step).
pub const CHECKPOINT_EVERY: usize = 500;

/// The end of training step `done` (1-based) of `steps`: saves a resumable
/// checkpoint to `path` every [`CHECKPOINT_EVERY`] steps, at the last step and
/// at `--stop-at`; returns `true` when the loop must stop there (`--stop-at`),
/// having said how to continue.
pub fn save_or_stop(
    common: &CommonArgs,
    path: &Path,
    steps: usize,
    model: &dyn Module,
    optimizer: &dyn Optimizer,
    state: &RunState,
) -> Result<bool> {
    let done = state.step;
    let stop = common.stops_after(done, steps);
    if done.is_multiple_of(CHECKPOINT_EVERY) || done == steps || stop {
        save_run(path, model, optimizer, state)?;
    }
    if stop {
        println!("stopped after step {done}; continue with --resume {} (and the same flags)", path.display());
    }
    Ok(stop)
}

/// `--resume`, if given: [`Resumed::load`] into `model` and `optimizer`.
pub fn resume_from(common: &CommonArgs, model: &dyn Module, optimizer: &mut dyn Optimizer, steps: usize) -> Result<Option<Resumed>> {
    let Some(path) = &common.resume else { return Ok(None) };
    let resumed = Resumed::load(path, model, optimizer, steps)?;
    println!("resumed {} at step {}", path.display(), resumed.step);
    Ok(Some(resumed))
}
