"""Tests of minstn.training.speed.host: the BLAS thread count and glibc's malloc settings (best effort, process-wide)."""
from __future__ import annotations

import sys

import pytest

from minstn.training.speed import host


def test_cpu_count_is_positive():
    assert host.cpu_count() >= 1


def test_set_blas_threads_round_trip():
    before = host.blas_threads()
    if before is None:
        assert host.set_blas_threads(1) is False   # no OpenBLAS found: a no-op that says so
        pytest.skip("this NumPy's BLAS is not an OpenBLAS whose thread count can be set")
    try:
        assert host.set_blas_threads(1) is True
        assert host.blas_threads() == 1
    finally:
        host.set_blas_threads(before)
    assert host.blas_threads() == before


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_set_blas_threads_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="positive integer"):
        host.set_blas_threads(bad)


def test_keep_freed_memory_reports_support():
    ok = host.keep_freed_memory()
    assert isinstance(ok, bool)
    if sys.platform.startswith("linux"):
        assert ok   # glibc accepts both mallopt settings


def test_preserved_blas_threads_restores_the_count():
    before = host.blas_threads()
    if before is None:
        pytest.skip("this NumPy's BLAS is not an OpenBLAS whose thread count can be set")
    with host.preserved_blas_threads():
        host.set_blas_threads(1)
        assert host.blas_threads() == 1
    assert host.blas_threads() == before
    with pytest.raises(RuntimeError):
        with host.preserved_blas_threads():
            host.set_blas_threads(1)
            raise RuntimeError("inside")
    assert host.blas_threads() == before
