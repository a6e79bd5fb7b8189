"""Argument handling shared by the ``predict``/``error`` entry points of both network
kinds (:class:`bnn_toroid.network.BinaryNetwork` and the torch models of
:mod:`bnn_toroid.nn`): batch sizes, labels, softmax. A module of its own so that neither
side imports the other for them.
"""
import numpy as np


def batch_rows(batch_size, what: str) -> int:
    """``batch_size`` as the number of samples per pass: an integer >= 1 (a bool, a float
    or 0 is refused by name rather than rounded into some other size)."""
    if isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"{what}: batch_size must be an integer >= 1, got {batch_size!r}")
    return int(batch_size)


def softmax(z):
    """Softmax along the last axis, shifted by the row maximum so exp cannot overflow."""
    z = z - z.max(axis=-1, keepdims=True) if z.size else z  # no overflow in exp
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def labels(y, n, num_classes, what="error"):
    """``y`` as integer class indices (N,): one per sample of x (``n``; None: any), each in
    [0, ``num_classes``); a torch tensor is accepted. Raises naming ``what``."""
    if hasattr(y, "detach"):  # a torch tensor
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.ndim != 1 or (n is not None and y.shape[0] != n):
        raise ValueError(f"{what}: y has shape {y.shape}; expected ({n},), one label per sample of x")
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"{what}: y has dtype {y.dtype}; expected integer class indices")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{what}: y holds labels in [{y.min()}, {y.max()}]; expected class indices "
                         f"in [0, {num_classes})")
    return y
