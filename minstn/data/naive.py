"""The loop reference of the MNIST-sequence canvas: one canvas's digit layer drawn with plain
Python loops over pixels, following minstn.data.sequences' docstring step by step. The tests hold
the vectorised generator to it; it is far too slow for anything else."""
from __future__ import annotations

import math

import numpy as np

from .render import CANVAS

__all__ = ["render_sequence_naive"]


def render_sequence_naive(digits, radians, centre, options=None, gaps=None, slope=0.0):
    """Loop reference for one canvas's digit layer (no noise), for testing the fast path.

    digits (K, 28, 28) uint8 in reading order; radians: the rotation; centre (tx, ty): the
    canvas position of the centre of the strip's ink; gaps: the K - 1 gaps (default: all
    ``options.gap``); slope: of the line the digits' rows follow (slant). Follows the module
    docstring step by step with plain Python loops over pixels. Returns (100, 100) float64.
    """
    from .sequences import SequenceOptions

    options = options or SequenceOptions()
    K = len(digits)
    gaps = [options.gap] * (K - 1) if gaps is None else [int(g) for g in gaps]
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
            start += w + (gaps[k] if k < K - 1 else 0)
    else:
        x = 0
        for k in range(K):
            places.append((x, 0))
            x += 28 + (gaps[k] if k < K - 1 else 0)
    # On a slanted line, each digit's rows move by round(slope * its column offset from the first digit).
    places = [(X, Y + int(np.round(slope * (X - places[0][0])))) for X, Y in places]
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
