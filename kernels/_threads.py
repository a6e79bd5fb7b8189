"""When to run a kernel on one thread."""
from contextlib import contextmanager

import numba

# Below this many word operations a parallel launch costs more than it saves (on a
# loaded 2-core machine a 2-thread launch was measured at ~15 ms against 0.1 ms on one
# thread for a batch-1 4096×4096 product), so small work runs on one thread.
PARALLEL_MIN_WORK = 1 << 21


@contextmanager
def _threads_for(work: int):
    if work >= PARALLEL_MIN_WORK or numba.get_num_threads() == 1:
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)
