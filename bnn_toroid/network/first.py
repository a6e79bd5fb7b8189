"""The first layer on real input, for one network or a stack of S networks.

Its ±1 weights are stored bit-packed like every other layer's (1/32 of float32) and
unpacked once per stack into the layout the kernels read (one network's worth is kept).

* **Pixels** (uint8 input, or any integers in [0, 255]) are multiplied in 8-bit integer
  arithmetic by :func:`bnn_toroid.kernels.pixel_dense_t` (exact, fused with the
  threshold, no BLAS call): a dense layer directly, a convolution over its patches
  (:func:`bnn_toroid.kernels.pixel_patches`) when its pad value is a pixel too.
* Other integer samples stay integers until here and are multiplied by BLAS (dense) or
  :func:`bnn_toroid.kernels.real_conv2d_t` (conv) in the narrowest float type that
  holds every partial sum exactly (:func:`bnn_toroid.kernels.exact_float_dtype`), so
  the result is exact; real samples in float64.

A stack whose networks differ in a few first-layer weights (the perturbations of local
energy, points of a path) does the product once, for a template ``W_0``, and gives every
network its flips as a sparse correction fused with the threshold
(:mod:`bnn_toroid.kernels.flips`): ``h_s = x W_s^T = h_0 + x (W_s - W_0)^T``. The
template is the bitwise majority of the stack, which minimises the total number of
flips (for the points of a path between two networks, about half of what the first
point would need). That needs integer samples (exact in any order) and few flips: a
flip costs N integer additions, against N·K multiply-adds per unit for a product of
its own.
"""
from __future__ import annotations

import math

import numpy as np

from .. import kernels as K
from ..kernels import forms
from ..kernels.flips import flipped_threshold_pack, flips_csr, majority
from ..kernels.stacks import PAIR_FORMS
from .layers import Dense

# Use the shared product while the flips number at most this fraction of a network's
# first-layer weights. By operation count (not measured) a flip costs N int32 additions
# (8 per AVX2 op) and a product of its own N·K float32 FMAs per unit (16 per cycle per
# core), so the correction should win well past 1/8; the margin is for its irregular
# memory access. Measured: local energy with ε up to 0.1, 8.5–9.3× torch (docs/performance-history.md, "Local energy").
SHARED_MAX_FLIPS = 1 / 8

# A convolution on pixels is a dense product over its patches, made this many output
# pixels at a time (8 bytes per patch pair: ≈ 7 MB for a 3×3×3 filter)
PATCH_ROWS = 1 << 16
# float weights of a chunk of networks made at once by the real-input dense path (32 MB)
STACK_BYTES = 1 << 25


def pixels(xin):
    """The samples as uint8 when every value is an integer in [0, 255] (uint8 and bool
    arrays, integer arrays whose values fit, and float arrays of such integers, as
    images handed over by float32 pipelines are), else None. The 8-bit kernels then
    compute the same integers the float path would, much faster: the MLP 784-1024-1024-10
    at batch 1 took 0.35 ms on the float path against 0.017 ms on uint8 (docs/performance.md)."""
    if xin.dtype == np.uint8:
        return xin
    if xin.dtype == np.bool_:
        return xin.view(np.uint8)
    if not xin.size or xin.dtype.kind not in "iuf":
        return None
    if xin.dtype.kind == "f":
        return K.pixels.float_pixels(xin)   # a fraction anywhere: not pixels
    if not (0 <= xin.min() and xin.max() <= 255):
        return None
    return xin.astype(np.uint8)


def float_input(xin, k):
    """``(x, exact)``: the samples as BLAS wants them, and whether every ``k``-term sum
    is exact. Integers go to the narrowest exact float type (bounded by the dtype for 1-
    and 2-byte integers, by the values otherwise); past 2**53 not even float64 is exact.
    Real samples are already float64."""
    if xin.dtype.kind not in "iu":
        return xin, False
    if xin.dtype.itemsize <= 2:
        bound = 1 << (8 * xin.dtype.itemsize - (xin.dtype.kind == "i"))
    else:
        bound = max(abs(int(xin.min())), abs(int(xin.max()))) if xin.size else 0
    return xin.astype(K.exact_float_dtype(bound, k)), bound * k < 2 ** 53


class RealFirstLayer:
    """Evaluates layer 0 of ``net`` on real input for the S networks of ``params``
    (the stack's packed parameters of that layer: ``w`` uint64, ``T`` or the output
    affine)."""

    def __init__(self, net, params):
        self.net = net
        self.layer = net.layers[0]
        self.params = params
        self.size = params["w"].shape[0]
        self._float = {}      # (which, float dtype or pixel form) -> weights in that layout
        self._flips = None    # (template, CSR flip lists); False: not worth it
        self._pixel_t = None  # (S, words) int32 thresholds of the pixel kernels
        self._pad = None      # (uint8 pad values of a convolution, or None)

    def _kernel_layout(self, w, dtype):
        """Packed weights → the float ``dtype`` layout of the real-input kernels: (K, M)
        or (kh, kw, C, F)."""
        w = self.net.layout(0).unpack(w)
        if isinstance(self.layer, Dense):
            return K.dense_weights(w, dtype)
        return K.conv_weights(w, dtype)

    def _rows(self, w):
        """Packed weights → ±1 int8 rows (M, K), a filter (kh, kw, C) flattened in its
        patches' order."""
        rows = self.net.layout(0).unpack(w)
        return rows.reshape(rows.shape[0], -1)

    def pixel_layout(self, form, which="all"):
        """The weights in the layout of the pixel product's ``form`` (a name of
        :data:`bnn_toroid.kernels.stacks.STACK_FORMS`), stacked for
        :func:`bnn_toroid.kernels.pixel_stack_t`: every network's (S, …) for ``which``
        "all", network 0's (1, …) for "first", the shared template's (1, …) for
        "template". Kept: a stack's parameters do not change."""
        key = (which, form)
        if key not in self._float:
            w = {"all": self.params["w"], "first": self.params["w"][:1],
                 "template": (self.shared_flips() or (None,))[0:1]}[which]
            self._float[key] = K.pixel_stack_weights(form, np.stack([self._rows(v) for v in w]))
        return self._float[key]

    def weights(self, s, dtype):
        """Network ``s``'s ±1 weights in float ``dtype`` and kernel layout: (K, M) or
        (kh, kw, C, F). Network 0's are kept (one copy per stack)."""
        if s != 0:
            return self._kernel_layout(self.params["w"][s], dtype)
        return self._cached(0, dtype)

    def _cached(self, which, dtype):
        key = (which, np.dtype(dtype))
        if key not in self._float:
            w = self.params["w"][0] if which == 0 else self.shared_flips()[0]
            self._float[key] = self._kernel_layout(w, dtype)
        return self._float[key]

    def shared_flips(self):
        """``(template, flips)``: the packed bitwise-majority template and every
        network's flip lists against it (:func:`bnn_toroid.kernels.flips.flips_csr`), or
        None when the stack is a single network, the layer is a convolution, or the flips
        are too many."""
        if self._flips is None:
            self._flips = False
            if self.size > 1 and isinstance(self.layer, Dense):
                w = self.params["w"]
                template = majority(w)
                flips = flips_csr(template, w)
                if flips[0][-1] <= SHARED_MAX_FLIPS * self.size * self.layer.weights.size:
                    self._flips = (template, flips)
        return self._flips or None

    def __call__(self, xin, hidden: bool, collect: bool):
        """Returns (outputs (S, N, …) — packed next-layer input when ``hidden``, else
        pre-activations —, per-network pre-activations when ``collect``)."""
        net, layer, p = self.net, self.layer, self.params
        n = xin.shape[0]
        flat = xin.reshape(n, math.prod(xin.shape[1:]))  # explicit: -1 is ambiguous for n = 0
        px = pixels(flat if isinstance(layer, Dense) else xin)
        if px is not None and (isinstance(layer, Dense) or self._pixel_pad() is not None):
            return self._pixels(px, hidden, collect)
        geom = net._geoms[0]
        k = layer.weights[0].size
        x, exact = float_input(flat if isinstance(layer, Dense) else xin, k)
        # sharing sums in another order: only where every order gives the same result
        shared = self.shared_flips() if hidden and not collect and exact else None
        if shared is not None:
            h0 = K.real_dense_t(x, self._cached("template", x.dtype))
            return flipped_threshold_pack(h0, flat, shared[1], p["T"]), []
        if isinstance(layer, Dense) and hidden and not collect:
            return self._dense_stacked(x), []
        outs, hs = [], []
        for s in range(self.size):
            w = self.weights(s, x.dtype)
            # fused with the threshold: no float output unless it is collected
            t = p["T"][s] if hidden and not collect else None
            if isinstance(layer, Dense):
                # an image into a dense first layer: features in NHWC order, as its weights
                h = K.real_dense_t(x, w, t)
            else:
                pv = layer.pad_value  # in raw input units (scalar or per channel), scaled like x
                if net.input_scale is not None:
                    pv = np.broadcast_to(pv, (geom.shape[2],)) * net.input_scale
                h = K.real_conv2d_t(x, w, layer.stride, self._conv_geometry()[0], pv, t)
            if t is None:
                if collect:
                    hs.append(h)
                if hidden:
                    h = K.threshold_pack(h.reshape(1, -1, h.shape[-1]), p["T"][s:s + 1]).reshape(
                        h.shape[:-1] + (K.n_words(h.shape[-1]),))
            outs.append(h)
        return (outs[0][None] if self.size == 1 else np.stack(outs)), hs

    def _dense_stacked(self, x):
        """The packed next-layer input (S, N, words) of every network's dense layer on
        real rows ``x``: one batched product per chunk of networks, their float weights
        made per call (a stack's would not fit in memory kept) in chunks of at most
        STACK_BYTES."""
        k, m = x.shape[1], self.layer.units
        per = max(1, STACK_BYTES // max(1, k * m * x.dtype.itemsize))
        out = []
        for s0 in range(0, self.size, per):
            s1 = min(s0 + per, self.size)
            w = np.stack([self.weights(s, x.dtype) for s in range(s0, s1)])
            out.append(K.real_dense_t(x, w, self.params["T"][s0:s1]))
        return out[0] if len(out) == 1 else np.concatenate(out)

    def _pixel_thresholds(self):
        """Every network's thresholds as the pixel kernels read them: (S, words)."""
        if self._pixel_t is None:
            T = self.params["T"]
            self._pixel_t = np.stack([K.pixel_thresholds(t, T.shape[1]) for t in T])
        return self._pixel_t

    def _conv_geometry(self):
        """(pads, Ho, Wo) of a first convolution."""
        layer, g = self.layer, self.net._geoms[0]
        pads, (ho, wo) = K.conv_pads(g.shape[0], g.shape[1], *layer.weights.shape[1:3],
                                     layer.stride, layer.padding)
        return pads, ho, wo

    def _pixel_pad(self):
        """A convolution's pad values as uint8 per channel, or None when some is not an
        integer in [0, 255] (a folded input normalisation) and is read: then the padded
        image is not pixels."""
        if self._pad is None:
            c = self.net._geoms[0].shape[2]
            pv = np.broadcast_to(np.asarray(self.layer.pad_value, np.float64), (c,))
            if not any(self._conv_geometry()[0]):
                pv = np.zeros(c)  # never read
            fits = self.net.input_scale is None and ((pv == np.round(pv)) & (pv >= 0) & (pv <= 255)).all()
            self._pad = (pv.astype(np.uint8),) if fits else (None,)
        return self._pad[0]

    def _pixel_form(self, n):
        """The pixel product's form for ``n`` samples (kernels/forms.py): the "first"
        workload's, or "first_one"'s for one sample; a convolution's patches are pixel
        pairs, which the lookup form does not read, so it takes the bytes form then."""
        form = forms.chosen("first_one" if n == 1 else "first").name
        if not isinstance(self.layer, Dense) and form not in PAIR_FORMS:
            return "bytes"
        return form

    def _pixels(self, x, hidden: bool, collect: bool):
        """:meth:`__call__` for uint8 samples: (N, K) into a dense layer, or NHWC images
        into a convolution, whose patches are the rows of the same dense product, made
        ``PATCH_ROWS`` output pixels at a time (each chunk serves every network and is
        dropped before the next is made). All S networks' products of a chunk are one
        call (:func:`bnn_toroid.kernels.pixel_stack_t`)."""
        p, layer, n = self.params, self.layer, x.shape[0]
        m = layer.weights.shape[0]
        form = self._pixel_form(n)
        if isinstance(layer, Dense):
            chunks, shape = [np.ascontiguousarray(x) if form not in PAIR_FORMS else K.pixel_pairs(x)], (n,)
        else:
            pads, ho, wo = self._conv_geometry()
            per = max(1, PATCH_ROWS // (ho * wo))
            pad = self._pixel_pad()
            chunks = (K.pixel_patches_t(x[i:i + per], layer.weights.shape[1:3], layer.stride, pads, pad)
                      for i in range(0, max(n, 1), per))
            shape = (n, ho, wo)

        shared = self.shared_flips() if hidden and not collect else None
        if shared is not None:  # integer sums: exact in any order (dense layers only)
            h0 = K.pixel_stack_t(form, chunks[0], self.pixel_layout(form, "template"), m)[0]
            return flipped_threshold_pack(h0, x, shared[1], p["T"]), []
        fused = hidden and not collect  # threshold inside the kernel: no int32 output
        weights = self.pixel_layout(form)
        t = self._pixel_thresholds() if fused else None
        parts = [K.pixel_stack_t(form, rows, weights, m, t) for rows in chunks]
        h = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        h = h.reshape((self.size,) + shape + h.shape[-1:])
        hs = []
        if not fused:
            if collect:
                hs = list(h)
            if hidden:
                rows = math.prod(h.shape[1:-1])  # explicit: -1 is ambiguous for 0 samples
                h = K.threshold_pack(h.reshape(self.size, rows, m), p["T"]).reshape(
                    h.shape[:-1] + (K.n_words(m),))
        return h, hs
