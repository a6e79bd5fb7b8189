"""Numba's on-disk cache, kept consistent across the kernel files.

Numba drops a cached kernel when its own source file changes, but not when a kernel it
calls from another file does (a chain in :mod:`.chain` embeds :mod:`.pixels` and
:mod:`.gemm`), and a stale mix can crash the process. So the kernels' cache is keyed
by one digest of every kernel source: when it changes, the cached files are removed
before anything is loaded. An installed package never changes, so this only acts for
a development checkout, and never where the cache lives elsewhere (``NUMBA_CACHE_DIR``).
"""
import hashlib
import os
from pathlib import Path


def drop_stale(here=None) -> None:
    """Remove the cached kernels of directory ``here`` (default: this package) when its
    sources' digest differs from the one recorded with them."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    here = Path(here or Path(__file__).resolve().parent)
    try:
        digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(here.glob("*.py")))).hexdigest()
        cache = here / "__pycache__"
        stamp = cache / "kernels.digest"
        if stamp.is_file() and stamp.read_text() == digest:
            return
        for f in list(cache.glob("*.nbi")) + list(cache.glob("*.nbc")):
            f.unlink(missing_ok=True)
        cache.mkdir(exist_ok=True)
        tmp = stamp.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(digest)
        os.replace(tmp, stamp)
    except OSError:  # a read-only install: nothing there changes, nothing to drop
        pass
