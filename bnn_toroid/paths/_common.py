"""What the binary path constructors share (:mod:`bnn_toroid.paths.binary` and
:mod:`bnn_toroid.paths.discrete_search`): aligning the far endpoint and placing the
evaluated points on the move axis. The checks of the endpoints and the data are
:func:`bnn_toroid.paths.moves.check_pair` and :func:`bnn_toroid.paths.moves.as_xy`."""
from __future__ import annotations

import numpy as np

from ..symmetry.binary import align as _binary_align

__all__ = ["aligned_endpoint", "point_ks"]


def aligned_endpoint(a, b, align):
    """``b`` as a binary path takes it: ``align=True`` aligns it onto ``a``
    (:func:`bnn_toroid.symmetry.binary.align`, method ``"overlap"``), a string picks the
    alignment method, ``False`` or None returns ``b`` as given."""
    if align is False or align is None:
        return b
    method = "overlap" if align is True else str(align)
    return _binary_align(b, reference=a, method=method)


def point_ks(n_moves: int, points: int) -> np.ndarray:
    """Move counts of ``points`` evenly spaced points (repeats when the path is short)."""
    return np.rint(np.linspace(0, n_moves, points)).astype(np.int64)
