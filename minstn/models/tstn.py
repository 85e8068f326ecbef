"""The Tied Spatial Transformer Network (Cirstea and Likforman-Sulem, architecture 1,
their Table 1), its untied STN and its classification CNN, on single digits (cluttered MNIST
60x60 in the paper).

    'tstn'       tied=True (default): the localisation CNN and the classification CNN share their
                 three conv layers; tied=False: the paper's "untied STN", the same layers with the
                 localisation CNN's convs its own (loc.conv1..3)
    'tstn-cnn'   the classification CNN alone ("classification CNN only")

Layers (as the paper's Table 1; every conv 3x3 'same', stride 1, with ReLU; every pool 2x2,
stride 2; conv -> pool -> ReLU is computed, which equals its conv -> ReLU -> pool exactly):

    classification CNN                              localisation CNN
    conv1 32 + pool     (N, 32, S_1, S_1)           conv1 32 + pool     (N, 32, S_1, S_1)
    conv2 64 + pool     (N, 64, S_2, S_2)           conv2 64 + pool     (N, 64, S_2, S_2)
    conv3 128 + pool    (N, 128, S_3, S_3)          conv3 128, no pool  (N, 128, S_2, S_2)
    flatten, cls.fc 625 + ReLU, dropout 0.5         flatten, loc.fc 200 + ReLU (no dropout)
    cls.head 10 P (softmax)                         reg 6: the affine transform (weights 0, bias
                                                    the identity, "initialized to the identity")

The localisation CNN drops the last pool "to keep more of the spatial information"; pooling has
no weights, so the tied convs are the same three layers in both paths. The localisation CNN reads
the image; the classification CNN reads the transformed image (same size: the paper's d = 1; the
`downsample` argument is accepted and ignored, and the model reports 1).

Tied weights: cls.conv{1,2,3}.w and .b are used by both paths, so their gradient is the sum of
the classification path's (the classifier's backward, which runs first and assigns them) and the
localisation path's (added afterwards); tests/test_models_tasks.py checks that it equals the sum
of the two convs' gradients in an untied model holding the same weights. They are in the 'cls'
group (the classifier's learning rate); loc.fc and reg are the 'loc' group, as are the untied
model's loc.conv*.

Shape legend: N images, S image side (60 in the paper), S_k = floor(S / 2^k) (60: 30, 15, 7),
P digits per image (1), K transform parameters (6; 8 with transform='projective', an extension).

Parameter counts (P = 1, affine; pinned by tests/test_models_tasks.py):

    S    tstn (tied)   tstn, tied=False   tstn-cnn
    28   2,075,363     2,168,035          819,557
    60   9,780,963     9,873,635          4,019,557

(the untied STN has the three convs twice: 92,672 more.)

Most of them sit in the localisation CNN's FC layer (128 S_2^2 x 200: 5,760,200 at S = 60), because
its conv3 keeps the 15x15 map.
"""
from __future__ import annotations

from minstn.models.blocks import conv_block_backward, conv_block_forward, dense_backward, dense_forward, regressor_init
from minstn.models.digits import DigitModel, DigitSTN
from minstn.models.layers import he_conv, he_linear, pooled_size

__all__ = ["TSTN", "TSTNCNN", "CONV_FILTERS", "CLS_HIDDEN", "LOC_HIDDEN"]

CONV_FILTERS = (32, 64, 128)   # conv1, conv2, conv3 of both CNNs
CLS_HIDDEN = 625               # the classification CNN's FC layer
LOC_HIDDEN = 200               # the localisation CNN's FC layer
CLS_NAMES = ("cls.conv1", "cls.conv2", "cls.conv3")
LOC_NAMES = ("loc.conv1", "loc.conv2", "loc.conv3")


def _init_convs(rng, names) -> dict:
    """He-initialised 3x3 convs 1 -> 32 -> 64 -> 128 named names[0..2]."""
    p, c = {}, 1
    for name, f in zip(names, CONV_FILTERS):
        p[f"{name}.w"], p[f"{name}.b"] = he_conv(rng, f, c)
        c = f
    return p


class _TSTNClassifier:
    """The classification CNN of architecture 1 (mixin): 3 conv blocks -> cls.fc 625 -> dropout -> cls.head."""

    def _init_classifier(self, rng, budget: int) -> dict:
        """The paper's sizes (the budget is not used: the paper's architecture is kept as it is)."""
        p = _init_convs(rng, CLS_NAMES)
        p["cls.fc.w"], p["cls.fc.b"] = he_linear(rng, CONV_FILTERS[-1] * pooled_size(self.image_side, 3) ** 2, CLS_HIDDEN)
        p.update(self._head(rng, CLS_HIDDEN))
        return p

    def _classify_forward(self, x, train, rng):
        P = self.params
        N = x.shape[0]
        a1, c1 = conv_block_forward(P, "cls.conv1", x)                           # (N, 32, S_1, S_1)
        a2, c2 = conv_block_forward(P, "cls.conv2", a1)                          # (N, 64, S_2, S_2)
        a3, c3 = conv_block_forward(P, "cls.conv3", a2)                          # (N, 128, S_3, S_3)
        h, c_fc = dense_forward(P, "cls.fc", a3.reshape(N, -1))                 # (N, 625)
        d, c_drop = self._dropout(h, train, rng)
        out, c_head = dense_forward(P, "cls.head", d, relu=False)                # (N, 10 P)
        return out, (c1, c2, c3, c_fc, c_drop, c_head, a3.shape)

    def _classify_backward(self, dout, cache, need_dx: bool):
        c1, c2, c3, c_fc, c_drop, c_head, a3_shape = cache
        dd = dense_backward(dout, c_head, self.grads)                            # (N, 625)
        dh = self._undropout(dd, c_drop)
        dflat = dense_backward(dh, c_fc, self.grads)                             # (N, 128 S_3^2)
        da2 = conv_block_backward(dflat.reshape(a3_shape), c3, self.grads)       # (N, 64, S_2, S_2)
        da1 = conv_block_backward(da2, c2, self.grads)                           # (N, 32, S_1, S_1)
        return conv_block_backward(da1, c1, self.grads, need_dx=need_dx)         # (N, 1, S, S) or None


class TSTNCNN(_TSTNClassifier, DigitModel):
    """'tstn-cnn': the TSTN paper's classification CNN alone (architecture 1).
    Options: dropout, head_init, digits, image_size."""

    name = "tstn-cnn"


class TSTN(_TSTNClassifier, DigitSTN):
    """'tstn': the TSTN (tied=True) or its untied STN (tied=False), architecture 1 (module docstring).
    Options: dropout, head_init, digits, image_size, init_scale, regressor_std, transform,
    sampler_impl, tied."""

    name = "tstn"

    @property
    def _loc_names(self) -> tuple:
        return CLS_NAMES if self.options["tied"] else LOC_NAMES

    @property
    def shared(self) -> tuple:
        """tied: cls.conv1..3's weights and biases, read by both CNNs."""
        return tuple(f"{n}.{s}" for n in CLS_NAMES for s in ("w", "b")) if self.options["tied"] else ()

    def _init_params(self, rng):
        p = self._init_classifier(rng, 0)
        if not self.options["tied"]:
            p.update(_init_convs(rng, LOC_NAMES))
        d_in = CONV_FILTERS[-1] * pooled_size(self.image_side, 2) ** 2             # 128 S_2^2
        p["loc.fc.w"], p["loc.fc.b"] = he_linear(rng, d_in, LOC_HIDDEN)
        p.update(regressor_init(rng, LOC_HIDDEN, self.theta_size, self.options["regressor_std"], self.options["init_scale"]))
        return p

    def _loc_forward(self, images):
        P, (n1, n2, n3) = self.params, self._loc_names
        a1, c1 = conv_block_forward(P, n1, images)                               # (N, 32, S_1, S_1)
        a2, c2 = conv_block_forward(P, n2, a1)                                   # (N, 64, S_2, S_2)
        a3, c3 = conv_block_forward(P, n3, a2, pool=False)                       # (N, 128, S_2, S_2): no last pool
        h, c_fc = dense_forward(P, "loc.fc", a3.reshape(images.shape[0], -1))   # (N, 200)
        return h, (c1, c2, c3, c_fc, a3.shape)

    def _loc_backward(self, dfeats, cache) -> None:
        c1, c2, c3, c_fc, a3_shape = cache
        dloc = {}                                                                # this path's gradients
        dflat = dense_backward(dfeats, c_fc, dloc)                               # (N, 128 S_2^2)
        da2 = conv_block_backward(dflat.reshape(a3_shape), c3, dloc)             # (N, 64, S_2, S_2)
        da1 = conv_block_backward(da2, c2, dloc)                                 # (N, 32, S_1, S_1)
        conv_block_backward(da1, c1, dloc, need_dx=False)                        # the image is data
        for k, g in dloc.items():
            # tied: cls.conv* already hold the classification path's part (assigned by its backward)
            self.grads[k] = self.grads[k] + g if k.startswith("cls.") else g
