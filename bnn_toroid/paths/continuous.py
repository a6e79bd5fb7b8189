r"""Paths between real-valued networks: linear, geodesic on the toroid, single bend.

Pittorino et al., "Deep Networks on Toroids", ICML 2022 (arXiv 2202.03038):
mode connectivity along linear, geodesic and single-bend paths; docs/methods.md, "Paths".

**BatchNorm along a path [ours]**, option ``bn``:

- ``"fold"`` (default): BN is folded into its layer (exact for the endpoints) and the
  folded affine is interpolated with the rest. Endpoints are reproduced exactly.
- ``"recompute"``: BN modules are kept; at every point the running statistics are
  reset and recomputed on ``bn_data`` (default: the data given to :meth:`errors`), as
  mode-connectivity tools do (Garipov et al. 2018). The geodesic then lives in the
  BN-aware geometry of :mod:`bnn_toroid.geometry.continuous`. Since the endpoints'
  statistics are recomputed too, they match the originals only as far as their stored
  running statistics matched the data. Models without BN behave the same under both.
"""
from __future__ import annotations

import copy
from typing import Optional

import numpy as np
import torch
from torch import nn

from bnn_toroid.geometry.continuous import (
    bn_normalized_structure, bn_spheres, folded_spheres, interpolate_structures, normalize_spheres,
)
from bnn_toroid.network.continuous import (
    BATCHNORM_TYPES, LayerStructure, apply_permutation, as_tensors, check_compatible,
    copy_structure, fold, misclassified, model_dtype, to_model,
)
from bnn_toroid.network.graph import is_graph_model
from bnn_toroid.paths.base import Path
from bnn_toroid.symmetry.continuous import (
    aligned_structures, find_permutations, normalize_structure, normalized_structure,
)

__all__ = ["ContinuousPath", "linear", "geodesic", "single_bend"]


def _real_pair(a, b, func: str):
    """TypeError unless both endpoints are real-valued torch models, naming the binary
    path functions when one is a frozen BinaryNetwork."""
    from bnn_toroid._dispatch import kind
    from bnn_toroid.network import BinaryNetwork

    for name, m in (("a", a), ("b", b)):
        if isinstance(m, BinaryNetwork):
            raise TypeError(f"paths.{func}: {name} is a BinaryNetwork; {func} takes real-valued "
                            "torch models (nn.Module). Paths between binary networks are "
                            "paths.random_flip, paths.single_bend and paths.search")
        if not isinstance(m, nn.Module):
            raise TypeError(f"paths.{func}: {name} is a {type(m).__name__}; expected a real-valued "
                            "torch model (nn.Module)")
        kind(m, f"paths.{func}")  # a torch model with binary layers: freeze it first

_BN_MODES = ("fold", "recompute")


@torch.no_grad()
def recompute_bn(model: nn.Module, data, batch_size: int = 1024,
                 max_samples: Optional[int] = None) -> nn.Module:
    """Reset every BatchNorm's running statistics to the plain average over ``data``
    (``momentum=None``), in place; returns the model in eval mode. Only BN modules run
    in train mode, so Dropout stays off."""
    x, _ = as_tensors(data, "bn_data")
    if max_samples is not None:
        x = x[:max_samples]
    bns = [m for m in model.modules() if isinstance(m, BATCHNORM_TYPES)]
    if not bns:
        return model.eval()
    model.eval()
    saved = []
    for bn in bns:
        saved.append(bn.momentum)
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    dtype = model_dtype(model)
    for i in range(0, x.shape[0], batch_size):
        model(x[i:i + batch_size].to(dtype))
    for bn, mom in zip(bns, saved):
        bn.momentum = mom
    return model.eval()


class ContinuousPath(Path):
    r"""A path made of segments, each a linear or per-sphere great-circle interpolation
    between two networks of the same architecture.

    ``fractions`` runs over [0, 1] (for a single bend, the bend is at 0.5); point ``i`` is
    built on demand by :meth:`point`. ``kind`` names the construction.
    """

    def __init__(self, segments, fractions, kind: str, dtype, bn: str = "fold",
                 bn_data=None, batch_size: int = 1024):
        self._segments = segments  # (struct_a, struct_b, mode, geometry, x0, x1)
        self.fractions = np.asarray(fractions, dtype=np.float64)
        self.kind = kind
        self.bn = bn
        self.bn_data = bn_data
        self.batch_size = batch_size
        self._dtype = dtype

    def __repr__(self):
        return f"ContinuousPath(kind={self.kind!r}, points={len(self)}, bn={self.bn!r})"

    def _struct(self, i: int) -> LayerStructure:
        t = self.fractions[i]
        for k, (sa, sb, mode, geom, x0, x1) in enumerate(self._segments):
            if t <= x1 or k == len(self._segments) - 1:
                x = (t - x0) / (x1 - x0)
                # the endpoints (and a bend) are returned exactly, not re-interpolated
                if x <= 0:
                    return copy.deepcopy(sa)
                if x >= 1:
                    return copy.deepcopy(sb)
                return interpolate_structures(sa, sb, float(x), mode, geom)
        raise AssertionError("unreachable")

    def point(self, i: int, data=None) -> nn.Sequential:
        """The network at point ``i`` as a new eval-mode ``nn.Sequential``.

        With ``bn="recompute"`` its BN statistics are recomputed on ``data`` (or the
        path's ``bn_data``); one of them is required then.
        """
        m = to_model(self._struct(self._index(i)), self._dtype)
        if self.bn == "recompute" and any(isinstance(x, BATCHNORM_TYPES) for x in m.modules()):
            d = self.bn_data if self.bn_data is not None else data
            if d is None:
                raise ValueError("bn='recompute': give bn_data= to the path or data= to "
                                 "point() to recompute the BatchNorm statistics")
            recompute_bn(m, d, self.batch_size)
        return m

    def errors(self, data) -> np.ndarray:
        r"""Train error ``E(x_i) = (1/P) Σ_μ 1[argmax f(x^μ; Θ(x_i)) ≠ y^μ]`` at every
        point (Pittorino et al. 2022; docs/methods.md, "Paths"); BN statistics are recomputed on ``bn_data`` or,
        failing that, on ``data`` when ``bn="recompute"``."""
        from bnn_toroid.landscape.continuous import check_data

        x, y = as_tensors(data, "ContinuousPath.errors: data")
        out = np.empty(len(self))
        for i in range(len(self)):
            m = self.point(i, data=(x, y))
            if i == 0:
                check_data(m, x, y, "ContinuousPath.errors")
            out[i] = misclassified(m, x, y, self.batch_size) / x.shape[0]
        return out


def _check(func: str, points: int, bn: str, min_points: int = 2):
    if int(points) != points or points < min_points:
        raise ValueError(f"{func}: points must be an integer >= {min_points}, got {points}")
    if bn not in _BN_MODES:
        raise ValueError(f"{func}: bn must be one of {_BN_MODES}, got {bn!r}")


def _perm_struct(model, perms, what):
    s = copy_structure(model, what)
    if perms is not None:
        for l, p in enumerate(perms):
            apply_permutation(s, l, p)
    return s


def linear(a: nn.Module, b: nn.Module, points: int = 21, align: bool = False,
           normalize: bool = False, method: str = "cosine", data=None, bn: str = "fold",
           bn_data=None, batch_size: int = 1024) -> ContinuousPath:
    r"""Straight line in parameter space, ``Θ(x) = (1 − x) Θ_a + x Θ_b``, ``x = i/(points−1)``.

    ``align=False``: the raw endpoints ("linear" in Pittorino et al. 2022).
    ``align=True``: ``b``'s hidden units are first permuted onto ``a`` (permutations from
    :func:`~bnn_toroid.symmetry.continuous.find_permutations` with ``method``/``data``)
    but not rescaled, so both endpoints are the networks as trained ("linear-aligned").
    ``normalize=True`` interpolates the normalised endpoints instead. With ``bn="fold"``
    the BN-folded parameters are interpolated; with ``bn="recompute"`` all raw parameters
    (BN affine too) are, and BN statistics are recomputed at each point (module doc).
    Both endpoints must be real-valued torch models (``TypeError`` otherwise).
    """
    _real_pair(a, b, "linear")
    _check("linear", points, bn)
    if is_graph_model(a) or is_graph_model(b):
        from bnn_toroid.paths import graph
        return graph.linear(a, b, points, align, normalize, method, data, bn, bn_data, batch_size)
    dtype = model_dtype(a)
    perms = find_permutations(b, a, method, data) if align else None
    if bn == "fold":
        if normalize:
            sa = normalized_structure(a, "a")
            sb = normalized_structure(b, "b")
            check_compatible(sa, sb)
            if perms is not None:
                for l, p in enumerate(perms):
                    apply_permutation(sb, l, p)
        else:
            sa = fold(_perm_struct(a, None, "a"))
            sb = fold(_perm_struct(b, perms, "b"))
    else:
        if normalize:
            sa, sb = bn_normalized_structure(a, "a"), bn_normalized_structure(b, "b", perms)
        else:
            sa, sb = _perm_struct(a, None, "a"), _perm_struct(b, perms, "b")
    check_compatible(sa, sb)
    fr = np.linspace(0.0, 1.0, int(points))
    kind = "linear_aligned" if align else "linear"
    return ContinuousPath([(sa, sb, "lerp", "folded" if bn == "fold" else "bn", 0.0, 1.0)],
                          fr, kind, dtype, bn, bn_data, batch_size)


def _geodesic_structs(a, b, align, method, data, bn):
    if bn == "fold":
        if align:
            sa, sb, _ = aligned_structures(b, a, method, data)
        else:
            sa, sb = normalized_structure(a, "a"), normalized_structure(b, "b")
            check_compatible(sa, sb)
        return sa, sb, "folded"
    perms = find_permutations(b, a, method, data) if align else None
    sa, sb = bn_normalized_structure(a, "a"), bn_normalized_structure(b, "b", perms)
    check_compatible(sa, sb)
    return sa, sb, "bn"


def geodesic(a: nn.Module, b: nn.Module, points: int = 21, align: bool = True,
             method: str = "cosine", data=None, bn: str = "fold", bn_data=None,
             batch_size: int = 1024) -> ContinuousPath:
    r"""Geodesic on the toroid between ``a`` and ``b`` ("geodesic-aligned" in Pittorino et al. 2022).

    Both are normalised and ``b`` is aligned onto ``a`` (``align=False`` skips the
    alignment for networks already aligned). Every sphere — each hidden unit's
    ``[w_k, b_k]`` and the whole last layer — follows its own great circle with the same
    fraction ``x = i/(points−1)``:

    .. math::
        v_s(x) = r_s\,\frac{\sin((1-x)\varphi_s)\,\hat v^a_s + \sin(x\varphi_s)\,\hat v^b_s}
                        {\sin\varphi_s}

    so point ``x`` lies at toroidal distance ``x·d(a, b)`` from ``a``, and the endpoints
    are ``normalize(a)`` and ``align(b, a)`` exactly. Pittorino et al. 2022;
    docs/methods.md, "Paths". ``bn`` as in the module doc. Both endpoints must be real-valued torch
    models (``TypeError`` otherwise).
    """
    _real_pair(a, b, "geodesic")
    _check("geodesic", points, bn)
    if is_graph_model(a) or is_graph_model(b):
        from bnn_toroid.paths import graph
        return graph.geodesic(a, b, points, align, method, data, bn, bn_data, batch_size)
    sa, sb, geom = _geodesic_structs(a, b, align, method, data, bn)
    fr = np.linspace(0.0, 1.0, int(points))
    return ContinuousPath([(sa, sb, "slerp", geom, 0.0, 1.0)], fr,
                          "geodesic_aligned" if align else "geodesic", model_dtype(a), bn,
                          bn_data, batch_size)


def _fit_midpoint(model: nn.Module, x, y, epochs, lr, momentum, weight_decay, batch_size,
                  seed, target_error, eval_batch):
    """Plain SGD with Nesterov momentum; stops after the first epoch whose train error is
    <= target_error. Returns the per-epoch train errors."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=True,
                          weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    dtype = model_dtype(model)
    log = []
    model.eval()
    err = misclassified(model, x, y, eval_batch) / x.shape[0]
    log.append(err)
    for _ in range(int(epochs)):
        if err <= target_error:
            break
        model.train()
        order = torch.randperm(x.shape[0], generator=g)
        for i in range(0, x.shape[0], batch_size):
            idx = order[i:i + batch_size]
            if idx.numel() < 2 and any(isinstance(m, BATCHNORM_TYPES) for m in model.modules()):
                continue  # BN cannot train on a batch of one
            opt.zero_grad(set_to_none=True)
            out = model(x[idx].to(dtype))
            loss_fn(out.reshape(out.shape[0], -1), y[idx]).backward()
            opt.step()
        model.eval()
        err = misclassified(model, x, y, eval_batch) / x.shape[0]
        log.append(err)
    return log


def single_bend(a: nn.Module, b: nn.Module, data, points: int = 21, epochs: int = 20,
                lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 0.0,
                batch_size: int = 128, seed: int = 0, target_error: float = 0.0,
                align: bool = True, method: str = "cosine", bn: str = "fold",
                bn_data=None, eval_batch: int = 1024) -> ContinuousPath:
    r"""Two geodesics through a trained midpoint: ``geodesic(a, m) + geodesic(m, b)``.

    ``a`` and ``b`` are normalised and ``b`` aligned onto ``a``. The midpoint starts at
    their mean, renormalised,

    .. math::
        m_0 = \mathcal{N}\big(\tfrac12(\Theta_a + \Theta_b)\big),

    and is trained as an ordinary network on ``data`` with SGD + Nesterov momentum
    (``lr``, ``momentum``, ``batch_size``, ``seed``) for at most ``epochs`` epochs,
    stopping once its train error is ``<= target_error``; it is then normalised again
    (which changes no prediction). Pittorino et al. 2022 ("single bend"); docs/methods.md, "Single bend (real-valued)".

    ``points`` (odd, >= 3) counts the whole path; the bend sits at fraction 0.5 (each
    segment has ``(points+1)/2`` points, sharing the midpoint). The result's
    ``midpoint`` is the trained midpoint and ``train_log`` its train error per epoch
    (entry 0 before training). With ``bn="fold"`` the midpoint has no BN; with
    ``bn="recompute"`` it keeps BN (trained in train mode, statistics recomputed).
    Both endpoints must be real-valued torch models (``TypeError`` otherwise).
    """
    _real_pair(a, b, "single_bend")
    _check("single_bend", points, bn, 3)
    if points % 2 == 0:
        raise ValueError(f"single_bend: points must be odd so that the bend is a point, "
                         f"got {points}")
    x, y = as_tensors(data, "paths.single_bend: data")
    from bnn_toroid.landscape.continuous import check_data

    check_data(a, x, y, "paths.single_bend")
    if is_graph_model(a) or is_graph_model(b):
        from bnn_toroid.paths import graph
        return graph.single_bend(a, b, (x, y), points, epochs, lr, momentum, weight_decay,
                                 batch_size, seed, target_error, align, method, bn, bn_data,
                                 eval_batch)
    dtype = model_dtype(a)
    sa, sb, geom = _geodesic_structs(a, b, align, method, data, bn)
    mid = interpolate_structures(sa, sb, 0.5, "lerp", geom)
    groups = folded_spheres if geom == "folded" else bn_spheres
    normalize_spheres(groups(mid))
    model = to_model(mid, dtype)
    if bn == "recompute":
        recompute_bn(model, bn_data if bn_data is not None else (x, y), eval_batch)
    for p in model.parameters():
        p.requires_grad_(True)
    log = _fit_midpoint(model, x, y, epochs, lr, momentum, weight_decay, batch_size, seed,
                        target_error, eval_batch)
    ms = copy_structure(model, "midpoint")
    if geom == "folded":
        normalize_structure(ms)
    else:
        normalize_spheres(bn_spheres(ms))
    half = (int(points) + 1) // 2
    fr = np.concatenate([np.linspace(0.0, 0.5, half), np.linspace(0.5, 1.0, half)[1:]])
    path = ContinuousPath([(sa, ms, "slerp", geom, 0.0, 0.5), (ms, sb, "slerp", geom, 0.5, 1.0)],
                          fr, "single_bend", dtype, bn, bn_data, eval_batch)
    path.midpoint = to_model(copy.deepcopy(ms), dtype)
    path.train_log = np.asarray(log)
    return path
