"""Distances: Hamming for binary networks, geodesic on the toroid for real-valued ones."""
from .._dispatch import kind as _kind
from . import binary, continuous

#: ``kind`` values of :func:`distance` per kind of network; the first is the default.
#: A name ending in ``_aligned`` aligns ``b`` onto ``a`` first (``method=`` picks how).
DISTANCE_KINDS = {"binary": binary.DISTANCE_KINDS, "continuous": continuous.DISTANCE_KINDS}


def distance(a, b, kind=None, per_layer: bool = False, **kwargs):
    """Distance between two networks of one architecture (docs/methods.md, "Distances").

    Binary: the Hamming fraction (:func:`bnn_toroid.geometry.binary.distance`),
    ``kind="hamming"`` (default) or ``"hamming_aligned"``. Real-valued:
    :func:`bnn_toroid.geometry.continuous.distance`, ``kind="geodesic"`` (default),
    ``"geodesic_aligned"``, or the Euclidean ``"raw"``, ``"aligned"``, ``"normalized"``,
    ``"normalized_aligned"``. The defaults measure the networks as given; the aligned kinds
    align ``b`` onto ``a`` first, with ``method=`` (binary ``"overlap"`` (default) or
    ``"weights"``; real-valued ``"cosine"`` (default), ``"weights"`` or ``"activations"``,
    which takes ``data=``), as :func:`bnn_toroid.align` does.

    Returns a float, or with ``per_layer=True`` for either kind
    ``{"layer1": d_1, ..., "layerL": d_L, "total": d}`` (weight layers counted from the
    input, pools skipped; ``"total"`` is the value ``per_layer=False`` returns).
    """
    ka = _kind(a, "distance")
    if ka != _kind(b, "distance"):
        raise TypeError("distance: both networks must be of the same kind (binary or real-valued)")
    k = kind if kind is not None else DISTANCE_KINDS[ka][0]
    if k not in DISTANCE_KINDS[ka]:
        label = "binary" if ka == "binary" else "real-valued"
        raise ValueError(f"distance: kind must be one of {DISTANCE_KINDS[ka]} for {label} "
                         f"networks, got {k!r}")
    if kwargs.get("method", "") is None:
        del kwargs["method"]  # the kind's own default, as in bnn_toroid.align
    if ka == "binary":
        extra = sorted(set(kwargs) - {"method"})
        if extra:
            raise TypeError(f"distance: unexpected arguments for binary networks: {extra}")
        return binary.distance(a, b, per_layer=per_layer, kind=k, **kwargs)
    return continuous.distance(a, b, kind=k, per_layer=per_layer, **kwargs)


__all__ = ["distance", "DISTANCE_KINDS", "binary", "continuous"]
