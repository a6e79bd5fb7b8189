"""``BinaryNetwork.predict`` against larq-compute-engine 0.16 and onnxruntime (issue 8).

The peers live in their own venv (TensorFlow 2.16 + larq + LCE + tf2onnx):
``benchmarks/peers/lce_bench.sh`` builds it and runs ``lce_bench.py``, which times ours,
LCE's interpreter and onnxruntime side by side in one process (interleaved pairs, same
threads). This test runs that script when the venv exists (or ``BNN_RUN_PEERS=1`` asks to
build it), records its ratios in ``extra_info``, and times ``predict`` here with
pytest-benchmark on the very ONNX files the peers ran. Targets: >= 5x LCE, faster than
onnxruntime, at batch 1 and 64.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PEERS = Path(__file__).parent / "peers"
VENV = Path(os.environ.get("BNN_LCE_VENV", Path.home() / ".cache/bnn_toroid/lce-venv"))


@pytest.fixture(scope="module")
def peer_report(tmp_path_factory, threads):
    if not (VENV / "bin/python").exists() and os.environ.get("BNN_RUN_PEERS") != "1":
        pytest.skip(f"no LCE peer venv at {VENV}; run bash benchmarks/peers/lce_venv.sh "
                    "(or set BNN_RUN_PEERS=1)")
    d = tmp_path_factory.mktemp("peers")
    out = d / "lce.json"
    subprocess.run(["bash", str(PEERS / "lce_bench.sh"), "--threads", str(threads), "--out", str(out),
                    "--save-dir", str(d)], check=True, stdout=sys.stderr)
    rep = json.loads(out.read_text())
    rep["dir"] = d
    return rep


@pytest.mark.parametrize("batch", [1, 64])
@pytest.mark.parametrize("model", ["mlp", "vgg"])
def test_predict_vs_lce_and_onnxruntime(benchmark, peer_report, model, batch):
    from bnn_toroid import onnx as bonnx
    net = bonnx.load(peer_report["dir"] / f"{model}.onnx")
    shape = (784,) if model == "mlp" else (32, 32, 3)
    x = np.random.default_rng(1).integers(0, 256, (batch,) + shape).astype(np.uint8)
    benchmark(net.predict, x)
    rows = [r for r in peer_report["rows"] if r["name"] == f"predict {model}" and r["shape"] == f"batch {batch}"]
    for r in rows:
        benchmark.extra_info[f"ratio vs {r['reference']}"] = r["ratio"]
        print(f"\n{model} batch {batch}: ours {r['ours_ms']:.3f} ms, {r['reference']} {r['ref_ms']:.3f} ms, "
              f"ratio {r['ratio']:.2f}x", file=sys.stderr)
    checks = [c for c in peer_report["checks"] if c["model"] == model and c["batch"] == batch]
    assert checks and checks[0]["ours_vs_larq_argmax_agree"] == 1.0
