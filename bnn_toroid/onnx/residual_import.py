r"""Import of residual binary networks (larq + tf2onnx graphs, and this package's
:func:`~bnn_toroid.onnx.residual_export.export_residual` files) into a
:class:`~bnn_toroid.network.ResidualBinaryNetwork`.

The walk visits the nodes the output depends on in topological order (a tensor may feed
several nodes: that is how a residual graph branches) and keeps one symbolic value per
tensor: the operations from the network input that compute it (NHWC semantics), its ONNX
axis order (``NCHW`` or ``NHWC``), and whether it is ``sign`` of that stream. An ``Add``
of two streams becomes a :class:`~bnn_toroid.network.residual_ops.Residual`: the ops the
two share (the same objects, up to the fork) stay, and what each added after the fork is
the body (the branch holding a binary convolution) and the shortcut.

Recognised patterns:

- larq's input quantiser ``Sign -> Add(c, 0 < c < 1) -> Sign`` (``sign(0) = +1``) or
  ``Where(x >= 0, 1, -1)`` on the stream;
- a ``Conv`` of such signs with a constant kernel whose every filter is ``±s_f``
  (larq's ``magnitude_aware_sign``, XNOR-Net's α, or a BatchNorm that tf2onnx fused into
  the kernel) or ±1: a :class:`BinaryConv` with ``scale = s_f``; its bias an
  :class:`Affine`; a ``Pad`` of the signs with 0 or 1 before it is ``pad_value``
  (larq's ``pad_values``);
- real ``Conv`` (any ``group``: depthwise too), ``BatchNormalization`` and per-channel
  ``Mul``/``Add``/``Sub``/``Div`` (:class:`Affine`, folded with a preceding one), ``Relu``,
  ``PRelu``, ``MaxPool``, ``AveragePool`` (pads not counted), ``GlobalAveragePool`` or
  ``ReduceMean`` over the map, ``Squeeze``/``Flatten``/``Reshape`` to a vector,
  ``MatMul``/``Gemm`` (:class:`RealDense`), NHWC/NCHW ``Transpose``, ``Identity``,
  ``Dropout``; a final ``Softmax`` is dropped with a warning.

Anything else raises :class:`~bnn_toroid.onnx.common.OnnxImportError` naming the node.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import replace

import numpy as np

from .common import STANDARD_DOMAINS, OnnxImportError, check_elements, describe, onnx_module
from .graph import fold, node_attrs, tensor_value
from .residual_graph import _R, _SignStep, _Soft, _V, is_branching, merge, order

__all__ = ["import_residual", "is_branching"]


class _Import:
    def __init__(self, model):
        self.onnx = onnx_module()
        g = model.graph
        self.consts = {t.name: tensor_value(t, f"initializer {t.name!r}") for t in g.initializer}
        inputs = [i for i in g.input if i.name not in self.consts]
        if len(inputs) != 1 or len(g.output) != 1:
            raise OnnxImportError(f"expected one graph input and one output, found "
                                  f"{[i.name for i in inputs]} and {[o.name for o in g.output]}")
        self.input, self.output = inputs[0], g.output[0].name
        dims = list(self.input.type.tensor_type.shape.dim)
        if len(dims) != 4 or any(not d.HasField("dim_value") or d.dim_value <= 0 for d in dims[1:]):
            raise OnnxImportError(f"graph input {self.input.name!r}: expected a rank-4 image "
                                  "batch with static (H, W, C) or (C, H, W)")
        sample = tuple(int(d.dim_value) for d in dims[1:])
        check_elements(sample, f"graph input {self.input.name!r} (one sample)")
        self.raw = sample
        self.input_layout = None
        self.vals = {self.input.name: _V((), sample, "?")}
        self.g = g

    # ---- helpers
    def resolve(self, v: _V, layout: str) -> _V:
        """The graph input read as ``layout`` at its first use that tells."""
        if v.layout != "?":
            return v
        if self.input_layout not in (None, layout):
            raise OnnxImportError(f"the graph input is read as {self.input_layout} and as {layout}")
        self.input_layout = layout
        return replace(v, layout=layout)

    def stream(self, node, x, what="input"):
        if not isinstance(x, _V):
            if isinstance(x, _SignStep):
                raise OnnxImportError(
                    f"{describe(node)}: its {what} comes from a bare ONNX Sign (node {x.node!r}), "
                    "which maps 0 to 0, not larq's sign; expected Sign -> Add(c, 0 < c < 1) -> "
                    "Sign or Where(x >= 0, 1, -1)")
            raise OnnxImportError(f"{describe(node)}: its {what} is a {type(x).__name__}; "
                                  "expected a tensor of the network")
        return x

    def real(self, node, x):
        x = self.stream(node, x)
        if x.binary:
            raise OnnxImportError(f"{describe(node)}: applied to binary signs; expected the "
                                  "real-valued stream (signs feed a Conv)")
        if x.pad is not None:
            raise OnnxImportError(f"{describe(node)}: after a Pad; expected the Pad to feed a "
                                  "Conv or MaxPool")
        return x

    def channels(self, node, x: _V, c, what):
        """A constant that broadcasts per channel of ``x`` -> a (C,) vector."""
        c = np.asarray(c, np.float64)
        if x.layout == "?":
            x = self.resolve(x, "NCHW" if c.ndim >= 3 else "NHWC")
        n = x.hwc[-1] if x.layout != "flat" else x.dims[0]
        shape = {"NCHW": (n, 1, 1), "NHWC": (1, 1, n), "flat": (n,)}[x.layout]
        rank = len(shape) + 1
        full = c.reshape((1,) * max(0, rank - c.ndim) + c.shape) if c.ndim <= rank else None
        try:
            b = np.broadcast_to(full, (1,) + tuple(shape)) if full is not None else None
        except ValueError:
            b = None
        if b is None or full.shape[0] != 1 or any(
                full.shape[i + 1] not in (1, shape[i]) or (shape[i] == 1 and full.shape[i + 1] != 1)
                for i in range(len(shape)) if shape[i] != n):
            raise OnnxImportError(f"{describe(node)}: {what} of shape {c.shape} is not one value "
                                  f"per channel of a {x.layout} tensor {x.dims}")
        vec = b.reshape(-1)[:n] if x.layout == "flat" else (
            b[0, :, 0, 0] if x.layout == "NCHW" else b[0, 0, 0, :])
        return x, np.array(vec, np.float64)

    def affine(self, node, x, scale, shift):
        R = _R()
        x = self.real(node, x)
        last = x.ops[-1] if x.ops else None
        if isinstance(last, R.Affine):  # fold into the preceding affine
            op = R.Affine(last.scale * scale, last.shift * scale + shift)
            return replace(x, ops=x.ops[:-1] + (op,))
        return replace(x, ops=x.ops + (R.Affine(scale, shift),))

    def push(self, x, op, dims, layout=None):
        return replace(x, ops=x.ops + (op,), dims=tuple(dims),
                       layout=x.layout if layout is None else layout)

    # ---- walk
    def run(self):
        nodes = order(self.g, set(self.consts) | {self.input.name}, self.output)
        for node in nodes:
            self.step(node)
        out = self.vals.get(self.output)
        if isinstance(out, _Soft):
            warnings.warn(f"bnn_toroid.onnx.load: dropping the final {out.node.op_type} node "
                          f"{out.node.name!r}; logits() returns the values before it (argmax "
                          "unchanged)", UserWarning, stacklevel=4)
            out = out.src
        if not isinstance(out, _V) or out.layout != "flat" or out.flat_from is not None \
                or len(out.dims) != 1 or out.binary:
            raise OnnxImportError(f"the graph output {self.output!r} is not a vector of logits "
                                  f"computed from the stream")
        from ..network import ResidualBinaryNetwork
        layout = self.input_layout or "NCHW"
        return ResidualBinaryNetwork(out.ops, self.raw, layout)

    def step(self, node):
        attrs = node_attrs(node)
        ins = [(self.consts.get(i, self.vals.get(i)) if i else None) for i in node.input]
        for name, v in zip(node.input, ins):
            if name and v is None:
                raise OnnxImportError(f"{describe(node)}: input {name!r} is produced by no node")
        if all(isinstance(v, np.ndarray) or v is None for v in ins):
            if node.op_type == "Constant":
                v = next(iter(attrs.values()))
                self.consts[node.output[0]] = np.asarray(v)
            else:
                for name, v in zip(node.output, fold(node, [v for v in ins if v is not None], attrs)):
                    self.consts[name] = np.asarray(v)
            return
        if node.domain not in STANDARD_DOMAINS:
            raise OnnxImportError(f"{describe(node)}: custom domain {node.domain!r} is not supported")
        handler = getattr(self, f"op_{node.op_type}", None)
        if handler is None:
            raise OnnxImportError(f"{describe(node)} is not supported by the residual-network "
                                  "importer")
        self.vals[node.output[0]] = handler(node, ins, attrs)

    # ---- layout
    def op_Identity(self, node, ins, attrs):
        return ins[0]

    op_Dropout = op_Identity

    def op_Cast(self, node, ins, attrs):
        if attrs.get("to") not in (self.onnx.TensorProto.FLOAT, self.onnx.TensorProto.DOUBLE):
            raise OnnxImportError(f"{describe(node)}: Cast to a non-float type")
        return ins[0]

    def op_Transpose(self, node, ins, attrs):
        x = self.stream(node, ins[0])
        perm = tuple(attrs.get("perm", ()))
        if perm == (0, 3, 1, 2):
            x = self.resolve(x, "NHWC")
            src, dst = "NHWC", "NCHW"
        elif perm == (0, 2, 3, 1):
            x = self.resolve(x, "NCHW")
            src, dst = "NCHW", "NHWC"
        else:
            raise OnnxImportError(f"{describe(node)}: Transpose perm {list(perm)}; expected an "
                                  "NHWC <-> NCHW move")
        if x.layout != src:
            raise OnnxImportError(f"{describe(node)}: perm {list(perm)} on a {x.layout} tensor")
        d = x.dims
        dims = (d[2], d[0], d[1]) if dst == "NCHW" else (d[1], d[2], d[0])
        return replace(x, dims=dims, layout=dst)

    def _to_flat(self, node, x):
        x = self.real(node, x)
        if x.layout == "flat":
            return replace(x, dims=(math.prod(x.dims),))
        h, w, c = x.hwc
        ff = (h, w, c) if x.layout == "NCHW" and h * w > 1 and c > 1 else None
        return replace(x, dims=(h * w * c,), layout="flat", flat_from=ff)

    def op_Squeeze(self, node, ins, attrs):
        return self._to_flat(node, ins[0])

    op_Flatten = op_Squeeze

    def op_Reshape(self, node, ins, attrs):
        x = self.stream(node, ins[0])
        shape = [int(s) for s in np.asarray(ins[1]).ravel()]
        if len(shape) != 2 or shape[1] not in (-1, math.prod(x.dims)):
            raise OnnxImportError(f"{describe(node)}: Reshape to {shape}; expected (N, features)")
        return self._to_flat(node, x)

    def op_Pad(self, node, ins, attrs):
        x = self.stream(node, ins[0])
        if attrs.get("mode", "constant") != "constant":
            raise OnnxImportError(f"{describe(node)}: Pad mode {attrs.get('mode')!r}; expected 'constant'")
        pads = [int(p) for p in np.asarray(ins[1] if len(ins) > 1 else attrs.get("pads")).ravel()]
        value = float(np.asarray(ins[2]).ravel()[0]) if len(ins) > 2 and ins[2] is not None else 0.0
        if x.layout == "?":
            x = self.resolve(x, "NHWC")
        if len(pads) != 8 or x.layout not in ("NCHW", "NHWC") or x.pad is not None:
            raise OnnxImportError(f"{describe(node)}: pads {pads} on a {x.layout} tensor; expected "
                                  "one spatial Pad of a map")
        b, e = pads[:4], pads[4:]
        hy, wx, cx = (2, 3, 1) if x.layout == "NCHW" else (1, 2, 3)
        if b[0] or e[0] or b[cx] or e[cx] or min(pads) < 0:
            raise OnnxImportError(f"{describe(node)}: pads {pads} touch the batch or channel axis, "
                                  "or crop")
        t, bt, l, r = b[hy], e[hy], b[wx], e[wx]
        d = list(x.dims)
        d[hy - 1] += t + bt
        d[wx - 1] += l + r
        return replace(x, dims=tuple(d), pad=(t, bt, l, r, value))

    # ---- signs
    def op_Sign(self, node, ins, attrs):
        x = ins[0]
        if isinstance(x, _SignStep) and x.stage == 2:
            return replace(x.src, binary=True)
        x = self.real(node, x)
        return _SignStep(x, 1, node.name)

    def op_GreaterOrEqual(self, node, ins, attrs):
        x, c = ins
        if not isinstance(c, np.ndarray) or np.any(c != 0):
            raise OnnxImportError(f"{describe(node)}: expected GreaterOrEqual(x, 0)")
        return _SignStep(self.real(node, x), 3, node.name)

    def op_Where(self, node, ins, attrs):
        cond, hi, lo = ins
        if not (isinstance(cond, _SignStep) and cond.stage == 3 and isinstance(hi, np.ndarray)
                and isinstance(lo, np.ndarray) and np.all(hi == 1) and np.all(lo == -1)):
            raise OnnxImportError(f"{describe(node)}: expected Where(x >= 0, 1, -1)")
        return replace(cond.src, binary=True)

    # ---- elementwise
    def op_Add(self, node, ins, attrs):
        a, b = ins
        if isinstance(b, _SignStep) and not isinstance(a, _SignStep):
            a, b = b, a
        if isinstance(a, np.ndarray):
            a, b = b, a
        if isinstance(a, _SignStep):
            c = np.asarray(b)
            if a.stage == 1 and isinstance(b, np.ndarray) and c.size == 1 and 0 < float(c.ravel()[0]) < 1:
                return _SignStep(a.src, 2, a.node)
            raise OnnxImportError(f"{describe(node)}: adds {c.ravel()[:3]} to a bare Sign; "
                                  "expected larq's Sign -> Add(c, 0 < c < 1) -> Sign")
        if isinstance(b, np.ndarray):
            x, v = self.channels(node, self.real(node, a), b, "the added constant")
            return self.affine(node, x, np.ones_like(v), v)
        return merge(node, self.real(node, a), self.real(node, b))

    def op_Sub(self, node, ins, attrs):
        a, b = ins
        if not isinstance(b, np.ndarray):
            raise OnnxImportError(f"{describe(node)}: expected stream - constant")
        x, v = self.channels(node, self.real(node, a), b, "the subtracted constant")
        return self.affine(node, x, np.ones_like(v), -v)

    def op_Mul(self, node, ins, attrs):
        a, b = ins
        if isinstance(a, np.ndarray):
            a, b = b, a
        if not isinstance(b, np.ndarray):
            raise OnnxImportError(f"{describe(node)}: product of two streams; expected a "
                                  "per-channel constant factor")
        x, v = self.channels(node, self.real(node, a), b, "the factor")
        return self.affine(node, x, v, np.zeros_like(v))

    def op_Div(self, node, ins, attrs):
        a, b = ins
        if not isinstance(b, np.ndarray) or np.any(np.asarray(b) == 0):
            raise OnnxImportError(f"{describe(node)}: expected stream / nonzero constant")
        x, v = self.channels(node, self.real(node, a), b, "the divisor")
        return self.affine(node, x, 1.0 / v, np.zeros_like(v))

    def op_BatchNormalization(self, node, ins, attrs):
        x = self.real(node, ins[0])
        if x.layout == "?":
            x = self.resolve(x, "NCHW")
        if x.layout == "NHWC":
            raise OnnxImportError(f"{describe(node)}: BatchNormalization of an NHWC tensor")
        g, beta, mean, var = (np.asarray(v, np.float64).ravel() for v in ins[1:5])
        s = g / np.sqrt(var + float(attrs.get("epsilon", 1e-5)))
        return self.affine(node, x, s, beta - mean * s)

    def op_Relu(self, node, ins, attrs):
        x = self.real(node, ins[0])
        return replace(x, ops=x.ops + (_R().ReLU(),))

    def op_PRelu(self, node, ins, attrs):
        x, v = self.channels(node, self.real(node, ins[0]), ins[1], "the PRelu slope")
        return replace(x, ops=x.ops + (_R().PReLU(v),))

    def op_Softmax(self, node, ins, attrs):
        return _Soft(self.real(node, ins[0]), node)

    # ---- convolutions and pools
    @staticmethod
    def _pads(node, attrs, kh, kw, h, w, sy, sx):
        auto = attrs.get("auto_pad", "NOTSET")
        if auto in ("SAME_UPPER",):
            from ..network.residual_ops import same_pads
            return same_pads(h, kh, sy) + same_pads(w, kw, sx)
        if auto not in ("NOTSET", "VALID"):
            raise OnnxImportError(f"{describe(node)}: auto_pad {auto!r}; expected NOTSET, VALID or "
                                  "SAME_UPPER")
        p = [int(v) for v in attrs.get("pads", [0, 0, 0, 0])]
        if len(p) != 4 or min(p) < 0:
            raise OnnxImportError(f"{describe(node)}: pads {p}; expected 4 values >= 0")
        return (p[0], p[2], p[1], p[3])

    def _window(self, node, x, attrs, kh, kw):
        if x.layout == "?":
            x = self.resolve(x, "NCHW")
        if x.layout != "NCHW":
            raise OnnxImportError(f"{describe(node)}: reads a {x.layout} tensor; ONNX "
                                  f"{node.op_type} reads NCHW")
        if any(int(d) != 1 for d in attrs.get("dilations", [1, 1])) or attrs.get("ceil_mode", 0):
            raise OnnxImportError(f"{describe(node)}: dilations or ceil_mode are not supported")
        sy, sx = (int(v) for v in attrs.get("strides", [1, 1]))
        c, h, w = x.dims
        pads = (0, 0, 0, 0)
        if x.pad is not None:
            t, b, l, r, _ = x.pad
            h, w = h - t - b, w - l - r
            pads = (t, b, l, r)
        own = self._pads(node, attrs, kh, kw, h + pads[0] + pads[1], w + pads[2] + pads[3], sy, sx)
        if any(own) and any(pads) and x.pad[4] != 0:
            raise OnnxImportError(f"{describe(node)}: a Pad with value {x.pad[4]} and its own "
                                  "pads; expected one of the two")
        total = tuple(p + q for p, q in zip(pads, own))
        ho = (h + total[0] + total[1] - kh) // sy + 1
        wo = (w + total[2] + total[3] - kw) // sx + 1
        if ho < 1 or wo < 1:
            raise OnnxImportError(f"{describe(node)}: the window does not fit the map")
        return x, (sy, sx), total, (ho, wo)

    def op_Conv(self, node, ins, attrs):
        R = _R()
        x = self.stream(node, ins[0])
        wk = ins[1]
        if not isinstance(wk, np.ndarray) or wk.ndim != 4:
            raise OnnxImportError(f"{describe(node)}: expected a constant 4-D kernel")
        wk = np.asarray(wk, np.float64)
        f, cg, kh, kw = wk.shape
        x, stride, pads, (ho, wo) = self._window(node, x, attrs, kh, kw)
        group = int(attrs.get("group", 1))
        bias = None if len(ins) < 3 or ins[2] is None else np.asarray(ins[2], np.float64).ravel()
        w_nhwc = wk.transpose(0, 2, 3, 1)
        if x.binary:
            pad_value = 0 if x.pad is None else x.pad[4]
            if pad_value not in (0.0, 1.0) or (pad_value == 1 and
                                               any(self._pads(node, attrs, kh, kw, 9, 9, *stride))):
                raise OnnxImportError(f"{describe(node)}: binary signs padded with {pad_value}; "
                                      "expected 0 or 1 (larq pad_values)")
            if group != 1:
                raise OnnxImportError(f"{describe(node)}: a grouped convolution of binary signs")
            flat = np.abs(w_nhwc.reshape(f, -1))
            s = flat.max(axis=1)
            if np.any(flat != s[:, None]):
                k = int(np.nonzero(np.any(flat != s[:, None], axis=1))[0][0])
                raise OnnxImportError(
                    f"{describe(node)}: convolves binary signs with a kernel whose filter {k} is "
                    "not ±s (one magnitude per filter); expected a binary kernel (±1, or ±α of "
                    "larq's magnitude_aware_sign)")
            pm = np.where(w_nhwc >= 0, 1, -1).astype(np.int8)
            scale = None if np.all(s == 1) else s
            op = R.BinaryConv(pm, scale, stride=stride, padding=pads, pad_value=int(pad_value))
            y = self.push(replace(x, binary=False, pad=None), op, (f, ho, wo), "NCHW")
            if bias is not None:
                y = replace(y, ops=y.ops + (R.Affine(np.ones(f), bias),))
            return y
        if x.pad is not None and x.pad[4] != 0:
            raise OnnxImportError(f"{describe(node)}: a real Conv of a map padded with "
                                  f"{x.pad[4]}; expected 0")
        op = R.RealConv(w_nhwc, bias, stride=stride, padding=pads, groups=group)
        return self.push(replace(x, pad=None), op, (f, ho, wo), "NCHW")

    def _pool(self, node, ins, attrs, cls):
        x = self.stream(node, ins[0])
        if x.binary:
            raise OnnxImportError(f"{describe(node)}: pooling binary signs; expected the stream")
        kh, kw = (int(v) for v in attrs["kernel_shape"])
        if x.pad is not None and (cls is not _R().MaxPool or x.pad[4] != -np.inf):
            raise OnnxImportError(f"{describe(node)}: a pool after a Pad")
        x, stride, pads, (ho, wo) = self._window(node, x, attrs, kh, kw)
        if cls is _R().AvgPool and attrs.get("count_include_pad", 0) and any(pads):
            raise OnnxImportError(f"{describe(node)}: count_include_pad=1 with padding; expected "
                                  "pads not counted (TensorFlow's average pooling)")
        return self.push(replace(x, pad=None), cls((kh, kw), stride, pads), (x.dims[0], ho, wo))

    def op_MaxPool(self, node, ins, attrs):
        if len(node.output) > 1 and node.output[1]:
            raise OnnxImportError(f"{describe(node)}: MaxPool indices are not supported")
        return self._pool(node, ins, attrs, _R().MaxPool)

    def op_AveragePool(self, node, ins, attrs):
        return self._pool(node, ins, attrs, _R().AvgPool)

    def _gap(self, node, x, keep):
        x = self.real(node, x)
        if x.layout == "?":
            x = self.resolve(x, "NCHW")
        c = x.hwc[2]
        y = self.push(x, _R().GlobalAvgPool(), (c,), "flat")
        return y

    def op_GlobalAveragePool(self, node, ins, attrs):
        return self._gap(node, ins[0], True)

    def op_ReduceMean(self, node, ins, attrs):
        x = self.real(node, ins[0])
        axes = attrs.get("axes", None if len(ins) < 2 or ins[1] is None else list(np.ravel(ins[1])))
        want = {"NCHW": {2, 3}, "NHWC": {1, 2}}.get(x.layout)
        if axes is None or want is None or {int(a) % 4 for a in axes} != want:
            raise OnnxImportError(f"{describe(node)}: ReduceMean over axes {axes}; expected the "
                                  "spatial axes of a map")
        return self._gap(node, x, bool(attrs.get("keepdims", 1)))

    # ---- dense
    def _dense(self, node, x, w, b):
        R = _R()
        x = self._to_flat(node, self.stream(node, x)) if x.layout != "flat" else x
        if w.shape[1] != x.dims[0]:
            raise OnnxImportError(f"{describe(node)}: weights for {w.shape[1]} features, the input "
                                  f"has {x.dims[0]}")
        if x.flat_from is not None:  # NCHW flattening order -> the NHWC order RealDense reads
            h, ww, c = x.flat_from
            w = w.reshape(-1, c, h, ww).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
        return replace(x, ops=x.ops + (R.RealDense(w, b),), dims=(w.shape[0],), flat_from=None)

    def op_MatMul(self, node, ins, attrs):
        x, w = ins
        if not isinstance(w, np.ndarray) or w.ndim != 2:
            raise OnnxImportError(f"{describe(node)}: expected stream @ constant matrix")
        return self._dense(node, self.real(node, x), np.asarray(w, np.float64).T, None)

    def op_Gemm(self, node, ins, attrs):
        x, w = ins[0], ins[1]
        if not isinstance(w, np.ndarray) or attrs.get("transA", 0):
            raise OnnxImportError(f"{describe(node)}: expected Gemm(stream, constant)")
        w = np.asarray(w, np.float64) * float(attrs.get("alpha", 1.0))
        w = w if attrs.get("transB", 0) else w.T
        b = None
        if len(ins) > 2 and ins[2] is not None:
            b = np.broadcast_to(np.asarray(ins[2], np.float64).ravel() * float(attrs.get("beta", 1.0)),
                                (w.shape[0],)).copy()
        return self._dense(node, self.real(node, x), w, b)


def import_residual(model):
    """The :class:`~bnn_toroid.network.ResidualBinaryNetwork` of a checked ONNX model."""
    return _Import(model).run()
