"""Tests of minstn.models: construction, shapes, clear errors, state round trips, whole-model
finite-difference gradient checks, and overfitting a small batch.

Gradient checks. They differentiate the whole mean loss (forward, softmax cross-entropy) with
respect to the parameters, in float64, batch N = 2 (N = 1 for the costly d = 1 LSTM-STN case),
the architecture as specified. To stay cheap each parameter array is probed at 1 random
element (chosen among its larger gradient entries), by centred differences. Dropout stays on
with a fixed mask (the same seeded generator for every evaluation). Tolerance: relative error
(minstn.gradcheck.rel_error) <= 1e-6; the measured errors are ~1e-10 .. 5e-7.

Kinks, and the steps h that avoid them:
- ReLU and max-pool kinks are rarely crossed by a single-weight probe at h = 1e-6 (classifier
  weights). A bias moves every unit of its channel at once, so biases use h = 1e-7.
- Bilinear sampling has a kink wherever a sample point crosses an integer pixel coordinate.
  A probe of a 'loc' parameter moves theta and with it all ~10^5 sample points, so at
  h = 1e-6 a few cross (measured on reg.b: relative error ~1e-3 at h = 1e-6, ~1e-9 at 1e-7):
  the 'loc' group uses h = 1e-7 and the regressor, which moves theta directly, h = 1e-8.
- A probe that misses the target is repeated once with a 10x smaller step: a kink inside
  [p - h, p + h] spoils one step size but rarely both (the chance scales with h), while a
  wrong gradient fails at every step.
- The FFN-STN is checked away from the identity transform (init_scale 0.9, regressor_std
  0.01), which would put every sample point exactly on a pixel; all biases but the regressor's
  are jittered by N(0, 0.01), since with zero biases an all-zero (zero-padded) input patch puts
  its ReLU exactly on the kink.
- The LSTM-STN is checked with regressor_std 0.02 (default 1e-3): the 'loc' gradients scale
  with the regressor's weights, and at 1e-3 they are so small that the loss's round-off
  (~1e-16 / h) dominates their relative error.
"""
from __future__ import annotations

import numpy as np
import pytest

from minstn.gradcheck import check_model_gradients
from minstn.models import DEFAULT_OPTIONS, MODEL_NAMES, ModelError, build_model

TOL = 1e-6         # relative-error target of the whole-model check (minstn.gradcheck.check_model_gradients)


# ----- helpers ---------------------------------------------------------------------------------

def toy_canvases(rng, n, dtype="float64"):
    """n canvases (n, 1, 100, 100) with four of ten fixed random 16x16 'glyphs' in a row, and labels (n, 4)."""
    glyphs = np.random.default_rng(123).random((10, 16, 16)) ** 2  # (10, 16, 16) fixed per class
    x = 0.05 * rng.random((n, 1, 100, 100))
    labels = rng.integers(0, 10, size=(n, 4))
    for i in range(n):
        y0 = int(rng.integers(30, 54))
        for k in range(4):
            x0 = 6 + 22 * k + int(rng.integers(0, 4))
            x[i, 0, y0:y0 + 16, x0:x0 + 16] = np.maximum(x[i, 0, y0:y0 + 16, x0:x0 + 16], glyphs[labels[i, k]])
    return x.astype(dtype), labels



# ----- construction and shapes ----------------------------------------------------------------

@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_shapes_groups_and_counts(name, rng):
    model = build_model(name, 2, dtype="float32")
    x, labels = toy_canvases(rng, 3, "float32")
    logits, _ = model.forward(x, train=False)
    assert logits.shape == (3, 4, 10) and logits.dtype == np.float32
    assert set(model.grads) == set(model.params) == set(model.groups)
    assert all(model.grads[k].shape == v.shape for k, v in model.params.items())
    assert set(model.groups.values()) == ({"cls"} if name == "cnn" else {"cls", "loc"})
    assert model.num_params() == sum(v.size for v in model.params.values())
    loss, logits2 = model.loss_and_grads(x, labels, rng=np.random.default_rng(0))
    assert np.isfinite(loss) and 1.0 < loss < 10.0
    assert all(np.isfinite(model.grads[k]).all() and model.grads[k].dtype == np.float32 for k in model.grads)
    assert model.predict(x, batch_size=2).shape == (3, 4, 10)


def test_parameter_counts_follow_the_architecture():
    loc = 200 + 3 * 3620                                   # 4 conv 3x3 blocks of 20 filters
    cls = 320 + 2 * 9248                                   # 3 conv 3x3 layers of 32 filters
    assert build_model("cnn").num_params() == cls + (32 * 25 * 25 + 1) * 400 + 401 * 40
    assert build_model("ffn-stn", 2).num_params() == loc + cls + (32 * 12 * 12 + 1) * 400 + 401 * 40 + 721 * 6
    lstm = (720 + 6 + 256 + 1) * 1024                      # input (features + fed-back theta), recurrent, bias
    steps = 4 * 6                                          # step_spread's per-step theta bias (default on)
    assert build_model("lstm-stn", 4).num_params() == loc + cls + (32 * 6 * 6 + 1) * 400 + 401 * 10 + lstm + 257 * 6 + steps
    assert build_model("lstm-stn", 4, step_spread=0.0).num_params() == loc + cls + (32 * 6 * 6 + 1) * 400 + 401 * 10 + lstm + 257 * 6
    assert build_model("lstm-stn", 3, feedback="none").params["lstm.Wx"].shape == (720, 1024)


def test_cnn_ignores_downsample_and_options_rebuild(rng):
    assert build_model("cnn", 3).downsample == 1
    m = build_model("lstm-stn", 3, feedback="none", init_scale=0.7, dtype="float64")
    again = build_model(m.name, m.downsample, dtype="float64", **m.options)
    assert again.options == m.options and again.downsample == 3
    x, _ = toy_canvases(rng, 2)
    np.testing.assert_array_equal(m.predict(x), again.predict(x))  # same seed, same parameters


def test_defaults_are_the_documented_levers():
    assert DEFAULT_OPTIONS["lstm-stn"]["init_scale"] == 0.5
    assert DEFAULT_OPTIONS["lstm-stn"]["regressor_std"] == 1e-3
    assert DEFAULT_OPTIONS["lstm-stn"]["feedback"] == "theta"
    assert DEFAULT_OPTIONS["lstm-stn"]["step_spread"] == 0.3
    assert all(DEFAULT_OPTIONS[m]["head_init"] == "zero" for m in MODEL_NAMES)
    assert DEFAULT_OPTIONS["ffn-stn"]["init_scale"] == 1.0 and DEFAULT_OPTIONS["ffn-stn"]["regressor_std"] == 0.0
    m = build_model("ffn-stn", 2)
    np.testing.assert_array_equal(m.params["reg.w"], 0)
    np.testing.assert_array_equal(m.params["reg.b"], [1, 0, 0, 0, 1, 0])
    m = build_model("lstm-stn", 2)
    np.testing.assert_array_equal(m.params["reg.b"], [0.5, 0, 0, 0, 0.5, 0])
    assert 0.5e-3 < float(np.std(m.params["reg.w"])) < 2e-3


@pytest.mark.parametrize("d, side", [(1, 100), (2, 50), (3, 33), (4, 25)])
def test_attend_shapes_and_identity_glimpse(d, side, rng):
    x, _ = toy_canvases(rng, 2)
    out = build_model("lstm-stn", d, dtype="float64").attend(x)
    assert out["thetas"].shape == (2, 4, 2, 3) and out["glimpses"].shape == (2, 4, 1, side, side)
    ffn = build_model("ffn-stn", d, dtype="float64").attend(x)
    assert ffn["thetas"].shape == (2, 1, 2, 3) and ffn["glimpses"].shape == (2, 1, 1, side, side)
    if d == 1:  # the FFN-STN starts at the identity: its glimpse is the canvas itself
        np.testing.assert_allclose(ffn["glimpses"][:, 0], x, atol=1e-12)
    if d == 2:  # and at d = 2 the 2x2 mean of the canvas
        np.testing.assert_allclose(ffn["glimpses"][:, 0], x.reshape(2, 1, 50, 2, 50, 2).mean(axis=(3, 5)), atol=1e-12)


# ----- clear errors ---------------------------------------------------------------------------

def test_build_errors():
    with pytest.raises(ModelError, match="unknown model 'rnn'; choose one of cnn, ffn-stn, lstm-stn"):
        build_model("rnn")
    for bad in (0, 5, 2.0, True):
        with pytest.raises(ModelError, match="downsample must be an integer in 1..4"):
            build_model("lstm-stn", bad)
    with pytest.raises(ModelError, match=r"unknown option\(s\) \['feedback'\] for model 'ffn-stn'"):
        build_model("ffn-stn", 2, feedback="theta")
    with pytest.raises(ModelError, match="lstm-stn: feedback must be one of 'none', 'theta', got 'glimpse'"):
        build_model("lstm-stn", 2, feedback="glimpse")
    with pytest.raises(ModelError, match=r"cnn: dropout must be a finite number >= 0 and < 1, got 1.0"):
        build_model("cnn", dropout=1.0)
    with pytest.raises(ModelError, match="init_scale must be a finite number > 0, got 0"):
        build_model("ffn-stn", 2, init_scale=0)
    with pytest.raises(ModelError, match="regressor_std must be a finite number >= 0, got -0.001"):
        build_model("ffn-stn", 2, regressor_std=-1e-3)
    with pytest.raises(ModelError, match="hidden_size must be an integer >= 1 and <= 8192, got 0"):
        build_model("lstm-stn", 2, hidden_size=0)
    with pytest.raises(ModelError, match="hidden_size must be an integer >= 1 and <= 8192, got 2.5"):
        build_model("lstm-stn", 2, hidden_size=2.5)
    with pytest.raises(ModelError, match="step_spread must be a finite number >= 0 and <= 1, got True"):
        build_model("lstm-stn", 2, step_spread=True)
    with pytest.raises(ModelError, match="sampler_impl must be"):
        build_model("lstm-stn", 2, sampler_impl="fast")
    with pytest.raises(ModelError, match="dtype must be 'float32'"):
        build_model("cnn", dtype="float16")


def test_call_errors(rng):
    m = build_model("ffn-stn", 2, dtype="float32")
    x, labels = toy_canvases(rng, 2, "float32")
    with pytest.raises(ModelError, match=r"images must have shape \(N, 1, 100, 100\).*got \(2, 100, 100\)"):
        m.forward(x[:, 0], train=False)
    with pytest.raises(ModelError, match=r"images must have shape \(N, 1, 100, 100\)"):
        m.forward(np.zeros((2, 1, 64, 64), np.float32), train=False)
    with pytest.raises(TypeError, match="images have dtype float64, but the model computes in float32"):
        m.forward(x.astype(np.float64), train=False)
    with pytest.raises(TypeError, match="images must be a NumPy or CuPy array"):
        m.forward(x.tolist(), train=False)
    with pytest.raises(ModelError, match=r"labels must have shape \(N, 4\) = \(2, 4\)"):
        m.loss_and_grads(x, labels[:, :3], rng=rng)
    with pytest.raises(TypeError, match="labels must be integers"):
        m.loss_and_grads(x, labels.astype(np.float32), rng=rng)
    with pytest.raises(ModelError, match="needs rng"):
        m.loss_and_grads(x, labels)
    with pytest.raises(ModelError, match="has no spatial transformer"):
        build_model("cnn").attend(x)
    with pytest.raises(ModelError, match="batch_size must be at least 1"):
        m.predict(x, batch_size=0)
    with pytest.raises(TypeError, match="images must be a NumPy or CuPy array"):
        m.predict(x.tolist())
    with pytest.raises(TypeError, match="images have dtype float64"):
        m.attend(x.astype(np.float64))
    with pytest.raises(ModelError, match=r"images must have shape \(N, 1, 100, 100\)"):
        m.predict(x[:0])


def test_state_round_trip_and_load_errors(rng):
    a = build_model("lstm-stn", 4, dtype="float64", seed=1)
    b = build_model("lstm-stn", 4, dtype="float64", seed=2)
    x, _ = toy_canvases(rng, 2)
    state = a.state()
    assert all(type(v) is np.ndarray for v in state.values())
    state["reg.b"][0] = 123.0                        # a host copy: the model is untouched
    assert a.params["reg.b"][0] == 0.5
    b.load_state(a.state())
    np.testing.assert_array_equal(a.predict(x), b.predict(x))
    with pytest.raises(ModelError, match=r"missing: \['lstm.b'\]"):
        b.load_state({k: v for k, v in a.state().items() if k != "lstm.b"})
    with pytest.raises(ModelError, match=r"unexpected: \['extra'\]"):
        b.load_state({**a.state(), "extra": np.zeros(1)})
    with pytest.raises(ModelError, match=r"cls.fc.w: model \(1152, 400\) vs state \(4608, 400\)"):
        b.load_state(build_model("lstm-stn", 2, dtype="float64").state())
    with pytest.raises(TypeError, match="load_state needs a dict"):
        b.load_state([1, 2])


# ----- finite-difference gradient checks --------------------------------------------------------

LOC_AND_HEAD = "loc+head"  # probe the loc group (its gradient crosses the whole classifier) and the head


GRADCHECK_CASES = [  # (model, d, options, N, elements per parameter, which parameters)
    # the default head_init 'zero' makes every gradient but the head's exactly 0 at the start,
    # which a check could not fail on: the checks use 'he' (test_zero_head_... covers 'zero')
    ("cnn", 1, {"head_init": "he"}, 2, 1, None),
    ("ffn-stn", 2, {"init_scale": 0.9, "regressor_std": 0.01, "head_init": "he"}, 2, 1, None),  # off the identity's integer points
    ("lstm-stn", 3, {"feedback": "theta", "regressor_std": 0.02, "head_init": "he"}, 2, 1, None),
    ("lstm-stn", 2, {"feedback": "none", "regressor_std": 0.02, "head_init": "he"}, 2, 1, LOC_AND_HEAD),
    ("lstm-stn", 1, {"feedback": "theta", "regressor_std": 0.02, "head_init": "he"}, 1, 1, LOC_AND_HEAD),
    ("lstm-stn", 4, {"feedback": "theta", "regressor_std": 0.02, "step_spread": 0.4, "head_init": "he"}, 2, 1, LOC_AND_HEAD),
    ("lstm-stn", 3, {"cell": "gru", "regressor_std": 0.02, "head_init": "he", "hidden_size": 16}, 2, 1, None),
    ("lstm-stn", 3, {"cell": "rnn", "regressor_std": 0.02, "head_init": "he", "hidden_size": 16}, 2, 1, None),
    ("lstm-stn", 4, {"cell": "gru", "digits": 3, "cls_filters": 8, "regressor_std": 0.02, "head_init": "he",
                     "hidden_size": 16}, 2, 1, None),
    ("ffn-stn", 4, {"digits": 3, "cls_filters": 96, "init_scale": 0.9, "regressor_std": 0.01, "head_init": "he"}, 2, 1, None),
]


@pytest.mark.parametrize("name, d, options, n, n_elem, which", GRADCHECK_CASES)
def test_whole_model_gradients(name, d, options, n, n_elem, which):
    """Every parameter is probed in the CNN, FFN-STN and LSTM-STN (d=3) cases. The costlier
    LSTM-STN cases (d=2 without feedback, d=1 with N=1) probe the 'loc' group, whose gradient
    passes through every classifier layer, the pooling, the sampler and the BPTT loop, plus the head."""
    model = build_model(name, d, dtype="float64", seed=3, **options)
    jitter = np.random.default_rng(2)
    for k, p in model.params.items():  # zero biases put ReLUs of all-zero (padded) patches exactly on the kink
        if k.endswith(".b") and k != "reg.b":
            p += 0.01 * jitter.standard_normal(p.shape)
    x, labels = toy_canvases(np.random.default_rng(4), n)
    labels = labels[:, :model.digits]                                  # three-digit cases read the first three
    names = None if which is None else [k for k, g in model.groups.items() if g == "loc" or k.startswith("cls.head")]
    errors = check_model_gradients(model, x, labels, n_elem=n_elem, names=names)
    assert set(errors) == set(names or model.params)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOL, f"{name} d={d} {options}: {worst} relative error {errors[worst]:.2e}; all: {errors}"


# ----- overfitting a small batch ----------------------------------------------------------------

def adam_steps(model, x, labels, steps, lr):
    """A tiny local Adam (beta 0.9 / 0.999) for the overfit tests; returns the loss trace."""
    m = {k: np.zeros_like(v) for k, v in model.params.items()}
    v = {k: np.zeros_like(p) for k, p in model.params.items()}
    rng = np.random.default_rng(0)
    trace = []
    for t in range(1, steps + 1):
        loss, _ = model.loss_and_grads(x, labels, rng=rng)
        trace.append(loss)
        for k, p in model.params.items():
            g = model.grads[k]
            m[k] = 0.9 * m[k] + 0.1 * g
            v[k] = 0.999 * v[k] + 0.001 * g * g
            p -= lr * (m[k] / (1 - 0.9 ** t)) / (np.sqrt(v[k] / (1 - 0.999 ** t)) + 1e-8)
    return trace


@pytest.mark.parametrize("name, d, steps, factor", [("cnn", 1, 6, 20), ("ffn-stn", 4, 15, 10), ("lstm-stn", 4, 20, 2.5)])
def test_overfits_a_small_batch(name, d, steps, factor):
    """4 toy canvases, dropout off, Adam 1e-3: the loss must fall by `factor`. Measured: CNN
    2.45 -> 0.02 in 6 steps, FFN-STN 2.34 -> 0.06 in 15, LSTM-STN 2.62 -> 0.82 in 20 (its one
    shared head must tell the four steps apart, so the glimpses have to move first). He-initialised
    heads: with the default zero head the first steps only fit the head (the LSTM-STN then needs
    30 steps for 2.30 -> 0.75), which tests less of the backward pass."""
    model = build_model(name, d, dtype="float32", seed=0, dropout=0.0, head_init="he")
    x, labels = toy_canvases(np.random.default_rng(5), 4, "float32")
    trace = adam_steps(model, x, labels, steps, lr=1e-3)
    assert trace[-1] < trace[0] / factor, f"{name}: loss {trace[0]:.3f} -> {trace[-1]:.3f} ({np.round(trace, 3)})"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_zero_head_starts_at_uniform_predictions(name, rng):
    """head_init='zero': logits 0, loss exactly ln 10; only the head gets a gradient at step 0;
    every other parameter equals the 'he' model's (the random draw is still made)."""
    he = build_model(name, 2, dtype="float64", seed=3)
    zero = build_model(name, 2, dtype="float64", seed=3, head_init="zero")
    assert not np.any(zero.params["cls.head.w"])
    for k in he.params:
        if k != "cls.head.w":
            np.testing.assert_array_equal(zero.params[k], he.params[k], err_msg=k)
    x = rng.random((2, 1, 100, 100))
    loss, logits = zero.loss_and_grads(x, rng.integers(0, 10, size=(2, 4)), rng=np.random.default_rng(0))
    assert loss == pytest.approx(np.log(10), abs=1e-12) and not np.any(logits)
    assert np.any(zero.grads["cls.head.w"])
    assert all(not np.any(g) for k, g in zero.grads.items() if k not in ("cls.head.w", "cls.head.b"))
    with pytest.raises(ModelError, match="head_init must be one of 'he', 'zero', got 'small'"):
        build_model(name, 2, head_init="small")


def test_step_spread_adds_a_per_step_bias(rng):
    """step_spread s: reg.step_b (4, 6) in the 'loc' group, glimpse centres at tx = s * (t - 1.5)."""
    m = build_model("lstm-stn", 4, dtype="float64", seed=0, step_spread=0.4, regressor_std=0.0)
    assert m.params["reg.step_b"].shape == (4, 6) and m.groups["reg.step_b"] == "loc"
    th = m.attend(rng.random((2, 1, 100, 100)))["thetas"]                       # (2, 4, 2, 3)
    np.testing.assert_allclose(th[:, :, 0, 2], [[-0.6, -0.2, 0.2, 0.6]] * 2, atol=1e-12)
    assert "reg.step_b" not in build_model("lstm-stn", 4, seed=0, step_spread=0.0).params
    with pytest.raises(ModelError, match="step_spread must be a finite number >= 0 and <= 1, got 2.0"):
        build_model("lstm-stn", 4, step_spread=2.0)


def test_cells_digits_and_classifier_width_shape_the_parameters():
    gru = build_model("lstm-stn", 2, cell="gru", hidden_size=8)
    assert gru.params["gru.Wx"].shape == (726, 24) and gru.params["gru.bh"].shape == (24,) and "lstm.Wx" not in gru.params
    rnn = build_model("lstm-stn", 2, cell="rnn", hidden_size=8)
    assert rnn.params["rnn.Wh"].shape == (8, 8) and rnn.params["rnn.b"].shape == (8,)
    three = build_model("lstm-stn", 2, digits=3)
    assert three.steps == 3 and three.params["reg.step_b"].shape == (3, 6)
    wide = build_model("ffn-stn", 2, cls_filters=96, digits=3)
    assert wide.params["cls.conv2.w"].shape == (96, 96, 3, 3) and wide.params["cls.head.w"].shape == (400, 30)
    x = np.zeros((2, 1, 100, 100), np.float32)
    assert build_model("cnn", digits=3).predict(x).shape == (2, 3, 10)
    with pytest.raises(ModelError, match=r"labels must have shape \(N, 3\)"):
        three.loss_and_grads(x, np.zeros((2, 4), int), np.random.default_rng(0))
    with pytest.raises(ModelError, match="cell must be one of 'lstm', 'gru', 'rnn', got 'ugrnn'"):
        build_model("lstm-stn", 2, cell="ugrnn")
