//! Spherical linear interpolation (Shoemake 1985), unCLIP's path between embeddings (§3.1, §3.2).
//!
//! CLIP embeddings live on the unit sphere; a straight line between two of them cuts
//! through the inside. slerp walks the great circle instead, at constant angular speed:
//!
//! ```text
//! θ = arccos(a · b),   slerp(a, b, t) = sin((1 - t) θ)/sin θ · a + sin(t θ)/sin θ · b
//! ```

use ndarray::{Array1, ArrayView1};

use crate::{Error, Result};

// ANCHOR: slerp
/// `slerp(a, b, t)` of the unit vectors along `a` and `b` (both are normalised first):
/// `a` at `t = 0`, `b` at `t = 1`, unit length throughout, the angle to `a` growing as `t θ`.
/// Nearly parallel inputs (`sin θ < 1e-6`) fall back to the normalised straight line.
/// Errors: widths that differ, or a zero vector (it has no direction).
pub fn slerp(a: ArrayView1<f32>, b: ArrayView1<f32>, t: f32) -> Result<Array1<f32>> {
    if a.len() != b.len() {
        return Err(Error::shape("slerp", format!("embeddings of widths {} and {} differ", a.len(), b.len())));
    }
    let unit = |v: ArrayView1<f32>, name: &str| -> Result<Array1<f64>> {
        let v = v.mapv(f64::from);
        let norm = v.dot(&v).sqrt();
        if norm < 1e-12 || !norm.is_finite() {
            return Err(Error::Config(format!("slerp: `{name}` has norm {norm}: a direction is needed")));
        }
        Ok(v / norm)
    };
    let (a, b) = (unit(a, "a")?, unit(b, "b")?);
    let t = f64::from(t);
    let theta = a.dot(&b).clamp(-1.0, 1.0).acos(); // θ = arccos(a · b)
    let out = if theta.sin() < 1e-6 {
        let v = &a * (1.0 - t) + &b * t;
        let norm = v.dot(&v).sqrt().max(1e-12);
        v / norm
    } else {
        &a * (((1.0 - t) * theta).sin() / theta.sin()) + &b * ((t * theta).sin() / theta.sin()) // sin((1-t)θ)/sin θ a + sin(tθ)/sin θ b
    };
    Ok(out.mapv(|v| v as f32))
}
// ANCHOR_END: slerp

/// `n ≥ 2` points from `a` to `b` at `t = 0, 1/(n-1), ..., 1`.
pub fn slerp_path(a: ArrayView1<f32>, b: ArrayView1<f32>, n: usize) -> Result<Vec<Array1<f32>>> {
    if n < 2 {
        return Err(Error::Config(format!("slerp_path: {n} points; at least 2 (the two ends)")));
    }
    (0..n).map(|i| slerp(a, b, i as f32 / (n - 1) as f32)).collect()
}
