r"""Elementary moves between two binary networks of one architecture (docs/methods.md, "Elementary moves of binary networks").

Pittorino et al., "Deep Networks on Toroids", ICML 2022 (arXiv 2202.03038), §4: binary
networks are compared through random paths that flip, one at a time, the weights where two
aligned networks differ. A frozen network (docs/methods.md, "Integer threshold form") also holds
thresholds, an output affine and pooling modes, so a path that must end *exactly* at the
other network needs a few more kinds of step. **The move model [ours]:**

========================  ============================================================
kind                      one move …
========================  ============================================================
``FLIP``                  toggles one weight ``w → −w`` (``index`` = flat index into the
                          layer's ``weights``, C order). One per position where a and b
                          differ. A *detour* (:func:`bnn_toroid.paths.discrete_search.search`) is
                          a ``FLIP`` where a and b agree; it appears twice in a path.
``THRESHOLD``             adds ``delta`` to the integer threshold of one hidden unit.
                          With ``h ≡ n (mod 2)`` (``n`` the fan-in), ``T`` and its *level*
                          ``ceil_n(T)`` (the smallest value ``≥ T`` of the parity of ``n``)
                          select the same samples, so a unit whose level moves from
                          ``c_a`` to ``c_b`` gets ``|c_b − c_a| / 2`` steps of ``±2``, one
                          of them corrected by ``±1`` so that the sum is ``T_b − T_a``
                          exactly. In *any* order every step moves the level by exactly
                          one (changes the unit's output only on samples with ``h`` at
                          the crossed level). Equal levels with different ``T`` give one
                          function-neutral ``±1`` step. Units whose ``h`` has no fixed
                          parity (a conv with ``same`` zero padding) step by ``±1``.
                          Levels outside ``[−n, n+2]`` (where ``h`` never is) give
                          neutral steps too; ``normalize_thresholds`` of
                          :mod:`bnn_toroid.symmetry.binary` removes them beforehand.
``THRESHOLD_SET``         sets one threshold of a layer on real-valued input (``h`` real)
                          to b's value, in one step.
``OUTPUT``                sets ``(out_scale, out_bias)`` of one output unit to b's.
``POOL``                  sets one pooled channel's min/max mode (``min_channels``) to b's.
========================  ============================================================

The Hamming distance (:func:`bnn_toroid.geometry.binary.distance`, ``path.hamming``)
counts **weights only**; a path's fraction axis counts **moves** (so a path between two
networks with equal weights but different thresholds still has length > 0).

Moves are a numpy structured array of :data:`MOVE_DTYPE` (fields ``kind``, ``layer`` (index
into ``net.layers``), ``index``, ``delta``, ``value``, ``value2``), so an order is
``moves[perm]`` and a prefix ``moves[:k]``. Flips and threshold steps commute; a ``*_SET``
move sets a value, and since each unit has at most one, every order of
:func:`moves_between` ends exactly at b.
"""
from __future__ import annotations

import numpy as np

from .. import kernels as K
from ..network import BinaryNetwork, NetworkStack
from ..network.layers import Conv2d, Dense, MaxPool2d

__all__ = ["MOVE_DTYPE", "FLIP", "THRESHOLD", "THRESHOLD_SET", "OUTPUT", "POOL", "KIND_NAMES",
           "moves_between", "apply_moves", "count_moves", "threshold_level", "errors_along",
           "networks_along", "check_pair", "as_xy"]

FLIP, THRESHOLD, THRESHOLD_SET, OUTPUT, POOL = 0, 1, 2, 3, 4
KIND_NAMES = ("flip", "threshold", "threshold_set", "output", "pool")

MOVE_DTYPE = np.dtype([("kind", np.int8), ("layer", np.int64), ("index", np.int64),
                       ("delta", np.int64), ("value", np.float64), ("value2", np.float64)])

# Networks evaluated per NetworkStack call when building path points: bounds the memory of
# the stacked parameters and activations (S × N × units words per layer).
DEFAULT_CHUNK = 16


# ---------------------------------------------------------------------------------------
# Checks shared by the path constructors
# ---------------------------------------------------------------------------------------

def _check_net(net, name: str) -> BinaryNetwork:
    if isinstance(net, BinaryNetwork):
        return net
    try:
        import torch
        if isinstance(net, torch.nn.Module):
            raise TypeError(f"{name} is a torch model ({type(net).__name__}); binary paths work "
                            "on frozen networks. Freeze it first: "
                            f"bnn_toroid.BinaryNetwork.from_torch({name}.eval())")
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    raise TypeError(f"{name}: expected a bnn_toroid BinaryNetwork, got {type(net).__name__}")


def check_pair(a, b) -> tuple:
    """Validate two endpoints: frozen :class:`BinaryNetwork` s of one architecture.

    Raises:
        TypeError: an endpoint is not a BinaryNetwork (an unfrozen torch model is named,
            with the call that freezes it: paths never freeze implicitly, since freezing
            needs the model in eval mode and, for conv models, an input shape).
        ValueError: the architectures differ (the first difference is named).
    """
    a, b = _check_net(a, "a"), _check_net(b, "b")
    if not a.same_architecture(b):
        raise ValueError("a and b have different architectures; paths need two networks of "
                         f"one architecture.\n a: {a.summary()}\n b: {b.summary()}")
    return a, b


def as_xy(data, what: str = "data"):
    """``(x, y)`` from a Dataset (``.x``, ``.y``) or an ``(x, y)`` pair; refuses empty data."""
    if hasattr(data, "x") and hasattr(data, "y"):
        x, y = data.x, data.y
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    else:
        raise TypeError(f"{what}: expected a Dataset or an (x, y) pair, got {type(data).__name__}")
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    if hasattr(y, "detach"):
        y = y.detach().cpu().numpy()
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"{what}: empty data (x has shape {x.shape}); need at least one sample")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"{what}: expected one label per sample; x has {x.shape[0]} samples, "
                         f"y has shape {y.shape}")
    return x, y


# ---------------------------------------------------------------------------------------
# Building the moves
# ---------------------------------------------------------------------------------------

def _real_layer(net: BinaryNetwork, i: int) -> bool:
    return i == 0 and not net.binarize_input


def _fan_in_parity(net: BinaryNetwork, i: int):
    """Fan-in ``n`` of layer i when every pre-activation has its parity, else None."""
    layer = net.layers[i]
    if isinstance(layer, Dense):
        return layer.weights.shape[1]
    if layer.padding == "same" and float(layer.pad_value) == 0.0:
        # zero-padded taps add nothing, so border pixels have a smaller fan-in
        pads, _ = K.conv_pads(*net.layer_input_shape(i)[:2], layer.weights.shape[1],
                              layer.weights.shape[2], layer.stride, layer.padding)
        if any(pads):
            return None
    return int(np.prod(layer.weights.shape[1:]))


def threshold_level(t, fan_in: int) -> np.ndarray:
    r"""The *level* of integer thresholds: ``c = T + ((T − n) mod 2)``, the smallest value
    ``≥ T`` with the parity of the fan-in ``n``. For integer ``h ≡ n (mod 2)``,
    ``h ≥ T ⇔ h ≥ c`` (docs/methods.md, "Canonical thresholds (parity)", parity of thresholds), so two thresholds act alike iff
    their levels are equal."""
    t = np.asarray(t, dtype=np.int64)
    return t + np.mod(t - int(fan_in), 2)


def _threshold_steps(ta: int, tb: int, n):
    """Deltas taking ``ta`` to ``tb``, one level per step in any order (module docstring)."""
    if ta == tb:
        return []
    if n is None:
        return [int(np.sign(tb - ta))] * abs(tb - ta)
    ca, cb = int(threshold_level(ta, n)), int(threshold_level(tb, n))
    m = abs(cb - ca) // 2
    if m == 0:
        return [tb - ta]  # same level: a function-neutral step
    sgn = 1 if cb > ca else -1
    steps = [2 * sgn] * m
    # The offsets o = c − T lie in {0, 1}; putting o_a − o_b on one step keeps every
    # partial sum at a level of the form c_a ± 2j − o with o ∈ {0, 1}.
    steps[0] += (ca - ta) - (cb - tb)
    assert sum(steps) == tb - ta
    return steps


def _records(kind, layer, index, delta=0, value=0.0, value2=0.0):
    index = np.asarray(index, np.int64).reshape(-1)
    out = np.zeros(index.size, MOVE_DTYPE)
    out["kind"], out["layer"], out["index"] = kind, layer, index
    out["delta"], out["value"], out["value2"] = delta, value, value2
    return out


def moves_between(a: BinaryNetwork, b: BinaryNetwork) -> np.ndarray:
    """All elementary moves that turn ``a`` into ``b`` (module docstring), in a canonical
    order: by layer; within a layer flips (by position), then thresholds, output units and
    pooled channels. ``b`` must already be aligned to ``a`` if wanted: nothing is permuted.

    Returns:
        a structured array of :data:`MOVE_DTYPE`; ``apply_moves(a, moves)`` equals ``b``
        for every permutation of it.
    """
    a, b = check_pair(a, b)
    parts = []
    for i, (la, lb) in enumerate(zip(a.layers, b.layers)):
        if isinstance(la, MaxPool2d):
            nc = a.layer_input_shape(i)[-1]
            ma = np.zeros(nc, bool) if la.min_channels is None else la.min_channels
            mb = np.zeros(nc, bool) if lb.min_channels is None else lb.min_channels
            c = np.flatnonzero(ma != mb)
            if c.size:
                parts.append(_records(POOL, i, c, value=mb[c].astype(np.float64)))
            continue
        d = np.flatnonzero(la.weights.reshape(-1) != lb.weights.reshape(-1))
        if d.size:
            parts.append(_records(FLIP, i, d))
        if la.threshold is not None:
            ta, tb = la.threshold, lb.threshold
            units = np.flatnonzero(ta != tb)
            if _real_layer(a, i) or ta.dtype.kind == "f" or tb.dtype.kind == "f":
                if units.size:
                    parts.append(_records(THRESHOLD_SET, i, units, value=tb[units].astype(np.float64)))
            else:
                n = _fan_in_parity(a, i)
                idx, deltas = [], []
                for u in units:
                    s = _threshold_steps(int(ta[u]), int(tb[u]), n)
                    idx += [u] * len(s)
                    deltas += s
                if idx:
                    parts.append(_records(THRESHOLD, i, idx, delta=np.asarray(deltas, np.int64)))
        else:
            diff = np.flatnonzero((la.out_scale != lb.out_scale) | (la.out_bias != lb.out_bias))
            if diff.size:
                parts.append(_records(OUTPUT, i, diff, value=lb.out_scale[diff], value2=lb.out_bias[diff]))
    return np.concatenate(parts) if parts else np.zeros(0, MOVE_DTYPE)


def count_moves(moves) -> dict:
    """Number of moves of each kind, ``{"flip": …, "threshold": …, …}``."""
    moves = _as_moves(moves)
    return {name: int(np.count_nonzero(moves["kind"] == k)) for k, name in enumerate(KIND_NAMES)}


def _as_moves(moves) -> np.ndarray:
    m = np.asarray(moves)
    if m.dtype != MOVE_DTYPE:
        raise TypeError(f"moves: expected a structured array of MOVE_DTYPE (from moves_between), "
                        f"got dtype {m.dtype}")
    return m.reshape(-1)


def _check_moves(net: BinaryNetwork, moves: np.ndarray):
    """Every move names an existing position of a layer of the right kind."""
    if moves.size == 0:
        return
    layers = moves["layer"]
    if layers.min() < 0 or layers.max() >= len(net.layers):
        raise ValueError(f"moves: layer index out of range for a network of {len(net.layers)} layers")
    for i in np.unique(layers):
        layer = net.layers[i]
        sel = moves[layers == i]
        kinds = set(np.unique(sel["kind"]).tolist())
        if isinstance(layer, MaxPool2d):
            allowed, size = {POOL}, net.layer_input_shape(i)[-1]
        elif layer.threshold is None:
            allowed, size = {FLIP, OUTPUT}, None
        else:
            allowed, size = {FLIP, THRESHOLD, THRESHOLD_SET}, None
        bad = kinds - allowed
        if bad:
            raise ValueError(f"moves: layer {i} ({type(layer).__name__}) cannot take moves of kind "
                             f"{[KIND_NAMES[k] for k in sorted(bad)]}")
        for kind in kinds:
            idx = sel["index"][sel["kind"] == kind]
            lim = size if kind == POOL else (layer.weights.size if kind == FLIP else layer.units)
            if idx.min() < 0 or idx.max() >= lim:
                raise ValueError(f"moves: {KIND_NAMES[kind]} index out of range [0, {lim}) in layer {i}")


def _last_set(arr, idx, values):
    """``arr[idx] = values`` where the last occurrence of a repeated index wins."""
    if idx.size == 0:
        return
    rev = idx[::-1]
    _, first = np.unique(rev, return_index=True)
    arr[rev[first]] = values[::-1][first]


def _apply_unit_moves(arr, sel, kind):
    """Threshold steps, threshold sets and output-affine sets of one layer's moves, on a
    dict holding ``T`` or ``scale``/``bias`` (the same in unpacked and packed form)."""
    s = kind == THRESHOLD
    if s.any():
        np.add.at(arr["T"], sel["index"][s], sel["delta"][s])
    s = kind == THRESHOLD_SET
    if s.any():
        vals = sel["value"][s]
        if arr["T"].dtype.kind != "f" and not np.array_equal(vals, np.round(vals)):
            arr["T"] = arr["T"].astype(np.float64)  # a real threshold set on an integer layer
        _last_set(arr["T"], sel["index"][s], vals.astype(arr["T"].dtype))
    s = kind == OUTPUT
    if s.any():
        _last_set(arr["scale"], sel["index"][s], sel["value"][s])
        _last_set(arr["bias"], sel["index"][s], sel["value2"][s])


class _LayerWalker:
    """Mutable copies of a network's layer arrays, moved forward by moves."""

    def __init__(self, net: BinaryNetwork):
        self.net = net
        self.arrays = []
        for i, layer in enumerate(net.layers):
            if isinstance(layer, MaxPool2d):
                c = net.layer_input_shape(i)[-1]
                mask = np.zeros(c, bool) if layer.min_channels is None else layer.min_channels.copy()
                self.arrays.append({"mask": mask})
            elif layer.threshold is not None:
                self.arrays.append({"w": layer.weights.copy(), "T": layer.threshold.copy()})
            else:
                self.arrays.append({"w": layer.weights.copy(), "scale": layer.out_scale.copy(),
                                    "bias": layer.out_bias.copy()})

    def apply(self, moves):
        for i in np.unique(moves["layer"]):
            sel = moves[moves["layer"] == i]
            arr = self.arrays[i]
            kind = sel["kind"]
            f = sel["index"][kind == FLIP]
            if f.size:
                odd = np.bincount(f, minlength=arr["w"].size) & 1
                arr["w"].reshape(-1)[odd.astype(bool)] *= -1
            _apply_unit_moves(arr, sel, kind)
            s = kind == POOL
            if s.any():
                _last_set(arr["mask"], sel["index"][s], sel["value"][s] != 0)

    def network(self) -> BinaryNetwork:
        layers = []
        for layer, arr in zip(self.net.layers, self.arrays):
            if isinstance(layer, MaxPool2d):
                layers.append(MaxPool2d(layer.size, layer.stride, min_channels=arr["mask"].copy()))
            elif isinstance(layer, Dense):
                layers.append(Dense(arr["w"], threshold=arr.get("T"), out_scale=arr.get("scale"),
                                    out_bias=arr.get("bias")))
            else:
                layers.append(Conv2d(arr["w"], threshold=arr.get("T"), stride=layer.stride,
                                     padding=layer.padding, pad_value=layer.pad_value,
                                     out_scale=arr.get("scale"), out_bias=arr.get("bias")))
        return self.net.with_layers(layers)


def apply_moves(net: BinaryNetwork, moves) -> BinaryNetwork:
    """A new network: ``net`` after ``moves`` (in order; flips and threshold steps commute,
    set moves take the last value). ``net`` is not modified.

    ``apply_moves(a, moves_between(a, b)).equals(b)`` holds for every order of the moves.
    """
    net = _check_net(net, "net")
    moves = _as_moves(moves)
    _check_moves(net, moves)
    w = _LayerWalker(net)
    w.apply(moves)
    return w.network()


# ---------------------------------------------------------------------------------------
# Many path points, evaluated in batches
# ---------------------------------------------------------------------------------------

class _ParamWalker:
    """The kernels' packed parameters of a network (``packed_params`` without the network
    axis), moved forward by moves directly on the packed words: a weight flip is one XOR
    of one bit, so path points are built without repacking whole layers."""

    def __init__(self, net: BinaryNetwork):
        self.net = net
        self.params = [{k: v[0].copy() for k, v in p.items()} for p in net.packed_params()]
        # flat weight index -> (flat word index, bit), from each layer's layout
        self._locate = [net.layout(i).locate for i in range(len(net.layers))]

    def apply(self, moves):
        for i in np.unique(moves["layer"]):
            sel = moves[moves["layer"] == i]
            p = self.params[i]
            kind = sel["kind"]
            f = sel["index"][kind == FLIP]
            if f.size:  # a flip is one bit XOR (network/layout.py)
                word, bit = self._locate[i](f)
                np.bitwise_xor.at(p["w"].reshape(-1), word,
                                  np.left_shift(np.uint64(1), bit.astype(np.uint64)))
            _apply_unit_moves(p, sel, kind)
            s = kind == POOL
            if s.any():
                lay = self.net.layout(i)
                mask = lay.unpack(p["mask"])
                _last_set(mask, sel["index"][s], sel["value"][s] != 0)
                p["mask"] = lay.pack(mask)

    def snapshot(self):
        return [{k: v.copy() for k, v in p.items()} for p in self.params]


def _stack(snapshots):
    """Stacked parameters of several snapshots; thresholds promoted to a common dtype."""
    out = []
    for i in range(len(snapshots[0])):
        layer = {}
        for k in snapshots[0][i]:
            vals = [s[i][k] for s in snapshots]
            layer[k] = np.stack(vals) if len({v.dtype for v in vals}) == 1 else \
                np.stack([v.astype(np.float64) for v in vals])
        out.append(layer)
    return out


def networks_along(net: BinaryNetwork, moves, ks):
    """Yield the networks after the first ``k`` moves, for each ``k`` in ``ks`` (sorted,
    non-decreasing). Each is a new :class:`BinaryNetwork`; for evaluation use
    :func:`errors_along`, which does not build them."""
    net = _check_net(net, "net")
    moves = _as_moves(moves)
    _check_moves(net, moves)
    ks = _check_ks(ks, len(moves))
    walker = _LayerWalker(net)
    done = 0
    for k in ks:
        walker.apply(moves[done:k])
        done = k
        yield walker.network()


def _check_ks(ks, n):
    ks = np.asarray(ks, dtype=np.int64).reshape(-1)
    if ks.size and (ks.min() < 0 or ks.max() > n or (np.diff(ks) < 0).any()):
        raise ValueError(f"ks: expected non-decreasing move counts in [0, {n}], got {ks}")
    return ks


def errors_along(net: BinaryNetwork, moves, ks, data, chunk: int = DEFAULT_CHUNK,
                 batch_size: int = 4096) -> np.ndarray:
    r"""Train error ``E(k) = (1/P) Σ_μ [argmax f(x^μ; θ_k) ≠ y^μ]`` of the networks
    ``θ_k`` = ``net`` after its first ``k`` moves, for each ``k`` in ``ks``.

    The points are built on the packed parameters (a flip is one bit XOR) and evaluated
    ``chunk`` at a time in one batched :class:`~bnn_toroid.network.NetworkStack` call per
    layer (docs/methods.md, "Evaluating many networks at once": many networks per kernel launch); ``chunk`` bounds the memory of
    the stacked parameters and activations.

    Returns:
        float64 array of ``len(ks)`` errors.
    """
    net = _check_net(net, "net")
    moves = _as_moves(moves)
    _check_moves(net, moves)
    ks = _check_ks(ks, len(moves))
    x, y = as_xy(data)
    chunk = max(1, int(chunk))
    walker = _ParamWalker(net)
    out = np.empty(ks.size)
    done, snaps, pos = 0, [], 0
    for k in ks:
        walker.apply(moves[done:k])
        done = k
        snaps.append(walker.snapshot())
        if len(snaps) == chunk:
            out[pos:pos + chunk] = NetworkStack(net, _stack(snaps)).errors(x, y, batch_size)
            pos += chunk
            snaps = []
    if snaps:
        out[pos:] = NetworkStack(net, _stack(snaps)).errors(x, y, batch_size)
    return out
