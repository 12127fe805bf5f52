#!/usr/bin/env python3
"""make_samples.py - write the README's sample images into samples/.

Takes one real test image from each data set, not a synthetic one: MNIST
test image 0 (a 7) and Fashion-MNIST test image 4 (the first of class 6,
"Shirt"). It writes each clean 28x28 original as an 8-bit gray PNG
(samples/digit.png, samples/shirt.png), then has the project's own CLI add
the noise: `dae noise --noise gaussian:0.5:clip:quantize --seed N`, the
noise the models were judged on (x + 0.5 N(0,1), clipped to [0, 1] and
quantised to 8 bits), with a fixed seed per image (digit-noisy.png,
shirt-noisy.png). The PNGs carry no time stamp, so a second run writes the
same bytes. Standard library only (zlib and struct write the PNGs).

Example (DAE_DATA_DIR points at the full data sets; `make` built build/dae):

    python3 tools/make_samples.py --dae build/dae --out samples
"""

import argparse
import os
import struct
import subprocess
import sys
import zlib

# The IDX reading of the mini data set's tool (the same files, raw or .gz).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_mini_dataset import IMAGES_MAGIC, LABELS_MAGIC, read_idx  # noqa: E402

# (data set, test index, the label it must have, file stem, noise seed).
# The label is checked so that a different copy of a data set (another
# order) fails loudly instead of committing the wrong picture.
SAMPLES = [
    ("mnist", 0, 7, "digit", 1),
    ("fashion-mnist", 4, 6, "shirt", 2),
]
NOISE = "gaussian:0.5:clip:quantize"


def test_image(src_dir, index):
    """Returns (rows, cols, pixels, label) of test image INDEX in SRC_DIR."""
    images = read_idx(src_dir, "t10k-images-idx3-ubyte")
    labels = read_idx(src_dir, "t10k-labels-idx1-ubyte")
    magic, count, rows, cols = struct.unpack(">IIII", images[:16])
    if magic != IMAGES_MAGIC or len(images) != 16 + count * rows * cols:
        sys.exit(f"make_samples: {src_dir}: t10k-images is not an IDX image file")
    lmagic, lcount = struct.unpack(">II", labels[:8])
    if lmagic != LABELS_MAGIC or lcount != count or len(labels) != 8 + count:
        sys.exit(f"make_samples: {src_dir}: t10k-labels does not match t10k-images")
    if index >= count:
        sys.exit(f"make_samples: {src_dir}: test image {index} asked for, the set has {count}")
    size = rows * cols
    return rows, cols, images[16 + index * size:16 + (index + 1) * size], labels[8 + index]


def write_gray_png(path, rows, cols, pixels):
    """Writes PIXELS (rows*cols bytes) as an 8-bit gray PNG with no ancillary chunks."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff))

    scanlines = b"".join(b"\0" + pixels[r * cols:(r + 1) * cols] for r in range(rows))
    png = (b"\x89PNG\r\n\x1a\n"
           + chunk(b"IHDR", struct.pack(">IIBBBBB", cols, rows, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(scanlines, 9))
           + chunk(b"IEND", b""))
    with open(path, "wb") as f:
        f.write(png)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get("DAE_DATA_DIR"),
                    help="directory holding mnist/ and fashion-mnist/ (default $DAE_DATA_DIR)")
    ap.add_argument("--dae", default="build/dae", help="the dae command-line tool (default build/dae)")
    ap.add_argument("--out", default="samples", help="directory to write the PNGs to (default samples)")
    args = ap.parse_args()
    if not args.data_dir:
        sys.exit("make_samples: no data directory: pass --data-dir DIR or set DAE_DATA_DIR")
    if not os.access(args.dae, os.X_OK):
        sys.exit(f"make_samples: {args.dae} is not an executable: run `make` first or pass --dae")

    os.makedirs(args.out, exist_ok=True)
    for dataset, index, label, stem, seed in SAMPLES:
        rows, cols, pixels, got = test_image(os.path.join(args.data_dir, dataset), index)
        if got != label:
            sys.exit(f"make_samples: {dataset} test image {index} has label {got}, expected {label}")
        clean = os.path.join(args.out, stem + ".png")
        noisy = os.path.join(args.out, stem + "-noisy.png")
        write_gray_png(clean, rows, cols, pixels)
        cmd = [args.dae, "noise", clean, noisy, "--noise", NOISE, "--seed", str(seed)]
        if subprocess.run(cmd).returncode != 0:
            sys.exit(f"make_samples: {' '.join(cmd)} failed")
        print(f"{clean}: {dataset} test image {index} (label {label}); "
              f"{noisy}: {NOISE}, seed {seed}")


if __name__ == "__main__":
    main()
