r"""Symmetries of real-valued ReLU networks: positive rescaling and permutations.

Pittorino et al., "Deep Networks on Toroids", ICML 2022 (arXiv 2202.03038),
Algorithms 1 (normalisation) and 2 (alignment); specified in docs/methods.md, "The toroid (normalisation)" and "Alignment of real-valued networks".

Supported models are ``nn.Sequential`` (nested ones are flattened) built from
:class:`bnn_toroid.nn.Normalize`, ``Flatten``, ``Linear``, ``Conv2d`` (``groups=1``),
``BatchNorm1d/2d`` (directly after a Linear/Conv2d, with running statistics), ``ReLU``,
``MaxPool2d``, ``Dropout`` and ``Identity``. ``Dropout`` is allowed because every tool
here works in eval mode, where it is the identity (and in train mode it multiplies each
unit by a random non-negative factor, which commutes with both symmetries). Anything
else raises :class:`UnsupportedLayerError` naming the layer: an activation such as
``Tanh`` is not positively homogeneous, so the rescaling symmetry would not hold.

**The unit sphere includes the bias [ours].** A hidden ReLU unit computes
``relu(w·x + b) = relu([w, b]·[x, 1])``. The positive rescaling
``(w, b, out) -> (c w, c b, out / c)`` acts on the augmented vector ``[w, b]`` as a
whole, so the quotient of ``R^{n+1} \ {0}`` by it is exactly the sphere ``S^n``: we
normalise ``‖[w_k, b_k]‖ = 1``. The paper's networks have no biases, where this is the
paper's ``‖w_k‖ = 1``; dividing the bias by the weight norm only (the other exact choice)
would leave each bias as an unbounded extra coordinate and the space would not be a
product of spheres. For a conv layer a unit is a filter ``(C_in, k_h, k_w)`` plus its bias.

**BatchNorm is folded first [ours].** Eval-mode BN ``γ (z − μ)/sqrt(σ² + ε) + β`` is a
per-unit affine map; folding it into the preceding layer is exact (up to float
rounding), after which rescaling is exact too (BN's ``ε`` otherwise breaks it). The
folded model has no BN modules.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from bnn_toroid.nn import Normalize

__all__ = [
    "UnsupportedLayerError", "fold_batchnorm", "normalize", "align", "find_permutations",
    "permute", "rescale", "train_error",
]


class UnsupportedLayerError(TypeError):
    """A model contains a layer that the continuous symmetry tools cannot handle."""


_PARAM_LAYERS = (nn.Linear, nn.Conv2d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)
_PASSIVE = (nn.ReLU, nn.MaxPool2d, nn.Flatten, nn.Dropout, nn.Identity)
_SUPPORTED = "Normalize, Flatten, Linear, Conv2d, BatchNorm1d/2d, ReLU, MaxPool2d, Dropout, Identity"


# --------------------------------------------------------------------------- data

def as_tensors(data, what: str = "data"):
    """``(x, y)`` from a Dataset-like object (``.x``, ``.y``) or an ``(x, y)`` pair.

    ``x`` stays in its own dtype (uint8 images are converted batch by batch, which keeps
    MNIST at 47 MB instead of 188 MB); ``y`` becomes int64. NaN/inf inputs are refused.
    """
    if hasattr(data, "x") and hasattr(data, "y"):
        x, y = data.x, data.y
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    else:
        raise TypeError(f"{what}: expected a Dataset with .x and .y or an (x, y) tuple, "
                        f"got {type(data).__name__}")
    x = x if isinstance(x, torch.Tensor) else _from_numpy(x)
    y = y if isinstance(y, torch.Tensor) else _from_numpy(y)
    y = y.reshape(-1).long()
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{what}: x has {x.shape[0]} samples but y has {y.shape[0]}")
    if x.shape[0] == 0:
        raise ValueError(f"{what}: empty data set")
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise ValueError(f"{what}: x contains NaN or inf")
    return x, y


def _from_numpy(a) -> torch.Tensor:
    a = np.ascontiguousarray(a)
    # Dataset arrays are read-only; torch refuses to share non-writable memory silently
    return torch.from_numpy(a if a.flags.writeable else a.copy())


def _model_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        return p.dtype
    return torch.float32


@torch.no_grad()
def _predict_counts(model: nn.Module, x, y, batch_size: int = 4096) -> int:
    dtype = _model_dtype(model)
    wrong = 0
    for i in range(0, x.shape[0], batch_size):
        out = model(x[i:i + batch_size].to(dtype))
        wrong += int((out.reshape(out.shape[0], -1).argmax(1) != y[i:i + batch_size]).sum())
    return wrong


def train_error(model: nn.Module, data, batch_size: int = 4096) -> float:
    r"""Fraction of misclassified samples, ``E = (1/P) Σ_μ 1[argmax_c f_c(x^μ) ≠ y^μ]``.

    The model is evaluated in eval mode (on a copy when it is in train mode, so the
    argument is never changed). "Train error" in the paper is this on the training set.
    """
    x, y = as_tensors(data)
    if model.training:
        model = copy.deepcopy(model).eval()
    return _predict_counts(model, x, y, batch_size) / x.shape[0]


# ---------------------------------------------------------------------- structure

def _flatten(module: nn.Module, prefix: str = ""):
    if isinstance(module, nn.Sequential):
        if type(module).forward is not nn.Sequential.forward:
            raise UnsupportedLayerError(
                f"{type(module).__name__} {prefix or '(the model)'} overrides forward(); only "
                f"plain nn.Sequential containers can be walked layer by layer")
        out = []
        for name, child in module.named_children():
            out.extend(_flatten(child, f"{prefix}.{name}" if prefix else name))
        return out
    return [(prefix, module)]


@dataclass
class _Struct:
    """A validated, flattened model: ``layers[l]`` is the module index of the l-th
    Linear/Conv2d, ``bns[l]`` the index of the BN folded into it (or None), ``blocks[l]``
    how many input columns of layer l+1 belong to one unit of layer l (1, or H·W at a
    conv → flatten → dense boundary)."""
    modules: list
    names: list
    layers: list = field(default_factory=list)
    bns: list = field(default_factory=list)
    blocks: list = field(default_factory=list)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def layer(self, l: int) -> nn.Module:
        return self.modules[self.layers[l]]

    def bn(self, l: int):
        i = self.bns[l]
        return None if i is None else self.modules[i]

    def units(self, l: int) -> int:
        m = self.layer(l)
        return m.out_features if isinstance(m, nn.Linear) else m.out_channels

    def describe(self, l: int) -> str:
        i = self.layers[l]
        return f"layer {l + 1} ({type(self.modules[i]).__name__} at index {i}, '{self.names[i]}')"


def _where(names, i, m) -> str:
    return f"{type(m).__name__} at index {i} ('{names[i]}')"


def _parse(model: nn.Module, what: str = "model") -> _Struct:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{what}: expected a torch nn.Sequential, got {type(model).__name__}")
    if not isinstance(model, nn.Sequential):
        raise UnsupportedLayerError(
            f"{what}: expected an nn.Sequential of {_SUPPORTED}; got {type(model).__name__}")
    flat = _flatten(model)
    names = [n for n, _ in flat]
    modules = [m for _, m in flat]
    s = _Struct(modules, names)
    for i, m in enumerate(modules):
        t = type(m)
        if t in _PARAM_LAYERS:
            if t is nn.Conv2d and m.groups != 1:
                raise UnsupportedLayerError(
                    f"{what}: {_where(names, i, m)} has groups={m.groups}; only groups=1 "
                    f"is supported (grouped filters cannot be permuted freely)")
            s.layers.append(i)
            s.bns.append(None)
        elif t in _BN:
            prev = modules[i - 1] if i > 0 else None
            want = nn.Linear if t is nn.BatchNorm1d else nn.Conv2d
            if prev is None or type(prev) is not want:
                raise UnsupportedLayerError(
                    f"{what}: {_where(names, i, m)} does not directly follow a "
                    f"{want.__name__}; only BatchNorm right after its layer can be folded")
            units = prev.out_features if want is nn.Linear else prev.out_channels
            if m.num_features != units:
                raise ValueError(f"{what}: {_where(names, i, m)} has {m.num_features} "
                                 f"features but the layer before has {units} units")
            if m.running_mean is None or m.running_var is None:
                raise UnsupportedLayerError(
                    f"{what}: {_where(names, i, m)} has track_running_stats=False; eval-mode "
                    f"BN then uses batch statistics and cannot be folded")
            s.bns[-1] = i
        elif t is Normalize:
            if s.layers:
                raise UnsupportedLayerError(
                    f"{what}: {_where(names, i, m)} comes after a Linear/Conv2d; Normalize "
                    f"(x − mean)/std is only supported on the input (it breaks rescaling)")
        elif t is nn.Flatten:
            if m.start_dim != 1 or m.end_dim != -1:
                raise UnsupportedLayerError(
                    f"{what}: {_where(names, i, m)} has start_dim={m.start_dim}, "
                    f"end_dim={m.end_dim}; only Flatten(1, -1) is supported")
        elif t in _PASSIVE:
            pass
        else:
            raise UnsupportedLayerError(
                f"{what}: unsupported layer {_where(names, i, m)}; supported layers are "
                f"{_SUPPORTED} (the rescaling symmetry needs positively homogeneous, "
                f"unit-wise operations)")
    if not s.layers:
        raise ValueError(f"{what}: the model has no Linear or Conv2d layer")
    for l in range(s.num_layers - 1):
        a, b = s.layer(l), s.layer(l + 1)
        between = modules[s.layers[l] + 1:s.layers[l + 1]]
        flat_between = any(type(m) is nn.Flatten for m in between)
        if isinstance(a, nn.Linear) and isinstance(b, nn.Linear):
            if b.in_features != a.out_features:
                raise ValueError(f"{what}: {s.describe(l + 1)} takes {b.in_features} inputs "
                                 f"but {s.describe(l)} has {a.out_features} units")
            s.blocks.append(1)
        elif isinstance(a, nn.Conv2d) and isinstance(b, nn.Conv2d):
            if flat_between:
                raise UnsupportedLayerError(f"{what}: Flatten between two Conv2d layers "
                                            f"({s.describe(l)}, {s.describe(l + 1)})")
            if b.in_channels != a.out_channels:
                raise ValueError(f"{what}: {s.describe(l + 1)} takes {b.in_channels} channels "
                                 f"but {s.describe(l)} has {a.out_channels} filters")
            s.blocks.append(1)
        elif isinstance(a, nn.Conv2d) and isinstance(b, nn.Linear):
            if not flat_between:
                raise UnsupportedLayerError(f"{what}: no Flatten between {s.describe(l)} "
                                            f"and {s.describe(l + 1)}")
            if b.in_features % a.out_channels:
                raise ValueError(f"{what}: {s.describe(l + 1)} takes {b.in_features} inputs, "
                                 f"not a multiple of the {a.out_channels} channels before it")
            s.blocks.append(b.in_features // a.out_channels)
        else:
            raise UnsupportedLayerError(f"{what}: a Conv2d after a Linear "
                                        f"({s.describe(l + 1)}) is not supported")
    for i, m in enumerate(modules):
        for pname, p in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False)):
            if p.is_floating_point() and not torch.isfinite(p).all():
                raise ValueError(f"{what}: {_where(names, i, m)} has NaN or inf in '{pname}'")
    return s


def _copy_struct(model: nn.Module, what: str = "model", dtype=torch.float64) -> _Struct:
    """Deep copy in eval mode, in ``dtype`` (float64 keeps the symmetry maps exact to
    ~1e-16 before the result is cast back)."""
    _parse(model, what)  # validate before copying anything
    m = copy.deepcopy(model).eval().to(dtype)
    m.requires_grad_(False)
    return _parse(m, what)


def _to_model(s: _Struct, dtype) -> nn.Sequential:
    # returned like any fresh module: trainable parameters, eval mode
    return nn.Sequential(*s.modules).to(dtype).eval().requires_grad_(True)


def _signature(s: _Struct):
    sig = []
    for i, m in enumerate(s.modules):
        shapes = tuple((n, tuple(p.shape)) for n, p in m.named_parameters(recurse=False)
                       if p is not None)
        sig.append((type(m).__name__, shapes))
    return sig


def _check_compatible(sa: _Struct, sb: _Struct, names=("a", "b")):
    """Raise ValueError naming the first difference between two model structures."""
    ga, gb = _signature(sa), _signature(sb)
    for i, (x, y) in enumerate(zip(ga, gb)):
        if x != y:
            raise ValueError(
                f"models have different shapes: at index {i} {names[0]} has {x[0]} "
                f"{dict(x[1])} but {names[1]} has {y[0]} {dict(y[1])}")
    if len(ga) != len(gb):
        raise ValueError(f"models have different shapes: {names[0]} has {len(ga)} layers, "
                         f"{names[1]} has {len(gb)} (after flattening nested Sequentials)")


# -------------------------------------------------------------- BN folding

@torch.no_grad()
def _fold_struct(s: _Struct) -> _Struct:
    """Fold every BN into its layer and drop it; works in the struct's dtype."""
    keep = []
    bn_of = {s.layers[l]: s.bns[l] for l in range(s.num_layers) if s.bns[l] is not None}
    drop = set(bn_of.values())
    for i, m in enumerate(s.modules):
        if i in drop:
            continue
        if i in bn_of:
            bn = s.modules[bn_of[i]]
            w = m.weight
            shape = (-1,) + (1,) * (w.dim() - 1)
            scale = bn.running_var.add(bn.eps).rsqrt()
            if bn.weight is not None:
                scale = scale * bn.weight
            b = m.bias if m.bias is not None else torch.zeros_like(bn.running_mean)
            b = (b - bn.running_mean) * scale
            if bn.bias is not None:
                b = b + bn.bias
            m.weight.mul_(scale.reshape(shape))
            if m.bias is None:
                m.bias = nn.Parameter(b.clone(), requires_grad=False)
            else:
                m.bias.copy_(b)
        keep.append(m)
    return _parse(nn.Sequential(*keep))


def fold_batchnorm(model: nn.Module) -> nn.Sequential:
    r"""A new eval-mode model with every BatchNorm folded into the layer before it.

    .. math::
        W'_k = \frac{\gamma_k}{\sqrt{\sigma_k^2 + \epsilon}} W_k, \qquad
        b'_k = \frac{\gamma_k}{\sqrt{\sigma_k^2 + \epsilon}} (b_k - \mu_k) + \beta_k

    with the BN's running statistics ``μ, σ²`` (eval mode). The function is unchanged up
    to float rounding (computed in float64). A layer without a bias gets one. docs/methods.md, "The toroid (normalisation)"
    [ours]: folding makes the rescaling symmetry exact, which BN's ε otherwise breaks.
    """
    dtype = _model_dtype(model)
    return _to_model(_fold_struct(_copy_struct(model)), dtype)


# --------------------------------------------------------------- group actions

def _expand(perm: torch.Tensor, block: int) -> torch.Tensor:
    if block == 1:
        return perm
    return (perm[:, None] * block + torch.arange(block)).reshape(-1)


def _perm_targets(s: _Struct, l: int):
    """Every (module, attribute, axis, block) that moves with the units of layer l."""
    m = s.layer(l)
    t = [(m, "weight", 0, 1)]
    if m.bias is not None:
        t.append((m, "bias", 0, 1))
    bn = s.bn(l)
    if bn is not None:
        for a in ("weight", "bias", "running_mean", "running_var"):
            if getattr(bn, a, None) is not None:
                t.append((bn, a, 0, 1))
    if l + 1 < s.num_layers:
        t.append((s.layer(l + 1), "weight", 1, s.blocks[l]))
    return t


@torch.no_grad()
def _apply_perm(s: _Struct, l: int, perm) -> None:
    """Unit i of layer l becomes the old unit ``perm[i]`` (in place)."""
    perm = torch.as_tensor(np.asarray(perm), dtype=torch.long)
    for mod, attr, axis, block in _perm_targets(s, l):
        t = getattr(mod, attr)
        t.copy_(t.index_select(axis, _expand(perm, block)))


def _bcast(v: torch.Tensor, ndim: int, axis: int) -> torch.Tensor:
    shape = [1] * ndim
    shape[axis] = -1
    return v.reshape(shape)


@torch.no_grad()
def _scale_cols(s: _Struct, l: int, c: torch.Tensor) -> None:
    """Multiply the inputs of layer l+1 that come from each unit of layer l by ``c``."""
    nxt = s.layer(l + 1)
    c = _expand_vals(c, s.blocks[l])
    nxt.weight.mul_(_bcast(c.to(nxt.weight.dtype), nxt.weight.dim(), 1))


def _expand_vals(c: torch.Tensor, block: int) -> torch.Tensor:
    return c if block == 1 else c.repeat_interleave(block)


def _check_perms(s: _Struct, perms, what="perms"):
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
    dtype = _model_dtype(model)
    s = _copy_struct(model)
    _check_perms(s, perms)
    for l, p in enumerate(perms):
        _apply_perm(s, l, p)
    return _to_model(s, dtype)


def rescale(model: nn.Module, scales: Sequence) -> nn.Sequential:
    r"""A copy with each hidden unit rescaled by ``c > 0`` (the function is unchanged).

    Unit ``k`` of hidden layer ``l``: ``(w_k, b_k) ← c_k (w_k, b_k)`` and its outgoing
    weights ``← W_{l+1}[:, k] / c_k``; with BN after the layer the BN affine
    ``(γ_k, β_k)`` is scaled instead (exact, whereas scaling the weights before BN is
    not, because of ε). ``relu(c h) = c relu(h)`` for ``c > 0``: Pittorino et al. 2022
    (rescaling symmetry); docs/methods.md, "Symmetries of real-valued networks".
    """
    dtype = _model_dtype(model)
    s = _copy_struct(model)
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
                t.mul_(_bcast(c, t.dim(), 0))
            _scale_cols(s, l, 1.0 / c)
    return _to_model(s, dtype)


# ------------------------------------------------------------- normalisation

def _unit_matrix(s: _Struct, l: int) -> torch.Tensor:
    """Rows = incoming vectors ``[w_k, b_k]`` of the units of layer l."""
    m = s.layer(l)
    w = m.weight.detach().reshape(m.weight.shape[0], -1)
    if m.bias is None:
        return w
    return torch.cat([w, m.bias.detach().reshape(-1, 1)], dim=1)


@torch.no_grad()
def _normalize_struct(s: _Struct) -> None:
    """Algorithm 1 on a folded struct, in place."""
    for l in range(s.num_layers - 1):
        m = s.layer(l)
        n = _unit_matrix(s, l).norm(dim=1)
        # a unit with zero incoming vector is constant 0; leave it (and its outgoing
        # weights) as they are rather than divide by zero
        n = torch.where(n > 0, n, torch.ones_like(n))
        m.weight.div_(_bcast(n, m.weight.dim(), 0))
        if m.bias is not None:
            m.bias.div_(n)
        _scale_cols(s, l, n)
    last = s.layer(s.num_layers - 1)
    norm = _unit_matrix(s, s.num_layers - 1).norm()
    if norm > 0:
        f = math.sqrt(s.units(s.num_layers - 1)) / norm
        last.weight.mul_(f)
        if last.bias is not None:
            last.bias.mul_(f)


def _normalized_struct(model: nn.Module, what: str = "model") -> _Struct:
    s = _fold_struct(_copy_struct(model, what))
    _normalize_struct(s)
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
    dtype = _model_dtype(model)
    return _to_model(_normalized_struct(model), dtype)


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


def _perms_cosine(sa: _Struct, sb: _Struct):
    perms = []
    for l in range(sa.num_layers - 1):
        p = _lsa(_cosine(_unit_matrix(sa, l), _unit_matrix(sb, l)))
        _apply_perm(sb, l, p)
        perms.append(p)
    return perms


def _outgoing_matrix(s: _Struct, l: int) -> torch.Tensor:
    """Rows = outgoing weights of the units of layer l, (H_l, rows_{l+1} · block)."""
    w = s.layer(l + 1).weight.detach()
    w = w.reshape(w.shape[0], w.shape[1], -1)  # (out, in, k) for conv, (out, in, 1) linear
    blk = s.blocks[l]
    h = s.units(l)
    w = w.reshape(w.shape[0], h, blk * w.shape[2])
    return w.permute(1, 0, 2).reshape(h, -1)


def _perms_weights(sa: _Struct, sb: _Struct, max_iter: int, seed: int):
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
                    _apply_perm(sb, l, p)
                    perms[l] = _compose(perms[l], p)
                    changed = True
        if not changed:
            break
    return perms


def _activation_points(s: _Struct):
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
def _activation_stats(s: _Struct, x: torch.Tensor, batch_size: int):
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


def _perms_activations(sa: _Struct, sb: _Struct, data, batch_size: int, max_samples: int):
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
        _apply_perm(sb, l, p)
        perms.append(p)
    return perms


_METHODS = ("cosine", "weights", "activations")


def _aligned_structs(model, reference, method="cosine", data=None, max_iter=100, seed=0,
                     batch_size=1024, max_samples=4096):
    """(normalised reference, normalised aligned model, perms)."""
    if method not in _METHODS:
        raise ValueError(f"align: method must be one of {_METHODS}, got {method!r}")
    sa = _normalized_struct(reference, "reference")
    sb = _normalized_struct(model, "model")
    _check_compatible(sa, sb, ("reference", "model"))
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
    return _aligned_structs(model, reference, method, data, **kwargs)[2]


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
    dtype = _model_dtype(model)
    sb = _aligned_structs(model, reference, method, data, max_iter, seed, batch_size,
                          max_samples)[1]
    return _to_model(sb, dtype)
