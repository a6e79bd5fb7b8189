"""Distances: Hamming for binary networks, geodesic on the toroid for real-valued ones."""
from .._dispatch import kind as _kind
from . import binary, continuous


def distance(a, b, kind=None, per_layer: bool = False, **kwargs):
    """Distance between two networks of one architecture (docs/methods.md, "Distances").

    Binary: the Hamming fraction (:func:`bnn_toroid.geometry.binary.distance`).
    Real-valued: :func:`bnn_toroid.geometry.continuous.distance`; pass ``kind=`` for the
    Euclidean variants.
    """
    k = kind
    if _kind(a, "distance") != _kind(b, "distance"):
        raise TypeError("distance: both networks must be of the same kind (binary or real-valued)")
    if _kind(a, "distance") == "binary":
        if k not in (None, "hamming"):
            raise ValueError(f"distance: binary networks support kind='hamming' only, got {k!r}")
        if kwargs:
            raise TypeError(f"distance: unexpected arguments for binary networks: {sorted(kwargs)}")
        return binary.distance(a, b, per_layer=per_layer)
    return continuous.distance(a, b, kind=k or "geodesic", per_layer=per_layer, **kwargs)


__all__ = ["distance", "binary", "continuous"]
