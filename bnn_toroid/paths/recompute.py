"""Binary path points with thresholds re-estimated from data (``bn="recompute"``).

Every point of a path gets the BatchNorm record interpolated between the ends'
(:func:`~bnn_toroid.network.recalibrate.interpolate_records`) and its thresholds
recomputed on the statistics data (:func:`~bnn_toroid.network.recalibrate.recalibrate`),
the endpoints included, so the barrier compares like with like. This is the binary
analogue of REPAIR (Jordan et al., ICLR 2023) and of the continuous paths'
``bn="recompute"`` (docs/methods.md, "Thresholds re-estimated along paths").
"""
from __future__ import annotations

import numpy as np

from ..network.recalibrate import infer_records, interpolate_records, recalibrate, with_records
from .moves import as_xy, networks_along

BN_MODES = ("frozen", "recompute")

__all__ = ["BN_MODES", "check_bn", "prepare_ends", "errors_recomputed"]


def check_bn(bn, where: str) -> str:
    if bn not in BN_MODES:
        raise ValueError(f"{where}: bn must be one of {', '.join(map(repr, BN_MODES))}, got {bn!r}")
    return bn


def prepare_ends(a, b, bn_data):
    """The ends with a record on every hidden layer (recovered from ``bn_data`` where a
    network has none)."""
    x = as_xy(bn_data, "bn_data")[0] if isinstance(bn_data, tuple) or hasattr(bn_data, "y") else np.asarray(bn_data)
    return infer_records(a, x), infer_records(b, x), x


def errors_recomputed(a, b, order, ks, data, bn_data) -> np.ndarray:
    """Train error on ``data`` at the points ``a`` + first ``k`` moves of ``order`` (for
    ``k`` in ``ks``), each with thresholds re-estimated on ``bn_data``."""
    a, b, xs = prepare_ends(a, b, bn_data)
    x, y = as_xy(data)
    n = max(len(order), 1)
    out = np.empty(len(ks))
    for j, (k, net) in enumerate(zip(ks, networks_along(a, order, ks))):
        net = with_records(net, interpolate_records(a, b, float(k) / n))
        out[j] = recalibrate(net, xs).error(x, y)
    return out
