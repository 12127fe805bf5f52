#!/usr/bin/python3
"""The reference PyTorch autoencoder's speed on this machine, measured the
way bench/bench_core.c measures ours: forward images/s at batch 1, 64 and
1024 and training images/s at batch 64 (Adam, MSE, in-memory tensors).

    /usr/bin/python3 bench/torch_reference.py [--threads 2] [--train-images 12800] [--reps 5] [--forward-only]

Needs Debian's python3-torch; the project itself never does.
"""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from dae_torch import Autoencoder  # noqa: E402


def time_forward(model, batch, reps):
    x = torch.rand(batch, 1, 28, 28)
    with torch.no_grad():
        inner = 1
        while True:
            t0 = time.perf_counter()
            for _ in range(inner):
                model(x)
            if time.perf_counter() - t0 > 0.1:
                break
            inner *= 2
        per_image = []
        for _ in range(reps):
            t0 = time.perf_counter()
            for _ in range(inner):
                model(x)
            per_image.append((time.perf_counter() - t0) / (inner * batch))
    return statistics.median(per_image)


def time_training(count, reps):
    images = torch.rand(count, 1, 28, 28)
    rates = []
    for _ in range(reps):
        model = Autoencoder()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
        loss_fn = nn.MSELoss()
        t0 = time.perf_counter()
        perm = torch.randperm(count)
        for start in range(0, count, 64):
            clean = images[perm[start:start + 64]]
            noisy = clean + 0.5 * torch.randn_like(clean)
            opt.zero_grad()
            loss = loss_fn(model(noisy), clean)
            loss.backward()
            opt.step()
        rates.append(count / (time.perf_counter() - t0))
    return statistics.median(rates)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-images", type=int, default=12800)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--forward-only", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Autoencoder().eval()
    flop = 2 * 708736
    print(f"PyTorch {torch.__version__} reference, {args.threads} threads, median of {args.reps}")
    print(f"{'measure':<26} {'images/s':>14} {'us/image':>12} {'GFLOP/s':>10}")
    for batch in (1, 64, 1024):
        s = time_forward(model, batch, args.reps)
        print(f"{'forward, batch %d' % batch:<26} {1 / s:14.0f} {s * 1e6:12.2f} {flop / s / 1e9:10.1f}")
    if args.forward_only:
        return
    rate = time_training(args.train_images, args.reps)
    print(f"{'training, batch 64':<26} {rate:14.0f} {1e6 / rate:12.2f} {3 * flop * rate / 1e9:10.1f}"
          f"   ({60000 / rate:.2f} s per 60,000-image epoch)")


if __name__ == "__main__":
    main()
