"""Golden values for tests/golden_ops.rs: every op run in PyTorch, forward and backward.

Pinned versions (the file in the repository was written with these):
    torch==2.5.1  safetensors==0.8.0  numpy==2.4.6
CI never runs this script; it only reads the file it wrote. To regenerate:
    python3 tests/golden/make_ops_golden.py

For every case NAME the file holds, all float32 unless said:
    NAME.x0, NAME.x1, ...   the differentiable inputs
    NAME.out                the forward output (made contiguous)
    NAME.gout               a fixed random upstream gradient, shape of out
    NAME.dx0, NAME.dx1, ... d(sum(out * gout))/d(x_i), i.e. out.backward(gout)
    NAME.<aux>              non-differentiable arguments (indices: int64, masks: bool)
The Rust test pastes the same PyTorch one-liner above each case.
"""

import os

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.set_default_dtype(torch.float32)
rng = np.random.default_rng(20240601)
tensors = {}


def randn(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def uniform(lo, hi, *shape):
    return rng.uniform(lo, hi, shape).astype(np.float32)


def away_from_zero(*shape, margin=0.1):
    x = randn(*shape)
    return np.where(np.abs(x) < margin, np.sign(x + 1e-9) * margin + x, x).astype(np.float32)


def distinct(*shape):
    """Values 0.1 apart in a random order: no ties for max, max_pool, maximum."""
    n = int(np.prod(shape))
    return ((rng.permutation(n) - n / 2) * 0.1).reshape(shape).astype(np.float32)


def case(name, fn, inputs, aux=None, grad=True):
    xs = [torch.tensor(x, requires_grad=grad) for x in inputs]
    aux = aux or {}
    out = fn(*xs, **{k: torch.tensor(v) for k, v in aux.items()})
    for i, x in enumerate(inputs):
        tensors[f"{name}.x{i}"] = torch.tensor(x)
    for k, v in aux.items():
        tensors[f"{name}.{k}"] = torch.tensor(v)
    tensors[f"{name}.out"] = out.detach().contiguous().clone()
    if grad:
        gout = torch.tensor(randn(*out.shape))
        tensors[f"{name}.gout"] = gout.clone()
        out.backward(gout)
        for i, x in enumerate(xs):
            if x.grad is not None:
                tensors[f"{name}.dx{i}"] = x.grad.contiguous().clone()


# --- elementwise, with broadcasting ---------------------------------------
case("add", lambda a, b: a + b, [randn(2, 3, 4), randn(3, 1)])
case("sub", lambda a, b: a - b, [randn(4), randn(2, 1, 4)])
case("mul", lambda a, b: a * b, [randn(2, 3, 4), randn(4)])
case("div", lambda a, b: a / b, [randn(3, 4), uniform(0.5, 2.0, 1, 4) * np.array([1, -1, 1, -1], np.float32)])
case("maximum", lambda a, b: torch.maximum(a, b), [distinct(3, 4), distinct(4) + 0.05])
case("maximum_ties", lambda a, b: torch.maximum(a, b), [np.array([1.0, 2.0, -1.0, 0.5], np.float32), np.array([1.0, 1.0, -1.0, 3.0], np.float32)])
case("add_scalar", lambda x: x + 0.7, [randn(3, 5)])
case("scale", lambda x: x * -2.5, [randn(3, 5)])
case("neg", lambda x: -x, [randn(3, 5)])
case("pow3", lambda x: x**3, [randn(3, 5)])
case("pow_half", lambda x: x**0.5, [uniform(0.2, 3.0, 3, 5)])
case("pow_zero", lambda x: x**0.0, [np.array([0.0, 1.5, -2.0], np.float32)])
case("square", lambda x: torch.square(x), [randn(3, 5)])
case("sqrt", lambda x: torch.sqrt(x), [uniform(0.2, 3.0, 3, 5)])
case("exp", lambda x: torch.exp(x), [randn(3, 5)])
case("log", lambda x: torch.log(x), [uniform(0.2, 3.0, 3, 5)])
case("abs", lambda x: torch.abs(x), [away_from_zero(3, 5)])
case("clamp", lambda x: torch.clamp(x, -0.5, 0.8), [randn(3, 5)])
case("tanh", lambda x: torch.tanh(x), [randn(3, 5, scale=2.0)])
case("sigmoid", lambda x: torch.sigmoid(x), [randn(3, 5, scale=4.0)])
case("relu", lambda x: torch.relu(x), [away_from_zero(3, 5)])
case("gelu", lambda x: F.gelu(x), [randn(4, 6, scale=3.0)])
case("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"), [randn(4, 6, scale=3.0)])
case("silu", lambda x: F.silu(x), [randn(4, 6, scale=3.0)])
case("quick_gelu", lambda x: x * torch.sigmoid(1.702 * x), [randn(4, 6, scale=3.0)])

# --- reductions -----------------------------------------------------------
case("sum_axes", lambda x: x.sum(dim=(0, 2)), [randn(2, 3, 5)])
case("sum_axes_keepdim", lambda x: x.sum(dim=(0, 2), keepdim=True), [randn(2, 3, 5)])
case("mean_axes", lambda x: x.mean(dim=-1), [randn(2, 3, 5)])
case("mean_axes_keepdim", lambda x: x.mean(dim=(1, 2), keepdim=True), [randn(2, 3, 5)])
case("max_axis", lambda x: x.amax(dim=1), [distinct(2, 3, 5)])
case("max_axis_keepdim", lambda x: x.amax(dim=-1, keepdim=True), [distinct(2, 3, 5)])
case("max_axis_ties", lambda x: x.amax(dim=1), [np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]], np.float32)])
case("var_unbiased", lambda x: x.var(dim=(1, 2), unbiased=True), [randn(2, 3, 5)])
case("var_biased_keepdim", lambda x: x.var(dim=-1, unbiased=False, keepdim=True), [randn(2, 3, 5)])
case("softmax0", lambda x: F.softmax(x, dim=0), [randn(3, 4, 5, scale=2.0)])
case("softmax_last", lambda x: F.softmax(x, dim=-1), [randn(3, 4, 5, scale=2.0)])
case("log_softmax1", lambda x: F.log_softmax(x, dim=1), [randn(3, 4, 5, scale=2.0)])
case("log_softmax_last", lambda x: F.log_softmax(x, dim=-1), [randn(3, 4, 5, scale=2.0)])

# --- matmul ---------------------------------------------------------------
case("matmul_2d", lambda a, b: a @ b, [randn(5, 7), randn(7, 3)])
case("matmul_nd", lambda a, b: a @ b, [randn(2, 3, 5, 7), randn(2, 3, 7, 4)])
case("matmul_bcast", lambda a, b: a @ b, [randn(2, 1, 5, 7), randn(3, 7, 4)])
case("matmul_fold", lambda a, b: a @ b, [randn(2, 5, 7), randn(7, 4)])
case("matmul_k64", lambda a, b: a @ b, [randn(4, 64), randn(64, 3)])
case("matmul_at", lambda a, b: a.mT @ b, [randn(7, 5), randn(7, 4)])
case("matmul_bt", lambda a, b: a @ b.mT, [randn(2, 5, 7), randn(4, 7)])
case("matmul_permuted", lambda a, b: a.permute(1, 0, 2) @ b, [randn(5, 2, 7), randn(7, 4)])
case("matmul_t", lambda a, b: a @ b.transpose(-1, -2), [randn(2, 5, 7), randn(4, 7)])
case("matmul_t_batched", lambda a, b: a @ b.transpose(-1, -2), [randn(2, 5, 7), randn(2, 4, 7)])

# --- moving elements ------------------------------------------------------
case("reshape", lambda x: x.reshape(4, -1), [randn(2, 3, 4)])
case("permute", lambda x: x.permute(2, 0, 1), [randn(2, 3, 4)])
case("transpose", lambda x: x.transpose(0, 2), [randn(2, 3, 4)])
case("contiguous", lambda x: x.transpose(0, 1).contiguous(), [randn(2, 3, 4)])
case("narrow", lambda x: x.narrow(2, 1, 2), [randn(2, 3, 4)])
case("chunk", lambda x: x.chunk(3, 1)[1], [randn(2, 6, 4)])
case("concat", lambda a, b, c: torch.cat([a, b, c], 1), [randn(2, 1, 4), randn(2, 3, 4), randn(2, 2, 4)])
case("stack", lambda a, b: torch.stack([a, b], 1), [randn(3, 2), randn(3, 2)])
case("broadcast_to", lambda x: x.expand(2, 3, 4), [randn(3, 1)])
case("unsqueeze", lambda x: x.unsqueeze(1), [randn(2, 3)])
case("squeeze", lambda x: x.squeeze(1), [randn(3, 1, 4)])

# --- indexing -------------------------------------------------------------
case("index_select", lambda x, idx: x.index_select(0, idx), [randn(4, 3)], {"idx": np.array([3, 1, 3, 0], np.int64)})
case("embedding", lambda w, ids: F.embedding(ids, w), [randn(5, 4)], {"ids": np.array([[1, 3, 1], [0, 2, 1]], np.int64)})
case("gather", lambda x, idx: torch.gather(x, 1, idx), [randn(2, 3, 3)], {"idx": np.array([[[0, 2, 1], [1, 1, 0]], [[2, 0, 0], [1, 2, 2]]], np.int64)})
case("masked_fill", lambda x, mask: x.masked_fill(mask, -3.0), [randn(2, 3, 4)], {"mask": np.array([[True], [False], [True]])})
case("where", lambda a, b, cond: torch.where(cond, a, b), [randn(4, 3), randn(2, 1, 1)], {"cond": np.array([[[True, False, True]], [[False, False, True]]])})

# --- convolution and pooling ----------------------------------------------
case("conv_s1_p0_bias", lambda x, w, b: F.conv2d(x, w, b, stride=1, padding=0), [randn(2, 3, 6, 5), randn(4, 3, 3, 3), randn(4)])
case("conv_s2_p1_bias_odd", lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1), [randn(2, 3, 7, 5), randn(4, 3, 3, 3), randn(4)])
case("conv_s1_p1_nobias", lambda x, w: F.conv2d(x, w, None, stride=1, padding=1), [randn(1, 5, 5, 5), randn(6, 5, 3, 3)])
case("conv_pointwise", lambda x, w, b: F.conv2d(x, w, b), [randn(2, 6, 3, 4), randn(5, 6, 1, 1), randn(5)])
case("conv_4x4_s2_p1", lambda x, w: F.conv2d(x, w, None, stride=2, padding=1), [randn(1, 2, 8, 8), randn(3, 2, 4, 4)])
case("upsample", lambda x: F.interpolate(x, scale_factor=2, mode="nearest"), [randn(2, 3, 3, 2)])
case("avg_pool", lambda x: F.avg_pool2d(x, 2, 2), [randn(2, 3, 4, 6)])
case("avg_pool_k3s2_odd", lambda x: F.avg_pool2d(x, 3, 2), [randn(1, 2, 7, 5)])
case("max_pool", lambda x: F.max_pool2d(x, 2, 2), [distinct(2, 3, 4, 6)])
case("max_pool_k3s2_odd", lambda x: F.max_pool2d(x, 3, 2), [distinct(1, 2, 7, 5)])

# --- normalisation --------------------------------------------------------
case("layer_norm", lambda x, g, b: F.layer_norm(x, (8,), g, b, 1e-5), [randn(2, 3, 8) + 1.5, 1 + randn(8, scale=0.3), randn(8)])
case("group_norm", lambda x, g, b: F.group_norm(x, 2, g, b, 1e-5), [randn(2, 4, 3, 3), 1 + randn(4, scale=0.3), randn(4)])

# --- losses and similarities ----------------------------------------------
logits = randn(6, 5, scale=2.0)
case("cross_entropy", lambda x, t: F.cross_entropy(x, t), [logits], {"t": np.array([0, 4, 1, 1, 2, 3], np.int64)})
case("cross_entropy_ignore", lambda x, t: F.cross_entropy(x, t, ignore_index=5), [logits], {"t": np.array([0, 5, 1, 5, 2, 3], np.int64)})
case("cross_entropy_smooth", lambda x, t: F.cross_entropy(x, t, label_smoothing=0.1), [logits], {"t": np.array([0, 4, 1, 1, 2, 3], np.int64)})
case("cross_entropy_ignore_smooth", lambda x, t: F.cross_entropy(x, t, ignore_index=2, label_smoothing=0.2), [logits], {"t": np.array([0, 2, 1, 4, 2, 3], np.int64)})
case("mse", lambda a, b: F.mse_loss(a, b), [randn(3, 4), randn(3, 4)])
case("bce_with_logits", lambda x, y: F.binary_cross_entropy_with_logits(x, y), [randn(3, 4, scale=3.0), uniform(0.0, 1.0, 3, 4)])
case("l2_normalize", lambda x: F.normalize(x, dim=-1, eps=1e-12), [randn(3, 4)])
case("l2_normalize_axis0_zero_column", lambda x: F.normalize(x, dim=0, eps=1e-6), [np.concatenate([randn(3, 2), np.zeros((3, 1), np.float32)], 1)])
case("cosine_similarity", lambda a, b: F.cosine_similarity(a, b, dim=-1, eps=1e-8), [randn(3, 4), randn(3, 4)])
case("cosine_similarity_bcast", lambda a, b: F.cosine_similarity(a, b, dim=1, eps=1e-8), [randn(2, 5, 3), randn(1, 5, 3)])
# One vector far shorter than eps: PyTorch 2.x clamps each norm separately.
case("cosine_similarity_tiny", lambda a, b: F.cosine_similarity(a, b, dim=-1, eps=1e-3), [randn(2, 4, scale=1e-4), randn(2, 4)], grad=False)

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ops.safetensors")
save_file(tensors, path)
print(f"wrote {len(tensors)} tensors, {os.path.getsize(path)} bytes to {path}")
