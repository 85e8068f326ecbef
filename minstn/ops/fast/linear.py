"""The fast ReLU backward and dropout forward: minstn.ops.linear's on NumPy arrays, one CUDA
kernel each on CuPy arrays (kernels/linear.cu), where the array code takes three and four
launches. Same bits as the plain ops (tested). relu_forward, dropout_backward and the linear
layer are one or two CuPy calls already: the models use the plain ones. A linear layer followed
by its ReLU (linear_relu) is one product and one kernel forward (three CuPy calls as two ops),
an allocation, a kernel and two products backward (five device operations as two ops): the
bias, the ReLU, its mask and the bias's gradient are the kernels'.

Shape legend: x, dout, out, mask any shape (the ops are elementwise); linear_relu: x (N, D),
w (D, M), b (M,), out (N, M).

    relu_backward(dout, cache)         dx = dout where out > 0, else 0
    dropout_forward(x, p, rng)         u = rng.random(x.shape); mask = (u >= p) / (1 - p);
                                       out = x * mask  (the cache is the plain op's: (tag, mask))
    linear_relu_forward(x, w, b)       out = x @ w, then the kernel: out = max(out + b, 0), in place
    linear_relu_backward(dout, cache)  the kernel: da = dout where out > 0, db = da summed over the
                                       rows; then dx = da @ w^T, dw = x^T @ da

The kernels read and write C-contiguous arrays; a strided input is copied first (the GPU path's
activations are all C-contiguous, so in the models nothing is).
"""
from __future__ import annotations

import numbers

from minstn.backend import is_cupy, xp_of
from minstn.ops import linear as plain
from minstn.ops._validate import check_cache, check_dout, check_float_array
from minstn.ops.fast import cuda as _cuda

__all__ = ["relu_backward", "dropout_forward", "linear_relu_forward", "linear_relu_backward"]


def relu_backward(dout, cache):
    """minstn.ops.relu_backward; on CuPy arrays one kernel launch."""
    _, out = check_cache("relu_backward", cache, "relu", "relu_forward")
    if not is_cupy(dout):
        return plain.relu_backward(dout, cache)
    check_dout("relu_backward", "dout", dout, out.shape)
    xp = xp_of(dout)
    dout, out = xp.ascontiguousarray(dout), xp.ascontiguousarray(out)
    dx = xp.empty(out.shape, dtype=dout.dtype)
    _cuda.launch("relu_backward", dout, dx.size, (dout, out, dx, *_cuda.sizes(dx.size)))
    return dx


def dropout_forward(x, p, rng):
    """minstn.ops.dropout_forward; on CuPy arrays the uniform draw, then one kernel launch."""
    dropping = (isinstance(p, numbers.Real) and not isinstance(p, bool) and 0.0 < float(p) < 1.0
                and hasattr(rng, "random"))
    if not (is_cupy(x) and dropping):
        return plain.dropout_forward(x, p, rng)            # NumPy arrays, p = 0, and the plain op's errors
    check_float_array("dropout_forward", "x", x)
    xp = xp_of(x)
    u = rng.random(x.shape, dtype=x.dtype)                 # uniform [0, 1), as the plain op draws it
    if not is_cupy(u):                                     # a NumPy generator: its draw copied over
        u = xp.asarray(u)
    x = xp.ascontiguousarray(x)
    both = xp.empty((2,) + tuple(x.shape), dtype=x.dtype)  # out and mask, one allocation
    out, mask = both[0], both[1]
    T = x.dtype.type
    _cuda.launch("dropout_forward", x, x.size,
                 (x, u, out, mask, *_cuda.sizes(x.size), T(p), T(1.0 / (1.0 - float(p)))))
    return out, ("dropout", mask)


def linear_relu_forward(x, w, b):
    """minstn.ops.linear_relu_forward -> (out (N, M), cache); on CuPy arrays one product and one kernel."""
    if not is_cupy(x):
        return plain.linear_relu_forward(x, w, b)
    plain.check_linear_inputs(x, w, b, "linear_relu_forward")
    xp = xp_of(x)
    out = x @ w                                            # (N, M), a fresh C-contiguous array
    b = xp.ascontiguousarray(b)
    _cuda.launch("linear_relu_forward", out, out.size, (out, b, *_cuda.sizes(*out.shape)))
    return out, ("linear_relu_gpu", x, w, out)


def linear_relu_backward(dout, cache):
    """minstn.ops.linear_relu_backward -> (dx (N, D), dw (D, M), db (M,)); for a CuPy forward's cache
    an allocation, one kernel (one thread per column, summing db) and two products."""
    check_cache("linear_relu_backward", cache, ("linear_relu", "linear_relu_gpu"), "linear_relu_forward")
    if cache[0] == "linear_relu":
        return plain.linear_relu_backward(dout, cache)
    _, x, w, out = cache
    check_dout("linear_relu_backward", "dout", dout, out.shape)
    xp = xp_of(dout)
    N, M = out.shape
    dout = xp.ascontiguousarray(dout)
    both = xp.empty(N * M + M, dtype=dout.dtype)           # da and db, one allocation
    da, db = both[:N * M].reshape(N, M), both[N * M:]
    _cuda.launch("linear_relu_backward", dout, M, (dout, out, da, db, *_cuda.sizes(N, M)))
    return da @ w.T, x.T @ da, db                          # dx (N, D), dw (D, M), db (M,)
