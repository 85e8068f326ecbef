"""Host (CPU) settings that decide how fast the NumPy code runs: BLAS threads and glibc's malloc.

    from minstn import host
    host.set_blas_threads(1)   # -> True when the BLAS library was found and set
    host.keep_freed_memory()   # -> True on glibc (Linux)

Why these exist (numbers in benchmarks/train.md):

* Threads. NumPy runs element-wise work, copies and gathers on one core; only its BLAS (the
  matrix products) uses several. A training step that splits its batch into chunks and runs
  them on workers (processes: minstn.parallel; or threads: Model.loss_and_grads(..., workers=2),
  since NumPy releases the GIL inside its loops) keeps every core busy, but then each worker's
  BLAS call must be single-threaded, or 2 workers x 2 BLAS threads fight over 2 cores.
  set_blas_threads changes the BLAS thread count at run time, which OMP_NUM_THREADS can only do
  before NumPy loads.
* Memory. glibc serves every allocation above 32 MB with a fresh mmap and returns it to the
  kernel on free, so each training step page-faults (and the kernel zeroes) every large
  activation again: 20-30% of a CPU step at batch 64. keep_freed_memory raises the mmap and
  trim thresholds (mallopt) so freed blocks stay in the heap and are reused.

Both are process-wide, best effort and silent no-ops where unsupported (macOS, Windows, a
BLAS other than OpenBLAS): they return False there and the code still runs, only slower.
"""
from __future__ import annotations

import ctypes
import os
import sys
from contextlib import contextmanager

__all__ = ["blas_threads", "set_blas_threads", "preserved_blas_threads", "keep_freed_memory", "cpu_count"]

# OpenBLAS as shipped in NumPy wheels (scipy-openblas, 64-bit ints) and as a system library
_SET_NAMES = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
              "openblas_set_num_threads64_", "openblas_set_num_threads")
_GET_NAMES = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads",
              "openblas_get_num_threads64_", "openblas_get_num_threads")
_blas = None  # (set function, get function) once found, False when not found


def _find_blas():
    """The loaded OpenBLAS library's set/get-threads functions, found through /proc/self/maps."""
    global _blas
    if _blas is not None:
        return _blas
    _blas = False
    import numpy  # noqa: F401  (make sure NumPy, and with it its BLAS, is loaded)

    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "blas" in line.lower() and "/" in line})
    except OSError:
        return _blas
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        setter = next((getattr(lib, n) for n in _SET_NAMES if hasattr(lib, n)), None)
        getter = next((getattr(lib, n) for n in _GET_NAMES if hasattr(lib, n)), None)
        if setter is not None and getter is not None:
            setter.argtypes, setter.restype = [ctypes.c_int], None
            getter.argtypes, getter.restype = [], ctypes.c_int
            _blas = (setter, getter)
            break
    return _blas


def blas_threads() -> int | None:
    """The BLAS library's current thread count, or None when it cannot be read."""
    blas = _find_blas()
    return int(blas[1]()) if blas else None


def set_blas_threads(n: int) -> bool:
    """Set the BLAS thread count (process-wide). Returns False when the BLAS could not be found."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"BLAS threads must be a positive integer, got {n!r}")
    blas = _find_blas()
    if not blas:
        return False
    blas[0](n)
    return True


@contextmanager
def preserved_blas_threads():
    """Restore the BLAS thread count on leaving the block, whatever the block set it to."""
    before = blas_threads()
    try:
        yield
    finally:
        if before:
            set_blas_threads(before)


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed large blocks for reuse instead of unmapping them (Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    ok = mallopt(M_MMAP_THRESHOLD, 1 << 30) == 1   # blocks up to 1 GiB come from the heap
    ok = (mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1) and ok  # keep up to 1 GiB of free heap
    return ok


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1
