"""Every backward checks its cache: a cache from another op, or something that is not a cache at
all, is a one-line TypeError that names the forward to take it from (minstn.ops._validate.check_cache)."""
from __future__ import annotations

import numpy as np
import pytest

import minstn.ops as ops
import minstn.ops.fast as fast


def _caches(rng):
    """A valid (backward, dout, cache) per op pair, and a cache of another op to swap in."""
    x = rng.standard_normal((2, 3, 6, 6))
    w, b = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    out = {}
    y, c = ops.conv2d_forward(x, w, b, "same")
    out["conv2d"] = (lambda d, c: ops.conv2d_backward(d, c), y, c, "conv2d_forward")
    y, c = fast.conv2d_forward(x, w, b, "same")
    out["conv2d fast"] = (lambda d, c: fast.conv2d_backward(d, c), y, c, "minstn.ops.fast.conv2d_forward")
    y, c = ops.conv2d_maxpool_forward(x, w, b, "same")
    out["conv2d_maxpool"] = (lambda d, c: ops.conv2d_maxpool_backward(d, c), y, c, "conv2d_maxpool_forward")
    y, c = fast.conv2d_maxpool_forward(x, w, b, "same")
    out["conv2d_maxpool fast"] = (lambda d, c: fast.conv2d_maxpool_backward(d, c), y, c,
                                  "minstn.ops.fast.conv2d_maxpool_forward")
    y, c = ops.maxpool2d_forward(x)
    out["maxpool2d"] = (ops.maxpool2d_backward, y, c, "maxpool2d_forward")
    y, c = ops.avgpool2d_forward(x, 2)
    out["avgpool2d"] = (ops.avgpool2d_backward, y, c, "avgpool2d_forward")
    y, c = ops.linear_forward(x.reshape(2, -1), rng.standard_normal((108, 5)), rng.standard_normal(5))
    out["linear"] = (ops.linear_backward, y, c, "linear_forward")
    y, c = ops.relu_forward(x)
    out["relu"] = (ops.relu_backward, y, c, "relu_forward")
    y, c = ops.dropout_forward(x, 0.5, rng)
    out["dropout"] = (ops.dropout_backward, y, c, "dropout_forward")
    H = 4
    h, cc, c = ops.lstm_cell_forward(rng.standard_normal((2, 5)), np.zeros((2, H)), np.zeros((2, H)),
                                     rng.standard_normal((5, 4 * H)), rng.standard_normal((H, 4 * H)), np.zeros(4 * H))
    out["lstm_cell"] = (lambda d, c: ops.lstm_cell_backward(d, np.zeros_like(d), c), h, c, "lstm_cell_forward")
    hs, c = ops.lstm_forward(rng.standard_normal((3, 2, 5)), np.zeros((2, H)), np.zeros((2, H)),
                             rng.standard_normal((5, 4 * H)), rng.standard_normal((H, 4 * H)), np.zeros(4 * H))
    out["lstm"] = (ops.lstm_backward, hs, c, "lstm_forward")
    theta = np.tile(np.array([[0.8, 0.1, 0.05], [0.0, 0.9, -0.1]]), (2, 1, 1))
    g, c = ops.affine_grid_forward(theta, (5, 5))
    out["affine_grid"] = (ops.affine_grid_backward, g, c, "affine_grid_forward")
    V, c = ops.bilinear_sample_forward(x, g)
    out["bilinear_sample"] = (lambda d, c: ops.bilinear_sample_backward(d, c), V, c, "bilinear_sample_forward")
    V, c = fast.bilinear_sample_forward(x, g)
    out["bilinear_sample fast"] = (lambda d, c: fast.bilinear_sample_backward(d, c), V, c,
                                   "minstn.ops.fast.bilinear_sample_forward")
    g8, c = ops.projective_grid_forward(np.tile(np.array([0.8, 0.1, 0.05, 0.0, 0.9, -0.1, 0.05, -0.02]), (2, 1)), (5, 5))
    out["projective_grid"] = (ops.projective_grid_backward, g8, c, "projective_grid_forward")
    xr, h0 = rng.standard_normal((2, 5)), np.zeros((2, H))
    h, c = ops.gru_cell_forward(xr, h0, rng.standard_normal((5, 3 * H)), rng.standard_normal((H, 3 * H)),
                                np.zeros(3 * H), np.zeros(3 * H))
    out["gru_cell"] = (ops.gru_cell_backward, h, c, "gru_cell_forward")
    h, c = ops.rnn_cell_forward(xr, h0, rng.standard_normal((5, H)), rng.standard_normal((H, H)), np.zeros(H))
    out["rnn_cell"] = (ops.rnn_cell_backward, h, c, "rnn_cell_forward")
    return out


def test_every_backward_accepts_its_own_cache_and_refuses_others():
    cases = _caches(np.random.default_rng(0))
    names = list(cases)
    for i, name in enumerate(names):
        backward, y, cache, forward = cases[name]
        backward(np.ones_like(y), cache)                                   # its own cache works
        other = cases[names[(i + 1) % len(names)]][2]                        # the next op's cache
        for bogus in (other, None, [cache], ("nonsense",), "cache"):
            with pytest.raises(TypeError, match=rf"cache is not from {forward} .*pass the cache that {forward} returned"):
                backward(np.ones_like(y), bogus)
