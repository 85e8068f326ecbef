"""The projective (homography) grid generator: the spatial transformer's 8-parameter transform.

The Spatial Transformer Networks paper (Jaderberg et al. 2015) names the plane
projective transformation (8 parameters) as a more general alternative to the affine one,
and its Table 1 has "Proj" rows: spatial transformers with this transform, on distorted MNIST
(including the projective distortion P). This module is that grid generator; the grid it returns feeds
minstn.ops.bilinear_sample_forward unchanged, exactly like the affine grid.

Shape legend
    N            batch size
    H_out, W_out output grid height, width
    P            H_out * W_out (sample points per image)

Coordinates follow minstn.ops.stn: normalised to [-1, 1], align_corners=False,
theta maps target to source.
    target grid   x_t[j] = (2j + 1) / W_out - 1,   y_t[i] = (2i + 1) / H_out - 1
    theta (N, 8)  [a, b, c, d, e, f, g, h], the 3x3 homography with its last entry fixed at 1,
                  row-major:  M = [[a, b, c], [d, e, f], [g, h, 1]]
    numerator     u = a x_t + b y_t + c,   v = d x_t + e y_t + f     (= the affine grid of rows 1, 2)
    denominator   w = g x_t + h y_t + 1
    source        x_s = u / w,   y_s = v / w                         grid[..., 0] = x_s, grid[..., 1] = y_s

With g = h = 0 the denominator is exactly 1 and the op IS the affine grid: the numerator is
computed by affine_grid_forward itself, so an affine theta converted with affine_to_projective
gives a bit-identical grid, and the same dtheta for the six affine entries.

Backward (one point; the sums run over the P points, `=` into dtheta, nothing accumulates
across calls):
    du = dx_s / w,   dv = dy_s / w                       (the upstream gradient through 1 / w)
    dw = -(dx_s u + dy_s v) / w^2 = -(du x_s + dv y_s)
    d[a, b, c] = sum_p du [x_t, y_t, 1],   d[d, e, f] = sum_p dv [x_t, y_t, 1]   (affine_grid_backward)
    d[g, h]    = sum_p dw [x_t, y_t]

Points at infinity. The denominator w is 1 at the centre of the target square and affine in
(x_t, y_t); where the line w = 0 (the image of the source plane's line at infinity, the
"horizon") crosses the target grid, points on it map to infinity and points beyond it wrap
round through infinity and come back from the opposite side of the source plane: the warped
picture tears. Near the horizon
x_s grows like 1 / w and dtheta like 1 / w^2, so float32 loses the position first. Clamping w
would hide the problem rather than solve it: a point past the horizon, with w clamped to eps,
lands at (u, v) / eps, which is back inside the image whenever u and v are small (a torn
picture that trains silently), and the clamp is a kink where the gradient for g and h drops to
0. So the forward RAISES a ValueError when any target point has w <= min_denominator (default
1e-3), naming the batch item, its smallest w, and the condition to keep. Why 1e-3: near the
horizon |g x_t| + |h y_t| is about 1, so float32 rounds w with an absolute error of about
2.4e-7 (two ulps of 1), and x_s = u / w inherits a relative error of about 2.4e-7 / w: 2.4e-4
at w = 1e-3, about 0.012 pixel for a point inside a 100-pixel-wide image; closer to the horizon
the float32 grid stops meaning what it says. min_denominator is an argument (any finite number
>= 0; 0 still forbids the horizon itself) for callers who need more perspective. Because w is
affine in (x_t, y_t) and 1 at the centre, its minimum over the grid sits at a corner sample
point and has a closed form:
    min w = 1 - |g| (1 - 1/W_out) - |h| (1 - 1/H_out),
so a localisation net can keep the transform valid by construction, e.g. by predicting
g = s tanh(.) and h = s tanh(.) with 2 s < 1 - min_denominator. A NaN in theta gives NaN in the
grid and no error, as with affine_grid_forward (the sampler then shows the NaN in V).
The check reads one boolean back to the host: one synchronisation per call on CuPy.
"""
from __future__ import annotations

import numbers

import numpy as np

from minstn.backend import xp_of
from minstn.ops._validate import check_cache, check_dout, check_float_array
from minstn.ops.stn import affine_grid_backward, affine_grid_forward

__all__ = [
    "projective_grid_forward",
    "projective_grid_backward",
    "projective_identity",
    "affine_to_projective",
]

DEFAULT_MIN_DENOMINATOR = 1e-3

_LAYOUT = "(N, 8) = [a, b, c, d, e, f, g, h] of the homography [[a, b, c], [d, e, f], [g, h, 1]]"


def projective_identity(dtype, xp=np):
    """The identity homography as theta (8,) = [1, 0, 0, 0, 1, 0, 0, 0] in `dtype` (float32/64).

    xp: the array module (numpy, or cupy for a GPU array). Tile it to (N, 8) for a batch, e.g.
    xp.tile(projective_identity(np.float32), (N, 1)).
    """
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise TypeError(f"projective_identity: dtype must be float32 or float64, got {np.dtype(dtype)}")
    return xp.asarray([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0], dtype=dtype)  # (8,)


def affine_to_projective(theta):
    """An affine theta (N, 2, 3) as the projective theta (N, 8) of the same map (g = h = 0).

    [[a, b, c], [d, e, f]] -> [a, b, c, d, e, f, 0, 0]; same dtype, same array module, a new array.
    """
    op = "affine_to_projective"
    check_float_array(op, "theta", theta, 3, "(N, 2, 3)")
    if tuple(theta.shape[1:]) != (2, 3):
        raise ValueError(f"{op}: theta must have shape (N, 2, 3), got {tuple(theta.shape)}")
    xp = xp_of(theta)
    N = theta.shape[0]
    out = xp.zeros((N, 8), dtype=theta.dtype)  # (N, 8), g = h = 0
    out[:, :6] = theta.reshape(N, 6)
    return out


def _check_out_hw(op, out_hw):
    """A pair (H_out, W_out) of ints >= 1 (the same rule and message as the affine grid)."""
    msg = f"{op}: out_hw must be a pair (H_out, W_out) of ints >= 1, got {out_hw!r}"
    if not isinstance(out_hw, (tuple, list)) or len(out_hw) != 2:
        raise ValueError(msg)
    for v in out_hw:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(msg)
        if v < 1:
            raise ValueError(msg)
    return int(out_hw[0]), int(out_hw[1])


def _check_min_denominator(op, m):
    """A finite real number >= 0 (not a bool)."""
    msg = f"{op}: min_denominator must be a finite number >= 0, got {m!r}"
    if isinstance(m, bool) or not isinstance(m, numbers.Real):
        raise TypeError(msg)
    if not 0 <= m < float("inf"):  # also rejects NaN
        raise ValueError(msg)
    return float(m)


def _target_axes(out_hw, xp, dtype):
    """x_t (W_out,) and y_t (H_out,) of the align_corners=False grid, in `dtype`."""
    H_out, W_out = out_hw
    xt = ((2.0 * xp.arange(W_out) + 1.0) / W_out - 1.0).astype(dtype)  # (W_out,), float64 then cast once
    yt = ((2.0 * xp.arange(H_out) + 1.0) / H_out - 1.0).astype(dtype)  # (H_out,)
    return xt, yt


def projective_grid_forward(theta, out_hw, min_denominator=DEFAULT_MIN_DENOMINATOR):
    """Sample positions of a homography, normalised to [-1, 1] (align_corners=False).

    theta (N, 8) = [a, b, c, d, e, f, g, h], out_hw = (H_out, W_out) ->
    grid (N, H_out, W_out, 2), last axis (x_s, y_s) as in affine_grid_forward, with
        x_s = (a x_t + b y_t + c) / w,  y_s = (d x_t + e y_t + f) / w,  w = g x_t + h y_t + 1,
    and a cache for projective_grid_backward. Raises ValueError if some target point has
    w <= min_denominator (at or near the horizon, where points map to infinity; see the module
    docstring); min w over the grid is 1 - |g| (1 - 1/W_out) - |h| (1 - 1/H_out).
    """
    op = "projective_grid_forward"
    check_float_array(op, "theta", theta, 2, _LAYOUT)
    if theta.shape[1] != 8:
        raise ValueError(f"{op}: theta must have shape {_LAYOUT}, got {tuple(theta.shape)}")
    out_hw = _check_out_hw(op, out_hw)
    eps = _check_min_denominator(op, min_denominator)
    xp = xp_of(theta)
    N = theta.shape[0]
    H_out, W_out = out_hw
    xt, yt = _target_axes(out_hw, xp, theta.dtype)  # (W_out,), (H_out,)
    A = xp.ascontiguousarray(theta[:, :6]).reshape(N, 2, 3)  # (N, 2, 3) rows [a b c], [d e f]
    g = theta[:, 6, None, None]  # (N, 1, 1)
    h = theta[:, 7, None, None]
    w = g * xt[None, None, :] + h * yt[None, :, None] + 1.0  # (N, H_out, W_out), exactly 1 when g = h = 0
    if N > 0:
        wmin = w.reshape(N, -1).min(axis=1)  # (N,)
        bad = wmin <= eps  # (N,) bool; NaN compares False and passes through
        if bool(bad.any()):
            n = int(xp.argmax(bad))
            raise ValueError(
                f"{op}: theta[{n}] puts target points at or beyond the horizon (denominator "
                f"g x_t + h y_t + 1 = {float(wmin[n]):.3g} <= min_denominator = {eps:g}), where they map "
                f"to infinity; keep |g| (1 - 1/W_out) + |h| (1 - 1/H_out) < 1 - min_denominator "
                f"(here g = {float(theta[n, 6]):.4g}, h = {float(theta[n, 7]):.4g}, out_hw = {out_hw})"
            )
    num, acache = affine_grid_forward(A, out_hw)  # (N, H_out, W_out, 2): (u, v), the affine grid of A
    grid = num / w[..., None]  # (N, H_out, W_out, 2): (x_s, y_s) = (u, v) / w
    return grid, ("projective_grid", acache, xt, yt, w, grid)


def projective_grid_backward(dgrid, cache):
    """dgrid (N, H_out, W_out, 2) -> dtheta (N, 8), in the order [a, b, c, d, e, f, g, h]."""
    _, acache, xt, yt, w, grid = check_cache("projective_grid_backward", cache, "projective_grid",
                                             "projective_grid_forward")  # (W_out,), (H_out,), (N, H_out, W_out), (N, H_out, W_out, 2)
    check_dout("projective_grid_backward", "dgrid", dgrid, grid.shape)
    xp = xp_of(dgrid)
    N = dgrid.shape[0]
    dnum = dgrid / w[..., None]  # (N, H_out, W_out, 2): (du, dv), a new array (dgrid is never modified)
    dw = -(dnum * grid).sum(axis=3)  # (N, H_out, W_out): -(du x_s + dv y_s)
    dA = affine_grid_backward(dnum, acache)  # (N, 2, 3): d[a b c], d[d e f]
    dg = xp.matmul(dw.sum(axis=1), xt)  # (N, W_out) @ (W_out,) -> (N,): sum_p dw x_t
    dh = xp.matmul(dw.sum(axis=2), yt)  # (N, H_out) @ (H_out,) -> (N,): sum_p dw y_t
    dtheta = xp.empty((N, 8), dtype=w.dtype)  # (N, 8), theta's dtype
    dtheta[:, :6] = dA.reshape(N, 6)
    dtheta[:, 6] = dg
    dtheta[:, 7] = dh
    return dtheta
