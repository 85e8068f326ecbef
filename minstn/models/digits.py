"""The single-digit models of the Spatial Transformer Networks paper (Jaderberg et al. 2015,
section 4.1, Table 1): FCN, CNN, ST-FCN and ST-CNN on distorted MNIST (R, RTS, P, E, TC) and cluttered MNIST.

    'fcn'        fully connected network: image -> FC H -> FC H -> 10 P
    'mnist-cnn'  the paper's CNN baseline for 28..60-pixel digits (not 'cnn', the 100x100
                 MNIST-sequence CNN of the LSTM-STN paper): two conv blocks -> 10 P
    'st-fcn'     a spatial transformer (an MLP localisation net) in front of an FCN
    'st-cnn'     a spatial transformer (a small CNN localisation net) in front of the CNN

What the paper fixes, and what is ours. The text of the paper at hand (without its appendix) says that
"all networks have approximately the same number of parameters, are trained with identical
optimisation schemes, and all with three weight layers in the classification network"; its
appendix with the layer sizes is not at hand. So the layers below are this module's
choices: 3x3 'same' convolutions and 2x2 max-pools as everywhere else in minstn (the ops tuned
and tested for them; fast on two cores), three weight layers in every classifier, and the
parameter budget of the CNN: every other model's hidden width or filter count is *fitted* so
that its total (localisation net included) is the nearest to the CNN's at the same image size.

Shape legend:
    N    images;  P digits per image (1: one head; the option digits gives P 10-way heads)
    S    image side (the image_size option: 28 for R, P, E; 42 for RTS; 60 for TC and cluttered)
    S_k  floor(S / 2^k), the side after k 2x2 max-pools (28: 14, 7, 3;  42: 21, 10, 5;  60: 30, 15, 7)
    H    hidden units of the FCN's two layers (fitted)
    F2   filters of the CNN's second conv (64 in the CNN, fitted in the ST-CNN)
    K    transform parameters: 6 (affine) or 8 (projective)

Classifiers (three weight layers each; every conv 3x3 'same', every block conv -> max-pool -> ReLU):

    FCN  image (N, 1, S, S) -> flatten (N, S^2) -> cls.fc1 H + ReLU -> cls.fc2 H + ReLU -> dropout
         -> cls.head 10 P
    CNN  image -> cls.conv1 32 + pool + ReLU (N, 32, S_1, S_1) -> cls.conv2 F2 + pool + ReLU
         (N, F2, S_2, S_2) -> dropout -> flatten -> cls.head 10 P

Localisation nets (no dropout, as in the TSTN paper), then the regressor reg (K outputs, weights 0
and bias = the identity by default, as in the STN paper):

    ST-FCN  image -> 2x2 average pool (N, 1, S_1, S_1) -> flatten -> loc.fc1 32 + ReLU
            -> loc.fc2 32 + ReLU -> reg K       (the pool quarters the first layer: without it the
            MLP would take a third of the budget at S = 60)
    ST-CNN  image -> 3 x [loc.convk 16 + pool + ReLU] (N, 16, S_3, S_3) -> flatten -> loc.fc 32 + ReLU
            -> reg K

The transformer (both ST models): theta (N, K) -> affine grid (N, S, S, 2), or with
transform='projective' the homography grid of minstn.ops.projective, its perspective terms
bounded (g, h = 0.45 tanh(.), minstn.models.blocks) -> bilinear sample from the image (zero
padding) -> (N, 1, S, S), the same size as the input (no down-sampling: the `downsample`
argument is accepted and ignored, as by the MNIST-sequence CNN, and the model reports 1).

Parameter counts (model.num_params(), P = 1, affine; tests/test_models_tasks.py pins them):

    S    CNN       FCN (H)         ST-FCN (H)       ST-CNN (F2)      (the loc nets: ST-FCN, ST-CNN)
    28   50,186    50,455 (59)     49,868 (50)      50,476 (52)      7,558   9,638
    42   82,826    81,955 (45)     82,489 (37)      82,610 (50)      15,398  17,830
    60   162,826   164,575 (45)    161,424 (36)     162,476 (52)     30,086  30,118

Every model is within 1.1 % of the CNN's count; transform='projective' adds 2 (D + 1) = 66 to the
regressor (the fitted widths stay the same at these sizes).

Backward order: classifier (head -> ... -> first layer, its input gradient only in the ST
models) -> sampler (the grid's gradient only: the image is data) -> grid -> (the perspective
bound) -> regressor -> localisation net, last layer first.
"""
from __future__ import annotations

import numpy as np

from minstn.backend import to_numpy
from minstn.models.base import Model
from minstn.models.blocks import (
    PERSPECTIVE_BOUND,
    conv_block_backward,
    conv_block_forward,
    dense_backward,
    dense_forward,
    fit_linear,
    fit_square,
    perspective_bound_backward,
    perspective_bound_forward,
    regressor_init,
)
from minstn.models.layers import ModelError, check_images, he_conv, he_linear, pooled_size
from minstn.ops.switch import ops

__all__ = ["FCN", "MnistCNN", "STFCN", "STCNN", "DigitModel", "DigitSTN", "cnn_budget", "CNN_FILTERS"]

CNN_FILTERS = (32, 64)   # the CNN's two convs
LOC_FILTERS = 16         # the ST-CNN localisation net's three convs
LOC_HIDDEN = 32          # the localisation nets' fully connected layers


def cnn_budget(side: int, digits: int) -> int:
    """Parameters of the CNN ('mnist-cnn') at image side S with P heads: the budget of the others.
    conv1 32 * 9 + 32, conv2 64 * 32 * 9 + 64, head 64 S_2^2 * 10 P + 10 P."""
    f1, f2 = CNN_FILTERS
    return (9 * f1 + f1) + (9 * f1 * f2 + f2) + f2 * pooled_size(side, 2) ** 2 * 10 * digits + 10 * digits


def _count(params: dict) -> int:
    return int(sum(np.prod(v.shape) for v in params.values()))


class DigitModel(Model):
    """What every single-digit model shares: the head init, dropout, and (when there is no
    transformer) the forward and backward of a classifier on the whole image.

    A subclass provides _init_classifier(rng, budget_left), _classify_forward(x, train, rng)
    -> (out (N, 10 P), cache) and _classify_backward(dout, cache, need_dx) -> dx or None.
    """

    def _head(self, rng, d_in: int) -> dict:
        """cls.head (d_in, 10 P): He-normal, then zeroed with head_init 'zero' (the draw is still made)."""
        w, b = he_linear(rng, d_in, 10 * self.digits)
        if self.options["head_init"] == "zero":
            w = np.zeros_like(w)
        return {"cls.head.w": w, "cls.head.b": b}

    def _dropout(self, x, train: bool, rng):
        """Inverted dropout with the model's probability when training, else the identity (cache None)."""
        p = self.options["dropout"]
        if train and p > 0:
            return ops.dropout_forward(x, p, rng)
        return x, None

    def _undropout(self, dout, cache):
        return ops.dropout_backward(dout, cache) if cache is not None else dout

    def _init_params(self, rng):
        return self._init_classifier(rng, cnn_budget(self.image_side, self.digits))

    def forward(self, images, train: bool = True, rng=None):
        """images (N, 1, S, S) -> (logits (N, P, 10), cache). rng: dropout generator (train only)."""
        images = self._images(images)
        rng = self._dropout_rng(train, rng)
        N = images.shape[0]
        out, c_cls = self._classify_forward(images, train, rng)                  # (N, 10 P)
        return out.reshape(N, self.digits, 10), c_cls

    def backward(self, dlogits, cache) -> None:
        """Fills self.grads from dlogits (N, P, 10); the image gets no gradient."""
        N = dlogits.shape[0]
        self._classify_backward(dlogits.reshape(N, self.digits * 10), cache, need_dx=False)


class _FCNClassifier:
    """The FCN classifier (mixin): flatten -> cls.fc1 H -> cls.fc2 H -> dropout -> cls.head."""

    def _init_classifier(self, rng, budget: int) -> dict:
        S2, P = self.image_side ** 2, self.digits
        # H^2 + (S^2 + 2 + 10 P) H + 10 P parameters: fc1 (S^2 + 1) H, fc2 (H + 1) H, head (H + 1) 10 P
        H = fit_square(budget, S2 + 2 + 10 * P, 10 * P, f"{self.name} at {self.image_side}x{self.image_side}")
        self.hidden = H
        p = {}
        p["cls.fc1.w"], p["cls.fc1.b"] = he_linear(rng, S2, H)
        p["cls.fc2.w"], p["cls.fc2.b"] = he_linear(rng, H, H)
        p.update(self._head(rng, H))
        return p

    def _classify_forward(self, x, train, rng):
        P = self.params
        N = x.shape[0]
        flat = x.reshape(N, -1)                                                  # (N, S^2)
        h1, c1 = dense_forward(P, "cls.fc1", flat)                               # (N, H)
        h2, c2 = dense_forward(P, "cls.fc2", h1)                                 # (N, H)
        d2, c_drop = self._dropout(h2, train, rng)
        out, c_head = dense_forward(P, "cls.head", d2, relu=False)               # (N, 10 P)
        return out, (c1, c2, c_drop, c_head, x.shape)

    def _classify_backward(self, dout, cache, need_dx: bool):
        c1, c2, c_drop, c_head, x_shape = cache
        dd2 = dense_backward(dout, c_head, self.grads)                           # (N, H)
        dh2 = self._undropout(dd2, c_drop)
        dh1 = dense_backward(dh2, c2, self.grads)                                # (N, H)
        dflat = dense_backward(dh1, c1, self.grads)                              # (N, S^2)
        return dflat.reshape(x_shape) if need_dx else None


class _CNNClassifier:
    """The CNN classifier (mixin): cls.conv1 32 -> cls.conv2 F2 -> dropout -> cls.head."""

    fit_filters = False   # the CNN has F2 = 64; the ST-CNN fits F2 to the budget left by its localisation net

    def _init_classifier(self, rng, budget: int) -> dict:
        f1, f2 = CNN_FILTERS
        S2, P = pooled_size(self.image_side, 2), self.digits
        if self.fit_filters:
            # conv2 (9 f1 + 1) F2, head F2 S2^2 10 P + 10 P, conv1 10 f1
            f2 = fit_linear(budget, 9 * f1 + 1 + S2 * S2 * 10 * P, 10 * f1 + 10 * P,
                            f"{self.name} at {self.image_side}x{self.image_side}")
        self.filters = (f1, f2)
        p = {}
        p["cls.conv1.w"], p["cls.conv1.b"] = he_conv(rng, f1, 1)
        p["cls.conv2.w"], p["cls.conv2.b"] = he_conv(rng, f2, f1)
        p.update(self._head(rng, f2 * S2 * S2))
        return p

    def _classify_forward(self, x, train, rng):
        P = self.params
        N = x.shape[0]
        a1, c1 = conv_block_forward(P, "cls.conv1", x)                           # (N, 32, S_1, S_1)
        a2, c2 = conv_block_forward(P, "cls.conv2", a1)                          # (N, F2, S_2, S_2)
        d2, c_drop = self._dropout(a2, train, rng)
        out, c_head = dense_forward(P, "cls.head", d2.reshape(N, -1), relu=False)  # (N, 10 P)
        return out, (c1, c2, c_drop, c_head, d2.shape)

    def _classify_backward(self, dout, cache, need_dx: bool):
        c1, c2, c_drop, c_head, d2_shape = cache
        dflat = dense_backward(dout, c_head, self.grads)                         # (N, F2 S_2^2)
        da2 = self._undropout(dflat.reshape(d2_shape), c_drop)                   # (N, F2, S_2, S_2)
        da1 = conv_block_backward(da2, c2, self.grads)                           # (N, 32, S_1, S_1)
        return conv_block_backward(da1, c1, self.grads, need_dx=need_dx)         # (N, 1, S, S) or None


class FCN(_FCNClassifier, DigitModel):
    """'fcn': the fully connected baseline, sized to the CNN's parameter budget (module docstring).
    Options: dropout, head_init, digits, image_size."""

    name = "fcn"


class MnistCNN(_CNNClassifier, DigitModel):
    """'mnist-cnn': the STN paper's CNN baseline for single digits (not 'cnn', the MNIST-sequence
    CNN on 100x100 canvases). Options: dropout, head_init, digits, image_size."""

    name = "mnist-cnn"


class DigitSTN(DigitModel):
    """A spatial transformer in front of a single-digit classifier (module docstring).

    A subclass provides _init_loc(rng) -> (params, D) and _loc_forward(images) -> (features (N, D),
    cache), _loc_backward(dfeats, cache), besides its classifier. Options: those of the classifier
    and init_scale (1.0: the identity), regressor_std (0.0: zero weights), transform ('affine' or
    'projective'), sampler_impl ('auto').
    """

    transformer = True

    @property
    def theta_size(self) -> int:
        """K: 6 numbers for an affine transform, 8 for a projective one."""
        return 8 if self.options["transform"] == "projective" else 6

    def _init_params(self, rng):
        loc, d_loc = self._init_loc(rng)
        reg_count = (d_loc + 1) * self.theta_size
        p = dict(loc)
        p.update(self._init_classifier(rng, cnn_budget(self.image_side, self.digits) - _count(loc) - reg_count))
        p.update(regressor_init(rng, d_loc, self.theta_size, self.options["regressor_std"], self.options["init_scale"]))
        return p

    # ----- the transformer: theta -> grid -> samples ---------------------------------------------
    def _theta_forward(self, images):
        """images (N, 1, S, S) -> (theta (N, K), cache)."""
        feats, c_loc = self._loc_forward(images)                                 # (N, D)
        theta, c_reg = dense_forward(self.params, "reg", feats, relu=False)      # (N, K)
        return theta, (c_loc, c_reg)

    def _theta_backward(self, dtheta, cache) -> None:
        c_loc, c_reg = cache
        dfeats = dense_backward(dtheta, c_reg, self.grads)                       # (N, D)
        self._loc_backward(dfeats, c_loc)

    def _glimpse_forward(self, images, theta):
        """images (N, 1, S, S), theta (N, K) -> (glimpses (N, 1, S, S), cache)."""
        N, S, impl = images.shape[0], self.image_side, self.options["sampler_impl"]
        if self.theta_size == 8:
            theta8, c_bound = perspective_bound_forward(theta)                   # (N, 8), |g|, |h| < 0.45
            grid, c_grid = ops.projective_grid_forward(theta8, (S, S))           # (N, S, S, 2)
        else:
            c_bound = None
            grid, c_grid = ops.affine_grid_forward(theta.reshape(N, 2, 3), (S, S), impl=impl)  # (N, S, S, 2)
        V, c_samp = ops.bilinear_sample_forward(images, grid, impl=impl)        # (N, 1, S, S)
        return V, (c_bound, c_grid, c_samp)

    def _glimpse_backward(self, dV, cache):
        """dglimpses (N, 1, S, S) -> dtheta (N, K). The image's gradient is not computed (it is data)."""
        c_bound, c_grid, c_samp = cache
        _, dgrid = ops.bilinear_sample_backward(dV, c_samp, need_dU=False)       # (N, S, S, 2)
        if self.theta_size == 8:
            dtheta8 = ops.projective_grid_backward(dgrid, c_grid)                # (N, 8)
            return perspective_bound_backward(dtheta8, c_bound)                  # (N, 8)
        return ops.affine_grid_backward(dgrid, c_grid).reshape(-1, 6)            # (N, 6)

    # ----- the model -----------------------------------------------------------------------------
    def forward(self, images, train: bool = True, rng=None):
        """images (N, 1, S, S) -> (logits (N, P, 10), cache). rng: dropout generator (train only)."""
        images = self._images(images)
        rng = self._dropout_rng(train, rng)
        N = images.shape[0]
        theta, c_theta = self._theta_forward(images)                             # (N, K)
        glimpses, c_glimpse = self._glimpse_forward(images, theta)               # (N, 1, S, S)
        out, c_cls = self._classify_forward(glimpses, train, rng)                # (N, 10 P)
        return out.reshape(N, self.digits, 10), (c_theta, c_glimpse, c_cls)

    def backward(self, dlogits, cache) -> None:
        """Fills self.grads from dlogits (N, P, 10), in the reverse order of forward."""
        c_theta, c_glimpse, c_cls = cache
        N = dlogits.shape[0]
        dglimpses = self._classify_backward(dlogits.reshape(N, self.digits * 10), c_cls, need_dx=True)  # (N, 1, S, S)
        dtheta = self._glimpse_backward(dglimpses, c_glimpse)                    # (N, K)
        self._theta_backward(dtheta, c_theta)

    def attend(self, images, batch_size: int = 256):
        """Evaluation-mode transforms and transformed images, as host NumPy arrays:
        {'thetas': (N, 1, 2, 3), 'glimpses': (N, 1, 1, S, S)}; with transform='projective' 'thetas'
        holds the homography's first two rows [a, b, c], [d, e, f] and 'perspective' (N, 1, 2)
        its bounded g, h."""
        if batch_size < 1:
            raise ModelError(f"batch_size must be at least 1, got {batch_size}")
        check_images(images, self.image_side, self.dtype, self.xp)   # the whole array once, before batching
        thetas, glimpses, persp = [], [], []
        S = self.image_side
        with self.device.scope():
            for i in range(0, images.shape[0], batch_size):
                x = self._images(images[i:i + batch_size])
                n = x.shape[0]
                th, _ = self._theta_forward(x)                                   # (n, K)
                g, _ = self._glimpse_forward(x, th)                              # (n, 1, S, S)
                th = to_numpy(th)
                if self.theta_size == 8:                                          # g, h as the grid used them
                    persp.append((PERSPECTIVE_BOUND * np.tanh(th[:, 6:])).reshape(n, 1, 2))
                thetas.append(th[:, :6].reshape(n, 1, 2, 3))
                glimpses.append(to_numpy(g).reshape(n, 1, 1, S, S))
        out = {"thetas": np.concatenate(thetas), "glimpses": np.concatenate(glimpses)}
        if persp:
            out["perspective"] = np.concatenate(persp)
        return out


class STFCN(_FCNClassifier, DigitSTN):
    """'st-fcn': an MLP localisation net on the 2x2-average-pooled image, the transformer, the FCN
    (its width fitted to the CNN's budget). Options: dropout, head_init, digits, image_size,
    init_scale, regressor_std, transform, sampler_impl."""

    name = "st-fcn"

    def _init_loc(self, rng):
        d_in = pooled_size(self.image_side, 1) ** 2                              # S_1^2
        p = {}
        p["loc.fc1.w"], p["loc.fc1.b"] = he_linear(rng, d_in, LOC_HIDDEN)
        p["loc.fc2.w"], p["loc.fc2.b"] = he_linear(rng, LOC_HIDDEN, LOC_HIDDEN)
        return p, LOC_HIDDEN

    def _loc_forward(self, images):
        N = images.shape[0]
        small, _ = ops.avgpool2d_forward(images, 2)                              # (N, 1, S_1, S_1)
        h1, c1 = dense_forward(self.params, "loc.fc1", small.reshape(N, -1))     # (N, 32)
        h2, c2 = dense_forward(self.params, "loc.fc2", h1)                       # (N, 32)
        return h2, (c1, c2)

    def _loc_backward(self, dfeats, cache) -> None:
        c1, c2 = cache
        dh1 = dense_backward(dfeats, c2, self.grads)                             # (N, 32)
        dense_backward(dh1, c1, self.grads)                                      # the pooled image is data: dx unused


class STCNN(_CNNClassifier, DigitSTN):
    """'st-cnn': a three-block CNN localisation net, the transformer, the CNN (its second conv's
    filters fitted to the CNN's budget). Options: as 'st-fcn'."""

    name = "st-cnn"
    fit_filters = True

    def _init_loc(self, rng):
        p, c = {}, 1
        for k in (1, 2, 3):
            p[f"loc.conv{k}.w"], p[f"loc.conv{k}.b"] = he_conv(rng, LOC_FILTERS, c)
            c = LOC_FILTERS
        d_in = LOC_FILTERS * pooled_size(self.image_side, 3) ** 2                # 16 S_3^2
        p["loc.fc.w"], p["loc.fc.b"] = he_linear(rng, d_in, LOC_HIDDEN)
        return p, LOC_HIDDEN

    def _loc_forward(self, images):
        P = self.params
        a1, c1 = conv_block_forward(P, "loc.conv1", images)                      # (N, 16, S_1, S_1)
        a2, c2 = conv_block_forward(P, "loc.conv2", a1)                          # (N, 16, S_2, S_2)
        a3, c3 = conv_block_forward(P, "loc.conv3", a2)                          # (N, 16, S_3, S_3)
        h, c_fc = dense_forward(P, "loc.fc", a3.reshape(images.shape[0], -1))   # (N, 32)
        return h, (c1, c2, c3, c_fc, a3.shape)

    def _loc_backward(self, dfeats, cache) -> None:
        c1, c2, c3, c_fc, a3_shape = cache
        dflat = dense_backward(dfeats, c_fc, self.grads)                         # (N, 16 S_3^2)
        da2 = conv_block_backward(dflat.reshape(a3_shape), c3, self.grads)       # (N, 16, S_2, S_2)
        da1 = conv_block_backward(da2, c2, self.grads)                           # (N, 16, S_1, S_1)
        conv_block_backward(da1, c1, self.grads, need_dx=False)                  # the image is data
