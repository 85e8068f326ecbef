"""Atomic file writes: every file minstn writes (data, checkpoints, results) goes through here.

    with atomic_open("run/checkpoint.npz") as f:
        np.savez(f, **arrays)

The bytes go to a temporary file in the target's own folder (same file system), are flushed
and fsync'ed, and only then is the temporary file moved over the target with os.replace. A
crash, an exception or Ctrl-C inside the block leaves the old file (or none) and no partial
file: readers never see half a file.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager

__all__ = ["atomic_open", "atomic_write_bytes", "default_file_mode"]


def default_file_mode() -> int:
    """The mode a plain open() would give a new file (mkstemp creates files as 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_open(path, suffix: str = ".part"):
    """Open a temporary file beside `path` for binary writing; on success, move it over `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_bytes(path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_open(path) as f:
        f.write(data)
