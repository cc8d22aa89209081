"""Golden values for tests/diffusion_golden.rs.

Pinned: torch==2.5.1, diffusers==0.31.0, safetensors==0.4.5
(pip install diffusers==0.31.0; python3 tests/golden/make_diffusion_golden.py).
Writes tests/golden/diffusion.safetensors (about 60 KB):

(a) diffusers' schedulers, T = 1000:
    - betas and alphas_cumprod of beta_schedule="linear" (1e-4 .. 0.02) and "squaredcos_cap_v2";
    - DDPMScheduler.step (fixed_small variance, clip_sample=False, epsilon) at t = 500 with
      all 1000 steps (t' = 499) and with set_timesteps(50) (t' = 480), and at t = 0 (no noise);
      the variance noise is drawn from torch.Generator().manual_seed(s) exactly as step() draws
      it, and stored;
    - DDIMScheduler.step (clip_sample=False, set_alpha_to_one=True, set_timesteps(50):
      t = 500 -> 480) with eta = 0 and eta = 1 (variance_noise given), and t = 0 -> x_0.
(b) PyTorch (float64 from float32 inputs) for the U-Net's pieces of
    src/models/diffusion/blocks.rs, parameters stored under our names, and the gradients of
    L = sum(out * w) for a fixed random w:
    - GroupNorm(4, 8) + SiLU on x (2, 8, 5, 5);
    - the timestep embedding (improved-diffusion's timestep_embedding), dim 16, t = [0, 1, 17.5, 999];
    - a residual block 8 -> 12 channels (1x1 skip), embedding width 16, GroupNorm(4, .);
      conv2 is NOT zero here, so that its path is tested;
    - the attention block, C = 8, 2 heads, GroupNorm(4, 8), 3 context tokens of width 6 with
      the second item's last token masked as padding; W_O not zero.
"""
import math
import pathlib

import diffusers
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from safetensors.torch import save_file

assert torch.__version__.startswith("2.5.1"), torch.__version__
assert diffusers.__version__ == "0.31.0", diffusers.__version__
torch.manual_seed(0)
out = {}


def f32(t):
    return t.detach().to(torch.float32).contiguous()


# (a) schedulers -----------------------------------------------------------------
for name, kind in [("linear", "linear"), ("cosine", "squaredcos_cap_v2")]:
    s = DDPMScheduler(num_train_timesteps=1000, beta_schedule=kind)
    out[f"{name}.betas"] = f32(s.betas)
    out[f"{name}.alphas_cumprod"] = f32(s.alphas_cumprod)

shape = (2, 1, 4, 4)
model_output = torch.randn(shape)
sample = torch.randn(shape)
out["step.model_output"], out["step.sample"] = model_output, sample


def ddpm_step(t, inference_steps, seed):
    s = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False, variance_type="fixed_small")
    if inference_steps:
        s.set_timesteps(inference_steps)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed))  # what step() draws
    prev = s.step(model_output, t, sample, generator=torch.Generator().manual_seed(seed)).prev_sample
    return noise, prev


for key, t, steps in [("ddpm_t500_full", 500, None), ("ddpm_t500_50", 500, 50), ("ddpm_t0", 0, None)]:
    noise, prev = ddpm_step(t, steps, seed=1)
    out[f"{key}.noise"], out[f"{key}.prev"] = f32(noise), f32(prev)

variance_noise = torch.randn(shape)
out["ddim.variance_noise"] = variance_noise
for key, t, eta in [("ddim_t500_eta0", 500, 0.0), ("ddim_t500_eta1", 500, 1.0), ("ddim_t0_eta0", 0, 0.0)]:
    s = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False, set_alpha_to_one=True)
    s.set_timesteps(50)
    assert 500 in s.timesteps.tolist() and 480 in s.timesteps.tolist()
    prev = s.step(model_output, t, sample, eta=eta, variance_noise=variance_noise).prev_sample
    out[f"{key}.prev"] = f32(prev)


# (b) U-Net pieces ----------------------------------------------------------------
def param(*shape, scale=0.3):
    return (torch.randn(*shape) * scale).to(torch.float32)


def leaf(t):
    return t.double().requires_grad_()


# GroupNorm + SiLU
x = torch.randn(2, 8, 5, 5)
g, b = 1 + param(8), param(8)
w = torch.rand(2, 8, 5, 5) + 0.5
out["gn.x"], out["gn.weight"], out["gn.bias"], out["gn.w"] = x, g, b, w
xd, gd, bd = leaf(x), leaf(g), leaf(b)
y = F.silu(F.group_norm(xd, 4, gd, bd, eps=1e-5))
(y * w.double()).sum().backward()
out["gn.out"], out["gn.grad.x"], out["gn.grad.weight"], out["gn.grad.bias"] = f32(y), f32(xd.grad), f32(gd.grad), f32(bd.grad)


# timestep embedding (improved-diffusion, nn.py)
def timestep_embedding(timesteps, dim, max_period=10000):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(start=0, end=half, dtype=torch.float64) / half)
    args = timesteps[:, None].double() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


t = torch.tensor([0.0, 1.0, 17.5, 999.0])
out["temb.t"], out["temb.out"] = t, f32(timestep_embedding(t, 16))

# residual block: GN SiLU conv3x3 (+ Linear(SiLU(emb))) GN SiLU conv3x3, 1x1 skip
cin, cout, cemb = 8, 12, 16
rb = {
    "norm1.weight": 1 + param(cin), "norm1.bias": param(cin),
    "conv1.weight": param(cout, cin, 3, 3, scale=0.15), "conv1.bias": param(cout),
    "emb_proj.weight": param(cout, cemb), "emb_proj.bias": param(cout),
    "norm2.weight": 1 + param(cout), "norm2.bias": param(cout),
    "conv2.weight": param(cout, cout, 3, 3, scale=0.15), "conv2.bias": param(cout),
    "skip.weight": param(cout, cin, 1, 1), "skip.bias": param(cout),
}
x, emb = torch.randn(2, cin, 6, 6), torch.randn(2, cemb)
w = torch.rand(2, cout, 6, 6) + 0.5
for k, v in rb.items():
    out[f"res.{k}"] = v
out["res.x"], out["res.emb"], out["res.w"] = x, emb, w
p = {k: leaf(v) for k, v in rb.items()}
xd, ed = leaf(x), leaf(emb)
h = F.conv2d(F.silu(F.group_norm(xd, 4, p["norm1.weight"], p["norm1.bias"])), p["conv1.weight"], p["conv1.bias"], padding=1)
h = h + F.linear(F.silu(ed), p["emb_proj.weight"], p["emb_proj.bias"])[:, :, None, None]
h = F.conv2d(F.silu(F.group_norm(h, 4, p["norm2.weight"], p["norm2.bias"])), p["conv2.weight"], p["conv2.bias"], padding=1)
y = F.conv2d(xd, p["skip.weight"], p["skip.bias"]) + h
(y * w.double()).sum().backward()
out["res.out"], out["res.grad.x"], out["res.grad.emb"] = f32(y), f32(xd.grad), f32(ed.grad)
for k, v in p.items():
    out[f"res.grad.{k}"] = f32(v.grad)

# attention block with context tokens
C, H, S, CC = 8, 2, 3, 6
ab = {
    "norm.weight": 1 + param(C), "norm.bias": param(C),
    "attention.attn.qkv.weight": param(3 * C, C), "attention.attn.qkv.bias": param(3 * C),
    "attention.attn.proj.weight": param(C, C), "attention.attn.proj.bias": param(C),
    "attention.context_kv.weight": param(2 * C, CC), "attention.context_kv.bias": param(2 * C),
}
x, ctx = torch.randn(2, C, 3, 3), torch.randn(2, S, CC)
padding = torch.tensor([[False, False, False], [False, False, True]])  # True = padding
w = torch.rand(2, C, 3, 3) + 0.5
for k, v in ab.items():
    out[f"attn.{k}"] = v
out["attn.x"], out["attn.context"], out["attn.padding"], out["attn.w"] = x, ctx, padding.to(torch.float32), w
p = {k: leaf(v) for k, v in ab.items()}
xd, cd = leaf(x), leaf(ctx)
B, T, D = 2, 9, C // H
hn = F.group_norm(xd, 4, p["norm.weight"], p["norm.bias"]).reshape(B, C, T).transpose(1, 2)  # (B, T, C)
q, k, v = F.linear(hn, p["attention.attn.qkv.weight"], p["attention.attn.qkv.bias"]).split(C, -1)
ek, ev = F.linear(cd, p["attention.context_kv.weight"], p["attention.context_kv.bias"]).split(C, -1)
heads = lambda z: z.reshape(B, -1, H, D).transpose(1, 2)  # (B, H, L, D)
q, k, v = heads(q), torch.cat([heads(ek), heads(k)], 2), torch.cat([heads(ev), heads(v)], 2)
allowed = torch.cat([~padding, torch.ones(B, T, dtype=torch.bool)], 1)[:, None, None, :]  # (B, 1, 1, S + T)
a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)  # (B, H, T, D)
a = F.linear(a.transpose(1, 2).reshape(B, T, C), p["attention.attn.proj.weight"], p["attention.attn.proj.bias"])
y = xd + a.transpose(1, 2).reshape(B, C, 3, 3)
(y * w.double()).sum().backward()
out["attn.out"], out["attn.grad.x"], out["attn.grad.context"] = f32(y), f32(xd.grad), f32(cd.grad)
for k, v in p.items():
    out[f"attn.grad.{k}"] = f32(v.grad)

path = pathlib.Path(__file__).with_name("diffusion.safetensors")
save_file({k: f32(v) for k, v in out.items()}, str(path))
print(f"wrote {path} ({path.stat().st_size} bytes, {len(out)} tensors)")
