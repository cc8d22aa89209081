//! Modules: things with named parameters.
//!
//! Every layer and model implements [`Module::visit`], calling back with each
//! parameter and its name relative to the module. Nesting builds the dotted
//! names that checkpoints use, exactly as PyTorch's `state_dict()` does:
//! a model's `encoder` holding `blocks[0]` holding `attn` holding `qkv` gives
//! `encoder.blocks.0.attn.qkv.weight`.

use crate::tensor::Tensor;
use crate::Result;

/// Something with named, trainable parameters.
pub trait Module {
    /// Call `f(name, parameter)` for every parameter, in a fixed order.
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor));

    /// Every parameter with its dotted name, in visiting order.
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.visit(&mut |name, t| out.push((name.to_string(), t.clone())));
        out
    }

    /// Every parameter, in visiting order.
    fn parameters(&self) -> Vec<Tensor> {
        self.named_parameters().into_iter().map(|(_, t)| t).collect()
    }

    /// The number of scalar parameters.
    fn num_parameters(&self) -> usize {
        self.parameters().iter().map(|t| t.len()).sum()
    }

    /// Freezes every parameter ([`Tensor::freeze`]; PyTorch's `requires_grad_(False)`):
    /// a gradient with respect to the input still flows through the module, but no
    /// parameter records or receives one. Shared tensors are frozen wherever they are used.
    fn freeze(&self) {
        // Parameters are leaves, so freezing cannot fail.
        self.visit(&mut |_, t| t.freeze().expect("a parameter is a leaf"));
    }

    /// Undoes [`Module::freeze`]: every parameter receives gradients again.
    fn unfreeze(&self) {
        self.visit(&mut |_, t| t.unfreeze().expect("a parameter is a leaf"));
    }
}

/// Visit `child`'s parameters with names prefixed by `prefix.`.
pub fn visit_child(prefix: &str, child: &dyn Module, f: &mut dyn FnMut(&str, &Tensor)) {
    child.visit(&mut |name, t| f(&format!("{prefix}.{name}"), t));
}

/// Visit a list of modules as `prefix.0.*`, `prefix.1.*`, ... (PyTorch's `ModuleList`).
pub fn visit_list<M: Module>(prefix: &str, children: &[M], f: &mut dyn FnMut(&str, &Tensor)) {
    for (i, c) in children.iter().enumerate() {
        visit_child(&format!("{prefix}.{i}"), c, f);
    }
}

/// A module with one input and one output, so that it can sit in a [`Sequential`].
pub trait Forward: Module + Send + Sync {
    /// Apply the module.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;
}

/// Modules applied one after another; parameters named `0.*`, `1.*`, ... as in `nn.Sequential`.
#[derive(Default)]
pub struct Sequential {
    layers: Vec<Box<dyn Forward>>,
}

impl Sequential {
    /// An empty sequence.
    pub fn new() -> Self {
        Sequential { layers: Vec::new() }
    }

    /// Append a layer (builder style).
    pub fn push(mut self, layer: impl Forward + 'static) -> Self {
        self.layers.push(Box::new(layer));
        self
    }

    /// The number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether there are no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

impl Module for Sequential {
    fn visit(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        for (i, l) in self.layers.iter().enumerate() {
            visit_child(&i.to_string(), l.as_ref(), f);
        }
    }
}

impl Forward for Sequential {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for l in &self.layers {
            h = l.forward(&h)?;
        }
        Ok(h)
    }
}

/// A parameter-free activation as a layer, for [`Sequential`].
#[derive(Clone, Copy, Debug)]
pub enum Activation {
    /// `max(x, 0)`
    Relu,
    /// Exact GELU.
    Gelu,
    /// `x σ(x)`
    Silu,
    /// `tanh x`
    Tanh,
    /// `σ(x)`
    Sigmoid,
    /// CLIP's `x σ(1.702 x)`.
    QuickGelu,
}

impl Activation {
    /// Apply the activation.
    pub fn apply(&self, x: &Tensor) -> Tensor {
        match self {
            Activation::Relu => x.relu(),
            Activation::Gelu => x.gelu(),
            Activation::Silu => x.silu(),
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => x.sigmoid(),
            Activation::QuickGelu => x.quick_gelu(),
        }
    }
}

impl Module for Activation {
    fn visit(&self, _: &mut dyn FnMut(&str, &Tensor)) {}
}

impl Forward for Activation {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.apply(x))
    }
}
