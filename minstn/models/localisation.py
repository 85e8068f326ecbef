"""The localisation net of both spatial transformers (SPEC section 4).

    4 x [conv 3x3 'same' 20 filters, ReLU, maxpool 2]:  100 -> 50 -> 25 -> 12 -> 6,
    flattened to 20 * 6 * 6 = 720 features.

Each block runs as conv -> maxpool -> ReLU, which equals conv -> ReLU -> maxpool exactly
(ReLU is monotonic; see classifier.py) with the ReLU on a quarter of the pixels, and the conv
and the max-pool are one op, ops.conv2d_maxpool_forward (the same numbers, computed in
pooling-phase order: minstn/ops/fast/convpool.py).

Shape legend:
    N   canvases
    L   side of the canvas (100), L_k = floor(L / 2^k) after k blocks

Parameters: loc.conv{1,2,3,4}.w (20, C, 3, 3) with C = 1 for the first block and 20 after,
loc.conv{1,2,3,4}.b (20,).
"""
from __future__ import annotations

import numpy as np

from minstn.models.layers import he_conv, pooled_size
from minstn.ops.switch import ops

__all__ = ["LOC_FILTERS", "LOC_BLOCKS", "loc_features", "init_localisation", "localisation_forward", "localisation_backward"]

LOC_FILTERS = 20
LOC_BLOCKS = 4


def loc_features(canvas: int) -> int:
    """Length of the flattened feature vector: 20 * floor(L / 16)^2 (720 for L = 100)."""
    return LOC_FILTERS * pooled_size(canvas, LOC_BLOCKS) ** 2


def init_localisation(rng: np.random.Generator) -> dict:
    """He-initialised localisation parameters (host float64)."""
    p = {}
    c = 1
    for k in range(1, LOC_BLOCKS + 1):
        p[f"loc.conv{k}.w"], p[f"loc.conv{k}.b"] = he_conv(rng, LOC_FILTERS, c)
        c = LOC_FILTERS
    return p


def localisation_forward(params: dict, x):
    """Canvases x (N, 1, L, L) -> (features (N, 20 * L_4 * L_4), cache)."""
    caches = []
    h = x
    for k in range(1, LOC_BLOCKS + 1):
        m, c_convpool = ops.conv2d_maxpool_forward(h, params[f"loc.conv{k}.w"], params[f"loc.conv{k}.b"], "same")  # (N, 20, L_k, L_k)
        h, c_relu = ops.relu_forward(m)
        caches.append((c_convpool, c_relu))
    feats = h.reshape(x.shape[0], -1)                                                                # (N, 720)
    return feats, (caches, h.shape)


def localisation_backward(dfeats, cache, grads: dict) -> None:
    """Backward of localisation_forward: writes loc.* gradients into `grads` (the canvas gets none)."""
    caches, h_shape = cache
    dh = dfeats.reshape(h_shape)                                                                     # (N, 20, L_4, L_4)
    for k in range(LOC_BLOCKS, 0, -1):
        c_convpool, c_relu = caches[k - 1]
        dm = ops.relu_backward(dh, c_relu)
        # the canvas is data: the first block needs no input gradient
        dh, grads[f"loc.conv{k}.w"], grads[f"loc.conv{k}.b"] = ops.conv2d_maxpool_backward(dm, c_convpool, need_dx=k > 1)
