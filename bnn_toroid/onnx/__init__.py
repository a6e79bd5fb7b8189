"""ONNX import and export of frozen binary networks, with larq semantics.

The sign convention everywhere is larq's ``ste_sign``: ``sign(x) = +1 if x >= 0 else -1``,
also for ``-0.0`` (docs/methods.md, "Sign convention"). ONNX's ``Sign`` operator (like ``torch.sign``) maps 0 to 0,
so a bare ``Sign`` is *not* larq's sign. Files written here spell the binarisation as
``Where(GreaterOrEqual(x, t), 1, -1)``; files written by larq + tf2onnx spell it as
``Sign(Sign(x) + 0.1)``. Both import to the same thing.

Public functions:

- :func:`load` reads an ONNX file (from larq + tf2onnx, from :func:`export`, or any graph of
  the same shape) into a :class:`bnn_toroid.network.BinaryNetwork` in integer threshold form.
- :func:`export` writes a frozen ``BinaryNetwork`` with standard opsets only, so that
  onnxruntime runs it unmodified; ``qonnx=True`` writes QONNX ``BipolarQuant`` nodes instead.
- :func:`export_torch` writes a real-valued torch model through ``torch.onnx`` and checks it
  with onnxruntime.

The importer is a pattern matcher, not a general ONNX interpreter. It walks the graph from
its input in topological order, constant-folds initializers and ``Constant`` nodes, and
tracks a small symbolic state per tensor: the (possibly rescaled) network input, a binary
±1 activation, or the pre-activation ``v = a*h + b`` (per unit ``a``, ``b``) of a linear
layer with a ±1 kernel whose integer pre-activation is ``h = w.x``. Per-channel affine ops
(``Mul``/``Add``/``Sub``/``Div``/``Neg``/``BatchNormalization``, a convolution bias, a BN
fused into the kernel by tf2onnx) update ``a`` and ``b``; the binarisation then folds them
into one threshold with :func:`bnn_toroid.network.fold_sign_affine`:
``sign(a*h + b) = +1  <=>  h' >= T`` (``h'`` from the row-flipped kernel where ``a < 0``).
A ``MaxPool`` met before the affine takes the minimum where the affine is decreasing.

Reference: Pittorino et al., "Deep Networks on Toroids", ICML 2022 (arXiv 2202.03038), and
this package's docs/methods.md, "Integer threshold form"; larq's ``quantizers.py`` (``ste_sign``);
the QONNX ``BipolarQuant`` operator (domain ``qonnx.custom_op.general``, version 1).

The package:

- :mod:`~bnn_toroid.onnx.common`: :class:`OnnxImportError`, the limits, the QONNX domain,
  and the op table ``OPS`` (``(domain, op_type) -> handler``) with its ``op`` decorator;
- :mod:`~bnn_toroid.onnx.graph`: reading a file (file safety, external data), constant
  folding, the chain-shaped walk order;
- :mod:`~bnn_toroid.onnx.values`: the symbolic values tracked per tensor;
- one module per op family, each registering its handlers in ``OPS``:
  :mod:`~bnn_toroid.onnx.affine` (Add, Sub, Mul, Div, Neg), :mod:`~bnn_toroid.onnx.layout`
  (Identity, Dropout, Cast, Transpose, Reshape, Flatten, Pad), :mod:`~bnn_toroid.onnx.linear`
  (MatMul, Gemm, Conv), :mod:`~bnn_toroid.onnx.norm_pool` (BatchNormalization, MaxPool,
  Softmax, LogSoftmax), :mod:`~bnn_toroid.onnx.sign` (Sign, GreaterOrEqual, Less, Where,
  QONNX BipolarQuant);
- :mod:`~bnn_toroid.onnx.importer`: the walk that dispatches on ``OPS``, and :func:`load`;
- :mod:`~bnn_toroid.onnx.exporter`: :func:`export` (one emitter per layer type, in
  ``EMITTERS``) and :func:`export_torch`.
"""
from .common import MAX_TENSOR_ELEMENTS, MIN_OPSET, QONNX_DOMAIN, OnnxImportError, tf_same
from .exporter import check_opset, export, export_torch
from .importer import load

__all__ = ["OnnxImportError", "load", "export", "export_torch", "QONNX_DOMAIN",
           "MAX_TENSOR_ELEMENTS", "MIN_OPSET", "check_opset", "tf_same"]
