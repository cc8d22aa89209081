//! Seeded randomness: the same seed gives the same numbers on every run.

use super::Tensor;
use ndarray::{ArrayD, IxDyn};
use ndarray_rand::rand::{Rng as _, SeedableRng};
use rand_chacha::ChaCha12Rng;
use ndarray_rand::rand_distr::{StandardNormal, Uniform};
use ndarray_rand::RandomExt;

/// A seeded random number generator: ChaCha12, the algorithm behind `rand`'s
/// `StdRng` (the same stream for the same seed), held directly so that its
/// position can be saved in a checkpoint and restored ([`Rng::state`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Rng {
    inner: ChaCha12Rng,
}

impl Rng {
    /// A generator whose stream is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Rng { inner: ChaCha12Rng::seed_from_u64(seed) }
    }

    /// The underlying `rand` generator, for other distributions.
    pub fn inner(&mut self) -> &mut ChaCha12Rng {
        &mut self.inner
    }

    /// The generator's whole state as text, `"<64 hex digits of key>:<stream>:<word position>"`,
    /// for a checkpoint's metadata: [`Rng::from_state`] continues the stream exactly where it was.
    pub fn state(&self) -> String {
        let key: String = self.inner.get_seed().iter().map(|b| format!("{b:02x}")).collect();
        format!("{key}:{}:{}", self.inner.get_stream(), self.inner.get_word_pos())
    }

    /// The generator saved by [`Rng::state`]; an error names what is malformed.
    pub fn from_state(text: &str) -> crate::Result<Rng> {
        let bad = |what: &str| crate::Error::Checkpoint(format!("random generator state {}: {what}", crate::error::quote(text)));
        let mut parts = text.split(':');
        let (Some(key), Some(stream), Some(pos), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected `key:stream:position`"));
        };
        if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("the key is not 64 hex digits"));
        }
        let mut seed = [0u8; 32];
        for (i, byte) in seed.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&key[2 * i..2 * i + 2], 16).map_err(|_| bad("the key is not hex"))?;
        }
        let stream: u64 = stream.parse().map_err(|_| bad("the stream is not an integer"))?;
        let pos: u128 = pos.parse().map_err(|_| bad("the word position is not an integer"))?;
        let mut inner = ChaCha12Rng::from_seed(seed);
        inner.set_stream(stream);
        inner.set_word_pos(pos);
        Ok(Rng { inner })
    }

    /// A fresh generator seeded from this one (e.g. one per data-loader worker).
    pub fn fork(&mut self) -> Rng {
        Rng::new(self.inner.random())
    }

    /// A uniform float in `[0, 1)`.
    pub fn uniform(&mut self) -> f32 {
        self.inner.random::<f32>()
    }

    /// A uniform integer in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        self.inner.random_range(0..n)
    }

    /// `N(0, 1)` samples of `shape`.
    pub fn normal_array(&mut self, shape: &[usize]) -> ArrayD<f32> {
        ArrayD::random_using(IxDyn(shape), StandardNormal, &mut self.inner)
    }

    /// `U(lo, hi)` samples of `shape`.
    pub fn uniform_array(&mut self, shape: &[usize], lo: f32, hi: f32) -> ArrayD<f32> {
        if lo >= hi {
            return ArrayD::from_elem(IxDyn(shape), lo);
        }
        ArrayD::random_using(IxDyn(shape), Uniform::new(lo, hi).expect("lo < hi"), &mut self.inner)
    }

    /// Gumbel(0, 1) noise `g = -ln(-ln u)`, `u ~ U(0, 1)`: `argmax(logits + g)` samples the softmax.
    pub fn gumbel_array(&mut self, shape: &[usize]) -> ArrayD<f32> {
        // Keep u away from 0 and 1 so both logarithms stay finite. The draws are
        // serial (one stream); the two logarithms per value run in parallel chunks.
        crate::ops::kernels::map(&self.uniform_array(shape, 0.0, 1.0), |u| -(-(u.clamp(1e-10, 1.0 - 1e-7)).ln()).ln())
    }
}

impl Tensor {
    /// A constant tensor of `N(0, 1)` samples. PyTorch: `torch.randn(shape, generator=g)`.
    pub fn randn(shape: &[usize], rng: &mut Rng) -> Tensor {
        Tensor::new(rng.normal_array(shape))
    }

    /// A constant tensor of `U(0, 1)` samples. PyTorch: `torch.rand`.
    pub fn rand(shape: &[usize], rng: &mut Rng) -> Tensor {
        Tensor::new(rng.uniform_array(shape, 0.0, 1.0))
    }

    /// A constant tensor of Gumbel(0, 1) noise.
    pub fn gumbel(shape: &[usize], rng: &mut Rng) -> Tensor {
        Tensor::new(rng.gumbel_array(shape))
    }

    /// Inverted dropout: zero each element with probability `p` and scale the
    /// rest by `1/(1-p)`, so the expectation is unchanged; the identity when
    /// `training` is false or `p = 0`. Backward: the same mask and scale.
    /// PyTorch: `F.dropout(x, p, training)`.
    pub fn dropout(&self, p: f32, training: bool, rng: &mut Rng) -> crate::Result<Tensor> {
        if !(0.0..1.0).contains(&p) {
            return Err(crate::Error::Config(format!("dropout probability {p} must be in [0, 1)")));
        }
        if !training || p == 0.0 {
            return Ok(self.clone());
        }
        let keep = rng.uniform_array(&self.shape(), 0.0, 1.0).mapv(|u| if u >= p { 1.0 / (1.0 - p) } else { 0.0 });
        self.mul(&Tensor::new(keep))
    }
}
