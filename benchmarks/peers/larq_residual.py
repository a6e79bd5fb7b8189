"""Residual binary networks built in real larq: Bi-Real-Net-style and QuickNet-style.

These builders make the two residual designs that larq users train and deploy, from
larq and Keras layers, with deterministic random weights (no pretrained weights are
ever downloaded). They serve as reference models for the ONNX importer (issue 22,
fixtures in ``tests/data/larq_residual/``) and for the LCE peer benchmark
(``benchmarks/peers/lce_bench.py``, models ``bireal`` and ``quicknet``).

Bi-Real Net (Liu et al., "Bi-Real Net: Enhancing the Performance of 1-bit CNNs with
Improved Representational Capability and Advanced Training Algorithm", ECCV 2018;
layer choices as in larq-zoo's ``BiRealNet``, Bannink et al. 2021)
-----------------------------------------------------------------------------------
- Stem, real-valued: 7×7 convolution, stride 2, ``same`` padding, no bias →
  BatchNormalization → 3×3 max pooling, stride 2, ``same`` padding.
- Body: every binary convolution has its own shortcut (the "real" of Bi-Real: a
  real-valued stream runs past every single binary conv, not past pairs as in ResNet).
  One block is
  ``QuantConv2D 3×3`` (input_quantizer ``approx_sign``, kernel_quantizer
  ``magnitude_aware_sign``, kernel_constraint ``weight_clip``, no bias, ``same``
  padding with zeros — Bi-Real does not use ``pad_values=1``) → BatchNormalization →
  add to the shortcut. ResNet-18 depth means 4 stages of 4 such blocks (16 binary
  convolutions), widths 64-128-256-512.
- Downsampling: the first block of every stage after the first has stride 2. Its
  shortcut is AveragePooling2D(2, stride 2, ``same``) → real 1×1 Conv2D (no bias) →
  BatchNormalization. (If a stage changes width without a stride, the shortcut is the
  1×1 conv and BN alone; that does not happen with the default widths.)
- Head, real-valued: ReLU on the stream (as larq-zoo's BiRealNet does) → global
  average pooling → Dense (with bias). The builders return logits (no softmax).
- BatchNormalization uses momentum 0.8, epsilon 1e-3, as in larq-zoo.

QuickNet (Bannink et al., "Larq Compute Engine: Design, Benchmark, and Deploy
State-of-the-Art Binarized Neural Networks", MLSys 2021; larq-zoo's ``QuickNetSmall``)
-----------------------------------------------------------------------------------
- Stem, real-valued: 3×3 convolution with width/4 filters, stride 2, no bias →
  BN → ReLU → 3×3 depthwise convolution, stride 2, no bias → BN → 1×1 convolution to
  the first section's width, no bias → BN.
- Residual block: ``QuantConv2D 3×3`` (input and kernel quantizer ``ste_sign``,
  kernel_constraint ``weight_clip``, ``same`` padding with ``pad_values=1.0``, no bias,
  ``activation="relu"``, i.e. a ReLU right after the binary conv) → BN → add to the
  block's input (identity shortcut, same width, stride 1).
- Transition between sections (real-valued): ReLU → MaxPool2D(3, stride 2, ``same``) →
  3×3 DepthwiseConv2D (stride 1, ``same``, no bias) → BN → 1×1 Conv2D to the next width
  (no bias) → BN. The binary convolutions therefore never change shape.
- Head: ReLU → global average pooling → Dense (with bias), logits.
- QuickNet-Small: 4 sections of 4 residual blocks, widths 32-64-256-512; BN momentum
  0.9, epsilon 1e-5.

Simplifications (say so wherever these models are used)
------------------------------------------------------
- Weights are random: Keras' default initializers under ``tf.keras.utils.set_random_seed
  (seed)``; BatchNorm statistics are random, calibrated on random inputs so that every
  BN sees its input's own scale (moving mean = measured mean + noise, moving variance =
  (measured std × U(0.5, 2))²), gamma = |N(1, 0.3)| with about a quarter of the gammas
  negated, beta ~ N(0, 0.3). Without calibration a random binary
  network's BN thresholds would be trivial. The weights do not come from training.
- Widths, blocks per stage and input size are parameters; the fixtures use small
  instances (32×32×3, widths 16-32-64, 2 blocks per stage) and the benchmark a full-
  depth, full-width model at a reduced input size (see ``lce_bench.SPECS``).
- larq-zoo's QuickNet uses ``lq.layers.QuantConv2D`` / ``QuantDepthwiseConv2D`` without
  quantizers for its real layers; here they are plain Keras ``Conv2D`` /
  ``DepthwiseConv2D``, which compute the same thing and export to the same ONNX ops.
- Keras' ``Dense`` head has a bias (random N(0, 0.1) here, so it is not the zero
  vector that tf2onnx would drop); no dropout, no softmax.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

BIREAL18 = dict(stage_filters=(64, 128, 256, 512), blocks_per_stage=(4, 4, 4, 4), stem_filters=64)
QUICKNET_SMALL = dict(stage_filters=(32, 64, 256, 512), blocks_per_stage=(4, 4, 4, 4))


def _keras():
    import tensorflow as tf
    return tf.keras


def _bireal_graph(inp, stage_filters, blocks_per_stage, stem_filters, num_classes):
    import larq as lq
    K = _keras()
    bn = dict(momentum=0.8, epsilon=1e-3)
    x = K.layers.Conv2D(stem_filters, 7, strides=2, padding="same", use_bias=False)(inp)
    x = K.layers.BatchNormalization(**bn)(x)
    x = K.layers.MaxPool2D(3, strides=2, padding="same")(x)
    width = stem_filters
    for stage, (filters, blocks) in enumerate(zip(stage_filters, blocks_per_stage)):
        for block in range(blocks):
            strides = 2 if (stage > 0 and block == 0) else 1
            shortcut = x
            if strides == 2:
                shortcut = K.layers.AveragePooling2D(2, strides=2, padding="same")(shortcut)
            if strides == 2 or filters != width:
                shortcut = K.layers.Conv2D(filters, 1, use_bias=False)(shortcut)
                shortcut = K.layers.BatchNormalization(**bn)(shortcut)
            y = lq.layers.QuantConv2D(filters, 3, strides=strides, padding="same",
                                      input_quantizer="approx_sign",
                                      kernel_quantizer="magnitude_aware_sign",
                                      kernel_constraint="weight_clip", use_bias=False)(x)
            y = K.layers.BatchNormalization(**bn)(y)
            x = K.layers.Add()([y, shortcut])
            width = filters
    x = K.layers.Activation("relu")(x)
    x = K.layers.GlobalAveragePooling2D()(x)
    return K.layers.Dense(num_classes)(x)


def _quicknet_graph(inp, stage_filters, blocks_per_stage, num_classes):
    import larq as lq
    K = _keras()
    bn = dict(momentum=0.9, epsilon=1e-5)
    f0 = stage_filters[0]
    assert f0 % 4 == 0
    x = K.layers.Conv2D(f0 // 4, 3, strides=2, padding="same", use_bias=False)(inp)
    x = K.layers.BatchNormalization(**bn)(x)
    x = K.layers.Activation("relu")(x)
    x = K.layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False)(x)
    x = K.layers.BatchNormalization(**bn)(x)
    x = K.layers.Conv2D(f0, 1, use_bias=False)(x)
    x = K.layers.BatchNormalization(**bn)(x)
    for stage, (filters, blocks) in enumerate(zip(stage_filters, blocks_per_stage)):
        if stage > 0:  # transition block
            x = K.layers.Activation("relu")(x)
            x = K.layers.MaxPool2D(3, strides=2, padding="same")(x)
            x = K.layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
            x = K.layers.BatchNormalization(**bn)(x)
            x = K.layers.Conv2D(filters, 1, use_bias=False)(x)
            x = K.layers.BatchNormalization(**bn)(x)
        for _ in range(blocks):
            y = lq.layers.QuantConv2D(filters, 3, padding="same", pad_values=1.0,
                                      input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                                      kernel_constraint="weight_clip", use_bias=False,
                                      activation="relu")(x)
            y = K.layers.BatchNormalization(**bn)(y)
            x = K.layers.Add()([y, x])
    x = K.layers.Activation("relu")(x)
    x = K.layers.GlobalAveragePooling2D()(x)
    return K.layers.Dense(num_classes)(x)


def randomise_bn(model, calib_x, seed: int = 0, neg_gamma: float = 0.25):
    """Random BatchNorm parameters and statistics, calibrated on ``calib_x``.

    BN layers are set in topological order; each one's statistics are drawn around the
    per-channel mean and std that its input actually has on ``calib_x`` (with the
    preceding BNs already set), so the signs downstream are not trivially constant.
    """
    K = _keras()
    rng = np.random.default_rng(seed + 1000)
    for layer in model.layers:
        if not isinstance(layer, K.layers.BatchNormalization):
            continue
        probe = K.Model(model.inputs, layer.input)
        h = probe.predict(calib_x, verbose=0, batch_size=len(calib_x))
        axes = tuple(range(h.ndim - 1))
        mu, sd = h.mean(axes), h.std(axes) + 1e-3
        n = mu.shape[0]
        gamma = np.abs(rng.normal(1.0, 0.3, n)) + 0.1
        gamma[rng.random(n) < neg_gamma] *= -1
        beta = rng.normal(0, 0.3, n)
        mean = mu + rng.normal(0, 0.3, n) * sd
        var = (sd * rng.uniform(0.5, 2.0, n)) ** 2
        layer.set_weights([a.astype(np.float32) for a in (gamma, beta, mean, var)])
    return model


def _build(graph, kw, input_shape, batch, seed, calib_x, name):
    import tensorflow as tf
    K = _keras()
    tf.keras.utils.set_random_seed(seed)
    inp = K.Input(shape=tuple(input_shape), name="x")
    model = K.Model(inp, graph(inp, **kw), name=name)
    if calib_x is None:
        calib_x = np.random.default_rng(seed).normal(0, 1, (16,) + tuple(input_shape))
    randomise_bn(model, np.asarray(calib_x, np.float32), seed)
    rng = np.random.default_rng(seed + 2000)
    for layer in model.layers:  # a non-zero head bias (Keras initialises it to zeros)
        if isinstance(layer, K.layers.Dense):
            k, b = layer.get_weights()
            layer.set_weights([k, rng.normal(0, 0.1, b.shape).astype(np.float32)])
    if batch is None:
        return model
    # same weights, fixed batch (LCE's TFLite graph has a fixed batch): build again and copy
    inp_b = K.Input(shape=tuple(input_shape), batch_size=batch, name="x")
    fixed = K.Model(inp_b, graph(inp_b, **kw), name=name)
    fixed.set_weights(model.get_weights())
    return fixed


def build_bireal(input_shape=(224, 224, 3), stage_filters=BIREAL18["stage_filters"],
                 blocks_per_stage=BIREAL18["blocks_per_stage"], stem_filters=None,
                 num_classes=1000, batch=None, seed=0, calib_x=None, name="bireal"):
    """Bi-Real-Net-style model (Bi-Real-Net-18 with the defaults), random weights.

    ``blocks_per_stage`` counts binary convolutions (each has its own shortcut);
    ``stem_filters`` defaults to the first stage's width. ``calib_x`` (float32, NHWC)
    calibrates the random BN statistics; default 16 samples of N(0, 1).
    """
    kw = dict(stage_filters=tuple(stage_filters), blocks_per_stage=tuple(blocks_per_stage),
              stem_filters=stem_filters or stage_filters[0], num_classes=num_classes)
    return _build(_bireal_graph, kw, input_shape, batch, seed, calib_x, name)


def build_quicknet(input_shape=(224, 224, 3), stage_filters=QUICKNET_SMALL["stage_filters"],
                   blocks_per_stage=QUICKNET_SMALL["blocks_per_stage"], num_classes=1000,
                   batch=None, seed=0, calib_x=None, name="quicknet"):
    """QuickNet-style model (QuickNet-Small with the defaults), random weights."""
    kw = dict(stage_filters=tuple(stage_filters), blocks_per_stage=tuple(blocks_per_stage),
              num_classes=num_classes)
    return _build(_quicknet_graph, kw, input_shape, batch, seed, calib_x, name)


_KEYS = ("filters", "kernel_size", "strides", "padding", "pad_values", "use_bias",
         "depth_multiplier", "pool_size", "units", "activation", "scale", "center",
         "epsilon", "momentum", "axis")


def describe(model) -> list:
    """The model's layers as JSON-able dicts, each with its ``inbound`` layer names."""
    out = []
    for layer, conf in zip(model.layers, model.get_config()["layers"]):
        c = layer.get_config()
        d = {"class": type(layer).__name__, "name": layer.name}
        for k in _KEYS:
            if k in c:
                v = c[k]
                d[k] = list(v) if isinstance(v, tuple) else v
        for q in ("input_quantizer", "kernel_quantizer"):
            if hasattr(layer, q):
                qq = getattr(layer, q)
                d[q] = None if qq is None else type(qq).__name__
        if hasattr(layer, "kernel_constraint") and layer.kernel_constraint is not None:
            d["kernel_constraint"] = type(layer.kernel_constraint).__name__
        inbound = []
        for node in conf.get("inbound_nodes", []):
            for entry in node:
                inbound.append(entry[0])
        d["inbound"] = inbound
        d["weights"] = [list(w.shape) for w in layer.get_weights()]
        out.append(d)
    return out
