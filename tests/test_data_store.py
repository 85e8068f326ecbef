"""Sequence files (format, validation, atomic writes) and the load_splits cache."""
from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

import minstn.data.store as store
from minstn.data import DataError, load_sequence_dir, load_sequence_file, load_splits, save_sequence_file
from minstn.data.sequences import empty_split
from minstn.data.store import read_sequence_params
from minstn.data.synthetic import write_synthetic_mnist


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    return write_synthetic_mnist(str(tmp_path_factory.mktemp("mnist")), n_train=300, n_test=100, seed=4)


def _split(rng, n=6):
    d = empty_split(n)
    d["images"][:] = rng.random(d["images"].shape, dtype=np.float32)
    d["labels"][:] = rng.integers(0, 10, size=(n, 4))
    d["angles"][:] = rng.uniform(-45, 45, size=n)
    d["boxes"][:] = np.array([10, 20, 30, 40], dtype=np.float32)
    return d


def test_round_trip_and_params(tmp_path, rng):
    d = _split(rng)
    path = tmp_path / "sub" / "s.npz"
    save_sequence_file(path, d, params={"seed": 3, "note": "x"})
    back = load_sequence_file(path)
    assert sorted(back) == ["angles", "boxes", "images", "labels"]
    for k in d:
        assert back[k].dtype == d[k].dtype
        np.testing.assert_array_equal(back[k], d[k])
    assert read_sequence_params(path) == {"seed": 3, "note": "x"}
    assert os.listdir(tmp_path / "sub") == ["s.npz"]              # no temporary file left
    with np.load(path, allow_pickle=False) as z:                  # a plain, pickle-free archive
        assert sorted(z.files) == ["angles", "boxes", "images", "labels", "params"]


def test_empty_split_round_trip(tmp_path):
    save_sequence_file(tmp_path / "e.npz", empty_split(0))
    back = load_sequence_file(tmp_path / "e.npz")
    assert back["images"].shape == (0, 1, 100, 100) and back["boxes"].shape == (0, 4, 4)


def test_save_validates_first(tmp_path, rng):
    d = _split(rng)
    d["labels"] = d["labels"].astype(np.int32)
    with pytest.raises(DataError, match=r"'labels' has dtype int32, expected int64"):
        save_sequence_file(tmp_path / "x.npz", d)
    assert os.listdir(tmp_path) == []


def test_failed_write_leaves_nothing(tmp_path, rng, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(store.np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        save_sequence_file(tmp_path / "x.npz", _split(rng))
    assert os.listdir(tmp_path) == []


def _write_raw(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


@pytest.mark.parametrize("change, match", [
    (lambda d: d.pop("boxes"), r"missing key\(s\) \['boxes'\]"),
    (lambda d: d.update(images=d["images"].astype(np.float64)), r"'images' has dtype float64, expected float32"),
    (lambda d: d.update(images=d["images"][:, :, :50]), r"'images' has shape \(6, 1, 50, 100\), expected \(N, 1, 100, 100\)"),
    (lambda d: d.update(angles=d["angles"][:, None]), r"'angles' has shape \(6, 1\), expected \(N\)"),
    (lambda d: d.update(labels=d["labels"][:5]), r"mismatched counts: 'images' holds 6 canvases but 'labels' 5"),
    (lambda d: d["labels"].__setitem__((0, 0), 10), r"labels outside 0..9"),
    (lambda d: d["images"].__setitem__((0, 0, 0, 0), 1.5), r"image values outside \[0, 1\]"),
    (lambda d: d["boxes"].__setitem__((0, 0, 2), 101), r"boxes outside the canvas or empty"),
])
def test_load_rejects_bad_content(tmp_path, rng, change, match):
    d = _split(rng)
    change(d)
    path = tmp_path / "bad.npz"
    _write_raw(path, **d)
    with pytest.raises(DataError, match=r"bad\.npz: " + match):
        load_sequence_file(path)


def test_load_missing_and_damaged_files(tmp_path, rng):
    with pytest.raises(DataError, match=r"nothing\.npz: file not found. Generate it"):
        load_sequence_file(tmp_path / "nothing.npz")
    save_sequence_file(tmp_path / "s.npz", _split(rng))
    raw = (tmp_path / "s.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"cut\.npz: .*damaged"):
        load_sequence_file(tmp_path / "cut.npz")
    _write_raw(tmp_path / "noparams.npz", **_split(rng))
    with pytest.raises(DataError, match=r"noparams\.npz: no 'params' record"):
        read_sequence_params(tmp_path / "noparams.npz")


def test_load_splits_generates_then_hits_cache(tmp_path, mnist_dir, monkeypatch):
    cache = tmp_path / "cache"
    first = load_splits(8, 5, 0, seed=2, data_dir=mnist_dir, cache_dir=cache, val_start=200)
    assert first["train"]["images"].shape == (8, 1, 100, 100)
    assert first["val"]["labels"].shape == (5, 4) and first["val"]["labels"].dtype == np.int64
    assert first["test"]["images"].shape == (0, 1, 100, 100) and first["test"]["boxes"].shape == (0, 4, 4)
    assert len(os.listdir(cache)) == 3

    def refuse(*args, **kwargs):
        raise AssertionError("generate_split called although the cache holds the split")
    monkeypatch.setattr(store, "generate_split", refuse)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = load_splits(8, 5, 0, seed=2, data_dir=mnist_dir, cache_dir=cache, val_start=200)
    for split in first:
        for k in first[split]:
            np.testing.assert_array_equal(second[split][k], first[split][k])


def test_cache_keyed_by_parameters(tmp_path, mnist_dir):
    cache = tmp_path / "cache"
    a = load_splits(4, 0, 3, seed=0, data_dir=mnist_dir, cache_dir=cache, val_start=200)
    b = load_splits(6, 0, 3, seed=0, data_dir=mnist_dir, cache_dir=cache, val_start=200, angle=10.0)
    assert not np.array_equal(a["test"]["images"], b["test"]["images"])   # angle is part of the key
    c = load_splits(7, 0, 3, seed=0, data_dir=mnist_dir, cache_dir=cache, val_start=200)
    np.testing.assert_array_equal(c["test"]["images"], a["test"]["images"])  # test split ignores train_size
    assert len([f for f in os.listdir(cache) if f.startswith("test-")]) == 2


def _only(cache, prefix):
    (name,) = [f for f in os.listdir(cache) if f.startswith(prefix)]
    return os.path.join(cache, name)


def test_damaged_cache_is_regenerated_with_a_warning(tmp_path, mnist_dir):
    cache = tmp_path / "cache"
    good = load_splits(5, 0, 0, seed=1, data_dir=mnist_dir, cache_dir=cache, val_start=200)
    path = _only(cache, "train-")
    raw = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(raw[:1000])
    with pytest.warns(RuntimeWarning, match=r"ignoring damaged cache file .*generating split 'train' again"):
        again = load_splits(5, 0, 0, seed=1, data_dir=mnist_dir, cache_dir=cache, val_start=200)
    np.testing.assert_array_equal(again["train"]["images"], good["train"]["images"])
    load_sequence_file(path)                                        # repaired on disk


def test_cache_with_wrong_record_or_content_is_regenerated(tmp_path, mnist_dir):
    cache = tmp_path / "cache"
    good = load_splits(5, 0, 0, seed=1, data_dir=mnist_dir, cache_dir=cache, val_start=200)
    path = _only(cache, "train-")
    d = load_sequence_file(path)
    d["labels"][:] = 0                                              # valid file, wrong record
    save_sequence_file(path, d, params={"format": 1, "seed": 99})
    with pytest.warns(RuntimeWarning, match="parameter record does not match"):
        again = load_splits(5, 0, 0, seed=1, data_dir=mnist_dir, cache_dir=cache, val_start=200)
    np.testing.assert_array_equal(again["train"]["labels"], good["train"]["labels"])


def test_load_splits_argument_errors(tmp_path, mnist_dir):
    with pytest.raises(TypeError, match=r"unknown generator option\(s\) \['noise'\]"):
        load_splits(1, 1, 1, data_dir=mnist_dir, cache_dir=tmp_path, noise=3)
    with pytest.raises(ValueError, match=r"val_size must be an int >= 0, got -2"):
        load_splits(1, -2, 1, data_dir=mnist_dir, cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"seed must be an int >= 0, got 1.5"):
        load_splits(1, 1, 1, seed=1.5, data_dir=mnist_dir, cache_dir=tmp_path)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("MINSTN_CACHE_DIR", str(tmp_path / "c"))
    assert store.default_sequence_cache_dir() == str(tmp_path / "c")
    monkeypatch.delenv("MINSTN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert store.default_sequence_cache_dir() == os.path.join(str(tmp_path / "x"), "minstn", "sequences")


def test_load_sequence_dir(tmp_path, rng):
    for split in ("train", "val", "test"):
        save_sequence_file(tmp_path / f"{split}.npz", _split(rng, 3))
    d = load_sequence_dir(tmp_path)
    assert sorted(d) == ["test", "train", "val"] and d["val"]["labels"].shape == (3, 4)
    os.remove(tmp_path / "val.npz")
    with pytest.raises(DataError, match=r"val\.npz: file not found"):
        load_sequence_dir(tmp_path)


def test_saved_files_get_the_usual_permissions(tmp_path, rng):
    old = os.umask(0o022)
    try:
        save_sequence_file(tmp_path / "s.npz", _split(rng, 2))
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "s.npz").st_mode & 0o777 == 0o644


def test_load_damaged_member_and_bad_params(tmp_path, rng):
    path = tmp_path / "s.npz"
    save_sequence_file(path, _split(rng, 40))                      # images dominate the archive
    raw = bytearray(path.read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + 64] = bytes(64)
    (tmp_path / "flipped.npz").write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"flipped\.npz: damaged array data"):
        load_sequence_file(tmp_path / "flipped.npz")
    _write_raw(tmp_path / "p.npz", params=np.array("{not json"), **_split(rng))
    with pytest.raises(DataError, match=r"p\.npz: unreadable 'params' record"):
        read_sequence_params(tmp_path / "p.npz")


def test_cache_with_wrong_count_is_regenerated(tmp_path, mnist_dir, capsys):
    cache = tmp_path / "cache"
    load_splits(5, 0, 0, seed=1, data_dir=mnist_dir, cache_dir=cache, val_start=200)
    assert "generating 5 train canvases (seed 1) into the cache" in capsys.readouterr().err
    path = _only(cache, "train-")
    d = {k: v[:3] for k, v in load_sequence_file(path).items()}
    save_sequence_file(path, d, params=read_sequence_params(path))   # right record, too few canvases
    with pytest.warns(RuntimeWarning, match="holds 3 canvases, expected 5"):
        again = load_splits(5, 0, 0, seed=1, data_dir=mnist_dir, cache_dir=cache, val_start=200)
    assert again["train"]["images"].shape == (5, 1, 100, 100)


def test_load_splits_adds_a_shifted_set_with_its_own_layout_and_cache_entry(tmp_path, mnist_dir):
    from minstn.data import SequenceOptions, read_sequence_params

    cache = tmp_path / "cache"
    cells = SequenceOptions.for_layout("cells", val_start=200)
    d = load_splits(4, 0, 3, seed=0, data_dir=mnist_dir, cache_dir=cache, val_start=200,
                    shifted_size=3, shifted_options=cells)
    assert sorted(d) == ["shifted", "test", "train", "val"] and d["shifted"]["labels"].shape == (3, 4)
    (path,) = [p for p in cache.iterdir() if p.name.startswith("shifted-3-")]
    record = read_sequence_params(path)
    assert record["split"] == "shifted" and record["options"]["crop"] is False and record["options"]["gap"] == -4
    assert not np.array_equal(d["shifted"]["images"], d["test"]["images"])
    assert "shifted" not in load_splits(4, 0, 3, seed=0, data_dir=mnist_dir, cache_dir=cache, val_start=200)
