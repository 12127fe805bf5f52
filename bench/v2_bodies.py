#!/usr/bin/env python3
"""v2_bodies.py - the request bodies of bench/v2_infer.sh: the same noisy
28x28 images once as PNGs (for POST /denoise, one image a request) and once
as binary FP32 tensors of the Open Inference Protocol (for POST
/v2/models/{name}/infer with the binary tensor data extension).

    python3 bench/v2_bodies.py OUT_DIR [--count 1024] [--batches 1,64,1024]

Image i is MNIST test image i mod 256 of the committed mini data set
(tests/fixtures/mnist-mini) with the noise the models were judged on
(x + 0.5 N(0,1), clipped to [0, 1] and quantised to 8 bits), seeded by i,
so that all --count images differ. Writes:

- OUT_DIR/png/NNNN.png: image NNNN as an 8-bit gray PNG;
- OUT_DIR/v2-B.body for each batch B of --batches: the JSON header asking
  for input "input" FP32 [B,1,28,28] with binary_data_size B*784*4 and a
  binary answer (binary_data_output), then the first B images as
  little-endian float32 (pixel / 255: the values /denoise feeds the
  network for the same PNG);
- OUT_DIR/v2-B.hlen: the JSON header's length in bytes, the value of the
  request's Inference-Header-Content-Length.

Standard library only; the same arguments write the same bytes.
"""
import argparse
import json
import os
import random
import struct
import sys
import zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "tools"))
from make_mini_dataset import IMAGES_MAGIC, read_idx  # noqa: E402

MINI = os.path.join(ROOT, "tests", "fixtures", "mnist-mini")
SIGMA = 0.5


def test_images():
    """Returns (rows, cols, [pixels of each test image]) of the mini data set."""
    data = read_idx(MINI, "t10k-images-idx3-ubyte")
    magic, count, rows, cols = struct.unpack(">IIII", data[:16])
    if magic != IMAGES_MAGIC or len(data) != 16 + count * rows * cols:
        sys.exit(f"v2_bodies: {MINI}: t10k-images is not an IDX image file")
    size = rows * cols
    return rows, cols, [data[16 + i * size:16 + (i + 1) * size] for i in range(count)]


def noisy(pixels, seed):
    """PIXELS plus SIGMA N(0, 1) noise in [0, 1] units, clipped and quantised."""
    rng = random.Random(seed)
    return bytes(min(255, max(0, round(p + 255 * SIGMA * rng.gauss(0, 1)))) for p in pixels)


def gray_png(rows, cols, pixels):
    """PIXELS (rows*cols bytes) as an 8-bit gray PNG with no ancillary chunks."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff))
    raw = b"".join(b"\0" + pixels[r * cols:(r + 1) * cols] for r in range(rows))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", cols, rows, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def v2_body(rows, cols, images):
    """(JSON header length, body) of one binary infer request over IMAGES."""
    floats = b"".join(struct.pack(f"<{len(p)}f", *(v / 255 for v in p)) for p in images)
    header = json.dumps({
        "id": "bench",
        "parameters": {"binary_data_output": True},
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [len(images), 1, rows, cols],
                    "parameters": {"binary_data_size": len(floats)}}],
    }, separators=(",", ":")).encode()
    return len(header), header + floats


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--count", type=int, default=1024, help="images written as PNGs (default 1024)")
    ap.add_argument("--batches", default="1,64,1024", help="images of each v2 body (default 1,64,1024)")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if min(batches) < 1 or max(batches) > args.count:
        sys.exit(f"v2_bodies: --batches must lie in 1..--count ({args.count})")

    rows, cols, sources = test_images()
    images = [noisy(sources[i % len(sources)], i) for i in range(args.count)]
    os.makedirs(os.path.join(args.out_dir, "png"), exist_ok=True)
    for i, pixels in enumerate(images):
        with open(os.path.join(args.out_dir, "png", f"{i:04d}.png"), "wb") as f:
            f.write(gray_png(rows, cols, pixels))
    for b in batches:
        hlen, body = v2_body(rows, cols, images[:b])
        with open(os.path.join(args.out_dir, f"v2-{b}.body"), "wb") as f:
            f.write(body)
        with open(os.path.join(args.out_dir, f"v2-{b}.hlen"), "w") as f:
            f.write(f"{hlen}\n")


if __name__ == "__main__":
    main()
