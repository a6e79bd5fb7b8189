"""Flatness: local energy of binary (weight flips) and real-valued (Gaussian noise)
networks, and the train error both are measured in."""
from .._dispatch import kind
from . import binary, continuous
from .binary import BinaryLocalEnergy
from .continuous import LocalEnergy


def error(net, data, batch_size: int = 4096) -> float:
    r"""Train error of either kind of network, ``E = (1/P) Σ_μ 1[argmax_c f_c(x^μ) ≠ y^μ]``
    on ``data`` (a Dataset with ``.x``, ``.y`` or an ``(x, y)`` pair): the height of the
    landscape that :func:`local_energy` and the paths' ``errors`` measure.

    Binary: :meth:`bnn_toroid.BinaryNetwork.error`. Real-valued: the model in eval mode
    (on a copy when it is in train mode), after
    :func:`bnn_toroid.landscape.continuous.check_data`. Samples of the wrong shape and
    labels outside the classes raise ValueError naming ``error``.
    """
    if kind(net, "error") == "binary":
        x, y = binary._data(data)
        return net.error(x, y, batch_size)
    import copy

    from ..network.continuous import as_tensors, misclassified
    x, y = as_tensors(data, "error: data")
    m = copy.deepcopy(net).eval() if net.training else net
    continuous.check_data(m, x, y, "error")
    return misclassified(m, x, y, batch_size) / x.shape[0]


def local_energy(net, data, eps=None, sigma=None, samples=None, seed: int = 0, **kwargs):
    """δE of a network (docs/methods.md, "Local energy"): ``eps`` flip fractions for a BinaryNetwork (10 draws
    by default), ``sigma`` multiplicative noise levels for a torch model (100 draws)."""
    if kind(net, "local_energy") == "binary":
        if sigma is not None:
            raise ValueError("local_energy: binary networks are perturbed by flips; pass eps=, not sigma=")
        kw = {} if eps is None else {"eps": eps}
        return binary.local_energy(net, data, samples=10 if samples is None else samples, seed=seed, **kw, **kwargs)
    if eps is not None:
        raise ValueError("local_energy: real-valued models take sigma= (noise levels), not eps=")
    kw = {} if sigma is None else {"sigma": sigma}
    return continuous.local_energy(net, data, samples=100 if samples is None else samples, seed=seed, **kw, **kwargs)


__all__ = ["error", "local_energy", "LocalEnergy", "BinaryLocalEnergy", "binary", "continuous"]
