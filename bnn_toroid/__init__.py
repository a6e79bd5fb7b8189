"""bnn_toroid: the geometry of binary and real-valued networks with their symmetries removed.

Pittorino, Ferraro, Perugini, Feinauer, Baldassi, Zecchina, "Deep Networks on Toroids:
Removing Symmetries Reveals the Structure of Flat Regions in the Landscape Geometry",
ICML 2022. One object flows through the package, a network: a frozen
:class:`BinaryNetwork` or a real-valued torch model.

Names are imported on first use (PEP 562), so ``import bnn_toroid`` and the command
line's usage errors do not wait for torch and Numba to load.
"""
from importlib import import_module

from ._version import __version__

_SUBMODULES = ("datasets", "nn", "train", "network", "symmetry", "geometry", "landscape",
               "paths", "io", "onnx", "larq", "kernels", "plots", "bench", "cli", "demo", "sweep",
               "diagnostics")
_NAMES = {
    "BinaryNetwork": "network", "NetworkStack": "network", "ResidualBinaryNetwork": "network", "load": "network", "save": "network",
    "canonicalize": "symmetry", "fingerprint": "symmetry", "align": "symmetry", "normalize": "symmetry",
    "distance": "geometry", "local_energy": "landscape", "error": "landscape",
    "recalibrate": "network",
}

__all__ = ["BinaryNetwork", "NetworkStack", "ResidualBinaryNetwork", "load", "save", "canonicalize", "fingerprint",
           "align", "normalize", "distance", "local_energy", "error", "recalibrate", "paths", "datasets", "nn",
           "train", "kernels", "onnx", "__version__"]


def __getattr__(name):
    if name in _NAMES:
        value = getattr(import_module(f".{_NAMES[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'bnn_toroid' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
