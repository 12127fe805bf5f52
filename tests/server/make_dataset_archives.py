#!/usr/bin/env python3
"""Writes the archives tests/server/test_datasets.sh uploads into a folder:
one good tar.gz of clean images, and one archive for each way an upload
can be wrong. Python's standard library only (zlib, struct, tarfile,
gzip), so nothing is committed but this script.

usage: make_dataset_archives.py OUT_DIR
"""
import gzip
import io
import os
import struct
import sys
import tarfile
import zipfile
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
from http_sweep import PNG_SIGNATURE, png_chunk, png_encode_gray8  # noqa: E402


def shape(i, width, height):
    """White shapes on black, different for every i: a rectangle, a ring or
    a cross, moved and sized by i."""
    px = bytearray(width * height)
    kind = i % 3
    cx, cy = width // 2 + (i * 7) % 9 - 4, height // 2 + (i * 5) % 9 - 4
    r = min(width, height) // 4 + i % 5
    for y in range(height):
        for x in range(width):
            dx, dy = x - cx, y - cy
            if kind == 0:
                on = abs(dx) <= r and abs(dy) <= r * 2 // 3
            elif kind == 1:
                on = (r - 2) ** 2 <= dx * dx + dy * dy <= r * r
            else:
                on = abs(dx) <= 1 + i % 2 or abs(dy) <= 1 + i % 2
                on = on and abs(dx) <= r and abs(dy) <= r
            if on:
                px[y * width + x] = 255
    return bytes(px)


def add(tar, name, data, kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mtime = 1700000000
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def images(n, big=0):
    """n 28x28 PNGs and big 64x48 ones, with their member names."""
    out = [("shapes/s%03d.png" % i, png_encode_gray8(shape(i, 28, 28), 28, 28)) for i in range(n)]
    out += [("shapes/big%d.png" % i, png_encode_gray8(shape(i, 64, 48), 64, 48)) for i in range(big)]
    return out


def write_tar(path, members, mode="w"):
    with tarfile.open(path, mode, format=tarfile.USTAR_FORMAT) as tar:
        for m in members:
            add(tar, *m)


def idx_images(count, rows, cols, payload=None):
    head = struct.pack(">IIII", 0x803, count, rows, cols)
    return head + (payload if payload is not None else bytes(count * rows * cols))


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    p = lambda name: os.path.join(out, name)
    good = images(60, big=4) + [("shapes/README.txt", b"not an image\n")]
    write_tar(p("good.tar.gz"), good, "w:gz")
    # A zip of 20 images in a test/ and a train/ folder (the test split by folder).
    with zipfile.ZipFile(p("good.zip"), "w", zipfile.ZIP_DEFLATED) as z:
        for i, (name, data) in enumerate(images(20)):
            z.writestr(("test/" if i < 4 else "train/") + os.path.basename(name), data)
    # The same images again, fewer of them: a replacement.
    write_tar(p("good2.tar.gz"), images(40), "w:gz")
    with open(p("not_archive.bin"), "wb") as f:
        f.write(b"this is not an archive, only some text\n" * 50)
    data = open(p("good.tar.gz"), "rb").read()
    with open(p("truncated.tar.gz"), "wb") as f:
        f.write(data[: len(data) // 2])
    write_tar(p("zipslip.tar"), images(20) + [("../x.png", images(1)[0][1])])
    write_tar(p("symlink.tar"), images(20) + [("shapes/link.png", b"", tarfile.SYMTYPE, "/etc/passwd")])
    # A PNG whose header claims 20000x20000: refused from the header.
    bomb_png = (PNG_SIGNATURE + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0))
                + png_chunk(b"IDAT", zlib.compress(b"\0" * 20001, 9)) + png_chunk(b"IEND", b""))
    write_tar(p("big_png.tar"), images(20) + [("shapes/huge.png", bomb_png)])
    # 100,000 empty members, not images (gzipped, the archive is small).
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for i in range(100000):
            add(tar, "e/%06d" % i, b"")
    with open(p("many.tar.gz"), "wb") as f:
        f.write(gzip.compress(buf.getvalue(), 6))
    # A gzip bomb as a member: train-images-idx3-ubyte.gz inflates to
    # 100 MiB (its header claims all of it), over the member limit.
    n = (100 << 20) // 784
    bomb = gzip.compress(idx_images(n, 28, 28), 9)
    labels = struct.pack(">II", 0x801, 16) + bytes(16)
    write_tar(p("gzip_bomb.tar"), [
        ("train-images-idx3-ubyte.gz", bomb),
        ("train-labels-idx1-ubyte", struct.pack(">II", 0x801, n) + bytes(n)),
        ("t10k-images-idx3-ubyte", idx_images(16, 28, 28)),
        ("t10k-labels-idx1-ubyte", labels),
    ])
    write_tar(p("few.tar.gz"), images(3), "w:gz")
    # A slow upload's body: 8 MiB that do not compress.
    with open(p("large.bin"), "wb") as f:
        f.write(os.urandom(8 << 20))


if __name__ == "__main__":
    main()
