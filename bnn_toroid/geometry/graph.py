r"""Distances and interpolation on the toroid of traced (residual) networks.

Pittorino et al., "Deep Networks on Toroids", ICML 2022 (arXiv 2202.03038): distances and
geodesics taken sphere by sphere; the spheres of a residual network are those of
:mod:`bnn_toroid.symmetry.graph` (one unit sphere per channel of every free scale space,
joint over all the layers that write a residual stream; one sphere of radius
``sqrt(H)`` for the output space); docs/methods.md, "Residual networks (real-valued)".
Parameters outside every sphere (the writers of a fixed space, e.g. a layer added to the
input) are flat coordinates: they add ``‖Δ‖²`` to the squared distance and are
interpolated linearly. BatchNorm running statistics are no coordinates of the toroid;
along an interpolation they are interpolated linearly (or recomputed, by the paths).
:func:`bnn_toroid.geometry.continuous.distance` sends traced models here.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from bnn_toroid.network.graph import check_compatible, copy_model, parse
from bnn_toroid.symmetry.graph import aligned_models, find_permutations, normalized_model, \
    permute_space, spheres

__all__ = ["distance", "interpolate_models", "sphere_pieces"]


def sphere_pieces(g, model):
    """For each sphere of :func:`~bnn_toroid.symmetry.graph.spheres`: ``(tensors,
    per_row, radius)`` with the existing parameter tensors of ``model``."""
    out = []
    for _, pieces, per_row, radius in spheres(g):
        ts = [getattr(model.get_submodule(n), a) for n, a in pieces]
        out.append(([t for t in ts if t is not None], per_row, radius))
    return out


def _gather(ts, per_row):
    if per_row:
        h = ts[0].shape[0]
        return torch.cat([t.detach().reshape(h, -1) for t in ts], dim=1)
    return torch.cat([t.detach().reshape(1, -1) for t in ts], dim=1)


@torch.no_grad()
def _scatter(ts, mat):
    col = 0
    rows = mat.shape[0]
    for t in ts:
        w = t.numel() // rows
        t.copy_(mat[:, col:col + w].reshape(t.shape))
        col += w


def _in_spheres(g, model) -> set:
    return {id(t) for ts, _, _ in sphere_pieces(g, model) for t in ts}


@torch.no_grad()
def interpolate_models(g, ma: nn.Module, mb: nn.Module, x: float, mode: str) -> nn.Module:
    """A new model at fraction ``x`` between two compatible float64 copies: every
    floating tensor (parameters and BN statistics) linearly, then with
    ``mode="slerp"`` every sphere along its great circle
    (:func:`bnn_toroid.geometry.continuous._slerp_rows`, the norm interpolated linearly)."""
    from bnn_toroid.geometry.continuous import _slerp_rows

    out = copy.deepcopy(ma)
    for (_, ta), tb, to in zip(list(ma.named_parameters()) + list(ma.named_buffers()),
                               list(mb.parameters()) + list(mb.buffers()),
                               list(out.parameters()) + list(out.buffers())):
        if ta.is_floating_point():
            to.copy_((1 - x) * ta + x * tb)
    if mode == "slerp":
        for (ta, pr, _), (tb, _, _), (to, _, _) in zip(sphere_pieces(g, ma), sphere_pieces(g, mb),
                                                       sphere_pieces(g, out)):
            _scatter(to, _slerp_rows(_gather(ta, pr), _gather(tb, pr), x))
    return out


_KINDS = ("geodesic", "geodesic_aligned", "raw", "aligned", "normalized", "normalized_aligned")


def distance(a: nn.Module, b: nn.Module, kind: str = "geodesic", per_layer: bool = False,
             method: str = "cosine", data=None):
    r"""Distance between two traced models of the same architecture, with the kinds of
    :func:`bnn_toroid.geometry.continuous.distance`. Geodesic kinds, per sphere ``s`` of
    radius ``r_s`` and the flat coordinates ``f`` (module doc):

    .. math::
        d = \sqrt{\textstyle\sum_s (r_s\varphi_s)^2 + \sum_f (\theta^a_f - \theta^b_f)^2}

    Euclidean kinds: ``‖Θ_a − Θ_b‖ / sqrt(N)`` over the ``N`` parameters (BN affine
    included, statistics not). ``per_layer=True`` returns ``{"space1": ..., "total": d}``
    for geodesic kinds (one entry per sphere group: a scale space, the output last) and
    ``{"layer1": ..., "total"}`` per parameterised module in graph order otherwise."""
    from bnn_toroid.geometry.continuous import sphere_angles

    if kind not in _KINDS:
        raise ValueError(f"distance: kind must be one of {_KINDS}, got {kind!r}")
    if method == "activations":
        raise ValueError("distance: method='activations' is not available for traced "
                         "(non-Sequential) models; use 'cosine' or 'weights'")
    if kind in ("geodesic", "normalized"):
        g, ma = normalized_model(a, "a")
        gb, mb = normalized_model(b, "b")
        check_compatible(g, gb)
    elif kind in ("geodesic_aligned", "normalized_aligned"):
        g, ma, mb, _ = aligned_models(b, a, method)
    else:
        g, gb = parse(a, "a"), parse(b, "b")
        check_compatible(g, gb)
        ma, mb = copy_model(a), copy_model(b)
        if kind == "aligned":
            for c, p in zip(g.free_channels, find_permutations(b, a, method)):
                permute_space(mb, g, c, p)
    if kind.startswith("geodesic"):
        vals = []
        for (ta, pr, r), (tb, _, _) in zip(sphere_pieces(g, ma), sphere_pieces(g, mb)):
            phi = sphere_angles(_gather(ta, pr), _gather(tb, pr))
            vals.append(float(((r * phi) ** 2).sum()))
        inside = _in_spheres(g, ma)
        flat = sum(float(((pa - pb) ** 2).sum()) for pa, pb in zip(ma.parameters(), mb.parameters())
                   if id(pa) not in inside)
        total = float(np.sqrt(sum(vals) + flat))
        if per_layer:
            return {**{f"space{i + 1}": float(np.sqrt(v)) for i, v in enumerate(vals)},
                    "total": total}
        return total
    rows, sq, cnt = [], 0.0, 0
    for name in g.layers:
        pa = [p for p in ma.get_submodule(name).parameters(recurse=False)]
        pb = [p for p in mb.get_submodule(name).parameters(recurse=False)]
        s = sum(float(((x - y) ** 2).sum()) for x, y in zip(pa, pb))
        n = sum(x.numel() for x in pa)
        rows.append(np.sqrt(s / max(n, 1)))
        sq, cnt = sq + s, cnt + n
    total = float(np.sqrt(sq / max(cnt, 1)))
    if per_layer:
        return {**{f"layer{i + 1}": float(v) for i, v in enumerate(rows)}, "total": total}
    return total
