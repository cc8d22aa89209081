"""The PyTorch GPU side of `cargo run --release --example bench_wgpu -- --torch`.

Times fp32 sgemm (TF32 off, as the issue asks) and one training step of chapter 00's
digit judge CNN (batch 128) on CUDA, and prints one JSON object on the last line:

    {"device": "...", "sgemm": {"1024": ms, ...}, "judge_step_ms": ms}

or {"error": "..."} when torch or a CUDA device is missing. Pinned: torch==2.5.1.
"""

import argparse
import json
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
    print(json.dumps(out))


if __name__ == "__main__":
    main()
