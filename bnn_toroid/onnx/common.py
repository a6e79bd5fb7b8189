"""What every module of :mod:`bnn_toroid.onnx` shares: the error, the size limits, the
QONNX domain, TensorFlow's 'same' padding, and the importer's op table.

The op table :data:`OPS` maps ``(domain, op_type)`` to a handler; the op-family modules
(``affine``, ``layout``, ``linear``, ``norm_pool``, ``sign``) fill it with the :func:`op`
decorator when :mod:`bnn_toroid.onnx.importer` imports them. ``domain`` is ``""`` for
the standard ONNX domain (``""`` or ``"ai.onnx"`` in a file) and :data:`QONNX_DOMAIN`
for the QONNX custom operators (any of :data:`QONNX_DOMAINS` in a file).
"""
from __future__ import annotations

import math
from typing import Any, Callable

#: Largest tensor (values per sample, or a folded constant) the importer builds. Checked
#: against the sizes a file declares before anything is allocated: a 100-byte file may
#: declare an input of 10^14 values.
MAX_TENSOR_ELEMENTS = 1 << 24

#: Oldest default-domain opset :func:`bnn_toroid.onnx.export` writes (the newest is the
#: installed onnx package's, ``onnx.defs.onnx_opset_version()``).
MIN_OPSET = 13

#: protobuf cannot parse a message of 2 GiB or more
MAX_FILE_BYTES = (1 << 31) - 1

#: Domain of the QONNX custom operators (``BipolarQuant``).
QONNX_DOMAIN = "qonnx.custom_op.general"
#: Domains whose ``BipolarQuant`` the importer reads as QONNX's.
QONNX_DOMAINS = (QONNX_DOMAIN, "finn.custom_op.general", "onnx.brevitas")
#: Spellings of the standard ONNX domain.
STANDARD_DOMAINS = ("", "ai.onnx")


class OnnxImportError(ValueError):
    """An ONNX file could not be read as a binary network.

    Raised for malformed files (truncated, not ONNX, dangling tensor names, a kernel that
    should be ±1 and is not) and for graphs this importer does not understand. The message
    names the node (``name``, ``op_type``) where the walk stopped and what was expected.
    """


def onnx_module():
    """The onnx package, imported on first use (``bnn_toroid.onnx`` loads without it)."""
    import onnx  # the real package: imports are absolute

    return onnx


def network_module():
    """:mod:`bnn_toroid.network`, imported on first use."""
    from .. import network

    return network


def check_elements(shape, what: str):
    """OnnxImportError when a tensor of ``shape`` would exceed MAX_TENSOR_ELEMENTS."""
    n = math.prod(int(d) for d in shape)
    if n > MAX_TENSOR_ELEMENTS:
        raise OnnxImportError(f"{what} has shape {tuple(int(d) for d in shape)} ({n:,} values); "
                              f"expected at most {MAX_TENSOR_ELEMENTS:,} "
                              "(bnn_toroid.onnx.MAX_TENSOR_ELEMENTS)")


def describe(node) -> str:
    """How errors name a node: ``node 'name' (op Type)``."""
    return f"node {node.name!r} (op {node.op_type})"


def tf_same(n: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow 'same' padding of an axis of ``n`` pixels for kernel ``k`` and stride
    ``s``: ``(before, after)`` with ``out = ceil(n/s)``; the odd pixel goes after."""
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


# --------------------------------------------------------------------------------------
# The op table
# --------------------------------------------------------------------------------------

#: A handler: ``handler(importer, node, ins, attrs)`` returns the symbolic value of the
#: node's first output (``ins``: the inputs' values, constants as numpy arrays).
Handler = Callable[[Any, Any, list, dict], Any]

#: ``(domain, op_type) -> handler``; filled by :func:`op`.
OPS: dict[tuple[str, str], Handler] = {}


def op(*op_types: str, domain: str = ""):
    """Register the decorated handler for ``op_types`` in ``domain`` (``""``: standard
    ONNX, or :data:`QONNX_DOMAIN`). An op registered twice is a bug, raised at import."""
    def register(fn: Handler) -> Handler:
        for op_type in op_types:
            key = (domain, op_type)
            if key in OPS:
                raise RuntimeError(f"bnn_toroid.onnx: op {op_type!r} (domain {domain!r}) is "
                                   f"registered twice ({OPS[key].__module__} and {fn.__module__})")
            OPS[key] = fn
        return fn

    return register


def ops_of(domain: str = "") -> list[str]:
    """The op types registered for ``domain``, sorted."""
    return sorted(t for d, t in OPS if d == domain)
