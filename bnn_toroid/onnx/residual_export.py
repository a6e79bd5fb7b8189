r"""Export of a :class:`~bnn_toroid.network.ResidualBinaryNetwork` to ONNX with larq's
numerics, in standard opsets only (onnxruntime runs it unmodified).

The graph takes ``x`` (float32, ``(N, *net.input_shape)`` in ``net.input_layout``) and
returns ``logits`` (float32, ``(N, classes)``). The stream runs in NCHW (one
``Transpose`` from NHWC input). Each :class:`BinaryConv` is written as larq + tf2onnx
write a ``QuantConv2D`` with a ``magnitude_aware_sign`` kernel:

- the input quantiser ``Where(x >= 0, 1, -1)``: larq's ``sign(0) = +1``, never a bare
  ``Sign`` (ONNX's maps 0 to 0);
- ``pad_value = 1`` as an explicit ``Pad`` with constant 1 (larq's ``pad_values=1``),
  ``pad_value = 0`` as the ``Conv``'s own ``pads``;
- a ``Conv`` whose kernel is ``scale_f · w_f`` (±α per output channel, or ±1).

:class:`Affine` is ``Mul`` then ``Add`` (per channel), ``Residual`` an ``Add`` of its two
branches, the pools ``MaxPool``/``AveragePool`` (``count_include_pad=0``) and
``GlobalAveragePool`` + ``Flatten``, ``RealDense`` a ``Gemm`` (after ``Transpose`` to NHWC
and ``Reshape`` when it reads a map: :class:`RealDense` flattens in NHWC order). The
file's metadata marks it ``bnn_toroid.kind = residual``; :func:`bnn_toroid.onnx.load`
reads it back to the same network (float32 parameters).
"""
from __future__ import annotations

import numpy as np

from .common import onnx_module

__all__ = ["export_residual"]


class _G:
    def __init__(self):
        self.onnx = onnx_module()
        self.h = self.onnx.helper
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, base, value, dtype=np.float32):
        name = self.name(base)
        self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def node(self, op, inputs, base=None, **attrs):
        out = self.name(base or op.lower())
        self.nodes.append(self.h.make_node(op, list(inputs), [out], name=out, **attrs))
        return out


def _onnx_pads(p):
    t, b, l, r = p
    return [int(t), int(l), int(b), int(r)]


def _emit(g, op, x, shape):
    """Emit ``op`` on tensor ``x`` of NHWC-semantics ``shape``; returns (tensor, shape)."""
    from ..network import residual_ops as R
    from ..network.residual_ops import resolve_pads
    out_shape = op.out_shape(shape)
    if isinstance(op, R.Residual):
        b, s = x, x
        sh = shape
        for o in op.body:
            b, sh = _emit(g, o, b, sh)
        sh2 = shape
        for o in op.shortcut:
            s, sh2 = _emit(g, o, s, sh2)
        return g.node("Add", [b, s], "residual_add"), out_shape
    flat = len(shape) == 1
    per_c = (lambda v: np.asarray(v).reshape(-1) if flat else np.asarray(v).reshape(-1, 1, 1))
    if isinstance(op, R.BinaryConv):
        zero = g.const("zero", 0.0)
        cond = g.node("GreaterOrEqual", [x, zero], "sign_ge")
        sgn = g.node("Where", [cond, g.const("one", 1.0), g.const("minus_one", -1.0)], "larq_sign")
        f, kh, kw, c = op.weights.shape
        pads = resolve_pads(op.padding, shape[0], shape[1], kh, kw, *op.stride)
        scale = np.ones(f) if op.scale is None else op.scale
        kernel = (op.weights * scale[:, None, None, None]).transpose(0, 3, 1, 2)
        conv_pads = _onnx_pads(pads)
        if op.pad_value == 1 and any(pads):
            t, b, l, r = pads
            sgn = g.node("Pad", [sgn, g.const("pads", [0, 0, t, l, 0, 0, b, r], np.int64),
                                 g.const("pad_one", 1.0)], "pad_values_1")
            conv_pads = [0, 0, 0, 0]
        y = g.node("Conv", [sgn, g.const("binary_kernel", kernel)], "binary_conv",
                   kernel_shape=[kh, kw], strides=list(op.stride), pads=conv_pads)
        return y, out_shape
    if isinstance(op, R.RealConv):
        f, kh, kw, cg = op.weights.shape
        pads = resolve_pads(op.padding, shape[0], shape[1], kh, kw, *op.stride)
        ins = [x, g.const("conv_w", op.weights.transpose(0, 3, 1, 2))]
        if op.bias is not None:
            ins.append(g.const("conv_b", op.bias))
        return g.node("Conv", ins, "conv", kernel_shape=[kh, kw], strides=list(op.stride),
                      pads=_onnx_pads(pads), group=op.groups), out_shape
    if isinstance(op, R.Affine):
        y = g.node("Mul", [x, g.const("bn_scale", per_c(op.scale))], "affine_mul")
        return g.node("Add", [y, g.const("bn_shift", per_c(op.shift))], "affine_add"), out_shape
    if isinstance(op, R.ReLU):
        return g.node("Relu", [x]), out_shape
    if isinstance(op, R.PReLU):
        return g.node("PRelu", [x, g.const("slope", per_c(op.slope))]), out_shape
    if isinstance(op, (R.MaxPool, R.AvgPool)):
        pads = _onnx_pads(resolve_pads(op.padding, shape[0], shape[1], *op.size, *op.stride))
        extra = {"count_include_pad": 0} if isinstance(op, R.AvgPool) else {}
        return g.node("MaxPool" if isinstance(op, R.MaxPool) else "AveragePool", [x],
                      kernel_shape=list(op.size), strides=list(op.stride), pads=pads,
                      **extra), out_shape
    if isinstance(op, R.GlobalAvgPool):
        return g.node("Flatten", [g.node("GlobalAveragePool", [x])], axis=1), out_shape
    if isinstance(op, R.RealDense):
        if not flat:
            x = g.node("Transpose", [x], "to_nhwc", perm=[0, 2, 3, 1])
            x = g.node("Reshape", [x, g.const("shape", [0, -1], np.int64)], "flatten_nhwc")
        ins = [x, g.const("dense_w", op.weights)]
        if op.bias is not None:
            ins.append(g.const("dense_b", op.bias))
        return g.node("Gemm", ins, "dense", transB=1), out_shape
    raise TypeError(f"export: unknown operation {type(op).__name__}")


def export_residual(net, path, opset: int = 17) -> None:
    """Write ``net`` (a :class:`~bnn_toroid.network.ResidualBinaryNetwork`) to ``path`` as
    ONNX (module doc), checked with ``onnx.checker`` (full check) and written atomically
    (the save-target rules of :func:`bnn_toroid.onnx.export`)."""
    from .exporter import _write_bytes, check_opset

    opset = check_opset(opset, "export")
    g = _G()
    h, TP = g.h, g.onnx.TensorProto
    x_info = h.make_tensor_value_info("x", TP.FLOAT, ["N", *net.input_shape])
    x = "x"
    if net.input_layout == "NHWC":
        x = g.node("Transpose", [x], "to_nchw", perm=[0, 3, 1, 2])
    shape = net.stream_shape
    for op in net.ops:
        x, shape = _emit(g, op, x, shape)
    g.nodes.append(h.make_node("Identity", [x], ["logits"], name="logits"))
    y_info = h.make_tensor_value_info("logits", TP.FLOAT, ["N", net.n_classes])
    graph = h.make_graph(g.nodes, "bnn_toroid_residual", [x_info], [y_info], g.inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)],
                         producer_name="bnn_toroid")
    model.ir_version = min(model.ir_version, 8)
    h.set_model_props(model, {"bnn_toroid.kind": "residual"})
    g.onnx.checker.check_model(model, full_check=True)
    _write_bytes(path, model.SerializeToString(), "export")
