r"""Symmetries of real-valued ReLU networks: positive rescaling and permutations.

Pittorino et al., "Deep Networks on Toroids", ICML 2022 (arXiv 2202.03038),
Algorithms 1 (normalisation) and 2 (alignment); specified in docs/methods.md, "The toroid (normalisation)" and "Alignment of real-valued networks".

Models are read through :mod:`bnn_toroid.network.continuous` (which layers are
supported, and why; :class:`UnsupportedLayerError` names any other). This module adds
the two symmetry maps, normalisation and alignment, on its :class:`LayerStructure`;
``normalized_structure``, ``normalize_structure`` and ``aligned_structures`` are the
structure-level forms that :mod:`bnn_toroid.geometry` and :mod:`bnn_toroid.paths` build on.

**The unit sphere includes the bias [ours].** A hidden ReLU unit computes
``relu(w·x + b) = relu([w, b]·[x, 1])``. The positive rescaling
``(w, b, out) -> (c w, c b, out / c)`` acts on the augmented vector ``[w, b]`` as a
whole, so the quotient of ``R^{n+1} \ {0}`` by it is exactly the sphere ``S^n``: we
normalise ``‖[w_k, b_k]‖ = 1``. The paper's networks have no biases, where this is the
paper's ``‖w_k‖ = 1``; dividing the bias by the weight norm only (the other exact choice)
would leave each bias as an unbounded extra coordinate and the space would not be a
product of spheres. For a conv layer a unit is a filter ``(C_in, k_h, k_w)`` plus its bias.

**BatchNorm is folded first [ours]** (:func:`~bnn_toroid.network.continuous.fold`):
folding is exact up to float rounding, after which rescaling is exact too (BN's ``ε``
otherwise breaks it). The normalised model has no BN modules.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from bnn_toroid.network.continuous import (
    LayerStructure, UnsupportedLayerError, apply_permutation, as_tensors, check_compatible,
    copy_structure, fold, fold_batchnorm, model_dtype, per_unit, scale_outgoing, to_model,
    train_error,
)
from bnn_toroid.network.graph import is_graph_model
from bnn_toroid.nn import Normalize

__all__ = [
    "UnsupportedLayerError", "fold_batchnorm", "normalize", "align", "find_permutations",
    "permute", "rescale", "train_error",
    # the structure-level forms, for geometry and paths
    "normalize_structure", "normalized_structure", "aligned_structures",
]
# UnsupportedLayerError, fold_batchnorm, train_error and as_tensors live in
# bnn_toroid.network.continuous; they are re-exported here, where they were first.


# --------------------------------------------------------------- group actions

def _check_perms(s: LayerStructure, perms, what="perms"):
    hidden = s.num_layers - 1
    if len(perms) != hidden:
        raise ValueError(f"{what}: expected {hidden} permutations (one per hidden layer), "
                         f"got {len(perms)}")
    for l, p in enumerate(perms):
        p = np.asarray(p)
        n = s.units(l)
        if p.shape != (n,) or not np.array_equal(np.sort(p), np.arange(n)):
            raise ValueError(f"{what}[{l}]: not a permutation of range({n}) for {s.describe(l)}")


def permute(model: nn.Module, perms: Sequence) -> nn.Sequential:
    r"""A copy with the hidden units of every layer permuted (the function is unchanged).

    For hidden layer ``l`` with permutation ``π_l`` (``perms[l][i]`` = the old index of new
    unit ``i``): ``W_l ← P_l W_l``, ``b_l ← P_l b_l`` (and the BN parameters and running
    statistics), ``W_{l+1} ← W_{l+1} P_l^T``, moving whole channel blocks at a
    conv → flatten → dense boundary. Pittorino et al. 2022 (permutation symmetry);
    docs/methods.md, "The toroid (normalisation)".
    BN stays unfolded; the architecture is kept.
    """
    if is_graph_model(model):
        from bnn_toroid.symmetry import graph
        return graph.permute(model, perms)
    s = copy_structure(model)  # validates before the dtype is read
    dtype = model_dtype(model)
    _check_perms(s, perms)
    for l, p in enumerate(perms):
        apply_permutation(s, l, p)
    return to_model(s, dtype)


def rescale(model: nn.Module, scales: Sequence) -> nn.Sequential:
    r"""A copy with each hidden unit rescaled by ``c > 0`` (the function is unchanged).

    Unit ``k`` of hidden layer ``l``: ``(w_k, b_k) ← c_k (w_k, b_k)`` and its outgoing
    weights ``← W_{l+1}[:, k] / c_k``; with BN after the layer the BN affine
    ``(γ_k, β_k)`` is scaled instead (exact, whereas scaling the weights before BN is
    not, because of ε). ``relu(c h) = c relu(h)`` for ``c > 0``: Pittorino et al. 2022
    (rescaling symmetry); docs/methods.md, "Symmetries of real-valued networks".
    """
    if is_graph_model(model):
        from bnn_toroid.symmetry import graph
        return graph.rescale(model, scales)
    s = copy_structure(model)
    dtype = model_dtype(model)
    if len(scales) != s.num_layers - 1:
        raise ValueError(f"scales: expected {s.num_layers - 1} vectors (one per hidden layer), "
                         f"got {len(scales)}")
    with torch.no_grad():
        for l, c in enumerate(scales):
            c = torch.as_tensor(np.asarray(c, dtype=np.float64))
            if c.shape != (s.units(l),) or not bool((c > 0).all()):
                raise ValueError(f"scales[{l}]: need {s.units(l)} positive values for "
                                 f"{s.describe(l)}")
            bn = s.bn(l)
            if bn is not None:
                if bn.weight is None:
                    raise ValueError(f"scales[{l}]: {s.describe(l)} is followed by a BN without "
                                     f"affine parameters, whose output scale is fixed")
                targets = [bn.weight, bn.bias]
            else:
                m = s.layer(l)
                targets = [m.weight] + ([m.bias] if m.bias is not None else [])
            for t in targets:
                t.mul_(per_unit(c, t, 0))
            scale_outgoing(s, l, 1.0 / c)
    return to_model(s, dtype)


# ------------------------------------------------------------- normalisation

def _unit_matrix(s: LayerStructure, l: int) -> torch.Tensor:
    """Rows = incoming vectors ``[w_k, b_k]`` of the units of layer l."""
    m = s.layer(l)
    w = m.weight.detach().reshape(m.weight.shape[0], -1)
    if m.bias is None:
        return w
    return torch.cat([w, m.bias.detach().reshape(-1, 1)], dim=1)


@torch.no_grad()
def normalize_structure(s: LayerStructure) -> None:
    """:func:`normalize` (Algorithm 1) on a folded structure (no BN), in place."""
    for l in range(s.num_layers - 1):
        m = s.layer(l)
        n = _unit_matrix(s, l).norm(dim=1)
        # a unit with zero incoming vector is constant 0; leave it (and its outgoing
        # weights) as they are rather than divide by zero
        n = torch.where(n > 0, n, torch.ones_like(n))
        m.weight.div_(per_unit(n, m.weight, 0))
        if m.bias is not None:
            m.bias.div_(n)
        scale_outgoing(s, l, n)
    last = s.layer(s.num_layers - 1)
    norm = _unit_matrix(s, s.num_layers - 1).norm()
    if norm > 0:
        f = math.sqrt(s.units(s.num_layers - 1)) / norm
        last.weight.mul_(f)
        if last.bias is not None:
            last.bias.mul_(f)


def normalized_structure(model: nn.Module, what: str = "model") -> LayerStructure:
    """A float64 copy of ``model``, BN folded and normalised: :func:`normalize` as a
    :class:`LayerStructure` (``what`` names the model in error messages)."""
    s = fold(copy_structure(model, what))
    normalize_structure(s)
    return s


def normalize(model: nn.Module) -> nn.Sequential:
    r"""Remove the rescaling symmetry: a new eval-mode model on the toroid (Algorithm 1).

    BatchNorm is folded first (:func:`fold_batchnorm`). Then for ``l = 1 .. L−1`` in order,
    each hidden unit ``k`` with incoming vector ``v_k = [w_k, b_k]`` (a whole filter plus
    its bias for conv layers; the outgoing columns of layer ``l+1`` already multiplied by
    the previous step) is mapped by

    .. math::
        v_k \leftarrow \frac{v_k}{\lVert v_k \rVert}, \qquad
        W_{l+1}[:, k] \leftarrow \lVert v_k \rVert \, W_{l+1}[:, k]

    (at a conv → flatten → dense boundary the whole block of ``H·W`` columns of channel
    ``k``). The last layer ``[W_L, b_L]`` is scaled globally to norm ``sqrt(H_L)``,
    ``H_L`` = number of outputs. Hidden activations and the argmax are unchanged; the
    logits are multiplied by one positive constant. The parameters then lie on
    ``Π_units S^{n_k} × S^{N_L}(sqrt(H_L))``, the "toroid". Pittorino et al. 2022,
    Algorithm 1; docs/methods.md, "The toroid (normalisation)". The bias is part of the unit vector (see the module doc).

    Returns a plain ``nn.Sequential`` without BN modules, in the model's dtype; the argument
    is never modified. Normalising twice changes nothing (to float precision).
    """
    if is_graph_model(model):
        from bnn_toroid.symmetry import graph
        return graph.normalize(model)
    s = normalized_structure(model, "normalize")
    return to_model(s, model_dtype(model))


# ------------------------------------------------------------------ alignment

def _cosine(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-300)
    b = b / b.norm(dim=1, keepdim=True).clamp_min(1e-300)
    return (a @ b.T).numpy()


def _lsa(sim: np.ndarray) -> np.ndarray:
    rows, cols = linear_sum_assignment(sim, maximize=True)
    perm = np.empty(sim.shape[0], dtype=np.int64)
    perm[rows] = cols
    return perm


def _compose(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    # applying ``old`` then ``new``: new unit i = unit new[i] of the old-permuted = old[new[i]]
    return old[new]


def _perms_cosine(sa: LayerStructure, sb: LayerStructure):
    perms = []
    for l in range(sa.num_layers - 1):
        p = _lsa(_cosine(_unit_matrix(sa, l), _unit_matrix(sb, l)))
        apply_permutation(sb, l, p)
        perms.append(p)
    return perms


def _outgoing_matrix(s: LayerStructure, l: int) -> torch.Tensor:
    """Rows = outgoing weights of the units of layer l, (H_l, rows_{l+1} · block)."""
    w = s.layer(l + 1).weight.detach()
    w = w.reshape(w.shape[0], w.shape[1], -1)  # (out, in, k) for conv, (out, in, 1) linear
    blk = s.blocks[l]
    h = s.units(l)
    w = w.reshape(w.shape[0], h, blk * w.shape[2])
    return w.permute(1, 0, 2).reshape(h, -1)


def _perms_weights(sa: LayerStructure, sb: LayerStructure, max_iter: int, seed: int):
    """Weight matching (Ainsworth et al. 2023, Alg. 1) by coordinate descent over layers,
    started from the cosine solution so it can only improve on it."""
    perms = _perms_cosine(sa, sb)
    hidden = sa.num_layers - 1
    rng = np.random.default_rng(seed)
    for _ in range(max_iter):
        changed = False
        for l in rng.permutation(hidden):
            sim = (_unit_matrix(sa, l) @ _unit_matrix(sb, l).T
                   + _outgoing_matrix(sa, l) @ _outgoing_matrix(sb, l).T).numpy()
            p = _lsa(sim)
            ident = np.arange(len(p))
            if not np.array_equal(p, ident):
                gain = sim[ident, p].sum() - np.trace(sim)
                if gain > 1e-12 * max(1.0, abs(np.trace(sim))):
                    apply_permutation(sb, l, p)
                    perms[l] = _compose(perms[l], p)
                    changed = True
        if not changed:
            break
    return perms


def _activation_points(s: LayerStructure):
    """For each hidden layer, the module index whose output is read as its activations:
    the last module before the next layer that keeps the unit axis (before any Flatten)."""
    pts = []
    for l in range(s.num_layers - 1):
        j = s.layers[l]
        for i in range(s.layers[l] + 1, s.layers[l + 1]):
            if type(s.modules[i]) is nn.Flatten:
                break
            j = i
        pts.append(j)
    return pts


@torch.no_grad()
def _activation_stats(s: LayerStructure, x: torch.Tensor, batch_size: int):
    pts = _activation_points(s)
    want = {p: k for k, p in enumerate(pts)}
    feats = [[] for _ in pts]
    for i in range(0, x.shape[0], batch_size):
        h = x[i:i + batch_size].to(torch.float64)
        for j, m in enumerate(s.modules):
            h = m(h) if type(m) is not Normalize else m(h).to(torch.float64)
            if j in want:
                f = h.movedim(1, -1).reshape(-1, h.shape[1]) if h.dim() > 2 else h
                feats[want[j]].append(f)
            if j >= pts[-1]:
                break
    return [torch.cat(f) for f in feats]


def _corr(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    a = a - a.mean(0)
    b = b - b.mean(0)
    sa, sb = a.norm(dim=0), b.norm(dim=0)
    c = (a.T @ b) / (sa[:, None] * sb[None, :]).clamp_min(1e-300)
    # a dead unit (constant activation) correlates with nothing
    c[sa == 0, :] = 0
    c[:, sb == 0] = 0
    return c.numpy()


def _perms_activations(sa: LayerStructure, sb: LayerStructure, data, batch_size: int,
                       max_samples: int):
    if data is None:
        raise ValueError("align(method='activations') needs data= (a batch of inputs)")
    x, _ = as_tensors(data)
    x = x[:max_samples]
    fa = _activation_stats(sa, x, batch_size)
    fb = _activation_stats(sb, x, batch_size)
    perms = []
    for l in range(sa.num_layers - 1):
        # activations of b's layer l do not depend on how earlier layers are ordered,
        # only their column order does: match each layer independently
        p = _lsa(_corr(fa[l], fb[l]))
        apply_permutation(sb, l, p)
        perms.append(p)
    return perms


_METHODS = ("cosine", "weights", "activations")


def _no_activations(method, data):
    if method == "activations":
        raise ValueError("align: method='activations' is not available for traced "
                         "(non-Sequential) models; use 'cosine' or 'weights'")


def aligned_structures(model, reference, method="cosine", data=None, max_iter=100, seed=0,
                       batch_size=1024, max_samples=4096):
    """:func:`align` as structures: ``(normalised reference, normalised model permuted
    onto it, perms)``, both :class:`LayerStructure` s in float64, ``perms`` as
    :func:`find_permutations` returns them. Arguments as in :func:`align`."""
    if method not in _METHODS:
        raise ValueError(f"align: method must be one of {_METHODS}, got {method!r}")
    sa = normalized_structure(reference, "reference")
    sb = normalized_structure(model, "model")
    check_compatible(sa, sb, ("reference", "model"))
    if method == "cosine":
        perms = _perms_cosine(sa, sb)
    elif method == "weights":
        perms = _perms_weights(sa, sb, max_iter, seed)
    else:
        perms = _perms_activations(sa, sb, data, batch_size, max_samples)
    return sa, sb, perms


def find_permutations(model: nn.Module, reference: nn.Module, method: str = "cosine",
                      data=None, **kwargs) -> list:
    """The permutations :func:`align` applies: ``perms[l][i]`` is the index of ``model``'s
    unit that is matched to ``reference``'s unit ``i`` in hidden layer ``l``. Apply them
    to the un-normalised model with :func:`permute`."""
    if is_graph_model(model) or is_graph_model(reference):
        from bnn_toroid.symmetry import graph
        _no_activations(method, data)
        return graph.find_permutations(model, reference, method, **{k: v for k, v in kwargs.items() if k in ('max_iter', 'seed')})
    return aligned_structures(model, reference, method, data, **kwargs)[2]


def align(model: nn.Module, reference: nn.Module, method: str = "cosine", data=None,
          max_iter: int = 100, seed: int = 0, batch_size: int = 1024,
          max_samples: int = 4096) -> nn.Sequential:
    r"""Remove the permutation symmetry: ``model`` normalised and permuted onto ``reference``.

    Both are first normalised (:func:`normalize`). Then, greedily from input to output
    (Pittorino et al. 2022, Algorithm 2; docs/methods.md, "Alignment of real-valued networks"), for each hidden layer ``l``:

    .. math::
        C_{ij} = \frac{v^A_i \cdot v^B_j}{\lVert v^A_i\rVert\,\lVert v^B_j\rVert}, \qquad
        \pi_l = \arg\max_{\pi} \sum_i C_{i\pi(i)}

    with ``v = [w, b]`` the incoming vectors, ``B``'s already re-ordered along its inputs by
    ``π_{l−1}``; the assignment is solved exactly by ``linear_sum_assignment``. ``B``'s units
    (rows, biases) and the matching inputs of layer ``l+1`` (filters' input channels, or
    whole channel blocks at a conv → dense boundary) are permuted by ``π_l``.

    ``method="weights"`` [ours]: weight matching (Ainsworth et al., "Git Re-Basin", ICLR
    2023, Alg. 1), maximising ``Σ_l ⟨W^A_l, P_l W^B_l P_{l−1}^T⟩`` over all layers (incoming
    and outgoing weights together) by coordinate descent in random layer order (``seed``),
    started from the cosine solution, at most ``max_iter`` sweeps.
    ``method="activations"`` [ours]: ``C`` is the Pearson correlation of the hidden
    activations (after ReLU/pooling; per channel over samples and positions for conv) on
    ``data`` (first ``max_samples`` inputs); required for this method.

    Returns a new model, **normalised** (BN folded), whose function equals ``model``'s up to
    the global logit factor of :func:`normalize` (argmax identical). A permuted and
    rescaled copy of ``reference`` aligns back onto ``normalize(reference)``.
    Models of different shapes raise ValueError.
    """
    if is_graph_model(model) or is_graph_model(reference):
        from bnn_toroid.symmetry import graph
        _no_activations(method, data)
        return graph.align(model, reference, method, max_iter, seed)
    sb = aligned_structures(model, reference, method, data, max_iter, seed, batch_size,
                            max_samples)[1]
    return to_model(sb, model_dtype(model))
