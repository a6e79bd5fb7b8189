"""File helpers shared by every reader and writer: safe save targets, atomic replace,
content hashes, JSON reports, and a pickle-free ``.npz`` reader that checks every
declared size before it allocates.

The rules (also in ``docs/interop.md``):

- A save target must be a regular file or a new path. A folder, a device (``/dev/full``),
  a named pipe, a socket or a path below a regular file is refused with
  :class:`SaveTargetError`, and so is a symbolic link: links are not written through
  (the link would have been replaced by a regular file, or its target overwritten where
  the caller may not expect it); pass the link's target to replace that file. Folders
  above the target may be links.
- A save writes a temporary file beside the target, ``fsync``\\ s it and renames it over
  the target, so a crash or ``kill -9`` leaves the old file or the new one, never a
  mix. The new file keeps the permission bits of the file it replaces.
- An archive is read without pickle. Every entry's declared shape must match the bytes
  it holds, the declared sizes must be ones deflate can produce from the compressed
  bytes, and their total must stay below :data:`MAX_ARCHIVE_BYTES`; nothing is
  allocated before these checks pass.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import stat
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

#: Largest total of array bytes one archive may declare (the sum over its entries).
MAX_ARCHIVE_BYTES = 1 << 32

# deflate expands at most 1032:1; a declared size above this ratio is a lie
_DEFLATE_RATIO = 1100
_HEAD = 4096  # bytes read to say what a foreign file is


class ArchiveError(ValueError):
    """An ``.npz`` archive is missing, truncated, damaged, over the size limit or not an
    archive; the message says what the file is and what was expected."""


class SaveTargetError(ValueError):
    """A save target is not a regular file or a new path: a folder, a device, a named
    pipe, a socket or a symbolic link."""


# ---------------------------------------------------------------------------- writing
def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def as_path(path, what: str) -> Path:
    """``path`` as a :class:`Path`; anything but a str or ``os.PathLike`` is a TypeError."""
    if isinstance(path, (str, os.PathLike)):
        return Path(path)
    raise TypeError(f"{what}: path must be a str or os.PathLike, got {type(path).__name__}")


def check_target(path, what: str = "save") -> Path:
    """Refuse a save target that is not a regular file or a new path (module doc)."""
    path = as_path(path, what)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    except NotADirectoryError:  # a folder on the way is a file: say which, before any work
        _below_a_file(path, what)
    if stat.S_ISLNK(st.st_mode):
        raise SaveTargetError(
            f"{what}: path {str(path)!r} is a symbolic link (to {os.readlink(path)!r}); expected "
            "a regular file or a new path. Links are not written through: pass the link's "
            f"target ({os.path.realpath(path)!r}) to replace that file")
    if not stat.S_ISREG(st.st_mode):
        raise SaveTargetError(f"{what}: path {str(path)!r} is {_kind(st.st_mode)}; expected a "
                              "regular file or a new path")
    return path


def make_parent(path: Path, what: str = "save") -> None:
    """Create the folders above ``path``; a :class:`SaveTargetError` names the user's path
    and the part of it that is a file (mkdir's own ``FileExistsError`` names only that
    part, and ``NotADirectoryError`` not even which)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        _below_a_file(path, what)


def _below_a_file(path: Path, what: str):
    part = next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()),
                path.parent)
    kind = _kind(os.stat(part).st_mode) if part.exists() else "not a folder"
    raise SaveTargetError(f"{what}: path {str(path)!r} lies below {str(part)!r}, which is "
                          f"{kind}; expected a folder (or a path that can be created as one)")


def file_mode(path) -> int:
    """Permission bits for a file written to ``path``: those of the file it replaces, else
    the usual ``0o666`` less the umask (``mkstemp`` makes 0600)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write(path, write, what: str = "save") -> Path:
    """Call ``write(fileobj)`` on a temporary file beside ``path``, then rename it over
    ``path``; a crash never leaves a half-written file under the final name. ``path``
    must pass :func:`check_target` (``what`` names the caller in its errors)."""
    path = check_target(path, what)
    make_parent(path, what)
    mode = file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        check_target(path, what)  # again just before the rename: the window stays small
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # the rename itself survives a power loss once the folder is synced
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


# ---------------------------------------------------------------------------- JSON reports
def jsonable(v):
    """``v`` with every value JSON can hold: dicts (keys as strings), lists (from tuples
    and arrays), numpy scalars as Python numbers, paths as strings, and non-finite floats
    as ``None`` (written ``null``). Every report of the command line, the sweep and the
    demo goes through this."""
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return jsonable(v.tolist())
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return None if not np.isfinite(v) else float(v)
    if isinstance(v, Path):
        return str(v)
    return v


def report_text(report) -> str:
    """A report as the JSON text every front end writes: :func:`jsonable`, sorted keys,
    indented by two."""
    return json.dumps(jsonable(report), indent=2, sort_keys=True)


def write_report(path, report, what: str = "save") -> Path:
    """Write :func:`report_text` of ``report`` to ``path`` atomically (:func:`atomic_write`)."""
    text = report_text(report).encode()
    return atomic_write(path, lambda f: f.write(text), what)


# ---------------------------------------------------------------------------- hashes
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


def canonical_json(obj) -> bytes:
    """One spelling of a JSON value: sorted keys, no spaces, ASCII."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sha256_content(arrays: dict, meta: dict) -> str:
    """Hash of a file's whole content: its arrays (:func:`sha256_arrays`) and every
    metadata entry except ``sha256`` itself, in canonical JSON. Any edit of the
    metadata (``binarize_input``, a layer's stride, the spec of a torch model) changes it."""
    h = hashlib.sha256(b"bnn_toroid content v2|")
    h.update(sha256_arrays(arrays).encode())
    h.update(b"|")
    h.update(canonical_json({k: v for k, v in meta.items() if k != "sha256"}))
    return h.hexdigest()


# ---------------------------------------------------------------------------- archives
def write_npz(path, arrays: dict, meta: dict, what: str = "save") -> Path:
    """Write named arrays plus a JSON ``meta`` entry as a compressed ``.npz``, atomically."""
    blob = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8)

    def write(f):
        buf = io.BytesIO()
        np.savez_compressed(buf, meta=blob, **arrays)
        f.write(buf.getvalue())

    return atomic_write(path, write, what)


def describe(head: bytes) -> str:
    """What a file that is not a zip archive is, from its first bytes."""
    if not head:
        return "an empty file"
    if head.startswith(b"\x93NUMPY"):
        return "a single NumPy array (.npy), not an archive of named arrays"
    if head.startswith(b"\x1f\x8b"):
        return "a gzip-compressed file"
    # an ONNX model is a protobuf ModelProto; writers put ir_version (field 1) first
    if len(head) > 2 and head[0] == 0x08 and 1 <= head[1] <= 30 and head[2] in (0x12, 0x1a, 0x3a, 0x42):
        return "an ONNX model (read it with bnn_toroid.onnx.load)"
    for cut in range(4):  # a multi-byte character may straddle the end of the sample
        try:
            text = head[:len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        if all(c.isprintable() or c in "\t\n\r\f" for c in text):
            first = text.strip().splitlines()[0][:40] if text.strip() else ""
            return f"a text file (it starts {first!r})"
        break
    return f"unrecognised binary data (first bytes {head[:8].hex(' ')})"


def _check_entries(zf: zipfile.ZipFile, name: str, file_size: int):
    infos, seen, total, packed = zf.infolist(), set(), 0, 0
    for info in infos:
        entry = info.filename
        if not entry.endswith(".npy"):
            raise ArchiveError(f"{name}: entry {entry!r} is not a .npy array; expected an archive "
                               "of arrays only")
        if entry in seen:
            raise ArchiveError(f"{name}: entry {entry!r} appears twice; expected unique names")
        seen.add(entry)
        if info.flag_bits & 0x1:
            raise ArchiveError(f"{name}: entry {entry!r} is encrypted; expected a plain archive")
        if info.compress_type == zipfile.ZIP_STORED:
            limit = info.compress_size
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            limit = _DEFLATE_RATIO * info.compress_size + 4096
        else:
            raise ArchiveError(f"{name}: entry {entry!r} uses compression method "
                               f"{info.compress_type}; expected stored or deflated (as numpy writes)")
        if info.file_size > limit:
            raise ArchiveError(f"{name}: entry {entry!r} declares {info.file_size} bytes from "
                               f"{info.compress_size} compressed ones, more than its compression "
                               "can produce; the archive is damaged")
        total += info.file_size
        packed += info.compress_size
    if packed > file_size:
        raise ArchiveError(f"{name}: the entries declare {packed} compressed bytes but the file "
                           f"has {file_size}; the archive is truncated or damaged")
    if total > MAX_ARCHIVE_BYTES:
        raise ArchiveError(f"{name}: the entries declare {total} bytes of arrays; expected at most "
                           f"{MAX_ARCHIVE_BYTES} (bnn_toroid._files.MAX_ARCHIVE_BYTES)")
    return infos


def _read_entry(zf: zipfile.ZipFile, info, name: str) -> np.ndarray:
    key = info.filename[:-4]
    fmt = np.lib.format
    with zf.open(info) as m:
        version = fmt.read_magic(m)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(m)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(m)
        else:
            raise ArchiveError(f"{name}: entry {key!r} has .npy format version {version}; "
                               "expected 1.0 or 2.0")
        if dtype.hasobject:
            raise ArchiveError(f"{name}: entry {key!r} holds Python objects (pickled data), which "
                               "bnn_toroid never loads; expected numeric arrays")
        if dtype.kind not in "biuf":
            raise ArchiveError(f"{name}: entry {key!r} has dtype {dtype}; expected numbers")
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        held = info.file_size - m.tell()
        if min(shape, default=0) < 0 or nbytes != held:
            raise ArchiveError(f"{name}: entry {key!r} declares shape {shape} of {dtype} "
                               f"({nbytes} bytes) but holds {held} bytes; the archive is damaged")
        arr = np.empty(count, dtype)
        view, done = memoryview(arr).cast("B"), 0
        while done < nbytes:
            n = m.readinto(view[done:])
            if not n:
                raise ArchiveError(f"{name}: entry {key!r} ends after {done} of {nbytes} bytes; "
                                   "the archive is truncated")
            done += n
        m.read(1)  # reaching the end makes zipfile verify the entry's CRC-32
    return arr.reshape(shape, order="F" if fortran else "C")


def read_npz(path, expected: str = "a .npz archive written by bnn_toroid") -> tuple[dict, dict | None]:
    """(arrays, meta) of an archive written by :func:`write_npz`, read without pickle and
    with every declared size checked first (module doc); ``meta`` is None when the
    archive has no readable ``meta`` entry (a JSON object). Every failure is an
    :class:`ArchiveError` that says what the file is and ends with ``expected``."""
    name = os.fspath(as_path(path, "load"))
    try:
        st = os.stat(name)
    except (FileNotFoundError, NotADirectoryError):
        raise ArchiveError(f"{name}: no such file; expected {expected}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ArchiveError(f"{name}: this is {_kind(st.st_mode)}; expected {expected}")
    with open(name, "rb") as f:
        head = f.read(_HEAD)
        if head[:4] not in (b"PK\x03\x04", b"PK\x05\x06"):
            raise ArchiveError(f"{name}: this is {describe(head)}; expected {expected}")
        f.seek(0)
        try:
            with zipfile.ZipFile(f) as zf:
                arrays = {info.filename[:-4]: _read_entry(zf, info, name)
                          for info in _check_entries(zf, name, st.st_size)}
        except ArchiveError as e:
            # the entry checks say what is wrong with the archive; add what was wanted
            raise ArchiveError(f"{e} (expected {expected})") from None
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
                NotImplementedError, RuntimeError, OverflowError, KeyError, IndexError,
                TypeError, SyntaxError, MemoryError, struct.error, zlib.error) as e:
            # zipfile, zlib and numpy's header parser report damage in all of these ways
            msg = str(e).replace("allow_pickle", "pickle")  # never suggest unsafe loading
            raise ArchiveError(f"{name}: a damaged .npz archive (truncated or modified: "
                               f"{type(e).__name__}: {msg}); expected {expected}") from None
    blob = arrays.pop("meta", None)
    meta = None
    if blob is not None and blob.dtype == np.uint8 and blob.ndim == 1:
        try:
            meta = json.loads(blob.tobytes().decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            meta = None
    return arrays, meta if isinstance(meta, dict) else None
