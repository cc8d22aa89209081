//! The CPU tier: which instruction set the kernels are compiled for, chosen
//! once, at the first kernel call.
//!
//! Rust builds for a baseline CPU (SSE2 on x86-64, NEON on aarch64) unless
//! told otherwise. The kernels that matter are compiled a second and third
//! time inside `#[target_feature]` functions, and [`tier()`] says which copy
//! runs:
//!
//! | tier | x86-64 features | vector | fused multiply-add |
//! |---|---|---|---|
//! | [`Tier::Avx512`] | AVX-512F/VL/BW/DQ, AVX2, FMA | 16 floats | yes |
//! | [`Tier::Avx2Fma`] | AVX2, FMA | 8 floats | yes |
//! | [`Tier::Portable`] | the build's baseline (SSE2; NEON on aarch64) | 4 floats | only where the baseline has it (aarch64) |
//!
//! The environment variable `DALLE_CPU=avx512|avx2|portable` forces a tier,
//! so that one machine can measure and test the lower ones. A tier this CPU
//! cannot run is refused with a warning on stderr and the best one it can run
//! is used instead: running AVX-512 code on a CPU without it would stop the
//! program with an illegal instruction.

use std::sync::OnceLock;

/// An instruction-set tier of the CPU kernels (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    /// The build's baseline: SSE2 on x86-64, NEON on aarch64.
    Portable,
    /// AVX2 with FMA (x86-64: Intel since Haswell, AMD since Zen).
    Avx2Fma,
    /// AVX-512 (x86-64: Intel Skylake-SP and later servers, AMD Zen 4 and later).
    Avx512,
}

/// Whether the portable build itself has a fused multiply-add instruction:
/// always on aarch64, and on x86-64 only when compiled with `-C target-feature=+fma`
/// (or a `target-cpu` that has it).
pub const PORTABLE_HAS_FMA: bool = cfg!(any(target_arch = "aarch64", target_feature = "fma"));

impl Tier {
    /// The name `DALLE_CPU` takes for this tier.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Avx512 => "avx512",
            Tier::Avx2Fma => "avx2",
            Tier::Portable => "portable",
        }
    }

    /// The tier `DALLE_CPU` names (`avx512`, `avx2` or `portable`), if any.
    pub fn parse(name: &str) -> Option<Tier> {
        match name.trim().to_ascii_lowercase().as_str() {
            "avx512" => Some(Tier::Avx512),
            "avx2" => Some(Tier::Avx2Fma),
            "portable" => Some(Tier::Portable),
            _ => None,
        }
    }

    /// Whether code of this tier may use fused multiply-adds (`f32::mul_add`
    /// as one instruction rather than a call to the software `fmaf`).
    pub fn fused(self) -> bool {
        self != Tier::Portable || PORTABLE_HAS_FMA
    }

    /// Every tier this CPU can run, highest first.
    pub fn supported() -> Vec<Tier> {
        let best = detected();
        [Tier::Avx512, Tier::Avx2Fma, Tier::Portable].into_iter().filter(|&t| t <= best).collect()
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The highest tier this CPU runs.
pub fn detected() -> Tier {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let avx2 = has!("avx2") && has!("fma");
        if avx2 && has!("avx512f") && has!("avx512vl") && has!("avx512bw") && has!("avx512dq") {
            return Tier::Avx512;
        }
        if avx2 {
            return Tier::Avx2Fma;
        }
    }
    Tier::Portable
}

/// The tier for a `DALLE_CPU` value (`None`: unset) on a CPU whose best tier
/// is `best`, and a warning to print when the value was not followed.
fn choose(requested: Option<&str>, best: Tier) -> (Tier, Option<String>) {
    let Some(name) = requested.filter(|s| !s.trim().is_empty()) else {
        return (best, None);
    };
    match Tier::parse(name) {
        Some(t) if t <= best => (t, None),
        Some(t) => (best, Some(format!("DALLE_CPU={name}: this CPU cannot run the {t} tier; using {best}"))),
        None => (best, Some(format!("DALLE_CPU={name}: expected avx512, avx2 or portable; using {best}"))),
    }
}

/// The tier every kernel uses in this process: `DALLE_CPU` when set (and
/// runnable here), else the highest the CPU supports. Decided at the first
/// call and fixed from then on, so one run never mixes tiers.
pub fn tier() -> Tier {
    static TIER: OnceLock<Tier> = OnceLock::new();
    *TIER.get_or_init(|| {
        let requested = std::env::var("DALLE_CPU").ok();
        let (tier, warning) = choose(requested.as_deref(), detected());
        if let Some(w) = warning {
            eprintln!("warning: {w}");
        }
        tier
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The override may lower the tier, never raise it above what the CPU runs.
    #[test]
    fn override_only_lowers() {
        assert_eq!(choose(None, Tier::Avx2Fma), (Tier::Avx2Fma, None));
        assert_eq!(choose(Some("portable"), Tier::Avx2Fma), (Tier::Portable, None));
        assert_eq!(choose(Some("AVX2"), Tier::Avx512), (Tier::Avx2Fma, None));
        let (t, w) = choose(Some("avx512"), Tier::Avx2Fma);
        assert_eq!(t, Tier::Avx2Fma);
        assert!(w.expect("a warning").contains("cannot run the avx512 tier"));
        let (t, w) = choose(Some("sse9"), Tier::Portable);
        assert_eq!(t, Tier::Portable);
        assert!(w.expect("a warning").contains("expected avx512, avx2 or portable"));
    }
}
