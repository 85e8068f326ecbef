"""Small helpers shared by the models: parameter initialisation and input checks.

Shape legend:
    N   batch size (canvases)
    C   channels, F filters, k kernel size (3)
    D   input features of a fully connected layer, M its outputs
    H   LSTM cells (256)

Parameters live in one flat dict per model, ``{name: array}``, with names such as
``'loc.conv1.w'``; these helpers only create arrays, they hold no state.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = [
    "ModelError",
    "he_conv",
    "he_linear",
    "uniform_lstm",
    "check_images",
    "check_labels",
    "pooled_size",
]


class ModelError(ValueError):
    """A model was built, called or loaded with something it cannot use."""


def he_conv(rng: np.random.Generator, f: int, c: int, k: int = 3):
    """He-normal conv weights and a zero bias: w (F, C, k, k) ~ N(0, 2 / (C k k)), b (F,) = 0."""
    fan_in = c * k * k
    w = rng.normal(0.0, math.sqrt(2.0 / fan_in), size=(f, c, k, k))  # (F, C, k, k)
    return w, np.zeros(f)


def he_linear(rng: np.random.Generator, d: int, m: int):
    """He-normal fully connected weights and a zero bias: w (D, M) ~ N(0, 2 / D), b (M,) = 0."""
    w = rng.normal(0.0, math.sqrt(2.0 / d), size=(d, m))  # (D, M)
    return w, np.zeros(m)


def uniform_lstm(rng: np.random.Generator, d: int, h: int):
    """LSTM input and recurrent weights ~ U(-1/sqrt(H), 1/sqrt(H)) (as PyTorch), zero bias.

    Returns Wx (D, 4H), Wh (H, 4H), b (4H,); the gate order along 4H is i, f, g, o.
    """
    a = 1.0 / math.sqrt(h)
    wx = rng.uniform(-a, a, size=(d, 4 * h))  # (D, 4H)
    wh = rng.uniform(-a, a, size=(h, 4 * h))  # (H, 4H)
    return wx, wh, np.zeros(4 * h)


#: the recurrences a spatial transformer can run on, and the names of their parameters
CELL_PARAMS = {"lstm": ("lstm.Wx", "lstm.Wh", "lstm.b"), "gru": ("gru.Wx", "gru.Wh", "gru.bx", "gru.bh"),
               "rnn": ("rnn.Wx", "rnn.Wh", "rnn.b")}
_GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def init_cell(rng: np.random.Generator, cell: str, d: int, h: int) -> dict:
    """Weights of a recurrent cell with input size d and h units, ~ U(-1/sqrt(h), 1/sqrt(h)) (as
    PyTorch), zero biases: LSTM Wx (d, 4h), Wh (h, 4h), b (4h,); GRU Wx (d, 3h), Wh (h, 3h),
    bx, bh (3h,) (gates r, z, n); RNN Wx (d, h), Wh (h, h), b (h,)."""
    if cell == "lstm":
        return dict(zip(CELL_PARAMS["lstm"], uniform_lstm(rng, d, h)))
    a, g = 1.0 / math.sqrt(h), _GATES[cell]
    p = {f"{cell}.Wx": rng.uniform(-a, a, size=(d, g * h)), f"{cell}.Wh": rng.uniform(-a, a, size=(h, g * h))}
    if cell == "gru":
        p.update({"gru.bx": np.zeros(3 * h), "gru.bh": np.zeros(3 * h)})
    else:
        p["rnn.b"] = np.zeros(h)
    return p


def pooled_size(n: int, times: int) -> int:
    """Size after `times` 2x2 max-pools that floor odd sizes: 100 -> 50 -> 25 -> 12 -> 6."""
    for _ in range(times):
        n //= 2
    return n


def check_images(images, canvas: int, dtype, xp) -> None:
    """Raise a clear error unless `images` is a (N, 1, canvas, canvas) array of the model's dtype."""
    if not hasattr(images, "shape") or not hasattr(images, "dtype"):
        raise TypeError(f"images must be a NumPy or CuPy array of shape (N, 1, {canvas}, {canvas}), got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 1 or images.shape[2:] != (canvas, canvas) or images.shape[0] < 1:
        raise ModelError(
            f"images must have shape (N, 1, {canvas}, {canvas}) (NCHW, one channel), got {tuple(images.shape)}; "
            f"add the channel axis with images[:, None] if it is missing"
        )
    if images.dtype != dtype:
        raise TypeError(
            f"images have dtype {images.dtype}, but the model computes in {np.dtype(dtype).name}; "
            f"convert them first, e.g. images.astype('{np.dtype(dtype).name}') (values in [0, 1])"
        )


def check_labels(labels, n: int, positions: int) -> None:
    """Raise a clear error unless `labels` is an integer (N, positions) array with values in 0..9."""
    if not hasattr(labels, "shape") or not hasattr(labels, "dtype"):
        raise TypeError(f"labels must be an integer array of shape ({n}, {positions}), got {type(labels).__name__}")
    if tuple(labels.shape) != (n, positions):
        raise ModelError(
            f"labels must have shape (N, {positions}) = ({n}, {positions}), one digit per position in reading order, "
            f"got {tuple(labels.shape)}"
        )
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers (digits 0..9), got dtype {labels.dtype}; use labels.astype('int64')")
    if isinstance(labels, np.ndarray) and labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ModelError(f"labels must be digits 0..9, got values from {labels.min()} to {labels.max()}")
