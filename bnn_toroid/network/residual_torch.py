r"""A :class:`~.residual.ResidualBinaryNetwork` from a torch model, traced with ``torch.fx``.

The model is a torch twin of a residual binary network: real-valued layers of
``torch.nn`` and the binary layers of :mod:`bnn_toroid.nn` (``Sign`` then
``BinaryConv2d``: ``BinaryConv2d(sign(x))``, the ±1 filters ``sign(weight)``, padding after
the sign with ``pad_value``), joined by ``+`` for residual blocks (Bi-Real Net, Liu et al.,
ECCV 2018: ``x + BN(conv(sign x))``; QuickNet, Bannink et al., MLSys 2021:
``x + BN(ReLU(conv(sign x)))``). The binary layers are fx leaf modules. Read, in NCHW:

- ``bnn_toroid.nn.Sign`` followed by ``bnn_toroid.nn.BinaryConv2d`` (its bias an affine);
- ``nn.Conv2d`` (zero padding, any ``groups``: depthwise too; no dilation);
- ``nn.BatchNorm2d`` / ``BatchNorm1d`` with their running statistics (eval-mode
  semantics), folded to ``Affine(γ/√(σ²+ε), β − μγ/√(σ²+ε))``;
- ``nn.ReLU`` / ``F.relu``, ``nn.PReLU``, ``nn.MaxPool2d``, ``nn.AvgPool2d`` (no padding
  or ``count_include_pad=False``), ``nn.AdaptiveAvgPool2d(1)``, ``nn.Flatten`` /
  ``torch.flatten`` / ``.flatten(1)``, ``nn.Linear``, ``nn.Identity``, ``nn.Dropout``;
- ``a + b`` of two branches that fork from one tensor: a
  :class:`~.residual_ops.Residual` (nested residual blocks are refused).

Anything else raises :class:`~.layers.NetworkError` naming the fx node and its target.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, replace

import numpy as np

from .layers import NetworkError
from . import residual_ops as R

__all__ = ["from_torch"]


@dataclass(frozen=True)
class _T:
    ops: tuple
    shape: tuple               # NHWC semantics: (H, W, C) or (features,)
    binary: bool = False
    nchw_flat: tuple | None = None   # (H, W, C) of a map flattened in NCHW order
    gap: bool = False          # (N, C, 1, 1) after AdaptiveAvgPool2d(1)


def _np(t):
    return t.detach().cpu().double().numpy()


def _merge(where, a: _T, b: _T) -> _T:
    if a.shape != b.shape or a.binary or b.binary:
        raise NetworkError(f"{where}: adds tensors of shapes {a.shape} and {b.shape}; expected "
                           "two real-valued branches of the same shape")
    i = 0
    while i < min(len(a.ops), len(b.ops)) and a.ops[i] is b.ops[i]:
        i += 1
    ra, rb = a.ops[i:], b.ops[i:]
    if any(isinstance(o, R.Residual) for o in ra + rb):
        raise NetworkError(f"{where}: adds branches that hold residual blocks themselves; nested "
                           "residual blocks are not supported")
    if not ra and not rb:
        raise NetworkError(f"{where}: adds a tensor to itself")
    has = lambda ops: any(isinstance(o, R.BinaryConv) for o in ops)  # noqa: E731
    if not ra or (not has(ra) and has(rb)):
        ra, rb = rb, ra
    return replace(a, ops=a.ops[:i] + (R.Residual(ra, rb),))


def _push(where, x: _T, op) -> _T:
    if x.binary and not isinstance(op, R.BinaryConv):
        raise NetworkError(f"{where}: reads the output of bnn_toroid.nn.Sign; expected a "
                           "BinaryConv2d to read signs")
    try:
        shape = op.out_shape(x.shape)
    except NetworkError as e:
        raise NetworkError(f"{where}: {e}") from None
    return _T(x.ops + (op,), shape)


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _module(where, m, x: _T) -> _T:
    import torch.nn as nn
    from .. import nn as bnn
    if isinstance(m, (nn.Identity, nn.Dropout)):
        return x
    if isinstance(m, bnn.Sign):
        if x.binary or len(x.shape) != 3:
            raise NetworkError(f"{where}: Sign of {'signs' if x.binary else 'a vector'}; "
                               "expected a map of the stream (its signs feed a BinaryConv2d)")
        return replace(x, binary=True)
    if isinstance(m, bnn.BinaryConv2d):
        if not x.binary:
            raise NetworkError(f"{where}: BinaryConv2d of a real-valued tensor; expected "
                               "bnn_toroid.nn.Sign before it (the binary input)")
        if tuple(m.dilation) != (1, 1) or m.groups != 1:
            raise NetworkError(f"{where}: BinaryConv2d with dilation or groups")
        w = np.where(_np(m.weight) >= 0, 1, -1).astype(np.int8).transpose(0, 2, 3, 1)
        op = R.BinaryConv(w, None, stride=tuple(m.stride), padding=m.pad_mode,
                          pad_value=int(m.pad_value))
        y = _push(where, replace(x, binary=False), op)
        if m.bias is not None:
            y = _push(where, y, R.Affine(np.ones(w.shape[0]), _np(m.bias)))
        return y
    if isinstance(m, nn.Conv2d):
        if m.padding_mode != "zeros" or tuple(m.dilation) != (1, 1):
            raise NetworkError(f"{where}: Conv2d with padding_mode {m.padding_mode!r} or "
                               f"dilation {m.dilation}; expected zero padding, no dilation")
        if isinstance(m.padding, str):
            if m.padding == "same" and tuple(m.stride) == (1, 1) and all(k % 2 for k in m.kernel_size):
                pads = (m.kernel_size[0] // 2,) * 2 + (m.kernel_size[1] // 2,) * 2
            elif m.padding == "valid":
                pads = (0, 0, 0, 0)
            else:
                raise NetworkError(f"{where}: Conv2d padding {m.padding!r} with an even kernel or "
                                   "a stride; expected explicit padding")
        else:
            ph, pw = _pair(m.padding)
            pads = (ph, ph, pw, pw)
        op = R.RealConv(_np(m.weight).transpose(0, 2, 3, 1),
                        None if m.bias is None else _np(m.bias), stride=tuple(m.stride),
                        padding=pads, groups=m.groups)
        return _push(where, x, op)
    if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
        if m.running_mean is None:
            raise NetworkError(f"{where}: BatchNorm without running statistics")
        s = 1.0 / np.sqrt(_np(m.running_var) + m.eps)
        g = _np(m.weight) if m.affine else np.ones_like(s)
        b = _np(m.bias) if m.affine else np.zeros_like(s)
        return _push(where, x, R.Affine(g * s, b - _np(m.running_mean) * g * s))
    if isinstance(m, nn.ReLU):
        return _push(where, x, R.ReLU())
    if isinstance(m, nn.PReLU):
        a = _np(m.weight).reshape(-1)
        return _push(where, x, R.PReLU(np.broadcast_to(a, (x.shape[-1],)).copy()))
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        k, s, p = _pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding)
        if m.ceil_mode or (isinstance(m, nn.MaxPool2d) and _pair(m.dilation) != (1, 1)):
            raise NetworkError(f"{where}: {type(m).__name__} with ceil_mode or dilation")
        if isinstance(m, nn.AvgPool2d) and any(p) and m.count_include_pad:
            raise NetworkError(f"{where}: AvgPool2d with padding and count_include_pad=True; "
                               "expected count_include_pad=False (pads not counted)")
        cls = R.MaxPool if isinstance(m, nn.MaxPool2d) else R.AvgPool
        return _push(where, x, cls(k, s, (p[0], p[0], p[1], p[1])))
    if isinstance(m, nn.AdaptiveAvgPool2d):
        if _pair(m.output_size) != (1, 1):
            raise NetworkError(f"{where}: AdaptiveAvgPool2d({m.output_size}); expected 1")
        return replace(_push(where, x, R.GlobalAvgPool()), gap=True)
    if isinstance(m, nn.Flatten):
        return _flatten(where, x, m.start_dim)
    if isinstance(m, nn.Linear):
        return _linear(where, x, _np(m.weight), None if m.bias is None else _np(m.bias))
    raise NetworkError(f"{where}: module {type(m).__name__} is not supported (expected "
                       "bnn_toroid.nn Sign/BinaryConv2d or Conv2d, BatchNorm, ReLU, PReLU, "
                       "MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1), Flatten, Linear)")


def _flatten(where, x: _T, start=1):
    if start != 1:
        raise NetworkError(f"{where}: flatten from dim {start}; expected 1")
    if x.binary:
        raise NetworkError(f"{where}: flattening signs")
    if len(x.shape) == 1:
        return replace(x, gap=False)
    h, w, c = x.shape
    return _T(x.ops, (h * w * c,), nchw_flat=(h, w, c) if h * w > 1 and c > 1 else None)


def _linear(where, x: _T, w, b):
    if len(x.shape) != 1 or x.gap:
        raise NetworkError(f"{where}: Linear of a map; expected a Flatten before it")
    if x.nchw_flat is not None:  # torch flattens NCHW; RealDense reads NHWC order
        h, ww, c = x.nchw_flat
        w = w.reshape(-1, c, h, ww).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
    return _push(where, replace(x, nchw_flat=None), R.RealDense(w, b))


def from_torch(model, input_shape):
    """The :class:`~.residual.ResidualBinaryNetwork` of ``model`` (module doc) for NCHW
    samples of ``input_shape`` (C, H, W), which fixes every padding and map size.
    Its logits equal ``model.eval()(x)`` in float64."""
    import torch
    import torch.fx as fx
    from .. import nn as bnn
    from .residual import ResidualBinaryNetwork

    class _Tracer(fx.Tracer):
        def is_leaf_module(self, m, name):
            return isinstance(m, (bnn.Sign, bnn.BinaryConv2d)) or super().is_leaf_module(m, name)

    input_shape = tuple(int(v) for v in input_shape)
    if len(input_shape) != 3:
        raise NetworkError(f"from_torch: input_shape must be (C, H, W), got {input_shape}")
    try:
        graph = _Tracer().trace(model)
    except Exception as e:
        raise NetworkError(f"from_torch: torch.fx cannot trace the model: {e}") from e
    mods = dict(model.named_modules())
    c, h, w = input_shape
    vals, out = {}, None
    for node in graph.nodes:
        where = f"from_torch: fx node {node.name!r} ({node.op} {node.target!r})"
        args = [vals.get(a.name) if isinstance(a, fx.Node) else a for a in node.args]
        if node.op == "placeholder":
            if vals:
                raise NetworkError(f"{where}: a second input; expected one")
            vals[node.name] = _T((), (h, w, c))
        elif node.op == "call_module":
            vals[node.name] = _module(where, mods[node.target], args[0])
        elif node.op == "call_function" and node.target in (operator.add, torch.add) \
                and len(args) == 2 and all(isinstance(a, _T) for a in args):
            vals[node.name] = _merge(where, *args)
        elif (node.op == "call_function" and node.target is torch.flatten) or (
                node.op == "call_method" and node.target == "flatten"):
            start = args[1] if len(args) > 1 else node.kwargs.get("start_dim", 0 if node.op ==
                                                                   "call_function" else 0)
            vals[node.name] = _flatten(where, args[0], start)
        elif (node.op == "call_function" and node.target in (torch.relu,
                                                               torch.nn.functional.relu)) or (
                node.op == "call_method" and node.target == "relu"):
            vals[node.name] = _push(where, args[0], R.ReLU())
        elif node.op == "output":
            out = args[0]
        else:
            raise NetworkError(f"{where} is not supported (expected modules, '+' of two "
                               "branches, flatten or relu)")
        if node.op != "output" and not isinstance(vals.get(node.name), _T):
            raise NetworkError(f"{where}: does not act on the network's tensor")
    if not isinstance(out, _T) or len(out.shape) != 1 or out.gap:
        raise NetworkError("from_torch: the model's output is not a vector of logits")
    return ResidualBinaryNetwork(out.ops, input_shape, "NCHW")
