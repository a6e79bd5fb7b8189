"""Tests that need real larq: run them with the larq venv's python (.ci/larq_venv.sh).

larq 0.14 needs Keras 2 behind ``tf.keras``: TF_USE_LEGACY_KERAS=1 must be set before
TensorFlow is imported, so it is set here, before any test module imports it.
"""
import os
import sys
from pathlib import Path

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# the ONNX tests' helpers (random networks, reference evaluator, fixture location)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
