"""ONNX import and export of frozen binary networks, with larq semantics.

The sign convention everywhere is larq's ``ste_sign``: ``sign(x) = +1 if x >= 0 else -1``,
also for ``-0.0`` (docs/methods.md, "Sign convention"). ONNX's ``Sign`` operator (like ``torch.sign``) maps 0 to 0,
so a bare ``Sign`` is *not* larq's sign. Files written here spell the binarisation as
``Where(GreaterOrEqual(x, t), 1, -1)``; files written by larq + tf2onnx spell it as
``Sign(Sign(x) + 0.1)``. Both import to the same thing.

Public functions:

- :func:`load` reads an ONNX file (from larq + tf2onnx, from :func:`export`, or any graph of
  the same shape) into a :class:`bnn_toroid.network.BinaryNetwork` in integer threshold form.
- :func:`export` writes a frozen ``BinaryNetwork`` with standard opsets only, so that
  onnxruntime runs it unmodified; ``qonnx=True`` writes QONNX ``BipolarQuant`` nodes instead.
- :func:`export_torch` writes a real-valued torch model through ``torch.onnx`` and checks it
  with onnxruntime.

The importer is a pattern matcher, not a general ONNX interpreter. It walks the graph from
its input in topological order, constant-folds initializers and ``Constant`` nodes, and
tracks a small symbolic state per tensor: the (possibly rescaled) network input, a binary
±1 activation, or the pre-activation ``v = a*h + b`` (per unit ``a``, ``b``) of a linear
layer with a ±1 kernel whose integer pre-activation is ``h = w.x``. Per-channel affine ops
(``Mul``/``Add``/``Sub``/``Div``/``Neg``/``BatchNormalization``, a convolution bias, a BN
fused into the kernel by tf2onnx) update ``a`` and ``b``; the binarisation then folds them
into one threshold with :func:`bnn_toroid.network.fold_sign_affine`:
``sign(a*h + b) = +1  <=>  h' >= T`` (``h'`` from the row-flipped kernel where ``a < 0``).
A ``MaxPool`` met before the affine takes the minimum where the affine is decreasing.

Reference: Pittorino et al., "Deep Networks on Toroids", ICML 2022 (arXiv 2202.03038), and
this package's docs/methods.md, "Integer threshold form"; larq's ``quantizers.py`` (``ste_sign``);
the QONNX ``BipolarQuant`` operator (domain ``qonnx.custom_op.general``, version 1).
"""
from __future__ import annotations

import math
import os
import stat
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["OnnxImportError", "load", "export", "export_torch", "QONNX_DOMAIN",
           "MAX_TENSOR_ELEMENTS", "MIN_OPSET"]

#: Largest tensor (values per sample, or a folded constant) the importer builds. Checked
#: against the sizes a file declares before anything is allocated: a 100-byte file may
#: declare an input of 10^14 values.
MAX_TENSOR_ELEMENTS = 1 << 24

#: Oldest default-domain opset :func:`export` writes (the newest is the installed onnx
#: package's, ``onnx.defs.onnx_opset_version()``).
MIN_OPSET = 13

# protobuf cannot parse a message of 2 GiB or more
_MAX_FILE_BYTES = (1 << 31) - 1

#: Domain of the QONNX custom operators (``BipolarQuant``).
QONNX_DOMAIN = "qonnx.custom_op.general"
_QONNX_DOMAINS = (QONNX_DOMAIN, "finn.custom_op.general", "onnx.brevitas")


class OnnxImportError(ValueError):
    """An ONNX file could not be read as a binary network.

    Raised for malformed files (truncated, not ONNX, dangling tensor names, a kernel that
    should be ±1 and is not) and for graphs this importer does not understand. The message
    names the node (``name``, ``op_type``) where the walk stopped and what was expected.
    """


def _onnx():
    import onnx  # the real package: this module is bnn_toroid.onnx, imports are absolute

    return onnx


def _check_elements(shape, what: str):
    """OnnxImportError when a tensor of ``shape`` would exceed MAX_TENSOR_ELEMENTS."""
    n = math.prod(int(d) for d in shape)
    if n > MAX_TENSOR_ELEMENTS:
        raise OnnxImportError(f"{what} has shape {tuple(int(d) for d in shape)} ({n:,} values); "
                              f"expected at most {MAX_TENSOR_ELEMENTS:,} "
                              "(bnn_toroid.onnx.MAX_TENSOR_ELEMENTS)")


class _Sized:
    """Every symbolic tensor's shape is checked when set (padding and convolutions derive
    new shapes from attributes): arrays of that shape are allocated later."""

    def __setattr__(self, name, value):
        if name == "shape":
            _check_elements(value, "a tensor of the graph")
        object.__setattr__(self, name, value)


def _network():
    from . import network

    return network


# --------------------------------------------------------------------------------------
# Symbolic values
# --------------------------------------------------------------------------------------


@dataclass
class _Act(_Sized):
    """A ±1 activation (``binary``) or the real-valued network input (not ``binary``).

    ``shape`` and ``axes`` describe the physical non-batch axes (``axes`` are role names:
    ``"C"``, ``"H"``, ``"W"`` after a conv; ``"i0".."i2"`` for the input's own axes;
    ``("F",)`` when flat). ``flat_from`` keeps ``(axes, shape)`` of the spatial tensor a flat
    one was flattened from. ``neg`` (binary) marks elements stored negated; ``scale`` and
    ``offset`` (input) say the tensor is ``x*scale + offset`` elementwise. ``pad`` is a
    pending ``Pad`` (per physical axis ``(begin, end)``); ``pad_raw`` is the value of the
    padded pixels in raw input units (the file's padded value is ``scale*pad_raw + offset``),
    per position of the unpadded tensor (constant along the padded axes).
    The arrays have the unpadded shape; ``shape`` is the padded one.
    """

    binary: bool
    shape: tuple
    axes: tuple
    flat_from: tuple | None = None
    neg: np.ndarray | None = None
    scale: np.ndarray | None = None
    offset: np.ndarray | None = None
    pad: list | None = None
    pad_raw: np.ndarray | None = None
    from_input: bool = True  # binary activation made directly from the network input


@dataclass
class _Lin(_Sized):
    """Pre-activation ``v = a*h + b`` of a linear layer with a ±1 kernel (``h = w . x``)."""

    kind: str  # "dense" | "conv"
    weights: np.ndarray  # int8 (units, F) or (filters, kh, kw, c)
    a: np.ndarray
    b: np.ndarray
    integer: bool  # the layer's input is binary
    shape: tuple
    axes: tuple
    node: str
    stride: tuple = (1, 1)
    padding: str = "valid"
    pad_value: Any = 0
    flat_from: tuple | None = None
    pools: list = field(default_factory=list)  # (size, stride, sign of a at the pool)


@dataclass
class _SignPartial:
    """Output of ONNX ``Sign`` (values -1, 0, +1): only valid as the first half of larq's
    ``Sign(Sign(x) + c)`` with ``0 < c < 1``."""

    src: Any
    node: str


@dataclass
class _SignShifted:
    src: Any
    node: str


@dataclass
class _Cmp:
    """Boolean ``src >= thr`` (``ge``) or ``src < thr`` (not ``ge``)."""

    src: Any
    thr: np.ndarray
    ge: bool
    node: str


def _describe(node) -> str:
    return f"node {node.name!r} (op {node.op_type})"


def _conv_hints(model) -> list:
    """Per-conv ``padding``/``pad_value`` that :func:`export` records in the metadata. They
    only matter where the graph pads nothing (a 1x1 'same' conv, a pad value that is never
    used) and never override what the graph computes."""
    import json

    for p in model.metadata_props:
        if p.key == "bnn_toroid.conv_hints":
            try:
                hints = json.loads(p.value)
            except ValueError:
                return []
            return [h if isinstance(h, dict) else None for h in hints] \
                if isinstance(hints, list) else []
    return []


def _padded(x) -> bool:
    return isinstance(x, _Act) and x.pad is not None and any(p != (0, 0) for p in x.pad)


def _tf_same(n: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow 'same' padding: ``out = ceil(n/s)``, the odd pixel goes after."""
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


# --------------------------------------------------------------------------------------
# Reading and constant folding
# --------------------------------------------------------------------------------------


def _all_tensors(graph):
    """Every TensorProto of a graph: initializers and node attributes, subgraphs too."""
    yield from graph.initializer
    for sp in graph.sparse_initializer:
        yield sp.values
        yield sp.indices
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("sparse_tensor"):
                yield a.sparse_tensor.values
                yield a.sparse_tensor.indices
            if a.HasField("g"):
                yield from _all_tensors(a.g)
            for g in a.graphs:
                yield from _all_tensors(g)


def _external_file(folder: str, location: str, what: str):
    """(path, lstat) of an external-data file, which must lie inside ``folder``: a
    relative location without ``..``, no symbolic link anywhere below ``folder``, a
    regular file at the end. Checked here, whatever the onnx version does."""
    if not location or "\0" in location:
        raise OnnxImportError(f"{what}: external data location {location!r}; expected a file "
                              "name relative to the model's folder")
    parts = location.replace("\\", "/").split("/")
    if os.path.isabs(location) or location[:1] in ("/", "\\") or ":" in parts[0]:
        raise OnnxImportError(f"{what}: external data location {location!r} is absolute; expected "
                              "a file name relative to the model's folder")
    if ".." in parts:
        raise OnnxImportError(f"{what}: external data location {location!r} leaves the model's "
                              "folder ('..'); expected a file inside it")
    cur = folder
    st = None
    for part in (q for q in parts if q not in ("", ".")):
        cur = os.path.join(cur, part)
        try:
            st = os.lstat(cur)
        except OSError:
            raise OnnxImportError(f"{what}: external data file {location!r} does not exist in "
                                  f"{folder!r}") from None
        if stat.S_ISLNK(st.st_mode):
            raise OnnxImportError(f"{what}: external data location {location!r} passes through a "
                                  f"symbolic link ({cur!r}); expected plain files inside the "
                                  "model's folder")
    if st is None or not stat.S_ISREG(st.st_mode):
        raise OnnxImportError(f"{what}: external data location {location!r} is not a regular file")
    return cur, st


def _load_external(model, folder: str, where: str):
    """Read every tensor stored outside the model file into it, with the checks of
    :func:`_external_file` and the declared size checked against the file first."""
    onnx = _onnx()
    TP = onnx.TensorProto
    folder = os.path.realpath(folder)
    for t in _all_tensors(model.graph):
        if t.data_location != TP.EXTERNAL:
            continue
        what = f"{where}: tensor {t.name!r}"
        info = {e.key: e.value for e in t.external_data}
        path, st = _external_file(folder, info.get("location", ""), what)
        try:
            itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
            offset, length = int(info.get("offset", 0)), info.get("length")
        except Exception:
            raise OnnxImportError(f"{what}: external data of element type {t.data_type} with "
                                  f"offset {info.get('offset')!r}; expected a numeric tensor") from None
        if t.data_type == TP.STRING or any(d < 0 for d in t.dims):
            raise OnnxImportError(f"{what}: external data needs a numeric tensor of known shape")
        nbytes = math.prod(t.dims) * itemsize
        if length is not None and (not length.isdigit() or int(length) != nbytes):
            raise OnnxImportError(f"{what}: external data length {length!r} but shape "
                                  f"{list(t.dims)} needs {nbytes} bytes")
        if offset < 0 or offset + nbytes > st.st_size:
            raise OnnxImportError(f"{what}: external data needs bytes {offset}..{offset + nbytes} of "
                                  f"{info['location']!r}, which has {st.st_size}")
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            now = os.fstat(fd)
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):  # swapped since the check
                raise OnnxImportError(f"{what}: external data file {path!r} changed while read")
            data = os.pread(fd, nbytes, offset) if nbytes else b""
        finally:
            os.close(fd)
        if len(data) != nbytes:
            raise OnnxImportError(f"{what}: external data file {path!r} is truncated")
        t.raw_data = data
        del t.external_data[:]
        t.data_location = TP.DEFAULT


def _read_model(src):
    onnx = _onnx()
    if isinstance(src, onnx.ModelProto):
        model, where = src, "model"
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in _all_tensors(model.graph)):
            raise OnnxImportError("model: tensors stored in external files, and no folder to find "
                                  "them in; expected a path to the .onnx file")
    else:
        if not isinstance(src, (str, os.PathLike)):
            raise TypeError(f"load: path must be a str, os.PathLike or onnx.ModelProto, got "
                            f"{type(src).__name__}")
        path = os.fspath(src)
        where = repr(path)
        st = os.stat(path)  # a missing file is the OSError it is
        if not stat.S_ISREG(st.st_mode):
            raise OnnxImportError(f"{where} is not a regular file; expected an ONNX model")
        if st.st_size > _MAX_FILE_BYTES:
            raise OnnxImportError(f"{where} has {st.st_size} bytes; an ONNX model file holds less "
                                  "than 2 GiB (larger tensors go to external data files)")
        with open(path, "rb") as fh:
            data = fh.read()
        if not data:
            raise OnnxImportError(f"{where} is empty; expected an ONNX model")
        if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
            raise OnnxImportError(f"{where} is a zip archive (a bnn_toroid .npz network file? read "
                                  "it with bnn_toroid.load); expected an ONNX model")
        model = onnx.ModelProto()
        try:
            model.ParseFromString(data)
        except Exception as exc:  # google.protobuf.message.DecodeError and friends
            raise OnnxImportError(
                f"{where} is not a valid ONNX file (truncated or corrupted?): {exc}") from exc
        try:
            # beside the model file itself: a model reached through a link finds the data
            # next to its target (the data must still lie inside that folder, unlinked)
            _load_external(model, os.path.dirname(os.path.realpath(path)), where)
        except OnnxImportError:
            raise
        except Exception as exc:
            raise OnnxImportError(f"{where}: cannot load its external tensor data: {exc}") from exc
    if not model.HasField("graph") or len(model.graph.node) == 0:
        raise OnnxImportError(f"{where} holds no graph nodes (truncated or empty file?)")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise OnnxImportError(f"{where} is not a valid ONNX model: {exc}") from exc
    return model


def _attrs(node) -> dict:
    onnx = _onnx()
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, onnx.TensorProto):
            v = onnx.numpy_helper.to_array(v)
        out[a.name] = v
    return out


def _tensor(t, what):
    onnx = _onnx()
    try:
        return np.array(onnx.numpy_helper.to_array(t))
    except Exception as exc:
        raise OnnxImportError(f"{what}: cannot read tensor {t.name!r} (truncated?): {exc}") from exc


_NP_FOLD = {
    "Identity": lambda x: x,
    "Neg": np.negative,
    "Abs": np.abs,
    "Sqrt": np.sqrt,
    "Reciprocal": lambda x: 1.0 / x,
    "Sign": np.sign,
    "Not": np.logical_not,
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "Div": lambda a, b: (a // b) if np.issubdtype(np.result_type(a, b), np.integer) else a / b,
    "Pow": np.power,
    "GreaterOrEqual": np.greater_equal,
    "Greater": np.greater,
    "Less": np.less,
    "LessOrEqual": np.less_equal,
    "Equal": np.equal,
    "Where": np.where,
}


_BROADCAST = {"Add", "Sub", "Mul", "Div", "Pow", "Where", "GreaterOrEqual", "Greater", "Less",
              "LessOrEqual", "Equal", "And", "Or", "Xor", "Max", "Min", "Sum", "Mean"}


def _folded_shape(op, vals, attrs):
    """The shape a constant fold would produce, for the ops whose output can be far larger
    than their inputs; None for the others (their output is no larger than an input)."""
    ints = lambda v: [int(d) for d in np.asarray(v).ravel()]  # noqa: E731
    if op in _BROADCAST:
        return np.broadcast_shapes(*(np.shape(v) for v in vals))
    if op == "ConstantOfShape":
        return ints(vals[0])
    if op == "Expand":
        return np.broadcast_shapes(np.shape(vals[0]), tuple(ints(vals[1])))
    if op == "Tile":
        return [a * r for a, r in zip(np.shape(vals[0]), ints(vals[1]))]
    if op == "Range":
        start, limit, delta = (float(np.asarray(v).ravel()[0]) for v in vals[:3])
        return [max(0, math.ceil((limit - start) / delta))] if delta else [0]
    if op == "Pad" and len(vals) > 1:
        pads = ints(vals[1])
        r = np.ndim(vals[0])
        return [d + pads[i] + pads[i + r] for i, d in enumerate(np.shape(vals[0]))] \
            if len(pads) == 2 * r else None
    if op == "OneHot":
        return list(np.shape(vals[0])) + ints(vals[1])[:1]
    if op in ("RandomNormal", "RandomUniform") and "shape" in attrs:
        return ints(attrs["shape"])
    if op in ("Resize", "Upsample"):
        sizes = vals[3] if len(vals) > 3 else None
        if sizes is not None and np.size(sizes):
            return ints(sizes)
        scales = vals[2] if op == "Resize" and len(vals) > 2 else (vals[1] if len(vals) > 1 else None)
        if scales is not None and np.size(scales) == np.ndim(vals[0]):
            return [math.floor(d * float(f)) for d, f in zip(np.shape(vals[0]), np.ravel(scales))]
    return None


def _fold(node, vals: list, attrs: dict):
    """Evaluate a node whose inputs are all constants (numpy, else onnx.reference); the
    result's size is checked against MAX_TENSOR_ELEMENTS before it is computed."""
    op = node.op_type
    try:
        shape = _folded_shape(op, vals, attrs)
    except (ValueError, TypeError, IndexError, OverflowError, ZeroDivisionError):
        shape = None  # malformed operands: the fold below reports them
    if shape is not None:
        if any(d < 0 for d in shape):
            raise OnnxImportError(f"{_describe(node)}: folds to a negative shape {list(shape)}")
        _check_elements(shape, f"{_describe(node)}: its constant result")
    if node.domain in _QONNX_DOMAINS and op == "BipolarQuant":
        x, scale = vals
        return [np.where(x >= 0, 1.0, -1.0).astype(x.dtype) * scale]
    if node.domain not in ("", "ai.onnx"):
        raise OnnxImportError(f"{_describe(node)}: custom domain {node.domain!r} is not supported")
    try:
        if op in _NP_FOLD and len(node.output) == 1:
            out = _NP_FOLD[op](*vals)
            if op in ("Add", "Sub", "Mul", "Div", "Pow", "Where") and vals:
                out = np.asarray(out).astype(np.result_type(*[v.dtype for v in vals[-2:]]))
            return [np.asarray(out)]
        if op == "Cast":
            onnx = _onnx()
            return [vals[0].astype(onnx.helper.tensor_dtype_to_np_dtype(attrs["to"]))]
        if op == "Transpose":
            return [np.transpose(vals[0], attrs.get("perm"))]
        if op == "Reshape":
            shape = [int(s) for s in vals[1]]
            shape = [vals[0].shape[i] if s == 0 else s for i, s in enumerate(shape)]
            return [vals[0].reshape(shape)]
        if op == "Concat":
            return [np.concatenate(vals, axis=attrs["axis"])]
        if op == "Unsqueeze" and len(vals) == 2:
            out = vals[0]
            for ax in sorted(int(a) % (out.ndim + len(vals[1])) for a in vals[1]):
                out = np.expand_dims(out, ax)
            return [out]
        if op == "Squeeze" and len(vals) == 2:
            return [np.squeeze(vals[0], axis=tuple(int(a) for a in vals[1]))]
        if op == "Shape":
            return [np.array(vals[0].shape, dtype=np.int64)]
    except OnnxImportError:
        raise
    except Exception as exc:  # MemoryError included: a result too large for this machine
        raise OnnxImportError(f"{_describe(node)}: cannot fold its constant inputs: {exc!r}") from exc
    # Anything else with constant inputs: the ONNX reference evaluator.
    onnx = _onnx()
    try:
        from onnx.reference import ReferenceEvaluator

        h = onnx.helper
        names = [f"c{i}" for i in range(len(vals))]
        inputs = [h.make_tensor_value_info(n, h.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                  for n, v in zip(names, vals)]
        outs = [h.make_tensor_value_info(f"o{i}", onnx.TensorProto.UNDEFINED, None)
                for i in range(len(node.output))]
        n2 = h.make_node(op, names, [o.name for o in outs], domain=node.domain)
        n2.attribute.extend(node.attribute)
        g = h.make_graph([n2], "fold", inputs, outs)
        m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
        res = ReferenceEvaluator(m).run(None, dict(zip(names, vals)))
        out = [np.asarray(r) for r in res]
    except Exception as exc:  # MemoryError included
        raise OnnxImportError(
            f"{_describe(node)}: cannot fold its constant inputs: {exc!r}") from exc
    for r in out:
        _check_elements(r.shape, f"{_describe(node)}: its constant result")
    return out


def _pm1_kernel(w: np.ndarray, unit_axis: int, node, name: str):
    """Split a kernel into ``mag[u] * k`` with ``k`` ±1 (int8, units first) and ``mag >= 0``.

    tf2onnx fuses a following BatchNorm into a conv kernel, which makes each filter a
    multiple of a ±1 filter. A filter of all zeros (BN gamma 0) gets ``k = +1, mag = 0``.
    Anything else (mixed magnitudes, zeros, NaN) is not a binary kernel.
    """
    w = np.moveaxis(np.asarray(w, dtype=np.float64), unit_axis, 0)
    flat = w.reshape(w.shape[0], -1)
    if not np.all(np.isfinite(flat)):
        raise OnnxImportError(f"{_describe(node)}: kernel {name!r} holds NaN or inf; expected ±1")
    mag = np.abs(flat).max(axis=1) if flat.shape[1] else np.zeros(flat.shape[0])
    ok = np.abs(np.abs(flat) - mag[:, None]) <= 1e-6 * mag[:, None]
    bad = ~np.all(ok, axis=1)
    if np.any(bad):
        u = int(np.flatnonzero(bad)[0])
        vals = np.unique(flat[u])[:6]
        raise OnnxImportError(
            f"{_describe(node)}: kernel {name!r} is not binary: unit {u} holds the values "
            f"{vals.tolist()}...; expected ±1 (or ±s for one s per unit, a BatchNorm fused "
            "into a ±1 kernel)")
    k = np.where(flat >= 0, 1, -1).astype(np.int8).reshape(w.shape)
    return k, mag


# --------------------------------------------------------------------------------------
# The importer
# --------------------------------------------------------------------------------------


class _Importer:
    def __init__(self, model):
        onnx = _onnx()
        self.onnx = onnx
        self.model = model
        g = model.graph
        self.consts: dict[str, np.ndarray] = {}
        for t in g.initializer:
            self.consts[t.name] = _tensor(t, f"initializer {t.name!r}")
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
        self.conv_hints = _conv_hints(model)
        self.n_conv = 0
        self._setup_input()

    # ---- graph input --------------------------------------------------------------
    def _setup_input(self):
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
        _check_elements(shape, f"graph input {self.input.name!r} (one sample)")
        axes = ("F",) if len(shape) == 1 else tuple(f"i{j}" for j in range(len(shape)))
        if len(shape) == 1:
            self.input_layout = "flat"
            self.input_shape = shape
        self.raw_input_shape = shape
        self.vals[self.input.name] = _Act(
            binary=False, shape=shape, axes=axes,
            scale=np.ones(shape), offset=np.zeros(shape))

    # ---- helpers ------------------------------------------------------------------
    def _get(self, name, node):
        if name in self.consts:
            return self.consts[name]
        if name in self.vals:
            return self.vals[name]
        raise OnnxImportError(
            f"{_describe(node)}: input {name!r} is produced by no node, initializer or graph "
            "input (dangling tensor name; truncated or corrupted file?)")

    def _const(self, name, node, what):
        v = self._get(name, node)
        if not isinstance(v, np.ndarray):
            raise OnnxImportError(f"{_describe(node)}: {what} {name!r} must be a constant")
        return v

    @staticmethod
    def _broadcast(value_shape, c, node):
        """Broadcast a constant against ``(N, *value_shape)``; return it as value_shape."""
        c = np.asarray(c, dtype=np.float64)
        full_rank = len(value_shape) + 1
        if c.ndim > full_rank:
            raise OnnxImportError(f"{_describe(node)}: constant of shape {c.shape} has more axes "
                                  f"than the tensor (N, {', '.join(map(str, value_shape))})")
        if c.ndim == full_rank:
            if c.shape[0] != 1:
                raise OnnxImportError(f"{_describe(node)}: constant varies along the batch axis")
            c = c[0]
        try:
            return np.broadcast_to(c, value_shape).copy()
        except ValueError:
            raise OnnxImportError(
                f"{_describe(node)}: constant of shape {c.shape} does not broadcast against "
                f"a tensor of shape (N, {', '.join(map(str, value_shape))})") from None

    def _per_unit(self, lin: _Lin, c, node):
        """A constant as one value per unit of ``lin`` (error if it varies within a unit)."""
        full = self._broadcast(lin.shape, c, node)
        axes, shape = lin.axes, lin.shape
        if axes == ("F",) and lin.flat_from is not None:
            axes, shape = lin.flat_from
            full = full.reshape(shape)
        ch = "F" if axes == ("F",) else "C"
        ax = axes.index(ch)
        per = np.moveaxis(full, ax, 0).reshape(full.shape[ax], -1)
        if not np.all(per == per[:, :1]):
            raise OnnxImportError(
                f"{_describe(node)}: constant is not one value per unit/channel; cannot fold "
                "it into a threshold")
        return per[:, 0].copy()

    # ---- main walk ----------------------------------------------------------------
    def run(self):
        g = self.model.graph
        nodes = self._live_nodes(g)
        self.used = {i for n in nodes for i in n.input if i}
        for node in nodes:
            self._step(node)
        out = self.vals.get(self.output, self.consts.get(self.output))
        return self._finish(out)

    def _live_nodes(self, g):
        producers = {}
        for node in g.node:
            for o in node.output:
                if o:
                    producers[o] = node
        known = set(self.consts) | {self.input.name}
        if self.output not in producers and self.output not in known:
            raise OnnxImportError(f"graph output {self.output!r} is produced by no node")
        # Nodes the output depends on, then a topological order of them.
        live, stack = set(), [self.output]
        while stack:
            t = stack.pop()
            node = producers.get(t)
            if node is None or id(node) in live:
                if node is None and t not in known and t != "":
                    raise OnnxImportError(
                        f"tensor {t!r} is used but produced by no node, initializer or graph "
                        "input (dangling tensor name; truncated or corrupted file?)")
                continue
            live.add(id(node))
            stack.extend(i for i in node.input if i)
        order, done, temp = [], set(), set()

        def visit(node):
            if id(node) in done:
                return
            if id(node) in temp:
                raise OnnxImportError(f"{_describe(node)} is part of a cycle")
            temp.add(id(node))
            for i in node.input:
                if i in producers:
                    visit(producers[i])
            temp.discard(id(node))
            done.add(id(node))
            order.append(node)

        for node in g.node:
            if id(node) in live:
                visit(node)
        # chain check: a non-constant tensor may feed only one live node
        uses: dict[str, int] = {}
        const_nodes = self._const_node_outputs(order)
        for node in order:
            if node.op_type == "Shape":  # reads only the static shape
                continue
            for i in set(node.input):
                if i and i not in self.consts and i not in const_nodes:
                    uses[i] = uses.get(i, 0) + 1
        for t, n in uses.items():
            if n > 1:
                users = [f"{x.name!r} ({x.op_type})" for x in order if t in x.input]
                raise OnnxImportError(
                    f"tensor {t!r} feeds {n} nodes ({', '.join(users)}); only chain-shaped "
                    "networks (one path from input to output) are supported")
        return order

    def _const_node_outputs(self, order):
        known = set(self.consts)
        for node in order:
            if node.op_type == "Shape" or all((i == "" or i in known) for i in node.input):
                known.update(node.output)
        return known

    def _step(self, node):
        op = node.op_type
        attrs = _attrs(node)
        ins = [self._get(i, node) if i else None for i in node.input]
        if all(isinstance(v, np.ndarray) or v is None for v in ins):
            if op == "Constant":
                outs = [self._constant_node(node, attrs)]
            else:
                outs = _fold(node, [v for v in ins if v is not None], attrs)
            for name, v in zip(node.output, outs):
                self.consts[name] = np.asarray(v)
            return
        if op == "Shape" and node.domain in ("", "ai.onnx"):
            self.consts[node.output[0]] = self._shape_of(node, ins[0], attrs)
            return
        for v, name in zip(ins, node.input):
            if isinstance(v, _SignPartial) and op not in ("Add", "Sub", "Identity"):
                raise OnnxImportError(
                    f"{_describe(node)}: its input {name!r} comes from a bare ONNX Sign (node "
                    f"{v.node!r}); ONNX Sign maps 0 to 0, which is not larq's sign. Expected "
                    "Sign -> Add(c, 0 < c < 1) -> Sign (larq ste_sign) or Where(x >= t, 1, -1)")
        if node.domain in _QONNX_DOMAINS:
            if op != "BipolarQuant":
                raise OnnxImportError(f"{_describe(node)}: QONNX op {op} is not supported "
                                      "(only BipolarQuant)")
            res = self._bipolar_quant(node, ins)
        elif node.domain not in ("", "ai.onnx"):
            raise OnnxImportError(f"{_describe(node)}: custom domain {node.domain!r} is not "
                                  "supported")
        else:
            handler = getattr(self, f"_op_{op}", None)
            if handler is None:
                raise OnnxImportError(
                    f"{_describe(node)} is not supported by the binary-network importer "
                    f"(operand kinds: {[type(v).__name__.strip('_') for v in ins]})")
            res = handler(node, ins, attrs)
        for extra in node.output[1:]:
            if extra and (extra in self.used or extra == self.output):
                raise OnnxImportError(f"{_describe(node)}: its output {extra!r} is used; only "
                                      "the first output of a node is supported")
        self.vals[node.output[0]] = res

    def _shape_of(self, node, x, attrs):
        """``Shape`` of a symbolic tensor: its static sample shape, batch 1. The shape
        only feeds constants (``ConstantOfShape`` for torch's ``ones_like``, pad
        sizes) that broadcast along the batch axis."""
        while isinstance(x, (_SignPartial, _SignShifted, _Cmp, _Softmax)):
            x = x.src
        if not isinstance(x, (_Act, _Lin)):
            raise OnnxImportError(f"{_describe(node)}: shape of a {type(x).__name__}")
        full = np.array((1,) + tuple(x.shape), dtype=np.int64)
        start, end = attrs.get("start", 0), attrs.get("end", None)
        return full[start:end]

    def _constant_node(self, node, attrs):
        for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
            if key in attrs:
                v = attrs[key]
                if key == "value":
                    return np.asarray(v)
                return np.asarray(v, dtype=np.float32 if "float" in key else np.int64)
        raise OnnxImportError(f"{_describe(node)}: unsupported Constant attributes {list(attrs)}")

    # ---- pass-through -------------------------------------------------------------
    def _op_Identity(self, node, ins, attrs):
        return ins[0]

    def _op_Dropout(self, node, ins, attrs):
        if len([o for o in node.output if o]) > 1:
            raise OnnxImportError(f"{_describe(node)}: Dropout with a mask output")
        return ins[0]

    def _op_Cast(self, node, ins, attrs):
        x = ins[0]
        onnx = self.onnx
        if attrs.get("to") not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE,
                                   onnx.TensorProto.FLOAT16):
            raise OnnxImportError(f"{_describe(node)}: cast to a non-float type")
        if isinstance(x, (_Act, _Lin)):
            return x
        raise OnnxImportError(f"{_describe(node)}: cannot cast a {type(x).__name__}")

    # ---- elementwise affine -------------------------------------------------------
    def _split_const(self, node, ins):
        a, b = ins
        if isinstance(a, np.ndarray) and not isinstance(b, np.ndarray):
            return b, a, True
        if isinstance(b, np.ndarray) and not isinstance(a, np.ndarray):
            return a, b, False
        raise OnnxImportError(f"{_describe(node)}: needs one constant and one tensor operand")

    def _affine(self, node, x, mul, add):
        """Apply ``x -> x*mul + add`` (constants) to a symbolic value."""
        if isinstance(x, _Act) and _padded(x):
            return self._affine_padded(node, x, mul, add)
        if isinstance(x, _Lin):
            m = self._per_unit(x, mul, node)
            c = self._per_unit(x, add, node)
            x.a = x.a * m
            x.b = x.b * m + c
            return x
        if isinstance(x, _Act) and not x.binary:
            m = self._broadcast(x.shape, mul, node)
            c = self._broadcast(x.shape, add, node)
            x.scale = x.scale * m
            x.offset = x.offset * m + c
            return x
        if isinstance(x, _Act) and x.binary:
            m = self._broadcast(x.shape, mul, node)
            c = self._broadcast(x.shape, add, node)
            if np.all(c == 0) and np.all(np.abs(m) == 1):
                x.neg = x.neg ^ (m < 0)
                return x
            raise OnnxImportError(
                f"{_describe(node)}: a binary activation may only be multiplied by ±1 "
                "(scaled or shifted binary activations are not supported)")
        if isinstance(x, _SignPartial):
            c = np.asarray(add, dtype=np.float64)
            if np.all(np.asarray(mul) == 1) and c.size and np.all((c > 0) & (c < 1)):
                return _SignShifted(x.src, node.name)
            raise OnnxImportError(
                f"{_describe(node)}: ONNX Sign maps 0 to 0, so a bare Sign is not larq's "
                "sign; expected Sign -> Add(c, 0 < c < 1) -> Sign (larq ste_sign via tf2onnx)")
        raise OnnxImportError(f"{_describe(node)}: cannot apply an affine map to a "
                              f"{type(x).__name__.strip('_')}")

    def _affine_padded(self, node, x, mul, add):
        """``x*mul + add`` on a padded real input: the interior updates scale/offset, the
        border updates ``pad_raw``. Constants must not vary along a padded axis, except an
        ``add`` that is zero inside and fills the border (per-channel pad values)."""
        if x.binary:
            raise OnnxImportError(f"{_describe(node)}: scaling or shifting a padded binary "
                                  "activation")
        m = self._broadcast(x.shape, mul, node)
        c = self._broadcast(x.shape, add, node)
        inner = tuple(slice(b, n - e) for (b, e), n in zip(x.pad, x.shape))
        padded_axes = tuple(i for i, p in enumerate(x.pad) if p != (0, 0))

        def along_padded(arr):  # arr restricted to one index on the padded axes, or None
            first = arr[tuple(slice(0, 1) if i in padded_axes else slice(None)
                              for i in range(arr.ndim))]
            return first if np.all(arr == first) else None

        m1 = along_padded(m)
        c1 = along_padded(c)
        if m1 is None:
            raise OnnxImportError(f"{_describe(node)}: a factor that varies along a padded axis")
        if c1 is not None:  # pad_raw is in raw units: unchanged
            m_in, c_in = m[inner], c[inner]
            x.scale, x.offset = x.scale * m_in, x.offset * m_in + c_in
            return x
        # border fill: zero inside, constant along the padded axes on the border
        if np.any(c[inner] != 0) or np.any(m != 1):
            raise OnnxImportError(f"{_describe(node)}: a constant that varies along a padded "
                                  "axis (only a border fill, zero inside, is understood)")
        border = np.ones(x.shape, dtype=bool)
        border[inner] = False
        v = np.where(border, c, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            hi = np.nanmax(v, axis=padded_axes, keepdims=True)
            lo = np.nanmin(v, axis=padded_axes, keepdims=True)
        if not np.array_equal(hi, lo):
            raise OnnxImportError(f"{_describe(node)}: the border fill is not constant along "
                                  "the padded axes")
        x.pad_raw = x.pad_raw + np.broadcast_to(hi, x.pad_raw.shape) / x.scale
        return x

    def _op_Add(self, node, ins, attrs):
        x, c, _ = self._split_const(node, ins)
        return self._affine(node, x, 1.0, c)

    def _op_Sub(self, node, ins, attrs):
        x, c, const_first = self._split_const(node, ins)
        if const_first:  # c - x
            return self._affine(node, x, -1.0, c)
        return self._affine(node, x, 1.0, -np.asarray(c, dtype=np.float64))

    def _op_Mul(self, node, ins, attrs):
        x, c, _ = self._split_const(node, ins)
        return self._affine(node, x, c, 0.0)

    def _op_Div(self, node, ins, attrs):
        x, c, const_first = self._split_const(node, ins)
        if const_first:
            raise OnnxImportError(f"{_describe(node)}: division by a tensor is not affine")
        c = np.asarray(c, dtype=np.float64)
        if np.any(c == 0):
            raise OnnxImportError(f"{_describe(node)}: division by zero")
        return self._affine(node, x, 1.0 / c, 0.0)

    def _op_Neg(self, node, ins, attrs):
        return self._affine(node, ins[0], -1.0, 0.0)

    def _op_BatchNormalization(self, node, ins, attrs):
        x = ins[0]
        if attrs.get("training_mode", 0):
            raise OnnxImportError(f"{_describe(node)}: BatchNormalization in training mode")
        if len([o for o in node.output if o]) != 1:
            raise OnnxImportError(f"{_describe(node)}: BatchNormalization with running-stat "
                                  "outputs")
        names = ["scale", "B", "mean", "var"]
        scale, bias, mean, var = (np.asarray(self._const(n, node, names[i]), dtype=np.float64)
                                  for i, n in enumerate(node.input[1:5]))
        eps = float(attrs.get("epsilon", 1e-5))
        g = scale / np.sqrt(var + eps)
        if not isinstance(x, (_Lin, _Act)):
            raise OnnxImportError(f"{_describe(node)}: BatchNormalization of a "
                                  f"{type(x).__name__.strip('_')}")
        # BN normalises axis 1 of (N, C, ...): shape the per-channel vectors for that.
        extra = len(x.shape) - 1
        shp = (1, -1) + (1,) * extra
        return self._affine(node, x, g.reshape(shp), (bias - mean * g).reshape(shp))

    # ---- layout ---------------------------------------------------------------------
    def _op_Transpose(self, node, ins, attrs):
        x = ins[0]
        if not isinstance(x, (_Act, _Lin)):
            raise OnnxImportError(f"{_describe(node)}: transposing a "
                                  f"{type(x).__name__.strip('_')}")
        perm = list(attrs.get("perm", range(len(x.shape) + 1)[::-1]))
        if perm[0] != 0:
            raise OnnxImportError(f"{_describe(node)}: perm {perm} moves the batch axis")
        return self._permute(x, [p - 1 for p in perm[1:]])

    @staticmethod
    def _permute(x, perm):
        if list(perm) == list(range(len(x.shape))):
            return x
        x.shape = tuple(x.shape[p] for p in perm)
        x.axes = tuple(x.axes[p] for p in perm)
        if isinstance(x, _Act):
            for nm in ("neg", "scale", "offset", "pad_raw"):
                arr = getattr(x, nm)
                if arr is not None:
                    setattr(x, nm, np.transpose(arr, perm))
            if x.pad is not None:
                x.pad = [x.pad[p] for p in perm]
        return x

    def _reshape(self, node, x, target):
        if not isinstance(x, (_Act, _Lin)):
            raise OnnxImportError(f"{_describe(node)}: reshaping a "
                                  f"{type(x).__name__.strip('_')}")
        target = [int(t) for t in target]
        if not target:
            raise OnnxImportError(f"{_describe(node)}: reshape to a scalar")
        b = target[0]
        if b == 0 or b == -1:
            rest = target[1:]
        elif self.batch_dim is not None and b == self.batch_dim:
            rest = target[1:]
        else:
            raise OnnxImportError(
                f"{_describe(node)}: reshape to {target} changes the batch axis")
        if b == -1 and -1 in rest:
            raise OnnxImportError(f"{_describe(node)}: reshape to {target} is ambiguous")
        # 0 copies the input's dimension at the same position (batch excluded here)
        rest = [x.shape[i] if (t == 0 and i < len(x.shape)) else t for i, t in enumerate(rest)]
        total = int(np.prod(x.shape))
        if -1 in rest:
            known = int(np.prod([t for t in rest if t != -1]))
            rest = [total // known if t == -1 else t for t in rest]
        new = tuple(rest)
        if int(np.prod(new)) != total:
            raise OnnxImportError(
                f"{_describe(node)}: reshape of a (N, {x.shape}) tensor to {target} loses "
                "elements")
        if new == x.shape:
            return x
        if len(new) == 1:  # flatten
            if isinstance(x, _Act) and _padded(x):
                raise OnnxImportError(f"{_describe(node)}: flattening a padded tensor")
            if x.axes != ("F",):
                x.flat_from = (x.axes, x.shape)
            x.axes, x.shape = ("F",), new
            if isinstance(x, _Act):
                for nm in ("neg", "scale", "offset"):
                    arr = getattr(x, nm)
                    if arr is not None:
                        setattr(x, nm, arr.reshape(-1))
            return x
        if len(new) == len(x.shape):
            # only size-1 axes move: a transpose in disguise
            old_nonunit = [i for i, s in enumerate(x.shape) if s != 1]
            new_nonunit = [s for s in new if s != 1]
            if [x.shape[i] for i in old_nonunit] == new_nonunit:
                old_unit = [i for i, s in enumerate(x.shape) if s == 1]
                perm, it_n, it_u = [], iter(old_nonunit), iter(old_unit)
                for s in new:
                    perm.append(next(it_u) if s == 1 else next(it_n))
                return self._permute(x, perm)
        if len(new) == 3 and x.axes == ("F",) and x.flat_from is not None \
                and tuple(new) == tuple(x.flat_from[1]):
            axes, shape = x.flat_from
            x.axes, x.shape, x.flat_from = axes, shape, None
            if isinstance(x, _Act):
                for nm in ("neg", "scale", "offset"):
                    arr = getattr(x, nm)
                    if arr is not None:
                        setattr(x, nm, arr.reshape(shape))
            return x
        raise OnnxImportError(
            f"{_describe(node)}: reshape of a (N, {', '.join(map(str, x.shape))}) tensor to "
            f"{target} is neither a flatten nor a relabelling of size-1 axes")

    def _op_Reshape(self, node, ins, attrs):
        if attrs.get("allowzero", 0):
            raise OnnxImportError(f"{_describe(node)}: Reshape with allowzero=1")
        target = self._const(node.input[1], node, "shape")
        return self._reshape(node, ins[0], target)

    def _op_Flatten(self, node, ins, attrs):
        x = ins[0]
        axis = int(attrs.get("axis", 1))
        if axis not in (1, -len(getattr(x, "shape", ())) ):
            raise OnnxImportError(f"{_describe(node)}: Flatten with axis {axis}; expected 1")
        return self._reshape(node, x, [-1, int(np.prod(x.shape))])

    def _op_Pad(self, node, ins, attrs):
        x = ins[0]
        if not isinstance(x, _Act):
            raise OnnxImportError(f"{_describe(node)}: padding a "
                                  f"{type(x).__name__.strip('_')}; only layer inputs are padded")
        if attrs.get("mode", "constant") != "constant":
            raise OnnxImportError(f"{_describe(node)}: Pad mode {attrs.get('mode')!r}; "
                                  "expected 'constant'")
        if len(node.input) > 1 and node.input[1]:
            pads = self._const(node.input[1], node, "pads")
        else:
            pads = attrs.get("pads")
        value = 0.0
        if len(node.input) > 2 and node.input[2]:
            value = float(np.asarray(self._const(node.input[2], node, "constant_value")).ravel()[0])
        elif "value" in attrs:
            value = float(attrs["value"])
        if len(node.input) > 3 and node.input[3]:
            raise OnnxImportError(f"{_describe(node)}: Pad with an axes input")
        pads = [int(p) for p in np.asarray(pads).ravel()]
        r = len(x.shape) + 1
        if len(pads) != 2 * r:
            raise OnnxImportError(f"{_describe(node)}: {len(pads)} pads for a rank-{r} tensor")
        if pads[0] or pads[r] or any(p < 0 for p in pads):
            raise OnnxImportError(f"{_describe(node)}: pads {pads} touch the batch axis or crop")
        per = [(pads[i + 1], pads[r + i + 1]) for i in range(r - 1)]
        if all(p == (0, 0) for p in per):
            return x
        if x.binary:
            if value not in (0.0, 1.0):
                raise OnnxImportError(f"{_describe(node)}: pad value {value} on a binary "
                                      "activation; expected 0 or 1 (larq pad_values)")
            if value != 0 and np.any(x.neg):
                raise OnnxImportError(f"{_describe(node)}: padding a negated activation with 1")
        elif not np.isfinite(value):
            raise OnnxImportError(f"{_describe(node)}: pad value {value}")
        raw = np.full(x.shape, value) if x.binary else (value - x.offset) / x.scale
        if _padded(x):
            if not np.all(x.pad_raw == raw):
                raise OnnxImportError(f"{_describe(node)}: two Pads with different values")
            per = [(a[0] + b[0], a[1] + b[1]) for a, b in zip(x.pad, per)]
            unpadded = tuple(n - b - e for n, (b, e) in zip(x.shape, x.pad))
        else:
            if not x.binary and np.any(x.scale == 0):
                raise OnnxImportError(f"{_describe(node)}: padding an input scaled by 0")
            unpadded = x.shape
            x.pad_raw = raw
        x.pad = per
        x.shape = tuple(n + b + e for n, (b, e) in zip(unpadded, per))
        return x

    # ---- linear layers --------------------------------------------------------------
    def _layer_input(self, node, x):
        if isinstance(x, _Act):
            if not x.binary and self.first_layer_done:
                raise OnnxImportError(f"{_describe(node)}: real-valued input to a later layer")
            if self.first_layer_done and x.from_input:
                raise OnnxImportError(f"{_describe(node)}: the input feeds two layers")
            return x
        if isinstance(x, _Lin):
            raise OnnxImportError(
                f"{_describe(node)}: its input is the pre-activation of layer {x.node!r} with no "
                "binarisation in between (expected larq's ste_sign: Sign -> Add -> Sign, or "
                "Where(x >= t, 1, -1))")
        raise OnnxImportError(f"{_describe(node)}: unexpected input kind "
                              f"{type(x).__name__.strip('_')}")

    def _input_vectors(self, x, node, per_channel_axis):
        """Input scale/offset as per-channel vectors (error if they vary per pixel)."""
        sc, off = x.scale, x.offset
        ax = per_channel_axis
        s2 = np.moveaxis(sc, ax, 0).reshape(sc.shape[ax], -1)
        o2 = np.moveaxis(off, ax, 0).reshape(off.shape[ax], -1)
        if not (np.all(s2 == s2[:, :1]) and np.all(o2 == o2[:, :1])):
            raise OnnxImportError(f"{_describe(node)}: input scaling is not per channel")
        return s2[:, 0].copy(), o2[:, 0].copy()

    def _bind_input_layout(self, node, axes):
        """The spatial input's layout, from the roles its axes take at the first layer."""
        if self.input_layout is not None:
            return
        if axes == ("i2", "i0", "i1"):
            self.input_layout = "NHWC"
        elif axes == ("i0", "i1", "i2"):
            self.input_layout = "NCHW"
        else:
            raise OnnxImportError(f"{_describe(node)}: the input reaches the conv with axes "
                                  f"permuted as {axes}; expected NHWC or NCHW input")
        self.input_shape = self.raw_input_shape

    def _set_input_scale(self, scale, node):
        if np.any(scale <= 0):
            raise OnnxImportError(f"{_describe(node)}: non-positive input scale")
        self.input_scale = None if np.all(scale == 1) else scale.astype(np.float64)

    def _op_MatMul(self, node, ins, attrs):
        x, w = ins
        if not isinstance(w, np.ndarray):
            raise OnnxImportError(f"{_describe(node)}: the kernel (second operand) must be a "
                                  "constant")
        x = self._layer_input(node, x)
        return self._dense(node, x, w, transposed=False, alpha=1.0, bias=None)

    def _op_Gemm(self, node, ins, attrs):
        x, w = ins[0], ins[1]
        if attrs.get("transA", 0):
            raise OnnxImportError(f"{_describe(node)}: Gemm with transA=1")
        if not isinstance(w, np.ndarray):
            raise OnnxImportError(f"{_describe(node)}: the kernel B must be a constant")
        bias = None
        if len(ins) > 2 and ins[2] is not None:
            bias = float(attrs.get("beta", 1.0)) * np.asarray(ins[2], dtype=np.float64)
        x = self._layer_input(node, x)
        return self._dense(node, x, w, transposed=bool(attrs.get("transB", 0)),
                           alpha=float(attrs.get("alpha", 1.0)), bias=bias)

    def _dense(self, node, x: _Act, w, transposed, alpha, bias):
        if x.axes != ("F",):
            raise OnnxImportError(f"{_describe(node)}: dense layer on a (N, {x.shape}) tensor; "
                                  "flatten it first")
        w = np.asarray(w)
        if w.ndim != 2:
            raise OnnxImportError(f"{_describe(node)}: kernel of rank {w.ndim}; expected 2")
        k, mag = _pm1_kernel(w, 0 if transposed else 1, node, node.input[1])
        units, nin = k.shape
        if nin != x.shape[0]:
            raise OnnxImportError(f"{_describe(node)}: kernel expects {nin} inputs, the "
                                  f"tensor has {x.shape[0]}")
        idx = np.arange(nin)
        if x.flat_from is not None:
            axes, shape = x.flat_from
            if axes[0].startswith("i"):  # the network input, flattened for a dense layer
                canon = self._declare_input_for_dense(axes)
            else:
                canon = ("H", "W", "C")
            if set(axes) != set(canon):
                raise OnnxImportError(f"{_describe(node)}: flattened axes {axes} not understood")
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
                raise OnnxImportError(f"{_describe(node)}: an input feature is scaled by 0")
            # h_file = sum_j k_j (s_j x_j + o_j) = sum_j (k_j sign s_j) |s_j| x_j + k . o
            b = b + a * (kc.astype(np.float64) @ of)
            kc = np.where((sc < 0)[None, :], -kc, kc).astype(np.int8)
            sc = np.abs(sc)
            if x.flat_from is not None and self.input_layout in ("NHWC", "NCHW"):
                # image input, dense first: one scale per channel
                s2 = sc.reshape(-1, self.raw_input_shape[0] if self.input_layout == "NCHW"
                                else self.raw_input_shape[-1])
                if not np.all(s2 == s2[:1]):
                    raise OnnxImportError(f"{_describe(node)}: the input scaling of a spatial "
                                          "input must be one value per channel")
                sc = s2[0].copy()
            self._set_input_scale(sc, node)
        self.first_layer_done = True
        return _Lin("dense", kc, a.astype(np.float64), b, x.binary, (units,), ("F",),
                    node.name)

    def _declare_input_for_dense(self, axes):
        """Layout of an image input whose first layer is dense, from its flattening order:
        (C, H, W) moved to (H, W, C) first means NCHW; else NHWC (flat for other ranks).
        Returns the canonical (NHWC) order of the input's axes."""
        if len(axes) == 3 and tuple(axes) == ("i1", "i2", "i0"):
            layout, canon = "NCHW", ("i1", "i2", "i0")
        else:
            layout = "NHWC" if len(axes) == 3 else "flat"
            canon = tuple(f"i{j}" for j in range(len(axes)))
        if self.input_layout is None:
            self.input_layout, self.input_shape = layout, self.raw_input_shape
        return canon

    def _op_Conv(self, node, ins, attrs):
        x, w = ins[0], ins[1]
        bias = ins[2] if len(ins) > 2 else None
        if not isinstance(w, np.ndarray):
            raise OnnxImportError(f"{_describe(node)}: the kernel must be a constant")
        x = self._layer_input(node, x)
        w = np.asarray(w)
        if w.ndim != 4 or len(x.shape) != 3:
            raise OnnxImportError(f"{_describe(node)}: only 2-D convolutions are supported")
        if attrs.get("group", 1) != 1:
            raise OnnxImportError(f"{_describe(node)}: grouped convolution (group="
                                  f"{attrs['group']})")
        if any(d != 1 for d in attrs.get("dilations", [1, 1])):
            raise OnnxImportError(f"{_describe(node)}: dilated convolution")
        sy, sx = (int(v) for v in attrs.get("strides", [1, 1]))
        m, c, kh, kw = w.shape
        if "kernel_shape" in attrs and list(attrs["kernel_shape"]) != [kh, kw]:
            raise OnnxImportError(f"{_describe(node)}: kernel_shape does not match the kernel")
        if x.shape[0] != c:
            raise OnnxImportError(f"{_describe(node)}: kernel has {c} input channels, the "
                                  f"tensor (N, {x.shape}) has {x.shape[0]} on axis 1")
        axes = x.axes
        if axes[0].startswith("i"):
            self._bind_input_layout(node, axes)
        elif axes != ("C", "H", "W"):
            raise OnnxImportError(f"{_describe(node)}: conv input has axes {axes}; expected "
                                  "NCHW (a Transpose is missing?)")
        pad = x.pad if x.pad is not None else [(0, 0)] * 3
        if pad[0] != (0, 0):
            raise OnnxImportError(f"{_describe(node)}: the channel axis is padded")
        H, W = x.shape[1] - sum(pad[1]), x.shape[2] - sum(pad[2])
        explicit = _padded(x)
        auto = attrs.get("auto_pad", "NOTSET")
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            ph, pw = _tf_same(x.shape[1], kh, sy), _tf_same(x.shape[2], kw, sx)
            if auto == "SAME_LOWER":
                ph, pw = ph[::-1], pw[::-1]
            cp = [ph[0], pw[0], ph[1], pw[1]]
        elif auto == "VALID":
            cp = [0, 0, 0, 0]
        elif auto == "NOTSET":
            cp = [int(p) for p in attrs.get("pads", [0, 0, 0, 0])]
        else:
            raise OnnxImportError(f"{_describe(node)}: auto_pad {auto!r}")
        # conv pads are zeros in the file's current units: raw value -offset/scale
        zero_raw = np.zeros((c, H, W)) if x.binary else -x.offset / x.scale
        if any(cp) and explicit and not np.all(x.pad_raw == zero_raw):
            raise OnnxImportError(f"{_describe(node)}: conv zero padding after a Pad with "
                                  "a nonzero value")
        fill = x.pad_raw if explicit else zero_raw
        tot_h = (pad[1][0] + cp[0], pad[1][1] + cp[2])
        tot_w = (pad[2][0] + cp[1], pad[2][1] + cp[3])
        hint = self.conv_hints[self.n_conv] if self.n_conv < len(self.conv_hints) else None
        self.n_conv += 1
        if tot_h == (0, 0) and tot_w == (0, 0):
            # nothing is padded: 'valid', or 'same' that pads nothing here (the exporter's
            # hint keeps the layer's own spelling; the function is the same either way)
            padding = "valid"
            if hint is not None and hint.get("padding") in ("valid", "same"):
                padding = hint["padding"]
        elif tot_h == _tf_same(H, kh, sy) and tot_w == _tf_same(W, kw, sx):
            padding = "same"
        else:
            raise OnnxImportError(
                f"{_describe(node)}: padding {tot_h} x {tot_w} on a {H}x{W} input is neither "
                f"'valid' nor TensorFlow 'same' for kernel {kh}x{kw}, stride ({sy}, {sx})")
        f2 = fill.reshape(c, -1)
        if not np.all(f2 == f2[:, :1]):
            raise OnnxImportError(f"{_describe(node)}: the padding value varies across pixels")
        fill = f2[:, 0]
        k, mag = _pm1_kernel(w, 0, node, node.input[1])
        k = np.transpose(k, (0, 2, 3, 1)).copy()  # (filters, kh, kw, c)
        a = mag.copy()
        b = np.zeros(m) if bias is None else np.asarray(bias, dtype=np.float64).reshape(m)
        pad_value: Any = 0
        padded = tot_h != (0, 0) or tot_w != (0, 0)
        if x.binary:
            if padded:
                if not (np.all(fill == 0) or np.all(fill == 1)):
                    raise OnnxImportError(f"{_describe(node)}: binary activations padded with "
                                          f"{np.unique(fill)}; expected 0 or 1")
                pad_value = int(fill[0])
            if x.neg is not None and np.any(x.neg):
                n2 = x.neg.reshape(x.neg.shape[0], -1)  # (C, H*W), unpadded
                if not np.all(n2 == n2[:, :1]):
                    raise OnnxImportError(f"{_describe(node)}: input negated per pixel")
                k = np.where(n2[:, 0][None, None, None, :], -k, k).astype(np.int8)
        else:
            sc, of = self._input_vectors(x, node, per_channel_axis=0)
            if np.any(sc == 0):
                raise OnnxImportError(f"{_describe(node)}: an input channel is scaled by 0")
            # file: h = sum_taps k_c xe, xe = s_c x + o_c inside, s_c p_c + o_c on the border
            # (p = pad_raw). network: k'_c = k_c sign(s_c), input |s_c| x, border |s_c| pv_c
            # (pv in raw units), so h_file = h_net + sum_taps k_c o_c with pv_c = p_c.
            if np.any(of != 0):
                b = b + a * np.einsum("fijc,c->f", k.astype(np.float64), of)
            if padded:
                pv = fill
                pad_value = float(pv[0]) if np.all(pv == pv[0]) else pv
            k = np.where((sc < 0)[None, None, None, :], -k, k).astype(np.int8)
            self._set_input_scale(np.abs(sc), node)
        if not padded and hint is not None and "pad_value" in hint:  # unused by the graph
            pv = np.asarray(hint["pad_value"], dtype=np.float64)
            if np.all(np.isfinite(pv)) and (pv.ndim == 0 and pv in (0, 1) or not x.binary
                                            and pv.shape in ((), (c,))):
                pad_value = int(pv) if x.binary else (float(pv) if pv.ndim == 0 else pv)
        Ho = (H + sum(tot_h) - kh) // sy + 1
        Wo = (W + sum(tot_w) - kw) // sx + 1
        self.first_layer_done = True
        return _Lin("conv", k, a, b, x.binary, (m, Ho, Wo), ("C", "H", "W"), node.name,
                    stride=(sy, sx), padding=padding, pad_value=pad_value)

    # ---- pooling --------------------------------------------------------------------
    def _op_MaxPool(self, node, ins, attrs):
        x = ins[0]
        ks = list(attrs.get("kernel_shape", []))
        st = list(attrs.get("strides", [1] * len(ks)))
        if len(ks) != 2 or ks[0] != ks[1] or st[0] != st[1]:
            raise OnnxImportError(f"{_describe(node)}: kernel {ks}, strides {st}; expected a "
                                  "square 2-D pool with equal strides")
        if any(attrs.get("pads", [0, 0, 0, 0])) or attrs.get("auto_pad", "NOTSET") not in (
                "NOTSET", "VALID") or attrs.get("ceil_mode", 0) or any(
                d != 1 for d in attrs.get("dilations", [1, 1])):
            raise OnnxImportError(f"{_describe(node)}: padded, dilated or ceil-mode pooling")
        k, s = int(ks[0]), int(st[0])
        if not isinstance(x, (_Lin, _Act)) or len(x.shape) != 3 or x.axes != ("C", "H", "W"):
            raise OnnxImportError(f"{_describe(node)}: max-pooling a "
                                  f"{type(x).__name__.strip('_')} with axes "
                                  f"{getattr(x, 'axes', None)}; expected an NCHW layer output")
        C, H, W = x.shape
        Ho, Wo = (H - k) // s + 1, (W - k) // s + 1
        if Ho < 1 or Wo < 1:
            raise OnnxImportError(f"{_describe(node)}: pool larger than its {H}x{W} input")
        if isinstance(x, _Lin):
            if x.kind != "conv":
                raise OnnxImportError(f"{_describe(node)}: pooling a dense layer")
            x.pools.append((k, s, np.sign(x.a)))
        else:
            if not x.binary:
                raise OnnxImportError(f"{_describe(node)}: pooling the real-valued input")
            n2 = x.neg.reshape(C, -1)
            if not np.all(n2 == n2[:, :1]):
                raise OnnxImportError(f"{_describe(node)}: activation negated per pixel")
            mn = n2[:, 0].copy()
            net = _network()
            self.layers.append(net.MaxPool2d(k, s, min_channels=mn if mn.any() else None))
            x.neg = np.broadcast_to(mn[:, None, None], (C, Ho, Wo)).copy()
        x.shape = (C, Ho, Wo)
        return x

    # ---- binarisation ---------------------------------------------------------------
    def _op_Sign(self, node, ins, attrs):
        x = ins[0]
        if isinstance(x, _SignShifted):
            return self._binarize(node, x.src, 0.0)
        if isinstance(x, (_Act, _Lin)):
            return _SignPartial(x, node.name)
        raise OnnxImportError(f"{_describe(node)}: Sign of a {type(x).__name__.strip('_')}")

    def _op_GreaterOrEqual(self, node, ins, attrs):
        x, c = ins
        if not isinstance(c, np.ndarray) or not isinstance(x, (_Act, _Lin)):
            raise OnnxImportError(f"{_describe(node)}: expected GreaterOrEqual(tensor, constant)")
        return _Cmp(x, c, True, node.name)

    def _op_Less(self, node, ins, attrs):
        x, c = ins
        if not isinstance(c, np.ndarray) or not isinstance(x, (_Act, _Lin)):
            raise OnnxImportError(f"{_describe(node)}: expected Less(tensor, constant)")
        return _Cmp(x, c, False, node.name)

    def _op_Where(self, node, ins, attrs):
        cond, hi, lo = ins
        if not isinstance(cond, _Cmp) or not isinstance(hi, np.ndarray) \
                or not isinstance(lo, np.ndarray):
            raise OnnxImportError(f"{_describe(node)}: expected Where(x >= t, 1, -1)")
        hv, lv = np.unique(hi), np.unique(lo)
        if hv.size != 1 or lv.size != 1 or {float(hv[0]), float(lv[0])} != {1.0, -1.0}:
            raise OnnxImportError(f"{_describe(node)}: Where outputs {hv} / {lv}; expected "
                                  "±1 (a binary activation)")
        positive = (float(hv[0]) == 1.0) == cond.ge  # +1 iff src >= thr
        out = self._binarize(node, cond.src, cond.thr)
        if not positive:
            out.neg = ~out.neg
        return out

    def _bipolar_quant(self, node, ins):
        x, scale = ins[0], ins[1]
        if not isinstance(scale, np.ndarray) or not np.all(np.asarray(scale) == 1):
            raise OnnxImportError(f"{_describe(node)}: BipolarQuant of an activation with scale "
                                  f"{scale}; expected 1")
        return self._binarize(node, x, 0.0)

    def _binarize(self, node, x, thr):
        """``+1 iff x >= thr`` (larq sign of ``x - thr``) for a symbolic ``x``."""
        net = _network()
        if isinstance(x, _Lin):
            t = self._per_unit(x, thr, node)
            w2, T, _flipped = net.fold_sign_affine(x.weights, x.a, x.b - t, integer=x.integer)
            if x.kind == "dense":
                if x.pools:
                    raise OnnxImportError(f"{_describe(node)}: pooled dense layer")
                self.layers.append(net.Dense(w2, T))
            else:
                self.layers.append(net.Conv2d(w2, T, stride=x.stride, padding=x.padding,
                                              pad_value=x.pad_value))
            sa = np.sign(x.a)
            for (k, s, sa_pool) in x.pools:
                mn = (sa * sa_pool) < 0
                self.layers.append(net.MaxPool2d(k, s, min_channels=mn if mn.any() else None))
            return _Act(True, x.shape, x.axes, flat_from=x.flat_from,
                        neg=np.zeros(x.shape, dtype=bool), from_input=False)
        if isinstance(x, _Act) and not x.binary:
            t = self._broadcast(x.shape, thr, node)
            if self.first_layer_done:
                raise OnnxImportError(f"{_describe(node)}: binarising the input twice")
            if np.any(t != 0) or np.any(x.offset != 0) or np.any(x.scale <= 0):
                raise OnnxImportError(
                    f"{_describe(node)}: the input is binarised with a shift or a non-positive "
                    "scale; only sign(x) of the raw (positively scaled) input is supported")
            if _padded(x):
                raise OnnxImportError(f"{_describe(node)}: binarising a padded input")
            self.binarize_input = True
            return _Act(True, x.shape, x.axes, flat_from=x.flat_from,
                        neg=np.zeros(x.shape, dtype=bool), from_input=True)
        if isinstance(x, _Act) and x.binary:
            t = self._broadcast(x.shape, thr, node)
            # physical value p = ±1; p >= t is p itself iff -1 < t <= 1
            if np.all((t > -1) & (t <= 1)) and not _padded(x):
                return x
            raise OnnxImportError(f"{_describe(node)}: re-binarising a ±1 activation against "
                                  f"threshold {np.unique(t)[:4]} is not the identity")
        raise OnnxImportError(f"{_describe(node)}: cannot binarise a "
                              f"{type(x).__name__.strip('_')}")

    # ---- end ----------------------------------------------------------------------
    def _finish(self, out):
        net = _network()
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

    def _op_Softmax(self, node, ins, attrs):
        x = ins[0]
        axis = int(attrs.get("axis", -1))
        if not isinstance(x, _Lin) or x.kind != "dense" or axis not in (1, -1):
            raise OnnxImportError(f"{_describe(node)}: only a final softmax over the logits "
                                  "is supported")
        return _Softmax(x, node)

    _op_LogSoftmax = _op_Softmax


@dataclass
class _Softmax:
    """A final (Log)Softmax over the logits: dropped with a warning."""

    src: Any
    node: Any


def load(path) -> "Any":
    """Read an ONNX file into a :class:`~bnn_toroid.network.BinaryNetwork` (larq semantics).

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
    tensors in external data files are read by this module, not by the onnx package, and
    only from regular files inside the model's folder (relative locations without ``..``,
    no symbolic links), with the declared size checked against the file first. Declared
    shapes are checked against :data:`MAX_TENSOR_ELEMENTS` before anything is allocated.

    Raises :class:`OnnxImportError` (a ``ValueError``) naming the node and op where the
    graph stopped matching, or what is malformed (truncated file, dangling tensor, a kernel
    that should be ±1, a size over the limit); also for a graph whose attributes make no
    sense (a zero stride) or that does not make a valid network. ``OSError`` if the file
    cannot be read.
    """
    model = _read_model(path)
    try:
        return _Importer(model).run()
    except OnnxImportError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, ZeroDivisionError, OverflowError,
            AttributeError, RecursionError, MemoryError) as exc:
        # attribute values the checker does not vet (strides of 0, ranks that do not match)
        # surface here; the network's own checks (NetworkError) too
        raise OnnxImportError(f"the graph does not describe a binary network this importer can "
                              f"build: {type(exc).__name__}: {exc}") from exc


# --------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------


def _atomic_write(path, data: bytes, what: str = "export"):
    """Write ``data`` to ``path`` atomically, with the save-target rules of
    :func:`bnn_toroid._files.atomic_write` (a regular file or a new path, no links)."""
    from ._files import atomic_write

    atomic_write(path, lambda fh: fh.write(data), what)


def _check_opset(opset, what: str) -> int:
    """``opset`` as an int from MIN_OPSET to the installed onnx package's newest."""
    from .kernels.bits import as_count

    opset = as_count(what, "opset", opset)
    newest = _onnx().defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise ValueError(f"{what}: opset {opset} is outside {MIN_OPSET}..{newest}; expected an "
                         f"opset from {MIN_OPSET} to {newest}, the newest this onnx "
                         f"{_onnx().__version__} knows (onnxruntime may lag behind it)")
    return opset


class _Builder:
    def __init__(self, qonnx: bool):
        onnx = _onnx()
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
    file in the same folder, then ``os.replace``); ``path`` must be a regular file or a
    new path, never a folder, a device or a symbolic link
    (:class:`~bnn_toroid._files.SaveTargetError`).

    Reference: larq ``QuantDense``/``QuantConv2D`` with ``ste_sign`` input and kernel
    quantizers and ``pad_values``; QONNX ``BipolarQuant``; docs/methods.md, "Integer threshold form".
    """
    onnx = _onnx()
    net_mod = _network()
    from .network.files import check_save_args

    check_save_args("export", net, path, hint=(
        "; export real-valued torch models with bnn_toroid.onnx.export_torch"
        if hasattr(net, "state_dict") else ""))
    opset = _check_opset(opset, "export")
    from ._files import check_target

    check_target(path, "export")  # before the work: a refused target costs nothing
    B = _Builder(qonnx)
    h, TP = B.h, onnx.TensorProto
    layers = list(net.layers)
    conv_hints = []
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
    pending_scale = scale if real else None
    if not real:
        cur = B.binarize(cur, None, np.float32, "input")

    def apply_scale(cur, shape):
        sc = pending_scale.reshape(-1) if pending_scale.ndim else pending_scale
        if len(shape) == 3 and sc.ndim:
            sc = sc.reshape(-1, 1, 1)
        elif len(shape) == 1 and layout != "flat" and sc.ndim:  # spatial input, dense first
            sc = np.broadcast_to(sc, (shape[0] // sc.size, sc.size)).reshape(-1)
        # in float64 (the file keeps the scale exactly), back to float32 for the layer
        c64 = B.node("Cast", [cur], "input_f64", to=TP.DOUBLE)
        c64 = B.node("Mul", [c64, B.const("input_scale", sc.astype(np.float64))], "scaled")
        return B.node("Cast", [c64], "scaled_f32", to=TP.FLOAT)

    for i, layer in enumerate(layers):
        kind = type(layer).__name__
        last = i == len(layers) - 1
        base = f"l{i}"
        if kind == "Dense":
            w = np.asarray(layer.weights)
            if len(shape) == 3:
                cur = B.node("Transpose", [cur], base + "_to_nhwc", perm=[0, 2, 3, 1])
                cur = B.node("Reshape", [cur, B.const(base + "_shape",
                                                       np.array([0, -1], np.int64))],
                             base + "_flat")
                shape = (int(np.prod(shape)),)
            if w.shape[1] != shape[0]:
                raise ValueError(f"layer {i}: Dense expects {w.shape[1]} inputs, gets {shape[0]}")
            if real:
                if pending_scale is not None:
                    cur = apply_scale(cur, shape)
                xin = B.node("Cast", [cur], base + "_x64", to=TP.DOUBLE)
                hh = B.node("MatMul", [xin, B.weight(base + "_W", w.T, np.float64)], base + "_h")
                hdtype = np.float64
            else:
                hh = B.node("MatMul", [cur, B.weight(base + "_W", w.T)], base + "_h")
                hdtype = np.float32
            if last:
                cur = _output(B, hh, layer, hdtype, base)
            else:
                cur = B.binarize(hh, _threshold(layer.threshold, w.shape[1], real), hdtype,
                                 base)
            shape = (w.shape[0],)
        elif kind == "Conv2d":
            if len(shape) != 3 or last:
                raise ValueError(f"layer {i}: a Conv2d needs an image input and cannot be the "
                                 "output layer")
            w = np.asarray(layer.weights)
            f, kh, kw, c = w.shape
            C_, H_, W_ = shape
            pv_hint = np.asarray(layer.pad_value, dtype=np.float64)
            conv_hints.append({"padding": layer.padding,
                               "pad_value": pv_hint.tolist()})
            if c != C_:
                raise ValueError(f"layer {i}: Conv2d expects {c} channels, gets {C_}")
            sy, sx = (int(v) for v in np.broadcast_to(np.asarray(layer.stride), (2,)))
            if layer.padding == "same":
                ph, pw = _tf_same(H_, kh, sy), _tf_same(W_, kw, sx)
            elif layer.padding == "valid":
                ph, pw = (0, 0), (0, 0)
            else:
                raise ValueError(f"layer {i}: unknown padding {layer.padding!r}")
            if any(ph) or any(pw):
                pv = np.asarray(layer.pad_value, dtype=np.float64)
                pads = np.array([0, 0, ph[0], pw[0], 0, 0, ph[1], pw[1]], np.int64)
                scalar = pv.ndim == 0 or np.all(pv == pv.reshape(-1)[0])
                fill = float(pv.reshape(-1)[0]) if scalar else 0.0
                cur = B.node("Pad", [cur, B.const(base + "_pads", pads),
                                     B.const(base + "_padval", np.array(fill, np.float32))],
                             base + "_pad", mode="constant")
                Hp, Wp = H_ + sum(ph), W_ + sum(pw)
                if not scalar:  # per-channel pad values (real first layer): a border constant
                    border = np.ones((Hp, Wp), bool)
                    border[ph[0]:Hp - ph[1], pw[0]:Wp - pw[1]] = False
                    fillc = (border[None] * pv.reshape(-1, 1, 1))[None].astype(np.float64)
                    cur = B.node("Cast", [cur], base + "_pad64", to=TP.DOUBLE)
                    cur = B.node("Add", [cur, B.const(base + "_border", fillc)],
                                 base + "_border")
                    cur = B.node("Cast", [cur], base + "_pad32", to=TP.FLOAT)
                H_, W_ = Hp, Wp
            if real and pending_scale is not None:
                cur = apply_scale(cur, (C_, H_, W_))
            wn = B.weight(base + "_W", np.transpose(w, (0, 3, 1, 2)))
            hh = B.node("Conv", [cur, wn], base + "_h", strides=[sy, sx], kernel_shape=[kh, kw])
            Ho, Wo = (H_ - kh) // sy + 1, (W_ - kw) // sx + 1
            t = _threshold(layer.threshold, kh * kw * c, real).reshape(-1, 1, 1)
            if real:
                hh = B.node("Cast", [hh], base + "_h64", to=TP.DOUBLE)
            cur = B.binarize(hh, t, np.float64 if real else np.float32, base)
            shape = (f, Ho, Wo)
        elif kind == "MaxPool2d":
            if len(shape) != 3:
                raise ValueError(f"layer {i}: MaxPool2d after a flat tensor")
            k = int(layer.size)
            st = int(layer.stride or k)
            mn = layer.min_channels
            mn = None if mn is None else np.asarray(mn, dtype=bool).reshape(-1)
            if mn is not None and not mn.any():
                mn = None
            if mn is not None and mn.all():
                cur = B.node("Neg", [cur], base + "_neg")
            elif mn is not None:
                sg = B.const(base + "_sgn", np.where(mn, -1.0, 1.0).astype(np.float32)
                             .reshape(-1, 1, 1))
                cur = B.node("Mul", [cur, sg], base + "_neg")
            cur = B.node("MaxPool", [cur], base + "_pool", kernel_shape=[k, k], strides=[st, st])
            if mn is not None and mn.all():
                cur = B.node("Neg", [cur], base + "_unneg")
            elif mn is not None:
                cur = B.node("Mul", [cur, sg], base + "_unneg")
            B.binary_tensors.append(cur)
            C_, H_, W_ = shape
            shape = (C_, (H_ - k) // st + 1, (W_ - k) // st + 1)
        else:
            raise ValueError(f"layer {i}: cannot export a {kind}")
        if kind != "MaxPool2d":
            real = False
    B.nodes.append(h.make_node("Identity", [cur], ["logits"], name="logits"))
    in_vi = h.make_tensor_value_info("x", TP.FLOAT, ["N", *in_shape])
    out_vi = h.make_tensor_value_info("logits", TP.DOUBLE, ["N", shape[0]])
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
    import json

    h.set_model_props(model, {"bnn_toroid.format": "binary-network",
                              "bnn_toroid.qonnx": str(bool(qonnx)).lower(),
                              "bnn_toroid.conv_hints": json.dumps(conv_hints)})
    try:  # full_check: type and shape inference over the whole graph, as a runtime does
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # a bug here, not the user's
        raise RuntimeError(f"bnn_toroid.onnx.export built an invalid model: {exc}") from exc
    _atomic_write(path, model.SerializeToString())


def _version():
    try:
        from . import __version__

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

    from ._files import check_target, file_mode, make_parent
    from .network.files import check_save_args

    check_save_args("export_torch", model, path, kind=torch.nn.Module)
    opset = _check_opset(opset, "export_torch")
    target = check_target(path, "export_torch")
    make_parent(target, "export_torch")
    path = os.fspath(target)
    folder = os.path.dirname(os.path.abspath(path))
    was_training = model.training
    model.eval()
    try:
        x = example_input if isinstance(example_input, torch.Tensor) else torch.as_tensor(
            np.asarray(example_input, dtype=np.float32))
        with torch.no_grad():
            ref = model(x).detach().cpu().numpy()
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".onnx", dir=folder)
        os.close(fd)
        try:
            kwargs = dict(input_names=["x"], output_names=["logits"], opset_version=opset,
                          dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    torch.onnx.export(model, (x,), tmp, dynamo=False, **kwargs)
                except TypeError:  # older torch without the dynamo switch
                    torch.onnx.export(model, (x,), tmp, **kwargs)
            import onnxruntime as ort

            sess = ort.InferenceSession(tmp, providers=["CPUExecutionProvider"])
            got = sess.run(None, {sess.get_inputs()[0].name: x.detach().cpu().numpy()})[0]
            if got.shape != ref.shape or not np.allclose(got, ref, rtol=rtol, atol=atol):
                diff = float(np.max(np.abs(got - ref))) if got.shape == ref.shape else math.inf
                raise RuntimeError(
                    f"export_torch: onnxruntime output differs from torch (max |diff| = "
                    f"{diff:.3g}, shapes {got.shape} vs {ref.shape})")
            os.chmod(tmp, file_mode(path))
            check_target(path, "export_torch")  # again just before the rename
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    finally:
        model.train(was_training)
