"""Paths between two networks and their error barriers (docs/methods.md, "Paths").

Binary networks: :func:`random_flip`, :func:`single_bend`, :func:`search` (discrete
paths of elementary moves). Real-valued torch models: :func:`linear`, :func:`geodesic`,
:func:`single_bend`. Every path has ``.errors(data)`` and ``.barrier(data)``.
"""
from .._dispatch import kind
# Submodules first: importing ``paths.search`` binds the module as an attribute of this
# package, so the functions below must be defined after it to keep their names.
from . import binary, continuous, moves
from . import search as _search_module
from .base import Barrier, Path
from .binary import FlipPath, SingleBendPath
from .continuous import ContinuousPath, geodesic, linear
from .moves import MOVE_DTYPE, apply_moves, errors_along, moves_between
from .search import IncrementalEvaluator, SearchPath


def random_flip(a, b, points: int = 21, seed: int = 0, **kwargs):
    """Binary path flipping the differing weights in a random order; see
    :func:`bnn_toroid.paths.binary.random_flip`."""
    return binary.random_flip(a, b, points=points, seed=seed, **kwargs)


def single_bend(a, b, data, **kwargs):
    """Two-segment path through a trained midpoint, binary or real-valued; see
    :func:`bnn_toroid.paths.binary.single_bend` and
    :func:`bnn_toroid.paths.continuous.single_bend`."""
    if kind(a, "single_bend") == "binary":
        return binary.single_bend(a, b, data, **kwargs)
    return continuous.single_bend(a, b, data, **kwargs)


def search(a, b, data, method: str = "greedy", **kwargs):
    """Connectivity search for the binary path with the lowest barrier; see
    :func:`bnn_toroid.paths.search.search`."""
    return _search_module.search(a, b, data, method=method, **kwargs)


__all__ = ["binary", "continuous", "moves", "Barrier", "Path", "random_flip", "single_bend", "search", "linear", "geodesic",
           "FlipPath", "SingleBendPath", "SearchPath", "ContinuousPath", "IncrementalEvaluator",
           "moves_between", "apply_moves", "errors_along", "MOVE_DTYPE"]
