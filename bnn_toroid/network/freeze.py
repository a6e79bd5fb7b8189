"""Freezing torch binary models into :class:`BinaryNetwork` (docs/methods.md, "Integer threshold form").

The model is read as a sequence of blocks

    [Normalize] [Flatten] [Sign]  (BinaryLinear | BinaryConv2d) [MaxPool2d] [BatchNorm] [Scale] Sign  ...
                                   BinaryLinear [BatchNorm] [Scale]          (output)

Each block's bias, BatchNorm (eval mode) and scales compose into one affine map
``a h + b`` of the integer pre-activation ``h``, which :func:`fold_sign_affine` turns into
an integer threshold (and a row flip when ``a < 0``). The input normalisation folds into
the first layer, so uint8 images still give integer pre-activations.
"""
from __future__ import annotations

import numpy as np
from torch import nn

from .. import kernels as K
from .. import nn as bnn
from .core import BinaryNetwork
from .layers import BatchNormRecord, Conv2d, Dense, MaxPool2d, NetworkError, fold_sign_affine

_SKIP = (nn.Identity, nn.Dropout)


def _flatten(model):
    if isinstance(model, nn.Sequential):
        out = []
        for m in model:
            out.extend(_flatten(m))
        return out
    return [model]


def _np(t):
    return t.detach().cpu().double().numpy()


class _Block:
    def __init__(self, module):
        self.module = module
        self.a = None  # composed affine on h; None means identity
        self.b = None
        self.pool = None
        self.pool_before_affine = False
        self.signed = False
        self.bn = None   # (gamma, beta, eps, after_pool) of the block's BatchNorm

    def affine(self, a, b):
        n = self.module.out_features if isinstance(self.module, nn.Linear) else self.module.out_channels
        a = np.broadcast_to(np.asarray(a, np.float64), (n,))
        b = np.broadcast_to(np.asarray(b, np.float64), (n,))
        if self.a is None:
            self.a, self.b = np.ones(n), np.zeros(n)
        self.a, self.b = a * self.a, a * self.b + b


def _blocks(model):
    mods = [m for m in _flatten(model) if not isinstance(m, _SKIP)]
    norm, binarize = None, False
    blocks: list[_Block] = []
    for idx, m in enumerate(mods):
        where = f"module {idx} ({type(m).__name__})"
        cur = blocks[-1] if blocks else None
        if isinstance(m, bnn.Normalize):
            if blocks or binarize:
                raise NetworkError(f"{where}: Normalize is only supported before the first binary layer")
            norm = m
        elif isinstance(m, nn.Flatten):
            pass  # the packed layout flattens implicitly
        elif isinstance(m, bnn.Sign):
            if cur is None:
                binarize = True
            elif cur.signed:
                raise NetworkError(f"{where}: two Sign modules in a row")
            else:
                cur.signed = True
        elif isinstance(m, (bnn.BinaryLinear, bnn.BinaryConv2d)):
            if cur is not None and not cur.signed:
                raise NetworkError(f"{where}: the previous binary layer's output is not binarised by "
                                   "a Sign module; a frozen network needs ±1 activations between layers")
            blocks.append(_Block(m))
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if cur is None or cur.signed:
                raise NetworkError(f"{where}: BatchNorm must sit between a binary layer and its Sign")
            if m.training:
                raise NetworkError(f"{where}: BatchNorm is in training mode; call model.eval() first")
            if m.running_mean is None:
                raise NetworkError(f"{where}: BatchNorm without running statistics cannot be frozen")
            inv = 1.0 / np.sqrt(_np(m.running_var) + m.eps)
            g = _np(m.weight) if m.affine else np.ones_like(inv)
            beta = _np(m.bias) if m.affine else np.zeros_like(inv)
            cur.affine(g * inv, beta - g * inv * _np(m.running_mean))
            cur.bn = (g, beta, float(m.eps), cur.pool is not None)
        elif isinstance(m, bnn.Scale):
            if cur is None or cur.signed:
                raise NetworkError(f"{where}: Scale must follow a binary layer")
            cur.affine(float(m.value), 0.0)
        elif isinstance(m, nn.MaxPool2d):
            if cur is None or not isinstance(cur.module, bnn.BinaryConv2d) or cur.pool is not None:
                raise NetworkError(f"{where}: MaxPool2d must follow a BinaryConv2d (once)")
            ks, st = m.kernel_size, m.stride
            ks = ks if isinstance(ks, int) else ks[0]
            st = st if isinstance(st, int) else st[0]
            if m.padding not in (0, (0, 0)) or m.dilation not in (1, (1, 1)) or m.ceil_mode:
                raise NetworkError(f"{where}: only unpadded, undilated, floor-mode pooling is supported")
            cur.pool = MaxPool2d(ks, st)
            cur.pool_before_affine = cur.a is None and not cur.signed
        else:
            raise NetworkError(f"{where}: {type(m).__name__} is not supported in a binary network "
                               "(expected Normalize, Flatten, Sign, BinaryLinear, BinaryConv2d, "
                               "BatchNorm1d/2d, MaxPool2d, Scale)")
    if not blocks:
        raise NetworkError("the model has no BinaryLinear or BinaryConv2d layer")
    if blocks[-1].signed:
        raise NetworkError("the last binary layer ends in Sign; the output layer must give logits")
    for blk in blocks[:-1]:
        if not blk.signed:
            raise NetworkError(f"{type(blk.module).__name__} is followed by another layer without a Sign")
    return norm, binarize, blocks


def _check_finite(model):
    """NaN or ±inf in a parameter or buffer would freeze silently (a NaN latent weight
    reads as -1, a NaN statistic folds into some threshold): refuse them by name."""
    for idx, m in enumerate(_flatten(model)):
        tensors = list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False))
        for name, t in tensors:
            if t is None or not t.is_floating_point():
                continue
            v = t.detach()
            n_nan, n_inf = int(v.isnan().sum()), int(v.isinf().sum())
            if n_nan or n_inf:
                what = " and ".join(f"{c} {w}" for c, w in ((n_nan, "NaN"), (n_inf, "infinite"))
                                    if c)
                raise NetworkError(f"from_torch: module {idx} ({type(m).__name__}) {name} holds "
                                   f"{what} value{'s' if n_nan + n_inf > 1 else ''} of {v.numel()}; "
                                   "expected finite numbers (did training diverge?)")


def _norm_stats(norm, channels):
    mean = _np(norm.mean).reshape(-1)
    std = _np(norm.std).reshape(-1)
    if mean.size not in (1, channels):
        raise NetworkError(f"Normalize has {mean.size} statistics but the input has {channels} channels")
    return np.broadcast_to(mean, (channels,)).copy(), np.broadcast_to(std, (channels,)).copy()


def from_torch(model, input_shape=None, input_layout=None) -> BinaryNetwork:
    """Freeze a torch binary model (eval mode) into a :class:`BinaryNetwork`.

    Folds BatchNorm, biases, :class:`~bnn_toroid.nn.Scale` and the input
    :class:`~bnn_toroid.nn.Normalize` into integer thresholds (docs/methods.md, "First layer on real input"), packs the
    weights and keeps torch's semantics exactly: the frozen network's integer
    pre-activations equal the torch model's, and so do its logits up to float64 vs
    float32 rounding of the output affine.

    Args:
        model: an ``nn.Sequential`` of the modules of :mod:`bnn_toroid.nn`.
        input_shape: one sample's shape; defaults to ``model.input_shape`` or, for
            dense-only models, ``(in_features,)``. Conv models take NCHW samples.
        input_layout: override the layout (default: ``"NCHW"`` for conv models,
            ``"flat"`` otherwise).

    Raises :class:`NetworkError` for unsupported modules, a model in training mode, and
    NaN or infinite values in any parameter or buffer (latent weights, biases,
    BatchNorm statistics, the input normalisation).
    """
    if not isinstance(model, nn.Module):
        raise NetworkError(f"from_torch: expected a torch nn.Module, got {type(model).__name__}")
    if model.training:
        raise NetworkError("from_torch: the model is in training mode (BatchNorm would use batch "
                           "statistics); call model.eval() first")
    _check_finite(model)
    norm, binarize, blocks = _blocks(model)
    if norm is not None and binarize:
        # sign((x - m) / s) is sign(x - m); the frozen network binarises raw inputs at 0
        raise NetworkError("from_torch: a Normalize before the input Sign is not supported (the frozen "
                           "network binarises raw inputs as x >= 0); drop input_norm or binarise "
                           "inputs that are already centred")
    first = blocks[0].module
    conv_model = any(isinstance(b.module, bnn.BinaryConv2d) for b in blocks)
    if input_shape is None:
        input_shape = getattr(model, "input_shape", None)
    if input_shape is None:
        if conv_model:
            raise NetworkError("from_torch: a conv model needs input_shape=(C, H, W)")
        input_shape = (first.in_features,)
    input_shape = tuple(int(v) for v in input_shape)
    layout = input_layout or ("NCHW" if conv_model else "flat")
    if conv_model and layout == "flat":
        raise NetworkError("from_torch: conv models take image inputs; use input_layout 'NCHW' or 'NHWC'")
    if conv_model:
        c_in = input_shape[0] if layout == "NCHW" else input_shape[2]
        hw = input_shape[1:] if layout == "NCHW" else input_shape[:2]
        geom = (int(hw[0]), int(hw[1]), int(c_in))
    else:
        geom = (int(np.prod(input_shape)),)
        c_in = input_shape[0] if (len(input_shape) == 3 and norm is not None and norm.mean.numel() > 1) else 1

    input_scale = None
    std_scale = 1.0
    layers = []
    for bi, blk in enumerate(blocks):
        m = blk.module
        last = bi == len(blocks) - 1
        w = np.where(_np(m.weight) >= 0, 1, -1).astype(np.int8)
        n = w.shape[0]
        a = np.ones(n) if blk.a is None else blk.a
        b = np.zeros(n) if blk.b is None else blk.b
        bias = np.zeros(n) if m.bias is None else _np(m.bias)
        b = b + a * bias
        if isinstance(m, bnn.BinaryConv2d):
            w = w.transpose(0, 2, 3, 1)  # (F, C, kh, kw) -> (F, kh, kw, C)
        elif len(geom) == 3:
            h_, w_, c_ = geom  # torch flattens CHW; the packed layout is HWC
            w = w.reshape(n, c_, h_, w_).transpose(0, 2, 3, 1).reshape(n, -1)
        pad_value = getattr(m, "pad_value", 0.0)
        real = bi == 0 and not binarize
        if real and norm is not None:
            # h_torch = w·((x - m)/s) = Σ_c (1/s_c) w_c·x_c - Σ_c (m_c/s_c) Σ w_c
            chans = geom[2] if len(geom) == 3 else c_in
            mean, std = _norm_stats(norm, chans)
            if isinstance(m, bnn.BinaryConv2d):
                wsum = w.sum(axis=(1, 2))  # (F, C)
            elif len(input_shape) == 3 and chans > 1:
                wsum = w.reshape(n, chans, -1).sum(axis=2) if layout != "NHWC" else \
                    w.reshape(n, -1, chans).sum(axis=1)
            else:
                wsum = w.reshape(n, -1).sum(axis=1, keepdims=True)
            b = b - a * (wsum * (mean / std)[None, :]).sum(axis=1)
            if np.allclose(std, std[0], rtol=0, atol=0):
                a = a / std[0]
                std_scale = float(std[0])
            elif isinstance(m, bnn.BinaryConv2d) or len(geom) == 3 or len(input_shape) == 3:
                input_scale = 1.0 / std if len(geom) == 3 else np.repeat(1.0 / std, geom[0] // chans)
            else:
                raise NetworkError("from_torch: per-channel input normalisation needs image-shaped input_shape")
            # torch pads the *normalised* input with pad_value; in raw units that is p*s + m
            pad_value = pad_value * std + mean if isinstance(m, bnn.BinaryConv2d) else pad_value
            if isinstance(m, bnn.BinaryConv2d) and np.allclose(pad_value, pad_value[0], rtol=0, atol=0):
                pad_value = float(pad_value[0])
        if last:
            layers.append(Dense(w, out_scale=a, out_bias=b) if isinstance(m, bnn.BinaryLinear) else None)
            if layers[-1] is None:
                raise NetworkError("from_torch: the output layer must be a BinaryLinear")
            break
        # On real input h is real (or an integer held in a float): keep the exact bound.
        w_f, t, flipped = fold_sign_affine(w, a, b, integer=not real)
        bn = None
        if blk.bn is not None:
            g, beta, eps, after_pool = blk.bn
            with np.errstate(divide="ignore"):
                ratio = np.where(g != 0, beta / np.abs(np.where(g != 0, g, 1.0)),
                                 np.where(beta >= 0, np.inf, -np.inf))
            # h here is in raw input units when a scalar input std was folded (a /= std).
            s_in = std_scale if real else 1.0
            bn = BatchNormRecord(ratio, eps * s_in ** 2, after_pool)
        if isinstance(m, bnn.BinaryLinear):
            layers.append(Dense(w_f, threshold=t, bn=bn))
            geom = (n,)
        else:
            layers.append(Conv2d(w_f, threshold=t, stride=tuple(m.stride), padding=m.pad_mode,
                                 pad_value=pad_value, bn=bn))
            _, (ho, wo) = K.conv_pads(geom[0], geom[1], w.shape[1], w.shape[2], tuple(m.stride), m.pad_mode)
            geom = (ho, wo, n)
            if blk.pool is not None:
                mask = flipped if blk.pool_before_affine else np.zeros(n, bool)
                layers.append(MaxPool2d(blk.pool.size, blk.pool.stride, min_channels=mask))
                geom = ((ho - blk.pool.size) // blk.pool.stride + 1,
                        (wo - blk.pool.size) // blk.pool.stride + 1, n)
    return BinaryNetwork(layers, input_shape, layout, binarize_input=binarize, input_scale=input_scale)

