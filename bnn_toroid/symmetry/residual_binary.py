r"""Symmetries of residual binary networks: channel permutations shared along the stream,
sign reversals where they are exact, canonical forms, fingerprints and alignment
(docs/methods.md, "Residual binary networks").

**Channel spaces.** A *channel space* is a set of stream channels that every operation
indexes alike. It is written by a :class:`RealConv`, :class:`BinaryConv` or
:class:`RealDense` (their output rows) and read by the operations after it (their
input columns). Per-channel operations (:class:`Affine`, :class:`PReLU`, :class:`ReLU`,
the pools, and a depthwise :class:`RealConv` with ``groups = C`` and one filter per
channel) carry a space through unchanged. A :class:`Residual` ties its body's output
space and its shortcut's output space into one (union-find); with an identity shortcut
that is its input space, so a Bi-Real stream is *one* space from the stem to the next
real-valued transition. The network input and the logits are fixed (never permuted);
a grouped, non-depthwise convolution fixes the spaces it touches.

**The group.** With :math:`\pi_\sigma` a permutation of space :math:`\sigma`,
:math:`s_{\sigma} \in \{\pm1\}^{C_\sigma}` a stream reversal and, per binary convolution
:math:`k`, :math:`r_k \in \{\pm1\}^{F_k}` a row reversal, the new network has

.. math::
    W'_{f,\cdot,c} = s^{out}_f\,W_{\pi^{out}(f),\cdot,\pi^{in}(c)}\,s^{in}_c, \qquad
    b'_f = s^{out}_f\,b_{\pi^{out}(f)}

for every writer (a binary row also gets :math:`r_{k,f}` and its scale
:math:`\alpha'_f = r_{k,f}\, s^{out}_f\, \alpha_{\pi(f)}`, so the binary row is negated
by :math:`r` and :math:`\mathrm{scale}\cdot\mathrm{row}` by :math:`s`), and
``Affine.scale`` permuted, ``Affine.shift`` permuted and multiplied by :math:`s`,
``PReLU.slope`` permuted, depthwise filters permuted with their bias times :math:`s`.

*Where it is exact.* Permutations: always (every operation is equivariant to a
relabelling of channels). Row reversals :math:`(w_f, \alpha_f) \to (-w_f, -\alpha_f)`:
always; the integer :math:`h_f = \sum w_{f}\,\mathrm{sign}(x)` just changes sign and
:math:`\alpha_f h_f` is unchanged (``scale=None`` is materialised as ±1). Stream
reversals :math:`x_c \to -x_c` of space :math:`\sigma`: exact through every odd
(linear) operation: real convolutions and dense layers reading it (negated columns),
affines (negated shifts), average pools, residual adds. They are **broken** by

- a :class:`ReLU`, :class:`PReLU` or :class:`MaxPool` on the space
  (:math:`\max(-x, 0) \ne -\max(x, 0)`, :math:`\max(-x) = -\min(x)`);
- a :class:`BinaryConv` reading it with ``pad_value=1`` and actual padding: the padded
  taps read +1 whatever the sign of the channel (larq's ``pad_values=1``, as
  :func:`bnn_toroid.symmetry.binary.flippable` for chains);
- ``sign(0) = +1``: a :class:`BinaryConv` reading the space sees
  :math:`\mathrm{sign}(-x) = -\mathrm{sign}(x)` only where :math:`x \ne 0`. For a real
  stream zeros have measure zero, but they occur exactly e.g. behind a ReLU or where a
  scaled integer :math:`\alpha h` with :math:`h = 0` is read directly. With
  ``strict=True`` (the default) such a space has no stream reversal; ``strict=False``
  admits it, exact for every input whose stream values read by binary convolutions are
  non-zero.

A real-valued head reading the space is fine (its columns are negated).

:func:`canonicalize` picks one representative per orbit, :func:`fingerprint` hashes it,
:func:`align` matches a network onto a reference (Pittorino et al., ICML 2022, §3, with
the per-space weight matching of Ainsworth et al., "Git Re-Basin", ICLR 2023).
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..network.layers import NetworkError
from ..network.residual import ResidualBinaryNetwork
from ..network.residual_ops import (Affine, AvgPool, BinaryConv, GlobalAvgPool, MaxPool, PReLU,
                                    RealConv, RealDense, ReLU, Residual, resolve_pads)

__all__ = ["ChannelSpaces", "channel_spaces", "transform", "permute", "reverse", "reverse_rows",
           "canonicalize", "fingerprint", "canonical_bytes", "align", "check_residual"]


def check_residual(net, what):
    if not isinstance(net, ResidualBinaryNetwork):
        raise TypeError(f"{what}: expected a ResidualBinaryNetwork, got {type(net).__name__}")
    return net


# ---------------------------------------------------------------------------- the space graph
@dataclass
class _Node:
    loc: tuple          # (i,) or (i, "body" | "shortcut", j)
    op: object
    role: str           # "write", "carry" or "pass"
    ins: int            # space read
    outs: int           # space written (== ins for carry/pass)
    in_shape: tuple     # shape read, (H, W, C) or (C,)
    binary: int = -1    # index in binary_locations() for a BinaryConv


@dataclass
class ChannelSpaces:
    """The channel spaces of a network (module docstring).

    Attributes:
        sizes: channels per space; spaces are numbered by first appearance in run order
            (0 is the network input).
        fixed: per space, why it may not be permuted (``""`` when it may).
        breakers: per space, the reasons its stream reversal is not exact (empty: exact);
            ``"sign(0)"`` reasons are listed separately in ``zero_readers``.
        zero_readers: per space, the binary convolutions reading it (``sign(0) = +1``).
        nodes: every operation with the spaces it reads and writes.
    """
    sizes: list
    fixed: list
    breakers: list
    zero_readers: list
    nodes: list = field(repr=False)

    def __len__(self):
        return len(self.sizes)

    def free(self) -> list:
        """Spaces that may be permuted."""
        return [s for s in range(len(self)) if not self.fixed[s]]

    def reversible(self, strict: bool = True) -> list:
        """Per space, whether its stream reversal is exact: not fixed, no breaker, and
        (``strict``) no binary convolution reading it."""
        return [not self.fixed[s] and not self.breakers[s] and not (strict and self.zero_readers[s])
                for s in range(len(self))]


def channel_spaces(net: ResidualBinaryNetwork) -> ChannelSpaces:
    """Derive the channel spaces from the operation graph (module docstring)."""
    check_residual(net, "channel_spaces")
    parent, size, why = [], [], []

    def new(c, reason=""):
        parent.append(len(parent))
        size.append(c)
        why.append(reason)
        return len(parent) - 1

    def find(s):
        while parent[s] != s:
            parent[s] = parent[parent[s]]
            s = parent[s]
        return s

    def union(a, b):
        a, b = find(a), find(b)
        if a != b:
            parent[max(a, b)] = min(a, b)
            why[min(a, b)] = why[min(a, b)] or why[max(a, b)]

    nodes = []
    bcount = [0]

    def walk(ops, s, shape, prefix):
        for j, op in enumerate(ops):
            loc = prefix + (j,) if prefix else (j,)
            out_shape = op.out_shape(shape)
            if isinstance(op, Residual):
                b = walk(op.body, s, shape, (j, "body"))
                c = walk(op.shortcut, s, shape, (j, "shortcut"))
                union(b, c)
                s = find(b)
            else:
                role, outs = "pass", s
                if isinstance(op, (BinaryConv, RealDense)):
                    role, outs = "write", new(out_shape[-1])
                elif isinstance(op, RealConv):
                    cin = shape[-1]
                    if op.groups == 1:
                        role, outs = "write", new(op.out_channels)
                    elif op.groups == cin and op.out_channels == cin:
                        role = "carry"
                    else:
                        why[find(s)] = why[find(s)] or f"read by the grouped convolution at {loc}"
                        role, outs = "write", new(op.out_channels, f"written by the grouped convolution at {loc}")
                elif isinstance(op, (Affine, PReLU)):
                    role = "carry"
                node = _Node(loc, op, role, s, outs, shape)
                if isinstance(op, BinaryConv):
                    node.binary = bcount[0]
                    bcount[0] += 1
                nodes.append(node)
                s = outs
            shape = out_shape
        return s

    first = new(net.stream_shape[-1], "the network input")
    last = walk(net.ops, first, net.stream_shape, ())
    why[find(last)] = why[find(last)] or "the logits"
    # number the roots by first appearance
    roots, number = [], {}
    for s in range(len(parent)):
        r = find(s)
        if r not in number:
            number[r] = len(roots)
            roots.append(r)
    for n in nodes:
        n.ins, n.outs = number[find(n.ins)], number[find(n.outs)]
    k = len(roots)
    breakers = [[] for _ in range(k)]
    zero = [[] for _ in range(k)]
    for n in nodes:
        op = n.op
        if isinstance(op, (ReLU, PReLU, MaxPool)):
            breakers[n.ins].append(f"{type(op).__name__} at {n.loc} is not odd")
        if isinstance(op, BinaryConv):
            zero[n.ins].append(n.loc)
            if op.pad_value == 1:
                h, w = n.in_shape[:2]
                pads = resolve_pads(op.padding, h, w, *op.weights.shape[1:3], *op.stride)
                if any(pads):
                    breakers[n.ins].append(f"BinaryConv at {n.loc} pads with +1")
    return ChannelSpaces([size[r] for r in roots], [why[r] for r in roots], breakers, zero, nodes)


# ---------------------------------------------------------------------------- the group action
def _with_op(ops, loc, op):
    ops = list(ops)
    if len(loc) == 1:
        ops[loc[0]] = op
        return ops
    r = ops[loc[0]]
    part = list(getattr(r, loc[1]))
    part[loc[2]] = op
    ops[loc[0]] = dataclasses.replace(r, **{loc[1]: tuple(part)})
    return ops


def _cols_view(n, w):
    """A reader's weights with the channel axis last: conv (F, kh, kw, C) as is; dense
    (U, K) as (U, pixels, C) or (U, C)."""
    if isinstance(n.op, RealDense) and len(n.in_shape) == 3:
        return w.reshape(w.shape[0], -1, n.in_shape[-1])
    return w


def _check_action(g, perms, flips, rows, n_binary):
    k = len(g)
    perms = [None] * k if perms is None else list(perms)
    flips = [None] * k if flips is None else list(flips)
    if len(perms) != k or len(flips) != k:
        raise ValueError(f"transform: expected one permutation and one flip mask per channel "
                         f"space ({k} spaces, sizes {g.sizes}), got {len(perms)} and {len(flips)}")
    out_p, out_s = [], []
    for s in range(k):
        n = g.sizes[s]
        p = np.arange(n) if perms[s] is None else np.asarray(perms[s], np.int64).reshape(-1)
        if p.shape != (n,) or not np.array_equal(np.sort(p), np.arange(n)):
            raise ValueError(f"transform: perms[{s}] must be a permutation of {n} channels, got {perms[s]!r}")
        f = np.zeros(n, bool) if flips[s] is None else np.asarray(flips[s], bool).reshape(-1)
        if f.shape != (n,):
            raise ValueError(f"transform: flips[{s}] must hold {n} flags, got shape {f.shape}")
        if g.fixed[s] and ((p != np.arange(n)).any() or f.any()):
            raise ValueError(f"transform: channel space {s} is {g.fixed[s]}; it is never permuted "
                             "or reversed")
        out_p.append(p)
        out_s.append(np.where(f, -1.0, 1.0))
    rows = [None] * n_binary if rows is None else list(rows)
    if len(rows) != n_binary:
        raise ValueError(f"transform: expected one row-flip mask per binary convolution "
                         f"({n_binary}), got {len(rows)}")
    return out_p, out_s, rows


def transform(net: ResidualBinaryNetwork, perms=None, flips=None, rows=None, *,
              strict: bool = True) -> ResidualBinaryNetwork:
    r"""Apply the group action (module docstring): per channel space ``s``, new channel
    ``k`` is old channel ``perms[s][k]``, negated where ``flips[s][k]`` (a stream
    reversal); per binary convolution ``b`` (in :meth:`binary_locations` order), new row
    ``f`` is negated together with its scale where ``rows[b][f]`` (a row reversal, after
    the permutation). ``None`` anywhere is the identity.

    Raises ValueError for a fixed space permuted or reversed, or a stream reversal of a
    space where it is not exact (``strict`` as in :meth:`ChannelSpaces.reversible`)."""
    check_residual(net, "transform")
    g = channel_spaces(net)
    return _transform(net, g, perms, flips, rows, strict)


def _transform(net, g, perms, flips, rows, strict=True, check=True):
    g = channel_spaces(net)  # the nodes must hold this network's operations
    p, s, rows = _check_action(g, perms, flips, rows, len(net.binary_locations()))
    if check:
        rev = g.reversible(strict)
        for k in range(len(g)):
            if (s[k] < 0).any() and not rev[k]:
                reasons = list(g.breakers[k]) + ([f"sign(0) = +1 at the binary convolutions {g.zero_readers[k]}"]
                                                  if strict and g.zero_readers[k] else [])
                raise ValueError(f"transform: the stream reversal of channel space {k} is not exact: "
                                 f"{'; '.join(reasons) or g.fixed[k]}")
    ops = list(net.ops)
    for n in g.nodes:
        op = n.op
        pi, si = p[n.ins], s[n.ins]
        if n.role == "pass":
            continue
        if n.role == "carry":
            if isinstance(op, Affine):
                new = Affine(op.scale[pi], op.shift[pi] * si)
            elif isinstance(op, PReLU):
                new = PReLU(op.slope[pi])
            else:  # depthwise RealConv
                new = dataclasses.replace(op, weights=op.weights[pi],
                                          bias=None if op.bias is None else op.bias[pi] * si)
            ops = _with_op(ops, n.loc, new)
            continue
        po, so = p[n.outs], s[n.outs]
        w = _cols_view(n, op.weights)[po][..., pi]
        if isinstance(op, BinaryConv):
            r = np.zeros(len(po), bool) if rows[n.binary] is None else np.asarray(rows[n.binary], bool)
            if r.shape != po.shape:
                raise ValueError(f"transform: rows[{n.binary}] must hold {len(po)} flags, got shape {r.shape}")
            rs = np.where(r, -1, 1)
            w = (w * si.astype(np.int8) * rs.reshape((-1,) + (1,) * (w.ndim - 1)).astype(np.int8)).astype(np.int8)
            scale = op.scale
            if scale is not None or (so < 0).any() or r.any():
                scale = (np.ones(len(po)) if scale is None else scale[po]) * so * rs
            new = dataclasses.replace(op, weights=w, scale=scale)
        else:
            w = w * si * so.reshape((-1,) + (1,) * (w.ndim - 1))
            new = dataclasses.replace(op, weights=w.reshape(op.weights.shape),
                                      bias=None if op.bias is None else op.bias[po] * so)
        ops = _with_op(ops, n.loc, new)
    return net.with_ops(ops)


def permute(net: ResidualBinaryNetwork, perms) -> ResidualBinaryNetwork:
    """Permute the channels of every space: new channel ``k`` of space ``s`` is old channel
    ``perms[s][k]`` (``None``: identity; fixed spaces only take ``None`` or the identity).
    Rows of the writers, columns of the readers and the per-channel parameters of the
    carriers move together, so the function is unchanged exactly."""
    return transform(net, perms=perms)


def reverse(net: ResidualBinaryNetwork, flips, strict: bool = True) -> ResidualBinaryNetwork:
    """Stream reversals: negate channel ``c`` of space ``s`` where ``flips[s][c]``
    (module docstring for where this is exact; refused elsewhere)."""
    return transform(net, flips=flips, strict=strict)


def reverse_rows(net: ResidualBinaryNetwork, rows) -> ResidualBinaryNetwork:
    """Row reversals, always exact: ``(w_f, scale_f) -> (-w_f, -scale_f)`` for the binary
    convolutions' rows where ``rows[b][f]``."""
    return transform(net, rows=rows)


# ---------------------------------------------------------------------------- canonical form
def _eff(op):
    """A binary convolution's rows times their scale (invariant under row reversals)."""
    a = np.ones(op.weights.shape[0]) if op.scale is None else op.scale
    return op.weights.astype(np.float64) * a.reshape((-1,) + (1,) * (op.weights.ndim - 1))


def _tensors(net, g, sigma, done):
    """Per-channel feature blocks of space ``sigma``: (odd, even) lists of (C, ·) arrays.
    Odd blocks change sign under a stream reversal of a channel, even ones do not. Only
    blocks whose other axis lies in a space of ``done`` (or has none) are used."""
    odd, even = [], []
    for n in channel_spaces(net).nodes:  # this network's operations
        op = n.op
        if n.role == "carry" and n.ins == sigma:
            if isinstance(op, Affine):
                odd.append(op.shift[:, None])
                even.append(op.scale[:, None])
            elif isinstance(op, PReLU):
                even.append(op.slope[:, None])
            else:
                odd.append(op.weights.reshape(op.weights.shape[0], -1))
                if op.bias is not None:
                    odd.append(op.bias[:, None])
        if n.role != "write":
            continue
        w = _eff(op) if isinstance(op, BinaryConv) else op.weights
        if n.outs == sigma:
            if n.ins in done and n.ins != sigma:
                odd.append(w.reshape(w.shape[0], -1))
            elif isinstance(op, BinaryConv):
                even.append(np.abs(np.ones(w.shape[0]) if op.scale is None else op.scale)[:, None])
            if not isinstance(op, BinaryConv) and op.bias is not None:
                odd.append(op.bias[:, None])
        if n.ins == sigma and n.outs in done and n.outs != sigma:
            v = _cols_view(n, w)
            odd.append(np.moveaxis(v, -1, 0).reshape(v.shape[-1], -1))
    return odd, even


def _key(net, g, sigma, done):
    odd, even = _tensors(net, g, sigma, done)
    blocks = [b.astype(np.float64) for b in odd + even]
    if not blocks:
        return np.zeros((g.sizes[sigma], 0))
    return np.concatenate(blocks, axis=1) + 0.0  # -0.0 -> 0.0


def _lex_less(a, b):
    """Row-wise lexicographic ``a < b`` of two (n, k) float arrays."""
    less = np.zeros(a.shape[0], bool)
    undecided = np.ones(a.shape[0], bool)
    for j in range(a.shape[1]):
        less |= undecided & (a[:, j] < b[:, j])
        undecided &= a[:, j] == b[:, j]
    return less


def _identity(g):
    return [None] * len(g)


def _row_gauge(net, g, reference=None):
    """Row reversals fixing each binary row's orientation: first entry +1 (canonical), or
    (``reference``) a non-negative overlap with the reference's row."""
    rows = []
    ref = None if reference is None else reference.binary_weights()
    for b, w in enumerate(net.binary_weights()):
        flat = w.reshape(w.shape[0], -1).astype(np.int64)
        if ref is None:
            rows.append(flat[:, 0] < 0)
        else:
            r = ref[b].reshape(w.shape[0], -1).astype(np.int64)
            rows.append((flat * r).sum(axis=1) < 0)
    if not any(r.any() for r in rows):
        return net
    return _transform(net, g, None, None, rows, check=False)


def canonicalize(net: ResidualBinaryNetwork, strict: bool = True) -> ResidualBinaryNetwork:
    r"""The canonical representative of ``net``'s orbit under channel permutations, row
    reversals and the exact stream reversals (``strict``: module docstring) [ours].

    Spaces are fixed one at a time in order of first appearance. Each channel's key is the
    concatenation of its per-channel blocks that are already canonical: the rows of the
    writers that read a fixed space (a binary row as ``scale_f · w_f``, invariant under
    row reversals), the columns of readers writing a fixed space, the carriers' parameters,
    biases, and ``|scale_f|`` of binary writers reading an unfixed space. Where the
    stream reversal is exact each channel takes the orientation with the
    lexicographically smaller key; the channels are then sorted by key. Last, every
    binary row is oriented to start with +1 (a row reversal). The function is preserved
    exactly and the result is idempotent. Channels with identical keys (twins: measure
    zero with real-valued stem, affine or head parameters) are left in their order, so
    the form is canonical only up to them.
    """
    check_residual(net, "canonicalize")
    g = channel_spaces(net)
    rev = g.reversible(strict)
    done = {s for s in range(len(g)) if g.fixed[s]}
    for sigma in g.free():
        key = _key(net, g, sigma, done)
        if rev[sigma] and key.shape[1]:
            fl = _identity(g)
            fl[sigma] = np.ones(g.sizes[sigma], bool)
            neg = _key(_transform(net, g, None, fl, None, check=False), g, sigma, done)
            flip = _lex_less(neg, key)
            if flip.any():
                fl[sigma] = flip
                net = _transform(net, g, None, fl, None, check=False)
                key = _key(net, g, sigma, done)
        order = np.lexsort(key.T[::-1]) if key.shape[1] else np.arange(g.sizes[sigma])
        if (order != np.arange(len(order))).any():
            pm = _identity(g)
            pm[sigma] = order
            net = _transform(net, g, pm, None, None, check=False)
        done.add(sigma)
    return _row_gauge(net, g)


MAGIC = b"bnn_toroid.residual_canonical/1\n"


def _b_int(v):
    return int(v).to_bytes(8, "little", signed=True)


def _b_str(s):
    b = s.encode("utf-8")
    return _b_int(len(b)) + b


def _b_reals(v):
    a = np.asarray(v, np.float64) + 0.0
    return _b_int(a.ndim) + b"".join(_b_int(d) for d in a.shape) + a.astype("<f8").tobytes()


def _b_bits(w):
    neg = np.asarray(w) < 0
    return (_b_int(neg.ndim) + b"".join(_b_int(d) for d in neg.shape)
            + np.packbits(neg.reshape(-1), bitorder="little").tobytes())


def _b_ops(ops):
    out = [_b_int(len(ops))]
    for op in ops:
        out.append(_b_str(type(op).__name__))
        if isinstance(op, Residual):
            out += [_b_ops(op.body), _b_ops(op.shortcut)]
            continue
        if isinstance(op, BinaryConv):
            out += [_b_bits(op.weights),
                    _b_reals(np.ones(op.weights.shape[0]) if op.scale is None else op.scale),
                    _b_int(op.pad_value)]
        elif isinstance(op, (RealConv, RealDense)):
            out += [_b_reals(op.weights), _b_reals(np.zeros(op.weights.shape[0]) if op.bias is None
                                                   else op.bias)]
            if isinstance(op, RealConv):
                out.append(_b_int(op.groups))
        elif isinstance(op, Affine):
            out += [_b_reals(op.scale), _b_reals(op.shift)]
        elif isinstance(op, PReLU):
            out.append(_b_reals(op.slope))
        for name in ("stride", "size"):
            if hasattr(op, name):
                out.append(_b_reals(getattr(op, name)))
        if hasattr(op, "padding"):
            out.append(_b_str(op.padding) if isinstance(op.padding, str) else _b_reals(op.padding))
    return b"".join(out)


def canonical_bytes(net: ResidualBinaryNetwork) -> bytes:
    """``net`` as it is, in the residual canonical encoding (version 1): ``MAGIC``, the
    input layout and shape, then every operation by its type name and parameters: binary
    weights as bits (1 for −1) with their shape, real arrays as float64 little-endian
    (``-0.0`` as ``0.0``; a missing scale as ones and a missing bias as zeros, which
    compute the same), strides, sizes and paddings. Apply :func:`canonicalize` first to
    encode the orbit."""
    check_residual(net, "canonical_bytes")
    return b"".join([MAGIC, _b_str(net.input_layout), _b_reals(net.input_shape), _b_ops(net.ops)])


def fingerprint(net: ResidualBinaryNetwork, strict: bool = True) -> str:
    """SHA-256 hex digest of ``canonical_bytes(canonicalize(net, strict))``: equal for
    networks of one orbit, different otherwise (up to the twins of :func:`canonicalize`)."""
    check_residual(net, "fingerprint")
    tag = b"strict\n" if strict else b"almost-everywhere\n"
    return hashlib.sha256(tag + canonical_bytes(canonicalize(net, strict))).hexdigest()


# ---------------------------------------------------------------------------- alignment
def same_architecture(a: ResidualBinaryNetwork, b: ResidualBinaryNetwork) -> bool:
    """Same input, same operation types in the same places, same parameter shapes."""
    if a.input_shape != b.input_shape or a.input_layout != b.input_layout:
        return False

    def sig(ops):
        out = []
        for op in ops:
            if isinstance(op, Residual):
                out.append(("Residual", sig(op.body), sig(op.shortcut)))
                continue
            # a missing scale or bias computes as ones or zeros: not a difference
            d = tuple((k, np.shape(v) if isinstance(v, np.ndarray) else v)
                      for k, v in sorted(vars(op).items())
                      if not k.startswith("_") and k not in ("bias", "scale"))
            out.append((type(op).__name__, d))
        return tuple(out)
    return sig(a.ops) == sig(b.ops)


def check_pair(a, b, what):
    check_residual(a, what)
    check_residual(b, what)
    if not same_architecture(a, b):
        raise ValueError(f"{what}: the networks have different architectures:\n{a!r}\nvs\n{b!r}")


def _similarity(net, reference, g, sigma, done):
    """(S_keep, S_flip): Σ over the blocks of ``sigma`` of the channel overlaps, without
    and with a stream reversal of the network's channel."""
    oa, ea = _tensors(reference, g, sigma, done)
    ob, eb = _tensors(net, g, sigma, done)
    n = g.sizes[sigma]
    odd, even = np.zeros((n, n)), np.zeros((n, n))
    for x, y in zip(oa, ob):
        odd += x.astype(np.float64) @ y.astype(np.float64).T
    for x, y in zip(ea, eb):
        even += x.astype(np.float64) @ y.astype(np.float64).T
    return odd + even, even - odd


def align(net: ResidualBinaryNetwork, reference: ResidualBinaryNetwork, method: str = "weights",
          max_iter: int = 10, strict: bool = True) -> ResidualBinaryNetwork:
    r"""Permute and reverse ``net``'s channels (and reverse its binary rows) to match
    ``reference``; the function of ``net`` is preserved exactly.

    Weight matching per channel space (Ainsworth et al. 2023), the residual form of
    Pittorino et al. 2022, Alg. 2: for space :math:`\sigma`, the assignment
    (``scipy.optimize.linear_sum_assignment``) maximises
    :math:`\sum_i S_{i\pi(i)}` with :math:`S_{ij} = \sum_T \langle T^{ref}_i, T^{net}_j\rangle`
    summed over every tensor that writes or reads the space (binary rows as
    ``scale · w``, so row reversals do not change it) plus the carriers' parameters.
    Where the stream reversal is exact, a channel may also be matched reversed (the odd
    blocks' overlaps negated, the even ones such as ``Affine.scale`` kept). The first
    sweep goes through the spaces in order using only blocks whose other axis is
    already matched; later sweeps use all blocks, until nothing changes or ``max_iter``
    sweeps. Last, each binary row is reversed where its overlap with the reference's row
    is negative. A permuted and reversed copy of ``reference`` (with real-valued
    parameters that have no exact ties) aligns back to Hamming distance 0.
    """
    check_pair(net, reference, "align")
    if method not in ("weights", "overlap"):
        raise ValueError(f"align: method must be 'weights' or 'overlap' for residual networks, "
                         f"got {method!r}")
    g = channel_spaces(net)
    rev = g.reversible(strict)
    done = {s for s in range(len(g)) if g.fixed[s]}
    every = set(range(len(g)))
    sweeps = 1 if method == "overlap" else max(1, int(max_iter))
    for sweep in range(sweeps):
        changed = False
        for sigma in g.free():
            keep, flip = _similarity(net, reference, g, sigma, done if sweep == 0 else every)
            fl = _identity(g)
            if rev[sigma]:
                best = np.maximum(keep, flip)
                _, col = linear_sum_assignment(best, maximize=True)
                f = flip[np.arange(len(col)), col] > keep[np.arange(len(col)), col]
            else:
                _, col = linear_sum_assignment(keep, maximize=True)
                f = np.zeros(len(col), bool)
            done.add(sigma)
            if (col != np.arange(len(col))).any() or f.any():
                pm = _identity(g)
                pm[sigma] = col
                # flip after permuting: transform's flips index new channels
                fl[sigma] = f
                net = _transform(net, g, pm, fl, None, check=False)
                changed = True
        if sweep and not changed:
            break
    return _row_gauge(net, g, reference)


def shuffled(net: ResidualBinaryNetwork, rng, strict: bool = True) -> ResidualBinaryNetwork:
    """A random element of the group applied to ``net``: every free space permuted, every
    reversible space's channels reversed with probability 1/2, every binary row reversed
    with probability 1/2 (for tests and demonstrations)."""
    check_residual(net, "shuffled")
    g = channel_spaces(net)
    rev = g.reversible(strict)
    perms = [None if g.fixed[s] else rng.permutation(g.sizes[s]) for s in range(len(g))]
    flips = [rng.random(g.sizes[s]) < 0.5 if rev[s] else None for s in range(len(g))]
    rows = [rng.random(w.shape[0]) < 0.5 for w in net.binary_weights()]
    return _transform(net, g, perms, flips, rows, strict)


__all__ += ["same_architecture", "check_pair", "shuffled", "MAGIC"]
