"""Symmetry removal: scale normalisation (continuous), canonical forms (binary), alignment."""
from .._dispatch import kind
from . import binary, continuous
from .binary import canonicalize, fingerprint
from .continuous import normalize


def align(net, reference, method=None, **kwargs):
    """Match ``net``'s hidden units onto ``reference`` (function preserved).

    Binary networks: :func:`bnn_toroid.symmetry.binary.align` (``method`` "overlap" or
    "weights"). Real-valued torch models: :func:`bnn_toroid.symmetry.continuous.align`
    (``method`` "cosine", "weights" or "activations"). docs/methods.md, "Alignment of binary networks" and "Alignment of real-valued networks".
    """
    if kind(net, "align") != kind(reference, "align"):
        raise TypeError("align: both networks must be of the same kind (binary or real-valued)")
    if kind(net, "align") == "binary":
        return binary.align(net, reference, method=method or "overlap", **kwargs)
    return continuous.align(net, reference, method=method or "cosine", **kwargs)


__all__ = ["align", "canonicalize", "fingerprint", "normalize", "binary", "continuous"]
