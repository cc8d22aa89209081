"""Golden values for tests/glide_golden.rs: GLIDE's text-conditioned attention, caption to pixels.

Pinned: torch==2.5.1, safetensors==0.4.5 (python3 tests/golden/make_glide_golden.py).
Writes tests/golden/glide.safetensors (about 20 KB).

tests/diffusion_golden.rs already checks the U-Net's attention block on random context tokens
with a hand-made padding mask. This extends it with what GLIDE puts in front of it (§2.3):
token ids -> a causal CLIP-style text transformer (1 pre-LN block, width 8, 2 heads, QuickGELU,
final LayerNorm) -> every token as context for the attention block, padding = the positions
after each caption's first EOT (id 2), and the EOT feature -> Linear(8, 16) = cond. In float64
from float32 parameters stored under our names; the gradients of
L = sum(out * w) + sum(cond * w_cond) with respect to x and every parameter.
Two captions of different lengths: [SOT 5 7 EOT PAD PAD] and [SOT 9 EOT PAD PAD PAD].
"""
import math
import pathlib

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

assert torch.__version__.startswith("2.5.1"), torch.__version__
torch.manual_seed(0)
out = {}


def f32(t):
    return t.detach().to(torch.float32).contiguous()


def param(*shape, scale=0.3):
    return (torch.randn(*shape) * scale).to(torch.float32)


C, H, S, V, I, CE = 8, 2, 6, 12, 16, 16  # width, heads, context, vocab, MLP width, embedding width
tx = "text.transformer."
L0 = tx + "encoder.layers.0."
p32 = {
    tx + "embeddings.token_embedding.weight": param(V, C, scale=0.5),
    tx + "embeddings.position_embedding.weight": param(S, C, scale=0.5),
    L0 + "layer_norm1.weight": 1 + param(C), L0 + "layer_norm1.bias": param(C),
    L0 + "self_attn.q_proj.weight": param(C, C), L0 + "self_attn.q_proj.bias": param(C),
    L0 + "self_attn.k_proj.weight": param(C, C), L0 + "self_attn.k_proj.bias": param(C),
    L0 + "self_attn.v_proj.weight": param(C, C), L0 + "self_attn.v_proj.bias": param(C),
    L0 + "self_attn.out_proj.weight": param(C, C), L0 + "self_attn.out_proj.bias": param(C),
    L0 + "layer_norm2.weight": 1 + param(C), L0 + "layer_norm2.bias": param(C),
    L0 + "mlp.fc1.weight": param(I, C), L0 + "mlp.fc1.bias": param(I),
    L0 + "mlp.fc2.weight": param(C, I), L0 + "mlp.fc2.bias": param(C),
    tx + "final_layer_norm.weight": 1 + param(C), tx + "final_layer_norm.bias": param(C),
    "cond_proj.weight": param(CE, C), "cond_proj.bias": param(CE),
    "attn.norm.weight": 1 + param(C), "attn.norm.bias": param(C),
    "attn.attention.attn.qkv.weight": param(3 * C, C), "attn.attention.attn.qkv.bias": param(3 * C),
    "attn.attention.attn.proj.weight": param(C, C), "attn.attention.attn.proj.bias": param(C),
    "attn.attention.context_kv.weight": param(2 * C, C), "attn.attention.context_kv.bias": param(2 * C),
}
ids = torch.tensor([[1, 5, 7, 2, 0, 0], [1, 9, 2, 0, 0, 0]])
x = torch.randn(2, C, 3, 3)
w, w_cond = torch.rand(2, C, 3, 3) + 0.5, torch.rand(2, CE) + 0.5
out.update(p32)
out["ids"], out["x"], out["w"], out["w_cond"] = ids.to(torch.float32), x, w, w_cond

p = {k: v.double().requires_grad_() for k, v in p32.items()}
xd = x.double().requires_grad_()
B, T, D = 2, 9, C // H


def ln(z, name):
    return F.layer_norm(z, (C,), p[name + ".weight"], p[name + ".bias"], eps=1e-5)


def lin(z, name):
    return F.linear(z, p[name + ".weight"], p[name + ".bias"])


def heads(z):
    return z.reshape(B, -1, H, D).transpose(1, 2)  # (B, H, L, D)


# the text transformer (Hugging Face CLIPTextTransformer, one layer)
h = p[tx + "embeddings.token_embedding.weight"][ids] + p[tx + "embeddings.position_embedding.weight"][:S]  # (B, S, C)
a = ln(h, L0 + "layer_norm1")
q, k, v = (heads(lin(a, L0 + f"self_attn.{n}_proj")) for n in "qkv")
causal = torch.ones(S, S, dtype=torch.bool).tril()  # True = allowed
a = F.scaled_dot_product_attention(q, k, v, attn_mask=causal)
h = h + lin(a.transpose(1, 2).reshape(B, S, C), L0 + "self_attn.out_proj")
m = lin(ln(h, L0 + "layer_norm2"), L0 + "mlp.fc1")
h = h + lin(m * torch.sigmoid(1.702 * m), L0 + "mlp.fc2")  # QuickGELU
tokens = ln(h, tx + "final_layer_norm")  # (B, S, C)
eot = (ids == 2).int().argmax(1)  # the first EOT
cond = lin(tokens[torch.arange(B), eot], "cond_proj")  # (B, CE)
padding = torch.arange(S)[None] > eot[:, None]  # (B, S), True = after EOT

# the attention block with the caption's tokens as context
hn = F.group_norm(xd, 4, p["attn.norm.weight"], p["attn.norm.bias"]).reshape(B, C, T).transpose(1, 2)  # (B, T, C)
q, k, v = lin(hn, "attn.attention.attn.qkv").split(C, -1)
ek, ev = lin(tokens, "attn.attention.context_kv").split(C, -1)
q, k, v = heads(q), torch.cat([heads(ek), heads(k)], 2), torch.cat([heads(ev), heads(v)], 2)
allowed = torch.cat([~padding, torch.ones(B, T, dtype=torch.bool)], 1)[:, None, None, :]  # (B, 1, 1, S + T)
a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)  # (B, H, T, D)
a = lin(a.transpose(1, 2).reshape(B, T, C), "attn.attention.attn.proj")
y = xd + a.transpose(1, 2).reshape(B, C, 3, 3)

((y * w.double()).sum() + (cond * w_cond.double()).sum()).backward()
out["out"], out["cond"], out["padding"], out["grad.x"] = f32(y), f32(cond), padding.to(torch.float32), f32(xd.grad)
for name, t in p.items():
    out[f"grad.{name}"] = f32(t.grad)

path = pathlib.Path(__file__).with_name("glide.safetensors")
save_file({k: f32(v) for k, v in out.items()}, str(path))
print(f"wrote {path} ({path.stat().st_size} bytes, {len(out)} tensors)")
