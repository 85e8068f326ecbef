"""The fast d x d average pool: minstn.ops.pool's avgpool2d on NumPy arrays, one CUDA kernel
each way on CuPy arrays (kernels/conv.cu). Same numbers as the plain op: the kernel adds a
window's pixels in the array code's order and scales by the same rounded 1 / d^2 (tested).

Shape legend
    N, C     batch, channels
    H, W     input height, width
    d        window = stride
    Hd, Wd   output: floor(H / d), floor(W / d)

    avgpool2d_forward(x, d)  x (N, C, H, W) -> out (N, C, Hd, Wd): one thread per output pixel
    avgpool2d_backward(dout, cache) -> dx (N, C, H, W): one thread per input pixel, dout / d^2
                                       of its window (0 in the floored border)

The array code takes d*d + 1 passes forward (a copy, d*d - 1 adds, a scale) and three backward;
each kernel is one launch. The cache is the plain op's, so either backward takes either forward's.
d = 1 is the identity (no kernel, no copy), as in the plain op.
"""
from __future__ import annotations

from minstn.backend import is_cupy, xp_of
from minstn.ops import pool as plain
from minstn.ops._validate import check_cache, check_dout
from minstn.ops.fast import cuda as _cuda

__all__ = ["avgpool2d_forward", "avgpool2d_backward"]


def avgpool2d_forward(x, d):
    """minstn.ops.avgpool2d_forward; on CuPy arrays one kernel launch."""
    if not is_cupy(x):
        return plain.avgpool2d_forward(x, d)
    N, C, H, W, d = plain.check_avgpool_inputs(x, d)                   # the plain op's checks, then the kernel
    if d == 1:
        return plain.avgpool2d_forward(x, d)
    xp = xp_of(x)
    x = xp.ascontiguousarray(x)
    out = xp.empty((N, C, H // d, W // d), dtype=x.dtype)             # every element written
    _cuda.launch("avgpool_forward", x, out.size, (x, out, *_cuda.sizes(N * C, H, W, d)))
    return out, ("avgpool2d", x.shape, d)


def avgpool2d_backward(dout, cache):
    """minstn.ops.avgpool2d_backward; on CuPy arrays one kernel launch."""
    _, x_shape, d = check_cache("avgpool2d_backward", cache, "avgpool2d", "avgpool2d_forward")
    if not is_cupy(dout) or d == 1:
        return plain.avgpool2d_backward(dout, cache)
    N, C, H, W = x_shape
    check_dout("avgpool2d_backward", "dout", dout, (N, C, H // d, W // d))
    xp = xp_of(dout)
    dout = xp.ascontiguousarray(dout)
    dx = xp.empty((N, C, H, W), dtype=dout.dtype)                     # every element written (=)
    _cuda.launch("avgpool_backward", dout, dx.size, (dout, dx, *_cuda.sizes(N * C, H, W, d)))
    return dx
