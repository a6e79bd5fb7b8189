"""Reading an ONNX file and folding its constants.

:func:`read_model` parses a file (or takes an ``onnx.ModelProto``) with the file-safety
rules of ``docs/interop.md``: a regular file under 2 GiB, external data read here (never
by the onnx package) and only from regular files inside the model's folder, then
``onnx.checker``. :func:`fold` evaluates a node whose inputs are all constants (numpy,
else ``onnx.reference``) with its result's size checked before it is computed.
:func:`live_nodes` orders the nodes the output depends on and refuses anything but a
chain.
"""
from __future__ import annotations

import math
import os
import stat

import numpy as np

from .common import (MAX_FILE_BYTES, QONNX_DOMAINS, STANDARD_DOMAINS, OnnxImportError,
                     check_elements, describe, onnx_module)


def all_tensors(graph):
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
                yield from all_tensors(a.g)
            for g in a.graphs:
                yield from all_tensors(g)


def external_file(folder: str, location: str, what: str):
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


def load_external(model, folder: str, where: str):
    """Read every tensor stored outside the model file into it, with the checks of
    :func:`external_file` and the declared size checked against the file first."""
    onnx = onnx_module()
    TP = onnx.TensorProto
    folder = os.path.realpath(folder)
    for t in all_tensors(model.graph):
        if t.data_location != TP.EXTERNAL:
            continue
        what = f"{where}: tensor {t.name!r}"
        info = {e.key: e.value for e in t.external_data}
        path, st = external_file(folder, info.get("location", ""), what)
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


def read_model(src):
    """The checked ``onnx.ModelProto`` of a path or a model (module doc); every failure but
    a missing or unreadable file is an :class:`OnnxImportError` naming the file."""
    onnx = onnx_module()
    if isinstance(src, onnx.ModelProto):
        model, where = src, "model"
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in all_tensors(model.graph)):
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
        if st.st_size > MAX_FILE_BYTES:
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
            load_external(model, os.path.dirname(os.path.realpath(path)), where)
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


def node_attrs(node) -> dict:
    """A node's attributes as Python values (strings decoded, tensors as numpy arrays)."""
    onnx = onnx_module()
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, onnx.TensorProto):
            v = onnx.numpy_helper.to_array(v)
        out[a.name] = v
    return out


def tensor_value(t, what):
    """A TensorProto as a numpy array; an unreadable one is an :class:`OnnxImportError`."""
    onnx = onnx_module()
    try:
        return np.array(onnx.numpy_helper.to_array(t))
    except Exception as exc:
        raise OnnxImportError(f"{what}: cannot read tensor {t.name!r} (truncated?): {exc}") from exc


NP_FOLD = {
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


BROADCAST = {"Add", "Sub", "Mul", "Div", "Pow", "Where", "GreaterOrEqual", "Greater", "Less",
              "LessOrEqual", "Equal", "And", "Or", "Xor", "Max", "Min", "Sum", "Mean"}


def folded_shape(op, vals, attrs):
    """The shape a constant fold would produce, for the ops whose output can be far larger
    than their inputs; None for the others (their output is no larger than an input)."""
    ints = lambda v: [int(d) for d in np.asarray(v).ravel()]  # noqa: E731
    if op in BROADCAST:
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


def fold(node, vals: list, attrs: dict):
    """Evaluate a node whose inputs are all constants (numpy, else onnx.reference); the
    result's size is checked against MAX_TENSOR_ELEMENTS before it is computed."""
    op = node.op_type
    try:
        shape = folded_shape(op, vals, attrs)
    except (ValueError, TypeError, IndexError, OverflowError, ZeroDivisionError):
        shape = None  # malformed operands: the fold below reports them
    if shape is not None:
        if any(d < 0 for d in shape):
            raise OnnxImportError(f"{describe(node)}: folds to a negative shape {list(shape)}")
        check_elements(shape, f"{describe(node)}: its constant result")
    if node.domain in QONNX_DOMAINS and op == "BipolarQuant":
        x, scale = vals
        return [np.where(x >= 0, 1.0, -1.0).astype(x.dtype) * scale]
    if node.domain not in STANDARD_DOMAINS:
        raise OnnxImportError(f"{describe(node)}: custom domain {node.domain!r} is not supported")
    try:
        if op in NP_FOLD and len(node.output) == 1:
            out = NP_FOLD[op](*vals)
            if op in ("Add", "Sub", "Mul", "Div", "Pow", "Where") and vals:
                out = np.asarray(out).astype(np.result_type(*[v.dtype for v in vals[-2:]]))
            return [np.asarray(out)]
        if op == "Cast":
            onnx = onnx_module()
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
        raise OnnxImportError(f"{describe(node)}: cannot fold its constant inputs: {exc!r}") from exc
    # Anything else with constant inputs: the ONNX reference evaluator.
    onnx = onnx_module()
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
            f"{describe(node)}: cannot fold its constant inputs: {exc!r}") from exc
    for r in out:
        check_elements(r.shape, f"{describe(node)}: its constant result")
    return out


def conv_hints(model) -> list:
    """Per-conv ``padding``/``pad_value`` that :func:`bnn_toroid.onnx.export` records in the metadata. They
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


def live_nodes(g, consts, input_name: str, output: str) -> list:
    """The nodes the graph output depends on, in topological order. Refuses a cycle, a
    dangling tensor name and a non-constant tensor that feeds two nodes (only chains)."""
    producers = {}
    for node in g.node:
        for o in node.output:
            if o:
                producers[o] = node
    known = set(consts) | {input_name}
    if output not in producers and output not in known:
        raise OnnxImportError(f"graph output {output!r} is produced by no node")
    # Nodes the output depends on, then a topological order of them.
    live, stack = set(), [output]
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
            raise OnnxImportError(f"{describe(node)} is part of a cycle")
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
    const_nodes = _const_node_outputs(order, consts)
    for node in order:
        if node.op_type == "Shape":  # reads only the static shape
            continue
        for i in set(node.input):
            if i and i not in consts and i not in const_nodes:
                uses[i] = uses.get(i, 0) + 1
    for t, n in uses.items():
        if n > 1:
            users = [f"{x.name!r} ({x.op_type})" for x in order if t in x.input]
            raise OnnxImportError(
                f"tensor {t!r} feeds {n} nodes ({', '.join(users)}); only chain-shaped "
                "networks (one path from input to output) are supported")
    return order


def _const_node_outputs(order, consts):
    """Tensors that are constants once folded (and ``Shape`` outputs)."""
    known = set(consts)
    for node in order:
        if node.op_type == "Shape" or all((i == "" or i in known) for i in node.input):
            known.update(node.output)
    return known
