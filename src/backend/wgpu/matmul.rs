//! Batched matrix multiply on the GPU: `C[b] = op(A[b]) · op(B[b])` (kernel in `matmul.wgsl`).

use super::context::{Job, WgpuContext};
use super::memory::Operand;
use crate::{Error, Result};

/// The shape of a batched matmul `C[b] = op(A[b]) · op(B[b])` for `b` in `0..batch`.
///
/// `op(A[b])` is `(m, k)`, `op(B[b])` is `(k, n)`, `C[b]` is `(m, n)`, all row-major.
/// With `trans_a` the stored A is `(k, m)` and `op(A) = Aᵀ`; likewise `trans_b`.
/// `A[b]` starts at element `b * a_batch_stride`: a stride of 0 shares one matrix across
/// the batch (broadcast), e.g. a weight matrix applied to every sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulShape {
    /// Number of products.
    pub batch: usize,
    /// Rows of `op(A)` and of `C`.
    pub m: usize,
    /// Columns of `op(A)`, rows of `op(B)`: the summed dimension.
    pub k: usize,
    /// Columns of `op(B)` and of `C`.
    pub n: usize,
    /// Use `Aᵀ` (A stored `(k, m)`).
    pub trans_a: bool,
    /// Use `Bᵀ` (B stored `(n, k)`).
    pub trans_b: bool,
    /// Elements between `A[b]` and `A[b + 1]`; 0 to broadcast one A.
    pub a_batch_stride: usize,
    /// Elements between `B[b]` and `B[b + 1]`; 0 to broadcast one B.
    pub b_batch_stride: usize,
}

impl MatmulShape {
    /// One product `(m, k) · (k, n)`, no transposes.
    pub fn new(m: usize, k: usize, n: usize) -> Self {
        Self::batched(1, m, k, n)
    }

    /// `batch` products with densely packed operands (strides `m k` and `k n`).
    pub fn batched(batch: usize, m: usize, k: usize, n: usize) -> Self {
        MatmulShape {
            batch,
            m,
            k,
            n,
            trans_a: false,
            trans_b: false,
            a_batch_stride: m * k,
            b_batch_stride: k * n,
        }
    }

    /// The same shape with the given transpose flags.
    pub fn transposed(self, trans_a: bool, trans_b: bool) -> Self {
        MatmulShape {
            trans_a,
            trans_b,
            ..self
        }
    }

    /// The same shape with the given batch strides (0 = broadcast).
    pub fn strides(self, a_batch_stride: usize, b_batch_stride: usize) -> Self {
        MatmulShape {
            a_batch_stride,
            b_batch_stride,
            ..self
        }
    }

    /// Floating-point operations: `2 batch m k n`.
    pub fn flops(&self) -> f64 {
        2.0 * self.batch as f64 * self.m as f64 * self.k as f64 * self.n as f64
    }

    /// Elements of A (resp. B) the shape reads: `(batch - 1) stride + m k`.
    fn needed(&self, stride: usize, matrix: usize) -> usize {
        if self.batch == 0 || matrix == 0 {
            0
        } else {
            (self.batch - 1) * stride + matrix
        }
    }

    pub(super) fn check(&self, a_len: usize, b_len: usize) -> Result<()> {
        let stored = |t: bool, r: usize, c: usize| {
            if t {
                format!("({c}, {r})")
            } else {
                format!("({r}, {c})")
            }
        };
        let need_a = self.needed(self.a_batch_stride, self.m * self.k);
        let need_b = self.needed(self.b_batch_stride, self.k * self.n);
        if a_len < need_a || b_len < need_b {
            return Err(Error::shape(
                "wgpu matmul",
                format!(
                    "A has {a_len} elements and B {b_len}; batch {} of A {} (stride {}) and B {} (stride {}) needs {need_a} and {need_b}",
                    self.batch,
                    stored(self.trans_a, self.m, self.k),
                    self.a_batch_stride,
                    stored(self.trans_b, self.k, self.n),
                    self.b_batch_stride
                ),
            ));
        }
        if [
            self.batch,
            self.m,
            self.k,
            self.n,
            self.a_batch_stride,
            self.b_batch_stride,
        ]
        .iter()
        .any(|&d| d > u32::MAX as usize)
        {
            return Err(Error::shape(
                "wgpu matmul",
                format!("{self:?} has a dimension above u32::MAX"),
            ));
        }
        Ok(())
    }
}

/// `C[b] = op(A[b]) · op(B[b])` on the GPU; returns C, `(batch, m, n)` row-major.
///
/// A resident operand ([`Operand::Resident`]) is uploaded only when its version changes.
/// Errors: [`Error::Shape`] when A or B is shorter than the shape needs,
/// [`Error::Device`] when the GPU fails or a buffer passes the adapter's limits.
pub fn matmul<'a>(
    ctx: &WgpuContext,
    a: impl Into<Operand<'a>>,
    b: impl Into<Operand<'a>>,
    shape: &MatmulShape,
) -> Result<Vec<f32>> {
    let (a, b) = (a.into(), b.into());
    shape.check(a.len(), b.len())?;
    let out_len = shape.batch * shape.m * shape.n;
    if out_len == 0 || shape.k == 0 {
        return Ok(vec![0.0; out_len]);
    }
    let mut job = ctx.job("wgpu matmul")?;
    let a_buf = job.upload("A", &a)?;
    let b_buf = job.upload("B", &b)?;
    let c_buf = job.scratch("C", out_len)?;
    encode_matmul(
        &mut job,
        ctx,
        [&a_buf, &b_buf, &c_buf],
        shape,
        BatchMode::PerEntry,
    )?;
    let c = job.read(&c_buf, out_len)?;
    job.finish()?;
    Ok(c)
}

/// The WGSL source of the 64 x 64 matmul kernel as compiled: the shared contract
/// (`matmul_common.wgsl`: parameters, bindings, edge-safe loads, write-back) and the kernel.
pub const MATMUL_WGSL: &str = concat!(include_str!("matmul_common.wgsl"), include_str!("matmul.wgsl"));

/// The WGSL source of the 128 x 128 matmul kernel as compiled (see [`MATMUL_WGSL`]).
pub const MATMUL128_WGSL: &str = concat!(include_str!("matmul_common.wgsl"), include_str!("matmul128.wgsl"));

/// The two matmul kernels: the same arithmetic, different tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulKernel {
    /// `matmul.wgsl`: 64 x 64 tile per workgroup, 4 x 4 outputs per invocation.
    Tile64,
    /// `matmul128.wgsl`: 128 x 128 tile per workgroup, 8 x 8 outputs per invocation.
    Tile128,
}

impl MatmulKernel {
    /// The kernel [`matmul`] uses for `s` unless one is forced with
    /// [`WgpuContext::force_matmul_kernel`]: the big tile once it still gives at least
    /// 128 workgroups (about one per multiprocessor on a large GPU), else the small one.
    pub fn for_shape(s: &MatmulShape) -> Self {
        Self::for_grid(s.m, s.n, s.batch)
    }

    /// The kernel for `batch` products of `(m, n)` outputs each, one workgroup grid.
    fn for_grid(m: usize, n: usize, batch: usize) -> Self {
        let tiles = m.div_ceil(128) * n.div_ceil(128) * batch;
        if m >= 128 && n >= 128 && tiles >= 128 {
            MatmulKernel::Tile128
        } else {
            MatmulKernel::Tile64
        }
    }

    fn tile(self) -> usize {
        match self {
            MatmulKernel::Tile64 => 64,
            MatmulKernel::Tile128 => 128,
        }
    }

    fn pipeline(self, ctx: &WgpuContext) -> &wgpu::ComputePipeline {
        match self {
            MatmulKernel::Tile64 => &ctx.pipelines.matmul,
            MatmulKernel::Tile128 => &ctx.pipelines.matmul128,
        }
    }
}

/// Seconds per call of a compiled matmul kernel alone on `shape`, averaged over `reps`
/// dispatches recorded in one submission on buffers already on the GPU (no uploads or
/// read-backs): what the arithmetic costs, for benchmarks. The kernel has
/// `matmul_common.wgsl`'s contract (e.g. [`MATMUL_WGSL`] or [`MATMUL128_WGSL`] compiled
/// with [`WgpuContext::compile_pipeline`]) and each workgroup owns a `tile` x `tile`
/// block of C. The operands hold ones.
pub fn time_matmul_pipeline(
    ctx: &WgpuContext,
    pipeline: &wgpu::ComputePipeline,
    tile: usize,
    shape: &MatmulShape,
    reps: usize,
) -> Result<f64> {
    let len_a = shape.needed(shape.a_batch_stride, shape.m * shape.k);
    let len_b = shape.needed(shape.b_batch_stride, shape.k * shape.n);
    let len_c = shape.batch * shape.m * shape.n;
    let mut job = ctx.job("wgpu matmul timing")?;
    let a_buf = job.scratch("A", len_a.max(1))?;
    let b_buf = job.scratch("B", len_b.max(1))?;
    let c_buf = job.scratch("C", len_c.max(1))?;
    job.write(&a_buf, &vec![1.0; len_a]);
    job.write(&b_buf, &vec![1.0; len_b]);
    // one warm-up dispatch, waited for, so the timed ones find everything ready
    let buffers = [&a_buf, &b_buf, &c_buf];
    encode_matmul_on(&mut job, pipeline, tile, buffers, shape, BatchMode::PerEntry)?;
    job.submit()?;
    let start = std::time::Instant::now();
    for _ in 0..reps.max(1) {
        encode_matmul_on(&mut job, pipeline, tile, buffers, shape, BatchMode::PerEntry)?;
    }
    job.submit()?;
    let seconds = start.elapsed().as_secs_f64() / reps.max(1) as f64;
    job.finish()?;
    Ok(seconds)
}

/// What the kernel does with the batch dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BatchMode {
    /// `C[b] = op(A[b]) · op(B[b])`.
    PerEntry,
    /// `C = Σ_b op(A[b]) · op(B[b])`, overwriting C.
    Sum,
    /// `C += Σ_b op(A[b]) · op(B[b])`.
    SumInto,
}

/// Records the matmul kernel on buffers already on the GPU (`[a, b, c]`).
pub(super) fn encode_matmul(
    job: &mut Job<'_>,
    ctx: &WgpuContext,
    buffers: [&wgpu::Buffer; 3],
    s: &MatmulShape,
    mode: BatchMode,
) -> Result<()> {
    let grid_batch = if mode == BatchMode::PerEntry {
        s.batch
    } else {
        1
    };
    let kernel = ctx
        .forced_matmul_kernel()
        .unwrap_or_else(|| MatmulKernel::for_grid(s.m, s.n, grid_batch));
    encode_matmul_on(job, kernel.pipeline(ctx), kernel.tile(), buffers, s, mode)
}

/// Records `pipeline` (a kernel with `matmul.wgsl`'s contract and `tile`-square tiles).
fn encode_matmul_on(
    job: &mut Job<'_>,
    pipeline: &wgpu::ComputePipeline,
    tile: usize,
    [a, b, c]: [&wgpu::Buffer; 3],
    s: &MatmulShape,
    mode: BatchMode,
) -> Result<()> {
    // A vec4 read of 4 elements along A's contiguous axis is aligned when that axis's
    // length and the batch stride are multiples of 4 (tiles start at multiples of 64).
    let contiguous_a = if s.trans_a { s.m } else { s.k };
    let contiguous_b = if s.trans_b { s.k } else { s.n };
    let vec4_a = contiguous_a.is_multiple_of(4) && s.a_batch_stride.is_multiple_of(4);
    let vec4_b = contiguous_b.is_multiple_of(4) && s.b_batch_stride.is_multiple_of(4);
    let reduce = mode != BatchMode::PerEntry;
    let params = [
        s.m as u32,
        s.n as u32,
        s.k as u32,
        s.batch as u32,
        s.trans_a as u32,
        s.trans_b as u32,
        s.a_batch_stride as u32,
        s.b_batch_stride as u32,
        (s.m * s.n) as u32,
        reduce as u32,
        (mode == BatchMode::SumInto) as u32,
        vec4_a as u32,
        vec4_b as u32,
        0,
        0,
        0,
    ];
    let groups = [
        s.n.div_ceil(tile) as u32,
        s.m.div_ceil(tile) as u32,
        if reduce { 1 } else { s.batch as u32 },
    ];
    job.dispatch(pipeline, &params, &[a, b, c], groups)
}
