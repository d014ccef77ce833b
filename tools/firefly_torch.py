#!/usr/bin/env python3
"""firefly_torch: a network exported by Firefly, rebuilt as torch.nn modules.

Firefly writes `ff.io.export(net, DIR, {format = "torch"})` (or
`firefly export CHECKPOINT --to torch DIR`) as two files:

  DIR/architecture.json   the module tree (format "firefly-torch-1")
  DIR/model.safetensors   the weights under torch's state_dict keys

This file needs only the Python standard library and torch (no
safetensors package, no Firefly):

  import firefly_torch
  net = firefly_torch.load("DIR")      # a torch.nn.Module in eval mode
  y = net(x)

  python3 tools/firefly_torch.py DIR   # prints the rebuilt network

Positional children are numbered from 0 as in torch.nn.Sequential, so the
state_dict keys are torch's ("0.weight", "3.f.0.bias"); residual blocks
are `Residual` modules (x + f(x)) holding their branch as `f`.
"""
import json
import os
import struct
import sys
from collections import OrderedDict

import torch
from torch import nn
import torch.nn.functional as F

FORMAT = "firefly-torch-1"
ARCH_FILE = "architecture.json"


class Residual(nn.Module):
    """x + f(x): the blocks Firefly inserts when it grows deeper."""

    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, x):
        return x + self.f(x)


class RBF(nn.Module):
    """exp(-x^2 / 2), an activation torch does not have."""

    def forward(self, x):
        return torch.exp(-0.5 * x * x)


class GlobalAvgPool(nn.Module):
    """N x C x H x W -> N x C (the mean over each map)."""

    def forward(self, x):
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def _pair(v):
    return tuple(v) if isinstance(v, list) else v


def _children(node):
    return OrderedDict((c["name"], build(c)) for c in node.get("children", []))


def _residual(node):
    kids = node.get("children", [])
    if len(kids) != 1 or kids[0]["name"] != "f":
        raise ValueError("firefly_torch: Residual %r must have one child named 'f'" % node["path"])
    return Residual(build(kids[0]))


_BUILDERS = {
    "Sequential": lambda n: nn.Sequential(_children(n)),
    "Residual": _residual,
    "Linear": lambda n: nn.Linear(n["in_features"], n["out_features"], bias=n["bias"]),
    "Conv2d": lambda n: nn.Conv2d(
        n["in_channels"], n["out_channels"], _pair(n["kernel_size"]), stride=_pair(n["stride"]),
        padding=_pair(n["padding"]), dilation=_pair(n["dilation"]), groups=n["groups"],
        bias=n["bias"]),
    "BatchNorm1d": lambda n: nn.BatchNorm1d(
        n["num_features"], eps=n["eps"], momentum=n["momentum"], affine=n["affine"],
        track_running_stats=n["track_running_stats"]),
    "BatchNorm2d": lambda n: nn.BatchNorm2d(
        n["num_features"], eps=n["eps"], momentum=n["momentum"], affine=n["affine"],
        track_running_stats=n["track_running_stats"]),
    "LayerNorm": lambda n: nn.LayerNorm(
        n["normalized_shape"], eps=n["eps"], elementwise_affine=n["elementwise_affine"]),
    "ReLU": lambda n: nn.ReLU(),
    "Tanh": lambda n: nn.Tanh(),
    "Sigmoid": lambda n: nn.Sigmoid(),
    "GELU": lambda n: nn.GELU(),
    "SiLU": lambda n: nn.SiLU(),
    "RBF": lambda n: RBF(),
    "LeakyReLU": lambda n: nn.LeakyReLU(n["negative_slope"]),
    "ELU": lambda n: nn.ELU(n["alpha"]),
    "Softplus": lambda n: nn.Softplus(n["beta"], n["threshold"]),
    "MaxPool2d": lambda n: nn.MaxPool2d(
        _pair(n["kernel_size"]), stride=_pair(n["stride"]), padding=_pair(n["padding"])),
    "AvgPool2d": lambda n: nn.AvgPool2d(
        _pair(n["kernel_size"]), stride=_pair(n["stride"]), padding=_pair(n["padding"]),
        count_include_pad=n["count_include_pad"]),
    "GlobalAvgPool": lambda n: GlobalAvgPool(),
    "Flatten": lambda n: nn.Flatten(n["start_dim"], n["end_dim"]),
    "Dropout": lambda n: nn.Dropout(n["p"]),
    "Identity": lambda n: nn.Identity(),
}


def build(node):
    """The torch module of one node of architecture.json (no weights)."""
    kind = node.get("type")
    if kind not in _BUILDERS:
        raise ValueError("firefly_torch: module %r has unknown type %r (known: %s)"
                         % (node.get("path"), kind, ", ".join(sorted(_BUILDERS))))
    return _BUILDERS[kind](node)


def read_safetensors(path):
    """{name: tensor} of an F32 safetensors file, read with the stdlib."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError("firefly_torch: %s is too short for a safetensors file" % path)
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        raise ValueError("firefly_torch: %s: header length %d beyond the file" % (path, n))
    header = json.loads(data[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise ValueError("firefly_torch: %s: tensor %r has dtype %s; only F32"
                             % (path, name, info["dtype"]))
        begin, end = info["data_offsets"]
        shape = info["shape"]
        count = 1
        for d in shape:
            count *= d
        if end - begin != 4 * count or base + end > len(data):
            raise ValueError("firefly_torch: %s: tensor %r has bad offsets" % (path, name))
        if count == 0:
            t = torch.zeros(shape)
        else:
            t = torch.frombuffer(bytearray(data[base + begin:base + end]), dtype=torch.float32)
            if sys.byteorder != "little":
                t = t.view(torch.int32).byteswap().view(torch.float32)  # pragma: no cover
            t = t.reshape(shape)
        out[name] = t
    return out


def load(directory):
    """The exported network in DIR as a torch.nn.Module, weights loaded, in eval mode."""
    with open(os.path.join(directory, ARCH_FILE), encoding="utf-8") as f:
        arch = json.load(f)
    if arch.get("format") != FORMAT:
        raise ValueError("firefly_torch: %s has format %r; this loader reads %r"
                         % (directory, arch.get("format"), FORMAT))
    model = build(arch["model"])
    state = read_safetensors(os.path.join(directory, arch["weights"]))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # num_batches_tracked only counts training steps; eval mode never reads it.
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError("firefly_torch: %s: weights do not match the architecture "
                         "(missing %s, unexpected %s)" % (directory, missing, unexpected))
    return model.eval()


def main(argv):
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print("usage: firefly_torch.py DIR   (a directory written by firefly export --to torch)")
        return 0 if len(argv) == 2 else 2
    model = load(argv[1])
    print(model)
    print("%d parameters" % sum(p.numel() for p in model.parameters()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
