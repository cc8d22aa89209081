"""The PyTorch twins of `cargo run --release --example bench_chapters -- --torch`.

examples/bench_chapters/ builds every chapter's model through the library and
keeps this script running beside it. The script prints one JSON line when it
starts, {"torch": "2.5.1", "threads": 2, "capability": "AVX512"} (or {"error": "..."} without torch),
then answers each request line on stdin,

    {"case": "gpt", "spec": {"batch": 64, "vocab": 27, ...}, "warmup": 2, "reps": 8, "sample_reps": 2}

with one JSON line of every timed step, in milliseconds:

    {"params": 105088, "shapes": [[27, 64], ..], "step_ms": [..], "forward_ms": [..], "backward_ms": [..], "optimizer_ms": [..],
     "other_ms": [..], "sample_ms": [..]}

The spec carries what the Rust side read from the library (batch size,
vocabulary, widths); the model of a case is built on its first request and
kept. `params` counts the parameters the optimiser updates and `shapes` lists their
tensors' shapes, sorted; the Rust side stops when either differs from the library's model, so a twin that drifts from the chapter
fails loudly. Each model is written out from the same operations the library
uses (the attention computes its weights explicitly, as the library's does,
because the chapters plot them), with PyTorch's own layers and optimisers.

`python3 benches/torch_chapters.py --check-weights` loads the weights this book
ships (weights/*.safetensors, written by the library) into the twins of the
judge, the ViT, the VQ-VAE and the dVAE and evaluates them on the MNIST test
set: they reproduce the library's accuracies and reconstruction errors to every
printed digit (0.9917, 0.9812, 0.004476, 0.013549), so these twins compute
what the library's models compute, not only with as many parameters. It also
loads chapter 08's EMA U-Net (weights/ddpm_mnist.safetensors, every tensor by
name and shape) into the U-Net twin and draws 100 digits with guided DDIM-10:
the judge twin finds 95 of them the asked digit (the library: 97.7 % of 300),
which a U-Net wired differently from the library's could not do.

Timing (as examples/bench_chapters/main.rs): `warmup` untimed steps, then `reps`
timed ones, each phase (forward with the loss, backward, optimiser with
zero_grad and clipping, other: reading the loss and the logged metrics) timed
with perf_counter at its borders. Inputs are random batches of the right shape,
made once. Threads: BENCH_THREADS (default 2; the Rust side passes its rayon
thread count).
"""

import argparse
import json
import math
import os
import sys
import time

THREADS = int(os.environ.get("BENCH_THREADS", "2"))
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(THREADS)

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:  # the Rust side prints this and skips the comparison
    print(json.dumps({"error": f"python could not import torch: {e}"}))
    sys.exit(3)

PHASES = ("forward", "backward", "optimizer", "other")


class Laps:
    """Adds the time since the last lap to a phase, in milliseconds."""

    def __init__(self):
        self.last = time.perf_counter()
        self.ms = dict.fromkeys(PHASES, 0.0)

    def lap(self, phase):
        now = time.perf_counter()
        self.ms[phase] += (now - self.last) * 1e3
        self.last = now


def run_steps(step, warmup, reps):
    """`warmup` untimed steps, then `reps` timed ones; keep in sync with the Rust side."""
    for _ in range(warmup):
        step(Laps())
    out = {f"{p}_ms": [] for p in ("step",) + PHASES}
    for _ in range(reps):
        t0 = time.perf_counter()
        laps = Laps()
        step(laps)
        out["step_ms"].append((time.perf_counter() - t0) * 1e3)
        for p in PHASES:
            out[f"{p}_ms"].append(laps.ms[p])
    return out


def time_calls(f, reps):
    """Milliseconds of each of `reps` calls, after one warm-up call."""
    f()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def trainable(model):
    """The number of trainable parameters and the sorted shapes of their tensors."""
    params = [p for p in model.parameters() if p.requires_grad]
    return sum(p.numel() for p in params), sorted(list(p.shape) for p in params)


def images(b, c, s, lo=0.0, hi=1.0):
    return torch.rand(b, c, s, s) * (hi - lo) + lo


# ----- the transformer pieces shared by chapters 01 to 03 ---------------------------------------


def attention(q, k, v, mask):
    """softmax(Q Kᵀ / √d + mask) V, the weights made explicitly (src/nn/attention.rs)."""
    scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))  # (B, H, T, S)
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    return scores.softmax(-1) @ v


def causal_mask(t, s):
    """True where query i may not see key j: j > i + (s - t) (src/nn/attention.rs)."""
    return torch.ones(t, s, dtype=torch.bool).triu(1 + s - t)


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class Block(nn.Module):
    """GPT-2's pre-LN block with a fused QKV projection (src/nn/transformer.rs, mha.rs)."""

    def __init__(self, c, heads):
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.qkv, self.proj = nn.Linear(c, 3 * c), nn.Linear(c, c)
        self.fc, self.mlp_proj = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)

    def split(self, x):
        b, t, c = x.shape
        return [z.reshape(b, t, self.heads, c // self.heads).transpose(1, 2) for z in self.qkv(x).chunk(3, -1)]  # (B, H, T, D)

    def merge(self, y):
        b, h, t, d = y.shape
        return self.proj(y.transpose(1, 2).reshape(b, t, h * d))  # (B, T, C)

    def forward(self, x, mask=None, cache=None):
        q, k, v = self.split(self.ln_1(x))
        if cache is not None:  # [keys, values] of the earlier positions, (B, H, S, D)
            if cache:
                k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
            cache[:] = [k, v]
            mask = causal_mask(q.shape[2], k.shape[2])
        x = x + self.merge(attention(q, k, v, mask))
        return x + self.mlp_proj(F.gelu(self.fc(self.ln_2(x))))


class Gpt(nn.Module):
    """src/models/gpt.rs: token and learned position embeddings, blocks, ln_f, a bias-free head."""

    def __init__(self, vocab, context, c, heads, layers):
        super().__init__()
        self.wte = nn.Embedding(vocab, c)
        self.wpe = nn.Parameter(torch.randn(context, c) * 0.02)
        self.blocks = nn.ModuleList(Block(c, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(c)
        self.lm_head = nn.Linear(c, vocab, bias=False)

    def forward(self, ids, offset=0, caches=None):
        t = ids.shape[1]
        h = self.wte(ids) + self.wpe[offset : offset + t]  # (B, T, C)
        mask = causal_mask(t, t)
        for i, block in enumerate(self.blocks):
            h = block(h, mask, None if caches is None else caches[i])
        return self.lm_head(self.ln_f(h))  # (B, T, V)

    @torch.no_grad()
    def generate(self, prompts, max_len, temperature):
        """One token per step through the key/value caches, as Gpt::generate (no stop token)."""
        seqs, step_ids = prompts, prompts
        caches = [[] for _ in self.blocks]
        offset = 0
        while seqs.shape[1] < max_len:
            logits = self(step_ids, offset, caches)[:, -1]  # (B, V)
            offset += step_ids.shape[1]
            step_ids = torch.multinomial((logits / temperature).softmax(-1), 1)  # (B, 1)
            seqs = torch.cat([seqs, step_ids], 1)
        return seqs


class Vit(nn.Module):
    """src/models/vit.rs: patch convolution, class token, learned positions, blocks, ln_f, head."""

    def __init__(self, width, layers, heads, patch, size=28, classes=10):
        super().__init__()
        n = (size // patch) ** 2
        self.patch_embed = nn.Conv2d(1, width, patch, patch)
        self.class_embedding = nn.Parameter(torch.randn(width) * 0.02)
        self.positional_embedding = nn.Parameter(torch.randn(n + 1, width) * 0.02)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        b = x.shape[0]
        p = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, C)
        z = torch.cat([self.class_embedding.expand(b, 1, -1), p], 1) + self.positional_embedding  # (B, N + 1, C)
        for block in self.blocks:
            z = block(z)
        return self.head(self.ln_f(z)[:, 0])  # (B, 10)


# ----- CLIP (src/models/clip) ---------------------------------------------------------------------


class ClipLayer(nn.Module):
    """Hugging Face's CLIPEncoderLayer: separate q, k, v projections, QuickGELU."""

    def __init__(self, c, inter, heads):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(c, c) for _ in range(4))
        self.layer_norm1, self.layer_norm2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.fc1, self.fc2, self.act = nn.Linear(c, inter), nn.Linear(inter, c), QuickGELU()

    def forward(self, x, mask):
        b, t, c = x.shape
        h = self.layer_norm1(x)
        q, k, v = (p(h).reshape(b, t, self.heads, c // self.heads).permute(0, 2, 1, 3) for p in (self.q_proj, self.k_proj, self.v_proj))
        x = x + self.out_proj(attention(q, k, v, mask).permute(0, 2, 1, 3).reshape(b, t, c))
        return x + self.fc2(self.act(self.fc1(self.layer_norm2(x))))


class Clip(nn.Module):
    def __init__(self, s):
        super().__init__()
        c, inter, heads, e = s["width"], s["intermediate"], s["heads"], s["projection"]
        grid = 28 // s["patch"]
        self.eot = s["eot"]
        self.token_embedding = nn.Embedding(s["vocab"], c)
        self.text_position = nn.Embedding(s["context"], c)
        self.text_layers = nn.ModuleList(ClipLayer(c, inter, heads) for _ in range(s["text_layers"]))
        self.final_layer_norm = nn.LayerNorm(c)
        self.class_embedding = nn.Parameter(torch.randn(c) * c**-0.5)
        self.patch_embedding = nn.Conv2d(1, c, s["patch"], s["patch"], bias=False)
        self.vision_position = nn.Embedding(grid * grid + 1, c)
        self.pre_layrnorm, self.post_layernorm = nn.LayerNorm(c), nn.LayerNorm(c)
        self.vision_layers = nn.ModuleList(ClipLayer(c, inter, heads) for _ in range(s["vision_layers"]))
        self.visual_projection = nn.Linear(c, e, bias=False)
        self.text_projection = nn.Linear(c, e, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, pixels, ids):
        b, t = ids.shape
        p = self.patch_embedding(pixels).flatten(2).transpose(1, 2)  # (B, N, C)
        x = torch.cat([self.class_embedding.expand(b, 1, -1), p], 1) + self.vision_position.weight
        x = self.pre_layrnorm(x)
        for layer in self.vision_layers:
            x = layer(x, None)
        image = self.post_layernorm(x[:, 0])  # (B, C)
        h = self.token_embedding(ids) + self.text_position.weight[:t]  # (B, T, C)
        mask = causal_mask(t, t)
        for layer in self.text_layers:
            h = layer(h, mask)
        h = self.final_layer_norm(h)
        eot = (ids == self.eot).int().argmax(1)  # the first end-of-text token
        text = h[torch.arange(b), eot]  # (B, C)
        image_embeds = F.normalize(self.visual_projection(image), dim=-1, eps=1e-12)
        text_embeds = F.normalize(self.text_projection(text), dim=-1, eps=1e-12)
        logits_per_text = (text_embeds @ image_embeds.t()) * self.logit_scale.clamp(max=4.6051702).exp()
        return logits_per_text.t().contiguous()  # logits_per_image (N, N)


def contrastive_loss(logits):
    diag = torch.arange(logits.shape[0])
    return 0.5 * (F.cross_entropy(logits, diag) + F.cross_entropy(logits.t().contiguous(), diag))


# ----- the autoencoders (src/models/vae.rs, vqvae.rs, dvae.rs, src/nn/quantize.rs) -------------


class Vae(nn.Module):
    def __init__(self, hidden, latent, c=1, s=28):
        super().__init__()
        self.hidden, self.latent, self.q = hidden, latent, s // 4
        flat = hidden * self.q * self.q
        self.enc_conv1, self.enc_conv2 = nn.Conv2d(c, hidden, 4, 2, 1), nn.Conv2d(hidden, hidden, 4, 2, 1)
        self.enc_head, self.dec_input = nn.Linear(flat, 2 * latent), nn.Linear(latent, flat)
        self.dec_conv1, self.dec_conv2 = nn.Conv2d(hidden, hidden, 3, 1, 1), nn.Conv2d(hidden, c, 3, 1, 1)

    def forward(self, x):
        h = F.relu(self.enc_conv2(F.relu(self.enc_conv1(x))))
        stats = self.enc_head(h.flatten(1))
        mu, log_var = stats[:, : self.latent], stats[:, self.latent :]
        z = mu + (0.5 * log_var).exp() * torch.randn_like(mu)  # reparameterisation
        h = F.relu(self.dec_input(z)).reshape(-1, self.hidden, self.q, self.q)
        h = F.relu(self.dec_conv1(F.interpolate(h, scale_factor=2, mode="nearest")))
        logits = self.dec_conv2(F.interpolate(h, scale_factor=2, mode="nearest"))
        reconstruction = F.binary_cross_entropy_with_logits(logits, x) * x[0].numel()
        kl = (-0.5 * (1 + log_var - mu.square() - log_var.exp()).sum(-1)).mean()
        return reconstruction, kl


class ResBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c, c, 3, 1, 1), nn.Conv2d(c, c, 1)

    def forward(self, x):
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class VectorQuantizer(nn.Module):
    """Nearest code by ‖e‖² - 2 z·eᵀ, straight-through, commitment 0.25, EMA codebook (decay 0.99,
    ε 1e-5), dead codes restarted from the batch after 20 idle steps."""

    def __init__(self, k, d, decay=0.99, eps=1e-5, patience=20):
        super().__init__()
        init = torch.rand(k, d) * (2 / k) - 1 / k
        self.register_buffer("codebook", init.clone())
        self.register_buffer("ema_cluster_size", torch.ones(k))
        self.register_buffer("ema_embed_sum", init.clone())
        self.k, self.decay, self.eps, self.patience = k, decay, eps, patience
        self.idle = torch.zeros(k, dtype=torch.long)

    def forward(self, z):  # (N, D)
        if not self.training:
            with torch.no_grad():
                idx = (self.codebook.square().sum(1) - 2 * z @ self.codebook.t()).argmin(1)
            return F.embedding(idx, self.codebook), None, None
        with torch.no_grad():
            idx = (self.codebook.square().sum(1) - 2 * z @ self.codebook.t()).argmin(1)  # (N,)
        e = F.embedding(idx, self.codebook)
        z_q = z + (e - z).detach()
        commitment = F.mse_loss(z, e.detach()) * 0.25
        counts = torch.bincount(idx, minlength=self.k)
        with torch.no_grad():
            d = self.decay
            self.ema_cluster_size.mul_(d).add_(counts.float(), alpha=1 - d)
            self.ema_embed_sum.mul_(d).add_(torch.zeros_like(self.codebook).index_add_(0, idx, z), alpha=1 - d)
            n = self.ema_cluster_size
            smoothed = (n + self.eps) / (n.sum() + self.k * self.eps) * n.sum()
            self.codebook.copy_(self.ema_embed_sum / smoothed[:, None])
            self.idle = torch.where(counts > 0, 0, self.idle + 1)
            dead = (self.idle >= self.patience).nonzero().flatten()
            if len(dead):
                self.idle[dead] = 0
                rows = z[torch.randint(0, z.shape[0], (len(dead),))]
                self.codebook[dead] = rows
                self.ema_embed_sum[dead] = rows
                self.ema_cluster_size[dead] = 1.0
        return z_q, commitment, counts


class VqVae(nn.Module):
    def __init__(self, s):
        super().__init__()
        c, h, d = s["channels"], s["hidden"], s["dim"]
        self.downs = nn.ModuleList([nn.Conv2d(c, h, 4, 2, 1), nn.Conv2d(h, h, 4, 2, 1)])
        self.enc_block, self.to_code = ResBlock(h), nn.Conv2d(h, d, 1)
        self.quantizer = VectorQuantizer(s["codes"], d)
        self.from_code, self.dec_block = nn.Conv2d(d, h, 3, 1, 1), ResBlock(h)
        self.ups = nn.ModuleList([nn.Conv2d(h, h, 3, 1, 1), nn.Conv2d(h, c, 3, 1, 1)])
        self.bce = s["loss"] == "bce"

    def forward(self, x):
        h = self.downs[1](F.relu(self.downs[0](x)))
        z_e = self.to_code(F.relu(self.enc_block(h)))  # (B, D, h, w)
        b, d, hh, ww = z_e.shape
        z_q, commitment, counts = self.quantizer(z_e.permute(0, 2, 3, 1).reshape(-1, d))
        h = self.dec_block(self.from_code(z_q.reshape(b, hh, ww, d).permute(0, 3, 1, 2)))
        for conv in self.ups:
            h = conv(F.interpolate(F.relu(h), scale_factor=2, mode="nearest"))
        rec = F.binary_cross_entropy_with_logits(h, x) if self.bce else F.mse_loss(torch.sigmoid(h), x)
        mse = F.mse_loss(torch.sigmoid(h).detach(), x).item()
        return rec, commitment, counts, mse


class DvaeBlock(nn.Module):
    def __init__(self, c_in, c_out, n_layers):
        super().__init__()
        self.id_path = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None
        self.conv1, self.conv2 = nn.Conv2d(c_in, c_out, 3, 1, 1), nn.Conv2d(c_out, c_out, 1)
        self.post_gain = 1 / n_layers**2

    def forward(self, x):
        identity = x if self.id_path is None else self.id_path(x)
        return identity + self.post_gain * self.conv2(F.relu(self.conv1(F.relu(x))))


class Dvae(nn.Module):
    """Three groups (widths h, 2h, 4h) of one block each, max pooling / nearest upsampling between."""

    def __init__(self, s):
        super().__init__()
        h, k = s["hidden"], s["codes"]
        w = [h, 2 * h, 4 * h]
        self.enc_input = nn.Conv2d(1, h, 3, 1, 1)
        self.enc_blocks = nn.ModuleList([DvaeBlock(w[0], w[0], 3), DvaeBlock(w[0], w[1], 3), DvaeBlock(w[1], w[2], 3)])
        self.enc_output, self.dec_input = nn.Conv2d(w[2], k, 1), nn.Conv2d(k, w[2], 1)
        self.dec_blocks = nn.ModuleList([DvaeBlock(w[2], w[2], 3), DvaeBlock(w[2], w[1], 3), DvaeBlock(w[1], w[0], 3)])
        self.dec_output = nn.Conv2d(h, 1, 1)
        self.k = k

    def encode_logits(self, x):
        h = self.enc_input(x)
        for i, block in enumerate(self.enc_blocks):
            h = block(h)
            if i < 2:
                h = F.max_pool2d(h, 2, 2)
        return self.enc_output(F.relu(h))  # (B, K, h, w)

    def decode_logits(self, z):
        h = self.dec_input(z)
        for i, block in enumerate(self.dec_blocks):
            h = block(h)
            if i < 2:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
        return self.dec_output(F.relu(h))  # (B, 1, H, W)

    def forward(self, x, tau):
        logits = self.encode_logits(x)  # (B, K, h, w)
        gumbel = -torch.log(-torch.log(torch.rand_like(logits)))
        z = ((logits + gumbel) / tau).softmax(1)
        x_logits = self.decode_logits(z)
        rec = F.binary_cross_entropy_with_logits(x_logits, x)
        log_q = logits.log_softmax(1)
        b, _, hh, ww = logits.shape
        kl = ((log_q.exp() * log_q).sum() + b * hh * ww * math.log(self.k)) / x.numel()
        mse = F.mse_loss(torch.sigmoid(x_logits).detach(), x).item()
        indices = logits.detach().argmax(1).flatten()
        return rec, kl, mse, indices


# ----- DALL-E 1 (src/models/dalle) ----------------------------------------------------------------


class Dalle(nn.Module):
    """Text embeddings and positions, image embeddings and row + column positions, GPT blocks
    (full masks: causal), ln_f, a text head and an image head, both bias-free."""

    def __init__(self, s):
        super().__init__()
        c, self.l, self.k, (gh, self.gw) = s["width"], s["text_len"], s["image_vocab"], s["grid"]
        self.vt, self.n, self.w = s["text_vocab"], gh * self.gw, s["text_weight"]
        self.text_embedding = nn.Embedding(self.vt, c)
        self.text_position = nn.Parameter(torch.randn(self.l, c) * 0.02)
        self.image_embedding = nn.Embedding(self.k, c)
        self.image_row, self.image_column = nn.Embedding(gh, c), nn.Embedding(self.gw, c)
        self.blocks = nn.ModuleList(Block(c, s["heads"]) for _ in range(s["layers"]))
        self.ln_f = nn.LayerNorm(c)
        self.text_head, self.image_head = nn.Linear(c, self.vt, bias=False), nn.Linear(c, self.k, bias=False)

    def embed(self, ids, offset):
        t = ids.shape[1]
        n_text = max(0, min(self.l - offset, t))  # how many of the t positions are text
        parts = []
        if n_text > 0:
            parts.append(self.text_embedding(ids[:, :n_text]) + self.text_position[offset : offset + n_text])
        if n_text < t:
            first = offset + n_text - self.l
            cells = torch.arange(first, first + t - n_text)
            parts.append(self.image_embedding(ids[:, n_text:]) + self.image_row(cells // self.gw) + self.image_column(cells % self.gw))
        return torch.cat(parts, 1)  # (B, t, C)

    def forward(self, ids, offset=0, caches=None):
        t = ids.shape[1]
        h = self.embed(ids, offset)
        mask = causal_mask(t, t)
        for i, block in enumerate(self.blocks):
            h = block(h, mask, None if caches is None else caches[i])
        h = self.ln_f(h)
        split = max(0, min(self.l - 1 - offset, t))  # positions that predict text
        text = self.text_head(h[:, :split]) if split > 0 else None
        image = self.image_head(h[:, split:]) if split < t else None
        return text, image

    def loss(self, ids):
        text, image = self(ids[:, :-1])
        ce_text = F.cross_entropy(text.reshape(-1, self.vt), ids[:, 1 : self.l].reshape(-1))
        ce_image = F.cross_entropy(image.reshape(-1, self.k), ids[:, self.l :].reshape(-1))
        return self.w * ce_text + (1 - self.w) * ce_image, (ce_text, ce_image)

    @torch.no_grad()
    def sample(self, text):
        """Every image token through the key/value caches, temperature 1 (Dalle::sample, cached)."""
        caches = [[] for _ in self.blocks]
        seqs, step_ids, offset = text, text, 0
        for _ in range(self.n):
            _, image = self(step_ids, offset, caches)
            offset += step_ids.shape[1]
            step_ids = torch.multinomial(image[:, -1].softmax(-1), 1)  # (B, 1)
            seqs = torch.cat([seqs, step_ids], 1)
        return seqs


# ----- diffusion (src/models/diffusion, glide, prior, unclip) ----------------------------------


def timestep_embedding(t, dim):
    """[cos(t f_i) .., sin(t f_i) ..], f_i = 10000^(-i / (dim/2)) (blocks.rs)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
    angles = t.double()[:, None] * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], 1).float()  # (B, dim)


def linear_alpha_bar(steps=1000):
    return torch.cumprod(1 - torch.linspace(1e-4, 0.02, steps, dtype=torch.float64), 0).float()


def cosine_alpha_bar(steps=1000):
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    betas = torch.tensor([min(1 - f((i + 1) / steps) / f(i / steps), 0.999) for i in range(steps)], dtype=torch.float64)
    return torch.cumprod(1 - betas, 0).float()


def per_row(values, like):
    return values.reshape(-1, *([1] * (like.dim() - 1)))


class UResBlock(nn.Module):
    """GroupNorm, SiLU, 3x3; + Linear(SiLU(emb)); GroupNorm, SiLU, 3x3 (zero); 1x1 skip when the width changes."""

    def __init__(self, cin, cout, emb, groups):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, cin), nn.Conv2d(cin, cout, 3, 1, 1)
        self.emb_proj = nn.Linear(emb, cout)
        self.norm2, self.conv2 = nn.GroupNorm(groups, cout), nn.Conv2d(cout, cout, 3, 1, 1)
        nn.init.zeros_(self.conv2.weight), nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.skip is None else self.skip(x)) + h


class UAttention(nn.Module):
    """x + W_O attention(GroupNorm(x)) over the H·W positions, context keys and values first
    (nn/context_attention.rs); padding context tokens masked."""

    def __init__(self, c, heads, groups, context_dim):
        super().__init__()
        self.heads, self.norm = heads, nn.GroupNorm(groups, c)
        self.qkv, self.proj = nn.Linear(c, 3 * c), nn.Linear(c, c)
        nn.init.zeros_(self.proj.weight), nn.init.zeros_(self.proj.bias)
        self.context_kv = nn.Linear(context_dim, 2 * c) if context_dim else None

    def forward(self, x, context=None, padding=None):
        b, c, hh, ww = x.shape
        t, d = hh * ww, c // self.heads
        h = self.norm(x).reshape(b, c, t).transpose(1, 2)  # (B, T, C)
        q, k, v = (z.reshape(b, t, self.heads, d).transpose(1, 2) for z in self.qkv(h).chunk(3, -1))  # (B, H, T, D)
        mask = None
        if context is not None:
            s = context.shape[1]
            ck, cv = (z.reshape(b, s, self.heads, d).transpose(1, 2) for z in self.context_kv(context).chunk(2, -1))
            k, v = torch.cat([ck, k], 2), torch.cat([cv, v], 2)  # (B, H, S + T, D)
            if padding is not None:
                mask = torch.cat([padding, torch.zeros(b, t, dtype=torch.bool)], 1)[:, None, None, :]  # (B, 1, 1, S + T)
        y = self.proj(attention(q, k, v, mask).transpose(1, 2).reshape(b, t, c))  # (B, T, C)
        return x + y.transpose(1, 2).reshape(b, c, hh, ww)


class Upsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class UNet(nn.Module):
    """src/models/diffusion/unet.rs: the same stages, widths, skips and attention layers."""

    def __init__(self, s):
        super().__init__()
        base, mult, nres, heads, groups, ctx = s["base"], s["mult"], s["res_blocks"], s["heads"], s["groups"], s["context_dim"]
        emb, self.base = 4 * base, base
        self.time_fc1, self.time_fc2 = nn.Linear(base, emb), nn.Linear(emb, emb)
        ch, res = base, s["image_size"]
        skips = [ch]
        self.input_blocks = nn.ModuleList([nn.ModuleList([nn.Conv2d(s["in_channels"], ch, 3, 1, 1)])])
        for level, m in enumerate(mult):
            for _ in range(nres):
                layers = [UResBlock(ch, m * base, emb, groups)]
                ch = m * base
                if res in s["attn"]:
                    layers.append(UAttention(ch, heads, groups, ctx))
                self.input_blocks.append(nn.ModuleList(layers))
                skips.append(ch)
            if level + 1 < len(mult):
                self.input_blocks.append(nn.ModuleList([nn.Conv2d(ch, ch, 3, 2, 1)]))
                skips.append(ch)
                res //= 2
        self.middle = nn.ModuleList([UResBlock(ch, ch, emb, groups), UAttention(ch, heads, groups, ctx), UResBlock(ch, ch, emb, groups)])
        self.output_blocks = nn.ModuleList()
        for level, m in reversed(list(enumerate(mult))):
            for i in range(nres + 1):
                layers = [UResBlock(ch + skips.pop(), m * base, emb, groups)]
                ch = m * base
                if res in s["attn"]:
                    layers.append(UAttention(ch, heads, groups, ctx))
                if level > 0 and i == nres:
                    layers.append(Upsample(ch))
                    res *= 2
                self.output_blocks.append(nn.ModuleList(layers))
        self.out_norm, self.out_conv = nn.GroupNorm(groups, ch), nn.Conv2d(ch, s["in_channels"], 3, 1, 1)
        nn.init.zeros_(self.out_conv.weight), nn.init.zeros_(self.out_conv.bias)

    @staticmethod
    def stage(layers, h, emb, context, padding):
        for layer in layers:
            if isinstance(layer, UResBlock):
                h = layer(h, emb)
            elif isinstance(layer, UAttention):
                h = layer(h, context, padding)
            else:
                h = layer(h)
        return h

    def forward(self, x, t, cond=None, context=None, padding=None):
        emb = self.time_fc2(F.silu(self.time_fc1(timestep_embedding(t, self.base))))  # (B, C_emb)
        if cond is not None:
            emb = emb + cond
        skips, h = [], x
        for layers in self.input_blocks:
            h = self.stage(layers, h, emb, context, padding)
            skips.append(h)
        h = self.stage(self.middle, h, emb, context, padding)
        for layers in self.output_blocks:
            h = self.stage(layers, torch.cat([h, skips.pop()], 1), emb, context, padding)
        return self.out_conv(F.silu(self.out_norm(h)))


class ClassUNet(nn.Module):
    """Chapter 08: the class embedding (K + 1 rows, the last the null class) added to the timestep embedding."""

    def __init__(self, s):
        super().__init__()
        self.unet = UNet(s["unet"])
        self.class_embedding = nn.Embedding(s["classes"] + 1, 4 * s["unet"]["base"])

    def forward(self, x, t, y):
        return self.unet(x, t, self.class_embedding(y))


class ClipText(nn.Module):
    """Chapter 03's text tower (GLIDE's text encoder): causal CLIP layers, the final LN, pooled at the first EOT."""

    def __init__(self, s):
        super().__init__()
        c = s["width"]
        self.token_embedding, self.position_embedding = nn.Embedding(s["vocab"], c), nn.Embedding(s["context"], c)
        self.layers = nn.ModuleList(ClipLayer(c, s["intermediate"], s["heads"]) for _ in range(s["layers"]))
        self.final_layer_norm = nn.LayerNorm(c)

    def forward(self, ids, eot_id=2):
        b, t = ids.shape
        h = self.token_embedding(ids) + self.position_embedding.weight[:t]
        mask = causal_mask(t, t)
        for layer in self.layers:
            h = layer(h, mask)
        h = self.final_layer_norm(h)  # (B, S, C)
        eot = (ids == eot_id).int().argmax(1)
        return h, h[torch.arange(b), eot], torch.arange(t)[None] > eot[:, None]  # tokens, pooled, padding


class Glide(nn.Module):
    def __init__(self, s):
        super().__init__()
        self.text = ClipText(s)
        self.cond_proj = nn.Linear(s["width"], 4 * s["unet"]["base"])
        self.unet = UNet(s["unet"])

    def forward(self, x, t, ids=None, features=None):
        tokens, pooled, padding = self.text(ids) if features is None else features
        return self.unet(x, t, self.cond_proj(pooled), tokens, padding)


class NoisedClip(nn.Module):
    """Chapter 09b (src/models/noised_clip): CLIP's image tower with a time token in place of the
    class token, trained; the text tower and its projection frozen."""

    def __init__(self, s):
        super().__init__()
        c, inter, heads, e, grid = s["width"], s["intermediate"], s["heads"], s["projection"], 28 // s["patch"]
        self.text = ClipText(dict(s, layers=s["text_layers"]))
        self.text_projection = nn.Linear(c, e, bias=False)
        for p in list(self.text.parameters()) + list(self.text_projection.parameters()):
            p.requires_grad_(False)
        self.patch_embedding = nn.Conv2d(1, c, s["patch"], s["patch"], bias=False)
        self.time_embedding, self.time_embed = nn.Linear(s["time_embed"], c), s["time_embed"]
        self.position_embedding = nn.Embedding(grid * grid + 1, c)
        self.pre_layrnorm, self.post_layernorm = nn.LayerNorm(c), nn.LayerNorm(c)
        self.layers = nn.ModuleList(ClipLayer(c, inter, heads) for _ in range(s["vision_layers"]))
        self.visual_projection = nn.Linear(c, e, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, x_t, t, ids):
        p = self.patch_embedding(x_t).flatten(2).transpose(1, 2)  # (B, N, C)
        time = self.time_embedding(timestep_embedding(t, self.time_embed))[:, None]  # (B, 1, C)
        x = self.pre_layrnorm(torch.cat([time, p], 1) + self.position_embedding.weight)
        for layer in self.layers:
            x = layer(x, None)
        f = F.normalize(self.visual_projection(self.post_layernorm(x[:, 0])), dim=-1, eps=1e-12)
        g = F.normalize(self.text_projection(self.text(ids)[1]), dim=-1, eps=1e-12)  # frozen: no graph
        return (f @ g.t()) * self.logit_scale.clamp(max=4.6051702).exp()  # (N, N)


class Prior(nn.Module):
    """src/models/prior/diffusion_prior.rs: [P(tokens) ; P(z_t) ; time ; P(x_t) ; query] + positions, causal GPT blocks, x̂_0 from the last."""

    def __init__(self, s):
        super().__init__()
        c, e, w, t = s["width"], s["embed"], s["text_width"], s["text_len"]
        self.c = c
        self.text_proj, self.text_embed_proj = nn.Linear(w, c), nn.Linear(e, c)
        self.time_embed = nn.ModuleList([nn.Linear(c, c), nn.Linear(c, c)])
        self.x_proj = nn.Linear(e, c)
        self.query = nn.Parameter(torch.randn(1, 1, c) * 0.02)
        self.null_text = nn.Parameter(torch.randn(1, t + 1, c) * 0.02)
        self.position = nn.Parameter(torch.randn(t + 4, c) * 0.02)
        self.blocks = nn.ModuleList(Block(c, s["heads"]) for _ in range(s["layers"]))
        self.ln_f = nn.LayerNorm(c)
        self.out = nn.Linear(c, e)

    def forward(self, tokens, text_embeds, x_t, t, keep):
        b = x_t.shape[0]
        cond = torch.cat([self.text_proj(tokens), self.text_embed_proj(text_embeds)[:, None]], 1)  # (B, T + 1, C)
        m = keep.float()[:, None, None]
        cond = cond * m + self.null_text * (1 - m)
        time = self.time_embed[1](F.silu(self.time_embed[0](timestep_embedding(t, self.c))))[:, None]  # (B, 1, C)
        h = torch.cat([cond, time, self.x_proj(x_t)[:, None], self.query.expand(b, 1, -1)], 1) + self.position
        mask = causal_mask(h.shape[1], h.shape[1])
        for block in self.blocks:
            h = block(h, mask)
        return self.out(self.ln_f(h)[:, -1])  # (B, E)


class Decoder(nn.Module):
    """src/models/unclip/decoder.rs: √E z_i to the embedding and to 4 context tokens, the caption states projected beside them."""

    def __init__(self, s):
        super().__init__()
        ctx, emb = s["unet"]["context_dim"], 4 * s["unet"]["base"]
        self.e, self.k, self.ctx = s["clip_dim"], s["image_tokens"], ctx
        self.unet = UNet(s["unet"])
        self.clip_to_emb, self.clip_to_tokens = nn.Linear(self.e, emb), nn.Linear(self.e, self.k * ctx)
        self.text_to_tokens = nn.Linear(s["text_dim"], ctx)

    def forward(self, x, t, z, tokens, padding):
        b = x.shape[0]
        z = z * math.sqrt(self.e)
        context = torch.cat([self.clip_to_tokens(z).reshape(b, self.k, self.ctx), self.text_to_tokens(tokens)], 1)  # (B, 4 + T, C_ctx)
        padding = torch.cat([torch.zeros(b, self.k, dtype=torch.bool), padding], 1)
        return self.unet(x, t, self.clip_to_emb(z), context, padding)


class UpsamplerNet(nn.Module):
    def __init__(self, s):
        super().__init__()
        self.unet, self.factor = UNet(s["unet"]), s["factor"]

    def forward(self, x, t, low):
        up = F.interpolate(low, scale_factor=self.factor, mode="nearest")
        return self.unet(torch.cat([x, up], 1), t)[:, : x.shape[1]]  # ε̂: the first C channels


class Ema:
    """θ̄ ← d θ̄ + (1 - d) θ with d = min(0.999, (1 + n) / (10 + n)) (optim/ema.rs), one fused call."""

    def __init__(self, model, decay=0.999):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.shadow = [p.detach().clone() for p in self.params]
        self.decay, self.n = decay, 0

    @torch.no_grad()
    def __call__(self):
        d = min(self.decay, (1 + self.n) / (10 + self.n))
        self.n += 1
        torch._foreach_lerp_(self.shadow, self.params, 1 - d)


def diffusion_forward(alpha_bar, x0, predict, target="eps"):
    """forward() of a diffusion step: t ~ U{0..T-1}, ε ~ N(0, I), x_t = √ᾱ x_0 + √(1-ᾱ) ε, MSE on the target."""

    def forward():
        t = torch.randint(0, len(alpha_bar), (x0.shape[0],))
        noise = torch.randn_like(x0)
        a = per_row(alpha_bar[t], x0)
        out = predict(a.sqrt() * x0 + (1 - a).sqrt() * noise, t)
        return F.mse_loss(out, noise if target == "eps" else x0), None

    return forward


@torch.no_grad()
def ddim_step(predict, x, t, alpha_bar, scale=None):
    """One DDIM step (η = 0) to x_0 from the last timestep, x̂_0 clipped (samplers.rs);
    with `scale`, the conditional and unconditional rows in one batch of 2B."""
    b = x.shape[0]
    if scale is None:
        out = predict(x, torch.full((b,), t))
    else:
        both = predict(torch.cat([x, x]), torch.full((2 * b,), t))
        out = (1 - scale) * both[b:] + scale * both[:b]
    a = alpha_bar[t]
    x0 = ((x - (1 - a).sqrt() * out) / a.sqrt()).clamp(-1, 1)
    eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
    return x0 * 1.0 + eps * 0.0  # √ᾱ_prev x̂_0 + √(1 - ᾱ_prev) ε̂ with ᾱ_prev = 1


def caption_ids(ends, s, vocab):
    """[SOT, words .., EOT, PAD ..] with EOT at each row's `end` (<pad> 0, <sot> 1, <eot> 2)."""
    ids = torch.zeros(len(ends), s, dtype=torch.long)
    for row, end in zip(ids, ends):
        row[0], row[1:end], row[end] = 1, torch.randint(3, vocab, (end - 1,)), 2
    return ids


def usage_and_perplexity(counts):
    p = counts.double() / counts.sum()
    p = p[p > 0]
    return (counts > 0).float().mean().item(), (-(p * p.log()).sum()).exp().item()


# ----- the steps -------------------------------------------------------------------------------


def step_fn(model, opt, forward, clip=None, other=None, after=None):
    """forward() -> (loss, extra); the step as the examples order it; `after()` (the EMA) follows the optimiser step."""
    params = list(model.parameters())

    def step(laps):
        loss, extra = forward()
        laps.lap("forward")
        opt.zero_grad()
        laps.lap("optimizer")
        loss.backward()
        laps.lap("backward")
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        if after:
            after()
        laps.lap("optimizer")
        loss.item()
        if other:
            other(extra)
        laps.lap("other")

    return step


def build(name, s):
    """The model of case `name` from its spec: (model, step function, sample function or None)."""
    b = s["batch"]
    if name == "judge":
        model = nn.Sequential(
            nn.Conv2d(1, 32, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(32, 64, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
        )  # fmt: skip
        x, y = images(b, 1, 28), torch.randint(0, 10, (b,))
        opt = torch.optim.Adam(model.parameters(), lr=s["lr"])
        return model, step_fn(model, opt, lambda: (F.cross_entropy(model(x), y), None)), None
    if name == "gpt":
        model = Gpt(s["vocab"], s["context"], s["width"], s["heads"], s["layers"])
        ids = torch.randint(3, s["vocab"], (b, s["t"]))
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)

        def forward():
            logits = model(ids[:, :-1])  # (B, T-1, V)
            return F.cross_entropy(logits.reshape(-1, s["vocab"]), ids[:, 1:].reshape(-1), ignore_index=0), None

        prompts = torch.ones(s["samples"], 1, dtype=torch.long)
        return model, step_fn(model, opt, forward, clip=1.0), lambda: model.generate(prompts, s["context"], 1.0)
    if name == "vit":
        model = Vit(s["width"], s["layers"], s["heads"], s["patch"])
        x, y = images(b, 1, 28), torch.randint(0, 10, (b,))
        opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
        return model, step_fn(model, opt, lambda: (F.cross_entropy(model(x), y), None), clip=1.0), None
    if name == "clip":
        model = Clip(s)
        x = images(b, 1, 28, -1.0, 1.0)
        t, eot = s["context"], s["eot"]
        ids = torch.randint(0, s["vocab"] - 1, (b, t))
        ids = ids + (ids >= eot).long()  # never EOT before the end
        for row in ids:
            end = int(torch.randint(3, t - 1, ()))
            row[end], row[end + 1 :] = eot, 0
        opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)

        def other(_):
            model.logit_scale.detach().clamp(max=4.6051702).exp().item()

        return model, step_fn(model, opt, lambda: (contrastive_loss(model(x, ids)), None), clip=1.0, other=other), None
    if name == "vae":
        model = Vae(s["hidden"], s["latent"])
        x = images(b, 1, 28)
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)

        def forward():
            rec, kl = model(x)
            return rec + kl, (rec, kl)

        return model, step_fn(model, opt, forward, other=lambda e: (e[0].item(), e[1].item())), None
    if name.startswith("vqvae"):
        model = VqVae(s)
        x = images(b, s["channels"], s["size"])
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-3)

        def forward():
            rec, commitment, counts, mse = model(x)
            usage_and_perplexity(counts)  # the example logs them each step
            return rec + (torch.tensor(0.0) + commitment), (rec, commitment)

        return model, step_fn(model, opt, forward, other=lambda e: (e[0].item(), e[1].item())), None
    if name == "dvae":
        model = Dvae(s)
        x = images(b, 1, 28)
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)

        def forward():
            rec, kl, mse, indices = model(x, s["tau"])
            return rec + kl * s["beta"], (rec, kl, indices)

        def other(e):
            e[0].item(), e[1].item()
            usage_and_perplexity(torch.bincount(e[2], minlength=s["codes"]))

        return model, step_fn(model, opt, forward, other=other), None
    if name == "dalle":
        model = Dalle(s)
        l, vt, k = s["text_len"], s["text_vocab"], s["image_vocab"]
        ids = torch.cat([torch.randint(0, vt, (b, l)), torch.randint(0, k, (b, model.n))], 1)  # (B, L + N)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def forward():
            loss, (ce_text, ce_image) = model.loss(ids)
            ce_text.item(), ce_image.item()  # the example logs both
            return loss, None

        text = torch.randint(0, vt, (s["samples"], l))
        return model, step_fn(model, opt, forward), lambda: model.sample(text)
    if name in ("ddpm", "glide", "decoder", "upsampler"):
        ab = linear_alpha_bar()
        u = s["unet"]
        c = u["in_channels"] // (2 if name == "upsampler" else 1)  # the upsampler's input is [x_t ; up(y)]
        x0 = images(b, c, u["image_size"], -1.0, 1.0)
        n = s["samples"]
        x_t = torch.randn(n, c, u["image_size"], u["image_size"])
        if name == "ddpm":
            model = ClassUNet(s)
            y = torch.randint(0, s["classes"], (b,))

            def predict(x_t, t):
                labels = torch.where(torch.rand(b) < s["p_uncond"], s["classes"], y)  # y or ∅
                return model(x_t, t, labels)

            both = torch.cat([torch.arange(n) % 10, torch.full((n,), s["classes"])])
            sample = lambda: ddim_step(lambda x, t: model(x, t, both), x_t, 999, ab, 3.0)  # noqa: E731
        elif name == "glide":
            model = Glide(s)
            ids = caption_ids(s["ends"], s["context"], s["vocab"])
            predict = lambda x_t, t: model(x_t, t, ids)  # noqa: E731
            with torch.no_grad():  # the captions, then as many empty ones, encoded once
                ends = [int(e) for e in torch.randint(2, s["context"] - 1, (n,))] + [1] * n
                features = model.text(caption_ids(ends, s["context"], s["vocab"]))
            sample = lambda: ddim_step(lambda x, t: model(x, t, features=features), x_t, 999, ab, 3.0)  # noqa: E731
        elif name == "decoder":
            model = Decoder(s)
            t_len, e = s["text_len"], s["clip_dim"]

            def condition(rows):
                ends = torch.randint(2, t_len - 1, (rows,))
                return F.normalize(torch.randn(rows, e), dim=-1), torch.randn(rows, t_len, s["text_dim"]), torch.arange(t_len)[None] > ends[:, None]

            z, tokens, padding = condition(b)

            def predict(x_t, t):
                zd = z * (torch.rand(b, 1) >= 0.1)  # z_i set to zero 10% of the time
                pd = padding | (torch.rand(b, 1) < 0.5)  # the caption dropped 50% of the time
                return model(x_t, t, zd, tokens, pd)

            zs, ts, ps = condition(n)
            null = (torch.zeros_like(zs), ts, torch.ones_like(ps))
            cond = [torch.cat(pair) for pair in zip((zs, ts, ps), null)]
            sample = lambda: ddim_step(lambda x, t: model(x, t, *cond), x_t, 999, ab, 3.0)  # noqa: E731
        else:
            model = UpsamplerNet(s)
            low = u["image_size"] // s["factor"]
            y = images(b, 1, low, -1.0, 1.0)
            predict = lambda x_t, t: model(x_t, t, y)  # noqa: E731
            y_s = images(n, 1, low, -1.0, 1.0)
            sample = lambda: ddim_step(lambda x, t: model(x, t, y_s), x_t, 999, ab)  # noqa: E731
        opt = torch.optim.Adam(model.parameters(), lr=s["lr"])
        return model, step_fn(model, opt, diffusion_forward(ab, x0, predict), after=Ema(model)), sample
    if name == "noised_clip":
        model = NoisedClip(s)
        ab = linear_alpha_bar()
        x0 = images(b, 1, 28, -1.0, 1.0)
        ids = caption_ids(s["ends"], s["context"], s["vocab"])
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-4, weight_decay=0.01)

        def forward():
            t = torch.randint(0, len(ab), (b,))
            a = per_row(ab[t], x0)
            x_t = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn_like(x0)
            return contrastive_loss(model(x_t, t, ids)), None

        def other(_):
            model.logit_scale.detach().clamp(max=4.6051702).exp().item()

        return model, step_fn(model, opt, forward, clip=1.0, other=other), None
    if name == "prior":
        model = Prior(s)
        ab = cosine_alpha_bar()
        e, t_len, w = s["embed"], s["text_len"], s["text_width"]
        x0 = F.normalize(torch.randn(b, e), dim=-1) * math.sqrt(e)  # √E z_i
        tokens, text_embeds = torch.randn(b, t_len, w), F.normalize(torch.randn(b, e), dim=-1)

        def predict(x_t, t):
            return model(tokens, text_embeds, x_t, t, torch.rand(b) >= 0.1)  # the caption dropped 10% of the time

        opt = torch.optim.Adam(model.parameters(), lr=s["lr"])
        n = s["samples"]
        st, sz, keep = torch.randn(n, t_len, w), F.normalize(torch.randn(n, e), dim=-1), torch.ones(n, dtype=torch.bool)
        x_t = torch.randn(n, e)
        step_t = round(1000 * (1 - 1 / 64)) - 1  # the second of 64 respaced steps

        @torch.no_grad()
        def sample():
            """One Euler step of the probability-flow ODE to σ = 0, x̂_0 unclipped (samplers.rs ode_sample)."""
            a = ab[step_t]
            sigma = ((1 - a) / a).sqrt()
            x = x_t / a.sqrt()  # x̃
            x0 = model(st, sz, x * a.sqrt(), torch.full((n,), step_t), keep)
            eps = (x * a.sqrt() - a.sqrt() * x0) / (1 - a).sqrt()
            return x + eps * (0 - sigma)

        return model, step_fn(model, opt, diffusion_forward(ab, x0, predict, target="x0"), clip=1.0, after=Ema(model)), sample
    raise SystemExit(f"unknown case {name!r}")


# ----- the twins with the book's trained weights ------------------------------------------------

# Library parameter names -> the twins' (regular expressions, applied in order).
RENAMES = {
    "judge": [(r"^conv1\.", "0."), (r"^conv2\.", "3."), (r"^fc1\.", "7."), (r"^fc2\.", "9.")],
    "vit": [(r"\.attn\.qkv\.", ".qkv."), (r"\.attn\.proj\.", ".proj."), (r"\.mlp\.fc\.", ".fc."), (r"\.mlp\.proj\.", ".mlp_proj.")],
    "vqvae": [(r"^encoder\.blocks\.0\.", "enc_block."), (r"^decoder\.blocks\.0\.", "dec_block."), (r"^(encoder|decoder)\.", "")],
    "dvae": [(r"^(encoder|decoder)\.(input|output)\.", lambda m: f"{m[1][:3]}_{m[2]}."), (r"^(encoder|decoder)\.blocks\.", lambda m: f"{m[1][:3]}_blocks.")],
    "ddpm": [
        (r"^unet\.time_embed\.fc(\d)\.", r"unet.time_fc\1."),
        (r"\.attention\.attn\.(qkv|proj)\.", r".\1."),
        (r"\.attention\.context_kv\.", ".context_kv."),
        (r"^unet\.out\.(norm|conv)\.", r"unet.out_\1."),
        (r"^(unet\.input_blocks\.\d+\.0)\.conv\.", r"\1."),  # Downsample's conv: a bare Conv2d in the twin
    ],
}


def load_library_weights(model, kind, path):
    """Load a checkpoint of the library into a twin; every key must find its place, with its shape."""
    import re

    from safetensors.torch import load_file

    state = {}
    for key, value in load_file(path).items():
        for pattern, repl in RENAMES[kind]:
            key = re.sub(pattern, repl, key)
        state[key] = value
    model.load_state_dict(state, strict=True)


def mnist_test(data_dir):
    """The 10 000 MNIST test images in [0, 1] (N, 1, 28, 28) and their labels."""
    import gzip

    import numpy as np

    def idx(name, offset):
        with gzip.open(os.path.join(data_dir, "mnist", name)) as f:
            return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)

    images = idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28).astype(np.float32) / 255.0
    return torch.from_numpy(images), torch.from_numpy(idx("t10k-labels-idx1-ubyte.gz", 8).astype(np.int64))


@torch.no_grad()
def check_weights(root, data_dir):
    """Each twin with the weights this book ships, on the MNIST test set, beside the figure the
    library measured with them: equal figures say the twin computes what the library computes."""
    x, y = mnist_test(data_dir)
    batches = lambda: zip(x.split(500), y.split(500))  # noqa: E731
    w = lambda name: os.path.join(root, "weights", name)  # noqa: E731
    rows = []
    judge = build("judge", dict(batch=1, lr=1e-3))[0].eval()
    load_library_weights(judge, "judge", w("digit_judge.safetensors"))
    acc = sum((judge(xb).argmax(1) == yb).sum().item() for xb, yb in batches()) / len(y)
    rows.append(("digit judge test accuracy", acc, "0.9917 (the checkpoint's metadata)"))
    vit = Vit(64, 4, 4, 7).eval()
    load_library_weights(vit, "vit", w("vit_mnist.safetensors"))
    acc = sum((vit(xb).argmax(1) == yb).sum().item() for xb, yb in batches()) / len(y)
    rows.append(("ViT test accuracy", acc, "0.9812 (chapters/results.md)"))
    vq = VqVae(dict(channels=1, hidden=32, dim=32, codes=128, loss="bce")).eval()
    load_library_weights(vq, "vqvae", w("vqvae_mnist.safetensors"))
    mse = sum(vq(xb)[3] * len(xb) for xb, _ in batches()) / len(y)
    rows.append(("VQ-VAE test MSE", mse, "0.004476 (the checkpoint's metadata)"))
    dvae = Dvae(dict(hidden=8, codes=128)).eval()
    load_library_weights(dvae, "dvae", w("dvae_mnist.safetensors"))
    mse = 0.0
    for xb, _ in batches():
        tokens = F.one_hot(dvae.encode_logits(xb).argmax(1), 128).permute(0, 3, 1, 2).float()  # hard tokens
        mse += F.mse_loss(torch.sigmoid(dvae.decode_logits(tokens)), xb).item() * len(xb)
    rows.append(("dVAE test MSE, hard tokens", mse / len(y), "0.013549 (the checkpoint's metadata)"))
    # Chapter 08's U-Net with its EMA weights: 100 images (10 per class), guided DDIM-10 at s = 3,
    # as `08_ddpm --samplers ddim-10` draws them, judged by the judge twin above.
    unet = dict(in_channels=1, image_size=28, base=16, mult=[1, 2, 2], res_blocks=1, attn=[7], heads=4, groups=8, context_dim=None)
    ddpm = ClassUNet(dict(unet=unet, classes=10)).eval()
    load_library_weights(ddpm, "ddpm", w("ddpm_mnist.safetensors"))
    ab, n = linear_alpha_bar(), 100
    steps = [round(1000 * (1 - i / 10)) - 1 for i in range(10)]  # respace(1000, 10)
    y = torch.arange(n) % 10
    both = torch.cat([y, torch.full((n,), 10)])
    x = torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for i, t in enumerate(steps):
        out = ddpm(torch.cat([x, x]), torch.full((2 * n,), t), both)
        eps = (1 - 3.0) * out[n:] + 3.0 * out[:n]  # guidance, s = 3
        a, a_prev = ab[t], (ab[steps[i + 1]] if i + 1 < len(steps) else torch.tensor(1.0))
        x0 = ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    acc = (judge(((x + 1) / 2).clamp(0, 1)).argmax(1) == y).float().mean().item()
    rows.append(("DDPM DDIM-10 guided accuracy", acc, "0.977 on 300 samples (chapters/08_ddpm.md)"))
    for name, ours, book in rows:
        print(f"{name:<28} twin {ours:.6f}   library {book}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check-weights", action="store_true", help="run the twins with the shipped weights on MNIST's test set, then exit")
    ap.add_argument("--data-dir", default="../shared/data")
    args = ap.parse_args()
    if args.check_weights:
        torch.set_num_threads(THREADS)
        check_weights(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."), args.data_dir)
        return
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    hello = dict(torch=torch.__version__, threads=torch.get_num_threads(), capability=torch.backends.cpu.get_cpu_capability())
    print(json.dumps(hello), flush=True)
    built = {}
    for line in sys.stdin:
        req = json.loads(line)
        name, spec = req["case"], req["spec"]
        if name not in built:
            built[name] = build(name, spec)
        model, step, sample = built[name]
        model.train()
        params, shapes = trainable(model)
        reply = dict(params=params, shapes=shapes, **run_steps(step, req["warmup"], req["reps"]))
        if sample is not None and req.get("sample_reps", 0) > 0:
            reply["sample_ms"] = time_calls(sample, req["sample_reps"])  # per call; the Rust side divides by its steps
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
