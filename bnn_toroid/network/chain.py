"""Small batches of an MLP on pixels in one compiled call (:mod:`bnn_toroid.kernels.chain`).

Applies to a single network (a stack of size 1) whose first layer is dense on real input
and every later layer dense, when the input is pixels and every layer's work is below
the size at which its kernel would start a second thread: then the whole forward pass is
one call into compiled code, with the same kernels and the same results as
:func:`.core._forward`.
"""
from __future__ import annotations

import numpy as np

from .. import kernels as K
from ..kernels._threads import PARALLEL_MIN_WORK
from ..kernels.chain import pixel_dense_chain
from .first import pixels
from .layers import Dense


class DenseChain:
    def __init__(self, net, params, first):
        self.first = first
        layers = net.layers
        self.ok = (first is not None and first.size == 1
                   and all(isinstance(layer, Dense) for layer in layers) and len(layers) >= 2)
        if not self.ok:
            return
        dims, ws, ts, work = [], [], [], []
        for p in params[1:]:
            w = p["w"][0]
            dims.append((w.shape[0], w.shape[1], 0))
            ws.append(w.reshape(-1))
            if "T" in p:
                ts.append(p["T"][0])
            work.append(w.shape[0] * w.shape[1])  # per sample, as binary_gemm counts it
        for i, layer in enumerate(layers[1:]):
            dims[i] = (dims[i][0], dims[i][1], layer.weights.shape[1])
        m0, k0 = layers[0].weights.shape
        work.append(-(-m0 // 64) * -(-k0 // 2) * 4)  # as pixel_dense_t counts it
        self.rows = PARALLEL_MIN_WORK // max(work) if max(work) else 0  # largest serial batch
        self.dims = np.array(dims, np.int64)
        self.wbuf = np.ascontiguousarray(np.concatenate(ws))
        self.woff = np.concatenate([[0], np.cumsum([len(w) for w in ws])]).astype(np.int64)
        self.tbuf = np.ascontiguousarray(np.concatenate(ts) if ts else np.zeros(0), np.int64)
        self.toff = np.concatenate([[0], np.cumsum([len(t) for t in ts])]).astype(np.int64)
        self.scale = np.ascontiguousarray(params[-1]["scale"][0], np.float64)
        self.bias = np.ascontiguousarray(params[-1]["bias"][0], np.float64)

    def __call__(self, xin):
        """Logits (1, N, classes), or None when the chain does not apply to ``xin``."""
        if not self.ok or not 0 < xin.shape[0] <= self.rows:
            return None
        px = pixels(xin.reshape(xin.shape[0], -1))
        if px is None:
            return None
        f = self.first
        out = pixel_dense_chain(K.pixel_pairs(px), f.weights(0, "pixels"), f._pixel_thresholds(0),
                                self.wbuf, self.woff, self.tbuf, self.toff, self.dims,
                                self.scale, self.bias)
        return out[None]
