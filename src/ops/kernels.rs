//! The small elementwise loops shared by the ops: map one array, or two
//! broadcast arrays, in parallel when the array is large enough to pay off.

use ndarray::{ArrayD, IxDyn, Zip};

/// Arrays smaller than this are mapped on one thread: rayon's overhead would dominate.
pub const PARALLEL_MIN_LEN: usize = 1 << 15;

/// `out[i] = f(x[i])`.
pub fn map(x: &ArrayD<f32>, f: impl Fn(f32) -> f32 + Sync + Send) -> ArrayD<f32> {
    if x.len() < PARALLEL_MIN_LEN {
        return x.mapv(f);
    }
    let mut out = ArrayD::<f32>::zeros(x.raw_dim());
    Zip::from(&mut out).and(x).par_for_each(|o, &v| *o = f(v));
    out
}

/// `out[i] = f(x[i], y[i])` for two arrays of the same shape.
pub fn map2(x: &ArrayD<f32>, y: &ArrayD<f32>, f: impl Fn(f32, f32) -> f32 + Sync + Send) -> ArrayD<f32> {
    let mut out = ArrayD::<f32>::zeros(x.raw_dim());
    if x.len() < PARALLEL_MIN_LEN {
        Zip::from(&mut out).and(x).and(y).for_each(|o, &a, &b| *o = f(a, b));
    } else {
        Zip::from(&mut out).and(x).and(y).par_for_each(|o, &a, &b| *o = f(a, b));
    }
    out
}

/// `out[i] = f(x[i], y[i], z[i])` for three arrays of the same shape.
pub fn map3(x: &ArrayD<f32>, y: &ArrayD<f32>, z: &ArrayD<f32>, f: impl Fn(f32, f32, f32) -> f32 + Sync + Send) -> ArrayD<f32> {
    let mut out = ArrayD::<f32>::zeros(x.raw_dim());
    if x.len() < PARALLEL_MIN_LEN {
        Zip::from(&mut out).and(x).and(y).and(z).for_each(|o, &a, &b, &c| *o = f(a, b, c));
    } else {
        Zip::from(&mut out).and(x).and(y).and(z).par_for_each(|o, &a, &b, &c| *o = f(a, b, c));
    }
    out
}

/// `out = f(a, b)` with `a` and `b` broadcast to `shape`.
pub fn broadcast_map2(a: &ArrayD<f32>, b: &ArrayD<f32>, shape: &[usize], f: impl Fn(f32, f32) -> f32 + Sync + Send) -> ArrayD<f32> {
    let dim = IxDyn(shape);
    let av = a.broadcast(dim.clone()).expect("shapes were checked to broadcast");
    let bv = b.broadcast(dim.clone()).expect("shapes were checked to broadcast");
    let mut out = ArrayD::<f32>::zeros(dim);
    if out.len() < PARALLEL_MIN_LEN {
        Zip::from(&mut out).and(&av).and(&bv).for_each(|o, &x, &y| *o = f(x, y));
    } else {
        Zip::from(&mut out).and(&av).and(&bv).par_for_each(|o, &x, &y| *o = f(x, y));
    }
    out
}

/// `f(g, a, b)` with all three broadcast to the shape of `g` (the output gradient).
pub fn broadcast_map3(g: &ArrayD<f32>, a: &ArrayD<f32>, b: &ArrayD<f32>, f: impl Fn(f32, f32, f32) -> f32 + Sync + Send) -> ArrayD<f32> {
    let dim = g.raw_dim();
    let av = a.broadcast(dim.clone()).expect("shapes were checked to broadcast");
    let bv = b.broadcast(dim.clone()).expect("shapes were checked to broadcast");
    let mut out = ArrayD::<f32>::zeros(dim);
    if out.len() < PARALLEL_MIN_LEN {
        Zip::from(&mut out).and(g).and(&av).and(&bv).for_each(|o, &g, &x, &y| *o = f(g, x, y));
    } else {
        Zip::from(&mut out).and(g).and(&av).and(&bv).par_for_each(|o, &g, &x, &y| *o = f(g, x, y));
    }
    out
}

/// The error function, erf(x), to about 3e-7 absolute: the erfc series of
/// Numerical Recipes' `erfcc` (fractional error below 1.2e-7), evaluated in
/// f32. (Abramowitz & Stegun 7.1.26, at 1.5e-7 before rounding, loses more to
/// cancellation near 0.) GELU's error is then at most |x|/2 · 3e-7, far inside
/// the golden tests' 1e-5; f32 keeps `exp` in single precision, which halves
/// the time GELU takes in a transformer block.
pub fn erf(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_2
        + t * (1.000_023_7
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07 + t * (-1.135_204 + t * (1.488_515_9 + t * (-0.822_152_2 + t * 0.170_872_77))))))));
    let r = 1.0 - t * exp(poly);
    if x >= 0.0 { r } else { -r }
}

/// `eˣ` in f32 from arithmetic alone (no libm call), so that loops calling it
/// vectorise: Cephes' `expf`. With `n = round(x / ln 2)` and `r = x - n ln 2`
/// (|r| <= ln2 / 2), `eˣ = 2ⁿ · eʳ`, where `eʳ` is a degree-7 polynomial and
/// `2ⁿ` is written straight into the exponent bits. Relative error about
/// 2e-7 (2 ulp); 0 below -87.3 (where libm gives a denormal or 0) and
/// e^88.38 ≈ 2.4e38 above 88.38 (libm: up to 3.4e38, then inf); NaN stays NaN.
/// Softmax and GELU only ever pass arguments <= 0 (softmax) or < 1 (erf).
#[inline]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4; // ln 2 split in two, so that n·LN2_HI is exact
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2²³: adding it rounds to an integer
    let xc = x.clamp(-87.336_55, 88.376_26); // keeps n within -126..=127, a normal 2ⁿ
    let n = (xc * LOG2E + ROUND) - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = (((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1) * r + 5.000_000_1e-1) * r * r + r + 1.0;
    let two_n = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < -87.336_55 { 0.0 } else { p * two_n }
}
