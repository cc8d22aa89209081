//! Walking the recorded graph backwards, and switching recording off.
//!
//! `backward()` is micrograd's: sort the graph topologically from the loss,
//! seed the loss's gradient with 1, then visit every node in reverse order and
//! let its closure hand gradients to its parents. Gradients of intermediate
//! tensors live only in a map during the walk; leaves (parameters) keep theirs.

#[cfg(feature = "wgpu")]
use super::DeviceValue;
use super::{GradFn, Tensor, Value};
use ndarray::{ArrayD, Axis, Slice};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether operations currently record a graph (false inside [`no_grad`]).
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// While alive, operations on this thread record no graph (like `torch.no_grad()`).
pub struct NoGradGuard {
    previous: bool,
}

impl NoGradGuard {
    /// Switch recording off until the guard is dropped.
    pub fn new() -> Self {
        let previous = GRAD_ENABLED.with(|g| g.replace(false));
        NoGradGuard { previous }
    }
}

impl Default for NoGradGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.previous));
    }
}

/// Run `f` without recording a graph: for sampling and evaluation.
pub fn no_grad<T>(f: impl FnOnce() -> T) -> T {
    let _guard = NoGradGuard::new();
    f()
}

// ANCHOR: enable_grad
/// While alive, operations on this thread record a graph again, even inside
/// [`no_grad`] (like `torch.enable_grad()`); dropping it restores the previous state.
/// CLIP guidance needs it: the samplers run in `no_grad`, and one step asks for
/// `∇_{x_t}` of a score, which needs that score's graph.
pub struct EnableGradGuard {
    previous: bool,
}

impl EnableGradGuard {
    /// Switch recording on until the guard is dropped.
    pub fn new() -> Self {
        let previous = GRAD_ENABLED.with(|g| g.replace(true));
        EnableGradGuard { previous }
    }
}

impl Default for EnableGradGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for EnableGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.previous));
    }
}

/// Run `f` recording a graph, even inside [`no_grad`]; the previous state returns after it.
pub fn enable_grad<T>(f: impl FnOnce() -> T) -> T {
    let _guard = EnableGradGuard::new();
    f()
}
// ANCHOR_END: enable_grad

impl Tensor {
    /// Reverse-mode differentiation from this scalar: d(self)/d(leaf) is added
    /// to the `grad` of every leaf that requires a gradient.
    ///
    /// # Panics
    /// When called on a tensor with more than one element (use
    /// [`Tensor::backward_with`] and give the output gradient explicitly).
    pub fn backward(&self) {
        assert_eq!(self.len(), 1, "backward() needs a scalar, got shape {:?}; use backward_with", self.shape());
        let seed = ArrayD::from_elem(self.data().raw_dim(), 1.0f32);
        self.backward_with(seed);
    }

    /// Reverse-mode differentiation seeded with `grad_output` (same shape as self).
    // ANCHOR: backward
    pub fn backward_with(&self, grad_output: ArrayD<f32>) {
        if !self.requires_grad() {
            return;
        }
        let order = topological_order(self);
        let mut grads: HashMap<usize, Value> = HashMap::new();
        grads.insert(self.id(), Value::Host(grad_output));
        // Walk from the loss back to the leaves: every consumer of a tensor
        // comes before it in this order, so its gradient is complete when visited.
        for node in order.iter().rev() {
            let Some(grad) = grads.remove(&node.id()) else { continue };
            match node.grad_fn() {
                None => node.accumulate_grad(grad),
                // A slice whose parent already has a gradient: add into that slice only.
                Some(GradFn { slice_of_parent: Some((axis, start)), parents, .. }) if grads.contains_key(&parents[0].id()) => {
                    let acc = grads.remove(&parents[0].id()).expect("checked");
                    let (mut acc, grad) = (acc.into_host(), grad.into_host());
                    let mut part = acc.slice_axis_mut(Axis(*axis), Slice::from(*start..*start + grad.shape()[*axis]));
                    crate::ops::kernels::add_assign_view(&mut part, &grad);
                    grads.insert(parents[0].id(), Value::Host(acc));
                }
                Some(grad_fn) => {
                    let parent_grads = node_backward(node, grad_fn, grad);
                    debug_assert_eq!(parent_grads.len(), grad_fn.parents.len(), "{}: wrong number of gradients", grad_fn.name);
                    for (parent, g) in grad_fn.parents.iter().zip(parent_grads) {
                        let Some(g) = g else { continue };
                        if !parent.requires_grad() {
                            continue;
                        }
                        debug_assert_eq!(g.shape(), parent.shape().as_slice(), "{}: gradient shape", grad_fn.name);
                        let sum = match grads.remove(&parent.id()) {
                            Some(acc) => acc.sum(g),
                            None => g,
                        };
                        grads.insert(parent.id(), sum);
                    }
                }
            }
        }
    }
    // ANCHOR_END: backward
}

/// One node's backward step: on the GPU when the operation ran there (the gradient
/// is uploaded if it arrives from a CPU op), else the CPU closure (the gradient is
/// read back if it arrives from a GPU op).
fn node_backward(node: &Tensor, grad_fn: &GradFn, grad: Value) -> Vec<Option<Value>> {
    #[cfg(feature = "wgpu")]
    if let Some(device_backward) = &grad_fn.device_backward {
        let on_gpu = match &grad {
            Value::Device(d) => Ok(d.clone()),
            Value::Host(a) => DeviceValue::upload(a),
        };
        match on_gpu.and_then(|g| device_backward(&g)) {
            Ok(grads) => return grads.into_iter().map(|g| g.map(Value::Device)).collect(),
            Err(e) => crate::backend::report_gpu_error(&e),
        }
    }
    let grad = grad.into_host();
    let out = node.data();
    (grad_fn.backward)(&grad, &out).into_iter().map(|g| g.map(Value::Host)).collect()
}

/// Nodes reachable from `root` through recorded operations, parents before children.
fn topological_order(root: &Tensor) -> Vec<Tensor> {
    let mut order = Vec::new();
    let mut visited = HashSet::new();
    // An explicit stack instead of recursion: deep models would overflow the call stack.
    let mut stack: Vec<(Tensor, bool)> = vec![(root.clone(), false)];
    while let Some((node, children_done)) = stack.pop() {
        if children_done {
            order.push(node);
            continue;
        }
        if !visited.insert(node.id()) {
            continue;
        }
        stack.push((node.clone(), true));
        if let Some(grad_fn) = node.grad_fn() {
            for p in &grad_fn.parents {
                if p.requires_grad() && !visited.contains(&p.id()) {
                    stack.push((p.clone(), false));
                }
            }
        }
    }
    order
}
