"""The training tasks and the files and cache of the single-digit ones.

    TASKS                         ('mnist-sequence', 'distorted-mnist', 'cluttered-mnist')
    generator_task(task, distortion)  -> the minstn.data.distorted task: 'R', 'RTS', 'P', 'E', 'TC' or 'cluttered'
    load_digit_splits(task, distortion, train_size, val_size, test_size, seed, data_dir, cache_dir)
                                  -> {'train': d, 'val': d, 'test': d}, generated or from the cache
    save_digit_file(path, d, params) / load_digit_file(path, task=None, distortion=None)
    load_digit_dir(folder, task=None, distortion=None)   DIR/train.npz, val.npz, test.npz

Tasks (python -m minstn.train --task ...):
    mnist-sequence   the LSTM-STN paper's 100x100 canvases of four digits (minstn.data.sequences;
                     files and cache in minstn.data.store)
    distorted-mnist  one MNIST digit distorted as --distortion says (R 28x28, RTS 42x42, P 28x28,
                     E 28x28, TC 60x60): the STN paper's Table 1 (minstn.data.distorted)
    cluttered-mnist  one digit in a 60x60 image with 8x8 clutter: the TSTN paper's data set, as
                     minstn.data.distorted reads it

The single-digit files are the MNIST-sequence files' format (minstn.data.store): one split per
uncompressed .npz, loadable with np.load(path, allow_pickle=False), written atomically, with a
JSON 'params' record of how it was made:

    images  (N, 1, S, S) float32 in [0, 1]      S = 28, 42 or 60 (the task's; read from the file)
    labels  (N, 1)       int64 in 0..9           one digit per image, so every (N, P) label code works
    params  ()           str: JSON {format, kind 'digits', task, split, size, seed, block, options, mnist}

(no angles or boxes: a digit's distortion is not one angle and one box). The cache is the one of
minstn.data.store (load_splits's folder, $MINSTN_CACHE_DIR or ~/.cache/minstn/sequences), under names
'<task>-<split>-<n>-seed<seed>-<hash>.npz' with the sha256 of the record in the name; a cached file is
used only if it loads, validates and holds the expected record, else a warning says why and the split
is made again. Splits come from disjoint digit pools, as the canvases' do: train from MNIST training
digits [0, val_start), val from [val_start, N_train), test from the MNIST test set (minstn.data.distorted).
"""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np

from minstn.fileio import atomic_open

from . import distorted
from .mnist import DataError
from .sequences import SPLIT_IDS
from .store import _open, _record_hash, cached_split, default_sequence_cache_dir, mnist_record

__all__ = [
    "TASKS",
    "SEQUENCE_TASK",
    "DIGIT_TASKS",
    "DIGIT_FORMAT",
    "DIGIT_KEYS",
    "generator_task",
    "digit_record",
    "save_digit_file",
    "load_digit_file",
    "load_digit_dir",
    "load_digit_splits",
]

SEQUENCE_TASK = "mnist-sequence"
DIGIT_TASKS = ("distorted-mnist", "cluttered-mnist")
TASKS = (SEQUENCE_TASK,) + DIGIT_TASKS
DIGIT_FORMAT = 1
#: key -> dtype of a single-digit file's arrays (images (N, 1, S, S), labels (N, 1))
DIGIT_KEYS = {"images": np.dtype(np.float32), "labels": np.dtype(np.int64)}


def generator_task(task: str, distortion=None) -> str:
    """The minstn.data.distorted task of a training task: the distortion ('R', 'RTS', 'P', 'E', 'TC')
    for 'distorted-mnist', 'cluttered' for 'cluttered-mnist'. ValueError for anything else."""
    if task == "distorted-mnist":
        if distortion not in distorted.DISTORTIONS:
            raise ValueError(f"task distorted-mnist needs a distortion, one of {', '.join(distorted.DISTORTIONS)}; "
                             f"got {distortion!r}")
        return distortion
    if distortion is not None:
        raise ValueError(f"a distortion ({distortion!r}) applies to task distorted-mnist only, not {task!r}")
    if task == "cluttered-mnist":
        return distorted.CLUTTERED
    raise ValueError(f"{task!r} is not a single-digit task; choose one of {', '.join(DIGIT_TASKS)}")


def _check_digit_split(d, where, side=None) -> int:
    """Raise DataError naming ``where`` unless d is a valid single-digit split; returns N."""
    missing = [k for k in DIGIT_KEYS if k not in d]
    if missing:
        raise DataError(f"{where}: missing key(s) {missing}; a single-digit file holds {list(DIGIT_KEYS)}"
                        + (" (it looks like an MNIST-sequence file: train on it with --task mnist-sequence)"
                           if "boxes" in d else ""))
    images, labels = d["images"], d["labels"]
    for key, dtype in DIGIT_KEYS.items():
        if d[key].dtype != dtype:
            raise DataError(f"{where}: '{key}' has dtype {d[key].dtype}, expected {dtype}. Regenerate the file.")
    if images.ndim != 4 or images.shape[1] != 1 or images.shape[2] != images.shape[3] or images.shape[2] < 1:
        raise DataError(f"{where}: 'images' has shape {images.shape}, expected (N, 1, S, S) (square, one channel)")
    if side is not None and images.shape[2] != side:
        raise DataError(f"{where}: images are {images.shape[2]}x{images.shape[3]}, but this task's are {side}x{side}")
    if labels.ndim != 2 or labels.shape[1] != 1:
        raise DataError(f"{where}: 'labels' has shape {labels.shape}, expected (N, 1): one digit per image"
                        + (" (an MNIST-sequence file? train on it with --task mnist-sequence)" if labels.ndim == 2 else ""))
    n = images.shape[0]
    if labels.shape[0] != n:
        raise DataError(f"{where}: mismatched counts: {n} images but {labels.shape[0]} labels. Regenerate the file.")
    if n:
        if labels.min() < 0 or labels.max() > 9:
            raise DataError(f"{where}: labels outside 0..9 (min {labels.min()}, max {labels.max()}). Regenerate the file.")
        lo, hi = float(images.min()), float(images.max())
        if not (0.0 <= lo and hi <= 1.0):
            raise DataError(f"{where}: image values outside [0, 1] (min {lo}, max {hi}). Regenerate the file.")
    return n


def save_digit_file(path, d, params=None) -> None:
    """Write a single-digit split (images (N, 1, S, S) float32, labels (N, 1) int64) to ``path``
    atomically, with the JSON record ``params``; the arrays are validated first (DataError)."""
    path = os.fspath(path)
    arrays = {k: np.asarray(d[k]) for k in DIGIT_KEYS if k in d}
    _check_digit_split(arrays, f"save_digit_file({path})")
    record = json.dumps(params if params is not None else {"format": DIGIT_FORMAT, "kind": "digits"}, sort_keys=True)
    with atomic_open(path, suffix=".npz") as f:
        np.savez(f, params=np.array(record), **arrays)


def _read(path):
    """(arrays, record or None) of a single-digit file; DataError for a missing, foreign or damaged file."""
    with _open(path) as z:
        try:
            arrays = {k: z[k] for k in ("images", "labels", "boxes") if k in z.files}
            record = json.loads(str(z["params"][()])) if "params" in z.files else None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise DataError(f"{path}: damaged array data ({e}). Delete the file and regenerate it.") from None
    return arrays, record


def load_digit_file(path, task=None, distortion=None, side=None) -> dict:
    """Load and validate one single-digit split file; returns {'images', 'labels'}.

    With ``task`` (and ``distortion``) the file's record, when it has one, must name the same task
    (a DataError says which it holds); ``side``: the image side the caller needs.
    """
    path = os.fspath(path)
    arrays, record = _read(path)
    _check_digit_split(arrays, path, side)
    if task is not None and isinstance(record, dict) and "task" in record:
        want = generator_task(task, distortion)
        if record["task"] != want:
            raise DataError(f"{path}: holds task {record['task']!r} images, but this run is {task}"
                            + (f" {distortion}" if distortion else "") + f" ({want!r})")
    return {k: arrays[k] for k in DIGIT_KEYS}


def load_digit_dir(folder, task=None, distortion=None) -> dict:
    """folder/train.npz, val.npz and test.npz as single-digit splits (one image side for all three)."""
    out = {}
    for split in SPLIT_IDS:
        path = os.path.join(folder, f"{split}.npz")
        if not os.path.isfile(path):
            raise DataError(f"--data {folder!r} has no {split}.npz; a data folder holds train.npz, val.npz and test.npz")
        out[split] = load_digit_file(path, task, distortion, side=out["train"]["images"].shape[2] if out else None)
    return out


def digit_record(key, split, size, seed, options, mnist) -> dict:
    """The parameter record of one single-digit split: everything its images depend on."""
    return {"format": DIGIT_FORMAT, "kind": "digits", "task": key, "split": split, "size": int(size),
            "seed": int(seed), "block": distorted.BLOCK, "options": options.to_dict(), "mnist": mnist}


def load_digit_splits(task, distortion=None, train_size=70000, val_size=20000, test_size=2000, seed=0,
                      data_dir=None, cache_dir=None) -> dict:
    """The three splits of a single-digit task, generated or read from the cache (module docstring).

    task 'distorted-mnist' (with distortion 'R', 'RTS', 'P', 'E' or 'TC') or 'cluttered-mnist';
    sizes ints >= 0; seed int >= 0; data_dir the MNIST folder; cache_dir as minstn.data.load_splits.
    Returns {'train', 'val', 'test'}, each {'images' (N, 1, S, S) float32, 'labels' (N, 1) int64}.
    Every argument is checked (ValueError) before MNIST is read or anything is generated.
    """
    key = generator_task(task, distortion)
    sizes = {"train": train_size, "val": val_size, "test": test_size}
    for split, n in sizes.items():
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
            raise ValueError(f"load_digit_splits: {split}_size must be an int >= 0, got {n!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"load_digit_splits: seed must be an int >= 0, got {seed!r}")
    options = distorted.DistortionOptions.for_task(key)
    cache_dir = os.fspath(cache_dir) if cache_dir is not None else default_sequence_cache_dir()
    mnist = mnist_record(data_dir)
    name = f"distorted-{key}" if task == "distorted-mnist" else task
    out = {}

    def read(path):
        arrays, stored = _read(path)
        _check_digit_split(arrays, path, options.size)
        return {k: arrays[k] for k in DIGIT_KEYS}, stored

    def make(split, n, tick):
        if key == distorted.CLUTTERED:
            made = distorted.generate_cluttered(split, n, seed=seed, data_dir=data_dir, options=options, progress=tick)
        else:
            made = distorted.generate_distorted(split, n, key, seed=seed, data_dir=data_dir, options=options,
                                                progress=tick)
        return {"images": made["images"], "labels": made["labels"]}

    for split, n in sizes.items():
        record = digit_record(key, split, n, seed, options, mnist)
        path = os.path.join(cache_dir, f"{name}-{split}-{n}-seed{seed}-{_record_hash(record)[:16]}.npz")
        out[split] = cached_split(path, record, split, n, f"{n} {split} {name} images (seed {seed})", "images",
                                  read=read, make=lambda tick, split=split, n=n: make(split, n, tick),
                                  save=save_digit_file)
    return out
