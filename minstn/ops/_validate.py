"""Shared input checks for the ops: one place that turns bad input into a clear error.

Every public op calls these before touching its arrays, so a wrong shape or dtype is
reported by name ("conv2d_forward: w must be 4-D (F, C, kh, kw), got shape (3, 3)")
instead of surfacing later as a broadcasting error deep inside a matrix product.

TypeError  -> the argument has the wrong kind (not an array, not a float, not an int).
ValueError -> the argument has the right kind but a wrong shape or value.
"""
from __future__ import annotations

import numbers

import numpy as np

from minstn.backend import is_cupy


def _is_array(a) -> bool:
    return isinstance(a, np.ndarray) or is_cupy(a)


def check_float_array(op: str, name: str, a, ndim: int | None = None, layout: str = ""):
    """Check that `a` is a NumPy/CuPy array of float32 or float64 with `ndim` dimensions.

    `layout` names the axes for the message, e.g. "(N, C, H, W)".
    """
    if not _is_array(a):
        raise TypeError(
            f"{op}: {name} must be a NumPy or CuPy array, got {type(a).__name__}; "
            f"convert it with np.asarray(..., dtype=np.float32)"
        )
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(
            f"{op}: {name} must be float32 or float64, got dtype {a.dtype}; "
            f"cast it with .astype(np.float32)"
        )
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{op}: {name} must be {ndim}-D {layout}, got shape {tuple(a.shape)}")
    return a


def check_same_dtype(op: str, **arrays):
    """All given arrays share one float dtype (no silent float32 -> float64 upcasts)."""
    items = list(arrays.items())
    first_name, first = items[0]
    for name, a in items[1:]:
        if a.dtype != first.dtype:
            raise TypeError(
                f"{op}: {name} has dtype {a.dtype} but {first_name} has dtype {first.dtype}; "
                f"cast them to one dtype (float32 for training, float64 for gradient checks)"
            )


def check_same_module(op: str, **arrays):
    """All given arrays live on one device (all NumPy or all CuPy)."""
    kinds = {name: ("cupy" if is_cupy(a) else "numpy") for name, a in arrays.items()}
    if len(set(kinds.values())) > 1:
        listing = ", ".join(f"{n}: {k}" for n, k in kinds.items())
        raise TypeError(f"{op}: arrays must all be NumPy or all CuPy ({listing}); move them with Device.asarray")


def check_positive_int(op: str, name: str, v, minimum: int = 1) -> int:
    """An int (not a bool, not a float) >= minimum."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{op}: {name} must be an int, got {type(v).__name__} {v!r}")
    if v < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {v}")
    return int(v)


def check_cache(op: str, cache, tags, forward: str):
    """A backward's cache must be the tuple its own forward returned, whose first item is a tag
    naming that forward (`tags`: one tag or a tuple of them). A cache from another op, or no cache
    at all, is a clear TypeError here instead of an unpacking error or wrong gradients later."""
    tags = (tags,) if isinstance(tags, str) else tuple(tags)
    if not isinstance(cache, tuple) or not cache or not isinstance(cache[0], str) or cache[0] not in tags:
        got = (f"the cache of {cache[0]!r}" if isinstance(cache, tuple) and cache and isinstance(cache[0], str)
               else f"a {type(cache).__name__}")
        raise TypeError(f"{op}: cache is not from {forward} (got {got}); pass the cache that {forward} returned")
    return cache


def check_dout(op: str, name: str, dout, expected: tuple):
    """An upstream gradient must be an array of exactly the forward output's shape.

    Without this check a wrong-shaped gradient could be silently broadcast (e.g. (1, D)
    against (N, D)) and give wrong gradients with no error.
    """
    if not _is_array(dout):
        raise TypeError(f"{op}: {name} must be a NumPy or CuPy array, got {type(dout).__name__}")
    if tuple(dout.shape) != tuple(expected):
        raise ValueError(
            f"{op}: {name} must have the forward output's shape {tuple(expected)}, got {tuple(dout.shape)}"
        )
    return dout
