"""The fast spatial-transformer ops: the bilinear sampler as one gather of four-value rows, and
both ops as CUDA kernels on the GPU. Same numbers as the plain minstn.ops.stn (tested).

    affine_grid_forward(theta, out_hw, impl='auto')   -> the CUDA kernel for CuPy arrays, else the plain one
    bilinear_sample_forward(U, grid, impl='auto')     -> the CUDA kernel for CuPy arrays, else the quad gather

impl: 'auto' picks 'kernel' for CuPy arrays and 'array' (the array code here) for NumPy ones;
'array' and 'kernel' force one. Every cache is a tuple whose first item is a tag ('quad',
'kernel', 'affine_grid') and the backward functions dispatch on it. Shapes and formulas: the
legend of minstn/ops/stn.py, which holds the plain versions to read first.
"""
from __future__ import annotations

from minstn.backend import is_cupy, xp_of
from minstn.ops import stn as plain
from minstn.ops._validate import check_cache, check_dout

__all__ = ["affine_grid_forward", "affine_grid_backward", "bilinear_sample_forward", "bilinear_sample_backward",
           "resolve_impl"]

IMPLS = ("auto", "array", "kernel")


def resolve_impl(impl, a, op: str) -> str:
    """'auto' -> 'kernel' for a CuPy array, 'array' for a NumPy array; check the explicit choices."""
    if impl not in IMPLS:
        raise ValueError(f"{op}: impl must be one of 'auto', 'array', 'kernel', got {impl!r}")
    if impl == "auto":
        return "kernel" if is_cupy(a) else "array"
    if impl == "kernel" and not is_cupy(a):
        raise ValueError(
            f"{op}: impl='kernel' needs CuPy arrays (the CUDA kernel runs on the GPU); "
            "move the inputs with Device.asarray or use impl='array' / 'auto' for NumPy arrays"
        )
    return impl


def affine_grid_forward(theta, out_hw, impl="auto"):
    """minstn.ops.affine_grid_forward, or its CUDA kernel (impl, above)."""
    plain.check_affine_inputs(theta, out_hw)
    if resolve_impl(impl, theta, "affine_grid_forward") == "kernel":
        from minstn.ops.fast import cuda as _cuda

        return _cuda.affine_grid_forward(theta, plain.check_out_hw("affine_grid_forward", out_hw))
    return plain.affine_grid_forward(theta, out_hw)


def affine_grid_backward(dgrid, cache):
    """dgrid (N, H_out, W_out, 2) -> dtheta (N, 2, 3), for either forward."""
    if isinstance(cache, tuple) and cache and cache[0] == "kernel":
        from minstn.ops.fast import cuda as _cuda

        return _cuda.affine_grid_backward(dgrid, cache)
    return plain.affine_grid_backward(dgrid, cache)


def bilinear_sample_forward(U, grid, impl="auto"):
    """minstn.ops.bilinear_sample_forward computed by the quad gather below, or by the CUDA kernel."""
    plain.check_sampler_inputs(U, grid)
    if resolve_impl(impl, U, "bilinear_sample_forward") == "kernel":
        from minstn.ops.fast import cuda as _cuda

        return _cuda.bilinear_sample_forward(U, grid)
    return _quad_forward(U, grid)


# Zero padding made explicit: U gets a zero border of _LO pixels before and _HI after, so every
# corner the sampler can touch exists in the padded image and reads 0 outside U.
_LO, _HI = 2, 3


def _quad_forward(U, grid):
    """The quad-gather array code.

    1. Pixel coordinates x, y, clipped to [-2, W+1] x [-2, H+1]. A clipped point lies so far
       outside that both of its neighbours in that axis are outside U, so V = 0 there and the
       gradient is 0, exactly as without clipping; clipping only keeps the indices in range.
    2. U padded with zeros (2 before, 3 after in each spatial axis): the corners x0 = floor(x)
       and x1 = x0 + 1 (never ceil) then always exist, and corners outside U read 0: no masks.
    3. The four corners of a point sit at flat offsets 0, 1, Wp, Wp+1 from its top-left corner
       `base`. They are stored side by side first, quad[k] = (U[k], U[k+1], U[k+Wp], U[k+Wp+1])
       for every flat index k (four contiguous copies of U), so that ONE gather of 4-value rows,
       quad[base], fetches all four corners of every point (one index per point instead of four:
       the cost of a gather is mostly per index, not per byte).
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
    cache = ("quad", U.shape, (H_out, W_out), base, wx, wy, d_top, d_bot, top, bot)
    return V.reshape(N, C, H_out, W_out), cache


def bilinear_sample_backward(dV, cache, need_dU: bool = True):
    """dV (N, C, H_out, W_out) -> (dU (N, C, H, W), dgrid (N, H_out, W_out, 2)).

    need_dU=False returns dU as None: the spatial transformers sample from the input canvas,
    which is data, so only dgrid flows on. The array code then skips the scatter (the costly
    half of this backward); the CUDA kernel computes dU regardless (it is one atomicAdd per
    corner in the same pass) and it is dropped.
    """
    check_cache("bilinear_sample_backward", cache, ("quad", "kernel"), "minstn.ops.fast.bilinear_sample_forward")
    if cache[0] == "kernel":
        from minstn.ops.fast import cuda as _cuda

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
