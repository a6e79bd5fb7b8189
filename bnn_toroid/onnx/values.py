"""The symbolic values the importer tracks per tensor, and how constants meet them.

A tensor of the graph is a numpy array (a constant) or one of these:

- :class:`_Act`: the real-valued network input (possibly rescaled and padded) or a ±1
  activation;
- :class:`_Lin`: the pre-activation ``v = a*h + b`` of a layer with a ±1 kernel;
- :class:`_SignPartial`, :class:`_SignShifted`: the halves of larq's
  ``Sign(Sign(x) + c)``; :class:`_Cmp`: ``x >= t`` before its ``Where``;
- :class:`_Softmax`: a final (Log)Softmax, dropped.

Their class names (less the underscore) appear in the importer's error messages, which
is why they keep them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .common import OnnxImportError, check_elements, describe


class _Sized:
    """Every symbolic tensor's shape is checked when set (padding and convolutions derive
    new shapes from attributes): arrays of that shape are allocated later."""

    def __setattr__(self, name, value):
        if name == "shape":
            check_elements(value, "a tensor of the graph")
        object.__setattr__(self, name, value)


@dataclass
class _Act(_Sized):
    """A ±1 activation (``binary``) or the real-valued network input (not ``binary``).

    ``shape`` and ``axes`` describe the physical non-batch axes (``axes`` are role names:
    ``"C"``, ``"H"``, ``"W"`` after a conv; ``"i0".."i2"`` for the input's own axes;
    ``("F",)`` when flat). ``flat_from`` keeps ``(axes, shape)`` of the spatial tensor a flat
    one was flattened from. ``neg`` (binary) marks elements stored negated; ``scale`` and
    ``offset`` (input) say the tensor is ``x*scale + offset`` elementwise. ``pad`` is a
    pending ``Pad`` (per physical axis ``(begin, end)``); ``pad_raw`` is the value of the
    padded pixels in raw input units (the file's padded value is ``scale*pad_raw + offset``),
    per position of the unpadded tensor (constant along the padded axes).
    The arrays have the unpadded shape; ``shape`` is the padded one.
    """

    binary: bool
    shape: tuple
    axes: tuple
    flat_from: tuple | None = None
    neg: np.ndarray | None = None
    scale: np.ndarray | None = None
    offset: np.ndarray | None = None
    pad: list | None = None
    pad_raw: np.ndarray | None = None
    from_input: bool = True  # binary activation made directly from the network input


@dataclass
class _Lin(_Sized):
    """Pre-activation ``v = a*h + b`` of a linear layer with a ±1 kernel (``h = w . x``)."""

    kind: str  # "dense" | "conv"
    weights: np.ndarray  # int8 (units, F) or (filters, kh, kw, c)
    a: np.ndarray
    b: np.ndarray
    integer: bool  # the layer's input is binary
    shape: tuple
    axes: tuple
    node: str
    stride: tuple = (1, 1)
    padding: str = "valid"
    pad_value: Any = 0
    flat_from: tuple | None = None
    pools: list = field(default_factory=list)  # (size, stride, sign of a at the pool)


@dataclass
class _SignPartial:
    """Output of ONNX ``Sign`` (values -1, 0, +1): only valid as the first half of larq's
    ``Sign(Sign(x) + c)`` with ``0 < c < 1``."""

    src: Any
    node: str


@dataclass
class _SignShifted:
    """``Sign(x) + c`` with ``0 < c < 1``: the next ``Sign`` makes it larq's sign of ``x``."""

    src: Any
    node: str


@dataclass
class _Cmp:
    """Boolean ``src >= thr`` (``ge``) or ``src < thr`` (not ``ge``)."""

    src: Any
    thr: np.ndarray
    ge: bool
    node: str


@dataclass
class _Softmax:
    """A final (Log)Softmax over the logits: dropped with a warning."""

    src: Any
    node: Any


def is_padded(x) -> bool:
    """Whether ``x`` is an activation with a pending nonzero ``Pad``."""
    return isinstance(x, _Act) and x.pad is not None and any(p != (0, 0) for p in x.pad)


def broadcast(value_shape, c, node):
    """Broadcast a constant against ``(N, *value_shape)``; return it as value_shape."""
    c = np.asarray(c, dtype=np.float64)
    full_rank = len(value_shape) + 1
    if c.ndim > full_rank:
        raise OnnxImportError(f"{describe(node)}: constant of shape {c.shape} has more axes "
                              f"than the tensor (N, {', '.join(map(str, value_shape))})")
    if c.ndim == full_rank:
        if c.shape[0] != 1:
            raise OnnxImportError(f"{describe(node)}: constant varies along the batch axis")
        c = c[0]
    try:
        return np.broadcast_to(c, value_shape).copy()
    except ValueError:
        raise OnnxImportError(
            f"{describe(node)}: constant of shape {c.shape} does not broadcast against "
            f"a tensor of shape (N, {', '.join(map(str, value_shape))})") from None


def per_unit(lin: _Lin, c, node):
    """A constant as one value per unit of ``lin`` (error if it varies within a unit)."""
    full = broadcast(lin.shape, c, node)
    axes, shape = lin.axes, lin.shape
    if axes == ("F",) and lin.flat_from is not None:
        axes, shape = lin.flat_from
        full = full.reshape(shape)
    ch = "F" if axes == ("F",) else "C"
    ax = axes.index(ch)
    per = np.moveaxis(full, ax, 0).reshape(full.shape[ax], -1)
    if not np.all(per == per[:, :1]):
        raise OnnxImportError(
            f"{describe(node)}: constant is not one value per unit/channel; cannot fold "
            "it into a threshold")
    return per[:, 0].copy()
