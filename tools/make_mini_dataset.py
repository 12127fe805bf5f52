#!/usr/bin/env python3
"""make_mini_dataset.py - cut a small IDX data set out of a full one.

Reads the four standard IDX files (raw or .gz) of MNIST or Fashion-MNIST
from --src and writes the first --train training and --test test images and
labels to --out as gzip-compressed IDX files with the standard names. The
gzip header carries no name and mtime 0, so the output is byte-for-byte
reproducible. Standard library only.

Example (DAE_DATA_DIR points at your full data sets):

    python3 tools/make_mini_dataset.py --src "$DAE_DATA_DIR/mnist" \\
        --train 1024 --test 256 --out tests/fixtures/mnist-mini
"""

import argparse
import gzip
import os
import struct
import sys

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


def read_idx(src_dir, base):
    """Returns the bytes of SRC/BASE, or of SRC/BASE.gz decompressed."""
    raw = os.path.join(src_dir, base)
    if os.path.isfile(raw):
        with open(raw, "rb") as f:
            return f.read()
    gz = raw + ".gz"
    if os.path.isfile(gz):
        with gzip.open(gz, "rb") as f:
            return f.read()
    sys.exit(f"{os.path.basename(sys.argv[0])}: missing {base}: looked for {raw} and {gz}")


def cut_images(data, n, what):
    """Returns an IDX image file holding the first n images of data."""
    magic, count, rows, cols = struct.unpack(">IIII", data[:16])
    if magic != IMAGES_MAGIC:
        sys.exit(f"make_mini_dataset: {what}: bad magic 0x{magic:08x}, expected 0x{IMAGES_MAGIC:08x}")
    if len(data) != 16 + count * rows * cols:
        sys.exit(f"make_mini_dataset: {what}: size does not match its header")
    if n > count:
        sys.exit(f"make_mini_dataset: {what}: asked for {n} images, file has {count}")
    return struct.pack(">IIII", magic, n, rows, cols) + data[16:16 + n * rows * cols]


def cut_labels(data, n, what):
    """Returns an IDX label file holding the first n labels of data."""
    magic, count = struct.unpack(">II", data[:8])
    if magic != LABELS_MAGIC:
        sys.exit(f"make_mini_dataset: {what}: bad magic 0x{magic:08x}, expected 0x{LABELS_MAGIC:08x}")
    if len(data) != 8 + count:
        sys.exit(f"make_mini_dataset: {what}: size does not match its header")
    if n > count:
        sys.exit(f"make_mini_dataset: {what}: asked for {n} labels, file has {count}")
    return struct.pack(">II", magic, n) + data[8:8 + n]


def write_gz(path, data):
    """Writes data gzip-compressed with no file name and mtime 0."""
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as f:
            f.write(data)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", required=True, help="directory with the full IDX files")
    ap.add_argument("--out", required=True, help="directory to write the small set to")
    ap.add_argument("--train", type=int, default=1024, help="training images to keep (default 1024)")
    ap.add_argument("--test", type=int, default=256, help="test images to keep (default 256)")
    args = ap.parse_args()
    if args.train < 0 or args.test < 0:
        sys.exit("make_mini_dataset: --train and --test must be >= 0")

    os.makedirs(args.out, exist_ok=True)
    jobs = [
        ("train-images-idx3-ubyte", cut_images, args.train),
        ("train-labels-idx1-ubyte", cut_labels, args.train),
        ("t10k-images-idx3-ubyte", cut_images, args.test),
        ("t10k-labels-idx1-ubyte", cut_labels, args.test),
    ]
    for base, cut, n in jobs:
        data = cut(read_idx(args.src, base), n, base)
        out = os.path.join(args.out, base + ".gz")
        write_gz(out, data)
        print(f"{out}: {n} items, {os.path.getsize(out)} bytes")


if __name__ == "__main__":
    main()
