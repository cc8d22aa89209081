#!/usr/bin/env python3
"""Golden fixture for src/nn/quantize.rs and src/nn/gumbel.rs.

Pinned: Python 3, torch==2.5.1 (CPU), safetensors==0.8.0.
    pip install torch==2.5.1 safetensors==0.8.0
Run from the crate root:
    python3 tests/golden/make_quantize_golden.py
Writes tests/golden/quantize.safetensors (float32; indices stored as float32).

The quantizer is VQ-VAE's (van den Oord et al. 2017, eq. 1 and 3) as written in the
reference PyTorch implementations: nearest code by squared distance, straight-through
z_q = z + (e - z).detach(), codebook loss mse(z.detach(), e), commitment loss
beta * mse(z, e.detach()) with beta = 0.25. The gumbel-softmax is
torch.nn.functional.gumbel_softmax's formula with the noise given as an input.
"""
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(0)
out = {}

# ---- vector quantizer: N = 6 rows of D = 4, K = 5 codes ----
z = torch.randn(6, 4)
codebook = torch.randn(5, 4)
w = torch.rand(6, 4) + 0.5  # weights of the upstream loss sum(w * z_q)
zp = z.clone().requires_grad_(True)
cb = codebook.clone().requires_grad_(True)
d = (zp.detach() ** 2).sum(1, keepdim=True) - 2 * zp.detach() @ cb.detach().t() + (cb.detach() ** 2).sum(1)
idx = d.argmin(1)
e = cb[idx]
z_q = zp + (e - zp).detach()
codebook_loss = F.mse_loss(zp.detach(), e)
commitment_loss = 0.25 * F.mse_loss(zp, e.detach())
total = (w * z_q).sum() + codebook_loss + commitment_loss
total.backward()
out.update({
    "vq.z": z, "vq.codebook": codebook, "vq.w": w,
    "vq.indices": idx.float(), "vq.z_q": z_q.detach(),
    "vq.codebook_loss": codebook_loss.detach().reshape(1),
    "vq.commitment_loss": commitment_loss.detach().reshape(1),
    "vq.grad_z": zp.grad, "vq.grad_codebook": cb.grad,
})

# ---- gumbel-softmax: 3 rows of 5 logits, tau = 0.5, noise given ----
logits = torch.randn(3, 5)
u = torch.rand(3, 5).clamp(1e-10, 1 - 1e-7)
g = -torch.log(-torch.log(u))
wg = torch.rand(3, 5) + 0.5
out.update({"gumbel.logits": logits, "gumbel.noise": g, "gumbel.w": wg})
for hard in (False, True):
    lp = logits.clone().requires_grad_(True)
    y_soft = ((lp + g) / 0.5).softmax(-1)
    if hard:
        index = y_soft.max(-1, keepdim=True)[1]
        y_hard = torch.zeros_like(lp).scatter_(-1, index, 1.0)
        y = y_hard - y_soft.detach() + y_soft
    else:
        y = y_soft
    (wg * y).sum().backward()
    name = "hard" if hard else "soft"
    out[f"gumbel.{name}.y"] = y.detach()
    out[f"gumbel.{name}.grad_logits"] = lp.grad

save_file({k: v.contiguous().float() for k, v in out.items()}, "tests/golden/quantize.safetensors",
          metadata={"torch": torch.__version__})
print("wrote tests/golden/quantize.safetensors with", len(out), "tensors")
