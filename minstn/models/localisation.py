"""The localisation net of both spatial transformers (the paper's section IV; docs/models.md).

    4 x [conv 3x3 'same' 20 filters, ReLU, maxpool 2]:  100 -> 50 -> 25 -> 12 -> 6,
    flattened to 20 * 6 * 6 = 720 features.

Each block runs as conv -> maxpool -> ReLU, which equals conv -> ReLU -> maxpool exactly
(ReLU is monotonic; see classifier.py) with the ReLU on a quarter of the pixels, and the three
are one op, ops.conv2d_maxpool_relu_forward (the same numbers, the conv and the pool computed in
pooling-phase order: minstn/ops/fast/convpool.py).

Shape legend:
    N   canvases
    L   side of the canvas (100), L_k = floor(L / 2^k) after k blocks

Parameters: loc.conv{1,2,3,4}.w (20, C, 3, 3) with C = 1 for the first block and 20 after,
loc.conv{1,2,3,4}.b (20,).

Tied (the tied LSTM-STN, minstn.models.stn): the same four blocks with F = cls_filters filters,
the first three reading the classifier's conv weights cls.conv{1,2,3} and the fourth its own
loc.conv4 (F, F, 3, 3): `names` says which parameters each block uses (TIED_NAMES).
"""
from __future__ import annotations

import numpy as np

from minstn.models.layers import he_conv, pooled_size
from minstn.ops.switch import ops

__all__ = ["LOC_FILTERS", "LOC_BLOCKS", "NAMES", "TIED_NAMES", "loc_features", "init_localisation",
           "localisation_forward", "localisation_backward"]

LOC_FILTERS = 20
LOC_BLOCKS = 4
#: the parameters (w and b) of each block: the loc net's own, or (tied) the classifier's first three convs
NAMES = ("loc.conv1", "loc.conv2", "loc.conv3", "loc.conv4")
TIED_NAMES = ("cls.conv1", "cls.conv2", "cls.conv3", "loc.conv4")


def loc_features(canvas: int, filters: int = LOC_FILTERS) -> int:
    """Length of the flattened feature vector: filters * floor(L / 16)^2 (720 for L = 100 and 20 filters)."""
    return filters * pooled_size(canvas, LOC_BLOCKS) ** 2


def init_localisation(rng: np.random.Generator) -> dict:
    """He-initialised localisation parameters (host float64)."""
    p = {}
    c = 1
    for k in range(1, LOC_BLOCKS + 1):
        p[f"loc.conv{k}.w"], p[f"loc.conv{k}.b"] = he_conv(rng, LOC_FILTERS, c)
        c = LOC_FILTERS
    return p


def localisation_forward(params: dict, x, names=NAMES):
    """Canvases x (N, 1, L, L) -> (features (N, F * L_4 * L_4), cache); block k uses the
    parameters names[k-1] + '.w' and '.b' (F = 20 untied)."""
    caches = []
    h = x
    for k in range(1, LOC_BLOCKS + 1):
        w, b = params[f"{names[k - 1]}.w"], params[f"{names[k - 1]}.b"]
        h, c_block = ops.conv2d_maxpool_relu_forward(h, w, b, "same")                                 # (N, F, L_k, L_k)
        caches.append(c_block)
    feats = h.reshape(x.shape[0], -1)                                                                # (N, 720)
    return feats, (caches, h.shape)


def localisation_backward(dfeats, cache, grads: dict, names=NAMES) -> None:
    """Backward of localisation_forward: writes the gradients of the blocks' parameters (names) into
    `grads` (the canvas gets none). With shared (tied) weights pass a fresh dict and add it to the
    classifier's part: this function assigns, it never accumulates."""
    caches, h_shape = cache
    dh = dfeats.reshape(h_shape)                                                                     # (N, F, L_4, L_4)
    for k in range(LOC_BLOCKS, 0, -1):
        # the canvas is data: the first block needs no input gradient
        dh, grads[f"{names[k - 1]}.w"], grads[f"{names[k - 1]}.b"] = ops.conv2d_maxpool_relu_backward(
            dh, caches[k - 1], need_dx=k > 1)
