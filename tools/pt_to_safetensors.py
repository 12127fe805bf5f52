#!/usr/bin/python3
"""Converts a PyTorch checkpoint of the reference autoencoder (.pt/.pth: a
state_dict, a whole module, or a dict holding one under "state_dict" or
"model_state_dict") into a dae weights file.

    /usr/bin/python3 tools/pt_to_safetensors.py model.pt model.safetensors

The weights are checked by loading them into the reference module with
strict=True first, so a file dae would reject is refused here with
PyTorch's own message.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dae_torch  # noqa: E402


def state_dict_of(obj):
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                return obj[key]
        return obj
    raise TypeError(f"expected a state_dict or a module, found {type(obj).__name__}")


def main():
    ap = argparse.ArgumentParser(description="Convert a PyTorch .pt state_dict to dae safetensors.")
    ap.add_argument("input")
    ap.add_argument("output")
    args = ap.parse_args()
    try:
        state = state_dict_of(torch.load(args.input, map_location="cpu"))
        model = dae_torch.Autoencoder()
        model.load_state_dict(state, strict=True)
    except Exception as e:  # any unreadable or foreign file: one line, exit 1
        sys.exit(f"pt_to_safetensors: {args.input}: {e}")
    dae_torch.save_safetensors(args.output, model.state_dict(),
                               {"converted_from": os.path.basename(args.input), "trained_by": "pytorch"})
    print(f"wrote {args.output} ({sum(p.numel() for p in model.parameters())} parameters)")


if __name__ == "__main__":
    main()
