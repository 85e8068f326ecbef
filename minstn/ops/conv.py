"""2-D convolution (stride 1, zero padding, bias) as textbook im2col + one matrix product.

Shape legend
    N        batch size
    C        input channels            F       output channels (filters)
    H, W     input height, width       kh, kw  kernel height, width
    p        zero padding on each side (the same on all four sides)
    H_out    H + 2p - kh + 1           W_out   W + 2p - kw + 1
    K        C * kh * kw (one column of im2col)
    M        N * H_out * W_out (output pixels of the batch)

Forward (cross-correlation, as in every deep-learning library):

    out[n, f, i, j] = b[f] + sum_{c, u, v} w[f, c, u, v] * xpad[n, c, i + u, j + v]

im2col gathers, for every output pixel of every image, the K input values it sees into one
column of a matrix cols (K, M): row (c, u, v), column (n, i, j) holds xpad[n, c, i + u, j + v].
For one kernel offset (u, v) those values are the window xpad[:, :, u:u + H_out, v:v + W_out],
so im2col is kh * kw window copies. Then the whole convolution is one matrix product

    out (F, M) = w (F, K) @ cols (K, M) + b

Backward (the `=` / `+=` rule: every gradient is assigned once, except the col2im scatter,
which adds the kh * kw windows into one buffer with `+=`, because neighbouring output pixels
read overlapping input pixels):

    dout2 (F, M) = dout as a matrix
    db    = dout2 summed over the pixels
    dw    = dout2 @ cols^T                     (F, K)
    dcols = w^T @ dout2                        (K, M)
    dx    = col2im(dcols): for each kernel offset, dxpad[:, :, u:u + H_out, v:v + W_out] += its rows

The loops run over the kh * kw kernel offsets only (9 for a 3x3 kernel), never over pixels.
This is the version to read first. minstn.ops.fast.conv computes the same numbers with a cheaper
im2col (one contiguous slice per channel and offset, "flat shifts"), the one the models run;
minstn.ops.naive.conv2d_forward_naive is the sum written as loops. The tests hold all three equal.
"""
from __future__ import annotations

import numbers

from minstn.backend import xp_of
from minstn.ops._validate import check_cache, check_dout, check_float_array, check_same_dtype, check_same_module
from minstn.ops.linear import relu_backward, relu_forward

__all__ = ["conv2d_forward", "conv2d_backward", "conv2d_relu_forward", "conv2d_relu_backward", "resolve_padding",
           "check_conv_inputs"]


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


def check_conv_inputs(x, w, b, padding, op: str = "conv2d_forward"):
    """Check conv inputs; returns (p, H_out, W_out). Shared with the fast versions (minstn.ops.fast)."""
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


def im2col(x, kh: int, kw: int, p: int):
    """x (N, C, H, W) -> cols (K, M): row (c, u, v), column (n, i, j) = xpad[n, c, i + u, j + v]."""
    xp = xp_of(x)
    N, C, H, W = x.shape
    H_out, W_out = H + 2 * p - kh + 1, W + 2 * p - kw + 1
    xpad = xp.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))                       # (N, C, H + 2p, W + 2p)
    cols = xp.empty((C, kh, kw, N, H_out, W_out), dtype=x.dtype)
    for u in range(kh):                                                       # kernel offsets only
        for v in range(kw):
            cols[:, u, v] = xpad[:, :, u:u + H_out, v:v + W_out].transpose(1, 0, 2, 3)   # (C, N, H_out, W_out)
    return cols.reshape(C * kh * kw, N * H_out * W_out)                       # (K, M)


def col2im(dcols, x_shape, kh: int, kw: int, p: int):
    """The adjoint of im2col: dcols (K, M) -> dx (N, C, H, W), the overlapping windows summed."""
    xp = xp_of(dcols)
    N, C, H, W = x_shape
    H_out, W_out = H + 2 * p - kh + 1, W + 2 * p - kw + 1
    dcols = dcols.reshape(C, kh, kw, N, H_out, W_out)
    dxpad = xp.zeros((N, C, H + 2 * p, W + 2 * p), dtype=dcols.dtype)
    for u in range(kh):
        for v in range(kw):
            dxpad[:, :, u:u + H_out, v:v + W_out] += dcols[:, u, v].transpose(1, 0, 2, 3)   # += : windows overlap
    return dxpad[:, :, p:p + H, p:p + W]                                      # (N, C, H, W) without the padding


def conv2d_forward(x, w, b, padding):
    """Convolve x with F filters, stride 1, zero padding.

    x (N, C, H, W), w (F, C, kh, kw), b (F,), padding 'same' | 'valid' | int p >= 0
    ('valid' = 0, 'same' = (k-1)//2 for odd square kernels).
    Returns out (N, F, H_out, W_out) with H_out = H + 2p - kh + 1, W_out = W + 2p - kw + 1,
    and a cache for conv2d_backward.
    """
    p, H_out, W_out = check_conv_inputs(x, w, b, padding)
    N = x.shape[0]
    F, C, kh, kw = w.shape
    cols = im2col(x, kh, kw, p)                                               # (K, M)
    out = w.reshape(F, C * kh * kw) @ cols + b[:, None]                       # (F, M): the one matrix product
    out = out.reshape(F, N, H_out, W_out).transpose(1, 0, 2, 3)               # (N, F, H_out, W_out)
    return out, ("conv2d", x.shape, w, cols, p)


def conv2d_backward(dout, cache, need_dx: bool = True):
    """dout (N, F, H_out, W_out) -> (dx (N, C, H, W), dw (F, C, kh, kw), db (F,)).

    need_dx=False skips the input gradient (dx is returned as None): a model's first layer has
    nothing upstream of it.
    """
    check_cache("conv2d_backward", cache, "conv2d", "conv2d_forward")
    _, x_shape, w, cols, p = cache
    N, _, H, W = x_shape
    F, C, kh, kw = w.shape
    H_out, W_out = H + 2 * p - kh + 1, W + 2 * p - kw + 1
    check_dout("conv2d_backward", "dout", dout, (N, F, H_out, W_out))
    dout2 = dout.transpose(1, 0, 2, 3).reshape(F, N * H_out * W_out)          # (F, M)
    db = dout2.sum(axis=1)                                                    # (F,)
    dw = (dout2 @ cols.T).reshape(F, C, kh, kw)                               # (F, K)
    if not need_dx:
        return None, dw, db
    dcols = w.reshape(F, C * kh * kw).T @ dout2                               # (K, M)
    return col2im(dcols, x_shape, kh, kw, p), dw, db


def conv2d_relu_forward(x, w, b, padding):
    """A convolution followed by its ReLU: conv2d_forward then relu_forward.

    x (N, C, H, W), w (F, C, kh, kw), b (F,) -> out (N, F, H_out, W_out) = max(conv, 0), cache.
    The plain composition of the two ops; on a GPU, minstn.ops.fast.conv2d_relu_forward applies
    the ReLU inside the kernel that adds the bias.
    """
    a, c_conv = conv2d_forward(x, w, b, padding)  # (N, F, H_out, W_out)
    out, c_relu = relu_forward(a)
    return out, ("conv2d_relu", c_conv, c_relu)


def conv2d_relu_backward(dout, cache, need_dx: bool = True):
    """dout (N, F, H_out, W_out) -> (dx (N, C, H, W) or None, dw (F, C, kh, kw), db (F,)): the two backwards in reverse."""
    _, c_conv, c_relu = check_cache("conv2d_relu_backward", cache, "conv2d_relu", "conv2d_relu_forward")
    da = relu_backward(dout, c_relu)
    return conv2d_backward(da, c_conv, need_dx=need_dx)
