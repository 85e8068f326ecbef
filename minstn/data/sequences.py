"""The MNIST-sequence data set of the LSTM-STN paper (section IV; SPEC section 3).

Each canvas is 100x100, one channel, values in [0, 1]: four MNIST digits in a row, all
rotated by one angle, somewhere on the canvas, plus ten 6x6 noise blocks cut from other
digits. The label is the four digits in reading order.

Shape legend:
    N        canvases
    K = 4    digits per canvas, in reading order
    B        noise blocks per canvas (default 10), S their side (default 6)
    P        digits in the split's pool (the MNIST digits a split may draw from)
    SH, SW   height and width of a block's "strips" (the four digits laid side by side)
    T        canvas pixels near the rotated strips (the only ones computed), a block's
             canvases together, about 15% of N * 100 * 100
    100      canvas side

How one canvas is made (all steps run on a whole block of canvases at once):
    1. Draw an angle (uniform in [-angle, angle] degrees) and four digits from the pool.
    2. Lay the digits side by side in a horizontal strip, left to right in reading order:
       with ``crop`` each is cut to its ink box (the bounding box of its non-zero pixels),
       the ink boxes are centred on one horizontal line and ``gap`` blank columns separate
       neighbours. Without ``crop`` each digit keeps its 28x28 cell and cells are ``gap``
       columns apart (a negative gap overlaps the blank margins of the cells).
    3. Pick a random position where the rotated strip fits inside the canvas and draw it
       there: every canvas pixel is mapped back into the strip (rotation by -angle about
       the centre of the strip's ink) and reads it by bilinear interpolation (zero outside).
       The whole ink of the sequence is inside the canvas by construction.
    4. Paste B noise blocks at random positions, combined with the canvas by max.

Guarantees (each checked by tests/test_data_sequences.py):
    - No canvas pixel carries ink of two digits. A canvas pixel reads the 2x2 strip
      pixels around its source point, so it can touch two digits only if their ink
      columns are adjacent in the strip; the layout keeps at least one blank strip
      column between any two digits (with ``crop``, gap >= 1 ensures it; without, a
      canvas whose digits come closer is redrawn).
    - "Ink" of a digit on the canvas = the pixels where its own bilinear rendering is > 0;
      its box is the axis-aligned bounding box of those pixels, (x0, y0, x1, y1),
      end-exclusive, in canvas pixels, so 0 <= x0 < x1 <= 100.
    - Noise blocks are max-combined: they may lie on digits (as in the paper's Fig. 2)
      and brighten them, but never erase digit ink; boxes describe the digits only.
    - A noise block is cut "from a place with ink": a SxS window of a pool digit holding
      at least ``noise_min_ink`` pixels >= 128 (of 255). Digits with no such window are
      never used as noise sources.
    - Canvases whose sequence would not fit (only possible with unusual options) get new
      digits (the angle is kept, so its distribution stays exact); after 100 rounds a
      ValueError says which options to change.

Determinism: canvases are made in blocks of BLOCK; block b of split s draws from
np.random.default_rng(SeedSequence([seed, SPLIT_IDS[s], b])). The same (seed, split, count,
options, MNIST files) always give the same canvases, with any number of worker threads;
splits use independent streams.

Disjoint pools: 'train' canvases draw digits (and noise) from MNIST training digits
[0, val_start), 'val' from [val_start, N_train), 'test' from the MNIST test digits.
With the 22,699-image training file here and val_start=20000 that is 0..19,999 and
20,000..22,698; for the full 60,000 file, e.g. val_start=50000.
"""
from __future__ import annotations

import dataclasses
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .mnist import load_mnist

__all__ = [
    "CANVAS",
    "DIGITS",
    "BLOCK",
    "SPLIT_IDS",
    "STREAM_IDS",
    "LAYOUTS",
    "SequenceOptions",
    "DigitPool",
    "make_pool",
    "split_pool",
    "generate_canvases",
    "generate_split",
    "empty_split",
    "render_sequence_naive",
]

CANVAS = 100          # canvas side in pixels
DIGITS = 4            # digits per canvas
BLOCK = 128           # canvases per random-stream block (part of the data's definition; do not change)
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
#: random-stream ids of every set generate_split can make: the three splits, and 'shifted', a
#: second test set drawn from the test digits with its own stream (made with another layout,
#: to measure how a model copes with a layout it was not trained on)
STREAM_IDS = {**SPLIT_IDS, "shifted": 3}
#: named layouts: SequenceOptions fields that say where the digits go (see LAYOUTS' docs)
LAYOUTS = {
    "varied": {"crop": True, "gap": 2, "gap_max": 10},
    "fixed": {"crop": True, "gap": 2, "gap_max": None},
    "cells": {"crop": False, "gap": -4, "gap_max": None},
}
INK_LEVEL = 128       # a pixel counts towards a noise window's ink when >= this (of 255)
MAX_REDRAWS = 100     # rounds of redrawing digits for canvases whose sequence cannot be laid out


@dataclass(frozen=True)
class SequenceOptions:
    """The free choices of the data set (SPEC section 3), with their defaults.

    angle          rotation drawn uniformly in [-angle, angle] degrees (0 <= angle <= 180)
    crop           cut each digit to its ink box before laying out (else keep the 28x28 cell)
    gap            blank strip columns between neighbouring digits' ink boxes (crop), or
                   between 28x28 cells (no crop, may be negative down to -27); with gap_max,
                   the smallest such gap
    gap_max        None: every gap is ``gap``. An int >= gap: each of a canvas's three gaps is
                   drawn on its own, uniformly from gap..min(gap_max, g_fit), where g_fit is the
                   widest gap with which that canvas's digits still fit at its angle (so wide
                   gaps never force other digits to be drawn). Default 10: digits spaced
                   2..10 columns apart, so that a model cannot learn one fixed spacing
    noise_blocks   number of noise blocks per canvas
    noise_size     side S of a noise block (1..28)
    noise_min_ink  a noise block's source window holds at least this many pixels >= 128
    val_start      training digits [0, val_start) feed 'train', [val_start, N_train) feed 'val'
    """

    angle: float = 45.0
    crop: bool = True
    gap: int = 2
    gap_max: int | None = 10
    noise_blocks: int = 10
    noise_size: int = 6
    noise_min_ink: int = 6
    val_start: int = 20000

    def __post_init__(self):
        def need(cond, msg):
            if not cond:
                raise ValueError(f"SequenceOptions: {msg}")

        for name in ("gap", "noise_blocks", "noise_size", "noise_min_ink", "val_start"):
            v = getattr(self, name)
            need(isinstance(v, (int, np.integer)) and not isinstance(v, bool),
                 f"{name} must be an int, got {v!r}")
        need(isinstance(self.crop, (bool, np.bool_)), f"crop must be True or False, got {self.crop!r}")
        need(isinstance(self.angle, (int, float, np.number)) and math.isfinite(self.angle)
             and 0 <= self.angle <= 180, f"angle must be a number in [0, 180] degrees, got {self.angle!r}")
        if self.crop:
            need(self.gap >= 1, f"gap must be >= 1 with crop=True (one blank column keeps digits' "
                                f"ink apart after rotation), got {self.gap}")
        else:
            need(self.gap >= -27, f"gap must be >= -27 with crop=False, got {self.gap}")
        if self.gap_max is not None:
            need(isinstance(self.gap_max, (int, np.integer)) and not isinstance(self.gap_max, bool),
                 f"gap_max must be an int or None, got {self.gap_max!r}")
            need(self.gap_max >= self.gap, f"gap_max must be >= gap ({self.gap}) or None (every gap = gap), "
                                           f"got {self.gap_max}")
        need(self.noise_blocks >= 0, f"noise_blocks must be >= 0, got {self.noise_blocks}")
        need(1 <= self.noise_size <= 28, f"noise_size must be in 1..28, got {self.noise_size}")
        need(0 <= self.noise_min_ink <= self.noise_size ** 2,
             f"noise_min_ink must be in 0..noise_size**2 = {self.noise_size ** 2}, got {self.noise_min_ink}")
        need(self.val_start >= 1, f"val_start must be >= 1, got {self.val_start}")

    def to_dict(self):
        """Plain JSON-able dict of the options (for parameter records and cache keys)."""
        d = dataclasses.asdict(self)
        d["angle"] = float(d["angle"])
        d["crop"] = bool(d["crop"])
        return {k: (int(v) if k not in ("angle", "crop") and v is not None else v) for k, v in d.items()}

    @property
    def varied(self) -> bool:
        """True when the gaps are drawn per canvas (gap_max above gap)."""
        return self.gap_max is not None and self.gap_max > self.gap

    @classmethod
    def for_layout(cls, layout, **kwargs):
        """The options of a named layout (LAYOUTS), with other fields from kwargs."""
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
        return cls.from_kwargs(**{**LAYOUTS[layout], **kwargs})

    @classmethod
    def from_kwargs(cls, **kwargs):
        """Build from keyword options, rejecting unknown names with the list of known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"unknown generator option(s) {unknown}; known options: {sorted(known)}")
        return cls(**kwargs)


@dataclass
class DigitPool:
    """The digits one split draws from, with what the generator precomputes about them.

    images (P, 28, 28) uint8, labels (P,) uint8, index (P,) int64 = position in the MNIST
    file of ``mnist_split``; ink (P, 4) int64 = top, left, height, width of each ink box;
    noise_digits (D,) pool digits having a window with ink, noise_count (P,) and
    noise_offset (P,) index into noise_windows (flat y * G + x of each window with ink,
    G = 28 - S + 1, grouped by digit).
    """

    images: np.ndarray
    labels: np.ndarray
    index: np.ndarray
    mnist_split: str
    ink: np.ndarray
    noise_digits: np.ndarray
    noise_count: np.ndarray
    noise_offset: np.ndarray
    noise_windows: np.ndarray
    noise_size: int


def _ink_boxes(images):
    """(P, 28, 28) uint8 -> (P, 4) int64 top, left, height, width of the non-zero pixels."""
    rows = images.any(axis=2)                                   # (P, 28)
    cols = images.any(axis=1)                                   # (P, 28)
    top = rows.argmax(axis=1)
    bottom = 28 - rows[:, ::-1].argmax(axis=1)                  # end-exclusive
    left = cols.argmax(axis=1)
    right = 28 - cols[:, ::-1].argmax(axis=1)
    return np.stack([top, left, bottom - top, right - left], axis=1).astype(np.int64)


def make_pool(images, labels, index, mnist_split, options):
    """Precompute ink boxes and the noise-window table for a pool of digits."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"make_pool: images must be uint8 (P, 28, 28), got shape {images.shape}")
    if len(images) == 0:
        raise ValueError("make_pool: the digit pool is empty; check val_start against the training file size")
    if not images.reshape(len(images), -1).any(axis=1).all():
        raise ValueError("make_pool: some pool images are blank (no ink); MNIST digits always have ink")
    S = options.noise_size
    G = 28 - S + 1
    inked = (images >= INK_LEVEL).astype(np.int16)              # (P, 28, 28)
    rows = sum(inked[:, i:i + G, :] for i in range(S))           # (P, G, 28) sums over S rows
    window = sum(rows[:, :, j:j + G] for j in range(S))          # (P, G, G) ink pixels per window
    valid = (window >= options.noise_min_ink).reshape(len(images), G * G)
    count = valid.sum(axis=1)                                   # (P,)
    offset = np.concatenate([[0], np.cumsum(count)[:-1]])
    _, where = np.nonzero(valid)                                # grouped by digit, ascending
    noise_digits = np.flatnonzero(count)
    if options.noise_blocks > 0 and len(noise_digits) == 0:
        raise ValueError(
            f"make_pool: no {S}x{S} window of any pool digit has >= {options.noise_min_ink} ink pixels; "
            "lower noise_min_ink or noise_size"
        )
    return DigitPool(images=images, labels=np.asarray(labels, dtype=np.uint8),
                     index=np.asarray(index, dtype=np.int64), mnist_split=mnist_split,
                     ink=_ink_boxes(images), noise_digits=noise_digits, noise_count=count,
                     noise_offset=offset, noise_windows=where.astype(np.int64), noise_size=S)


def split_pool(split, options=None, data_dir=None):
    """The DigitPool of split 'train' | 'val' | 'test' | 'shifted' (see the module docstring;
    'shifted' draws from the test digits, like 'test')."""
    options = options or SequenceOptions()
    if split not in STREAM_IDS:
        raise ValueError(f"split must be one of {list(STREAM_IDS)}, got {split!r}")
    mnist_split = "train" if split in ("train", "val") else "test"
    images, labels = load_mnist(mnist_split, data_dir)
    n = len(images)
    if mnist_split == "test":
        sel = np.arange(n)
    else:
        if options.val_start >= n:
            raise ValueError(
                f"val_start={options.val_start} leaves no validation digits: the MNIST training file "
                f"has {n} images; pass a val_start below {n} (e.g. {int(n * 0.88)})"
            )
        sel = np.arange(0, options.val_start) if split == "train" else np.arange(options.val_start, n)
    return make_pool(images[sel], labels[sel], sel, mnist_split, options)


# ----------------------------------------------------------------------------------------
# Layout: where each digit goes in the strip
# ----------------------------------------------------------------------------------------

def _layout(ink, gap, crop):
    """Place four digits per canvas in a strip.

    ink: (N, K, 4) top, left, height, width of each digit's ink box.
    gap: an int, or (N, K - 1) ints, the gap after each of the first K - 1 digits.
    Returns X, Y (N, K) strip position of each 28x28 image's top-left pixel, ink_left,
    ink_right (N, K) inclusive strip columns of each digit's ink, and the inclusive ink
    rectangle of the whole strip (x_lo, x_hi, y_lo, y_hi), each (N,).
    """
    top, left, h, w = ink[..., 0], ink[..., 1], ink[..., 2], ink[..., 3]    # (N, K) each
    if crop:
        starts = np.concatenate([np.zeros_like(w[:, :1]), np.cumsum(w[:, :-1] + gap, axis=1)], axis=1)
        X = starts - left                                        # ink box k starts at column starts[k]
        Hs = h.max(axis=1, keepdims=True)                        # (N, 1) strip height
        Y = (Hs - h) // 2 - top                                  # centre each ink box vertically
        y_lo, y_hi = np.zeros(len(ink), dtype=np.int64), Hs[:, 0] - 1
    else:
        step = np.broadcast_to(np.asarray(28 + gap, dtype=np.int64), (len(ink), DIGITS - 1))   # (N, K-1)
        X = np.concatenate([np.zeros_like(left[:, :1]), np.cumsum(step, axis=1)], axis=1)
        Y = np.zeros_like(top)
        y_lo, y_hi = top.min(axis=1), (top + h).max(axis=1) - 1
    ink_left = X + left                                          # (N, K)
    ink_right = X + left + w - 1
    return X, Y, ink_left, ink_right, ink_left[:, 0], ink_right[:, -1], y_lo, y_hi


def _extent(x_lo, x_hi, y_lo, y_hi, cos, sin):
    """Half-extents (ex, ey) on the canvas of the rotated support of the strip's ink.

    A canvas point reads strip pixels within distance < 1 of its source point, so the
    support of the ink rectangle is the rectangle grown by one pixel on every side.
    """
    a = (x_hi - x_lo) / 2 + 1                                    # half-length along the reading direction
    b = (y_hi - y_lo) / 2 + 1                                    # half-height across it
    return a * np.abs(cos) + b * np.abs(sin), a * np.abs(sin) + b * np.abs(cos)


def _widest_gap(x_lo, x_hi, y_lo, y_hi, cos, sin, gaps):
    """(N,) int64: the widest gap g such that the strip, with every gap set to g, fits the canvas.

    The strip's length grows by one column per column of gap, and the rotated support fits when
    2 ex <= CANVAS - 1 and 2 ey <= CANVAS - 1 (see _extent), which bounds its half-length a.
    x_lo, x_hi: the strip's ink columns laid out with ``gaps`` (N, K-1); below g_fit all three
    gaps together are at most what fits. May be below the smallest gap (the digits do not fit).
    """
    b = (y_hi - y_lo) / 2 + 1                                    # (N,) half-height, independent of the gaps
    c, s = np.abs(cos), np.abs(sin)
    room = (CANVAS - 1) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        a_max = np.minimum(np.where(c > 1e-12, (room - b * s) / c, np.inf),
                           np.where(s > 1e-12, (room - b * c) / s, np.inf))   # (N,) largest half-length
    span0 = (x_hi - x_lo) - gaps.sum(axis=1)                     # (N,) ink span with zero gaps
    total = 2 * (a_max - 1) - span0                               # (N,) room for the gaps together
    return np.floor(total / (DIGITS - 1) - 1e-9).astype(np.int64)


def _fits(ink_left, ink_right, ex, ey):
    """(N,) bool: a blank strip column between neighbours and the whole support inside the canvas."""
    apart = (ink_left[:, 1:] - ink_right[:, :-1] >= 2).all(axis=1)
    return apart & (2 * ex <= CANVAS - 1) & (2 * ey <= CANVAS - 1)


# ----------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------

def _row_windows(flat, width):
    """Writable view (flat.size - width + 1, width) of a 1-D array: row i is flat[i:i + width].

    Fancy indexing on it moves whole image rows, one index per row instead of one per
    pixel. The rows one indexing operation touches must not overlap (each caller's rows
    are distinct rows of a 2-D image placed in a bigger one).
    """
    step = flat.strides[0]
    return np.lib.stride_tricks.as_strided(flat, shape=(flat.size - width + 1, width), strides=(step, step))


def _paste_strip(images, X, Y, shape, only=None):
    """Strips (N, SH, SW) uint8 holding images (N, K, 28, 28) uint8 at X, Y (N, K).

    Adds the K placements (their ink never shares a strip pixel, so the sum is exact and
    stays <= 255). ``only``: paste just that digit position (for per-digit masks).
    """
    N = images.shape[0]
    SH, SW = shape
    strip = np.zeros((N, SH, SW), dtype=np.uint8)
    rows = _row_windows(strip.reshape(-1), 28)                   # 28-pixel rows starting anywhere
    r = np.arange(28)
    for k in range(DIGITS) if only is None else (only,):
        start = (np.arange(N)[:, None] * SH + Y[:, k, None] + r[None, :]) * SW + X[:, k, None]   # (N, 28)
        rows[start] += images[:, k]                              # (N, 28, 28) image rows
    return strip


def _quads(strip):
    """(N, SH, SW) uint8 -> (N, SH-1, SW-1) uint32: each pixel's 2x2 neighbourhood in one
    word (byte 0 upper-left, 1 upper-right, 2 lower-left, 3 lower-right), so that a
    bilinear read is one gather instead of four."""
    s = strip.astype(np.uint32)
    return s[:, :-1, :-1] | (s[:, :-1, 1:] << 8) | (s[:, 1:, :-1] << 16) | (s[:, 1:, 1:] << 24)


def _render(quads, cid, sx, sy):
    """Bilinear reads at strip points (sx, sy), clipped to [0, SW-2] x [0, SH-2].

    quads (N, SH-1, SW-1) uint32 from :func:`_quads`; cid (T,) int64 canvas of each point;
    sx, sy (T,) float32. Returns values (T,) float32 in [0, 1] (pixel / 255, zero where
    no ink is near) and x0 = floor(sx) (T,) int64.
    """
    N, QH, QW = quads.shape
    x0 = np.floor(sx)
    y0 = np.floor(sy)
    fx = sx - x0                                                 # (T,) in [0, 1)
    fy = sy - y0
    x0 = x0.astype(np.int64)
    word = np.take(quads.reshape(-1), (cid * QH + y0.astype(np.int64)) * QW + x0)   # (T,) uint32
    p = word.astype("<u4").view(np.uint8).reshape(-1, 4).astype(np.float32)        # (T, 4)
    a, b, c, d = p[:, 0], p[:, 1], p[:, 2], p[:, 3]              # upper-left, upper-right, lower-left, lower-right
    top = a + fx * (b - a)
    bottom = c + fx * (d - c)
    value = top + fy * (bottom - top)
    value /= np.float32(255)
    np.clip(value, 0.0, 1.0, out=value)                          # rounding could leave 1 + 1 ulp
    return value, x0


def _owner_columns(ink_left, ink_right, width):
    """(N, width) int8: k + 1 where a read whose left column is x touches digit k's ink
    columns (x or x + 1 in [ink_left[k], ink_right[k]]), else 0. At most one digit can
    match because neighbours' ink is at least one blank column apart."""
    x = np.arange(width)
    table = np.zeros((len(ink_left), width), dtype=np.int8)
    for k in range(DIGITS):
        table += np.int8(k + 1) * ((x >= ink_left[:, k, None] - 1) & (x <= ink_right[:, k, None]))
    return table


def _interval(m, q, half):
    """Solutions dx of |m dx + q| <= half, as (lo, hi) arrays (lo > hi when empty)."""
    flat = np.abs(m) <= 1e-9
    safe = np.where(flat, 1.0, m)
    lo, hi = (-q - half) / safe, (-q + half) / safe
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    inside = np.abs(q) <= half
    lo = np.where(flat, np.where(inside, -np.inf, np.inf), lo)
    hi = np.where(flat, np.where(inside, np.inf, -np.inf), hi)
    return lo, hi


def _support_points(tx, ty, cos, sin, half_a, half_b, ey):
    """Canvas pixels whose source point lies in the strip's support rectangle, flattened.

    A pixel p maps to along = (px - tx) cos - (py - ty) sin and across = (px - tx) sin +
    (py - ty) cos (relative to the ink centre); it can read ink only if |along| <= half_a
    and |across| <= half_b. Each canvas row meets that rotated rectangle in one run of
    columns, found in closed form. Returns cid, row, col, each (T,) int64, row-major within
    each canvas; T is about the rectangle's area, not the canvas's.
    """
    ry0 = np.ceil(ty - ey).astype(np.int64)                      # (N,) rows of the bounding box
    ry1 = np.floor(ty + ey).astype(np.int64) + 1
    h = ry1 - ry0
    row_cid = np.repeat(np.arange(len(h), dtype=np.int64), h)   # (R,) canvas of each row
    row_y = np.arange(row_cid.size, dtype=np.int64) - np.repeat(np.cumsum(h) - h - ry0, h)   # (R,)
    dy = row_y - ty[row_cid]                                     # (R,)
    c, s = cos[row_cid], sin[row_cid]
    lo_a, hi_a = _interval(c, -dy * s, half_a[row_cid] + 1e-6)   # |dx c - dy s| <= half_a
    lo_b, hi_b = _interval(s, dy * c, half_b[row_cid] + 1e-6)    # |dx s + dy c| <= half_b
    x_lo = np.clip(tx[row_cid] + np.maximum(lo_a, lo_b), -1, CANVAS + 1)
    x_hi = np.clip(tx[row_cid] + np.minimum(hi_a, hi_b), -1, CANVAS + 1)
    first = np.maximum(np.ceil(x_lo).astype(np.int64), 0)       # (R,) first column of the run
    stop = np.minimum(np.floor(x_hi).astype(np.int64) + 1, CANVAS)
    width = np.maximum(stop - first, 0)                          # (R,) run length
    start = np.cumsum(width) - width                             # (R,) index of the run's first point
    cid = np.repeat(row_cid, width)                              # (T,)
    row = np.repeat(row_y, width)
    col = np.arange(cid.size, dtype=np.int64) - np.repeat(start - first, width)
    return cid, row, col


def _boxes(n, cid, row, col, owner):
    """Boxes (n, K, 4) float32 (x0, y0, x1, y1) end-exclusive of the points of each owner.

    cid, row, col, owner (T,) with owner 0 = no digit, k + 1 = digit k. Uses presence
    tables (n * K, 100) from np.bincount, then the first and last present row / column.
    """
    inked = owner > 0
    key = (cid * DIGITS + (owner - 1)) * CANVAS                  # (T,) start of the canvas-digit group's bins
    key = key[inked]                                             # (T_ink,)
    size = n * DIGITS * CANVAS
    cols = np.bincount(key + col[inked], minlength=size).reshape(n, DIGITS, CANVAS) > 0   # columns with ink
    rows = np.bincount(key + row[inked], minlength=size).reshape(n, DIGITS, CANVAS) > 0
    boxes = np.stack([cols.argmax(axis=2), rows.argmax(axis=2),
                      CANVAS - cols[..., ::-1].argmax(axis=2), CANVAS - rows[..., ::-1].argmax(axis=2)],
                     axis=-1)                                    # (n, K, 4)
    return boxes.astype(np.float32)


def generate_canvases(pool, n, rng, options=None, return_masks=False):
    """Make n canvases from one DigitPool with one np.random.Generator.

    Returns a dict:
        images   (n, 1, 100, 100) float32 in [0, 1]
        labels   (n, 4) int64, reading order
        angles   (n,) float32 degrees (positive: the reading direction turns counter-clockwise
                 on screen, i.e. the sequence rises to the right)
        boxes    (n, 4, 4) float32 (x0, y0, x1, y1) end-exclusive canvas pixels of each digit's ink
        indices  (n, 4) int64 positions of the digits in the MNIST file pool.mnist_split
        noise_positions (n, B, 2) int64 (y, x) canvas top-left of each noise block
        noise_sources   (n, B, 3) int64 (MNIST index, y, x) of the window each block was cut from
        radians  (n,) float64 the exact angles; centres (n, 2) float64 canvas (x, y) of the ink centre
        gaps     (n, 3) int64 the gap after each of the first three digits
        masks    (n, 4, 100, 100) bool, each digit's own ink (only with return_masks)
    """
    options = options or SequenceOptions()
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"generate_canvases: n must be an int >= 1, got {n!r} (empty_split(0) gives an empty split)")
    P = len(pool.images)
    rad = np.deg2rad(rng.uniform(-options.angle, options.angle, size=n))     # (n,)
    cos, sin = np.cos(rad), np.sin(rad)
    pick = rng.integers(0, P, size=(n, DIGITS))                             # (n, K) pool indices
    gaps = np.full((n, DIGITS - 1), options.gap, dtype=np.int64)            # (n, K-1) gap after digit k
    if options.varied:
        u = rng.random(size=(n, DIGITS - 1))                                # where in its range each gap falls
    todo = np.ones(n, dtype=bool)
    for _ in range(MAX_REDRAWS):
        X, Y, ink_left, ink_right, x_lo, x_hi, y_lo, y_hi = _layout(pool.ink[pick], gaps, options.crop)
        if options.varied:   # each gap uniform in gap..min(gap_max, widest that fits), then lay out again
            top = np.clip(_widest_gap(x_lo, x_hi, y_lo, y_hi, cos, sin, gaps), options.gap, options.gap_max)
            gaps = options.gap + np.floor(u * (top - options.gap + 1)[:, None]).astype(np.int64)
            X, Y, ink_left, ink_right, x_lo, x_hi, y_lo, y_hi = _layout(pool.ink[pick], gaps, options.crop)
        ex, ey = _extent(x_lo, x_hi, y_lo, y_hi, cos, sin)
        todo = ~_fits(ink_left, ink_right, ex, ey)
        if not todo.any():
            break
        pick[todo] = rng.integers(0, P, size=(int(todo.sum()), DIGITS))
    else:
        worst = float(np.rad2deg(rad[todo][0]))
        raise ValueError(
            f"{int(todo.sum())} canvases could not be laid out in {MAX_REDRAWS} rounds (e.g. angle "
            f"{worst:.1f} degrees): the four digits do not fit on the {CANVAS}x{CANVAS} canvas or their "
            f"ink touches. Lower gap, set crop=True, or narrow the angle range."
        )
    # A random position where the rotated support fits: canvas centre of the strip's ink.
    tx = rng.uniform(ex, CANVAS - 1 - ex)                                   # (n,)
    ty = rng.uniform(ey, CANVAS - 1 - ey)

    # Strip coordinates: shift so every image lies inside, with zero borders (1 before, 2 after).
    ox, oy = 1 - X.min(), 1 - Y.min()
    SW, SH = int(X.max() + ox + 28 + 2), int(Y.max() + oy + 28 + 2)
    X, Y, ink_left, ink_right = X + ox, Y + oy, ink_left + ox, ink_right + ox
    cx = (x_lo + x_hi) / 2 + ox                                             # (n,) rotation centre in the strip
    cy = (y_lo + y_hi) / 2 + oy
    digits = pool.images[pick]                                              # (n, K, 28, 28) uint8

    # Only canvas pixels whose source point lies in the support rectangle can receive ink;
    # all canvases' such pixels are processed as one flat list of T points.
    half_a, half_b = (x_hi - x_lo) / 2 + 1, (y_hi - y_lo) / 2 + 1                   # (n,) as in _extent
    cid, row, col = _support_points(tx, ty, cos, sin, half_a, half_b, ey)       # (T,) each

    # Inverse map: canvas (px, py) -> strip (sx, sy) = c + R(-angle) (p - t), written as
    # sx = cx + (px - tx) cos - (py - ty) sin and sy = cy + (px - tx) sin + (py - ty) cos
    # (image y points down, so this turns the reading direction counter-clockwise on screen).
    ax = (cx - tx * cos + ty * sin).astype(np.float32)                      # (n,) sx at p = (0, 0)
    ay = (cy - tx * sin - ty * cos).astype(np.float32)
    cos32, sin32 = cos.astype(np.float32), sin.astype(np.float32)
    colf, rowf = col.astype(np.float32), row.astype(np.float32)
    c_, s_ = np.take(cos32, cid), np.take(sin32, cid)                       # (T,)
    sx = np.take(ax, cid) + colf * c_ - rowf * s_                           # (T,)
    sy = np.take(ay, cid) + colf * s_ + rowf * c_
    np.clip(sx, 0, SW - 2, out=sx)
    np.clip(sy, 0, SH - 2, out=sy)

    value, x0 = _render(_quads(_paste_strip(digits, X, Y, (SH, SW))), cid, sx, sy)   # (T,)
    # Which digit a pixel's ink comes from: the left column x0 of its 2x2 read decides.
    owner = np.take(_owner_columns(ink_left, ink_right, SW - 1).reshape(-1), cid * (SW - 1) + x0)
    owner *= value > 0                                                      # (T,) 0 or k + 1
    boxes = _boxes(n, cid, row, col, owner)                                 # (n, K, 4)

    canvas = np.zeros((n, CANVAS, CANVAS), dtype=np.float32)
    canvas.reshape(-1)[(cid * CANVAS + row) * CANVAS + col] = value         # distinct pixels
    out = {}
    if return_masks:
        masks = np.zeros((n, DIGITS, CANVAS, CANVAS), dtype=bool)
        for k in range(DIGITS):
            own, _ = _render(_quads(_paste_strip(digits, X, Y, (SH, SW), only=k)), cid, sx, sy)
            masks.reshape(n, DIGITS, -1)[cid, k, row * CANVAS + col] = own > 0
        out["masks"] = masks

    # Noise: B blocks per canvas, each an SxS window with ink of a random pool digit.
    B, S = options.noise_blocks, options.noise_size
    src = wy = wx = py = px = np.zeros((n, 0), dtype=np.int64)
    if B > 0:
        G = 28 - S + 1
        src = pool.noise_digits[rng.integers(0, len(pool.noise_digits), size=(n, B))]   # (n, B)
        u = rng.random(size=(n, B))
        which = pool.noise_offset[src] + np.minimum((u * pool.noise_count[src]).astype(np.int64),
                                                    pool.noise_count[src] - 1)
        wy, wx = np.divmod(pool.noise_windows[which], G)                    # (n, B) window top-left
        py = rng.integers(0, CANVAS - S + 1, size=(n, B))                   # (n, B) canvas top-left
        px = rng.integers(0, CANVAS - S + 1, size=(n, B))
    r = np.arange(S)
    source_rows = _row_windows(pool.images.reshape(-1), S)                 # S-pixel rows of pool digits
    canvas_rows = _row_windows(canvas.reshape(-1), S)                       # S-pixel rows of the canvases
    for j in range(B):
        src_start = (src[:, j, None] * 28 + wy[:, j, None] + r) * 28 + wx[:, j, None]           # (n, S)
        dst_start = (np.arange(n)[:, None] * CANVAS + py[:, j, None] + r) * CANVAS + px[:, j, None]   # (n, S)
        block = source_rows[src_start].astype(np.float32) / np.float32(255)                     # (n, S, S)
        canvas_rows[dst_start] = np.maximum(canvas_rows[dst_start], block)

    out.update(
        images=canvas[:, None],
        labels=pool.labels[pick].astype(np.int64),
        angles=np.rad2deg(rad).astype(np.float32),
        boxes=boxes,
        indices=pool.index[pick],
        noise_positions=np.stack([py, px], axis=-1).astype(np.int64),
        noise_sources=np.stack([pool.index[src], wy, wx], axis=-1).astype(np.int64),
        radians=rad,
        centres=np.stack([tx, ty], axis=-1),
        gaps=gaps,
    )
    return out


def render_sequence_naive(digits, radians, centre, options=None, gaps=None):
    """Loop reference for one canvas's digit layer (no noise), for testing the fast path.

    digits (4, 28, 28) uint8 in reading order; radians: the rotation; centre (tx, ty): the
    canvas position of the centre of the strip's ink; gaps: the three gaps (default: all
    ``options.gap``). Follows the module docstring step by step with plain Python loops over
    pixels. Returns (100, 100) float64.
    """
    options = options or SequenceOptions()
    gaps = [options.gap] * (DIGITS - 1) if gaps is None else [int(g) for g in gaps]
    # Ink box of each digit: top, left, height, width.
    ink = []
    for img in digits:
        rows = [r for r in range(28) if any(img[r, c] > 0 for c in range(28))]
        cols = [c for c in range(28) if any(img[r, c] > 0 for r in range(28))]
        ink.append((rows[0], cols[0], rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1))
    # Where each 28x28 image goes in the strip.
    places = []
    if options.crop:
        height = max(h for _, _, h, _ in ink)
        start = 0
        for k, (top, left, h, w) in enumerate(ink):
            places.append((start - left, (height - h) // 2 - top))
            start += w + (gaps[k] if k < DIGITS - 1 else 0)
    else:
        x = 0
        for k in range(DIGITS):
            places.append((x, 0))
            x += 28 + (gaps[k] if k < DIGITS - 1 else 0)
    # The strip as a dict {(row, col): value}; absent pixels are zero.
    strip = {}
    for img, (X, Y) in zip(digits, places):
        for r in range(28):
            for c in range(28):
                if img[r, c] > 0:
                    strip[(Y + r, X + c)] = strip.get((Y + r, X + c), 0.0) + img[r, c] / 255.0
    ys = [r for r, _ in strip]
    xs = [c for _, c in strip]
    cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2   # centre of the strip's ink
    cos, sin = math.cos(radians), math.sin(radians)
    tx, ty = centre
    canvas = np.zeros((CANVAS, CANVAS))
    for py in range(CANVAS):
        for px in range(CANVAS):
            sx = cx + (px - tx) * cos - (py - ty) * sin
            sy = cy + (px - tx) * sin + (py - ty) * cos
            x0, y0 = math.floor(sx), math.floor(sy)
            fx, fy = sx - x0, sy - y0
            canvas[py, px] = ((1 - fy) * ((1 - fx) * strip.get((y0, x0), 0.0) + fx * strip.get((y0, x0 + 1), 0.0))
                              + fy * ((1 - fx) * strip.get((y0 + 1, x0), 0.0) + fx * strip.get((y0 + 1, x0 + 1), 0.0)))
    return canvas


def empty_split(n=0):
    """Zero-filled arrays of a split of n canvases with the right dtypes and trailing shapes."""
    return {
        "images": np.zeros((n, 1, CANVAS, CANVAS), dtype=np.float32),
        "labels": np.zeros((n, DIGITS), dtype=np.int64),
        "angles": np.zeros((n,), dtype=np.float32),
        "boxes": np.zeros((n, DIGITS, 4), dtype=np.float32),
    }


def generate_split(split, n, seed=0, data_dir=None, options=None, pool=None, debug=False,
                   return_masks=False, progress=None, workers=None):
    """Make the n canvases of split 'train' | 'val' | 'test' | 'shifted' for ``seed``.

    Works in blocks of BLOCK canvases (bounding memory to some tens of MB per worker besides
    the result). ``pool``: a DigitPool to use instead of loading MNIST (it must be the split's
    pool for the data to match). Returns images, labels, angles, boxes (see
    :func:`generate_canvases`); with ``debug`` also indices, noise_positions, noise_sources,
    radians, centres (and masks with ``return_masks``). ``progress``: called with (done, n)
    after each block. ``workers``: threads making blocks in parallel (default min(2, CPUs));
    the result does not depend on it.
    """
    options = options or SequenceOptions()
    if split not in STREAM_IDS:
        raise ValueError(f"split must be one of {list(STREAM_IDS)}, got {split!r}")
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
        raise ValueError(f"the size of split {split!r} must be an int >= 0, got {n!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    out = empty_split(n)
    if debug:
        B = options.noise_blocks
        out.update(indices=np.zeros((n, DIGITS), np.int64), noise_positions=np.zeros((n, B, 2), np.int64),
                   noise_sources=np.zeros((n, B, 3), np.int64), radians=np.zeros(n), centres=np.zeros((n, 2)),
                   gaps=np.zeros((n, DIGITS - 1), np.int64))
        if return_masks:
            out["masks"] = np.zeros((n, DIGITS, CANVAS, CANVAS), dtype=bool)
    if n == 0:
        return out
    if pool is None:
        pool = split_pool(split, options, data_dir)
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    block = BLOCK                                                # read once (tests may change BLOCK)

    def make_block(b):
        # Block b: its own random stream, its own slice of the result (threads never share one).
        start, stop = b * block, min((b + 1) * block, n)
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), STREAM_IDS[split], b]))
        part = generate_canvases(pool, stop - start, rng, options, return_masks=debug and return_masks)
        for key in out:
            out[key][start:stop] = part[key]
        return stop

    blocks = range((n + block - 1) // block)
    if workers <= 1:
        done = map(make_block, blocks)
    else:
        # NumPy releases the GIL inside its array loops, so threads overlap most of the work.
        executor = ThreadPoolExecutor(max_workers=workers)
        done = executor.map(make_block, blocks)
    try:
        for stop in done:
            if progress is not None:
                progress(stop, n)
    finally:
        if workers > 1:
            executor.shutdown(wait=True, cancel_futures=True)
    return out
