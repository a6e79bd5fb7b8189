"""A few samples through a whole chain of dense layers in one compiled call.

At batch 1 the kernels of an MLP 784-1024-1024-10 take ≈ 30 µs, and the Python between
them (a dispatch, an allocation and the argument handling per layer, the logits'
affine in numpy) took as long again. When every layer is small enough to run on the
calling thread anyway (below ``_threads.PARALLEL_MIN_WORK``), a network calls this
instead: the same serial kernels, back to back, without returning to Python.
"""
import numba as nb
import numpy as np

from .gemm import _gemm
from .pixels import _pixel_dense

# Numba resolves module-level dispatchers inside compiled code, not a Twin's attributes
_gemm_serial = _gemm.serial
_pixel_serial = _pixel_dense.serial


@nb.njit(cache=True)
def pixel_dense_chain(xp, panels, t0, wbuf, woff, tbuf, toff, dims, scale, bias):
    """Logits (N, M_last) float64 of: the pixel layer (``xp``, ``panels``, ``t0`` as for
    :func:`.pixels.pixel_dense_t`, threshold fused), then L binary dense layers. Layer
    ``i`` has ``dims[i] = (M, Kw, K)``, packed weights ``wbuf[woff[i]:woff[i+1]]``
    (M × Kw words) and, for all but the last, int64 thresholds
    ``tbuf[toff[i]:toff[i+1]]``; the last one's integer pre-activations ``h`` give
    ``h · scale + bias``, computed as :func:`bnn_toroid.network` does, so the logits are
    the same floats."""
    n = xp.shape[0]
    act = np.empty((n, panels.shape[0]), np.uint64)
    _pixel_serial(xp, panels, t0, np.empty((0, 0), np.int32), act)
    last = dims.shape[0] - 1
    for i in range(last):
        m, kw, k = dims[i, 0], dims[i, 1], dims[i, 2]
        nxt = np.empty((1, n, (m + 63) // 64), np.uint64)
        _gemm_serial(act.reshape((1, n, kw)), wbuf[woff[i]:woff[i + 1]].reshape((1, m, kw)), k,
                     tbuf[toff[i]:toff[i + 1]].reshape((1, m)), np.empty((0, 0, 0), np.int32), nxt)
        act = nxt.reshape((n, (m + 63) // 64))
    m, kw, k = dims[last, 0], dims[last, 1], dims[last, 2]
    h = np.empty((1, n, m), np.int32)
    _gemm_serial(act.reshape((1, n, kw)), wbuf[woff[last]:woff[last + 1]].reshape((1, m, kw)), k,
                 np.empty((0, 0), np.int64), h, np.empty((0, 0, 0), np.uint64))
    out = np.empty((n, m))
    for r in range(n):
        for j in range(m):
            out[r, j] = np.float64(h[0, r, j]) * scale[j] + bias[j]
    return out
