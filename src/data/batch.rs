//! Seeded shuffling and mini-batches.
//!
//! Training here counts steps, not epochs, so the main tool is an endless
//! [`BatchSampler`]: it walks a random permutation of `0..n` in batches and
//! draws a fresh permutation for each epoch. Epoch `e` of seed `s` is always the
//! same permutation ([`epoch_permutation`]), so a run is reproducible.

use ndarray::{Array4, ArrayRef4, Axis};
use ndarray_rand::rand::rngs::StdRng;
use ndarray_rand::rand::seq::SliceRandom;
use ndarray_rand::rand::SeedableRng;

/// The permutation of `0..n` used in `epoch` by a sampler seeded with `seed`.
pub fn epoch_permutation(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    // A different stream per epoch: mix the epoch into the seed (SplitMix64's constant).
    let mut rng = StdRng::seed_from_u64(seed ^ epoch.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    order
}

/// The batches of one pass over `0..n`: shuffled with `(seed, epoch)` when `seed`
/// is `Some`, in order otherwise; the last, shorter batch is dropped when `drop_last`.
pub fn epoch_batches(n: usize, batch_size: usize, seed: Option<u64>, epoch: u64, drop_last: bool) -> Vec<Vec<usize>> {
    assert!(batch_size > 0, "epoch_batches: batch_size must be > 0");
    let order = match seed {
        Some(s) => epoch_permutation(n, s, epoch),
        None => (0..n).collect(),
    };
    order
        .chunks(batch_size)
        .filter(|c| !drop_last || c.len() == batch_size)
        .map(<[usize]>::to_vec)
        .collect()
}

/// An endless source of shuffled index batches over `0..n`.
///
/// Every batch is full (`batch_size` indices, distinct within a batch when
/// `batch_size <= n`); an epoch's leftover indices that do not fill a batch are
/// skipped, and the next epoch starts on a fresh permutation.
#[derive(Debug, Clone)]
pub struct BatchSampler {
    n: usize,
    batch_size: usize,
    seed: u64,
    epoch: u64,
    order: Vec<usize>,
    cursor: usize,
}

impl BatchSampler {
    /// A sampler over `0..n` in batches of `batch_size` (clamped to `n`, so a
    /// smoke run on 10 images with batch 64 still works), seeded by `seed`.
    ///
    /// # Panics
    /// When `n == 0` or `batch_size == 0`: there is nothing to sample.
    pub fn new(n: usize, batch_size: usize, seed: u64) -> Self {
        assert!(n > 0 && batch_size > 0, "BatchSampler: need n > 0 and batch_size > 0, got n = {n}, batch_size = {batch_size}");
        BatchSampler { n, batch_size: batch_size.min(n), seed, epoch: 0, order: epoch_permutation(n, seed, 0), cursor: 0 }
    }

    /// [`BatchSampler::new`] that returns an error instead of panicking on an
    /// empty data set or a zero batch size.
    pub fn try_new(n: usize, batch_size: usize, seed: u64) -> crate::Result<Self> {
        if n == 0 {
            return Err(crate::Error::Config("cannot sample batches from a data set of 0 items".into()));
        }
        if batch_size == 0 {
            return Err(crate::Error::Config("batch size 0: a batch needs at least one item".into()));
        }
        Ok(BatchSampler::new(n, batch_size, seed))
    }

    /// Where the sampler stands, `"<epoch>:<cursor>"`, for a checkpoint's metadata
    /// ([`crate::train::resume`]); [`BatchSampler::restore`] goes back there in O(1).
    pub fn state(&self) -> String {
        format!("{}:{}", self.epoch, self.cursor)
    }

    /// Moves to the position saved by [`BatchSampler::state`] (of a sampler with the
    /// same `n`, batch size and seed); an error names what is malformed.
    pub fn restore(&mut self, text: &str) -> crate::Result<()> {
        let bad = |what: &str| crate::Error::Checkpoint(format!("sampler state {}: {what}", crate::error::quote(text)));
        let (epoch, cursor) = text.split_once(':').ok_or_else(|| bad("expected `epoch:cursor`"))?;
        let epoch: u64 = epoch.parse().map_err(|_| bad("the epoch is not a whole number"))?;
        let cursor: usize = cursor.parse().map_err(|_| bad("the cursor is not a whole number"))?;
        if cursor > self.n || cursor % self.batch_size != 0 {
            return Err(bad(&format!("cursor {cursor} is not a batch boundary of {} items in batches of {}", self.n, self.batch_size)));
        }
        self.epoch = epoch;
        self.order = epoch_permutation(self.n, self.seed, epoch);
        self.cursor = cursor;
        Ok(())
    }

    /// The batch size in use (the requested one, clamped to `n`).
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The epoch the next batch comes from (0-based).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The next batch of indices.
    pub fn next_batch(&mut self) -> Vec<usize> {
        if self.cursor + self.batch_size > self.n {
            self.epoch += 1;
            self.order = epoch_permutation(self.n, self.seed, self.epoch);
            self.cursor = 0;
        }
        let batch = self.order[self.cursor..self.cursor + self.batch_size].to_vec();
        self.cursor += self.batch_size;
        batch
    }
}

impl Iterator for BatchSampler {
    type Item = Vec<usize>;
    fn next(&mut self) -> Option<Vec<usize>> {
        Some(self.next_batch())
    }
}

/// The images at `indices`: `(N, C, H, W)` -> `(B, C, H, W)`.
pub fn gather_images(images: &ArrayRef4<f32>, indices: &[usize]) -> Array4<f32> {
    images.select(Axis(0), indices)
}

/// The labels at `indices`.
pub fn gather_labels(labels: &[usize], indices: &[usize]) -> Vec<usize> {
    indices.iter().map(|&i| labels[i]).collect()
}
