"""Where each ±1 weight sits in the packed ``uint64`` words: one object per layer.

Every packed layout in the package is *rows of pixels × channels*: a unit's weights
(one row of ``layer.weights``, in C order) are read as ``pixels`` groups of ``channels``
consecutive values, and each group is packed into ``n_words(channels)`` whole words, so
weight ``(unit, pixel, channel)`` is

    word  ``unit · pixels · n_words(channels) + pixel · n_words(channels) + channel // 64``,
    bit   ``channel mod 64``,                                  with bit 1 meaning −1

(the bit order of :func:`bnn_toroid.kernels.pack_bits`: bit ``b`` of word ``w`` holds
value ``64 w + b`` of its group; the padding bits of a group's last word are 0). The
layouts differ only in what a pixel is:

=====================  ====================================================================
layout                 used for
=====================  ====================================================================
:class:`FlatRows`      one pixel of ``K = fan-in`` channels: a dense layer on flat input,
                       a dense *first* layer on real input (its rows stay flat, in NHWC
                       feature order, because BLAS and the pixel kernels read them
                       unpacked), and every layer in the network file format.
:class:`DensePerPixel` a dense layer on a binary image (H, W, C): H·W pixels of C channels,
                       the layout of the packed NHWC activations it reads, so a conv's
                       output feeds it without repacking.
:class:`ConvPerPixel`  a convolution (F, kh, kw, C): kh·kw taps of C channels, packed
                       shape (F, kh, kw, n_words(C)), as the conv kernels read it.
:class:`ChannelMask`   a max-pool's min-pooled channels: one row of C bits.
=====================  ====================================================================

:func:`layout_of` is the one place that decides which layout a layer of a network
gets ("a dense first layer on real input is packed flat, everything else per pixel");
:meth:`BinaryNetwork.layout <bnn_toroid.network.BinaryNetwork.layout>` gives a network's.
Each layout packs, unpacks and *locates* a weight (its flat word index and bit), so a
weight flip on packed words is one XOR, wherever it is made: local-energy masks
(:func:`bnn_toroid.landscape.binary.flip_masks`), path points
(:mod:`bnn_toroid.paths.moves`) and the network's own packing and checks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import kernels as K
from .layers import Conv2d, Dense, MaxPool2d

__all__ = ["Layout", "FlatRows", "DensePerPixel", "ConvPerPixel", "ChannelMask", "layout_of",
           "file_layout"]

WORD = 64


@dataclass(frozen=True)
class Layout:
    """Rows of ``pixels × channels`` ±1 values, each pixel packed into whole words.

    ``shape`` is the unpacked weights' shape (units first), ``packed_shape`` the shape
    of the packed ``uint64`` words. Use a subclass; they fix the three numbers from a
    layer's shape."""

    shape: tuple
    pixels: int
    channels: int
    packed_shape: tuple

    kind = "rows"

    @property
    def units(self) -> int:
        return self.shape[0]

    @property
    def words_per_pixel(self) -> int:
        return K.n_words(self.channels)

    @property
    def row_words(self) -> int:
        """Words per unit."""
        return self.pixels * self.words_per_pixel

    @property
    def size(self) -> int:
        """Number of ±1 values."""
        return math.prod(self.shape)

    def _lead(self, a, tail, what):
        n = len(tail)
        if a.ndim < n or tuple(a.shape[a.ndim - n:]) != tuple(tail):
            raise ValueError(f"{type(self).__name__}.{what}: expected an array of shape "
                             f"(..., {', '.join(map(str, tail))}), got {a.shape}")
        return a.shape[:a.ndim - n]

    def pack(self, w) -> np.ndarray:
        """±1 values ``(..., *shape)`` (``x < 0`` is −1, as :func:`~bnn_toroid.kernels.pack_bits`)
        → uint64 words ``(..., *packed_shape)`` with zero padding bits."""
        w = np.asarray(w)
        lead = self._lead(w, self.shape, "pack")
        rows = w.reshape(lead + (self.units, self.pixels, self.channels))
        return K.pack_bits(rows).reshape(lead + self.packed_shape)

    def unpack(self, words) -> np.ndarray:
        """uint64 words ``(..., *packed_shape)`` → int8 ±1 values ``(..., *shape)``
        (padding bits are ignored)."""
        words = np.asarray(words)
        lead = self._lead(words, self.packed_shape, "unpack")
        rows = words.reshape(lead + (self.units, self.pixels, self.words_per_pixel))
        return K.unpack_bits(rows, self.channels).reshape(lead + self.shape)

    def locate(self, index):
        """Flat C-order indices into the weights → ``(word, bit)``: int64 flat indices into
        the packed words (C order, without leading axes) and int64 bit positions."""
        index = np.asarray(index, np.int64)
        unit, j = np.divmod(index, self.pixels * self.channels)
        pixel, ch = np.divmod(j, self.channels)
        word = unit * self.row_words + pixel * self.words_per_pixel + (ch >> 6)
        return word, ch & (WORD - 1)

    def flip(self, words, index) -> np.ndarray:
        """XOR the bits of the weights at flat ``index`` into ``words`` (``packed_shape``,
        C-contiguous) in place, so each listed weight changes sign (a repeated index
        toggles twice). Returns ``words``."""
        word, bit = self.locate(index)
        flat = words.reshape(-1)
        if not np.shares_memory(flat, words):
            raise ValueError(f"{type(self).__name__}.flip: words must be C-contiguous")
        np.bitwise_xor.at(flat, word, np.left_shift(np.uint64(1), bit.astype(np.uint64)))
        return words

    def flip_mask(self, index) -> np.ndarray:
        """Words ``(packed_shape)`` with the bits of the weights at ``index`` set: XOR
        them into packed weights to flip those weights."""
        return self.flip(np.zeros(self.packed_shape, np.uint64), index)

    def valid_bits(self) -> np.ndarray:
        """Words with every bit that holds a weight set (the padding bits are 0)."""
        return self.pack(-np.ones(self.shape, np.int8))


class FlatRows(Layout):
    """Each unit's weights as one flat row of ``K = prod(shape[1:])`` values: packed shape
    ``(units, n_words(K))``."""

    kind = "flat"

    def __init__(self, shape):
        shape = tuple(int(v) for v in shape)
        k = math.prod(shape[1:])
        super().__init__(shape, 1, k, (shape[0], K.n_words(k)))


class DensePerPixel(Layout):
    """A dense layer ``(units, H·W·C)`` reading a packed NHWC image ``(H, W, C)``: H·W
    pixels of C channels, packed shape ``(units, H·W·n_words(C))``."""

    kind = "dense_per_pixel"

    def __init__(self, units, image):
        h, w, c = (int(v) for v in image)
        units = int(units)
        super().__init__((units, h * w * c), h * w, c, (units, h * w * K.n_words(c)))


class ConvPerPixel(Layout):
    """Convolution filters ``(F, kh, kw, C)``: kh·kw taps of C channels, packed shape
    ``(F, kh, kw, n_words(C))``."""

    kind = "conv_per_pixel"

    def __init__(self, shape):
        f, kh, kw, c = (int(v) for v in shape)
        super().__init__((f, kh, kw, c), kh * kw, c, (f, kh, kw, K.n_words(c)))


class ChannelMask(Layout):
    """A max-pool's ``min_channels``: bool ``(C,)``, True (min-pooled) as bit 1, packed
    shape ``(n_words(C),)``. :meth:`pack` takes booleans, :meth:`unpack` gives them."""

    kind = "channel_mask"

    def __init__(self, channels):
        c = int(channels)
        super().__init__((c,), 1, c, (K.n_words(c),))

    @property
    def units(self) -> int:
        return 1

    def pack(self, mask) -> np.ndarray:
        mask = np.asarray(mask, bool)
        return super().pack(np.where(mask, np.int8(-1), np.int8(1)))

    def unpack(self, words) -> np.ndarray:
        return super().unpack(words) < 0

    def valid_bits(self) -> np.ndarray:
        return self.pack(np.ones(self.shape, bool))


def layout_of(layer, input_shape, real_input: bool) -> Layout:
    """The packed layout of a layer whose input has ``input_shape`` ((K,) or (H, W, C));
    ``real_input`` for a first layer on real-valued (not binarised) input. The one rule:
    a dense first layer on real input is packed flat (its rows are read unpacked, by
    BLAS or the pixel kernels), a dense layer on a binary image per pixel (as the
    activations it reads), a convolution per tap, a pool's mask as one row."""
    if isinstance(layer, MaxPool2d):
        return ChannelMask(input_shape[-1])
    if isinstance(layer, Conv2d):
        return ConvPerPixel(layer.weights.shape)
    if isinstance(layer, Dense):
        if len(input_shape) == 3 and not real_input:
            return DensePerPixel(layer.units, input_shape)
        return FlatRows(layer.weights.shape)
    raise TypeError(f"layout_of: unsupported layer type {type(layer).__name__}")


def file_layout(shape) -> FlatRows:
    """The layout of a layer's weights (shape ``shape``) in the network file format:
    flat rows for every layer kind (:mod:`bnn_toroid.network.files`)."""
    return FlatRows(shape)
