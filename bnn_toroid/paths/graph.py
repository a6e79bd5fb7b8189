r"""Paths between traced (residual) real-valued networks: linear, geodesic, single bend.

Pittorino et al., "Deep Networks on Toroids", ICML 2022 (arXiv 2202.03038): mode
connectivity along linear, geodesic and single-bend paths, on the toroid of
:mod:`bnn_toroid.symmetry.graph`; docs/methods.md, "Residual networks (real-valued)".
:func:`bnn_toroid.paths.continuous.linear`, ``geodesic`` and ``single_bend`` send every
torch model that is not an ``nn.Sequential`` here, with the same arguments.

**BatchNorm along a path**, option ``bn``. A residual network keeps its BatchNorm (the
stream's scale has no closed-form section once BN is folded away, docs/methods.md):

- ``"fold"`` (default, the name shared with chains): the running statistics are
  interpolated linearly with the parameters. Endpoints are reproduced exactly; inner
  points use statistics that no data produced.
- ``"recompute"``: at every point the running statistics are reset and recomputed on
  ``bn_data`` (default: the data given to :meth:`errors`), as mode-connectivity studies
  do (Garipov et al. 2018). Endpoints then match the originals as far as their stored
  statistics matched the data.
"""
from __future__ import annotations

import copy

import numpy as np
from torch import nn

from bnn_toroid.geometry.graph import interpolate_models
from bnn_toroid.network.continuous import BATCHNORM_TYPES, as_tensors, misclassified, model_dtype
from bnn_toroid.network.graph import check_compatible, copy_model, parse
from bnn_toroid.paths.base import Path
from bnn_toroid.symmetry.graph import (
    aligned_models, find_permutations, normalize_model, normalized_model, permute_space,
)

__all__ = ["GraphPath", "linear", "geodesic", "single_bend"]


class GraphPath(Path):
    """A path of segments between traced models of one architecture, each linear
    (``"lerp"``) or per sphere along great circles (``"slerp"``); ``fractions`` over
    [0, 1], points built on demand by :meth:`point`."""

    def __init__(self, g, segments, fractions, kind, dtype, bn="fold", bn_data=None,
                 batch_size=1024):
        self._g = g
        self._segments = segments  # (model_a, model_b, mode, x0, x1), float64 copies
        self.fractions = np.asarray(fractions, dtype=np.float64)
        self.kind = kind
        self.bn = bn
        self.bn_data = bn_data
        self.batch_size = batch_size
        self._dtype = dtype

    def __repr__(self):
        return f"GraphPath(kind={self.kind!r}, points={len(self)}, bn={self.bn!r})"

    def _model(self, i: int) -> nn.Module:
        t = self.fractions[i]
        for k, (ma, mb, mode, x0, x1) in enumerate(self._segments):
            if t <= x1 or k == len(self._segments) - 1:
                x = (t - x0) / (x1 - x0)
                if x <= 0:
                    return copy.deepcopy(ma)
                if x >= 1:
                    return copy.deepcopy(mb)
                return interpolate_models(self._g, ma, mb, float(x), mode)
        raise AssertionError("unreachable")

    def point(self, i: int, data=None) -> nn.Module:
        """The network at point ``i``, a new eval-mode model; with ``bn="recompute"`` its
        BN statistics are recomputed on ``data`` (or the path's ``bn_data``)."""
        from bnn_toroid.paths.continuous import recompute_bn

        m = self._model(self._index(i)).to(self._dtype).eval().requires_grad_(True)
        if self.bn == "recompute" and any(isinstance(x, BATCHNORM_TYPES) for x in m.modules()):
            d = self.bn_data if self.bn_data is not None else data
            if d is None:
                raise ValueError("bn='recompute': give bn_data= to the path or data= to "
                                 "point() to recompute the BatchNorm statistics")
            recompute_bn(m, d, self.batch_size)
        return m

    def errors(self, data) -> np.ndarray:
        r"""Train error ``E(x_i) = (1/P) Σ_μ 1[argmax f(x^μ; Θ(x_i)) ≠ y^μ]`` at every
        point (Pittorino et al. 2022; docs/methods.md, "Paths")."""
        from bnn_toroid.landscape.continuous import check_data

        x, y = as_tensors(data, "GraphPath.errors: data")
        out = np.empty(len(self))
        for i in range(len(self)):
            m = self.point(i, data=(x, y))
            if i == 0:
                check_data(m, x, y, "GraphPath.errors")
            out[i] = misclassified(m, x, y, self.batch_size) / x.shape[0]
        return out


def _pair(a, b):
    ga, gb = parse(a, "a"), parse(b, "b")
    check_compatible(ga, gb)
    return ga


def linear(a, b, points=21, align=False, normalize=False, method="cosine", data=None,
           bn="fold", bn_data=None, batch_size=1024) -> GraphPath:
    r"""``Θ(x) = (1 − x) Θ_a + x Θ_b`` over every parameter and BN statistic,
    ``x = i/(points−1)``; ``align=True`` first permutes ``b``'s channel spaces onto ``a``
    (not rescaled), ``normalize=True`` interpolates the normalised endpoints. Arguments
    as :func:`bnn_toroid.paths.continuous.linear` (``method`` ``"cosine"`` or
    ``"weights"``)."""
    g = _pair(a, b)
    perms = find_permutations(b, a, method) if align else None
    if normalize:
        _, ma = normalized_model(a, "a")
        _, mb = normalized_model(b, "b")
    else:
        ma, mb = copy_model(a), copy_model(b)
    if perms is not None:
        for c, p in zip(g.free_channels, perms):
            permute_space(mb, g, c, p)
    fr = np.linspace(0.0, 1.0, int(points))
    return GraphPath(g, [(ma, mb, "lerp", 0.0, 1.0)], fr, "linear_aligned" if align else "linear",
                     model_dtype(a), bn, bn_data, batch_size)


def _ends(a, b, align, method):
    if align:
        g, ma, mb, _ = aligned_models(b, a, method)
        return g, ma, mb
    g = _pair(a, b)
    return g, normalized_model(a, "a")[1], normalized_model(b, "b")[1]


def geodesic(a, b, points=21, align=True, method="cosine", data=None, bn="fold",
             bn_data=None, batch_size=1024) -> GraphPath:
    r"""The geodesic on the toroid: both normalised, ``b`` aligned onto ``a``
    (``align=False`` skips it), then every sphere (each channel's joint vector of a
    scale space, the output space as a whole) on its great circle with the same ``x``,

    .. math::
        v_s(x) = r_s\,\frac{\sin((1-x)\varphi_s)\,\hat v^a_s + \sin(x\varphi_s)\,\hat v^b_s}
                        {\sin\varphi_s},

    flat coordinates and BN statistics linearly. The endpoints are ``normalize(a)`` and
    ``align(b, a)`` exactly. Pittorino et al. 2022; docs/methods.md, "Paths"."""
    g, ma, mb = _ends(a, b, align, method)
    fr = np.linspace(0.0, 1.0, int(points))
    return GraphPath(g, [(ma, mb, "slerp", 0.0, 1.0)], fr,
                     "geodesic_aligned" if align else "geodesic", model_dtype(a), bn, bn_data,
                     batch_size)


def single_bend(a, b, data, points=21, epochs=20, lr=0.05, momentum=0.9, weight_decay=0.0,
                batch_size=128, seed=0, target_error=0.0, align=True, method="cosine",
                bn="fold", bn_data=None, eval_batch=1024) -> GraphPath:
    r"""Two geodesics through a trained midpoint, as
    :func:`bnn_toroid.paths.continuous.single_bend`: the midpoint starts at the
    normalised mean ``𝒩(½(Θ_a + Θ_b))`` of the normalised, aligned endpoints, is trained
    with SGD + Nesterov momentum on ``data`` (BN in train mode; statistics recomputed
    first with ``bn="recompute"``) and normalised again. ``points`` odd; the bend is at
    fraction 0.5. The result has ``midpoint`` and ``train_log``."""
    from bnn_toroid.paths.continuous import _fit_midpoint, recompute_bn

    x, y = as_tensors(data, "paths.single_bend: data")
    g, ma, mb = _ends(a, b, align, method)
    dtype = model_dtype(a)
    mid = interpolate_models(g, ma, mb, 0.5, "lerp")
    normalize_model(mid, g)
    model = mid.to(dtype)
    if bn == "recompute":
        recompute_bn(model, bn_data if bn_data is not None else (x, y), eval_batch)
    for p in model.parameters():
        p.requires_grad_(True)
    log = _fit_midpoint(model, x, y, epochs, lr, momentum, weight_decay, batch_size, seed,
                        target_error, eval_batch)
    ms = copy_model(model)
    normalize_model(ms, g)
    half = (int(points) + 1) // 2
    fr = np.concatenate([np.linspace(0.0, 0.5, half), np.linspace(0.5, 1.0, half)[1:]])
    path = GraphPath(g, [(ma, ms, "slerp", 0.0, 0.5), (ms, mb, "slerp", 0.5, 1.0)], fr,
                     "single_bend", dtype, bn, bn_data, eval_batch)
    path.midpoint = copy.deepcopy(ms).to(dtype).eval().requires_grad_(True)
    path.train_log = np.asarray(log)
    return path

