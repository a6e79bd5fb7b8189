"""Symmetries of binary networks: hidden-unit permutations and sign reversals.

With sign activations, flipping a hidden unit's incoming row and its outgoing column
leaves the function unchanged; in integer threshold form the map is exact,

    (w_k, T_k, out_k)  ->  (-w_k, 1 - T_k, -out_k),

because ``h >= T  <=>  -h <= -T  <=>  -h >= 1 - T`` for integers (docs/methods.md, "Sign reversals and permutations"). A max-pool
between the unit and its consumer becomes a min-pool under the flip. Permuting units
(with their thresholds, pool modes and outgoing columns) is the other symmetry.

:func:`canonicalize` picks one representative per class; :func:`align` matches a
network onto a reference (Pittorino et al. 2022, §3 and Alg. 2 adapted to ±1 weights).
"""
from __future__ import annotations

import hashlib

import numpy as np
from scipy.optimize import linear_sum_assignment

from .. import kernels as K
from ..network import BinaryNetwork, Conv2d, Dense, MaxPool2d
from .encoding import canonical_bytes

__all__ = ["canonicalize", "fingerprint", "align", "permute_units", "flip_threshold",
           "normalize_thresholds", "hidden_layers", "flippable"]


# ---------------------------------------------------------------------------- structure
def hidden_layers(net: BinaryNetwork) -> list[int]:
    """Indices of the layers whose units carry the symmetries (hidden Dense/Conv)."""
    return [i for i, l in enumerate(net.layers)
            if not isinstance(l, MaxPool2d) and l.threshold is not None]


def _consumer(net, i):
    """(index of the pool after layer i or None, index of the next weight layer)."""
    j = i + 1
    pool = None
    if isinstance(net.layers[j], MaxPool2d):
        pool, j = j, j + 1
    return pool, j


def _fan_in(net, i):
    """(max fan-in, whether every reachable fan-in has the same parity). Parity is only
    fixed when all of a unit's pre-activations share it: a zero-padded conv sees fewer
    taps at the border, so with an odd channel count the parity varies."""
    layer = net.layers[i]
    if isinstance(layer, Dense):
        return layer.weights.shape[1], True
    f, kh, kw, c = layer.weights.shape
    n = kh * kw * c
    # pad_value is one number per channel for a first conv on real input (np.all, not float)
    uniform = layer.padding == "valid" or bool(np.all(np.asarray(layer.pad_value) == 1.0)) or c % 2 == 0
    return n, uniform


def flippable(net: BinaryNetwork, i: int) -> bool:
    """Whether the units of hidden layer ``i`` have the sign symmetry.

    A consumer conv that pads with larq's ``pad_values=1`` feeds a constant +1 at the
    border, which a flip of the producing channel does not reverse: those units can only
    be permuted.
    """
    _, j = _consumer(net, i)
    nxt = net.layers[j]
    if isinstance(nxt, Conv2d) and nxt.padding == "same" and float(nxt.pad_value) != 0.0:
        g = net.layer_input_shape(j)
        pads, _ = K.conv_pads(g[0], g[1], nxt.weights.shape[1], nxt.weights.shape[2], nxt.stride, "same")
        return not any(pads)
    return True


def _columns(net, j, w):
    """The consumer's weights viewed as (..., units of the producer)."""
    layer = net.layers[j]
    if isinstance(layer, Dense):
        geom = net.layer_input_shape(j)
        if len(geom) == 3:
            return w.reshape(w.shape[0], geom[0] * geom[1], geom[2])
        return w
    return w  # Conv2d: (F, kh, kw, C)


# ---------------------------------------------------------------------------- thresholds
def flip_threshold(t, fan_in: int | None = None, parity: bool = True):
    r"""Threshold of a sign-reversed unit.

    Integer: ``T -> 1 - T`` (``h >= T  <=>  -h >= 1 - T`` for integer h), then parity
    normalised when ``fan_in`` is given. Real (first layer on real input): the flipped
    unit fires iff ``-h > -T``, i.e. ``-h >= nextafter(-T, +inf)``, exact in float64.
    """
    t = np.asarray(t)
    if np.issubdtype(t.dtype, np.integer):
        out = 1 - t.astype(np.int64)
        return normalize_thresholds(out, fan_in, parity) if fan_in is not None else out
    return np.nextafter(-t.astype(np.float64), np.inf)


def normalize_thresholds(t, fan_in: int, parity: bool = True):
    r"""Canonical integer thresholds for units of fan-in ``n`` (docs/methods.md, "Canonical thresholds (parity)").

    Every pre-activation is an integer ``h`` with ``|h| <= n`` and ``h ≡ n (mod 2)``, so
    ``h >= T`` is unchanged by (i) clipping ``T`` to ``[-n, n+1]`` and (ii) replacing a
    ``T ≡ n+1 (mod 2)`` by ``T+1``. The result has the parity of ``n`` and lies in
    ``[-n, n+2]``. ``parity=False`` (fan-ins of mixed parity) only clips.
    """
    t = np.asarray(t)
    if not np.issubdtype(t.dtype, np.integer):
        return t.astype(np.float64)
    n = int(fan_in)
    t = np.clip(t.astype(np.int64), -n, n + 1)
    if parity:
        t = t + ((t - n) & 1)
    return t


# ---------------------------------------------------------------------------- the primitive
def permute_units(net: BinaryNetwork, i: int, perm=None, flip=None) -> BinaryNetwork:
    """Reorder and sign-reverse the units of hidden layer ``i``; the function is unchanged.

    New unit ``k`` is old unit ``perm[k]``, negated where ``flip[k]``. Its incoming row and
    threshold, the pool mode of its channel and its outgoing columns in the next weight
    layer move with it.
    """
    layer = net.layers[i]
    if isinstance(layer, MaxPool2d) or layer.threshold is None:
        raise ValueError(f"layer {i} is not a hidden Dense/Conv2d layer; only hidden units "
                         "have permutation and sign symmetries")
    n = layer.units
    perm = np.arange(n) if perm is None else np.asarray(perm, np.int64)
    flip = np.zeros(n, bool) if flip is None else np.asarray(flip, bool)
    if sorted(perm.tolist()) != list(range(n)) or flip.shape != (n,):
        raise ValueError(f"permute_units: need a permutation of {n} units and {n} flip flags")
    if flip.any() and not flippable(net, i):
        raise ValueError(f"permute_units: the units of layer {i} feed a conv padded with +1 "
                         "(pad_values=1); reversing their sign would change the function")
    sign = np.where(flip, -1, 1).astype(np.int8)
    layers = list(net.layers)
    fan, uniform = _fan_in(net, i)
    t = layer.threshold[perm]
    if flip.any():
        t = t.copy()
        t[flip] = flip_threshold(t[flip], fan, uniform) if t.dtype == np.int64 else flip_threshold(t[flip])
    w = layer.weights[perm] * sign.reshape((-1,) + (1,) * (layer.weights.ndim - 1))
    bn = None if layer.bn is None else layer.bn.take(perm, flip)
    if isinstance(layer, Dense):
        layers[i] = Dense(w, threshold=t, bn=bn)
    else:
        layers[i] = Conv2d(w, threshold=t, stride=layer.stride, padding=layer.padding,
                           pad_value=layer.pad_value, bn=bn)
    pool, j = _consumer(net, i)
    if pool is not None:
        p = net.layers[pool]
        mc = np.zeros(n, bool) if p.min_channels is None else p.min_channels
        layers[pool] = MaxPool2d(p.size, p.stride, mc[perm] ^ flip)
    nxt = net.layers[j]
    cols = _columns(net, j, nxt.weights)
    cols = cols[..., perm] * sign
    nw = cols.reshape(nxt.weights.shape)
    if isinstance(nxt, Dense):
        layers[j] = Dense(nw, threshold=nxt.threshold, out_scale=nxt.out_scale if nxt.threshold is None else None,
                          out_bias=nxt.out_bias if nxt.threshold is None else None, bn=nxt.bn)
    else:
        layers[j] = Conv2d(nw, threshold=nxt.threshold, stride=nxt.stride, padding=nxt.padding,
                           pad_value=nxt.pad_value, bn=nxt.bn)
    return net.with_layers(layers)


# ---------------------------------------------------------------------------- canonical form
def _rows(layer):
    return layer.weights.reshape(layer.units, -1)


def _keys(t, mode, words):
    """Sort keys per unit, most significant first: threshold, pool mode, packed row."""
    return [t, mode.astype(np.int64)] + [words[:, c] for c in range(words.shape[1])]


def _lex_less(ka, kb):
    """Row-wise ``ka < kb`` for lists of key columns (lexicographic)."""
    n = len(ka[0])
    less = np.zeros(n, bool)
    undecided = np.ones(n, bool)
    for a, b in zip(ka, kb):
        less |= undecided & (a < b)
        undecided &= a == b
    return less


def _twin_invariant(rows_view, twins):
    """Rows with the entries of each twin group of the producing layer sorted per pixel, so
    the key does not depend on how exact twins below are ordered."""
    if not twins:
        return rows_view.reshape(rows_view.shape[0], -1)
    v = rows_view.copy()
    for g in twins:
        v[..., g] = np.sort(v[..., g], axis=-1)
    return v.reshape(v.shape[0], -1)


def _input_view(net, i, w):
    """Layer i's weights as (units, pixels, channels of the producing layer)."""
    layer = net.layers[i]
    if isinstance(layer, Conv2d):
        return w.reshape(w.shape[0], -1, w.shape[3])
    g = net.layer_input_shape(i)
    return w.reshape(w.shape[0], -1, g[2] if len(g) == 3 else g[0])


def _twin_groups(t, mode, rows):
    """Groups (index arrays, size > 1) of units with identical threshold, mode and row."""
    keys = np.concatenate([np.asarray(t, np.float64)[:, None], mode[:, None].astype(np.float64),
                           rows.astype(np.float64)], axis=1)
    _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    return [np.flatnonzero(inverse.ravel() == k) for k in np.flatnonzero(counts > 1)]


MAX_TWIN_ARRANGEMENTS = 40320


def _sorted_consumer(net, i, cols_perm):
    """Layer i (the consumer) with its input columns permuted by ``cols_perm``, rows sorted
    by their actual keys: (order of rows, flat key array for comparison)."""
    layer = net.layers[i]
    view = _input_view(net, i, layer.weights)[..., cols_perm]
    rows = view.reshape(layer.units, -1)
    if layer.threshold is None:  # output units are labelled: no reordering
        return np.arange(layer.units), rows.ravel().astype(np.float64)
    _, mode = _pool_mode(net, i)
    keys = _keys(layer.threshold, mode, K.pack_bits(rows))
    order = np.lexsort(keys[::-1])
    flat = np.concatenate([np.asarray(layer.threshold, np.float64)[order], mode[order].astype(np.float64),
                           rows[order].ravel().astype(np.float64)])
    return order, flat


def _resolve_twins(net, prev, i, twins):
    """Arrange the exact twins of layer ``prev`` (interchangeable units) canonically: of all
    arrangements, the one whose consumer layer i, sorted by actual keys, is
    lexicographically smallest. Every symmetric copy sees the same set of candidates, so
    the choice is canonical. Past MAX_TWIN_ARRANGEMENTS candidates, twins are ordered by
    their outgoing columns instead (not guaranteed canonical; never met in trained nets)."""
    import itertools
    import math
    n = net.layers[prev].units
    count = math.prod(math.factorial(len(g)) for g in twins)
    if count > MAX_TWIN_ARRANGEMENTS:
        out = _out_rows(net, prev)
        perm = np.arange(n)
        for g in twins:
            perm[g] = g[np.lexsort(out[g].T[::-1])]
        best = perm
    else:
        best, best_flat = None, None
        for choice in itertools.product(*(itertools.permutations(g) for g in twins)):
            perm = np.arange(n)
            for g, c in zip(twins, choice):
                perm[g] = c
            _, flat = _sorted_consumer(net, i, perm)
            if best_flat is None or _lex_lt(flat, best_flat):
                best, best_flat = perm, flat
    net = permute_units(net, prev, perm=best)
    order, _ = _sorted_consumer(net, i, np.arange(n))
    if not (order == np.arange(len(order))).all():
        net = permute_units(net, i, perm=order)
    return net


def _lex_lt(a, b):
    d = np.flatnonzero(a != b)
    return bool(d.size) and a[d[0]] < b[d[0]]


def _pool_mode(net, i):
    pool, _ = _consumer(net, i)
    layer = net.layers[i]
    if pool is None or net.layers[pool].min_channels is None:
        return pool, np.zeros(layer.units, bool)
    return pool, net.layers[pool].min_channels


def canonicalize(net: BinaryNetwork) -> BinaryNetwork:
    r"""The canonical representative of ``net``'s class under hidden-unit permutations and
    sign reversals (docs/methods.md, "Canonical form of a binary network", [ours]).

    Input to output, for every hidden layer: (1) parity-normalise the thresholds
    (:func:`normalize_thresholds`); (2) gauge-fix each unit's sign by choosing, of
    ``(w, T, pool mode)`` and its reversal ``(-w, 1-T, other mode)``, the one whose key
    ``(T, mode, packed row)`` is lexicographically smaller; (3) sort the units by that key.
    Rows are keyed after the layer below is fixed, so the keys see canonical inputs.
    Exact twins (units with identical rows, thresholds and modes) are interchangeable but
    their outgoing columns are not: each layer's keys sort the entries of twin columns
    per pixel (so they ignore the twins' order), and the twins are then ordered by their
    outgoing columns once the consumer layer is canonical.

    Two networks are symmetric copies of each other iff their canonical forms are equal.
    The function is preserved exactly, and ``canonicalize`` is idempotent.
    """
    _check(net, "canonicalize")
    hidden = hidden_layers(net)
    twins_below: list = []  # twin groups of the previous hidden layer
    prev = None
    for i in hidden + [len(net.layers) - 1]:
        layer = net.layers[i]
        if layer.threshold is not None:
            fan, uniform = _fan_in(net, i)
            t = normalize_thresholds(layer.threshold, fan, uniform)
            if not np.array_equal(t, layer.threshold):
                layers = list(net.layers)
                layers[i] = _with_threshold(layer, t)
                net = net.with_layers(layers)
                layer = net.layers[i]
            pool, mode = _pool_mode(net, i)
            view = _input_view(net, i, layer.weights)
            words = K.pack_bits(_twin_invariant(view, twins_below))
            fwords = K.pack_bits(_twin_invariant(-view, twins_below))
            tf = flip_threshold(t, fan, uniform) if t.dtype == np.int64 else flip_threshold(t)
            fmode = ~mode if pool is not None else mode  # without a pool a flip toggles nothing
            flip = _lex_less(_keys(tf, fmode, fwords), _keys(t, mode, words))
            if not flippable(net, i):
                flip[:] = False
            net = permute_units(net, i, flip=flip)
            layer = net.layers[i]
            _, mode = _pool_mode(net, i)
            keys = _keys(layer.threshold, mode,
                         K.pack_bits(_twin_invariant(_input_view(net, i, layer.weights), twins_below)))
            net = permute_units(net, i, perm=np.lexsort(keys[::-1]))
        if prev is not None and twins_below:
            net = _resolve_twins(net, prev, i, twins_below)
        if i == len(net.layers) - 1:
            break
        layer = net.layers[i]
        _, mode = _pool_mode(net, i)
        twins_below = _twin_groups(layer.threshold, mode, layer.weights.reshape(layer.units, -1))
        prev = i
    return net


def _with_threshold(layer, t):
    if isinstance(layer, Dense):
        return Dense(layer.weights, threshold=t, bn=layer.bn)
    return Conv2d(layer.weights, threshold=t, stride=layer.stride, padding=layer.padding,
                  pad_value=layer.pad_value, bn=layer.bn)


def fingerprint(net: BinaryNetwork) -> str:
    """A stable SHA-256 hex digest of ``net``'s symmetry class: equal for every permuted
    and sign-reversed copy, different for different classes. Use it to deduplicate
    minima.

    It hashes :func:`.encoding.canonical_bytes` of :func:`canonicalize` (``net``): an
    encoding of its own (docs/methods.md, "Fingerprint"), independent of the network
    file format and of the kernels' packed layout, so neither can change a
    fingerprint. BatchNorm records, which do not change the function, are left out."""
    return hashlib.sha256(canonical_bytes(canonicalize(net))).hexdigest()


# ---------------------------------------------------------------------------- alignment
def _overlaps(ra, rb):
    """Integer overlaps ``ra @ rb.T`` of ±1 rows, by the packed kernel."""
    k = ra.shape[1]
    return K.binary_gemm(K.pack_bits(ra), K.pack_bits(rb), k).astype(np.int64)


def _out_rows(net, i):
    """Each unit's outgoing weights as a row (all positions of its channel, all consumers)."""
    _, j = _consumer(net, i)
    cols = _columns(net, j, net.layers[j].weights)
    n = net.layers[i].units
    return np.moveaxis(cols, -1, 0).reshape(n, -1)


def _assign(sim_signed, ta, tb, fan=None, uniform=True, can_flip=True, ma=None, mb=None,
            pooled=False):
    """Assignment maximising ``Σ|similarity|`` and the flips that make matched
    similarities positive. Ties (duplicate or opposite rows, common at small fan-in) are
    broken by a secondary objective that can never outweigh one unit of similarity: how
    close each pair's oriented thresholds and pool modes are. Units without the sign
    symmetry are matched on the signed similarity and never flipped."""
    n = sim_signed.shape[0]
    if tb.dtype == np.int64:  # compare thresholds in canonical (clipped, parity) form
        ta, tb = normalize_thresholds(ta, fan, uniform), normalize_thresholds(tb, fan, uniform)
    tbf = flip_threshold(tb, fan, uniform) if tb.dtype == np.int64 else flip_threshold(tb)
    ma = np.zeros(n, bool) if ma is None else ma
    mb = np.zeros(n, bool) if mb is None else mb

    def closeness(t_b, m_b):  # in [0, 1): 1 for an identical threshold and mode
        d = np.abs(ta[:, None].astype(np.float64) - t_b[None, :].astype(np.float64))
        d = np.where(np.isfinite(d), d, np.inf) + (ma[:, None] != m_b[None, :])
        return 0.5 / (1.0 + d)

    keep, flipped = closeness(tb, mb), closeness(tbf, ~mb if pooled else mb)
    if not can_flip:
        _, col = linear_sum_assignment(sim_signed * (n + 1.0) + keep, maximize=True)
        return col, np.zeros(n, bool)
    best_flip = (sim_signed < 0) | ((sim_signed == 0) & (flipped > keep))
    secondary = np.where(best_flip, flipped, keep)
    _, col = linear_sum_assignment(np.abs(sim_signed) * (n + 1.0) + secondary, maximize=True)
    return col, best_flip[np.arange(n), col]


def align(net: BinaryNetwork, reference: BinaryNetwork, method: str = "overlap",
          max_iter: int = 20, seed: int = 0, flips: bool = True) -> BinaryNetwork:
    r"""Permute and sign-reverse ``net``'s hidden units to match ``reference``.

    ``method="overlap"`` is the paper's procedure (Pittorino et al. 2022, §3 / Alg. 2 with
    docs/methods.md, "Alignment of binary networks" for binary weights): input to output, for each hidden layer, solve the
    assignment maximising ``Σ_i |w^a_i · w^b_{π(i)}|`` (incoming weights, with the layer
    below already aligned; ``scipy.optimize.linear_sum_assignment``), permute, and flip a
    unit when its overlap with the reference is negative.

    ``method="weights"`` [ours] starts there and runs coordinate descent over the layers
    (Ainsworth et al. 2023, "Git Re-Basin", weight matching): each layer's assignment
    maximises ``|in-overlap + out-overlap|`` with the neighbours held fixed, until no
    permutation changes (or ``max_iter`` sweeps).

    Conv filters are units, and at a conv → dense boundary a unit's outgoing weights are
    its whole channel block. Units feeding a conv padded with +1 (larq ``pad_values=1``)
    have no sign symmetry and are only permuted (:func:`flippable`). The function of
    ``net`` is preserved exactly. ``flips=False`` matches by permutations only, for
    models whose symmetry group has no sign reversals (e.g. a committee machine with
    output weights fixed to +1).

    A shuffled copy of ``reference`` aligns back to Hamming distance 0 whenever every
    hidden unit depends on its input. A *constant* unit (``T <= -n`` or ``T > n`` for
    fan-in ``n``) ignores its incoming weights, so no incoming-overlap criterion can orient
    it; the result is then another symmetric copy. Exact twins (identical rows and
    thresholds, common only at fan-ins below ~8) are arranged by trying every arrangement
    while there are at most MAX_ALIGN_ARRANGEMENTS, and by outgoing overlap beyond. Use
    :func:`canonicalize` to decide whether two networks are copies.
    """
    _check(net, "align")
    _check(reference, "align")
    if not net.same_architecture(reference):
        raise ValueError("align: the networks have different architectures:\n"
                         f"{reference.summary()}\nvs\n{net.summary()}")
    if method not in ("overlap", "weights"):
        raise ValueError(f"align: method must be 'overlap' or 'weights', got {method!r}")
    hidden = hidden_layers(net)
    twins, prev = [], None
    for i in hidden:
        la = reference.layers[i]
        fan, uniform = _fan_in(net, i)
        args = (la.threshold, fan, uniform, flips and flippable(net, i), _pool_mode(reference, i)[1],
                _pool_mode(net, i)[1], _consumer(net, i)[0] is not None)
        ra = _input_view(reference, i, la.weights).reshape(la.units, -1)
        if twins:
            # exact twins below are interchangeable: take the arrangement under which this
            # layer matches the reference best (a true copy is matched perfectly only by the
            # right one)
            net = permute_units(net, prev, perm=_best_twin_arrangement(net, i, twins, ra, args))
        lb = net.layers[i]
        rb = _input_view(net, i, lb.weights).reshape(lb.units, -1)
        col, flip = _assign(_overlaps(ra, rb), args[0], lb.threshold, *args[1:])
        net = permute_units(net, i, perm=col, flip=flip)
        lb = net.layers[i]
        twins = _twin_groups(normalize_thresholds(lb.threshold, fan, uniform), _pool_mode(net, i)[1],
                             lb.weights.reshape(lb.units, -1))
        prev = i
    net = _match_twins(net, reference, hidden, flips)
    if method == "weights":
        rng = np.random.default_rng(seed)
        for _ in range(max_iter):
            changed = False
            for i in rng.permutation(hidden):
                la, lb = reference.layers[i], net.layers[i]
                sim = _overlaps(_rows(la), _rows(lb)) + _overlaps(_out_rows(reference, i), _out_rows(net, i))
                fan, uniform = _fan_in(net, i)
                col, flip = _assign(sim, la.threshold, lb.threshold, fan, uniform, flips and flippable(net, i),
                                    _pool_mode(reference, i)[1], _pool_mode(net, i)[1],
                                    _consumer(net, i)[0] is not None)
                if (col != np.arange(len(col))).any() or flip.any():
                    net = permute_units(net, i, perm=col, flip=flip)
                    changed = True
            if not changed:
                break
    return net


def _gauge(net, i, flips=True):
    """Each unit's canonical orientation: (flip-to-canonical flags, canonical key rows).
    Units with equal keys are twins up to a sign flip (e.g. a constant +1 unit and the
    reversal of a constant -1 unit)."""
    layer = net.layers[i]
    fan, uniform = _fan_in(net, i)
    t = normalize_thresholds(layer.threshold, fan, uniform)
    pool, mode = _pool_mode(net, i)
    rows = _rows(layer)
    tf = flip_threshold(t, fan, uniform) if t.dtype == np.int64 else flip_threshold(t)
    fmode = ~mode if pool is not None else mode
    flip = _lex_less(_keys(tf, fmode, K.pack_bits(-rows)), _keys(t, mode, K.pack_bits(rows)))
    if not (flips and flippable(net, i)):
        flip[:] = False
    sign = np.where(flip, -1, 1)
    keys = np.concatenate([np.where(flip, tf, t).astype(np.float64)[:, None],
                           np.where(flip, fmode, mode)[:, None].astype(np.float64),
                           (rows * sign[:, None]).astype(np.float64)], axis=1)
    return flip, keys


MAX_ALIGN_ARRANGEMENTS = 720


def _best_twin_arrangement(net, i, twins, ra, args):
    """The arrangement of the producing layer's exact twins that maximises layer i's
    assignment objective (identity past MAX_ALIGN_ARRANGEMENTS: the twins are then
    settled by :func:`_match_twins`)."""
    import itertools
    import math
    n_prev = _input_view(net, i, net.layers[i].weights).shape[-1]
    if math.prod(math.factorial(len(g)) for g in twins) > MAX_ALIGN_ARRANGEMENTS:
        return np.arange(n_prev)
    lb = net.layers[i]
    view = _input_view(net, i, lb.weights)
    best, best_val = np.arange(n_prev), -np.inf
    for choice in itertools.product(*(itertools.permutations(g) for g in twins)):
        perm = np.arange(n_prev)
        for g, c in zip(twins, choice):
            perm[g] = c
        sim = _overlaps(ra, view[..., perm].reshape(lb.units, -1))
        col, flip = _assign(sim, args[0], lb.threshold, *args[1:])
        val = np.abs(sim[np.arange(len(col)), col]).sum()
        if val > best_val:
            best, best_val = perm, val
    return best


def _match_twins(net, reference, hidden, flips=True):
    """Twins (identical rows, thresholds and modes, up to a sign flip) are
    indistinguishable by incoming weights; reassign them within each group by outgoing
    overlap with the reference, from the output down (each consumer is then already
    aligned). A twin placed at position k takes the orientation chosen there."""
    for i in reversed(hidden):
        layer = net.layers[i]
        flip, keys = _gauge(net, i, flips)
        _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
        groups = [np.flatnonzero(inverse.ravel() == k) for k in np.flatnonzero(counts > 1)]
        if not groups:
            continue
        out_a, out_b = _out_rows(reference, i), _out_rows(net, i)
        perm = np.arange(layer.units)
        reverse = np.zeros(layer.units, bool)
        for g in groups:
            # b's twin j placed at position k is reversed iff its gauge differs from k's
            rel = np.where(flip[g][None, :] != flip[g][:, None], -1, 1)
            sim = (out_a[g].astype(np.int64) @ out_b[g].astype(np.int64).T) * rel
            _, col = linear_sum_assignment(sim, maximize=True)
            perm[g] = g[col]
            reverse[g] = rel[np.arange(len(g)), col] < 0
        net = permute_units(net, i, perm=perm, flip=reverse)
    return net


def _check(net, what):
    if not isinstance(net, BinaryNetwork):
        kind = type(net).__name__
        hint = (" Freeze a torch binary model first with bnn_toroid.BinaryNetwork.from_torch(model)."
                if hasattr(net, "parameters") else "")
        raise TypeError(f"{what}: expected a frozen BinaryNetwork, got {kind}.{hint}")
