"""Convolution followed by 2x2 max-pooling, as one op: conv2d_forward then maxpool2d_forward
computed in "pooling-phase" order, so that the pool is four contiguous arrays instead of a
strided pass over a large activation.

Shape legend
    N        batch size
    C, F     input channels, filters
    H, W     input height, width        kh, kw  kernel height, width     p  zero padding
    Ho, Wo   conv output: H + 2p - kh + 1, W + 2p - kw + 1
    H2, W2   pooled output: floor(Ho / 2), floor(Wo / 2)
    Hs, Ws   phase grid: H2 + kh // 2, W2 + kw // 2 (the valid H2 x W2 plus what the shifts read)
    Qs       N * Hs * Ws, pixels of one phase grid over the batch
    K        C * kh * kw

The result is exactly maxpool2d_forward(conv2d_forward(x, w, b, padding)) (same products, same
first-maximum tie rule); the gradient is that of the composition. The models use it for every
conv -> max-pool block; minstn.ops.pool.conv2d_maxpool_forward is the plain composition of the
two separate ops, for teaching and for the tests.

On a GPU (CuPy arrays) the phase-by-phase gather, which keeps a CPU's caches warm, would cost
dozens of small launches; there the op is three kernels (kernels/conv.cu) around the product:

    cols (K, M)          im2col kernel (minstn.ops.fast.conv.im2col_gpu), M = N * Ho * Wo
    a    (F, M)          w @ cols, without the bias (kept for the backward)
    out  (N, F, H2, W2)  maxpool_bias_forward kernel: the max of each 2x2 window of a + b[f]
Backward
    da   (F, M)          maxpool_bias_backward kernel: each conv output pixel recomputes its
                         window, and takes dout where it won (the same '>' masks), else 0
    db, dw, dx           as the conv alone (minstn.ops.fast.conv.conv_backward_gpu)
Four device operations forward (one allocation for cols and out, two kernels, the product), six
backward (the pool's kernel writes da into an allocation shared with dx; four with need_dx=False).

conv2d_maxpool_relu_forward / _backward: the same op followed by the ReLU, the models' conv
blocks. On NumPy arrays this module's op, then minstn.ops' ReLU; on a GPU the pooling kernel
applies the ReLU to the window's maximum, and its backward passes dout only where that maximum
was > 0: the same four and six device operations as without the ReLU.

The idea: split the conv output by pooling phase. Output pixel (2i + a, 2j + b) is phase (a, b)
of pooled pixel (i, j), a, b in {0, 1}. The pool is then the element-wise maximum of four arrays,

    pooled[f, q] = max(P00[f, q], P01[f, q], P10[f, q], P11[f, q])

and if the convolution writes its output phase by phase, the four are contiguous blocks of one
(F, 4, Qs) product. To write it that way, im2col must gather, for phase (a, b) and kernel offset
(u, v), the padded input at rows 2i + a + u and columns 2j + b + v. Split the padded input into its
own four polyphase components, xs[r, s][i', j'] = xpad[2i' + r, 2j' + s] (r, s in {0, 1}): then
2i + a + u = 2(i + (a + u) // 2) + (a + u) % 2, i.e. component ((a + u) % 2, (b + v) % 2) read at
(i, j) shifted by ((a + u) // 2, (b + v) // 2). Stored flat as in conv.py ("flat shifts"), that
shift is one constant offset, so each (channel, offset, phase) row of im2col is ONE contiguous slice:

    cols[(c, u, v), (a, b), q] = xs[c, ((a+u)%2, (b+v)%2), q + ((a+u)//2) * Ws + (b+v)//2]

The grid positions i >= H2 or j >= W2 are computed and ignored, as the border columns in conv.py.

Forward
    xs    (C, 4, Qs + tail)  polyphase components of the zero-padded input, flat
    cols  (K, 4 Qs)          kh * kw * 4 contiguous slices per channel
    out   (F, 4 Qs) = w (F, K) @ cols + b;  P_k = out[:, k] (F, Qs), phase k = 2a + b
    pooled = max(max(P0, P1), max(P2, P3)), with masks right0 = P1 > P0, right1 = P3 > P2,
             lower = max(P2, P3) > max(P0, P1): a strict '>' keeps the first maximum in the order
             (0,0), (0,1), (1,0), (1,1), as maxpool2d_forward does.
Backward (dout (N, F, H2, W2))
    D     (F, Qs)      dout on the valid grid positions, 0 elsewhere
    dP    (F, 4, Qs)   D routed to the winning phase: dP2|3 = D * lower split by right1,
                       dP0|1 = D - D * lower split by right0  (assignments, no sums)
    db = sum of D,  dw = (cols @ dP^T)^T,  dcols = w^T @ dP  (K, 4 Qs)
    dxs   += each dcols slice at the place its forward slice came from (the adjoint of the
             gather: slices overlap, so this is the one `+=`), then dx = the inside of dxs
             put back in (row, column) order.
"""
from __future__ import annotations

from minstn.backend import is_cupy, xp_of
from minstn.ops import linear as plain_linear
from minstn.ops._validate import check_cache, check_dout
from minstn.ops.conv import check_conv_inputs
from minstn.ops.fast import cuda as _cuda
from minstn.ops.fast.conv import conv_backward_gpu, im2col_gpu

__all__ = ["conv2d_maxpool_forward", "conv2d_maxpool_backward", "conv2d_maxpool_relu_forward",
           "conv2d_maxpool_relu_backward"]


def _geometry(H: int, W: int, kh: int, kw: int, p: int):
    """(H2, W2, Hs, Ws) for an H x W input, a kh x kw kernel and padding p."""
    H2, W2 = (H + 2 * p - kh + 1) // 2, (W + 2 * p - kw + 1) // 2
    return H2, W2, H2 + kh // 2, W2 + kw // 2


def _parity_range(n: int, n_grid: int, r: int, p: int):
    """Grid rows i' of parity r whose padded row 2i' + r is a row of the unpadded input:
    returns (i0, i1, y0), rows i' in [i0, i1) read input rows y0, y0 + 2, ... (none when i1 <= i0)."""
    i0 = max(0, (p - r + 1) // 2)                  # first i' with 2i' + r - p >= 0
    i1 = min(n_grid, (n - 1 - r + p) // 2 + 1)     # past the last i' with 2i' + r - p <= n - 1
    return i0, max(i0, i1), 2 * i0 + r - p


def _parity_pairs(H: int, W: int, p: int, Hs: int, Ws: int):
    """[(component, grid index, input index)] for the four polyphase components (r, s): the
    (Hs, Ws) grid positions of component 2r + s and the (H, W) input pixels they hold,
    xs[2r + s][grid index] <-> x[input index]. Used both ways: gather (forward), put back (dx)."""
    pairs = []
    for r in range(2):
        i0, i1, y0 = _parity_range(H, Hs, r, p)
        for s in range(2):
            j0, j1, x0 = _parity_range(W, Ws, s, p)
            pairs.append((2 * r + s, (slice(i0, i1), slice(j0, j1)),
                          (slice(y0, y0 + 2 * (i1 - i0), 2), slice(x0, x0 + 2 * (j1 - j0), 2))))
    return pairs


def _gather_plan(kh: int, kw: int, Ws: int):
    """[(u, v, phase k, component, flat shift)] for every kernel offset and pooling phase."""
    plan = []
    for u in range(kh):
        for v in range(kw):
            for a in range(2):
                for b in range(2):
                    comp = 2 * ((a + u) % 2) + (b + v) % 2
                    plan.append((u, v, 2 * a + b, comp, ((a + u) // 2) * Ws + (b + v) // 2))
    return plan


def _polyphase(x, p: int, Hs: int, Ws: int, tail: int):
    """x (N, C, H, W) -> xs (C, 4, Qs + tail): the polyphase components of the zero-padded input."""
    xp = xp_of(x)
    N, C, H, W = x.shape
    Qs = N * Hs * Ws
    xs = xp.zeros((C, 4, Qs + tail), dtype=x.dtype)
    xt = x.transpose(1, 0, 2, 3)                                   # (C, N, H, W), a view
    for comp, (gi, gj), (yi, xj) in _parity_pairs(H, W, p, Hs, Ws):
        grid = xs[:, comp, :Qs].reshape(C, N, Hs, Ws)              # a view
        grid[:, :, gi, gj] = xt[:, :, yi, xj]
    return xs


def _check_inputs(x, w, b, padding, op: str):
    """check_conv_inputs, and a conv output of at least 2x2: (p, Ho, Wo)."""
    p, Ho, Wo = check_conv_inputs(x, w, b, padding, op=op)
    if Ho < 2 or Wo < 2:
        raise ValueError(f"{op}: the conv output {Ho}x{Wo} is smaller than the 2x2 pooling "
                         "window; use a larger input or more padding")
    return p, Ho, Wo


def conv2d_maxpool_forward(x, w, b, padding):
    """maxpool2d_forward(conv2d_forward(x, w, b, padding)) in one op.

    x (N, C, H, W), w (F, C, kh, kw), b (F,), padding 'same' | 'valid' | int p >= 0
    -> out (N, F, H2, W2) with H2 = floor(Ho / 2), W2 = floor(Wo / 2), and a cache for
    conv2d_maxpool_backward. The conv output must be at least 2x2.
    out is a view of a channel-major (F, N, Hs, Ws) buffer (like conv2d_forward's output).
    """
    p, Ho, Wo = _check_inputs(x, w, b, padding, "conv2d_maxpool_forward")
    if is_cupy(x):   # on a GPU the four-phase gather is dozens of small copies: the kernels instead
        return _gpu_forward(x, w, b, p, Ho, Wo)
    xp = xp_of(x)
    N, C, H, W = x.shape
    F, _, kh, kw = w.shape
    H2, W2, Hs, Ws = _geometry(H, W, kh, kw, p)
    Qs = N * Hs * Ws
    xs = _polyphase(x, p, Hs, Ws, tail=(kh // 2) * Ws + kw // 2)   # (C, 4, Qs + tail)
    cols = xp.empty((C, kh, kw, 4, Qs), dtype=x.dtype)
    for u, v, k, comp, shift in _gather_plan(kh, kw, Ws):          # offsets and phases, never pixels
        cols[:, u, v, k] = xs[:, comp, shift:shift + Qs]
    cols = cols.reshape(C * kh * kw, 4 * Qs)                        # (K, 4 Qs)
    out = w.reshape(F, C * kh * kw) @ cols                          # (F, 4 Qs): the one product
    out += b[:, None]
    P = out.reshape(F, 4, Qs)                                       # P[:, k]: phase k, contiguous rows
    right0 = P[:, 1] > P[:, 0]                                      # (F, Qs) bool
    right1 = P[:, 3] > P[:, 2]
    upper = xp.maximum(P[:, 0], P[:, 1])                            # (F, Qs) best of the upper row
    lower_max = xp.maximum(P[:, 2], P[:, 3])
    lower = lower_max > upper                                       # (F, Qs) bool: the lower row won
    pooled = xp.maximum(upper, lower_max, out=upper)                # (F, Qs)
    out_view = pooled.reshape(F, N, Hs, Ws)[:, :, :H2, :W2].transpose(1, 0, 2, 3)   # (N, F, H2, W2)
    cache = ("conv2d_maxpool_fast", x.shape, w, cols, p, right0, right1, lower)
    return out_view, cache


def conv2d_maxpool_backward(dout, cache, need_dx: bool = True):
    """dout (N, F, H2, W2) -> (dx (N, C, H, W) or None, dw (F, C, kh, kw), db (F,)).

    need_dx=False skips the input gradient (a model's first layer), as in conv2d_backward.
    """
    check_cache("conv2d_maxpool_backward", cache, ("conv2d_maxpool_fast", "conv2d_maxpool_gpu"),
                "minstn.ops.fast.conv2d_maxpool_forward")
    if cache[0] == "conv2d_maxpool_gpu":
        return _gpu_backward("conv2d_maxpool_backward", dout, cache, need_dx)
    _, x_shape, w, cols, p, right0, right1, lower = cache
    xp = xp_of(dout)
    N, C, H, W = x_shape
    F, _, kh, kw = w.shape
    H2, W2, Hs, Ws = _geometry(H, W, kh, kw, p)
    check_dout("conv2d_maxpool_backward", "dout", dout, (N, F, H2, W2))
    Qs = N * Hs * Ws
    D = xp.zeros((F, N, Hs, Ws), dtype=dout.dtype)                  # 0 on the ignored grid positions
    D[:, :, :H2, :W2] = dout.transpose(1, 0, 2, 3)
    D = D.reshape(F, Qs)
    dP = xp.empty((F, 4, Qs), dtype=dout.dtype)
    xp.multiply(D, lower, out=dP[:, 2])                            # the lower row's share, for now
    xp.subtract(D, dP[:, 2], out=dP[:, 0])                         # the upper row's share, for now
    xp.multiply(dP[:, 2], right1, out=dP[:, 3])                    # lower right won
    xp.subtract(dP[:, 2], dP[:, 3], out=dP[:, 2])                  # lower left won
    xp.multiply(dP[:, 0], right0, out=dP[:, 1])                    # upper right won
    xp.subtract(dP[:, 0], dP[:, 1], out=dP[:, 0])                  # upper left won
    dP = dP.reshape(F, 4 * Qs)
    db = D.sum(axis=1)                                              # (F,): each pooled gradient lands once
    dw = (cols @ dP.T).T.reshape(F, C, kh, kw)                      # (K, F) -> (F, C, kh, kw)
    if not need_dx:
        return None, dw, db
    dcols = (w.reshape(F, C * kh * kw).T @ dP).reshape(C, kh, kw, 4, Qs)
    dxs = xp.zeros((C, 4, Qs + (kh // 2) * Ws + kw // 2), dtype=dout.dtype)
    for u, v, k, comp, shift in _gather_plan(kh, kw, Ws):
        dxs[:, comp, shift:shift + Qs] += dcols[:, u, v, k]        # += : the slices overlap
    dx = xp.zeros((C, N, H, W), dtype=dout.dtype)                  # rows/columns no window reads stay 0
    for comp, (gi, gj), (yi, xj) in _parity_pairs(H, W, p, Hs, Ws):
        dx[:, :, yi, xj] = dxs[:, comp, :Qs].reshape(C, N, Hs, Ws)[:, :, gi, gj]
    return dx.transpose(1, 0, 2, 3), dw, db                         # (N, C, H, W) view


def conv2d_maxpool_relu_forward(x, w, b, padding):
    """minstn.ops.conv2d_maxpool_relu_forward: conv2d_maxpool_forward then the ReLU ->
    (out (N, F, H2, W2), cache). On CuPy arrays the pooling kernel applies the ReLU."""
    p, Ho, Wo = _check_inputs(x, w, b, padding, "conv2d_maxpool_relu_forward")
    if is_cupy(x):
        return _gpu_forward(x, w, b, p, Ho, Wo, relu=True)
    m, c_pool = conv2d_maxpool_forward(x, w, b, padding)             # (N, F, H2, W2)
    out, c_relu = plain_linear.relu_forward(m)
    return out, ("conv2d_maxpool_relu_fast", c_pool, c_relu)


def conv2d_maxpool_relu_backward(dout, cache, need_dx: bool = True):
    """dout (N, F, H2, W2) -> (dx (N, C, H, W) or None, dw (F, C, kh, kw), db (F,))."""
    check_cache("conv2d_maxpool_relu_backward", cache, ("conv2d_maxpool_relu_fast", "conv2d_maxpool_relu_gpu"),
                "minstn.ops.fast.conv2d_maxpool_relu_forward")
    if cache[0] == "conv2d_maxpool_relu_gpu":
        return _gpu_backward("conv2d_maxpool_relu_backward", dout, cache, need_dx)
    _, c_pool, c_relu = cache
    dm = plain_linear.relu_backward(dout, c_relu)
    return conv2d_maxpool_backward(dm, c_pool, need_dx=need_dx)


# ----------------------------------------------------------------------------------------- GPU


def _gpu_forward(x, w, b, p: int, Ho: int, Wo: int, relu: bool = False):
    """conv2d_maxpool_forward (relu: conv2d_maxpool_relu_forward) on CuPy arrays: im2col, the
    product, the bias + max-pool (+ ReLU) kernel; the columns and the output share one allocation."""
    xp = xp_of(x)
    N = x.shape[0]
    F, C, kh, kw = w.shape
    cols, out = _cuda.empty_parts(xp, x.dtype, (C * kh * kw, N * Ho * Wo), (N, F, Ho // 2, Wo // 2))
    im2col_gpu(x, kh, kw, p, Ho, Wo, cols)                            # (K, M)
    a = w.reshape(F, C * kh * kw) @ cols                              # (F, M): the product, no bias yet
    b = xp.ascontiguousarray(b)
    _cuda.launch("maxpool_bias_forward", a, out.size, (a, b, out, *_cuda.sizes(N, F, Ho, Wo, relu)))
    tag = "conv2d_maxpool_relu_gpu" if relu else "conv2d_maxpool_gpu"
    return out, (tag, x.shape, w, b, cols, a, p, Ho, Wo)


def _gpu_backward(op: str, dout, cache, need_dx: bool):
    """The backward of _gpu_forward: the pool's (and the ReLU's) backward kernel, then the conv's."""
    tag, x_shape, w, b, cols, a, p, Ho, Wo = cache
    xp = xp_of(dout)
    N = x_shape[0]
    F = w.shape[0]
    check_dout(op, "dout", dout, (N, F, Ho // 2, Wo // 2))
    dout = xp.ascontiguousarray(dout)                                 # (N, F, H2, W2)
    da, dx = _cuda.empty_parts(xp, dout.dtype, (F, N * Ho * Wo), x_shape if need_dx else (0,))   # every element written
    relu = tag == "conv2d_maxpool_relu_gpu"
    _cuda.launch("maxpool_bias_backward", a, da.size, (dout, a, b, da, *_cuda.sizes(N, F, Ho, Wo, relu)))
    return conv_backward_gpu(da, x_shape, w, cols, p, Ho, Wo, need_dx, dx)
