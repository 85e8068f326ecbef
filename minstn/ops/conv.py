"""2-D convolution (stride 1, zero padding, bias) as im2col + one batched matrix product.

Shape legend
    N        batch size
    C        input channels            F       output channels (filters)
    H, W     input height, width       kh, kw  kernel height, width
    p        zero padding on each side (the same on all four sides)
    Hp, Wp   padded size: H + 2p, W + 2p
    H_out    H + 2p - kh + 1           W_out   W + 2p - kw + 1
    K        C * kh * kw (one column of im2col)
    P        H_out * W_out (output pixels per image)

Forward (cross-correlation, as in every deep-learning library):

    out[n, f, i, j] = b[f] + sum_{c, u, v} w[f, c, u, v] * xpad[n, c, i + u, j + v]

im2col gathers, for every output pixel of every image, the K input values it sees, into
cols (K, N*P). Then the whole convolution is a single matrix product

    out (F, N*P) = w (F, K) @ cols (K, N*P)

followed by one transpose to NCHW.

Backward (the `=` / `+=` rule: every gradient is assigned once, except the
col2im scatter, which adds the kh*kw shifted windows into one buffer with `+=`
because neighbouring output pixels read overlapping input pixels):

    db    = sum over n, i, j of dout
    dw    = (cols (K, N*P) @ dout^T (N*P, F))^T
    dcols = w^T (K, F) @ dout (F, N*P)
    dx    = col2im(dcols): for each kernel offset (u, v), dxpad[..., u:u+H_out, v:v+W_out] += dcols[:, :, u, v]

The loops run over the kh*kw kernel offsets only (9 for a 3x3 kernel), never over pixels.
"""
from __future__ import annotations

import numbers

from minstn.backend import xp_of
from minstn.ops._validate import check_dout, check_float_array, check_same_dtype, check_same_module

__all__ = ["conv2d_forward", "conv2d_backward", "resolve_padding"]


def resolve_padding(padding, kh: int, kw: int, op: str = "conv2d_forward") -> int:
    """Turn 'same' | 'valid' | int into the number of zero rows/columns added on each side.

    'valid' -> 0.  'same' -> (k - 1) // 2, which keeps H_out = H only for odd square
    kernels, so 'same' with an even or non-square kernel is an error.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return 0
        if padding == "same":
            if kh != kw or kh % 2 == 0:
                raise ValueError(
                    f"{op}: padding='same' needs an odd square kernel (1x1, 3x3, 5x5, ...), got {kh}x{kw}; "
                    "use an int padding instead"
                )
            return (kh - 1) // 2
        raise ValueError(f"{op}: padding must be 'same', 'valid' or an int >= 0, got {padding!r}")
    if isinstance(padding, bool) or not isinstance(padding, numbers.Integral):
        raise TypeError(f"{op}: padding must be 'same', 'valid' or an int >= 0, got {type(padding).__name__} {padding!r}")
    if padding < 0:
        raise ValueError(f"{op}: padding must be 'same', 'valid' or an int >= 0, got {padding}")
    return int(padding)


def _check_conv_inputs(x, w, b, padding):
    op = "conv2d_forward"
    check_float_array(op, "x", x, 4, "(N, C, H, W)")
    check_float_array(op, "w", w, 4, "(F, C, kh, kw)")
    check_float_array(op, "b", b, 1, "(F,)")
    check_same_module(op, x=x, w=w, b=b)
    check_same_dtype(op, x=x, w=w, b=b)
    N, C, H, W = x.shape
    F, Cw, kh, kw = w.shape
    if Cw != C:
        raise ValueError(f"{op}: x has {C} channels but w expects {Cw} (w is (F, C, kh, kw) = {tuple(w.shape)})")
    if b.shape[0] != F:
        raise ValueError(f"{op}: b must have shape (F,) = ({F},) to match w, got {tuple(b.shape)}")
    p = resolve_padding(padding, kh, kw, op)
    H_out, W_out = H + 2 * p - kh + 1, W + 2 * p - kw + 1
    if H_out < 1 or W_out < 1:
        raise ValueError(
            f"{op}: kernel {kh}x{kw} is larger than the padded input {H + 2 * p}x{W + 2 * p} "
            f"(padding={padding!r}); use a smaller kernel or more padding"
        )
    return p, H_out, W_out


def _im2col(x, kh: int, kw: int, p: int, H_out: int, W_out: int):
    """x (N, C, H, W) -> cols (K, N*P), rows ordered (c, u, v), columns ordered (n, i, j).

    The batch sits in the columns, so the whole layer is ONE large matrix product
    (F, K) @ (K, N*P): large products are what BLAS does best, and threads help them, whereas
    N small per-image products pay a thread start-up each (see benchmarks/ops.md).
    """
    xp = xp_of(x)
    N, C, H, W = x.shape
    if p > 0:
        xpad = xp.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))  # (N, C, Hp, Wp)
    else:
        xpad = x
    cols = xp.empty((C, kh, kw, N, H_out, W_out), dtype=x.dtype)
    for u in range(kh):  # loop over kernel offsets only
        for v in range(kw):
            cols[:, u, v] = xpad[:, :, u : u + H_out, v : v + W_out].transpose(1, 0, 2, 3)  # (C, N, H_out, W_out)
    return cols.reshape(C * kh * kw, N * H_out * W_out)  # (K, N*P)


def _col2im(dcols, x_shape, kh: int, kw: int, p: int, H_out: int, W_out: int):
    """Adjoint of _im2col: dcols (K, N*P) -> dx (N, C, H, W), overlapping windows summed."""
    xp = xp_of(dcols)
    N, C, H, W = x_shape
    dcols = dcols.reshape(C, kh, kw, N, H_out, W_out)
    dxpad = xp.zeros((N, C, H + 2 * p, W + 2 * p), dtype=dcols.dtype)  # (N, C, Hp, Wp)
    for u in range(kh):
        for v in range(kw):
            dxpad[:, :, u : u + H_out, v : v + W_out] += dcols[:, u, v].transpose(1, 0, 2, 3)  # += : windows overlap
    if p > 0:
        return xp.ascontiguousarray(dxpad[:, :, p : p + H, p : p + W])  # (N, C, H, W)
    return dxpad


def conv2d_forward(x, w, b, padding):
    """Convolve x with F filters, stride 1, zero padding.

    x (N, C, H, W), w (F, C, kh, kw), b (F,), padding 'same' | 'valid' | int p >= 0
    ('valid' = 0, 'same' = (k-1)//2 for odd square kernels).
    Returns out (N, F, H_out, W_out) with H_out = H + 2p - kh + 1, W_out = W + 2p - kw + 1,
    and an opaque cache for conv2d_backward.
    """
    p, H_out, W_out = _check_conv_inputs(x, w, b, padding)
    xp = xp_of(x)
    N = x.shape[0]
    F, C, kh, kw = w.shape
    cols = _im2col(x, kh, kw, p, H_out, W_out)  # (K, N*P)
    w2 = w.reshape(F, C * kh * kw)  # (F, K)
    out = w2 @ cols  # (F, N*P): the one matrix product
    out += b[:, None]  # fresh array: adding in place is safe
    out = out.reshape(F, N, H_out, W_out).transpose(1, 0, 2, 3)  # (N, F, H_out, W_out) view
    cache = (x.shape, w, cols, p, H_out, W_out)
    return xp.ascontiguousarray(out), cache


def conv2d_backward(dout, cache):
    """dout (N, F, H_out, W_out) -> (dx (N, C, H, W), dw (F, C, kh, kw), db (F,))."""
    x_shape, w, cols, p, H_out, W_out = cache
    xp = xp_of(dout)
    N = x_shape[0]
    F, C, kh, kw = w.shape
    check_dout("conv2d_backward", "dout", dout, (N, F, H_out, W_out))
    dout2 = xp.ascontiguousarray(dout.transpose(1, 0, 2, 3)).reshape(F, N * H_out * W_out)  # (F, N*P)
    db = dout2.sum(axis=1)  # (F,)
    dw = (cols @ dout2.T).T  # (K, N*P) @ (N*P, F) -> (K, F), transposed to (F, K); this order of
    # the product was 1.6x faster in OpenBLAS than dout2 @ cols.T (benchmarks/ops.md)
    dcols = w.reshape(F, C * kh * kw).T @ dout2  # (K, F) @ (F, N*P) -> (K, N*P)
    dx = _col2im(dcols, x_shape, kh, kw, p, H_out, W_out)  # (N, C, H, W)
    return dx, dw.reshape(F, C, kh, kw), db
