"""Make the residual reference fixtures (issue 22) with real larq: Bi-Real and QuickNet.

Run in the larq venv (larq 0.14, TensorFlow 2.16.1, tf2onnx 1.16.1, onnxruntime):

    TF_USE_LEGACY_KERAS=1 ~/.cache/bnn_toroid/larq-venv/bin/python \\
        tests/larq_bridge/make_residual_fixtures.py [--out tests/data/larq_residual]

For each NAME in (bireal_small, quicknet_small) it writes, in the format of the chain
fixtures (/work/shared/fixtures/larq):
- NAME.onnx: the model exported by tf2onnx at opset 17;
- NAME.npz: ``x`` (256 inputs, N(0, 1), the first 32 rounded to integers), ``logits``
  (larq's output for ``x``, no softmax) and every Keras weight as ``w/<layer>/<i>``;
- NAME.json: the architecture (layer classes, configs, quantizers, inbound layers).
It fails unless onnxruntime on NAME.onnx reproduces larq's logits (max |diff| ≤ 1e-4 · max(1, max |logit|), argmax identical).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks" / "peers"))

import numpy as np  # noqa: E402

import larq_residual as lr  # noqa: E402

INPUT = (32, 32, 3)
MODELS = {
    "bireal_small": (lr.build_bireal, dict(input_shape=INPUT, stage_filters=(16, 32, 64),
                                            blocks_per_stage=(2, 2, 2), num_classes=10)),
    "quicknet_small": (lr.build_quicknet, dict(input_shape=INPUT, stage_filters=(16, 32, 64),
                                                blocks_per_stage=(2, 2, 2), num_classes=10)),
}


def inputs(seed=0, n=256):
    x = np.random.default_rng(seed).normal(0, 1, (n,) + INPUT).astype(np.float32)
    x[:32] = np.round(x[:32])
    return x


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "tests" / "data" / "larq_residual"))
    args = ap.parse_args(argv)
    import larq
    import onnx
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x = inputs()
    for name, (build, kw) in MODELS.items():
        tf.keras.backend.clear_session()  # layer names start from conv2d, add, ... again
        model = build(seed=0, name=name, calib_x=inputs(seed=1, n=64), **kw)
        logits = model.predict(x, verbose=0, batch_size=64).astype(np.float32)
        path = out / f"{name}.onnx"
        spec = [tf.TensorSpec((None,) + INPUT, tf.float32, name="x")]
        tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=str(path))
        onnx.checker.check_model(onnx.load(str(path)))
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        diff = float(np.abs(got - logits).max())
        agree = float((got.argmax(1) == logits.argmax(1)).mean())
        print(f"{name}: onnxruntime vs larq max |diff| = {diff:.3g} (max |logit| {np.abs(logits).max():.3g}), argmax agree {agree:.3f}, "
              f"{path.stat().st_size} bytes", flush=True)
        if diff > 1e-4 * max(1.0, float(np.abs(logits).max())) or agree < 1:
            raise AssertionError(f"{name}: onnxruntime does not reproduce larq")
        weights = {f"w/{layer.name}/{i}": w for layer in model.layers
                   for i, w in enumerate(layer.get_weights())}
        np.savez_compressed(out / f"{name}.npz", x=x, logits=logits, **weights)
        desc = {"name": name, "input_shape": list(INPUT), "builder": build.__name__,
                "builder_kwargs": {k: list(v) if isinstance(v, tuple) else v
                                   for k, v in kw.items()},
                "seed": 0, "layers": lr.describe(model),
                "outputs": "logits (Dense, no softmax)",
                "larq_sign_convention": "sign(x) = +1 if x >= 0 else -1 (also for -0.0)",
                "onnxruntime_vs_larq_max_abs": diff,
                "made_with": {"tensorflow": tf.__version__, "larq": larq.__version__,
                              "tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__,
                              "onnxruntime": ort.__version__}}
        (out / f"{name}.json").write_text(json.dumps(desc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
