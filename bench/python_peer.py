#!/usr/bin/env python3
"""The Python peer of dae-server's POST /denoise, as a data scientist would
write it: the standard library's ThreadingHTTPServer, Pillow to read and
write the PNG, and the PyTorch module the same safetensors weights describe
(tools/dae_torch.py's model_from_safetensors: the network of their
"architecture" metadata, such as the shipped U-Net, or the notebook's
Autoencoder without one). It answers the same request (a 28x28 image as
the body) with the same kind of response (the denoised image as a PNG).
bench/http.sh starts it and loads it with wrk beside dae-server.

    /usr/bin/python3 bench/python_peer.py --model models/mnist.safetensors --port 8090

Needs Debian's python3-torch, python3-numpy and python3-pil.
"""
import argparse
import io
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from dae_torch import model_from_safetensors  # noqa: E402

MODEL = None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like any client library expects
    # Headers and body go out in two writes; without TCP_NODELAY, Nagle's
    # algorithm and the client's delayed ACK stall every answer ~40 ms.
    disable_nagle_algorithm = True

    def reply(self, status, body, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/healthz":
            self.reply(200, b'{"status":"ok"}\n', "application/json")
        else:
            self.reply(404, b'{"error":"not found"}\n', "application/json")

    def do_POST(self):
        if self.path.split("?")[0] != "/denoise":
            self.reply(404, b'{"error":"not found"}\n', "application/json")
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            image = Image.open(io.BytesIO(body)).convert("L")
        except Exception as e:  # noqa: BLE001 - any decoding failure is the client's
            self.reply(400, ('{"error":"%s"}\n' % e).encode(), "application/json")
            return
        if image.size != (28, 28):
            self.reply(422, b'{"error":"28x28 images only"}\n', "application/json")
            return
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).view(1, 1, 28, 28)
        with torch.inference_mode():
            y = MODEL(x)
        pixels = (y.clamp(0, 1) * 255 + 0.5).to(torch.uint8).view(28, 28).numpy()
        out = io.BytesIO()
        Image.fromarray(pixels, "L").save(out, "PNG")
        self.reply(200, out.getvalue(), "image/png")

    def log_message(self, *args):
        pass  # no access log, to be kind to the peer


def main():
    global MODEL
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models/mnist.safetensors")
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8090)
    ap.add_argument("--torch-threads", type=int, default=0, help="torch.set_num_threads (0: PyTorch's default)")
    args = ap.parse_args()
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    torch.set_flush_denormal(True)  # subnormals as zeros, as dae's engine takes them (core/denormals.h)
    MODEL = model_from_safetensors(args.model).eval()
    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    print(f"python peer listening on http://{args.bind}:{server.server_address[1]} "
          f"(torch {torch.__version__}, {torch.get_num_threads()} threads)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
