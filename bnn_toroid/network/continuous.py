r"""The real-valued network model: a torch ``nn.Sequential`` read as a chain of layers.

This is the one way in to a real-valued network for the analysis packages:
:mod:`bnn_toroid.symmetry.continuous` (normalisation, alignment),
:mod:`bnn_toroid.geometry.continuous` (distances, interpolation),
:mod:`bnn_toroid.paths.continuous` and :mod:`bnn_toroid.landscape.continuous` all read a
model through :func:`parse` / :func:`copy_structure` and hand one back with
:func:`to_model`. Nothing here knows about a symmetry; it only says which tensors belong
to which hidden unit, so that the packages above can permute and rescale units.

Supported models are ``nn.Sequential`` (nested ones are flattened) built from
:class:`bnn_toroid.nn.Normalize`, ``Flatten``, ``Linear``, ``Conv2d`` (``groups=1``),
``BatchNorm1d/2d`` (directly after a Linear/Conv2d, with running statistics), ``ReLU``,
``MaxPool2d``, ``Dropout`` and ``Identity``. ``Dropout`` is allowed because every tool
here works in eval mode, where it is the identity (and in train mode it multiplies each
unit by a random non-negative factor, which commutes with both symmetries). Anything
else raises :class:`UnsupportedLayerError` naming the layer: an activation such as
``Tanh`` is not positively homogeneous, so the rescaling symmetry would not hold.

**BatchNorm is folded first [ours]** where a tool needs the symmetries to be exact
(:func:`fold`, :func:`fold_batchnorm`). Eval-mode BN ``γ (z − μ)/sqrt(σ² + ε) + β`` is a
per-unit affine map; folding it into the preceding layer is exact (up to float
rounding), after which rescaling is exact too (BN's ``ε`` otherwise breaks it). The
folded model has no BN modules. docs/methods.md, "The toroid (normalisation)".

The model in one picture::

    nn.Sequential  --parse / copy_structure-->  LayerStructure  --to_model-->  nn.Sequential
                                                    |   ^
                                              fold  |   |  apply_permutation, scale_outgoing
                                                    v   |  (in place, per hidden layer)
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from bnn_toroid.nn import Normalize

__all__ = [
    "UnsupportedLayerError", "LayerStructure", "BATCHNORM_TYPES", "parse", "copy_structure",
    "to_model", "fold", "fold_batchnorm", "check_compatible", "apply_permutation",
    "scale_outgoing", "per_unit", "as_tensors", "model_dtype", "misclassified", "train_error",
]


class UnsupportedLayerError(TypeError):
    """A model contains a layer that the continuous symmetry tools cannot handle."""


_PARAM_LAYERS = (nn.Linear, nn.Conv2d)
#: The BatchNorm modules a model may hold (each directly after its Linear/Conv2d).
BATCHNORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)
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


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first parameter (float32 for a model without any)."""
    for p in model.parameters():
        return p.dtype
    return torch.float32


@torch.no_grad()
def misclassified(model: nn.Module, x, y, batch_size: int = 4096) -> int:
    """How many samples ``model`` (as it is: call ``.eval()`` first) gets wrong:
    ``Σ_μ 1[argmax_c f_c(x^μ) ≠ y^μ]``, in batches of ``batch_size``, the inputs cast to
    the model's dtype. ``x, y`` are tensors (:func:`as_tensors`)."""
    dtype = model_dtype(model)
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
    return misclassified(model, x, y, batch_size) / x.shape[0]


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
class LayerStructure:
    """A validated, flattened model (built by :func:`parse`).

    ``modules`` are the flattened modules (shared with the model :func:`parse` read, or
    a private copy from :func:`copy_structure`), ``names`` their dotted names;
    ``layers[l]`` is the module index of the l-th Linear/Conv2d ("layer l", counted from
    0), ``bns[l]`` the index of the BN right after it (or None) and ``blocks[l]`` how many
    input columns of layer l+1 belong to one unit of layer l (1, or H·W at a
    conv → flatten → dense boundary). Layers ``0 .. num_layers − 2`` are the hidden
    layers, whose units carry the symmetries.
    """
    modules: list
    names: list
    layers: list = field(default_factory=list)
    bns: list = field(default_factory=list)
    blocks: list = field(default_factory=list)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def layer(self, l: int) -> nn.Module:
        """The Linear/Conv2d module of layer l."""
        return self.modules[self.layers[l]]

    def bn(self, l: int):
        """The BatchNorm module after layer l, or None."""
        i = self.bns[l]
        return None if i is None else self.modules[i]

    def units(self, l: int) -> int:
        """Units of layer l: output features of a Linear, filters of a Conv2d."""
        m = self.layer(l)
        return m.out_features if isinstance(m, nn.Linear) else m.out_channels

    def describe(self, l: int) -> str:
        """``"layer 2 (Linear at index 3, '3')"``: for error messages (counted from 1)."""
        i = self.layers[l]
        return f"layer {l + 1} ({type(self.modules[i]).__name__} at index {i}, '{self.names[i]}')"


def _where(names, i, m) -> str:
    return f"{type(m).__name__} at index {i} ('{names[i]}')"


def _check_module(s: LayerStructure, i: int, m, what: str) -> None:
    """Validate module i in the order of the chain and record it in ``s``."""
    names, modules = s.names, s.modules
    t = type(m)
    if t in _PARAM_LAYERS:
        if t is nn.Conv2d and m.groups != 1:
            raise UnsupportedLayerError(
                f"{what}: {_where(names, i, m)} has groups={m.groups}; only groups=1 "
                f"is supported (grouped filters cannot be permuted freely)")
        s.layers.append(i)
        s.bns.append(None)
    elif t in BATCHNORM_TYPES:
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
    elif t not in _PASSIVE:
        raise UnsupportedLayerError(
            f"{what}: unsupported layer {_where(names, i, m)}; supported layers are "
            f"{_SUPPORTED} (the rescaling symmetry needs positively homogeneous, "
            f"unit-wise operations)")


def _link(s: LayerStructure, l: int, what: str) -> int:
    """Check that layer l+1 reads layer l's units; return the block size (module doc)."""
    a, b = s.layer(l), s.layer(l + 1)
    between = s.modules[s.layers[l] + 1:s.layers[l + 1]]
    flat_between = any(type(m) is nn.Flatten for m in between)
    if isinstance(a, nn.Linear) and isinstance(b, nn.Linear):
        if b.in_features != a.out_features:
            raise ValueError(f"{what}: {s.describe(l + 1)} takes {b.in_features} inputs "
                             f"but {s.describe(l)} has {a.out_features} units")
        return 1
    if isinstance(a, nn.Conv2d) and isinstance(b, nn.Conv2d):
        if flat_between:
            raise UnsupportedLayerError(f"{what}: Flatten between two Conv2d layers "
                                        f"({s.describe(l)}, {s.describe(l + 1)})")
        if b.in_channels != a.out_channels:
            raise ValueError(f"{what}: {s.describe(l + 1)} takes {b.in_channels} channels "
                             f"but {s.describe(l)} has {a.out_channels} filters")
        return 1
    if isinstance(a, nn.Conv2d) and isinstance(b, nn.Linear):
        if not flat_between:
            raise UnsupportedLayerError(f"{what}: no Flatten between {s.describe(l)} "
                                        f"and {s.describe(l + 1)}")
        if b.in_features % a.out_channels:
            raise ValueError(f"{what}: {s.describe(l + 1)} takes {b.in_features} inputs, "
                             f"not a multiple of the {a.out_channels} channels before it")
        return b.in_features // a.out_channels
    raise UnsupportedLayerError(f"{what}: a Conv2d after a Linear "
                                f"({s.describe(l + 1)}) is not supported")


def parse(model: nn.Module, what: str = "model") -> LayerStructure:
    """Validate ``model`` and read it as a :class:`LayerStructure` (no copy: the
    structure's modules are the model's). Raises TypeError for a non-module,
    :class:`UnsupportedLayerError` for a layer or arrangement the tools cannot handle and
    ValueError for mismatched sizes or NaN/inf parameters; messages start with ``what``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{what}: expected a torch nn.Sequential, got {type(model).__name__}")
    if not isinstance(model, nn.Sequential):
        raise UnsupportedLayerError(
            f"{what}: expected an nn.Sequential of {_SUPPORTED}; got {type(model).__name__}")
    flat = _flatten(model)
    s = LayerStructure([m for _, m in flat], [n for n, _ in flat])
    for i, m in enumerate(s.modules):
        _check_module(s, i, m, what)
    if not s.layers:
        raise ValueError(f"{what}: the model has no Linear or Conv2d layer")
    s.blocks = [_link(s, l, what) for l in range(s.num_layers - 1)]
    for i, m in enumerate(s.modules):
        for pname, p in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False)):
            if p.is_floating_point() and not torch.isfinite(p).all():
                raise ValueError(f"{what}: {_where(s.names, i, m)} has NaN or inf in '{pname}'")
    return s


def copy_structure(model: nn.Module, what: str = "model", dtype=torch.float64) -> LayerStructure:
    """A validated deep copy of ``model`` in eval mode, without gradients, in ``dtype``
    (float64 keeps the symmetry maps exact to ~1e-16 before :func:`to_model` casts back).
    The model itself is never changed."""
    parse(model, what)  # validate before copying anything
    m = copy.deepcopy(model).eval().to(dtype)
    m.requires_grad_(False)
    return parse(m, what)


def to_model(s: LayerStructure, dtype) -> nn.Sequential:
    """The structure as a fresh ``nn.Sequential`` in ``dtype``: flat (nested containers
    are not restored), eval mode, trainable parameters. It shares the structure's modules,
    so build it last (or from a copy)."""
    return nn.Sequential(*s.modules).to(dtype).eval().requires_grad_(True)


def _signature(s: LayerStructure):
    sig = []
    for m in s.modules:
        shapes = tuple((n, tuple(p.shape)) for n, p in m.named_parameters(recurse=False)
                       if p is not None)
        sig.append((type(m).__name__, shapes))
    return sig


def check_compatible(sa: LayerStructure, sb: LayerStructure, names=("a", "b")) -> None:
    """Raise ValueError naming the first difference between two structures (module types
    and parameter shapes, after flattening); ``names`` label them in the message."""
    ga, gb = _signature(sa), _signature(sb)
    for i, (x, y) in enumerate(zip(ga, gb)):
        if x != y:
            raise ValueError(
                f"models have different architectures (different shapes): at index {i} "
                f"{names[0]} has {x[0]} {dict(x[1])} but {names[1]} has {y[0]} {dict(y[1])}")
    if len(ga) != len(gb):
        raise ValueError(f"models have different architectures (different shapes): {names[0]} "
                         f"has {len(ga)} layers, {names[1]} has {len(gb)} (after flattening "
                         f"nested Sequentials)")


# -------------------------------------------------------------- BN folding

@torch.no_grad()
def fold(s: LayerStructure) -> LayerStructure:
    r"""Fold every BN into its layer and drop it (the function is unchanged):

    .. math::
        W'_k = \frac{\gamma_k}{\sqrt{\sigma_k^2 + \epsilon}} W_k, \qquad
        b'_k = \frac{\gamma_k}{\sqrt{\sigma_k^2 + \epsilon}} (b_k - \mu_k) + \beta_k

    with the running statistics ``μ, σ²``; a layer without a bias gets one. Works in the
    structure's dtype and **consumes** ``s`` (its layers are changed in place): pass a
    :func:`copy_structure`. Returns the folded structure, without BN modules.
    """
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
    return parse(nn.Sequential(*keep))


def fold_batchnorm(model: nn.Module) -> nn.Sequential:
    r"""A new eval-mode model with every BatchNorm folded into the layer before it
    (:func:`fold`; computed in float64, returned in the model's dtype). The function is
    unchanged up to float rounding. docs/methods.md, "The toroid (normalisation)"
    [ours]: folding makes the rescaling symmetry exact, which BN's ε otherwise breaks.
    """
    s = fold(copy_structure(model))
    return to_model(s, model_dtype(model))


# --------------------------------------------------------------- unit operations

def per_unit(values: torch.Tensor, tensor: torch.Tensor, axis: int, block: int = 1) -> torch.Tensor:
    """``values`` (one per unit) shaped to broadcast against ``tensor`` along ``axis``,
    each repeated ``block`` times (a channel's H·W columns at a conv → dense boundary),
    in ``tensor``'s dtype: ``tensor.mul_(per_unit(c, tensor, 0))`` scales every unit."""
    v = values if block == 1 else values.repeat_interleave(block)
    shape = [1] * tensor.dim()
    shape[axis] = -1
    return v.to(tensor.dtype).reshape(shape)


def _expand(perm: torch.Tensor, block: int) -> torch.Tensor:
    if block == 1:
        return perm
    return (perm[:, None] * block + torch.arange(block)).reshape(-1)


def _perm_targets(s: LayerStructure, l: int):
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
def apply_permutation(s: LayerStructure, l: int, perm) -> None:
    """Permute the units of hidden layer l in place: unit i becomes the old unit
    ``perm[i]``, with its bias, its BN parameters and statistics, and its outgoing
    columns of layer l+1 (whole channel blocks at a conv → dense boundary). The function
    is unchanged."""
    perm = torch.as_tensor(np.asarray(perm), dtype=torch.long)
    for mod, attr, axis, block in _perm_targets(s, l):
        t = getattr(mod, attr)
        t.copy_(t.index_select(axis, _expand(perm, block)))


@torch.no_grad()
def scale_outgoing(s: LayerStructure, l: int, c: torch.Tensor) -> None:
    """Multiply, in place, the inputs of layer l+1 that come from each unit k of layer l
    by ``c[k]`` (the outgoing half of a rescaling)."""
    nxt = s.layer(l + 1)
    nxt.weight.mul_(per_unit(c, nxt.weight, 1, s.blocks[l]))
