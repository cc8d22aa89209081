//! Tensor values that live on the GPU: [`DeviceValue`], and [`Value`], a gradient on
//! either side of the bus.
//!
//! A tensor computed by a GPU kernel keeps its values in GPU memory ([`DeviceValue`]);
//! its host `ArrayD` is filled only when something on the CPU reads it
//! ([`Tensor::data`]), so a chain of GPU ops never crosses the bus. Gradients flow
//! backwards as [`Value`]s: a GPU op's backward closure receives and returns
//! [`DeviceValue`]s, a CPU op's receives and returns arrays, and the walk moves a
//! gradient across the bus only where the two meet.

use ndarray::ArrayD;
use std::sync::Arc;

#[cfg(feature = "wgpu")]
use crate::backend::wgpu::GpuArray;

/// A tensor's values in GPU memory: a row-major array and its shape. Cloning shares
/// the memory.
#[derive(Clone)]
pub struct DeviceValue {
    shape: Vec<usize>,
    #[cfg(feature = "wgpu")]
    array: Arc<GpuArray>,
    #[cfg(not(feature = "wgpu"))]
    array: Arc<std::convert::Infallible>,
}

impl DeviceValue {
    /// Wraps a GPU array holding `shape`'s values in row-major order.
    #[cfg(feature = "wgpu")]
    pub fn new(array: GpuArray, shape: &[usize]) -> DeviceValue {
        debug_assert_eq!(array.len(), shape.iter().product::<usize>(), "a device value of shape {shape:?}");
        DeviceValue { shape: shape.to_vec(), array: Arc::new(array) }
    }

    /// Copies `values` (any layout) to the GPU.
    #[cfg(feature = "wgpu")]
    pub fn upload(values: &ArrayD<f32>) -> crate::Result<DeviceValue> {
        let standard = values.as_standard_layout();
        let array = GpuArray::upload(standard.as_slice().expect("standard layout"))?;
        Ok(DeviceValue::new(array, values.shape()))
    }

    /// The GPU array.
    #[cfg(feature = "wgpu")]
    pub fn array(&self) -> &GpuArray {
        &self.array
    }

    /// The same memory seen with another shape of as many elements (a reshape).
    pub fn reshaped(&self, shape: &[usize]) -> DeviceValue {
        debug_assert_eq!(shape.iter().product::<usize>(), self.len(), "reshape {:?} to {shape:?}", self.shape);
        DeviceValue { shape: shape.to_vec(), array: Arc::clone(&self.array) }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits for the GPU and reads the values back.
    pub fn to_host(&self) -> crate::Result<ArrayD<f32>> {
        #[cfg(feature = "wgpu")]
        {
            let values = self.array.to_vec()?;
            Ok(ArrayD::from_shape_vec(ndarray::IxDyn(&self.shape), values).expect("a device value holds its shape's elements"))
        }
        #[cfg(not(feature = "wgpu"))]
        match *self.array {}
    }
}

impl std::fmt::Debug for DeviceValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceValue(shape={:?})", self.shape)
    }
}

/// A gradient (or any value) on the host or on the GPU.
#[derive(Clone, Debug)]
pub enum Value {
    /// In CPU memory.
    Host(ArrayD<f32>),
    /// In GPU memory.
    Device(DeviceValue),
}

impl Value {
    /// The shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            Value::Host(a) => a.shape(),
            Value::Device(d) => d.shape(),
        }
    }

    /// The values on the host (a read-back for a device value).
    ///
    /// # Panics
    /// When the read-back fails (the GPU was lost while holding the only copy).
    pub fn into_host(self) -> ArrayD<f32> {
        match self {
            Value::Host(a) => a,
            Value::Device(d) => d.to_host().unwrap_or_else(|e| panic!("reading a gradient back from the GPU: {e}")),
        }
    }

    /// `a + b`, on the GPU when both are there, else on the host.
    pub fn sum(self, other: Value) -> Value {
        #[cfg(feature = "wgpu")]
        if let (Value::Device(a), Value::Device(b)) = (&self, &other) {
            match crate::backend::wgpu::array_ops::add(a.array(), b.array()) {
                Ok(sum) => return Value::Device(DeviceValue::new(sum, a.shape())),
                Err(e) => crate::backend::report_gpu_error(&e),
            }
        }
        let mut acc = self.into_host();
        crate::ops::kernels::add_assign(&mut acc, &other.into_host());
        Value::Host(acc)
    }
}
