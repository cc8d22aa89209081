"""Golden values for tests/attention_golden.rs.

Pinned: torch==2.5.1, safetensors==0.8.0 (python3 tests/golden/make_attention_golden.py).
Writes tests/golden/attention.safetensors (a few KB):

(a) F.scaled_dot_product_attention with a causal mask and with a padding mask:
    inputs q, k, v (B=2, H=2, T=5, D=4), the output, the attention weights and
    dq, dk, dv of the loss  L = sum(out * w)  for a fixed random w.
(b) one pre-LN transformer block (C=8, H=2, MLP 4C, exact GELU, causal):
    x + attn(ln_1(x)); x + mlp(ln_2(x)); qkv fused as Linear(C, 3C) and split
    q, k, v = qkv(x).split(C, -1), each viewed (B, T, H, D) -> (B, H, T, D),
    exactly as src/nn/mha.rs does. Stored: the parameters under our names,
    x, the output, and the gradients of L = sum(out * w) for x and every parameter.

The inputs are drawn in float32 and written as float32; the references are
computed in float64 from those float32 values, so the difference the Rust test
sees is our float32 rounding alone.
"""
import pathlib

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

assert torch.__version__.startswith("2.5.1"), torch.__version__
torch.manual_seed(0)
out = {}


def f32(t):
    return t.detach().to(torch.float32).contiguous()


# (a) scaled dot-product attention --------------------------------------------
B, H, T, D = 2, 2, 5, 4
q0, k0, v0 = (torch.randn(B, H, T, D) for _ in range(3))
w_attn = torch.rand(B, H, T, D) + 0.5
causal_allowed = torch.ones(T, T, dtype=torch.bool).tril()  # True = may attend
lengths = [5, 3]
padding_allowed = torch.zeros(B, 1, 1, T, dtype=torch.bool)
for b, n in enumerate(lengths):
    padding_allowed[b, :, :, :n] = True
out["sdpa.q"], out["sdpa.k"], out["sdpa.v"], out["sdpa.w"] = f32(q0), f32(k0), f32(v0), f32(w_attn)
for name, allowed in [("causal", causal_allowed), ("padding", padding_allowed)]:
    q, k, v = (t.double().requires_grad_() for t in (q0, k0, v0))
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    scores = (q @ k.transpose(-1, -2)) / D**0.5
    weights = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    (y * w_attn.double()).sum().backward()
    out[f"{name}.out"], out[f"{name}.weights"] = f32(y), f32(weights)
    out[f"{name}.dq"], out[f"{name}.dk"], out[f"{name}.dv"] = f32(q.grad), f32(k.grad), f32(v.grad)


# (b) one pre-LN block --------------------------------------------------------
class Attention(nn.Module):
    def __init__(self, c, h):
        super().__init__()
        self.h = h
        self.qkv = nn.Linear(c, 3 * c)
        self.proj = nn.Linear(c, c)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=-1)
        q, k, v = (z.view(b, t, self.h, c // self.h).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class Mlp(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.fc = nn.Linear(c, 4 * c)
        self.proj = nn.Linear(4 * c, c)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self, c, h):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c)
        self.attn = Attention(c, h)
        self.ln_2 = nn.LayerNorm(c)
        self.mlp = Mlp(c)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


C, NH = 8, 2
block = Block(C, NH)
with torch.no_grad():  # non-trivial LayerNorm affine, so its gradients are tested too
    for ln in (block.ln_1, block.ln_2):
        ln.weight.add_(0.3 * torch.randn(C))
        ln.bias.add_(0.3 * torch.randn(C))
x0 = torch.randn(B, T, C)
w_block = torch.rand(B, T, C) + 0.5
for name, p in block.named_parameters():
    out[f"block.{name}"] = f32(p)
out["block.x"], out["block.w"] = f32(x0), f32(w_block)
block = block.double()
x = x0.double().requires_grad_()
y = block(x)
(y * w_block.double()).sum().backward()
out["block.out"], out["block.grad.x"] = f32(y), f32(x.grad)
for name, p in block.named_parameters():
    out[f"block.grad.{name}"] = f32(p.grad)

path = pathlib.Path(__file__).with_name("attention.safetensors")
save_file(out, str(path), metadata={"torch": torch.__version__})
print(f"wrote {path} ({len(out)} tensors)")
