#!/usr/bin/python3
"""Shows that a dae weights file is the PyTorch module it describes: builds
the module from the file's "architecture" metadata (none: the reference
Autoencoder), loads the weights with load_state_dict(strict=True), runs both
PyTorch and `dae forward` on the same noisy images, and compares the outputs.

    /usr/bin/python3 tools/check_pytorch.py --model models/mnist.safetensors [--dae build/dae]
        [--data-dir DIR --dataset mnist] [--count 256] [--tolerance 1e-5]

Without a data directory (or for a network whose input is not 1x28x28) the
images are random; with one they are the first test images plus gaussian
noise (sigma 0.5). Exits 1 when the largest difference is over the
tolerance.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dae_torch  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description="Check a dae model against PyTorch.")
    ap.add_argument("--model", required=True)
    ap.add_argument("--dae", default="build/dae")
    ap.add_argument("--data-dir", default=os.environ.get("DAE_DATA_DIR"))
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--count", type=int, default=256)
    ap.add_argument("--tolerance", type=float, default=1e-5)
    args = ap.parse_args()

    tensors, metadata = dae_torch.load_safetensors(args.model)
    model = dae_torch.model_from_state(tensors, metadata)
    model.eval()
    kind = "its architecture metadata" if "architecture" in metadata else "the reference Autoencoder"
    print(f"{args.model}: load_state_dict(strict=True) into {kind} took all {len(tensors)} tensors")
    shape = getattr(model, "input_shape", (1, 28, 28))

    gen = torch.Generator().manual_seed(1)
    split = os.path.join(args.data_dir or "", args.dataset)
    if args.data_dir and os.path.isdir(split) and shape == (1, 28, 28):
        clean = dae_torch.load_split(args.data_dir, args.dataset, "t10k")[:args.count]
        source = f"the first {len(clean)} {args.dataset} test images"
    else:
        clean = torch.rand(args.count, *shape, generator=gen)
        source = f"{args.count} random images"
    noisy = clean + 0.5 * torch.randn(clean.shape, generator=gen)
    with torch.no_grad():
        expected = model(noisy)

    with tempfile.TemporaryDirectory() as tmp:
        inp, out = os.path.join(tmp, "in.safetensors"), os.path.join(tmp, "out.safetensors")
        dae_torch.save_safetensors(inp, {"input": noisy})
        subprocess.run([args.dae, "forward", "--model", args.model, inp, out], check=True)
        got = dae_torch.load_safetensors(out)[0]["output"]

    diff = (got - expected).abs().max().item()
    verdict = "agree" if diff <= args.tolerance else "DIFFER"
    print(f"dae and PyTorch {verdict} on {source} + noise: max abs difference {diff:.3g} "
          f"(tolerance {args.tolerance:g})")
    sys.exit(0 if diff <= args.tolerance else 1)


if __name__ == "__main__":
    main()
