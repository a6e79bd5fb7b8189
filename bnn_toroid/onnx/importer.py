"""The importer: a walk over the graph from its input that dispatches each node on the op
table (:data:`bnn_toroid.onnx.common.OPS`), and :func:`load`.

The walk constant-folds every node whose inputs are constants (:func:`.graph.fold`),
answers ``Shape`` from the static sample shape, and hands every other node to the handler
its op-family module registered for ``(domain, op_type)``: ``affine`` (Add, Sub, Mul,
Div, Neg), ``layout`` (Identity, Dropout, Cast, Transpose, Reshape, Flatten, Pad),
``linear`` (MatMul, Gemm, Conv), ``norm_pool`` (BatchNormalization, MaxPool, Softmax,
LogSoftmax) and ``sign`` (Sign, GreaterOrEqual, Less, Where, QONNX BipolarQuant). A node
whose op has no handler is an :class:`OnnxImportError` naming the node and its op.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

# the op-family modules register their handlers in OPS when imported
from . import affine, layout, linear, norm_pool, sign  # noqa: F401
from .common import (OPS, QONNX_DOMAIN, QONNX_DOMAINS, STANDARD_DOMAINS, OnnxImportError,
                     check_elements, describe, network_module, onnx_module, ops_of)
from .graph import conv_hints, fold, live_nodes, node_attrs, read_model, tensor_value
from .values import _Act, _Cmp, _Lin, _SignPartial, _SignShifted, _Softmax

#: Ops the walk itself answers, not the op table: ``Constant`` (folded like any node with
#: constant inputs) and ``Shape`` (the static sample shape of a symbolic tensor).
WALK_OPS = ("Constant", "Shape")


def handler_for(node, ins):
    """The op table's handler for ``node``; an :class:`OnnxImportError` naming the node
    and its op when there is none (or its domain is not one the importer reads)."""
    op = node.op_type
    if node.domain in QONNX_DOMAINS:
        handler = OPS.get((QONNX_DOMAIN, op))
        if handler is None:
            raise OnnxImportError(f"{describe(node)}: QONNX op {op} is not supported "
                                  f"(only {', '.join(ops_of(QONNX_DOMAIN))})")
        return handler
    if node.domain not in STANDARD_DOMAINS:
        raise OnnxImportError(f"{describe(node)}: custom domain {node.domain!r} is not "
                              "supported")
    handler = OPS.get(("", op))
    if handler is None:
        raise OnnxImportError(
            f"{describe(node)} is not supported by the binary-network importer "
            f"(operand kinds: {[type(v).__name__.strip('_') for v in ins]})")
    return handler


class Importer:
    """One import: the constants, the symbolic value of every tensor met so far, and the
    network being built (``layers``, the input's layout, shape, scale and binarisation).
    The op handlers read and update this state."""

    def __init__(self, model):
        onnx = onnx_module()
        self.onnx = onnx
        self.model = model
        g = model.graph
        self.consts: dict[str, np.ndarray] = {}
        for t in g.initializer:
            self.consts[t.name] = tensor_value(t, f"initializer {t.name!r}")
        for t in g.sparse_initializer:
            raise OnnxImportError(f"sparse initializer {t.values.name!r} is not supported")
        inputs = [i for i in g.input if i.name not in self.consts]
        if len(inputs) != 1:
            raise OnnxImportError(
                f"expected one graph input, found {len(inputs)}: {[i.name for i in inputs]}")
        if len(g.output) != 1:
            raise OnnxImportError(
                f"expected one graph output, found {len(g.output)}: {[o.name for o in g.output]}")
        self.input = inputs[0]
        self.output = g.output[0].name
        self.vals: dict[str, Any] = {}
        self.layers: list = []
        self.input_layout: str | None = None
        self.input_shape: tuple | None = None
        self.input_scale = None
        self.binarize_input = False
        self.first_layer_done = False
        self.conv_hints = conv_hints(model)
        self.n_conv = 0
        self.setup_input()

    # ---- graph input --------------------------------------------------------------
    def setup_input(self):
        tt = self.input.type.tensor_type
        elem = tt.elem_type
        if elem not in (self.onnx.TensorProto.FLOAT, self.onnx.TensorProto.DOUBLE,
                        self.onnx.TensorProto.FLOAT16):
            raise OnnxImportError(
                f"graph input {self.input.name!r} has element type "
                f"{self.onnx.TensorProto.DataType.Name(elem)}; expected a float tensor")
        dims = list(tt.shape.dim)
        if len(dims) < 2:
            raise OnnxImportError(
                f"graph input {self.input.name!r} has rank {len(dims)}; expected (N, features) "
                "or (N, H, W, C) / (N, C, H, W)")
        shape = []
        for d in dims[1:]:
            if not d.HasField("dim_value") or d.dim_value <= 0:
                raise OnnxImportError(
                    f"graph input {self.input.name!r} has a symbolic non-batch dimension "
                    f"{d.dim_param!r}; the importer needs static sample shapes")
            shape.append(int(d.dim_value))
        self.batch_dim = dims[0].dim_value if dims[0].HasField("dim_value") else None
        shape = tuple(shape)
        # before np.ones(shape) below: the file declares this, it holds nothing of the size
        check_elements(shape, f"graph input {self.input.name!r} (one sample)")
        axes = ("F",) if len(shape) == 1 else tuple(f"i{j}" for j in range(len(shape)))
        if len(shape) == 1:
            self.input_layout = "flat"
            self.input_shape = shape
        self.raw_input_shape = shape
        self.vals[self.input.name] = _Act(
            binary=False, shape=shape, axes=axes,
            scale=np.ones(shape), offset=np.zeros(shape))

    # ---- helpers ------------------------------------------------------------------
    def get(self, name, node):
        if name in self.consts:
            return self.consts[name]
        if name in self.vals:
            return self.vals[name]
        raise OnnxImportError(
            f"{describe(node)}: input {name!r} is produced by no node, initializer or graph "
            "input (dangling tensor name; truncated or corrupted file?)")

    def const(self, name, node, what):
        v = self.get(name, node)
        if not isinstance(v, np.ndarray):
            raise OnnxImportError(f"{describe(node)}: {what} {name!r} must be a constant")
        return v

    # ---- main walk ----------------------------------------------------------------
    def run(self):
        g = self.model.graph
        nodes = live_nodes(g, self.consts, self.input.name, self.output)
        self.used = {i for n in nodes for i in n.input if i}
        for node in nodes:
            self.step(node)
        out = self.vals.get(self.output, self.consts.get(self.output))
        return self.finish(out)

    def step(self, node):
        """Fold ``node``, or hand it to its op's handler; its first output's value is
        recorded under its name."""
        op = node.op_type
        attrs = node_attrs(node)
        ins = [self.get(i, node) if i else None for i in node.input]
        if all(isinstance(v, np.ndarray) or v is None for v in ins):
            if op == "Constant":
                outs = [self.constant_node(node, attrs)]
            else:
                outs = fold(node, [v for v in ins if v is not None], attrs)
            for name, v in zip(node.output, outs):
                self.consts[name] = np.asarray(v)
            return
        if op == "Shape" and node.domain in STANDARD_DOMAINS:
            self.consts[node.output[0]] = self.shape_of(node, ins[0], attrs)
            return
        for v, name in zip(ins, node.input):
            if isinstance(v, _SignPartial) and op not in ("Add", "Sub", "Identity"):
                raise OnnxImportError(
                    f"{describe(node)}: its input {name!r} comes from a bare ONNX Sign (node "
                    f"{v.node!r}); ONNX Sign maps 0 to 0, which is not larq's sign. Expected "
                    "Sign -> Add(c, 0 < c < 1) -> Sign (larq ste_sign) or Where(x >= t, 1, -1)")
        res = handler_for(node, ins)(self, node, ins, attrs)
        for extra in node.output[1:]:
            if extra and (extra in self.used or extra == self.output):
                raise OnnxImportError(f"{describe(node)}: its output {extra!r} is used; only "
                                      "the first output of a node is supported")
        self.vals[node.output[0]] = res

    def shape_of(self, node, x, attrs):
        """``Shape`` of a symbolic tensor: its static sample shape, batch 1. The shape
        only feeds constants (``ConstantOfShape`` for torch's ``ones_like``, pad
        sizes) that broadcast along the batch axis."""
        while isinstance(x, (_SignPartial, _SignShifted, _Cmp, _Softmax)):
            x = x.src
        if not isinstance(x, (_Act, _Lin)):
            raise OnnxImportError(f"{describe(node)}: shape of a {type(x).__name__}")
        full = np.array((1,) + tuple(x.shape), dtype=np.int64)
        start, end = attrs.get("start", 0), attrs.get("end", None)
        return full[start:end]

    def constant_node(self, node, attrs):
        for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
            if key in attrs:
                v = attrs[key]
                if key == "value":
                    return np.asarray(v)
                return np.asarray(v, dtype=np.float32 if "float" in key else np.int64)
        raise OnnxImportError(f"{describe(node)}: unsupported Constant attributes {list(attrs)}")

    # ---- end ----------------------------------------------------------------------
    def finish(self, out):
        net = network_module()
        if isinstance(out, _Softmax):
            warnings.warn(f"bnn_toroid.onnx.load: dropping the final {out.node.op_type} node "
                          f"{out.node.name!r}; predict() returns the logits before it (argmax "
                          "unchanged)", UserWarning, stacklevel=3)
            out = out.src
        if isinstance(out, (_SignPartial, _SignShifted)):
            raise OnnxImportError(f"the graph output {self.output!r} is a bare ONNX Sign "
                                  "(maps 0 to 0); expected the output layer's pre-activation")
        if not isinstance(out, _Lin):
            raise OnnxImportError(
                f"the graph output {self.output!r} is a {type(out).__name__.strip('_')}; "
                "expected the pre-activation of a dense output layer (logits)")
        if out.kind != "dense" or out.pools:
            raise OnnxImportError(f"the output layer {out.node!r} is a {out.kind} layer; "
                                  "expected a dense output layer")
        self.layers.append(net.Dense(out.weights, None, out_scale=out.a.astype(np.float64),
                                     out_bias=out.b.astype(np.float64)))
        if self.input_layout is None:
            self.input_layout = "NHWC" if len(self.raw_input_shape) == 3 else "flat"
            self.input_shape = self.raw_input_shape
        return net.BinaryNetwork(self.layers, self.input_shape, input_layout=self.input_layout,
                                 binarize_input=self.binarize_input,
                                 input_scale=None if self.binarize_input else self.input_scale)


def load(path) -> "Any":
    """Read an ONNX file into a :class:`~bnn_toroid.network.BinaryNetwork` (larq semantics),
    or, for a graph that branches (residual blocks) or has real-valued parts between its
    binary convolutions, a :class:`~bnn_toroid.network.ResidualBinaryNetwork`
    (:mod:`.residual_import` lists the patterns it recognises).

    ``path`` is a file name (or an ``onnx.ModelProto``). The graph must be a chain from one
    float input (``(N, F)``, ``(N, H, W, C)`` or ``(N, C, H, W)``) to one output, built from:

    - binarisation, ``sign(x) = +1 if x >= 0 else -1``: larq's ``Sign -> Add(c) -> Sign``
      with ``0 < c < 1`` (tf2onnx writes ``c = 0.1``), ``Where(x >= t, 1, -1)`` (this
      package's exports) or QONNX ``BipolarQuant(x, 1)``;
    - ``MatMul`` / ``Gemm`` / ``Conv`` with a constant ±1 kernel, or a kernel whose every
      unit is ``s_u`` times a ±1 pattern (tf2onnx fuses BatchNorm into the conv kernel);
    - per-unit affine maps on a pre-activation: ``Mul``, ``Add``, ``Sub``, ``Div``, ``Neg``,
      ``BatchNormalization`` (inference), a conv or Gemm bias;
    - ``Pad`` (constant 0 or 1, larq's ``pad_values``) and conv ``pads``/``auto_pad`` that
      amount to TensorFlow ``'valid'`` or ``'same'`` padding;
    - ``MaxPool`` (square, valid) before or after the affine maps;
    - ``Transpose``, ``Reshape``/``Flatten`` (NHWC <-> NCHW moves, flattening before a dense
      layer), ``Identity``, ``Cast``, ``Dropout``; a final ``Softmax`` is dropped with a warning
      (predictions are the logits before it; argmax is unchanged);
    - on the real-valued input before the first layer: ``Mul``/``Div`` by positive per-channel
      constants (``input_scale``) and ``Add``/``Sub`` (folded into the first threshold when
      the first layer is dense or a 'valid' conv).

    Every binarised pre-activation ``sign(a*h + b)`` becomes
    ``fold_sign_affine(w, a, b)``: unit ``k`` outputs ``+1`` iff ``h'_k >= T_k``, with
    integer ``T`` when the layer input is binary (docs/methods.md, "Integer threshold form"). A ``MaxPool`` applied to
    ``a*h + b`` and followed by more affine maps with a negative factor takes the minimum
    of the unit outputs (``min_channels``). The dense output layer keeps its affine:
    ``logits = out_scale * h + out_bias``.

    The folding is done in float64 on the file's (float32) constants: the result is larq's
    model in exact arithmetic. Where larq's float32 evaluation rounds a pre-activation that
    is within float32 rounding of a threshold, the two can differ on that unit.

    File safety (``docs/interop.md``): the file must be a regular file under 2 GiB;
    tensors in external data files are read by this package, not by the onnx package, and
    only from regular files inside the model's folder (relative locations without ``..``,
    no symbolic links), with the declared size checked against the file first. Declared
    shapes are checked against :data:`MAX_TENSOR_ELEMENTS` before anything is allocated.

    Raises :class:`OnnxImportError` (a ``ValueError``) naming the node and op where the
    graph stopped matching, or what is malformed (truncated file, dangling tensor, a kernel
    that should be ±1, a size over the limit); also for a graph whose attributes make no
    sense (a zero stride) or that does not make a valid network. ``OSError`` if the file
    cannot be read.
    """
    from .residual_import import import_residual, is_branching

    model = read_model(path)
    residual = is_branching(model) or any(
        p.key == "bnn_toroid.kind" and p.value == "residual" for p in model.metadata_props)
    if residual:
        try:
            return _guarded(import_residual, model)
        except OnnxImportError as res_error:
            try:
                chain_error = None
                return _guarded(lambda m: Importer(m).run(), model)
            except OnnxImportError as e:
                chain_error = e
            raise OnnxImportError(f"{res_error} (read as a chain-shaped binary network: "
                                  f"{chain_error})") from res_error
    try:
        return _guarded(lambda m: Importer(m).run(), model)
    except OnnxImportError as chain_error:
        # a chain with real-valued parts (a stem, a ReLU, a real conv) is a residual
        # network without residual blocks
        try:
            return _guarded(import_residual, model)
        except OnnxImportError:
            raise chain_error from None


def _guarded(build, model):
    try:
        return build(model)
    except OnnxImportError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, ZeroDivisionError, OverflowError,
            AttributeError, RecursionError, MemoryError) as exc:
        # attribute values the checker does not vet (strides of 0, ranks that do not match)
        # surface here; the network's own checks (NetworkError) too
        raise OnnxImportError(f"the graph does not describe a binary network this importer can "
                              f"build: {type(exc).__name__}: {exc}") from exc
