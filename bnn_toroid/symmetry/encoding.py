"""The canonical byte encoding of a binary network, which :func:`.binary.fingerprint` hashes.

It is defined here, on its own, so that neither the network file format
(:mod:`bnn_toroid.network.files`) nor the kernels' packed layout
(:mod:`bnn_toroid.network.layout`) can change a fingerprint: both may evolve, this may
not (a change needs a new ``MAGIC`` and a note in docs/methods.md, "Fingerprint").

Encoding version 1. Primitives:

* *int*: a signed 64-bit integer, little-endian (8 bytes);
* *str*: its UTF-8 length as an int, then the bytes;
* *shape*: the number of axes as an int, then each size as an int;
* *bits* of a ±1 array: its shape, then its values in C order, value ``j`` as bit
  ``j mod 8`` (least significant first) of byte ``j // 8``, 1 for −1 (for a pool mask:
  1 for a min-pooled channel); the last byte is padded with 0 bits;
* *reals*: the shape, then float64 little-endian values in C order, ``-0.0`` written as
  ``0.0``;
* *thresholds*: the str ``"int64"`` then the shape and the values as little-endian int64,
  or the str ``"float64"`` then *reals*: by the array's dtype (binary layers always
  hold int64, a first layer on real input may hold either).

The encoding, in order:

1. ``MAGIC`` (``b"bnn_toroid.canonical/1\\n"``);
2. str input layout (``"flat"``, ``"NHWC"``, ``"NCHW"``), int binarise-input (0 or 1),
   the input shape as a shape;
3. input scale: int 0 when there is none, else int 1 and *reals*;
4. int number of layers, then per layer its str kind and fields:

   - ``"Dense"``: *bits* of the weights (units, fan-in);
   - ``"Conv2d"``: *bits* of the filters (F, kh, kw, C), int stride y, int stride x,
     str padding (``"valid"``, ``"same"``), *reals* pad value (scalar or per channel);
   - then, for either: str ``"threshold"`` and *thresholds*, or (the output layer) str
     ``"output"``, *reals* ``out_scale`` and *reals* ``out_bias``;
   - ``"MaxPool2d"``: int size, int stride, *bits* of ``min_channels`` over the input's
     channels (no mask: all 0).

BatchNorm records are left out: they do not change the function, so they are not part
of a network's symmetry class.
"""
from __future__ import annotations

import numpy as np

from ..network import BinaryNetwork, Conv2d, MaxPool2d

__all__ = ["MAGIC", "canonical_bytes"]

MAGIC = b"bnn_toroid.canonical/1\n"


def _int(v) -> bytes:
    return int(v).to_bytes(8, "little", signed=True)


def _str(s: str) -> bytes:
    b = s.encode("utf-8")
    return _int(len(b)) + b


def _shape(shape) -> bytes:
    return _int(len(shape)) + b"".join(_int(v) for v in shape)


def _bits(negative: np.ndarray) -> bytes:
    """``negative``: bool array, True where the value is −1 (or the channel min-pooled)."""
    negative = np.asarray(negative, bool)
    return _shape(negative.shape) + np.packbits(negative.reshape(-1), bitorder="little").tobytes()


def _reals(v) -> bytes:
    a = np.asarray(v, np.float64) + 0.0  # -0.0 + 0.0 is 0.0: one encoding per value
    return _shape(a.shape) + np.ascontiguousarray(a).astype("<f8").tobytes()


def _thresholds(t) -> bytes:
    t = np.asarray(t)
    if t.dtype.kind in "iu":
        return _str("int64") + _shape(t.shape) + t.astype("<i8").tobytes()
    return _str("float64") + _reals(t)


def canonical_bytes(net: BinaryNetwork) -> bytes:
    """``net`` in the canonical byte encoding (module doc), as it is: apply
    :func:`.binary.canonicalize` first to encode its symmetry class."""
    if not isinstance(net, BinaryNetwork):
        raise TypeError(f"canonical_bytes: expected a BinaryNetwork, got {type(net).__name__}")
    out = [MAGIC, _str(net.input_layout), _int(net.binarize_input), _shape(net.input_shape)]
    out.append(_int(0) if net.input_scale is None else _int(1) + _reals(net.input_scale))
    out.append(_int(len(net.layers)))
    for i, layer in enumerate(net.layers):
        out.append(_str(type(layer).__name__))
        if isinstance(layer, MaxPool2d):
            c = net.layer_input_shape(i)[-1]
            mask = np.zeros(c, bool) if layer.min_channels is None else layer.min_channels
            out += [_int(layer.size), _int(layer.stride), _bits(mask)]
            continue
        out.append(_bits(layer.weights < 0))
        if isinstance(layer, Conv2d):
            out += [_int(layer.stride[0]), _int(layer.stride[1]), _str(layer.padding),
                    _reals(layer.pad_value)]
        if layer.threshold is not None:
            out += [_str("threshold"), _thresholds(layer.threshold)]
        else:
            out += [_str("output"), _reals(layer.out_scale), _reals(layer.out_bias)]
    return b"".join(out)
