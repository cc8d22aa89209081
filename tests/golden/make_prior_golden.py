"""Golden values for tests/prior_golden.rs: unCLIP's diffusion prior transformer in PyTorch.

Pinned: torch==2.5.1, safetensors==0.4.5 (python3 tests/golden/make_prior_golden.py).
Writes tests/golden/prior.safetensors (about 20 KB).

A tiny prior (src/models/prior/diffusion_prior.rs): E = 6 (CLIP embedding width),
C_text = 5 (caption token width), T = 3 caption tokens, width C = 8, 2 heads,
2 pre-LN blocks (exact GELU, MLP 4C), ln_f, T_diff = 50 steps. The sequence, written
here from the chapter's definition and not from the Rust code:

    cond  = [text_proj(tokens) (T) ; text_embed_proj(z_t) (1)]      (B, T + 1, C)
    cond  = cond if keep else null_text                              classifier-free dropping
    time  = time_embed.1(silu(time_embed.0(sinusoid(t, C))))        sinusoid = [cos(t f_i), sin(t f_i)], f_i = 10000^(-i / (C/2))
    h     = [cond ; time ; x_proj(x_t) ; query] + position.weight    (B, T + 4, C)
    h     = ln_f(blocks(h, causal mask));   x0_hat = out(h[:, -1])   (B, E)

Stored: the parameters under the Rust names (N(0, 0.3^2), LayerNorms 1 + N(0, 0.1^2) and
N(0, 0.1^2), so every term matters), the inputs `golden.tokens (B, T, C_text)`,
`golden.text_embeds (B, E)`, `golden.x_t (B, E)`, `golden.t` and `golden.keep` (B = 3, as
float32; the middle row is unconditional), and `golden.x0 (B, E)`, computed in float64
from the float32 values.
"""
import math
import pathlib

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

assert torch.__version__.startswith("2.5.1"), torch.__version__
torch.manual_seed(0)
E, CT, T, C, H, NL, TD = 6, 5, 3, 8, 2, 2, 50
S = T + 4
B = 3

params = {}


def normal(name, *shape, std=0.3):
    params[name] = (torch.randn(*shape) * std).to(torch.float32)


def linear_params(name, i, o):
    normal(name + ".weight", o, i)
    normal(name + ".bias", o, std=0.1)


linear_params("text_proj", CT, C)
linear_params("text_embed_proj", E, C)
linear_params("time_embed.0", C, C)
linear_params("time_embed.1", C, C)
linear_params("x_proj", E, C)
normal("query", 1, 1, C)
normal("null_text", 1, T + 1, C)
normal("position.weight", S, C)
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
linear_params("out", C, E)

tokens = torch.randn(B, T, CT).to(torch.float32)
text_embeds = F.normalize(torch.randn(B, E), dim=-1).to(torch.float32)
x_t = torch.randn(B, E).to(torch.float32)
t = torch.tensor([0, 17, 49])
keep = torch.tensor([True, False, True])

P = {k: v.double() for k, v in params.items()}


def linear(x, name):
    return F.linear(x, P[name + ".weight"], P[name + ".bias"])


def layer_norm(x, name):
    return F.layer_norm(x, (C,), P[name + ".weight"], P[name + ".bias"], eps=1e-5)


def sinusoid(t, dim):
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
    angles = t.double()[:, None] * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def forward(tokens, text_embeds, x_t, t, keep):
    b = x_t.shape[0]
    cond = torch.cat([linear(tokens, "text_proj"), linear(text_embeds, "text_embed_proj")[:, None]], 1)
    cond = torch.where(keep[:, None, None], cond, P["null_text"].expand(b, T + 1, C))
    time = linear(F.silu(linear(sinusoid(t, C), "time_embed.0")), "time_embed.1")
    h = torch.cat([cond, time[:, None], linear(x_t, "x_proj")[:, None], P["query"].expand(b, 1, C)], 1)
    h = h + P["position.weight"]
    causal = torch.ones(S, S, dtype=torch.bool).tril()  # allowed = True
    for i in range(NL):
        pre = f"blocks.{i}."
        x = layer_norm(h, pre + "ln_1")
        q, k, v = linear(x, pre + "attn.qkv").split(C, dim=-1)
        q, k, v = (z.view(b, S, H, C // H).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=causal)
        h = h + linear(y.transpose(1, 2).reshape(b, S, C), pre + "attn.proj")
        x = layer_norm(h, pre + "ln_2")
        h = h + linear(F.gelu(linear(x, pre + "mlp.fc")), pre + "mlp.proj")
    h = layer_norm(h, "ln_f")
    return linear(h[:, -1], "out")


x0 = forward(tokens.double(), text_embeds.double(), x_t.double(), t, keep)
out = dict(params)
out["golden.tokens"] = tokens
out["golden.text_embeds"] = text_embeds
out["golden.x_t"] = x_t
out["golden.t"] = t.to(torch.float32)
out["golden.keep"] = keep.to(torch.float32)
out["golden.x0"] = x0.to(torch.float32).contiguous()
path = pathlib.Path(__file__).with_name("prior.safetensors")
save_file(out, path)
print("wrote", path, sum(v.numel() for v in out.values()), "values")
