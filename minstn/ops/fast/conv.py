"""The fast 2-D convolution: minstn.ops.conv's im2col + one matrix product, with an im2col made of
one contiguous slice per channel and kernel offset ("flat shifts"). Same numbers as the plain
minstn.ops.conv (tested); this is the one the models run on the CPU.

Shape legend
    N        batch size
    C        input channels            F       output channels (filters)
    H, W     input height, width       kh, kw  kernel height, width
    p        zero padding on each side (the same on all four sides)
    Hp, Wp   padded size: H + 2p, W + 2p
    H_out    H + 2p - kh + 1           W_out   W + 2p - kw + 1
    K        C * kh * kw (one column of im2col)
    Q        N * Hp * Wp (pixels of the padded batch; see "flat shifts" below)

Forward (cross-correlation, as in every deep-learning library):

    out[n, f, i, j] = b[f] + sum_{c, u, v} w[f, c, u, v] * xpad[n, c, i + u, j + v]

im2col gathers, for every output pixel of every image, the K input values it sees, into the
columns of a matrix cols. Then the whole convolution is a single matrix product

    out (F, pixels) = w (F, K) @ cols (K, pixels)

Flat shifts. Store the zero-padded batch channel-major and flatten each channel:
xflat (C, Q), where pixel (n, y, x) sits at q = n*Hp*Wp + y*Wp + x. Output pixel (n, i, j)
is given the same index q = n*Hp*Wp + i*Wp + j, and the input it reads through kernel offset
(u, v) is then at q + s with s = u*Wp + v: a shift that is the SAME for every pixel. So the
im2col row block of offset (u, v) is one contiguous slice,

    cols[(c, u, v), :] = xflat[c, s : s + Q]

(kh*kw copies of C long rows, instead of N*C*H_out small windows each). The price: the
product also computes the (Hp*Wp - H_out*W_out) per image positions with i >= H_out or
j >= W_out, which read across the border and are dropped (+17% columns for 25x25, +4% for
100x100). out (F, Q) is returned as the (N, F, H_out, W_out) view of its valid part.

Backward (the `=` / `+=` rule: every gradient is assigned once, except the
col2im scatter, which adds the kh*kw shifted windows into one buffer with `+=`
because neighbouring output pixels read overlapping input pixels):

    dout2 (F, Q) = dout on the valid positions, 0 on the dropped ones
    db    = sum over n, i, j of dout
    dw    = (cols (K, Q) @ dout2^T (Q, F))^T       (the dropped columns meet zeros)
    dcols = w^T (K, F) @ dout2 (F, Q)
    dx    = col2im(dcols): for each kernel offset, dxflat[c, s : s + Q] += dcols[(c, u, v), :]
            then the inside of the padded (C, N, Hp, Wp) buffer

The loops run over the kh*kw kernel offsets only (9 for a 3x3 kernel), never over pixels.
minstn.ops.naive.conv2d_forward_naive is the same sum written as loops, for the tests.

On the GPU (CuPy arrays) the flat shifts would be kh*kw*2 slice copies per layer, each a kernel
launch, so im2col and col2im are one CUDA kernel each instead (kernels/conv.cu), and the
columns are the textbook ones of minstn.ops.conv, without the border positions:

    cols (K, M) = im2col kernel (x)            M = N * H_out * W_out, column (n, i, j)
    a    (F, M) = w (F, K) @ cols              the one matrix product (cuBLAS)
    out  (N, F, H_out, W_out) = bias_forward kernel (a, b): a + b[f], written C-contiguous
Backward
    dout2 (F, M) = dout, channel-major (one transposing copy)
    db = dout2 summed over M;  dw = dout2 @ cols^T;  dcols = w^T @ dout2
    dx = col2im kernel (dcols): each input pixel gathers the columns that read it (no atomics)
Four device operations forward (one allocation for cols and out, two kernels, one product), six
backward (three with need_dx=False).
conv2d_relu_forward / _backward (a conv then its ReLU, the classifier's third layer): on NumPy
arrays this module's conv, then minstn.ops' ReLU; on a GPU the bias kernel applies the ReLU
(four device operations forward, as the conv alone), and the backward's first kernel
(bias_relu_backward) masks dout where the output was 0 while writing it channel-major, in place
of the transposing copy, into an allocation shared with dx (six backward, four with need_dx=False).
minstn.ops.fast.convpool shares im2col_gpu and conv_backward_gpu.
"""
from __future__ import annotations

from minstn.backend import is_cupy, xp_of
from minstn.ops import linear as plain_linear
from minstn.ops._validate import check_cache, check_dout
from minstn.ops.conv import check_conv_inputs
from minstn.ops.fast import cuda as _cuda

__all__ = ["conv2d_forward", "conv2d_backward", "conv2d_relu_forward", "conv2d_relu_backward", "im2col_gpu",
           "col2im_gpu", "conv_backward_gpu"]


def _padded_flat(x, p: int, tail: int):
    """x (N, C, H, W) -> xflat (C, Q + tail): zero-padded by p, channel-major, flattened, plus
    `tail` zeros at the end so that every shifted slice of length Q stays inside."""
    xp = xp_of(x)
    N, C, H, W = x.shape
    Hp, Wp = H + 2 * p, W + 2 * p
    Q = N * Hp * Wp
    xflat = xp.empty((C, Q + tail), dtype=x.dtype)
    xflat[:, Q:] = 0
    xpad = xflat[:, :Q].reshape(C, N, Hp, Wp)  # a view
    if p > 0:  # zero only the border; the inside is overwritten next
        xpad[:, :, :p] = 0
        xpad[:, :, p + H:] = 0
        xpad[:, :, p:p + H, :p] = 0
        xpad[:, :, p:p + H, p + W:] = 0
    xpad[:, :, p:p + H, p:p + W] = x.transpose(1, 0, 2, 3)  # (C, N, H, W): a straight copy when x is channel-major
    return xflat


def _im2col(x, kh: int, kw: int, p: int):
    """x (N, C, H, W) -> cols (K, Q), rows ordered (c, u, v), column q = n*Hp*Wp + i*Wp + j.

    The batch sits in the columns, so the whole layer is ONE large matrix product
    (F, K) @ (K, Q): large products are what BLAS does best, and threads help them, whereas
    N small per-image products would each pay the call's and the threads' start-up.
    """
    xp = xp_of(x)
    N, C, H, W = x.shape
    Wp = W + 2 * p
    Q = N * (H + 2 * p) * Wp
    xflat = _padded_flat(x, p, tail=(kh - 1) * Wp + (kw - 1))  # (C, Q + largest shift)
    cols = xp.empty((C, kh, kw, Q), dtype=x.dtype)
    for u in range(kh):  # loop over kernel offsets only
        for v in range(kw):
            s = u * Wp + v
            cols[:, u, v] = xflat[:, s : s + Q]  # (C, Q): one shifted slice per channel
    return cols.reshape(C * kh * kw, Q)  # (K, Q)


def _col2im(dcols, x_shape, kh: int, kw: int, p: int):
    """Adjoint of _im2col: dcols (K, Q) -> dx (N, C, H, W), overlapping windows summed.

    The sum is built in a flat channel-major buffer and dx is returned as an (N, C, H, W)
    view of its inside (no copy): NumPy and CuPy ops take any strides.
    """
    xp = xp_of(dcols)
    N, C, H, W = x_shape
    Hp, Wp = H + 2 * p, W + 2 * p
    Q = N * Hp * Wp
    dcols = dcols.reshape(C, kh, kw, Q)
    dxflat = xp.zeros((C, Q + (kh - 1) * Wp + (kw - 1)), dtype=dcols.dtype)  # (C, Q + tail)
    for u in range(kh):
        for v in range(kw):
            s = u * Wp + v
            dxflat[:, s : s + Q] += dcols[:, u, v]  # += : windows overlap
    dxpad = dxflat[:, :Q].reshape(C, N, Hp, Wp)
    return dxpad[:, :, p : p + H, p : p + W].transpose(1, 0, 2, 3)  # (N, C, H, W) view


def conv2d_forward(x, w, b, padding):
    """Convolve x with F filters, stride 1, zero padding.

    x (N, C, H, W), w (F, C, kh, kw), b (F,), padding 'same' | 'valid' | int p >= 0
    ('valid' = 0, 'same' = (k-1)//2 for odd square kernels).
    Returns out (N, F, H_out, W_out) with H_out = H + 2p - kh + 1, W_out = W + 2p - kw + 1,
    and an opaque cache for conv2d_backward.

    Memory layout: out is a VIEW of the product's (F, N, Hp, Wp) result, i.e. stored
    channel-major. Element-wise ops keep that layout, and the next convolution's im2col and
    this layer's backward read it without a transpose. Call np.ascontiguousarray(out) if you
    need NCHW memory order.
    """
    p, H_out, W_out = check_conv_inputs(x, w, b, padding)
    if is_cupy(x):
        return _gpu_forward(x, w, b, p, H_out, W_out)
    N, _, H, W = x.shape
    F, C, kh, kw = w.shape
    cols = _im2col(x, kh, kw, p)  # (K, Q)
    w2 = w.reshape(F, C * kh * kw)  # (F, K)
    out = w2 @ cols  # (F, Q): the one matrix product
    out += b[:, None]  # fresh array: adding in place is safe
    out = out.reshape(F, N, H + 2 * p, W + 2 * p)[:, :, :H_out, :W_out]  # the valid positions
    cache = ("conv2d_fast", x.shape, w, cols, p, H_out, W_out)
    return out.transpose(1, 0, 2, 3), cache  # (N, F, H_out, W_out) view


def conv2d_backward(dout, cache, need_dx: bool = True):
    """dout (N, F, H_out, W_out) -> (dx (N, C, H, W), dw (F, C, kh, kw), db (F,)).

    need_dx=False skips the input gradient (dx is returned as None): a model's first layer has
    nothing upstream of it, and dx is the col2im half of the backward's work there.
    """
    check_cache("conv2d_backward", cache, ("conv2d_fast", "conv2d_gpu"), "minstn.ops.fast.conv2d_forward")
    if cache[0] == "conv2d_gpu":
        return _gpu_backward("conv2d_backward", dout, cache, need_dx)
    _, x_shape, w, cols, p, H_out, W_out = cache
    xp = xp_of(dout)
    N, _, H, W = x_shape
    F, C, kh, kw = w.shape
    check_dout("conv2d_backward", "dout", dout, (N, F, H_out, W_out))
    Hp, Wp = H + 2 * p, W + 2 * p
    dpad = xp.zeros((F, N, Hp, Wp), dtype=dout.dtype)  # (F, N, Hp, Wp): 0 at the dropped positions
    dpad[:, :, :H_out, :W_out] = dout.transpose(1, 0, 2, 3)
    dout2 = dpad.reshape(F, N * Hp * Wp)  # (F, Q)
    db = dout2.sum(axis=1)  # (F,)
    dw = (cols @ dout2.T).T  # (K, Q) @ (Q, F) -> (K, F), transposed to (F, K):
    # mathematically dout2 @ cols.T, in the operand order the op benchmark times
    if not need_dx:
        return None, dw.reshape(F, C, kh, kw), db
    dcols = w.reshape(F, C * kh * kw).T @ dout2  # (K, F) @ (F, Q) -> (K, Q)
    dx = _col2im(dcols, x_shape, kh, kw, p)  # (N, C, H, W)
    return dx, dw.reshape(F, C, kh, kw), db


def conv2d_relu_forward(x, w, b, padding):
    """minstn.ops.conv2d_relu_forward: conv2d_forward then the ReLU -> (out (N, F, H_out, W_out), cache).
    On CuPy arrays the ReLU is applied by the bias kernel (no launch of its own)."""
    p, H_out, W_out = check_conv_inputs(x, w, b, padding, op="conv2d_relu_forward")
    if is_cupy(x):
        return _gpu_forward(x, w, b, p, H_out, W_out, relu=True)
    a, c_conv = conv2d_forward(x, w, b, padding)                       # (N, F, H_out, W_out)
    out, c_relu = plain_linear.relu_forward(a)
    return out, ("conv2d_relu_fast", c_conv, c_relu)


def conv2d_relu_backward(dout, cache, need_dx: bool = True):
    """dout (N, F, H_out, W_out) -> (dx (N, C, H, W) or None, dw (F, C, kh, kw), db (F,))."""
    check_cache("conv2d_relu_backward", cache, ("conv2d_relu_fast", "conv2d_relu_gpu"),
                "minstn.ops.fast.conv2d_relu_forward")
    if cache[0] == "conv2d_relu_gpu":
        return _gpu_backward("conv2d_relu_backward", dout, cache, need_dx)
    _, c_conv, c_relu = cache
    da = plain_linear.relu_backward(dout, c_relu)
    return conv2d_backward(da, c_conv, need_dx=need_dx)


# ----------------------------------------------------------------------------------------- GPU


def im2col_gpu(x, kh: int, kw: int, p: int, H_out: int, W_out: int, cols=None):
    """x (N, C, H, W) CuPy -> cols (K, M) by the im2col kernel: row (c, u, v), column (n, i, j)
    = x[n, c, i + u - p, j + v - p], 0 in the padding (minstn.ops.conv.im2col's matrix).
    cols: the (K, M) array to write (allocated here when None)."""
    xp = xp_of(x)
    N, C, H, W = x.shape
    x = xp.ascontiguousarray(x)                                       # a copy only for a strided view
    if cols is None:
        cols = xp.empty((C * kh * kw, N * H_out * W_out), dtype=x.dtype)   # (K, M), every element written
    _cuda.launch("im2col", x, cols.size, (x, cols, *_cuda.sizes(N, C, H, W, kh, kw, p, H_out, W_out)))
    return cols


def col2im_gpu(dcols, x_shape, kh: int, kw: int, p: int, H_out: int, W_out: int, dx=None):
    """The adjoint of im2col_gpu: dcols (K, M) -> dx (N, C, H, W), C-contiguous, by the col2im kernel.
    dx: the array to write (allocated here when None)."""
    xp = xp_of(dcols)
    N, C, H, W = x_shape
    dcols = xp.ascontiguousarray(dcols)
    if dx is None:
        dx = xp.empty((N, C, H, W), dtype=dcols.dtype)                # every element written (=)
    _cuda.launch("col2im", dcols, dx.size, (dcols, dx, *_cuda.sizes(N, C, H, W, kh, kw, p, H_out, W_out)))
    return dx


def conv_backward_gpu(da, x_shape, w, cols, p: int, H_out: int, W_out: int, need_dx: bool, dx=None):
    """The conv's gradients from da (F, M) = the gradient of the product w @ cols, channel-major:
    (dx (N, C, H, W) or None, dw (F, C, kh, kw), db (F,)); dx written into `dx` when given. Shared
    with conv2d_maxpool_backward."""
    F, C, kh, kw = w.shape
    db = da.sum(axis=1)                                               # (F,)
    dw = (da @ cols.T).reshape(F, C, kh, kw)                          # (F, K): C-contiguous
    if not need_dx:
        return None, dw, db
    dcols = w.reshape(F, C * kh * kw).T @ da                          # (K, F) @ (F, M) -> (K, M)
    return col2im_gpu(dcols, x_shape, kh, kw, p, H_out, W_out, dx), dw, db


def _gpu_forward(x, w, b, p: int, H_out: int, W_out: int, relu: bool = False):
    """conv2d_forward (relu: conv2d_relu_forward) on CuPy arrays: im2col kernel, one product, bias
    kernel (module docstring); the columns and the output share one allocation."""
    xp = xp_of(x)
    N = x.shape[0]
    F, C, kh, kw = w.shape
    cols, out = _cuda.empty_parts(xp, x.dtype, (C * kh * kw, N * H_out * W_out), (N, F, H_out, W_out))
    im2col_gpu(x, kh, kw, p, H_out, W_out, cols)                      # (K, M)
    a = w.reshape(F, C * kh * kw) @ cols                              # (F, M): the one product
    b = xp.ascontiguousarray(b)
    _cuda.launch("bias_forward", a, out.size, (a, b, out, *_cuda.sizes(N, F, H_out, W_out, relu)))
    tag = "conv2d_relu_gpu" if relu else "conv2d_gpu"
    return out, (tag, x.shape, w, cols, p, H_out, W_out, out if relu else None)


def _gpu_backward(op: str, dout, cache, need_dx: bool):
    """The backward of _gpu_forward: dout in channel-major order (through the ReLU's mask when the
    forward had one), then the conv's gradients."""
    _, x_shape, w, cols, p, H_out, W_out, out = cache
    xp = xp_of(dout)
    N = x_shape[0]
    F = w.shape[0]
    check_dout(op, "dout", dout, (N, F, H_out, W_out))
    if out is None:
        da = xp.ascontiguousarray(dout.transpose(1, 0, 2, 3)).reshape(F, N * H_out * W_out)   # (F, M)
        return conv_backward_gpu(da, x_shape, w, cols, p, H_out, W_out, need_dx)
    dout = xp.ascontiguousarray(dout)                                 # where out > 0, channel-major: one kernel
    da, dx = _cuda.empty_parts(xp, dout.dtype, (F, N * H_out * W_out), x_shape if need_dx else (0,))
    _cuda.launch("bias_relu_backward", dout, da.size, (dout, out, da, *_cuda.sizes(N, F, H_out, W_out)))
    return conv_backward_gpu(da, x_shape, w, cols, p, H_out, W_out, need_dx, dx)
