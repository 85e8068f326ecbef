"""A small synthetic stand-in for MNIST, written as the four IDX files.

For tests and quick experiments on machines without MNIST: each "digit" is a random
rectangle of bright ink (values 128..255) in the centre 20x20 area of a 28x28 image, with
a random label. Not a real digit set: only the file format, sizes and value ranges match.

    write_synthetic_mnist(folder, n_train=300, n_test=100, seed=0) -> folder

Shape legend:
    n    images in a split
    28   image height and width
"""
from __future__ import annotations

import os

import numpy as np

from .mnist import MNIST_FILES, write_idx

__all__ = ["synthetic_digits", "write_synthetic_mnist"]


def synthetic_digits(n, rng):
    """images uint8 (n, 28, 28), labels uint8 (n,): one ink rectangle per image."""
    h = rng.integers(8, 21, size=n)                              # (n,) rectangle height 8..20
    w = rng.integers(3, 21, size=n)                              # (n,) width 3..20
    top = 4 + rng.integers(0, 21 - h)                            # inside rows 4..23
    left = 4 + rng.integers(0, 21 - w)
    r = np.arange(28)
    inside = ((r[None, :, None] >= top[:, None, None]) & (r[None, :, None] < (top + h)[:, None, None])
              & (r[None, None, :] >= left[:, None, None]) & (r[None, None, :] < (left + w)[:, None, None]))
    values = rng.integers(128, 256, size=(n, 28, 28))
    images = np.where(inside, values, 0).astype(np.uint8)        # (n, 28, 28)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    return images, labels


def write_synthetic_mnist(folder, n_train=300, n_test=100, seed=0):
    """Write synthetic train/test IDX files (gzip, the original names) into folder; return it."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = synthetic_digits(n, rng)
        img_name, lab_name = MNIST_FILES[split]
        write_idx(os.path.join(folder, img_name), images)
        write_idx(os.path.join(folder, lab_name), labels)
    return folder
