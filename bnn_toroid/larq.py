"""Bridge to larq (Geiger & Team, "Larq: An Open-Source Library for Training Binarized
Neural Networks", JOSS 2020): frozen :class:`~bnn_toroid.network.BinaryNetwork` to a larq
Keras model and back.

Needs the ``[larq]`` extra: larq 0.14 on TensorFlow 2.16 with tf-keras, and tf2onnx for
:func:`from_larq`. larq 0.14 needs Keras 2, so ``TF_USE_LEGACY_KERAS=1`` must be set before
TensorFlow is imported; this module sets it when TensorFlow is not imported yet, and raises
an ``ImportError`` saying so when it finds Keras 3 behind ``tf.keras``. See
``.ci/larq_venv.sh`` for a venv with the pinned versions, and ``docs/interop.md``.

Semantics are larq's: ``ste_sign(x) = +1 if x >= 0 else -1`` (``sign(Sign(x) + 0.1)`` in
the graph), so the integer threshold form maps one to one:

- a hidden unit ``+1 iff h >= T`` is a ``QuantDense``/``QuantConv2D`` with ``ste_sign``
  kernel quantizer, ``weight_clip`` constraint and bias ``-T`` (the next layer's
  ``input_quantizer="ste_sign"`` computes ``sign(h - T)``; exact in float32 for integer
  ``h`` and ``T``);
- ``MaxPool2d`` with ``min_channels``: those rows are negated (kernel ``-w``, bias ``+T``)
  before ``MaxPooling2D`` and a ``BatchNormalization`` with gamma ``-1`` restores the sign
  after it: ``-max(-z) = min(z)``;
- the output layer: bias ``out_bias``, and a ``BatchNormalization`` (mean 0, variance 1)
  when ``out_scale != 1``;
- ``binarize_input``: the first layer's ``input_quantizer="ste_sign"``; ``input_scale``: a
  ``Rescaling`` layer (a first conv's pad value is then scaled with it, as in
  :class:`~bnn_toroid.network.Conv2d`); NCHW input: a ``Permute`` to NHWC.
"""
from __future__ import annotations

import os
import sys

import numpy as np

__all__ = ["to_larq", "from_larq"]


def _tf():
    """Import TensorFlow with Keras 2 (tf-keras) behind ``tf.keras`` and larq."""
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    try:
        import tensorflow as tf
        import larq as lq
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "bnn_toroid.larq needs the [larq] extra: larq==0.14.0, tensorflow==2.16.1, "
            "tf-keras==2.16.0, tf2onnx==1.16.1 (see .ci/larq_venv.sh)") from exc
    if not _legacy_keras(tf):
        raise ImportError(
            "tf.keras is Keras 3, which larq 0.14 does not support: set TF_USE_LEGACY_KERAS=1 "
            "(and install tf-keras) before TensorFlow is imported")
    return tf, lq


def _legacy_keras(tf) -> bool:
    """True when ``tf.keras`` is Keras 2 (tf-keras), as larq 0.14 needs."""
    return tf.keras.layers.Layer.__module__.startswith(("tf_keras", "keras.src.engine",
                                                         "keras.engine"))


def _network():
    from . import network

    return network


def _border_pad_layer(tf):
    """A Keras layer: constant padding with one value per channel (real first layer).

    ``pad(x, 0) + border`` with a constant ``border`` (the values on the padded pixels,
    zero inside): exact, and tf2onnx writes it as ``Pad`` + ``Add``."""

    class BorderPad(tf.keras.layers.Layer):
        def __init__(self, pads, values, **kw):
            super().__init__(**kw)
            self.pads = [list(map(int, p)) for p in pads]
            self.values = [float(v) for v in values]

        def call(self, x):
            (pt, pb), (pl, pr) = self.pads
            h, w, c = (int(d) for d in x.shape[1:])
            border = np.ones((h + pt + pb, w + pl + pr), bool)
            border[pt:pt + h, pl:pl + w] = False
            fill = (border[:, :, None] * np.asarray(self.values)[None, None, :])[None]
            y = tf.pad(x, [[0, 0], [pt, pb], [pl, pr], [0, 0]])
            return y + tf.constant(fill.astype(np.float32), dtype=x.dtype)

        def get_config(self):
            return {**super().get_config(), "pads": self.pads, "values": self.values}

    return BorderPad


def to_larq(net):
    """Build a larq Keras model computing the same logits as ``net``.

    Layer ``i`` of the network becomes (Keras names ``bnn_<i>_...``):

    - :class:`~bnn_toroid.network.Dense` -> ``QuantDense(units, input_quantizer="ste_sign"``
      (``None`` on real input), ``kernel_quantizer="ste_sign", kernel_constraint=
      "weight_clip")`` with kernel ``w.T`` and bias ``-T``, preceded by ``Flatten`` on
      spatial input (NHWC order, as the network's dense layers);
    - :class:`~bnn_toroid.network.Conv2d` -> ``QuantConv2D`` likewise, kernel ``(kh, kw, c, f)``,
      ``strides``, ``padding`` and ``pad_values`` (a per-channel pad value of a real first
      layer becomes a small ``BorderPad`` layer and a 'valid' conv);
    - :class:`~bnn_toroid.network.MaxPool2d` -> ``MaxPooling2D`` (see the module docstring
      for min-pooled channels);
    - the output :class:`~bnn_toroid.network.Dense` keeps ``out_scale * h + out_bias``.

    Hidden pre-activations are ``h - T``; the next layer binarises them with ``ste_sign``, so
    ``sign(h - T) = +1 iff h >= T`` (larq's sign(0) = +1). With binary inputs every sum and
    threshold is an integer, exact in float32: the model's logits equal ``net.predict``
    (bit for bit when ``out_scale = 1``, within float32 rounding of the affine otherwise).
    Returns an uncompiled ``tf.keras.Model`` taking ``(N, *net.input_shape)``.

    Reference: larq ``quantizers.SteSign``, ``layers.QuantDense``/``QuantConv2D``
    (``pad_values``); docs/methods.md, "Integer threshold form".
    """
    tf, lq = _tf()
    K = tf.keras
    net_mod = _network()
    if not isinstance(net, net_mod.BinaryNetwork):
        raise TypeError(f"to_larq() takes a BinaryNetwork, got {type(net).__name__}")
    inp = K.Input(shape=tuple(net.input_shape), name="x")
    x = inp
    layout = net.input_layout
    if layout == "NCHW":
        x = K.layers.Permute((2, 3, 1), name="nchw_to_nhwc")(x)
    elif layout == "flat" and len(net.input_shape) != 1:
        x = K.layers.Flatten(name="flat_input")(x)
    real = not net.binarize_input
    scale = None if net.input_scale is None else np.asarray(net.input_scale, np.float64)
    layers = list(net.layers)
    first_conv_pads_raw = (real and isinstance(layers[0], net_mod.Conv2d)
                           and layers[0].padding == "same")
    if scale is not None and not first_conv_pads_raw:
        if len(net.input_shape) == 3 and isinstance(layers[0], net_mod.Dense) \
                and layout != "flat":
            pass  # scaled after the flatten below
        else:
            x = K.layers.Rescaling(scale.astype(np.float32), name="input_scale")(x)
            scale = None
    spatial = layout != "flat"
    pending_bn = None  # (gamma) to apply after a MaxPool for min-pooled channels
    to_set = []
    for i, layer in enumerate(layers):
        last = i == len(layers) - 1
        quant = None if real else "ste_sign"
        kind = type(layer).__name__
        if kind == "Dense":
            if spatial:
                x = K.layers.Flatten(name=f"bnn_{i}_flatten")(x)
                spatial = False
            if real and scale is not None:  # image input with a dense first layer
                c = scale.size
                sc = np.broadcast_to(scale.reshape(-1), (layer.weights.shape[1] // c, c))
                x = K.layers.Rescaling(sc.reshape(-1).astype(np.float32),
                                       name="input_scale")(x)
                scale = None
            w = np.asarray(layer.weights, np.float32)
            units = w.shape[0]
            if last:
                osc = np.asarray(layer.out_scale, np.float64)
                obi = np.asarray(layer.out_bias, np.float64)
                use_bn = not np.all(osc == 1)
                d = lq.layers.QuantDense(units, input_quantizer=quant, kernel_quantizer="ste_sign",
                                         kernel_constraint="weight_clip", use_bias=not use_bn,
                                         name=f"bnn_{i}_dense")
                x = d(x)
                to_set.append((d, [w.T] + ([] if use_bn else [obi.astype(np.float32)])))
                if use_bn:
                    bn = K.layers.BatchNormalization(epsilon=1e-3, name=f"bnn_{i}_out_affine")
                    x = bn(x)
                    var = np.float32(1.0)
                    gamma = osc * np.sqrt(np.float64(var) + 1e-3)
                    to_set.append((bn, [gamma.astype(np.float32), obi.astype(np.float32),
                                        np.zeros(units, np.float32),
                                        np.full(units, var, np.float32)]))
            else:
                d = lq.layers.QuantDense(units, input_quantizer=quant, kernel_quantizer="ste_sign",
                                         kernel_constraint="weight_clip", use_bias=True,
                                         name=f"bnn_{i}_dense")
                x = d(x)
                to_set.append((d, [w.T, (-np.asarray(layer.threshold, np.float64))
                                   .astype(np.float32)]))
        elif kind == "Conv2d":
            w = np.asarray(layer.weights, np.float32)
            f, kh, kw, c = w.shape
            T = np.asarray(layer.threshold, np.float64)
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            mn = None
            if nxt is not None and type(nxt).__name__ == "MaxPool2d" and \
                    nxt.min_channels is not None and np.any(nxt.min_channels):
                mn = np.asarray(nxt.min_channels, bool)
            sgn = np.where(mn, -1.0, 1.0) if mn is not None else np.ones(f)
            kernel = np.transpose(w, (1, 2, 3, 0)) * sgn.astype(np.float32)
            bias = (-T * sgn).astype(np.float32)
            padding, pv = layer.padding, layer.pad_value
            pv_arr = np.asarray(pv, np.float64)
            if real and padding == "same":
                H, W = _spatial_hw(net, i)
                from .onnx import tf_same

                ph = tf_same(H, kh, layer.stride[0])
                pw = tf_same(W, kw, layer.stride[1])
                scalar = pv_arr.ndim == 0 or np.all(pv_arr == pv_arr.reshape(-1)[0])
                if scalar and scale is None:
                    pad_values = float(pv_arr.reshape(-1)[0])
                else:
                    vals = np.broadcast_to(pv_arr.reshape(-1), (c,)).astype(np.float64)
                    x = _border_pad_layer(tf)([ph, pw], vals, name=f"bnn_{i}_pad")(x)
                    padding, pad_values = "valid", 0.0
                if scale is not None:
                    x = K.layers.Rescaling(scale.astype(np.float32), name="input_scale")(x)
                    scale = None
            else:
                pad_values = float(pv_arr) if pv_arr.ndim == 0 else 0.0
            conv = lq.layers.QuantConv2D(f, (kh, kw), strides=tuple(layer.stride),
                                         padding=padding, pad_values=pad_values,
                                         input_quantizer=quant, kernel_quantizer="ste_sign",
                                         kernel_constraint="weight_clip", use_bias=True,
                                         name=f"bnn_{i}_conv")
            x = conv(x)
            to_set.append((conv, [kernel, bias]))
            if mn is not None:
                pending_bn = sgn
        elif kind == "MaxPool2d":
            x = K.layers.MaxPooling2D(layer.size, strides=layer.stride, name=f"bnn_{i}_pool")(x)
            if pending_bn is not None:
                bn = K.layers.BatchNormalization(epsilon=1e-3, name=f"bnn_{i}_minpool_sign")
                x = bn(x)
                cc = pending_bn.size
                var = np.float32(1.0)
                to_set.append((bn, [pending_bn.astype(np.float32), np.zeros(cc, np.float32),
                                    np.zeros(cc, np.float32), np.full(cc, var, np.float32)]))
                pending_bn = None
        else:
            raise ValueError(f"layer {i}: cannot convert a {kind} to larq")
        if kind != "MaxPool2d":
            real = False
    model = K.Model(inp, x, name="bnn_toroid")
    for lyr, weights in to_set:
        lyr.set_weights([np.asarray(v, np.float32) for v in weights])
    return model


def _spatial_hw(net, i):
    shape = net.layer_input_shape(i) if hasattr(net, "layer_input_shape") else None
    if shape is None:
        raise ValueError("cannot determine the layer's input size")
    return int(shape[0]), int(shape[1])


def from_larq(keras_model, path=None, opset: int = 17):
    """Freeze a larq Keras model into a :class:`~bnn_toroid.network.BinaryNetwork`.

    The model goes through tf2onnx (``tf2onnx.convert.from_keras``, batch axis dynamic,
    float32 input) and :func:`bnn_toroid.onnx.load`, so every larq pattern the ONNX importer
    knows is understood: ``ste_sign`` input quantizers, ±1 kernels (``ste_sign`` kernel
    quantizer), biases and ``BatchNormalization`` folded into integer thresholds (negative
    gammas flip rows; a pool before the BN becomes a min-pool), ``pad_values`` 0 or 1,
    ``Flatten``, a final softmax (dropped, with a warning). ``path``: also keep the ONNX
    file there (a regular file or a new path, as for :func:`bnn_toroid.onnx.export`;
    ``opset`` checked as there). Raises :class:`bnn_toroid.onnx.OnnxImportError` for what it cannot fold
    (e.g. a kernel quantizer other than ``ste_sign``, scaled binary activations).

    Reference: larq 0.14 ``layers``/``quantizers``; tf2onnx 1.16; docs/methods.md, "Integer threshold form".
    """
    from . import onnx as bo

    opset = bo.check_opset(opset, "from_larq")
    if path is not None:  # before TensorFlow loads: a refused target costs nothing
        from ._files import check_target

        check_target(path, "from_larq")
    tf, _ = _tf()
    import tf2onnx

    if len(keras_model.inputs) != 1:
        raise ValueError(f"from_larq: the model has {len(keras_model.inputs)} inputs; "
                         "expected one")
    shape = tuple(keras_model.inputs[0].shape)
    spec = [tf.TensorSpec((None,) + tuple(shape[1:]), tf.float32, name="x")]
    model_proto, _ = tf2onnx.convert.from_keras(keras_model, input_signature=spec, opset=opset)
    if path is not None:
        from ._files import atomic_write

        data = model_proto.SerializeToString()
        atomic_write(path, lambda fh: fh.write(data), "from_larq")
    return bo.load(model_proto)

