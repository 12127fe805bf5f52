#!/usr/bin/python3
"""The reference PyTorch networks' speed on this machine, measured the way
bench/bench_core.c measures ours: forward images/s at batch 1, 64 and 1024
and training images/s at batch 64 (Adam, MSE, in-memory tensors), with the
GFLOP/s, for one or more architectures side by side: ae (the notebook's
Autoencoder) and unet (SpecNet(UNET_SPEC), the network dae ships).

    /usr/bin/python3 bench/torch_reference.py [--arch ae,unet] [--threads 2] [--train-images 12800] [--reps 5] [--forward-only]

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
from dae_torch import UNET_SPEC, Autoencoder, SpecNet  # noqa: E402

ARCHS = {"ae": Autoencoder, "unet": lambda: SpecNet(UNET_SPEC)}


def forward_flop(model):
    """Forward FLOP of one 28x28 image, counted as the engine counts them:
    2 per multiply-add of the convolutions (biases and activations are
    noise), so the GFLOP/s of both sides compare."""
    macs = []

    def count(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            kernel = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
            macs.append(output[0].numel() * kernel)
        else:  # ConvTranspose2d: each input pixel scatters a full kernel
            kernel = module.out_channels * module.kernel_size[0] * module.kernel_size[1]
            macs.append(inputs[0][0].numel() * kernel)

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    with torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
    for h in hooks:
        h.remove()
    return 2 * sum(macs)


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


def time_training(make_model, count, reps):
    images = torch.rand(count, 1, 28, 28)
    rates = []
    for _ in range(reps):
        model = make_model()
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
    ap.add_argument("--arch", default="ae", help="comma-separated: " + ", ".join(ARCHS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-images", type=int, default=12800)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--forward-only", action="store_true")
    args = ap.parse_args()
    archs = args.arch.split(",")
    for arch in archs:
        if arch not in ARCHS:
            ap.error(f"--arch: unknown architecture \"{arch}\" ({', '.join(ARCHS)})")
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # subnormals as zeros, as dae's engine takes them (core/denormals.h)
    torch.manual_seed(0)
    print(f"PyTorch {torch.__version__} reference, {args.threads} threads, median of {args.reps}\n")
    print(f"{'arch':<6} {'measure':<26} {'images/s':>14} {'us/image':>12} {'GFLOP/s':>10}")
    for arch in archs:
        model = ARCHS[arch]().eval()
        flop = forward_flop(model)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{arch}: {n_params} parameters, {flop / 1e6:.3f} MFLOP forward per image")
        for batch in (1, 64, 1024):
            s = time_forward(model, batch, args.reps)
            print(f"{arch:<6} {'forward, batch %d' % batch:<26} {1 / s:14.0f} {s * 1e6:12.2f} {flop / s / 1e9:10.1f}")
        if not args.forward_only:
            rate = time_training(ARCHS[arch], args.train_images, args.reps)
            print(f"{arch:<6} {'training, batch 64':<26} {rate:14.0f} {1e6 / rate:12.2f} {3 * flop * rate / 1e9:10.1f}"
                  f"   ({60000 / rate:.2f} s per 60,000-image epoch)")
        print()


if __name__ == "__main__":
    main()
