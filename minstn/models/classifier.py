"""The classifier CNN shared by all three models (the paper's section IV: three conv layers, "96 filters in total").

    [conv 3x3 'same' 32, ReLU, maxpool 2] x 2, conv 3x3 'same' 32, ReLU, dropout p,
    FC 400 + ReLU, FC 400 -> 10 * heads

Each block runs as conv -> maxpool -> ReLU: ReLU is monotonic, so max(relu(a), relu(b)) =
relu(max(a, b)) exactly, in value and in gradient (the same winner, or a zero gradient either
way), and the ReLU then touches a quarter of the pixels. The conv, the max-pool and the ReLU of
a block are one op, ops.conv2d_maxpool_relu_forward: the same numbers as the ops in a row, the
conv and the pool computed in pooling-phase order, which turns the pool into four contiguous
arrays (minstn/ops/fast/convpool.py); the third conv and its ReLU are ops.conv2d_relu_forward,
and the FC 400 layer and its ReLU ops.linear_relu_forward. On a GPU each ReLU is applied by the
kernel that adds the layer's bias.

Shape legend:
    B        images entering the classifier (N canvases, or N*T glimpses for the LSTM-STN)
    S        side of the (square) input: 100 (CNN), or floor(100 / d) for a glimpse
    S2       side after two max-pools: floor(floor(S / 2) / 2)   (100 -> 25, 50 -> 12, 33 -> 8, 25 -> 6)
    K        10 * heads logits (heads = 4 for the CNN and FFN-STN, 1 for the LSTM-STN)

Four separate 10-way heads (one per digit position) are stored as one FC 400 -> 40 whose
output is reshaped to (B, 4, 10): column block 10k .. 10k+9 is head k. This is exactly four
independent linear layers side by side, computed in one matrix product.

Parameters (names in the model's dict):
    cls.conv1.w (32, 1, 3, 3)   cls.conv1.b (32,)
    cls.conv2.w (32, 32, 3, 3)  cls.conv2.b (32,)
    cls.conv3.w (32, 32, 3, 3)  cls.conv3.b (32,)
    cls.fc.w    (32*S2*S2, 400) cls.fc.b    (400,)
    cls.head.w  (400, K)        cls.head.b  (K,)
"""
from __future__ import annotations

import numpy as np

from minstn.models.layers import ModelError, he_conv, he_linear, pooled_size
from minstn.ops.switch import ops

__all__ = ["FILTERS", "HIDDEN", "init_classifier", "classifier_forward", "classifier_backward"]

FILTERS = 32   # filters of each of the three conv layers
HIDDEN = 400   # units of the fully connected layer


def init_classifier(rng: np.random.Generator, side: int, heads: int, head_init: str = "he", filters: int = FILTERS) -> dict:
    """He-initialised classifier parameters (host float64) for S x S inputs and `heads` 10-way heads.

    head_init 'zero' sets the last layer's weights (cls.head.w) to 0 instead (the random draw is
    still made, so every other parameter is the same as with 'he'): the model then starts at
    exactly uniform predictions, loss ln 10, instead of He-scaled logits. See docs/models.md.
    """
    s2 = pooled_size(side, 2)
    if s2 < 1:
        raise ModelError(f"the classifier needs inputs of at least 4x4 pixels, got {side}x{side}")
    p = {}
    p["cls.conv1.w"], p["cls.conv1.b"] = he_conv(rng, filters, 1)
    p["cls.conv2.w"], p["cls.conv2.b"] = he_conv(rng, filters, filters)
    p["cls.conv3.w"], p["cls.conv3.b"] = he_conv(rng, filters, filters)
    p["cls.fc.w"], p["cls.fc.b"] = he_linear(rng, filters * s2 * s2, HIDDEN)
    p["cls.head.w"], p["cls.head.b"] = he_linear(rng, HIDDEN, 10 * heads)
    if head_init == "zero":
        p["cls.head.w"] = np.zeros_like(p["cls.head.w"])
    elif head_init != "he":
        raise ModelError(f"head_init must be 'he' or 'zero', got {head_init!r}")
    return p


def classifier_forward(params: dict, x, dropout: float, train: bool, rng):
    """Classify images x (B, 1, S, S) -> (logits (B, K), cache).

    Dropout (inverted, probability `dropout`) acts after the third conv's ReLU when `train`
    is true; it then needs `rng`, a np.random.Generator.
    """
    P = params
    r1, c_block1 = ops.conv2d_maxpool_relu_forward(x, P["cls.conv1.w"], P["cls.conv1.b"], "same")    # (B, 32, S/2, S/2)
    r2, c_block2 = ops.conv2d_maxpool_relu_forward(r1, P["cls.conv2.w"], P["cls.conv2.b"], "same")   # (B, 32, S2, S2)
    r3, c_conv3 = ops.conv2d_relu_forward(r2, P["cls.conv3.w"], P["cls.conv3.b"], "same")            # (B, 32, S2, S2)
    use_dropout = train and dropout > 0
    if use_dropout:
        if rng is None:
            raise ModelError(
                f"training with dropout {dropout} needs a random generator: pass rng=np.random.default_rng(seed) "
                "(or call with train=False for evaluation)"
            )
        d3, c_drop = ops.dropout_forward(r3, dropout, rng)
    else:
        d3, c_drop = r3, None
    B = x.shape[0]
    flat = d3.reshape(B, -1)                                                                   # (B, 32*S2*S2)
    rf, c_fc = ops.linear_relu_forward(flat, P["cls.fc.w"], P["cls.fc.b"])                     # (B, 400)
    out, c_head = ops.linear_forward(rf, P["cls.head.w"], P["cls.head.b"])                     # (B, K)
    cache = (c_block1, c_block2, c_conv3, c_drop, d3.shape, c_fc, c_head)
    return out, cache


def classifier_backward(dout, cache, grads: dict, need_dx: bool = True):
    """Backward of classifier_forward: writes the parameter gradients into `grads`.

    dout (B, K). Returns dx (B, 1, S, S) when need_dx, else None (the CNN and the models'
    first layers have nothing upstream to feed). Mirrors the forward in reverse.
    """
    (c_block1, c_block2, c_conv3, c_drop, d3_shape, c_fc, c_head) = cache
    drf, grads["cls.head.w"], grads["cls.head.b"] = ops.linear_backward(dout, c_head)  # (B, 400)
    dflat, grads["cls.fc.w"], grads["cls.fc.b"] = ops.linear_relu_backward(drf, c_fc)  # (B, 32*S2*S2)
    dd3 = dflat.reshape(d3_shape)                                                      # (B, 32, S2, S2)
    dr3 = ops.dropout_backward(dd3, c_drop) if c_drop is not None else dd3
    dr2, grads["cls.conv3.w"], grads["cls.conv3.b"] = ops.conv2d_relu_backward(dr3, c_conv3)
    dr1, grads["cls.conv2.w"], grads["cls.conv2.b"] = ops.conv2d_maxpool_relu_backward(dr2, c_block2)
    dx, grads["cls.conv1.w"], grads["cls.conv1.b"] = ops.conv2d_maxpool_relu_backward(dr1, c_block1, need_dx=need_dx)
    return dx
