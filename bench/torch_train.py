#!/usr/bin/python3
"""Train a reference PyTorch network exactly as the original notebook does
(x + 0.5*N(0,1) unclipped, MSE, Adam lr 1e-3 weight decay 1e-5, batch 64,
shuffled), on in-memory tensors, and report seconds per epoch and the test
metrics under the raw and png protocols. --arch picks the network: ae (the
notebook's Autoencoder, the default) or unet (SpecNet(UNET_SPEC), the
network dae ships).

    /usr/bin/python3 bench/torch_train.py --data-dir DIR --dataset mnist [--arch ae|unet] \\
        [--epochs 10] [--limit N] [--threads 2] [--seed 0] [--save FILE.safetensors] [--json]

--save writes the trained weights as safetensors (the state_dict names, and
for unet its spec as "architecture" metadata), which `build/dae` loads
directly.
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import dae_torch  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description="Train the reference PyTorch model.")
    ap.add_argument("--data-dir", default=os.environ.get("DAE_DATA_DIR"))
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--arch", choices=("ae", "unet"), default="ae")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--limit", type=int, default=0, help="use the first N training images")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not args.data_dir:
        sys.exit("torch_train.py: pass --data-dir or set DAE_DATA_DIR")

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # subnormals as zeros, as dae's engine takes them (core/denormals.h)
    torch.manual_seed(args.seed)
    train = dae_torch.load_split(args.data_dir, args.dataset, "train")
    if args.limit:
        train = train[:args.limit]
    test = dae_torch.load_split(args.data_dir, args.dataset, "t10k")

    spec = dae_torch.UNET_SPEC if args.arch == "unet" else None
    model = dae_torch.SpecNet(spec) if spec else dae_torch.Autoencoder()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    loss_fn = nn.MSELoss()
    epoch_seconds, losses = [], []
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(len(train))
        for start in range(0, len(train), 64):
            clean = train[perm[start:start + 64]]
            noisy = clean + 0.5 * torch.randn_like(clean)
            opt.zero_grad()
            loss = loss_fn(model(noisy), clean)
            loss.backward()
            opt.step()
        epoch_seconds.append(time.perf_counter() - t0)
        losses.append(loss.item())
        if not args.json:
            print(f"epoch {epoch + 1}/{args.epochs}: {epoch_seconds[-1]:.2f} s, last-batch loss {losses[-1]:.4f}",
                  file=sys.stderr)

    model.eval()
    result = {
        "framework": f"pytorch {torch.__version__}", "arch": args.arch, "threads": args.threads,
        "dataset": args.dataset,
        "train_images": len(train), "epochs": args.epochs, "epoch_seconds": epoch_seconds,
        "last_batch_loss": losses,
        "raw": dae_torch.evaluate(model, test, protocol="raw"),
        "png": dae_torch.evaluate(model, test, protocol="png"),
    }
    if args.save:
        metadata = {"dataset": args.dataset, "epochs": args.epochs, "trained_by": result["framework"]}
        if spec:
            metadata["architecture"] = spec
        dae_torch.save_safetensors(args.save, model.state_dict(), metadata)
    if args.json:
        print(json.dumps(result))
    else:
        for p in ("raw", "png"):
            r = result[p]
            print(f"{p}: model MSE {r['model']['mse']:.4f} PSNR {r['model']['psnr']:.2f} dB; "
                  f"noisy MSE {r['noisy']['mse']:.4f} PSNR {r['noisy']['psnr']:.2f} dB")


if __name__ == "__main__":
    main()
