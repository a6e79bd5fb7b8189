"""Bad inputs and hostile files at the library level (issue 21, items 3-10, 14-18, 24-27,
and their siblings).

Every refusal is checked for its exception type *and* its message: the message must name
the offending argument, its value where it has one, and what was expected. Where a bad
input used to give a silently wrong answer, the test also checks the right answer of the
corrected call, computed independently. Networks are small and built by hand (or frozen
from untrained torch models) so the module runs in seconds.
"""
from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
import socket
import stat
import tracemalloc
import zipfile

import numpy as np
import onnx  # a dependency of the package (setup.py), as is onnxruntime
import pytest
import torch
from onnx import TensorProto as TP
from onnx import helper as oh
from onnx import numpy_helper as onh

import bnn_toroid as bt
from bnn_toroid import io as bio
from bnn_toroid import kernels as K
from bnn_toroid import nn as bnn
from bnn_toroid._files import SaveTargetError, read_npz, sha256_content, write_npz
from bnn_toroid.network import (BatchNormRecord, BinaryNetwork, Conv2d, Dense, MaxPool2d,
                                 NetworkError, NetworkFileError, NetworkStack)
from bnn_toroid.network.files import FORMAT_VERSION
from bnn_toroid.onnx import MAX_TENSOR_ELEMENTS, MIN_OPSET, OnnxImportError



def check(excinfo, *parts):
    """Every fragment occurs in the exception's message (and no unsafe-loading hint)."""
    msg = str(excinfo.value)
    for p in parts:
        assert str(p) in msg, f"{p!r} not in message {msg!r}"
    assert "allow_pickle" not in msg, msg
    return msg


def pm1(rng, shape):
    return rng.choice(np.array([-1, 1], np.int8), size=shape)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------------ networks
@pytest.fixture(scope="module")
def nets():
    """Small networks on digits-shaped input ((N, 1, 8, 8) uint8 pixels, 10 classes):
    binarised and real-input MLPs (flat layout, so they take (N, 64) and (N, 1, 8, 8)),
    a real-input MLP with an input scale and BatchNorm records, and binarised and
    real-input conv nets (NCHW) with a pool that min-pools some channels."""
    rng = np.random.default_rng(21)
    out = {}
    out["mlp_bin"] = BinaryNetwork(
        [Dense(pm1(rng, (12, 64)), threshold=rng.integers(-6, 7, 12)),
         Dense(pm1(rng, (10, 12)), out_scale=rng.uniform(0.5, 2, 10), out_bias=rng.normal(size=10))],
        (64,), binarize_input=True)
    out["mlp_real"] = BinaryNetwork(
        [Dense(pm1(rng, (12, 64)), threshold=rng.normal(0, 300, 12),
               bn=BatchNormRecord(rng.normal(size=12), 1e-3)),
         Dense(pm1(rng, (8, 12)), threshold=rng.integers(-3, 4, 8),
               bn=BatchNormRecord(rng.normal(size=8), 1e-3)),
         Dense(pm1(rng, (10, 8)))],
        (64,), input_scale=rng.uniform(0.5, 2, 64))
    for name, binarize in (("conv_bin", True), ("conv_real", False)):
        thr0 = rng.integers(-4, 5, 6) if binarize else rng.normal(0, 200, 6)
        out[name] = BinaryNetwork(
            [Conv2d(pm1(rng, (6, 3, 3, 1)), threshold=thr0, padding="same",
                    pad_value=1 if binarize else 0.0),
             MaxPool2d(2, min_channels=np.arange(6) % 2 == 0),
             Conv2d(pm1(rng, (5, 2, 2, 6)), threshold=rng.integers(-4, 5, 5), stride=(2, 2)),
             Dense(pm1(rng, (9, 20)), threshold=rng.integers(-3, 4, 9)),
             Dense(pm1(rng, (10, 9)))],
            (1, 8, 8), "NCHW", binarize_input=binarize)
    return out


@pytest.fixture(scope="module")
def xy(digits):
    """200 digits images (uint8, (N, 1, 8, 8)) and labels."""
    return digits.x[:200], digits.y[:200]


@pytest.fixture(scope="module")
def torch_mlp():
    torch.manual_seed(0)
    return bnn.BinaryMLP([64, 16, 10], input_norm=(8.0, 4.0)).eval()


NET_NAMES = ("mlp_bin", "mlp_real", "conv_bin", "conv_real")


# ------------------------------------------------------------------------ item 3: the hash covers the metadata
def _rewrite(src, dst, edit, resign=False):
    """Re-zip the network file ``src`` as ``dst`` after ``edit(meta)``; with ``resign`` the
    SHA-256 is recomputed, as a careful forger would, so that only the metadata checks
    stand between the file and a wrong network."""
    arrays, meta = read_npz(src)
    edit(meta)
    if resign:
        meta["sha256"] = sha256_content(arrays, meta)
    write_npz(dst, arrays, meta)
    return dst


def _set(key, value):
    return lambda meta: meta.__setitem__(key, value)


def _set_layer(i, key, value):
    return lambda meta: meta["layers"][i].__setitem__(key, value)


TAMPER = {
    "binarize_input flipped": ("mlp_bin", _set("binarize_input", False)),
    "input_shape reshaped": ("mlp_bin", _set("input_shape", [8, 8])),
    "a conv stride": ("conv_bin", _set_layer(2, "stride", [1, 1])),
    "a conv padding": ("conv_bin", _set_layer(0, "padding", "valid")),
    "bn_after_pool flipped": ("mlp_real", _set_layer(0, "bn_after_pool", True)),
    "an extra metadata key": ("mlp_bin", _set("note", "harmless?")),
}


@pytest.mark.parametrize("case", list(TAMPER))
def test_tampered_metadata_is_refused(case, nets, tmp_path):
    name, edit = TAMPER[case]
    net = nets[name]
    path = net.save(tmp_path / "net.npz")
    bad = _rewrite(path, tmp_path / "tampered.npz", edit)
    with pytest.raises(NetworkFileError) as e:
        bt.load(bad)
    check(e, str(bad), "SHA-256 mismatch", "arrays and metadata", "modified or damaged")


def test_flipped_binarize_input_would_change_the_predictions(nets, xy, tmp_path):
    """Why item 3 mattered: with the hash recomputed, the flipped file is a valid network
    of another function, so only the hash over the metadata can refuse the edit."""
    net = nets["mlp_bin"]
    path = net.save(tmp_path / "net.npz")
    forged = bt.load(_rewrite(path, tmp_path / "forged.npz", _set("binarize_input", False),
                              resign=True))
    assert not forged.binarize_input
    assert not np.array_equal(forged.predict(xy[0]), net.predict(xy[0]))


def test_tampered_torch_model_metadata_is_refused(torch_mlp, tmp_path):
    path = bio.save_model(torch_mlp, tmp_path / "m.npz", "bmlp:64-16-10")
    bad = _rewrite(path, tmp_path / "bad.npz", _set("input_norm", [[0.0], [1.0]]))
    with pytest.raises(NetworkFileError) as e:
        bio.load_model(bad)
    check(e, str(bad), "SHA-256 mismatch", "arrays and metadata")


# ------------------------------------------------------------------------ item 18: format_version
@pytest.mark.parametrize("version", ["1", "2", 0, -1, True, False, 1.0, None, [2]],
                         ids=repr)
@pytest.mark.parametrize("loader", ["network", "torch model"])
def test_format_version_must_be_an_integer_in_range(version, loader, nets, torch_mlp, tmp_path):
    """A string, bool, float or null version, or one below 1, is refused as such (it used
    to call "1" newer and accept 0 and true); the hash is recomputed so that only the
    version is at fault."""
    if loader == "network":
        path, load = nets["mlp_bin"].save(tmp_path / "n.npz"), bt.load
    else:
        path, load = bio.save_model(torch_mlp, tmp_path / "n.npz", "bmlp:64-16-10"), bio.load_model
    bad = _rewrite(path, tmp_path / "v.npz", _set("format_version", version), resign=True)
    with pytest.raises(NetworkFileError) as e:
        load(bad)
    check(e, str(bad), f"format_version {version!r}", f"expected an integer from 1 to {FORMAT_VERSION}")


def test_newer_format_version_says_upgrade(nets, tmp_path):
    path = nets["mlp_bin"].save(tmp_path / "n.npz")
    bad = _rewrite(path, tmp_path / "v.npz", _set("format_version", FORMAT_VERSION + 1), resign=True)
    with pytest.raises(NetworkFileError) as e:
        bt.load(bad)
    check(e, f"format_version {FORMAT_VERSION + 1} is newer", f"1 to {FORMAT_VERSION}",
          "upgrade bnn_toroid")


# ------------------------------------------------------------------------ item 17: foreign files
def _zip(path, entries):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return path


def _foreign(kind, tmp_path, nets, torch_mlp):
    p = tmp_path / f"file.{kind.replace(' ', '_')}"
    if kind == "text":
        p.write_text("epoch,loss\n1,0.5\n")
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "npy":
        with open(p, "wb") as f:  # a file object: np.save adds no suffix
            np.save(f, np.arange(6.0))
    elif kind == "onnx":
        bt.onnx.export(nets["mlp_bin"], p)
    elif kind == "gzip":
        p.write_bytes(gzip.compress(b"x" * 100))
    elif kind == "binary":
        p.write_bytes(bytes(range(255, 0, -1)) * 4)
    elif kind == "folder":
        p.mkdir()
    elif kind == "missing":
        pass
    elif kind == "pickled npz":
        with open(p, "wb") as f:
            np.savez(f, meta=np.array([{"format": "bnn_toroid.BinaryNetwork"}], dtype=object))
    elif kind == "npz without meta":
        with open(p, "wb") as f:
            np.savez(f, weights=np.ones(3))
    elif kind == "zip of other files":
        _zip(p, {"readme.txt": "hello"})
    elif kind == "lying npz":  # declares a 10^12-value array and holds 16 bytes of it
        hdr = "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000, 1000000), }"
        hdr = hdr.ljust(118) + "\n"
        _zip(p, {"w.npy": b"\x93NUMPY\x01\x00" + len(hdr).to_bytes(2, "little") + hdr.encode()
                 + b"\0" * 16})
    elif kind == "torch model":
        bio.save_model(torch_mlp, p, "bmlp:64-16-10")
    return p


FOREIGN = {  # kind: what the message must call the file
    "text": "a text file (it starts 'epoch,loss')",
    "empty": "an empty file",
    "npy": "a single NumPy array (.npy)",
    "onnx": "an ONNX model (read it with bnn_toroid.onnx.load)",
    "gzip": "a gzip-compressed file",
    "binary": "unrecognised binary data",
    "folder": "this is a folder",
    "missing": "no such file",
    "pickled npz": "holds Python objects (pickled data), which bnn_toroid never loads",
    "npz without meta": "without a readable 'meta' entry",
    "zip of other files": "entry 'readme.txt' is not a .npy array",
    "lying npz": "declares shape (1000000, 1000000)",
    "torch model": "a torch model file",
}


@pytest.mark.parametrize("kind", list(FOREIGN))
def test_load_names_what_a_foreign_file_is(kind, tmp_path, nets, torch_mlp):
    path = _foreign(kind, tmp_path, nets, torch_mlp)
    with pytest.raises(NetworkFileError) as e:
        bt.load(path)
    msg = check(e, str(path), FOREIGN[kind])
    if kind == "torch model":
        assert "bnn_toroid.io.load_model" in msg
    else:
        assert "expected a bnn_toroid network file" in msg
    # never an invitation to unpickle, whatever numpy would have said
    assert "pickle=" not in msg and "allow_pickle" not in msg


def test_load_model_names_a_binary_network_file(nets, tmp_path):
    path = nets["mlp_bin"].save(tmp_path / "n.npz")
    with pytest.raises(NetworkFileError) as e:
        bio.load_model(path)
    check(e, "frozen binary network file", "bnn_toroid.load")


@pytest.mark.parametrize("kind", ["text", "empty", "npy", "binary", "folder", "torch model"])
def test_onnx_load_names_files_that_are_not_onnx(kind, tmp_path, nets, torch_mlp):
    path = _foreign(kind, tmp_path, nets, torch_mlp)
    with pytest.raises(OnnxImportError) as e:
        bt.onnx.load(path)
    check(e, repr(str(path)), {"text": "is not a valid ONNX file", "empty": "is empty",
                               "npy": "is not a valid ONNX file",
                               "binary": "is not a valid ONNX file",
                               "folder": "is not a regular file",
                               "torch model": "is a zip archive"}[kind])


@pytest.mark.parametrize("bad", [3, None, 2.5, b"net.npz"], ids=repr)
def test_load_path_must_be_a_path(bad):
    with pytest.raises(TypeError) as e:
        bt.load(bad)
    check(e, "load: path must be a str or os.PathLike", type(bad).__name__)


# ------------------------------------------------------------------------ item 5: save targets
KINDS = ("character device", "folder", "named pipe", "socket", "symlink to a file",
         "dangling symlink", "symlink to a device", "below a regular file")


def _target(kind, tmp_path):
    """(path, a function giving the target's observable state, the message fragment)."""
    p = tmp_path / "target"

    def chardev(q):
        # /dev/full's device numbers in our own folder: the same kind of node as in the
        # issue, without risking the real /dev/full should the check ever regress
        try:
            os.mknod(q, stat.S_IFCHR | 0o666, os.makedev(1, 7))
        except PermissionError:
            pytest.fail("the save-target tests need CAP_MKNOD (they run as root in CI)")

    if kind == "character device":
        chardev(p)
        frag = "is a character device"
    elif kind == "folder":
        p.mkdir()
        (p / "keep.txt").write_text("keep")
        frag = "is a folder"
    elif kind == "named pipe":
        os.mkfifo(p)
        frag = "is a named pipe (FIFO)"
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(p))
        s.close()
        frag = "is a socket"
    elif kind == "symlink to a file":
        (tmp_path / "real.npz").write_bytes(b"the old content")
        os.symlink(tmp_path / "real.npz", p)
        frag = "is a symbolic link"
    elif kind == "dangling symlink":
        os.symlink(tmp_path / "nowhere.npz", p)
        frag = "is a symbolic link"
    elif kind == "symlink to a device":
        chardev(tmp_path / "dev")
        os.symlink(tmp_path / "dev", p)
        frag = "is a symbolic link"
    else:
        (tmp_path / "file.npz").write_bytes(b"a file")
        p = tmp_path / "file.npz" / "net.npz"
        frag = "lies below"

    def state():
        out = {}
        for q in sorted(tmp_path.rglob("*")) + [tmp_path / "nowhere.npz"]:
            st = os.lstat(q) if os.path.lexists(q) else None
            out[q.name] = None if st is None else (
                stat.S_IFMT(st.st_mode), os.readlink(q) if stat.S_ISLNK(st.st_mode) else None,
                q.read_bytes() if stat.S_ISREG(st.st_mode) else None)
        return out
    return p, state, frag


def _savers(nets, torch_mlp):
    net = nets["mlp_bin"]
    return {
        "bt.save": ("save", lambda p: bt.save(net, p)),
        "net.save": ("save", lambda p: net.save(p)),
        "onnx.export": ("export", lambda p: bt.onnx.export(net, p)),
        "io.save_model": ("save_model", lambda p: bio.save_model(torch_mlp, p, "bmlp:64-16-10")),
        "io.save_any": ("save", lambda p: bio.save_any(net, p)),
        "onnx.export_torch": ("export_torch", lambda p: bt.onnx.export_torch(
            bnn.MLP([64, 8, 10]).eval(), p, torch.zeros(2, 64))),
    }


SAVERS = ("bt.save", "net.save", "onnx.export", "io.save_model", "io.save_any", "onnx.export_torch")


@pytest.mark.parametrize("saver", SAVERS)
@pytest.mark.parametrize("kind", KINDS)
def test_save_refuses_targets_that_are_not_regular_files(kind, saver, tmp_path, nets, torch_mlp):
    """A device, folder, pipe or socket is never replaced, and a symbolic link is neither
    replaced nor written through (docs/interop.md): the refusal leaves every file as it
    was and no temporary file behind."""
    path, state, frag = _target(kind, tmp_path)
    before = state()
    what, save = _savers(nets, torch_mlp)[saver]
    with pytest.raises(SaveTargetError) as e:
        save(path)
    msg = check(e, f"{what}: path {str(path)!r}", frag)
    if kind == "below a regular file":
        assert "which is a regular file; expected a folder" in msg
    else:
        assert "expected a regular file or a new path" in msg
    if "symlink" in kind:
        assert "Links are not written through" in msg
    assert state() == before


def test_save_replaces_a_regular_file_and_keeps_its_mode(nets, xy, tmp_path):
    path = tmp_path / "n.npz"
    nets["mlp_real"].save(path)
    os.chmod(path, 0o640)
    nets["mlp_bin"].save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert np.array_equal(bt.load(path).predict(xy[0]), nets["mlp_bin"].predict(xy[0]))
    assert [q.name for q in tmp_path.iterdir()] == ["n.npz"]  # no temporary file left


def test_save_through_a_linked_folder_is_allowed(nets, tmp_path):
    """Only the last component is refused when it is a link: folders above it may be."""
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "linked")
    nets["mlp_bin"].save(tmp_path / "linked" / "n.npz")
    assert bt.load(tmp_path / "real" / "n.npz").equals(nets["mlp_bin"])


# ------------------------------------------------------------------------ item 27: swapped and wrong arguments
def test_swapped_save_arguments_are_named(nets, torch_mlp, tmp_path):
    net, p = nets["mlp_bin"], str(tmp_path / "n.npz")
    for call, func in ((lambda: bt.save(p, net), "save"), (lambda: bt.onnx.export(p, net), "export"),
                       (lambda: bio.save_model(p, torch_mlp, "bmlp:64-16-10"), "save_model")):
        with pytest.raises(TypeError) as e:
            call()
        check(e, f"{func}: the arguments are swapped", repr(p), f"expected {func}(net, path)")
    assert not os.path.exists(p)


def test_save_names_a_torch_model_and_a_bad_path(nets, torch_mlp, tmp_path):
    with pytest.raises(TypeError) as e:
        bt.save(torch_mlp, tmp_path / "m.npz")
    check(e, "save: net must be a BinaryNetwork, got BinaryMLP", "bnn_toroid.io.save_model")
    with pytest.raises(TypeError) as e:
        bt.save(nets["mlp_bin"], 3)
    check(e, "save: path must be a str or os.PathLike, got int")


# ------------------------------------------------------------------------ item 4: ONNX sizes
def _model(nodes, inits, shape=("N", 6), out=("N", 3)):
    x = oh.make_tensor_value_info("x", TP.FLOAT, list(shape))
    y = oh.make_tensor_value_info("y", TP.FLOAT, list(out))
    g = oh.make_graph(nodes, "g", [x], [y], initializer=inits)
    return oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)])


def _dense_model(shape=("N", 6), w=None):
    w = np.where(np.arange(18).reshape(6, 3) % 3 == 0, -1, 1).astype(np.float32) if w is None else w
    return _model([oh.make_node("MatMul", ["x", "W"], ["y"])], [onh.from_array(w, "W")], shape)


BIG = {
    "input N x 1e7 x 1e7 x 1": (_dense_model, ("N", 10 ** 7, 10 ** 7, 1)),
    "input N x 2000 x 2000 x 10": (_dense_model, ("N", 2000, 2000, 10)),
    "input N x 1e9": (_dense_model, ("N", 10 ** 9)),
    "ConstantOfShape 1e5 x 1e5": (lambda: _model(
        [oh.make_node("ConstantOfShape", ["s"], ["c"], value=onh.from_array(np.ones(1, np.float32))),
         oh.make_node("Add", ["x", "c"], ["z"]), oh.make_node("MatMul", ["z", "W"], ["y"])],
        [onh.from_array(np.array([10 ** 5, 10 ** 5], np.int64), "s"),
         onh.from_array(np.ones((6, 3), np.float32), "W")]), None),
    "Pad by 1e8": (lambda: _model(
        [oh.make_node("Pad", ["x", "p"], ["z"], mode="constant"),
         oh.make_node("MatMul", ["z", "W"], ["y"])],
        [onh.from_array(np.array([0, 0, 0, 10 ** 8], np.int64), "p"),
         onh.from_array(np.ones((6, 3), np.float32), "W")]), None),
}


@pytest.mark.parametrize("case", list(BIG))
def test_onnx_sizes_are_checked_before_allocation(case, tmp_path):
    """A file of a few hundred bytes may declare tensors of 10^14 values: refused with the
    limit named, with no MemoryError and without allocating what the file declares."""
    make, shape = BIG[case]
    path = tmp_path / "big.onnx"
    onnx.save(make(shape) if shape else make(), path)
    assert path.stat().st_size < 1000
    tracemalloc.start()
    try:
        with pytest.raises(OnnxImportError) as e:
            bt.onnx.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    check(e, f"expected at most {MAX_TENSOR_ELEMENTS:,}", "bnn_toroid.onnx.MAX_TENSOR_ELEMENTS")
    if shape:
        check(e, "graph input 'x'", f"has shape {tuple(shape[1:])}")
    # far below the ≥ 64 MB any of these tensors would take (40 M float64 values: 320 MB)
    assert peak < 32 * 2 ** 20, peak


# ------------------------------------------------------------------------ item 6: external data
@pytest.fixture
def external(tmp_path):
    """A model folder whose kernel lives in an external file ``w.bin``, a copy of that file
    outside the folder, and a function that writes the model with another location."""
    from onnx.external_data_helper import convert_model_to_external_data

    folder = tmp_path / "model"
    folder.mkdir()
    m = _dense_model()
    convert_model_to_external_data(m, all_tensors_to_one_file=True, location="w.bin",
                                   size_threshold=0)
    onnx.save(m, folder / "good.onnx")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "w.bin").write_bytes((folder / "w.bin").read_bytes())

    def with_info(name, **info):
        mm = onnx.load(folder / "good.onnx", load_external_data=False)
        t = mm.graph.initializer[0]
        entries = {e.key: e.value for e in t.external_data} | info
        del t.external_data[:]
        for k, v in entries.items():
            e = t.external_data.add()
            e.key, e.value = k, v
        onnx.save(mm, folder / name)
        return folder / name
    return folder, with_info


def test_external_data_inside_the_folder_loads(external):
    folder, _ = external
    net = bt.onnx.load(folder / "good.onnx")
    assert net.equals(bt.onnx.load(_dense_model()))
    # a model reached through a link finds its data beside the model file itself
    os.symlink(folder / "good.onnx", folder.parent / "link.onnx")
    assert bt.onnx.load(folder.parent / "link.onnx").equals(net)


def _ext_case(case, folder):
    out = folder.parent / "outside" / "w.bin"
    if case == "absolute":
        return {"location": str(out)}, "is absolute"
    if case == "/etc/passwd":
        return {"location": "/etc/passwd"}, "is absolute"
    if case == "..":
        return {"location": "../outside/w.bin"}, "leaves the model's folder ('..')"
    if case == "sub/../..":
        (folder / "sub").mkdir(exist_ok=True)
        return {"location": "sub/../../outside/w.bin"}, "leaves the model's folder ('..')"
    if case == "symlink to a file":
        os.symlink(out, folder / "link.bin")
        return {"location": "link.bin"}, "passes through a symbolic link"
    if case == "through a linked folder":
        os.symlink(out.parent, folder / "d")
        return {"location": "d/w.bin"}, "passes through a symbolic link"
    if case == "missing":
        return {"location": "nope.bin"}, "does not exist in"
    if case == "a folder":
        (folder / "dir.bin").mkdir()
        return {"location": "dir.bin"}, "is not a regular file"
    if case == "wrong length":
        return {"location": "w.bin", "length": "8"}, "external data length '8'"
    if case == "past the end":
        return {"location": "w.bin", "offset": "64"}, "which has 72"
    raise AssertionError(case)


EXT = ("absolute", "/etc/passwd", "..", "sub/../..", "symlink to a file", "through a linked folder",
       "missing", "a folder", "wrong length", "past the end")


@pytest.mark.parametrize("case", EXT)
def test_external_data_outside_the_model_folder_is_refused(case, external):
    """Checked by bnn_toroid itself, whatever the onnx version does (1.15 followed links)."""
    folder, with_info = external
    info, frag = _ext_case(case, folder)
    path = with_info("bad.onnx", **info)
    with pytest.raises(OnnxImportError) as e:
        bt.onnx.load(path)
    check(e, repr(str(path)), "tensor 'W'", frag)
    if case not in ("wrong length", "past the end"):
        check(e, repr(info["location"]))


def test_an_in_memory_model_with_external_data_is_refused(external):
    folder, _ = external
    with pytest.raises(OnnxImportError) as e:
        bt.onnx.load(onnx.load(folder / "good.onnx", load_external_data=False))
    check(e, "tensors stored in external files", "expected a path to the .onnx file")


# ------------------------------------------------------------------------ item 10: export opsets
@pytest.mark.parametrize("opset,exc,frags", [
    (99, ValueError, ["opset 99 is outside"]),
    (MIN_OPSET - 1, ValueError, [f"opset {MIN_OPSET - 1} is outside"]),
    (0, ValueError, ["opset 0 is outside"]),
    (-1, ValueError, ["opset -1 is outside"]),
    ("17", TypeError, ["opset must be an integer, got '17' (str)"]),
    (17.0, TypeError, ["opset must be an integer, got 17.0 (float)"]),
    (True, TypeError, ["opset must be an integer, got the bool True"]),
    (None, TypeError, ["opset must be an integer, got None"]),
], ids=repr)
@pytest.mark.parametrize("func", ["export", "export_torch", "from_larq"])
def test_export_refuses_bad_opsets(opset, exc, frags, func, nets, tmp_path):
    newest = onnx.defs.onnx_opset_version()
    path = tmp_path / "x.onnx"
    call = {"export": lambda: bt.onnx.export(nets["mlp_bin"], path, opset=opset),
            "export_torch": lambda: bt.onnx.export_torch(bnn.MLP([64, 8, 10]).eval(), path,
                                                         torch.zeros(2, 64), opset=opset),
            # checked before TensorFlow is needed, so no Keras model is required to see it
            "from_larq": lambda: __import__("bnn_toroid.larq").larq.from_larq(None, path, opset=opset)}
    with pytest.raises(exc) as e:
        call[func]()
    check(e, f"{func}: ", *frags)
    if exc is ValueError:
        check(e, f"{MIN_OPSET}..{newest}")
    assert not path.exists()


def _ort(path, x):
    ort = pytest.importorskip("onnxruntime")
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("name", NET_NAMES)
@pytest.mark.parametrize("qonnx", [False, True])
def test_every_export_passes_the_checker_and_runs(name, qonnx, nets, xy, tmp_path):
    """Each export is a valid model (full check, shapes inferred); the standard one runs
    in onnxruntime with net.predict's logits. The file takes x as (N, *input_shape): a
    flat net's (N, 64), while predict also takes the images (N, 1, 8, 8) (item 24)."""
    net, (x, y) = nets[name], xy
    path = tmp_path / f"{name}.onnx"
    bt.onnx.export(net, path, qonnx=qonnx)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    assert bt.onnx.load(path).equals(net)
    if qonnx:
        return  # onnxruntime has no kernel for the QONNX domain (docs/interop.md)
    xin = x.reshape((len(x),) + net.input_shape).astype(np.float32)
    got = _ort(path, xin)
    np.testing.assert_allclose(got, net.predict(x), rtol=1e-6, atol=1e-6)


def test_every_opset_in_range_exports_a_file_onnxruntime_loads(nets, xy, tmp_path):
    net, x = nets["conv_bin"], xy[0].astype(np.float32)
    want = net.predict(x)
    for opset in range(MIN_OPSET, onnx.defs.onnx_opset_version() + 1):
        path = tmp_path / f"o{opset}.onnx"
        bt.onnx.export(net, path, opset=opset)
        m = onnx.load(path)
        onnx.checker.check_model(m, full_check=True)
        assert {o.domain: o.version for o in m.opset_import}[""] == opset
        assert np.array_equal(_ort(path, x), want), opset


def test_a_flat_export_takes_flat_samples_where_predict_takes_images(nets, xy, tmp_path):
    """Item 24, as docs/interop.md states it: reshape to (N, *net.input_shape) first."""
    net, x = nets["mlp_bin"], xy[0]
    assert x.shape[1:] != net.input_shape
    path = tmp_path / "flat.onnx"
    bt.onnx.export(net, path)
    assert np.array_equal(_ort(path, x.reshape(len(x), *net.input_shape).astype(np.float32)),
                          net.predict(x))
    with pytest.raises(Exception):  # onnxruntime: invalid rank for input x
        _ort(path, x.astype(np.float32))


# ------------------------------------------------------------------------ item 7: immutability
def _loaded_variants(net, tmp_path):
    """The same network reached in every way a user gets one."""
    p = net.save(tmp_path / "n.npz")
    bt.onnx.export(net, tmp_path / "n.onnx")
    return {"built": net, "loaded": bt.load(p), "unpickled": pickle.loads(pickle.dumps(net)),
            "from a stack": NetworkStack.from_networks([net, net]).network(1),
            "from onnx": bt.onnx.load(tmp_path / "n.onnx"),
            "with_layers": net.with_layers(net.layers)}


ARRAYS = {  # (layer index or None for the network, attribute)
    "weights": (0, "weights"), "threshold": (0, "threshold"), "out_scale": (-1, "out_scale"),
    "out_bias": (-1, "out_bias"), "input_scale": (None, "input_scale"),
    "bn.ratio": (0, "bn.ratio"), "min_channels": (1, "min_channels"), "pad_value": (0, "pad_value"),
}


def _array_of(net, where):
    i, attr = where
    obj = net if i is None else net.layers[i]
    for a in attr.split("."):
        obj = getattr(obj, a, None)  # not every layer has every field
    return obj


@pytest.mark.parametrize("name", ["mlp_real", "conv_real"])
def test_network_arrays_are_read_only(name, nets, xy, tmp_path):
    """Item 7: ``net.layers[0].weights[:5] *= -1`` used to leave predict answering for
    the old weights while save wrote the new ones. Every array is read-only now, in every
    network however it was obtained, and the network still answers as before."""
    net, x = nets[name], xy[0]
    want, fp = net.predict(x), bt.fingerprint(net)
    for how, n in _loaded_variants(net, tmp_path).items():
        for key, where in ARRAYS.items():
            a = _array_of(n, where)
            if not isinstance(a, np.ndarray):
                continue  # e.g. a scalar pad_value, or no BatchNorm record after onnx
            with pytest.raises(ValueError, match="read-only"):
                a[...] *= -1
            with pytest.raises(ValueError, match="read-only"):
                a.flat[0] = 0
        for p in n.packed_params():
            for v in p.values():
                with pytest.raises(ValueError, match="read-only"):
                    v[...] = 0
        assert np.array_equal(n.predict(x), want), how
    assert bt.fingerprint(net) == fp


@pytest.mark.parametrize("attr", ["layers", "input_shape", "input_layout", "binarize_input",
                                  "input_scale", "output_geom"])
def test_network_attributes_cannot_be_assigned(attr, nets):
    net = nets["mlp_real"]
    before = getattr(net, attr)
    with pytest.raises(AttributeError) as e:
        setattr(net, attr, before)
    check(e, f"BinaryNetwork.{attr}", "immutable once built", "net.with_layers(layers)")
    with pytest.raises(TypeError):  # a tuple: no item assignment, no append
        net.layers[0] = net.layers[0]


@pytest.mark.parametrize("field", ["weights", "threshold", "bn"])
def test_layer_fields_cannot_be_assigned(field, nets):
    layer = nets["mlp_real"].layers[0]
    with pytest.raises(AttributeError) as e:
        setattr(layer, field, getattr(layer, field))
    check(e, f"Dense.{field}", "immutable once built", f"dataclasses.replace(layer, {field}=...)")


def test_layers_copy_the_arrays_they_are_given():
    """Editing the caller's array after building must not reach the layer either."""
    rng = np.random.default_rng(3)
    w, t = pm1(rng, (4, 10)), rng.integers(-3, 4, 4)
    layer = Dense(w, threshold=t)
    w0, t0 = w.copy(), t.copy()
    w *= -1
    t += 1
    assert np.array_equal(layer.weights, w0) and np.array_equal(layer.threshold, t0)


def test_with_layers_is_how_a_network_is_changed(nets, xy, tmp_path):
    net, (x, _) = nets["mlp_real"], xy
    w = np.array(net.layers[0].weights)
    w[:5] *= -1
    changed = net.with_layers([dataclasses.replace(net.layers[0], weights=w), *net.layers[1:]])
    # the reference: the same network built from scratch with the edited weights
    fresh = BinaryNetwork([Dense(w, threshold=net.layers[0].threshold, bn=net.layers[0].bn),
                           *net.layers[1:]], net.input_shape, net.input_layout,
                          net.binarize_input, net.input_scale)
    assert np.array_equal(changed.predict(x), fresh.predict(x))
    assert not np.array_equal(changed.predict(x), net.predict(x))
    back = bt.load(changed.save(tmp_path / "c.npz"))
    assert back.equals(changed) and np.array_equal(back.predict(x), changed.predict(x))
    assert bt.fingerprint(back) == bt.fingerprint(changed) != bt.fingerprint(net)


# ------------------------------------------------------------------------ item 8: non-finite input
def _evaluators(net, y):
    stack = NetworkStack.from_networks([net, net])
    return {
        "predict": lambda x: net.predict(x), "predict_classes": lambda x: net.predict_classes(x),
        "predict_proba": lambda x: net.predict_proba(x), "error": lambda x: net.error(x, y),
        "score": lambda x: net.score(x, y), "preactivations": lambda x: net.preactivations(x),
        "hidden_outputs": lambda x: net.hidden_outputs(x), "stack.predict": lambda x: stack.predict(x),
    }


NAMED = {"predict_classes": "predict", "predict_proba": "predict", "preactivations": "predict",
         "hidden_outputs": "predict", "stack.predict": "predict"}


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan], ids=str)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16], ids=lambda d: d.__name__)
@pytest.mark.parametrize("name", NET_NAMES)
def test_predict_refuses_non_finite_input(value, dtype, name, nets, xy):
    net, (x, y) = nets[name], xy
    x = x[:20].astype(dtype)
    x.reshape(len(x), -1)[3, 5] = value
    x.reshape(len(x), -1)[7, 0] = value
    word = "NaN" if np.isnan(value) else "infinite values"
    for func, call in _evaluators(net, y[:20]).items():
        for arg in (x, torch.from_numpy(x)):
            with pytest.raises(ValueError) as e:
                call(arg)
            check(e, f"{NAMED.get(func, func)}: x holds 2 {word}", "expected finite input")


def test_predict_refuses_input_whose_sums_overflow(nets):
    net = nets["mlp_real"]
    x = np.full((2, 64), 1e307)
    with pytest.raises(ValueError) as e:
        net.predict(x)
    check(e, "predict: x reaches |x| = ", "overflow float64", "expected |x| below")


@pytest.mark.parametrize("value", [np.inf, np.nan], ids=str)
def test_real_model_predict_refuses_non_finite_input(value):
    m = bnn.MLP([64, 8, 10]).eval()
    x = np.zeros((3, 64))
    x[1, 1] = value
    for func in ("predict", "predict_proba", "predict_classes"):
        with pytest.raises(ValueError) as e:
            getattr(m, func)(x)
        check(e, "predict: x holds 1 ", "expected finite input")


# ------------------------------------------------------------------------ item 9: binary_gemm preconditions
def _rows(rng, n, k):
    return pm1(rng, (n, k))


def _dots(a, w):
    return a.astype(np.int64) @ w.astype(np.int64).T


def test_binary_gemm_right_call_is_the_dot_product():
    rng = np.random.default_rng(9)
    a, w = _rows(rng, 5, 100), _rows(rng, 4, 100)
    got = K.binary_gemm(K.pack_bits(a), K.pack_bits(w), 100)
    assert np.array_equal(got, _dots(a, w))
    assert np.array_equal(K.binary_gemm(K.pack_bits(a), K.pack_bits(w), np.int64(100)), got)


def _gemm_case(case):
    rng = np.random.default_rng(1)
    A, W = K.pack_bits(_rows(rng, 3, 100)), K.pack_bits(_rows(rng, 4, 100))
    if case == "k=1 on 2-word rows":
        return lambda: K.binary_gemm(A, W, 1), ValueError, ["k=1 needs 1 word per row", "hold 2"]
    if case == "k=129 on 2-word rows":
        return lambda: K.binary_gemm(A, W, 129), ValueError, ["k=129 needs 3 words per row", "hold 2"]
    if case == "k=0":
        return lambda: K.binary_gemm(A, W, 0), ValueError, ["k=0 needs 0 words per row", "hold 2"]
    if case == "k=-5":
        return lambda: K.binary_gemm(A, W, -5), ValueError, ["k=-5", "expected k >= 0"]
    if case == "float k":
        return lambda: K.binary_gemm(A, W, 100.0), TypeError, ["k must be an integer, got 100.0 (float)"]
    if case == "fractional k":
        return lambda: K.binary_gemm(A, W, 99.5), TypeError, ["k must be an integer, got 99.5"]
    if case == "bool k":
        return lambda: K.binary_gemm(A, W, True), TypeError, ["k must be an integer, got the bool True"]
    if case == "string k":
        return lambda: K.binary_gemm(A, W, "100"), TypeError, ["k must be an integer, got '100' (str)"]
    if case == "padding bit in a":
        A2 = A.copy()
        A2[1, -1] |= np.uint64(1) << np.uint64(63)
        return lambda: K.binary_gemm(A2, W, 100), ValueError, [
            "a has padding bits set in 1 word", "bits past 100", "expected 0, as pack_bits writes them"]
    if case == "padding bits in w":
        W2 = W.copy()
        W2[:2, -1] |= np.uint64(1) << np.uint64(40)
        return lambda: K.binary_gemm(A, W2, 100), ValueError, ["w has padding bits set in 2 words"]
    if case == "padding bits with a threshold":
        A2 = A.copy()
        A2[0, -1] |= np.uint64(1) << np.uint64(50)
        return lambda: K.binary_gemm(A2, W, 100, threshold=np.zeros(4, np.int64)), ValueError, [
            "a has padding bits set"]
    if case == "words differ":
        return lambda: K.binary_gemm(A[:, :1], W, 64), ValueError, [
            "a has 1 words per row and w has 2", "expected the same"]
    if case == "channels not dividing k":
        return lambda: K.binary_gemm(A, W, 100, channels=30), ValueError, [
            "k=100 with channels=30", "a multiple of channels"]
    if case == "channels: padding per pixel":
        a = K.pack_bits(_rows(rng, 3, 20).reshape(3, 2, 10)).reshape(3, -1)
        w = K.pack_bits(_rows(rng, 4, 20).reshape(4, 2, 10)).reshape(4, -1)
        a[0, 0] |= np.uint64(1) << np.uint64(12)  # past the 10 channels of pixel 0
        return lambda: K.binary_gemm(a, w, 20, channels=10), ValueError, [
            "a has padding bits set in 1 word", "bits past 10 in a group of 10"]
    if case == "float channels":
        return lambda: K.binary_gemm(A, W, 100, channels=50.0), TypeError, [
            "channels must be an integer, got 50.0"]
    if case == "unpack float k":
        return lambda: K.unpack_bits(A, 100.0), TypeError, ["unpack_bits: k must be an integer, got 100.0"]
    if case == "unpack k=1 on 2 words":
        return lambda: K.unpack_bits(A, 1), ValueError, ["unpack_bits: k=1 needs 1 words per row", "has 2"]
    if case == "conv float c":
        a4 = K.pack_bits(_rows(rng, 1, 5 * 5 * 3).reshape(1, 5, 5, 3))
        w4 = K.pack_bits(_rows(rng, 2, 9 * 3).reshape(2, 3, 3, 3))
        return lambda: K.binary_conv2d(a4, w4, 3.0), TypeError, [
            "binary_conv2d: c must be an integer, got 3.0"]
    if case == "conv padding bits":
        a4 = K.pack_bits(_rows(rng, 1, 5 * 5 * 3).reshape(1, 5, 5, 3))
        w4 = K.pack_bits(_rows(rng, 2, 9 * 3).reshape(2, 3, 3, 3))
        w4[0, 0, 0, 0] |= np.uint64(1) << np.uint64(3)
        return lambda: K.binary_conv2d(a4, w4, 3), ValueError, [
            "binary_conv2d: w has padding bits set in 1 word", "bits past 3"]
    if case == "maxpool float size":
        a4 = K.pack_bits(_rows(rng, 1, 4 * 4 * 3).reshape(1, 4, 4, 3))
        return lambda: K.binary_maxpool2d(a4, 2.0), TypeError, [
            "binary_maxpool2d: size must be an integer, got 2.0"]
    raise AssertionError(case)


GEMM = ("k=1 on 2-word rows", "k=129 on 2-word rows", "k=0", "k=-5", "float k", "fractional k",
        "bool k", "string k", "padding bit in a", "padding bits in w", "padding bits with a threshold",
        "words differ", "channels not dividing k", "channels: padding per pixel", "float channels",
        "unpack float k", "unpack k=1 on 2 words", "conv float c", "conv padding bits",
        "maxpool float size")


@pytest.mark.parametrize("case", GEMM)
def test_kernel_preconditions_are_checked(case):
    call, exc, frags = _gemm_case(case)
    func = "unpack_bits" if "unpack" in case else "binary_conv2d" if "conv" in case else \
        "binary_maxpool2d" if "maxpool" in case else "binary_gemm"
    with pytest.raises(exc) as e:
        call()
    check(e, f"{func}: ", *frags)


# ------------------------------------------------------------------------ item 14: from_torch and non-finite parameters
def _poisoned(where, value):
    torch.manual_seed(1)
    m = bnn.BinaryMLP([64, 8, 10], input_norm=(8.0, 4.0)).eval()
    mods = list(m)
    target = {"latent weight": (mods[2], "weight"), "BN running_var": (mods[3], "running_var"),
              "BN weight": (mods[3], "weight"), "BN bias": (mods[3], "bias"),
              "output Scale": (mods[-1], "value"), "Normalize mean": (mods[0], "mean")}[where]
    mod, name = target
    with torch.no_grad():
        getattr(mod, name).view(-1)[0] = value
    idx = [i for i, x in enumerate(bt.network.freeze._flatten(m)) if x is mod][0]
    return m, f"module {idx} ({type(mod).__name__}) {name} holds 1 {'NaN' if value != value else 'infinite'}"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=str)
@pytest.mark.parametrize("where", ["latent weight", "BN running_var", "BN weight", "BN bias",
                                   "output Scale", "Normalize mean"])
def test_from_torch_refuses_non_finite_parameters(where, value):
    """A NaN latent weight used to freeze silently as -1."""
    model, frag = _poisoned(where, value)
    with pytest.raises(NetworkError) as e:
        BinaryNetwork.from_torch(model)
    check(e, "from_torch: ", frag, "expected finite numbers")


# ------------------------------------------------------------------------ item 15: float16 and other dtypes
def _signs(x):
    """larq's sign, computed without pack_bits: -1 where x < 0, +1 elsewhere (-0.0 too)."""
    return np.where(np.asarray(x, np.float64) < 0, -1, 1).astype(np.int8)


@pytest.mark.parametrize("dtype", [np.float16, np.longdouble, np.float32, np.int8, np.uint16],
                         ids=lambda d: np.dtype(d).name)
def test_pack_bits_takes_every_real_dtype(dtype):
    rng = np.random.default_rng(15)
    x = rng.normal(0, 3, (7, 130))
    if np.issubdtype(dtype, np.floating):
        # exact zeros, negative zeros and the smallest float16 subnormals: a cast that
        # rounds -6e-8 to -0.0 would read it as +1
        x[0, :4] = [0.0, -0.0, -6e-8, 6e-8]
    x = x.astype(dtype)
    got = K.pack_bits(x)
    assert got.dtype == np.uint64 and got.shape == (7, 3)
    assert np.array_equal(K.unpack_bits(got, 130), _signs(x))


@pytest.mark.parametrize("name", NET_NAMES)
def test_float16_input_gives_the_float32_answer(name, nets, xy):
    net = nets[name]
    rng = np.random.default_rng(16)
    x = (xy[0][:30] + rng.normal(0, 0.3, xy[0][:30].shape)).astype(np.float16)
    x.reshape(len(x), -1)[0, :3] = [0.0, -0.0, -6e-8]
    assert np.array_equal(net.predict(x), net.predict(x.astype(np.float32)))


@pytest.mark.parametrize("x,frag", [
    (np.ones((2, 3), bool), "dtype bool"), (np.ones((2, 3), complex), "dtype complex128"),
    (np.array([["a", "b"]]), "dtype <U1"), (np.array([[None, 1]]), "dtype object"),
], ids=["bool", "complex", "str", "object"])
def test_pack_bits_and_predict_name_unsupported_dtypes(x, frag, nets):
    with pytest.raises(TypeError) as e:
        K.pack_bits(x)
    check(e, "pack_bits: expected a real numeric array", frag)
    if x.dtype.kind not in "bc":  # bool and complex are refused the same way below
        with pytest.raises(TypeError) as e:
            nets["mlp_bin"].predict(np.resize(x, (2, 64)))
        check(e, "predict: x has", frag, "expected real numbers")


def test_pack_bits_refuses_nan_and_non_binary_by_name():
    with pytest.raises(ValueError) as e:
        K.pack_bits(np.array([[np.nan, 1.0, np.nan]], np.float16))
    check(e, "pack_bits: x holds 2 NaN values", "expected real numbers")
    with pytest.raises(ValueError) as e:
        K.pack_bits(np.array([1, 0, -1]), check_binary=True)
    check(e, "expected only +1/-1 values, found", "1 non-binary entries")


# ------------------------------------------------------------------------ item 16: empty inputs
@pytest.mark.parametrize("shape", [(3, 0), (0, 5), (2, 0, 3), (0,), (0, 0)])
def test_pack_bits_of_empty_arrays_has_the_right_shape(shape):
    got = K.pack_bits(np.zeros(shape))
    assert got.dtype == np.uint64 and got.shape == shape[:-1] + (K.n_words(shape[-1]),)
    assert K.unpack_bits(got, shape[-1]).shape == shape


@pytest.mark.parametrize("name", NET_NAMES)
def test_zero_samples_give_empty_results_or_a_named_error(name, nets, xy):
    net, x = nets[name], xy[0][:0]
    c = net.num_classes
    assert net.predict(x).shape == (0, c)
    assert net.predict(x.astype(np.float64)).shape == (0, c)
    assert net.predict_classes(x).shape == (0,)
    assert net.predict_proba(x).shape == (0, c)
    assert NetworkStack.from_networks([net, net]).predict(x).shape == (2, 0, c)
    # per layer: the batch axis of length 0, the rest as for one sample
    one = xy[0][:1]
    for got, ref in zip(net.preactivations(x), net.preactivations(one)):
        assert got.shape == (0,) + ref.shape[1:]
    for got, ref in zip(net.hidden_outputs(x), net.hidden_outputs(one)):
        assert got.shape == (0,) + ref.shape[1:]
    for func in ("error", "score"):
        with pytest.raises(ValueError) as e:
            getattr(net, func)(x, np.zeros(0, np.int64))
        check(e, f"{func}: x holds 0 samples", "expected at least one sample")


@pytest.mark.parametrize("make", [lambda: bnn.MLP([64, 8, 10]), lambda: bnn.BinaryMLP([64, 8, 10]),
                                  lambda: bnn.MLP([64, 8, 10], batchnorm=True)],
                         ids=["MLP", "BinaryMLP", "MLP+bn"])
def test_real_model_zero_samples(make):
    """The torch wrapper follows BinaryNetwork's rules (its predict used to fail with
    torch's reshape message on 0 samples)."""
    m = make().eval()
    x = np.zeros((0, 64))
    assert m.predict(x).shape == (0, 10)
    assert m.predict_proba(x).shape == (0, 10)
    assert m.predict_classes(x).shape == (0,)
    for func in ("error", "score"):
        with pytest.raises(ValueError) as e:
            getattr(m, func)(x, np.zeros(0, np.int64))
        check(e, f"{func}: x holds 0 samples", "expected at least one sample")


# ------------------------------------------------------------------------ item 18: paths and local_energy
@pytest.mark.parametrize("func", ["linear", "geodesic", "single_bend"])
@pytest.mark.parametrize("which", ["a", "b"])
def test_real_paths_name_the_binary_path_functions(func, which, nets, xy):
    net, real = nets["mlp_bin"], bnn.MLP([64, 8, 10]).eval()
    a, b = (net, real) if which == "a" else (real, net)
    args = (a, b, xy) if func == "single_bend" else (a, b)
    f = getattr(bt.paths.continuous, func)
    with pytest.raises(TypeError) as e:
        f(*args)
    check(e, f"paths.{func}: {which} is a BinaryNetwork", "paths.random_flip", "paths.single_bend",
          "paths.search")
    if func != "single_bend":  # the package-level name is the same function
        with pytest.raises(TypeError) as e:
            getattr(bt.paths, func)(*args)
        check(e, f"paths.{func}: {which} is a BinaryNetwork")
    with pytest.raises(TypeError) as e:
        f(real, "model.npz", *args[2:])
    check(e, f"paths.{func}: b is a str", "expected a real-valued torch model")


@pytest.mark.parametrize("func", ["random_flip", "search"])
def test_binary_paths_name_from_torch(func, xy):
    real = bnn.MLP([64, 8, 10]).eval()
    args = (real, real, xy) if func == "search" else (real, real)
    with pytest.raises(TypeError) as e:
        getattr(bt.paths, func)(*args)
    check(e, "a is a torch model (MLP)", "BinaryNetwork.from_torch")


def _le_case(case, xy):
    x, y = xy
    # copies: the dataset's arrays are read-only, which torch warns about
    xf = torch.tensor(x.reshape(len(x), -1)[:20], dtype=torch.float32)
    yt = torch.tensor(y[:20])
    if case == "samples of another shape":
        return (xf[:, :30], yt), "x holds samples of shape (30,)"
    if case == "labels outside the classes":
        return (xf, yt + 10), "labels in ["
    if case == "fewer labels than samples":
        return (xf, yt[:15]), "15"
    if case == "no samples":
        return (xf[:0], yt[:0]), "empty data"
    raise AssertionError(case)


LE = ("samples of another shape", "labels outside the classes", "fewer labels than samples", "no samples")


@pytest.mark.parametrize("case", LE)
@pytest.mark.parametrize("kind", ["real", "binary"])
def test_local_energy_names_mismatched_data(case, kind, nets, xy):
    data, frag = _le_case(case, xy)
    if kind == "real":
        model, kw = bnn.MLP([64, 8, 10]).eval(), {"sigma": [0.1]}
    else:
        model, kw = nets["mlp_real"], {"eps": [0.1]}
        data = tuple(t.numpy() for t in data)
    with pytest.raises(ValueError) as e:
        bt.local_energy(model, data, samples=2, **kw)
    msg = check(e, "local_energy: ", frag)
    if case == "samples of another shape":
        assert "64 features" in msg  # what was expected
    if case == "labels outside the classes":
        assert "expected class indices in [0, 10)" in msg
    assert "mat1 and mat2" not in msg.split("(")[0]  # torch's words only as a detail


def test_continuous_path_errors_name_mismatched_data(xy):
    torch.manual_seed(0)
    a, b = bnn.MLP([64, 8, 10]).eval(), bnn.MLP([64, 8, 10]).eval()
    path = bt.paths.linear(a, b, points=3)
    x = torch.zeros(5, 30)
    with pytest.raises(ValueError) as e:
        path.errors((x, torch.zeros(5, dtype=torch.long)))
    check(e, "ContinuousPath.errors: data x holds samples of shape (30,)", "64 features")


# ------------------------------------------------------------------------ items 25-26: reprs
def test_local_energy_reprs_name_their_perturbation(nets, xy):
    x, y = xy
    le = bt.local_energy(nets["mlp_real"], (x, y), eps=[0.0, 0.05], samples=2)
    r = repr(le)
    assert r.startswith("BinaryLocalEnergy(eps=") and "sigma" not in r
    assert np.array_equal(le.eps, [0.0, 0.05]) and le.mean[0] == 0.0
    real = bt.local_energy(bnn.MLP([64, 8, 10]).eval(),
                           (torch.tensor(x.reshape(len(x), -1), dtype=torch.float32), torch.tensor(y)),
                           sigma=[0.0, 0.1], samples=2)
    assert "sigma=" in repr(real) and "eps=" not in repr(real)


def test_search_path_repr_labels_both_barriers(nets, xy):
    rng = np.random.default_rng(25)
    a = nets["mlp_bin"]
    w = np.array(a.layers[0].weights)
    w[rng.random(w.shape) < 0.3] *= -1
    b = a.with_layers([dataclasses.replace(a.layers[0], weights=w), a.layers[1]])
    data = (xy[0][:100], xy[1][:100])
    p = bt.paths.search(a, b, data, points=7, quiet=True, align=False)
    r = repr(p)
    assert f"trace_max_error={p.trace.max():.4f}" in r and "after every move" in r
    assert "points=7" in r and "barrier(data)" in r
    assert "barrier=" not in r.replace("barrier(data)", "")
    bar = p.barrier(data)
    assert repr(bar).endswith("points=7)") and len(bar.errors) == 7
    # the documented agreement: on the search data, after every move
    assert p.barrier(data, every_move=True).max_error == pytest.approx(p.trace.max())
    assert f"points={len(p.trace)}" in repr(p.trace_barrier)


# ------------------------------------------------------------------------ item 27: score and predict_proba
@pytest.mark.parametrize("name", NET_NAMES)
def test_score_and_predict_proba_of_a_binary_network(name, nets, xy):
    net, (x, y) = nets[name], xy
    logits = net.predict(x)
    assert net.score(x, y) == pytest.approx(np.mean(logits.argmax(1) == y))
    assert net.score(x, y) == pytest.approx(1 - net.error(x, y))
    p = net.predict_proba(x)
    np.testing.assert_allclose(p, softmax(logits), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert np.array_equal(p.argmax(1), net.predict_classes(x))


@pytest.mark.parametrize("make", [lambda: bnn.MLP([64, 16, 10], batchnorm=True),
                                  lambda: bnn.BinaryMLP([64, 16, 10]),
                                  lambda: bnn.LeNet([1, 28, 28])], ids=["MLP", "BinaryMLP", "LeNet"])
def test_score_and_predict_proba_of_a_real_model(make, digits):
    torch.manual_seed(0)
    m = make()
    if isinstance(m, bnn.LeNet):
        x = np.random.default_rng(0).integers(0, 256, (40, 1, 28, 28)).astype(np.uint8)
    else:
        x = digits.x[:40]
    y = digits.y[:40]
    m.train()  # the wrapper evaluates in eval mode and leaves the model's mode alone
    with torch.no_grad():
        want = m.eval()(torch.tensor(x, dtype=torch.float32)).double().numpy()
    m.train()
    logits = m.predict(x, batch_size=16)
    assert m.training
    # float32 models: another batch size may sum in another order
    np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-5)
    assert m.score(x, y, 16) == pytest.approx(np.mean(logits.argmax(1) == y))
    assert m.score(x, y, 16) == pytest.approx(1 - m.error(x, y, 16))
    np.testing.assert_allclose(m.predict_proba(x, 16), softmax(logits), rtol=1e-9, atol=1e-12)
    assert np.array_equal(m.predict_classes(x, 16), logits.argmax(1))


@pytest.mark.parametrize("kind", ["binary", "real"])
def test_score_names_bad_labels(kind, nets, xy):
    model = nets["mlp_bin"] if kind == "binary" else bnn.MLP([64, 8, 10]).eval()
    x = xy[0][:10]
    for y, exc, frag in ((np.arange(10) + 5, ValueError, "y holds labels in [5, 14]; expected class indices in [0, 10)"),
                         (np.zeros(9, np.int64), ValueError, "y has shape (9,); expected (10,)"),
                         (np.zeros(10), TypeError, "y has dtype float64; expected integer class indices")):
        with pytest.raises(exc) as e:
            model.score(x, y)
        check(e, "score: ", frag)


def test_real_model_predict_names_a_wrong_sample_shape():
    m = bnn.MLP([64, 8, 10]).eval()
    with pytest.raises(ValueError) as e:
        m.predict(np.zeros((2, 30)))
    check(e, "predict: x holds samples of shape (30,)", "expected samples the model was built for")
    with pytest.raises(TypeError) as e:
        m.predict(np.array([["a"] * 64]))
    check(e, "predict: x has dtype <U1", "expected real numbers")


# ------------------------------------------------------------------------ found by tests/test_fuzz_files.py
def test_fingerprint_of_a_conv_with_per_channel_pad_values(tmp_path):
    """A first conv on real input may pad each channel with its own value; canonicalize
    read pad_value with float() and raised a TypeError for such a network."""
    from netgen import shuffle

    rng = np.random.default_rng(12)
    net = BinaryNetwork([Conv2d(pm1(rng, (4, 3, 3, 2)), threshold=rng.normal(0, 50, 4), padding="same",
                                pad_value=np.array([0.5, -1.0])),
                         Dense(pm1(rng, (5, 144)), threshold=rng.integers(-4, 5, 5)),
                         Dense(pm1(rng, (3, 5)))], (6, 6, 2), "NHWC")
    fp = bt.fingerprint(net)
    assert bt.fingerprint(bt.load(net.save(tmp_path / "n.npz"))) == fp
    assert bt.fingerprint(shuffle(rng, net)) == fp


# ------------------------------------------------------------------------ batch sizes
@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "64", None])
@pytest.mark.parametrize("method", ["predict", "predict_classes", "predict_proba", "error", "score"])
def test_batch_size_must_be_a_positive_integer(bad, method, nets, xy, torch_mlp):
    """A batch size is never rounded into another one: 0, -1, 1.5, True, "64" and None
    are refused by name, for frozen networks (the chain's fast path included) and for
    the torch models' evaluation methods alike."""
    x, y = xy
    for model in (nets["mlp_real"], torch_mlp):
        args = (x,) if method.startswith("predict") else (x, y)
        with pytest.raises(ValueError) as e:
            getattr(model, method)(*args, batch_size=bad)
        check(e, "batch_size", repr(bad), "an integer >= 1")
    # the fast path: uint8 rows of a plain MLP on pixels go straight to the compiled chain
    plain = BinaryNetwork([Dense(pm1(np.random.default_rng(3), (16, 64)), threshold=np.full(16, 0.5)),
                           Dense(pm1(np.random.default_rng(4), (10, 16)))], (64,))
    with pytest.raises(ValueError) as e:
        plain.predict(np.ascontiguousarray(x.reshape(len(x), 64)), batch_size=bad)
    check(e, "batch_size", repr(bad))


def test_numpy_integer_batch_sizes_work(nets, xy):
    x = xy[0]
    assert np.array_equal(nets["mlp_real"].predict(x, batch_size=np.int64(7)), nets["mlp_real"].predict(x))
