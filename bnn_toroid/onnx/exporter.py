"""Export: a frozen :class:`~bnn_toroid.network.BinaryNetwork` as an ONNX file
(:func:`export`), and a real-valued torch model through ``torch.onnx``
(:func:`export_torch`).

:func:`export` walks the network's layers and hands each to the emitter registered for
its type in :data:`EMITTERS` (``Dense``, ``Conv2d``, ``MaxPool2d``); an emitter appends
the layer's nodes to the graph being built and moves the running state on (the current
tensor and its shape). Files are written with :func:`bnn_toroid._files.atomic_write`.
"""
from __future__ import annotations

import io
import json
import math
import warnings
from typing import Callable

import numpy as np

from .common import MIN_OPSET, QONNX_DOMAIN, onnx_module, tf_same


def check_opset(opset, what: str) -> int:
    """``opset`` as an int from :data:`MIN_OPSET` to the installed onnx package's newest;
    a ``TypeError`` for a non-integer, a ``ValueError`` outside the range (``what`` names
    the caller in the message)."""
    from ..kernels.bits import as_count

    opset = as_count(what, "opset", opset)
    newest = onnx_module().defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise ValueError(f"{what}: opset {opset} is outside {MIN_OPSET}..{newest}; expected an "
                         f"opset from {MIN_OPSET} to {newest}, the newest this onnx "
                         f"{onnx_module().__version__} knows (onnxruntime may lag behind it)")
    return opset


def _write_bytes(path, data: bytes, what: str) -> None:
    """Write ``data`` with :func:`bnn_toroid._files.atomic_write` (its save-target rules;
    the mode of the file replaced, else 0666 less the umask)."""
    from .._files import atomic_write

    atomic_write(path, lambda fh: fh.write(data), what)


class _Builder:
    """Nodes and initializers of the graph being exported, with unique names."""

    def __init__(self, qonnx: bool):
        onnx = onnx_module()
        self.h = onnx.helper
        self.onnx = onnx
        self.nodes, self.inits, self.binary_tensors = [], [], []
        self.qonnx = qonnx
        self._n = 0

    def name(self, base):
        self._n += 1
        return f"{base}_{self._n}"

    def const(self, base, arr):
        nm = self.name(base)
        self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(arr), nm))
        return nm

    def node(self, op, inputs, base, domain="", **attrs):
        out = self.name(base)
        self.nodes.append(self.h.make_node(op, inputs, [out], name=out + "_node", domain=domain,
                                           **attrs))
        return out

    def binarize(self, x, thr, dtype, base):
        """``+1 if x >= thr else -1`` as float32 (Where form, or QONNX BipolarQuant)."""
        if self.qonnx:
            d = x if thr is None else self.node("Sub", [x, self.const(base + "_thr",
                                                                       thr.astype(dtype))],
                                               base + "_sub")
            one = self.const(base + "_one", np.array(1.0, dtype=dtype))
            y = self.node("BipolarQuant", [d, one], base + "_bin", domain=QONNX_DOMAIN)
            if dtype != np.float32:
                y = self.node("Cast", [y], base + "_f32", to=self.onnx.TensorProto.FLOAT)
        else:
            t = self.const(base + "_thr", (np.zeros((), dtype) if thr is None
                                           else thr.astype(dtype)))
            c = self.node("GreaterOrEqual", [x, t], base + "_ge")
            y = self.node("Where", [c, self.const(base + "_p1", np.array(1.0, np.float32)),
                                    self.const(base + "_m1", np.array(-1.0, np.float32))],
                          base + "_bin")
        self.binary_tensors.append(y)
        return y

    def weight(self, base, w, dtype=np.float32):
        """A ±1 kernel as a float initializer (through BipolarQuant when QONNX)."""
        nm = self.const(base, w.astype(dtype))
        self.binary_tensors.append(nm)
        if self.qonnx:
            one = self.const(base + "_one", np.array(1.0, dtype))
            nm = self.node("BipolarQuant", [nm, one], base + "_q", domain=QONNX_DOMAIN)
            self.binary_tensors.append(nm)
        return nm


class _Stream:
    """The export's running state from layer to layer: the builder ``B``, the current
    tensor ``cur`` and its ``shape`` (NCHW ``(C, H, W)`` or flat ``(F,)``), whether it is
    still the real-valued network input (``real``), the input scale not yet applied
    (``pending_scale``), the input's ``layout``, and the per-conv hints for the metadata."""

    def __init__(self, B, cur, shape, layout, real, pending_scale):
        self.B, self.cur, self.shape, self.layout = B, cur, shape, layout
        self.real, self.pending_scale = real, pending_scale
        self.conv_hints: list = []

    def apply_scale(self, cur, shape):
        """``cur * input_scale``, computed in float64 and cast back to float32."""
        B, TP = self.B, self.B.onnx.TensorProto
        pending_scale = self.pending_scale
        sc = pending_scale.reshape(-1) if pending_scale.ndim else pending_scale
        if len(shape) == 3 and sc.ndim:
            sc = sc.reshape(-1, 1, 1)
        elif len(shape) == 1 and self.layout != "flat" and sc.ndim:  # spatial input, dense first
            sc = np.broadcast_to(sc, (shape[0] // sc.size, sc.size)).reshape(-1)
        # in float64 (the file keeps the scale exactly), back to float32 for the layer
        c64 = B.node("Cast", [cur], "input_f64", to=TP.DOUBLE)
        c64 = B.node("Mul", [c64, B.const("input_scale", sc.astype(np.float64))], "scaled")
        return B.node("Cast", [c64], "scaled_f32", to=TP.FLOAT)


#: A layer emitter: ``emit(stream, i, layer, last)`` appends layer ``i``'s nodes.
Emitter = Callable[[_Stream, int, object, bool], None]

#: Layer type name (``type(layer).__name__``) -> its emitter; filled by :func:`emitter`.
EMITTERS: dict[str, Emitter] = {}


def emitter(kind: str):
    """Register the decorated function as the emitter of layers of type ``kind``."""
    def register(fn: Emitter) -> Emitter:
        if kind in EMITTERS:
            raise RuntimeError(f"bnn_toroid.onnx: layer type {kind!r} has two emitters")
        EMITTERS[kind] = fn
        return fn

    return register


@emitter("Dense")
def _emit_dense(s: _Stream, i: int, layer, last: bool) -> None:
    """``MatMul`` with the ±1 kernel (after ``Transpose`` to NHWC and ``Reshape`` from an
    image), then ``Where(h >= T, 1, -1)``, or the output affine when ``last``."""
    B, TP, base = s.B, s.B.onnx.TensorProto, f"l{i}"
    w = np.asarray(layer.weights)
    if len(s.shape) == 3:
        s.cur = B.node("Transpose", [s.cur], base + "_to_nhwc", perm=[0, 2, 3, 1])
        s.cur = B.node("Reshape", [s.cur, B.const(base + "_shape", np.array([0, -1], np.int64))],
                       base + "_flat")
        s.shape = (int(np.prod(s.shape)),)
    if w.shape[1] != s.shape[0]:
        raise ValueError(f"layer {i}: Dense expects {w.shape[1]} inputs, gets {s.shape[0]}")
    if s.real:
        if s.pending_scale is not None:
            s.cur = s.apply_scale(s.cur, s.shape)
        xin = B.node("Cast", [s.cur], base + "_x64", to=TP.DOUBLE)
        hh = B.node("MatMul", [xin, B.weight(base + "_W", w.T, np.float64)], base + "_h")
        hdtype = np.float64
    else:
        hh = B.node("MatMul", [s.cur, B.weight(base + "_W", w.T)], base + "_h")
        hdtype = np.float32
    if last:
        s.cur = _output(B, hh, layer, hdtype, base)
    else:
        s.cur = B.binarize(hh, _threshold(layer.threshold, w.shape[1], s.real), hdtype, base)
    s.shape = (w.shape[0],)
    s.real = False


@emitter("Conv2d")
def _emit_conv(s: _Stream, i: int, layer, last: bool) -> None:
    """An explicit ``Pad`` for 'same' (a border constant for per-channel pad values),
    ``Conv`` in NCHW with the ±1 kernel, then ``Where(h >= T, 1, -1)``."""
    B, TP, base = s.B, s.B.onnx.TensorProto, f"l{i}"
    if len(s.shape) != 3 or last:
        raise ValueError(f"layer {i}: a Conv2d needs an image input and cannot be the "
                         "output layer")
    w = np.asarray(layer.weights)
    f, kh, kw, c = w.shape
    C_, H_, W_ = s.shape
    pv_hint = np.asarray(layer.pad_value, dtype=np.float64)
    s.conv_hints.append({"padding": layer.padding, "pad_value": pv_hint.tolist()})
    if c != C_:
        raise ValueError(f"layer {i}: Conv2d expects {c} channels, gets {C_}")
    sy, sx = (int(v) for v in np.broadcast_to(np.asarray(layer.stride), (2,)))
    if layer.padding == "same":
        ph, pw = tf_same(H_, kh, sy), tf_same(W_, kw, sx)
    elif layer.padding == "valid":
        ph, pw = (0, 0), (0, 0)
    else:
        raise ValueError(f"layer {i}: unknown padding {layer.padding!r}")
    if any(ph) or any(pw):
        pv = np.asarray(layer.pad_value, dtype=np.float64)
        pads = np.array([0, 0, ph[0], pw[0], 0, 0, ph[1], pw[1]], np.int64)
        scalar = pv.ndim == 0 or np.all(pv == pv.reshape(-1)[0])
        fill = float(pv.reshape(-1)[0]) if scalar else 0.0
        s.cur = B.node("Pad", [s.cur, B.const(base + "_pads", pads),
                               B.const(base + "_padval", np.array(fill, np.float32))],
                       base + "_pad", mode="constant")
        Hp, Wp = H_ + sum(ph), W_ + sum(pw)
        if not scalar:  # per-channel pad values (real first layer): a border constant
            border = np.ones((Hp, Wp), bool)
            border[ph[0]:Hp - ph[1], pw[0]:Wp - pw[1]] = False
            fillc = (border[None] * pv.reshape(-1, 1, 1))[None].astype(np.float64)
            s.cur = B.node("Cast", [s.cur], base + "_pad64", to=TP.DOUBLE)
            s.cur = B.node("Add", [s.cur, B.const(base + "_border", fillc)], base + "_border")
            s.cur = B.node("Cast", [s.cur], base + "_pad32", to=TP.FLOAT)
        H_, W_ = Hp, Wp
    if s.real and s.pending_scale is not None:
        s.cur = s.apply_scale(s.cur, (C_, H_, W_))
    wn = B.weight(base + "_W", np.transpose(w, (0, 3, 1, 2)))
    hh = B.node("Conv", [s.cur, wn], base + "_h", strides=[sy, sx], kernel_shape=[kh, kw])
    Ho, Wo = (H_ - kh) // sy + 1, (W_ - kw) // sx + 1
    t = _threshold(layer.threshold, kh * kw * c, s.real).reshape(-1, 1, 1)
    if s.real:
        hh = B.node("Cast", [hh], base + "_h64", to=TP.DOUBLE)
    s.cur = B.binarize(hh, t, np.float64 if s.real else np.float32, base)
    s.shape = (f, Ho, Wo)
    s.real = False


@emitter("MaxPool2d")
def _emit_maxpool(s: _Stream, i: int, layer, last: bool) -> None:
    """``MaxPool``; min-pooled channels ``Neg -> MaxPool -> Neg`` (all) or ``Mul(±1)``
    around the pool (some). The input stays what it was (``real`` is left alone)."""
    B, base = s.B, f"l{i}"
    if len(s.shape) != 3:
        raise ValueError(f"layer {i}: MaxPool2d after a flat tensor")
    k = int(layer.size)
    st = int(layer.stride or k)
    mn = layer.min_channels
    mn = None if mn is None else np.asarray(mn, dtype=bool).reshape(-1)
    if mn is not None and not mn.any():
        mn = None
    if mn is not None and mn.all():
        s.cur = B.node("Neg", [s.cur], base + "_neg")
    elif mn is not None:
        sg = B.const(base + "_sgn", np.where(mn, -1.0, 1.0).astype(np.float32)
                     .reshape(-1, 1, 1))
        s.cur = B.node("Mul", [s.cur, sg], base + "_neg")
    s.cur = B.node("MaxPool", [s.cur], base + "_pool", kernel_shape=[k, k], strides=[st, st])
    if mn is not None and mn.all():
        s.cur = B.node("Neg", [s.cur], base + "_unneg")
    elif mn is not None:
        s.cur = B.node("Mul", [s.cur, sg], base + "_unneg")
    B.binary_tensors.append(s.cur)
    C_, H_, W_ = s.shape
    s.shape = (C_, (H_ - k) // st + 1, (W_ - k) // st + 1)


def export(net, path, opset: int = 17, qonnx: bool = False) -> None:
    """Write a frozen :class:`~bnn_toroid.network.BinaryNetwork` as an ONNX file.

    The graph takes ``x`` (float32, ``(N, *net.input_shape)`` in ``net.input_layout``) and
    returns ``logits`` (float64, ``(N, classes)``), equal to ``net.predict(x)``:

    - ``binarize_input``: ``Where(x >= 0, 1, -1)`` (so sign(-0.0) = +1, larq's convention);
      ``input_scale``: ``Mul`` (after the first conv's ``Pad``: pad values are in raw input
      units and scaled with the input, as in :class:`~bnn_toroid.network.Conv2d`);
    - hidden layers: ``MatMul``/``Conv`` with the ±1 kernel, then ``Where(h >= T, 1, -1)``,
      never a bare ``Sign`` (it maps 0 to 0). Binary layers run in float32, where the sums of
      ±1 products are exact integers (fan-in < 2**24) and the integer thresholds are exact.
      A real-valued first dense layer runs in float64 (``Cast`` first); a real-valued first
      conv runs in float32 (onnxruntime has no float64 ``Conv``) and compares in float64;
    - convolutions in NCHW (``Transpose`` from NHWC input); 'same' padding is an explicit
      ``Pad`` (TensorFlow's split, odd pixel after) whose constant is ``pad_value`` (larq's
      ``pad_values``, 0 or 1); per-channel pad values of a real first layer become
      ``Pad(0)`` plus a constant border;
    - ``MaxPool2d``: ``MaxPool``; min-pooled channels ``Neg -> MaxPool -> Neg`` (all) or
      ``Mul(±1) -> MaxPool -> Mul(±1)`` (some): ``min(u) = -max(-u)``;
    - before a dense layer, spatial activations go ``Transpose`` to NHWC and ``Reshape`` to
      ``(N, H*W*C)``: the NHWC flattening order of :class:`~bnn_toroid.network.Dense`;
    - output: ``h`` cast to float64, ``Mul(out_scale)``, ``Add(out_bias)`` (each omitted when
      1 or 0). Logits are exact where they are integers.

    Binary tensors (activations and kernels) carry the QONNX/FINN annotation
    ``quantization_annotation: finn_datatype = BIPOLAR``, which onnxruntime ignores. With
    ``qonnx=True`` every binarisation is written as ``BipolarQuant(h - T, 1)`` and every
    kernel as ``BipolarQuant(W, 1)`` in domain ``qonnx.custom_op.general`` (version 1;
    ``BipolarQuant(x, s) = s * (x >= 0 ? 1 : -1)``): QONNX/FINN tools execute it
    (``qonnx.core.onnx_exec.execute_onnx``), :func:`load` reads it back, onnxruntime cannot
    run it (no kernel for the custom domain). ``opset`` is the default-domain opset, an
    integer from :data:`MIN_OPSET` to the installed onnx's newest (else ``ValueError``).
    Every export is checked with ``onnx.checker.check_model(full_check=True)`` (types and
    shapes inferred) before it is written. The file is written atomically (a temporary
    file in the same folder, then ``os.replace``) with the permission bits of the file it
    replaces, else ``0o666`` less the umask; ``path`` must be a regular file or a new path,
    never a folder, a device or a symbolic link (:class:`~bnn_toroid._files.SaveTargetError`).

    Reference: larq ``QuantDense``/``QuantConv2D`` with ``ste_sign`` input and kernel
    quantizers and ``pad_values``; QONNX ``BipolarQuant``; docs/methods.md, "Integer threshold form".
    """
    from ..network import ResidualBinaryNetwork
    if isinstance(net, ResidualBinaryNetwork):
        if qonnx:
            raise ValueError("export: qonnx=True is not available for residual networks; "
                             "expected qonnx=False")
        from .residual_export import export_residual
        return export_residual(net, path, opset)
    onnx = onnx_module()
    from ..network.files import check_save_args

    check_save_args("export", net, path, hint=(
        "; export real-valued torch models with bnn_toroid.onnx.export_torch"
        if hasattr(net, "state_dict") else ""))
    opset = check_opset(opset, "export")
    from .._files import check_target

    check_target(path, "export")  # before the work: a refused target costs nothing
    B = _Builder(qonnx)
    h, TP = B.h, onnx.TensorProto
    layers = list(net.layers)
    in_shape = tuple(int(v) for v in net.input_shape)
    layout = net.input_layout
    cur = "x"
    scale = getattr(net, "input_scale", None)
    scale = None if scale is None else np.asarray(scale, dtype=np.float64)
    # the current tensor: NCHW (spatial, shape (C, H, W)) or flat (shape (F,))
    if layout == "flat":
        shape = (int(np.prod(in_shape)),)
        if len(in_shape) != 1:
            cur = B.node("Reshape", [cur, B.const("in_shape", np.array([0, -1], np.int64))],
                         "flat_input")
    else:
        if layout == "NHWC":
            Hh, Ww, Cc = in_shape
            cur = B.node("Transpose", [cur], "to_nchw", perm=[0, 3, 1, 2])
        else:
            Cc, Hh, Ww = in_shape
        shape = (Cc, Hh, Ww)
    real = not bool(net.binarize_input)
    if not real:
        cur = B.binarize(cur, None, np.float32, "input")
    s = _Stream(B, cur, shape, layout, real, scale if real else None)
    for i, layer in enumerate(layers):
        kind = type(layer).__name__
        emit = EMITTERS.get(kind)
        if emit is None:
            raise ValueError(f"layer {i}: cannot export a {kind}")
        emit(s, i, layer, i == len(layers) - 1)
    B.nodes.append(h.make_node("Identity", [s.cur], ["logits"], name="logits"))
    in_vi = h.make_tensor_value_info("x", TP.FLOAT, ["N", *in_shape])
    out_vi = h.make_tensor_value_info("logits", TP.DOUBLE, ["N", s.shape[0]])
    graph = h.make_graph(B.nodes, "bnn_toroid", [in_vi], [out_vi], initializer=B.inits)
    for t in dict.fromkeys(B.binary_tensors):
        qa = onnx.TensorAnnotation()
        qa.tensor_name = t
        e = qa.quant_parameter_tensor_names.add()
        e.key, e.value = "finn_datatype", "BIPOLAR"
        graph.quantization_annotation.append(qa)
    imports = [h.make_opsetid("", opset)]
    if qonnx:
        imports.append(h.make_opsetid(QONNX_DOMAIN, 1))
    model = h.make_model(graph, opset_imports=imports, producer_name="bnn_toroid",
                         producer_version=_version())
    try:  # the oldest IR version the opsets allow: readable by older onnxruntime releases
        model.ir_version = max(7, h.find_min_ir_version_for(list(model.opset_import),
                                                            ignore_unknown=True))
    except Exception:
        pass
    model.doc_string = ("Binary network exported by bnn_toroid (larq semantics: "
                        "sign(x) = +1 if x >= 0 else -1).")
    h.set_model_props(model, {"bnn_toroid.format": "binary-network",
                              "bnn_toroid.qonnx": str(bool(qonnx)).lower(),
                              "bnn_toroid.conv_hints": json.dumps(s.conv_hints)})
    try:  # full_check: type and shape inference over the whole graph, as a runtime does
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # a bug here, not the user's
        raise RuntimeError(f"bnn_toroid.onnx.export built an invalid model: {exc}") from exc
    _write_bytes(path, model.SerializeToString(), "export")


def _version():
    try:
        from .. import __version__

        return __version__
    except Exception:
        return ""


def _threshold(thr, n, real):
    """Thresholds for the file: integers clipped to [-n-1, n+1] (same function, exact in
    float32); real-valued ones (first layer on real input) as float64."""
    if real:
        return np.asarray(thr, dtype=np.float64)
    t = np.asarray(thr)
    if np.issubdtype(t.dtype, np.floating):
        t = np.ceil(t)
    return np.clip(t, -n - 1, n + 1).astype(np.float32)


def _output(B, hh, layer, hdtype, base):
    """The logits: ``h`` in float64, times ``out_scale``, plus ``out_bias``."""
    TP = B.onnx.TensorProto
    if hdtype != np.float64:
        hh = B.node("Cast", [hh], base + "_h64", to=TP.DOUBLE)
    sc, bi = layer.out_scale, layer.out_bias
    if sc is not None and not np.all(np.asarray(sc) == 1):
        hh = B.node("Mul", [hh, B.const(base + "_out_scale", np.asarray(sc, np.float64))],
                    base + "_scaled")
    if bi is not None and not np.all(np.asarray(bi) == 0):
        hh = B.node("Add", [hh, B.const(base + "_out_bias", np.asarray(bi, np.float64))],
                    base + "_logits")
    return hh


def export_torch(model, path, example_input, *, opset: int = 17, rtol: float = 1e-4,
                 atol: float = 1e-5) -> None:
    """Export a real-valued torch model with ``torch.onnx`` and check it with onnxruntime.

    The model is exported in eval mode (TorchScript exporter, ``dynamo=False``; the batch
    axis is dynamic), then onnxruntime runs the file on ``example_input`` and its output must
    match ``model(example_input)``: ``|ort - torch| <= atol + rtol * |torch|``. A mismatch
    raises ``RuntimeError`` and leaves no file behind. The file is written atomically, with
    the save-target rules of :func:`export`; ``opset`` is checked as there.

    For binary networks use :func:`export` on a frozen
    :class:`~bnn_toroid.network.BinaryNetwork` instead: ``torch.sign`` exports as ONNX
    ``Sign``, which maps 0 to 0 (larq's sign maps it to +1).
    """
    import torch

    from .._files import check_target, make_parent
    from ..network.files import check_save_args

    check_save_args("export_torch", model, path, kind=torch.nn.Module)
    opset = check_opset(opset, "export_torch")
    target = check_target(path, "export_torch")  # before the work: a refused target costs nothing
    make_parent(target, "export_torch")
    was_training = model.training
    model.eval()
    try:
        x = example_input if isinstance(example_input, torch.Tensor) else torch.as_tensor(
            np.asarray(example_input, dtype=np.float32))
        with torch.no_grad():
            ref = model(x).detach().cpu().numpy()
        buf = io.BytesIO()
        kwargs = dict(input_names=["x"], output_names=["logits"], opset_version=opset,
                      dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(model, (x,), buf, dynamo=False, **kwargs)
            except TypeError:  # older torch without the dynamo switch
                buf = io.BytesIO()
                torch.onnx.export(model, (x,), buf, **kwargs)
        data = buf.getvalue()
        import onnxruntime as ort

        sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x.detach().cpu().numpy()})[0]
        if got.shape != ref.shape or not np.allclose(got, ref, rtol=rtol, atol=atol):
            diff = float(np.max(np.abs(got - ref))) if got.shape == ref.shape else math.inf
            raise RuntimeError(
                f"export_torch: onnxruntime output differs from torch (max |diff| = "
                f"{diff:.3g}, shapes {got.shape} vs {ref.shape})")
        _write_bytes(path, data, "export_torch")
    finally:
        model.train(was_training)
