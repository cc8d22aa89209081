//! The [`Tensor`]: an n-dimensional f32 array that remembers how it was made.
//!
//! # For a reader who knows micrograd
//!
//! micrograd's `Value` holds one number, its `grad`, the `_prev` values it was
//! computed from and a `_backward` closure. A [`Tensor`] is the same idea at
//! array scale:
//!
//! | micrograd `Value` | [`Tensor`] |
//! |---|---|
//! | `data: float` | `data: ArrayD<f32>` (read with [`Tensor::data`]) |
//! | `grad: float` | `grad: Option<ArrayD<f32>>` (read with [`Tensor::grad`]) |
//! | `_prev` | the parents in its [`GradFn`] |
//! | `_backward()` | [`GradFn`]'s closure: output gradient in, one gradient per parent out |
//! | `backward()` | [`Tensor::backward`]: topological sort, then the closures in reverse |
//!
//! Every operation in [`crate::ops`] computes its output and, right beside it,
//! the closure that maps the output's gradient to its inputs' gradients. A
//! graph is recorded only when some input requires a gradient and we are not
//! inside [`no_grad`]; sampling and evaluation therefore record nothing.
//!
//! Tensors are cheap handles (`Arc`) to shared storage: cloning a tensor does
//! not copy its data. Parameters are updated in place by the optimisers
//! ([`Tensor::update`]), which bumps a version counter that device caches read.
//!
//! On the GPU ([`crate::backend::set_resident`]) a tensor may hold its values in
//! GPU memory ([`DeviceValue`]) instead: an op that ran there leaves its output
//! there, and the host array is filled only when [`Tensor::data`] asks for it.
//! Gradients then flow backwards as [`Value`]s, staying on the GPU between ops
//! that ran there (their [`GradFn::device_backward`]).

mod device;
mod graph;
pub mod gradcheck;
mod random;
mod shape;

pub use device::{DeviceValue, Value};
pub use graph::{enable_grad, is_grad_enabled, no_grad, EnableGradGuard, NoGradGuard};
pub use random::Rng;
pub use shape::{broadcast_shapes, reduce_to_shape, reduce_to_shape_ref};

use ndarray::{ArrayD, IxDyn};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The backward closure of one operation: given the gradient of the loss with
/// respect to the output (and the output's value), return the gradient with
/// respect to each parent, in order (`None` for a parent that needs none).
pub type BackwardFn =
    Box<dyn Fn(&ArrayD<f32>, &ArrayD<f32>) -> Vec<Option<ArrayD<f32>>> + Send + Sync>;

/// The backward closure of an operation that ran on the GPU: the output's gradient
/// in GPU memory in, one gradient per parent (in GPU memory) out.
pub type DeviceBackwardFn =
    Box<dyn Fn(&DeviceValue) -> crate::Result<Vec<Option<DeviceValue>>> + Send + Sync>;

/// How a tensor was computed: the operation's name, its inputs and its backward closure.
pub struct GradFn {
    /// The operation's name, for error messages and graph printing.
    pub name: &'static str,
    /// The tensors this one was computed from.
    pub parents: Vec<Tensor>,
    /// Maps (output gradient, output value) to one gradient per parent.
    pub backward: BackwardFn,
    /// `Some((axis, start))` when this output is the slice `start..` along
    /// `axis` of its one parent ([`Tensor::narrow`]). Once the parent already
    /// has a gradient, the backward pass adds this output's gradient into that
    /// slice of it instead of calling `backward`, which would build a
    /// parent-sized zero tensor to be added in full: the three chunks of a
    /// fused QKV projection then cost one parent-sized gradient, not three.
    pub slice_of_parent: Option<(usize, usize)>,
    /// For an operation that ran on the GPU: its backward on GPU values, which the
    /// walk prefers while the gradient is there ([`Tensor::from_device_op`]).
    pub device_backward: Option<DeviceBackwardFn>,
}

pub(crate) struct TensorInner {
    id: usize,
    /// The values on the host; an empty placeholder while `host_stale`.
    data: RwLock<ArrayD<f32>>,
    /// The values in GPU memory, when they are there.
    device: Mutex<Option<DeviceValue>>,
    /// Whether only `device` holds the current values (the host copy is filled on read).
    host_stale: AtomicBool,
    grad: Mutex<Option<Value>>,
    requires_grad: bool,
    /// Set by [`Tensor::freeze`]: a parameter that gradients pass by (it stays constant).
    frozen: AtomicBool,
    grad_fn: Option<GradFn>,
    version: AtomicU64,
}

/// An n-dimensional f32 tensor with reverse-mode automatic differentiation.
#[derive(Clone)]
pub struct Tensor {
    pub(crate) inner: Arc<TensorInner>,
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

impl Tensor {
    fn make(data: ArrayD<f32>, requires_grad: bool, grad_fn: Option<GradFn>) -> Tensor {
        Tensor::make_on(data, None, requires_grad, grad_fn)
    }

    /// A tensor whose values are `data` on the host, or `device` on the GPU (then
    /// `data` is an empty placeholder until read).
    fn make_on(data: ArrayD<f32>, device: Option<DeviceValue>, requires_grad: bool, grad_fn: Option<GradFn>) -> Tensor {
        crate::backend::cpu::memory::keep_freed_memory();
        let host_stale = device.is_some();
        Tensor {
            inner: Arc::new(TensorInner {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                data: RwLock::new(data),
                device: Mutex::new(device),
                host_stale: AtomicBool::new(host_stale),
                grad: Mutex::new(None),
                requires_grad,
                frozen: AtomicBool::new(false),
                grad_fn,
                version: AtomicU64::new(0),
            }),
        }
    }

    /// A constant tensor (no gradient) owning `data`.
    pub fn new(data: ArrayD<f32>) -> Tensor {
        Tensor::make(data, false, None)
    }

    /// A leaf tensor that requires a gradient: a trainable parameter.
    pub fn param(data: ArrayD<f32>) -> Tensor {
        Tensor::make(data, true, None)
    }

    /// A constant tensor of `shape` filled from `values` (row-major).
    ///
    /// Errors when `values.len()` is not the product of `shape`.
    pub fn from_vec(values: Vec<f32>, shape: &[usize]) -> crate::Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != values.len() {
            return Err(crate::Error::shape(
                "from_vec",
                format!("{} values cannot fill shape {:?} ({} elements)", values.len(), shape, n),
            ));
        }
        Ok(Tensor::new(ArrayD::from_shape_vec(IxDyn(shape), values).expect("checked length")))
    }

    /// A constant scalar (0-dimensional) tensor.
    pub fn scalar(v: f32) -> Tensor {
        Tensor::new(ArrayD::from_elem(IxDyn(&[]), v))
    }

    /// A constant tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor::new(ArrayD::zeros(IxDyn(shape)))
    }

    /// A constant tensor of ones.
    pub fn ones(shape: &[usize]) -> Tensor {
        Tensor::new(ArrayD::ones(IxDyn(shape)))
    }

    /// A constant tensor filled with `v`.
    pub fn full(shape: &[usize], v: f32) -> Tensor {
        Tensor::new(ArrayD::from_elem(IxDyn(shape), v))
    }

    /// `[0, 1, ..., n-1]` as f32.
    pub fn arange(n: usize) -> Tensor {
        Tensor::new(ArrayD::from_shape_fn(IxDyn(&[n]), |i| i[0] as f32))
    }

    // ANCHOR: from_op
    /// Build the output of an operation. A graph node is recorded only when
    /// gradients are enabled and at least one parent requires a gradient.
    pub fn from_op(
        data: ArrayD<f32>,
        name: &'static str,
        parents: &[&Tensor],
        backward: impl Fn(&ArrayD<f32>, &ArrayD<f32>) -> Vec<Option<ArrayD<f32>>> + Send + Sync + 'static,
    ) -> Tensor {
        Tensor::record(data, name, parents, Box::new(backward), None)
    }

    /// [`Tensor::from_op`] for an output that is the slice `start..` along
    /// `axis` of `parent` (see [`GradFn::slice_of_parent`]); `backward` places
    /// the gradient into a parent-sized zero tensor.
    pub fn from_slice_op(
        data: ArrayD<f32>,
        name: &'static str,
        parent: &Tensor,
        (axis, start): (usize, usize),
        backward: impl Fn(&ArrayD<f32>, &ArrayD<f32>) -> Vec<Option<ArrayD<f32>>> + Send + Sync + 'static,
    ) -> Tensor {
        Tensor::record(data, name, &[parent], Box::new(backward), Some((axis, start)))
    }

    fn record(data: ArrayD<f32>, name: &'static str, parents: &[&Tensor], backward: BackwardFn, slice_of_parent: Option<(usize, usize)>) -> Tensor {
        let track = is_grad_enabled() && parents.iter().any(|p| p.requires_grad());
        if !track {
            return Tensor::new(data);
        }
        let grad_fn = GradFn { name, parents: parents.iter().map(|p| (*p).clone()).collect(), backward, slice_of_parent, device_backward: None };
        Tensor::make(data, true, Some(grad_fn))
    }
    // ANCHOR_END: from_op

    /// The output of an operation that ran on the GPU: its values stay there.
    /// `backward` maps the output's gradient (on the GPU) to its parents' gradients.
    pub fn from_device_op(
        value: DeviceValue,
        name: &'static str,
        parents: &[&Tensor],
        backward: impl Fn(&DeviceValue) -> crate::Result<Vec<Option<DeviceValue>>> + Send + Sync + 'static,
    ) -> Tensor {
        let track = is_grad_enabled() && parents.iter().any(|p| p.requires_grad());
        if !track {
            return Tensor::from_device(value);
        }
        let host_backward: BackwardFn = Box::new(move |_, _| {
            panic!("{name} ran on the GPU and its backward needs the GPU, which failed (see the message above)")
        });
        let grad_fn = GradFn {
            name,
            parents: parents.iter().map(|p| (*p).clone()).collect(),
            backward: host_backward,
            slice_of_parent: None,
            device_backward: Some(Box::new(backward)),
        };
        Tensor::make_on(ArrayD::zeros(IxDyn(&[0])), Some(value), true, Some(grad_fn))
    }

    /// A constant tensor whose values are on the GPU.
    pub fn from_device(value: DeviceValue) -> Tensor {
        Tensor::make_on(ArrayD::zeros(IxDyn(&[0])), Some(value), false, None)
    }

    /// The values in GPU memory: the copy already there, or an upload kept for the
    /// next use (until the values change on the host).
    #[cfg(feature = "wgpu")]
    pub fn to_device(&self) -> crate::Result<DeviceValue> {
        let mut slot = self.inner.device.lock().expect("tensor device lock poisoned");
        if let Some(value) = slot.as_ref() {
            return Ok(value.clone());
        }
        let value = DeviceValue::upload(&self.inner.data.read().expect("tensor data lock poisoned"))?;
        *slot = Some(value.clone());
        Ok(value)
    }

    /// Whether the values are in GPU memory (maybe also on the host).
    pub fn is_on_device(&self) -> bool {
        self.inner.device.lock().expect("tensor device lock poisoned").is_some()
    }

    /// Fills the host copy from the GPU when only the GPU holds the values.
    ///
    /// # Panics
    /// When the read-back fails: the GPU held the only copy and was lost.
    fn sync_host(&self) {
        if !self.inner.host_stale.load(Ordering::Acquire) {
            return;
        }
        let slot = self.inner.device.lock().expect("tensor device lock poisoned");
        if self.inner.host_stale.load(Ordering::Acquire) {
            let value = slot.as_ref().expect("a stale host copy means the GPU holds the values");
            let values = value.to_host().unwrap_or_else(|e| panic!("reading a tensor of shape {:?} back from the GPU: {e}", value.shape()));
            *self.inner.data.write().expect("tensor data lock poisoned") = values;
            self.inner.host_stale.store(false, Ordering::Release);
        }
    }

    /// Marks the GPU copy as the only current one after a kernel changed it in place
    /// (an optimiser step on the GPU); the next host read fetches it.
    #[cfg(feature = "wgpu")]
    pub(crate) fn device_changed(&self) {
        self.inner.version.fetch_add(1, Ordering::AcqRel);
        self.inner.host_stale.store(true, Ordering::Release);
    }

    /// The GPU copy when it is the only current one (the host array is a placeholder).
    fn device_only(&self) -> Option<DeviceValue> {
        if !self.inner.host_stale.load(Ordering::Acquire) {
            return None;
        }
        self.inner.device.lock().expect("tensor device lock poisoned").clone()
    }

    /// A unique id for this tensor's storage (stable for its lifetime).
    pub fn id(&self) -> usize {
        self.inner.id
    }

    /// Increases each time the data is changed in place ([`Tensor::update`]);
    /// device caches use `(id, version)` to know when to upload again.
    pub fn version(&self) -> u64 {
        self.inner.version.load(Ordering::Acquire)
    }

    /// `(id, version)` when this is a leaf parameter, else `None`: lets a GPU
    /// backend keep the parameter resident until an optimiser step changes it.
    pub fn param_key(&self) -> Option<(u64, u64)> {
        // A frozen parameter is still a parameter: it stays resident too.
        (self.is_leaf() && self.inner.requires_grad).then(|| (self.id() as u64, self.version()))
    }

    /// Whether gradients flow to (or through) this tensor: false for constants and
    /// for frozen parameters ([`Tensor::freeze`]).
    pub fn requires_grad(&self) -> bool {
        self.inner.requires_grad && !self.inner.frozen.load(Ordering::Acquire)
    }

    // ANCHOR: freeze
    /// Freezes a parameter (PyTorch's `p.requires_grad_(False)`): operations on it record
    /// no graph on its account and `backward` gives it no gradient, but a gradient with
    /// respect to another input (an image) still flows *through* the operations that
    /// use it. Errors on a tensor computed by a recorded operation (only leaves can be
    /// frozen, as in PyTorch). Freezing a constant changes nothing.
    pub fn freeze(&self) -> crate::Result<()> {
        self.set_frozen(true)
    }

    /// Undoes [`Tensor::freeze`]: the parameter receives gradients again.
    pub fn unfreeze(&self) -> crate::Result<()> {
        self.set_frozen(false)
    }

    fn set_frozen(&self, frozen: bool) -> crate::Result<()> {
        if !self.is_leaf() {
            let op = self.grad_fn().map_or("?", |g| g.name);
            return Err(crate::Error::Msg(format!(
                "only a leaf (a parameter) can be frozen or unfrozen; this tensor of shape {:?} was computed by `{op}`",
                self.shape()
            )));
        }
        self.inner.frozen.store(frozen, Ordering::Release);
        Ok(())
    }
    // ANCHOR_END: freeze

    /// Whether [`Tensor::freeze`] froze this parameter.
    pub fn is_frozen(&self) -> bool {
        self.inner.frozen.load(Ordering::Acquire)
    }

    /// Whether this tensor is a leaf: not computed by a recorded operation.
    pub fn is_leaf(&self) -> bool {
        self.inner.grad_fn.is_none()
    }

    /// The operation that produced this tensor, if recorded.
    pub fn grad_fn(&self) -> Option<&GradFn> {
        self.inner.grad_fn.as_ref()
    }

    /// Read access to the values (read back from the GPU first when only it has them).
    pub fn data(&self) -> RwLockReadGuard<'_, ArrayD<f32>> {
        self.sync_host();
        self.inner.data.read().expect("tensor data lock poisoned")
    }

    /// Write access to the values; prefer [`Tensor::update`], which also bumps the version.
    /// The host copy becomes the only one: a GPU copy is dropped.
    pub fn data_mut(&self) -> RwLockWriteGuard<'_, ArrayD<f32>> {
        self.sync_host();
        *self.inner.device.lock().expect("tensor device lock poisoned") = None;
        self.inner.version.fetch_add(1, Ordering::AcqRel);
        self.inner.data.write().expect("tensor data lock poisoned")
    }

    /// Change the values in place (an optimiser step), outside any graph.
    pub fn update(&self, f: impl FnOnce(&mut ArrayD<f32>)) {
        let mut d = self.data_mut();
        f(&mut d);
    }

    /// Replace the values with `values` of the same shape (checkpoint loading).
    pub fn assign(&self, values: ArrayD<f32>) -> crate::Result<()> {
        if values.shape() != self.shape().as_slice() {
            return Err(crate::Error::shape(
                "assign",
                format!("cannot assign {:?} to a tensor of shape {:?}", values.shape(), self.shape()),
            ));
        }
        *self.data_mut() = values;
        Ok(())
    }

    /// A copy of the values.
    pub fn to_array(&self) -> ArrayD<f32> {
        self.data().clone()
    }

    /// The values in row-major order.
    pub fn to_vec(&self) -> Vec<f32> {
        self.data().iter().copied().collect()
    }

    /// The single value of a one-element tensor.
    ///
    /// # Panics
    /// When the tensor has more than one element (a programming error, like `torch.item`).
    pub fn item(&self) -> f32 {
        let d = self.data();
        assert_eq!(d.len(), 1, "item() on a tensor of shape {:?}", d.shape());
        *d.iter().next().expect("one element")
    }

    /// The shape, e.g. `[B, C, H, W]` (no read-back for values on the GPU).
    pub fn shape(&self) -> Vec<usize> {
        if let Some(value) = self.device_only() {
            return value.shape().to_vec();
        }
        self.inner.data.read().expect("tensor data lock poisoned").shape().to_vec()
    }

    /// The number of dimensions.
    pub fn ndim(&self) -> usize {
        self.shape().len()
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.shape().iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The size of dimension `axis` (negative counts from the end).
    pub fn dim(&self, axis: isize) -> usize {
        let shape = self.shape();
        shape[normalize_axis(axis, shape.len())]
    }

    /// The accumulated gradient (after [`Tensor::backward`]), read back from the GPU
    /// when it is there.
    pub fn grad(&self) -> Option<ArrayD<f32>> {
        let g = self.inner.grad.lock().expect("grad lock poisoned").clone();
        g.map(Value::into_host)
    }

    /// The accumulated gradient where it is: on the GPU or on the host.
    pub fn grad_value(&self) -> Option<Value> {
        self.inner.grad.lock().expect("grad lock poisoned").clone()
    }

    /// Forget the accumulated gradient.
    pub fn zero_grad(&self) {
        *self.inner.grad.lock().expect("grad lock poisoned") = None;
    }

    /// Replace the accumulated gradient (gradient clipping, tests).
    pub fn set_grad(&self, g: Option<ArrayD<f32>>) {
        self.set_grad_value(g.map(Value::Host));
    }

    /// Replace the accumulated gradient with a value on either side of the bus.
    pub fn set_grad_value(&self, g: Option<Value>) {
        *self.inner.grad.lock().expect("grad lock poisoned") = g;
    }

    pub(crate) fn accumulate_grad(&self, g: Value) {
        let mut slot = self.inner.grad.lock().expect("grad lock poisoned");
        *slot = Some(match slot.take() {
            Some(acc) => acc.sum(g),
            None => g,
        });
    }

    /// The same values, cut from the graph: no gradient flows through the result.
    pub fn detach(&self) -> Tensor {
        if let Some(value) = self.device_only() {
            return Tensor::from_device(value); // shares the GPU memory, as PyTorch's detach shares storage
        }
        Tensor::new(self.to_array())
    }

    /// A new leaf parameter with a copy of these values (e.g. an EMA copy).
    pub fn detach_param(&self) -> Tensor {
        Tensor::param(self.to_array())
    }
}

/// Map a possibly negative axis to `0..ndim`.
///
/// # Panics
/// When the axis is out of range (a programming error in model code).
pub fn normalize_axis(axis: isize, ndim: usize) -> usize {
    let a = if axis < 0 { axis + ndim as isize } else { axis };
    assert!(a >= 0 && (a as usize) < ndim.max(1), "axis {axis} out of range for {ndim} dimensions");
    a as usize
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = self.grad_fn().map(|g| g.name).unwrap_or("leaf");
        write!(f, "Tensor(shape={:?}, op={}, requires_grad={})\n{}", self.shape(), op, self.requires_grad(), *self.data())
    }
}
