#!/usr/bin/env python3
"""make_shapes.py - a data set of a domain the committed models have never
seen: clean 28x28 gray images of outlined shapes (rectangles, ellipses,
triangles, crosses) in white on black, as a folder of PNGs or a tar.gz of
one, with a test/ folder as the held-out part. Seeded, so the same
arguments give the same bytes. Python 3 standard library only.

  tools/make_shapes.py OUT.tar.gz [--train 2000] [--test 200] [--seed 1]
  tools/make_shapes.py OUT_DIR    [--train 2000] [--test 200] [--seed 1]
"""
import argparse
import io
import math
import os
import random
import tarfile

from http_sweep import png_encode_gray8

SIDE = 28


def draw(rng):
    """One image: a shape outline, 2 pixels thick, with soft edges."""
    img = [0.0] * (SIDE * SIDE)
    kind = rng.choice(["rect", "ellipse", "triangle", "cross"])
    cx, cy = rng.uniform(9, 19), rng.uniform(9, 19)
    rx, ry = rng.uniform(4, 9), rng.uniform(4, 9)
    angle = rng.uniform(0, math.pi)
    ca, sa = math.cos(angle), math.sin(angle)
    corners = [(cx + rx * math.cos(angle + k * 2 * math.pi / 3), cy + ry * math.sin(angle + k * 2 * math.pi / 3))
               for k in range(3)]

    def seg_dist(px, py, ax, ay, bx, by):
        dx, dy = bx - ax, by - ay
        t = max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)))
        return math.hypot(px - ax - t * dx, py - ay - t * dy)

    for y in range(SIDE):
        for x in range(SIDE):
            u, v = x + 0.5 - cx, y + 0.5 - cy
            lu, lv = u * ca + v * sa, -u * sa + v * ca  # rotated frame
            if kind == "rect":
                d = abs(max(abs(lu) - rx, abs(lv) - ry))
            elif kind == "ellipse":
                d = abs(math.hypot(lu / rx, lv / ry) - 1) * min(rx, ry)
            elif kind == "triangle":
                d = min(seg_dist(x + 0.5, y + 0.5, *corners[k], *corners[(k + 1) % 3]) for k in range(3))
            else:
                d = min(abs(lv) if abs(lu) <= rx else 99, abs(lu) if abs(lv) <= ry else 99)
            img[y * SIDE + x] = max(0.0, min(1.0, 1.5 - d))
    return [int(round(p * 255)) for p in img]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="OUT.tar.gz, or a directory to fill")
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    files = [("shapes/%05d.png" % i, draw(rng)) for i in range(args.train)]
    files += [("shapes/test/%05d.png" % i, draw(rng)) for i in range(args.test)]
    if args.out.endswith((".tar.gz", ".tgz")):
        with tarfile.open(args.out, "w:gz") as tar:
            for name, px in files:
                data = png_encode_gray8(bytes(px), SIDE, SIDE)
                info = tarfile.TarInfo(name)
                info.size, info.mtime = len(data), 0
                tar.addfile(info, io.BytesIO(data))
    else:
        for name, px in files:
            path = os.path.join(args.out, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(png_encode_gray8(bytes(px), SIDE, SIDE))
    print("%s: %d training and %d test images of shapes, %dx%d" % (args.out, args.train, args.test, SIDE, SIDE))


if __name__ == "__main__":
    main()
