"""The spatial transformer's two ops: the affine grid generator and the bilinear sampler.

Shape legend
    N            batch size
    C            channels of the sampled image
    H, W         input image height, width
    H_out, W_out output grid height, width
    P            H_out * W_out (sample points per image)

Coordinates follow PyTorch's align_corners=False convention (SPEC section 1):
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

Two implementations (the `impl` argument): 'array' is the array code in this file, which runs
on NumPy and CuPy arrays alike; 'kernel' is the CUDA raw kernel in minstn.ops.cuda (CuPy
only); 'auto' picks 'kernel' for CuPy arrays and 'array' for NumPy. Every cache is a tuple
whose first element is the tag 'array' or 'kernel', and the backward functions dispatch on it.
"""
from __future__ import annotations

import numbers

from minstn.backend import is_cupy, xp_of
from minstn.ops._validate import check_dout, check_float_array, check_same_dtype, check_same_module

__all__ = [
    "affine_grid_forward",
    "affine_grid_backward",
    "bilinear_sample_forward",
    "bilinear_sample_backward",
    "resolve_impl",
]

_IMPLS = ("auto", "array", "kernel")


def resolve_impl(impl, a, op: str) -> str:
    """'auto' -> 'kernel' for a CuPy array, 'array' for a NumPy array; check the explicit choices."""
    if impl not in _IMPLS:
        raise ValueError(f"{op}: impl must be one of 'auto', 'array', 'kernel', got {impl!r}")
    if impl == "auto":
        return "kernel" if is_cupy(a) else "array"
    if impl == "kernel" and not is_cupy(a):
        raise ValueError(
            f"{op}: impl='kernel' needs CuPy arrays (the CUDA kernel runs on the GPU); "
            "move the inputs with Device.asarray or use impl='array' / 'auto' for NumPy arrays"
        )
    return impl


def _check_out_hw(op, out_hw):
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


def affine_grid_forward(theta, out_hw, impl="auto"):
    """Sample positions of an affine transform, normalised to [-1, 1] (align_corners=False).

    theta (N, 2, 3), out_hw = (H_out, W_out) -> grid (N, H_out, W_out, 2), last axis (x, y),
    and a cache for affine_grid_backward.
    """
    op = "affine_grid_forward"
    check_float_array(op, "theta", theta, 3, "(N, 2, 3)")
    if tuple(theta.shape[1:]) != (2, 3):
        raise ValueError(f"{op}: theta must have shape (N, 2, 3), got {tuple(theta.shape)}")
    out_hw = _check_out_hw(op, out_hw)
    impl = resolve_impl(impl, theta, op)
    if impl == "kernel":
        from minstn.ops import cuda as _cuda

        return _cuda.affine_grid_forward(theta, out_hw)
    return _affine_grid_array_forward(theta, out_hw)


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


def _affine_grid_array_forward(theta, out_hw):
    xp = xp_of(theta)
    N = theta.shape[0]
    H_out, W_out = out_hw
    base = base_grid(out_hw, xp, theta.dtype)  # (P, 3)
    grid = xp.matmul(base, theta.transpose(0, 2, 1))  # (P, 3) @ (N, 3, 2) -> (N, P, 2)
    return grid.reshape(N, H_out, W_out, 2), ("array", base, (N, H_out, W_out, 2))


def affine_grid_backward(dgrid, cache):
    """dgrid (N, H_out, W_out, 2) -> dtheta (N, 2, 3)."""
    if cache[0] == "kernel":
        from minstn.ops import cuda as _cuda

        return _cuda.affine_grid_backward(dgrid, cache)
    _, base, grid_shape = cache
    check_dout("affine_grid_backward", "dgrid", dgrid, grid_shape)
    xp = xp_of(dgrid)
    N = dgrid.shape[0]
    dg = dgrid.reshape(N, -1, 2)  # (N, P, 2)
    return xp.matmul(dg.transpose(0, 2, 1), base)  # (N, 2, P) @ (P, 3) -> (N, 2, 3)


# ---------------------------------------------------------------------------------------------
# bilinear sampler


def bilinear_sample_forward(U, grid, impl="auto"):
    """Sample U at the grid's positions with bilinear interpolation and zero padding.

    U (N, C, H, W), grid (N, H_out, W_out, 2) with (x, y) in [-1, 1] for the image's extent
    (points outside are allowed) -> V (N, C, H_out, W_out), cache.  Matches PyTorch's
    grid_sample(mode='bilinear', padding_mode='zeros', align_corners=False).
    """
    op = "bilinear_sample_forward"
    check_float_array(op, "U", U, 4, "(N, C, H, W)")
    check_float_array(op, "grid", grid, 4, "(N, H_out, W_out, 2)")
    check_same_module(op, U=U, grid=grid)
    check_same_dtype(op, U=U, grid=grid)
    if grid.shape[3] != 2:
        raise ValueError(f"{op}: grid's last axis must hold (x, y), size 2; got shape {tuple(grid.shape)}")
    if grid.shape[0] != U.shape[0]:
        raise ValueError(f"{op}: U has batch size {U.shape[0]} but grid has {grid.shape[0]}; they must match")
    impl = resolve_impl(impl, U, op)
    if impl == "kernel":
        from minstn.ops import cuda as _cuda

        return _cuda.bilinear_sample_forward(U, grid)
    return _bilinear_array_forward(U, grid)


# Zero padding made explicit: U gets a zero border of _LO pixels before and _HI after, so every
# corner the sampler can touch exists in the padded image and reads 0 outside U.
_LO, _HI = 2, 3


def _bilinear_array_forward(U, grid):
    """The array code.

    1. Pixel coordinates x, y, clipped to [-2, W+1] x [-2, H+1]. A clipped point lies so far
       outside that both of its neighbours in that axis are outside U, so V = 0 there and the
       gradient is 0, exactly as without clipping; clipping only keeps the indices in range.
    2. U padded with zeros (2 before, 3 after in each spatial axis): the corners x0 = floor(x)
       and x1 = x0 + 1 (never ceil) then always exist, and corners outside U read 0: no masks.
    3. The four corners of a point sit at flat offsets 0, 1, Wp, Wp+1 from its top-left corner
       `base`. They are stored side by side first, quad[k] = (U[k], U[k+1], U[k+Wp], U[k+Wp+1])
       for every flat index k (four contiguous copies of U), so that ONE gather of 4-value rows,
       quad[base], fetches all four corners of every point (2x faster than four gathers of single
       values: the cost of a gather is mostly per index, not per byte).
    4. Bilinear interpolation written as two linear interpolations in x, then one in y:
           top = v00 + wx (v01 - v00),  bot = v10 + wx (v11 - v10),  V = top + wy (bot - top)
       which equals the four-weight sum (1-wy)(1-wx) v00 + (1-wy) wx v01 + wy (1-wx) v10 + wy wx v11.
    """
    xp = xp_of(U)
    N, C, H, W = U.shape
    H_out, W_out = grid.shape[1], grid.shape[2]
    P = H_out * W_out
    Hp, Wp = H + _LO + _HI, W + _LO + _HI
    Uflat = xp.pad(U, ((0, 0), (0, 0), (_LO, _HI), (_LO, _HI))).reshape(-1)  # (N*C*Hp*Wp,), zero border
    M = Uflat.shape[0]
    quad = xp.zeros((M, 4), dtype=U.dtype)  # (M, 4): the corners (0,0), (0,1), (1,0), (1,1) of each k
    quad[:, 0] = Uflat
    quad[:-1, 1] = Uflat[1:]
    quad[:-Wp, 2] = Uflat[Wp:]
    quad[:-Wp - 1, 3] = Uflat[Wp + 1:]
    g = grid.reshape(N, P, 2)
    x = g[:, :, 0] * (0.5 * W) + (0.5 * (W - 1))  # (N, P) pixel coordinates, = ((x_s + 1) W - 1) / 2
    y = g[:, :, 1] * (0.5 * H) + (0.5 * (H - 1))
    xp.clip(x, -2, W + 1, out=x)  # x is a fresh array: clipping in place is safe
    xp.clip(y, -2, H + 1, out=y)
    # A NaN coordinate (a diverged theta) stays NaN through clip; its corners are put in the zero
    # border (fmax ignores NaN: fmax(NaN, -2) = -2, so the indices stay valid and dU gets nothing),
    # while wx, wy stay NaN, so V is NaN there: the failure shows instead of crashing or hiding,
    # as in the CUDA kernel.
    x0 = xp.fmax(x, -2.0)  # (N, P), float
    xp.floor(x0, out=x0)
    y0 = xp.fmax(y, -2.0)
    xp.floor(y0, out=y0)
    wx = x - x0  # (N, P) in [0, 1): weight of the right neighbour x0 + 1
    wy = y - y0  # weight of the lower neighbour y0 + 1
    # flat index of the top-left corner (n, c = 0, y0 + _LO, x0 + _LO) in the padded batch, computed
    # in float (exact: float32 holds every integer below 2^24) and converted once
    fdt = x.dtype if M < 2**24 else xp.float64
    flat = y0.astype(fdt, copy=False) * Wp  # (N, P), a new array
    flat += x0
    flat += (xp.arange(N, dtype=fdt) * (C * Hp * Wp) + (_LO * Wp + _LO))[:, None]
    pix = flat.astype(xp.int64)  # (N, P)
    base = pix[:, None, :]  # (N, 1, P); other channels are Hp*Wp further on
    if C > 1:
        base = base + (xp.arange(C, dtype=xp.int64) * (Hp * Wp))[None, :, None]  # (N, C, P)
    q = xp.take(quad, base, axis=0)  # (N, C, P, 4): all four corners of every point
    v00, v01, v10, v11 = q[..., 0], q[..., 1], q[..., 2], q[..., 3]  # (N, C, P) strided views
    wxc, wyc = wx[:, None], wy[:, None]  # (N, 1, P), broadcast over channels
    d_top = v01 - v00  # (N, C, P) slope in x along the upper row
    d_bot = v11 - v10  # slope in x along the lower row
    top = v00 + wxc * d_top  # (N, C, P) interpolated in x on the upper row
    bot = v10 + wxc * d_bot
    V = top + wyc * (bot - top)  # (N, C, P) then in y
    cache = ("array", U.shape, (H_out, W_out), base, wx, wy, d_top, d_bot, top, bot)
    return V.reshape(N, C, H_out, W_out), cache


def bilinear_sample_backward(dV, cache, need_dU: bool = True):
    """dV (N, C, H_out, W_out) -> (dU (N, C, H, W), dgrid (N, H_out, W_out, 2)).

    need_dU=False returns dU as None: the spatial transformers sample from the input canvas,
    which is data, so only dgrid flows on. The array code then skips the scatter (the costly
    half of this backward); the CUDA kernel computes dU regardless (it is one atomicAdd per
    corner in the same pass) and it is dropped.
    """
    if cache[0] == "kernel":
        from minstn.ops import cuda as _cuda

        dU, dgrid = _cuda.bilinear_sample_backward(dV, cache)
        return (dU if need_dU else None), dgrid
    _, U_shape, (H_out, W_out), base, wx, wy, d_top, d_bot, top, bot = cache
    N, C, H, W = U_shape
    check_dout("bilinear_sample_backward", "dV", dV, (N, C, H_out, W_out))
    xp = xp_of(dV)
    dV3 = dV.reshape(N, C, H_out * W_out)  # (N, C, P)
    wxc, wyc = wx[:, None], wy[:, None]  # (N, 1, P)
    dU = _scatter_dU(dV3, base, wxc, wyc, U_shape, xp) if need_dU else None
    # dgrid: V = top + wy (bot - top) with top, bot linear in wx, and dx/dx_s = W/2, dy/dy_s = H/2
    dVdx = d_top + wyc * (d_bot - d_top)  # (N, C, P), d V / d x
    dVdy = bot - top  # (N, C, P), d V / d y
    dgrid = xp.empty((N, H_out * W_out, 2), dtype=dV.dtype)  # (N, P, 2)
    dgrid[:, :, 0] = (dV3 * dVdx).sum(axis=1) * (0.5 * W)  # sum over channels
    dgrid[:, :, 1] = (dV3 * dVdy).sum(axis=1) * (0.5 * H)
    return dU, dgrid.reshape(N, H_out, W_out, 2)


def _scatter_dU(dV3, base, wxc, wyc, U_shape, xp):
    """dU (N, C, H, W) of the array sampler: every corner of every point adds its share."""
    N, C, H, W = U_shape
    Hp, Wp = H + _LO + _HI, W + _LO + _HI
    # dU: corner k of every point adds (its bilinear weight) * dV to its pixel;
    # one bincount over the flat (n, c, pixel) index of all four corners of all points
    idx = xp.empty((4,) + tuple(base.shape), dtype=xp.int64)  # (4, N, C, P)
    for k, offset in enumerate((0, 1, Wp, Wp + 1)):  # the four corners, not pixels
        xp.add(base, offset, out=idx[k])
    g_bot = dV3 * wyc  # (N, C, P) share of the lower row
    g_top = dV3 - g_bot  # share of the upper row: dV * (1 - wy)
    contrib = xp.empty((4,) + tuple(base.shape), dtype=dV3.dtype)  # (4, N, C, P)
    xp.multiply(g_top, wxc, out=contrib[1])  # (y0, x1): dV (1 - wy) wx
    xp.subtract(g_top, contrib[1], out=contrib[0])  # (y0, x0): dV (1 - wy) (1 - wx)
    xp.multiply(g_bot, wxc, out=contrib[3])  # (y1, x1): dV wy wx
    xp.subtract(g_bot, contrib[3], out=contrib[2])  # (y1, x0): dV wy (1 - wx)
    dUpad = xp.bincount(idx.reshape(-1), weights=contrib.reshape(-1), minlength=N * C * Hp * Wp)  # float64
    return dUpad.reshape(N, C, Hp, Wp)[:, :, _LO : _LO + H, _LO : _LO + W].astype(dV3.dtype)  # drop the border
