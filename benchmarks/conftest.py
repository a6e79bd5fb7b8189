import sys

import pytest

from bnn_toroid import bench


@pytest.fixture(scope="session")
def threads():
    """Benchmarks run Numba and torch with the same thread count (default 2)."""
    import os
    return bench.set_threads(int(os.environ.get("BNN_BENCH_THREADS", "2")))


def report(row):
    """Print a ratio row so it shows in the pytest-benchmark output (-s)."""
    print(f"\n{row.name} {row.shape}: ours {row.ours_ms:.3f} ms, {row.reference} {row.ref_ms:.3f} ms, "
          f"ratio {row.ratio:.2f}x, {row.gmacs:.0f} G binary MAC/s, {row.threads} threads", file=sys.stderr)
