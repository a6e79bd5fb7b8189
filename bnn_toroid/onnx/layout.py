"""Layout and pass-through ops: ``Identity``, ``Dropout``, ``Cast``, ``Transpose``,
``Reshape``, ``Flatten``, ``Pad``.

Transposes and reshapes relabel the roles of a tensor's axes (``"C"``, ``"H"``, ``"W"``,
the input's ``"i0".."i2"``, ``"F"`` when flat) and keep what a flattening came from, so
that the first dense or conv layer can tell the input's layout. ``Pad`` is kept pending
on an activation or the input until a convolution takes it.
"""
from __future__ import annotations

import numpy as np

from .common import OnnxImportError, describe, op
from .values import _Act, _Lin, is_padded


@op("Identity")
def _op_Identity(imp, node, ins, attrs):
    return ins[0]


@op("Dropout")
def _op_Dropout(imp, node, ins, attrs):
    if len([o for o in node.output if o]) > 1:
        raise OnnxImportError(f"{describe(node)}: Dropout with a mask output")
    return ins[0]


@op("Cast")
def _op_Cast(imp, node, ins, attrs):
    x = ins[0]
    onnx = imp.onnx
    if attrs.get("to") not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE,
                               onnx.TensorProto.FLOAT16):
        raise OnnxImportError(f"{describe(node)}: cast to a non-float type")
    if isinstance(x, (_Act, _Lin)):
        return x
    raise OnnxImportError(f"{describe(node)}: cannot cast a {type(x).__name__}")


@op("Transpose")
def _op_Transpose(imp, node, ins, attrs):
    x = ins[0]
    if not isinstance(x, (_Act, _Lin)):
        raise OnnxImportError(f"{describe(node)}: transposing a "
                              f"{type(x).__name__.strip('_')}")
    perm = list(attrs.get("perm", range(len(x.shape) + 1)[::-1]))
    if perm[0] != 0:
        raise OnnxImportError(f"{describe(node)}: perm {perm} moves the batch axis")
    return permute(x, [p - 1 for p in perm[1:]])


def permute(x, perm):
    """Permute the physical axes of an activation or pre-activation (batch excluded)."""
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


def reshape(imp, node, x, target):
    """Reshape to ``target`` (batch first): a flatten, its inverse, or a move of size-1
    axes; anything else is refused."""
    if not isinstance(x, (_Act, _Lin)):
        raise OnnxImportError(f"{describe(node)}: reshaping a "
                              f"{type(x).__name__.strip('_')}")
    target = [int(t) for t in target]
    if not target:
        raise OnnxImportError(f"{describe(node)}: reshape to a scalar")
    b = target[0]
    if b == 0 or b == -1:
        rest = target[1:]
    elif imp.batch_dim is not None and b == imp.batch_dim:
        rest = target[1:]
    else:
        raise OnnxImportError(
            f"{describe(node)}: reshape to {target} changes the batch axis")
    if b == -1 and -1 in rest:
        raise OnnxImportError(f"{describe(node)}: reshape to {target} is ambiguous")
    # 0 copies the input's dimension at the same position (batch excluded here)
    rest = [x.shape[i] if (t == 0 and i < len(x.shape)) else t for i, t in enumerate(rest)]
    total = int(np.prod(x.shape))
    if -1 in rest:
        known = int(np.prod([t for t in rest if t != -1]))
        rest = [total // known if t == -1 else t for t in rest]
    new = tuple(rest)
    if int(np.prod(new)) != total:
        raise OnnxImportError(
            f"{describe(node)}: reshape of a (N, {x.shape}) tensor to {target} loses "
            "elements")
    if new == x.shape:
        return x
    if len(new) == 1:  # flatten
        if isinstance(x, _Act) and is_padded(x):
            raise OnnxImportError(f"{describe(node)}: flattening a padded tensor")
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
            return permute(x, perm)
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
        f"{describe(node)}: reshape of a (N, {', '.join(map(str, x.shape))}) tensor to "
        f"{target} is neither a flatten nor a relabelling of size-1 axes")


@op("Reshape")
def _op_Reshape(imp, node, ins, attrs):
    if attrs.get("allowzero", 0):
        raise OnnxImportError(f"{describe(node)}: Reshape with allowzero=1")
    target = imp.const(node.input[1], node, "shape")
    return reshape(imp, node, ins[0], target)


@op("Flatten")
def _op_Flatten(imp, node, ins, attrs):
    x = ins[0]
    axis = int(attrs.get("axis", 1))
    if axis not in (1, -len(getattr(x, "shape", ())) ):
        raise OnnxImportError(f"{describe(node)}: Flatten with axis {axis}; expected 1")
    return reshape(imp, node, x, [-1, int(np.prod(x.shape))])


@op("Pad")
def _op_Pad(imp, node, ins, attrs):
    x = ins[0]
    if not isinstance(x, _Act):
        raise OnnxImportError(f"{describe(node)}: padding a "
                              f"{type(x).__name__.strip('_')}; only layer inputs are padded")
    if attrs.get("mode", "constant") != "constant":
        raise OnnxImportError(f"{describe(node)}: Pad mode {attrs.get('mode')!r}; "
                              "expected 'constant'")
    if len(node.input) > 1 and node.input[1]:
        pads = imp.const(node.input[1], node, "pads")
    else:
        pads = attrs.get("pads")
    value = 0.0
    if len(node.input) > 2 and node.input[2]:
        value = float(np.asarray(imp.const(node.input[2], node, "constant_value")).ravel()[0])
    elif "value" in attrs:
        value = float(attrs["value"])
    if len(node.input) > 3 and node.input[3]:
        raise OnnxImportError(f"{describe(node)}: Pad with an axes input")
    pads = [int(p) for p in np.asarray(pads).ravel()]
    r = len(x.shape) + 1
    if len(pads) != 2 * r:
        raise OnnxImportError(f"{describe(node)}: {len(pads)} pads for a rank-{r} tensor")
    if pads[0] or pads[r] or any(p < 0 for p in pads):
        raise OnnxImportError(f"{describe(node)}: pads {pads} touch the batch axis or crop")
    per = [(pads[i + 1], pads[r + i + 1]) for i in range(r - 1)]
    if all(p == (0, 0) for p in per):
        return x
    if x.binary:
        if value not in (0.0, 1.0):
            raise OnnxImportError(f"{describe(node)}: pad value {value} on a binary "
                                  "activation; expected 0 or 1 (larq pad_values)")
        if value != 0 and np.any(x.neg):
            raise OnnxImportError(f"{describe(node)}: padding a negated activation with 1")
    elif not np.isfinite(value):
        raise OnnxImportError(f"{describe(node)}: pad value {value}")
    raw = np.full(x.shape, value) if x.binary else (value - x.offset) / x.scale
    if is_padded(x):
        if not np.all(x.pad_raw == raw):
            raise OnnxImportError(f"{describe(node)}: two Pads with different values")
        per = [(a[0] + b[0], a[1] + b[1]) for a, b in zip(x.pad, per)]
        unpadded = tuple(n - b - e for n, (b, e) in zip(x.shape, x.pad))
    else:
        if not x.binary and np.any(x.scale == 0):
            raise OnnxImportError(f"{describe(node)}: padding an input scaled by 0")
        unpadded = x.shape
        x.pad_raw = raw
    x.pad = per
    x.shape = tuple(n + b + e for n, (b, e) in zip(unpadded, per))
    return x
