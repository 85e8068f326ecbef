"""The two spatial transformer models (the paper's section IV): FFN-STN-CNN and LSTM-STN-CNN.

Shape legend:
    N   canvases in the batch
    T   glimpses per canvas: 1 (FFN-STN), 4 (LSTM-STN, one per digit)
    F   localisation features (720 = 20 * 6 * 6; tied LSTM-STN: cls_filters * 6 * 6, 1152 for 32)
    H   LSTM cells (256)
    E   LSTM input size: F, or F + 6 when the previous theta is fed back
    d   down-sampling factor (1..4)
    G   sampling grid side = d * floor(100 / d)        (100, 100, 99, 100)
    S   glimpse side after average pooling = G / d     (100, 50, 33, 25)

Both models share one glimpse pipeline:

    theta (N*T, 2, 3) -> affine grid (N*T, G, G, 2) -> bilinear sample from the canvas
    -> (N*T, 1, G, G) -> average pool d -> glimpses (N*T, 1, S, S) -> classifier

The T grids of a canvas are stacked along the grid's height, (N, T*G, G, 2), so the sampler
reads each canvas once for all its glimpses and no copy of the canvas is made; the samples
(N, 1, T*G, G) then reshape for free to (N*T, 1, G, G). The sampler's canvas gradient dU is
not needed (the canvas is data) and is discarded: only dgrid flows on, into theta.

LSTM-STN (per canvas, the same features every step):

    f = loc(canvas)                         (N, F)
    theta_0 = the regressor's initial bias  (N, 6)   (used only with feedback='theta')
    for t = 1..T:
        x_t = [f, theta_{t-1}]  (feedback='theta')  or  f  (feedback='none')    (N, E)
        h_t, c_t = LSTM(x_t, h_{t-1}, c_{t-1})                                (N, H)
        theta_t = h_t @ W_reg + b_reg (+ step_b[t] with step_spread > 0)       (N, 6)
    glimpse t = avgpool_d(sample(canvas, grid(theta_t)));  logits t = classifier(glimpse t)

With feedback='theta' the gradient flows through the fed-back theta_{t-1} into the regressor
and the LSTM of step t-1 (full BPTT, what the finite-difference check measures); theta_0 is a
constant (it equals the initial bias, not the live parameter). The loop over the steps, forward
and backward, is the op pair ops.recurrent_thetas_forward / _backward (minstn/ops/thetas.py: the
cell and linear ops, step by step; on a GPU, minstn/ops/fast/thetas.py runs an LSTM's T steps as
a few kernels and matrix products).

Back-propagation order (LSTM-STN): classifier -> avgpool -> sampler (dgrid only) -> affine grid
-> for t = T..1: regressor, LSTM cell (BPTT, with dtheta_{t-1} from the fed-back input) ->
localisation net.
"""
from __future__ import annotations

import numpy as np

from minstn.backend import to_numpy
from minstn.models.base import CANVAS, Model
from minstn.models.classifier import classifier_backward, classifier_forward, init_classifier
from minstn.models.layers import CELL_PARAMS, ModelError, check_images, he_conv, init_cell
from minstn.models.localisation import (
    NAMES,
    TIED_NAMES,
    init_localisation,
    loc_features,
    localisation_backward,
    localisation_forward,
)
from minstn.ops.switch import ops

__all__ = ["FFNSTN", "LSTMSTN"]


def _identity_bias(scale: float) -> np.ndarray:
    """theta bias [[s, 0, 0], [0, s, 0]] flattened to (6,): a centred zoom by 1/s (s = 1: identity)."""
    return np.array([scale, 0.0, 0.0, 0.0, scale, 0.0])


class _STN(Model):
    """Shared pieces: the regressor init and the glimpse pipeline."""

    steps = 1  # T
    transformer = True

    @property
    def grid_side(self) -> int:
        """G = d * floor(100 / d)."""
        return self.downsample * (CANVAS // self.downsample)

    @property
    def glimpse_side(self) -> int:
        """S = floor(100 / d)."""
        return CANVAS // self.downsample

    def _init_regressor(self, rng, d_in: int) -> dict:
        """reg.w (d_in, 6) ~ N(0, regressor_std) (zeros when 0), reg.b = [s, 0, 0, 0, s, 0]."""
        std = self.options["regressor_std"]
        w = rng.normal(0.0, std, size=(d_in, 6)) if std > 0 else np.zeros((d_in, 6))
        return {"reg.w": w, "reg.b": _identity_bias(self.options["init_scale"])}

    def _glimpses_forward(self, images, thetas):
        """images (N, 1, L, L), thetas (N*T, 2, 3) -> (glimpses (N*T, 1, S, S), cache)."""
        N, T, G, d = images.shape[0], self.steps, self.grid_side, self.downsample
        impl = self.options["sampler_impl"]
        grid, c_grid = ops.affine_grid_forward(thetas, (G, G), impl=impl)     # (N*T, G, G, 2)
        grid = grid.reshape(N, T * G, G, 2)                                    # the T grids of a canvas stacked
        V, c_samp = ops.bilinear_sample_forward(images, grid, impl=impl)       # (N, 1, T*G, G)
        V = V.reshape(N * T, 1, G, G)                                          # (N*T, 1, G, G)
        glimpses, c_pool = ops.avgpool2d_forward(V, d)                         # (N*T, 1, S, S)
        return glimpses, (c_grid, c_samp, c_pool, N)

    def _glimpses_backward(self, dglimpses, cache):
        """dglimpses (N*T, 1, S, S) -> dthetas (N*T, 2, 3). The canvas gradient is discarded."""
        c_grid, c_samp, c_pool, N = cache
        T, G = self.steps, self.grid_side
        dV = ops.avgpool2d_backward(dglimpses, c_pool)                         # (N*T, 1, G, G)
        _, dgrid = ops.bilinear_sample_backward(dV.reshape(N, 1, T * G, G), c_samp, need_dU=False)  # (N, T*G, G, 2)
        dthetas = ops.affine_grid_backward(dgrid.reshape(N * T, G, G, 2), c_grid)      # (N*T, 2, 3)
        return dthetas

    def _thetas_forward(self, images):
        """images -> (thetas (N, T, 6), cache of the localisation path)."""
        raise NotImplementedError

    def _thetas_backward(self, dthetas, cache) -> None:
        """dthetas (N, T, 6) -> writes the 'loc' group's gradients."""
        raise NotImplementedError

    def forward(self, images, train: bool = True, rng=None):
        """images (N, 1, 100, 100) -> (logits (N, 4, 10), cache). rng: dropout generator (train only)."""
        images = self._images(images)
        rng = self._dropout_rng(train, rng)
        N, T = images.shape[0], self.steps
        thetas, c_theta = self._thetas_forward(images)                                      # (N, T, 6)
        glimpses, c_glimpse = self._glimpses_forward(images, thetas.reshape(N * T, 2, 3))   # (N*T, 1, S, S)
        out, c_cls = classifier_forward(self.params, glimpses, self.options["dropout"], train, rng)  # (N*T, 40 / T)
        logits = out.reshape(N, self.digits, 10)                                            # (N, P, 10)
        return logits, (c_theta, c_glimpse, c_cls, N)

    def backward(self, dlogits, cache) -> None:
        """Fills self.grads from dlogits (N, 4, 10), in the reverse order of forward."""
        c_theta, c_glimpse, c_cls, N = cache
        T = self.steps
        dout = dlogits.reshape(N * T, self.digits * 10 // T)                                # (N*T, 10 P / T)
        dglimpses = classifier_backward(dout, c_cls, self.grads, need_dx=True)              # (N*T, 1, S, S)
        dthetas = self._glimpses_backward(dglimpses, c_glimpse)                             # (N*T, 2, 3)
        self._thetas_backward(dthetas.reshape(N, T, 6), c_theta)

    def attend(self, images, batch_size: int = 256):
        """Evaluation-mode transforms and glimpses, as host NumPy arrays:
        {'thetas': (N, T, 2, 3), 'glimpses': (N, T, 1, S, S)} (T = 4 for the LSTM-STN, 1 for the FFN-STN)."""
        if batch_size < 1:
            raise ModelError(f"batch_size must be at least 1, got {batch_size}")
        check_images(images, self.image_side, self.dtype, self.xp)  # the whole array once, before batching
        thetas, glimpses = [], []
        T, S = self.steps, self.glimpse_side
        for i in range(0, images.shape[0], batch_size):
            x = self._images(images[i:i + batch_size])
            n = x.shape[0]
            th, _ = self._thetas_forward(x)                                        # (n, T, 6)
            g, _ = self._glimpses_forward(x, th.reshape(n * T, 2, 3))              # (n*T, 1, S, S)
            thetas.append(to_numpy(th).reshape(n, T, 2, 3))
            glimpses.append(to_numpy(g).reshape(n, T, 1, S, S))
        return {"thetas": np.concatenate(thetas), "glimpses": np.concatenate(glimpses)}


class FFNSTN(_STN):
    """The classic spatial transformer: loc net -> FC -> theta; one glimpse; classifier with 4 heads.

    Options: dropout (0.5), init_scale (1.0: identity), regressor_std (0.0: zero weights), sampler_impl ('auto').
    """

    name = "ffn-stn"
    steps = 1

    def _init_params(self, rng):
        p = init_localisation(rng)
        p.update(init_classifier(rng, self.glimpse_side, heads=self.digits, head_init=self.options["head_init"],
                                 filters=self.options["cls_filters"]))
        p.update(self._init_regressor(rng, loc_features(CANVAS)))
        return p

    def _thetas_forward(self, images):
        feats, c_loc = localisation_forward(self.params, images)                             # (N, F)
        theta, c_reg = ops.linear_forward(feats, self.params["reg.w"], self.params["reg.b"])  # (N, 6)
        return theta.reshape(-1, 1, 6), (c_loc, c_reg)                                       # (N, 1, 6)

    def _thetas_backward(self, dthetas, cache) -> None:
        c_loc, c_reg = cache
        dfeats, self.grads["reg.w"], self.grads["reg.b"] = ops.linear_backward(dthetas.reshape(-1, 6), c_reg)  # (N, F)
        localisation_backward(dfeats, c_loc, self.grads)


class LSTMSTN(_STN):
    """LSTM-STN-CNN: the loc features drive an LSTM (or GRU, RNN) for T = P steps (P digits, 4); h_t -> theta_t -> glimpse t.

    Options: dropout (0.5), hidden_size (256), init_scale (0.5), regressor_std (1e-3),
    feedback ('theta'), step_spread (0.3; 0: off), head_init ('zero'), cell ('lstm'), cls_filters
    (32), digits (4, from the data), tied (False), sampler_impl ('auto').
    See docs/models.md for why.

    step_spread s > 0 adds a learned bias per step, reg.step_b (T, 6), added to theta_t, that
    starts with the glimpse centres spread along x: tx = s * (t - 1.5) for t = 0..3 (s = 0.3:
    -0.45, -0.15, 0.15, 0.45). It breaks the symmetry between the steps from the first batch on;
    the LSTM still decides where each glimpse goes.

    tied (default False): the tied LSTM-STN, the tied *recurrent* transformer that the TSTN paper
    (Cirstea and Likforman-Sulem, conclusion) proposes. The classifier has three 3x3 convs of F = cls_filters
    filters, (F,1), (F,F), (F,F); the localisation net keeps its four conv + max-pool + ReLU
    blocks on the canvas, but takes F filters instead of 20 so that the shapes match, and its
    blocks 1..3 use the classifier's weights cls.conv1..3 (w and b; block 3 pools where the
    classifier's conv3 does not: pooling has no weights, as in the TSTN's localisation CNN, which
    drops a pool). Block 4 has no classifier layer to share and keeps its own loc.conv4 (F, F, 3, 3).
    Features F * 6 * 6 (1152 for F = 32, instead of 720), so the LSTM's input grows with F: at the
    defaults (d = 2) the tied model has 3,326,200 parameters against the untied one's 2,885,644
    (the LSTM's Wx (1158, 1024) instead of (726, 1024): +442,368; loc.conv4 9,248 instead of
    3,620; the 200 + 3,620 + 3,620 of loc.conv1..3 are gone: +440,556 in all). The
    shared weights are in the 'cls' group (the classifier's learning rate); their gradient is the
    sum of the classifier's part and the localisation net's part (self.shared names them).
    """

    name = "lstm-stn"

    @property
    def steps(self) -> int:
        """T: one glimpse per digit."""
        return self.digits

    @property
    def _loc_names(self) -> tuple:
        """The parameters of the localisation net's four blocks (the classifier's first three when tied)."""
        return TIED_NAMES if self.options.get("tied") else NAMES

    @property
    def shared(self) -> tuple:
        """tied: cls.conv1..3's weights and biases, read by the classifier and the localisation net."""
        return tuple(f"{n}.{s}" for n in TIED_NAMES[:3] for s in ("w", "b")) if self.options.get("tied") else ()

    def _init_params(self, rng):
        tied, Fc = self.options.get("tied", False), self.options["cls_filters"]
        F, H = loc_features(CANVAS, Fc if tied else 20), self.options["hidden_size"]
        E = F + 6 if self.options["feedback"] == "theta" else F
        if tied:   # blocks 1..3 are the classifier's convs; block 4 is the loc net's own, F filters
            p = dict(zip(("loc.conv4.w", "loc.conv4.b"), he_conv(rng, Fc, Fc)))
        else:
            p = init_localisation(rng)
        p.update(init_classifier(rng, self.glimpse_side, heads=1, head_init=self.options["head_init"],
                                 filters=self.options["cls_filters"]))
        p.update(init_cell(rng, self.options["cell"], E, H))
        p.update(self._init_regressor(rng, H))
        spread = self.options["step_spread"]
        if spread > 0:  # a learned bias per step, starting as glimpse centres spread along x
            step_b = np.zeros((self.steps, 6))                              # (T, 6)
            step_b[:, 2] = spread * (np.arange(self.steps) - (self.steps - 1) / 2)
            p["reg.step_b"] = step_b
        return p

    def _theta0(self):
        """theta_0 (6,) on the device: the regressor's initial bias, made once (not copied every step)."""
        if getattr(self, "_theta0_array", None) is None:
            self._theta0_array = self.device.asarray(_identity_bias(self.options["init_scale"]), dtype=self.dtype)
        return self._theta0_array

    def _thetas_forward(self, images):
        P, cell = self.params, self.options["cell"]
        feats, c_loc = localisation_forward(P, images, self._loc_names)                     # (N, F)
        thetas, c_steps = ops.recurrent_thetas_forward(                                     # (N, T, 6)
            feats, self._theta0(), tuple(P[k] for k in CELL_PARAMS[cell]), P["reg.w"], P["reg.b"],
            P.get("reg.step_b"), steps=self.steps, cell=cell, feedback=self.options["feedback"] == "theta")
        return thetas, (c_loc, c_steps)

    def _thetas_backward(self, dthetas, cache) -> None:
        c_loc, c_steps = cache
        dfeats, dcell, self.grads["reg.w"], self.grads["reg.b"], dstep = ops.recurrent_thetas_backward(dthetas, c_steps)
        self.grads.update(zip(CELL_PARAMS[self.options["cell"]], dcell))   # summed over the steps
        if dstep is not None:
            self.grads["reg.step_b"] = dstep                                                # (T, 6): row t is step t's
        if self.options.get("tied"):
            # the classifier's backward (run before this) assigned cls.conv1..3's gradients from the
            # glimpse path; the localisation path's part is added to them (the shared weights' total)
            dloc = {}
            localisation_backward(dfeats, c_loc, dloc, TIED_NAMES)
            for k, g in dloc.items():
                self.grads[k] = self.grads[k] + g if k.startswith("cls.") else g
        else:
            localisation_backward(dfeats, c_loc, self.grads)
