//! GPU memory: what the caller hands in ([`Operand`]), the cache that keeps parameters
//! resident between steps, and the pool that recycles temporaries.
//!
//! A parameter is uploaded once per *version*: the engine names it `(id, version)` and
//! bumps the version whenever the optimiser changes it, so a forward and a backward pass
//! at the same step share one upload. Everything else (activations, gradients,
//! im2col columns) lives in pooled buffers for the length of one call.

use std::borrow::Cow;
use std::collections::HashMap;

use ndarray::{ArrayBase, Data, Dimension};

/// Bytes the pool may keep idle before it frees buffers instead of keeping them.
const POOL_MAX_IDLE_BYTES: u64 = 512 << 20;
/// Smallest buffer the pool hands out (and the size granularity of small buffers).
const POOL_MIN_BYTES: u64 = 256;

/// One input of a kernel: host data, optionally tagged as a resident parameter.
///
/// Data must be row-major and contiguous; [`From`] conversions from slices, `Vec`s and
/// ndarray arrays are provided (a non-contiguous array view is copied into standard
/// layout first).
#[derive(Clone, Debug)]
pub enum Operand<'a> {
    /// Uploaded into a pooled temporary buffer for this call only.
    Host(Cow<'a, [f32]>),
    /// Parameter `id` at `version`: uploaded only when the cache holds another version
    /// (or nothing) for `id`, then kept on the GPU. `data` is read only on upload; it is
    /// the caller's promise that one `(id, version)` always means the same values.
    Resident {
        /// Caller-chosen identity of the parameter (e.g. its index in the model).
        id: u64,
        /// Bumped by the caller whenever the values change (e.g. after an optimiser step).
        version: u64,
        /// The values, uploaded when `(id, version)` is not cached.
        data: Cow<'a, [f32]>,
    },
}

impl<'a> Operand<'a> {
    /// Host data, uploaded for this call only.
    pub fn host(data: &'a [f32]) -> Self {
        Operand::Host(Cow::Borrowed(data))
    }

    /// Parameter `id` at `version`, kept resident on the GPU.
    pub fn resident(id: u64, version: u64, data: &'a [f32]) -> Self {
        Operand::Resident {
            id,
            version,
            data: Cow::Borrowed(data),
        }
    }

    /// The host values.
    pub fn data(&self) -> &[f32] {
        match self {
            Operand::Host(d) | Operand::Resident { data: d, .. } => d,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data().len()
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.data().is_empty()
    }
}

impl<'a> From<&'a [f32]> for Operand<'a> {
    fn from(data: &'a [f32]) -> Self {
        Operand::host(data)
    }
}

impl<'a> From<&'a Vec<f32>> for Operand<'a> {
    fn from(data: &'a Vec<f32>) -> Self {
        Operand::host(data)
    }
}

impl<'a, S: Data<Elem = f32>, D: Dimension> From<&'a ArrayBase<S, D>> for Operand<'a> {
    fn from(array: &'a ArrayBase<S, D>) -> Self {
        match array.as_slice() {
            Some(slice) => Operand::Host(Cow::Borrowed(slice)),
            None => Operand::Host(Cow::Owned(array.iter().copied().collect())),
        }
    }
}

/// Counters for the memory traffic of a [`super::WgpuContext`], since its creation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuStats {
    /// Uploads of resident parameters (a new `(id, version)`).
    pub resident_uploads: u64,
    /// Uses of a resident parameter that needed no upload.
    pub resident_hits: u64,
    /// Uploads of host operands into temporaries.
    pub host_uploads: u64,
    /// Bytes copied host -> GPU.
    pub bytes_uploaded: u64,
    /// Bytes copied GPU -> host.
    pub bytes_downloaded: u64,
    /// Buffers created by the pool (a miss).
    pub buffers_created: u64,
    /// Buffers the pool handed out again (a hit).
    pub buffers_reused: u64,
    /// Command buffers submitted to the queue.
    pub submissions: u64,
}

/// What a pooled buffer is for: storage (kernels) or staging (reading results back).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum BufferKind {
    Storage,
    Staging,
}

/// A parameter kept on the GPU.
struct ResidentEntry {
    version: u64,
    len: usize,
    buffer: wgpu::Buffer,
}

/// The mutable memory state of a context, behind its lock.
#[derive(Default)]
pub(super) struct Memory {
    free: HashMap<(BufferKind, u64), Vec<wgpu::Buffer>>,
    idle_bytes: u64,
    resident: HashMap<u64, ResidentEntry>,
    pub(super) stats: GpuStats,
    /// Commands of jobs that enqueued their work, recorded but not yet submitted, and
    /// how many jobs they hold (see `Job::enqueue`).
    pub(super) pending: Option<(wgpu::CommandEncoder, usize)>,
}

/// The pool's size class for a request of `bytes`: the next power of two (so buffers are
/// reused across nearby sizes), unless that would pass `max`, then 16-byte granularity.
pub(super) fn size_class(bytes: u64, max: u64) -> u64 {
    let pow2 = bytes.max(POOL_MIN_BYTES).next_power_of_two();
    if pow2 <= max {
        pow2
    } else {
        bytes.div_ceil(16) * 16
    }
}

impl Memory {
    /// A buffer of at least `size` bytes (a size class) from the pool, or a new one.
    pub(super) fn acquire(
        &mut self,
        device: &wgpu::Device,
        kind: BufferKind,
        size: u64,
    ) -> wgpu::Buffer {
        if let Some(buffer) = self.free.get_mut(&(kind, size)).and_then(Vec::pop) {
            self.idle_bytes -= size;
            self.stats.buffers_reused += 1;
            return buffer;
        }
        self.stats.buffers_created += 1;
        let usage = match kind {
            BufferKind::Storage => {
                wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC
            }
            BufferKind::Staging => wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        };
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(match kind {
                BufferKind::Storage => "dalle pooled storage",
                BufferKind::Staging => "dalle pooled staging",
            }),
            size,
            usage,
            mapped_at_creation: false,
        })
    }

    /// Gives a buffer back to the pool once the GPU is done with it.
    pub(super) fn release(&mut self, kind: BufferKind, buffer: wgpu::Buffer) {
        let size = buffer.size();
        if self.idle_bytes + size > POOL_MAX_IDLE_BYTES {
            return; // dropped: wgpu frees it
        }
        self.idle_bytes += size;
        self.free.entry((kind, size)).or_default().push(buffer);
    }

    /// The resident buffer for `(id, version)` with `data`, uploading when needed.
    pub(super) fn resident(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        id: u64,
        version: u64,
        data: &[f32],
    ) -> wgpu::Buffer {
        if let Some(entry) = self.resident.get(&id) {
            if entry.version == version && entry.len == data.len() {
                self.stats.resident_hits += 1;
                return entry.buffer.clone();
            }
        }
        let bytes = (data.len() as u64 * 4).max(16).div_ceil(16) * 16;
        let buffer = match self.resident.remove(&id) {
            // Same size: overwrite in place. Earlier submissions that read it have
            // finished (every call waits for its results), so this cannot race.
            Some(old) if old.buffer.size() == bytes => old.buffer,
            _ => device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("dalle resident parameter"),
                size: bytes,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
        };
        if !data.is_empty() {
            queue.write_buffer(&buffer, 0, bytemuck::cast_slice(data));
        }
        self.stats.resident_uploads += 1;
        self.stats.bytes_uploaded += data.len() as u64 * 4;
        self.resident.insert(
            id,
            ResidentEntry {
                version,
                len: data.len(),
                buffer: buffer.clone(),
            },
        );
        buffer
    }

    /// Forgets parameter `id` (its buffer is freed once no call uses it).
    pub(super) fn evict(&mut self, id: u64) {
        self.resident.remove(&id);
    }

    /// Forgets every resident parameter and every idle pooled buffer.
    pub(super) fn clear(&mut self) {
        self.resident.clear();
        self.free.clear();
        self.idle_bytes = 0;
    }

    /// Bytes held by resident parameters.
    pub(super) fn resident_bytes(&self) -> u64 {
        self.resident.values().map(|e| e.buffer.size()).sum()
    }
}
