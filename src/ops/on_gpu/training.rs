//! The training step's GPU pieces outside the graph: the Adam step, gradient clipping's
//! norm and scaling, and the vector quantizer's code search and per-code sums.

use super::{attempt, value};
use crate::backend::wgpu::array_ops::{self as k, AdamHyper};
use crate::backend::wgpu::pointwise::{self, Unary};
use crate::backend::wgpu::{layout, GpuArray};
use crate::tensor::{DeviceValue, Tensor};
use crate::Result;

/// One Adam step on the GPU for a parameter whose gradient is there: `θ`, `m` and `v`
/// are updated in place. Returns `None` (the CPU step runs) when the parameter or its
/// gradient is not on the GPU, or the GPU failed.
pub(crate) fn adam_step(p: &Tensor, moments: &mut Option<(DeviceValue, DeviceValue)>, hyper: &AdamHyper) -> Option<()> {
    if !p.is_on_device() {
        return None;
    }
    let Some(crate::tensor::Value::Device(g)) = p.grad_value() else { return None };
    attempt(|| {
        let pd = p.to_device()?;
        if moments.is_none() {
            let zeros = || k::fill(pd.len(), 0.0).map(|a| value(a, pd.shape()));
            *moments = Some((zeros()?, zeros()?));
        }
        let (m, v) = moments.as_ref().expect("just set");
        k::adam_step(pd.array(), g.array(), m.array(), v.array(), hyper)?;
        p.device_changed();
        Ok(())
    })
}

/// `Σ_i ‖g_i‖²` of gradients on the GPU, summed there; one value read back.
pub(crate) fn squared_norm(grads: &[&DeviceValue]) -> Result<f64> {
    let mut total: Option<GpuArray> = None;
    for g in grads {
        let s = k::sum_all(&pointwise::unary(Unary::Square, g.array())?)?; // ‖g‖²
        total = Some(match total {
            Some(t) => k::add(&t, &s)?,
            None => s,
        });
    }
    Ok(total.map(|t| t.to_vec()).transpose()?.map_or(0.0, |v| v[0] as f64))
}

/// `c g` for a gradient on the GPU, as a gradient value.
pub(crate) fn scaled(g: &DeviceValue, c: f32) -> Result<crate::tensor::Value> {
    Ok(crate::tensor::Value::Device(value(k::scale(g.array(), c)?, g.shape())))
}

/// The nearest code of each row of `z (N, D)` among the rows of `codebook (K, D)`,
/// searched on the GPU when `z` is there: only the N indices come back.
pub(crate) fn nearest_codes(z: &Tensor, codebook: &Tensor) -> Option<Vec<usize>> {
    let (sz, se) = (z.shape(), codebook.shape());
    if !z.is_on_device() || sz.len() != 2 || se.len() != 2 || sz[1] != se[1] {
        return None;
    }
    attempt(|| {
        let (zd, ed) = (z.to_device()?, codebook.to_device()?);
        let e_sq: Vec<f32> = codebook.data().rows().into_iter().map(|r| r.dot(&r)).collect(); // ‖e_k‖², as the CPU search
        let e_sq = GpuArray::upload(&e_sq)?;
        let found = crate::backend::wgpu::codes::nearest_codes(zd.array(), ed.array(), &e_sq, sz[0], se[0], sz[1])?;
        Ok(found.to_vec()?.into_iter().map(|k| k as usize).collect())
    })
}

/// `Σ_{i : k*_i = k} z_i` for each of `codes` codes, `(K, D)`: summed on the GPU when
/// `z (N, D)` is there (only the sums come back).
pub(crate) fn code_sums(z: &Tensor, indices: &[usize], codes: usize) -> Option<ndarray::ArrayD<f32>> {
    let s = z.shape();
    if !z.is_on_device() || s.len() != 2 || indices.len() != s[0] {
        return None;
    }
    attempt(|| {
        let zd = z.to_device()?;
        let index = GpuArray::upload(&indices.iter().map(|&i| i as f32).collect::<Vec<f32>>())?;
        let sums = layout::scatter_rows(zd.array(), &index, s[0], s[1], codes)?;
        value(sums, &[codes, s[1]]).to_host()
    })
}
