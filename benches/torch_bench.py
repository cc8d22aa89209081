"""The PyTorch (and numpy) side of `cargo run --release --example bench_engine -- --torch`.

Runs the same cases, at the same shapes, as examples/bench_engine.rs and prints
one JSON object on the last line of stdout:

    {"torch": "2.5.1", "threads": 2, "blas": "...", "cases": {"sgemm_256": {"torch_ms": .., "numpy_ms": ..}, ...}}

Timing: warm-up runs, then the median of `reps` runs (reps chosen so that a
case takes about a second, between 5 and 500: a case of a fraction of a
millisecond gets enough runs that one slow one does not move its median),
exactly as the Rust side does.
Threads: BENCH_THREADS (default 2; the Rust side passes its rayon thread
count), applied with torch.set_num_threads and the OMP/OpenBLAS/MKL variables
before numpy loads.

Instruction set: the Rust side sets ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA,
MKL_ENABLE_INSTRUCTIONS and OPENBLAS_CORETYPE to hold PyTorch and numpy to its
own CPU tier; "capability" in the JSON is what ATen reports it used.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

THREADS = int(os.environ.get("BENCH_THREADS", "2"))
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(THREADS)  # before numpy loads OpenBLAS

try:
    import numpy as np
except ImportError as e:  # the Rust side prints this and skips the comparison
    print(json.dumps({"error": f"python could not import numpy: {e}"}))
    sys.exit(3)


def shapes(smoke):
    """The shapes of every case; keep in sync with `Shapes` in examples/bench_engine.rs."""
    # unet: gn ((N, C, H, W), groups), convs [(N, C, H, W)] C -> C, attn (B, T, C, heads), res ((N, C, H, W), temb width)
    if smoke:
        unet = dict(gn=((2, 16, 8, 8), 8), convs=[(2, 16, 6, 6), (2, 32, 3, 3)], attn=(2, 9, 32, 4), res=((2, 16, 6, 6), 32))
        return dict(sgemm=[64, 128], conv=(4, 16, 16, 8, 8), ln=(4, 16, 32), sm=(2, 2, 16, 16), block=(2, 8, 32, 4), unet=unet)
    # conv: (N, C, OC, H, W); ln: (B, T, C); sm: (B, H, T, T); block: (B, T, C, heads)
    unet = dict(gn=((64, 64, 28, 28), 8), convs=[(64, 64, 14, 14), (64, 128, 7, 7)], attn=(64, 49, 128, 4), res=((64, 64, 14, 14), 256))
    return dict(sgemm=[256, 512, 1024, 2048], conv=(64, 64, 64, 28, 28), ln=(32, 256, 256), sm=(32, 4, 128, 128), block=(32, 64, 256, 4), unet=unet)


def median_ms(f, smoke):
    """Warm up, then the median wall time of f() in milliseconds."""
    f()
    f()
    t0 = time.perf_counter()
    f()
    first = time.perf_counter() - t0
    reps = 3 if smoke else max(5, min(500, math.ceil(1.0 / max(first, 1e-6))))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def blas_info():
    try:
        from threadpoolctl import threadpool_info

        return "; ".join(f"{i['internal_api']} {i.get('version')} kernel {i.get('architecture')}, {i['num_threads']} threads" for i in threadpool_info() if i["user_api"] == "blas")
    except ImportError:
        return "threadpoolctl not installed (kernel unknown)"


def grads_to_none(ts):
    for t in ts:
        t.grad = None


def block_params(c, g):
    p = lambda *s: (torch.randn(*s, generator=g) * 0.02).requires_grad_()
    ones = lambda n: torch.ones(n).requires_grad_()
    zeros = lambda n: torch.zeros(n).requires_grad_()
    return dict(ln1_g=ones(c), ln1_b=zeros(c), w_qkv=p(3 * c, c), b_qkv=zeros(3 * c), w_o=p(c, c), b_o=zeros(c),
                ln2_g=ones(c), ln2_b=zeros(c), w_fc=p(4 * c, c), b_fc=zeros(4 * c), w_proj=p(c, 4 * c), b_proj=zeros(c))


def self_attention(h, w_qkv, b_qkv, w_o, b_o, heads, mask=None):
    """proj(softmax(Q K^T / sqrt(d) (+ mask)) V), Q, K, V from one linear layer, written from the ops."""
    b, t, c = h.shape
    d = c // heads
    qkv = F.linear(h, w_qkv, b_qkv)  # (B, T, 3C)
    q, k, v = qkv.chunk(3, -1)
    q, k, v = (z.reshape(b, t, heads, d).permute(0, 2, 1, 3) for z in (q, k, v))  # (B, H, T, D)
    att = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(d))  # (B, H, T, T)
    if mask is not None:
        att = att.masked_fill(mask, float("-inf"))
    y = (att.softmax(-1) @ v).permute(0, 2, 1, 3).reshape(b, t, c)  # (B, T, C)
    return F.linear(y, w_o, b_o)


def block_forward(x, P, heads, mask):
    """Pre-LN transformer block: x + attn(ln1(x)), then h + mlp(ln2(h)), written from the ops."""
    c = x.shape[-1]
    h = F.layer_norm(x, (c,), P["ln1_g"], P["ln1_b"], 1e-5)
    x = x + self_attention(h, P["w_qkv"], P["b_qkv"], P["w_o"], P["b_o"], heads, mask)
    h = F.layer_norm(x, (c,), P["ln2_g"], P["ln2_b"], 1e-5)
    h = F.linear(F.gelu(F.linear(h, P["w_fc"], P["b_fc"])), P["w_proj"], P["b_proj"])
    return x + h


def numpy_sgemm(smoke):
    """numpy's sgemm timings, in a process without torch: torch's OpenMP threads
    spin after each op and would steal the 2 cores from OpenBLAS's own threads."""
    rng = np.random.default_rng(0)
    out = {}
    for n in shapes(smoke)["sgemm"]:
        a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
        out[f"sgemm_{n}"] = median_ms(lambda: a @ b, smoke)
    return dict(blas=blas_info(), ms=out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="sgemm,conv,layernorm,softmax,block,unet")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--numpy-only", action="store_true", help="internal: print numpy's sgemm timings")
    args = ap.parse_args()
    if args.numpy_only:
        print(json.dumps(numpy_sgemm(args.smoke)))
        return
    cases = set(args.cases.split(","))
    numpy = dict(blas="not run", ms={})
    if "sgemm" in cases:
        cmd = [sys.executable, __file__, "--numpy-only"] + (["--smoke"] if args.smoke else [])
        numpy = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    try:
        global torch, F
        import torch
        import torch.nn.functional as F
    except ImportError as e:
        print(json.dumps({"error": f"python could not import torch: {e}"}))
        sys.exit(3)
    torch.set_num_threads(THREADS)
    g = torch.Generator().manual_seed(0)
    S = shapes(args.smoke)
    out = {}

    if "sgemm" in cases:
        for n in S["sgemm"]:
            a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
            out[f"sgemm_{n}"] = dict(torch_ms=median_ms(lambda: torch.mm(a, b), args.smoke), numpy_ms=numpy["ms"][f"sgemm_{n}"])

    if "conv" in cases:
        n, c, oc, hh, ww = S["conv"]
        x = torch.randn(n, c, hh, ww, generator=g).requires_grad_()
        w = (torch.randn(oc, c, 3, 3, generator=g) * 0.05).requires_grad_()
        bias = torch.zeros(oc).requires_grad_()
        dy = torch.randn(n, oc, hh, ww, generator=g)
        with torch.no_grad():
            out["conv_fwd"] = dict(torch_ms=median_ms(lambda: F.conv2d(x, w, bias, padding=1), args.smoke))

        def conv_step():
            grads_to_none([x, w, bias])
            F.conv2d(x, w, bias, padding=1).backward(dy)

        out["conv_fwd_bwd"] = dict(torch_ms=median_ms(conv_step, args.smoke))

    if "layernorm" in cases:
        b, t, c = S["ln"]
        x = torch.randn(b, t, c, generator=g).requires_grad_()
        gm, bt = torch.ones(c).requires_grad_(), torch.zeros(c).requires_grad_()
        dy = torch.randn(b, t, c, generator=g)

        def ln_step():
            grads_to_none([x, gm, bt])
            F.layer_norm(x, (c,), gm, bt, 1e-5).backward(dy)

        out["layernorm_fwd_bwd"] = dict(torch_ms=median_ms(ln_step, args.smoke))

    if "softmax" in cases:
        x = torch.randn(*S["sm"], generator=g).requires_grad_()
        dy = torch.randn(*S["sm"], generator=g)

        def sm_step():
            grads_to_none([x])
            x.softmax(-1).backward(dy)

        out["softmax_fwd_bwd"] = dict(torch_ms=median_ms(sm_step, args.smoke))

    if "block" in cases:
        b, t, c, heads = S["block"]
        P = block_params(c, g)
        x = torch.randn(b, t, c, generator=g).requires_grad_()
        dy = torch.randn(b, t, c, generator=g)
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
        with torch.no_grad():
            out["block_fwd"] = dict(torch_ms=median_ms(lambda: block_forward(x, P, heads, mask), args.smoke))

        def block_step():
            grads_to_none([x, *P.values()])
            block_forward(x, P, heads, mask).backward(dy)

        out["block_fwd_bwd"] = dict(torch_ms=median_ms(block_step, args.smoke))

    parts = [p for p in ("unet_gn", "unet_conv", "unet_attn", "unet_res") if "unet" in cases or p in cases]
    if parts:
        out.update(unet_cases(S["unet"], g, args.smoke, parts))

    capability = torch.backends.cpu.get_cpu_capability()
    print(json.dumps(dict(torch=torch.__version__, threads=torch.get_num_threads(), capability=capability, blas=numpy["blas"], cases=out)))


def fwd_bwd_ms(params, dy, forward, smoke):
    """Median time of forward().backward(dy), gradients cleared first (as the Rust side does, untimed there too)."""

    def step():
        grads_to_none(params)
        forward().backward(dy)

    return median_ms(step, smoke)


def unet_cases(U, g, smoke, parts):
    """The pieces of a small diffusion U-Net's training step (see examples/bench_engine.rs), those in `parts`."""
    out = {}
    randn = lambda *s: torch.randn(*s, generator=g)
    param = lambda t: t.requires_grad_()

    if "unet_gn" in parts:
        shape, groups = U["gn"]
        x, gm, bt, dy = param(randn(*shape)), param(torch.ones(shape[1])), param(torch.zeros(shape[1])), randn(*shape)
        out["unet_gn_silu_fwd_bwd"] = dict(torch_ms=fwd_bwd_ms([x, gm, bt], dy, lambda: F.silu(F.group_norm(x, groups, gm, bt, 1e-5)), smoke))

    for n, c, h, w in U["convs"] if "unet_conv" in parts else []:
        x, dy = param(randn(n, c, h, w)), randn(n, c, h, w)
        wt, bias = param(randn(c, c, 3, 3) * (1.0 / (9 * c)) ** 0.5), param(torch.zeros(c))
        out[f"unet_conv{c}_{h}x{w}_fwd_bwd"] = dict(torch_ms=fwd_bwd_ms([x, wt, bias], dy, lambda: F.conv2d(x, wt, bias, padding=1), smoke))

    if "unet_attn" in parts:
        b, t, c, heads = U["attn"]
        w_qkv, b_qkv, w_o, b_o = param(randn(3 * c, c) * 0.02), param(torch.zeros(3 * c)), param(randn(c, c) * 0.02), param(torch.zeros(c))
        x, dy = param(randn(b, t, c)), randn(b, t, c)
        out["unet_attn_fwd_bwd"] = dict(torch_ms=fwd_bwd_ms([x, w_qkv, b_qkv, w_o, b_o], dy, lambda: self_attention(x, w_qkv, b_qkv, w_o, b_o, heads), smoke))

    if "unet_res" not in parts:
        return out
    (n, c, h, w), temb = U["res"]
    x, emb, dy = param(randn(n, c, h, w)), param(randn(n, temb)), randn(n, c, h, w)
    conv = lambda: (param(randn(c, c, 3, 3) * (1.0 / (9 * c)) ** 0.5), param(torch.zeros(c)))
    (w1, c1), (w2, c2) = conv(), conv()
    (g1, n1), (g2, n2) = [(param(torch.ones(c)), param(torch.zeros(c))) for _ in range(2)]
    wt, bt = param(randn(c, temb) * 0.02), param(torch.zeros(c))

    def block():
        # h = SiLU(GN(conv1(x))) + W t, out = x + SiLU(GN(conv2(h)))
        hh = F.silu(F.group_norm(F.conv2d(x, w1, c1, padding=1), 8, g1, n1, 1e-5))
        hh = hh + F.linear(emb, wt, bt)[:, :, None, None]
        hh = F.silu(F.group_norm(F.conv2d(hh, w2, c2, padding=1), 8, g2, n2, 1e-5))
        return x + hh

    out["unet_resblock_fwd_bwd"] = dict(torch_ms=fwd_bwd_ms([x, emb, w1, c1, w2, c2, g1, n1, g2, n2, wt, bt], dy, block, smoke))
    return out


if __name__ == "__main__":
    main()
