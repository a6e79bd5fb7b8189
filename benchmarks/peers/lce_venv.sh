#!/usr/bin/env bash
# Build (or reuse) the peer venv for benchmarks/peers/lce_bench.py: larq + larq-compute-engine
# (LCE) + TensorFlow + tf2onnx + onnxruntime, plus this package (editable, no deps) so that
# ours, LCE's interpreter and onnxruntime are timed side by side in one process.
#
#     bash benchmarks/peers/lce_venv.sh [DIR]
#
# DIR defaults to ${BNN_LCE_VENV:-$HOME/.cache/bnn_toroid/lce-venv}. The pins are hashed into
# DIR/.bnn_toroid_pins; a venv whose marker matches and whose python imports everything is
# reused. larq 0.14 needs Keras 2: everything that runs larq sets TF_USE_LEGACY_KERAS=1.
#
# larq-compute-engine 0.16.0 ships manylinux2014 x86_64 wheels for CPython 3.9-3.11 (checked
# with `pip download --no-deps larq-compute-engine==0.16.0` under python3.11); it is built
# against TensorFlow 2.16, hence the pins below. torch==2.13.0 is the CPU wheel on this
# machine's disk (never an unpinned torch: that pulls a CUDA build of several GB).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
DIR="${1:-${BNN_LCE_VENV:-$HOME/.cache/bnn_toroid/lce-venv}}"
PYTHON="${BNN_LCE_PYTHON:-python3.11}"
export TF_USE_LEGACY_KERAS=1

PINS=(
  "tensorflow==2.16.1"
  "tf-keras==2.16.0"
  "larq==0.14.0"
  "larq-compute-engine==0.16.0"
  "tf2onnx==1.16.1"
  "protobuf==3.20.3"
  "numpy<2"
  "onnxruntime"
  "onnx<1.18"
  "numba"
  "scipy"
  "threadpoolctl"
  "psutil"
  "torch==2.13.0"
)
HASH="$(printf '%s\n' "$PYTHON" "${PINS[@]}" | sha256sum | cut -d' ' -f1)"
MARKER="$DIR/.bnn_toroid_pins"

check() {
  "$DIR/bin/python" - <<'PY'
import os
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
import numpy, larq, larq_compute_engine as lce, tf2onnx, onnxruntime, onnx, tensorflow as tf, torch, numba
assert numpy.__version__.split(".")[0] == "1", numpy.__version__
torch.from_numpy(numpy.zeros(3)).sum()
print("lce venv ok: larq", larq.__version__, "lce", lce.__version__, "tf", tf.__version__,
      "tf2onnx", tf2onnx.__version__, "onnxruntime", onnxruntime.__version__,
      "numpy", numpy.__version__, "numba", numba.__version__, "torch", torch.__version__)
PY
}

if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$HASH" ]] && check >/dev/null 2>&1; then
  echo "reusing LCE peer venv at $DIR"
else
  start=$(date +%s)
  echo "building LCE peer venv at $DIR (several minutes)"
  rm -rf "$DIR"
  mkdir -p "$(dirname "$DIR")"
  "$PYTHON" -m venv "$DIR"
  "$DIR/bin/python" -m pip install --quiet --upgrade pip setuptools wheel
  "$DIR/bin/python" -m pip install --quiet "${PINS[@]}"
  echo "$HASH" > "$MARKER"
  echo "built in $(( $(date +%s) - start )) s"
fi
"$DIR/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e "$REPO"
check
