"""The MNIST-sequence data set of the LSTM-STN paper (section IV).

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

Disjoint pools: each split draws its digits and noise from its own part of MNIST (pool.py).

The code: this module holds the options and the generator's steps in order (generate_canvases);
render.py the drawing helpers they call, pool.py the digit pools, naive.py the loop reference.
"""
from __future__ import annotations

import dataclasses
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .pool import INK_LEVEL, SPLIT_IDS, STREAM_IDS, DigitPool, make_pool, split_pool  # noqa: F401
from .render import (
    CANVAS,
    DIGITS,
    _boxes,
    _extent,
    _fits,
    _layout,
    _owner_columns,
    _paste_strip,
    _quads,
    _render,
    _row_windows,
    _support_points,
    _widest_gap,
)

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
]

BLOCK = 128           # canvases per random-stream block (part of the data's definition; do not change)
#: SequenceOptions fields added later, left out of the records at these defaults (to_dict)
_LATER_DEFAULTS = {"digits": 4, "slant": 0.0, "noise_combine": "max"}
#: named layouts: SequenceOptions fields that say where the digits go (see LAYOUTS' docs)
LAYOUTS = {
    "varied": {"crop": True, "gap": 2, "gap_max": 10},
    "fixed": {"crop": True, "gap": 2, "gap_max": None},
    "cells": {"crop": False, "gap": -4, "gap_max": None},
    # Sønderby et al.'s data set as this generator reads it (docs/data.md): three upright digits on a
    # slanted line, eight 9x9 noise blocks added (not max-combined)
    "sonderby": {"crop": True, "gap": 2, "gap_max": 10, "digits": 3, "angle": 0.0, "slant": 0.5,
                 "noise_blocks": 8, "noise_size": 9, "noise_combine": "add"},
}
#: the fields of a layout that say where the digits go (a shifted test set takes these from its own layout)
PLACEMENT = ("crop", "gap", "gap_max")
MAX_REDRAWS = 100     # rounds of redrawing digits for canvases whose sequence cannot be laid out


@dataclass(frozen=True)
class SequenceOptions:
    """The free choices of the data set (docs/data.md), with their defaults.

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
    digits         digits per canvas, K (1..8; the paper's 4)
    slant          s >= 0: the digits stay upright in the strip, but their rows follow a line
                   whose slope is drawn per canvas uniformly in [-s, s] (0: one straight row)
    noise_combine  how a noise block meets the canvas: 'max' (the paper's reading; never erases
                   ink) or 'add' (added and clipped to [0, 1], as Sønderby et al.'s generator)
    """

    angle: float = 45.0
    crop: bool = True
    gap: int = 2
    gap_max: int | None = 10
    noise_blocks: int = 10
    noise_size: int = 6
    noise_min_ink: int = 6
    val_start: int = 20000
    digits: int = 4
    slant: float = 0.0
    noise_combine: str = "max"

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
        need(isinstance(self.digits, (int, np.integer)) and not isinstance(self.digits, bool) and 1 <= self.digits <= 8,
             f"digits must be an int in 1..8, got {self.digits!r}")
        need(isinstance(self.slant, (int, float, np.number)) and math.isfinite(self.slant) and 0 <= self.slant <= 2,
             f"slant must be a number in [0, 2] (the largest slope of the digits' line), got {self.slant!r}")
        need(self.noise_combine in ("max", "add"), f"noise_combine must be 'max' or 'add', got {self.noise_combine!r}")

    def to_dict(self):
        """Plain JSON-able dict of the options (for parameter records and cache keys). The options
        added after the first data sets (digits, slant, noise_combine) appear only when not at
        their defaults, so the records, and the cache, of the paper's data set stay as they were."""
        d = dataclasses.asdict(self)
        out = {k: (float(v) if k in ("angle", "slant") else bool(v) if k == "crop" else v if v is None or k == "noise_combine"
                   else int(v)) for k, v in d.items()}
        for k, default in _LATER_DEFAULTS.items():
            if out[k] == default:
                del out[k]
        return out

    @property
    def varied(self) -> bool:
        """True when the gaps are drawn per canvas (gap_max above gap)."""
        return self.gap_max is not None and self.gap_max > self.gap

    def with_placement(self, layout):
        """These options with the digits placed as in layout `layout` (its PLACEMENT fields)."""
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
        return dataclasses.replace(self, **{k: v for k, v in LAYOUTS[layout].items() if k in PLACEMENT})

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

    The steps of the module docstring, in order (the random draws in this order define the data):
    angles, digits and gaps (_lay_out), the position, the digits drawn (_draw_digits), the noise.
    """
    options = options or SequenceOptions()
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"generate_canvases: n must be an int >= 1, got {n!r} (empty_split(0) gives an empty split)")
    rad, pick, gaps, slope, lay = _lay_out(pool, n, rng, options)           # angles, digits, gaps that fit
    ex, ey = lay["extent"]
    # A random position where the rotated support fits: canvas centre of the strip's ink.
    tx = rng.uniform(ex, CANVAS - 1 - ex)                                   # (n,)
    ty = rng.uniform(ey, CANVAS - 1 - ey)
    canvas, boxes, masks = _draw_digits(pool.images[pick], rad, tx, ty, lay, return_masks)
    positions, sources = _add_noise(canvas, pool, rng, options)             # in place, max-combined
    out = {"masks": masks} if return_masks else {}
    out.update(
        images=canvas[:, None],
        labels=pool.labels[pick].astype(np.int64),
        angles=np.rad2deg(rad).astype(np.float32),
        boxes=boxes,
        indices=pool.index[pick],
        noise_positions=positions,
        noise_sources=sources,
        radians=rad,
        centres=np.stack([tx, ty], axis=-1),
        gaps=gaps,
        slopes=slope if slope is not None else np.zeros(n),
    )
    return out


def _lay_out(pool, n, rng, options):
    """Steps 1-2: angles (n,), digits pick (n, K) pool indices, gaps (n, K-1), the slopes of the
    digits' line (n,) (None without slant), and the layout
    of each strip (a dict of _layout's arrays and the rotated half-extents). Canvases whose
    digits do not fit get new digits (the angle is kept, so its distribution stays exact)."""
    P = len(pool.images)
    rad = np.deg2rad(rng.uniform(-options.angle, options.angle, size=n))     # (n,)
    cos, sin = np.cos(rad), np.sin(rad)
    K = options.digits
    pick = rng.integers(0, P, size=(n, K))                                  # (n, K) pool indices
    gaps = np.full((n, K - 1), options.gap, dtype=np.int64)                 # (n, K-1) gap after digit k
    if options.varied:
        u = rng.random(size=(n, K - 1))                                     # where in its range each gap falls
    slope = rng.uniform(-options.slant, options.slant, size=n) if options.slant > 0 else None   # (n,)
    todo = np.ones(n, dtype=bool)
    for _ in range(MAX_REDRAWS):
        X, Y, ink_left, ink_right, x_lo, x_hi, y_lo, y_hi = _layout(pool.ink[pick], gaps, options.crop, slope)
        if options.varied:   # each gap uniform in gap..min(gap_max, widest that fits), then lay out again
            top = np.clip(_widest_gap(x_lo, x_hi, y_lo, y_hi, cos, sin, gaps), options.gap, options.gap_max)
            gaps = options.gap + np.floor(u * (top - options.gap + 1)[:, None]).astype(np.int64)
            X, Y, ink_left, ink_right, x_lo, x_hi, y_lo, y_hi = _layout(pool.ink[pick], gaps, options.crop, slope)
        ex, ey = _extent(x_lo, x_hi, y_lo, y_hi, cos, sin)
        todo = ~_fits(ink_left, ink_right, ex, ey)
        if not todo.any():
            break
        pick[todo] = rng.integers(0, P, size=(int(todo.sum()), K))
    else:
        worst = float(np.rad2deg(rad[todo][0]))
        raise ValueError(
            f"{int(todo.sum())} canvases could not be laid out in {MAX_REDRAWS} rounds (e.g. angle "
            f"{worst:.1f} degrees): the four digits do not fit on the {CANVAS}x{CANVAS} canvas or their "
            f"ink touches. Lower gap, set crop=True, or narrow the angle range."
        )
    lay = {"X": X, "Y": Y, "ink_left": ink_left, "ink_right": ink_right, "x": (x_lo, x_hi), "y": (y_lo, y_hi),
           "extent": (ex, ey)}
    return rad, pick, gaps, slope, lay


def _draw_digits(digits, rad, tx, ty, lay, return_masks):
    """Step 3: the digits (n, K, 28, 28) uint8 drawn on n canvases, rotated by rad (n,) about the
    ink centre placed at (tx, ty). Returns canvas (n, 100, 100) float32, boxes (n, K, 4) float32
    and masks (n, K, 100, 100) bool (None unless return_masks)."""
    n, K = len(rad), digits.shape[1]
    cos, sin = np.cos(rad), np.sin(rad)
    (x_lo, x_hi), (y_lo, y_hi), (_, ey) = lay["x"], lay["y"], lay["extent"]
    # Strip coordinates: shift so every image lies inside, with zero borders (1 before, 2 after).
    X, Y = lay["X"], lay["Y"]
    ox, oy = 1 - X.min(), 1 - Y.min()
    SW, SH = int(X.max() + ox + 28 + 2), int(Y.max() + oy + 28 + 2)
    X, Y, ink_left, ink_right = X + ox, Y + oy, lay["ink_left"] + ox, lay["ink_right"] + ox
    cx = (x_lo + x_hi) / 2 + ox                                             # (n,) rotation centre in the strip
    cy = (y_lo + y_hi) / 2 + oy

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
    boxes = _boxes(n, cid, row, col, owner, K)                              # (n, K, 4)

    canvas = np.zeros((n, CANVAS, CANVAS), dtype=np.float32)
    canvas.reshape(-1)[(cid * CANVAS + row) * CANVAS + col] = value         # distinct pixels
    masks = None
    if return_masks:
        masks = np.zeros((n, K, CANVAS, CANVAS), dtype=bool)
        for k in range(K):
            own, _ = _render(_quads(_paste_strip(digits, X, Y, (SH, SW), only=k)), cid, sx, sy)
            masks.reshape(n, K, -1)[cid, k, row * CANVAS + col] = own > 0
    return canvas, boxes, masks


def _add_noise(canvas, pool, rng, options):
    """Step 4: B noise blocks per canvas, each an SxS window with ink of a random pool digit,
    max-combined into canvas (n, 100, 100) in place (or added and clipped to 1, with
    noise_combine 'add'). Returns positions (n, B, 2) (y, x) and sources (n, B, 3) (MNIST
    index, y, x), int64."""
    n = canvas.shape[0]
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
        if options.noise_combine == "add":
            canvas_rows[dst_start] = np.minimum(canvas_rows[dst_start] + block, np.float32(1))
        else:
            canvas_rows[dst_start] = np.maximum(canvas_rows[dst_start], block)
    positions = np.stack([py, px], axis=-1).astype(np.int64)
    sources = np.stack([pool.index[src], wy, wx], axis=-1).astype(np.int64)
    return positions, sources


def empty_split(n=0, digits=DIGITS):
    """Zero-filled arrays of a split of n canvases of `digits` digits, with the right dtypes and trailing shapes."""
    return {
        "images": np.zeros((n, 1, CANVAS, CANVAS), dtype=np.float32),
        "labels": np.zeros((n, digits), dtype=np.int64),
        "angles": np.zeros((n,), dtype=np.float32),
        "boxes": np.zeros((n, digits, 4), dtype=np.float32),
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
    out = empty_split(n, options.digits)
    if debug:
        B = options.noise_blocks
        K = options.digits
        out.update(indices=np.zeros((n, K), np.int64), noise_positions=np.zeros((n, B, 2), np.int64),
                   noise_sources=np.zeros((n, B, 3), np.int64), radians=np.zeros(n), centres=np.zeros((n, 2)),
                   gaps=np.zeros((n, K - 1), np.int64), slopes=np.zeros(n))
        if return_masks:
            out["masks"] = np.zeros((n, K, CANVAS, CANVAS), dtype=bool)
    if n == 0:
        return out
    if pool is None:
        pool = split_pool(split, options, data_dir)

    def make_part(b, count):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), STREAM_IDS[split], b]))
        return generate_canvases(pool, count, rng, options, return_masks=debug and return_masks)

    fill_blocks(out, n, BLOCK, make_part, workers, progress)
    return out


def fill_blocks(out: dict, n: int, block: int, make_part, workers=None, progress=None) -> None:
    """Fill the arrays of ``out`` (n rows each) block by block: make_part(b, count) returns the
    rows of block b = 0 .. ceil(n / block) - 1 (count of them, a dict with the keys of out), made
    on ``workers`` threads (default min(2, CPUs)); progress(stop, n) is called after each block
    with the end of the block just made. A block's random stream and its slice of the result
    depend on b only, so the data do not depend on the number of workers."""
    if workers is None:
        workers = min(2, os.cpu_count() or 1)

    def fill(b):
        # Each thread writes only its own block's rows of out.
        start, stop = b * block, min((b + 1) * block, n)
        part = make_part(b, stop - start)
        for key in out:
            out[key][start:stop] = part[key]
        return stop

    blocks = range((n + block - 1) // block)
    if workers <= 1:
        done = map(fill, blocks)
    else:
        # NumPy releases the GIL inside its array loops, so threads overlap most of the work.
        executor = ThreadPoolExecutor(max_workers=workers)
        done = executor.map(fill, blocks)
    try:
        for stop in done:
            if progress is not None:
                progress(stop, n)
    finally:
        if workers > 1:
            executor.shutdown(wait=True, cancel_futures=True)
