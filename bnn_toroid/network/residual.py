"""Residual binary networks: a real-valued stream with binary convolutions added to it.

:class:`ResidualBinaryNetwork` holds a sequence of operations from
:mod:`bnn_toroid.network.residual_ops`. Its *binary weights* are the ±1 filters of its
:class:`~bnn_toroid.network.residual_ops.BinaryConv` operations, in the order they run;
they are what Hamming distances, flips, local energy and paths act on. The real-valued
parameters (stem, affines, shortcuts, head) stay as they are.
"""
from __future__ import annotations

import numpy as np

from .._batches import batch_rows, labels as _labels, softmax as _softmax
from .layers import NetworkError, as_pm1
from .residual_ops import OPS, BinaryConv, Residual

__all__ = ["ResidualBinaryNetwork"]

_FIXED = frozenset({"ops", "input_shape", "input_layout"})


class ResidualBinaryNetwork:
    """A frozen residual binary network (docs/methods.md, "Residual binary networks").

    Args:
        ops: operations in order (:data:`~bnn_toroid.network.residual_ops.OPS`); the last
            writes the logits (a flat vector).
        input_shape: one sample's shape as passed to :meth:`predict`, (H, W, C) for
            ``"NHWC"`` or (C, H, W) for ``"NCHW"``.
        input_layout: ``"NHWC"`` or ``"NCHW"`` (evaluated as NHWC).

    Immutable once built, like :class:`~bnn_toroid.network.core.BinaryNetwork`; make
    changed copies with :meth:`with_ops` or :meth:`with_binary_weights`.
    """

    def __init__(self, ops, input_shape, input_layout: str = "NHWC"):
        self.ops = tuple(ops)
        if not self.ops:
            raise NetworkError("a residual network needs at least one operation")
        for i, op in enumerate(self.ops):
            if not isinstance(op, OPS):
                raise NetworkError(f"ops[{i}]: expected one of {[t.__name__ for t in OPS]}, "
                                   f"got {type(op).__name__}")
        if input_layout not in ("NHWC", "NCHW"):
            raise NetworkError(f"input_layout must be 'NHWC' or 'NCHW', got {input_layout!r}")
        self.input_layout = input_layout
        self.input_shape = tuple(int(v) for v in input_shape)
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise NetworkError(f"input_shape must be 3 positive sizes, got {input_shape}")
        self._shapes = self._check()
        self._built = True

    def __setattr__(self, name, value):
        if name in _FIXED and self.__dict__.get("_built"):
            raise AttributeError(f"ResidualBinaryNetwork.{name}: a network is immutable once "
                                 "built; make a new one, e.g. net.with_ops(ops)")
        object.__setattr__(self, name, value)

    # ------------------------------------------------------------------ structure
    @property
    def stream_shape(self) -> tuple:
        """(H, W, C) of one sample as the first operation reads it."""
        if self.input_layout == "NCHW":
            c, h, w = self.input_shape
            return (h, w, c)
        return self.input_shape

    def _check(self):
        shapes = [self.stream_shape]
        for i, op in enumerate(self.ops):
            try:
                shapes.append(op.out_shape(shapes[-1]))
            except NetworkError as e:
                raise NetworkError(f"ops[{i}] ({type(op).__name__}): {e}") from None
        if len(shapes[-1]) != 1:
            raise NetworkError(f"the last operation must write flat logits, writes {shapes[-1]}")
        return tuple(shapes)

    @property
    def n_classes(self) -> int:
        return self._shapes[-1][0]

    def binary_locations(self) -> list:
        """Where each :class:`BinaryConv` sits: ``(i,)`` for ``ops[i]``, or
        ``(i, "body" | "shortcut", j)`` inside a :class:`Residual`, in run order."""
        out = []
        for i, op in enumerate(self.ops):
            if isinstance(op, BinaryConv):
                out.append((i,))
            elif isinstance(op, Residual):
                for part in ("body", "shortcut"):
                    out += [(i, part, j) for j, o in enumerate(getattr(op, part))
                            if isinstance(o, BinaryConv)]
        return out

    def op_at(self, loc):
        op = self.ops[loc[0]]
        return op if len(loc) == 1 else getattr(op, loc[1])[loc[2]]

    def binary_weights(self) -> list:
        """The ±1 filters (filters, kh, kw, in_channels) of every binary convolution, in
        run order (read-only int8 arrays)."""
        return [self.op_at(loc).weights for loc in self.binary_locations()]

    @property
    def n_binary(self) -> int:
        """The number of binary weights."""
        return int(sum(w.size for w in self.binary_weights()))

    def with_ops(self, ops) -> "ResidualBinaryNetwork":
        return ResidualBinaryNetwork(ops, self.input_shape, self.input_layout)

    def with_binary_weights(self, weights) -> "ResidualBinaryNetwork":
        """A copy whose binary convolutions have ``weights`` (one ±1 array per
        :meth:`binary_locations` entry, same shapes); every real parameter is kept."""
        import dataclasses
        locs = self.binary_locations()
        weights = list(weights)
        if len(weights) != len(locs):
            raise NetworkError(f"with_binary_weights: expected {len(locs)} arrays (one per "
                               f"binary convolution), got {len(weights)}")
        new = list(self.ops)
        parts = {}
        for n, (loc, w) in enumerate(zip(locs, weights)):
            old = self.op_at(loc)
            w = as_pm1(w, f"with_binary_weights[{n}]")
            if w.shape != old.weights.shape:
                raise NetworkError(f"with_binary_weights[{n}]: expected shape "
                                   f"{old.weights.shape}, got {w.shape}")
            op = dataclasses.replace(old, weights=w)
            if len(loc) == 1:
                new[loc[0]] = op
            else:
                r = parts.setdefault(loc[0], {"body": list(self.ops[loc[0]].body),
                                              "shortcut": list(self.ops[loc[0]].shortcut)})
                r[loc[1]][loc[2]] = op
        for i, r in parts.items():
            new[i] = Residual(tuple(r["body"]), tuple(r["shortcut"]))
        return self.with_ops(new)

    # ------------------------------------------------------------------ evaluation
    def _input(self, x, what):
        x = np.asarray(x)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise NetworkError(f"{what}: expected samples of shape {self.input_shape} "
                               f"({self.input_layout}), got an array of shape {x.shape}")
        if not np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_:
            raise NetworkError(f"{what}: expected numbers, got dtype {x.dtype}")
        x = x.astype(np.float64)
        if not np.isfinite(x).all():
            raise NetworkError(f"{what}: the input contains NaN or infinity")
        if self.input_layout == "NCHW":
            x = x.transpose(0, 2, 3, 1)
        return np.ascontiguousarray(x)

    def _tiles(self, k):
        """Packed filters of binary convolution ``k`` (run order), made once: the network
        is immutable, so they stay valid."""
        cache = self.__dict__.setdefault("_tile_cache", {})
        if k not in cache:
            from .residual_fast import packed_filters
            cache[k] = packed_filters(self.binary_weights()[k][None])
        return cache[k]

    def _stack_weights(self, weights, what):
        weights = [list(w) for w in weights]
        if not weights:
            raise NetworkError(f"{what}: expected at least one list of binary weights, got none")
        own = self.binary_weights()
        shapes = [w.shape for w in own]
        for s, ws in enumerate(weights):
            if [np.shape(w) for w in ws] != shapes:
                raise NetworkError(f"{what}: weights[{s}] must have shapes {shapes}, got "
                                   f"{[np.shape(w) for w in ws]}")
            weights[s] = [as_pm1(w, f"{what}: weights[{s}][{j}]") for j, w in enumerate(ws)]
        return weights

    def _run(self, x, weights, what, reference=False, collect=None):
        x = self._input(x, what)
        if reference:
            from .residual_eval import run
            return run(self, x, [self.binary_weights()] if weights is None else weights, collect)
        from .residual_fast import run
        return run(self, x, weights, self._tiles, collect)

    def logits(self, x, reference: bool = False) -> np.ndarray:
        """Logits (N, classes), float64: the binary convolutions as XNOR-popcount on the
        packed kernels (:mod:`.residual_fast`); ``reference=True`` evaluates with the
        float64 NumPy reference (:mod:`.residual_eval`) instead."""
        return self._run(x, None, "logits", reference)[0]

    def predict(self, x, batch_size: int = 4096) -> np.ndarray:
        """Logits, float64 (N, classes), as :meth:`bnn_toroid.BinaryNetwork.predict`:
        :meth:`logits` evaluated ``batch_size`` samples at a time."""
        bs = batch_rows(batch_size, "predict")
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[0] <= bs:  # one call (logits names a bad shape)
            return self.logits(x)
        return np.concatenate([self.logits(x[i:i + bs]) for i in range(0, x.shape[0], bs)])

    def predict_classes(self, x, batch_size: int = 4096) -> np.ndarray:
        """``argmax`` of the logits (first index on ties), int64 (N,)."""
        return self.predict(x, batch_size).argmax(axis=1)

    def predict_proba(self, x, batch_size: int = 4096) -> np.ndarray:
        """Softmax of the logits, float64 (N, classes), rows summing to 1; its argmax is
        :meth:`predict_classes`."""
        return _softmax(self.predict(x, batch_size))

    def errors_of(self, x, y, weights=None, batch_size: int = 4096) -> np.ndarray:
        """The error of this network (``weights`` None) or of the S networks of
        :meth:`stack_logits` (``weights``), float64 (S,), on samples ``x`` with integer
        labels ``y`` (N,), evaluated ``batch_size`` samples at a time."""
        bs = batch_rows(batch_size, "error")
        x = np.asarray(x)
        n = x.shape[0] if x.ndim == 4 else 1
        y = _labels(y, n, self.n_classes)
        if n == 0:
            raise ValueError("error: needs at least one sample")
        ws = [self.binary_weights()] if weights is None else weights
        wrong = np.zeros(len(ws), np.int64)
        for i in range(0, n, bs):
            z = self.stack_logits(x[i:i + bs], ws)
            wrong += (z.argmax(axis=2) != y[None, i:i + bs]).sum(axis=1)
        return wrong / n

    def error(self, x, y, batch_size: int = 4096) -> float:
        """Fraction of samples whose predicted class differs from ``y`` (integer class
        indices (N,)), as :meth:`bnn_toroid.BinaryNetwork.error`; at least one sample."""
        return float(self.errors_of(x, y, None, batch_size)[0])

    def score(self, x, y, batch_size: int = 4096) -> float:
        """Accuracy, ``1 - error(x, y)`` (scikit-learn's ``score`` for classifiers)."""
        return 1.0 - self.error(x, y, batch_size)

    def stack_logits(self, x, weights, reference: bool = False) -> np.ndarray:
        """Logits (S, N, classes) of S networks that differ from this one only in their
        binary weights: ``weights[s]`` is a list like :meth:`binary_weights`. Each binary
        convolution is one kernel call for all S networks."""
        weights = self._stack_weights(weights, "stack_logits")
        return self._run(x, weights, "stack_logits", reference)

    def binary_sums(self, x, weights=None, reference: bool = False) -> list:
        """The exact integer sums ``h`` (S, N, Ho, Wo, F) of every binary convolution, in
        :meth:`binary_locations` order, for this network (S = 1) or the S weight lists
        ``weights`` (as :meth:`stack_logits`)."""
        if weights is not None:
            weights = self._stack_weights(weights, "binary_sums")
        out = []
        self._run(x, weights, "binary_sums", reference, out)
        return [np.asarray(h, np.int64) for h in out]

    @classmethod
    def from_torch(cls, model, input_shape) -> "ResidualBinaryNetwork":
        """The network of a torch twin (:func:`.residual_torch.from_torch`: traced with
        ``torch.fx``, ``bnn_toroid.nn`` binary layers as leaves) for NCHW samples of
        ``input_shape`` (C, H, W)."""
        from .residual_torch import from_torch
        return from_torch(model, input_shape)

    def save(self, path):
        """Write this network to ``path`` (:mod:`.residual_files`, atomic); read it back
        with :func:`bnn_toroid.load`."""
        from .files import save
        return save(self, path)

    def __repr__(self):
        kinds = [type(op).__name__ for op in self.ops]
        return (f"ResidualBinaryNetwork({len(self.ops)} ops {kinds}, input {self.input_shape} "
                f"{self.input_layout}, {self.n_binary} binary weights)")
