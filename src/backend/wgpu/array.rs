//! Values that stay on the GPU between kernels: [`GpuArray`].
//!
//! The functions of [`super::matmul`] and [`super::conv`] take host data and return
//! host data, so every call crosses the bus twice. A [`GpuArray`] is a buffer of f32
//! values in GPU memory that the next kernel reads where it is: a chain of operations
//! on GPU arrays uploads its inputs once and reads back only what the host asks for
//! ([`GpuArray::to_vec`]).
//!
//! Kernels on GPU arrays are recorded and submitted without waiting for the GPU (one
//! queue runs them in submission order); only a read-back waits. Buffers come from the
//! global context's pool and go back to it when the array is dropped: the queue's order
//! makes reuse safe even while earlier kernels that read the buffer are still running,
//! because any later writer is submitted after them.

use super::context::WgpuContext;
use crate::Result;

/// A row-major array of f32 values in GPU memory, owned by the process-wide context
/// ([`super::global`]). The shape is the caller's business; the array knows its length.
pub struct GpuArray {
    /// `None` only while being dropped.
    buffer: Option<wgpu::Buffer>,
    len: usize,
}

impl GpuArray {
    /// Wraps a pooled buffer of at least `len` values (see [`super::context::Job::output`]).
    pub(super) fn from_buffer(buffer: wgpu::Buffer, len: usize) -> GpuArray {
        GpuArray { buffer: Some(buffer), len }
    }

    /// Copies `values` to the GPU (the upload is queued; no wait).
    pub fn upload(values: &[f32]) -> Result<GpuArray> {
        let ctx = super::global()?;
        let mut job = ctx.job("wgpu upload")?;
        let out = job.output("array", values.len())?;
        job.write(out.buffer(), values);
        job.enqueue();
        job.finish()?;
        Ok(out)
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Waits for every kernel queued so far and reads the values back.
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        let ctx = super::global()?;
        let mut job = ctx.job("wgpu read-back")?;
        let values = job.read(self.buffer(), self.len)?;
        job.finish()?;
        Ok(values)
    }

    /// The buffer (at least `4 len` bytes; the pool rounds sizes up).
    pub(super) fn buffer(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("a live GpuArray holds its buffer")
    }

    /// The context that owns every GPU array.
    pub(super) fn context() -> Result<&'static WgpuContext> {
        super::global()
    }
}

/// A new array of `len` values written by one invocation of `entry` (of the WGSL file
/// `file`) per value, with the uniform `words` (binding 0), the result at binding 1 and
/// `inputs` at bindings 2, 3, ...: the shape of every elementwise kernel on GPU arrays.
pub(super) fn map_kernel(op: &'static str, (file, source, entry): (&'static str, &'static str, &'static str), words: &[u32], inputs: &[&GpuArray], len: usize) -> Result<GpuArray> {
    let ctx = GpuArray::context()?;
    let kernel = ctx.cached_pipeline(file, source, entry)?;
    let mut job = ctx.job(op)?;
    let out = job.output(entry, len)?;
    if len > 0 {
        let mut buffers = vec![out.buffer()];
        buffers.extend(inputs.iter().map(|a| a.buffer()));
        job.dispatch_elementwise(&kernel, words, &buffers, len)?;
        job.enqueue();
    }
    job.finish()?;
    Ok(out)
}

impl Drop for GpuArray {
    fn drop(&mut self) {
        if let (Some(buffer), Ok(ctx)) = (self.buffer.take(), super::global()) {
            ctx.release_storage(buffer);
        }
    }
}

impl std::fmt::Debug for GpuArray {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuArray({} values)", self.len)
    }
}
