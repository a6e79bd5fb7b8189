"""The network file format: ``.npz`` arrays plus JSON metadata, never pickle.

The archive holds the packed weights (each layer's as flat rows, ``uint64 (units,
n_words(fan-in))`` with bit 1 = −1: :func:`.layout.file_layout`, not the kernels'
per-pixel layout), thresholds and output affine of every layer (and
each hidden layer's :class:`~.layers.BatchNormRecord`, when it has one) and a
``meta`` entry: UTF-8 JSON with the format version, the architecture and a SHA-256.

Format version 2 (what :func:`save` writes): the SHA-256 covers the arrays *and* every
metadata entry (:func:`bnn_toroid._files.sha256_content`), so an edited
``binarize_input``, input shape or layer stride is refused like an edited weight.
Version 1 files (written by earlier releases) hash the arrays only; they are still
read and their metadata is checked for consistency with the arrays, but an edit that
keeps it consistent cannot be detected: save such a file again to get version 2.

Loading refuses a missing, truncated, tampered, inconsistent or newer file, and a file
of another kind, with a :class:`NetworkFileError` that says which.
"""
from __future__ import annotations

import numpy as np

from .._files import ArchiveError, as_path, read_npz, sha256_arrays, sha256_content, write_npz
from .core import LAYOUTS, BinaryNetwork
from .layers import BatchNormRecord, Conv2d, Dense, MaxPool2d, NetworkError
from .layout import file_layout

FORMAT = "bnn_toroid.BinaryNetwork"
FORMAT_VERSION = 2
EXPECTED = "a bnn_toroid network file (.npz written by BinaryNetwork.save)"
_TORCH_FORMAT = "bnn_toroid.TorchModel"
_RESIDUAL_FORMAT = "bnn_toroid.ResidualBinaryNetwork"  # network/residual_files.py


class NetworkFileError(ValueError):
    """A network file is missing, damaged, tampered with, inconsistent or of another
    format; the message names the file, what it is and what was expected."""


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
        # every layer's weights as flat rows, whatever the kernels' layout (layout.file_layout)
        arrays[f"{key}.weights"] = file_layout(layer.weights.shape).pack(layer.weights)
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
        "n_weights": net.n_weights,
    }
    meta["sha256"] = sha256_content(arrays, meta)
    return arrays, meta


def check_save_args(func: str, net, path, kind=BinaryNetwork, hint: str = ""):
    """TypeError unless ``net`` is a ``kind`` (a class or a tuple of them) and ``path`` a
    path; says so when the two were swapped (``save(path, net)``)."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(net, kinds):
        if isinstance(path, kinds):
            raise TypeError(f"{func}: the arguments are swapped: got net={net!r} and a "
                            f"{type(path).__name__} as path; expected {func}(net, path)")
        names = " or ".join(k.__name__ for k in kinds)
        raise TypeError(f"{func}: net must be a {names}, got {type(net).__name__}{hint}")
    as_path(path, func)


def save(net: BinaryNetwork, path):
    """Write ``net`` to ``path`` (``.npz``, format version 2) atomically. Returns the path.
    A :class:`~.residual.ResidualBinaryNetwork` is written in the residual format
    (:mod:`.residual_files`).

    ``path`` must be a regular file or a new path; a folder, a device, a pipe or a
    symbolic link is refused with :class:`~bnn_toroid._files.SaveTargetError`
    (``docs/interop.md``, file safety)."""
    from .residual import ResidualBinaryNetwork
    if isinstance(net, ResidualBinaryNetwork):
        from .residual_files import save_residual
        return save_residual(net, path)
    check_save_args("save", net, path, hint=(
        "; torch models are saved with bnn_toroid.io.save_model(model, path, spec)"
        if hasattr(net, "state_dict") else ""))
    arrays, meta = _encode(net)
    return write_npz(path, arrays, meta)


def read_meta(path) -> dict:
    """The JSON metadata of a network file, without checking its arrays."""
    return _open(path)[1]


def _open(path):
    try:
        arrays, meta = read_npz(path, EXPECTED)
    except ArchiveError as e:
        raise NetworkFileError(str(e)) from None
    if meta is None:
        raise NetworkFileError(f"{path}: this is a .npz archive without a readable 'meta' entry, "
                               f"not a bnn_toroid network file; expected {EXPECTED}")
    fmt = meta.get("format")
    if fmt == _TORCH_FORMAT:
        raise NetworkFileError(f"{path}: this is a torch model file (format {fmt!r}); expected "
                               f"{EXPECTED}. Read it with bnn_toroid.io.load_model or io.load_any")
    if fmt == _RESIDUAL_FORMAT:  # its version is checked by residual_files.load_residual
        return arrays, meta
    if fmt != FORMAT:
        raise NetworkFileError(f"{path}: format {fmt!r}; expected {FORMAT!r}, i.e. {EXPECTED}")
    check_version(path, meta.get("format_version"), FORMAT_VERSION)
    return arrays, meta


def check_version(path, version, newest: int):
    """A file's ``format_version``: an integer from 1 to ``newest`` (not a string, a
    float or a bool), else :class:`NetworkFileError`."""
    if type(version) is not int:
        raise NetworkFileError(f"{path}: format_version {version!r} ({type(version).__name__}); "
                               f"expected an integer from 1 to {newest}")
    if version > newest:
        raise NetworkFileError(f"{path}: format_version {version} is newer than this bnn_toroid "
                               f"reads (1 to {newest}); upgrade bnn_toroid")
    if version < 1:
        raise NetworkFileError(f"{path}: format_version {version}; expected an integer from 1 "
                               f"to {newest} (versions start at 1)")


def check_digest(path, arrays, meta):
    """The recorded SHA-256 against the content: arrays and metadata from version 2,
    arrays only in version 1 (module doc)."""
    recorded = meta.get("sha256")
    if meta["format_version"] >= 2:
        digest, what = sha256_content(arrays, meta), "arrays and metadata"
    else:
        digest, what = sha256_arrays(arrays), "arrays"
    if digest != recorded:
        raise NetworkFileError(f"{path}: SHA-256 mismatch over the {what} (file {digest[:12]}…, "
                               f"recorded {str(recorded)[:12]}…); the file was modified or damaged")


def _ints(path, where, v, n=None, lo=1) -> tuple:
    if not isinstance(v, list) or (n is not None and len(v) != n) or not v or not all(
            type(e) is int and e >= lo for e in v):
        want = f"{n} integers" if n else "a list of integers"
        raise NetworkFileError(f"{path}: {where} is {v!r}; expected {want} >= {lo}")
    return tuple(v)


def _int(path, where, v, lo=1) -> int:
    if type(v) is not int or v < lo:
        raise NetworkFileError(f"{path}: {where} is {v!r}; expected an integer >= {lo}")
    return v


def _array(path, arrays, key, kinds, ndim=None):
    if key not in arrays:
        raise NetworkFileError(f"{path}: incomplete network file: array {key!r} is missing")
    a = arrays[key]
    if a.dtype.kind not in kinds or (ndim is not None and a.ndim != ndim):
        raise NetworkFileError(f"{path}: array {key!r} is {a.dtype} of shape {a.shape}; expected "
                               f"{'a ' + str(ndim) + '-D ' if ndim is not None else ''}array of "
                               f"kind {kinds!r}")
    return a


def _layer(path, arrays, i, spec):
    key, where = f"l{i}", f"layer {i}"
    if not isinstance(spec, dict) or "type" not in spec:
        raise NetworkFileError(f"{path}: {where} spec is {spec!r}; expected an object with a 'type'")
    kind = spec["type"]
    if kind == "MaxPool2d":
        mc = arrays.get(f"{key}.min_channels")
        return MaxPool2d(_int(path, f"{where} size", spec.get("size")),
                         _int(path, f"{where} stride", spec.get("stride")),
                         None if mc is None else _array(path, arrays, f"{key}.min_channels", "bu", 1)
                         .astype(bool))
    if kind not in ("Dense", "Conv2d"):
        raise NetworkFileError(f"{path}: {where} has type {kind!r}; expected Dense, Conv2d or MaxPool2d")
    shape = _ints(path, f"{where} shape", spec.get("shape"), 2 if kind == "Dense" else 4)
    lay = file_layout(shape)
    packed = _array(path, arrays, f"{key}.weights", "u", 2)
    if packed.dtype != np.uint64 or packed.shape != lay.packed_shape:
        raise NetworkFileError(f"{path}: array '{key}.weights' is {packed.dtype} {packed.shape}; "
                               f"{where} of shape {list(shape)} needs uint64 {lay.packed_shape}")
    w = lay.unpack(packed)
    kw = {}
    if f"{key}.threshold" in arrays:
        kw["threshold"] = _array(path, arrays, f"{key}.threshold", "iuf", 1)
    else:
        kw["out_scale"] = _array(path, arrays, f"{key}.out_scale", "iuf", 1)
        kw["out_bias"] = _array(path, arrays, f"{key}.out_bias", "iuf", 1)
    if f"{key}.bn_ratio" in arrays:
        after = spec.get("bn_after_pool", False)
        if type(after) is not bool:
            raise NetworkFileError(f"{path}: {where} bn_after_pool is {after!r}; expected true or false")
        kw["bn"] = BatchNormRecord(_array(path, arrays, f"{key}.bn_ratio", "f", 1),
                                   _array(path, arrays, f"{key}.bn_eps", "f"), after)
    if kind == "Dense":
        return Dense(w, **kw)
    padding = spec.get("padding")
    if padding not in ("valid", "same"):
        raise NetworkFileError(f"{path}: {where} padding is {padding!r}; expected 'valid' or 'same'")
    pv = _array(path, arrays, f"{key}.pad_value", "iuf")
    if pv.ndim > 1:
        raise NetworkFileError(f"{path}: array '{key}.pad_value' has shape {pv.shape}; expected a "
                               "scalar or one value per channel")
    return Conv2d(w, stride=_ints(path, f"{where} stride", spec.get("stride"), 2), padding=padding,
                  pad_value=pv if pv.ndim else float(pv), **kw)


def load(path) -> BinaryNetwork:
    """Read a network written by :func:`save`, verifying its SHA-256 (module doc) and
    that metadata and arrays describe one consistent network. A residual network file
    (:mod:`.residual_files`) gives a :class:`~.residual.ResidualBinaryNetwork`."""
    arrays, meta = _open(path)
    if meta.get("format") == _RESIDUAL_FORMAT:
        from .residual_files import load_residual
        return load_residual(path, arrays, meta)
    check_digest(path, arrays, meta)
    layouts = meta.get("input_layout")
    if layouts not in LAYOUTS:
        raise NetworkFileError(f"{path}: input_layout is {layouts!r}; expected one of {LAYOUTS}")
    binarize = meta.get("binarize_input")
    if type(binarize) is not bool:
        raise NetworkFileError(f"{path}: binarize_input is {binarize!r}; expected true or false")
    input_shape = _ints(path, "input_shape", meta.get("input_shape"))
    specs = meta.get("layers")
    if not isinstance(specs, list) or not specs:
        raise NetworkFileError(f"{path}: layers is {specs!r}; expected a non-empty list of layer specs")
    scale = None
    if "input_scale" in arrays:
        scale = _array(path, arrays, "input_scale", "iuf")
    try:
        net = BinaryNetwork([_layer(path, arrays, i, spec) for i, spec in enumerate(specs)],
                            input_shape, layouts, binarize, scale)
    except (NetworkError, ValueError) as e:
        if isinstance(e, NetworkFileError):
            raise
        raise NetworkFileError(f"{path}: inconsistent network file: {e}") from None
    if meta.get("n_weights") != net.n_weights:
        raise NetworkFileError(f"{path}: n_weights is {meta.get('n_weights')!r} but the layers hold "
                               f"{net.n_weights} weights; the file is inconsistent")
    return net
