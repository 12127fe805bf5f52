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


# ------------------------------------------------------------ spec networks

# The U-Net dae ships (core/model.c's "unet"): the notebook's encoder and
# decoder with skips, predicting the noise (residual output).
UNET_SPEC = (
    '{"input":[1,28,28],"output":"residual",'
    '"e1":[{"type":"conv2d","in_channels":1,"out_channels":16,"kernel_size":3,"stride":2,"padding":1},'
    '{"type":"relu"}],'
    '"e2":[{"type":"conv2d","in_channels":16,"out_channels":32,"kernel_size":3,"stride":2,"padding":1},'
    '{"type":"relu"}],'
    '"z":[{"type":"conv2d","in_channels":32,"out_channels":64,"kernel_size":7}],'
    '"g":[{"type":"conv_transpose2d","in_channels":64,"out_channels":32,"kernel_size":7},'
    '{"type":"relu"}],'
    '"d2":[{"type":"concat","inputs":["g","e2"]},'
    '{"type":"conv_transpose2d","in_channels":64,"out_channels":16,"kernel_size":3,"stride":2,"padding":1,'
    '"output_padding":1},'
    '{"type":"relu"}],'
    '"d1":[{"type":"concat","inputs":["d2","e1"]},'
    '{"type":"conv_transpose2d","in_channels":32,"out_channels":16,"kernel_size":3,"stride":2,"padding":1,'
    '"output_padding":1},'
    '{"type":"relu"}],'
    '"out":[{"type":"concat","inputs":["d1","input"]},'
    '{"type":"conv2d","in_channels":17,"out_channels":1,"kernel_size":3,"padding":1}]}')

# Autoencoder as a spec (core/model.c's default): the same state_dict.
SEED_SPEC = (
    '{"input":[1,28,28],'
    '"encoder":[{"type":"conv2d","in_channels":1,"out_channels":16,"kernel_size":3,"stride":2,"padding":1},'
    '{"type":"relu"},'
    '{"type":"conv2d","in_channels":16,"out_channels":32,"kernel_size":3,"stride":2,"padding":1},'
    '{"type":"relu"},'
    '{"type":"conv2d","in_channels":32,"out_channels":64,"kernel_size":7}],'
    '"decoder":[{"type":"conv_transpose2d","in_channels":64,"out_channels":32,"kernel_size":7},'
    '{"type":"relu"},'
    '{"type":"conv_transpose2d","in_channels":32,"out_channels":16,"kernel_size":3,"stride":2,"padding":1,'
    '"output_padding":1},'
    '{"type":"relu"},'
    '{"type":"conv_transpose2d","in_channels":16,"out_channels":1,"kernel_size":3,"stride":2,"padding":1,'
    '"output_padding":1},'
    '{"type":"sigmoid"}]}')

_CONV_KEYS = {"type", "inputs", "in_channels", "out_channels", "kernel_size", "stride", "padding",
              "output_padding"}


class _Join(nn.Module):
    """A concat (torch.cat on channels) or an add of two or more inputs."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind

    def forward(self, *xs):
        if self.kind == "concat":
            return torch.cat(xs, dim=1)
        y = xs[0]
        for x in xs[1:]:
            y = y + x
        return y


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    for k in keys:
        if keys.count(k) > 1:
            raise ValueError(f"architecture: \"{k}\" is given twice")
    return dict(pairs)


def _pair(layer, key, value, default):
    """An integer or [h, w] member of a layer as an (h, w) tuple."""
    v = value.get(key, default)
    items = v if isinstance(v, list) else [v, v]
    if len(items) != 2 or not all(isinstance(i, int) and not isinstance(i, bool) for i in items):
        raise ValueError(f"architecture: {layer}: \"{key}\" must be an integer or [h, w]")
    return tuple(items)


class SpecNet(nn.Module):
    """A network built from an architecture spec (JSON text or the parsed
    dict; the format is core/model.h's): each group is a ModuleList
    attribute, so layer j of group G and its parameters have the names
    "G.j", "G.j.weight", "G.j.bias" that the engine uses. Raises ValueError
    naming the layer at fault for a spec the engine would refuse."""

    def __init__(self, spec):
        super().__init__()
        if isinstance(spec, str):
            spec = json.loads(spec, object_pairs_hook=_no_duplicates)
        if isinstance(spec, list):
            spec = {"layers": spec}
        if not isinstance(spec, dict):
            raise ValueError("architecture: must be an object of groups or a list of layers")
        shape = spec.get("input", [1, 28, 28])
        if (not isinstance(shape, list) or len(shape) != 3
                or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape)):
            raise ValueError("architecture: \"input\" must be [C, H, W] of positive integers")
        output = spec.get("output", "direct")
        if output not in ("direct", "residual"):
            raise ValueError(f"architecture: \"output\" must be \"direct\" or \"residual\", not {output!r}")
        self.input_shape = tuple(shape)
        self.residual = output == "residual"
        # The graph, one row per layer in spec order: (name, module, indices
        # of its inputs, -1 being the network input); shapes[k] is layer k's
        # output shape of one image, shapes[-1] the input's.
        self.graph = []
        self.output_shape = None
        shapes = {-1: self.input_shape}
        last_of_group = {}
        for group, layers in spec.items():
            if group in ("input", "output"):
                continue
            if not isinstance(layers, list) or not layers:
                raise ValueError(f"architecture: \"{group}\" must be a non-empty list of layers")
            if not group.isidentifier() or hasattr(self, group):
                raise ValueError(f"architecture: group name \"{group}\" must be letters, digits or _ "
                                 "and no attribute of nn.Module")
            modules = nn.ModuleList()
            for j, layer in enumerate(layers):
                name = f"{group}.{j}"
                module, inputs, out_shape = self._layer(name, layer, group, shapes, last_of_group)
                modules.append(module)
                shapes[len(self.graph)] = out_shape
                self.graph.append((name, module, inputs))
            setattr(self, group, modules)
            last_of_group[group] = len(self.graph) - 1
        if not self.graph:
            raise ValueError("architecture: no layers")
        if self.residual and shapes[len(self.graph) - 1] != self.input_shape:
            raise ValueError(f"architecture: a residual output needs the last layer to give the input's "
                             f"shape {self.input_shape}, not {shapes[len(self.graph) - 1]}")
        self.output_shape = shapes[len(self.graph) - 1]

    def _layer(self, name, layer, group, shapes, last_of_group):
        """One layer's module, input indices and output shape."""
        if not isinstance(layer, dict) or not isinstance(layer.get("type"), str):
            raise ValueError(f"architecture: {name}: a layer must be an object with a \"type\"")
        kind = layer["type"]
        allowed = _CONV_KEYS if kind in ("conv2d", "conv_transpose2d") else {"type", "inputs"}
        unknown = sorted(set(layer) - allowed)
        if kind not in ("conv2d", "conv_transpose2d", "relu", "sigmoid", "concat", "add"):
            raise ValueError(f"architecture: {name}: unknown type \"{kind}\" "
                             "(conv2d, conv_transpose2d, relu, sigmoid, concat, add)")
        if unknown:
            raise ValueError(f"architecture: {name}: unknown field \"{unknown[0]}\"")
        index = len(self.graph)
        names = layer.get("inputs")
        if names is None:
            inputs = [index - 1]  # the layer before, or the network input (-1) for the first
        else:
            if not isinstance(names, list) or not names:
                raise ValueError(f"architecture: {name}: \"inputs\" must be a list of layer names")
            inputs = [self._node(name, n, group, last_of_group) for n in names]
        in_shapes = [shapes[k] for k in inputs]
        if kind in ("concat", "add"):
            if len(inputs) < 2:
                raise ValueError(f"architecture: {name}: {kind} takes two or more \"inputs\"")
            c, h, w = in_shapes[0]
            for s in in_shapes[1:]:
                if s[1:] != (h, w) or (kind == "add" and s[0] != c):
                    raise ValueError(f"architecture: {name}: its inputs are {in_shapes[0]} and {s}; "
                                     f"{kind} needs the same {'shape' if kind == 'add' else 'height and width'}")
            if kind == "concat":
                c = sum(s[0] for s in in_shapes)
            return _Join(kind), inputs, (c, h, w)
        if len(inputs) != 1:
            raise ValueError(f"architecture: {name}: {kind} takes one input, not {len(inputs)}")
        c, h, w = in_shapes[0]
        if kind == "relu":
            return nn.ReLU(), inputs, (c, h, w)
        if kind == "sigmoid":
            return nn.Sigmoid(), inputs, (c, h, w)
        for key in ("in_channels", "out_channels", "kernel_size"):
            if key not in layer:
                raise ValueError(f"architecture: {name}: \"{key}\" is required")
        in_c, out_c = layer["in_channels"], layer["out_channels"]
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in (in_c, out_c)):
            raise ValueError(f"architecture: {name}: channels must be positive integers")
        if in_c != c:
            raise ValueError(f"architecture: {name}: in_channels is {in_c} but its input gives {c} channels")
        k = _pair(name, "kernel_size", layer, None)
        s = _pair(name, "stride", layer, 1)
        p = _pair(name, "padding", layer, 0)
        op = _pair(name, "output_padding", layer, 0)
        if kind == "conv2d":
            if op != (0, 0):
                raise ValueError(f"architecture: {name}: output_padding is for conv_transpose2d only")
            module = nn.Conv2d(in_c, out_c, k, stride=s, padding=p)
            out = [(n + 2 * p[i] - k[i]) // s[i] + 1 for i, n in enumerate((h, w))]
        else:
            if op[0] >= s[0] or op[1] >= s[1]:
                raise ValueError(f"architecture: {name}: output_padding must be smaller than stride")
            module = nn.ConvTranspose2d(in_c, out_c, k, stride=s, padding=p, output_padding=op)
            out = [(n - 1) * s[i] - 2 * p[i] + k[i] + op[i] for i, n in enumerate((h, w))]
        if min(out) < 1:
            raise ValueError(f"architecture: {name}: a {h}x{w} input gives a {out[0]}x{out[1]} output")
        return module, inputs, (out_c, out[0], out[1])

    def _node(self, layer, node, group, last_of_group):
        """The index of a node named in "inputs": "input" (-1), "G" (group
        G's last layer) or "G.j", all earlier than the layer itself."""
        if node == "input":
            return -1
        if not isinstance(node, str):
            raise ValueError(f"architecture: {layer}: \"inputs\" must hold layer names")
        if node == group:
            raise ValueError(f"architecture: {layer}: input \"{node}\" is its own group, whose last layer "
                             "is not earlier than itself (name \"group.index\")")
        if node in last_of_group:
            return last_of_group[node]
        for k, (name, _, _) in enumerate(self.graph):
            if name == node:
                return k
        raise ValueError(f"architecture: {layer}: input \"{node}\" is neither \"input\" nor an earlier layer "
                         "(\"group\" for its last layer, or \"group.index\")")

    def forward(self, x):
        outputs = {-1: x}
        for k, (_, module, inputs) in enumerate(self.graph):
            outputs[k] = module(*[outputs[i] for i in inputs])
        y = outputs[len(self.graph) - 1]
        return torch.clamp(x - y, 0, 1) if self.residual else y


def model_from_state(tensors, metadata):
    """The module a weights file describes, with its weights loaded
    (load_state_dict(strict=True): every tensor used, none missing): its
    "architecture" metadata built by SpecNet, or Autoencoder without one."""
    spec = metadata.get("architecture")
    model = SpecNet(spec) if spec else Autoencoder()
    model.load_state_dict(tensors, strict=True)
    return model


def model_from_safetensors(path):
    """model_from_state of a safetensors weights file."""
    return model_from_state(*load_safetensors(path))


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

