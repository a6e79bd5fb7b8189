"""Rerun every binary-landscape number of docs/binary_landscape.md and docs/results.md.

    python experiments/reproduce.py --out /tmp/bnn_toroid_results [--minima /work/minima]

Runs, with one thread each and in this order (about 60 min of wall time on a shared
2-core machine; see docs/binary_landscape.md, "Cost"):

1. ``binary_landscape.py``: the Fashion-MNIST binary MLP analysis, with the default greedy
   search (500 search images, 4 candidates) on all six pairs, plus the costlier greedy
   search on the whole 2000-image path set with 8 candidates on the SGD–SGD pair;
2. ``committee_hmm.py``: committee machines on HMM data, N = 51, 101, 301, 1001
   (annealing only for N = 51).

The minima of the FMNIST analysis come from ``experiments/train_minima.py``
(docs/training.md). The MNIST MLP numbers quoted in docs/results.md come from
docs/continuous_landscape.md and docs/training.md, whose own scripts reproduce them
(``experiments/continuous/``, ``experiments/train_minima.py``).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(args):
    t0 = time.perf_counter()
    print("$", " ".join(args), flush=True)
    subprocess.run([sys.executable] + args, check=True)
    print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/bnn_toroid_results")
    ap.add_argument("--minima", default="/work/minima")
    ap.add_argument("--figures", default=str(HERE.parent / "docs" / "figures"))
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    bl = [str(HERE / "binary_landscape.py"), "--out", a.out, "--minima", a.minima,
          "--figures", a.figures]
    # the costlier search first (SGD–SGD only), then everything at the default settings
    run(bl + ["--stages", "greedy", "--n-search", "2000", "--candidates", "8",
              "--greedy-pairs", "1"])
    run(bl)
    run([str(HERE / "committee_hmm.py"), "--out", a.out, "--figures", a.figures,
         "--anneal-ns", "51"])
    print(f"total wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
