#!/usr/bin/env bash
# The study of docs/results.md, resumable: re-run the same command after an interruption
# and every finished task is kept (bnn-toroid sweep's state files).
#   bash experiments/study/run.sh [OUT_ROOT [SWEEP_OPTIONS...]]   (default /work/study_runs)
# e.g. --update after a config change re-runs the tasks whose inputs changed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="${1:-/work/study_runs}"
shift || true
mkdir -p "$root"
for cfg in binary_fmnist real_mnist real_fmnist binary_fmnist_1001; do
    bnn-toroid sweep "$here/$cfg.json" --out "$root/$cfg" --workers 2 -q \
        --json "$root/$cfg.report.json" "$@"
done
