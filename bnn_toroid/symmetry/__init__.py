"""Symmetry removal: scale normalisation (continuous), canonical forms (binary), alignment."""
from .._dispatch import kind
from . import binary, continuous, residual_binary
from .continuous import normalize


def _residual(net):
    from ..network.residual import ResidualBinaryNetwork
    return isinstance(net, ResidualBinaryNetwork)


def canonicalize(net, **kwargs):
    """Canonical representative of a binary network's symmetry class:
    :func:`bnn_toroid.symmetry.binary.canonicalize` for chains,
    :func:`bnn_toroid.symmetry.residual_binary.canonicalize` for residual binary networks
    (``strict=`` picks the stream reversals admitted)."""
    if _residual(net):
        return residual_binary.canonicalize(net, **kwargs)
    return binary.canonicalize(net, **kwargs)


def fingerprint(net, **kwargs):
    """SHA-256 digest of the symmetry class (:func:`bnn_toroid.symmetry.binary.fingerprint`,
    or :func:`bnn_toroid.symmetry.residual_binary.fingerprint` for residual networks)."""
    if _residual(net):
        return residual_binary.fingerprint(net, **kwargs)
    return binary.fingerprint(net, **kwargs)


def align(net, reference, method=None, **kwargs):
    """Match ``net``'s hidden units onto ``reference`` (function preserved).

    Binary networks: :func:`bnn_toroid.symmetry.binary.align` (``method`` "overlap" or
    "weights"); residual binary networks:
    :func:`bnn_toroid.symmetry.residual_binary.align` (``method`` "weights" or "overlap",
    one sweep). Real-valued torch models: :func:`bnn_toroid.symmetry.continuous.align`
    (``method`` "cosine", "weights" or "activations"). docs/methods.md, "Alignment of binary networks" and "Alignment of real-valued networks".
    """
    if kind(net, "align") != kind(reference, "align"):
        raise TypeError("align: both networks must be of the same kind (binary or real-valued)")
    if _residual(net) or _residual(reference):
        if not (_residual(net) and _residual(reference)):
            raise TypeError("align: both networks must be of the same kind (a residual binary "
                            "network aligns onto a residual binary network)")
        return residual_binary.align(net, reference, method=method or "weights", **kwargs)
    if kind(net, "align") == "binary":
        return binary.align(net, reference, method=method or "overlap", **kwargs)
    return continuous.align(net, reference, method=method or "cosine", **kwargs)


__all__ = ["align", "canonicalize", "fingerprint", "normalize", "binary", "continuous",
           "residual_binary"]
