"""Loop-based reference versions of the ops whose vectorised form is not obvious.

These follow the equations literally, one output element at a time, so that they are easy to
check by eye. They are slow (Python loops over every pixel) and meant only for tests on small
shapes and for the tutorials. They take and return NumPy arrays, with the same signatures as
the fast ops: forward -> (out, cache), backward(dout, cache) -> gradients.

Shape legend
    N, C, H, W       input batch, channels, height, width
    F, kh, kw        filters and kernel size (conv)
    H_out, W_out     output height, width
    d                average-pool window = stride
"""
from __future__ import annotations

import numpy as np

from minstn.ops.conv import resolve_padding

__all__ = [
    "conv2d_forward_naive",
    "conv2d_backward_naive",
    "maxpool2d_forward_naive",
    "maxpool2d_backward_naive",
    "avgpool2d_forward_naive",
    "avgpool2d_backward_naive",
    "bilinear_sample_forward_naive",
    "bilinear_sample_backward_naive",
]


def conv2d_forward_naive(x, w, b, padding):
    """out[n, f, i, j] = b[f] + sum_{c, u, v} w[f, c, u, v] * xpad[n, c, i + u, j + v].

    x (N, C, H, W), w (F, C, kh, kw), b (F,) -> out (N, F, H + 2p - kh + 1, W + 2p - kw + 1).
    """
    N, C, H, W = x.shape
    F, _, kh, kw = w.shape
    p = resolve_padding(padding, kh, kw, "conv2d_forward_naive")
    xpad = np.zeros((N, C, H + 2 * p, W + 2 * p), dtype=x.dtype)
    xpad[:, :, p : p + H, p : p + W] = x
    H_out, W_out = H + 2 * p - kh + 1, W + 2 * p - kw + 1
    out = np.zeros((N, F, H_out, W_out), dtype=x.dtype)
    for n in range(N):
        for f in range(F):
            for i in range(H_out):
                for j in range(W_out):
                    window = xpad[n, :, i : i + kh, j : j + kw]  # (C, kh, kw)
                    out[n, f, i, j] = np.sum(window * w[f]) + b[f]
    return out, (x, w, p)


def conv2d_backward_naive(dout, cache):
    """Each output element sends dout * w back to the window it read: (dx, dw, db)."""
    x, w, p = cache
    N, C, H, W = x.shape
    F, _, kh, kw = w.shape
    xpad = np.zeros((N, C, H + 2 * p, W + 2 * p), dtype=x.dtype)
    xpad[:, :, p : p + H, p : p + W] = x
    dxpad = np.zeros_like(xpad)
    dw = np.zeros_like(w)
    db = np.zeros(F, dtype=dout.dtype)
    H_out, W_out = dout.shape[2], dout.shape[3]
    for n in range(N):
        for f in range(F):
            for i in range(H_out):
                for j in range(W_out):
                    g = dout[n, f, i, j]
                    dxpad[n, :, i : i + kh, j : j + kw] += g * w[f]
                    dw[f] += g * xpad[n, :, i : i + kh, j : j + kw]
                    db[f] += g
    dx = dxpad[:, :, p : p + H, p : p + W].copy()
    return dx, dw, db


def maxpool2d_forward_naive(x):
    """out[n, c, i, j] = max of the 2x2 window at (2i, 2j); odd sizes floor."""
    N, C, H, W = x.shape
    H2, W2 = H // 2, W // 2
    out = np.zeros((N, C, H2, W2), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(H2):
                for j in range(W2):
                    out[n, c, i, j] = np.max(x[n, c, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2])
    return out, x


def maxpool2d_backward_naive(dout, cache):
    """dout goes to the first maximum of each window (row-major order)."""
    x = cache
    N, C, H, W = x.shape
    dx = np.zeros_like(x)
    for n in range(N):
        for c in range(C):
            for i in range(dout.shape[2]):
                for j in range(dout.shape[3]):
                    window = x[n, c, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
                    u, v = np.unravel_index(np.argmax(window), (2, 2))  # first maximum
                    dx[n, c, 2 * i + u, 2 * j + v] = dout[n, c, i, j]
    return dx


def avgpool2d_forward_naive(x, d):
    """out[n, c, i, j] = mean of the d x d window at (d i, d j); sizes floor."""
    N, C, H, W = x.shape
    Hd, Wd = H // d, W // d
    out = np.zeros((N, C, Hd, Wd), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(Hd):
                for j in range(Wd):
                    out[n, c, i, j] = np.mean(x[n, c, d * i : d * i + d, d * j : d * j + d])
    return out, (x.shape, d)


def avgpool2d_backward_naive(dout, cache):
    """Each pixel of a window receives dout / d^2; the floored border receives 0."""
    x_shape, d = cache
    dx = np.zeros(x_shape, dtype=dout.dtype)
    N, C = x_shape[:2]
    for n in range(N):
        for c in range(C):
            for i in range(dout.shape[2]):
                for j in range(dout.shape[3]):
                    dx[n, c, d * i : d * i + d, d * j : d * j + d] = dout[n, c, i, j] / (d * d)
    return dx


def _pixel_coords(grid, H, W):
    """grid (N, H_out, W_out, 2) in [-1, 1] -> pixel coordinates x, y (align_corners=False)."""
    x = ((grid[..., 0] + 1) * W - 1) / 2
    y = ((grid[..., 1] + 1) * H - 1) / 2
    return x, y


def bilinear_sample_forward_naive(U, grid):
    """Paper eq. 3: V[n, c, i, j] = sum_{h, w} U[n, c, h, w] max(0, 1 - |x - w|) max(0, 1 - |y - h|).

    The sum runs over EVERY input pixel (no neighbour search), so it is the equation itself;
    pixels outside the image do not exist, which is zero padding.
    U (N, C, H, W), grid (N, H_out, W_out, 2) -> V (N, C, H_out, W_out).
    """
    N, C, H, W = U.shape
    H_out, W_out = grid.shape[1:3]
    x, y = _pixel_coords(grid, H, W)
    V = np.zeros((N, C, H_out, W_out), dtype=U.dtype)
    for n in range(N):
        for i in range(H_out):
            for j in range(W_out):
                for h in range(H):
                    for w in range(W):
                        k = max(0.0, 1 - abs(x[n, i, j] - w)) * max(0.0, 1 - abs(y[n, i, j] - h))
                        V[n, :, i, j] += U[n, :, h, w] * k
    return V, (U, grid)


def bilinear_sample_backward_naive(dV, cache):
    """Derivatives of eq. 3, term by term.

    dU[n, c, h, w]  += dV * kx * ky
    dx              += dV * U * ky * d kx / dx,   d kx / dx = -sign(x - w) where |x - w| < 1
    dgrid_x = dx * W / 2, dgrid_y = dy * H / 2.
    At integer coordinates max(0, 1 - |.|) has a kink; the fast op uses the right-hand derivative
    there (floor + 1), so compare the two away from integer coordinates.
    """
    U, grid = cache
    N, C, H, W = U.shape
    H_out, W_out = grid.shape[1:3]
    x, y = _pixel_coords(grid, H, W)
    dU = np.zeros_like(U)
    dgrid = np.zeros_like(grid)
    for n in range(N):
        for i in range(H_out):
            for j in range(W_out):
                gx = gy = 0.0
                for h in range(H):
                    for w in range(W):
                        ax, ay = x[n, i, j] - w, y[n, i, j] - h
                        kx, ky = max(0.0, 1 - abs(ax)), max(0.0, 1 - abs(ay))
                        dkx = -np.sign(ax) if abs(ax) < 1 else 0.0
                        dky = -np.sign(ay) if abs(ay) < 1 else 0.0
                        dU[n, :, h, w] += dV[n, :, i, j] * kx * ky
                        gx += np.sum(dV[n, :, i, j] * U[n, :, h, w]) * ky * dkx
                        gy += np.sum(dV[n, :, i, j] * U[n, :, h, w]) * kx * dky
                dgrid[n, i, j, 0] = gx * W / 2
                dgrid[n, i, j, 1] = gy * H / 2
    return dU, dgrid
