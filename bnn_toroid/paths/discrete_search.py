r"""Connectivity search: the order of moves with the lowest barrier (docs/methods.md, "Connectivity search", [ours]).

Pittorino et al. ("Deep Networks on Toroids", ICML 2022, §4) connect aligned binary
networks by flipping their differing weights in a *random* order and note that optimising
the order was too expensive. Here it is optimised. A path is an order of the elementary
moves of :mod:`bnn_toroid.paths.moves` (plus, optionally, *detours*), and its barrier is

.. math:: B = \max_{t = 0..T} E_{\text{train}}(\theta_t),

the highest train error after **every** move (``θ_0 = a``, ``θ_T = b``).

Search methods:

- ``"greedy"``: at each step evaluate ``candidates`` random remaining moves (all of them if
  fewer remain) and apply the one with the lowest error (ties broken at random).
- ``"beam"``: keep ``beam_width`` partial paths ranked by (running max error, current
  error); each step expands every path by ``candidates`` random moves.
- ``"anneal"``: simulated annealing over orders, started from the greedy (default) or a
  random order. Proposals swap two moves or rotate a block by one position, within a
  window (``window`` moves, default ``max(4, min(32, T/50))``; one proposal in twenty
  spans any distance). Energy ``U = B + λ·Ē`` (``Ē`` the mean error along the path, ``λ =
  tie_weight``, default 0.05: it breaks the plateaus of ``B``, which most proposals leave
  unchanged); Metropolis acceptance ``min(1, exp(−ΔU / τ_s))`` with the geometric
  schedule ``τ_s = τ_0 (τ_1/τ_0)^{s/(S−1)}``, ``τ_0 = 1/N``, ``τ_1 = 0.02/N`` by default
  (``N`` samples: ``1/N`` is one sample's error). The best order seen is returned.

**Detours** (``detours=k``, greedy, and anneal started from greedy): the candidates of a
step also include flipping a weight where a and b *agree* (a quarter of ``candidates``)
and flipping back every outstanding detour; at most ``k`` detours are outstanding, a
position is detoured at most once, at most as many detours as required moves are opened,
and a new detour wins only when strictly better than every other candidate. Once the
required moves are done only flip-backs remain, so the path always ends exactly at b.

**Incremental evaluation** (the point of this module): for dense networks of two or more
layers the candidates are scored by :mod:`bnn_toroid.kernels.incremental` on cached
pre-activations (O(N) per candidate plus the samples whose outputs change) instead of a
full forward pass. Conv networks, single-layer networks and pool moves fall back to full
batched re-evaluation (one :class:`~bnn_toroid.network.NetworkStack` call per chunk of
candidates); ``SearchPath.note`` says which was used.
"""
from __future__ import annotations

import inspect
import math
import time

import numpy as np

from .. import kernels as K
from ..geometry.binary import distance
from ..kernels import incremental as KI
from ..network import BinaryNetwork, NetworkStack
from ..network.layers import Dense
from ._common import aligned_endpoint, point_ks
from .base import Barrier, Path
from .moves import (DEFAULT_CHUNK, FLIP, MOVE_DTYPE, POOL, _as_moves,
                    _check_moves, _check_net, _ParamWalker, _stack, apply_moves, as_xy, check_pair,
                    errors_along, moves_between)

__all__ = ["search", "SearchPath", "IncrementalEvaluator", "FullEvaluator", "make_evaluator",
           "METHODS"]

METHODS = ("greedy", "beam", "anneal")


def _labels(y, n_classes):
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"labels: expected integer class indices, got dtype {y.dtype}")
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"labels: values must lie in [0, {n_classes}), got [{y.min()}, {y.max()}]")
    return np.ascontiguousarray(y, np.int64)


# ---------------------------------------------------------------------------------------
# Evaluators: the error of the current network and of candidate moves
# ---------------------------------------------------------------------------------------

class IncrementalEvaluator:
    r"""Cached forward state of a dense binary network on a data set, updated move by move
    (:mod:`bnn_toroid.kernels.incremental`; docs/methods.md, "Incremental evaluation").

    Holds every layer's pre-activations ``H_l`` (N, units) and ±1 outputs, the predictions
    and per-sample correctness. :meth:`evaluate` scores candidate moves on scratch buffers
    (the state is not copied); :meth:`commit` applies moves. Exact: after any sequence of
    commits the state equals a fresh forward pass of the moved network (for a first layer
    on real input this holds for integer-valued inputs; other real inputs are updated in
    float64 and may differ from a fresh BLAS sum by rounding).

    Memory: ``≈ N · (9 Σ_l u_l + k_0 · size(x))`` bytes (int32 ``H`` in two layouts, int8
    outputs; float64 ``H`` for a first layer on real input), e.g. 280 MB for
    784-1001-1001-1001-10 on N = 10,000 binarised samples.

    Args:
        net: a :class:`BinaryNetwork` of ≥ 2 :class:`Dense` layers.
        data: a Dataset or ``(x, y)``.

    Raises:
        NotImplementedError: conv/pool layers or a single layer (use
            :class:`FullEvaluator`).
    """

    incremental = True

    def __init__(self, net: BinaryNetwork, data):
        net = _check_net(net, "net")
        if not all(isinstance(l, Dense) for l in net.layers) or len(net.layers) < 2:
            raise NotImplementedError("IncrementalEvaluator supports dense networks of at least two "
                                      "layers; use FullEvaluator for conv or single-layer networks")
        x, y = as_xy(data)
        self.net = net
        n = x.shape[0]
        layers = net.layers
        big_l = len(layers) - 1
        real = not net.binarize_input
        xin = net.prepare_input(x)
        pre = net.preactivations(x)
        y = _labels(y, net.num_classes)
        if real:
            x0 = np.asarray(xin, np.float64).reshape(n, -1)
        else:
            # features in NHWC order, as the first layer's weights
            x0 = K.unpack_bits(xin, net.layer_input_shape(0)[-1]).reshape(n, -1)
        x0t = np.ascontiguousarray(x0.T)
        hdt = np.float64 if real else np.int32
        h0 = np.ascontiguousarray(pre[0], hdt)
        h0t = np.ascontiguousarray(h0.T)
        t0 = layers[0].threshold.astype(np.float64 if real else np.int64)
        units = np.array([l.units for l in layers], np.int64)
        fanin = np.array([l.weights.shape[1] for l in layers], np.int64)
        sizes = units * fanin
        woff = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        w = np.concatenate([l.weights.reshape(-1) for l in layers]).astype(np.int8)
        wt = np.concatenate([np.ascontiguousarray(l.weights.T).reshape(-1) for l in layers]).astype(np.int8)
        hsz = np.where(np.arange(big_l + 1) >= 1, units * n, 0)
        hoff = np.concatenate([[0], np.cumsum(hsz)[:-1]]).astype(np.int64)
        h = np.empty(int(hsz.sum()), np.int32)
        ht = np.zeros(int(hsz.sum()), np.int32)
        for l in range(1, big_l + 1):
            h[hoff[l]:hoff[l] + units[l] * n] = pre[l].reshape(-1)
            if l < big_l:
                ht[hoff[l]:hoff[l] + units[l] * n] = np.ascontiguousarray(pre[l].T).reshape(-1)
        tsz = np.where((np.arange(big_l + 1) >= 1) & (np.arange(big_l + 1) < big_l), units, 0)
        toff = np.concatenate([[0], np.cumsum(tsz)[:-1]]).astype(np.int64)
        t = np.zeros(max(1, int(tsz.sum())), np.int64)
        for l in range(1, big_l):
            t[toff[l]:toff[l] + units[l]] = layers[l].threshold
        asz = np.where(np.arange(big_l + 1) < big_l, units * n, 0)
        aoff = np.concatenate([[0], np.cumsum(asz)[:-1]]).astype(np.int64)
        at = np.empty(int(asz.sum()), np.int8)
        for l in range(big_l):
            a_l = np.where(pre[l] >= layers[l].threshold, 1, -1).astype(np.int8)
            at[aoff[l]:aoff[l] + units[l] * n] = np.ascontiguousarray(a_l.T).reshape(-1)
        scale = layers[-1].out_scale.astype(np.float64).copy()
        bias = layers[-1].out_bias.astype(np.float64).copy()
        logits = pre[-1].astype(np.float64) * scale + bias
        pred = logits.argmax(axis=1).astype(np.int64)
        correct = (pred == y).astype(np.uint8)
        self._state = [x0t, h0, h0t, t0, w, wt, h, ht, t, at, units, fanin, woff, hoff, toff, aoff,
                       scale, bias, y, pred, correct]
        self.wrong = int(n - int(correct.sum()))
        self.n = n

    # indices of the arrays that change (copied by copy()/load()); the rest are shared
    _MUTABLE = (1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 17, 19, 20)

    @property
    def error(self) -> float:
        """Train error of the current network (fraction misclassified)."""
        return self.wrong / self.n

    def _check(self, moves):
        moves = _as_moves(moves)
        if moves.size and (moves["kind"] == POOL).any():
            raise ValueError("pool moves need a conv network (FullEvaluator)")
        _check_moves(self.net, moves)
        return moves

    def evaluate(self, moves, check: bool = True) -> np.ndarray:
        r"""Number of misclassified samples after each candidate move applied alone,
        ``W(θ ⊕ m)``, int64 (M,). The state is unchanged. ``check=False`` skips the
        validation of the moves (for callers that built them with :func:`moves_between`)."""
        if check:
            moves = self._check(moves)
        return self.wrong + KI.evaluate_moves(moves, tuple(self._state))

    def commit(self, moves, check: bool = True) -> np.ndarray:
        """Apply moves in order; returns the number misclassified after each, int64 (M,)."""
        if check:
            moves = self._check(moves)
        out = KI.commit_moves(moves, tuple(self._state), self.wrong)
        if len(out):
            self.wrong = int(out[-1])
        return out

    def copy(self) -> "IncrementalEvaluator":
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new._state = list(self._state)
        for i in self._MUTABLE:
            new._state[i] = self._state[i].copy()
        return new

    def load(self, other: "IncrementalEvaluator"):
        """Overwrite this state with ``other``'s (same network and data), in place."""
        for i in self._MUTABLE:
            np.copyto(self._state[i], other._state[i])
        self.wrong = other.wrong

    def preactivations(self) -> list:
        """Current pre-activations per layer, as ``BinaryNetwork.preactivations`` returns
        them (int64, float64 for a first layer on real input)."""
        s = self._state
        units, hoff, n = s[10], s[13], self.n
        out = [s[1].astype(np.float64 if s[1].dtype.kind == "f" else np.int64)]
        for l in range(1, len(units)):
            out.append(s[6][hoff[l]:hoff[l] + units[l] * n].reshape(n, units[l]).astype(np.int64))
        return out

    def network(self) -> BinaryNetwork:
        """The current network."""
        s = self._state
        units, fanin, woff, toff = s[10], s[11], s[12], s[14]
        layers = []
        for l, old in enumerate(self.net.layers):
            w = s[4][woff[l]:woff[l] + units[l] * fanin[l]].reshape(units[l], fanin[l])
            if l == len(units) - 1:
                layers.append(Dense(w, out_scale=s[16], out_bias=s[17]))
            elif l == 0:
                t0 = s[3]
                if old.threshold.dtype.kind != "f" and np.array_equal(t0, np.round(t0)):
                    t0 = t0.astype(np.int64)
                layers.append(Dense(w, threshold=t0))
            else:
                layers.append(Dense(w, threshold=s[8][toff[l]:toff[l] + units[l]]))
        return self.net.with_layers(layers)


class FullEvaluator:
    """Same interface as :class:`IncrementalEvaluator`, by full re-evaluation: each batch of
    ``chunk`` candidates is one :class:`~bnn_toroid.network.NetworkStack` call (parameters
    built on the packed words, a flip is one bit XOR). Any architecture, any move kind."""

    incremental = False

    def __init__(self, net: BinaryNetwork, data, chunk: int = DEFAULT_CHUNK, batch_size: int = 4096):
        self.net = _check_net(net, "net")
        self.x, self.y = as_xy(data)
        _labels(self.y, net.num_classes)
        self.n = self.x.shape[0]
        self.chunk = max(1, int(chunk))
        self.batch_size = batch_size
        self._walker = _ParamWalker(net)
        self.wrong = self._count([self._walker.params])[0]

    @property
    def error(self) -> float:
        return self.wrong / self.n

    def _count(self, params_list):
        e = NetworkStack(self.net, _stack(params_list)).errors(self.x, self.y, self.batch_size)
        return np.rint(e * self.n).astype(np.int64)

    def evaluate(self, moves, check: bool = True) -> np.ndarray:
        moves = _as_moves(moves)
        if check:
            _check_moves(self.net, moves)
        out = np.empty(len(moves), np.int64)
        for lo in range(0, len(moves), self.chunk):
            snaps = []
            for m in moves[lo:lo + self.chunk]:
                w = _ParamWalker.__new__(_ParamWalker)
                w.net, w._locate = self.net, self._walker._locate
                w.params = self._walker.snapshot()
                w.apply(m[None])
                snaps.append(w.params)
            out[lo:lo + len(snaps)] = self._count(snaps)
        return out

    def commit(self, moves, check: bool = True) -> np.ndarray:
        moves = _as_moves(moves)
        if check:
            _check_moves(self.net, moves)
        out = np.empty(len(moves), np.int64)
        for i in range(len(moves)):
            self._walker.apply(moves[i:i + 1])
            out[i] = self._count([self._walker.params])[0]
        if len(out):
            self.wrong = int(out[-1])
        return out

    def copy(self) -> "FullEvaluator":
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        w = _ParamWalker.__new__(_ParamWalker)
        w.net, w._locate, w.params = self.net, self._walker._locate, self._walker.snapshot()
        new._walker = w
        return new

    def load(self, other: "FullEvaluator"):
        self._walker.params = other._walker.snapshot()
        self.wrong = other.wrong


def make_evaluator(net: BinaryNetwork, data, incremental: bool = True, chunk: int = DEFAULT_CHUNK):
    """:class:`IncrementalEvaluator` when the network supports it and ``incremental``, else
    :class:`FullEvaluator`."""
    if incremental and all(isinstance(l, Dense) for l in net.layers) and len(net.layers) >= 2:
        return IncrementalEvaluator(net, data)
    return FullEvaluator(net, data, chunk=chunk)


# ---------------------------------------------------------------------------------------
# The path
# ---------------------------------------------------------------------------------------

class SearchPath(Path):
    r"""A path found by :func:`search`: ``order`` (the moves, a :data:`MOVE_DTYPE` array,
    detours included) applied to ``a`` ends exactly at ``b``.

    Attributes:
        trace: train error on the search data after every move, ``trace[t]`` after ``t``
            moves (``len(order) + 1`` values); ``trace_barrier`` its :class:`Barrier`.
        fractions: ``k / len(order)`` at the ``points`` evenly spaced points (move axis).
        hamming: Hamming distance of the endpoints (weights only, docs/methods.md, "Hamming distance").
        n_moves: ``len(order)``; ``n_detours``: detour flips (each counted twice in
            ``order``: out and back).
        evaluations, seconds, evals_per_second: candidate moves scored by the search,
            its wall time and rate. ``note``: the evaluator used.
    """

    def __init__(self, a, b, order, trace_wrong, n_samples, method, points, evaluations,
                 seconds, note, n_detours=0):
        self.a, self.b = a, b
        self.order = order
        self.n_moves = len(order)
        self.trace = np.asarray(trace_wrong, np.float64) / n_samples
        self.method = method
        self.points = int(points)
        self._ks = point_ks(self.n_moves, self.points)
        self.fractions = self._ks / max(self.n_moves, 1)
        self.hamming = distance(a, b)
        self.evaluations = int(evaluations)
        self.seconds = float(seconds)
        self.evals_per_second = self.evaluations / self.seconds if self.seconds > 0 else float("nan")
        self.note = note
        self.n_detours = int(n_detours)
        self.bn, self.bn_data = "frozen", None

    def __repr__(self):
        # two different barriers exist: label which one is shown
        return (f"SearchPath(method={self.method!r}, moves={self.n_moves}, detours={self.n_detours}, "
                f"trace_max_error={self.trace.max():.4f} (after every move, on the search data), "
                f"points={self.points} (what barrier(data) evaluates), "
                f"evaluations={self.evaluations}, {self.evals_per_second:.0f} evals/s)")

    @property
    def trace_barrier(self) -> Barrier:
        """:class:`Barrier` of :attr:`trace` (every move, on the search data)."""
        return Barrier.from_errors(self.trace)

    def point(self, i: int) -> BinaryNetwork:
        """The network after the first ``k_i`` moves of :attr:`order` (``a`` and ``b``
        themselves at the ends)."""
        j = self._index(i)
        if j == 0 and self._ks[0] == 0:
            return self.a
        if j == len(self) - 1:
            return self.b
        return apply_moves(self.a, self.order[:self._ks[j]])

    def errors(self, data, every_move: bool = False) -> np.ndarray:
        r"""Train error ``E(θ_k)`` at the ``points`` evenly spaced points, or after every move
        (``len(order) + 1`` values) with ``every_move=True``; full batched evaluation at the
        points, an incremental replay (when supported) for every move. With
        ``bn="recompute"`` the points' thresholds are re-estimated first (points only)."""
        if self.bn == "recompute":
            if every_move:
                raise ValueError("SearchPath.errors: every_move=True is not available with "
                                 "bn='recompute' (each point is recalibrated on its own)")
            from .recompute import errors_recomputed
            stats = data if self.bn_data is None else self.bn_data
            return errors_recomputed(self.a, self.b, self.order, self._ks, data, stats)
        if every_move:
            ev = make_evaluator(self.a, data)
            return np.concatenate([[ev.wrong], ev.commit(self.order)]) / ev.n
        return errors_along(self.a, self.order, self._ks, data)

    def barrier(self, data=None, every_move: bool = False, *, errors=None) -> Barrier:
        """:class:`Barrier` of :meth:`errors` on ``data``: at the ``points`` evenly spaced
        points (its repr shows ``points``), or after every move with ``every_move=True``;
        or of ``errors``, a curve :meth:`errors` already returned (not evaluated again).
        The repr of the path shows another number, ``trace_max_error``: the maximum of
        :attr:`trace`, after every move on the search data; the two agree only when
        ``data`` is the search data and ``every_move=True``."""
        if errors is None and data is not None:
            return Barrier.from_errors(self.errors(data, every_move=every_move))
        n = self.n_moves + 1 if every_move else len(self)
        return Barrier.from_errors(self._curve(data, errors, n, "barrier"))


# ---------------------------------------------------------------------------------------
# The search
# ---------------------------------------------------------------------------------------

class _Detours:
    """Weight positions where a and b agree, sampled for detours."""

    def __init__(self, a, b, k, budget, rng):
        self.k, self.budget, self.rng = int(k), int(budget), rng
        self.layers = [i for i in a.weight_layers()]
        sizes = np.array([a.layers[i].weights.size for i in self.layers], np.float64)
        self.p = sizes / sizes.sum()
        self.agree = {i: (a.layers[i].weights.reshape(-1) == b.layers[i].weights.reshape(-1))
                      for i in self.layers}
        self.open = {}     # (layer, index) -> record
        self.used = set()
        self.opened = 0

    def can_open(self):
        return self.k > 0 and len(self.open) < self.k and self.opened < self.budget

    def sample(self, n):
        out = []
        for _ in range(8 * n):
            if len(out) == n:
                break
            li = self.layers[self.rng.choice(len(self.layers), p=self.p)]
            idx = int(self.rng.integers(self.agree[li].size))
            if self.agree[li][idx] and (li, idx) not in self.used:
                r = np.zeros(1, MOVE_DTYPE)
                r["kind"], r["layer"], r["index"] = FLIP, li, idx
                if not any(x["layer"][0] == li and x["index"][0] == idx for x in out):
                    out.append(r)
        return np.concatenate(out) if out else np.zeros(0, MOVE_DTYPE)

    def closes(self):
        return np.concatenate(list(self.open.values())) if self.open else np.zeros(0, MOVE_DTYPE)

    def take(self, rec, is_new):
        key = (int(rec["layer"]), int(rec["index"]))
        if is_new:
            self.open[key] = rec[None].copy()
            self.used.add(key)
            self.opened += 1
        else:
            self.open.pop(key, None)


def _choose(rng, n, c):
    """``c`` distinct indices out of ``n`` (all of them when ``c >= n``)."""
    if c >= n:
        return np.arange(n)
    return rng.choice(n, size=c, replace=False, shuffle=False)


def _greedy(ev, req, rng, candidates, detours, max_steps, bar):
    n_req = len(req)
    remaining = np.arange(n_req)
    n_rem = n_req
    order, trace = [], [ev.wrong]
    evals = 0
    steps = 0
    det = detours
    while n_rem > 0 or (det is not None and det.open):
        if max_steps is not None and steps >= max_steps:
            break
        pick = _choose(rng, n_rem, candidates)
        cand = req[remaining[pick]]
        closes = det.closes() if det is not None else np.zeros(0, MOVE_DTYPE)
        news = det.sample(max(1, candidates // 4)) if (det is not None and n_rem > 0 and det.can_open()) \
            else np.zeros(0, MOVE_DTYPE)
        allm = np.concatenate([cand, closes, news])
        wrong = ev.evaluate(allm, check=False)
        evals += len(allm)
        is_new = np.zeros(len(allm), bool)
        is_new[len(cand) + len(closes):] = True
        key = np.lexsort((rng.random(len(allm)), is_new, wrong))
        best = int(key[0])
        rec = allm[best]
        ev.commit(allm[best:best + 1], check=False)
        order.append(rec)
        trace.append(ev.wrong)
        if best < len(cand):
            k = pick[best]
            remaining[k] = remaining[n_rem - 1]
            n_rem -= 1
        else:
            det.take(rec, bool(is_new[best]))
        steps += 1
        if bar is not None:
            bar.update(1)
    rest = [req[remaining[:n_rem]][rng.permutation(n_rem)]]
    if det is not None and det.open:
        rest.append(det.closes()[rng.permutation(len(det.open))])
    rest = np.concatenate(rest)
    if len(rest):
        trace.extend(ev.commit(rest, check=False).tolist())
        order.extend(list(rest))
    n_det = det.opened if det is not None else 0
    return (np.array(order, MOVE_DTYPE) if order else np.zeros(0, MOVE_DTYPE)), trace, evals, n_det


def _beam(ev, req, rng, candidates, width, max_steps, bar):
    n_req = len(req)
    keys = rng.integers(0, 2 ** 63, n_req, dtype=np.int64)
    beam = [dict(ev=ev, rem=np.arange(n_req), order=[], trace=[ev.wrong], runmax=ev.wrong, hash=0)]
    evals = 0
    steps = min(n_req, max_steps) if max_steps is not None else n_req
    for _ in range(steps):
        children = []
        for bi, e in enumerate(beam):
            pick = _choose(rng, len(e["rem"]), candidates)
            wrong = e["ev"].evaluate(req[e["rem"][pick]], check=False)
            evals += len(pick)
            for k, wv in zip(pick, wrong):
                children.append((max(e["runmax"], int(wv)), int(wv), rng.random(), bi, int(k)))
        children.sort()
        chosen, seen = [], set()
        for c in children:
            h = beam[c[3]]["hash"] ^ int(keys[beam[c[3]]["rem"][c[4]]])
            if h in seen:
                continue  # the same set of moves reached by another order: one state suffices
            seen.add(h)
            chosen.append((c, h))
            if len(chosen) == width:
                break
        uses = {}
        for c, _ in chosen:
            uses[c[3]] = uses.get(c[3], 0) + 1
        new = []
        for c, h in chosen:
            parent = beam[c[3]]
            uses[c[3]] -= 1
            child_ev = parent["ev"] if uses[c[3]] == 0 else parent["ev"].copy()
            move = req[parent["rem"][c[4]]]
            child_ev.commit(move[None], check=False)
            new.append(dict(ev=child_ev, rem=np.delete(parent["rem"], c[4]),
                            order=parent["order"] + [parent["rem"][c[4]]],
                            trace=parent["trace"] + [child_ev.wrong], runmax=c[0], hash=h))
        beam = new
        if bar is not None:
            bar.update(1)
    best = min(beam, key=lambda e: (e["runmax"], e["trace"][-1]))
    idx = np.array(best["order"], np.int64)
    rest = best["rem"][rng.permutation(len(best["rem"]))]
    trace = list(best["trace"])
    if len(rest):
        trace.extend(best["ev"].commit(req[rest], check=False).tolist())
    return req[np.concatenate([idx, rest]).astype(np.int64)], trace, evals


def _anneal(ev0, order, trace, rng, steps, t_start, t_end, window, tie_weight, bar):
    """Simulated annealing over the order (module docstring). ``ev0`` is the state at
    position 0 and is left there."""
    n = len(order)
    e = np.asarray(trace, np.float64).copy()
    if n < 2 or steps <= 0:
        return order, trace, 0
    n_s = ev0.n
    state_bytes = sum(ev0._state[i].nbytes for i in ev0._MUTABLE) if hasattr(ev0, "_state") else 1 << 20
    # Checkpoints (state copies) every c positions bound the replay needed to reach a
    # proposal's first position: spacing ~sqrt(n)/2, within a 256 MB budget. They are
    # made lazily and dropped when an accepted proposal changes the states they hold.
    c = max(int(math.sqrt(n) / 2), int(math.ceil(n * state_bytes / (256 << 20))), 1)
    valid = {0: ev0.copy()}
    work = ev0.copy()
    cur = 0

    def reach(p):
        nonlocal cur
        base = (p // c) * c
        while base not in valid:
            base -= c
        if not base <= cur <= p:
            work.load(valid[base])
            cur = base
        nxt = (cur // c + 1) * c
        while nxt <= p:
            work.commit(order[cur:nxt], check=False)
            cur = nxt
            if nxt not in valid:
                valid[nxt] = work.copy()
            nxt += c
        if cur < p:
            work.commit(order[cur:p], check=False)
            cur = p

    def energy(v):
        return (v.max() + tie_weight * v.mean()) / n_s

    u = energy(e)
    best_u, best_order, best_e = u, order.copy(), e.copy()
    evals = 0
    for s in range(steps):
        tau = t_start * (t_end / t_start) ** (s / max(steps - 1, 1))
        p = int(rng.integers(0, n - 1))
        span = int(rng.integers(1, window + 1)) if rng.random() >= 0.05 else int(rng.integers(1, n - p))
        q = min(n - 1, p + span)
        seg = order[p:q + 1].copy()
        r = rng.random()
        if r < 0.5:
            seg[[0, -1]] = seg[[-1, 0]]
        elif r < 0.75:
            seg = np.roll(seg, 1)
        else:
            seg = np.roll(seg, -1)
        reach(p)
        new_w = work.commit(seg, check=False)
        evals += q - p + 1
        # after the whole segment the same moves are applied as before: the state at q + 1
        # is valid under both orders, whatever the decision
        cur = q + 1
        cand = e.copy()
        cand[p + 1:q + 2] = new_w
        u_new = energy(cand)
        if u_new <= u or rng.random() < math.exp(-(u_new - u) / tau):
            order[p:q + 1] = seg
            e = cand
            u = u_new
            for k in range((p // c + 1) * c, q + 1, c):
                valid.pop(k, None)
            if u < best_u:
                best_u, best_order, best_e = u, order.copy(), e.copy()
        if bar is not None:
            bar.update(1)
    return best_order, best_e.astype(np.int64).tolist(), evals


def _check_args(method, start, candidates, beam_width, detours, points, max_steps):
    if method not in METHODS:
        raise ValueError(f"search: unknown method {method!r}; expected one of {METHODS}")
    if start not in ("greedy", "random"):
        raise ValueError(f"search: start must be 'greedy' or 'random', got {start!r}")
    for name, v, lo in (("candidates", candidates, 1), ("beam_width", beam_width, 1),
                        ("detours", detours, 0), ("points", points, 2)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"search: {name} must be an integer >= {lo}, got {v!r}")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer))
                                  or max_steps < 0):
        raise ValueError(f"search: max_steps must be None or an integer >= 0, got {max_steps!r}")
    if detours and (method == "beam" or (method == "anneal" and start == "random")):
        raise ValueError("search: detours are supported by method='greedy' and by 'anneal' "
                         "started from greedy, not by 'beam' or a random start")


def check_options(**options):
    """Check :func:`search` options without searching (a sweep checks its config up
    front): the ``ValueError`` that :func:`search` would raise for them."""
    sig = inspect.signature(search).parameters
    args = {n: sig[n].default for n in ("method", "start", "candidates", "beam_width", "detours",
                                        "points", "max_steps")}
    args.update({k: v for k, v in options.items() if k in args})
    _check_args(**args)
    if "bn" in options:
        from .recompute import check_bn
        check_bn(options["bn"], "search")


def search(a, b, data, method: str = "greedy", candidates: int = 64, beam_width: int = 4,
           detours: int = 0, seed: int = 0, align=True, max_steps=None, quiet: bool = False,
           points: int = 21, start: str = "greedy", anneal_steps=None, t_start=None, t_end=None,
           window=None, tie_weight: float = 0.05, incremental: bool = True,
           chunk: int = DEFAULT_CHUNK, bn: str = "frozen", bn_data=None) -> SearchPath:
    r"""Search for an order of the moves from ``a`` to ``b`` with a low barrier
    ``B = max_t E_train(θ_t)`` (every move counted; module docstring, docs/methods.md, "Connectivity search" [ours]).

    Args:
        a, b: frozen :class:`BinaryNetwork` s of one architecture (a torch model raises a
            TypeError naming ``BinaryNetwork.from_torch``).
        data: the training set the barrier is measured on (Dataset or ``(x, y)``).
        method: ``"greedy"``, ``"beam"`` or ``"anneal"``.
        candidates: random remaining moves scored per step (per beam entry).
        beam_width: partial paths kept by ``"beam"``.
        detours: at most this many outstanding detours (greedy; anneal from greedy).
        seed: seeds every random choice; equal seeds give equal paths.
        align: ``True`` aligns ``b`` to ``a`` first
            (:func:`bnn_toroid.symmetry.binary.align`, method ``"overlap"``), a string
            picks the alignment method, ``False`` uses ``b`` as given.
        max_steps: greedy/beam (and anneal's greedy start): optimise at most this many
            moves; the rest follow in a random order (still evaluated, so the trace and
            barrier stay honest).
        points: points of :meth:`SearchPath.errors`.
        start, anneal_steps, t_start, t_end, window, tie_weight: annealing: initial order
            (``"greedy"`` or ``"random"``), proposals (default ``10 · T``), temperatures,
            proposal window and plateau tie-breaker λ (module docstring).
        incremental: use the incremental evaluator when the network allows it.
        chunk: candidates per NetworkStack call for the full evaluator.
        bn: ``"frozen"``, or ``"recompute"``: the order is searched with the thresholds
            the moves give (the incremental evaluator needs them fixed), and
            :meth:`SearchPath.errors` then evaluates its points with thresholds
            re-estimated on ``bn_data`` (default: the data passed to ``errors``), as
            :func:`~bnn_toroid.paths.binary.random_flip` does.
        quiet: no progress bar (one is drawn only when stderr is a terminal).

    Returns:
        a :class:`SearchPath`.
    """
    from ..network.residual import ResidualBinaryNetwork
    if isinstance(a, ResidualBinaryNetwork) or isinstance(b, ResidualBinaryNetwork):
        # residual binary networks: greedy search with full re-evaluation (paths/residual.py)
        if method != "greedy":
            raise ValueError(f"search: residual binary networks support method='greedy' only, "
                             f"got {method!r}")
        from .residual import search as _residual_search
        return _residual_search(a, b, data, candidates=candidates, seed=seed, align=align,
                                max_steps=max_steps, points=points)
    t0 = time.perf_counter()
    _check_args(method=method, start=start, candidates=candidates, beam_width=beam_width,
                detours=detours, points=points, max_steps=max_steps)
    from .recompute import check_bn
    bn = check_bn(bn, "search")
    a, b = check_pair(a, b)
    x, y = as_xy(data)
    b = aligned_endpoint(a, b, align)
    req = moves_between(a, b)
    rng = np.random.default_rng(seed)
    ev = make_evaluator(a, (x, y), incremental=incremental, chunk=chunk)
    note = ("incremental evaluation (kernels.incremental)" if ev.incremental else
            "full batched re-evaluation (NetworkStack): the incremental evaluator supports "
            "dense networks of >= 2 layers only")
    from .._progress import bar as progress
    bar = progress(len(req), f"search[{method}]", quiet, leave=False)
    n_det = 0
    try:
        if method == "beam":
            order, trace, evals = _beam(ev, req, rng, candidates, beam_width, max_steps, bar)
        elif method == "greedy" or start == "greedy":
            ev0 = ev.copy() if method == "anneal" else None
            det = _Detours(a, b, detours, len(req), rng) if detours else None
            order, trace, evals, n_det = _greedy(ev, req, rng, candidates, det, max_steps, bar)
        else:
            ev0 = ev.copy()
            order = req[rng.permutation(len(req))]
            trace = [ev.wrong] + ev.commit(order).tolist()
            evals = 0
        if method == "anneal":
            steps = 10 * len(order) if anneal_steps is None else int(anneal_steps)
            ts = 1.0 / ev.n if t_start is None else float(t_start)
            te = 0.02 / ev.n if t_end is None else float(t_end)
            if not (ts > 0 and te > 0):
                raise ValueError("search: t_start and t_end must be > 0")
            win = max(4, min(32, len(order) // 50)) if window is None else max(1, int(window))
            bar.reset(total=steps)
            order, trace, ev_a = _anneal(ev0, order.copy(), trace, rng, steps, ts, te, win,
                                         float(tie_weight), bar)
            evals += ev_a
    finally:
        bar.close()
    path = SearchPath(a, b, order, trace, ev.n, method, points, evals, time.perf_counter() - t0,
                      note, n_det)
    path.bn, path.bn_data = bn, bn_data
    return path
