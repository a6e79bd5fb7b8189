"""When to run a kernel on one thread, without touching Numba's thread count.

A kernel whose loop uses ``prange`` is compiled twice from the same source: once with
``parallel=True`` and once plain (where ``prange`` is ``range``). Small work calls the
plain one. The alternative, ``numba.set_num_threads(1)`` around the parallel kernel,
costs two round trips from Python, ≈ 30 µs per call: a third of a batch-1
4096 × 4096 product (docs/performance-history.md, "Batch 1").
"""
import os
import types

# Numba's OpenMP workers (GNU libgomp) spin after each parallel kernel; by default long
# enough to take the second vCPU from the BLAS product or threshold kernel that runs
# next. Measured on this 2-vCPU machine, GOMP_SPINCOUNT default (300000) / 10000 / 3000:
# MLP 784-1024-1024-10 predict at batch 64 8.0 / 1.4–1.5 / 1.2–1.6 ms; VGG predict at
# batch 1 3.0–3.1 / 2.7 / 2.7–3.0 ms; a batch-1 4096² product 85–99 / 86–93 / 87–93 µs
# (it needs the workers awake: 0.32 ms with OMP_WAIT_POLICY=passive). libgomp reads
# this when it is loaded, i.e. at Numba's first parallel launch; a value set by the
# user wins.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import numba  # noqa: E402
import numba as nb  # noqa: E402

# Below this many word operations a 2-thread launch costs more than it saves. Measured
# on the quiet machine (batch-1 products, K = 4096, M = 64 … 4096 columns): serial wins
# up to 16 K words (8.3 against 10.3 µs), parallel from 32 K (11.0 against 14.7 µs; at
# 262 K, 65 against 101 µs). On a loaded machine a launch can stall while the worker
# waits for a vCPU; that hits torch's thread pool alike.
PARALLEL_MIN_WORK = 1 << 15


class Twin:
    """A kernel compiled parallel and serial; call it with the work size first."""

    def __init__(self, py_func):
        self.parallel = nb.njit(parallel=True, cache=True)(py_func)
        # a distinct qualname gives the serial compilation its own on-disk cache entry
        clone = types.FunctionType(py_func.__code__, py_func.__globals__,
                                   py_func.__name__ + "_serial", py_func.__defaults__,
                                   py_func.__closure__)
        clone.__qualname__ = py_func.__qualname__ + "_serial"
        clone.__module__ = py_func.__module__
        clone.__doc__ = py_func.__doc__
        self.serial = nb.njit(cache=True)(clone)
        self.__doc__ = py_func.__doc__

    def variant(self, suffix: str, replace: dict) -> "Twin":
        """This kernel compiled again with the module globals in ``replace`` swapped in
        (inline helpers of another vector width, say): one source for several forms.
        The clone's qualname ends in ``suffix``, so it has its own on-disk cache entry."""
        f = self.parallel.py_func
        g = dict(f.__globals__)
        g.update(replace)
        clone = types.FunctionType(f.__code__, g, f.__name__ + suffix, f.__defaults__, f.__closure__)
        clone.__qualname__ = f.__qualname__ + suffix
        clone.__module__ = f.__module__
        clone.__doc__ = f.__doc__
        return Twin(clone)

    def __call__(self, work, *args):
        if work >= PARALLEL_MIN_WORK and numba.get_num_threads() > 1:
            return self.parallel(*args)
        return self.serial(*args)


def twin(py_func) -> Twin:
    """Decorator: compile ``py_func`` as a :class:`Twin`."""
    return Twin(py_func)
