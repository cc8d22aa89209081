"""Golden loss curve for tests/mlp_parity.rs: a 2 -> 32 -> 3 tanh MLP trained
with Adam in PyTorch, from initial weights that the Rust test loads too.

Pinned versions (the file in the repository was written with these):
    torch==2.5.1  safetensors==0.8.0  numpy==2.4.6
CI never runs this script. To regenerate:
    python3 tests/golden/make_mlp_golden.py

Writes tests/golden/mlp.safetensors with:
    x (96, 2) f32, y (96,) int64       three interleaved spirals
    w1 (32, 2), b1 (32), w2 (3, 32), b2 (3)   initial weights (nn.Linear's init, seed 0)
    losses (300,)                      loss before each of the 300 Adam steps
    w1_final, b1_final, w2_final, b2_final    weights after the last step
Model: logits = tanh(x W1ᵀ + b1) W2ᵀ + b2, loss = F.cross_entropy(logits, y).
Adam: lr 1e-2, betas (0.9, 0.999), eps 1e-8, full batch.
"""

import os

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(0)
rng = np.random.default_rng(0)

# Three spirals of 32 points each, with a little noise.
n, classes = 32, 3
xs, ys = [], []
for c in range(classes):
    r = np.linspace(0.1, 1.0, n)
    t = np.linspace(c * 4.0, (c + 1) * 4.0, n) + rng.standard_normal(n) * 0.2
    xs.append(np.stack([r * np.sin(t), r * np.cos(t)], 1))
    ys.append(np.full(n, c))
x = torch.tensor(np.concatenate(xs).astype(np.float32))
y = torch.tensor(np.concatenate(ys).astype(np.int64))

l1, l2 = torch.nn.Linear(2, 32), torch.nn.Linear(32, 3)
init = {"w1": l1.weight, "b1": l1.bias, "w2": l2.weight, "b2": l2.bias}
out = {k: v.detach().clone() for k, v in init.items()}

opt = torch.optim.Adam(list(l1.parameters()) + list(l2.parameters()), lr=1e-2, betas=(0.9, 0.999), eps=1e-8)
losses = []
for step in range(300):
    opt.zero_grad()
    loss = F.cross_entropy(l2(torch.tanh(l1(x))), y)
    losses.append(loss.item())
    loss.backward()
    opt.step()

out.update({"x": x, "y": y, "losses": torch.tensor(losses, dtype=torch.float32)})
out.update({f"{k}_final": v.detach().clone() for k, v in init.items()})
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mlp.safetensors")
save_file(out, path)
print(f"loss {losses[0]:.6f} -> {losses[-1]:.6f}; wrote {os.path.getsize(path)} bytes to {path}")
