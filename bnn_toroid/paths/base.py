"""Paths between two networks and their error barriers (shared by binary and continuous).

Pittorino et al., "Deep Networks on Toroids", ICML 2022 (arXiv 2202.03038):
barriers along paths; docs/methods.md, "Barrier and height".
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Barrier", "Path"]


@dataclass(frozen=True)
class Barrier:
    r"""The error barrier along a path with train errors ``E_0 .. E_{n−1}``:

    .. math::
        \text{max\_error} = \max_i E_i, \qquad
        \text{height} = \max_i E_i - \tfrac12 (E_0 + E_{n-1})

    ``argmax`` is the first index of the maximum and ``errors`` the whole curve (fractions
    misclassified). The paper reports ``max_error``; ``height`` [ours] discounts the
    endpoints' own error. The repr gives ``points``, the length of the curve, since a
    barrier depends on where the path is sampled.
    """
    max_error: float
    height: float
    argmax: int
    errors: np.ndarray = field(compare=False, repr=False)

    def __repr__(self):
        return (f"Barrier(max_error={self.max_error!r}, height={self.height!r}, "
                f"argmax={self.argmax!r}, points={len(self.errors)})")

    @classmethod
    def from_errors(cls, errors) -> "Barrier":
        """Build a Barrier from an error curve (at least one point, all finite)."""
        e = np.asarray(errors, dtype=np.float64).reshape(-1)
        if e.size == 0:
            raise ValueError("Barrier: empty error curve")
        if not np.isfinite(e).all():
            raise ValueError("Barrier: error curve contains NaN or inf")
        e = e.copy()
        e.setflags(write=False)
        i = int(np.argmax(e))
        return cls(float(e[i]), float(e[i] - 0.5 * (e[0] + e[-1])), i, e)


class Path(abc.ABC):
    """A discrete path of networks from one endpoint to the other.

    Subclasses set ``fractions`` (an array in [0, 1], or a step index axis for flip paths)
    and implement :meth:`point` and :meth:`errors`; ``len(path)`` is the number of points.
    """

    fractions: np.ndarray

    def __len__(self) -> int:
        return len(self.fractions)

    def _index(self, i: int) -> int:
        n = len(self)
        j = int(i)
        if j < 0:
            j += n
        if not 0 <= j < n:
            raise IndexError(f"path point {i} out of range for a path of {n} points")
        return j

    @abc.abstractmethod
    def point(self, i: int):
        """The network at point ``i`` (0 and −1 are the endpoints)."""

    @abc.abstractmethod
    def errors(self, data) -> np.ndarray:
        """Train error (fraction misclassified) at every point, shape ``(len(self),)``.

        ``data`` is a Dataset (``.x``, ``.y``) or an ``(x, y)`` tuple."""

    def barrier(self, data=None, *, errors=None) -> Barrier:
        """:class:`Barrier` of :meth:`errors` on ``data``; or of ``errors``, a curve
        :meth:`errors` already returned (one value per point), which is then not
        evaluated again. Give one of the two."""
        return Barrier.from_errors(self._curve(data, errors, len(self), "barrier"))

    def _curve(self, data, errors, n, what):
        if (data is None) == (errors is None):
            raise TypeError(f"{type(self).__name__}.{what}: give data (to evaluate the errors) or "
                            "errors (a curve errors() returned), not both or neither")
        if errors is None:
            return self.errors(data)
        e = np.asarray(errors, dtype=np.float64).reshape(-1)
        if e.size != n:
            raise ValueError(f"{type(self).__name__}.{what}: errors holds {e.size} values; expected "
                             f"one per point of the curve, {n}")
        return e
