"""The residual network file format: ``.npz`` arrays plus JSON metadata, never pickle.

A :class:`~.residual.ResidualBinaryNetwork` is written as one ``meta`` entry (UTF-8 JSON:
format ``bnn_toroid.ResidualBinaryNetwork``, version 1, input shape and layout, and the
operations as a list of specs, a :class:`~.residual_ops.Residual` holding ``body`` and
``shortcut`` lists) and one array per parameter, named after the operation's place:
``o3.body.0.weights``. Binary filters are stored packed along their input channels
(``uint64 (filters, kh, kw, n_words(C))``, bit 1 = -1, padding bits 0, as
:func:`bnn_toroid.kernels.pack_bits` writes them); real parameters as float64. The SHA-256
covers the arrays and the metadata (:func:`bnn_toroid._files.sha256_content`).

Writing is atomic (:func:`bnn_toroid._files.write_npz`); reading (:func:`load_residual`)
refuses a truncated, edited or inconsistent file with a
:class:`~.files.NetworkFileError` naming the entry and what was expected.
"""
from __future__ import annotations

import numpy as np

import bnn_toroid.kernels as K

from .._files import sha256_content, write_npz
from .files import NetworkFileError, check_save_args, check_version, _array, _ints
from .layers import NetworkError
from . import residual_ops as R
from .residual import ResidualBinaryNetwork

RESIDUAL_FORMAT = "bnn_toroid.ResidualBinaryNetwork"
RESIDUAL_FORMAT_VERSION = 1

__all__ = ["RESIDUAL_FORMAT", "RESIDUAL_FORMAT_VERSION", "save_residual", "load_residual"]

# per op type: its array fields (optional ones may be absent) and its JSON fields
_ARRAYS = {"RealConv": ("weights", "bias"), "BinaryConv": ("weights", "scale"),
           "Affine": ("scale", "shift"), "PReLU": ("slope",), "RealDense": ("weights", "bias")}
_FIELDS = {"RealConv": ("stride", "padding", "groups"),
           "BinaryConv": ("stride", "padding", "pad_value"),
           "MaxPool": ("size", "stride", "padding"), "AvgPool": ("size", "stride", "padding")}
_TYPES = {t.__name__: t for t in R.OPS}


def _jsonable(v):
    if isinstance(v, (tuple, list)):
        return [int(e) for e in v]
    return v if isinstance(v, str) else int(v)


def _encode_op(op, key, arrays):
    kind = type(op).__name__
    if isinstance(op, R.Residual):
        return {"type": kind,
                "body": [_encode_op(o, f"{key}.body.{j}", arrays) for j, o in enumerate(op.body)],
                "shortcut": [_encode_op(o, f"{key}.shortcut.{j}", arrays)
                             for j, o in enumerate(op.shortcut)]}
    spec = {"type": kind}
    for f in _FIELDS.get(kind, ()):
        spec[f] = _jsonable(getattr(op, f))
    for f in _ARRAYS.get(kind, ()):
        v = getattr(op, f)
        if v is None:
            continue
        if kind == "BinaryConv" and f == "weights":
            spec["shape"] = list(v.shape)
            v = K.pack_bits(v)
        arrays[f"{key}.{f}"] = np.asarray(v)
    return spec


def save_residual(net: ResidualBinaryNetwork, path):
    """Write ``net`` to ``path`` (``.npz``, module doc) atomically; returns the path. The
    save-target rules of :func:`bnn_toroid.save` apply (docs/interop.md, file safety)."""
    check_save_args("save", net, path, kind=ResidualBinaryNetwork)
    arrays = {}
    ops = [_encode_op(op, f"o{i}", arrays) for i, op in enumerate(net.ops)]
    meta = {"format": RESIDUAL_FORMAT, "format_version": RESIDUAL_FORMAT_VERSION,
            "input_shape": list(net.input_shape), "input_layout": net.input_layout,
            "ops": ops, "n_binary": net.n_binary}
    meta["sha256"] = sha256_content(arrays, meta)
    return write_npz(path, arrays, meta)


def _field(path, where, kind, f, v):
    if f == "padding":
        if v in ("valid", "same"):
            return v
        return _ints(path, f"{where} padding", v, 4, lo=0)
    if f == "pad_value":
        if v not in (0, 1) or type(v) is not int:
            raise NetworkFileError(f"{path}: {where} pad_value is {v!r}; expected 0 or 1")
        return v
    if f == "groups":
        if type(v) is not int or v < 1:
            raise NetworkFileError(f"{path}: {where} groups is {v!r}; expected an integer >= 1")
        return v
    return _ints(path, f"{where} {f}", v, 2)


def _decode_op(path, arrays, spec, key, used, depth=0):
    where = f"operation {key!r}"
    if not isinstance(spec, dict) or spec.get("type") not in _TYPES:
        raise NetworkFileError(f"{path}: {where} spec is {spec!r}; expected an object whose "
                               f"'type' is one of {sorted(_TYPES)}")
    kind = spec["type"]
    if kind == "Residual":
        parts = {}
        for part in ("body", "shortcut"):
            lst = spec.get(part)
            if not isinstance(lst, list) or depth:
                raise NetworkFileError(f"{path}: {where} {part} is {lst!r}; expected a list of "
                                       "operation specs (no Residual inside a Residual)")
            parts[part] = [_decode_op(path, arrays, s, f"{key}.{part}.{j}", used, depth + 1)
                           for j, s in enumerate(lst)]
        return R.Residual(tuple(parts["body"]), tuple(parts["shortcut"]))
    kw = {f: _field(path, where, kind, f, spec.get(f)) for f in _FIELDS.get(kind, ())}
    for i, f in enumerate(_ARRAYS.get(kind, ())):
        name = f"{key}.{f}"
        required = i == 0 or kind in ("Affine",)
        if name not in arrays:
            if required:
                raise NetworkFileError(f"{path}: incomplete network file: array {name!r} is missing")
            continue
        used.add(name)
        if kind == "BinaryConv" and f == "weights":
            shape = _ints(path, f"{where} shape", spec.get("shape"), 4)
            packed = _array(path, arrays, name, "u", 4)
            want = tuple(shape[:3]) + (K.n_words(shape[3]),)
            if packed.dtype != np.uint64 or packed.shape != want:
                raise NetworkFileError(f"{path}: array {name!r} is {packed.dtype} {packed.shape}; "
                                       f"filters of shape {list(shape)} need uint64 {want}")
            spare = shape[3] % K.WORD
            if spare and (packed[..., -1] >> np.uint64(spare)).any():
                raise NetworkFileError(f"{path}: array {name!r} has padding bits set (past "
                                       f"{shape[3]} channels); expected 0")
            kw[f] = K.unpack_bits(packed, shape[3])
        else:
            kw[f] = _array(path, arrays, name, "f")
    return _TYPES[kind](**kw)


def load_residual(path, arrays, meta) -> ResidualBinaryNetwork:
    """The network of a residual file already opened (arrays, meta) by :func:`~.files.load`."""
    check_version(path, meta.get("format_version"), RESIDUAL_FORMAT_VERSION)
    digest = sha256_content(arrays, meta)
    if digest != meta.get("sha256"):
        raise NetworkFileError(f"{path}: SHA-256 mismatch over the arrays and metadata (file "
                               f"{digest[:12]}…, recorded {str(meta.get('sha256'))[:12]}…); the "
                               "file was modified or damaged")
    layout = meta.get("input_layout")
    if layout not in ("NHWC", "NCHW"):
        raise NetworkFileError(f"{path}: input_layout is {layout!r}; expected 'NHWC' or 'NCHW'")
    shape = _ints(path, "input_shape", meta.get("input_shape"), 3)
    specs = meta.get("ops")
    if not isinstance(specs, list) or not specs:
        raise NetworkFileError(f"{path}: ops is {specs!r}; expected a non-empty list of "
                               "operation specs")
    used = set()
    try:
        ops = [_decode_op(path, arrays, s, f"o{i}", used) for i, s in enumerate(specs)]
        net = ResidualBinaryNetwork(ops, shape, layout)
    except NetworkFileError:
        raise
    except (NetworkError, ValueError, TypeError) as e:
        raise NetworkFileError(f"{path}: inconsistent network file: {e}") from None
    extra = sorted(set(arrays) - used)
    if extra:
        raise NetworkFileError(f"{path}: arrays {extra[:4]} belong to no operation; the file "
                               "is inconsistent")
    if meta.get("n_binary") != net.n_binary:
        raise NetworkFileError(f"{path}: n_binary is {meta.get('n_binary')!r} but the operations "
                               f"hold {net.n_binary} binary weights; the file is inconsistent")
    return net
