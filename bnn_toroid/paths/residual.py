r"""Paths between residual binary networks over their binary weights (docs/methods.md,
"Residual binary networks"; Pittorino et al., ICML 2022, §4).

A path flips, one at a time, the binary weights where the (aligned) endpoints differ;
the real-valued parameters must be equal at both ends (after alignment), since a flip
path moves binary weights only. :func:`random_flip` takes random orders;
:func:`search` picks each next flip greedily among ``candidates`` random remaining
ones, the one with the lowest train error. Every network on a path is evaluated by full
re-evaluation through :meth:`ResidualBinaryNetwork.stack_logits` (S networks per call);
there is no incremental evaluation for residual networks.
"""
from __future__ import annotations

import numpy as np

from ..landscape.residual import check_data, distance, errors_of
from ..symmetry import residual_binary as _sym
from .base import Path

__all__ = ["ResidualFlipPath", "ResidualSearchPath", "random_flip", "search", "flips_between"]


def _check_int(name, v, lo):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    return int(v)


def _endpoint(a, b, align, what):
    """``b`` aligned onto ``a`` (``align``: True, a method name, or False), checked to
    share ``a``'s real-valued parameters: a flip path moves binary weights only."""
    _sym.check_pair(a, b, what)
    if not (align is False or align is None):
        b = _sym.align(b, a, method="weights" if align is True else str(align))
        # a row reversal negates a scale: undo those that leave b's scales unlike a's
        rows = []
        for la, lb in zip(a.binary_locations(), b.binary_locations()):
            sa, sb = a.op_at(la).scale, b.op_at(lb).scale
            n = a.op_at(la).weights.shape[0]
            sa = np.ones(n) if sa is None else sa
            sb = np.ones(n) if sb is None else sb
            rows.append(np.sign(sa) != np.sign(sb))
        if any(r.any() for r in rows):
            b = _sym.reverse_rows(b, rows)
    if _sym.canonical_bytes(b.with_binary_weights(a.binary_weights())) != _sym.canonical_bytes(a):
        raise ValueError(f"{what}: the endpoints differ in their real-valued parameters (after "
                         "alignment); a flip path moves binary weights only, so both ends must "
                         "share stem, affines, scales, shortcuts and head")
    return b


def flips_between(a, b) -> np.ndarray:
    """Flat indices (into the concatenated binary weights, run order) where a and b differ."""
    fa = np.concatenate([w.reshape(-1) for w in a.binary_weights()])
    fb = np.concatenate([w.reshape(-1) for w in b.binary_weights()])
    return np.flatnonzero(fa != fb)


def _weights_after(a, order, k):
    flat = np.concatenate([w.reshape(-1) for w in a.binary_weights()]).astype(np.int8)
    flat[order[:k]] *= -1
    out, lo = [], 0
    for w in a.binary_weights():
        out.append(flat[lo:lo + w.size].reshape(w.shape))
        lo += w.size
    return out


class ResidualFlipPath(Path):
    """Binary weights flipped from ``a`` to ``b`` in the order ``order`` (flat indices);
    point ``i`` is ``a`` after the first ``k_i = round(i · T / (points − 1))`` flips.
    ``orders`` holds every drawn order; :meth:`errors` averages over them."""

    def __init__(self, a, b, orders, points):
        self.a, self.b = a, b
        self.orders = [np.asarray(o, np.int64) for o in orders]
        self.order = self.orders[0]
        self.n_moves = len(self.order)
        self._ks = np.rint(np.linspace(0, self.n_moves, int(points))).astype(np.int64)
        self.fractions = self._ks / max(self.n_moves, 1)
        self.hamming = distance(a, b)

    def __repr__(self):
        return (f"ResidualFlipPath(moves={self.n_moves}, hamming={self.hamming:.4f}, "
                f"points={len(self)}, orders={len(self.orders)})")

    def point(self, i):
        j = self._index(i)
        if j == len(self) - 1:
            return self.b
        return self.a.with_binary_weights(_weights_after(self.a, self.order, self._ks[j]))

    def errors_per_order(self, data) -> np.ndarray:
        x, y = check_data(self.a, data, "errors")
        return np.stack([errors_of(self.a, [_weights_after(self.a, o, k) for k in self._ks], x, y)
                         for o in self.orders])

    def errors(self, data) -> np.ndarray:
        """Train error at every point, averaged over the orders."""
        return self.errors_per_order(data).mean(axis=0)


def random_flip(a, b, points: int = 21, seed: int = 0, align=True, orders: int = 1) -> ResidualFlipPath:
    """Random-order flip path from ``a`` to ``b`` (``b`` aligned onto ``a`` first when
    ``align``), ``orders`` random orders from ``default_rng(seed)``."""
    points = _check_int("random_flip: points", points, 2)
    orders = _check_int("random_flip: orders", orders, 1)
    b = _endpoint(a, b, align, "random_flip")
    idx = flips_between(a, b)
    rng = np.random.default_rng(seed)
    return ResidualFlipPath(a, b, [idx[rng.permutation(len(idx))] for _ in range(orders)], points)


class ResidualSearchPath(ResidualFlipPath):
    """A searched flip order; ``trace`` is the train error after every flip (``trace[0]``
    is ``a``'s), ``barrier_error`` its maximum."""

    def __init__(self, a, b, order, trace, points, evaluations):
        super().__init__(a, b, [order], points)
        self.trace = np.asarray(trace, np.float64)
        self.barrier_error = float(self.trace.max())
        self.evaluations = int(evaluations)
        self.note = "full re-evaluation (stack_logits); no incremental evaluation for residual networks"


def search(a, b, data, candidates: int = 16, seed: int = 0, align=True, max_steps=None,
           points: int = 21, networks_per_call: int = 16) -> ResidualSearchPath:
    r"""Greedy connectivity search (docs/methods.md, "Connectivity search"): at each step,
    score ``candidates`` random remaining flips (all when fewer remain) and apply the one
    with the lowest train error, ties broken at random; after ``max_steps`` optimised
    flips the rest follow in a random order, still evaluated. The barrier
    :math:`B = \max_t E(\theta_t)` counts every flip."""
    candidates = _check_int("search: candidates", candidates, 1)
    points = _check_int("search: points", points, 2)
    if max_steps is not None:
        max_steps = _check_int("search: max_steps", max_steps, 0)
    b = _endpoint(a, b, align, "search")
    x, y = check_data(a, data, "search")
    rng = np.random.default_rng(seed)
    remaining = list(flips_between(a, b))
    flat = np.concatenate([w.reshape(-1) for w in a.binary_weights()]).astype(np.int8)
    shapes = [w.shape for w in a.binary_weights()]
    sizes = np.cumsum([0] + [int(np.prod(s)) for s in shapes])

    def split(f):
        return [f[sizes[k]:sizes[k + 1]].reshape(s) for k, s in enumerate(shapes)]

    trace = [float(errors_of(a, [split(flat)], x, y)[0])]
    order, evals = [], 0
    while remaining:
        if max_steps is not None and len(order) >= max_steps:
            rest = [remaining[i] for i in rng.permutation(len(remaining))]
            for lo in range(0, len(rest), networks_per_call):
                ws = []
                for j in rest[lo:lo + networks_per_call]:
                    flat[j] *= -1
                    ws.append(split(flat.copy()))
                trace += errors_of(a, ws, x, y).tolist()
            order += rest
            break
        pick = rng.choice(len(remaining), size=min(candidates, len(remaining)), replace=False)
        errs = []
        for lo in range(0, len(pick), networks_per_call):
            ws = []
            for p in pick[lo:lo + networks_per_call]:
                f = flat.copy()
                f[remaining[p]] *= -1
                ws.append(split(f))
            errs += errors_of(a, ws, x, y).tolist()
        evals += len(pick)
        errs = np.asarray(errs)
        best = rng.choice(np.flatnonzero(errs == errs.min()))
        j = remaining.pop(int(pick[best]))
        flat[j] *= -1
        order.append(j)
        trace.append(float(errs[best]))
    return ResidualSearchPath(a, b, order, trace, points, evals)
