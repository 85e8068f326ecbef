"""Optimisers, clipping, schedules and early stopping (minstn.training.optim)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from minstn.training import optim


def _params(rng):
    return {"w": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)}


# ----------------------------------------------------------------------------- hand-computed steps


def test_sgd_two_steps_by_hand():
    p = {"w": np.array([1.0, -2.0])}
    opt = optim.SGD(p, lr=0.1, momentum=0.5)
    g1, g2 = np.array([0.5, 1.0]), np.array([-1.0, 2.0])
    opt.step({"w": g1})
    # buf = g1; p = p0 - 0.1 * g1
    np.testing.assert_allclose(p["w"], [1.0 - 0.05, -2.0 - 0.1], rtol=0, atol=1e-15)
    opt.step({"w": g2})
    buf = 0.5 * g1 + g2  # [-0.75, 2.5]
    np.testing.assert_allclose(p["w"], np.array([0.95, -2.1]) - 0.1 * buf, rtol=0, atol=1e-15)


def test_sgd_nesterov_by_hand():
    p = {"w": np.array([0.0])}
    opt = optim.SGD(p, lr=1.0, momentum=0.9, nesterov=True)
    opt.step({"w": np.array([1.0])})
    # buf = 1; d = g + 0.9 * buf = 1.9
    np.testing.assert_allclose(p["w"], [-1.9], atol=1e-15)


def test_rmsprop_step_by_hand():
    p = {"w": np.array([1.0, 1.0])}
    opt = optim.RMSprop(p, lr=0.01, rho=0.9, eps=1e-8)
    g = np.array([2.0, -0.5])
    opt.step({"w": g})
    s = 0.1 * g**2
    np.testing.assert_allclose(p["w"], 1.0 - 0.01 * g / (np.sqrt(s) + 1e-8), rtol=1e-14)


def test_adam_two_steps_by_hand():
    p = {"w": np.array([0.5])}
    opt = optim.Adam(p, lr=0.1)
    g1, g2 = 0.2, -0.4
    opt.step({"w": np.array([g1])})
    # step 1: m_hat = g1, v_hat = g1^2 -> p -= 0.1 * g1 / (|g1| + eps)
    expected = 0.5 - 0.1 * g1 / (abs(g1) + 1e-8)
    np.testing.assert_allclose(p["w"], [expected], rtol=1e-14)
    opt.step({"w": np.array([g2])})
    m = 0.9 * 0.1 * g1 + 0.1 * g2
    v = 0.999 * 0.001 * g1**2 + 0.001 * g2**2
    m_hat, v_hat = m / (1 - 0.9**2), v / (1 - 0.999**2)
    expected -= 0.1 * m_hat / (math.sqrt(v_hat) + 1e-8)
    np.testing.assert_allclose(p["w"], [expected], rtol=1e-14)


def test_lr_mult_scales_the_step_per_parameter():
    p = {"a": np.array([0.0]), "b": np.array([0.0])}
    opt = optim.SGD(p, lr=1.0, momentum=0.0, lr_mult={"a": 0.1})
    opt.step({"a": np.array([1.0]), "b": np.array([1.0])})
    np.testing.assert_allclose([p["a"][0], p["b"][0]], [-0.1, -1.0])


def test_weight_decay_adds_l2_and_leaves_grads_untouched():
    p = {"w": np.array([2.0])}
    g = {"w": np.array([1.0])}
    opt = optim.SGD(p, lr=0.5, momentum=0.0, weight_decay=0.1)
    opt.step(g)
    np.testing.assert_allclose(p["w"], [2.0 - 0.5 * (1.0 + 0.2)])
    assert g["w"][0] == 1.0


@pytest.mark.parametrize("name", ["adam", "sgd", "rmsprop"])
def test_step_never_modifies_grads(name, rng):
    p = _params(rng)
    grads = {k: rng.standard_normal(v.shape) for k, v in p.items()}
    before = {k: v.copy() for k, v in grads.items()}
    opt = optim.build_optimizer(name, p, lr=0.01, weight_decay=0.01)
    for _ in range(3):
        opt.step(grads)
    for k in grads:
        np.testing.assert_array_equal(grads[k], before[k])


@pytest.mark.parametrize("name,lr", [("adam", 0.05), ("sgd", 0.05), ("rmsprop", 0.01)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_converges_on_a_quadratic(name, lr, dtype, rng):
    # f(p) = 0.5 * sum(a * (p - c)^2), a > 0: minimum at p = c
    a = rng.uniform(0.5, 2.0, size=5).astype(dtype)
    c = rng.standard_normal(5).astype(dtype)
    p = {"x": np.zeros(5, dtype=dtype)}
    opt = optim.build_optimizer(name, p, lr=lr)
    for _ in range(2000):
        opt.step({"x": a * (p["x"] - c)})
    assert p["x"].dtype == dtype
    np.testing.assert_allclose(p["x"], c, atol=1e-2)


# ----------------------------------------------------------------------------- state


@pytest.mark.parametrize("name", ["adam", "sgd", "rmsprop"])
def test_state_round_trip_continues_exactly(name, rng):
    grads = [{k: rng.standard_normal(v) for k, v in (("w", (3, 4)), ("b", (4,)))} for _ in range(6)]
    p1 = _params(np.random.default_rng(1))
    p2 = {k: v.copy() for k, v in p1.items()}
    o1 = optim.build_optimizer(name, p1, lr=0.01, lr_mult={"b": 0.5})
    o2 = optim.build_optimizer(name, p2, lr=0.01, lr_mult={"b": 0.5})
    for g in grads[:3]:
        o1.step(g)
        o2.step(g)
    state = o1.state()
    json.dumps({k: v for k, v in state.items() if k != "arrays"})  # scalars are JSON-able
    fresh = {k: v.copy() for k, v in p2.items()}
    o3 = optim.build_optimizer(name, fresh, lr=0.5)
    o3.load_state(state)
    assert o3.t == 3 and o3.lr == 0.01 and o3.lr_mult["b"] == 0.5
    for g in grads[3:]:
        o1.step(g)
        o3.step(g)
    for k in p1:
        np.testing.assert_array_equal(p1[k], fresh[k])


def test_load_state_rejects_other_kinds_and_shapes(rng):
    adam = optim.Adam(_params(rng), lr=0.1)
    with pytest.raises(ValueError, match="state is for 'Adam'"):
        optim.SGD(_params(rng), lr=0.1).load_state(adam.state())
    bad = adam.state()
    bad["arrays"]["m/w"] = np.zeros((2, 2))
    with pytest.raises(ValueError, match="has shape"):
        optim.Adam(_params(rng), lr=0.1).load_state(bad)
    other = optim.Adam({"z": np.zeros(3)}, lr=0.1).state()
    with pytest.raises(ValueError, match="does not match the parameters"):
        optim.Adam(_params(rng), lr=0.1).load_state(other)


def test_bad_arguments_are_clear_errors(rng):
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        optim.Adam(_params(rng), lr=-1.0)
    with pytest.raises(TypeError, match="lr must be a number"):
        optim.Adam(_params(rng), lr="0.1")
    with pytest.raises(TypeError, match="non-empty dict"):
        optim.Adam({}, lr=0.1)
    with pytest.raises(ValueError, match="lr_mult names parameters the model does not have"):
        optim.Adam(_params(rng), lr=0.1, lr_mult={"nope": 0.1})
    with pytest.raises(ValueError, match=r"lr_mult\['w'\] must be"):
        optim.Adam(_params(rng), lr=0.1, lr_mult={"w": -1.0})
    with pytest.raises(ValueError, match="momentum must be in"):
        optim.SGD(_params(rng), lr=0.1, momentum=1.0)
    with pytest.raises(ValueError, match="nesterov=True needs a momentum"):
        optim.SGD(_params(rng), lr=0.1, momentum=0.0, nesterov=True)
    with pytest.raises(ValueError, match="weight_decay must be"):
        optim.SGD(_params(rng), lr=0.1, weight_decay=-1)
    with pytest.raises(ValueError, match="beta1 must be in"):
        optim.Adam(_params(rng), lr=0.1, beta1=1.0)
    with pytest.raises(ValueError, match="rho must be in"):
        optim.RMSprop(_params(rng), lr=0.1, rho=1.5)
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'"):
        optim.build_optimizer("lbfgs", _params(rng), lr=0.1)
    opt = optim.Adam(_params(rng), lr=0.1)
    with pytest.raises(ValueError, match="missing gradients for parameters"):
        opt.step({"w": np.zeros((3, 4))})
    with pytest.raises(ValueError, match="gradient for 'b' has shape"):
        opt.step({"w": np.zeros((3, 4)), "b": np.zeros(5)})


# ----------------------------------------------------------------------------- clipping


def test_clip_by_value_clips_elements_and_returns_new_arrays():
    g = {"w": np.array([-3.0, -0.5, 0.2, 7.0])}
    out = optim.clip_by_value(g, 1.0)
    np.testing.assert_array_equal(out["w"], [-1.0, -0.5, 0.2, 1.0])
    np.testing.assert_array_equal(g["w"], [-3.0, -0.5, 0.2, 7.0])
    with pytest.raises(ValueError, match="limit must be a finite number > 0"):
        optim.clip_by_value(g, 0.0)


def test_clip_by_global_norm():
    g = {"a": np.array([3.0], dtype=np.float32), "b": np.array([4.0], dtype=np.float32)}  # norm 5
    out, norm = optim.clip_by_global_norm(g, 10.0)
    assert norm == pytest.approx(5.0)
    assert out["a"] is g["a"]  # under the limit: unchanged arrays
    out, norm = optim.clip_by_global_norm(g, 1.0)
    assert norm == pytest.approx(5.0)
    np.testing.assert_allclose([out["a"][0], out["b"][0]], [0.6, 0.8], rtol=1e-6)
    assert out["a"].dtype == np.float32
    assert optim.global_norm(out) == pytest.approx(1.0, rel=1e-6)
    assert g["a"][0] == 3.0  # input untouched
    bad = {"a": np.array([np.nan, 1.0])}
    out, norm = optim.clip_by_global_norm(bad, 1.0)
    assert math.isnan(norm)
    with pytest.raises(ValueError, match="max_norm must be a finite number > 0"):
        optim.clip_by_global_norm(g, -1.0)


# ----------------------------------------------------------------------------- schedules


def test_step_decay():
    s = optim.StepDecay(1.0, step_epochs=2, factor=0.5)
    lrs = [s.end_epoch(e, 0.0) for e in range(1, 7)]
    assert lrs == [1.0, 0.5, 0.5, 0.25, 0.25, 0.125]
    s2 = optim.StepDecay(9.0, step_epochs=2, factor=0.5)
    s2.load_state(s.state())
    assert s2.lr == 0.125 and s2.end_epoch(7, 0.0) == s.end_epoch(7, 0.0)
    with pytest.raises(ValueError, match="step_epochs must be an integer >= 1"):
        optim.StepDecay(1.0, step_epochs=0)
    with pytest.raises(ValueError, match="factor must be in"):
        optim.StepDecay(1.0, factor=2.0)


def test_reduce_on_plateau():
    s = optim.ReduceOnPlateau(1.0, factor=0.5, patience=1, min_lr=0.2)
    metrics = [10.0, 9.0, 9.5, 9.0, 9.0, 9.1, 9.2, 8.0, 8.5, 8.5, 8.5, 8.5]
    lrs = [s.end_epoch(e, m) for e, m in enumerate(metrics, 1)]
    # two epochs without a new best -> halve; the floor is min_lr
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.2, 0.2, 0.2]
    state = json.loads(json.dumps(s.state()))
    s2 = optim.ReduceOnPlateau(1.0, factor=0.5, patience=1, min_lr=0.2)
    s2.load_state(state)
    assert (s2.lr, s2.best, s2.bad_epochs) == (s.lr, s.best, s.bad_epochs)
    fresh = json.loads(json.dumps(optim.ReduceOnPlateau(1.0).state()))  # best = inf survives JSON
    s2.load_state(fresh)
    assert s2.best == math.inf
    with pytest.raises(ValueError, match="schedule state is for 'step'"):
        s2.load_state(optim.StepDecay(1.0).state())
    with pytest.raises(ValueError, match="factor must be in"):
        optim.ReduceOnPlateau(1.0, factor=1.0)


def test_build_schedule():
    assert isinstance(optim.build_schedule("none", 0.1), optim.ConstantLR)
    assert optim.build_schedule("none", 0.1).end_epoch(5, 1.0) == 0.1
    assert isinstance(optim.build_schedule("step", 0.1), optim.StepDecay)
    assert isinstance(optim.build_schedule("plateau", 0.1), optim.ReduceOnPlateau)
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'cosine'"):
        optim.build_schedule("cosine", 0.1)


def test_early_stopping():
    es = optim.EarlyStopping(patience=2)
    flags = [es.update(e, m) for e, m in enumerate([5.0, 4.0, 4.5, 4.0], 1)]
    assert flags == [True, True, False, False]
    assert es.should_stop and es.best == 4.0 and es.best_epoch == 2
    es2 = optim.EarlyStopping(patience=9)
    es2.load_state(json.loads(json.dumps(es.state())))
    assert es2.should_stop and es2.best_epoch == 2
    off = optim.EarlyStopping(patience=0)
    for e in range(1, 20):
        off.update(e, 1.0)
    assert not off.should_stop
    with pytest.raises(ValueError, match="patience must be an integer >= 0"):
        optim.EarlyStopping(-1)


@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
def test_flat_adam_is_adam_bit_for_bit_and_shares_its_checkpoints(weight_decay):
    """FlatAdam (the GPU's optimiser) does Adam's operations on one flat buffer: the same bits,
    with per-parameter learning-rate multipliers and a learning rate that changes; its state()
    loads into Adam and back."""
    rng = np.random.default_rng(0)
    shapes = {"a": (3, 4), "b": (5,), "c": (2, 2, 3)}
    init = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    plain = {k: v.copy() for k, v in init.items()}
    flat = {k: v.copy() for k, v in init.items()}
    mult = {"a": 0.1}
    ref = optim.Adam(plain, 1e-2, mult, weight_decay)
    fused = optim.FlatAdam(flat, 1e-2, mult, weight_decay)
    assert all(np.shares_memory(flat[k], fused.flat["p"]) for k in flat)      # the dict now holds views
    for t in range(4):
        if t == 2:
            ref.lr = fused.lr = 3e-3                                          # a schedule's decay
        grads = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
        ref.step(grads)
        fused.step(grads)
        for k in shapes:
            np.testing.assert_array_equal(flat[k], plain[k], err_msg=k)
    state = fused.state()
    assert set(state["arrays"]) == set(ref.state()["arrays"])
    other = {k: v.copy() for k, v in init.items()}
    again = optim.Adam(other, 1e-2, mult, weight_decay)
    again.load_state(state)                                                   # FlatAdam -> Adam
    fused.load_state(ref.state())                                             # Adam -> FlatAdam: into the views
    assert np.shares_memory(fused.state_arrays["m"]["a"], fused.flat["m"])
    np.testing.assert_array_equal(fused.state()["arrays"]["v/c"], ref.state()["arrays"]["v/c"])
