"""Pooling: 2x2 max-pool (stride 2) and d x d average pool (stride d, the paper's down-sampling).

Shape legend
    N, C     batch, channels
    H, W     input height, width
    H2, W2   max-pool output: floor(H / 2), floor(W / 2)
    d        average-pool window = stride
    Hd, Wd   average-pool output: floor(H / d), floor(W / d)

Odd (or non-divisible) sizes floor: the last row/column that does not fill a whole window
is dropped in the forward pass and gets a zero gradient.

Both ops view the cropped input as (N, C, H2, 2, W2, 2) (or (N, C, Hd, d, Wd, d)):
a window is then two axes of a reshape, with no loop over pixels.

Backward rule: dx is assigned once (`=`) per window position; the cropped border is zero.
Max-pool ties: the FIRST maximum in the order (0,0), (0,1), (1,0), (1,1) wins and alone
receives the gradient, so the gradient is well defined (a sum over tied winners would not be
the derivative of max, and would not pass a finite-difference check).
"""
from __future__ import annotations

from minstn.backend import xp_of
from minstn.ops._validate import check_dout, check_float_array, check_positive_int

__all__ = ["maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward", "avgpool2d_backward"]


def maxpool2d_forward(x):
    """2x2 max-pool, stride 2.

    x (N, C, H, W) with H, W >= 2 -> out (N, C, floor(H/2), floor(W/2)), cache.
    """
    op = "maxpool2d_forward"
    check_float_array(op, "x", x, 4, "(N, C, H, W)")
    N, C, H, W = x.shape
    if H < 2 or W < 2:
        raise ValueError(f"{op}: x must be at least 2x2 in its last two axes, got {H}x{W}")
    xp = xp_of(x)
    H2, W2 = H // 2, W // 2
    xw = x[:, :, : 2 * H2, : 2 * W2].reshape(N, C, H2, 2, W2, 2)  # view when H, W are even
    a00 = xw[:, :, :, 0, :, 0]  # (N, C, H2, W2), the four window positions as strided views
    a01 = xw[:, :, :, 0, :, 1]
    a10 = xw[:, :, :, 1, :, 0]
    a11 = xw[:, :, :, 1, :, 1]
    top = xp.maximum(a00, a01)  # (N, C, H2, W2), best of the window's first row
    bottom = xp.maximum(a10, a11)  # best of the second row
    out = xp.maximum(top, bottom)  # (N, C, H2, W2)
    # winner index 0..3 = 2 * row + col, first maximum in row-major order winning ties:
    # row 1 only if the bottom row is strictly larger, column 1 only if strictly larger
    row = bottom > top  # (N, C, H2, W2) bool
    col = xp.where(row, a11 > a10, a01 > a00)
    win = (row.astype(xp.uint8) << 1) | col.astype(xp.uint8)  # uint8: one byte per window
    cache = (x.shape, win)
    return out, cache


def maxpool2d_backward(dout, cache):
    """dout (N, C, H2, W2) -> dx (N, C, H, W): dout goes to each window's single winner."""
    x_shape, win = cache
    xp = xp_of(dout)
    N, C, H, W = x_shape
    H2, W2 = H // 2, W // 2
    check_dout("maxpool2d_backward", "dout", dout, (N, C, H2, W2))
    dxw = xp.empty((N, C, H2, 2, W2, 2), dtype=dout.dtype)  # (N, C, H2, 2, W2, 2)
    zero = xp.zeros((), dtype=dout.dtype)
    dxw[:, :, :, 0, :, 0] = xp.where(win == 0, dout, zero)
    dxw[:, :, :, 0, :, 1] = xp.where(win == 1, dout, zero)
    dxw[:, :, :, 1, :, 0] = xp.where(win == 2, dout, zero)
    dxw[:, :, :, 1, :, 1] = xp.where(win == 3, dout, zero)
    dx_crop = dxw.reshape(N, C, 2 * H2, 2 * W2)
    if (2 * H2, 2 * W2) == (H, W):
        return dx_crop
    dx = xp.zeros(x_shape, dtype=dout.dtype)  # odd size: the dropped row/column gets 0
    dx[:, :, : 2 * H2, : 2 * W2] = dx_crop
    return dx


def avgpool2d_forward(x, d):
    """d x d average pool with stride d (d = 1 is the identity).

    x (N, C, H, W), d int with 1 <= d <= min(H, W)
    -> out (N, C, floor(H/d), floor(W/d)), cache.  For d = 1, out is x itself (no copy).
    """
    op = "avgpool2d_forward"
    check_float_array(op, "x", x, 4, "(N, C, H, W)")
    d = check_positive_int(op, "d", d)
    N, C, H, W = x.shape
    if d > H or d > W:
        raise ValueError(f"{op}: d={d} is larger than the input {H}x{W}; the output would be empty")
    if d == 1:
        return x, (x.shape, 1)
    Hd, Wd = H // d, W // d
    xw = x[:, :, : Hd * d, : Wd * d].reshape(N, C, Hd, d, Wd, d)  # (N, C, Hd, d, Wd, d) view
    # sum the d*d window positions as strided views (a loop over the window, not over pixels);
    # NumPy's sum over the two small window axes is ~10x slower than these d*d - 1 adds
    out = xw[:, :, :, 0, :, 0].copy()  # (N, C, Hd, Wd), a fresh array
    for u in range(d):
        for v in range(d):
            if u or v:
                out += xw[:, :, :, u, :, v]
    out *= 1.0 / (d * d)  # fresh array: in place is safe
    return out, (x.shape, d)


def avgpool2d_backward(dout, cache):
    """dout (N, C, Hd, Wd) -> dx (N, C, H, W): each input pixel of a window gets dout / d^2."""
    x_shape, d = cache
    N, C, H, W = x_shape
    Hd, Wd = H // d, W // d
    check_dout("avgpool2d_backward", "dout", dout, (N, C, Hd, Wd))
    if d == 1:
        return dout
    xp = xp_of(dout)
    g = dout * (1.0 / (d * d))  # (N, C, Hd, Wd), a new array
    dx_crop = xp.repeat(xp.repeat(g, d, axis=2), d, axis=3)  # (N, C, Hd*d, Wd*d): each pixel of a window
    if (Hd * d, Wd * d) == (H, W):
        return dx_crop
    dx = xp.zeros(x_shape, dtype=dout.dtype)  # the floored border gets 0
    dx[:, :, : Hd * d, : Wd * d] = dx_crop
    return dx
