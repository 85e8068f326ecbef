"""MNIST-sequence files: saving, loading with validation, and the cache behind load_splits.

Shape legend:
    N     canvases in a split
    100   canvas side

File format (one split per file, a NumPy .npz archive, uncompressed, loadable with
np.load(path, allow_pickle=False)):

    images  (N, 1, 100, 100) float32 in [0, 1]
    labels  (N, 4)           int64 in 0..9, reading order
    angles  (N,)             float32 degrees
    boxes   (N, 4, 4)        float32 (x0, y0, x1, y1) end-exclusive canvas pixels per digit
    params  ()               str: JSON record of how the split was made (format, split,
                             size, seed, generator options, MNIST counts and sha256)

Uncompressed because it loads and saves at disk speed (a 70,000-canvas split is 2.8 GB;
np.savez_compressed would shrink it about 10x but takes minutes to write).

The cache: :func:`load_splits` keeps each split in ``cache_dir`` (default
``$MINSTN_CACHE_DIR``, else ``$XDG_CACHE_HOME/minstn/sequences`` or
``~/.cache/minstn/sequences``) under a name holding the sha256 of its parameter record.
A cached file is used only if it loads, validates (keys, shapes, dtypes, counts, value
ranges) and its stored record equals the expected one; otherwise a warning is issued and
the split is generated again and the file replaced.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import warnings
import zipfile

import numpy as np

from minstn.fileio import atomic_open

from .mnist import ALL_FILES, DataError, find_data_dir, mnist_file_path, read_idx
from .sequences import CANVAS, DIGITS, SPLIT_IDS, SequenceOptions, generate_split

__all__ = [
    "FORMAT_VERSION",
    "SPLIT_KEYS",
    "save_sequence_file",
    "load_sequence_file",
    "read_sequence_params",
    "load_sequence_dir",
    "default_sequence_cache_dir",
    "split_record",
    "load_splits",
]

FORMAT_VERSION = 1
# key -> (dtype, trailing shape)
# key -> (dtype, trailing shape); K (the digits per canvas: 4 in the paper's data, 3 in Sønderby's)
# is read from the labels and must agree between labels and boxes
SPLIT_KEYS = {
    "images": (np.dtype(np.float32), (1, CANVAS, CANVAS)),
    "labels": (np.dtype(np.int64), ("K",)),
    "angles": (np.dtype(np.float32), ()),
    "boxes": (np.dtype(np.float32), ("K", 4)),
}


def _check_split(d, where):
    """Raise DataError naming ``where`` if d is not a valid split dict; return N."""
    missing = [k for k in SPLIT_KEYS if k not in d]
    if missing:
        raise DataError(f"{where}: missing key(s) {missing}; a sequence file holds {list(SPLIT_KEYS)}. "
                        "Regenerate it with `python -m minstn.data.generate`.")
    n = None
    K = d["labels"].shape[1] if getattr(d["labels"], "ndim", 0) == 2 and d["labels"].shape[1] >= 1 else DIGITS
    for key, (dtype, trailing) in SPLIT_KEYS.items():
        trailing = tuple(K if t == "K" else t for t in trailing)
        a = d[key]
        if a.dtype != dtype:
            raise DataError(f"{where}: '{key}' has dtype {a.dtype}, expected {dtype}. Regenerate the file.")
        if a.ndim != 1 + len(trailing) or a.shape[1:] != trailing:
            raise DataError(f"{where}: '{key}' has shape {a.shape}, expected (N, {', '.join(map(str, trailing))})"
                            .replace(", )", ")") + ". Regenerate the file.")
        if n is None:
            n = a.shape[0]
        elif a.shape[0] != n:
            raise DataError(f"{where}: mismatched counts: 'images' holds {n} canvases but '{key}' {a.shape[0]}. "
                            "Regenerate the file.")
    if n:
        lab = d["labels"]
        if lab.min() < 0 or lab.max() > 9:
            raise DataError(f"{where}: labels outside 0..9 (min {lab.min()}, max {lab.max()}). Regenerate the file.")
        img = d["images"]
        lo, hi = float(img.min()), float(img.max())
        if not (0.0 <= lo and hi <= 1.0):
            raise DataError(f"{where}: image values outside [0, 1] (min {lo}, max {hi}). Regenerate the file.")
        box = d["boxes"]
        if not (np.all(box >= 0) and np.all(box <= CANVAS)
                and np.all(box[..., 2] > box[..., 0]) and np.all(box[..., 3] > box[..., 1])):
            raise DataError(f"{where}: boxes outside the canvas or empty (need 0 <= x0 < x1 <= {CANVAS}). "
                            "Regenerate the file.")
    return n


def save_sequence_file(path, d, params=None):
    """Write split dict d (images, labels, angles, boxes) to ``path`` (.npz) atomically.

    The arrays are validated first (DataError otherwise). ``params``: a JSON-able record
    stored beside them (see :func:`read_sequence_params`). Written to a temporary file in
    the same folder, then moved into place with os.replace, so readers never see half a file.
    """
    path = os.fspath(path)
    arrays = {k: np.asarray(d[k]) if k in d else None for k in SPLIT_KEYS}
    _check_split({k: v for k, v in arrays.items() if v is not None}, f"save_sequence_file({path})")
    record = json.dumps(params if params is not None else {"format": FORMAT_VERSION}, sort_keys=True)
    with atomic_open(path, suffix=".npz") as f:
        np.savez(f, params=np.array(record), **arrays)


def _open(path):
    """np.load(path) for a sequence file, with a message that tells a wrong file from a damaged one."""
    if os.path.isdir(path):
        raise DataError(f"{path}: is a folder; pass one of its .npz files (e.g. {os.path.join(path, 'test.npz')}), "
                        "written by `python -m minstn.data.generate`")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found. Generate it with `python -m minstn.data.generate --out DIR`.") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror}); check its permissions.") from None
    if head != b"PK\x03\x04":   # every .npz is a zip archive
        raise DataError(f"{path}: not a minstn data file (an .npz written by `python -m minstn.data.generate`; "
                        "MNIST's own .gz files go to --data-dir, not --data)")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: a damaged .npz archive ({e}); it is truncated or corrupt. Regenerate it "
                        "with `python -m minstn.data.generate`.") from None


def load_sequence_file(path):
    """Load and validate one split file; returns {'images', 'labels', 'angles', 'boxes'}.

    Raises DataError naming the file and the problem: missing file, damaged archive,
    missing keys, wrong shapes or dtypes, labels outside 0..9, values outside [0, 1],
    boxes outside the canvas, mismatched counts.
    """
    path = os.fspath(path)
    with _open(path) as z:
        try:
            d = {k: z[k] for k in SPLIT_KEYS if k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise DataError(f"{path}: damaged array data ({e}). Delete the file and regenerate it.") from None
    _check_split(d, path)
    return d


def read_sequence_params(path):
    """The parameter record (a dict) stored in a split file; DataError if absent or unreadable."""
    path = os.fspath(path)
    with _open(path) as z:
        if "params" not in z.files:
            raise DataError(f"{path}: no 'params' record. Regenerate the file.")
        try:
            return json.loads(str(z["params"][()]))
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise DataError(f"{path}: unreadable 'params' record ({e}). Regenerate the file.") from None


def load_sequence_dir(folder):
    """Load folder/train.npz, folder/val.npz and folder/test.npz (as written by minstn.data.generate)."""
    return {split: load_sequence_file(os.path.join(folder, f"{split}.npz")) for split in SPLIT_IDS}


def default_sequence_cache_dir():
    """$MINSTN_CACHE_DIR, else $XDG_CACHE_HOME/minstn/sequences, else ~/.cache/minstn/sequences."""
    if os.environ.get("MINSTN_CACHE_DIR"):
        return os.environ["MINSTN_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "minstn", "sequences")


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def mnist_record(data_dir):
    """{'train_count', 'test_count', 'sha256': {file: hex}} of the MNIST folder in use."""
    folder = find_data_dir(data_dir)
    paths = {name: mnist_file_path(folder, name) for name in ALL_FILES}
    counts = {f"{s}_count": int(read_idx(paths[f"{p}-labels-idx1-ubyte.gz"]).shape[0])
              for s, p in (("train", "train"), ("test", "t10k"))}
    return {**counts, "sha256": {name: _sha256(p) for name, p in paths.items()}}


def split_record(split, size, seed, options, mnist):
    """The parameter record of one split: everything its canvases depend on."""
    from .sequences import BLOCK
    return {"format": FORMAT_VERSION, "split": split, "size": int(size), "seed": int(seed),
            "block": BLOCK, "options": options.to_dict(), "mnist": mnist}


def _record_hash(record):
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def load_splits(train_size=70000, val_size=20000, test_size=2000, seed=0, data_dir=None,
                cache_dir=None, shifted_size=0, shifted_options=None, **generator_options):
    """The three MNIST-sequence splits, generated or read from the cache.

    train_size, val_size, test_size: canvases per split (0 allowed: empty arrays).
    seed: int >= 0. data_dir: the MNIST folder (see minstn.data.find_data_dir).
    cache_dir: where splits are cached (default :func:`default_sequence_cache_dir`).
    generator_options: fields of SequenceOptions (angle, crop, gap, noise_blocks,
    noise_size, noise_min_ink, val_start); unknown names raise TypeError.
    shifted_size, shifted_options: with shifted_size > 0 the result also holds 'shifted':
    that many canvases from the test digits, made with shifted_options (a SequenceOptions,
    e.g. another layout; default: the same options) and a random stream of their own.

    Returns {'train': d, 'val': d, 'test': d}, each d = {'images' (N, 1, 100, 100) float32,
    'labels' (N, 4) int64, 'angles' (N,) float32, 'boxes' (N, 4, 4) float32}.
    Each split has its own random stream, so e.g. the test split does not depend on
    train_size.
    """
    options = SequenceOptions.from_kwargs(**generator_options)
    sizes = {"train": train_size, "val": val_size, "test": test_size}
    if shifted_size:
        sizes["shifted"] = shifted_size
    split_options = {split: options for split in sizes}
    if shifted_options is not None:
        split_options["shifted"] = shifted_options
    for split, n in sizes.items():
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
            raise ValueError(f"load_splits: {split}_size must be an int >= 0, got {n!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"load_splits: seed must be an int >= 0, got {seed!r}")
    cache_dir = os.fspath(cache_dir) if cache_dir is not None else default_sequence_cache_dir()
    mnist = mnist_record(data_dir)
    out = {}
    for split, n in sizes.items():
        record = split_record(split, n, seed, split_options[split], mnist)
        path = os.path.join(cache_dir, f"{split}-{n}-seed{seed}-{_record_hash(record)[:16]}.npz")
        out[split] = cached_split(
            path, record, split, n, f"{n} {split} canvases (seed {seed})", "canvases",
            read=lambda p: (load_sequence_file(p), read_sequence_params(p)),
            make=lambda tick, split=split, n=n: generate_split(split, n, seed=seed, data_dir=data_dir,
                                                               options=split_options[split], progress=tick),
            save=save_sequence_file)
    return out


def cached_split(path, record, split, n, what, noun, read, make, save) -> dict:
    """One split through the cache: the arrays of `path` if it holds `record` and n items (its
    "labels" count them), else make(progress callback) -> arrays, saved to `path` as
    save(path, arrays, params=record) and returned. read(path) -> (arrays, stored record) raises
    DataError for a damaged file, which is then warned about and made again. `what` names the
    split in the line said while it is made, `noun` its items."""
    if os.path.exists(path):
        try:
            arrays, stored = read(path)
            if stored != record:
                raise DataError(f"{path}: its parameter record does not match the requested one")
            if len(arrays["labels"]) != n:
                raise DataError(f"{path}: holds {len(arrays['labels'])} {noun}, expected {n}")
            return arrays
        except DataError as e:
            warnings.warn(f"ignoring damaged cache file ({e}); generating split {split!r} again",
                          RuntimeWarning, stacklevel=3)
    if n > 0:
        print(f"minstn.data: generating {what} into the cache {path}", file=sys.stderr, flush=True)
    with _progress(n, f"generating {split}") as tick:
        arrays = make(tick)
    save(path, arrays, params=record)
    return arrays


@contextlib.contextmanager
def _progress(total: int, desc: str):
    """A tqdm bar on stderr while canvases are generated (only on a terminal); yields the
    generate_split progress callback (done, n)."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="canvas", file=sys.stderr, leave=False,
               disable=not (total > 0 and hasattr(sys.stderr, "isatty") and sys.stderr.isatty()))
    try:
        yield lambda done, n: bar.update(done - bar.n)
    finally:
        bar.close()
