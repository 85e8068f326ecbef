"""How a canvas of the MNIST-sequence data is drawn, step by step (minstn.data.sequences calls these).

Shape legend:
    N        canvases;  K = 4 digits per canvas
    SH, SW   height and width of a block's "strips" (the four digits laid side by side)
    T        canvas pixels near the rotated strips (the only ones computed), over all canvases

    _layout          where each digit goes in its strip (ink boxes, gaps)
    _extent, _fits   the rotated strip's half-extents on the canvas; whether it fits
    _widest_gap      the widest gap with which a canvas's strip still fits
    _paste_strip, _quads, _render      the strip as uint8 pixels, read bilinearly at canvas points
    _support_points  the canvas pixels that can receive ink (closed form, row by row)
    _owner_columns, _boxes             which digit a pixel's ink comes from; each digit's box
    _row_windows     a view that moves whole pixel rows with one index each (pasting, noise)
"""
from __future__ import annotations

import numpy as np

__all__ = ["CANVAS", "DIGITS"]

CANVAS = 100          # canvas side in pixels
DIGITS = 4            # digits per canvas by default (the paper's; SequenceOptions.digits sets it); the
                      # functions here take K from their arrays' shapes


def _layout(ink, gap, crop, slope=None):
    """Place four digits per canvas in a strip.

    ink: (N, K, 4) top, left, height, width of each digit's ink box.
    gap: an int, or (N, K - 1) ints, the gap after each of the first K - 1 digits.
    slope: None, or (N,) floats: the digits' row offsets follow a line of that slope through
    the strip (digit k moves down by round(slope * its column offset from digit 0)).
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
        step = np.broadcast_to(np.asarray(28 + gap, dtype=np.int64), (len(ink), ink.shape[1] - 1))   # (N, K-1)
        X = np.concatenate([np.zeros_like(left[:, :1]), np.cumsum(step, axis=1)], axis=1)
        Y = np.zeros_like(top)
        y_lo, y_hi = top.min(axis=1), (top + h).max(axis=1) - 1
    if slope is not None:                                        # a slanted line: rows follow the columns
        Y = Y + np.round(slope[:, None] * (X - X[:, :1])).astype(np.int64)
        y_lo, y_hi = (Y + top).min(axis=1), (Y + top + h).max(axis=1) - 1
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
    return np.floor(total / gaps.shape[1] - 1e-9).astype(np.int64)


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
    for k in range(images.shape[1]) if only is None else (only,):
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
    for k in range(ink_left.shape[1]):
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


def _boxes(n, cid, row, col, owner, K=DIGITS):
    """Boxes (n, K, 4) float32 (x0, y0, x1, y1) end-exclusive of the points of each owner.

    cid, row, col, owner (T,) with owner 0 = no digit, k + 1 = digit k. Uses presence
    tables (n * K, 100) from np.bincount, then the first and last present row / column.
    """
    inked = owner > 0
    key = (cid * K + (owner - 1)) * CANVAS                       # (T,) start of the canvas-digit group's bins
    key = key[inked]                                             # (T_ink,)
    size = n * K * CANVAS
    cols = np.bincount(key + col[inked], minlength=size).reshape(n, K, CANVAS) > 0   # columns with ink
    rows = np.bincount(key + row[inked], minlength=size).reshape(n, K, CANVAS) > 0
    boxes = np.stack([cols.argmax(axis=2), rows.argmax(axis=2),
                      CANVAS - cols[..., ::-1].argmax(axis=2), CANVAS - rows[..., ::-1].argmax(axis=2)],
                     axis=-1)                                    # (n, K, 4)
    return boxes.astype(np.float32)
