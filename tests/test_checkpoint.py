"""Checkpoint files (minstn.training.checkpoint): round trip, atomic writes, clear errors."""
from __future__ import annotations

import os

import numpy as np
import pytest

from minstn.training import checkpoint


def test_round_trip_keeps_arrays_dtypes_and_meta(tmp_path, rng):
    arrays = {
        "param/w": rng.standard_normal((3, 4)).astype(np.float32),
        "optim/m/w": rng.standard_normal((3, 4)),
        "labels": np.arange(5, dtype=np.int64),
    }
    state = np.random.default_rng(7).bit_generator.state  # a dict of (big) ints
    meta = {"epoch": 3, "lr": 1e-3, "rng": state, "config": {"model": "lstm-stn"}}
    path = checkpoint.save(tmp_path / "ck.npz", arrays, meta)
    back, m = checkpoint.load(path)
    assert set(back) == set(arrays)
    for k in arrays:
        assert back[k].dtype == arrays[k].dtype
        np.testing.assert_array_equal(back[k], arrays[k])
    assert m["epoch"] == 3 and m["lr"] == 1e-3 and m["config"] == {"model": "lstm-stn"}
    assert m["format"] == checkpoint.FORMAT and m["version"] == checkpoint.VERSION
    g = np.random.default_rng(0)
    g.bit_generator.state = m["rng"]
    assert g.random() == np.random.default_rng(7).random()
    # plain NumPy can read it without pickle
    with np.load(path, allow_pickle=False) as z:
        assert checkpoint.META_KEY in z.files


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "ck.npz"
    checkpoint.save(path, {"a": np.zeros(2)}, {"n": 1})
    checkpoint.save(path, {"a": np.ones(2)}, {"n": 2})
    assert sorted(os.listdir(tmp_path)) == ["ck.npz"]
    arrays, meta = checkpoint.load(path)
    assert meta["n"] == 2 and arrays["a"][0] == 1.0
    # a failing save (meta not JSON-able) leaves the old file as it was
    with pytest.raises(ValueError, match="JSON-serialisable"):
        checkpoint.save(path, {"a": np.zeros(2)}, {"bad": float("nan")})
    assert checkpoint.load(path)[1]["n"] == 2
    assert sorted(os.listdir(tmp_path)) == ["ck.npz"]


def test_save_rejects_bad_input(tmp_path):
    with pytest.raises(TypeError, match="arrays must be a dict"):
        checkpoint.save(tmp_path / "x.npz", [np.zeros(1)], {})
    with pytest.raises(TypeError, match="meta must be a dict"):
        checkpoint.save(tmp_path / "x.npz", {}, "meta")
    with pytest.raises(ValueError, match="array keys must be non-empty strings"):
        checkpoint.save(tmp_path / "x.npz", {"__meta__": np.zeros(1)}, {})
    with pytest.raises(TypeError, match="dtype object"):
        checkpoint.save(tmp_path / "x.npz", {"a": np.array([{}, 1], dtype=object)}, {})
    assert not os.listdir(tmp_path)


def test_load_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint at"):
        checkpoint.load(tmp_path / "missing.npz")
    with pytest.raises(checkpoint.CheckpointError, match="is a folder"):
        checkpoint.load(tmp_path)
    good = checkpoint.save(tmp_path / "good.npz", {"a": np.arange(1000.0)}, {"n": 1})
    data = open(good, "rb").read()
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(checkpoint.CheckpointError, match="truncated or not an .npz"):
        checkpoint.load(trunc)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(checkpoint.CheckpointError, match="truncated or not an .npz"):
        checkpoint.load(text)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, images=np.zeros((2, 2)))
    with pytest.raises(checkpoint.CheckpointError, match="not a minstn checkpoint"):
        checkpoint.load(foreign)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(checkpoint.CheckpointError, match="single .npy array"):
        checkpoint.load(single)
    other = tmp_path / "other.npz"
    np.savez(other, __meta__=np.array('{"format": "something-else"}'))
    with pytest.raises(checkpoint.CheckpointError, match="metadata format is not"):
        checkpoint.load(other)
    newer = tmp_path / "newer.npz"
    np.savez(newer, __meta__=np.array('{"format": "minstn-checkpoint", "version": 99}'))
    with pytest.raises(checkpoint.CheckpointError, match="version 99"):
        checkpoint.load(newer)
    garbled = tmp_path / "garbled.npz"
    np.savez(garbled, __meta__=np.array("{not json"))
    with pytest.raises(checkpoint.CheckpointError, match="unreadable metadata"):
        checkpoint.load(garbled)
