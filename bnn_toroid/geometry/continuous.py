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

from bnn_toroid.symmetry.continuous import (
    _aligned_structs, _apply_perm, _check_compatible, _copy_struct, _expand_vals,
    _bcast, _fold_struct, _model_dtype, _normalized_struct, _Struct, _to_model, find_permutations,
)

__all__ = ["distance", "interpolate", "sphere_angles", "DISTANCE_KINDS"]

DISTANCE_KINDS = ("geodesic", "geodesic_aligned", "raw", "aligned", "normalized",
                  "normalized_aligned")


@dataclass
class _Group:
    """Tensors that form spheres: with ``per_row`` every unit (axis 0) is one sphere,
    otherwise all of them together are one sphere. ``outgoing`` lists
    ``(module, attr, axis, block, power)``: when a row is divided by ``n`` those entries
    are multiplied by ``n**power`` so that the function is unchanged."""
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


def _folded_groups(s: _Struct) -> list:
    """Spheres of a folded (BN-free) model, input to output."""
    groups = []
    for l in range(s.num_layers):
        m = s.layer(l)
        pieces = [(m, "weight")] + ([(m, "bias")] if m.bias is not None else [])
        if l + 1 < s.num_layers:
            out = [(s.layer(l + 1), "weight", 1, s.blocks[l], 1)]
            groups.append(_Group(pieces, True, 1.0, l, out))
        else:
            groups.append(_Group(pieces, False, math.sqrt(s.units(l)), l))
    return groups


def _bn_groups(s: _Struct) -> list:
    """Spheres of an unfolded model in the BN-aware geometry (module doc)."""
    groups = []
    for l in range(s.num_layers):
        m, bn = s.layer(l), s.bn(l)
        pieces = [(m, "weight")] + ([(m, "bias")] if m.bias is not None else [])
        last = l + 1 == s.num_layers
        nxt = [] if last else [(s.layer(l + 1), "weight", 1, s.blocks[l], 1)]
        if bn is None:
            groups.append(_Group(pieces, not last, math.sqrt(s.units(l)) if last else 1.0,
                                 l, nxt))
            continue
        # the running statistics follow the pre-BN scale; exact up to BN's eps, and the
        # statistics are recomputed on data in this geometry anyway
        stats = [(bn, "running_mean", 0, 1, -1), (bn, "running_var", 0, 1, -2)]
        groups.append(_Group(pieces, True, 1.0, l, stats))
        if bn.weight is not None:
            aff = [(bn, "weight"), (bn, "bias")]
            groups.append(_Group(aff, not last, math.sqrt(s.units(l)) if last else 1.0, l, nxt))
    return groups


@torch.no_grad()
def _normalize_groups(groups) -> None:
    for g in groups:
        mat = g.gather()
        if g.per_row:
            n = mat.norm(dim=1)
            n = torch.where(n > 0, n, torch.ones_like(n))
            g.scatter(mat / n[:, None])
            for mod, attr, axis, block, power in g.outgoing:
                t = getattr(mod, attr)
                t.mul_(_bcast(_expand_vals(n ** power, block).to(t.dtype), t.dim(), axis))
        else:
            n = mat.norm()
            if n > 0:
                g.scatter(mat * (g.radius / n))


def _bn_normalized(model, what="model", perms=None) -> _Struct:
    """Unfolded copy, optionally permuted, normalised in the BN-aware geometry."""
    s = _copy_struct(model, what)
    if perms is not None:
        for l, p in enumerate(perms):
            _apply_perm(s, l, p)
    _normalize_groups(_bn_groups(s))
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
def _interpolate_structs(sa: _Struct, sb: _Struct, x: float, mode: str, geometry: str) -> _Struct:
    """A new struct at fraction x; ``mode`` "slerp" (per sphere) or "lerp" (per tensor).
    Tensors outside every sphere (running statistics) are interpolated linearly."""
    out = copy.deepcopy(sa)
    for ma, mb, mo in zip(sa.modules, sb.modules, out.modules):
        for (n, ta), tb, to in zip(
                list(ma.named_parameters(recurse=False)) + list(ma.named_buffers(recurse=False)),
                list(mb.parameters(recurse=False)) + list(mb.buffers(recurse=False)),
                list(mo.parameters(recurse=False)) + list(mo.buffers(recurse=False))):
            if ta.is_floating_point():
                to.copy_((1 - x) * ta + x * tb)
    if mode == "slerp":
        gf = _folded_groups if geometry == "folded" else _bn_groups
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
    dtype = _model_dtype(a)
    if kind == "geodesic":
        sa, sb = _normalized_struct(a, "a"), _normalized_struct(b, "b")
        mode = "slerp"
    elif kind == "linear":
        sa, sb = _fold_struct(_copy_struct(a, "a")), _fold_struct(_copy_struct(b, "b"))
        mode = "lerp"
    else:
        raise ValueError(f"interpolate: kind must be 'geodesic' or 'linear', got {kind!r}")
    _check_compatible(sa, sb)
    return _to_model(_interpolate_structs(sa, sb, x, mode, "folded"), dtype)


def _layer_params(s: _Struct, l: int) -> list:
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

    ``per_layer=True`` returns ``{"layer1": d_1, ..., "layerL": d_L}``: the geodesic
    distance over that layer's spheres, or the Euclidean distance per parameter of that
    layer (with its BN). Models of different shapes raise ValueError.
    """
    if kind not in DISTANCE_KINDS:
        raise ValueError(f"distance: kind must be one of {DISTANCE_KINDS}, got {kind!r}")
    if kind in ("geodesic", "normalized"):
        sa, sb = _normalized_struct(a, "a"), _normalized_struct(b, "b")
        _check_compatible(sa, sb)
    elif kind in ("geodesic_aligned", "normalized_aligned"):
        sa, sb, _ = _aligned_structs(b, a, method, data)
    else:
        sa, sb = _copy_struct(a, "a"), _copy_struct(b, "b")
        _check_compatible(sa, sb)
        if kind == "aligned":
            for l, p in enumerate(find_permutations(b, a, method, data)):
                _apply_perm(sb, l, p)
    L = sa.num_layers
    if kind.startswith("geodesic"):
        sq = np.zeros(L)
        for ga, gb in zip(_folded_groups(sa), _folded_groups(sb)):
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
        return {f"layer{l + 1}": float(vals[l]) for l in range(L)}
    return total
