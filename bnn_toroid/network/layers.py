"""The layers of a frozen binary network, in integer threshold form (docs/methods.md, "Integer threshold form").

A hidden unit with ±1 weights ``w`` and ±1 (or real) input ``x`` outputs

    +1  iff  h = w·x >= T,

with ``T`` an integer when ``x`` is binary (``h`` is then an integer of the parity of the
fan-in). Any BatchNorm, bias or scale in front of ``sign`` folds into ``T`` and, when the
affine map is decreasing, into a flip of the weight row (:func:`fold_sign_affine`).
The last layer has no threshold: its logits are ``out_scale * h + out_bias``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class NetworkError(ValueError):
    """A network's parameters or architecture are invalid."""


class _Frozen:
    """Immutable once built. A network keeps data derived from its layers (packed
    weights, unpacked first-layer copies), so a layer edited in place would leave them
    stale: ``predict`` would answer for the old weights while ``save`` wrote the new
    ones. Fields are set only while ``__init__`` runs; afterwards assigning a field
    raises ``AttributeError`` and the arrays are read-only (numpy raises ``ValueError:
    assignment destination is read-only``). Build a new layer instead, e.g. with
    ``dataclasses.replace(layer, weights=w)``."""

    _frozen = False

    def __setattr__(self, name, value):
        if self._frozen:
            raise AttributeError(
                f"{type(self).__name__}.{name}: a layer is immutable once built (a network keeps "
                f"data derived from it); build a new one, e.g. dataclasses.replace(layer, {name}=...)")
        object.__setattr__(self, name, value)

    def _freeze(self):
        for v in vars(self).values():
            if isinstance(v, np.ndarray):
                v.flags.writeable = False
        object.__setattr__(self, "_frozen", True)

    def __setstate__(self, state):
        # unpickled arrays come back writable: freeze them again
        self.__dict__.update(state)
        self._freeze()


def as_pm1(weights, what: str) -> np.ndarray:
    """``weights`` as an int8 array of ±1; anything else raises."""
    w = np.asarray(weights)
    if w.dtype == np.bool_ or not np.issubdtype(w.dtype, np.number):
        raise NetworkError(f"{what}: expected ±1 weights, got dtype {w.dtype}")
    bad = (w != 1) & (w != -1)
    if bad.any():
        raise NetworkError(f"{what}: expected only +1/-1 weights, found {w[bad].flat[0]!r} "
                           f"({int(bad.sum())} of {w.size} entries are not ±1)")
    return w.astype(np.int8)


def _vector(v, n, what, dtype=np.float64, default=None):
    if v is None:
        return None if default is None else np.full(n, default, dtype)
    v = np.asarray(v)
    if v.shape != (n,):
        raise NetworkError(f"{what}: expected shape ({n},), got {v.shape}")
    if np.issubdtype(v.dtype, np.floating) and np.isnan(v).any():
        raise NetworkError(f"{what}: contains NaN")
    return v.astype(dtype)


def _threshold(t, n, what):
    """int64 thresholds, or float64 (allowed only on real-valued input; checked later)."""
    t = np.asarray(t)
    if t.shape != (n,):
        raise NetworkError(f"{what}: expected {n} thresholds, got shape {t.shape}")
    if np.issubdtype(t.dtype, np.integer):
        return t.astype(np.int64)
    if not np.issubdtype(t.dtype, np.floating):
        raise NetworkError(f"{what}: thresholds must be numbers, got dtype {t.dtype}")
    if np.isnan(t).any():
        raise NetworkError(f"{what}: thresholds contain NaN")
    return t.astype(np.float64)


@dataclass(eq=False)
class BatchNormRecord(_Frozen):
    r"""What a hidden layer's BatchNorm leaves behind once folded into its threshold: enough
    to re-estimate the threshold from new statistics (:func:`bnn_toroid.recalibrate`).

    A unit with BatchNorm ``(γ, β, ε)`` before its sign fires iff
    ``γ (h − μ) / sqrt(σ² + ε) + β ≥ 0``. In the folded frame (rows flipped where
    ``γ < 0``, so ``h_f = sign(γ) h``) that is

    .. math:: h_f \ge \mu_f - \sqrt{\sigma^2 + \varepsilon_h}\,\rho, \qquad \rho = \beta / |\gamma|,

    with ``μ_f``, ``σ²`` the mean and variance of ``h_f`` over the data. ``ratio`` is
    ``ρ`` per unit (``±inf`` for ``γ = 0``: a constant unit), ``eps`` is ``ε`` in the units
    of the frozen layer's ``h`` (``ε·s²`` when an input scale ``s`` was folded into a first
    layer), and ``after_pool`` says the statistics are taken after the max-pool that
    follows a convolution (BatchNorm after MaxPool2d, as in the paper's conv nets).
    A sign reversal of a unit negates its ``ratio``; a permutation moves it with the unit.
    """

    ratio: np.ndarray
    eps: np.ndarray
    after_pool: bool = False

    def __post_init__(self):
        self.ratio = np.array(self.ratio, np.float64).reshape(-1)  # a copy: frozen below
        self.eps = np.broadcast_to(np.asarray(self.eps, np.float64), self.ratio.shape).copy()
        if np.isnan(self.ratio).any() or np.isnan(self.eps).any() or (self.eps < 0).any():
            raise NetworkError("BatchNormRecord: ratio must not be NaN and eps must be >= 0")
        self.after_pool = bool(self.after_pool)
        self._freeze()

    def take(self, perm, flip=None) -> "BatchNormRecord":
        """The record after reordering units by ``perm`` and reversing those in ``flip``."""
        r = self.ratio[perm].copy()
        if flip is not None:
            r[np.asarray(flip, bool)] *= -1
        return BatchNormRecord(r, self.eps[perm], self.after_pool)


def _check_bn(layer, n):
    if layer.bn is None:
        return
    if not isinstance(layer.bn, BatchNormRecord):
        raise NetworkError(f"{type(layer).__name__}.bn: expected a BatchNormRecord, got {type(layer.bn).__name__}")
    if layer.threshold is None:
        raise NetworkError(f"{type(layer).__name__}.bn: only a hidden layer (with thresholds) has a BatchNorm record")
    if layer.bn.ratio.shape != (n,):
        raise NetworkError(f"{type(layer).__name__}.bn: {layer.bn.ratio.size} ratios for {n} units")


@dataclass(eq=False)
class Dense(_Frozen):
    """Fully connected ±1 layer. ``weights`` (units, in_features); when the input is
    spatial (H, W, C), features are flattened in NHWC order (C fastest).

    Hidden: ``threshold`` (units,). Output: ``threshold=None`` and
    ``logits = out_scale * h + out_bias``. ``bn``: an optional :class:`BatchNormRecord`
    (it does not change the function; :func:`bnn_toroid.recalibrate` uses it).
    Immutable once built, like every layer (its arrays are read-only copies).
    """

    weights: np.ndarray
    threshold: np.ndarray | None = None
    out_scale: np.ndarray | None = None
    out_bias: np.ndarray | None = None
    bn: BatchNormRecord | None = None

    def __post_init__(self):
        self.weights = as_pm1(self.weights, "Dense.weights")
        if self.weights.ndim != 2:
            raise NetworkError(f"Dense.weights: expected 2 dims (units, in_features), got {self.weights.shape}")
        _finish(self, self.weights.shape[0])
        self._freeze()

    @property
    def units(self) -> int:
        return self.weights.shape[0]


@dataclass(eq=False)
class Conv2d(_Frozen):
    """±1 convolution. ``weights`` (filters, kh, kw, in_channels); ``padding`` 'valid' or
    TensorFlow 'same'; ``pad_value`` is larq's ``pad_values`` (0 or 1) on binary input, or
    any real value per channel for a first layer on real input."""

    weights: np.ndarray
    threshold: np.ndarray | None = None
    stride: tuple = (1, 1)
    padding: str = "valid"
    pad_value: object = 0
    out_scale: np.ndarray | None = None
    out_bias: np.ndarray | None = None
    bn: BatchNormRecord | None = None

    def __post_init__(self):
        self.weights = as_pm1(self.weights, "Conv2d.weights")
        if self.weights.ndim != 4:
            raise NetworkError("Conv2d.weights: expected 4 dims (filters, kh, kw, in_channels), "
                               f"got {self.weights.shape}")
        s = np.broadcast_to(np.asarray(self.stride, dtype=np.int64), (2,))
        if (s < 1).any():
            raise NetworkError(f"Conv2d.stride: must be >= 1, got {self.stride}")
        self.stride = (int(s[0]), int(s[1]))
        if self.padding not in ("valid", "same"):
            raise NetworkError(f"Conv2d.padding: expected 'valid' or 'same', got {self.padding!r}")
        pv = np.array(self.pad_value, dtype=np.float64)  # a copy: frozen below
        if np.isnan(pv).any():
            raise NetworkError("Conv2d.pad_value: contains NaN")
        self.pad_value = float(pv) if pv.ndim == 0 else pv
        _finish(self, self.weights.shape[0])
        self._freeze()

    @property
    def units(self) -> int:
        return self.weights.shape[0]


@dataclass(eq=False)
class MaxPool2d(_Frozen):
    """Max-pooling of the previous conv's ±1 outputs (``valid`` windows).

    ``min_channels`` marks channels pooled with min instead: a unit whose row was flipped
    to fold a negative BatchNorm scale placed *after* the pool, since
    ``sign(g(max h)) = min sign(g(h))`` for a decreasing g.
    """

    size: int = 2
    stride: int | None = None
    min_channels: np.ndarray | None = None

    def __post_init__(self):
        self.size = int(self.size)
        self.stride = self.size if self.stride is None else int(self.stride)
        if self.size < 1 or self.stride < 1:
            raise NetworkError(f"MaxPool2d: size and stride must be >= 1, got {self.size}, {self.stride}")
        if self.min_channels is not None:
            self.min_channels = np.array(self.min_channels, dtype=bool)  # a copy: frozen below
            if self.min_channels.ndim != 1:
                raise NetworkError("MaxPool2d.min_channels: expected a 1-D bool mask")
        self._freeze()


def _finish(layer, n):
    name = type(layer).__name__
    if layer.threshold is not None:
        layer.threshold = _threshold(layer.threshold, n, f"{name}.threshold")
        if layer.out_scale is not None or layer.out_bias is not None:
            raise NetworkError(f"{name}: a hidden layer (with thresholds) has no out_scale/out_bias")
    else:
        layer.out_scale = _vector(layer.out_scale, n, f"{name}.out_scale", default=1.0)
        layer.out_bias = _vector(layer.out_bias, n, f"{name}.out_bias", default=0.0)
    _check_bn(layer, n)


def fold_sign_affine(weights, a, b, integer: bool = True):
    r"""Fold ``y_k = sign(a_k h_k + b_k)``, ``h = W x``, into threshold form.

    .. math::
        a_k > 0:\ y_k = +1 \iff h_k \ge -b_k/a_k; \qquad
        a_k < 0:\ y_k = +1 \iff (-w_k)\cdot x \ge b_k/a_k

    With integer ``h`` (binary input) the bound is rounded up, ``T = ceil(·)``, which is
    exact (docs/methods.md, "Integer threshold form"). ``a_k = 0`` gives a constant unit:
    ``T = -(K+1)`` (always +1) when ``b_k >= 0``, else ``K+1`` (always -1).

    Args:
        weights: ±1 array, (units, ...) with fan-in K = prod of the other axes.
        a, b: per-unit affine (BatchNorm, bias and scales composed), shape (units,).
        integer: round the thresholds to int64 (binary input); else keep float64.

    Returns:
        (weights with flipped rows, thresholds, flipped mask).
    """
    w = as_pm1(weights, "fold_sign_affine")
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != (w.shape[0],) or b.shape != (w.shape[0],):
        raise NetworkError(f"fold_sign_affine: a and b need {w.shape[0]} values, got {a.shape}, {b.shape}")
    if np.isnan(a).any() or np.isnan(b).any():
        raise NetworkError("fold_sign_affine: affine parameters contain NaN")
    k = int(np.prod(w.shape[1:]))
    flipped = a < 0
    w = w.copy()
    w[flipped] *= -1
    # a h + b >= 0  <=>  sign(a) h >= -b/|a|: the same bound for both orientations.
    safe = np.where(a != 0, np.abs(a), 1.0)
    bound = -b / safe
    if integer:
        # |h| <= K, so clipping to ±(K+1) keeps every comparison and fits int64.
        t = np.clip(np.ceil(bound), -(k + 1), k + 1)
        t = np.where(a == 0, np.where(b >= 0, -(k + 1), k + 1), t).astype(np.int64)
    else:
        t = np.where(a == 0, np.where(b >= 0, -np.inf, np.inf), bound).astype(np.float64)
    return w, t, flipped
