"""Small building blocks of the single-digit models (minstn.models.digits, minstn.models.tstn):
a conv block, a fully connected layer, the bounded perspective of a projective transform, the
regressor's initial values, and the widths that give two models the same parameter budget.

Shape legend:
    N   images
    C   input channels, F filters (3x3 kernels, 'same' padding, stride 1)
    L   input side, L // 2 after a block that pools
    D   inputs of a fully connected layer, M its outputs
    K   transform parameters: 6 (affine) or 8 (projective)

Each block is a forward that returns (out, cache) and a backward that takes (dout, cache), writes
its parameters' gradients into a dict with `=` (never `+=`; a shared weight's paths are added by
the model that shares it) and returns the input gradient. Parameters are looked up by name in the
model's flat dict: conv_block_forward(params, 'cls.conv1', x) uses 'cls.conv1.w' and 'cls.conv1.b'.
"""
from __future__ import annotations

import math

import numpy as np

from minstn.backend import xp_of
from minstn.models.layers import ModelError
from minstn.ops.switch import ops

__all__ = [
    "PERSPECTIVE_BOUND",
    "conv_block_forward",
    "conv_block_backward",
    "dense_forward",
    "dense_backward",
    "perspective_bound_forward",
    "perspective_bound_backward",
    "regressor_init",
    "fit_square",
    "fit_linear",
]

#: the projective transform's perspective terms g, h are PERSPECTIVE_BOUND * tanh(raw): with
#: |g|, |h| < 0.45 the grid's denominator g x_t + h y_t + 1 stays above 1 - 2 * 0.45 = 0.1 on
#: [-1, 1]^2, far from the horizon (and from minstn.ops.projective's min_denominator 1e-3), so the
#: projective grid never raises and never tears during training
PERSPECTIVE_BOUND = 0.45


def conv_block_forward(params: dict, name: str, x, pool: bool = True):
    """conv 3x3 'same' (name.w (F, C, 3, 3), name.b (F,)), then 2x2 max-pool when `pool`, then ReLU.

    x (N, C, L, L) -> (out (N, F, L // 2, L // 2) with pool, else (N, F, L, L); cache).
    conv -> pool -> ReLU equals conv -> ReLU -> pool exactly (ReLU is monotonic; minstn.models.classifier)
    and the three run as one op, ops.conv2d_maxpool_relu_forward (without the pool, ops.conv2d_relu_forward).
    """
    w, b = params[f"{name}.w"], params[f"{name}.b"]
    if pool:
        out, c_block = ops.conv2d_maxpool_relu_forward(x, w, b, "same")     # (N, F, L/2, L/2)
    else:
        out, c_block = ops.conv2d_relu_forward(x, w, b, "same")             # (N, F, L, L)
    return out, (name, pool, c_block)


def conv_block_backward(dout, cache, grads: dict, need_dx: bool = True):
    """Backward of conv_block_forward: writes grads[name.w], grads[name.b]; returns dx (None unless need_dx)."""
    name, pool, c_block = cache
    backward = ops.conv2d_maxpool_relu_backward if pool else ops.conv2d_relu_backward
    dx, grads[f"{name}.w"], grads[f"{name}.b"] = backward(dout, c_block, need_dx=need_dx)
    return dx


def dense_forward(params: dict, name: str, x, relu: bool = True):
    """Fully connected layer x (N, D) @ name.w (D, M) + name.b (M,), then ReLU when `relu` -> ((N, M), cache).
    With the ReLU the two are one op, ops.linear_relu_forward."""
    forward = ops.linear_relu_forward if relu else ops.linear_forward
    out, c_lin = forward(x, params[f"{name}.w"], params[f"{name}.b"])           # (N, M)
    return out, (name, relu, c_lin)


def dense_backward(dout, cache, grads: dict):
    """Backward of dense_forward: writes grads[name.w], grads[name.b]; returns dx (N, D)."""
    name, relu, c_lin = cache
    backward = ops.linear_relu_backward if relu else ops.linear_backward
    dx, grads[f"{name}.w"], grads[f"{name}.b"] = backward(dout, c_lin)
    return dx


def perspective_bound_forward(raw):
    """The regressor's 8 outputs raw (N, 8) -> the homography theta (N, 8) = [a, b, c, d, e, f, g, h]
    of minstn.ops.projective, with a..f = raw[:, :6] and (g, h) = PERSPECTIVE_BOUND * tanh(raw[:, 6:])."""
    xp = xp_of(raw)
    t = xp.tanh(raw[:, 6:])                                                          # (N, 2)
    theta = xp.concatenate([raw[:, :6], PERSPECTIVE_BOUND * t], axis=1)              # (N, 8), a new array
    return theta, t


def perspective_bound_backward(dtheta, cache):
    """dtheta (N, 8) -> draw (N, 8): the first six pass through; d tanh = 1 - tanh^2."""
    t = cache                                                                        # (N, 2)
    xp = xp_of(dtheta)
    return xp.concatenate([dtheta[:, :6], dtheta[:, 6:] * (PERSPECTIVE_BOUND * (1.0 - t * t))], axis=1)


def regressor_init(rng: np.random.Generator, d_in: int, k: int, std: float, scale: float) -> dict:
    """reg.w (d_in, k) ~ N(0, std) (zeros when std = 0), reg.b = the centred zoom by 1/scale:
    [s, 0, 0, 0, s, 0] (k = 6) or [s, 0, 0, 0, s, 0, 0, 0] (k = 8: no perspective, tanh(0) = 0)."""
    w = rng.normal(0.0, std, size=(d_in, k)) if std > 0 else np.zeros((d_in, k))
    b = np.zeros(k)
    b[0] = b[4] = scale
    return {"reg.w": w, "reg.b": b}


def fit_square(budget: int, a: int, c: int, what: str) -> int:
    """The integer H >= 1 for which H^2 + a H + c is nearest to `budget` (an MLP with two hidden
    layers of H units has H^2 + a H + c parameters). ModelError if even H = 1 is over budget."""
    disc = a * a - 4 * (c - budget)
    if disc < 0 or 1 + a + c > budget:
        raise ModelError(f"{what}: the parameter budget {budget:,} is too small for one hidden unit")
    root = (-a + math.sqrt(disc)) / 2
    best = min((max(1, math.floor(root)), max(1, math.ceil(root))), key=lambda h: abs(h * h + a * h + c - budget))
    return int(best)


def fit_linear(budget: int, per_unit: int, fixed: int, what: str) -> int:
    """The integer F >= 1 for which per_unit F + fixed is nearest to `budget`."""
    f = round((budget - fixed) / per_unit)
    if f < 1:
        raise ModelError(f"{what}: the parameter budget {budget:,} is too small for one filter")
    return int(f)
