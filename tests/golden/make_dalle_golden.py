"""Golden values for tests/dalle_golden.rs: DALL-E 1's forward pass and loss in PyTorch.

Pinned: torch==2.5.1, safetensors==0.4.5 (python3 tests/golden/make_dalle_golden.py).
Writes tests/golden/dalle.safetensors (about 60 KB).

A tiny DALL-E (src/models/dalle): V_text = 20 text ids plus L = 5 padding tokens
(one per position), K = 16 image codes on a 3 x 4 grid, width 16, 2 heads,
4 pre-LN blocks (exact GELU, MLP 4C), ln_f, and two bias-free heads:
text_head (C -> V_text + L) at positions 0..L-2, image_head (C -> K) at L-1...
The input is  h0[p] = text_embedding[id] + text_position[p]  for p < L and
image_embedding[id] + image_row[n // w] + image_column[n % w]  at p = L + n.
The masks are written here from their definitions (allowed = True), not from
the Rust code: causal; text sees earlier text; image queries see all text and,
among earlier image cells, full: all, row: same row, column: same column,
conv3: |dr| <= 1 and |dc| <= 1; paper: row, column, row, conv3 by layer.

Stored: the parameters under the Rust names (drawn N(0, 0.3^2), LayerNorms
1 + N(0, 0.1^2) and N(0, 0.1^2), so that every term matters), `golden.ids`
(B = 2 sequences of L + N = 17 ids, as float32) and, per mask, the text and
image logits of the inputs ids[:, :-1] and the two cross-entropies of the
targets ids[:, 1:]. References are computed in float64 from the float32 values.
"""
import pathlib

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

assert torch.__version__.startswith("2.5.1"), torch.__version__
torch.manual_seed(0)
VT, L, K, GH, GW, C, H, NL = 20, 5, 16, 3, 4, 16, 2, 4
N = GH * GW
S = L + N
B = 2

params = {}


def normal(name, *shape, std=0.3):
    params[name] = (torch.randn(*shape) * std).to(torch.float32)


normal("text_embedding.weight", VT + L, C)
normal("text_position.weight", L, C)
normal("image_embedding.weight", K, C)
normal("image_row.weight", GH, C)
normal("image_column.weight", GW, C)
for i in range(NL):
    p = f"blocks.{i}."
    for ln in ("ln_1", "ln_2"):
        params[p + ln + ".weight"] = (1 + 0.1 * torch.randn(C)).to(torch.float32)
        normal(p + ln + ".bias", C, std=0.1)
    normal(p + "attn.qkv.weight", 3 * C, C)
    normal(p + "attn.qkv.bias", 3 * C, std=0.1)
    normal(p + "attn.proj.weight", C, C)
    normal(p + "attn.proj.bias", C, std=0.1)
    normal(p + "mlp.fc.weight", 4 * C, C)
    normal(p + "mlp.fc.bias", 4 * C, std=0.1)
    normal(p + "mlp.proj.weight", C, 4 * C, std=0.15)
    normal(p + "mlp.proj.bias", C, std=0.1)
params["ln_f.weight"] = (1 + 0.1 * torch.randn(C)).to(torch.float32)
normal("ln_f.bias", C, std=0.1)
normal("text_head.weight", VT + L, C)
normal("image_head.weight", K, C)

text = torch.randint(0, VT + L, (B, L))
image = torch.randint(0, K, (B, N))
ids = torch.cat([text, image], 1)  # (B, S)


def allowed(kind, q, k):
    if k > q:
        return False
    if q < L or k < L:
        return True
    (qr, qc), (kr, kc) = divmod(q - L, GW), divmod(k - L, GW)
    return {
        "full": True,
        "row": kr == qr,
        "column": kc == qc,
        "conv3": abs(kr - qr) <= 1 and abs(kc - qc) <= 1,
    }[kind]


def mask(kind, t):
    return torch.tensor([[allowed(kind, q, k) for k in range(t)] for q in range(t)])


LAYERS = {
    "full": ["full"] * NL,
    "row": ["row"] * NL,
    "column": ["column"] * NL,
    "conv3": ["conv3"] * NL,
    "paper": ["row", "column", "row", "conv3"],  # (i - 2) mod 4 = 0 -> column, last -> conv
}

P = {k: v.double() for k, v in params.items()}


def layer_norm(x, name):
    return F.layer_norm(x, (C,), P[name + ".weight"], P[name + ".bias"], eps=1e-5)


def linear(x, name, bias=True):
    return F.linear(x, P[name + ".weight"], P[name + ".bias"] if bias else None)


def forward(ids, kinds):
    b, t = ids.shape
    pos = torch.arange(t)
    h = torch.zeros(b, t, C, dtype=torch.float64)
    for p in range(t):
        if p < L:
            h[:, p] = P["text_embedding.weight"][ids[:, p]] + P["text_position.weight"][p]
        else:
            n = p - L
            h[:, p] = P["image_embedding.weight"][ids[:, p]] + P["image_row.weight"][n // GW] + P["image_column.weight"][n % GW]
    for i, kind in enumerate(kinds):
        pre = f"blocks.{i}."
        x = layer_norm(h, pre + "ln_1")
        q, k, v = linear(x, pre + "attn.qkv").split(C, dim=-1)
        q, k, v = (z.view(b, t, H, C // H).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask(kind, t))
        h = h + linear(y.transpose(1, 2).reshape(b, t, C), pre + "attn.proj")
        x = layer_norm(h, pre + "ln_2")
        h = h + linear(F.gelu(linear(x, pre + "mlp.fc")), pre + "mlp.proj")
    h = layer_norm(h, "ln_f")
    text_logits = linear(h[:, : L - 1], "text_head", bias=False)  # (B, L-1, VT+L)
    image_logits = linear(h[:, L - 1 :], "image_head", bias=False)  # (B, N, K)
    return text_logits, image_logits


out = dict(params)
out["golden.ids"] = ids.to(torch.float32)
for name, kinds in LAYERS.items():
    text_logits, image_logits = forward(ids[:, :-1], kinds)
    ce_text = F.cross_entropy(text_logits.reshape(-1, VT + L), ids[:, 1:L].reshape(-1))
    ce_image = F.cross_entropy(image_logits.reshape(-1, K), ids[:, L:].reshape(-1))
    out[f"golden.{name}.text_logits"] = text_logits.to(torch.float32).contiguous()
    out[f"golden.{name}.image_logits"] = image_logits.to(torch.float32).contiguous()
    out[f"golden.{name}.losses"] = torch.tensor([ce_text, ce_image], dtype=torch.float32)

path = pathlib.Path(__file__).with_name("dalle.safetensors")
save_file(out, path)
print("wrote", path, sum(v.numel() for v in out.values()), "values")
