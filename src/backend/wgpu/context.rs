//! The device: adapter, device, queue and compiled pipelines, plus the plumbing that
//! turns wgpu's errors (which panic by default) into [`Error::Device`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use wgpu::util::DeviceExt;

use super::matmul::MatmulKernel;
use super::memory::{size_class, BufferKind, GpuStats, Memory, Operand};
use crate::{Error, Result};

/// The compute pipelines of the built-in kernels, compiled once per context.
pub(super) struct Pipelines {
    /// `matmul.wgsl`: batched, register-tiled C = op(A) · op(B).
    pub(super) matmul: wgpu::ComputePipeline,
    /// `matmul128.wgsl`: the same contract with 128 x 128 tiles, for large matrices.
    pub(super) matmul128: wgpu::ComputePipeline,
    /// `conv.wgsl::im2col`: image patches to columns.
    pub(super) im2col: wgpu::ComputePipeline,
    /// `conv.wgsl::col2im`: columns back to an image, summing overlaps.
    pub(super) col2im: wgpu::ComputePipeline,
    /// `conv.wgsl::bias_add`: one bias per channel plane.
    pub(super) bias_add: wgpu::ComputePipeline,
}

/// A wgpu device ready to run this crate's kernels.
///
/// Holds the adapter's description, the device and queue, the compiled pipelines, the
/// resident-parameter cache and the temporary-buffer pool. Calls on one context are
/// serialised by an internal lock (wgpu's error scopes are per device, not per thread).
pub struct WgpuContext {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    pub(super) pipelines: Pipelines,
    /// Errors wgpu raised outside any error scope, recorded instead of panicking.
    uncaptured: Arc<Mutex<Vec<String>>>,
    /// Set by the device-lost callback.
    lost: Arc<Mutex<Option<String>>>,
    memory: Mutex<Memory>,
    /// A caller's cap on the bytes of one binding (u64::MAX: the adapter's limit).
    binding_cap: AtomicU64,
    /// 0: each matmul picks its kernel by shape; 1: always Tile64; 2: always Tile128.
    forced_kernel: AtomicU8,
    /// Buffers of dropped [`super::GpuArray`]s, handed to the pool by the next job (a
    /// drop may happen while a job holds the memory lock).
    returned: Mutex<Vec<wgpu::Buffer>>,
    /// Pipelines compiled on first use ([`WgpuContext::cached_pipeline`]), by (file, entry).
    lazy_pipelines: Mutex<HashMap<(&'static str, &'static str), wgpu::ComputePipeline>>,
}

/// The backends named by `WGPU_BACKEND` (e.g. `vulkan`, `metal`, `dx12`, `gl`, or a comma
/// list), or the primary ones (Vulkan, Metal, DX12) when it is unset. GL is opt-in: its
/// shader compiles are slow enough to look like a hang.
fn backends_from_env() -> Result<wgpu::Backends> {
    match std::env::var("WGPU_BACKEND") {
        Ok(value) => {
            let backends = wgpu::Backends::from_comma_list(&value);
            if backends.is_empty() {
                Err(Error::Device(format!(
                    "WGPU_BACKEND={value:?} names no backend; expected vulkan, metal, dx12 or gl"
                )))
            } else {
                Ok(backends)
            }
        }
        Err(_) => Ok(wgpu::Backends::PRIMARY),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

fn device_error(what: impl std::fmt::Display) -> Error {
    Error::Device(what.to_string())
}

impl WgpuContext {
    /// Finds an adapter (honouring `WGPU_BACKEND`), opens a device with the adapter's
    /// limits and compiles every kernel.
    ///
    /// Returns `Error::Device("no wgpu adapter found ...")` when the machine has no usable
    /// adapter, and `Error::Device` for any other failure; it does not panic (a panic
    /// inside wgpu's initialisation is caught and returned as an error).
    pub fn new() -> Result<Self> {
        Self::with_backends(backends_from_env()?)
    }

    /// Like [`WgpuContext::new`] but on the given backends, ignoring `WGPU_BACKEND`
    /// (`wgpu::Backends::empty()` gives the no-adapter error).
    pub fn with_backends(backends: wgpu::Backends) -> Result<Self> {
        std::panic::catch_unwind(|| pollster::block_on(Self::create(backends))).unwrap_or_else(
            |p| {
                Err(device_error(format!(
                    "wgpu initialisation panicked: {}",
                    panic_message(&*p)
                )))
            },
        )
    }

    async fn create(backends: wgpu::Backends) -> Result<Self> {
        let instance = wgpu::Instance::new(&wgpu::InstanceDescriptor {
            backends,
            ..wgpu::InstanceDescriptor::from_env_or_default()
        });
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
            })
            .await
            .map_err(|e| {
                device_error(format!(
                    "no wgpu adapter found (backends {backends:?}): {e}; install a driver \
                     (e.g. Mesa's software Vulkan: mesa-vulkan-drivers) or set WGPU_BACKEND"
                ))
            })?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("dalle compute"),
                required_features: wgpu::Features::empty(),
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| {
                device_error(format!(
                    "opening a device on {} ({:?}): {e}",
                    info.name, info.backend
                ))
            })?;

        let uncaptured = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&uncaptured);
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut errors) = sink.lock() {
                errors.push(e.to_string());
            }
        }));
        let lost = Arc::new(Mutex::new(None));
        let lost_sink = Arc::clone(&lost);
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut lost) = lost_sink.lock() {
                *lost = Some(format!("device lost ({reason:?}): {message}"));
            }
        });

        let conv_src = include_str!("conv.wgsl");
        let pipelines = Pipelines {
            // The matmul kernels guard every index themselves (tests/wgpu_kernels.rs runs
            // ragged shapes on both): wgpu's injected bounds checks cost them a third of
            // their speed on an H200 (20 vs 30 TFLOP/s at n = 8192), so they go without.
            matmul: compile_with(&device, "matmul.wgsl", super::matmul::MATMUL_WGSL, "matmul", false)?,
            matmul128: compile_with(&device, "matmul128.wgsl", super::matmul::MATMUL128_WGSL, "matmul", false)?,
            im2col: compile(&device, "conv.wgsl", conv_src, "im2col")?,
            col2im: compile(&device, "conv.wgsl", conv_src, "col2im")?,
            bias_add: compile(&device, "conv.wgsl", conv_src, "bias_add")?,
        };
        Ok(WgpuContext {
            device,
            queue,
            info,
            limits,
            pipelines,
            uncaptured,
            lost,
            memory: Mutex::new(Memory::default()),
            binding_cap: AtomicU64::new(u64::MAX),
            forced_kernel: AtomicU8::new(0),
            returned: Mutex::new(Vec::new()),
            lazy_pipelines: Mutex::new(HashMap::new()),
        })
    }

    /// The adapter's name, vendor, device type, driver and backend.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// Whether the adapter is a CPU rasteriser (lavapipe, llvmpipe, WARP): results are
    /// right but timings say nothing about a GPU.
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// One line naming the adapter, e.g. `llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan, Cpu)`.
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?}, driver {} {})",
            self.info.name,
            self.info.backend,
            self.info.device_type,
            self.info.driver,
            self.info.driver_info
        )
    }

    /// The largest buffer a kernel may bind, in bytes: the adapter's limit, or the cap
    /// set by [`WgpuContext::cap_binding_bytes`] when lower. Convolutions split their
    /// batch into chunks that fit; a matmul operand above it is an error.
    pub fn max_binding_bytes(&self) -> u64 {
        let adapter =
            (self.limits.max_storage_buffer_binding_size as u64).min(self.limits.max_buffer_size);
        adapter.min(self.binding_cap.load(Ordering::Relaxed))
    }

    /// Caps the bytes of one binding below the adapter's limit (to bound the GPU memory
    /// a convolution's columns take; `u64::MAX` removes the cap).
    pub fn cap_binding_bytes(&self, bytes: u64) {
        self.binding_cap.store(bytes.max(16), Ordering::Relaxed);
    }

    /// Memory-traffic counters since the context was created.
    pub fn stats(&self) -> GpuStats {
        self.memory.lock().map(|m| m.stats).unwrap_or_default()
    }

    /// Bytes held on the GPU by resident parameters.
    pub fn resident_bytes(&self) -> u64 {
        self.memory.lock().map(|m| m.resident_bytes()).unwrap_or(0)
    }

    /// Forgets resident parameter `id`; its next use uploads it again.
    pub fn evict(&self, id: u64) {
        if let Ok(mut m) = self.memory.lock() {
            m.evict(id);
        }
    }

    /// Forgets every resident parameter and frees the idle pooled buffers.
    pub fn clear_cache(&self) {
        if let Ok(mut m) = self.memory.lock() {
            m.clear();
        }
    }

    /// Makes every matmul on this context (convolutions' included) use `kernel`, or,
    /// with `None`, the kernel [`MatmulKernel::for_shape`] picks. Both kernels compute
    /// the same products; tests and benchmarks force one to exercise or time it.
    pub fn force_matmul_kernel(&self, kernel: Option<MatmulKernel>) {
        let code = match kernel {
            None => 0,
            Some(MatmulKernel::Tile64) => 1,
            Some(MatmulKernel::Tile128) => 2,
        };
        self.forced_kernel.store(code, Ordering::Relaxed);
    }

    /// The kernel forced by [`WgpuContext::force_matmul_kernel`], if any.
    pub(super) fn forced_matmul_kernel(&self) -> Option<MatmulKernel> {
        match self.forced_kernel.load(Ordering::Relaxed) {
            1 => Some(MatmulKernel::Tile64),
            2 => Some(MatmulKernel::Tile128),
            _ => None,
        }
    }

    /// Compiles WGSL `source` and builds a compute pipeline for `entry`. Compile and
    /// validation errors come back as [`Error::Device`] naming `label` and `entry`. The
    /// built-in kernels are compiled through this at creation.
    pub fn compile_pipeline(
        &self,
        label: &str,
        source: &str,
        entry: &str,
    ) -> Result<wgpu::ComputePipeline> {
        let _guard = self.lock()?;
        compile(&self.device, label, source, entry)
    }

    /// The pipeline of `entry` in the WGSL file `label` (`source`), compiled on first use
    /// and kept: the kernels of the GPU-array ops. Compiling takes the context's lock,
    /// so this is called before a job opens, never while one is alive.
    pub(super) fn cached_pipeline(&self, label: &'static str, source: &'static str, entry: &'static str) -> Result<wgpu::ComputePipeline> {
        let poisoned = || device_error("the pipeline cache was poisoned by an earlier panic");
        if let Some(compiled) = self.lazy_pipelines.lock().map_err(|_| poisoned())?.get(&(label, entry)) {
            return Ok(compiled.clone());
        }
        let compiled = self.compile_pipeline(label, source, entry)?;
        self.lazy_pipelines.lock().map_err(|_| poisoned())?.insert((label, entry), compiled.clone());
        Ok(compiled)
    }

    /// [`WgpuContext::compile_pipeline`] without the bounds checks wgpu injects into
    /// every array access (benchmarks use it to measure what the checks cost).
    ///
    /// # Safety
    /// An out-of-range index in such a kernel is undefined behaviour on the GPU: call
    /// it only with kernels whose every index is guarded, as the built-in ones are.
    pub unsafe fn compile_pipeline_unchecked(
        &self,
        label: &str,
        source: &str,
        entry: &str,
    ) -> Result<wgpu::ComputePipeline> {
        let _guard = self.lock()?;
        compile_with(&self.device, label, source, entry, false)
    }

    /// Seconds to upload `len` f32 values to a GPU buffer and to read them back, each
    /// timed from the call to the data being in place (for benchmarks).
    pub fn time_transfers(&self, len: usize) -> Result<(f64, f64)> {
        let data = vec![1.0f32; len.max(1)];
        let mut job = self.job("wgpu transfer timing")?;
        let buffer = job.scratch("data", data.len())?;
        job.write(&buffer, &data); // warm-up: the pool's buffer and the staging memory
        job.read(&buffer, data.len())?;
        let start = std::time::Instant::now();
        job.write(&buffer, &data);
        job.submit()?;
        let upload = start.elapsed().as_secs_f64();
        let start = std::time::Instant::now();
        let back = job.read(&buffer, data.len())?;
        let download = start.elapsed().as_secs_f64();
        job.finish()?;
        if back != data {
            return Err(device_error("transfer timing: the data read back differs from the data sent"));
        }
        Ok((upload, download))
    }

    fn lock(&self) -> Result<MutexGuard<'_, Memory>> {
        self.memory
            .lock()
            .map_err(|_| device_error("wgpu context lock poisoned by an earlier panic"))
    }

    /// Takes back the buffer of a dropped [`super::GpuArray`] (pooled by the next job).
    pub(super) fn release_storage(&self, buffer: wgpu::Buffer) {
        if let Ok(mut returned) = self.returned.lock() {
            returned.push(buffer);
        }
    }

    /// Starts one GPU job: takes the lock, checks the device is alive, opens error scopes.
    pub(super) fn job(&self, label: &'static str) -> Result<Job<'_>> {
        let mut memory = self.lock()?;
        if let Ok(mut returned) = self.returned.lock() {
            for buffer in returned.drain(..) {
                memory.release(BufferKind::Storage, buffer);
            }
        }
        if let Some(lost) = self.lost.lock().ok().and_then(|l| l.clone()) {
            return Err(device_error(lost));
        }
        push_scopes(&self.device);
        Ok(Job {
            ctx: self,
            memory,
            label,
            encoder: None,
            inherited: 0,
            scratch: Vec::new(),
            scopes_open: true,
        })
    }
}

fn push_scopes(device: &wgpu::Device) {
    device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    device.push_error_scope(wgpu::ErrorFilter::Validation);
    device.push_error_scope(wgpu::ErrorFilter::Internal);
}

/// Pops the three scopes of [`push_scopes`]; the first error found, if any.
fn pop_scopes(device: &wgpu::Device) -> Option<wgpu::Error> {
    let internal = pollster::block_on(device.pop_error_scope());
    let validation = pollster::block_on(device.pop_error_scope());
    let oom = pollster::block_on(device.pop_error_scope());
    internal.or(validation).or(oom)
}

fn compile(
    device: &wgpu::Device,
    label: &str,
    source: &str,
    entry: &str,
) -> Result<wgpu::ComputePipeline> {
    compile_with(device, label, source, entry, true)
}

/// [`compile`], with wgpu's injected bounds checks on (`checked`) or off.
fn compile_with(
    device: &wgpu::Device,
    label: &str,
    source: &str,
    entry: &str,
    checked: bool,
) -> Result<wgpu::ComputePipeline> {
    push_scopes(device);
    let desc = wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    };
    let module = if checked {
        device.create_shader_module(desc)
    } else {
        // SAFETY: only reached for the built-in matmul kernels and through
        // `compile_pipeline_unchecked`, whose caller vouches that every index the
        // kernel computes is in range.
        unsafe { device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) }
    };
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(entry),
        layout: None,
        module: &module,
        entry_point: Some(entry),
        compilation_options: wgpu::PipelineCompilationOptions::default(),
        cache: None,
    });
    match pop_scopes(device) {
        Some(e) => Err(device_error(format!("compiling {label}::{entry}: {e}"))),
        None => Ok(pipeline),
    }
}

/// Enqueued jobs whose commands go to the GPU in one submission (see `Job::enqueue`):
/// enough to save most of the per-submission cost, few enough that the GPU starts on
/// a step's first kernels while the host records the rest.
pub(super) const ENQUEUED_PER_SUBMISSION: usize = 16;

/// One GPU call in progress: holds the context's lock, its error scopes, the command
/// encoder being recorded and the pooled buffers it borrowed (returned on drop).
pub(super) struct Job<'c> {
    ctx: &'c WgpuContext,
    memory: MutexGuard<'c, Memory>,
    label: &'static str,
    encoder: Option<wgpu::CommandEncoder>,
    /// Enqueued jobs whose commands `encoder` already holds.
    inherited: usize,
    scratch: Vec<(BufferKind, wgpu::Buffer)>,
    scopes_open: bool,
}

impl Job<'_> {
    fn check_size(&self, what: &str, bytes: u64) -> Result<()> {
        let max = self.ctx.max_binding_bytes();
        if bytes > max {
            return Err(device_error(format!(
                "{}: {what} needs {bytes} bytes, more than the adapter's largest binding ({max} bytes)",
                self.label
            )));
        }
        Ok(())
    }

    /// A pooled storage buffer for `len` f32 values; its contents are unspecified.
    pub(super) fn scratch(&mut self, what: &str, len: usize) -> Result<wgpu::Buffer> {
        let bytes = len as u64 * 4;
        self.check_size(what, bytes)?;
        let size = size_class(bytes, self.ctx.max_binding_bytes());
        let buffer = self
            .memory
            .acquire(&self.ctx.device, BufferKind::Storage, size);
        self.scratch.push((BufferKind::Storage, buffer.clone()));
        Ok(buffer)
    }

    /// A pooled storage buffer for `len` values that outlives the job: the result of a
    /// kernel on GPU arrays (back to the pool when the array is dropped).
    pub(super) fn output(&mut self, what: &str, len: usize) -> Result<super::GpuArray> {
        let bytes = len as u64 * 4;
        self.check_size(what, bytes)?;
        let size = size_class(bytes, self.ctx.max_binding_bytes());
        let buffer = self.memory.acquire(&self.ctx.device, BufferKind::Storage, size);
        Ok(super::GpuArray::from_buffer(buffer, len))
    }

    /// Leaves what has been recorded for the GPU without waiting: the kernels on GPU
    /// arrays, whose results stay there. The commands join those of earlier enqueued
    /// jobs in one command buffer, submitted once [`ENQUEUED_PER_SUBMISSION`] jobs are in
    /// it or when a later job writes to a buffer, waits or reads back: one submission
    /// for many small kernels. Commands run in the order they were recorded, so the
    /// scratch buffers this job returns to the pool are safe to hand out again.
    pub(super) fn enqueue(&mut self) {
        if let Some(encoder) = self.encoder.take() {
            let jobs = self.inherited + 1;
            self.inherited = 0;
            if jobs >= ENQUEUED_PER_SUBMISSION {
                self.submit_now(encoder);
            } else {
                self.memory.pending = Some((encoder, jobs));
            }
        }
    }

    /// Submits `encoder` to the queue (no wait).
    fn submit_now(&mut self, encoder: wgpu::CommandEncoder) {
        self.ctx.queue.submit([encoder.finish()]);
        self.memory.stats.submissions += 1;
    }

    /// Submits every command recorded so far, this job's and the enqueued ones (no
    /// wait): a write to a buffer lands before the next submission's commands, so the
    /// commands recorded before it must be submitted first.
    fn flush(&mut self) {
        if let Some(encoder) = self.encoder.take() {
            self.submit_now(encoder);
        } else if let Some((encoder, _)) = self.memory.pending.take() {
            self.submit_now(encoder);
        }
        self.inherited = 0;
    }

    /// Records a copy of `len` values from `src` (starting at value `src_at`) to `dst`
    /// (at value `dst_at`), on the GPU.
    pub(super) fn copy(&mut self, src: &wgpu::Buffer, src_at: usize, dst: &wgpu::Buffer, dst_at: usize, len: usize) {
        if len > 0 {
            self.encoder().copy_buffer_to_buffer(src, src_at as u64 * 4, dst, dst_at as u64 * 4, len as u64 * 4);
        }
    }

    /// Records setting the first `len` values of `buffer` to zero, on the GPU.
    pub(super) fn clear(&mut self, buffer: &wgpu::Buffer, len: usize) {
        if len > 0 {
            self.encoder().clear_buffer(buffer, 0, Some(len as u64 * 4));
        }
    }

    /// Writes `data` at the start of `buffer` before the next submission.
    pub(super) fn write(&mut self, buffer: &wgpu::Buffer, data: &[f32]) {
        if !data.is_empty() {
            self.flush();
            self.ctx
                .queue
                .write_buffer(buffer, 0, bytemuck::cast_slice(data));
            self.memory.stats.host_uploads += 1;
            self.memory.stats.bytes_uploaded += data.len() as u64 * 4;
        }
    }

    /// A GPU buffer holding `operand`: the cached one for a resident parameter at the
    /// same version, otherwise a fresh upload.
    pub(super) fn upload(&mut self, what: &str, operand: &Operand<'_>) -> Result<wgpu::Buffer> {
        match operand {
            Operand::Host(data) => {
                let buffer = self.scratch(what, data.len())?;
                self.write(&buffer, data);
                Ok(buffer)
            }
            Operand::Resident { id, version, data } => {
                self.check_size(what, data.len() as u64 * 4)?;
                self.flush(); // the cache may overwrite the parameter's buffer
                let (device, queue) = (&self.ctx.device, &self.ctx.queue);
                Ok(self.memory.resident(device, queue, *id, *version, data))
            }
        }
    }

    /// The command encoder this job records into: the enqueued jobs' one, continued,
    /// or a new one.
    fn encoder(&mut self) -> &mut wgpu::CommandEncoder {
        if self.encoder.is_none() {
            let encoder = match self.memory.pending.take() {
                Some((encoder, jobs)) => {
                    self.inherited = jobs;
                    encoder
                }
                None => self.ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(self.label) }),
            };
            self.encoder = Some(encoder);
        }
        self.encoder.as_mut().expect("just set")
    }

    /// Records one dispatch of `pipeline` with `params` as its uniform (binding 0) and
    /// `buffers` as bindings 1, 2, ...
    pub(super) fn dispatch(
        &mut self,
        pipeline: &wgpu::ComputePipeline,
        params: &[u32],
        buffers: &[&wgpu::Buffer],
        groups: [u32; 3],
    ) -> Result<()> {
        let max = self.ctx.limits.max_compute_workgroups_per_dimension;
        if groups.iter().any(|&g| g > max) {
            return Err(device_error(format!(
                "{}: dispatch of {groups:?} workgroups exceeds the adapter's limit of {max} per dimension",
                self.label
            )));
        }
        if groups.contains(&0) {
            return Ok(());
        }
        let device = &self.ctx.device;
        let uniform = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("dalle kernel params"),
            contents: bytemuck::cast_slice(params),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        }];
        for (i, buffer) in buffers.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: buffer.as_entire_binding(),
            });
        }
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(self.label),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let label = self.label;
        let mut pass = self
            .encoder()
            .begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(label),
                timestamp_writes: None,
            });
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        Ok(())
    }

    /// Records a 1-D elementwise dispatch over `total` elements, 256 per workgroup,
    /// folded into a 2-D grid when it passes the per-dimension limit (the kernels
    /// recompute the flat index as `x + y * 256 * groups_x`).
    pub(super) fn dispatch_elementwise(
        &mut self,
        pipeline: &wgpu::ComputePipeline,
        params: &[u32],
        buffers: &[&wgpu::Buffer],
        total: usize,
    ) -> Result<()> {
        let groups = total.div_ceil(256) as u64;
        let max = self.ctx.limits.max_compute_workgroups_per_dimension as u64;
        let x = groups.min(max);
        let y = if x == 0 { 0 } else { groups.div_ceil(x) };
        self.dispatch(pipeline, params, buffers, [x as u32, y as u32, 1])
    }

    /// Submits what has been recorded and waits for the GPU to finish it.
    pub(super) fn submit(&mut self) -> Result<()> {
        self.flush();
        self.ctx
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| device_error(format!("{}: waiting for the GPU: {e}", self.label)))?;
        Ok(())
    }

    /// Submits everything recorded, waits, and copies the first `len` values of `buffer`
    /// back to the host.
    pub(super) fn read(&mut self, buffer: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
        if len == 0 {
            self.submit()?;
            return Ok(Vec::new());
        }
        let bytes = len as u64 * 4;
        let size = size_class(bytes, u64::MAX);
        let staging = self
            .memory
            .acquire(&self.ctx.device, BufferKind::Staging, size);
        self.scratch.push((BufferKind::Staging, staging.clone()));
        self.encoder()
            .copy_buffer_to_buffer(buffer, 0, &staging, 0, bytes);
        self.submit()?;
        let (sender, receiver) = std::sync::mpsc::channel();
        let slice = staging.slice(..bytes);
        slice.map_async(wgpu::MapMode::Read, move |result| {
            let _ = sender.send(result);
        });
        self.ctx
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| device_error(format!("{}: waiting for the read-back: {e}", self.label)))?;
        match receiver.try_recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(device_error(format!(
                    "{}: mapping the result: {e}",
                    self.label
                )))
            }
            Err(_) => {
                return Err(device_error(format!(
                    "{}: the result was never mapped",
                    self.label
                )))
            }
        }
        let values = {
            let view = slice.get_mapped_range();
            bytemuck::pod_collect_to_vec::<u8, f32>(&view)
        };
        staging.unmap();
        self.memory.stats.bytes_downloaded += bytes;
        Ok(values)
    }

    /// Closes the error scopes and reports any error wgpu raised during the job.
    pub(super) fn finish(mut self) -> Result<()> {
        self.scopes_open = false;
        let scoped = pop_scopes(&self.ctx.device);
        let uncaptured: Vec<String> = self
            .ctx
            .uncaptured
            .lock()
            .map(|mut e| e.drain(..).collect())
            .unwrap_or_default();
        let lost = self.ctx.lost.lock().ok().and_then(|l| l.clone());
        if let Some(e) = scoped {
            return Err(device_error(format!("{}: {e}", self.label)));
        }
        if let Some(e) = uncaptured.first() {
            return Err(device_error(format!("{}: {e}", self.label)));
        }
        if let Some(lost) = lost {
            return Err(device_error(format!("{}: {lost}", self.label)));
        }
        Ok(())
    }
}

impl Drop for Job<'_> {
    fn drop(&mut self) {
        if self.scopes_open {
            // An early return: close the scopes so they don't leak into the next job.
            let _ = pop_scopes(&self.ctx.device);
        }
        // An early return with commands recorded (maybe an earlier job's too): keep them
        // for the next submission, so no enqueued job's work is lost.
        if let Some(encoder) = self.encoder.take() {
            let jobs = self.inherited + 1;
            self.memory.pending = Some((encoder, jobs));
        }
        // Every path that submitted work waited for it or left it enqueued; commands run
        // in recorded order, so a later user of these buffers runs after this job.
        for (kind, buffer) in self.scratch.drain(..) {
            self.memory.release(kind, buffer);
        }
    }
}
