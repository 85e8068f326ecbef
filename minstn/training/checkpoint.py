"""Checkpoints: one .npz file of named arrays plus a JSON metadata string, written atomically.

    save(path, arrays, meta)          arrays: {key: np.ndarray}, meta: JSON-able dict
    arrays, meta = load(path)         np.load(allow_pickle=False): no pickled objects, ever

File layout (a plain NumPy .npz, readable with np.load(path, allow_pickle=False)):

    <key>.npy        one entry per array (keys may contain '/', e.g. 'param/cls_fc_w')
    __meta__.npy     a 0-d unicode array holding json.dumps(meta), with
                     meta['format'] = 'minstn-checkpoint' and meta['version'] = 1 added by save()

Writing is atomic: the file is written to a temporary name in the same folder, flushed and
fsync'ed, then moved over the target with os.replace, so a crash or Ctrl-C leaves either the
old checkpoint or the new one, never half a file.

What the trainer stores (minstn.train): arrays 'param/<name>' (model parameters) and
'optim/<slot>/<name>' (optimiser moments); meta: config, model name/downsample/options/dtype,
epoch, step in epoch, global step, images seen, elapsed seconds, optimiser scalars, schedule
and early-stopping state, the dropout RNG state (a dict of ints), best metric and epoch.
"""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np

from minstn.fileio import atomic_open

__all__ = ["save", "load", "CheckpointError", "FORMAT", "VERSION", "META_KEY"]

FORMAT = "minstn-checkpoint"
VERSION = 1
META_KEY = "__meta__"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, not an .npz, or not written by minstn."""


def save(path, arrays: dict, meta: dict) -> str:
    """Write arrays and meta to `path` (an .npz) atomically; returns the path.

    arrays: {key: array-like}, keys non-empty strings other than '__meta__'; CuPy arrays are
    copied to the host. meta: a dict that json.dumps accepts (NaN/inf are refused: store them
    as strings). Raises TypeError / ValueError for bad input, before anything is written.
    """
    path = os.fspath(path)
    if not isinstance(arrays, dict):
        raise TypeError(f"arrays must be a dict {{key: array}}, got {type(arrays).__name__}")
    if not isinstance(meta, dict):
        raise TypeError(f"meta must be a dict, got {type(meta).__name__}")
    host = {}
    for key, a in arrays.items():
        if not isinstance(key, str) or not key or key == META_KEY:
            raise ValueError(f"array keys must be non-empty strings other than {META_KEY!r}, got {key!r}")
        if hasattr(a, "get") and type(a).__module__.split(".")[0] == "cupy":
            a = a.get()
        a = np.asarray(a)
        if a.dtype == object:
            raise TypeError(f"array {key!r} has dtype object, which cannot be saved without pickle")
        host[key] = a
    meta = {**meta, "format": FORMAT, "version": VERSION}
    try:
        text = json.dumps(meta, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise ValueError(f"meta must be JSON-serialisable without NaN/inf ({e})") from e
    with atomic_open(path, suffix=".npz") as f:
        np.savez(f, **host, **{META_KEY: np.array(text)})
    return path


def load(path) -> tuple[dict, dict]:
    """Read a checkpoint written by save(): returns (arrays {key: np.ndarray}, meta dict).

    Raises CheckpointError saying what is wrong: no such file, not a readable .npz (truncated
    or another format), or an .npz that minstn did not write.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path!r}: check the path (a run writes DIR/checkpoint.npz and DIR/last.npz)")
    if os.path.isdir(path):
        raise CheckpointError(f"{path!r} is a folder; give the checkpoint file inside it, e.g. {os.path.join(path, 'checkpoint.npz')!r}")
    try:
        z = np.load(path, allow_pickle=False)
        if not hasattr(z, "files"):
            raise CheckpointError(f"{path!r} is a single .npy array, not a minstn checkpoint (.npz)")
        with z:
            if META_KEY not in z.files:
                raise CheckpointError(f"{path!r} is an .npz file but not a minstn checkpoint (it has no {META_KEY!r} entry)")
            text = str(z[META_KEY][()])
            arrays = {key: z[key] for key in z.files if key != META_KEY}
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise CheckpointError(
            f"cannot read checkpoint {path!r} ({type(e).__name__}: {e}); the file is truncated or not an .npz. "
            "Use another checkpoint (DIR/last.npz or DIR/checkpoint.npz) or train again."
        ) from e
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path!r} has unreadable metadata ({e}); the file was not written by minstn") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} is not a minstn checkpoint (metadata format is not {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path!r} is checkpoint version {meta.get('version')!r}; this minstn reads version {VERSION}")
    return arrays, meta
