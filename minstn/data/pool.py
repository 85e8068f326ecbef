"""The digits a split of the MNIST-sequence data draws from, and what the generator precomputes
about them (ink boxes, the windows noise blocks may be cut from).

Shape legend:
    P   digits in the pool;  S  side of a noise block;  G = 28 - S + 1 window positions per axis

Disjoint pools: 'train' canvases draw digits (and noise) from MNIST training digits
[0, val_start), 'val' from [val_start, N_train), 'test' and 'shifted' from the MNIST test digits.
With the 22,699-image training file here and val_start=20000 that is 0..19,999 and
20,000..22,698; for the full 60,000 file, e.g. val_start=50000.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .mnist import load_mnist

__all__ = ["SPLIT_IDS", "STREAM_IDS", "INK_LEVEL", "DigitPool", "make_pool", "split_pool"]

SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
#: random-stream ids of every set generate_split can make: the three splits, and 'shifted', a
#: second test set drawn from the test digits with its own stream (made with another layout,
#: to measure how a model copes with a layout it was not trained on)
STREAM_IDS = {**SPLIT_IDS, "shifted": 3}
INK_LEVEL = 128       # a pixel counts towards a noise window's ink when >= this (of 255)


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


def split_pool(split, options, data_dir=None):
    """The DigitPool of split 'train' | 'val' | 'test' | 'shifted' (see the module docstring;
    'shifted' draws from the test digits, like 'test'). options: a SequenceOptions (its
    val_start, noise_size and noise_min_ink)."""
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
