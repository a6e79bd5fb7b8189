"""bnn_toroid: the geometry of binary and real-valued networks with their symmetries removed.

Pittorino, Ferraro, Perugini, Feinauer, Baldassi, Zecchina, "Deep Networks on Toroids:
Removing Symmetries Reveals the Structure of Flat Regions in the Landscape Geometry",
ICML 2022. One object flows through the package, a network: a frozen
:class:`BinaryNetwork` or a real-valued torch model.
"""
__version__ = "0.1.0"

from . import datasets, kernels, nn, train  # noqa: E402
from .geometry import distance  # noqa: E402
from .landscape import local_energy  # noqa: E402
from .network import BinaryNetwork, NetworkStack, load, save  # noqa: E402
from .symmetry import align, canonicalize, fingerprint, normalize  # noqa: E402
from . import paths  # noqa: E402

__all__ = ["BinaryNetwork", "NetworkStack", "load", "save", "canonicalize", "fingerprint",
           "align", "normalize", "distance", "local_energy", "paths", "datasets", "nn",
           "train", "kernels", "__version__"]
