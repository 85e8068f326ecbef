"""Fully connected layer, ReLU and (inverted) dropout; the layer followed by its ReLU as one op pair.

Shape legend
    N   batch size (rows)
    D   input features
    M   output features
    ... any shape (relu and dropout are elementwise)

Backward rule: every gradient is assigned once (`=`); nothing accumulates here.
"""
from __future__ import annotations

import numbers

from minstn.backend import is_cupy, xp_of
from minstn.ops._validate import check_cache, check_dout, check_float_array, check_same_dtype, check_same_module

__all__ = [
    "linear_forward",
    "linear_backward",
    "linear_relu_forward",
    "linear_relu_backward",
    "check_linear_inputs",
    "relu_forward",
    "relu_backward",
    "dropout_forward",
    "dropout_backward",
]


def check_linear_inputs(x, w, b, op: str = "linear_forward") -> None:
    """The checks of linear_forward (shared with linear_relu_forward and the fast versions)."""
    check_float_array(op, "x", x, 2, "(N, D)")
    check_float_array(op, "w", w, 2, "(D, M)")
    check_float_array(op, "b", b, 1, "(M,)")
    check_same_module(op, x=x, w=w, b=b)
    check_same_dtype(op, x=x, w=w, b=b)
    if x.shape[1] != w.shape[0]:
        raise ValueError(
            f"{op}: x has {x.shape[1]} features but w is (D, M) = {tuple(w.shape)}; "
            "flatten x to (N, D) with D = w.shape[0]"
        )
    if b.shape[0] != w.shape[1]:
        raise ValueError(f"{op}: b must have shape (M,) = ({w.shape[1]},) to match w, got {tuple(b.shape)}")


def linear_forward(x, w, b):
    """out = x @ w + b.

    x (N, D), w (D, M), b (M,) -> out (N, M), cache.
    """
    check_linear_inputs(x, w, b)
    out = x @ w  # (N, M)
    out += b  # fresh array: in place is safe
    return out, ("linear", x, w)


def linear_backward(dout, cache):
    """dout (N, M) -> (dx (N, D), dw (D, M), db (M,))."""
    _, x, w = check_cache("linear_backward", cache, "linear", "linear_forward")
    check_dout("linear_backward", "dout", dout, (x.shape[0], w.shape[1]))
    dx = dout @ w.T  # (N, D)
    dw = x.T @ dout  # (D, M)
    db = dout.sum(axis=0)  # (M,)
    return dx, dw, db


def linear_relu_forward(x, w, b):
    """A fully connected layer followed by its ReLU: linear_forward then relu_forward.

    x (N, D), w (D, M), b (M,) -> out (N, M) = max(x @ w + b, 0), cache. The plain composition of
    the two ops; on a GPU, minstn.ops.fast.linear_relu_forward adds the bias and applies the ReLU
    in one kernel.
    """
    check_linear_inputs(x, w, b, "linear_relu_forward")
    a, c_lin = linear_forward(x, w, b)  # (N, M)
    out, c_relu = relu_forward(a)
    return out, ("linear_relu", c_lin, c_relu)


def linear_relu_backward(dout, cache):
    """dout (N, M) -> (dx (N, D), dw (D, M), db (M,)): the two backwards in reverse."""
    _, c_lin, c_relu = check_cache("linear_relu_backward", cache, "linear_relu", "linear_relu_forward")
    da = relu_backward(dout, c_relu)
    return linear_backward(da, c_lin)


def relu_forward(x):
    """out = max(x, 0), elementwise; x any shape, float."""
    check_float_array("relu_forward", "x", x)
    xp = xp_of(x)
    out = xp.maximum(x, 0)
    return out, ("relu", out)  # the output is enough: the gradient passes where out > 0


def relu_backward(dout, cache):
    """dx = dout where x > 0, else 0 (the kink at 0 gets 0)."""
    _, out = check_cache("relu_backward", cache, "relu", "relu_forward")
    check_dout("relu_backward", "dout", dout, out.shape)
    xp = xp_of(dout)
    return xp.where(out > 0, dout, xp.zeros((), dtype=dout.dtype))


def dropout_forward(x, p, rng):
    """Inverted dropout: zero each element with probability p, scale the survivors by 1/(1-p).

    x any shape, float; p in [0, 1); rng a NumPy Generator (np.random.default_rng(seed)) or,
    for CuPy arrays, a cupy.random Generator (a NumPy one also works; its mask is copied over).
    The expected output equals x, so nothing changes at evaluation time: call with p = 0
    (the identity, rng unused) to evaluate. The mask is kept in the cache.
    """
    op = "dropout_forward"
    check_float_array(op, "x", x)
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"{op}: p must be a float in [0, 1), got {type(p).__name__} {p!r}")
    if not (0.0 <= float(p) < 1.0):
        raise ValueError(f"{op}: p must be in [0, 1) (the probability of dropping), got {p}")
    if p == 0:
        return x, ("dropout", None)
    if not hasattr(rng, "random"):
        raise TypeError(
            f"{op}: rng must be a random Generator such as np.random.default_rng(0), got {type(rng).__name__}"
        )
    xp = xp_of(x)
    u = rng.random(x.shape, dtype=x.dtype)  # uniform [0, 1), same shape as x
    if is_cupy(x) and not is_cupy(u):
        u = xp.asarray(u)
    mask = (u >= p).astype(x.dtype)  # 1 keeps, 0 drops; P(keep) = 1 - p
    mask *= 1.0 / (1.0 - p)  # inverted scaling: E[mask] = 1
    return x * mask, ("dropout", mask)


def dropout_backward(dout, cache):
    """dx = dout * mask (the identity when p was 0)."""
    _, mask = check_cache("dropout_backward", cache, "dropout", "dropout_forward")
    if mask is None:
        return dout
    check_dout("dropout_backward", "dout", dout, mask.shape)
    return dout * mask
