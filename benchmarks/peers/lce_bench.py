"""Peer benchmark: ``BinaryNetwork.predict`` against larq-compute-engine and onnxruntime.

Run it in the peer venv (``bash benchmarks/peers/lce_bench.sh`` builds the venv and runs
this file). For each network it

1. builds the model in larq 0.14 with random weights and random BatchNorm statistics:
   - ``mlp``: binary MLP 784-1024-1024-10 (real-valued input to the first layer);
   - ``vgg``: VGG-style net on 32×32×3: conv 128 → [128 + pool, 256, 256 + pool, 512,
     512 + pool] → dense 1024 → 10, 3×3 kernels, ``same`` padding with ``pad_values=1``,
     real-valued input to the first conv, BatchNorm after every layer;
2. converts it with LCE's converter (``convert_keras_model``) for each batch size (the
   TFLite graph has a fixed batch) and loads it in LCE's interpreter with each kernel
   option the interpreter offers (default, ``use_indirect_bgemm``, ``use_xnnpack``);
3. exports it with tf2onnx (opset 17), runs the file in onnxruntime, and loads the same
   file with :func:`bnn_toroid.onnx.load`;
4. checks that the outputs agree (larq/Keras float32 as the reference: argmax and max
   |difference| of the logits), then
5. times ours against each peer with :func:`bnn_toroid.bench.paired_stats` (interleaved
   blocks, medians over rounds of both the blocks' mean call and their median call), at
   batch 1 and 64, every engine on the same number of threads.

Inputs are random integer "pixels" in [0, 255]; the peers always get them as float32
(their input type). Ours is timed on every input kind a user passes (``--ours-input``):
the same values as uint8 (the first layer is then the exact 8-bit product of
``bnn_toroid.kernels.pixels``, over the patches for the VGG's first conv, whose pad value
1 is a pixel too), and the peers' own float32 array (the general input path). A third
model, ``mlp_sign``, binarises its input with ``ste_sign`` (centred values, float32 in).

Prints a table and writes JSON (``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

SPECS = {
    "mlp": {"input": (784,)},
    "mlp_sign": {"input": (784,)},   # the MLP with its input binarised (ste_sign), float32 in
    "vgg": {"input": (32, 32, 3)},
    # residual binary networks (larq_residual.py), full depth and width at 128×128×3:
    # Bi-Real-Net-18 (16 binary 3×3 convs, 64-128-256-512) and QuickNet-Small
    # (4×4 blocks, 32-64-256-512), 1000 classes. 128 rather than 224 keeps the float
    # larq reference and the calibration of the random BN statistics fast on 2 cores;
    # the last stage of both still runs at 4×4 pixels.
    "bireal": {"input": (128, 128, 3), "residual": "bireal"},
    "quicknet": {"input": (128, 128, 3), "residual": "quicknet"},
}


def build_larq(name: str, batch: int | None, seed: int = 0):
    """The larq model ``name`` with deterministic random weights (same for every batch)."""
    if "residual" in SPECS[name]:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import larq_residual
        shape = SPECS[name]["input"]
        # BN statistics calibrated on the bench's own input kind: integer pixels 0-255
        calib = np.random.default_rng(seed).integers(0, 256, (4,) + shape).astype(np.float32)
        build = {"bireal": larq_residual.build_bireal,
                 "quicknet": larq_residual.build_quicknet}[SPECS[name]["residual"]]
        return build(input_shape=shape, batch=batch, seed=seed, calib_x=calib, name=name)
    import larq as lq
    import tensorflow as tf
    K = tf.keras
    tf.keras.utils.set_random_seed(seed)
    binq = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                kernel_constraint="weight_clip", use_bias=False)
    first = dict(kernel_quantizer="ste_sign", kernel_constraint="weight_clip", use_bias=False)
    inp = K.Input(shape=SPECS[name]["input"], batch_size=batch, name="x")
    x = inp
    if name in ("mlp", "mlp_sign"):
        x = lq.layers.QuantDense(1024, **(binq if name == "mlp_sign" else first))(x)
        x = K.layers.BatchNormalization(scale=False, momentum=0.9)(x)
        x = lq.layers.QuantDense(1024, **binq)(x)
        x = K.layers.BatchNormalization(scale=False, momentum=0.9)(x)
        x = lq.layers.QuantDense(10, **binq)(x)
        x = K.layers.BatchNormalization(scale=False, momentum=0.9)(x)
    else:
        x = lq.layers.QuantConv2D(128, 3, padding="same", pad_values=1.0, **first)(x)
        x = K.layers.BatchNormalization(scale=False, momentum=0.9)(x)
        for filters, pool in ((128, True), (256, False), (256, True), (512, False), (512, True)):
            x = lq.layers.QuantConv2D(filters, 3, padding="same", pad_values=1.0, **binq)(x)
            if pool:
                x = K.layers.MaxPool2D(2)(x)
            x = K.layers.BatchNormalization(scale=False, momentum=0.9)(x)
        x = K.layers.Flatten()(x)
        x = lq.layers.QuantDense(1024, **binq)(x)
        x = K.layers.BatchNormalization(scale=False, momentum=0.9)(x)
        x = lq.layers.QuantDense(10, **binq)(x)
        x = K.layers.BatchNormalization(scale=False, momentum=0.9)(x)
    model = K.Model(inp, x, name=name)
    rng = np.random.default_rng(seed)
    # random BatchNorm statistics at the scale of each pre-activation (±1 sums of fan-in
    # terms; the first layer sees pixels up to 255), so thresholds are not trivial
    fan_in = None
    for layer in model.layers:
        if isinstance(layer, (lq.layers.QuantDense, lq.layers.QuantConv2D)):
            k = layer.kernel.shape
            fan_in = int(np.prod(k[:-1]))
            scale = np.sqrt(fan_in) * (128.0 if layer.input_quantizer is None else 1.0)
        if isinstance(layer, K.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            beta = rng.normal(0, 1, n).astype(np.float32)
            mean = rng.normal(0, 0.5 * scale, n).astype(np.float32)
            if fan_in and scale > np.sqrt(fan_in):  # first layer: centre the pixel sums
                mean += 127.5 * rng.normal(0, np.sqrt(fan_in) / 8, n).astype(np.float32)
            var = (scale * rng.uniform(0.5, 2.0, n)).astype(np.float32) ** 2
            layer.set_weights([beta, mean, var])
    return model


def lce_options():
    return {"default": {}, "indirect_bgemm": {"use_indirect_bgemm": True},
            "xnnpack": {"use_xnnpack": True}}


def make_lce(model, threads: int, options: dict):
    from larq_compute_engine import convert_keras_model
    from larq_compute_engine.tflite.python.interpreter import Interpreter
    fb = convert_keras_model(model)
    out = {}
    for name, kw in options.items():
        try:
            it = Interpreter(fb, num_threads=threads, **kw)
            out[name] = it
        except Exception as e:  # an option the build does not support
            out[name] = e
    return fb, out


def lce_ops(flatbuffer: bytes) -> list:
    """Operator names in a TFLite flatbuffer (to show which LCE kernels run)."""
    try:
        from tensorflow.lite.python import schema_py_generated as schema
        m = schema.Model.GetRootAsModel(flatbuffer, 0)
        codes = []
        for i in range(m.OperatorCodesLength()):
            c = m.OperatorCodes(i)
            cust = c.CustomCode()
            codes.append(cust.decode() if cust else str(max(c.BuiltinCode(), c.DeprecatedBuiltinCode())))
        g = m.Subgraphs(0)
        return [codes[g.Operators(i).OpcodeIndex()] for i in range(g.OperatorsLength())]
    except Exception as e:  # informational only
        return [f"(could not read ops: {e})"]


def export_onnx(model, shape, path):
    import tensorflow as tf
    import tf2onnx
    spec = [tf.TensorSpec((None,) + tuple(shape), tf.float32, name="x")]
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=path)


def ort_session(ort, path, threads: int, spin: bool):
    """An onnxruntime session on ``threads`` intra-op threads, run sequentially."""
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if not spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="mlp,vgg,mlp_sign")
    ap.add_argument("--ours-input", default="uint8,float32",
                    help="what ours is fed for mlp and vgg: uint8 pixels, the peers' float32 "
                         "array, or both (one row each); mlp_sign always takes float32")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--save-dir", default=None,
                    help="keep the tf2onnx files (NAME.onnx) and inputs here for benchmarks/")
    args = ap.parse_args(argv)

    import numba
    import onnxruntime as ort

    import bnn_toroid
    from bnn_toroid import bench
    from bnn_toroid import onnx as bonnx

    threads = bench.set_threads(args.threads)
    rng = np.random.default_rng(1)
    rows, checks, ops = [], [], {}
    load0 = os.getloadavg()
    if args.save_dir:
        os.makedirs(args.save_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            shape = SPECS[name]["input"]
            ref_model = build_larq(name, None)
            path = os.path.join(args.save_dir or tmp, f"{name}.onnx")
            export_onnx(ref_model, shape, path)
            net = bonnx.load(path)
            # onnxruntime's workers spin-wait after a run (its default); on 2 vCPUs that
            # takes a core from whoever runs next, so it is also timed with spinning off
            sess = ort_session(ort, path, threads, spin=True)
            sess_quiet = ort_session(ort, path, threads, spin=False)
            for batch in (int(b) for b in args.batches.split(",")):
                x8 = rng.integers(0, 256, (batch,) + shape).astype(np.uint8)
                # mlp_sign binarises its input: centred half-integers, never 0
                xf = x8.astype(np.float32) - (127.5 if name == "mlp_sign" else 0.0)
                kinds = (["float32"] if name == "mlp_sign" else args.ours_input.split(","))
                feeds = {"uint8": x8, "float32": xf}
                model = build_larq(name, batch)
                fb, interps = make_lce(model, threads, lce_options())
                ops[name] = sorted(set(lce_ops(fb)))
                ref = ref_model.predict(xf, verbose=0, batch_size=batch)
                ours = net.predict(feeds[kinds[0]])
                onnx_out = sess.run(None, {sess.get_inputs()[0].name: xf})[0]
                check = {"model": name, "batch": batch,
                         "ours_vs_larq_max_abs": float(np.abs(ours - ref).max()),
                         "ours_vs_larq_argmax_agree": float((ours.argmax(1) == ref.argmax(1)).mean()),
                         "onnxruntime_vs_larq_max_abs": float(np.abs(onnx_out - ref).max()),
                         # the same file in two engines: deep nets flip signs of values within
                         # float32 rounding of 0, so this is the check that matters there
                         "ours_vs_onnxruntime_max_abs": float(np.abs(ours - onnx_out).max()),
                         "ours_vs_onnxruntime_argmax_agree": float((ours.argmax(1) == onnx_out.argmax(1)).mean())}
                iname = sess.get_inputs()[0].name
                peers = {"onnxruntime": lambda: sess.run(None, {iname: xf}),
                         "onnxruntime no-spin": lambda: sess_quiet.run(None, {iname: xf})}
                for opt, it in interps.items():
                    if isinstance(it, Exception):
                        check[f"lce_{opt}"] = f"unavailable: {it}"
                        continue
                    try:
                        lo = it.interpreter.predict([xf])[0]
                    except Exception as e:
                        check[f"lce_{opt}"] = f"failed: {e}"
                        continue
                    check[f"lce_{opt}_vs_larq_max_abs"] = float(np.abs(lo - ref).max())
                    check[f"lce_{opt}_argmax_agree"] = float((lo.argmax(1) == ref.argmax(1)).mean())
                    peers[f"LCE {opt}"] = (lambda it=it: it.interpreter.predict([xf]))
                checks.append(check)
                print(json.dumps(check), flush=True)
                macs = batch * _binary_macs(net)
                for kind in kinds:
                    if not np.array_equal(net.predict(feeds[kind]), ours):
                        raise AssertionError(f"{name}: ours on {kind} input differs from ours on {kinds[0]}")
                for kind, (peer, fn) in ((k, p) for k in kinds for p in peers.items()):
                    xo = feeds[kind]
                    # settle: every engine here keeps worker threads spinning after a
                    # run (onnxruntime, TFLite's ruy, OpenMP); each block starts quiet
                    st = bench.paired_stats(lambda: net.predict(xo), fn, args.repeats, settle=0.05)
                    o, r, ratio = st["ours_s"], st["ref_s"], st["ratio"]
                    row = bench.Row(f"predict {name} ({kind} in)", f"batch {batch}", threads, o * 1e3,
                                    r * 1e3, ratio, macs / o / 1e9, peer).as_dict()
                    # the typical call as well: on 2 shared vCPUs a block's mean carries
                    # the calls that waited for a core (both engines alike)
                    row.update(ours_call_median_ms=st["ours_call_median_s"] * 1e3,
                               ref_call_median_ms=st["ref_call_median_s"] * 1e3,
                               call_median_ratio=st["call_median_ratio"],
                               calls_per_block=st["calls_per_block"])
                    rows.append(row)
                    print(f"{name:8s} {kind:7s} batch {batch:3d}  ours {o*1e3:9.3f} ms  {peer:22s} {r*1e3:9.3f} ms"
                          f"  ratio {ratio:6.2f}x   per-call medians {st['ours_call_median_s']*1e3:8.3f} /"
                          f" {st['ref_call_median_s']*1e3:8.3f} ms  ratio {st['call_median_ratio']:6.2f}x",
                          flush=True)
    import larq
    import larq_compute_engine as lce
    import tensorflow as tf
    report = {
        "rows": rows, "checks": checks, "lce_ops": ops, "threads": threads,
        "loadavg_before": load0, "loadavg_after": os.getloadavg(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "versions": {"larq": larq.__version__, "larq_compute_engine": lce.__version__,
                     "tensorflow": tf.__version__, "onnxruntime": ort.__version__,
                     "numba": numba.__version__, "bnn_toroid": getattr(bnn_toroid, "__version__", "?"),
                     "python": platform.python_version()},
        "cpu": bench._cpu_name(), "cpu_model": bench._cpu_model(),
        "forms": bnn_toroid.kernels.forms.report(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    return report


def _binary_macs(net) -> int:
    """Multiply-accumulates of one sample through the network (all layers of a chain;
    the binary convolutions of a residual network, counted from their output shapes)."""
    if not hasattr(net, "layers"):
        x = np.zeros((1,) + tuple(net.input_shape))
        sums = net.binary_sums(x)
        return sum(h[0, 0].size * net.op_at(loc).weights[0].size
                   for h, loc in zip(sums, net.binary_locations()))
    total = 0
    for i, layer in enumerate(net.layers):
        if hasattr(layer, "weights") and layer.weights is not None and layer.weights.ndim >= 2:
            if layer.weights.ndim == 4:  # conv: per output pixel
                total += _conv_out_pixels(net, i) * layer.weights.size
            else:
                total += layer.weights.size
    return total


def _conv_out_pixels(net, i):
    from bnn_toroid.kernels import conv_pads
    h, w, _ = net.layer_input_shape(i)
    layer = net.layers[i]
    _, kh, kw, _ = layer.weights.shape
    _, (ho, wo) = conv_pads(h, w, kh, kw, layer.stride, layer.padding)
    return ho * wo


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
