"""Atomic writes: a failure inside the block leaves the old file and no temporary file."""
import os

import pytest

from minstn.fileio import atomic_open, atomic_write_bytes


def test_atomic_write_creates_folders_and_file(tmp_path):
    path = tmp_path / "a" / "b" / "f.bin"
    atomic_write_bytes(path, b"hello")
    assert path.read_bytes() == b"hello"
    assert os.listdir(path.parent) == ["f.bin"]


def test_failure_inside_the_block_keeps_the_old_file(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_open(path) as f:
            f.write(b"half of the new cont")
            raise RuntimeError("boom")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]  # no .tmp-* left behind


def test_keyboard_interrupt_leaves_no_partial_file(tmp_path):
    path = tmp_path / "new.bin"
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(path) as f:
            f.write(b"x")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_written_file_has_the_usual_permissions(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"x")
    umask = os.umask(0)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~umask)
