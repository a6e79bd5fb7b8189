"""Flatness: local energy of binary (weight flips) and real-valued (Gaussian noise) networks."""
from .._dispatch import kind
from . import binary, continuous
from .binary import BinaryLocalEnergy
from .continuous import LocalEnergy


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


__all__ = ["local_energy", "LocalEnergy", "BinaryLocalEnergy", "binary", "continuous"]
