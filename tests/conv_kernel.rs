//! The CPU convolution kernels against a direct six-deep loop, forward and
//! both gradients, for strides 1 and 2, paddings 0 to 2, 1x1 and 3x3 and
//! non-square kernels, and images narrower than a micro-tile: the dispatching
//! entry points (the implicit GEMM on the micro-kernel of the `DALLE_CPU`
//! tier), the implicit GEMM on every micro-kernel this CPU runs, and the
//! im2col path, each run explicitly.
//!
//! Tolerance: sums of at most C·KH·KW·N·OH·OW ≈ 5000 products of values
//! in [-1, 1) in f32 against f64: 1e-4 · (1 + |want|).

use dalle::backend::cpu::conv::{conv2d_backward, conv2d_forward, im2col};
use dalle::backend::ConvGeom;

fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15).wrapping_add(7);
    (0..len)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Visit every (n, o, oy, ox, c, i, j) with an in-bounds input pixel: `f(y_index, x_index, w_index)`.
fn each_tap(g: &ConvGeom, mut f: impl FnMut(usize, usize, usize)) {
    let (oh, ow) = (g.oh(), g.ow());
    for n in 0..g.n {
        for o in 0..g.oc {
            for oy in 0..oh {
                for ox in 0..ow {
                    for c in 0..g.c {
                        for i in 0..g.kh {
                            for j in 0..g.kw {
                                let iy = (oy * g.stride + i) as isize - g.pad as isize;
                                let ix = (ox * g.stride + j) as isize - g.pad as isize;
                                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                    continue;
                                }
                                let yi = ((n * g.oc + o) * oh + oy) * ow + ox;
                                let xi = ((n * g.c + c) * g.h + iy as usize) * g.w + ix as usize;
                                let wi = ((o * g.c + c) * g.kh + i) * g.kw + j;
                                f(yi, xi, wi);
                            }
                        }
                    }
                }
            }
        }
    }
}

fn close(got: &[f32], want: &[f64], what: &str, g: &ConvGeom) {
    for (k, (&a, &b)) in got.iter().zip(want).enumerate() {
        assert!((a as f64 - b).abs() <= 1e-4 * (1.0 + b.abs()), "{what}[{k}] = {a}, expected {b} for {g:?}");
    }
}

/// Operands of `g` (`x`, `w`, `dy`, seeded values in [-1, 1)) and, in f64 from
/// the direct loops, the `y`, `dX` and `dW` a convolution must give for them.
struct Case {
    x: Vec<f32>,
    w: Vec<f32>,
    dy: Vec<f32>,
    y_want: Vec<f64>,
    dx_want: Vec<f64>,
    dw_want: Vec<f64>,
}

fn case(g: &ConvGeom) -> Case {
    let x = values(g.n * g.c * g.h * g.w, 1);
    let w = values(g.oc * g.c * g.kh * g.kw, 2);
    let dy = values(g.n * g.oc * g.oh() * g.ow(), 3);
    let (mut y_want, mut dx_want, mut dw_want) = (vec![0.0f64; dy.len()], vec![0.0f64; x.len()], vec![0.0f64; w.len()]);
    each_tap(g, |yi, xi, wi| {
        y_want[yi] += x[xi] as f64 * w[wi] as f64;
        dx_want[xi] += dy[yi] as f64 * w[wi] as f64;
        dw_want[wi] += dy[yi] as f64 * x[xi] as f64;
    });
    Case { x, w, dy, y_want, dx_want, dw_want }
}

/// A convolution's output (or gradient) from memory that starts as NaN, as it leaves it.
fn written(len: usize, f: impl FnOnce(&mut [std::mem::MaybeUninit<f32>])) -> Vec<f32> {
    let mut y = vec![std::mem::MaybeUninit::new(f32::NAN); len];
    f(&mut y);
    y.into_iter().map(|v| unsafe { v.assume_init() }).collect()
}

type Forward = fn(&ConvGeom, &[f32], &[f32], &mut [f32]);
type Backward = fn(&ConvGeom, &[f32], &[f32], &[f32], Option<&mut [f32]>, Option<&mut [f32]>);

/// The space-to-depth path for strides that divide the kernel
/// (`conv::strided`), forward and input gradient, on every micro-kernel this
/// CPU runs, for every geometry it can take (the dispatch takes it only where
/// it pays).
#[test]
fn strided_path_on_every_micro_kernel_matches_direct_loops() {
    use dalle::backend::cpu::microkernel::MicroKernel;
    use dalle::backend::cpu::tier::Tier;
    fn check<K: MicroKernel>() {
        use dalle::backend::cpu::conv::strided;
        let geoms = [
            ConvGeom { n: 3, c: 33, h: 14, w: 14, oc: 35, kh: 4, kw: 4, stride: 2, pad: 1 },
            ConvGeom { n: 2, c: 16, h: 16, w: 16, oc: 12, kh: 4, kw: 4, stride: 2, pad: 1 },
            ConvGeom { n: 2, c: 1, h: 11, w: 8, oc: 6, kh: 4, kw: 2, stride: 2, pad: 1 },
            ConvGeom { n: 2, c: 4, h: 9, w: 7, oc: 3, kh: 2, kw: 2, stride: 2, pad: 0 },
            ConvGeom { n: 2, c: 3, h: 13, w: 11, oc: 5, kh: 6, kw: 3, stride: 3, pad: 2 },
            ConvGeom { n: 5, c: 2, h: 10, w: 10, oc: 4, kh: 4, kw: 4, stride: 2, pad: 0 },
        ];
        for g in geoms {
            assert!(strided::fits(&g));
            let c = case(&g);
            let y = written(c.dy.len(), |y| strided::forward_into::<K>(&g, &c.x, &c.w, y));
            close(&y, &c.y_want, "y (strided)", &g);
            let dx = written(c.x.len(), |dx| strided::input_grad::<K>(&g, &c.w, &c.dy, dx));
            close(&dx, &c.dx_want, "dx (strided)", &g);
        }
    }
    for tier in Tier::supported() {
        match tier {
            #[cfg(target_arch = "x86_64")]
            Tier::Avx512 => check::<dalle::backend::cpu::microkernel::Avx512>(),
            #[cfg(target_arch = "x86_64")]
            Tier::Avx2Fma => check::<dalle::backend::cpu::microkernel::Avx2>(),
            _ => check::<dalle::backend::cpu::microkernel::Portable>(),
        }
    }
}

#[test]
fn conv_forward_and_backward_match_direct_loops() {
    check_against_direct_loops(conv2d_forward, conv2d_backward);
}

/// The implicit GEMM on every micro-kernel this CPU can run, whatever tier
/// `DALLE_CPU` picked for the dispatching entry points.
#[test]
fn implicit_gemm_on_every_micro_kernel_matches_direct_loops() {
    use dalle::backend::cpu::conv::implicit;
    use dalle::backend::cpu::tier::Tier;
    for tier in Tier::supported() {
        match tier {
            #[cfg(target_arch = "x86_64")]
            Tier::Avx512 => check_against_direct_loops(implicit::forward::<dalle::backend::cpu::microkernel::Avx512>, implicit::backward::<dalle::backend::cpu::microkernel::Avx512>),
            #[cfg(target_arch = "x86_64")]
            Tier::Avx2Fma => check_against_direct_loops(implicit::forward::<dalle::backend::cpu::microkernel::Avx2>, implicit::backward::<dalle::backend::cpu::microkernel::Avx2>),
            _ => check_against_direct_loops(implicit::forward::<dalle::backend::cpu::microkernel::Portable>, implicit::backward::<dalle::backend::cpu::microkernel::Portable>),
        }
    }
}

#[test]
fn portable_im2col_path_matches_direct_loops() {
    check_against_direct_loops(im2col::forward, im2col::backward);
}

fn check_against_direct_loops(conv2d_forward: Forward, conv2d_backward: Backward) {
    let geoms = [
        ConvGeom { n: 2, c: 3, h: 7, w: 9, oc: 5, kh: 3, kw: 3, stride: 1, pad: 1 },
        ConvGeom { n: 3, c: 2, h: 8, w: 8, oc: 13, kh: 3, kw: 3, stride: 2, pad: 1 },
        ConvGeom { n: 1, c: 4, h: 6, w: 5, oc: 3, kh: 1, kw: 1, stride: 1, pad: 0 },
        ConvGeom { n: 2, c: 2, h: 5, w: 11, oc: 4, kh: 2, kw: 4, stride: 1, pad: 2 },
        ConvGeom { n: 2, c: 3, h: 9, w: 9, oc: 2, kh: 3, kw: 3, stride: 2, pad: 0 },
        ConvGeom { n: 4, c: 16, h: 28, w: 28, oc: 24, kh: 3, kw: 3, stride: 1, pad: 1 },
        // "Same" width but not height, and a 5x5 same conv: the shifted-plane path of im2col/col2im.
        ConvGeom { n: 2, c: 3, h: 6, w: 7, oc: 4, kh: 1, kw: 3, stride: 1, pad: 1 },
        ConvGeom { n: 3, c: 2, h: 9, w: 6, oc: 5, kh: 5, kw: 5, stride: 1, pad: 2 },
        // Channels a multiple of 32: dW reads the channels-last image in place
        // (same, valid with a non-square kernel, 1x1, and a padding of 2).
        ConvGeom { n: 3, c: 32, h: 6, w: 7, oc: 13, kh: 3, kw: 3, stride: 1, pad: 1 },
        ConvGeom { n: 2, c: 64, h: 5, w: 6, oc: 5, kh: 3, kw: 2, stride: 1, pad: 0 },
        ConvGeom { n: 2, c: 32, h: 4, w: 9, oc: 3, kh: 1, kw: 1, stride: 1, pad: 0 },
        ConvGeom { n: 2, c: 32, h: 5, w: 5, oc: 7, kh: 3, kw: 3, stride: 1, pad: 2 },
        // The same, on images wide enough that dW reads them in place at every NR
        // (at most an eighth of the padded-width grid is padding).
        ConvGeom { n: 3, c: 32, h: 4, w: 17, oc: 13, kh: 3, kw: 3, stride: 1, pad: 1 },
        ConvGeom { n: 2, c: 64, h: 3, w: 20, oc: 5, kh: 3, kw: 2, stride: 1, pad: 0 },
        ConvGeom { n: 2, c: 32, h: 3, w: 30, oc: 7, kh: 3, kw: 3, stride: 1, pad: 2 },
        // The chapter 05/06 shapes in small: channel counts that are not a multiple of any
        // NR (1, 3, 9, 20, 48 at AVX-512), 1 to 3 output channels, 4x4 stride-2 layers.
        ConvGeom { n: 2, c: 48, h: 8, w: 8, oc: 3, kh: 3, kw: 3, stride: 1, pad: 1 },
        ConvGeom { n: 2, c: 1, h: 9, w: 9, oc: 8, kh: 3, kw: 3, stride: 1, pad: 1 },
        ConvGeom { n: 2, c: 3, h: 10, w: 10, oc: 5, kh: 4, kw: 4, stride: 2, pad: 1 },
        ConvGeom { n: 3, c: 20, h: 7, w: 7, oc: 17, kh: 4, kw: 4, stride: 2, pad: 1 },
        ConvGeom { n: 2, c: 9, h: 16, w: 16, oc: 1, kh: 3, kw: 3, stride: 1, pad: 1 },
        // Small images, several to a run: the panels run across image boundaries
        // (conv::span), with 1 to 8 images in a panel, a height that changes
        // (1x3 kernel), and a run whose last panel is short.
        ConvGeom { n: 9, c: 5, h: 3, w: 3, oc: 7, kh: 3, kw: 3, stride: 1, pad: 1 },
        ConvGeom { n: 20, c: 16, h: 7, w: 7, oc: 13, kh: 3, kw: 3, stride: 1, pad: 1 },
        ConvGeom { n: 17, c: 3, h: 5, w: 6, oc: 4, kh: 1, kw: 3, stride: 1, pad: 1 },
        ConvGeom { n: 64, c: 2, h: 2, w: 2, oc: 3, kh: 5, kw: 5, stride: 1, pad: 2 },
        ConvGeom { n: 11, c: 32, h: 5, w: 5, oc: 9, kh: 3, kw: 3, stride: 1, pad: 1 },
        // Strides that divide the kernel (conv::strided where it pays; every
        // one of them in its own test below).
        ConvGeom { n: 3, c: 33, h: 14, w: 14, oc: 35, kh: 4, kw: 4, stride: 2, pad: 1 },
        ConvGeom { n: 2, c: 1, h: 11, w: 8, oc: 6, kh: 4, kw: 2, stride: 2, pad: 1 },
        ConvGeom { n: 2, c: 4, h: 9, w: 7, oc: 3, kh: 2, kw: 2, stride: 2, pad: 0 },
        ConvGeom { n: 2, c: 3, h: 13, w: 11, oc: 5, kh: 6, kw: 3, stride: 3, pad: 2 },
        ConvGeom { n: 5, c: 2, h: 10, w: 10, oc: 4, kh: 4, kw: 4, stride: 2, pad: 0 },
    ];
    for g in geoms {
        let Case { x, w, dy, y_want, dx_want, dw_want } = case(&g);
        let mut y = vec![f32::NAN; dy.len()];
        conv2d_forward(&g, &x, &w, &mut y);
        close(&y, &y_want, "y", &g);
        let (mut dx, mut dw) = (vec![f32::NAN; x.len()], vec![f32::NAN; w.len()]);
        conv2d_backward(&g, &x, &w, &dy, Some(&mut dx), Some(&mut dw));
        close(&dx, &dx_want, "dx", &g);
        close(&dw, &dw_want, "dw", &g);
        // Each gradient alone gives the same numbers.
        let mut dw_only = vec![f32::NAN; w.len()];
        conv2d_backward(&g, &x, &w, &dy, None, Some(&mut dw_only));
        close(&dw_only, &dw_want, "dw (alone)", &g);
        let mut dx_only = vec![f32::NAN; x.len()];
        conv2d_backward(&g, &x, &w, &dy, Some(&mut dx_only), None);
        close(&dx_only, &dx_want, "dx (alone)", &g);
    }
}

/// The direct path (stride 1, few channels or output channels) against the
/// same direct loops, on the tier `DALLE_CPU` picks, for every geometry it takes.
#[test]
fn direct_path_matches_direct_loops() {
    use dalle::backend::cpu::conv::direct;
    let geoms = [
        ConvGeom { n: 2, c: 48, h: 8, w: 8, oc: 3, kh: 3, kw: 3, stride: 1, pad: 1 },
        ConvGeom { n: 3, c: 32, h: 9, w: 7, oc: 1, kh: 3, kw: 3, stride: 1, pad: 1 },
        ConvGeom { n: 2, c: 64, h: 7, w: 9, oc: 2, kh: 1, kw: 1, stride: 1, pad: 0 },
        ConvGeom { n: 2, c: 1, h: 9, w: 9, oc: 8, kh: 3, kw: 3, stride: 1, pad: 1 },
        ConvGeom { n: 2, c: 5, h: 6, w: 6, oc: 2, kh: 3, kw: 3, stride: 1, pad: 0 },
        ConvGeom { n: 2, c: 16, h: 11, w: 10, oc: 8, kh: 1, kw: 1, stride: 1, pad: 0 },
        ConvGeom { n: 3, c: 7, h: 6, w: 5, oc: 5, kh: 1, kw: 1, stride: 1, pad: 0 },
        ConvGeom { n: 2, c: 1, h: 9, w: 9, oc: 2, kh: 1, kw: 1, stride: 1, pad: 1 },
        ConvGeom { n: 9, c: 7, h: 5, w: 13, oc: 17, kh: 3, kw: 3, stride: 1, pad: 1 },
        ConvGeom { n: 2, c: 3, h: 4, w: 4, oc: 2, kh: 2, kw: 4, stride: 1, pad: 2 },
    ];
    for g in geoms {
        let Case { x, w, dy, y_want, dw_want, .. } = case(&g);
        if direct::forward_fits(&g) {
            let y = written(dy.len(), |y| direct::forward_into(&g, &x, &w, y));
            close(&y, &y_want, "y (direct)", &g);
        }
        // every micro-kernel width, so that each geometry's dW is checked on every tier
        if [8, 16, 32].iter().any(|&nr| direct::weight_grad_fits(&g, nr)) {
            let dw = written(w.len(), |dw| direct::weight_grad(&g, &x, &dy, dw));
            close(&dw, &dw_want, "dw (direct)", &g);
        }
        assert!(direct::forward_fits(&g) || [8, 16, 32].iter().any(|&nr| direct::weight_grad_fits(&g, nr)), "{g:?} takes neither direct path");
    }
}
