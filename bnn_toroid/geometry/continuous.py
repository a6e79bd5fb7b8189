r"""Distances and interpolation on the toroid of real-valued networks.

Pittorino et al., "Deep Networks on Toroids", ICML 2022 (arXiv 2202.03038):
the toroid, its distances and geodesic paths; specified in docs/methods.md, "The toroid (normalisation)", "Distances on the toroid" and "Geodesic paths on the toroid".

After :func:`bnn_toroid.symmetry.continuous.normalize` a network is a point of

.. math::
    \mathcal{T} = \prod_{l<L}\prod_{k=1}^{H_l} S^{n_l}(1) \times S^{N_L}(\sqrt{H_L}),

one unit sphere per hidden unit (incoming weights *and bias*, a whole filter for conv
layers) and one sphere of radius ``sqrt(H_L)`` for the whole last layer. Distances and
geodesics are taken sphere by sphere.

**BN-aware geometry [ours]** (used by paths with ``bn="recompute"``): BatchNorm stays
unfolded. A unit followed by BN then has two spheres: the direction of its pre-BN vector
``[w_k, b_k]`` (BN with recomputed statistics is blind to its scale) and the BN affine
``(γ_k, β_k)``, which carries the ReLU rescaling symmetry with the outgoing weights.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
import numpy as np
import torch
from torch import nn

from bnn_toroid.network.continuous import (
    LayerStructure, apply_permutation, check_compatible, copy_structure, fold, model_dtype,
    per_unit, to_model,
)
from bnn_toroid.network.graph import is_graph_model
from bnn_toroid.symmetry.continuous import (
    aligned_structures, find_permutations, normalized_structure,
)

__all__ = ["distance", "interpolate", "sphere_angles", "DISTANCE_KINDS",
           # the sphere structure, for paths
           "SphereGroup", "folded_spheres", "bn_spheres", "normalize_spheres",
           "bn_normalized_structure", "interpolate_structures"]

DISTANCE_KINDS = ("geodesic", "geodesic_aligned", "raw", "aligned", "normalized",
                  "normalized_aligned")


@dataclass
class SphereGroup:
    """Tensors of one layer that form spheres: ``pieces`` are ``(module, attr)`` pairs;
    with ``per_row`` every unit (row along axis 0, across the pieces) is one sphere of
    ``radius``, otherwise all of them together are one sphere. ``layer`` is the layer
    index. ``outgoing`` lists ``(module, attr, axis, block, power)``: when a row is
    divided by ``n`` those entries are multiplied by ``n**power`` so that the function is
    unchanged. :meth:`gather` reads the spheres as the rows of one matrix and
    :meth:`scatter` writes such a matrix back (in place)."""
    pieces: list
    per_row: bool
    radius: float
    layer: int
    outgoing: list = field(default_factory=list)

    def gather(self) -> torch.Tensor:
        ts = [getattr(m, a).detach() for m, a in self.pieces]
        if self.per_row:
            h = ts[0].shape[0]
            return torch.cat([t.reshape(h, -1) for t in ts], dim=1)
        return torch.cat([t.reshape(1, -1) for t in ts], dim=1)

    @torch.no_grad()
    def scatter(self, mat: torch.Tensor) -> None:
        ts = [getattr(m, a) for m, a in self.pieces]
        rows = mat.shape[0]
        col = 0
        for t in ts:
            w = t.numel() // rows
            t.copy_(mat[:, col:col + w].reshape(t.shape))
            col += w


def folded_spheres(s: LayerStructure) -> list:
    """The :class:`SphereGroup` s of a folded (BN-free) structure, input to output: one
    unit sphere per hidden unit's ``[w_k, b_k]``, one sphere of radius ``sqrt(H_L)`` for
    the last layer (the toroid of the module doc)."""
    groups = []
    for l in range(s.num_layers):
        m = s.layer(l)
        pieces = [(m, "weight")] + ([(m, "bias")] if m.bias is not None else [])
        if l + 1 < s.num_layers:
            out = [(s.layer(l + 1), "weight", 1, s.blocks[l], 1)]
            groups.append(SphereGroup(pieces, True, 1.0, l, out))
        else:
            groups.append(SphereGroup(pieces, False, math.sqrt(s.units(l)), l))
    return groups


def bn_spheres(s: LayerStructure) -> list:
    """The :class:`SphereGroup` s of an unfolded structure in the BN-aware geometry
    (module doc): a unit followed by BN has the direction of its pre-BN vector and its
    BN affine ``(γ_k, β_k)``."""
    groups = []
    for l in range(s.num_layers):
        m, bn = s.layer(l), s.bn(l)
        pieces = [(m, "weight")] + ([(m, "bias")] if m.bias is not None else [])
        last = l + 1 == s.num_layers
        nxt = [] if last else [(s.layer(l + 1), "weight", 1, s.blocks[l], 1)]
        if bn is None:
            groups.append(SphereGroup(pieces, not last, math.sqrt(s.units(l)) if last else 1.0,
                                      l, nxt))
            continue
        # the running statistics follow the pre-BN scale; exact up to BN's eps, and the
        # statistics are recomputed on data in this geometry anyway
        stats = [(bn, "running_mean", 0, 1, -1), (bn, "running_var", 0, 1, -2)]
        groups.append(SphereGroup(pieces, True, 1.0, l, stats))
        if bn.weight is not None:
            aff = [(bn, "weight"), (bn, "bias")]
            groups.append(SphereGroup(aff, not last, math.sqrt(s.units(l)) if last else 1.0, l, nxt))
    return groups


@torch.no_grad()
def normalize_spheres(groups) -> None:
    """Put every sphere of ``groups`` (input to output) on its radius, in place,
    compensating each unit's outgoing weights so the function is unchanged: Algorithm 1
    generalised to any list of :class:`SphereGroup` s. A zero row is left as it is."""
    for g in groups:
        mat = g.gather()
        if g.per_row:
            n = mat.norm(dim=1)
            n = torch.where(n > 0, n, torch.ones_like(n))
            g.scatter(mat / n[:, None])
            for mod, attr, axis, block, power in g.outgoing:
                t = getattr(mod, attr)
                t.mul_(per_unit(n ** power, t, axis, block))
        else:
            n = mat.norm()
            if n > 0:
                g.scatter(mat * (g.radius / n))


def bn_normalized_structure(model, what="model", perms=None) -> LayerStructure:
    """A float64 copy of ``model`` with BN kept, its hidden units permuted by ``perms``
    (as :func:`~bnn_toroid.symmetry.continuous.find_permutations` returns them; None:
    as given) and normalised in the BN-aware geometry (:func:`bn_spheres`)."""
    s = copy_structure(model, what)
    if perms is not None:
        for l, p in enumerate(perms):
            apply_permutation(s, l, p)
    normalize_spheres(bn_spheres(s))
    return s


def sphere_angles(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    r"""Row-wise angle between ``u`` and ``v``:

    .. math::
        \varphi = \arccos\frac{u\cdot v}{\lVert u\rVert\lVert v\rVert}
                = 2\,\mathrm{atan2}\big(\lVert \hat u - \hat v\rVert,\ \lVert \hat u + \hat v\rVert\big)

    The second form (used here, in float64) is accurate near 0 and π, where ``arccos``
    loses half the digits (``arccos(1 − 1e−7) ≈ 4.5e−4``). A zero row counts as
    orthogonal to everything (φ = π/2).
    """
    u = u.to(torch.float64)
    v = v.to(torch.float64)
    uh = u / u.norm(dim=1, keepdim=True).clamp_min(1e-300)
    vh = v / v.norm(dim=1, keepdim=True).clamp_min(1e-300)
    return 2 * torch.atan2((uh - vh).norm(dim=1), (uh + vh).norm(dim=1))


def _slerp_rows(a: torch.Tensor, b: torch.Tensor, x: float) -> torch.Tensor:
    """Great-circle interpolation per row; the norm is interpolated linearly (so it stays
    ``r`` between two points of the sphere of radius ``r``)."""
    na, nb = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    ua = a / na.clamp_min(1e-300)
    ub = b / nb.clamp_min(1e-300)
    phi = sphere_angles(a, b)[:, None]
    s = torch.sin(phi)
    ok = s > 1e-9
    sf = torch.where(ok, s, torch.ones_like(s))
    slerp = (torch.sin((1 - x) * phi) * ua + torch.sin(x * phi) * ub) / sf
    # (nearly) equal directions: the chord is the arc; antipodal rows have no unique
    # geodesic and fall back to the chord as well (then renormalised)
    lerp = (1 - x) * ua + x * ub
    lerp = lerp / lerp.norm(dim=1, keepdim=True).clamp_min(1e-300)
    u = torch.where(ok, slerp, lerp)
    return ((1 - x) * na + x * nb) * u


@torch.no_grad()
def interpolate_structures(sa: LayerStructure, sb: LayerStructure, x: float, mode: str,
                           geometry: str) -> LayerStructure:
    """A new structure at fraction ``x`` between two compatible ones: ``mode="slerp"``
    follows each sphere's great circle (the spheres of ``geometry``, ``"folded"``
    (:func:`folded_spheres`) or ``"bn"`` (:func:`bn_spheres`)), ``mode="lerp"`` is
    linear per tensor. Tensors outside every sphere (running statistics) are
    interpolated linearly."""
    out = copy.deepcopy(sa)
    for ma, mb, mo in zip(sa.modules, sb.modules, out.modules):
        for (n, ta), tb, to in zip(
                list(ma.named_parameters(recurse=False)) + list(ma.named_buffers(recurse=False)),
                list(mb.parameters(recurse=False)) + list(mb.buffers(recurse=False)),
                list(mo.parameters(recurse=False)) + list(mo.buffers(recurse=False))):
            if ta.is_floating_point():
                to.copy_((1 - x) * ta + x * tb)
    if mode == "slerp":
        gf = folded_spheres if geometry == "folded" else bn_spheres
        for ga, gb, go in zip(gf(sa), gf(sb), gf(out)):
            go.scatter(_slerp_rows(ga.gather(), gb.gather(), x))
    return out


def interpolate(a: nn.Module, b: nn.Module, x: float, kind: str = "geodesic") -> nn.Sequential:
    r"""The network at fraction ``x ∈ [0, 1]`` between ``a`` and ``b`` (no alignment).

    ``kind="geodesic"``: both are normalised (BN folded), then every sphere is
    interpolated along its great circle with the same ``x``:

    .. math::
        v(x) = r\,\frac{\sin((1-x)\varphi)\,\hat v_a + \sin(x\varphi)\,\hat v_b}{\sin\varphi}

    so ``d(a, v(x)) = x·d(a, b)`` on the toroid (Pittorino et al. 2022, geodesic
    paths; docs/methods.md, "Geodesic paths on the toroid"). ``kind="linear"``: ``Θ(x) = (1−x)Θ_a + xΘ_b`` on the BN-folded
    raw parameters. Call :func:`bnn_toroid.symmetry.continuous.align` first to remove
    permutations; :mod:`bnn_toroid.paths.continuous` does this for whole paths.
    """
    if not 0 <= x <= 1:
        raise ValueError(f"interpolate: x must be in [0, 1], got {x}")
    if kind == "geodesic":
        sa, sb = normalized_structure(a, "a"), normalized_structure(b, "b")
        mode = "slerp"
    elif kind == "linear":
        sa, sb = fold(copy_structure(a, "a")), fold(copy_structure(b, "b"))
        mode = "lerp"
    else:
        raise ValueError(f"interpolate: kind must be 'geodesic' or 'linear', got {kind!r}")
    check_compatible(sa, sb)
    return to_model(interpolate_structures(sa, sb, x, mode, "folded"), model_dtype(a))


def _layer_params(s: LayerStructure, l: int) -> list:
    mods = [s.layer(l)] + ([s.bn(l)] if s.bn(l) is not None else [])
    return [p for m in mods for p in m.parameters(recurse=False)]


def distance(a: nn.Module, b: nn.Module, kind: str = "geodesic", per_layer: bool = False,
             method: str = "cosine", data=None):
    r"""Distance between two real-valued networks of the same architecture.

    ``kind="geodesic"`` (default): both are normalised (:func:`normalize`, BN folded) but
    **not aligned** — like the binary Hamming distance it measures the networks as given;
    call :func:`align` first, or use ``kind="geodesic_aligned"`` (``b`` aligned onto
    ``a`` with ``method`` / ``data`` as in :func:`align`). Per sphere of radius ``r`` (each
    hidden unit's ``[w_k, b_k]``, ``r = 1``; the whole last layer, ``r = sqrt(H_L)``):

    .. math::
        \varphi_s = \arccos\Big(\frac{v^a_s\cdot v^b_s}{r^2}\Big), \qquad
        d = \sqrt{\textstyle\sum_s (r_s\varphi_s)^2}

    (the angle is computed in the stable form of :func:`sphere_angles`).
    Pittorino et al. 2022 (distances on the toroid); docs/methods.md, "Distances on the toroid".

    Per-parameter Euclidean distance ``‖Θ_a − Θ_b‖ / sqrt(N)`` over the ``N`` parameters:
    ``"raw"`` (as given, BN affine included), ``"aligned"`` (``b`` permuted onto ``a``,
    not rescaled), ``"normalized"`` (both normalised), ``"normalized_aligned"`` (both
    normalised, ``b`` aligned; the paper's Fig. 4 distances).

    ``per_layer=True`` returns ``{"layer1": d_1, ..., "layerL": d_L, "total": d}``: the
    geodesic distance over each layer's spheres, or the Euclidean distance per parameter
    of that layer (with its BN), layers (Linear and Conv2d) counted from the input, and
    the value ``per_layer=False`` returns; the shape
    :func:`bnn_toroid.geometry.binary.distance` returns too. Models of different shapes
    raise ValueError.
    """
    if kind not in DISTANCE_KINDS:
        raise ValueError(f"distance: kind must be one of {DISTANCE_KINDS}, got {kind!r}")
    if is_graph_model(a) or is_graph_model(b):
        from bnn_toroid.geometry import graph
        return graph.distance(a, b, kind, per_layer, method, data)
    if kind in ("geodesic", "normalized"):
        sa, sb = normalized_structure(a, "a"), normalized_structure(b, "b")
        check_compatible(sa, sb)
    elif kind in ("geodesic_aligned", "normalized_aligned"):
        sa, sb, _ = aligned_structures(b, a, method, data)
    else:
        sa, sb = copy_structure(a, "a"), copy_structure(b, "b")
        check_compatible(sa, sb)
        if kind == "aligned":
            for l, p in enumerate(find_permutations(b, a, method, data)):
                apply_permutation(sb, l, p)
    L = sa.num_layers
    if kind.startswith("geodesic"):
        sq = np.zeros(L)
        for ga, gb in zip(folded_spheres(sa), folded_spheres(sb)):
            phi = sphere_angles(ga.gather(), gb.gather())
            sq[ga.layer] += float(((ga.radius * phi) ** 2).sum())
        vals = np.sqrt(sq)
        total = float(np.sqrt(sq.sum()))
    else:
        sq, cnt = np.zeros(L), np.zeros(L)
        for l in range(L):
            for pa, pb in zip(_layer_params(sa, l), _layer_params(sb, l)):
                sq[l] += float(((pa.detach() - pb.detach()) ** 2).sum())
                cnt[l] += pa.numel()
        vals = np.sqrt(sq / np.maximum(cnt, 1))
        total = float(np.sqrt(sq.sum() / cnt.sum()))
    if per_layer:
        return {**{f"layer{l + 1}": float(vals[l]) for l in range(L)}, "total": total}
    return total
