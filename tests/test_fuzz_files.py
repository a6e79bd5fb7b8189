"""Fuzzed network and ONNX files, and a save killed half-way (issue 21, tests section).

A file from disk is hostile input: whatever its bytes, loading it must either give a
network or raise the package's own named error (``NetworkFileError`` for ``.npz``
network files, ``OnnxImportError`` for ONNX), never numpy's, zipfile's, protobuf's or
Numba's internals, never a ``MemoryError``, and never a hint to unpickle.

Three kinds of damage: raw byte edits (flips, truncations, insertions, deletions), on
the deflated file as written and on an uncompressed copy (so edits reach the .npy
headers and the JSON directly); edits of the metadata and arrays with the SHA-256
recomputed, as a careful forger would, so that the structural checks behind the hash
are what is exercised; and edits of ONNX graphs (dimensions, attributes, constants).
The example counts keep the whole module within about half a minute.
"""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import warnings
import zipfile

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bnn_toroid as bt
from bnn_toroid import io as bio
from bnn_toroid import nn as bnn
from bnn_toroid._files import read_npz, sha256_content, write_npz
from bnn_toroid.network import (BatchNormRecord, BinaryNetwork, Conv2d, Dense, MaxPool2d,
                                 NetworkFileError)
from bnn_toroid.onnx import OnnxImportError

# no example database in the working tree; every run draws fresh examples
FUZZ = dict(deadline=None, database=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def pm1(rng, shape):
    return rng.choice(np.array([-1, 1], np.int8), size=shape)


def _net():
    """A conv net on real NCHW input with every kind of saved array: per-channel pad
    values, a min-pooled channel mask, BatchNorm records, an output affine."""
    rng = np.random.default_rng(7)
    return BinaryNetwork(
        [Conv2d(pm1(rng, (4, 3, 3, 2)), threshold=rng.normal(0, 50, 4), padding="same",
                pad_value=np.array([0.5, -1.0]), bn=BatchNormRecord(rng.normal(size=4), 1e-3, True)),
         MaxPool2d(2, min_channels=np.array([True, False, True, False])),
         Dense(pm1(rng, (5, 36)), threshold=rng.integers(-4, 5, 5), bn=BatchNormRecord(rng.normal(size=5), 1e-3)),
         Dense(pm1(rng, (3, 5)), out_scale=rng.uniform(0.5, 2, 3), out_bias=rng.normal(size=3))],
        (2, 6, 6), "NCHW")


NET = _net()
X = np.random.default_rng(8).integers(0, 256, (6, 2, 6, 6)).astype(np.uint8)


def _file_bytes(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    npz = NET.save(d / "net.npz").read_bytes()
    # the same archive uncompressed: byte edits then land in headers and JSON, not in
    # a deflate stream whose CRC catches nearly everything
    with zipfile.ZipFile(io.BytesIO(npz)) as z:
        entries = {i.filename: z.read(i.filename) for i in z.infolist()}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for k, v in entries.items():
            z.writestr(k, v)
    bt.onnx.export(NET, d / "net.onnx")
    torch_file = bio.save_model(bnn.MLP([8, 4, 3]).eval(), d / "torch.npz", "mlp:8-4-3")
    return {"npz": npz, "stored npz": buf.getvalue(), "onnx": (d / "net.onnx").read_bytes(),
            "torch npz": torch_file.read_bytes()}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return _file_bytes(tmp_path_factory)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("scratch")


# ---------------------------------------------------------------------------- byte edits
_op = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 30), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 30)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 30), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 30), st.integers(1, 64)),
    st.tuples(st.just("overwrite"), st.integers(0, 1 << 30),
              st.sampled_from([b"\xff\xff\xff\xff", b"\0\0\0\0", b"\xff\xff\xff\x7f", b"\x01"])),
)
edits = st.lists(_op, min_size=1, max_size=4)


def mutate(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for op in ops:
        at = op[1] % (len(b) + 1)
        if op[0] == "flip" and b:
            b[at % len(b)] ^= op[2]
        elif op[0] == "truncate":
            del b[at:]
        elif op[0] == "insert":
            b[at:at] = op[2]
        elif op[0] == "delete":
            del b[at:at + op[2]]
        elif op[0] == "overwrite":
            b[at:at + len(op[2])] = op[2]
    return bytes(b)


def _load_npz(path, loader=bt.load):
    """A network, or None after the named error; anything else fails the test."""
    try:
        net = loader(path)
    except NetworkFileError as e:
        msg = str(e)
        assert str(path) in msg and "allow_pickle" not in msg, msg
        return None
    return net


def _still_works(net):
    """A file that loads is a consistent network: it evaluates its input shape."""
    if isinstance(net, BinaryNetwork):
        x = np.zeros((2,) + net.input_shape, np.uint8)
        assert net.predict(x).shape == (2, net.num_classes)


@pytest.mark.parametrize("which", ["npz", "stored npz"])
@settings(max_examples=250, **FUZZ)
@given(ops=edits)
def test_mutated_network_files_give_named_errors(which, ops, files, scratch):
    path = scratch / f"m-{which.replace(' ', '_')}.npz"
    path.write_bytes(mutate(files[which], ops))
    net = _load_npz(path)
    if net is not None:
        _still_works(net)


@settings(max_examples=100, **FUZZ)
@given(ops=edits)
def test_mutated_torch_model_files_give_named_errors(ops, files, scratch):
    path = scratch / "m-torch.npz"
    path.write_bytes(mutate(files["torch npz"], ops))
    for loader in (bio.load_model, bio.load_any):
        _load_npz(path, loader)


def _load_onnx(path):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a dropped final softmax warns: not an error
            net = bt.onnx.load(path)
    except OnnxImportError as e:
        assert "allow_pickle" not in str(e)
        return None
    _still_works(net)
    return net


@settings(max_examples=120, **FUZZ)
@given(ops=edits)
def test_mutated_onnx_files_give_named_errors(ops, files, scratch):
    path = scratch / "m.onnx"
    path.write_bytes(mutate(files["onnx"], ops))
    _load_onnx(path)


# ---------------------------------------------------------------------------- edits behind the hash
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8)


@pytest.fixture(scope="module")
def parts(files, scratch):
    path = scratch / "orig.npz"
    path.write_bytes(files["npz"])
    return read_npz(path)


def _forge(arrays, meta, path):
    meta["sha256"] = sha256_content(arrays, meta)
    write_npz(path, arrays, meta)
    return path


_META_KEYS = ["format", "format_version", "input_shape", "input_layout", "binarize_input",
              "layers", "n_weights"]
_LAYER_KEYS = ["type", "shape", "stride", "padding", "size", "bn_after_pool"]


@settings(max_examples=300, **FUZZ)
@given(where=st.one_of(st.tuples(st.just("meta"), st.sampled_from(_META_KEYS)),
                       st.tuples(st.integers(0, 3), st.sampled_from(_LAYER_KEYS))),
       value=json_values, delete=st.booleans())
def test_forged_metadata_gives_a_network_or_a_named_error(where, value, delete, parts, scratch):
    arrays, meta = parts[0], json.loads(json.dumps(parts[1]))
    target = meta if where[0] == "meta" else meta["layers"][where[0]]
    if delete:
        target.pop(where[1], None)
    else:
        target[where[1]] = value
    net = _load_npz(_forge(arrays, meta, scratch / "forged.npz"))
    if net is not None:
        _still_works(net)


_DTYPES = [np.uint8, np.int8, np.int64, np.uint64, np.float16, np.float32, np.float64, np.bool_]


@st.composite
def arrays_like(draw, template):
    """An array of the template's shape or a near one, of any numeric dtype."""
    shape = list(template.shape)
    how = draw(st.sampled_from(["same", "resize", "reshape", "scalar"]))
    if how == "resize" and shape:
        i = draw(st.integers(0, len(shape) - 1))
        shape[i] = max(0, shape[i] + draw(st.integers(-2, 2)))
    elif how == "reshape":
        shape = [int(np.prod(shape))]
    elif how == "scalar":
        shape = []
    dtype = draw(st.sampled_from(_DTYPES))
    n = int(np.prod(shape))
    with np.errstate(over="ignore", invalid="ignore"):  # 1e300 as float16 is meant to be inf
        return _fill(draw, template, shape, dtype, n)


def _fill(draw, template, shape, dtype, n):
    fill = draw(st.sampled_from(["copy", "random", "special"]))
    if fill == "copy" and n == template.size:
        out = template.reshape(shape).astype(dtype)
    elif fill == "special" and np.dtype(dtype).kind == "f":
        out = np.array(draw(st.lists(st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e300]),
                                     min_size=n, max_size=n)), dtype).reshape(shape)
    else:
        rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
        out = (rng.integers(0, 256, n * np.dtype(dtype).itemsize, dtype=np.uint8)
               .view(dtype).reshape(shape))
    return out


# a forged pad value of 1e300 is evaluated in float32 (as inf), and numpy says so
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@settings(max_examples=250, **FUZZ)
@given(data=st.data())
def test_forged_arrays_give_a_network_or_a_named_error(data, parts, scratch):
    arrays, meta = dict(parts[0]), json.loads(json.dumps(parts[1]))
    key = data.draw(st.sampled_from(sorted(arrays)))
    if data.draw(st.booleans()):
        arrays[key] = data.draw(arrays_like(arrays[key]))
    else:
        del arrays[key]
    net = _load_npz(_forge(arrays, meta, scratch / "forged.npz"))
    if net is not None:
        _still_works(net)


# ---------------------------------------------------------------------------- edits of ONNX graphs
@pytest.fixture(scope="module")
def model(files):
    return onnx.load_from_string(files["onnx"])


def _ints():
    return st.integers(-(1 << 40), 1 << 40) | st.integers(-3, 8)


@settings(max_examples=150, **FUZZ)
@given(data=st.data())
def test_edited_onnx_graphs_give_a_network_or_a_named_error(data, model, scratch):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    what = data.draw(st.sampled_from(["input dim", "attribute", "initializer", "opset", "rewire"]))
    if what == "input dim":
        dims = g.input[0].type.tensor_type.shape.dim
        d = dims[data.draw(st.integers(0, len(dims) - 1))]
        if data.draw(st.booleans()):
            d.dim_value = data.draw(st.integers(0, 1 << 40))
        else:
            d.dim_param = data.draw(st.text(max_size=3))
    elif what == "attribute":
        nodes = [n for n in g.node if any(a.ints or a.type == onnx.AttributeProto.INT
                                          for a in n.attribute)]
        node = nodes[data.draw(st.integers(0, len(nodes) - 1))]
        attrs = [a for a in node.attribute if a.ints or a.type == onnx.AttributeProto.INT]
        a = attrs[data.draw(st.integers(0, len(attrs) - 1))]
        if a.ints:
            a.ints[data.draw(st.integers(0, len(a.ints) - 1))] = data.draw(_ints())
        else:
            a.i = data.draw(_ints())
    elif what == "initializer":
        t = g.initializer[data.draw(st.integers(0, len(g.initializer) - 1))]
        arr = onnx.numpy_helper.to_array(t)
        rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1)))
        flat = arr.reshape(-1).copy()
        if flat.size:
            i = rng.integers(0, flat.size, size=min(flat.size, 3))
            if flat.dtype.kind == "f":
                flat[i] = data.draw(st.sampled_from([np.nan, np.inf, 0.0, 0.5, -3.0, 1e30]))
            else:
                flat[i] = data.draw(_ints()) % (1 << 31)
        new = onnx.numpy_helper.from_array(flat.reshape(arr.shape), t.name)
        if data.draw(st.booleans()) and arr.ndim:  # a shape that no longer matches
            new = onnx.numpy_helper.from_array(flat[: max(0, flat.size - 1)], t.name)
        t.CopyFrom(new)
    elif what == "opset":
        m.opset_import[0].version = data.draw(st.integers(-5, 40))
    else:
        node = g.node[data.draw(st.integers(0, len(g.node) - 1))]
        names = [v.name for v in g.input] + [t.name for t in g.initializer] + \
            [o for n in g.node for o in n.output]
        if node.input:
            node.input[data.draw(st.integers(0, len(node.input) - 1))] = data.draw(
                st.sampled_from(names + ["nowhere"]))
    path = scratch / "edited.onnx"
    path.write_bytes(m.SerializeToString())
    _load_onnx(path)


# ---------------------------------------------------------------------------- kill -9 during a save
_STALL = r"""
import os, sys, time
import bnn_toroid as bt
new = bt.load(sys.argv[2])
real_fsync = os.fsync
def stall(fd):                  # the temporary file is written and synced: stop here,
    real_fsync(fd)              # before the rename, and let the parent kill us
    print("written", flush=True)
    time.sleep(120)
os.fsync = stall
new.save(sys.argv[1])
print("saved", flush=True)
"""

_LOOP = r"""
import sys
import bnn_toroid as bt
nets = [bt.load(p) for p in sys.argv[2:]]
print("go", flush=True)
i = 0
while True:                     # save and save again until killed
    nets[i % 2].save(sys.argv[1])
    i += 1
"""


def _spawn(script, *args):
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _other_net():
    rng = np.random.default_rng(9)
    return NET.with_layers([NET.layers[0], NET.layers[1],
                            Dense(pm1(rng, (5, 36)), threshold=NET.layers[2].threshold),
                            NET.layers[3]])


def test_kill_during_a_save_leaves_the_old_file(tmp_path):
    """SIGKILL after the new content is written but before it replaces the old file: the
    old file is intact (loads, same fingerprint and predictions), and the next save works
    despite the temporary file the killed process could not remove."""
    target, src = tmp_path / "net.npz", tmp_path / "new.npz"
    old, new = NET, _other_net()
    old.save(target)
    new.save(src)
    before = target.read_bytes()
    proc = _spawn(_STALL, target, src)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "written", (line, proc.stderr.read() if proc.poll() is not None else "")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert target.read_bytes() == before
    back = bt.load(target)
    assert bt.fingerprint(back) == bt.fingerprint(old) != bt.fingerprint(new)
    assert np.array_equal(back.predict(X), old.predict(X))
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".net.npz.")]
    assert len(leftovers) == 1  # the killed writer's temporary file, under another name
    new.save(target)
    assert bt.fingerprint(bt.load(target)) == bt.fingerprint(new)


def test_kill_at_random_moments_leaves_one_whole_file(tmp_path):
    """A process saving two networks in turn, killed at arbitrary moments: the file is
    always one of the two, whole."""
    a, b = NET, _other_net()
    pa, pb, target = tmp_path / "a.npz", tmp_path / "b.npz", tmp_path / "net.npz"
    a.save(pa)
    b.save(pb)
    a.save(target)
    prints = {bt.fingerprint(a), bt.fingerprint(b)}
    rng = np.random.default_rng(11)
    for delay in rng.uniform(0.0, 0.25, 3):
        proc = _spawn(_LOOP, target, pa, pb)
        try:
            assert proc.stdout.readline().strip() == "go"
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                pass
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate()
        assert proc.returncode == -signal.SIGKILL, "the saving loop ended by itself"
        assert bt.fingerprint(bt.load(target)) in prints
