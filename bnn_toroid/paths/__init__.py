"""Paths between two networks and their error barriers (docs/methods.md, "Paths").

Binary networks: :func:`random_flip`, :func:`single_bend`, :func:`search` (discrete
paths of elementary moves). Real-valued torch models: :func:`linear`, :func:`geodesic`,
:func:`single_bend`. Every path has ``.errors(data)`` and ``.barrier(data)``.

Modules: :mod:`.base` (``Path``, ``Barrier``), :mod:`.moves` (the elementary moves of
binary networks), :mod:`.binary` (random flip orders, binary single bend),
:mod:`.discrete_search` (the connectivity search behind :func:`search`),
:mod:`.recompute` (thresholds re-estimated along a path), :mod:`.continuous` (linear,
geodesic and single-bend paths of real-valued models), :mod:`._common` (helpers the
binary constructors share).
"""
import sys as _sys

from .._dispatch import kind
from . import binary, continuous, discrete_search, moves, residual, residual_bend
from .base import Barrier, Path
from .binary import FlipPath, SingleBendPath
from .continuous import ContinuousPath, geodesic, linear
from .discrete_search import IncrementalEvaluator, SearchPath
from .moves import MOVE_DTYPE, apply_moves, errors_along, moves_between

# The search module was ``paths/search.py`` until the function ``paths.search`` took the
# name for itself (an import of the module rebound ``paths.search`` to the module). The old
# module name still imports, as this alias, without touching the function:
# ``importlib.import_module("bnn_toroid.paths.search")`` and
# ``from bnn_toroid.paths.search import make_evaluator`` give discrete_search.
_sys.modules.setdefault(__name__ + ".search", discrete_search)


def _residual(*nets):
    from ..network.residual import ResidualBinaryNetwork
    return any(isinstance(n, ResidualBinaryNetwork) for n in nets)


def random_flip(a, b, points: int = 21, seed: int = 0, **kwargs):
    """Binary path flipping the differing weights in a random order; see
    :func:`bnn_toroid.paths.binary.random_flip` (residual binary networks:
    :func:`bnn_toroid.paths.residual.random_flip`)."""
    if _residual(a, b):
        return residual.random_flip(a, b, points=points, seed=seed, **kwargs)
    return binary.random_flip(a, b, points=points, seed=seed, **kwargs)


def single_bend(a, b, data, **kwargs):
    """Two-segment path through a trained midpoint, binary or real-valued; see
    :func:`bnn_toroid.paths.binary.single_bend`,
    :func:`bnn_toroid.paths.continuous.single_bend` and (residual binary networks)
    :func:`bnn_toroid.paths.residual_bend.single_bend`."""
    ka = kind(a, "single_bend")
    if ka != kind(b, "single_bend"):
        raise TypeError("single_bend: both networks must be of the same kind (binary or real-valued)")
    if _residual(a, b):
        return residual_bend.single_bend(a, b, data, **kwargs)
    if ka == "binary":
        return binary.single_bend(a, b, data, **kwargs)
    return continuous.single_bend(a, b, data, **kwargs)


def search(a, b, data, method: str = "greedy", **kwargs):
    """Connectivity search for the binary path with the lowest barrier; see
    :func:`bnn_toroid.paths.discrete_search.search` (residual binary networks: the greedy
    search of :func:`bnn_toroid.paths.residual.search`, full re-evaluation)."""
    return discrete_search.search(a, b, data, method=method, **kwargs)


__all__ = ["residual", "residual_bend", "binary", "continuous", "discrete_search", "moves", "Barrier", "Path", "random_flip",
           "single_bend", "search", "linear", "geodesic", "FlipPath", "SingleBendPath",
           "SearchPath", "ContinuousPath", "IncrementalEvaluator", "moves_between", "apply_moves",
           "errors_along", "MOVE_DTYPE"]
