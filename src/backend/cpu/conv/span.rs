//! Panels that run across images: the implicit GEMM of a run of small images
//! as one GEMM, for a stride-1 convolution whose output is as wide as its input.
//!
//! A 7x7 image has 49 output pixels. In panels of NR = 16 (AVX2) that is three
//! full panels and one of a single column, and the micro-kernel does the work
//! of 64 columns for 49 (AVX-512, NR = 32: two panels, 64 again): a quarter of
//! the convolution's time on padding. Taken over the run's G images at once,
//!
//! ```text
//! y_run (OC, G*OHW) = W (OC, CKK) · [col_0 | col_1 | ... | col_{G-1}]
//! ```
//!
//! the panels go on across image boundaries and only the run's last one is
//! short. A panel's lanes fall into [`Segment`]s, each a run of consecutive
//! output pixels of one image; one row of the panel (channel c, tap (i, j)) is
//! one masked load per segment from that image's plane (the shifted-plane rows
//! of [`super::implicit`]), the segments OR-ed together (a masked-off lane is
//! +0.0, all bits zero). A panel inside one image is written to `y` in place;
//! one that crosses a boundary is computed into a small tile `(OC, NR)` whose
//! columns are then copied to their images.

use super::ConvGeom;
use crate::backend::cpu::microkernel::{MicroKernel, Shift};
use std::ops::Range;

/// Lanes `l0..l0 + len` of a panel: output pixels `p0..p0 + len` of image `image` of the run.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    image: usize,
    p0: usize,
    l0: usize,
    len: usize,
}

/// Where each panel of a run of images reads and writes.
pub(super) struct SpanPlan {
    /// The segments of every panel in order; panel `t` has `segs[first[t]..first[t + 1]]`.
    segs: Vec<Segment>,
    first: Vec<usize>,
    /// Per `(segment, tap)`, index `s * KK + tap`: the offset in the
    /// image's input plane that lane 0 of the segment's row would read
    /// (lane `l` reads `offset + l`), and the mask of the segment's lanes whose
    /// tap lies inside the image.
    rows: Vec<Shift>,
}

/// Whether the run of images should be one GEMM: a stride-1 convolution as wide
/// as its input (the rows are shifted planes), more than one image per run, and
/// more than a sixteenth of each image's last panel empty.
pub(super) fn worth_it<K: MicroKernel>(g: &ConvGeom, images_per_run: usize) -> bool {
    let ohw = g.oh() * g.ow();
    let padded = ohw.div_ceil(K::NR) * K::NR;
    g.stride == 1 && g.ow() == g.w && images_per_run > 1 && 16 * (padded - ohw) > padded
}

impl SpanPlan {
    /// The plan for a run of `images`; `src[tap * OHW + q]` is the input pixel
    /// under output pixel `q` for `tap`, -1 in the padding (as `Taps` keeps it).
    pub(super) fn new<K: MicroKernel>(g: &ConvGeom, src: &[i32], images: usize) -> SpanPlan {
        let (nr, ohw) = (K::NR, g.oh() * g.ow());
        let cols = images * ohw;
        let (mut segs, mut first) = (Vec::new(), Vec::with_capacity(cols.div_ceil(nr) + 1));
        for t in 0..cols.div_ceil(nr) {
            first.push(segs.len());
            let mut l0 = 0;
            while l0 < nr.min(cols - t * nr) {
                let q = t * nr + l0; // column of the run's GEMM
                let (image, p0) = (q / ohw, q % ohw);
                let len = (ohw - p0).min(nr - l0).min(cols - q);
                segs.push(Segment { image, p0, l0, len });
                l0 += len;
            }
        }
        first.push(segs.len());
        let (taps, hw) = (g.kh * g.kw, g.h * g.w);
        let mut rows = Vec::with_capacity(taps * segs.len());
        for s in &segs {
            for tap in 0..taps {
                let shift = g.same_shift(tap / g.kw, tap % g.kw);
                let lanes = &src[tap * ohw + s.p0..tap * ohw + s.p0 + s.len];
                let mask = lanes.iter().enumerate().filter(|&(_, &v)| v >= 0).fold(0u32, |m, (l, _)| m | 1 << (s.l0 + l));
                let start = s.p0 as isize - s.l0 as isize + shift;
                rows.push(Shift::new(start, mask, nr, hw));
            }
        }
        SpanPlan { segs, first, rows }
    }

    /// Panel `t`'s segments.
    fn segments(&self, t: usize) -> &[Segment] {
        &self.segs[self.first[t]..self.first[t + 1]]
    }

    /// The image and first pixel of panel `t` when all its columns lie in one image.
    pub(super) fn within_image(&self, t: usize) -> Option<(usize, usize)> {
        match self.segments(t) {
            [s] => Some((s.image, s.p0)),
            _ => None,
        }
    }

    /// Pack rows `rows` of panel `t` (rows of `col`: `(c, tap)`) from the run's
    /// images `x (G, C, H, W)` into `panel` (`NR` floats a row).
    ///
    /// # Safety
    /// The CPU must support `K`'s tier; `x` holds the run's images.
    pub(super) unsafe fn pack<K: MicroKernel>(&self, g: &ConvGeom, x: &[f32], t: usize, rows: Range<usize>, panel: &mut [f32]) {
        let (hw, kk) = (g.h * g.w, g.kh * g.kw);
        let dst = &mut panel[..rows.len() * K::NR];
        for (k, s) in (self.first[t]..self.first[t + 1]).enumerate() {
            // NR floats of each plane of the segment's image from the tap's offset, lanes
            // outside the segment or in the padding zeroed; a second segment OR-ed in
            let image = &x[self.segs[s].image * g.c * hw..][..g.c * hw];
            K::shifted_rows(dst, image.as_ptr(), hw, rows.start, &self.rows[s * kk..(s + 1) * kk], k > 0);
        }
    }

    /// Copy the columns of a crossing panel `t`, computed into `tile (OC, NR)`,
    /// to their images in `y (G, OC, OHW)`.
    ///
    /// # Safety
    /// `y` addresses the run's `G * OC * OHW` outputs; `tile` holds `OC * NR` floats.
    pub(super) unsafe fn scatter<K: MicroKernel>(&self, g: &ConvGeom, t: usize, tile: *const f32, y: *mut f32) {
        let (nr, ohw) = (K::NR, g.oh() * g.ow());
        for s in self.segments(t) {
            for o in 0..g.oc {
                // y[image, o, p0..p0 + len] = tile[o, l0..l0 + len]
                std::ptr::copy_nonoverlapping(tile.add(o * nr + s.l0), y.add((s.image * g.oc + o) * ohw + s.p0), s.len);
            }
        }
    }
}
