#!/usr/bin/env bash
# Build (or reuse) the Python venv in which the larq bridge runs: real larq + TensorFlow
# + tf2onnx, next to this package. Usage:
#
#     bash .ci/larq_venv.sh [DIR]
#
# DIR defaults to ${BNN_LARQ_VENV:-$HOME/.cache/bnn_toroid/larq-venv}. The pins below are
# hashed into DIR/.bnn_toroid_pins; when the marker matches and the venv's python imports
# larq, tf2onnx and onnxruntime, the venv is reused (so CI can cache DIR). This package is
# (re)installed editable from the repository that holds this script on every call, because
# CI clones the repository into a fresh folder.
#
# Everything that runs larq must set TF_USE_LEGACY_KERAS=1 (larq 0.14 needs Keras 2, which
# TensorFlow 2.16 provides as tf-keras). This script exports it for its own checks; the
# test commands must set it too (tests/larq_bridge/conftest.py also sets it before import).
#
# Exit status: 0 when the venv is usable, non-zero otherwise.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
DIR="${1:-${BNN_LARQ_VENV:-$HOME/.cache/bnn_toroid/larq-venv}}"
PYTHON="${BNN_LARQ_PYTHON:-python3.11}"
export TF_USE_LEGACY_KERAS=1

# The pins. tensorflow 2.16.1 needs numpy<2; tf2onnx 1.16.1 needs protobuf~=3.20, which in
# turn caps onnx below 1.18 (onnx>=1.18 needs protobuf>=4.25.1); pip picks the newest of the
# unpinned packages that fit. torch==2.13.0 is the CPU wheel on this machine's disk (never
# install an unpinned torch: that pulls a CUDA build of several GB).
PINS=(
  "tensorflow==2.16.1"
  "tf-keras==2.16.0"
  "larq==0.14.0"
  "tf2onnx==1.16.1"
  "protobuf==3.20.3"
  "numpy<2"
  "onnxruntime"
  "onnx<1.18"
  "numba"
  "scipy"
  "torch==2.13.0"
  "pytest"
  "hypothesis"
)
HASH="$(printf '%s\n' "$PYTHON" "${PINS[@]}" | sha256sum | cut -d' ' -f1)"
MARKER="$DIR/.bnn_toroid_pins"

check() {
  "$DIR/bin/python" - <<'PY'
import os
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
import numpy, larq, tf2onnx, onnxruntime, onnx, tensorflow as tf, torch, numba, scipy
assert numpy.__version__.split(".")[0] == "1", numpy.__version__
torch.from_numpy(numpy.zeros(3)).sum()  # torch built against numpy 2 must run with numpy 1
print("larq venv ok: larq", larq.__version__, "tf", tf.__version__, "tf2onnx", tf2onnx.__version__,
      "onnx", onnx.__version__, "onnxruntime", onnxruntime.__version__, "numpy", numpy.__version__,
      "torch", torch.__version__)
PY
}

if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$HASH" ]] && check >/dev/null 2>&1; then
  echo "reusing larq venv at $DIR"
else
  start=$(date +%s)
  echo "building larq venv at $DIR (this takes several minutes)"
  rm -rf "$DIR"
  mkdir -p "$(dirname "$DIR")"
  "$PYTHON" -m venv "$DIR"
  "$DIR/bin/python" -m pip install --quiet --upgrade pip setuptools wheel
  "$DIR/bin/python" -m pip install --quiet "${PINS[@]}"
  echo "$HASH" > "$MARKER"
  echo "built in $(( $(date +%s) - start )) s"
fi

# This package, editable and without dependencies (they are pinned above).
if [[ -f "$REPO/setup.py" || -f "$REPO/pyproject.toml" ]]; then
  "$DIR/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e "$REPO"
else
  echo "error: no setup.py or pyproject.toml in $REPO; cannot install bnn_toroid" >&2
  exit 1
fi
check
"$DIR/bin/python" -c "import bnn_toroid, bnn_toroid.onnx, bnn_toroid.larq; print('bnn_toroid from', bnn_toroid.__file__)"
