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
As for network files (:mod:`bnn_toroid.network.files`), format version 2 hashes the
arrays and every metadata entry, so an edited spec or normalisation is refused; version
1 files (arrays hashed only) are still read.
"""
from __future__ import annotations

import numpy as np
import torch

from . import nn as bnn
from ._files import ArchiveError, read_npz, sha256_content, write_npz
from .network import BinaryNetwork
from .network import load as load_network
from .network.files import NetworkFileError, check_digest, check_save_args, check_version

FORMAT = "bnn_toroid.TorchModel"
FORMAT_VERSION = 2
EXPECTED = "a bnn_toroid torch model file (.npz written by bnn_toroid.io.save_model)"
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
    """Write a torch model's ``state_dict`` and its spec to ``path`` (``.npz``, format
    version 2), atomically; the save-target rules of :func:`bnn_toroid.save` apply."""
    check_save_args("save_model", model, path, kind=torch.nn.Module)
    if not isinstance(spec, str):
        raise TypeError(f"save_model: spec must be a model spec string such as 'mlp:784-512-10', "
                        f"got {type(spec).__name__}")
    arrays = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    norm = None
    if isinstance(model[0], bnn.Normalize) if isinstance(model, torch.nn.Sequential) and len(model) else False:
        norm = [model[0].mean.tolist(), model[0].std.tolist()]
    meta = {**(extra or {}), "format": FORMAT, "format_version": FORMAT_VERSION, "spec": spec,
            "input_norm": norm}
    meta["sha256"] = sha256_content(arrays, meta)
    return write_npz(path, arrays, meta, "save_model")


def load_model(path) -> torch.nn.Module:
    """Read a model written by :func:`save_model` (eval mode), checking its SHA-256 and
    that its arrays fit the spec; any failure is a :class:`NetworkFileError`."""
    try:
        arrays, meta = read_npz(path, EXPECTED)
    except ArchiveError as e:
        raise NetworkFileError(str(e)) from None
    if meta is None:
        raise NetworkFileError(f"{path}: this is a .npz archive without a readable 'meta' entry, "
                               f"not a bnn_toroid torch model file; expected {EXPECTED}")
    fmt = meta.get("format")
    if fmt == "bnn_toroid.BinaryNetwork":
        raise NetworkFileError(f"{path}: this is a frozen binary network file (format {fmt!r}); "
                               f"expected {EXPECTED}. Read it with bnn_toroid.load or io.load_any")
    if fmt != FORMAT:
        raise NetworkFileError(f"{path}: format {fmt!r}; expected {FORMAT!r}, i.e. {EXPECTED}")
    check_version(path, meta.get("format_version"), FORMAT_VERSION)
    check_digest(path, arrays, meta)
    spec, norm = meta.get("spec"), meta.get("input_norm")
    if norm is not None and not (isinstance(norm, list) and len(norm) == 2 and all(
            isinstance(v, list) and v and all(type(e) in (int, float) for e in v) for v in norm)):
        raise NetworkFileError(f"{path}: input_norm is {norm!r}; expected null or [means, stds]")
    # the spec's size, counted on torch's meta device (nothing allocated), must be what
    # the arrays hold: a spec edited to 'mlp:10000000-10000000-10' is refused, not built
    try:
        with torch.device("meta"):
            skeleton = build_model(spec)
    except (SpecError, ValueError, TypeError) as e:
        raise NetworkFileError(f"{path}: {e}") from None
    need = sum(t.numel() for t in skeleton.state_dict().values()) + (
        len(norm[0]) + len(norm[1]) if norm else 0)
    held = sum(a.size for a in arrays.values())
    if need != held:
        raise NetworkFileError(f"{path}: spec {spec!r} has {need} parameters and buffers but the "
                               f"arrays hold {held} values; the file is inconsistent")
    try:
        model = build_model(spec, input_norm=tuple(norm) if norm else None)
        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
    except (SpecError, ValueError, TypeError, RuntimeError) as e:
        # torch reports missing, unexpected and mis-shaped tensors as RuntimeError
        raise NetworkFileError(f"{path}: inconsistent torch model file: "
                               f"{str(e).splitlines()[0]}") from None
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
    """:meth:`BinaryNetwork.save` for a frozen network, :func:`save_model` (with ``spec``)
    for a torch model."""
    if isinstance(net, BinaryNetwork):
        return net.save(path)
    check_save_args("save_any", net, path, kind=(BinaryNetwork, torch.nn.Module))
    if spec is None:
        raise ValueError("save_any: a torch model needs its spec string to be saved")
    return save_model(net, path, spec)
