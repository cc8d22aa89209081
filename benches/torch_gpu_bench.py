"""The PyTorch GPU side of `cargo run --release --example bench_wgpu -- --torch`.

Times fp32 sgemm (TF32 off) and one Adam training step of two chapter models on CUDA:
chapter 00's digit judge CNN and chapter 05's CIFAR-10 VQ-VAE (hidden width --hidden,
EMA codebook of 256 codes of dimension 32, MSE of the sigmoid reconstruction), both at
batch 128, and prints one JSON object on the last line:

    {"device": "...", "sgemm": {"1024": ms, ...}, "judge_step_ms": ms, "vq_vae_step_ms": ms}

or {"error": "..."} when torch or a CUDA device is missing. Pinned: torch==2.5.1.
"""

import argparse
import json
import math
import statistics
import time


def median_ms(fn, reps, sync):
    fn()
    sync()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1024,2048,4096,8192")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=128)
    args = parser.parse_args()
    try:
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
    except ImportError as e:
        print(json.dumps({"error": f"python could not import torch: {e}"}))
        return
    if not torch.cuda.is_available():
        print(json.dumps({"error": "torch sees no CUDA device"}))
        return
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda")
    sync = torch.cuda.synchronize
    out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "sgemm": {}}
    for n in [int(s) for s in args.sizes.split(",")]:
        a = torch.randn(n, n, device=dev)
        b = torch.randn(n, n, device=dev)
        out["sgemm"][str(n)] = median_ms(lambda: a @ b, args.reps, sync)

    class Judge(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
            self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
            self.fc1 = nn.Linear(64 * 7 * 7, 128)
            self.fc2 = nn.Linear(128, 10)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            return self.fc2(F.relu(self.fc1(x.flatten(1))))

    model = Judge().to(dev)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.rand(128, 1, 28, 28, device=dev)
    y = torch.randint(0, 10, (128,), device=dev)

    def step():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    out["judge_step_ms"] = median_ms(step, args.reps * 4, sync)
    out["vq_vae_step_ms"] = vq_vae_step_ms(torch, nn, F, dev, args.hidden, args.reps * 4, sync)
    out["transformer_step_ms"] = transformer_step_ms(torch, nn, F, dev, args.reps * 4, sync)
    print(json.dumps(out))


def vq_vae_step_ms(torch, nn, F, dev, hidden, reps, sync):
    """Chapter 05's VQ-VAE (src/models/vqvae.rs), CIFAR-10 config, one Adam step."""

    class ResBlock(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1 = nn.Conv2d(c, c, 3, padding=1)
            self.conv2 = nn.Conv2d(c, c, 1)

        def forward(self, x):  # x + conv1x1(relu(conv3x3(relu(x))))
            return x + self.conv2(F.relu(self.conv1(F.relu(x))))

    class VqVae(nn.Module):
        def __init__(self, h, codes=256, dim=32, beta=0.25, decay=0.99):
            super().__init__()
            self.down1 = nn.Conv2d(3, h, 4, 2, 1)
            self.down2 = nn.Conv2d(h, h, 4, 2, 1)
            self.enc_block = ResBlock(h)
            self.to_code = nn.Conv2d(h, dim, 1)
            self.from_code = nn.Conv2d(dim, h, 3, padding=1)
            self.dec_block = ResBlock(h)
            self.up1 = nn.Conv2d(h, h, 3, padding=1)
            self.up2 = nn.Conv2d(h, 3, 3, padding=1)
            self.register_buffer("codebook", torch.randn(codes, dim))
            self.register_buffer("ema_count", torch.ones(codes))
            self.register_buffer("ema_sum", self.codebook.clone())
            self.beta, self.decay = beta, decay

        def forward(self, x):
            z_e = self.to_code(F.relu(self.enc_block(self.down2(F.relu(self.down1(x))))))
            b, d, gh, gw = z_e.shape
            flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)  # (B h w, D)
            dist = (flat**2).sum(1, keepdim=True) - 2 * flat @ self.codebook.T + (self.codebook**2).sum(1)
            idx = dist.argmin(1)
            z_q = self.codebook[idx]
            with torch.no_grad():  # EMA codebook update (no gradient to the codebook)
                onehot = F.one_hot(idx, self.codebook.shape[0]).float()
                self.ema_count.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
                self.ema_sum.mul_(self.decay).add_(onehot.T @ flat, alpha=1 - self.decay)
                self.codebook.copy_(self.ema_sum / self.ema_count.clamp(min=1e-5)[:, None])
            commit = self.beta * F.mse_loss(flat, z_q.detach())
            z_q = flat + (z_q - flat).detach()  # straight-through
            z_q = z_q.reshape(b, gh, gw, d).permute(0, 3, 1, 2)
            h = self.dec_block(self.from_code(z_q))
            h = self.up1(F.interpolate(F.relu(h), scale_factor=2, mode="nearest"))
            logits = self.up2(F.interpolate(F.relu(h), scale_factor=2, mode="nearest"))
            return F.mse_loss(torch.sigmoid(logits), x) + commit

    model = VqVae(hidden).to(dev)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.rand(128, 3, 32, 32, device=dev)

    def step():
        opt.zero_grad()
        model(x).backward()
        opt.step()

    return median_ms(step, reps, sync)


def transformer_step_ms(torch, nn, F, dev, reps, sync, batch=32, t=64, c=256, heads=4, layers=2):
    """Two pre-LN blocks as src/nn/transformer.rs (fused QKV, GELU MLP of ratio 4, final
    LayerNorm, causal mask), loss mean(y^2), one Adam step."""

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(c), nn.LayerNorm(c)
            self.qkv, self.proj = nn.Linear(c, 3 * c), nn.Linear(c, c)
            self.fc, self.out = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)

        def forward(self, x, mask):
            b, n, _ = x.shape
            d = c // heads
            q, k, v = self.qkv(self.ln1(x)).chunk(3, -1)
            q, k, v = (z.reshape(b, n, heads, d).transpose(1, 2) for z in (q, k, v))  # (B, H, T, D)
            att = ((q @ k.transpose(-1, -2)) / math.sqrt(d)).masked_fill(mask, float("-inf")).softmax(-1)
            x = x + self.proj((att @ v).transpose(1, 2).reshape(b, n, c))
            return x + self.out(F.gelu(self.fc(self.ln2(x))))

    blocks = nn.ModuleList([Block() for _ in range(layers)]).to(dev)
    ln_f = nn.LayerNorm(c).to(dev)
    opt = torch.optim.Adam([*blocks.parameters(), *ln_f.parameters()], 1e-3)
    x = torch.randn(batch, t, c, device=dev)
    mask = torch.ones(t, t, dtype=torch.bool, device=dev).triu(1)

    def step():
        opt.zero_grad()
        h = x
        for block in blocks:
            h = block(h, mask)
        ln_f(h).square().mean().backward()
        opt.step()

    return median_ms(step, reps, sync)


if __name__ == "__main__":
    main()
