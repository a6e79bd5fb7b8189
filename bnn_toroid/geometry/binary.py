"""Hamming geometry of binary networks (docs/methods.md, "Hamming distance")."""
from __future__ import annotations

from ..network import BinaryNetwork, MaxPool2d
from ..symmetry.binary import align as _align

__all__ = ["distance", "differing", "DISTANCE_KINDS"]

#: ``kind`` values of :func:`distance`: as given, or with ``b`` aligned onto ``a`` first.
DISTANCE_KINDS = ("hamming", "hamming_aligned")


def _pair(a, b, what):
    for n in (a, b):
        if not isinstance(n, BinaryNetwork):
            hint = (" Freeze torch binary models with bnn_toroid.BinaryNetwork.from_torch(model)."
                    if hasattr(n, "parameters") else "")
            raise TypeError(f"{what}: expected frozen BinaryNetworks, got {type(n).__name__}.{hint}")
    if not a.same_architecture(b):
        raise ValueError(f"{what}: the networks have different architectures:\n{a.summary()}\nvs\n{b.summary()}")


def differing(a: BinaryNetwork, b: BinaryNetwork) -> dict:
    """Per weight layer index, the number of weights where ``a`` and ``b`` differ."""
    _pair(a, b, "differing")
    return {i: int((la.weights != lb.weights).sum()) for i, (la, lb) in enumerate(zip(a.layers, b.layers))
            if not isinstance(la, MaxPool2d)}


def distance(a: BinaryNetwork, b: BinaryNetwork, per_layer: bool = False, *,
             kind: str = "hamming", method: str = "overlap"):
    r"""Hamming distance as the fraction of weights that differ,

    .. math:: d(a, b) = \frac{1}{N} \sum_{l} \sum_{ij} [w^a_{l,ij} \ne w^b_{l,ij}] \in [0, 1],

    over all ``N`` binary weights (thresholds and output affine are not counted).
    ``kind="hamming"`` (default) measures the networks as given;
    ``kind="hamming_aligned"`` first aligns ``b`` onto ``a``
    (:func:`bnn_toroid.symmetry.binary.align` with ``method``, ``"overlap"`` or
    ``"weights"``), the distance between their symmetry classes as far as the alignment
    finds it (docs/methods.md, "Hamming distance").

    ``per_layer=True`` returns ``{"layer1": d_1, ..., "layerL": d_L, "total": d}``: the
    fraction of each weight layer's weights (Dense and Conv2d counted from the input,
    pools skipped) and the overall fraction, the shape
    :func:`bnn_toroid.geometry.continuous.distance` returns too.
    """
    from ..network.residual import ResidualBinaryNetwork
    if isinstance(a, ResidualBinaryNetwork) or isinstance(b, ResidualBinaryNetwork):
        from ..landscape.residual import distance as _residual_distance
        return _residual_distance(a, b, per_layer, kind=kind,
                                  method="weights" if method == "overlap" else method)
    if kind not in DISTANCE_KINDS:
        raise ValueError(f"distance: kind must be one of {DISTANCE_KINDS}, got {kind!r}")
    _pair(a, b, "distance")
    if kind == "hamming_aligned":
        b = _align(b, reference=a, method=method)
    diff = differing(a, b)
    total = float(sum(diff.values()) / a.n_weights)
    if not per_layer:
        return total
    out = {f"layer{n + 1}": d / a.layers[i].weights.size for n, (i, d) in enumerate(diff.items())}
    out["total"] = total
    return out
