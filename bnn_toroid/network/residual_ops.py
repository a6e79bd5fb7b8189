r"""The operations of a residual binary network (docs/methods.md, "Residual binary networks").

A residual binary network carries a real-valued *stream* (an NHWC tensor) from a
real-valued stem to a real-valued head. Its binary parts are :class:`BinaryConv`
operations: they read ``sign(x)`` of the stream (``sign(0) = +1``, larq's convention),
convolve it with ±1 filters (an exact integer per output, the XNOR-popcount of
Hubara et al. 2016), and hand ``scale_f · h_f`` back to the real stream. Everything
else is real-valued and runs in floating point. :class:`Residual` adds a body to a
shortcut: Bi-Real Net (Liu et al., ECCV 2018) adds every binary convolution to the
stream; QuickNet (Bannink et al., MLSys 2021, larq-zoo) does the same with a ReLU and
BatchNorm in the body and real-valued transition blocks between stages.

Every operation is immutable once built and validates its parameters; its ``out_channels``
and :meth:`out_shape` say what it writes, so a network checks its shapes once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .layers import NetworkError, _Frozen, as_pm1

__all__ = ["RealConv", "BinaryConv", "Affine", "ReLU", "PReLU", "MaxPool", "AvgPool",
           "GlobalAvgPool", "RealDense", "Residual", "OPS", "same_pads", "resolve_pads"]


def same_pads(size: int, k: int, stride: int) -> tuple:
    """TensorFlow's ``same`` padding of one axis: ``(before, after)`` with the odd pixel
    after, so the output has ``ceil(size / stride)`` positions."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def resolve_pads(padding, h: int, w: int, kh: int, kw: int, sy: int, sx: int) -> tuple:
    """``(top, bottom, left, right)`` for ``padding`` = 'valid', 'same' or 4 integers."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        return same_pads(h, kh, sy) + same_pads(w, kw, sx)
    return tuple(padding)


def _check_padding(padding, what):
    if isinstance(padding, str):
        if padding not in ("valid", "same"):
            raise NetworkError(f"{what}.padding: expected 'valid', 'same' or 4 integers "
                               f"(top, bottom, left, right), got {padding!r}")
        return padding
    p = tuple(int(v) for v in np.asarray(padding).reshape(-1))
    if len(p) != 4 or min(p) < 0:
        raise NetworkError(f"{what}.padding: expected 4 integers >= 0 (top, bottom, left, "
                           f"right), got {padding!r}")
    return p


def _pair(v, what, name):
    s = np.broadcast_to(np.asarray(v, dtype=np.int64), (2,))
    if (s < 1).any():
        raise NetworkError(f"{what}.{name}: must be >= 1, got {v}")
    return int(s[0]), int(s[1])


def _floats(v, shape, what):
    a = np.array(v, dtype=np.float64)  # a copy: frozen afterwards
    if shape is not None and a.shape != tuple(shape):
        raise NetworkError(f"{what}: expected shape {tuple(shape)}, got {a.shape}")
    if not np.isfinite(a).all():
        raise NetworkError(f"{what}: contains NaN or infinity")
    return a


def _out_hw(h, w, kh, kw, sy, sx, padding):
    t, b, l, r = resolve_pads(padding, h, w, kh, kw, sy, sx)
    ho, wo = (h + t + b - kh) // sy + 1, (w + l + r - kw) // sx + 1
    return ho, wo


class _Op(_Frozen):
    def out_shape(self, shape: tuple) -> tuple:  # (H, W, C) or (C,) -> the same kinds
        raise NotImplementedError


@dataclass(eq=False)
class RealConv(_Op):
    """Real-valued convolution, NHWC: ``weights`` (filters, kh, kw, in_channels // groups),
    optional ``bias`` (filters,). ``groups`` = in_channels is a depthwise convolution."""

    weights: np.ndarray
    bias: np.ndarray | None = None
    stride: tuple = (1, 1)
    padding: object = "valid"
    groups: int = 1

    def __post_init__(self):
        self.weights = _floats(self.weights, None, "RealConv.weights")
        if self.weights.ndim != 4:
            raise NetworkError("RealConv.weights: expected 4 dims (filters, kh, kw, "
                               f"in_channels // groups), got {self.weights.shape}")
        f = self.weights.shape[0]
        self.bias = None if self.bias is None else _floats(self.bias, (f,), "RealConv.bias")
        self.stride = _pair(self.stride, "RealConv", "stride")
        self.padding = _check_padding(self.padding, "RealConv")
        self.groups = int(self.groups)
        if self.groups < 1 or f % self.groups:
            raise NetworkError(f"RealConv.groups: {self.groups} does not divide {f} filters")
        self._freeze()

    @property
    def out_channels(self) -> int:
        return self.weights.shape[0]

    def out_shape(self, shape):
        h, w, c = shape
        if c != self.weights.shape[3] * self.groups:
            raise NetworkError(f"RealConv: expects {self.weights.shape[3] * self.groups} input "
                               f"channels, gets {c}")
        return _out_hw(h, w, *self.weights.shape[1:3], *self.stride, self.padding) + (self.out_channels,)


@dataclass(eq=False)
class BinaryConv(_Op):
    r"""Binary convolution of the stream's signs: for output channel ``f``

    .. math:: y_f = \mathrm{scale}_f \sum_{dy,dx,c} w_{f,dy,dx,c}\,\mathrm{sign}(x_{\cdot+dy,\cdot+dx,c}),
       \qquad \mathrm{sign}(0) = +1,

    with ±1 ``weights`` (filters, kh, kw, in_channels); the sum is an exact integer.
    Padded taps read ``pad_value`` (0, or larq's ``pad_values=1``). ``scale`` (filters,)
    is the per-channel magnitude of larq's ``magnitude_aware_sign`` (XNOR-Net's α,
    Rastegari et al., ECCV 2016); ``None`` means 1.
    """

    weights: np.ndarray
    scale: np.ndarray | None = None
    stride: tuple = (1, 1)
    padding: object = "same"
    pad_value: int = 0

    def __post_init__(self):
        self.weights = as_pm1(self.weights, "BinaryConv.weights")
        if self.weights.ndim != 4:
            raise NetworkError("BinaryConv.weights: expected 4 dims (filters, kh, kw, "
                               f"in_channels), got {self.weights.shape}")
        f = self.weights.shape[0]
        self.scale = None if self.scale is None else _floats(self.scale, (f,), "BinaryConv.scale")
        self.stride = _pair(self.stride, "BinaryConv", "stride")
        self.padding = _check_padding(self.padding, "BinaryConv")
        if self.pad_value not in (0, 1):
            raise NetworkError(f"BinaryConv.pad_value: expected 0 or 1, got {self.pad_value!r}")
        self.pad_value = int(self.pad_value)
        self._freeze()

    @property
    def out_channels(self) -> int:
        return self.weights.shape[0]

    def out_shape(self, shape):
        h, w, c = shape
        if c != self.weights.shape[3]:
            raise NetworkError(f"BinaryConv: expects {self.weights.shape[3]} input channels, gets {c}")
        return _out_hw(h, w, *self.weights.shape[1:3], *self.stride, self.padding) + (self.out_channels,)


@dataclass(eq=False)
class Affine(_Op):
    """Per-channel ``y_c = scale_c x_c + shift_c`` (a folded BatchNorm)."""

    scale: np.ndarray
    shift: np.ndarray

    def __post_init__(self):
        self.scale = _floats(self.scale, None, "Affine.scale")
        if self.scale.ndim != 1:
            raise NetworkError(f"Affine.scale: expected 1 dim, got {self.scale.shape}")
        self.shift = _floats(self.shift, self.scale.shape, "Affine.shift")
        self._freeze()

    def out_shape(self, shape):
        if shape[-1] != self.scale.shape[0]:
            raise NetworkError(f"Affine: has {self.scale.shape[0]} channels, gets {shape[-1]}")
        return shape


@dataclass(eq=False)
class ReLU(_Op):
    """``max(x, 0)``."""

    def __post_init__(self):
        self._freeze()

    def out_shape(self, shape):
        return shape


@dataclass(eq=False)
class PReLU(_Op):
    """``x`` where ``x >= 0``, else ``slope_c x`` (He et al. 2015), per channel."""

    slope: np.ndarray

    def __post_init__(self):
        self.slope = _floats(self.slope, None, "PReLU.slope")
        if self.slope.ndim != 1:
            raise NetworkError(f"PReLU.slope: expected 1 dim, got {self.slope.shape}")
        self._freeze()

    def out_shape(self, shape):
        if shape[-1] != self.slope.shape[0]:
            raise NetworkError(f"PReLU: has {self.slope.shape[0]} channels, gets {shape[-1]}")
        return shape


@dataclass(eq=False)
class _Pool(_Op):
    size: tuple = (2, 2)
    stride: tuple | None = None
    padding: object = "valid"

    def __post_init__(self):
        name = type(self).__name__
        self.size = _pair(self.size, name, "size")
        self.stride = self.size if self.stride is None else _pair(self.stride, name, "stride")
        self.padding = _check_padding(self.padding, name)
        self._freeze()

    def out_shape(self, shape):
        h, w, c = shape
        return _out_hw(h, w, *self.size, *self.stride, self.padding) + (c,)


class MaxPool(_Pool):
    """Max over each window; padded taps never win (they read ``-inf``)."""


class AvgPool(_Pool):
    """Mean over each window's taps inside the map (padded taps are not counted, as in
    TensorFlow and ONNX's ``count_include_pad=0``)."""


@dataclass(eq=False)
class GlobalAvgPool(_Op):
    """Mean over all pixels: (H, W, C) -> (C,)."""

    def __post_init__(self):
        self._freeze()

    def out_shape(self, shape):
        if len(shape) != 3:
            raise NetworkError(f"GlobalAvgPool: expects an (H, W, C) map, gets {shape}")
        return (shape[2],)


@dataclass(eq=False)
class RealDense(_Op):
    """Real-valued ``y = W x + b`` on a flat input; ``weights`` (units, in_features)."""

    weights: np.ndarray
    bias: np.ndarray | None = None

    def __post_init__(self):
        self.weights = _floats(self.weights, None, "RealDense.weights")
        if self.weights.ndim != 2:
            raise NetworkError(f"RealDense.weights: expected 2 dims, got {self.weights.shape}")
        n = self.weights.shape[0]
        self.bias = None if self.bias is None else _floats(self.bias, (n,), "RealDense.bias")
        self._freeze()

    def out_shape(self, shape):
        k = int(np.prod(shape))  # a spatial map is read flattened in NHWC order
        if k != self.weights.shape[1]:
            raise NetworkError(f"RealDense: expects {self.weights.shape[1]} features, gets {k}")
        return (self.weights.shape[0],)


@dataclass(eq=False)
class Residual(_Op):
    """``body(x) + shortcut(x)``; an empty ``shortcut`` is the identity. Neither holds a
    :class:`Residual`."""

    body: tuple
    shortcut: tuple = ()

    def __post_init__(self):
        self.body, self.shortcut = tuple(self.body), tuple(self.shortcut)
        if not self.body:
            raise NetworkError("Residual.body: needs at least one operation")
        for part, ops in (("body", self.body), ("shortcut", self.shortcut)):
            for i, op in enumerate(ops):
                if isinstance(op, Residual) or not isinstance(op, OPS):
                    raise NetworkError(f"Residual.{part}[{i}]: expected one of "
                                       f"{[t.__name__ for t in OPS]}, got {type(op).__name__}")
        self._freeze()

    def out_shape(self, shape):
        b = shape
        for op in self.body:
            b = op.out_shape(b)
        s = shape
        for op in self.shortcut:
            s = op.out_shape(s)
        if b != s:
            raise NetworkError(f"Residual: body gives {b}, shortcut gives {s}; they must match")
        return b


OPS = (RealConv, BinaryConv, Affine, ReLU, PReLU, MaxPool, AvgPool, GlobalAvgPool, RealDense,
       Residual)
