#!/usr/bin/python3
"""Make the PyTorch reference fixtures the C tests compare against.

Run from the repository root (needs Debian's python3-torch):

    make refs        # or: /usr/bin/python3 tests/ref/make_refs.py tests/fixtures/ref

Every fixture is a safetensors file (F32, written by tools/dae_torch.py's
small writer, so the script needs nothing beyond torch). Tensors are in PyTorch's own layouts
(NCHW activations, Conv2d weight (OC,IC,KH,KW), ConvTranspose2d weight
(IC,OC,KH,KW)); the C tests convert activations to the engine's (C,B,H,W).
"""
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
from dae_torch import UNET_SPEC, Autoencoder, SpecNet, save_safetensors  # noqa: E402


def pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


# name, kind, batch, in_c, out_c, (h, w), kernel, stride, padding, output_padding
LAYER_CASES = [
    # the six convolutions of the reference network
    ("enc0", "conv2d", 2, 1, 16, (28, 28), 3, 2, 1, 0),
    ("enc2", "conv2d", 2, 16, 32, (14, 14), 3, 2, 1, 0),
    ("enc4", "conv2d", 2, 32, 64, (7, 7), 7, 1, 0, 0),
    ("dec0", "conv_transpose2d", 2, 64, 32, (1, 1), 7, 1, 0, 0),
    ("dec2", "conv_transpose2d", 2, 32, 16, (7, 7), 3, 2, 1, 1),
    ("dec4", "conv_transpose2d", 2, 16, 1, (14, 14), 3, 2, 1, 1),
    # other strides, paddings, output paddings, shapes
    ("conv_k5_s1_p2", "conv2d", 3, 2, 4, (9, 9), 5, 1, 2, 0),
    ("conv_k3_s3_p0_rect", "conv2d", 2, 3, 5, (9, 11), 3, 3, 0, 0),
    ("conv_k2_s1_p0", "conv2d", 2, 3, 2, (6, 5), 2, 1, 0, 0),
    ("conv_k3x5_s2x1_p1x2", "conv2d", 2, 2, 3, (8, 10), (3, 5), (2, 1), (1, 2), 0),
    ("convt_k4_s2_p1", "conv_transpose2d", 2, 3, 2, (5, 6), 4, 2, 1, 0),
    ("convt_k3_s3_p0_op2", "conv_transpose2d", 2, 2, 3, (4, 3), 3, 3, 0, 2),
    ("convt_k5_s1_p2", "conv_transpose2d", 3, 4, 2, (6, 6), 5, 1, 2, 0),
    ("convt_k3x2_s2x3_p1x0_op1x2", "conv_transpose2d", 2, 2, 2, (5, 4), (3, 2), (2, 3), (1, 0), (1, 2)),
]


def make_layer_case(out_dir, case, gen):
    name, kind, batch, in_c, out_c, (h, w), k, s, p, op = case
    k, s, p, op = pair(k), pair(s), pair(p), pair(op)
    if kind == "conv2d":
        layer = nn.Conv2d(in_c, out_c, k, stride=s, padding=p)
    else:
        layer = nn.ConvTranspose2d(in_c, out_c, k, stride=s, padding=p, output_padding=op)
    x = torch.randn(batch, in_c, h, w, generator=gen, requires_grad=True)
    y = layer(x)
    dy = torch.randn(y.shape, generator=gen)
    y.backward(dy)
    meta = {"kind": kind, "batch": batch, "in_c": in_c, "out_c": out_c,
            "in_h": h, "in_w": w, "out_h": y.shape[2], "out_w": y.shape[3],
            "k_h": k[0], "k_w": k[1], "stride_h": s[0], "stride_w": s[1],
            "pad_h": p[0], "pad_w": p[1], "out_pad_h": op[0], "out_pad_w": op[1]}
    save_safetensors(os.path.join(out_dir, f"layer_{name}.safetensors"), {
        "x": x, "weight": layer.weight, "bias": layer.bias, "y": y, "dy": dy,
        "dx": x.grad, "dweight": layer.weight.grad, "dbias": layer.bias.grad,
    }, meta)


def make_activations(out_dir, gen):
    x = torch.randn(1000, generator=gen) * 3
    x[:10] = 0.0  # ReLU's kink: PyTorch's gradient there is 0
    dy = torch.randn(1000, generator=gen)
    xr = x.clone().requires_grad_(True)
    yr = F.relu(xr)
    yr.backward(dy)
    xs = x.clone().requires_grad_(True)
    ys = torch.sigmoid(xs)
    ys.backward(dy)
    target = torch.rand(1000, generator=gen)
    xm = x.clone().requires_grad_(True)
    loss = F.mse_loss(xm, target)
    loss.backward()
    save_safetensors(os.path.join(out_dir, "activations.safetensors"), {
        "x": x, "dy": dy, "relu_y": yr, "relu_dx": xr.grad,
        "sigmoid_y": ys, "sigmoid_dx": xs.grad, "target": target,
        "mse_loss": loss.reshape(1), "mse_dx": xm.grad,
    })


def make_adam(out_dir, gen):
    p = torch.randn(1000, generator=gen).requires_grad_(True)
    tensors = {"param0": p.detach().clone()}
    opt = torch.optim.Adam([p], lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-5)
    for step in range(1, 4):
        g = torch.randn(1000, generator=gen) * 10 ** (-step)
        p.grad = g.clone()
        opt.step()
        tensors[f"grad{step}"] = g
        tensors[f"param{step}"] = p.detach().clone()
    save_safetensors(os.path.join(out_dir, "adam.safetensors"), tensors,
                     {"lr": 1e-3, "weight_decay": 1e-5, "steps": 3})


def two_adam_steps(model, batch, shape, gen, clamp):
    """Two full training steps of model: forward on clean + 0.5 N(0,1)
    (clamped to [0, 1] when clamp), MSE loss, backward, Adam (lr 1e-3,
    weight decay 1e-5). The tensors of the fixture: init.*, then per step
    the images, the output, the loss, the gradients (step 1) and the
    parameters after the step."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    tensors = {f"init.{k}": v.clone() for k, v in model.state_dict().items()}
    for step in (1, 2):
        clean = torch.rand(batch, *shape, generator=gen)
        noisy = clean + 0.5 * torch.randn(clean.shape, generator=gen)
        if clamp:
            noisy = torch.clamp(noisy, 0, 1)
        opt.zero_grad()
        out = model(noisy)
        loss = F.mse_loss(out, clean)
        loss.backward()
        opt.step()
        tensors[f"step{step}.clean"] = clean
        tensors[f"step{step}.noisy"] = noisy
        tensors[f"step{step}.output"] = out
        tensors[f"step{step}.loss"] = loss.reshape(1)
        for k, prm in model.named_parameters():
            if step == 1:  # the second step checks the Adam state carried over
                tensors[f"step{step}.grad.{k}"] = prm.grad.clone()
            tensors[f"step{step}.param.{k}"] = prm.detach().clone()
    return tensors


def make_train_steps(out_dir, gen):
    """Two full training steps of the reference network."""
    torch.manual_seed(1234)
    tensors = two_adam_steps(Autoencoder(), 8, (1, 28, 28), gen, clamp=False)
    save_safetensors(os.path.join(out_dir, "train_steps.safetensors"), tensors,
                     {"lr": 1e-3, "weight_decay": 1e-5, "batch": 8})
    # The same initial weights as a plain state_dict file, as PyTorch users
    # would hand us: our loader must take it.
    save_safetensors(os.path.join(out_dir, "reference_init.safetensors"),
                     {k[len("init."):]: v for k, v in tensors.items() if k.startswith("init.")})


def make_graph_ops(out_dir, gen):
    """The graph's joins and the residual output, each with its gradients."""
    a = torch.randn(2, 3, 5, 4, generator=gen, requires_grad=True)
    b = torch.randn(2, 2, 5, 4, generator=gen, requires_grad=True)
    y = torch.cat([a, b], dim=1)
    dy = torch.randn(y.shape, generator=gen)
    y.backward(dy)
    tensors = {"concat.a": a, "concat.b": b, "concat.y": y, "concat.dy": dy,
               "concat.da": a.grad, "concat.db": b.grad}
    terms = [torch.randn(2, 3, 5, 4, generator=gen, requires_grad=True) for _ in range(3)]
    y = terms[0] + terms[1] + terms[2]
    dy = torch.randn(y.shape, generator=gen)
    y.backward(dy)
    tensors.update({"add.a": terms[0], "add.b": terms[1], "add.c": terms[2], "add.y": y, "add.dy": dy,
                    "add.da": terms[0].grad, "add.db": terms[1].grad, "add.dc": terms[2].grad})
    x = torch.rand(2, 1, 6, 6, generator=gen)
    f = 0.6 * torch.randn(x.shape, generator=gen)
    # x - f exactly 0 and exactly 1 (all values exact in binary): PyTorch's
    # clamp passes the gradient at both bounds (its mask is min <= v <= max),
    # so df = -dy there, and 0 only strictly outside [0, 1].
    flat_x, flat_f = x.view(-1), f.view(-1)
    flat_x[:4] = torch.tensor([0.5, 0.0, 0.75, 1.0])
    flat_f[:4] = torch.tensor([0.5, 0.0, -0.25, 0.0])
    assert ((x - f).view(-1)[:4] == torch.tensor([0.0, 0.0, 1.0, 1.0])).all()
    assert ((x - f) < 0).any() and ((x - f) > 1).any()
    f.requires_grad_(True)
    y = torch.clamp(x - f, 0, 1)
    dy = torch.randn(y.shape, generator=gen)
    y.backward(dy)
    assert (f.grad.view(-1)[:4] == -dy.view(-1)[:4]).all()
    tensors.update({"residual.x": x, "residual.f": f, "residual.y": y, "residual.dy": dy,
                    "residual.df": f.grad})
    save_safetensors(os.path.join(out_dir, "graph_ops.safetensors"), tensors,
                     {"clamp_gradient_at_bounds": "passes (min <= x - f <= max)"})


# A small graph that exercises what the U-Net does not: two input channels,
# rectangular kernels and strides, an add, inputs naming "G.j" (a.1, read by
# a.2, b.0 and c.0), a ReLU after an add and after a concat, a concat of
# three, a sigmoid and the direct output.
GRAPH_SPEC = {
    "input": [2, 8, 8],
    "a": [{"type": "conv2d", "in_channels": 2, "out_channels": 4, "kernel_size": [3, 5], "padding": [1, 2]},
          {"type": "relu"},
          {"type": "conv2d", "in_channels": 4, "out_channels": 4, "kernel_size": 3, "padding": 1}],
    "b": [{"type": "add", "inputs": ["a.1", "a"]},
          {"type": "relu"},
          {"type": "conv2d", "in_channels": 4, "out_channels": 3, "kernel_size": [2, 3], "stride": [2, 1],
           "padding": [0, 1]},
          {"type": "conv_transpose2d", "in_channels": 3, "out_channels": 2, "kernel_size": [2, 1],
           "stride": [2, 1]}],
    "c": [{"type": "concat", "inputs": ["b", "a.1", "input"]},
          {"type": "relu"},
          {"type": "conv2d", "in_channels": 8, "out_channels": 2, "kernel_size": 3, "padding": 1},
          {"type": "sigmoid"}],
}


# Concatenations of two, as training reads them where they lie: a
# transposed convolution's (u) with an input read again before it (b, by g),
# a conv2d's (c) with an input read again after it (a, by e: this one is
# copied in training), and a conv2d's of the network input (out).
JOINS_SPEC = {
    "input": [1, 8, 8],
    "a": [{"type": "conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3, "padding": 1},
          {"type": "relu"}],
    "b": [{"type": "conv2d", "in_channels": 4, "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": 1},
          {"type": "relu"}],
    "g": [{"type": "conv2d", "in_channels": 4, "out_channels": 4, "kernel_size": 3, "padding": 1},
          {"type": "relu"}],
    "u": [{"type": "concat", "inputs": ["g", "b"]},
          {"type": "conv_transpose2d", "in_channels": 8, "out_channels": 4, "kernel_size": 3, "stride": 2,
           "padding": 1, "output_padding": 1},
          {"type": "relu"}],
    "c": [{"type": "concat", "inputs": ["u", "a"]},
          {"type": "conv2d", "in_channels": 8, "out_channels": 4, "kernel_size": 3, "padding": 1}],
    "e": [{"type": "add", "inputs": ["c", "a"]},
          {"type": "relu"}],
    "out": [{"type": "concat", "inputs": ["e", "input"]},
            {"type": "conv2d", "in_channels": 5, "out_channels": 1, "kernel_size": 3, "padding": 1},
            {"type": "sigmoid"}],
}


def train_steps_of(spec, seed, batch, gen):
    """Two training steps of SpecNet(spec) as make_train_steps takes them,
    on noisy images clamped to [0, 1]: (the tensors, the initial state)."""
    torch.manual_seed(seed)
    model = SpecNet(spec)
    tensors = two_adam_steps(model, batch, model.input_shape, gen, clamp=True)
    init = {k[len("init."):]: v for k, v in tensors.items() if k.startswith("init.")}
    return tensors, init


def make_train_steps_unet(out_dir, gen):
    """make_train_steps for the U-Net, and its initial weights as a user's
    file with the architecture in its metadata."""
    tensors, init = train_steps_of(UNET_SPEC, 4321, 8, gen)
    save_safetensors(os.path.join(out_dir, "train_steps_unet.safetensors"), tensors,
                     {"architecture": UNET_SPEC, "lr": 1e-3, "weight_decay": 1e-5, "batch": 8})
    save_safetensors(os.path.join(out_dir, "unet_init.safetensors"), init, {"architecture": UNET_SPEC})


def make_train_steps_graph(out_dir, gen):
    tensors, _ = train_steps_of(GRAPH_SPEC, 5678, 4, gen)
    save_safetensors(os.path.join(out_dir, "train_steps_graph.safetensors"), tensors,
                     {"architecture": json.dumps(GRAPH_SPEC, separators=(",", ":")),
                      "lr": 1e-3, "weight_decay": 1e-5, "batch": 4})


def make_train_steps_joins(out_dir, gen):
    tensors, _ = train_steps_of(JOINS_SPEC, 8765, 4, gen)
    save_safetensors(os.path.join(out_dir, "train_steps_joins.safetensors"), tensors,
                     {"architecture": json.dumps(JOINS_SPEC, separators=(",", ":")),
                      "lr": 1e-3, "weight_decay": 1e-5, "batch": 4})


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/ref"
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(20261128)
    torch.manual_seed(20261128)
    for case in LAYER_CASES:
        make_layer_case(out_dir, case, gen)
    make_activations(out_dir, gen)
    make_adam(out_dir, gen)
    make_train_steps(out_dir, gen)
    # Later fixtures draw from generators of their own, so that adding one
    # leaves every file above byte for byte as it was.
    make_graph_ops(out_dir, torch.Generator().manual_seed(20261130))
    make_train_steps_unet(out_dir, torch.Generator().manual_seed(20261131))
    make_train_steps_graph(out_dir, torch.Generator().manual_seed(20261132))
    make_train_steps_joins(out_dir, torch.Generator().manual_seed(20261133))
    print(f"wrote fixtures to {out_dir}")


if __name__ == "__main__":
    main()
