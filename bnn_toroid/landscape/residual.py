r"""Hamming geometry and local energy of residual binary networks over their binary
weights (docs/methods.md, "Residual binary networks"; docs/binary_landscape.md).

The binary weights are the ±1 filters of the :class:`~bnn_toroid.network.residual_ops.BinaryConv`
operations (:meth:`ResidualBinaryNetwork.binary_weights`); every real-valued parameter
(stem, affines, shortcuts, head) is held fixed. Perturbed networks are evaluated by full
re-evaluation through :meth:`ResidualBinaryNetwork.stack_logits`, S networks per call;
there is no incremental evaluation for residual networks.
"""
from __future__ import annotations

import numpy as np

from ..network.residual import ResidualBinaryNetwork
from ..symmetry import residual_binary as _sym

__all__ = ["distance", "differing", "local_energy", "flipped_weights", "errors_of", "check_data",
           "DISTANCE_KINDS"]

DISTANCE_KINDS = ("hamming", "hamming_aligned")


def differing(a: ResidualBinaryNetwork, b: ResidualBinaryNetwork) -> list:
    """Per binary convolution (run order), the number of weights where ``a`` and ``b`` differ."""
    _sym.check_pair(a, b, "differing")
    return [int((u != v).sum()) for u, v in zip(a.binary_weights(), b.binary_weights())]


def distance(a, b, per_layer: bool = False, *, kind: str = "hamming", method: str = "weights"):
    r"""Hamming distance as the fraction of binary weights that differ,
    :math:`d = \frac1N \sum_k \sum [w^a_k \ne w^b_k]` over the ``N`` weights of all binary
    convolutions. ``kind="hamming_aligned"`` aligns ``b`` onto ``a`` first
    (:func:`bnn_toroid.symmetry.residual_binary.align` with ``method``). ``per_layer``
    returns ``{"layer1": d_1, ..., "total": d}``, one entry per binary convolution in
    run order."""
    if kind not in DISTANCE_KINDS:
        raise ValueError(f"distance: kind must be one of {DISTANCE_KINDS}, got {kind!r}")
    _sym.check_pair(a, b, "distance")
    if kind == "hamming_aligned":
        b = _sym.align(b, a, method=method)
    diff = differing(a, b)
    n = a.n_binary
    total = float(sum(diff) / n) if n else 0.0
    if not per_layer:
        return total
    out = {f"layer{k + 1}": d / w.size for k, (d, w) in enumerate(zip(diff, a.binary_weights()))}
    out["total"] = total
    return out


def flipped_weights(net: ResidualBinaryNetwork, counts, rng) -> list:
    """S binary-weight lists (for :meth:`stack_logits`): list ``s`` is ``net``'s weights
    with ``counts[s]`` of them, drawn uniformly without replacement from all binary
    weights, negated."""
    ws = [w.reshape(-1) for w in net.binary_weights()]
    sizes = np.array([w.size for w in ws])
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    out = []
    for m in np.asarray(counts, np.int64):
        flat = np.concatenate(ws).astype(np.int8)
        if m:
            flat[rng.choice(offsets[-1], size=int(m), replace=False)] *= -1
        out.append([flat[offsets[k]:offsets[k + 1]].reshape(w.shape)
                    for k, w in enumerate(net.binary_weights())])
    return out


def check_data(net, data, what):
    """``(x, y)`` from a Dataset or an ``(x, y)`` pair, refused by name when empty, of
    another sample shape, or with labels outside ``net``'s classes."""
    if hasattr(data, "x") and hasattr(data, "y"):
        x, y = data.x, data.y
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    else:
        raise TypeError("data: expected a Dataset (with .x, .y) or an (x, y) tuple, "
                        f"got {type(data).__name__}")
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 1 or len(x) == 0:
        raise ValueError(f"{what}: empty data; need at least one sample")
    if tuple(x.shape[1:]) != net.input_shape:
        raise ValueError(f"{what}: expected samples of shape {net.input_shape}, got {tuple(x.shape[1:])}")
    if not np.issubdtype(y.dtype, np.integer) or y.shape != (len(x),):
        raise ValueError(f"{what}: expected {len(x)} integer labels, got {y.dtype} of shape {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= net.n_classes):
        raise ValueError(f"{what}: data holds labels in [{y.min()}, {y.max()}]; expected class "
                         f"indices in [0, {net.n_classes})")
    return x, y


def errors_of(net: ResidualBinaryNetwork, weights, x, y, batch_size: int = 1024) -> np.ndarray:
    """Train error (fraction misclassified) of each of the S binary-weight lists."""
    wrong = np.zeros(len(weights), np.int64)
    for lo in range(0, len(x), batch_size):
        z = net.stack_logits(x[lo:lo + batch_size], weights)
        wrong += (z.argmax(axis=-1) != y[None, lo:lo + batch_size]).sum(axis=1)
    return wrong / len(x)


def local_energy(net: ResidualBinaryNetwork, data, eps=None, samples: int = 10, seed: int = 0,
                 networks_per_call: int = 8, batch_size: int = 1024):
    r"""Local energy over the binary weights,
    :math:`\delta E(\varepsilon) = \mathbb E[E(w \oplus \text{flip of} \lfloor\varepsilon N\rceil
    \text{ random weights})] - E(w)`, the real parameters fixed (Pittorino et al. 2022;
    docs/methods.md, "Local energy of binary networks"). ``samples`` draws per ε, evaluated
    ``networks_per_call`` at a time by :meth:`stack_logits` (full re-evaluation)."""
    from .binary import DEFAULT_EPS, BinaryLocalEnergy
    _sym.check_residual(net, "local_energy")
    x, y = check_data(net, data, "local_energy")
    eps = np.atleast_1d(np.asarray(DEFAULT_EPS if eps is None else eps, np.float64))
    if eps.ndim != 1 or np.isnan(eps).any() or (eps < 0).any() or (eps > 1).any():
        raise ValueError(f"local_energy: eps must be fractions in [0, 1], got {eps.tolist()}")
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise ValueError(f"local_energy: samples must be an integer >= 1, got {samples!r}")
    rng = np.random.default_rng(seed)
    base = float(errors_of(net, [net.binary_weights()], x, y, batch_size)[0])
    counts = np.rint(np.tile(eps, int(samples)) * net.n_binary).astype(np.int64)
    errors = np.empty(len(counts))
    step = max(1, int(networks_per_call))
    for lo in range(0, len(counts), step):
        ws = flipped_weights(net, counts[lo:lo + step], rng)
        errors[lo:lo + step] = errors_of(net, ws, x, y, batch_size)
    errors = errors.reshape(int(samples), len(eps))
    return BinaryLocalEnergy(eps, (errors - base).mean(axis=0), errors.std(axis=0), base, errors)
