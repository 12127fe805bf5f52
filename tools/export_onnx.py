#!/usr/bin/python3
"""Exports a dae weights file as an ONNX model, so that ONNX Runtime can run
the same network (bench/ort_bench.mjs, bench/compare.sh): builds the module
from the file's "architecture" metadata with tools/dae_torch.py (none: the
reference Autoencoder), loads the weights with strict=True and exports it
with torch.onnx.export: input "input" [N, C, H, W] float32, output "output"
of the same shape, N dynamic. A residual network's clamp(input - prediction,
0, 1) is part of the graph, so its outputs are dae's.

    /usr/bin/python3 tools/export_onnx.py MODEL.safetensors OUT.onnx [--sample IN.safetensors OUT.safetensors]

--sample also writes a fixed batch of 16 noisy images (tensor "input", the
input of `dae forward`) and PyTorch's outputs on them (tensor "output"), for
`node bench/ort_bench.mjs OUT.onnx --check IN OUT`. The check itself runs in
ONNX Runtime, which has no Python package here. Needs Debian's python3-torch;
the project itself never does.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dae_torch  # noqa: E402

# The newest opset Debian's torch 1.13 exports; ONNX Runtime 1.x runs it.
OPSET = 17
SAMPLE_IMAGES = 16
SAMPLE_SEED = 20260101


def sample_inputs(shape):
    """Seeded images in [0, 1] plus 0.5 N(0, 1), unclipped: values outside
    [0, 1] reach the residual clamp at both ends."""
    gen = torch.Generator().manual_seed(SAMPLE_SEED)
    clean = torch.rand((SAMPLE_IMAGES, *shape), generator=gen)
    return clean + 0.5 * torch.randn(clean.shape, generator=gen)


def main():
    ap = argparse.ArgumentParser(description="Export a dae weights file as an ONNX model.")
    ap.add_argument("model", help="dae weights file (.safetensors)")
    ap.add_argument("out", help="ONNX file to write")
    ap.add_argument("--sample", nargs=2, metavar=("IN", "OUT"),
                    help="also write a fixed input batch and PyTorch's outputs as safetensors")
    args = ap.parse_args()
    try:
        tensors, metadata = dae_torch.load_safetensors(args.model)
        model = dae_torch.model_from_state(tensors, metadata).eval()
    except (OSError, ValueError, RuntimeError) as e:
        sys.exit(f"export_onnx: {args.model}: {e}")
    shape = getattr(model, "input_shape", (1, 28, 28))
    example = torch.zeros((1, *shape))
    with torch.no_grad():
        torch.onnx.export(model, example, args.out, opset_version=OPSET, input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "N"}, "output": {0: "N"}},
                          do_constant_folding=True)
    print(f"wrote {args.out} (opset {OPSET}, input [N, {', '.join(map(str, shape))}])")
    if args.sample:
        x = sample_inputs(shape)
        with torch.no_grad():
            y = model(x)
        dae_torch.save_safetensors(args.sample[0], {"input": x})
        dae_torch.save_safetensors(args.sample[1], {"output": y})
        print(f"wrote {args.sample[0]} and {args.sample[1]} ({SAMPLE_IMAGES} images and PyTorch's outputs)")


if __name__ == "__main__":
    main()
