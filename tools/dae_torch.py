"""PyTorch side of dae: the reference module, IDX and safetensors readers and
writers, and the evaluation protocols, shared by the scripts in tools/ and
bench/. Needs Debian's python3-torch (and numpy); the project itself never
does.
"""
import gzip
import json
import os
import struct

import numpy as np
import torch
import torch.nn as nn


class Autoencoder(nn.Module):
    """The reference network of the original notebook."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 7))
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(64, 32, 7), nn.ReLU(),
            nn.ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            nn.ConvTranspose2d(16, 1, 3, stride=2, padding=1, output_padding=1), nn.Sigmoid())

    def forward(self, x):
        return self.decoder(self.encoder(x))


# --------------------------------------------------------------------- IDX

def _open_idx(path):
    if os.path.exists(path):
        return open(path, "rb").read()
    if os.path.exists(path + ".gz"):
        return gzip.open(path + ".gz", "rb").read()
    raise FileNotFoundError(f"{path}[.gz] not found")


def read_idx_images(path):
    """uint8 array (count, rows, cols) from an IDX image file, raw or .gz."""
    data = _open_idx(path)
    magic, count, rows, cols = struct.unpack(">IIII", data[:16])
    if magic != 2051:
        raise ValueError(f"{path}: bad magic {magic:#x}")
    return np.frombuffer(data, dtype=np.uint8, count=count * rows * cols, offset=16).reshape(count, rows, cols)


def load_split(data_dir, dataset, split):
    """Images of a data set split ('train' or 't10k') as a float tensor
    (N, 1, 28, 28) in [0, 1]."""
    images = read_idx_images(os.path.join(data_dir, dataset, f"{split}-images-idx3-ubyte"))
    return torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)


# ------------------------------------------------------------- safetensors

def save_safetensors(path, tensors, metadata=None):
    """Writes {name: tensor} as F32 safetensors (header padded to 8 bytes)."""
    header = {}
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    blobs, offset = [], 0
    for name, t in tensors.items():
        data = t.detach().contiguous().to(torch.float32).cpu().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def load_safetensors(path):
    """Reads an F32 safetensors file: ({name: tensor}, metadata dict)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    metadata = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        if info["dtype"] != "F32":
            raise ValueError(f"{path}: tensor {name} is {info['dtype']}, only F32 is supported")
        begin, end = info["data_offsets"]
        array = np.frombuffer(data, dtype="<f4", count=(end - begin) // 4, offset=8 + n + begin)
        tensors[name] = torch.from_numpy(array.copy()).reshape(info["shape"])
    return tensors, metadata


# -------------------------------------------------------------- evaluation

EVAL_SEED = 20260101


def noisy_inputs(clean, sigma, protocol, seed=EVAL_SEED):
    """The evaluation inputs: x + sigma*N(0,1), unclipped ('raw', as the
    notebook) or clipped to [0,1] and rounded to 8 bits ('png')."""
    gen = torch.Generator().manual_seed(seed)
    noisy = clean + sigma * torch.randn(clean.shape, generator=gen)
    if protocol == "png":
        noisy = torch.round(noisy.clamp(0, 1) * 255) / 255
    return noisy


def quality(clean, test):
    """Mean MSE and mean per-image PSNR (10 log10(1/mse_i)) of a batch."""
    mse = ((clean - test) ** 2).flatten(1).mean(1).double()
    psnr = (10 * torch.log10(1 / mse.clamp_min(1e-10))).clamp_max(100)
    return mse.mean().item(), psnr.mean().item()


def evaluate(model, clean, sigma=0.5, protocol="raw", batch=1000):
    """Test metrics of the model and of the noisy input itself."""
    noisy = noisy_inputs(clean, sigma, protocol)
    with torch.no_grad():
        out = torch.cat([model(noisy[i:i + batch]) for i in range(0, len(noisy), batch)])
    m_mse, m_psnr = quality(clean, out)
    n_mse, n_psnr = quality(clean, noisy)
    return {"model": {"mse": m_mse, "psnr": m_psnr}, "noisy": {"mse": n_mse, "psnr": n_psnr}}

