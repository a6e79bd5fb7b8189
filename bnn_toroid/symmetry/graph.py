r"""Symmetries of traced (residual) real-valued networks: permutations shared along a
residual stream, positive rescaling, the toroid, and alignment.

Pittorino et al., "Deep Networks on Toroids", ICML 2022 (arXiv 2202.03038), Algorithms
1 (normalisation) and 2 (alignment), extended from chains to any graph that
:mod:`bnn_toroid.network.graph` reads; docs/methods.md, "Residual networks
(real-valued)". The public verbs :func:`bnn_toroid.symmetry.continuous.normalize`,
``align``, ``permute`` and ``rescale`` send every torch model that is not an
``nn.Sequential`` here.

**The toroid of a residual network [ours].** A free scale space ``s`` (module doc of
:mod:`bnn_toroid.network.graph`) has one positive factor per channel ``k``, acting at once
on the rows of *all* its writers: every Conv2d / Linear ``[w_k, b_k]`` and every BN affine
``(γ_k, β_k)`` that writes channel ``k`` of the stream. Its quotient is one unit sphere
per channel of the concatenated vector

.. math::
    v_k = \big[w^{(1)}_k, b^{(1)}_k, \gamma^{(2)}_k, \beta^{(2)}_k, \dots\big], \qquad
    \lVert v_k\rVert = 1,

and the space's readers take the inverse factor (a reading layer's input columns
``× ‖v_k‖``; a reading BN's statistics ``μ_k ← μ_k ‖v_k‖``,
``σ²_k ← ‖v_k‖² (σ²_k + ε) − ε``, which keeps its eval output exactly). A conv followed by
BN opens a space whose only reader is that BN, so each of its filters is its own unit
sphere (BN's scale invariance). The output space is scaled as a whole to radius
``sqrt(H)`` (``H`` outputs; the logits change by one positive factor). Spaces are
normalised in dependency order (:attr:`GraphStructure.scale_order`); when the
dependencies form a cycle (a residual stream without BatchNorm) there is no closed-form
section and :func:`normalize` raises.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from bnn_toroid.network.continuous import UnsupportedLayerError, model_dtype
from bnn_toroid.network.graph import GraphStructure, check_compatible, copy_model, parse

__all__ = ["permute", "rescale", "normalize", "align", "find_permutations", "spheres",
           "permute_space", "scale_space", "normalized_model", "aligned_models",
           "scale_spaces", "channel_spaces"]


def _tensor(model: nn.Module, name: str, attr: str) -> torch.Tensor:
    return getattr(model.get_submodule(name), attr)


def _expand(perm: torch.Tensor, block: int) -> torch.Tensor:
    if block == 1:
        return perm
    return (perm[:, None] * block + torch.arange(block)).reshape(-1)


def _per(values: torch.Tensor, t: torch.Tensor, axis: int, block: int = 1) -> torch.Tensor:
    v = values if block == 1 else values.repeat_interleave(block)
    shape = [1] * t.dim()
    shape[axis] = -1
    return v.to(t.dtype).reshape(shape)


def channel_spaces(model: nn.Module) -> list:
    """The sizes of the free channel spaces of ``model`` in graph order: what
    :func:`permute` takes one permutation for (one per residual stream and per
    internal layer)."""
    g = parse(model)
    return [g.channels[c].size for c in g.free_channels]


def scale_spaces(model: nn.Module) -> list:
    """The sizes of the free scale spaces of ``model`` in normalisation order (without
    the output): what :func:`rescale` takes one positive vector for."""
    g = parse(model)
    return [g.channels[g.scales[s].channel].size for s in _free_scales(g)]


def _free_scales(g: GraphStructure) -> list:
    if g.scale_order is not None:
        return [s for s in g.scale_order if not g.scales[s].output]
    return [k for k, sp in enumerate(g.scales) if not sp.fixed and not sp.output]


@torch.no_grad()
def permute_space(model: nn.Module, g: GraphStructure, c: int, perm) -> None:
    """Permute channel space ``c`` of ``model`` in place: new channel ``i`` is the old
    channel ``perm[i]``, in every tensor axis the space indexes (writers' rows, BN
    parameters and statistics, readers' input columns, whole blocks after a flatten)."""
    perm = torch.as_tensor(np.asarray(perm), dtype=torch.long)
    for t in g.channels[c].targets:
        x = _tensor(model, t.module, t.attr)
        x.copy_(x.index_select(t.axis, _expand(perm, t.block)))


@torch.no_grad()
def scale_space(model: nn.Module, g: GraphStructure, s: int, c: torch.Tensor) -> None:
    """Multiply channel ``k`` of scale space ``s`` by ``c[k] > 0`` in place and undo it
    in its readers (module doc); the function is unchanged (exactly, up to rounding)."""
    sp = g.scales[s]
    for name, kind in sp.writers:
        m = model.get_submodule(name)
        for a in ("weight", "bias"):
            t = getattr(m, a, None)
            if t is not None:
                t.mul_(_per(c, t, 0))
    for name, block in sp.readers:
        w = _tensor(model, name, "weight")
        w.div_(_per(c, w, 1, block))
    for name in sp.bn_readers:
        bn = model.get_submodule(name)
        cc = c.to(bn.running_var.dtype)
        bn.running_mean.mul_(cc)
        bn.running_var.copy_(cc * cc * (bn.running_var + bn.eps) - bn.eps)


def _rows(model: nn.Module, g: GraphStructure, s: int) -> torch.Tensor:
    """The vectors ``v_k`` of scale space ``s`` as the rows of one matrix."""
    parts = []
    for name, kind in g.scales[s].writers:
        m = model.get_submodule(name)
        for a in ("weight", "bias"):
            t = getattr(m, a, None)
            if t is not None:
                parts.append(t.detach().reshape(t.shape[0], -1))
    return torch.cat(parts, dim=1)


def spheres(g: GraphStructure):
    """The spheres of the toroid: ``(scale space, pieces, per_row, radius)`` with
    ``pieces`` the ``(module, attr)`` tensors whose rows (``per_row``) or whole
    (the output) form the spheres. Parameters of fixed spaces are in none."""
    out = []
    for s in (g.scale_order or []):
        sp = g.scales[s]
        pieces = [(n, a) for n, _ in sp.writers for a in ("weight", "bias")]
        radius = float(np.sqrt(g.channels[sp.channel].size)) if sp.output else 1.0
        out.append((s, pieces, not sp.output, radius))
    return out


def _check_order(g: GraphStructure, what: str):
    if g.scale_order is None:
        names = [", ".join(g.scales[s].nodes[:3]) for s in g.cycle[:3]]
        raise UnsupportedLayerError(
            f"{what}: the rescalings of the model form a cycle (scale spaces at fx nodes "
            f"{'; '.join(names)}): a residual stream whose writers read, through layers "
            f"without BatchNorm, spaces that read it back has no closed-form normalisation; "
            f"give the stream's writers BatchNorm (docs/methods.md, 'Residual networks "
            f"(real-valued)')")


@torch.no_grad()
def normalize_model(model: nn.Module, g: GraphStructure) -> None:
    """Put ``model`` (a float64 copy) on the toroid in place (module doc)."""
    for s in g.scale_order:
        sp = g.scales[s]
        if not sp.writers:
            continue
        rows = _rows(model, g, s)
        if sp.output:
            n = rows.norm()
            if n > 0:
                f = float(np.sqrt(rows.shape[0])) / n
                scale_space(model, g, s, torch.full((rows.shape[0],), float(f), dtype=rows.dtype))
            continue
        n = rows.norm(dim=1)
        # a channel with zero vector is constant; leave it rather than divide by zero
        n = torch.where(n > 0, n, torch.ones_like(n))
        scale_space(model, g, s, 1.0 / n)


def normalized_model(model: nn.Module, what: str = "model"):
    """``(g, m)``: the structure and a normalised float64 copy of ``model``."""
    g = parse(model, what)
    _check_order(g, what)
    m = copy_model(model)
    normalize_model(m, g)
    return g, m


def _out(m: nn.Module, dtype) -> nn.Module:
    return m.to(dtype).eval().requires_grad_(True)


def normalize(model: nn.Module) -> nn.Module:
    r"""A new eval-mode copy of a traced model on its toroid (module doc): for each free
    scale space in dependency order, every channel's joint vector ``v_k`` over all the
    stream's writers goes to ``v_k/‖v_k‖`` and the readers take ``‖v_k‖``; the output
    space goes to norm ``sqrt(H)``. BatchNorm is kept (not folded). Hidden activations
    change by positive per-channel factors, the argmax not at all. Pittorino et al. 2022,
    Algorithm 1; docs/methods.md, "Residual networks (real-valued)"."""
    g, m = normalized_model(model, "normalize")
    return _out(m, model_dtype(model))


def _check_perm(p, n, what):
    p = np.asarray(p)
    if p.shape != (n,) or not np.array_equal(np.sort(p), np.arange(n)):
        raise ValueError(f"{what}: not a permutation of range({n})")
    return p


def permute(model: nn.Module, perms) -> nn.Module:
    """A copy with channel space ``i`` (in the order of :func:`channel_spaces`) permuted
    by ``perms[i]`` (new channel ``j`` = old channel ``perms[i][j]``), every tensor of the
    stream together; the function is unchanged."""
    g = parse(model, "permute")
    if len(perms) != len(g.free_channels):
        raise ValueError(f"perms: expected {len(g.free_channels)} permutations (one per free "
                         f"channel space, see channel_spaces), got {len(perms)}")
    m = copy_model(model)
    for i, (c, p) in enumerate(zip(g.free_channels, perms)):
        permute_space(m, g, c, _check_perm(p, g.channels[c].size, f"perms[{i}] ({g.describe(c)})"))
    return _out(m, model_dtype(model))


def rescale(model: nn.Module, scales) -> nn.Module:
    """A copy with scale space ``i`` (order of :func:`scale_spaces`) multiplied by the
    positive vector ``scales[i]`` and undone in its readers; the function is unchanged
    (exact in eval mode: a reading BN's statistics follow, module doc)."""
    g = parse(model, "rescale")
    free = _free_scales(g)
    if len(scales) != len(free):
        raise ValueError(f"scales: expected {len(free)} vectors (one per free scale space, "
                         f"see scale_spaces), got {len(scales)}")
    m = copy_model(model)
    for i, (s, c) in enumerate(zip(free, scales)):
        c = torch.as_tensor(np.asarray(c, dtype=np.float64))
        n = g.channels[g.scales[s].channel].size
        if c.shape != (n,) or not bool((c > 0).all()):
            raise ValueError(f"scales[{i}]: need {n} positive values")
        scale_space(m, g, s, c)
    return _out(m, model_dtype(model))


# ------------------------------------------------------------------ alignment

def _axis_spaces(g: GraphStructure) -> dict:
    """(module, attr) -> {axis: channel space index} over every target."""
    out = {}
    for c, sp in enumerate(g.channels):
        for t in sp.targets:
            out.setdefault((t.module, t.attr), {})[t.axis] = (c, t.block)
    return out


def _features(model, g, axes, c, settled):
    """Rows (one per channel of space ``c``) of every parameter whose other axes are in
    settled (fixed or already aligned) spaces."""
    parts = []
    for t in g.channels[c].targets:
        if t.attr in ("running_mean", "running_var"):
            continue
        x = _tensor(model, t.module, t.attr).detach()
        others = [cc for ax, (cc, _) in axes[(t.module, t.attr)].items() if ax != t.axis]
        if any(cc == c or not (g.channels[cc].fixed or cc in settled) for cc in others):
            continue
        x = x.movedim(t.axis, 0)
        n = g.channels[c].size
        x = x.reshape(n, t.block, *x.shape[1:]).reshape(n, -1)
        parts.append(x)
    return torch.cat(parts, dim=1) if parts else None


def _all_rows(model, g, c):
    parts = []
    for t in g.channels[c].targets:
        if t.attr in ("running_mean", "running_var"):
            continue
        x = _tensor(model, t.module, t.attr).detach().movedim(t.axis, 0)
        n = g.channels[c].size
        parts.append(x.reshape(n, -1))
    return torch.cat(parts, dim=1)


def _lsa(sim: np.ndarray) -> np.ndarray:
    rows, cols = linear_sum_assignment(sim, maximize=True)
    perm = np.empty(sim.shape[0], dtype=np.int64)
    perm[rows] = cols
    return perm


def _cosine(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-300)
    b = b / b.norm(dim=1, keepdim=True).clamp_min(1e-300)
    return (a @ b.T).numpy()


_METHODS = ("cosine", "weights")


def aligned_models(model, reference, method="cosine", max_iter=100, seed=0):
    """``(g, normalised reference, normalised model permuted onto it, perms)``, both in
    float64; ``perms`` in the order of :func:`channel_spaces`. See :func:`align`."""
    if method not in _METHODS:
        raise ValueError(f"align: method must be one of {_METHODS} for a traced (non-Sequential) "
                         f"model, got {method!r}")
    ga, ma = normalized_model(reference, "reference")
    gb, mb = normalized_model(model, "model")
    check_compatible(ga, gb, ("reference", "model"))
    axes = _axis_spaces(ga)
    perms, settled = {}, set()
    for c in ga.free_channels:
        fa, fb = _features(ma, ga, axes, c, settled), _features(mb, ga, axes, c, settled)
        n = ga.channels[c].size
        p = np.arange(n) if fa is None else _lsa(_cosine(fa, fb))
        permute_space(mb, ga, c, p)
        perms[c] = p
        settled.add(c)
    if method == "weights":
        rng = np.random.default_rng(seed)
        for _ in range(max_iter):
            changed = False
            for c in rng.permutation(ga.free_channels):
                sim = (_all_rows(ma, ga, c) @ _all_rows(mb, ga, c).T).numpy()
                p = _lsa(sim)
                ident = np.arange(len(p))
                gain = sim[ident, p].sum() - np.trace(sim)
                if not np.array_equal(p, ident) and gain > 1e-12 * max(1.0, abs(np.trace(sim))):
                    permute_space(mb, ga, c, p)
                    perms[c] = perms[c][p]
                    changed = True
            if not changed:
                break
    return ga, ma, mb, [perms[c] for c in ga.free_channels]


def find_permutations(model: nn.Module, reference: nn.Module, method: str = "cosine",
                      **kwargs) -> list:
    """The permutations :func:`align` applies, one per free channel space (order of
    :func:`channel_spaces`): ``perms[i][j]`` is ``model``'s channel matched to
    ``reference``'s channel ``j``. Apply them with :func:`permute`."""
    return aligned_models(model, reference, method, **kwargs)[3]


def align(model: nn.Module, reference: nn.Module, method: str = "cosine", max_iter: int = 100,
          seed: int = 0) -> nn.Module:
    r"""``model`` normalised and permuted onto ``reference`` (both traced models).

    Both are normalised (:func:`normalize`). ``method="cosine"`` (Pittorino et al. 2022,
    Algorithm 2, on the graph): the free channel spaces in graph order, each matched by

    .. math::
        C_{ij} = \frac{u^A_i \cdot u^B_j}{\lVert u^A_i\rVert \lVert u^B_j\rVert},\qquad
        \pi = \arg\max_\pi \sum_i C_{i\pi(i)}

    (``linear_sum_assignment``), where ``u_i`` concatenates every parameter slice that
    channel ``i`` of the space indexes and whose other axis is already aligned or fixed:
    for a residual stream the rows of the layers that write it from aligned inputs, all
    its BN affines, and the columns of a head that reads it. ``method="weights"`` [ours]
    then runs weight matching (Ainsworth et al., ICLR 2023, Alg. 1) over all spaces in
    random order (``seed``, at most ``max_iter`` sweeps, steps only when they gain).
    Returns the normalised, permuted model (BN kept): its argmax equals ``model``'s."""
    mb = aligned_models(model, reference, method, max_iter, seed)[2]
    return _out(mb, model_dtype(model))
