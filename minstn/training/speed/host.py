"""Host (CPU) settings that decide how fast the NumPy code runs: BLAS threads and glibc's malloc.

    from minstn.training.speed import host
    host.set_blas_threads(1)   # -> True when a BLAS library was found and set
    host.keep_freed_memory()   # -> True on glibc (Linux)

Why these exist (`python -m minstn.bench train` measures both; benchmarks/train.md):

* Threads. NumPy runs element-wise work, copies and gathers on one core; only its BLAS (the
  matrix products) uses several. A training step that splits its batch into chunks and runs
  them on workers (processes.py, or threads in chunks.py, since NumPy releases the GIL inside its
  loops) keeps every core busy, but then each worker's BLAS call must be single-threaded, or
  2 workers x 2 BLAS threads fight over 2 cores (the benchmark's "whole batch" column is the
  unchunked step with BLAS on every core). threadpoolctl changes the thread count of
  whatever BLAS NumPy loaded (OpenBLAS, MKL, BLIS) at run time, which OMP_NUM_THREADS can only
  do before NumPy loads.
* Memory. glibc serves every allocation above 32 MB with a fresh mmap and returns it to the
  kernel on free, so each training step page-faults (and the kernel zeroes) every large
  activation again. keep_freed_memory raises the mmap and trim thresholds (mallopt) so freed
  blocks stay in the heap and are reused (`python -m minstn.bench train --no-keep-memory` times
  the step without it).

Both are process-wide, best effort and silent no-ops where unsupported (no BLAS threadpoolctl
knows, no glibc): they return False there and the code still runs, only slower.
"""
from __future__ import annotations

import ctypes
import os
import platform
import sys
from contextlib import contextmanager

from threadpoolctl import threadpool_info, threadpool_limits

__all__ = ["blas_threads", "set_blas_threads", "preserved_blas_threads", "keep_freed_memory", "cpu_count",
           "cpu_model", "machine"]


def _blas_pools() -> list:
    import numpy  # noqa: F401  (make sure NumPy, and with it its BLAS, is loaded)

    return [info for info in threadpool_info() if info["user_api"] == "blas"]


def blas_threads() -> int | None:
    """The BLAS library's current thread count, or None when no BLAS is found."""
    pools = _blas_pools()
    return int(pools[0]["num_threads"]) if pools else None


def set_blas_threads(n: int) -> bool:
    """Set the BLAS thread count (process-wide). Returns False when no BLAS could be found."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"BLAS threads must be a positive integer, got {n!r}")
    if not _blas_pools():
        return False
    threadpool_limits(limits=n, user_api="blas")
    return True


@contextmanager
def preserved_blas_threads():
    """Restore the BLAS thread count on leaving the block, whatever the block set it to."""
    with threadpool_limits(limits=None):
        yield


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


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or platform.processor() elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    """What a result was computed on, for result.json: the CPU's model, the cores this process may
    use, and the BLAS library with the kernels it chose for this CPU (its float sums, and so the
    last digits of a result, depend on them)."""
    pools = _blas_pools()
    blas = (" ".join(str(pools[0].get(k)) for k in ("internal_api", "version", "architecture") if pools[0].get(k))
            if pools else "none found")
    return {"cpu": cpu_model(), "cores": cpu_count(), "blas": blas}
