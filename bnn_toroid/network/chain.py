"""An MLP on pixels in one compiled call (:mod:`bnn_toroid.kernels.chain`).

Applies to a single network (a stack of size 1) whose first layer is dense on real input
and every later layer dense, when the input is pixels: then the whole forward pass is
one call into compiled code, on the calling thread when every layer's work is below the
size at which its kernel would start a second thread, with the same results as
:func:`.core._forward`.
"""
from __future__ import annotations

import numba
import numpy as np

from .. import kernels as K
from ..kernels import PARALLEL_MIN_WORK
from ..kernels import forms
from ..kernels.bits import sign_pack_finite
from ..kernels.chain import FIRST, HIDDEN, binary_chain, pixel_dense_chain
from ..kernels.gemm import dense_tiles
from ..kernels.nibbles import nibble_weights
from ..kernels.pixels import pixel_thresholds
from .first import pixels
from .layers import Dense



def _flat(parts, count, dtype=np.uint64):
    """1-D arrays → (their concatenation as ``dtype``, int64 offsets: ``offs[i]`` where
    part ``i`` starts, then the total, padded with it to ``count`` entries)."""
    offs = np.zeros(count, np.int64)
    offs[1:len(parts) + 1] = np.cumsum([len(q) for q in parts])
    offs[len(parts) + 1:] = offs[len(parts)]
    return np.ascontiguousarray(np.concatenate(parts) if parts else np.zeros(0), dtype), offs


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


class DenseChain:
    """The compiled chain of a single dense network: on pixels (a real first layer, its
    product in a pixel form) or, for a network that binarises its input, on the input's
    signs (every layer binary)."""

    def __init__(self, net, params, first):
        self.first = first
        layers = net.layers
        dense = all(isinstance(layer, Dense) for layer in layers)
        # one network, binarised flat input: the first layer is a binary layer like the
        # rest (an image's signs are packed per pixel, and so are the weights that read them)
        self.signs = (dense and net.binarize_input and net.input_layout == "flat"
                      and params[0]["w"].shape[0] == 1)
        self.ok = self.signs or (dense and first is not None and first.size == 1 and len(layers) >= 2)
        if not self.ok:
            return
        binary = list(zip(layers, params)) if self.signs else list(zip(layers[1:], params[1:]))
        dims, ws, ts = [], [], []
        for layer, p in binary:
            w = p["w"][0]
            dims.append((w.shape[0], w.shape[1], layer.weights.shape[1]))  # (M, Kw, K)
            ws.append(dense_tiles(w).reshape(-1))
            if "T" in p:
                ts.append(p["T"][0])
        self.dims = np.array(dims, np.int64)
        # forms chosen once, at build: the hidden form decides the layout made here
        self.hidden = forms.chosen("hidden").name
        self.wbuf, self.woff = _flat(ws, len(ws) + 1)
        self.tbuf, self.toff = _flat(ts, len(ts) + 1, np.int64)
        # no nibble patterns: empty buffers with all-zero offsets, as _nibbles lays them out
        self.nib = (self._nibbles(dims, [p for _, p in binary]) if self.hidden.startswith("nibbles")
                    else _flat([], len(dims)) + _flat([], len(dims)))
        self.scale = np.ascontiguousarray(params[-1]["scale"][0], np.float64)
        self.bias = np.ascontiguousarray(params[-1]["bias"][0], np.float64)
        # binary_chain's arguments after the packed input, made once
        self.binary = (self.wbuf, self.woff, self.tbuf, self.toff, self.dims, self.scale,
                       self.bias, self.nib, HIDDEN[self.hidden])
        self.k = layers[0].weights.shape[1]
        # sample shapes that prepare_input accepts and passes on unchanged, flattened in
        # memory order: none when it scales the input, and NCHW samples are transposed
        self.shapes = () if net.input_scale is not None else {
            "flat": (tuple(net.input_shape), (self.k,)),
            "NHWC": (tuple(net.input_shape),)}.get(net.input_layout, ())
        # the largest batch run serially: per sample, each layer's work as its kernel
        # counts it (binary_gemm_trusted: M·Kw words) against PARALLEL_MIN_WORK
        work = [m * kw for m, kw, _ in dims]
        if not self.signs:
            self.first_forms = (forms.chosen("first").name, forms.chosen("first_one").name)
            self.t0 = first._pixel_thresholds()[0]
            # pixel_dense_chain's arguments after the first layer's weights
            self.tail = (self.t0,) + self.binary
            self.panels = {}  # first-layer weights by form, as the first call of each needs them
            work.append(K.pixels.pixel_work(1, layers[0].weights.shape[0], -(-self.k // 2)))
        self.rows = PARALLEL_MIN_WORK // max(work)

    @staticmethod
    def _nibbles(dims, params):
        """The binary layers' (but the output layer's) nibble patterns and int32
        thresholds, each flat with one offset per layer (the ``nib`` argument of
        :func:`.kernels.chain.pixel_dense_chain`); ``params`` are the binary layers'."""
        hidden = list(zip(dims[:-1], params[:-1]))
        pats = [nibble_weights(p["w"][0], k).reshape(-1) for (_, _, k), p in hidden]
        thr = [pixel_thresholds(p["T"][0], m) for (m, _, _), p in hidden]
        return _flat(pats, len(dims)) + _flat(thr, len(dims))

    def __call__(self, xin):
        """Logits (1, N, classes), or None when the chain does not apply to ``xin`` (the
        prepared input: packed signs, or samples that may be pixels)."""
        n = xin.shape[0]
        if not self.ok or n == 0:
            return None
        if self.signs:
            return self._run_signs(np.ascontiguousarray(xin))[None]
        px = pixels(xin.reshape(n, -1))
        if px is None:
            return None
        return self._run(np.ascontiguousarray(px))[None]

    def fast(self, x, batch_size):
        """Logits (N, classes) when ``x`` is already what the chain reads: a C-contiguous
        array (N, *input_shape), or (N, K) for a flat input, with 0 < N <= ``batch_size``,
        of uint8 or of float32/float64 pixels (integers in [0, 255], converted in one
        compiled pass), for a network whose input has no scale and is not NCHW; for a
        network that binarises its input, finite float32/float64 values (packed in one
        compiled pass). Else None: the caller takes the general path, which also gives
        the errors. Every check of ``prepare_input`` passes for such an array, so none is
        repeated: at batch 1 the general path's validation and dispatch took a quarter of
        the call (docs/performance-history.md, "Round 5")."""
        if not self.ok or type(x) is not np.ndarray or not x.flags.c_contiguous:
            return None
        if x.dtype not in _FLOATS and (self.signs or x.dtype != np.uint8):
            return None
        n = x.shape[0] if x.ndim else 0
        if not 0 < n <= batch_size or x.shape[1:] not in self.shapes:
            return None  # (batch_size: an int >= 1, checked by NetworkStack.predict)
        if self.signs:
            act = np.empty((n, -(-self.k // 64)), np.uint64)
            return self._run_signs(act) if sign_pack_finite(x.reshape(n, self.k), act) else None
        if x.dtype != np.uint8:
            x = K.pixels.float_pixels(x)
            if x is None:
                return None
        return self._run(x.reshape(n, self.k))

    def _threads(self, n):
        return numba.get_num_threads() if n > self.rows else 1

    def _run_signs(self, act):
        """Logits (N, classes) of packed input rows (N, Kw), C-contiguous."""
        return binary_chain(act, *self.binary, self._threads(act.shape[0]))

    def _run(self, px):
        """Logits (N, classes) of uint8 pixels (N, K), C-contiguous."""
        n = px.shape[0]
        threads = self._threads(n)
        parallel = threads > 1
        # the first layer's form (kernels/forms.py): one for batches, one for a single
        # sample on this thread, where the weights stay in L2 from call to call
        form = self.first_forms[1] if n == 1 and not parallel else self.first_forms[0]
        return pixel_dense_chain(px, *self.args(form), threads)

    def args(self, form="lookup"):
        """The arguments of :func:`.kernels.chain.pixel_dense_chain` after the pixels and
        before the thread count, with the first layer in ``form`` (a name of
        :data:`.kernels.chain.FIRST`) and its weights in that form's layout."""
        panels = self.panels.get(form)
        if panels is None:
            panels = self.panels[form] = self.first.pixel_layout(form, "first")[0]
        return (FIRST[form], panels) + self.tail
