r"""Any traced torch model read as a graph of channel spaces (residual networks).

The chain reader :mod:`bnn_toroid.network.continuous` takes an ``nn.Sequential``; this
module takes any model that ``torch.fx.symbolic_trace`` can trace (a ResNet, a
pre-activation ResNet) and says, from the graph alone, which tensors move together under
the two symmetries of ReLU networks (Pittorino et al., "Deep Networks on Toroids", ICML
2022; docs/methods.md, "Residual networks (real-valued)"). No permutation spec is written
by hand.

**Channel spaces (permutations).** Every tensor value of the graph with a channel axis
(axis 1) lives in a *channel space*. A Conv2d or Linear opens a new space (its output
channels); BatchNorm, ReLU / LeakyReLU, max / average / adaptive average pooling, Dropout
and Identity keep their input's space (they act channel by channel); flatten keeps it,
with each channel now a block of ``H·W`` consecutive features; a residual add ``a + b``
joins the spaces of ``a`` and ``b`` into one (union-find), because the sum is only
equivariant when both summands are permuted alike. One permutation of a joined space
moves, along the whole stream, the rows of every layer that writes it (weights, biases,
BN parameters and statistics) and the input columns of every layer that reads it. The
input and the model's output are fixed spaces (a space joined to one is fixed).

**Scale spaces (rescaling).** A positive per-channel factor ``c_k`` passes through
ReLU, pooling, flatten and an add (``relu(c h) = c relu(h)``; ``c a + c b = c (a + b)``)
but stops at a BatchNorm, whose eval output is blind to its input scale once its
statistics follow (``μ ← c μ``, ``σ² ← c² (σ² + ε) − ε``: exact). So a *scale space* is
opened by a Conv2d / Linear or by a BatchNorm, kept by the channel-wise ops, and joined by
an add. Its *writers* are the layers whose rows set its scale (a Conv2d / Linear's
``[w_k, b_k]``, a BN's affine ``(γ_k, β_k)``); its *readers* are the layers that undo
it: a Conv2d / Linear (its input columns ``/ c_k``) or a BatchNorm (its statistics).
A scale space that has a writer without parameters (a BN with ``affine=False``), or that
is joined to the input or read by the output, has no free scale (it is *fixed*).

:func:`parse` returns a :class:`GraphStructure` holding only names, so one structure
serves every copy of the model (``copy.deepcopy`` keeps the module names).
"""
from __future__ import annotations

import copy
import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from bnn_toroid.network.continuous import UnsupportedLayerError
from bnn_toroid.nn import Normalize

__all__ = ["GraphStructure", "ChannelSpace", "ScaleSpace", "Target", "parse", "copy_model",
           "is_graph_model", "check_compatible"]

_LAYERS = (nn.Linear, nn.Conv2d)
_BNS = (nn.BatchNorm1d, nn.BatchNorm2d)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_PASS_MODULES = (nn.ReLU, nn.LeakyReLU, nn.Dropout, nn.Identity) + _POOLS
_PASS_FUNCS = {F.relu, torch.relu, F.leaky_relu, F.max_pool2d, F.avg_pool2d,
               F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.dropout}
_PASS_METHODS = {"relu", "relu_"}
_ADDS = {operator.add, operator.iadd, torch.add}
_FLATTEN_FUNCS = {torch.flatten}
_SUPPORTED = ("Conv2d (groups=1), Linear, BatchNorm1d/2d (with running statistics), ReLU, "
              "LeakyReLU, MaxPool2d, AvgPool2d, AdaptiveAvg/MaxPool2d, Dropout, Identity, "
              "flatten(x, 1), x.view(x.size(0), -1), Normalize on the input, and a + b")


@dataclass(frozen=True)
class Target:
    """One axis of one tensor that a channel space indexes: ``module.attr`` along
    ``axis``, each channel a block of ``block`` consecutive entries."""
    module: str
    attr: str
    axis: int
    block: int = 1


@dataclass
class ChannelSpace:
    """A joined channel space (one permutation): ``size`` channels, the ``targets`` a
    permutation moves, ``fixed`` if it may not be permuted (input / output), and
    ``nodes`` the fx nodes whose values live in it (for messages)."""
    size: int
    targets: list = field(default_factory=list)
    fixed: bool = False
    nodes: list = field(default_factory=list)


@dataclass
class ScaleSpace:
    """A joined scale space (one positive factor per channel).

    ``channel`` is its channel space's index; ``writers`` are ``(module, kind)`` with kind
    ``"layer"`` (rows ``[w_k, b_k]``) or ``"bn"`` (affine ``(γ_k, β_k)``);
    ``readers`` are ``(module, block)`` of the Conv2d / Linear layers that read it (input
    columns) and ``bn_readers`` the BatchNorms that read it; ``output`` if the model's
    output is in it (then it is scaled only as a whole), ``fixed`` if it has no free
    scale (see the module doc); ``depends`` the scale spaces read by its layer writers.
    """
    channel: int
    writers: list = field(default_factory=list)
    readers: list = field(default_factory=list)
    bn_readers: list = field(default_factory=list)
    output: bool = False
    fixed: bool = False
    depends: set = field(default_factory=set)
    nodes: list = field(default_factory=list)


@dataclass
class GraphStructure:
    """The traced structure of a model (built by :func:`parse`).

    ``channels`` and ``scales`` are the joined spaces; ``free_channels`` the channel
    spaces that carry a permutation, in graph order (input to output);
    ``scale_order`` the free scale spaces in an order where every space comes after the
    spaces its layer writers read (a normalisation order; ``None`` when the scale
    dependencies form a cycle, a residual stream without BatchNorm); ``output_scale``
    the scale space of the output (or None); ``layers`` the Conv2d / Linear / BN module
    names in graph order; ``signature`` a hashable description for compatibility checks.
    """
    channels: list
    scales: list
    free_channels: list
    scale_order: object
    output_scale: object
    layers: list
    signature: tuple
    cycle: list = field(default_factory=list)

    def describe(self, c: int) -> str:
        """``"channel space 2 (16 channels; nodes conv1, bn1, relu, ...)"``."""
        sp = self.channels[c]
        names = ", ".join(sp.nodes[:4]) + (", ..." if len(sp.nodes) > 4 else "")
        return f"channel space {c} ({sp.size} channels; nodes {names})"


class _UnionFind:
    def __init__(self):
        self.parent = []

    def new(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> int:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[max(a, b)] = min(a, b)
        return min(a, b)


@dataclass
class _Value:
    """What the trace knows of one fx value: its raw channel and scale space ids, how
    many channels it has, the flatten block (0: not flattened) and whether it is a
    plain number (``x.size(0)``)."""
    ch: int = -1
    sc: int = -1
    size: int = 0
    block: int = 0
    number: bool = False


def is_graph_model(model) -> bool:
    """True for a torch module that the chain reader does not take (anything but an
    ``nn.Sequential``): such models are read by :func:`parse`."""
    return isinstance(model, nn.Module) and not isinstance(model, nn.Sequential)


def _where(node) -> str:
    tgt = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    return f"fx node '{node.name}' ({node.op} {tgt})"


class _Tracer:
    def __init__(self, model: nn.Module, what: str):
        self.model = model
        self.what = what
        self.ch = _UnionFind()
        self.sc = _UnionFind()
        self.ch_size = []
        self.ch_fixed = set()
        self.sc_fixed = set()
        self.sc_output = set()
        self.targets = []      # (raw channel id, Target)
        self.writers = []      # (raw scale id, module, kind)
        self.readers = []      # (raw scale id, module, block)
        self.bn_readers = []   # (raw scale id, module)
        self.depends = []      # (raw scale id written, raw scale id read)
        self.nodes_ch = []     # (raw channel id, node name)
        self.nodes_sc = []
        self.values = {}
        self.used = {}
        self.layers = []
        self.signature = []

    def fail(self, node, why: str):
        raise UnsupportedLayerError(f"{self.what}: {_where(node)}: {why}; supported: {_SUPPORTED}")

    def new_space(self, size: int):
        c = self.ch.new()
        self.ch_size.append(size)
        return c, self.sc.new()

    def value(self, node, arg):
        if not isinstance(arg, torch.fx.Node):
            self.fail(node, f"takes a constant {type(arg).__name__} where a tensor was expected")
        return self.values[arg.name]

    def module_of(self, node, name):
        m = self.model.get_submodule(name)
        if isinstance(m, (_LAYERS + _BNS)) and any(True for _ in m.parameters(recurse=False)):
            if name in self.used:
                self.fail(node, f"module '{name}' is called a second time (first at fx node "
                                f"'{self.used[name]}'); shared weights cannot be permuted per use")
            self.used[name] = node.name
        return m

    def run(self, gm):
        for node in gm.graph.nodes:
            v = self.visit(node)
            if v is not None:
                self.values[node.name] = v
                if not v.number and v.ch >= 0:
                    self.nodes_ch.append((v.ch, node.name))
                    self.nodes_sc.append((v.sc, node.name))

    def visit(self, node):
        op = node.op
        if op == "placeholder":
            if self.values:
                self.fail(node, "a second input; only models with one input are supported")
            c, s = self.new_space(0)
            self.ch_fixed.add(c)
            self.sc_fixed.add(s)
            return _Value(c, s, 0, 0)
        if op == "output":
            args = node.args[0]
            if not isinstance(args, torch.fx.Node):
                self.fail(node, "returns a tuple or constant; one output tensor is expected")
            v = self.value(node, args)
            self.ch_fixed.add(v.ch)
            self.sc_output.add(v.sc)
            return None
        if op == "get_attr":
            self.fail(node, "reads a parameter or buffer directly")
        if op == "call_module":
            return self.visit_module(node, self.module_of(node, node.target))
        if op == "call_function":
            return self.visit_function(node)
        if op == "call_method":
            return self.visit_method(node)
        self.fail(node, "unknown fx operation")

    def visit_module(self, node, m):
        name = node.target
        x = self.value(node, node.args[0])
        t = type(m)
        if t in _LAYERS:
            if t is nn.Conv2d and m.groups != 1:
                self.fail(node, f"Conv2d '{name}' has groups={m.groups}; only groups=1 filters "
                                f"can be permuted freely")
            if x.block > 1 and t is nn.Conv2d:
                self.fail(node, f"Conv2d '{name}' reads a flattened tensor")
            n_in = m.in_features if t is nn.Linear else m.in_channels
            block = 1
            if x.size and x.ch not in self.ch_fixed:
                if x.block:
                    if n_in % x.size:
                        self.fail(node, f"{t.__name__} '{name}' takes {n_in} inputs, not a multiple "
                                        f"of the {x.size} channels it reads")
                    block = n_in // x.size
                elif n_in != x.size:
                    raise ValueError(f"{self.what}: {_where(node)}: {t.__name__} '{name}' takes "
                                     f"{n_in} channels but reads a tensor of {x.size}")
            self.targets.append((x.ch, Target(name, "weight", 1, block)))
            self.readers.append((x.sc, name, block))
            n_out = m.out_features if t is nn.Linear else m.out_channels
            c, s = self.new_space(n_out)
            self.targets.append((c, Target(name, "weight", 0)))
            if m.bias is not None:
                self.targets.append((c, Target(name, "bias", 0)))
            self.writers.append((s, name, "layer"))
            self.depends.append((s, x.sc))
            self.layers.append(name)
            self.signature.append((name, t.__name__, tuple(m.weight.shape), m.bias is not None))
            return _Value(c, s, n_out, 1 if t is nn.Linear else 0)
        if t in _BNS:
            if m.running_mean is None or m.running_var is None:
                self.fail(node, f"{t.__name__} '{name}' has track_running_stats=False; eval-mode "
                                f"BN then uses batch statistics")
            if x.block > 1:
                self.fail(node, f"{t.__name__} '{name}' reads a flattened conv output, whose "
                                f"features are not whole channels")
            if x.ch in self.ch_fixed:
                self.fail(node, f"{t.__name__} '{name}' reads the model's input; put a "
                                f"Normalize there instead")
            if m.num_features != x.size:
                raise ValueError(f"{self.what}: {_where(node)}: {t.__name__} '{name}' has "
                                 f"{m.num_features} features but reads {x.size} channels")
            for a in ("weight", "bias", "running_mean", "running_var"):
                if getattr(m, a, None) is not None:
                    self.targets.append((x.ch, Target(name, a, 0)))
            self.bn_readers.append((x.sc, name))
            s = self.sc.new()
            if m.weight is None or m.bias is None:
                self.sc_fixed.add(s)
            else:
                self.writers.append((s, name, "bn"))
            self.layers.append(name)
            self.signature.append((name, t.__name__, m.num_features, m.weight is not None))
            return _Value(x.ch, s, x.size, x.block)
        if t is Normalize:
            if x.ch not in self.ch_fixed or self.ch.find(x.ch) != self.ch.find(0):
                self.fail(node, f"Normalize '{name}' is only supported on the model's input "
                                f"((x − mean)/std breaks the rescaling elsewhere)")
            return x
        if t is nn.Flatten:
            if m.start_dim != 1 or m.end_dim != -1:
                self.fail(node, f"Flatten '{name}' has start_dim={m.start_dim}, end_dim={m.end_dim}")
            return _Value(x.ch, x.sc, x.size, max(x.block, 1))
        if t in _PASS_MODULES:
            if t in _POOLS and x.block:
                self.fail(node, f"{t.__name__} '{name}' pools a flattened tensor")
            if t is nn.LeakyReLU and m.negative_slope < 0:
                self.fail(node, f"LeakyReLU '{name}' has a negative slope")
            return x
        self.fail(node, f"module '{name}' of type {t.__name__} is not supported (the symmetries "
                        f"need channel-wise, positively homogeneous operations)")

    def visit_function(self, node):
        f = node.target
        if f in _ADDS:
            if len(node.args) != 2 or node.kwargs:
                self.fail(node, "an add with other than two tensor arguments")
            a, b = (self.value(node, x) for x in node.args)
            if a.size != b.size or a.block != b.block:
                raise ValueError(f"{self.what}: {_where(node)} adds tensors of {a.size} and "
                                 f"{b.size} channels")
            c = self.ch.union(a.ch, b.ch)
            s = self.sc.union(a.sc, b.sc)
            return _Value(c, s, a.size, a.block)
        if f in _FLATTEN_FUNCS:
            x = self.value(node, node.args[0])
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            if start != 1 or end != -1:
                self.fail(node, f"flatten(start_dim={start}, end_dim={end}); only flatten(x, 1)")
            return _Value(x.ch, x.sc, x.size, max(x.block, 1))
        if f in _PASS_FUNCS:
            x = self.value(node, node.args[0])
            if f is F.leaky_relu:
                slope = node.args[1] if len(node.args) > 1 else node.kwargs.get("negative_slope", 0.01)
                if slope < 0:
                    self.fail(node, "leaky_relu with a negative slope")
            if f in (F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d) and x.block:
                self.fail(node, "pooling a flattened tensor")
            if f in (F.adaptive_max_pool2d,) and node.kwargs.get("return_indices"):
                self.fail(node, "pooling with return_indices")
            return x
        self.fail(node, "this function is not supported")

    def visit_method(self, node):
        m = node.target
        if m == "size":
            return _Value(number=True)
        x = self.value(node, node.args[0])
        if x.number:
            self.fail(node, "arithmetic on sizes")
        if m in _PASS_METHODS:
            return x
        if m == "flatten":
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            if start != 1 or end != -1:
                self.fail(node, f"flatten(start_dim={start}, end_dim={end}); only flatten(x, 1)")
            return _Value(x.ch, x.sc, x.size, max(x.block, 1))
        if m in ("view", "reshape") and len(node.args) == 3 and node.args[2] == -1:
            first = node.args[1]
            if isinstance(first, torch.fx.Node) and self.values.get(first.name, _Value()).number:
                return _Value(x.ch, x.sc, x.size, max(x.block, 1))
        self.fail(node, f"the tensor method '{m}' is not supported")


class _LeafTracer(torch.fx.Tracer):
    """``symbolic_trace``'s tracer, with :class:`~bnn_toroid.nn.Normalize` kept as one
    node (a leaf) instead of traced into its arithmetic."""

    def is_leaf_module(self, m, qualname):
        return isinstance(m, Normalize) or super().is_leaf_module(m, qualname)


def parse(model: nn.Module, what: str = "model") -> GraphStructure:
    """Trace ``model`` with ``torch.fx.symbolic_trace`` and read its channel and scale
    spaces (module doc). Raises TypeError for a non-module, :class:`UnsupportedLayerError`
    naming the fx node for anything the symmetry tools cannot handle (or a model that
    cannot be traced), ValueError for mismatched sizes or NaN/inf parameters."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{what}: expected a torch nn.Module, got {type(model).__name__}")
    try:
        gm = torch.fx.GraphModule(model, _LeafTracer().trace(model))
    except Exception as e:  # fx raises TraceError, TypeError, ... for dynamic control flow
        raise UnsupportedLayerError(f"{what}: torch.fx cannot trace {type(model).__name__} "
                                    f"({type(e).__name__}: {str(e).splitlines()[0]}); the graph "
                                    f"tools need a symbolically traceable model") from None
    t = _Tracer(model, what)
    t.run(gm)
    for name, p in list(model.named_parameters()) + list(model.named_buffers()):
        if p.is_floating_point() and not torch.isfinite(p).all():
            raise ValueError(f"{what}: NaN or inf in '{name}'")
    if not t.layers or not any(k == "layer" for _, _, k in t.writers):
        raise ValueError(f"{what}: the model has no Linear or Conv2d layer")
    return _build(t)


def _build(t: _Tracer) -> GraphStructure:
    ch_root = sorted({t.ch.find(i) for i in range(len(t.ch.parent))})
    ch_index = {r: k for k, r in enumerate(ch_root)}
    channels = [ChannelSpace(t.ch_size[r]) for r in ch_root]
    for c in t.ch_fixed:
        channels[ch_index[t.ch.find(c)]].fixed = True
    for c, tg in t.targets:
        channels[ch_index[t.ch.find(c)]].targets.append(tg)
    for c, n in t.nodes_ch:
        sp = channels[ch_index[t.ch.find(c)]]
        if n not in sp.nodes:
            sp.nodes.append(n)
    # the scale space's channel space: any raw scale id was opened with a channel id;
    # record it from the values seen
    sc_root = sorted({t.sc.find(i) for i in range(len(t.sc.parent))})
    sc_index = {r: k for k, r in enumerate(sc_root)}
    sc_channel = {}
    for (c, n), (s, _) in zip(t.nodes_ch, t.nodes_sc):
        sc_channel[t.sc.find(s)] = ch_index[t.ch.find(c)]
    scales = [ScaleSpace(sc_channel.get(r, -1)) for r in sc_root]
    S = lambda s: scales[sc_index[t.sc.find(s)]]  # noqa: E731
    for s in t.sc_fixed:
        S(s).fixed = True
    for s in t.sc_output:
        S(s).output = True
    for s, name, kind in t.writers:
        S(s).writers.append((name, kind))
    for s, name, block in t.readers:
        S(s).readers.append((name, block))
    for s, name in t.bn_readers:
        S(s).bn_readers.append(name)
    for s, n in t.nodes_sc:
        if n not in S(s).nodes:
            S(s).nodes.append(n)
    for s, r in t.depends:
        S(s).depends.add(sc_index[t.sc.find(r)])
    for sp in scales:
        if sp.channel < 0 or channels[sp.channel].fixed and not sp.output:
            sp.fixed = True
        if sp.output:
            sp.fixed = False
    free_ch = [k for k, sp in enumerate(channels) if not sp.fixed and sp.size > 0]
    order, cycle = _scale_order(scales)
    out = next((k for k, sp in enumerate(scales) if sp.output), None)
    return GraphStructure(channels, scales, free_ch, order, out, t.layers, tuple(t.signature), cycle)


def _scale_order(scales):
    """Free scale spaces (and the output space, last) ordered so that each comes after
    the free spaces its layer writers read: Kahn's algorithm on the dependency graph.
    Returns ``(order, [])`` or ``(None, spaces on a cycle)``."""
    free = [k for k, sp in enumerate(scales) if not sp.fixed and not sp.output]
    deps = {k: {d for d in scales[k].depends if d in free and d != k} for k in free}
    self_loop = [k for k in free if k in scales[k].depends]
    order, done = [], set()
    while len(order) < len(free):
        ready = [k for k in free if k not in done and deps[k] <= done]
        if not ready:
            return None, [k for k in free if k not in done]
        for k in ready:
            order.append(k)
            done.add(k)
    if self_loop:
        return None, self_loop
    out = [k for k, sp in enumerate(scales) if sp.output]
    return order + out, []


def copy_model(model: nn.Module, dtype=torch.float64) -> nn.Module:
    """A deep copy of ``model`` in eval mode, in ``dtype``, without gradients (the model
    itself is never changed)."""
    m = copy.deepcopy(model).eval().to(dtype)
    m.requires_grad_(False)
    return m


def check_compatible(sa: GraphStructure, sb: GraphStructure, names=("a", "b")) -> None:
    """ValueError naming the first layer where two traced models differ (names, types,
    shapes)."""
    for x, y in zip(sa.signature, sb.signature):
        if x != y:
            raise ValueError(f"models have different architectures (different shapes): "
                             f"{names[0]} has {x} but {names[1]} has {y}")
    if len(sa.signature) != len(sb.signature):
        raise ValueError(f"models have different architectures (different shapes): "
                         f"{names[0]} has {len(sa.signature)} layers, {names[1]} has "
                         f"{len(sb.signature)}")
