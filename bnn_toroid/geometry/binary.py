"""Hamming geometry of binary networks (docs/methods.md, "Hamming distance")."""
from __future__ import annotations


from ..network import BinaryNetwork, MaxPool2d

__all__ = ["distance", "differing"]


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


def distance(a: BinaryNetwork, b: BinaryNetwork, per_layer: bool = False):
    r"""Hamming distance as the fraction of weights that differ,

    .. math:: d(a, b) = \frac{1}{N} \sum_{l} \sum_{ij} [w^a_{l,ij} \ne w^b_{l,ij}] \in [0, 1],

    over all ``N`` binary weights (thresholds and output affine are not counted). It
    measures the networks as given: align them first (:func:`bnn_toroid.align`) for the
    distance between their symmetry classes (docs/methods.md, "Hamming distance").

    ``per_layer=True`` returns ``{layer index: fraction of that layer's weights}`` with the
    overall fraction under ``"total"``.
    """
    diff = differing(a, b)
    total = sum(diff.values()) / a.n_weights
    if not per_layer:
        return float(total)
    out = {i: d / a.layers[i].weights.size for i, d in diff.items()}
    out["total"] = float(total)
    return out
