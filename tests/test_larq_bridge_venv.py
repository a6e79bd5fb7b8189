"""Runs the larq bridge tests (tests/larq_bridge) in the larq venv, which needs its own
TensorFlow 2.16 / numpy<2 environment. Build it with ``bash .ci/larq_venv.sh``.

Under CI (``CI=true``) a missing venv is a failure, never a skip.
"""
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("BNN_LARQ_VENV", Path.home() / ".cache" / "bnn_toroid" / "larq-venv"))


def test_larq_bridge_in_its_venv():
    python = VENV / "bin" / "python"
    if not python.exists():
        msg = f"larq venv not found at {VENV}; build it with: bash .ci/larq_venv.sh"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg)
        pytest.skip(msg)
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    # the venv is shared between checkouts: point its editable install at this one
    where = subprocess.run([str(python), "-c", "import bnn_toroid.kernels, os; print(os.path.dirname("
                            "os.path.dirname(os.path.realpath(bnn_toroid.kernels.__file__))))"],
                           cwd="/", capture_output=True, text=True)
    if where.returncode != 0 or Path(where.stdout.strip()) != ROOT:
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps",
                        "--no-build-isolation", "-e", str(ROOT)], check=True, timeout=600)
    res = subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                          str(ROOT / "tests" / "larq_bridge")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=1800)
    tail = "\n".join((res.stdout + res.stderr).splitlines()[-25:])
    assert res.returncode == 0, f"larq bridge tests failed in {VENV}:\n{tail}"
    assert " passed" in res.stdout and "skipped" not in res.stdout.splitlines()[-1], tail
