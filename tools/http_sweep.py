#!/usr/bin/env python3
"""http_sweep.py - the noise sweep of `dae eval --sweep` measured again
through the HTTP service, to show both give the same table.

`dae eval --sweep S1,S2,... --save-noisy DIR --json` evaluates the models
under the png protocol (Gaussian noise clipped to [0, 1] and quantised to
8 bits, drawn from the fixed evaluation seed and the image's index) and
writes the very noisy images it fed them. This tool then sends each of
those images, as an 8-bit grayscale PNG, to POST URL/denoise?model=NAME,
decodes the PNG that comes back and scores it against the clean test image
the way the engine does (core/metrics.c: per-image PSNR = 10*log10(1/mse)
for data range 1, capped at 100 dB, averaged over the images). It prints,
per sigma and model, eval's PSNR, the service's and their difference.
Exit status: 0 when every difference is within --tolerance (default
0.05 dB), 1 when one is not, 2 when the measurement cannot be made (dae
eval fails, the service refuses a request or cannot be reached).

The service answers 8-bit pixels where eval scores the network's float
output, so small differences are expected: the rounding adds about
1/(12*255^2) to each image's MSE. The noisy input's PSNR is recomputed
from the saved files too, as a check that they are what eval used.

Python 3 standard library only (zlib, struct, http.client): it runs on
machines without numpy. Example:

  tools/http_sweep.py --url http://127.0.0.1:8080 --dae build/dae \\
      --data-dir tests/fixtures --dataset mnist-mini \\
      --models mnist,fashion-mnist \\
      --model-files models/mnist.safetensors,models/fashion-mnist.safetensors \\
      --sweep 0.05,0.1,0.2,0.3,0.5,0.7 --limit 200
"""
import argparse
import concurrent.futures
import gzip
import http.client
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import zlib

# As core/metrics.h: the PSNR of identical images, and the most reported.
PSNR_MAX = 100.0
IDX_MAGIC_IMAGES = 0x00000803
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Tries of one request, a 503 or dropped connection away from the next.
ATTEMPTS = 10


class Failure(Exception):
    """A problem that ends the run: printed as one line, exit 2."""


# ------------------------------------------------------------ IDX files

def read_idx_images(path):
    """Returns (count, rows, cols, pixels bytes) of an IDX image file, raw or
    gzip (told from the content)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if len(data) < 16:
        raise Failure("%s: too short for an IDX header" % path)
    magic, count, rows, cols = struct.unpack(">IIII", data[:16])
    if magic != IDX_MAGIC_IMAGES:
        raise Failure("%s: magic 0x%08x, not an IDX image file (0x%08x)" % (path, magic, IDX_MAGIC_IMAGES))
    if len(data) != 16 + count * rows * cols:
        raise Failure("%s: %d bytes, the header announces %d" % (path, len(data), 16 + count * rows * cols))
    return count, rows, cols, data[16:]


def test_images_path(data_dir, dataset):
    """The test images of a data set, raw first, as `dae` looks for them."""
    for name in ("t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz"):
        path = os.path.join(data_dir, dataset, name)
        if os.path.exists(path):
            return path
    raise Failure("%s: no t10k-images-idx3-ubyte[.gz]" % os.path.join(data_dir, dataset))


# ------------------------------------------------------------ PNG

def png_chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_encode_gray8(pixels, width, height):
    """An 8-bit grayscale PNG of width x height bytes (row-major), filter 0."""
    raw = b"".join(b"\0" + pixels[y * width:(y + 1) * width] for y in range(height))
    return (PNG_SIGNATURE + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(raw, 6)) + png_chunk(b"IEND", b""))


def png_unfilter(data, stride, height, bpp):
    """Undoes the per-row PNG filters (0-4) of a non-interlaced image."""
    out = bytearray(stride * height)
    prev = bytearray(stride)
    pos = 0
    for y in range(height):
        ft = data[pos]
        line = bytearray(data[pos + 1:pos + 1 + stride])
        pos += 1 + stride
        if ft == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif ft == 2:
            for i in range(stride):
                line[i] = (line[i] + prev[i]) & 255
        elif ft == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
        elif ft == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 255
        elif ft != 0:
            raise ValueError("filter type %d" % ft)
        out[y * stride:(y + 1) * stride] = line
        prev = line
    return out


def png_decode_gray(png):
    """Decodes a non-interlaced PNG of any colour type and bit depth into
    (width, height, list of gray values in [0, 1]). Colour answers must be
    gray (R == G == B); alpha is ignored."""
    if png[:8] != PNG_SIGNATURE:
        raise ValueError("not a PNG")
    pos, idat, palette, ihdr = 8, [], None, None
    while pos + 8 <= len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        body = png[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"PLTE":
            palette = body
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if ihdr is None:
        raise ValueError("no IHDR")
    width, height, depth, ctype, _, _, interlace = ihdr
    if interlace:
        raise ValueError("interlaced PNG")
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[ctype]
    bits = depth * channels
    stride = (width * bits + 7) // 8
    data = png_unfilter(zlib.decompress(b"".join(idat)), stride, height, max(1, bits // 8))
    # Samples of each row, unpacked from 1, 2, 4, 8 or 16 bits.
    samples = []
    for y in range(height):
        row = data[y * stride:(y + 1) * stride]
        if depth == 8:
            samples.extend(row[:width * channels])
        elif depth == 16:
            samples.extend(struct.unpack(">%dH" % (width * channels), bytes(row[:2 * width * channels])))
        else:
            per = 8 // depth
            mask = (1 << depth) - 1
            for i in range(width * channels):
                samples.append((row[i // per] >> (8 - depth * (i % per + 1))) & mask)
    top = float((1 << depth) - 1)
    gray = []
    for i in range(width * height):
        s = samples[i * channels:(i + 1) * channels]
        if ctype == 3:
            r, g, b = palette[3 * s[0]:3 * s[0] + 3]
            if not r == g == b:
                raise ValueError("palette colour (%d, %d, %d) is not gray" % (r, g, b))
            gray.append(r / 255.0)
            continue
        if ctype in (2, 6) and not s[0] == s[1] == s[2]:
            raise ValueError("pixel %d is not gray: %r" % (i, s[:3]))
        gray.append(s[0] / top)
    return width, height, gray


# ------------------------------------------------------------ metrics

def psnr(clean, test):
    """PSNR in dB of two equal-length sequences of values in [0, 1], as
    core/metrics.c: 10*log10(1/mse), capped at PSNR_MAX."""
    mse = math.fsum((a - b) ** 2 for a, b in zip(clean, test)) / len(clean)
    if mse <= 0.0:
        return PSNR_MAX
    return min(-10.0 * math.log10(mse), PSNR_MAX)


# ------------------------------------------------------------ HTTP

class Client:
    """POSTs PNGs to URL/denoise with one keep-alive connection per thread."""

    def __init__(self, url, timeout):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Failure("--url %s: not an http:// or https:// URL" % url)
        self.https = parts.scheme == "https"
        self.host, self.port = parts.hostname, parts.port
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.local = threading.local()

    def _connection(self):
        conn = getattr(self.local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            conn = self.local.conn = cls(self.host, self.port, timeout=self.timeout)
        return conn

    def denoise(self, model, png):
        """Returns the PNG the service answers for png with model; retries a
        dropped connection, and a 503 (queue full) after its Retry-After or
        a doubling back-off, whichever is longer."""
        path = "%s/denoise?model=%s" % (self.prefix, urllib.parse.quote(model, safe=""))
        for attempt in range(ATTEMPTS):
            conn = self._connection()
            try:
                conn.request("POST", path, body=png, headers={"Content-Type": "image/png"})
                resp = conn.getresponse()
                body = resp.read()
            except (http.client.HTTPException, OSError) as e:
                conn.close()
                self.local.conn = None
                if attempt == ATTEMPTS - 1:
                    raise Failure("POST %s to %s:%s: %s" % (path, self.host, self.port, e))
                continue
            if resp.status == 503 and attempt < ATTEMPTS - 1:
                time.sleep(max(float(resp.getheader("Retry-After") or 0), 0.01 * 2 ** attempt))
                continue
            if resp.status != 200:
                raise Failure("POST %s: status %d: %s" % (path, resp.status, body[:200].decode("utf-8", "replace")))
            served = resp.getheader("X-Model")
            if served is not None and served != model:
                raise Failure("POST %s: answered by model %s" % (path, served))
            return body


# ------------------------------------------------------------ the sweep

def run_eval(args, save_dir):
    """Runs dae eval with --save-noisy and returns its JSON."""
    cmd = [args.dae, "eval", "--data-dir", args.data_dir, "--dataset", args.dataset,
           "--model", args.model_files, "--sweep", args.sweep, "--save-noisy", save_dir, "--json"]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise Failure("%s exited %d: %s" % (" ".join(cmd), proc.returncode, proc.stderr.strip()))
    return json.loads(proc.stdout)


def score(client, model, noisy, clean, rows, cols):
    """PSNR of the service's answer for one noisy image (bytes) against the
    clean one (values in [0, 1])."""
    answer = client.denoise(model, png_encode_gray8(noisy, cols, rows))
    try:
        w, h, out = png_decode_gray(answer)
    except (ValueError, KeyError, IndexError, zlib.error, struct.error) as e:
        raise Failure("model %s answered a PNG this tool cannot read: %s" % (model, e))
    if (w, h) != (cols, rows):
        raise Failure("model %s answered %dx%d for a %dx%d image" % (model, w, h, cols, rows))
    return psnr(clean, out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="base URL of dae-server, e.g. http://127.0.0.1:8080")
    ap.add_argument("--dae", default="dae", help="the dae binary (default: dae on PATH)")
    ap.add_argument("--data-dir", default=os.environ.get("DAE_DATA_DIR"),
                    help="directory holding the data sets (default $DAE_DATA_DIR)")
    ap.add_argument("--dataset", required=True, help="data set whose test images to use")
    ap.add_argument("--models", required=True, help="model names the daemon serves, comma-separated")
    ap.add_argument("--model-files", required=True,
                    help="the same models as files for dae eval, comma-separated, in the same order")
    ap.add_argument("--sweep", default="0.05,0.1,0.2,0.3,0.5,0.7", help="Gaussian sigmas (default %(default)s)")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N test images (default all)")
    ap.add_argument("--tolerance", type=float, default=0.05, help="largest |difference| in dB (default 0.05)")
    ap.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    ap.add_argument("--timeout", type=float, default=30, help="seconds per request (default 30)")
    args = ap.parse_args()
    names, files = args.models.split(","), args.model_files.split(",")
    if len(names) != len(files):
        ap.error("--models names %d models, --model-files %d" % (len(names), len(files)))
    if not args.data_dir:
        ap.error("--data-dir is required when $DAE_DATA_DIR is not set")
    if args.concurrency < 1 or args.limit < 0:
        ap.error("--concurrency must be at least 1 and --limit at least 0")
    sigmas = args.sweep.split(",")

    try:
        client = Client(args.url, args.timeout)
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="dae-http-sweep.") as tmp:
            ev = run_eval(args, tmp)
            t_eval = time.monotonic() - t0
            count = ev["test_images"]
            _, rows, cols, clean_px = read_idx_images(test_images_path(args.data_dir, args.dataset))
            size = rows * cols
            clean = [[clean_px[i * size + j] / 255.0 for j in range(size)] for i in range(count)]
            noisy = []
            for s in sigmas:
                n, r, c, px = read_idx_images(os.path.join(tmp, "noisy-%s-images-idx3-ubyte" % s))
                if (n, r, c) != (count, rows, cols):
                    raise Failure("noisy images at sigma %s: %dx%dx%d, want %dx%dx%d" % (s, n, r, c, count, rows, cols))
                noisy.append([px[i * size:(i + 1) * size] for i in range(count)])
        # The noisy input, scored from the saved files: they must be what eval scored.
        noisy_db = [sum(psnr(clean[i], [v / 255.0 for v in noisy[k][i]]) for i in range(count)) / count
                    for k in range(len(sigmas))]
        jobs = [(k, m, i) for k in range(len(sigmas)) for m in range(len(names)) for i in range(count)]
        sums = [[0.0] * len(names) for _ in sigmas]
        t1 = time.monotonic()
        pool = concurrent.futures.ThreadPoolExecutor(args.concurrency)
        try:
            results = pool.map(lambda j: score(client, names[j[1]], noisy[j[0]][j[2]], clean[j[2]], rows, cols),
                               jobs)
            for (k, m, _), p in zip(jobs, results):
                sums[k][m] += p
        finally:
            pool.shutdown(cancel_futures=True)  # after a failure, the jobs not started are dropped
        t_http = time.monotonic() - t1
    except Failure as e:
        print("http_sweep: %s" % e, file=sys.stderr)
        return 2

    http_db = [[s / count for s in row] for row in sums]
    print("dataset %s, %d test images, seed %s, png protocol; dae eval (%.1f s) against %s (%d requests, %.1f s)"
          % (args.dataset, count, ev["seed"], t_eval, args.url, len(jobs), t_http))
    heads = ["noisy input"] + names
    print("%-6s" % "" + "".join("   %30s" % h for h in heads))
    print("%-6s" % "sigma" + "   %9s %9s %10s" % ("eval dB", "files dB", "diff") * 1
          + "   %9s %9s %10s" % ("eval dB", "HTTP dB", "diff") * len(names))
    worst = 0.0
    for k, s in enumerate(sigmas):
        row = ev["sweep"][k]
        line = "%-6s" % s
        pairs = [(row["noisy"]["psnr"], noisy_db[k])] + [(row["denoised"][m]["psnr"], http_db[k][m])
                                                          for m in range(len(names))]
        for a, b in pairs:
            line += "   %9.4f %9.4f %+10.4f" % (a, b, b - a)
            worst = max(worst, abs(b - a))
        print(line)
    verdict = "within" if worst <= args.tolerance else "OVER"
    print("largest |difference| %.4f dB: %s the tolerance of %g dB" % (worst, verdict, args.tolerance))
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
