"""minstn.ops.fast against minstn.ops: the same arguments give the same numbers (float64), so the
switch (minstn.ops.switch) changes only the speed. Each op is compared in its forward and every
gradient of its backward; then whole models with the switch off against the switch on."""
from __future__ import annotations

import numpy as np
import pytest

import minstn.ops as plain
import minstn.ops.fast as fast
from minstn.models import MODEL_NAMES, build_model
from minstn.ops.switch import fast_enabled, ops, use_fast

# Float64 rounding only: the fast and plain versions add the same products in another order.
TOL = dict(rtol=1e-11, atol=1e-12)


def _both(name, *args, **kw):
    return getattr(plain, name)(*args, **kw), getattr(fast, name)(*args, **kw)


@pytest.mark.parametrize("shape, k, padding", [((2, 3, 7, 6), 3, "same"), ((1, 1, 5, 5), 3, "valid"),
                                               ((3, 2, 6, 9), 1, 0), ((2, 4, 8, 8), 3, 2)])
def test_conv_fast_equals_plain(shape, k, padding):
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal(shape), rng.standard_normal((5, shape[1], k, k)), rng.standard_normal(5)
    (out_p, c_p), (out_f, c_f) = _both("conv2d_forward", x, w, b, padding)
    np.testing.assert_allclose(out_f, out_p, **TOL)
    dout = rng.standard_normal(out_p.shape)
    for gp, gf in zip(plain.conv2d_backward(dout, c_p), fast.conv2d_backward(dout, c_f)):
        np.testing.assert_allclose(gf, gp, **TOL)


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 2, 7, 9), (3, 1, 12, 5)])
def test_conv_maxpool_fast_equals_plain_ties_included(shape):
    rng = np.random.default_rng(1)
    x = np.round(rng.standard_normal(shape), 1)          # coarse values: ties in the pool
    w = np.round(rng.standard_normal((4, shape[1], 3, 3)), 1)
    b = np.zeros(4)
    (out_p, c_p), (out_f, c_f) = _both("conv2d_maxpool_forward", x, w, b, "same")
    np.testing.assert_allclose(out_f, out_p, **TOL)
    dout = rng.standard_normal(out_p.shape)
    for gp, gf in zip(plain.conv2d_maxpool_backward(dout, c_p), fast.conv2d_maxpool_backward(dout, c_f)):
        np.testing.assert_allclose(gf, gp, **TOL)


def test_sampler_fast_equals_plain_inside_outside_and_nan():
    rng = np.random.default_rng(2)
    U = rng.standard_normal((2, 3, 6, 7))
    grid = rng.uniform(-1.6, 1.6, size=(2, 5, 4, 2))      # a third of the points outside the image
    grid[0, 0, 0] = [0.0, 0.0]                            # exact pixel centres and the image's edge
    grid[1, 2, 3] = [-1.0, 1.0]
    (V_p, c_p), (V_f, c_f) = _both("bilinear_sample_forward", U, grid)
    np.testing.assert_allclose(V_f, V_p, **TOL)
    dV = rng.standard_normal(V_p.shape)
    for gp, gf in zip(plain.bilinear_sample_backward(dV, c_p), fast.bilinear_sample_backward(dV, c_f)):
        np.testing.assert_allclose(gf, gp, **TOL)
    bad = grid.copy()
    bad[0, 1, 1] = [np.nan, 0.2]                          # a diverged theta: NaN shows in V, dU stays finite
    (V_p, c_p), (V_f, c_f) = _both("bilinear_sample_forward", U, bad)
    assert np.isnan(V_p[0, :, 1, 1]).all() and np.isnan(V_f[0, :, 1, 1]).all()
    np.testing.assert_allclose(np.nan_to_num(V_f, nan=7.0), np.nan_to_num(V_p, nan=7.0), **TOL)
    dU_p, _ = plain.bilinear_sample_backward(dV, c_p)
    dU_f, _ = fast.bilinear_sample_backward(dV, c_f)
    assert np.isfinite(dU_p).all() and np.isfinite(dU_f).all()
    np.testing.assert_allclose(dU_f, dU_p, **TOL)


def test_affine_grid_fast_is_the_plain_one_on_the_cpu():
    theta = np.random.default_rng(3).standard_normal((3, 2, 3))
    (g_p, c_p), (g_f, c_f) = _both("affine_grid_forward", theta, (4, 5))
    np.testing.assert_array_equal(g_f, g_p)
    dgrid = np.random.default_rng(4).standard_normal(g_p.shape)
    np.testing.assert_array_equal(fast.affine_grid_backward(dgrid, c_f), plain.affine_grid_backward(dgrid, c_p))


def test_fast_ops_without_a_cpu_version_are_the_plain_ops_on_numpy():
    """avgpool2d, relu_backward, dropout_forward, the LSTM cell, the loss and the recurrent thetas have
    a fast version on the GPU only (CUDA kernels); on NumPy arrays they are the plain op itself: the
    same bits."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 10, 11))
    (out_p, c_p), (out_f, c_f) = _both("avgpool2d_forward", x, 3)
    np.testing.assert_array_equal(out_f, out_p)
    dout = rng.standard_normal(out_p.shape)
    np.testing.assert_array_equal(fast.avgpool2d_backward(dout, c_f), plain.avgpool2d_backward(dout, c_p))
    r, c_relu = plain.relu_forward(x)
    np.testing.assert_array_equal(fast.relu_backward(x, c_relu), plain.relu_backward(x, c_relu))
    (d_p, m_p), (d_f, m_f) = (f(x, 0.5, np.random.default_rng(1)) for f in (plain.dropout_forward, fast.dropout_forward))
    np.testing.assert_array_equal(d_f, d_p)
    np.testing.assert_array_equal(m_f[1], m_p[1])
    args = [rng.standard_normal(s) for s in ((3, 5), (3, 4), (3, 4), (5, 16), (4, 16), (16,))]
    (h_p, c_p_, cache_p), (h_f, c_f_, cache_f) = _both("lstm_cell_forward", *args)
    np.testing.assert_array_equal(h_f, h_p)
    dh = rng.standard_normal((3, 4))
    for gp, gf in zip(plain.lstm_cell_backward(dh, None, cache_p), fast.lstm_cell_backward(dh, None, cache_f)):
        np.testing.assert_array_equal(gf, gp)
    logits, labels = rng.standard_normal((3, 4, 10)), rng.integers(0, 10, size=(3, 4))
    (l_p, dz_p), (l_f, dz_f) = _both("softmax_cross_entropy", logits, labels)
    assert l_f == l_p
    np.testing.assert_array_equal(dz_f, dz_p)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        fast.softmax_cross_entropy(logits, np.full_like(labels, 10))
    feats, theta0 = rng.standard_normal((3, 5)), np.array([0.5, 0.0, 0.0, 0.0, 0.5, 0.0])
    cell = (rng.standard_normal((11, 16)), rng.standard_normal((4, 16)), rng.standard_normal(16))
    reg = (rng.standard_normal((4, 6)), rng.standard_normal(6), rng.standard_normal((2, 6)))
    (th_p, c_p), (th_f, c_f) = _both("recurrent_thetas_forward", feats, theta0, cell, *reg, steps=2)
    np.testing.assert_array_equal(th_f, th_p)
    dthetas = rng.standard_normal(th_p.shape)
    g_p, g_f = plain.recurrent_thetas_backward(dthetas, c_p), fast.recurrent_thetas_backward(dthetas, c_f)
    for gp, gf in zip([g_p[0], *g_p[1], *g_p[2:]], [g_f[0], *g_f[1], *g_f[2:]]):
        np.testing.assert_array_equal(gf, gp)


def test_switch_chooses_and_restores():
    assert fast_enabled() and ops.conv2d_maxpool_forward is fast.conv2d_maxpool_forward
    assert ops.linear_forward is plain.linear_forward            # no fast version: always the plain one
    with use_fast(False):
        assert not fast_enabled() and ops.conv2d_maxpool_forward is plain.conv2d_maxpool_forward
        assert ops.bilinear_sample_forward is plain.bilinear_sample_forward
    assert fast_enabled()
    assert set(fast.__all__) - {"resolve_impl"} <= set(plain.__all__)   # every fast op has its plain twin


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_models_give_the_same_loss_and_gradients_with_plain_ops(name):
    """The whole model with the switch off equals it with the switch on (float64, dropout on:
    the masks come from the same generator)."""
    rng = np.random.default_rng(5)
    x, y = rng.random((3, 1, 100, 100)), rng.integers(0, 10, size=(3, 4))
    model = build_model(name, 2, dtype="float64", seed=0, head_init="he", init_scale=0.9, regressor_std=0.01,
                        **({"hidden_size": 16} if name == "lstm-stn" else {})) if name != "cnn" else \
        build_model(name, 1, dtype="float64", seed=0, head_init="he")
    loss_f, logits_f = model.loss_and_grads(x, y, np.random.default_rng(9))
    grads_f = {k: v.copy() for k, v in model.grads.items()}
    with use_fast(False):
        loss_p, logits_p = model.loss_and_grads(x, y, np.random.default_rng(9))
    assert loss_p == pytest.approx(loss_f, rel=1e-12)
    np.testing.assert_allclose(logits_p, logits_f, **TOL)
    for k in grads_f:
        np.testing.assert_allclose(model.grads[k], grads_f[k], rtol=1e-9, atol=1e-12, err_msg=k)
