"""The single-digit models (minstn.models.digits, minstn.models.tstn) and the tied LSTM-STN
(minstn.models.stn, tied=True): parameter budgets, shapes, errors, whole-model finite-difference
gradient checks, shared weights' gradients, the identity start, plain vs fast ops, and one step on
the GPU stand-in.

Gradient checks: float64, N = 2, small images (12..16 pixels: every layer is there, only the maps
are small), every parameter probed at one element among its larger gradient entries, relative
error <= 1e-6 (minstn.gradcheck.check_model_gradients; measured 1e-9 .. 3e-7). As in
tests/test_models.py: He-initialised heads (a zero head makes every other gradient 0), the
transformer started off the identity (init_scale 0.9, regressor_std 0.01: the identity puts every
sample point on a pixel centre, a kink of the bilinear sampler) and every bias but the
regressor's jittered by N(0, 0.01) (a ReLU of an all-zero patch sits on its kink). A weight that a
tied model shares between its two paths moves theta like a localisation weight, so it is probed
with the localisation step (model.shared, minstn.gradcheck._step).
"""
from __future__ import annotations

import numpy as np
import pytest

from minstn.gradcheck import check_model_gradients
from minstn.models import ALL_MODEL_NAMES, DIGIT_MODEL_NAMES, MODEL_NAMES, ModelError, build_model
from minstn.models.digits import cnn_budget
from minstn.ops.switch import use_fast
from tests.test_cuda_source import emu_lib  # noqa: F401 (fixture of the GPU stand-in test)
from tests.test_models import toy_canvases

TOL = 1e-6
OFF_IDENTITY = {"init_scale": 0.9, "regressor_std": 0.01}


def _images(n, side, seed=4, digits=1):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, side, side)), rng.integers(0, 10, size=(n, digits))


def _jitter(model):
    rng = np.random.default_rng(2)
    for k, p in model.params.items():
        if k.endswith(".b") and k != "reg.b":
            p += 0.01 * rng.standard_normal(p.shape)


# ----- names, budgets, shapes -------------------------------------------------------------------

def test_names_do_not_clash_and_unknown_names_list_both_families():
    assert set(MODEL_NAMES).isdisjoint(DIGIT_MODEL_NAMES) and ALL_MODEL_NAMES == MODEL_NAMES + DIGIT_MODEL_NAMES
    with pytest.raises(ModelError, match=r"unknown model 'cnn-small'; choose one of cnn, ffn-stn, lstm-stn .* or "
                                         r"fcn, mnist-cnn, st-fcn, st-cnn, tstn, tstn-cnn"):
        build_model("cnn-small")


# model.num_params() at P = 1, affine: the docstrings of minstn.models.digits and tstn quote these
COUNTS = {
    28: {"mnist-cnn": 50_186, "fcn": 50_455, "st-fcn": 49_868, "st-cnn": 50_476},
    42: {"mnist-cnn": 82_826, "fcn": 81_955, "st-fcn": 82_489, "st-cnn": 82_610},
    60: {"mnist-cnn": 162_826, "fcn": 164_575, "st-fcn": 161_424, "st-cnn": 162_476},
}
TSTN_COUNTS = {28: (2_075_363, 2_168_035, 819_557), 60: (9_780_963, 9_873_635, 4_019_557)}


@pytest.mark.parametrize("side", [28, 42, 60])
def test_the_stn_paper_models_share_one_parameter_budget(side):
    """The CNN's count is the budget; the FCN's width and the ST models' classifiers are fitted to it
    (the localisation net included): within 1.1 % of it at the three image sizes."""
    budget = cnn_budget(side, 1)
    for name, count in COUNTS[side].items():
        model = build_model(name, image_size=side)
        assert model.num_params() == count, name
        assert abs(count - budget) <= 0.011 * budget, f"{name} at {side}: {count} vs budget {budget}"
    assert build_model("mnist-cnn", image_size=side).num_params() == budget
    assert build_model("st-cnn", image_size=side, transform="projective").num_params() == COUNTS[side]["st-cnn"] + 66


@pytest.mark.parametrize("side", [28, 60])
def test_tstn_counts_follow_the_papers_architecture(side):
    tied, untied, cnn = (build_model("tstn", image_size=side), build_model("tstn", image_size=side, tied=False),
                         build_model("tstn-cnn", image_size=side))
    assert (tied.num_params(), untied.num_params(), cnn.num_params()) == TSTN_COUNTS[side]
    convs = 32 * 9 + 32 + 64 * 32 * 9 + 64 + 128 * 64 * 9 + 128
    s2, s3 = side // 4, side // 8
    assert cnn.num_params() == convs + (128 * s3 * s3 + 1) * 625 + 626 * 10
    assert tied.num_params() == cnn.num_params() + (128 * s2 * s2 + 1) * 200 + 201 * 6
    assert untied.num_params() == tied.num_params() + convs
    assert tied.params["loc.fc.w"].shape == (128 * s2 * s2, 200)          # the localisation CNN keeps its last map
    assert tied.shared == tuple(f"cls.conv{k}.{s}" for k in (1, 2, 3) for s in ("w", "b")) and not untied.shared
    assert {tied.groups[k] for k in tied.shared} == {"cls"} and untied.groups["loc.conv1.w"] == "loc"


@pytest.mark.parametrize("name", DIGIT_MODEL_NAMES)
def test_forward_shapes_groups_and_defaults(name):
    model = build_model(name, 3, dtype="float32")                          # d is ignored: no down-sampling
    side = model.image_side
    assert model.downsample == 1 and side == (60 if name.startswith("tstn") else 28) and model.digits == 1
    x, y = _images(3, side)
    x = x.astype(np.float32)
    logits, _ = model.forward(x, train=False)
    assert logits.shape == (3, 1, 10) and logits.dtype == np.float32
    loss, _ = model.loss_and_grads(x, y, rng=np.random.default_rng(0))
    assert loss == pytest.approx(np.log(10), abs=1e-6)                      # the zero head: uniform predictions
    assert set(model.grads) == set(model.params) == set(model.groups)
    assert model.transformer == (name in ("st-fcn", "st-cnn", "tstn"))
    assert model.predict(x, batch_size=2).shape == (3, 1, 10)
    again = build_model(name, dtype="float32", **model.options)
    np.testing.assert_array_equal(again.predict(x), model.predict(x))
    if not model.transformer:
        with pytest.raises(ModelError, match="has no spatial transformer"):
            model.attend(x)


@pytest.mark.parametrize("name", ["st-fcn", "st-cnn", "tstn"])
@pytest.mark.parametrize("transform", ["affine", "projective"])
def test_the_transformer_starts_at_the_identity(name, transform):
    """Default init: regressor weights 0, bias the identity: the transformed image is the image itself
    (align_corners=False reproduces it exactly), affine or projective (g = h = 0)."""
    model = build_model(name, dtype="float64", image_size=16, transform=transform)
    x, _ = _images(2, 16)
    out = model.attend(x, batch_size=1)
    assert out["thetas"].shape == (2, 1, 2, 3) and out["glimpses"].shape == (2, 1, 1, 16, 16)
    np.testing.assert_allclose(out["glimpses"][:, 0], x, atol=1e-12)
    np.testing.assert_array_equal(out["thetas"][:, 0], np.tile([[1.0, 0, 0], [0, 1.0, 0]], (2, 1, 1)))
    assert ("perspective" in out) == (transform == "projective")


def test_the_projective_transform_never_reaches_the_horizon():
    """g, h = 0.45 tanh(raw): even a huge raw perspective keeps the grid's denominator above 0.1,
    so the projective grid (which raises at the horizon) always works."""
    model = build_model("st-cnn", dtype="float64", image_size=16, transform="projective")
    model.params["reg.b"][6:] = [1e3, -1e3]
    x, y = _images(2, 16)
    loss, _ = model.loss_and_grads(x, y, rng=np.random.default_rng(0))
    assert np.isfinite(loss)
    np.testing.assert_allclose(model.attend(x)["perspective"][:, 0], [[0.45, -0.45]] * 2)


def test_errors():
    with pytest.raises(ModelError, match="image_size must be an integer >= 8 and <= 512, got 7"):
        build_model("st-cnn", image_size=7)
    with pytest.raises(ModelError, match=r"unknown option\(s\) \['tied'\] for model 'st-cnn'"):
        build_model("st-cnn", tied=True)
    with pytest.raises(ModelError, match=r"unknown option\(s\) \['tied'\] for model 'ffn-stn'"):
        build_model("ffn-stn", tied=True)
    with pytest.raises(ModelError, match="transform must be one of 'affine', 'projective', got 'tps'"):
        build_model("tstn", transform="tps")
    with pytest.raises(ModelError, match="tied must be True or False, got 1"):
        build_model("lstm-stn", tied=1)
    with pytest.raises(ModelError, match=r"unknown option\(s\) \['image_size'\] for model 'lstm-stn'"):
        build_model("lstm-stn", image_size=28)
    model = build_model("st-cnn", dtype="float32")
    with pytest.raises(ModelError, match=r"images must have shape \(N, 1, 28, 28\).*got \(2, 1, 42, 42\)"):
        model.predict(np.zeros((2, 1, 42, 42), np.float32))
    with pytest.raises(ModelError, match=r"labels must have shape \(N, 1\) = \(2, 1\)"):
        model.loss_and_grads(np.zeros((2, 1, 28, 28), np.float32), np.zeros((2, 4), int), np.random.default_rng(0))


# ----- finite-difference gradient checks ---------------------------------------------------------

GRADCHECK_CASES = [  # (model, options)
    ("fcn", {"image_size": 12}),
    ("mnist-cnn", {"image_size": 12}),
    ("st-fcn", {"image_size": 12, **OFF_IDENTITY}),
    ("st-fcn", {"image_size": 12, "transform": "projective", "digits": 2, **OFF_IDENTITY}),
    ("st-cnn", {"image_size": 16, **OFF_IDENTITY}),
    ("st-cnn", {"image_size": 16, "transform": "projective", **OFF_IDENTITY}),
    ("tstn", {"image_size": 16, **OFF_IDENTITY}),
    ("tstn", {"image_size": 16, "tied": False, **OFF_IDENTITY}),
    ("tstn-cnn", {"image_size": 16}),
]


@pytest.mark.parametrize("name, options", GRADCHECK_CASES)
def test_whole_model_gradients(name, options):
    model = build_model(name, dtype="float64", seed=3, head_init="he", **options)
    _jitter(model)
    x, y = _images(2, model.image_side, digits=model.digits)
    errors = check_model_gradients(model, x, y, n_elem=1)
    assert set(errors) == set(model.params)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOL, f"{name} {options}: {worst} relative error {errors[worst]:.2e}; all: {errors}"


@pytest.mark.parametrize("d, options", [
    (4, {"cls_filters": 8, "hidden_size": 16}),
    (3, {"cls_filters": 8, "hidden_size": 16, "feedback": "none", "cell": "gru"}),
])
def test_tied_lstm_stn_gradients(d, options):
    model = build_model("lstm-stn", d, dtype="float64", seed=3, head_init="he", regressor_std=0.02, tied=True, **options)
    assert "loc.conv1.w" not in model.params and model.params["loc.conv4.w"].shape == (8, 8, 3, 3)
    _jitter(model)
    x, y = toy_canvases(np.random.default_rng(4), 2)
    errors = check_model_gradients(model, x, y, n_elem=1)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOL, f"tied lstm-stn d={d} {options}: {worst} {errors[worst]:.2e}; all: {errors}"


# ----- tied weights: the sum of both paths' gradients --------------------------------------------

def _tied_and_untied(name, d, tied_options, side):
    """A tied model and an untied one holding the same weights (its loc convs = the tied model's
    cls convs), so the two compute the same function."""
    tied = build_model(name, d, dtype="float64", seed=5, head_init="he", tied=True, **tied_options)
    untied = build_model(name, d, dtype="float64", seed=6, head_init="he", tied=False, **tied_options)
    state = tied.state()
    for k in (1, 2, 3):
        for s in ("w", "b"):
            state[f"loc.conv{k}.{s}"] = state[f"cls.conv{k}.{s}"]
    untied.load_state(state)
    return tied, untied


@pytest.mark.parametrize("name, d, options, side", [
    ("tstn", 1, {"image_size": 16, **OFF_IDENTITY}, 16),
    # cls_filters 20: the untied LSTM-STN's localisation net (20 filters) then has the tied one's shapes
    ("lstm-stn", 4, {"cls_filters": 20, "hidden_size": 8, "regressor_std": 0.02}, 100),
])
def test_shared_weights_get_the_sum_of_both_paths_gradients(name, d, options, side):
    tied, untied = _tied_and_untied(name, d, options, side)
    x, y = (_images(2, side) if name == "tstn" else toy_canvases(np.random.default_rng(4), 2))
    lt, _ = tied.loss_and_grads(x, y, rng=np.random.default_rng(0))
    lu, _ = untied.loss_and_grads(x, y, rng=np.random.default_rng(0))
    assert lt == pytest.approx(lu, rel=1e-13)                               # the same function
    assert set(tied.shared) == {f"cls.conv{k}.{s}" for k in (1, 2, 3) for s in ("w", "b")}
    for k, g in tied.grads.items():
        if k in tied.shared:
            both = untied.grads[k] + untied.grads["loc" + k[3:]]
            np.testing.assert_allclose(g, both, rtol=1e-10, atol=1e-14, err_msg=k)
            assert np.abs(untied.grads["loc" + k[3:]]).max() > 1e-6 * np.abs(g).max()   # the loc path counts
        else:
            np.testing.assert_allclose(g, untied.grads[k], rtol=1e-10, atol=1e-14, err_msg=k)


def test_tied_lstm_stn_layout():
    """tied: the localisation net's blocks 1..3 are the classifier's convs, block 4 its own (F filters)."""
    tied, untied = build_model("lstm-stn", 2, tied=True), build_model("lstm-stn", 2)
    assert (tied.num_params(), untied.num_params()) == (3_326_200, 2_885_644)
    assert tied.params["lstm.Wx"].shape == (32 * 36 + 6, 1024) and tied.params["loc.conv4.w"].shape == (32, 32, 3, 3)
    assert not any(k.startswith(("loc.conv1", "loc.conv2", "loc.conv3")) for k in tied.params)
    assert tied.options["tied"] is True and untied.options["tied"] is False
    assert build_model("lstm-stn", 2, tied=False).options == untied.options
    assert build_model("tstn").options["tied"] is True and build_model("tstn", tied=False).options["tied"] is False


# ----- the plain and fast ops give the same model ------------------------------------------------

@pytest.mark.parametrize("name, options", [("st-cnn", {"transform": "projective"}), ("tstn", {}), ("fcn", {})])
def test_plain_and_fast_ops_agree(name, options):
    model = build_model(name, dtype="float64", seed=0, head_init="he", image_size=20, **OFF_IDENTITY, **options) \
        if name != "fcn" else build_model(name, dtype="float64", seed=0, head_init="he", image_size=20)
    x, y = _images(2, 20)
    out = {}
    for fast in (False, True):
        with use_fast(fast):
            loss, _ = model.loss_and_grads(x, y, rng=np.random.default_rng(0))
            out[fast] = (loss, {k: g.copy() for k, g in model.grads.items()})
    assert out[True][0] == pytest.approx(out[False][0], rel=1e-12)
    for k, g in out[False][1].items():
        np.testing.assert_allclose(out[True][1][k], g, rtol=1e-9, atol=1e-13, err_msg=k)


@pytest.mark.parametrize("name", ["st-fcn", "st-cnn"])
def test_fits_a_small_batch(name):
    """Four noise images, dropout off, Adam 1e-3 for 25 steps: the loss falls by 20x (measured
    st-cnn 4.27 -> 0.13, st-fcn 3.26 -> 0.04)."""
    from tests.test_models import adam_steps

    model = build_model(name, dtype="float32", seed=0, dropout=0.0, head_init="he", image_size=28)
    x, y = _images(4, 28, seed=5)
    trace = adam_steps(model, x.astype(np.float32), y, 25, lr=1e-3)
    assert trace[-1] < trace[0] / 20, np.round(trace, 3)


# ----- the GPU path, on the CuPy stand-in --------------------------------------------------------

@pytest.mark.gpu_emulated
@pytest.mark.parametrize("name, options", [("st-cnn", {"transform": "projective"}), ("tstn", {}),
                                           ("lstm-stn", {"tied": True, "hidden_size": 8, "cls_filters": 8})])
def test_a_step_on_the_gpu_stand_in_equals_the_cpu_step(emu_lib, name, options):  # noqa: F811
    from minstn import backend
    from tests import fake_cupy

    backend._PROBED.clear()
    try:
        with fake_cupy.installed(emu_lib):
            side = 100 if name == "lstm-stn" else 16
            extra = {} if name == "lstm-stn" else {"image_size": side}
            x, y = _images(2, side, digits=4 if name == "lstm-stn" else 1)
            results = {}
            for dev in ("cpu", "gpu"):
                model = build_model(name, 2, dtype="float64", device=dev, seed=0, head_init="he", dropout=0.0,
                                    **OFF_IDENTITY, **extra, **options)
                loss, _ = model.loss_and_grads(x, y)
                results[dev] = (float(loss), {k: backend.to_numpy(g) for k, g in model.grads.items()})
                assert all(backend.is_cupy(g) == (dev == "gpu") for g in model.grads.values())
    finally:
        backend._PROBED.clear()
    assert results["gpu"][0] == pytest.approx(results["cpu"][0], rel=1e-12)
    for k, g in results["cpu"][1].items():
        np.testing.assert_allclose(results["gpu"][1][k], g, rtol=1e-9, atol=1e-12, err_msg=k)
