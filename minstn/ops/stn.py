"""The spatial transformer's two ops: the affine grid generator and the bilinear sampler.

Shape legend
    N            batch size
    C            channels of the sampled image
    H, W         input image height, width
    H_out, W_out output grid height, width
    P            H_out * W_out (sample points per image)

Coordinates follow PyTorch's align_corners=False convention (docs/ops.md):
    target grid   x_t[j] = (2j + 1) / W_out - 1,   y_t[i] = (2i + 1) / H_out - 1
    affine map    [x_s, y_s] = theta @ [x_t, y_t, 1]            theta (N, 2, 3)
    pixel coords  x = ((x_s + 1) * W - 1) / 2,  y = ((y_s + 1) * H - 1) / 2  (pixel centres at integers)

Bilinear sampling (paper eq. 3), with zero padding outside the image:
    V[n, c, p] = sum_{h, w} U[n, c, h, w] * max(0, 1 - |x_p - w|) * max(0, 1 - |y_p - h|)
Only the four neighbours x0 = floor(x), x1 = x0 + 1 (never ceil), y0, y1 have nonzero weight:
    wx1 = x - x0, wx0 = 1 - wx1, wy1 = y - y0, wy0 = 1 - wy1
    V = wy0 wx0 U[y0, x0] + wy0 wx1 U[y0, x1] + wy1 wx0 U[y1, x0] + wy1 wx1 U[y1, x1]
and a corner outside the image contributes 0.

Backward:
    dU        scatter-add of weight * dV into the four corners: one np.bincount over the flat
              (n, c, pixel) index of all four corners of all points (`+=` semantics: several
              sample points may share a pixel; never np.add.at)
    dgrid_x   sum_c dV * (wy0 (U01 - U00) + wy1 (U11 - U10)) * W / 2   (`=`, one per point)
    dgrid_y   sum_c dV * (wx0 (U10 - U00) + wx1 (U11 - U01)) * H / 2
    dtheta    dgrid^T @ base: (N, 2, P) @ (P, 3)

This file holds the plain array code, the version to read first: it runs on NumPy and CuPy
arrays alike. minstn.ops.fast.sampler computes the same numbers faster (all four corners in one
gather) and runs the CUDA kernels (minstn/ops/fast/kernels/stn.cu) on the GPU; the tests hold them
equal, and minstn.ops.naive has the loop references.
"""
from __future__ import annotations

import numbers

from minstn.backend import xp_of
from minstn.ops._validate import check_cache, check_dout, check_float_array, check_same_dtype, check_same_module

__all__ = [
    "affine_grid_forward",
    "affine_grid_backward",
    "bilinear_sample_forward",
    "bilinear_sample_backward",
    "base_grid",
    "pixel_coords",
]


def check_out_hw(op, out_hw):
    if not isinstance(out_hw, (tuple, list)) or len(out_hw) != 2:
        raise ValueError(f"{op}: out_hw must be a pair (H_out, W_out) of ints >= 1, got {out_hw!r}")
    for v in out_hw:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{op}: out_hw must be a pair (H_out, W_out) of ints >= 1, got {out_hw!r}")
        if v < 1:
            raise ValueError(f"{op}: out_hw must be a pair (H_out, W_out) of ints >= 1, got {out_hw!r}")
    return int(out_hw[0]), int(out_hw[1])


# ---------------------------------------------------------------------------------------------
# affine grid


def check_affine_inputs(theta, out_hw, op: str = "affine_grid_forward"):
    check_float_array(op, "theta", theta, 3, "(N, 2, 3)")
    if tuple(theta.shape[1:]) != (2, 3):
        raise ValueError(f"{op}: theta must have shape (N, 2, 3), got {tuple(theta.shape)}")
    return check_out_hw(op, out_hw)


def affine_grid_forward(theta, out_hw, impl="array"):
    """Sample positions of an affine transform, normalised to [-1, 1] (align_corners=False).

    theta (N, 2, 3), out_hw = (H_out, W_out) -> grid (N, H_out, W_out, 2), last axis (x, y),
    and a cache for affine_grid_backward. impl: only 'array' (or 'auto') here; the CUDA
    kernel is minstn.ops.fast's (the argument lets the two be called alike).
    """
    out_hw = check_affine_inputs(theta, out_hw)
    _plain_impl(impl, "affine_grid_forward")
    xp = xp_of(theta)
    N = theta.shape[0]
    H_out, W_out = out_hw
    base = base_grid(out_hw, xp, theta.dtype)  # (P, 3)
    grid = xp.matmul(base, theta.transpose(0, 2, 1))  # (P, 3) @ (N, 3, 2) -> (N, P, 2)
    return grid.reshape(N, H_out, W_out, 2), ("affine_grid", base, (N, H_out, W_out, 2))


def _plain_impl(impl, op):
    if impl not in ("auto", "array"):
        raise ValueError(f"{op}: the plain op is array code (impl 'array' or 'auto'), got impl={impl!r}; "
                         "the CUDA kernel is minstn.ops.fast's")


def base_grid(out_hw, xp, dtype):
    """(H_out * W_out, 3) rows (x_t, y_t, 1), row index i * W_out + j, in `dtype`."""
    H_out, W_out = out_hw
    xt = (2.0 * xp.arange(W_out) + 1.0) / W_out - 1.0  # (W_out,), float64 then cast once
    yt = (2.0 * xp.arange(H_out) + 1.0) / H_out - 1.0  # (H_out,)
    base = xp.empty((H_out, W_out, 3), dtype=dtype)
    base[:, :, 0] = xt[None, :]
    base[:, :, 1] = yt[:, None]
    base[:, :, 2] = 1.0
    return base.reshape(H_out * W_out, 3)


def affine_grid_backward(dgrid, cache):
    """dgrid (N, H_out, W_out, 2) -> dtheta (N, 2, 3)."""
    _, base, grid_shape = check_cache("affine_grid_backward", cache, "affine_grid", "affine_grid_forward")
    check_dout("affine_grid_backward", "dgrid", dgrid, grid_shape)
    xp = xp_of(dgrid)
    N = dgrid.shape[0]
    dg = dgrid.reshape(N, base.shape[0], 2)  # (N, P, 2); P stated, so an empty batch reshapes too
    return xp.matmul(dg.transpose(0, 2, 1), base)  # (N, 2, P) @ (P, 3) -> (N, 2, 3)


# ---------------------------------------------------------------------------------------------
# bilinear sampler


def check_sampler_inputs(U, grid, op: str = "bilinear_sample_forward") -> None:
    check_float_array(op, "U", U, 4, "(N, C, H, W)")
    check_float_array(op, "grid", grid, 4, "(N, H_out, W_out, 2)")
    check_same_module(op, U=U, grid=grid)
    check_same_dtype(op, U=U, grid=grid)
    if grid.shape[3] != 2:
        raise ValueError(f"{op}: grid's last axis must hold (x, y), size 2; got shape {tuple(grid.shape)}")
    if grid.shape[0] != U.shape[0]:
        raise ValueError(f"{op}: U has batch size {U.shape[0]} but grid has {grid.shape[0]}; they must match")


def pixel_coords(grid, H: int, W: int):
    """grid (N, H_out, W_out, 2) normalised -> x, y (N, P) pixel coordinates, ((x_s + 1) W - 1) / 2."""
    N, P = grid.shape[0], grid.shape[1] * grid.shape[2]
    g = grid.reshape(N, P, 2)
    return g[:, :, 0] * (0.5 * W) + (0.5 * (W - 1)), g[:, :, 1] * (0.5 * H) + (0.5 * (H - 1))


def bilinear_sample_forward(U, grid, impl="array"):
    """Sample U at the grid's positions with bilinear interpolation and zero padding.

    U (N, C, H, W), grid (N, H_out, W_out, 2) with (x, y) in [-1, 1] for the image's extent
    (points outside are allowed) -> V (N, C, H_out, W_out), cache.  Matches PyTorch's
    grid_sample(mode='bilinear', padding_mode='zeros', align_corners=False). impl: as in
    affine_grid_forward.

    The four corners of every point, each fetched on its own:
        x0 = floor(x), x1 = x0 + 1, y0 = floor(y), y1 = y0 + 1;  wx = x - x0, wy = y - y0
        corner (yk, xk): its value U[n, :, yk, xk] where it lies inside the image, else 0,
                         and its weight (1 - wy or wy) * (1 - wx or wx)
        V = sum over the four corners of weight * value
    A NaN coordinate (a diverged theta) gives NaN in V: the failure shows instead of hiding.
    """
    check_sampler_inputs(U, grid)
    _plain_impl(impl, "bilinear_sample_forward")
    xp = xp_of(U)
    N, C, H, W = U.shape
    H_out, W_out = grid.shape[1], grid.shape[2]
    x, y = pixel_coords(grid, H, W)                                   # (N, P) each
    x0, y0 = xp.floor(x), xp.floor(y)
    wx, wy = x - x0, y - y0                                           # (N, P): weights of x1 and y1
    n = xp.arange(N)[:, None]                                         # (N, 1), broadcast over the points
    corners = []                                                      # (yk, xk, weight, inside) per corner
    for dy, ry in ((0, 1 - wy), (1, wy)):
        for dx, rx in ((0, 1 - wx), (1, wx)):
            yk, xk = y0 + dy, x0 + dx
            inside = (xk >= 0) & (xk <= W - 1) & (yk >= 0) & (yk <= H - 1)              # (N, P)
            yi = xp.where(inside, yk, 0).astype(xp.int64)             # in range (a NaN point reads pixel 0, weight NaN)
            xi = xp.where(inside, xk, 0).astype(xp.int64)
            corners.append((yi, xi, ry * rx, inside))
    V = xp.zeros((N, C, H_out * W_out), dtype=U.dtype)
    values = []
    for yi, xi, weight, inside in corners:
        v = U[n, :, yi, xi].transpose(0, 2, 1) * inside[:, None]      # (N, C, P): the corner's value, 0 outside
        values.append(v)
        V += weight[:, None] * v
    cache = ("bilinear_sample", U.shape, (H_out, W_out), corners, values, wx, wy)
    return V.reshape(N, C, H_out, W_out), cache


def bilinear_sample_backward(dV, cache, need_dU: bool = True):
    """dV (N, C, H_out, W_out) -> (dU (N, C, H, W), dgrid (N, H_out, W_out, 2)).

    dgrid: d V / d x = (1 - wy) (v01 - v00) + wy (v11 - v10),  d V / d y = (1 - wx) (v10 - v00) + wx (v11 - v01),
    summed over channels and scaled by W / 2, H / 2 (x = ((x_s + 1) W - 1) / 2).
    dU: each corner inside the image adds weight * dV to its pixel (`+=`: points share pixels),
    one np.bincount over the flat (n, c, pixel) index. need_dU=False returns dU as None (the
    spatial transformers sample from the canvas, which is data).
    """
    _, U_shape, (H_out, W_out), corners, values, wx, wy = check_cache(
        "bilinear_sample_backward", cache, "bilinear_sample", "bilinear_sample_forward")
    N, C, H, W = U_shape
    check_dout("bilinear_sample_backward", "dV", dV, (N, C, H_out, W_out))
    xp = xp_of(dV)
    dV3 = dV.reshape(N, C, H_out * W_out)                                              # (N, C, P)
    v00, v01, v10, v11 = values
    wxc, wyc = wx[:, None], wy[:, None]                                               # (N, 1, P)
    dgrid = xp.empty((N, H_out * W_out, 2), dtype=dV.dtype)                            # (N, P, 2)
    dgrid[:, :, 0] = (dV3 * ((1 - wyc) * (v01 - v00) + wyc * (v11 - v10))).sum(axis=1) * (0.5 * W)
    dgrid[:, :, 1] = (dV3 * ((1 - wxc) * (v10 - v00) + wxc * (v11 - v01))).sum(axis=1) * (0.5 * H)
    dgrid = dgrid.reshape(N, H_out, W_out, 2)
    if not need_dU:
        return None, dgrid
    nc = (xp.arange(N)[:, None] * C + xp.arange(C)[None, :])[:, :, None]              # (N, C, 1)
    index, share = [], []
    for yi, xi, weight, inside in corners:
        index.append((nc * (H * W) + (yi * W + xi)[:, None, :]).reshape(-1))          # flat (n, c, pixel)
        share.append((xp.where(inside, weight, 0)[:, None, :] * dV3).reshape(-1))     # 0 for corners outside
    dU = xp.bincount(xp.concatenate(index), weights=xp.concatenate(share), minlength=N * C * H * W)
    return dU.reshape(N, C, H, W).astype(dV.dtype), dgrid
