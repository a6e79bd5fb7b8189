"""Model specs and files for torch models (binary networks have their own format in
:mod:`bnn_toroid.network.files`).

A *spec* names a model in one string, as the command line takes it::

    bmlp:784-1001-1001-1001-10      binary MLP (BatchNorm before each sign)
    bconvnet:1x28x28                the paper's binary conv net
    mlp:784-512-512-10[:bn]         real-valued ReLU MLP
    lenet:1x28x28[:bn]              real-valued LeNet
    committee:1001-101              binary committee machine (binarised input, H hidden units,
                                    output weights fixed to +1)

Torch weights are written as ``.npz`` arrays (the ``state_dict``) with JSON metadata (the
spec, the input normalisation and a SHA-256), atomically, and read back without pickle.
"""
from __future__ import annotations

import numpy as np
import torch

from . import nn as bnn
from ._files import ArchiveError, read_npz, sha256_arrays, write_npz
from .network import BinaryNetwork
from .network import load as load_network
from .network.files import NetworkFileError

FORMAT = "bnn_toroid.TorchModel"
FORMAT_VERSION = 1
KINDS = ("bmlp", "bconvnet", "mlp", "lenet", "committee")


class SpecError(ValueError):
    """A model spec string is malformed."""


def _dims(text, sep, what, spec):
    try:
        dims = [int(v) for v in text.split(sep)]
    except ValueError:
        raise SpecError(f"model spec {spec!r}: {what} must be integers separated by {sep!r}, "
                        f"got {text!r}") from None
    if not dims or min(dims) < 1:
        raise SpecError(f"model spec {spec!r}: {what} must be positive")
    return dims


def build_model(spec: str, input_norm=None) -> torch.nn.Module:
    """A fresh torch model from a spec string (see the module docstring)."""
    if not isinstance(spec, str) or ":" not in spec and spec not in ("bconvnet", "lenet"):
        raise SpecError(f"model spec {spec!r}: expected KIND:SHAPE with KIND one of {KINDS}, "
                        "e.g. 'bmlp:784-1001-10' or 'lenet:1x28x28'")
    parts = spec.split(":")
    kind, args, flags = parts[0], parts[1] if len(parts) > 1 else "", set(parts[2:])
    unknown = flags - {"bn", "nobn"}
    if unknown:
        raise SpecError(f"model spec {spec!r}: unknown option(s) {sorted(unknown)}; expected 'bn' or 'nobn'")
    if kind == "bmlp":
        return bnn.BinaryMLP(_dims(args, "-", "layer widths", spec), batchnorm="nobn" not in flags,
                             input_norm=input_norm)
    if kind == "mlp":
        return bnn.MLP(_dims(args, "-", "layer widths", spec), batchnorm="bn" in flags, input_norm=input_norm)
    if kind in ("bconvnet", "lenet"):
        shape = _dims(args or "1x28x28", "x", "input shape CxHxW", spec)
        if len(shape) != 3:
            raise SpecError(f"model spec {spec!r}: input shape must be CxHxW")
        if kind == "lenet":
            return bnn.LeNet(shape, batchnorm="bn" in flags, input_norm=input_norm)
        return bnn.BinaryConvNet(shape, batchnorm="nobn" not in flags, input_norm=input_norm)
    if kind == "committee":
        dims = _dims(args, "-", "input and hidden sizes", spec)
        if len(dims) != 2:
            raise SpecError(f"model spec {spec!r}: committee takes N-H (inputs, hidden units)")
        return bnn.CommitteeMachine(dims[0], dims[1])
    raise SpecError(f"model spec {spec!r}: unknown kind {kind!r}; expected one of {KINDS}")


def is_binary_spec(spec: str) -> bool:
    return spec.split(":")[0] in ("bmlp", "bconvnet", "committee")


def save_model(model: torch.nn.Module, path, spec: str, extra: dict | None = None):
    """Write a torch model's ``state_dict`` and its spec to ``path`` (``.npz``), atomically."""
    arrays = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    norm = None
    if isinstance(model[0], bnn.Normalize) if isinstance(model, torch.nn.Sequential) and len(model) else False:
        norm = [model[0].mean.tolist(), model[0].std.tolist()]
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "spec": spec, "input_norm": norm,
            "sha256": sha256_arrays(arrays), **(extra or {})}
    return write_npz(path, arrays, meta)


def load_model(path) -> torch.nn.Module:
    """Read a model written by :func:`save_model` (eval mode), checking its SHA-256."""
    try:
        arrays, meta = read_npz(path)
    except ArchiveError as e:
        raise NetworkFileError(str(e)) from None
    meta = meta or {}
    if meta.get("format") != FORMAT:
        raise NetworkFileError(f"{path}: not a bnn_toroid torch model file (format {meta.get('format')!r})")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise NetworkFileError(f"{path}: format version {meta['format_version']} is newer than this "
                               f"bnn_toroid reads ({FORMAT_VERSION}); upgrade bnn_toroid")
    if sha256_arrays(arrays) != meta.get("sha256"):
        raise NetworkFileError(f"{path}: SHA-256 mismatch; the file was modified or damaged")
    norm = meta.get("input_norm")
    model = build_model(meta["spec"], input_norm=tuple(norm) if norm else None)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
    return model.eval()


def load_any(path):
    """A network file of either kind: a frozen :class:`BinaryNetwork` or a torch model."""
    try:
        return load_network(path)
    except NetworkFileError as first:
        try:
            return load_model(path)
        except NetworkFileError:
            raise first from None


def save_any(net, path, spec: str | None = None):
    if isinstance(net, BinaryNetwork):
        return net.save(path)
    if spec is None:
        raise ValueError("save_any: a torch model needs its spec string to be saved")
    return save_model(net, path, spec)
