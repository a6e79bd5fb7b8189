"""The symbolic values and the graph order of the residual importer
(:mod:`.residual_import`), and the merge of two branches into a residual block."""
from __future__ import annotations

from dataclasses import dataclass, replace

from .common import OnnxImportError, describe

__all__ = ["_V", "_SignStep", "_Soft", "is_branching", "order", "merge"]


@dataclass(frozen=True)
class _V:
    ops: tuple                 # operations from the network input, NHWC semantics
    dims: tuple                # ONNX dims without the batch axis
    layout: str                # "NCHW", "NHWC", "?" (graph input not yet resolved), "flat"
    binary: bool = False       # the tensor is sign(stream)
    pad: tuple | None = None   # pending Pad: (top, bottom, left, right, value)
    flat_from: tuple | None = None  # (H, W, C) of an NCHW map flattened in NCHW order

    @property
    def hwc(self):
        if self.layout == "NCHW":
            c, h, w = self.dims
            return h, w, c
        return tuple(self.dims)


@dataclass(frozen=True)
class _SignStep:
    src: _V
    stage: int  # 1: Sign(x); 2: Sign(x) + c
    node: str


@dataclass(frozen=True)
class _Soft:
    src: _V
    node: object


def _R():
    from ..network import residual_ops
    return residual_ops


def is_branching(model) -> bool:
    """Whether a non-constant tensor of the graph feeds more than one node."""
    g = model.graph
    consts = {t.name for t in g.initializer}
    uses = {}
    for node in g.node:
        if node.op_type == "Constant":
            consts.update(node.output)
            continue
        for i in set(node.input):
            if i and i not in consts:
                uses[i] = uses.get(i, 0) + 1
    return any(n > 1 for n in uses.values())


def order(g, known, output):
    """The nodes ``output`` depends on, in topological order (branches allowed)."""
    producers = {o: n for n in g.node for o in n.output if o}
    order, done, temp = [], set(), set()

    def visit(t):
        node = producers.get(t)
        if node is None:
            if t not in known and t:
                raise OnnxImportError(f"tensor {t!r} is used but produced by no node, "
                                      "initializer or graph input")
            return
        if id(node) in done:
            return
        if id(node) in temp:
            raise OnnxImportError(f"{describe(node)} is part of a cycle")
        temp.add(id(node))
        for i in node.input:
            visit(i)
        temp.discard(id(node))
        done.add(id(node))
        order.append(node)

    visit(output)
    return order




def merge(node, a: _V, b: _V):
    """``a + b`` as a :class:`Residual`: the ops the two share (the same objects, up to
    the fork) stay; the branch with a binary convolution is the body, the other the
    shortcut (empty for an identity)."""
    R = _R()
    if a.layout != b.layout or a.dims != b.dims:
        raise OnnxImportError(f"{describe(node)}: adds a {a.layout} {a.dims} and a {b.layout} "
                              f"{b.dims} tensor; expected two branches of the same shape")
    i = 0
    while i < min(len(a.ops), len(b.ops)) and a.ops[i] is b.ops[i]:
        i += 1
    ra, rb = a.ops[i:], b.ops[i:]
    if any(isinstance(o, R.Residual) for o in ra + rb):
        raise OnnxImportError(f"{describe(node)}: adds branches that hold residual blocks "
                              "themselves; nested residual blocks are not supported")
    if not ra and not rb:
        raise OnnxImportError(f"{describe(node)}: adds a tensor to itself")
    if not ra or (not any(isinstance(o, R.BinaryConv) for o in ra)
                  and any(isinstance(o, R.BinaryConv) for o in rb)):
        ra, rb = rb, ra
    return replace(a, ops=a.ops[:i] + (R.Residual(ra, rb),))
