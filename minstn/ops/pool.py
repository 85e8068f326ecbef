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
from minstn.ops._validate import check_cache, check_dout, check_float_array, check_positive_int
from minstn.ops.conv import conv2d_backward, conv2d_forward
from minstn.ops.linear import relu_backward, relu_forward

__all__ = ["maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward", "avgpool2d_backward",
           "conv2d_maxpool_forward", "conv2d_maxpool_backward", "conv2d_maxpool_relu_forward",
           "conv2d_maxpool_relu_backward"]


def maxpool2d_forward(x):
    """2x2 max-pool, stride 2.

    x (N, C, H, W) with H, W >= 2 -> out (N, C, floor(H/2), floor(W/2)), cache.

    Two passes of pairwise maxima, first across columns, then across rows:

        xw   = x cropped to even sizes, viewed as (N, C, H2, 2, W2, 2)
        cmax = max(xw[..., 0], xw[..., 1])          (N, C, H2, 2, W2)  best of each column pair
        out  = max(cmax[:, :, :, 0], cmax[:, :, :, 1])   (N, C, H2, W2)  then of each row pair

    For a C-contiguous x with even H and W the column pass runs as ONE long loop over the
    whole array (NumPy merges the contiguous axes of the view), which is why it comes first.
    The cache keeps two boolean masks, one per pass, that record which half won:

        right (N, C, H2, 2, W2)  the right pixel of a column pair won (it was strictly larger)
        lower (N, C, H2, W2)     the lower row of the window won (strictly larger)

    Ties go to the first pixel (left, upper): the winner is the first maximum in the order
    (0,0), (0,1), (1,0), (1,1), and it alone receives the gradient.
    """
    op = "maxpool2d_forward"
    check_float_array(op, "x", x, 4, "(N, C, H, W)")
    N, C, H, W = x.shape
    if H < 2 or W < 2:
        raise ValueError(f"{op}: x must be at least 2x2 in its last two axes, got {H}x{W}")
    xp = xp_of(x)
    H2, W2 = H // 2, W // 2
    xw = x[:, :, : 2 * H2, : 2 * W2].reshape(N, C, H2, 2, W2, 2)  # a view: only axes are split
    left, rightpx = xw[..., 0], xw[..., 1]                       # (N, C, H2, 2, W2) strided views
    cmax = xp.maximum(left, rightpx)                             # (N, C, H2, 2, W2)
    right = rightpx > left                                       # (N, C, H2, 2, W2) bool
    upper_row, lower_row = cmax[:, :, :, 0], cmax[:, :, :, 1]    # (N, C, H2, W2) each
    out = xp.maximum(upper_row, lower_row)                       # (N, C, H2, W2)
    lower = lower_row > upper_row                                # (N, C, H2, W2) bool
    cache = ("maxpool2d", x.shape, _layout(x), right, lower)
    return out, cache


def _layout(x) -> str:
    """'cnhw' when x (N, C, H, W) is stored channel-major, i.e. its channel axis has the larger
    stride (what conv2d_forward returns: a view, with gaps, of a (C, N, Hp, Wp) buffer), else
    'nchw'. The backward pass allocates dx the same way, so the gradient reaches the
    convolution's backward in the order it reads fastest."""
    return "cnhw" if x.shape[0] > 1 and x.shape[1] > 1 and x.strides[1] > x.strides[0] else "nchw"


def _empty_like_layout(xp, shape, dtype, layout):
    """An uninitialised (N, C, ...) array, stored as (C, N, ...) when layout == 'cnhw'."""
    if layout == "cnhw":
        return xp.empty((shape[1], shape[0]) + tuple(shape[2:]), dtype=dtype).swapaxes(0, 1)
    return xp.empty(shape, dtype=dtype)


def maxpool2d_backward(dout, cache):
    """dout (N, C, H2, W2) -> dx (N, C, H, W): dout goes to each window's single winner.

    The two forward passes undone in reverse order, each a pair of assignments (`=`):

        dcmax[:, :, :, 1] = dout * lower,   dcmax[:, :, :, 0] = dout - dcmax[:, :, :, 1]
        dxw[..., 1]       = dcmax * right,  dxw[..., 0]       = dcmax - dxw[..., 1]

    (d - d * m is exactly d where m is 0 and exactly 0 where m is 1.)
    """
    _, x_shape, layout, right, lower = check_cache("maxpool2d_backward", cache, "maxpool2d", "maxpool2d_forward")
    xp = xp_of(dout)
    N, C, H, W = x_shape
    H2, W2 = H // 2, W // 2
    check_dout("maxpool2d_backward", "dout", dout, (N, C, H2, W2))
    dcmax = _empty_like_layout(xp, (N, C, H2, 2, W2), dout.dtype, layout)   # (N, C, H2, 2, W2)
    xp.multiply(dout, lower, out=dcmax[:, :, :, 1])          # the lower row won
    xp.subtract(dout, dcmax[:, :, :, 1], out=dcmax[:, :, :, 0])  # the upper row won
    dx = _empty_like_layout(xp, x_shape, dout.dtype, layout)                 # (N, C, H, W)
    if (2 * H2, 2 * W2) != (H, W):  # odd size: the dropped row/column gets 0
        dx[:, :, 2 * H2:] = 0
        dx[:, :, :, 2 * W2:] = 0
    dxw = dx[:, :, : 2 * H2, : 2 * W2].reshape(N, C, H2, 2, W2, 2)  # a view (axes are only split)
    xp.multiply(dcmax, right, out=dxw[..., 1])               # the right pixel won
    xp.subtract(dcmax, dxw[..., 1], out=dxw[..., 0])         # the left pixel won
    return dx


def check_avgpool_inputs(x, d) -> tuple:
    """The checks of avgpool2d_forward (shared with the fast version): returns (N, C, H, W, d)."""
    op = "avgpool2d_forward"
    check_float_array(op, "x", x, 4, "(N, C, H, W)")
    d = check_positive_int(op, "d", d)
    N, C, H, W = x.shape
    if d > H or d > W:
        raise ValueError(f"{op}: d={d} is larger than the input {H}x{W}; the output would be empty")
    return N, C, H, W, d


def avgpool2d_forward(x, d):
    """d x d average pool with stride d (d = 1 is the identity).

    x (N, C, H, W), d int with 1 <= d <= min(H, W)
    -> out (N, C, floor(H/d), floor(W/d)), cache.  For d = 1, out is x itself (no copy).
    """
    N, C, H, W, d = check_avgpool_inputs(x, d)
    if d == 1:
        return x, ("avgpool2d", x.shape, 1)
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
    return out, ("avgpool2d", x.shape, d)


def avgpool2d_backward(dout, cache):
    """dout (N, C, Hd, Wd) -> dx (N, C, H, W): each input pixel of a window gets dout / d^2."""
    _, x_shape, d = check_cache("avgpool2d_backward", cache, "avgpool2d", "avgpool2d_forward")
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


def conv2d_maxpool_forward(x, w, b, padding):
    """A convolution followed by 2x2 max-pooling: conv2d_forward then maxpool2d_forward.

    x (N, C, H, W), w (F, C, kh, kw), b (F,) -> out (N, F, floor(H_out / 2), floor(W_out / 2)), cache.
    The plain composition of the two ops; minstn.ops.fast.conv2d_maxpool_forward computes the same
    numbers as one op (the pool as four contiguous arrays), the one the models run.
    """
    a, c_conv = conv2d_forward(x, w, b, padding)          # (N, F, H_out, W_out)
    out, c_pool = maxpool2d_forward(a)                    # (N, F, H_out // 2, W_out // 2)
    return out, ("conv2d_maxpool", c_conv, c_pool)


def conv2d_maxpool_backward(dout, cache, need_dx: bool = True):
    """dout (N, F, H2, W2) -> (dx (N, C, H, W) or None, dw (F, C, kh, kw), db (F,)): the two backwards in reverse."""
    _, c_conv, c_pool = check_cache("conv2d_maxpool_backward", cache, "conv2d_maxpool", "conv2d_maxpool_forward")
    da = maxpool2d_backward(dout, c_pool)
    return conv2d_backward(da, c_conv, need_dx=need_dx)


def conv2d_maxpool_relu_forward(x, w, b, padding):
    """A convolution, 2x2 max-pooling, then ReLU: conv2d_maxpool_forward then relu_forward.

    x (N, C, H, W), w (F, C, kh, kw), b (F,) -> out (N, F, floor(H_out / 2), floor(W_out / 2)), cache.
    The models' conv blocks: pooling before the ReLU equals pooling after it exactly (ReLU is
    monotonic, so max(relu(a), relu(b)) = relu(max(a, b)), with the same winner) and the ReLU then
    touches a quarter of the pixels. The plain composition of the ops; on a GPU,
    minstn.ops.fast.conv2d_maxpool_relu_forward applies the ReLU inside the pooling kernel.
    """
    m, c_pool = conv2d_maxpool_forward(x, w, b, padding)  # (N, F, H_out // 2, W_out // 2)
    out, c_relu = relu_forward(m)
    return out, ("conv2d_maxpool_relu", c_pool, c_relu)


def conv2d_maxpool_relu_backward(dout, cache, need_dx: bool = True):
    """dout (N, F, H2, W2) -> (dx (N, C, H, W) or None, dw (F, C, kh, kw), db (F,)): the backwards in reverse."""
    _, c_pool, c_relu = check_cache("conv2d_maxpool_relu_backward", cache, "conv2d_maxpool_relu",
                                    "conv2d_maxpool_relu_forward")
    dm = relu_backward(dout, c_relu)
    return conv2d_maxpool_backward(dm, c_pool, need_dx=need_dx)
