#!/usr/bin/env bash
# Build (or reuse) the LCE peer venv and run the peer benchmark in it.
#
#     bash benchmarks/peers/lce_bench.sh [--models mlp,vgg] [--batches 1,64] [--threads 2] [--out FILE]
#
# Arguments go to lce_bench.py. The venv is ${BNN_LCE_VENV:-$HOME/.cache/bnn_toroid/lce-venv}
# (see lce_venv.sh for the pins).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="${BNN_LCE_VENV:-$HOME/.cache/bnn_toroid/lce-venv}"
bash "$HERE/lce_venv.sh" "$DIR" >&2
export TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2
exec "$DIR/bin/python" "$HERE/lce_bench.py" "$@"
