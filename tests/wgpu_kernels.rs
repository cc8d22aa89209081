//! Parity tests: every wgpu kernel against a naive CPU loop written here.
//!
//! Tolerance: the GPU sums in f32 in its own order (64- or 128-wide tiles, 16- or 8-deep slabs), the
//! reference sums in f64. For a sum of k products with random signs the f32 rounding
//! error grows like sqrt(k) · eps_f32 · Σ|a·b| (eps_f32 = 1.2e-7), so each element must
//! satisfy |gpu - ref| <= 1e-5 · sqrt(k) · Σ|a·b| + 1e-7: about 100x that rounding, yet
//! far below one wrong or missing term (about Σ|a·b| / k for the k <= 200 used here).
//!
//! Without an adapter the tests print a line and pass, unless DALLE_REQUIRE_GPU=1.
//! Run on Mesa's software Vulkan: `WGPU_BACKEND=vulkan DALLE_REQUIRE_GPU=1 cargo test
//! --release --test wgpu_kernels`.
#![cfg(feature = "wgpu")]

mod common;
use common::gpu::{ctx, values};

use dalle::backend::wgpu::{
    bias_add, conv2d_backward_input, conv2d_backward_weight, conv2d_forward, matmul,
    Conv2dShape, MatmulKernel, MatmulShape, Operand, WgpuContext,
};
use dalle::Error;

/// Both matmul kernels: the shared context (which picks by shape: the small tile for
/// every shape in this file) and a private one forced to the 128 x 128 tile. Every
/// matmul and conv parity test runs on each.
fn kernels() -> Vec<(&'static str, &'static WgpuContext)> {
    static TILE128: std::sync::OnceLock<WgpuContext> = std::sync::OnceLock::new();
    let Some(shared) = ctx() else {
        return Vec::new();
    };
    let big = TILE128.get_or_init(|| {
        let ctx = WgpuContext::new().expect("a second context on the same adapter");
        ctx.force_matmul_kernel(Some(MatmulKernel::Tile128));
        ctx
    });
    vec![("by shape", shared), ("tile 128", big)]
}


/// A reference value and its magnitude Σ|terms| (which scales the rounding error).
#[derive(Clone, Copy, Default)]
struct Exact {
    value: f64,
    magnitude: f64,
}

impl Exact {
    fn add(&mut self, a: f32, b: f32) {
        let term = a as f64 * b as f64;
        self.value += term;
        self.magnitude += term.abs();
    }
}

fn assert_close(what: &str, got: &[f32], want: &[Exact], k: usize) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = 1e-5 * (k.max(1) as f64).sqrt();
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = scale * w.magnitude + 1e-7;
        assert!(
            (*g as f64 - w.value).abs() <= tol,
            "{what}: element {i}: gpu {g} vs reference {} (tolerance {tol:e})",
            w.value
        );
    }
}

/// C[b](i, j) = Σ_p op(A[b])(i, p) op(B[b])(p, j), straight from the definition.
fn matmul_reference(a: &[f32], b: &[f32], s: &MatmulShape) -> Vec<Exact> {
    let mut c = vec![Exact::default(); s.batch * s.m * s.n];
    for bi in 0..s.batch {
        for i in 0..s.m {
            for j in 0..s.n {
                let cell = &mut c[(bi * s.m + i) * s.n + j];
                for p in 0..s.k {
                    let av = if s.trans_a {
                        a[bi * s.a_batch_stride + p * s.m + i]
                    } else {
                        a[bi * s.a_batch_stride + i * s.k + p]
                    };
                    let bv = if s.trans_b {
                        b[bi * s.b_batch_stride + j * s.k + p]
                    } else {
                        b[bi * s.b_batch_stride + p * s.n + j]
                    };
                    cell.add(av, bv);
                }
            }
        }
    }
    c
}

/// `C = op(A) · op(B)` for `s` on every kernel ([`kernels`]) against the reference.
fn check_matmul(s: MatmulShape, seed: u64) {
    let a_len = if s.batch == 0 {
        0
    } else {
        (s.batch - 1) * s.a_batch_stride + s.m * s.k
    };
    let b_len = if s.batch == 0 {
        0
    } else {
        (s.batch - 1) * s.b_batch_stride + s.k * s.n
    };
    let a = values(a_len, seed);
    let b = values(b_len, seed + 1);
    let want = matmul_reference(&a, &b, &s);
    for (kernel, ctx) in kernels() {
        let got = matmul(ctx, &a, &b, &s).unwrap_or_else(|e| panic!("{kernel} {s:?}: {e}"));
        assert_close(&format!("{kernel} {s:?}"), &got, &want, s.k);
    }
}

const TRANSPOSES: [(bool, bool); 4] = [(false, false), (true, false), (false, true), (true, true)];

#[test]
fn matmul_one_by_one() {
    let Some(ctx) = ctx() else { return };
    for (ta, tb) in TRANSPOSES {
        check_matmul(MatmulShape::new(1, 1, 1).transposed(ta, tb), 1);
    }
    // 2 x 3 = 6 exactly: catches a kernel that writes nothing or the wrong cell.
    assert_eq!(
        matmul(ctx, &vec![2.0], &vec![3.0], &MatmulShape::new(1, 1, 1)).unwrap(),
        vec![6.0]
    );
}

#[test]
fn matmul_odd_67x45x33_all_transposes() {
    // Odd sizes: ragged tiles on every edge and scalar (unaligned) loads.
    for (ta, tb) in TRANSPOSES {
        check_matmul(MatmulShape::new(67, 45, 33).transposed(ta, tb), 2);
    }
}

#[test]
fn matmul_aligned_vec4_loads_all_transposes() {
    // Multiples of 4 but not of the 64 tile: the vec4 path with edge checks; k = 36
    // is not a multiple of the 16-deep slab.
    for (ta, tb) in TRANSPOSES {
        check_matmul(MatmulShape::new(68, 36, 72).transposed(ta, tb), 3);
        check_matmul(MatmulShape::new(4, 4, 4).transposed(ta, tb), 4);
    }
}

#[test]
fn matmul_batch3_broadcast() {
    for (m, k, n) in [(5, 7, 9), (8, 12, 16)] {
        for (ta, tb) in TRANSPOSES {
            let s = MatmulShape::batched(3, m, k, n).transposed(ta, tb);
            check_matmul(s, 5); // dense batch
            check_matmul(s.strides(0, k * n), 6); // one A for every b
            check_matmul(s.strides(m * k, 0), 7); // one B for every b
            check_matmul(s.strides(m * k + 4, k * n + 3), 8); // gaps between entries
        }
    }
}

#[test]
fn matmul_multi_tile_and_zero_sizes() {
    let Some(ctx) = ctx() else { return };
    check_matmul(MatmulShape::new(130, 100, 70), 9);
    // ragged edges of the 128 x 128 tile in both directions, every transpose
    for (ta, tb) in TRANSPOSES {
        check_matmul(MatmulShape::new(259, 37, 131).transposed(ta, tb), 10);
    }
    // k = 0: an empty sum is zero; m = 0: an empty result.
    assert_eq!(
        matmul(ctx, &vec![], &vec![], &MatmulShape::new(2, 0, 3)).unwrap(),
        vec![0.0; 6]
    );
    assert!(
        matmul(ctx, &vec![], &vec![1.0; 3], &MatmulShape::new(0, 1, 3))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn matmul_rejects_short_operands() {
    let Some(ctx) = ctx() else { return };
    let err = matmul(
        ctx,
        &vec![0.0; 5],
        &vec![0.0; 6],
        &MatmulShape::new(2, 3, 2),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
}

#[test]
fn matmul_accepts_ndarray_views() {
    use ndarray::Array2;
    let Some(ctx) = ctx() else { return };
    let a = Array2::from_shape_vec((3, 4), values(12, 10)).unwrap();
    let b = Array2::from_shape_vec((5, 4), values(20, 11)).unwrap();
    // b.t() is not contiguous: the Operand conversion copies it to standard layout.
    let bt = b.t();
    let got = matmul(ctx, &a, &bt, &MatmulShape::new(3, 4, 5)).unwrap();
    let want = a.dot(&b.t());
    for (g, w) in got.iter().zip(want.iter()) {
        assert!((g - w).abs() <= 1e-5 * 2.0, "{g} vs {w}");
    }
}

/// Naive convolution, forward: y[b][o][oy][ox] = Σ_{c,ky,kx} w[o][c][ky][kx] x[b][c][oy s - p + ky][ox s - p + kx].
fn conv_forward_reference(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    s: &Conv2dShape,
) -> Vec<Exact> {
    let (ho, wo) = (s.out_height(), s.out_width());
    let mut y = vec![Exact::default(); s.output_len()];
    for b in 0..s.batch {
        for o in 0..s.out_channels {
            for oy in 0..ho {
                for ox in 0..wo {
                    let cell = &mut y[((b * s.out_channels + o) * ho + oy) * wo + ox];
                    if let Some(bias) = bias {
                        cell.add(bias[o], 1.0);
                    }
                    for c in 0..s.in_channels {
                        for ky in 0..s.kernel_h {
                            for kx in 0..s.kernel_w {
                                let iy = (oy * s.stride + ky) as isize - s.padding as isize;
                                let ix = (ox * s.stride + kx) as isize - s.padding as isize;
                                if iy < 0
                                    || ix < 0
                                    || iy >= s.height as isize
                                    || ix >= s.width as isize
                                {
                                    continue;
                                }
                                let xv = x[((b * s.in_channels + c) * s.height + iy as usize)
                                    * s.width
                                    + ix as usize];
                                let wv = w
                                    [((o * s.in_channels + c) * s.kernel_h + ky) * s.kernel_w + kx];
                                cell.add(xv, wv);
                            }
                        }
                    }
                }
            }
        }
    }
    y
}

/// Naive input and weight gradients of the forward above, by scattering each dy term
/// to every input and weight element it came from (the GPU gathers instead).
fn conv_backward_reference(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    s: &Conv2dShape,
) -> (Vec<Exact>, Vec<Exact>) {
    let (ho, wo) = (s.out_height(), s.out_width());
    let mut dx = vec![Exact::default(); s.input_len()];
    let mut dw = vec![Exact::default(); s.weight_len()];
    for b in 0..s.batch {
        for o in 0..s.out_channels {
            for oy in 0..ho {
                for ox in 0..wo {
                    let g = dy[((b * s.out_channels + o) * ho + oy) * wo + ox];
                    for c in 0..s.in_channels {
                        for ky in 0..s.kernel_h {
                            for kx in 0..s.kernel_w {
                                let iy = (oy * s.stride + ky) as isize - s.padding as isize;
                                let ix = (ox * s.stride + kx) as isize - s.padding as isize;
                                if iy < 0
                                    || ix < 0
                                    || iy >= s.height as isize
                                    || ix >= s.width as isize
                                {
                                    continue;
                                }
                                let xi = ((b * s.in_channels + c) * s.height + iy as usize)
                                    * s.width
                                    + ix as usize;
                                let wi =
                                    ((o * s.in_channels + c) * s.kernel_h + ky) * s.kernel_w + kx;
                                dx[xi].add(g, w[wi]); // ∂L/∂x += dy · w
                                dw[wi].add(g, x[xi]); // ∂L/∂w += dy · x
                            }
                        }
                    }
                }
            }
        }
    }
    (dx, dw)
}

/// Every combination of stride 1/2, padding 0/1/2, kernel 1/3/5 on a non-square input
/// with odd channel counts.
fn conv_shapes() -> Vec<Conv2dShape> {
    let mut shapes = Vec::new();
    for stride in [1, 2] {
        for padding in [0, 1, 2] {
            for kernel in [1, 3, 5] {
                shapes.push(Conv2dShape {
                    batch: 2,
                    in_channels: 3,
                    height: 7,
                    width: 6,
                    out_channels: 5,
                    kernel_h: kernel,
                    kernel_w: kernel,
                    stride,
                    padding,
                });
            }
        }
    }
    // a rectangular kernel and one channel in
    shapes.push(Conv2dShape {
        batch: 3,
        in_channels: 1,
        height: 5,
        width: 9,
        out_channels: 3,
        kernel_h: 3,
        kernel_w: 2,
        stride: 2,
        padding: 1,
    });
    shapes
}

#[test]
fn conv2d_forward_matches_naive() {
    for (kernel, ctx) in kernels() {
        for (i, s) in conv_shapes().into_iter().enumerate() {
            let x = values(s.input_len(), 20 + i as u64);
            let w = values(s.weight_len(), 40 + i as u64);
            let bias = values(s.out_channels, 60 + i as u64);
            let with_bias = i % 2 == 0;
            let y = conv2d_forward(ctx, &x, &w, with_bias.then(|| Operand::host(&bias)), &s)
                .unwrap_or_else(|e| panic!("{kernel} {s:?}: {e}"));
            let want = conv_forward_reference(&x, &w, with_bias.then_some(&bias[..]), &s);
            assert_close(
                &format!("{kernel} forward {s:?}"),
                &y,
                &want,
                s.in_channels * s.kernel_h * s.kernel_w,
            );
        }
    }
}

#[test]
fn conv2d_backward_matches_naive() {
    for (kernel, ctx) in kernels() {
        for (i, s) in conv_shapes().into_iter().enumerate() {
            let x = values(s.input_len(), 80 + i as u64);
            let w = values(s.weight_len(), 100 + i as u64);
            let dy = values(s.output_len(), 120 + i as u64);
            let (want_dx, want_dw) = conv_backward_reference(&x, &w, &dy, &s);
            let dx = conv2d_backward_input(ctx, &dy, &w, &s)
                .unwrap_or_else(|e| panic!("{kernel} {s:?}: {e}"));
            assert_close(
                &format!("{kernel} dx {s:?}"),
                &dx,
                &want_dx,
                s.out_channels * s.kernel_h * s.kernel_w,
            );
            let dw = conv2d_backward_weight(ctx, &x, &dy, &s)
                .unwrap_or_else(|e| panic!("{kernel} {s:?}: {e}"));
            assert_close(
                &format!("{kernel} dw {s:?}"),
                &dw,
                &want_dw,
                s.batch * s.out_height() * s.out_width(),
            );
        }
    }
}

#[test]
fn conv2d_splits_large_batches_into_chunks() {
    // A private context with a 4 KiB binding cap: the columns of one sample below take
    // 3 * 9 * 36 * 4 = 3888 bytes, so each of the 5 samples runs as its own chunk and
    // the weight gradient accumulates across chunks.
    let Some(_) = ctx() else { return };
    let ctx = WgpuContext::new().expect("a second context on the same adapter");
    ctx.cap_binding_bytes(4096);
    let s = Conv2dShape {
        batch: 5,
        in_channels: 3,
        height: 6,
        width: 6,
        out_channels: 4,
        kernel_h: 3,
        kernel_w: 3,
        stride: 1,
        padding: 1,
    };
    let x = values(s.input_len(), 180);
    let w = values(s.weight_len(), 181);
    let dy = values(s.output_len(), 182);
    let y = conv2d_forward(&ctx, &x, &w, None, &s).unwrap();
    assert_close(
        "chunked forward",
        &y,
        &conv_forward_reference(&x, &w, None, &s),
        27,
    );
    let (want_dx, want_dw) = conv_backward_reference(&x, &w, &dy, &s);
    let dx = conv2d_backward_input(&ctx, &dy, &w, &s).unwrap();
    assert_close("chunked dx", &dx, &want_dx, 36);
    let dw = conv2d_backward_weight(&ctx, &x, &dy, &s).unwrap();
    assert_close("chunked dw", &dw, &want_dw, 5 * 36);
    // One sample that cannot fit is a clean device error, not a failed dispatch.
    ctx.cap_binding_bytes(1024);
    let err = conv2d_forward(&ctx, &x, &w, None, &s).unwrap_err();
    assert!(
        matches!(&err, Error::Device(m) if m.contains("largest binding")),
        "{err}"
    );
}

#[test]
fn conv2d_rejects_bad_shapes() {
    let Some(ctx) = ctx() else { return };
    let s = Conv2dShape {
        batch: 1,
        in_channels: 2,
        height: 3,
        width: 3,
        out_channels: 1,
        kernel_h: 5,
        kernel_w: 5,
        stride: 1,
        padding: 0,
    };
    let err = conv2d_forward(ctx, &vec![0.0; 18], &vec![0.0; 50], None, &s).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    let s = Conv2dShape {
        kernel_h: 3,
        kernel_w: 3,
        ..s
    };
    let err = conv2d_forward(ctx, &vec![0.0; 17], &vec![0.0; 18], None, &s).unwrap_err();
    assert!(err.to_string().contains("x has 17 elements"), "{err}");
}

#[test]
fn bias_add_matches_naive() {
    let Some(ctx) = ctx() else { return };
    let (batch, channels, plane) = (3, 5, 7);
    let y = values(batch * channels * plane, 140);
    let bias = values(channels, 141);
    let got = bias_add(ctx, &y, &bias, batch, channels, plane).unwrap();
    for (i, g) in got.iter().enumerate() {
        let want = y[i] + bias[(i / plane) % channels]; // one f32 add: exact match
        assert_eq!(*g, want, "element {i}");
    }
}

#[test]
fn resident_parameters_upload_once_per_version() {
    // A private context so other tests' traffic does not move the counters.
    let Some(_) = ctx() else { return };
    let ctx = WgpuContext::new().expect("a second context on the same adapter");
    let s = MatmulShape::new(3, 4, 2);
    let w0 = values(12, 150);
    let w1 = values(12, 151);
    let x = values(8, 152);
    let want0 = matmul_reference(&w0, &x, &s);
    let want1 = matmul_reference(&w1, &x, &s);

    let y = matmul(&ctx, Operand::resident(17, 3, &w0), &x, &s).unwrap();
    assert_close("first use", &y, &want0, 4);
    assert_eq!(ctx.stats().resident_uploads, 1);

    // Same (id, version): no upload, and the cached values are used even though the
    // caller passed other data (the contract: one version = one set of values).
    let y = matmul(&ctx, Operand::resident(17, 3, &w1), &x, &s).unwrap();
    assert_close("cached", &y, &want0, 4);
    let stats = ctx.stats();
    assert_eq!((stats.resident_uploads, stats.resident_hits), (1, 1));

    // A new version uploads the new values.
    let y = matmul(&ctx, Operand::resident(17, 4, &w1), &x, &s).unwrap();
    assert_close("new version", &y, &want1, 4);
    assert_eq!(ctx.stats().resident_uploads, 2);
    assert!(ctx.resident_bytes() >= 48);

    // Evicted: uploaded again even at the same version.
    ctx.evict(17);
    assert_eq!(ctx.resident_bytes(), 0);
    matmul(&ctx, Operand::resident(17, 4, &w1), &x, &s).unwrap();
    assert_eq!(ctx.stats().resident_uploads, 3);
}

#[test]
fn temporaries_come_from_the_pool() {
    let Some(_) = ctx() else { return };
    let ctx = WgpuContext::new().expect("a second context on the same adapter");
    let s = MatmulShape::new(9, 10, 11);
    let (a, b) = (values(90, 160), values(110, 161));
    matmul(&ctx, &a, &b, &s).unwrap();
    let created = ctx.stats().buffers_created;
    assert!(created >= 4, "A, B, C and a staging buffer: {created}");
    for _ in 0..3 {
        matmul(&ctx, &a, &b, &s).unwrap();
    }
    let stats = ctx.stats();
    assert_eq!(
        stats.buffers_created, created,
        "repeated calls allocate nothing new"
    );
    assert!(stats.buffers_reused >= 3 * created);
}

#[test]
fn shader_errors_are_device_errors() {
    let Some(ctx) = ctx() else { return };
    let err = ctx
        .compile_pipeline(
            "broken.wgsl",
            "@compute @workgroup_size(1) fn main( {",
            "main",
        )
        .unwrap_err();
    assert!(
        matches!(&err, Error::Device(m) if m.contains("broken.wgsl")),
        "{err}"
    );
    let err = ctx
        .compile_pipeline(
            "ok.wgsl",
            "@compute @workgroup_size(1) fn main() {}",
            "missing",
        )
        .unwrap_err();
    assert!(matches!(err, Error::Device(_)), "{err}");
    // The context still works after the failed compiles.
    check_matmul(MatmulShape::new(2, 3, 4), 170);
}

#[test]
fn no_backend_is_a_clean_error() {
    let err = WgpuContext::with_backends(wgpu::Backends::empty())
        .err()
        .expect("no adapter without backends");
    assert!(
        matches!(&err, Error::Device(m) if m.contains("no wgpu adapter found")),
        "{err}"
    );
}
