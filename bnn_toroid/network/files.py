"""The network file format: ``.npz`` arrays plus JSON metadata, never pickle.

The archive holds the packed weights, thresholds and output affine of every layer (and
each hidden layer's :class:`~.layers.BatchNormRecord`, when it has one) and a
``meta`` entry: UTF-8 JSON with the format version, the architecture and the SHA-256 of
the arrays. Loading checks all three, so a truncated, tampered or newer file is refused
with a message that says which.
"""
from __future__ import annotations

import numpy as np

from .. import kernels as K
from .._files import ArchiveError, read_npz, sha256_arrays, write_npz
from .core import BinaryNetwork
from .layers import BatchNormRecord, Conv2d, Dense, MaxPool2d

FORMAT = "bnn_toroid.BinaryNetwork"
FORMAT_VERSION = 1


class NetworkFileError(ValueError):
    """A network file is missing, damaged, tampered with or of an unknown format."""


def _encode(net: BinaryNetwork):
    arrays, specs = {}, []
    for i, layer in enumerate(net.layers):
        key = f"l{i}"
        if isinstance(layer, MaxPool2d):
            spec = {"type": "MaxPool2d", "size": layer.size, "stride": layer.stride}
            if layer.min_channels is not None:
                arrays[f"{key}.min_channels"] = layer.min_channels.astype(np.uint8)
            specs.append(spec)
            continue
        spec = {"type": type(layer).__name__, "shape": list(layer.weights.shape)}
        arrays[f"{key}.weights"] = K.pack_bits(layer.weights.reshape(layer.weights.shape[0], -1))
        if layer.threshold is not None:
            arrays[f"{key}.threshold"] = layer.threshold
        else:
            arrays[f"{key}.out_scale"] = layer.out_scale
            arrays[f"{key}.out_bias"] = layer.out_bias
        if isinstance(layer, Conv2d):
            spec.update(stride=list(layer.stride), padding=layer.padding)
            arrays[f"{key}.pad_value"] = np.asarray(layer.pad_value, np.float64)
        if layer.bn is not None:
            arrays[f"{key}.bn_ratio"] = layer.bn.ratio
            arrays[f"{key}.bn_eps"] = layer.bn.eps
            spec["bn_after_pool"] = layer.bn.after_pool
        specs.append(spec)
    if net.input_scale is not None:
        arrays["input_scale"] = net.input_scale
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "input_shape": list(net.input_shape), "input_layout": net.input_layout,
        "binarize_input": net.binarize_input, "layers": specs,
        "n_weights": net.n_weights, "sha256": sha256_arrays(arrays),
    }
    return arrays, meta


def save(net: BinaryNetwork, path):
    """Write ``net`` to ``path`` (``.npz``) atomically. Returns the path."""
    arrays, meta = _encode(net)
    return write_npz(path, arrays, meta)


def read_meta(path) -> dict:
    """The JSON metadata of a network file, without checking its arrays."""
    return _open(path)[1]


def _open(path):
    try:
        arrays, meta = read_npz(path)
    except ArchiveError as e:
        msg = str(e).replace("no such file", "no such network file")
        raise NetworkFileError(msg.replace("readable .npz archive", "readable network file")) from None
    if meta is None:
        raise NetworkFileError(f"{path}: no readable 'meta' entry; this is not a bnn_toroid network file")
    if meta.get("format") != FORMAT:
        raise NetworkFileError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise NetworkFileError(f"{path}: format version {version!r} is newer than this bnn_toroid "
                               f"reads (up to {FORMAT_VERSION}); upgrade bnn_toroid")
    return arrays, meta


def load(path) -> BinaryNetwork:
    """Read a network written by :func:`save`, verifying its SHA-256 and structure."""
    arrays, meta = _open(path)
    digest = sha256_arrays(arrays)
    if digest != meta.get("sha256"):
        raise NetworkFileError(f"{path}: SHA-256 mismatch (file {digest[:12]}…, recorded "
                               f"{str(meta.get('sha256'))[:12]}…); the file was modified or damaged")
    layers = []
    try:
        for i, spec in enumerate(meta["layers"]):
            key = f"l{i}"
            if spec["type"] == "MaxPool2d":
                mc = arrays.get(f"{key}.min_channels")
                layers.append(MaxPool2d(spec["size"], spec["stride"],
                                        None if mc is None else mc.astype(bool)))
                continue
            shape = tuple(spec["shape"])
            k = int(np.prod(shape[1:]))
            w = K.unpack_bits(arrays[f"{key}.weights"], k).reshape(shape)
            kw = dict(threshold=arrays.get(f"{key}.threshold"), out_scale=arrays.get(f"{key}.out_scale"),
                      out_bias=arrays.get(f"{key}.out_bias"))
            if f"{key}.bn_ratio" in arrays:
                kw["bn"] = BatchNormRecord(arrays[f"{key}.bn_ratio"], arrays[f"{key}.bn_eps"],
                                           bool(spec.get("bn_after_pool", False)))
            if spec["type"] == "Dense":
                layers.append(Dense(w, **kw))
            elif spec["type"] == "Conv2d":
                pv = arrays[f"{key}.pad_value"]
                layers.append(Conv2d(w, stride=tuple(spec["stride"]), padding=spec["padding"],
                                     pad_value=pv if pv.ndim else float(pv), **kw))
            else:
                raise NetworkFileError(f"{path}: unknown layer type {spec['type']!r}")
        return BinaryNetwork(layers, meta["input_shape"], meta["input_layout"],
                             meta["binarize_input"], arrays.get("input_scale"))
    except (KeyError, TypeError) as e:
        raise NetworkFileError(f"{path}: incomplete network file, missing {e}") from None
