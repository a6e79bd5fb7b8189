"""Linear layers: ``MatMul``, ``Gemm`` and ``Conv`` with a constant ±1 kernel.

A layer's kernel is split into a ±1 kernel and one magnitude per unit (tf2onnx fuses a
BatchNorm into conv kernels); its output is a pre-activation ``a*h + b``
(:class:`~bnn_toroid.onnx.values._Lin`) that later affine ops update and a binarisation
folds into thresholds. The first layer fixes the input's layout (NHWC, NCHW or flat)
and folds the input's per-channel scale and offset; conv padding must amount to
TensorFlow's 'valid' or 'same'.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .common import OnnxImportError, describe, op, tf_same
from .values import _Act, _Lin, is_padded


def pm1_kernel(w: np.ndarray, unit_axis: int, node, name: str):
    """Split a kernel into ``mag[u] * k`` with ``k`` ±1 (int8, units first) and ``mag >= 0``.

    tf2onnx fuses a following BatchNorm into a conv kernel, which makes each filter a
    multiple of a ±1 filter. A filter of all zeros (BN gamma 0) gets ``k = +1, mag = 0``.
    Anything else (mixed magnitudes, zeros, NaN) is not a binary kernel.
    """
    w = np.moveaxis(np.asarray(w, dtype=np.float64), unit_axis, 0)
    flat = w.reshape(w.shape[0], -1)
    if not np.all(np.isfinite(flat)):
        raise OnnxImportError(f"{describe(node)}: kernel {name!r} holds NaN or inf; expected ±1")
    mag = np.abs(flat).max(axis=1) if flat.shape[1] else np.zeros(flat.shape[0])
    ok = np.abs(np.abs(flat) - mag[:, None]) <= 1e-6 * mag[:, None]
    bad = ~np.all(ok, axis=1)
    if np.any(bad):
        u = int(np.flatnonzero(bad)[0])
        vals = np.unique(flat[u])[:6]
        raise OnnxImportError(
            f"{describe(node)}: kernel {name!r} is not binary: unit {u} holds the values "
            f"{vals.tolist()}...; expected ±1 (or ±s for one s per unit, a BatchNorm fused "
            "into a ±1 kernel)")
    k = np.where(flat >= 0, 1, -1).astype(np.int8).reshape(w.shape)
    return k, mag


def layer_input(imp, node, x):
    """``x`` as the input of a linear layer: the real input (first layer only) or a ±1
    activation, never a pre-activation without a binarisation."""
    if isinstance(x, _Act):
        if not x.binary and imp.first_layer_done:
            raise OnnxImportError(f"{describe(node)}: real-valued input to a later layer")
        if imp.first_layer_done and x.from_input:
            raise OnnxImportError(f"{describe(node)}: the input feeds two layers")
        return x
    if isinstance(x, _Lin):
        raise OnnxImportError(
            f"{describe(node)}: its input is the pre-activation of layer {x.node!r} with no "
            "binarisation in between (expected larq's ste_sign: Sign -> Add -> Sign, or "
            "Where(x >= t, 1, -1))")
    raise OnnxImportError(f"{describe(node)}: unexpected input kind "
                          f"{type(x).__name__.strip('_')}")


def input_vectors(x, node, per_channel_axis):
    """Input scale/offset as per-channel vectors (error if they vary per pixel)."""
    sc, off = x.scale, x.offset
    ax = per_channel_axis
    s2 = np.moveaxis(sc, ax, 0).reshape(sc.shape[ax], -1)
    o2 = np.moveaxis(off, ax, 0).reshape(off.shape[ax], -1)
    if not (np.all(s2 == s2[:, :1]) and np.all(o2 == o2[:, :1])):
        raise OnnxImportError(f"{describe(node)}: input scaling is not per channel")
    return s2[:, 0].copy(), o2[:, 0].copy()


def bind_input_layout(imp, node, axes):
    """The spatial input's layout, from the roles its axes take at the first layer."""
    if imp.input_layout is not None:
        return
    if axes == ("i2", "i0", "i1"):
        imp.input_layout = "NHWC"
    elif axes == ("i0", "i1", "i2"):
        imp.input_layout = "NCHW"
    else:
        raise OnnxImportError(f"{describe(node)}: the input reaches the conv with axes "
                              f"permuted as {axes}; expected NHWC or NCHW input")
    imp.input_shape = imp.raw_input_shape


def set_input_scale(imp, scale, node):
    """Record the first layer's positive input scale (None when all ones)."""
    if np.any(scale <= 0):
        raise OnnxImportError(f"{describe(node)}: non-positive input scale")
    imp.input_scale = None if np.all(scale == 1) else scale.astype(np.float64)


@op("MatMul")
def _op_MatMul(imp, node, ins, attrs):
    x, w = ins
    if not isinstance(w, np.ndarray):
        raise OnnxImportError(f"{describe(node)}: the kernel (second operand) must be a "
                              "constant")
    x = layer_input(imp, node, x)
    return dense(imp, node, x, w, transposed=False, alpha=1.0, bias=None)


@op("Gemm")
def _op_Gemm(imp, node, ins, attrs):
    x, w = ins[0], ins[1]
    if attrs.get("transA", 0):
        raise OnnxImportError(f"{describe(node)}: Gemm with transA=1")
    if not isinstance(w, np.ndarray):
        raise OnnxImportError(f"{describe(node)}: the kernel B must be a constant")
    bias = None
    if len(ins) > 2 and ins[2] is not None:
        bias = float(attrs.get("beta", 1.0)) * np.asarray(ins[2], dtype=np.float64)
    x = layer_input(imp, node, x)
    return dense(imp, node, x, w, transposed=bool(attrs.get("transB", 0)),
                 alpha=float(attrs.get("alpha", 1.0)), bias=bias)


def dense(imp, node, x: _Act, w, transposed, alpha, bias):
    """The pre-activation of a dense layer ``alpha * x @ w + bias`` on a flat input, with
    the kernel's columns in the network's (NHWC) feature order."""
    if x.axes != ("F",):
        raise OnnxImportError(f"{describe(node)}: dense layer on a (N, {x.shape}) tensor; "
                              "flatten it first")
    w = np.asarray(w)
    if w.ndim != 2:
        raise OnnxImportError(f"{describe(node)}: kernel of rank {w.ndim}; expected 2")
    k, mag = pm1_kernel(w, 0 if transposed else 1, node, node.input[1])
    units, nin = k.shape
    if nin != x.shape[0]:
        raise OnnxImportError(f"{describe(node)}: kernel expects {nin} inputs, the "
                              f"tensor has {x.shape[0]}")
    idx = np.arange(nin)
    if x.flat_from is not None:
        axes, shape = x.flat_from
        if axes[0].startswith("i"):  # the network input, flattened for a dense layer
            canon = declare_input_for_dense(imp, axes)
        else:
            canon = ("H", "W", "C")
        if set(axes) != set(canon):
            raise OnnxImportError(f"{describe(node)}: flattened axes {axes} not understood")
        idx = np.arange(nin).reshape(shape).transpose([axes.index(r) for r in canon]).ravel()
    kc = k[:, idx].astype(np.int8)
    b = np.zeros(units) if bias is None else np.broadcast_to(bias, (units,)).astype(np.float64)
    a = alpha * mag
    if x.binary:
        if x.neg is not None:
            kc = np.where(x.neg.reshape(-1)[idx][None, :], -kc, kc).astype(np.int8)
    else:
        sc = x.scale.reshape(-1)[idx]  # canonical order
        of = x.offset.reshape(-1)[idx]
        if np.any(sc == 0):
            raise OnnxImportError(f"{describe(node)}: an input feature is scaled by 0")
        # h_file = sum_j k_j (s_j x_j + o_j) = sum_j (k_j sign s_j) |s_j| x_j + k . o
        b = b + a * (kc.astype(np.float64) @ of)
        kc = np.where((sc < 0)[None, :], -kc, kc).astype(np.int8)
        sc = np.abs(sc)
        if x.flat_from is not None and imp.input_layout in ("NHWC", "NCHW"):
            # image input, dense first: one scale per channel
            s2 = sc.reshape(-1, imp.raw_input_shape[0] if imp.input_layout == "NCHW"
                            else imp.raw_input_shape[-1])
            if not np.all(s2 == s2[:1]):
                raise OnnxImportError(f"{describe(node)}: the input scaling of a spatial "
                                      "input must be one value per channel")
            sc = s2[0].copy()
        set_input_scale(imp, sc, node)
    imp.first_layer_done = True
    return _Lin("dense", kc, a.astype(np.float64), b, x.binary, (units,), ("F",),
                node.name)


def declare_input_for_dense(imp, axes):
    """Layout of an image input whose first layer is dense, from its flattening order:
    (C, H, W) moved to (H, W, C) first means NCHW; else NHWC (flat for other ranks).
    Returns the canonical (NHWC) order of the input's axes."""
    if len(axes) == 3 and tuple(axes) == ("i1", "i2", "i0"):
        layout, canon = "NCHW", ("i1", "i2", "i0")
    else:
        layout = "NHWC" if len(axes) == 3 else "flat"
        canon = tuple(f"i{j}" for j in range(len(axes)))
    if imp.input_layout is None:
        imp.input_layout, imp.input_shape = layout, imp.raw_input_shape
    return canon


@op("Conv")
def _op_Conv(imp, node, ins, attrs):
    x, w = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    if not isinstance(w, np.ndarray):
        raise OnnxImportError(f"{describe(node)}: the kernel must be a constant")
    x = layer_input(imp, node, x)
    w = np.asarray(w)
    if w.ndim != 4 or len(x.shape) != 3:
        raise OnnxImportError(f"{describe(node)}: only 2-D convolutions are supported")
    if attrs.get("group", 1) != 1:
        raise OnnxImportError(f"{describe(node)}: grouped convolution (group="
                              f"{attrs['group']})")
    if any(d != 1 for d in attrs.get("dilations", [1, 1])):
        raise OnnxImportError(f"{describe(node)}: dilated convolution")
    sy, sx = (int(v) for v in attrs.get("strides", [1, 1]))
    m, c, kh, kw = w.shape
    if "kernel_shape" in attrs and list(attrs["kernel_shape"]) != [kh, kw]:
        raise OnnxImportError(f"{describe(node)}: kernel_shape does not match the kernel")
    if x.shape[0] != c:
        raise OnnxImportError(f"{describe(node)}: kernel has {c} input channels, the "
                              f"tensor (N, {x.shape}) has {x.shape[0]} on axis 1")
    axes = x.axes
    if axes[0].startswith("i"):
        bind_input_layout(imp, node, axes)
    elif axes != ("C", "H", "W"):
        raise OnnxImportError(f"{describe(node)}: conv input has axes {axes}; expected "
                              "NCHW (a Transpose is missing?)")
    pad = x.pad if x.pad is not None else [(0, 0)] * 3
    if pad[0] != (0, 0):
        raise OnnxImportError(f"{describe(node)}: the channel axis is padded")
    H, W = x.shape[1] - sum(pad[1]), x.shape[2] - sum(pad[2])
    explicit = is_padded(x)
    auto = attrs.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        ph, pw = tf_same(x.shape[1], kh, sy), tf_same(x.shape[2], kw, sx)
        if auto == "SAME_LOWER":
            ph, pw = ph[::-1], pw[::-1]
        cp = [ph[0], pw[0], ph[1], pw[1]]
    elif auto == "VALID":
        cp = [0, 0, 0, 0]
    elif auto == "NOTSET":
        cp = [int(p) for p in attrs.get("pads", [0, 0, 0, 0])]
    else:
        raise OnnxImportError(f"{describe(node)}: auto_pad {auto!r}")
    # conv pads are zeros in the file's current units: raw value -offset/scale
    zero_raw = np.zeros((c, H, W)) if x.binary else -x.offset / x.scale
    if any(cp) and explicit and not np.all(x.pad_raw == zero_raw):
        raise OnnxImportError(f"{describe(node)}: conv zero padding after a Pad with "
                              "a nonzero value")
    fill = x.pad_raw if explicit else zero_raw
    tot_h = (pad[1][0] + cp[0], pad[1][1] + cp[2])
    tot_w = (pad[2][0] + cp[1], pad[2][1] + cp[3])
    hint = imp.conv_hints[imp.n_conv] if imp.n_conv < len(imp.conv_hints) else None
    imp.n_conv += 1
    if tot_h == (0, 0) and tot_w == (0, 0):
        # nothing is padded: 'valid', or 'same' that pads nothing here (the exporter's
        # hint keeps the layer's own spelling; the function is the same either way)
        padding = "valid"
        if hint is not None and hint.get("padding") in ("valid", "same"):
            padding = hint["padding"]
    elif tot_h == tf_same(H, kh, sy) and tot_w == tf_same(W, kw, sx):
        padding = "same"
    else:
        raise OnnxImportError(
            f"{describe(node)}: padding {tot_h} x {tot_w} on a {H}x{W} input is neither "
            f"'valid' nor TensorFlow 'same' for kernel {kh}x{kw}, stride ({sy}, {sx})")
    f2 = fill.reshape(c, -1)
    if not np.all(f2 == f2[:, :1]):
        raise OnnxImportError(f"{describe(node)}: the padding value varies across pixels")
    fill = f2[:, 0]
    k, mag = pm1_kernel(w, 0, node, node.input[1])
    k = np.transpose(k, (0, 2, 3, 1)).copy()  # (filters, kh, kw, c)
    a = mag.copy()
    b = np.zeros(m) if bias is None else np.asarray(bias, dtype=np.float64).reshape(m)
    pad_value: Any = 0
    padded = tot_h != (0, 0) or tot_w != (0, 0)
    if x.binary:
        if padded:
            if not (np.all(fill == 0) or np.all(fill == 1)):
                raise OnnxImportError(f"{describe(node)}: binary activations padded with "
                                      f"{np.unique(fill)}; expected 0 or 1")
            pad_value = int(fill[0])
        if x.neg is not None and np.any(x.neg):
            n2 = x.neg.reshape(x.neg.shape[0], -1)  # (C, H*W), unpadded
            if not np.all(n2 == n2[:, :1]):
                raise OnnxImportError(f"{describe(node)}: input negated per pixel")
            k = np.where(n2[:, 0][None, None, None, :], -k, k).astype(np.int8)
    else:
        sc, of = input_vectors(x, node, per_channel_axis=0)
        if np.any(sc == 0):
            raise OnnxImportError(f"{describe(node)}: an input channel is scaled by 0")
        # file: h = sum_taps k_c xe, xe = s_c x + o_c inside, s_c p_c + o_c on the border
        # (p = pad_raw). network: k'_c = k_c sign(s_c), input |s_c| x, border |s_c| pv_c
        # (pv in raw units), so h_file = h_net + sum_taps k_c o_c with pv_c = p_c.
        if np.any(of != 0):
            b = b + a * np.einsum("fijc,c->f", k.astype(np.float64), of)
        if padded:
            pv = fill
            pad_value = float(pv[0]) if np.all(pv == pv[0]) else pv
        k = np.where((sc < 0)[None, None, None, :], -k, k).astype(np.int8)
        set_input_scale(imp, np.abs(sc), node)
    if not padded and hint is not None and "pad_value" in hint:  # unused by the graph
        pv = np.asarray(hint["pad_value"], dtype=np.float64)
        if np.all(np.isfinite(pv)) and (pv.ndim == 0 and pv in (0, 1) or not x.binary
                                        and pv.shape in ((), (c,))):
            pad_value = int(pv) if x.binary else (float(pv) if pv.ndim == 0 else pv)
    Ho = (H + sum(tot_h) - kh) // sy + 1
    Wo = (W + sum(tot_w) - kw) // sx + 1
    imp.first_layer_done = True
    return _Lin("conv", k, a, b, x.binary, (m, Ho, Wo), ("C", "H", "W"), node.name,
                stride=(sy, sx), padding=padding, pad_value=pad_value)
