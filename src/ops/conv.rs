//! Convolution and pooling on NCHW images.
//!
//! `conv2d`: `y[n, o, i, j] = b[o] + Σ_{c,u,v} w[o, c, u, v] · x_pad[n, c, i·s + u, j·s + v]`
//! (cross-correlation, as PyTorch). The loops live in the backend (a GEMM over image patches);
//! here is the bookkeeping and the bias, whose gradient is `Σ_{n,i,j} dy`.

use crate::backend::cpu::pool::{self, PoolGeom};
use crate::backend::{self, ConvGeom};
use crate::ops::kernels::{standard_layout, uninit_vec};
use crate::tensor::Tensor;
use crate::Result;
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

impl Tensor {
    /// 2-D convolution: `x (N, C, H, W)`, `weight (OC, C, KH, KW)`, optional
    /// `bias (OC)` -> `(N, OC, OH, OW)` with `OH = (H + 2p - KH)/s + 1`.
    /// PyTorch: `F.conv2d(x, weight, bias, stride, padding)`.
    pub fn conv2d(&self, weight: &Tensor, bias: Option<&Tensor>, stride: usize, padding: usize) -> Result<Tensor> {
        let (xs, ws) = (self.shape(), weight.shape());
        let err = |why: &str| crate::Error::shape("conv2d", format!("input {xs:?}, weight {ws:?}, stride {stride}, padding {padding}: {why}"));
        if xs.len() != 4 || ws.len() != 4 {
            return Err(err("expected a 4-D input (N, C, H, W) and a 4-D weight (OC, C, KH, KW)"));
        }
        if xs[1] != ws[1] {
            return Err(err(&format!("input has {} channels, weight expects {}", xs[1], ws[1])));
        }
        if stride == 0 || xs[2] + 2 * padding < ws[2] || xs[3] + 2 * padding < ws[3] {
            return Err(err("kernel larger than the padded input, or stride 0"));
        }
        if let Some(b) = bias {
            if b.shape() != [ws[0]] {
                return Err(err(&format!("bias has shape {:?}, expected [{}]", b.shape(), ws[0])));
            }
        }
        let g = ConvGeom { n: xs[0], c: xs[1], h: xs[2], w: xs[3], oc: ws[0], kh: ws[2], kw: ws[3], stride, pad: padding };
        #[cfg(feature = "wgpu")]
        if let Some(y) = super::on_gpu::conv2d(self, weight, bias, &g) {
            return Ok(y);
        }
        let y = {
            // Borrowed as they are when already contiguous (the usual case): no copy.
            let (x, w) = (self.data(), weight.data());
            let (x, w) = (standard_layout(&x), standard_layout(&w));
            // SAFETY: the convolution writes every element of y (N, OC, OH, OW).
            unsafe { uninit_vec(g.n * g.oc * g.oh() * g.ow(), |y| backend::conv2d_forward_uninit(&g, x.as_slice().expect("standard"), w.as_slice().expect("standard"), y, weight.param_key())) }
        };
        let mut y = ArrayD::from_shape_vec(IxDyn(&[g.n, g.oc, g.oh(), g.ow()]), y).expect("n · oc · oh · ow values");
        if let Some(b) = bias {
            // y[n, o, :, :] += b[o], one output plane at a time
            let b = b.data().iter().copied().collect::<Vec<f32>>();
            let plane = g.oh() * g.ow();
            y.as_slice_mut().expect("fresh").par_chunks_mut(plane).enumerate().for_each(|(no, ys)| ys.iter_mut().for_each(|v| *v += b[no % g.oc]));
        }
        let (xc, wc) = (self.clone(), weight.clone());
        let parents: Vec<&Tensor> = match bias {
            Some(b) => vec![self, weight, b],
            None => vec![self, weight],
        };
        let has_bias = bias.is_some();
        Ok(Tensor::from_op(y, "conv2d", &parents, move |dy, _| {
            let dy = standard_layout(dy);
            let (x, w) = (xc.data(), wc.data());
            let (x, w) = (standard_layout(&x), standard_layout(&w));
            // Fresh gradients, never zero-filled: the convolution writes every element.
            let (nx, nw) = (x.len(), w.len());
            let mut dx = xc.requires_grad().then(|| Vec::<f32>::with_capacity(nx));
            let mut dw = wc.requires_grad().then(|| Vec::<f32>::with_capacity(nw));
            backend::conv2d_backward_uninit(
                &g,
                x.as_slice().expect("standard"),
                w.as_slice().expect("standard"),
                dy.as_slice().expect("standard"),
                dx.as_mut().map(|v| &mut v.spare_capacity_mut()[..nx]),
                dw.as_mut().map(|v| &mut v.spare_capacity_mut()[..nw]),
                wc.param_key(),
            );
            let array = |v: Option<Vec<f32>>, len: usize, dim: IxDyn| {
                v.map(|mut v| {
                    // SAFETY: conv2d_backward_uninit wrote all `len` elements.
                    unsafe { v.set_len(len) };
                    ArrayD::from_shape_vec(dim, v).expect("as many values as the operand")
                })
            };
            let mut grads = vec![array(dx, nx, x.raw_dim()), array(dw, nw, w.raw_dim())];
            if has_bias {
                // db[o] = Σ_{n, i, j} dy[n, o, i, j]: each image's plane sums in parallel,
                // added over the images in order (the same sums in the same order as one pass)
                let plane = g.oh() * g.ow();
                let per_image: Vec<Vec<f32>> = dy.as_slice().expect("standard").par_chunks(g.oc * plane).map(|image| image.chunks_exact(plane).map(|p| ndarray::aview1(p).sum()).collect()).collect();
                let mut db = vec![0.0f32; g.oc];
                for sums in &per_image {
                    db.iter_mut().zip(sums).for_each(|(d, s)| *d += s);
                }
                grads.push(Some(ArrayD::from_shape_vec(IxDyn(&[g.oc]), db).expect("oc values")));
            }
            grads
        }))
    }

    /// Nearest-neighbour upsampling by an integer factor: `(N, C, H, W) -> (N, C, H·f, W·f)`.
    /// Backward: each input pixel sums the gradient of its f×f copies.
    /// PyTorch: `F.interpolate(x, scale_factor=f, mode="nearest")`.
    pub fn upsample_nearest2d(&self, factor: usize) -> Result<Tensor> {
        let s = self.shape();
        if s.len() != 4 || factor == 0 {
            return Err(crate::Error::shape("upsample_nearest2d", format!("expected (N, C, H, W) and a factor >= 1, got {s:?}, factor {factor}")));
        }
        #[cfg(feature = "wgpu")]
        if let Some(y) = super::on_gpu::upsample_nearest2d(self, factor) {
            return Ok(y);
        }
        let (h, w) = (s[2], s[3]);
        let data = self.data();
        let x = standard_layout(&data); // (N, C, H, W) contiguous, copied only if it was not
        // SAFETY: the upsampling writes every element of its output.
        let out = unsafe { uninit_vec(x.len() * factor * factor, |y| backend::cpu::upsample::upsample_nearest_forward(x.as_slice().expect("standard layout"), h, w, factor, y)) };
        drop(x);
        drop(data);
        let out = ArrayD::from_shape_vec(IxDyn(&[s[0], s[1], h * factor, w * factor]), out).expect("N C fH fW values");
        Ok(Tensor::from_op(out, "upsample_nearest2d", &[self], move |g, _| {
            let g = standard_layout(g); // (N, C, fH, fW)
            // SAFETY: the backward pass writes every element of dx.
            let dx = unsafe { uninit_vec(g.len() / (factor * factor), |dx| backend::cpu::upsample::upsample_nearest_backward(g.as_slice().expect("standard layout"), h, w, factor, dx)) };
            vec![Some(ArrayD::from_shape_vec(IxDyn(&s), dx).expect("N C H W values"))]
        }))
    }

    /// Average pooling with a `k×k` window and stride `s` (no padding).
    /// Backward: each window spreads `dy / k²` over its pixels. PyTorch: `F.avg_pool2d(x, k, s)`.
    pub fn avg_pool2d(&self, k: usize, stride: usize) -> Result<Tensor> {
        self.pool2d("avg_pool2d", k, stride, false)
    }

    /// Max pooling with a `k×k` window and stride `s` (no padding).
    /// Backward: the gradient goes to the (first) maximum of each window. PyTorch: `F.max_pool2d(x, k, s)`.
    pub fn max_pool2d(&self, k: usize, stride: usize) -> Result<Tensor> {
        self.pool2d("max_pool2d", k, stride, true)
    }

    fn pool2d(&self, op: &'static str, k: usize, stride: usize, is_max: bool) -> Result<Tensor> {
        let s = self.shape();
        if s.len() != 4 || k == 0 || stride == 0 || s[2] < k || s[3] < k {
            return Err(crate::Error::shape(op, format!("input {s:?} with window {k} and stride {stride}")));
        }
        #[cfg(feature = "wgpu")]
        if is_max {
            if let Some(y) = super::on_gpu::max_pool2d(self, k, stride) {
                return Ok(y);
            }
        }
        let geom = PoolGeom { h: s[2], w: s[3], k, stride };
        let (oh, ow) = geom.out();
        let x = standard_layout(&self.data()).into_owned(); // (N, C, H, W) contiguous
        let mut out = vec![0.0; s[0] * s[1] * oh * ow];
        // For max pooling, where each maximum came from (its index in the input plane).
        let mut argmax = vec![0u32; if is_max { out.len() } else { 0 }];
        pool::pool2d_forward(x.as_slice().expect("standard layout"), geom, is_max, &mut out, &mut argmax);
        drop(x);
        let out = ArrayD::from_shape_vec(IxDyn(&[s[0], s[1], oh, ow]), out).expect("N C OH OW values");
        Ok(Tensor::from_op(out, op, &[self], move |g, _| {
            let g = standard_layout(g); // (N, C, OH, OW)
            let mut dx = vec![0.0; s.iter().product()];
            pool::pool2d_backward(g.as_slice().expect("standard layout"), geom, is_max, &argmax, &mut dx);
            vec![Some(ArrayD::from_shape_vec(IxDyn(&s), dx).expect("N C H W values"))]
        }))
    }
}
