"""Local energy of binary networks: the error rise under random weight flips (docs/methods.md, "Local energy of binary networks")."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..network import BinaryNetwork, NetworkStack
from ..symmetry.binary import _check
from .continuous import LocalEnergy

__all__ = ["BinaryLocalEnergy", "local_energy", "flip_masks", "DEFAULT_EPS"]

DEFAULT_EPS = (0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)


@dataclass(frozen=True, repr=False)
class BinaryLocalEnergy(LocalEnergy):
    """:class:`LocalEnergy` of a binary network: ``eps`` holds the flip fractions ε (the
    fraction of all weights flipped). They sit in the field that :class:`LocalEnergy`
    calls ``sigma``, so code written for both kinds reads ``.sigma``; the repr names them
    ``eps``, as ``local_energy(eps=...)`` does."""

    @property
    def eps(self) -> np.ndarray:
        return self.sigma

    def __repr__(self):
        return (f"BinaryLocalEnergy(eps={self.sigma!r}, mean={self.mean!r}, std={self.std!r}, "
                f"base_error={self.base_error!r})")


def _data(data):
    if hasattr(data, "x") and hasattr(data, "y"):
        return data.x, data.y
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data
    raise TypeError("data: expected a Dataset (with .x, .y) or an (x, y) tuple, "
                    f"got {type(data).__name__}")


def flip_masks(net: BinaryNetwork, counts, rng) -> list:
    """Packed XOR masks that flip ``counts[s]`` weights of network ``s``, drawn uniformly
    without replacement from all of ``net``'s weights. Returns per layer an array with a
    leading axis of len(counts): uint64 words to XOR into packed weights (``None`` for a
    pool). Each weight's word and bit come from the layer's layout
    (:meth:`BinaryNetwork.layout <bnn_toroid.network.BinaryNetwork.layout>`)."""
    counts = np.asarray(counts, np.int64)
    layers = net.weight_layers()
    sizes = np.array([net.layers[i].weights.size for i in layers])
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    masks = {i: np.zeros((len(counts),) + net.layout(i).packed_shape, np.uint64) for i in layers}
    for s, m in enumerate(counts):
        if m == 0:
            continue
        picks = rng.choice(offsets[-1], size=int(m), replace=False)
        where = np.searchsorted(offsets, picks, side="right") - 1
        for li, i in enumerate(layers):
            local = picks[where == li] - offsets[li]
            if local.size:
                net.layout(i).flip(masks[i][s], local)
    return [masks.get(i) for i in range(len(net.layers))]


def perturbed_stack(net: BinaryNetwork, counts, rng) -> NetworkStack:
    """A :class:`NetworkStack` of copies of ``net`` with ``counts[s]`` random weights flipped."""
    masks = flip_masks(net, counts, rng)
    params = []
    for p, m in zip(net.packed_params(), masks):
        q = {k: np.repeat(v, len(counts), axis=0) for k, v in p.items()}
        if m is not None:
            q["w"] = q["w"] ^ m
        params.append(q)
    return NetworkStack(net, params)


def local_energy(net: BinaryNetwork, data, eps=DEFAULT_EPS, samples: int = 10, seed: int = 0,
                 networks_per_call: int = 32, batch_size: int = 4096) -> BinaryLocalEnergy:
    r"""Local energy of a binary network,

    .. math::
        \delta E(\varepsilon) = \mathbb{E}\big[E_\mathrm{train}(w \oplus
        \text{flip of } \lfloor \varepsilon N \rceil \text{ random weights})\big]
        - E_\mathrm{train}(w),

    with ``E_train`` the fraction misclassified (error, not loss), ``N`` all binary weights
    and the flipped set drawn uniformly without replacement, ``samples`` draws per ε
    (Pittorino et al. 2022, local energy; docs/methods.md, "Local energy of binary networks"). Perturbations are XOR masks on the
    packed weights, and all draws for all ε go through the batched kernels,
    ``networks_per_call`` networks per launch.
    """
    from ..network.residual import ResidualBinaryNetwork
    if isinstance(net, ResidualBinaryNetwork):  # full re-evaluation (landscape/residual.py)
        from .residual import local_energy as _residual
        return _residual(net, data, eps=eps, samples=samples, seed=seed,
                         networks_per_call=min(networks_per_call, 8),
                         batch_size=min(batch_size, 1024))
    _check(net, "local_energy")
    x, y = _data(data)
    if len(x) == 0:
        raise ValueError("local_energy: empty data; need at least one sample")
    eps = np.atleast_1d(np.asarray(eps, np.float64))
    if eps.ndim != 1 or np.isnan(eps).any() or (eps < 0).any() or (eps > 1).any():
        raise ValueError(f"local_energy: eps must be fractions in [0, 1], got {eps.tolist()}")
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise ValueError(f"local_energy: samples must be an integer >= 1, got {samples!r}")
    samples = int(samples)
    rng = np.random.default_rng(seed)
    # errors about x and y name local_energy, not the error method it calls
    wrong, n = net._as_stack()._wrong(x, y, batch_size, "local_energy")
    base = float(wrong[0] / n)
    counts = np.rint(np.tile(eps, samples) * net.n_weights).astype(np.int64)  # sample-major
    errors = np.empty(len(counts))
    step = max(1, int(networks_per_call))
    for lo in range(0, len(counts), step):
        stack = perturbed_stack(net, counts[lo:lo + step], rng)
        errors[lo:lo + step] = stack.errors(x, y, batch_size)
    errors = errors.reshape(samples, len(eps))
    # the rise per draw first: exactly 0 where a draw changes nothing (ε = 0)
    return BinaryLocalEnergy(eps, (errors - base).mean(axis=0), errors.std(axis=0), float(base), errors)
