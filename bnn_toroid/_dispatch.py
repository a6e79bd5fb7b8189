"""Route a public verb to its binary or continuous implementation by the network's kind.

The verbs that dispatch: ``bnn_toroid.distance`` (geometry), ``bnn_toroid.align``
(symmetry), ``bnn_toroid.local_energy`` and ``bnn_toroid.error`` (landscape), and
``bnn_toroid.paths.single_bend``. Each behaves the same for both kinds: the same return
type and the same exception (with a message of the same parts) for the same bad input,
which tests/test_conformance.py checks for every one of them.
"""
from __future__ import annotations


def kind(net, what: str) -> str:
    """``"binary"`` for a frozen BinaryNetwork or a ResidualBinaryNetwork (each verb then
    routes the residual type to its own module), ``"continuous"`` for a real-valued torch
    model; a torch model with binary layers must be frozen first."""
    from .network import BinaryNetwork, ResidualBinaryNetwork
    if isinstance(net, (BinaryNetwork, ResidualBinaryNetwork)):  # both binary (residual: issue 22)
        return "binary"
    try:
        from torch import nn
    except ImportError:  # pragma: no cover
        nn = None
    if nn is not None and isinstance(net, nn.Module):
        from .nn import BinaryConv2d, BinaryLinear
        if any(isinstance(m, (BinaryLinear, BinaryConv2d)) for m in net.modules()):
            raise TypeError(f"{what}: got a torch model with binary layers; freeze it first with "
                            "bnn_toroid.BinaryNetwork.from_torch(model.eval())")
        return "continuous"
    raise TypeError(f"{what}: expected a BinaryNetwork or a real-valued torch nn.Module, "
                    f"got {type(net).__name__}")
