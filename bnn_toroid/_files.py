"""File helpers shared by every writer: atomic replace and content hashes."""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np


def atomic_write(path, write) -> Path:
    """Call ``write(fileobj)`` on a temporary file beside ``path``, then rename it over
    ``path``; a crash never leaves a half-written file under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a saved file gets the usual mode
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_arrays(arrays: dict) -> str:
    """Hash of named arrays: names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


class ArchiveError(ValueError):
    """An ``.npz`` archive is missing, truncated or not an archive."""


def write_npz(path, arrays: dict, meta: dict) -> Path:
    """Write named arrays plus a JSON ``meta`` entry as a compressed ``.npz``, atomically."""
    blob = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8)

    def write(f):
        buf = io.BytesIO()
        np.savez_compressed(buf, meta=blob, **arrays)
        f.write(buf.getvalue())

    return atomic_write(path, write)


def read_npz(path) -> tuple[dict, dict | None]:
    """(arrays, meta) of an archive written by :func:`write_npz`, read without pickle;
    ``meta`` is None when the archive has no readable ``meta`` entry."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise ArchiveError(f"{path}: no such file") from None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise ArchiveError(f"{path}: not a readable .npz archive (truncated or another format): {e}") from None
    blob = arrays.pop("meta", None)
    try:
        meta = None if blob is None else json.loads(blob.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        meta = None
    return arrays, meta
