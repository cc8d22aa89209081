//! One vector of floats of each CPU tier, for the [direct](super::direct)
//! convolution's register tiles: AVX-512 (16 floats), AVX2 (8), portable (4,
//! a plain array that the baseline compiles to SSE2 or NEON).
//!
//! The kernels hold their sums in small arrays of these. As plain `[f32; 8]`
//! arrays the AVX2 copy came out as 2-float loads and 4-float multiply-adds
//! with the sums spilled to the stack (five times slower than the AVX-512
//! copy); the intrinsics leave the compiler nothing to guess.
//!
//! The methods are `#[inline(always)]` and meant to be inlined into a
//! function compiled for their tier ([`crate::ops::kernels::simd_as`]): the
//! caller guarantees that the CPU has the features.

use crate::ops::kernels::MulAdd;
use std::marker::PhantomData;

/// A vector of [`Lanes::L`] floats.
pub trait Lanes: Copy {
    /// Floats per vector.
    const L: usize;
    /// All zeros.
    fn zero() -> Self;
    /// `v` in every lane.
    fn splat(v: f32) -> Self;
    /// `s[at..at + L]`.
    fn load(s: &[f32], at: usize) -> Self;
    /// `a · b + c`, lane by lane (fused on the FMA tiers).
    fn mul_add(a: Self, b: Self, c: Self) -> Self;
    /// `d[..L] = self`.
    fn store(self, d: &mut [f32]);
    /// `Σ_l self[l]`, halves added pairwise (a fixed order).
    fn sum(self) -> f32 {
        let mut v = [0.0f32; 16];
        self.store(&mut v);
        let mut n = Self::L;
        while n > 1 {
            n /= 2;
            for l in 0..n {
                v[l] += v[l + n];
            }
        }
        v[0]
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{Avx2x8, Avx512x16};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Lanes;
    use std::arch::x86_64::*;

    /// 16 floats in a `zmm` register (AVX-512F).
    #[derive(Clone, Copy)]
    pub struct Avx512x16(__m512);

    /// 8 floats in a `ymm` register (AVX2 and FMA).
    #[derive(Clone, Copy)]
    pub struct Avx2x8(__m256);

    // SAFETY (every block below): the slices are checked to hold L floats, and the
    // methods run only inside code compiled for the tier, on a CPU that has it.
    impl Lanes for Avx512x16 {
        const L: usize = 16;
        #[inline(always)]
        fn zero() -> Self {
            Avx512x16(unsafe { _mm512_setzero_ps() })
        }
        #[inline(always)]
        fn splat(v: f32) -> Self {
            Avx512x16(unsafe { _mm512_set1_ps(v) })
        }
        #[inline(always)]
        fn load(s: &[f32], at: usize) -> Self {
            Avx512x16(unsafe { _mm512_loadu_ps(s[at..at + 16].as_ptr()) })
        }
        #[inline(always)]
        fn mul_add(a: Self, b: Self, c: Self) -> Self {
            Avx512x16(unsafe { _mm512_fmadd_ps(a.0, b.0, c.0) })
        }
        #[inline(always)]
        fn store(self, d: &mut [f32]) {
            unsafe { _mm512_storeu_ps(d[..16].as_mut_ptr(), self.0) }
        }
    }

    impl Lanes for Avx2x8 {
        const L: usize = 8;
        #[inline(always)]
        fn zero() -> Self {
            Avx2x8(unsafe { _mm256_setzero_ps() })
        }
        #[inline(always)]
        fn splat(v: f32) -> Self {
            Avx2x8(unsafe { _mm256_set1_ps(v) })
        }
        #[inline(always)]
        fn load(s: &[f32], at: usize) -> Self {
            Avx2x8(unsafe { _mm256_loadu_ps(s[at..at + 8].as_ptr()) })
        }
        #[inline(always)]
        fn mul_add(a: Self, b: Self, c: Self) -> Self {
            Avx2x8(unsafe { _mm256_fmadd_ps(a.0, b.0, c.0) })
        }
        #[inline(always)]
        fn store(self, d: &mut [f32]) {
            unsafe { _mm256_storeu_ps(d[..8].as_mut_ptr(), self.0) }
        }
    }
}

/// 4 floats as a plain array, with the multiply-add `M` (the portable tier).
pub struct Portable4<M>([f32; 4], PhantomData<M>);

impl<M> Clone for Portable4<M> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<M> Copy for Portable4<M> {}

impl<M: MulAdd> Lanes for Portable4<M> {
    const L: usize = 4;
    #[inline(always)]
    fn zero() -> Self {
        Portable4([0.0; 4], PhantomData)
    }
    #[inline(always)]
    fn splat(v: f32) -> Self {
        Portable4([v; 4], PhantomData)
    }
    #[inline(always)]
    fn load(s: &[f32], at: usize) -> Self {
        Portable4(s[at..at + 4].try_into().expect("4 floats"), PhantomData)
    }
    #[inline(always)]
    fn mul_add(a: Self, b: Self, c: Self) -> Self {
        Portable4(std::array::from_fn(|l| M::mul_add(a.0[l], b.0[l], c.0[l])), PhantomData)
    }
    #[inline(always)]
    fn store(self, d: &mut [f32]) {
        d[..4].copy_from_slice(&self.0);
    }
}
