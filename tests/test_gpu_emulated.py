"""The GPU path in CI, without a GPU: minstn --device gpu run on tests/fake_cupy.py, a strict
stand-in for CuPy (no implicit conversion to NumPy, device-tagged arrays, NaN-filled `empty`, the
CUDA kernels through their CPU emulation) that counts device operations and host syncs.

What runs here: the stand-in's own strictness; one training step of each model against the CPU,
and the trainer's step; the budget of one LSTM-STN step (one sync, STEP_OPS device operations);
every fast op's kernels against the plain NumPy op, and each op's device operations per call;
FlatAdam's kernel bit for bit; the commands (train, resume, evaluate, bench gpu); and
tests/test_gpu.py's real-GPU tests, run on the stand-in.

Every test here is marked `gpu_emulated` (`pytest -m gpu_emulated`). They need g++ (the kernels'
emulation is compiled from the CUDA source) and skip cleanly without it.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import minstn.ops as plain_ops
from minstn import backend, train
from minstn.ops import fast as fast_ops
from minstn.training import optim
from tests import fake_cupy
from tests.test_cuda_source import emu_lib  # noqa: F401 (fixture)
from tests.test_train import _argv, data_dir  # noqa: F401 (fixture)

pytestmark = pytest.mark.gpu_emulated

#: what one LSTM-STN d=2 training step (batch 8, forward, backward, clip, Adam) may cost on a GPU:
#: host syncs (the one transfer of loss, norm and wrong digits) and device operations (kernel
#: launches, cuBLAS calls and allocations), as measured on the stand-in: 134 (764 on the plain
#: ops, `python -m tests.fake_cupy --plain`), plus a margin of 4; a change that adds launches or
#: syncs fails here.
#: fake_cupy.trace() says where they go (docs/gpu.md, "Device operations per step").
STEP_SYNCS = 1
STEP_OPS = 138


@pytest.fixture
def cp(emu_lib):  # noqa: F811
    backend._PROBED.clear()
    with fake_cupy.installed(emu_lib) as module:
        yield module
    backend._PROBED.clear()


def _batch(n=4, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 100, 100)).astype(dtype), rng.integers(0, 10, size=(n, 4))


# ---------------------------------------------------------------------------------- the stand-in


def test_the_stand_in_is_as_strict_as_cupy(cp):
    a = cp.asarray(np.arange(6.0))
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(a)
    with pytest.raises(TypeError, match="NumPy array given to a CuPy function or operator"):
        a + np.ones(6)
    with pytest.raises(TypeError, match="NumPy function was applied to a CuPy array"):
        np.concatenate([a, a])
    assert np.isnan(cp.empty(3, dtype=np.float32).get()).all()
    with cp.cuda.Device(1):
        b = cp.zeros(6)
    assert b.device.id == 1
    with pytest.raises(ValueError, match=r"device where the array resides \(1\) is different from the current device \(0\)"):
        a + b
    fake_cupy.reset_counts()
    float(a.sum())
    assert fake_cupy.COUNTS == {"ops": 1, "syncs": 1, "to_device": 0}


def test_device_selection_compiles_the_kernels_and_multiplies_first(cp, monkeypatch):
    assert backend.resolve_device("gpu") == backend.Device("gpu", 0)
    assert backend.resolve_device("auto") == backend.Device("gpu", 0)
    from minstn.ops.fast import cuda as kernels

    backend._PROBED.clear()
    kernels._module.cache_clear()

    def no_nvrtc(*args, **kwargs):
        raise ImportError("libnvrtc.so.12: cannot open shared object file")

    monkeypatch.setattr(cp, "RawModule", no_nvrtc)
    with pytest.raises(backend.DeviceError, match=r"GPU 0 was found, but CuPy could not use it \(ImportError: libnvrtc"):
        backend.resolve_device("gpu")
    said = []
    assert backend.resolve_device("auto", say=said.append) == backend.Device("cpu")   # auto falls back, saying why
    assert "could not use it" in said[0] or "no usable GPU" in said[0]


# -------------------------------------------------------------------------------- one step


@pytest.mark.parametrize("name", ["cnn", "ffn-stn", "lstm-stn"])
def test_a_training_step_on_the_gpu_equals_the_cpu_step(cp, name):
    from minstn.models import build_model

    x, y = _batch()
    opts = {"head_init": "he", "dropout": 0.0}
    if name != "cnn":
        opts.update(init_scale=0.9, regressor_std=0.01)
    results = {}
    for dev in ("cpu", "gpu"):
        model = build_model(name, 2, dtype="float64", device=dev, seed=0, **opts)
        loss, logits = model.loss_and_grads(x, y)
        results[dev] = (float(loss), {k: backend.to_numpy(g) for k, g in model.grads.items()})
        assert all(backend.is_cupy(g) == (dev == "gpu") for g in model.grads.values())
    assert results["gpu"][0] == pytest.approx(results["cpu"][0], rel=1e-12)
    for k, g in results["cpu"][1].items():
        np.testing.assert_allclose(results["gpu"][1][k], g, rtol=1e-9, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("options", [{"cell": "gru"}, {"cell": "rnn"}, {"feedback": "none", "step_spread": 0.0}])
def test_the_lstm_stn_variants_step_on_the_gpu_as_on_the_cpu(cp, options):
    """The GRU and the RNN (their steps the plain loop on the device), and the LSTM without the fed-back
    theta and the per-step bias (the kernels with K = 0, no step_b): the CPU's loss and gradients."""
    from minstn.models import build_model

    x, y = _batch(3)
    results = {}
    for dev in ("cpu", "gpu"):
        model = build_model("lstm-stn", 2, dtype="float64", device=dev, seed=0, head_init="he", dropout=0.0,
                            init_scale=0.9, regressor_std=0.01, hidden_size=16, **options)
        loss, _ = model.loss_and_grads(x, y)
        results[dev] = (float(loss), {k: backend.to_numpy(g) for k, g in model.grads.items()})
    assert results["gpu"][0] == pytest.approx(results["cpu"][0], rel=1e-12)
    assert set(results["gpu"][1]) == set(results["cpu"][1])
    for k, g in results["cpu"][1].items():
        np.testing.assert_allclose(results["gpu"][1][k], g, rtol=1e-9, atol=1e-12, err_msg=k)


def test_the_plain_ops_run_on_the_gpu_too_and_agree_with_the_fast_ones(cp):
    """`with use_fast(False):` the models run minstn.ops's array code on the device (the path the
    tutorials teach); it gives the fast path's loss and gradients (float64, dropout on: the masks
    come from the same NumPy generator), in about three times the device operations."""
    from minstn.models import build_model
    from minstn.ops.switch import use_fast

    x, y = _batch(3)
    model = build_model("lstm-stn", 2, dtype="float64", device="gpu", seed=0, head_init="he", hidden_size=16)
    results, ops = {}, {}
    for fast in (True, False):
        fake_cupy.reset_counts()
        with use_fast(fast):
            loss, _ = model.loss_and_grads(x, y, np.random.default_rng(9))
        ops[fast] = fake_cupy.COUNTS["ops"]
        results[fast] = (float(loss), {k: backend.to_numpy(g) for k, g in model.grads.items()})
    assert results[False][0] == pytest.approx(results[True][0], rel=1e-12)
    for k, g in results[True][1].items():
        np.testing.assert_allclose(results[False][1][k], g, rtol=1e-9, atol=1e-12, err_msg=k)
    assert ops[False] > 2.5 * ops[True]



def test_the_stand_in_tool_counts_a_step_on_the_fast_and_on_the_plain_ops(emu_lib, capsys, monkeypatch):  # noqa: F811
    """`python -m tests.fake_cupy [--plain]`, the numbers docs/gpu.md's table comes from."""
    import re

    import tests.test_cuda_source as cuda_source

    monkeypatch.setattr(cuda_source, "build_emu_lib", lambda folder: emu_lib)
    backend._PROBED.clear()
    try:
        counts = {}
        for flag in ("--plain", None):
            assert fake_cupy.main(["--top", "3"] + ([flag] if flag else [])) == 0
            out = capsys.readouterr().out
            assert ("plain ops" if flag else "fast ops") in out and "total" in out
            counts[flag] = int(re.search(r"'ops': (\d+)", out).group(1))
    finally:
        backend._PROBED.clear()
    assert counts[None] <= STEP_OPS and counts["--plain"] > 4 * counts[None]

def _trainer(name, device, batch, **cfg):
    from minstn.models import build_model
    from minstn.training import TrainConfig
    from minstn.training.console import Console
    from minstn.training.loop import Run
    from minstn.training.run import RunFolder
    from minstn.training.speed import make_runner

    x, y = batch
    model = build_model(name, 2, dtype="float64", device=device, seed=0, dropout=0.0, head_init="he")
    splits = {s: {"images": x, "labels": y} for s in ("train", "val")}
    return Run(TrainConfig(batch_size=len(y), device=device, **cfg), model, make_runner(model, 0, 1), splits,
               RunFolder("unused"), Console(verbosity=0))


@pytest.mark.parametrize("clip_norm", [1000.0, 5.0])
def test_trainer_steps_on_the_gpu_equal_the_cpu_steps(cp, clip_norm):
    """Two trainer steps (forward, backward, clip, Adam) of the LSTM-STN: the GPU's (fast ops,
    FlatAdam's one kernel with the clip folded in) give the CPU's parameters (float64, no dropout).
    The gradient norms are about 34 and 86: clip_norm 5 clips both steps, 1000 neither."""
    x, y = _batch(4)
    runs = {dev: _trainer("lstm-stn", dev, (x, y), clip_norm=clip_norm) for dev in ("cpu", "gpu")}
    for dev, run in runs.items():
        for _ in range(2):
            idx = np.arange(4) if dev == "cpu" else run.model.device.asarray(np.arange(4))
            run.step(run.train_x[idx], run.train_y[idx])
    assert type(runs["gpu"].opt).__name__ == "FlatAdam" and type(runs["cpu"].opt).__name__ == "Adam"
    for k, p in runs["cpu"].model.params.items():
        np.testing.assert_allclose(backend.to_numpy(runs["gpu"].model.params[k]), p, rtol=1e-9, atol=1e-12, err_msg=k)
    assert runs["gpu"].pos["acc"]["loss_sum"] == pytest.approx(runs["cpu"].pos["acc"]["loss_sum"], rel=1e-12)


def test_a_model_on_gpu_1_keeps_everything_on_gpu_1(cp):
    from minstn.models import build_model

    assert fake_cupy._STATE["device"] == 0
    model = build_model("lstm-stn", 2, device="gpu:1", seed=0, hidden_size=16)
    x, y = _batch(2, np.float32)
    loss, logits = model.loss_and_grads(x, y, np.random.default_rng(0))   # would raise on a cross-device op
    assert fake_cupy._STATE["device"] == 0                                # the caller's device is restored
    assert {g.device.id for g in model.grads.values()} == {1} and logits.device.id == 1
    assert model.predict(x).shape == (2, 4, 10)


def test_the_lstm_stn_training_step_stops_the_gpu_once(cp):
    """One trainer step (batch 8) of the LSTM-STN d=2 on the GPU: one host sync, no host-to-device
    copy (data resident, dropout drawn on the device), and the device operations within budget.
    With -s it prints where they go (the same as `python -m tests.fake_cupy`)."""
    counts, t, run = fake_cupy.trace_trainer_step("lstm-stn", 2, batch_size=8)
    print(f"LSTM-STN d=2 training step on the GPU stand-in: {counts}")
    print(t.table("function"))
    assert counts["syncs"] == STEP_SYNCS and counts["to_device"] == 0
    assert counts["ops"] <= STEP_OPS, f"{counts['ops']} device operations per step (budget {STEP_OPS})"
    assert t.total == counts["ops"] and type(run.opt).__name__ == "FlatAdam"
    by_function = t.counts("function")                     # the tool names minstn's call sites
    assert not any(k.endswith("cuda.py:launch") for k in by_function)      # a launch is its caller's
    assert by_function["minstn/ops/fast/thetas.py:recurrent_thetas_forward"] == 16   # the T = 4 steps, forward
    assert by_function["minstn/ops/fast/thetas.py:recurrent_thetas_backward"] == 13  # and backward
    assert t.counts("op")["kernel adam_step<float>"] == 1


# ------------------------------------------------------------------- every fast GPU op, against the plain op
#
# minstn.ops.fast on (stand-in) CuPy arrays runs the CUDA kernels of minstn/ops/fast/kernels/ through
# their CPU emulation; each is compared with the plain NumPy op of minstn.ops: float64 to round-off
# (the kernels do the array code's operations, cuBLAS adds the products in its own order), float32
# to a few roundings. Views, odd sizes, H != W, batch 1, padding 0 / 1 / 2, ties in the pool.

TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=2e-5, atol=2e-5)}


def _close(actual, expected, dtype, what=""):
    """actual: a stand-in device array of the dtype, equal to expected (the NumPy result) within TOL."""
    assert backend.is_cupy(actual), f"{what}: left the device"
    assert actual.dtype == np.dtype(dtype), f"{what}: dtype {actual.dtype}"
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(backend.to_numpy(actual), expected, rtol=TOL[dtype]["rtol"],
                               atol=TOL[dtype]["atol"] * scale, err_msg=what)


def _fast_and_plain(cp, name, arrays, douts, **kw):
    """(fast on the device: outs, grads, cache), (plain on NumPy: outs, grads) for the forward `name`."""
    fwd_f, fwd_p = getattr(fast_ops, name), getattr(plain_ops, name)
    bwd = name.replace("forward", "backward")
    bwd_f, bwd_p = getattr(fast_ops, bwd), getattr(plain_ops, bwd)
    *outs_p, cache_p = fwd_p(*arrays, **kw)
    *outs_f, cache_f = fwd_f(*[cp.asarray(a) for a in arrays], **kw)
    grads_p = bwd_p(*douts, cache_p)
    grads_f = bwd_f(*[cp.asarray(d) for d in douts], cache_f)
    return (outs_f, grads_f, cache_f), (outs_p, grads_p)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape, kernel, padding", [((2, 3, 7, 6), (3, 3), "same"), ((1, 1, 5, 5), (3, 3), "valid"),
                                                    ((3, 2, 6, 9), (1, 1), 0), ((2, 4, 8, 5), (3, 3), 2),
                                                    ((1, 2, 5, 7), (2, 3), 1)])
def test_conv_kernels_equal_the_plain_conv(cp, shape, kernel, padding, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((4, shape[1]) + kernel).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    out_p, c_p = plain_ops.conv2d_forward(x, w, b, padding)
    dout = rng.standard_normal(out_p.shape).astype(dtype)
    (outs_f, grads_f, c_f), (outs_p, grads_p) = _fast_and_plain(cp, "conv2d_forward", (x, w, b), (dout,),
                                                                 padding=padding)
    assert c_f[0] == "conv2d_gpu" and outs_f[0].flags.c_contiguous
    _close(outs_f[0], outs_p[0], dtype, "out")
    for what, gf, gp in zip(("dx", "dw", "db"), grads_f, grads_p):
        _close(gf, gp, dtype, what)
    strided = np.zeros(dout.shape[:3] + (2 * dout.shape[3],), dtype=dtype)
    strided[..., ::2] = dout
    dx, dw, db = fast_ops.conv2d_backward(cp.asarray(strided)[..., ::2], c_f, need_dx=False)   # a view; no dx
    assert dx is None
    _close(dw, grads_p[1], dtype, "dw without dx")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 2, 7, 9), (3, 1, 12, 5), (2, 2, 25, 25)])
def test_conv_maxpool_kernels_equal_the_plain_composition_ties_included(cp, shape, dtype):
    rng = np.random.default_rng(1)
    x = np.round(rng.standard_normal(shape), 1).astype(dtype)       # coarse values: ties in the pool
    w = np.round(rng.standard_normal((4, shape[1], 3, 3)), 1).astype(dtype)
    b = np.array([0.0, 0.5, -0.5, 0.0], dtype=dtype)
    out_p, _ = plain_ops.conv2d_maxpool_forward(x, w, b, "same")
    dout = rng.standard_normal(out_p.shape).astype(dtype)
    (outs_f, grads_f, c_f), (outs_p, grads_p) = _fast_and_plain(cp, "conv2d_maxpool_forward", (x, w, b), (dout,),
                                                                 padding="same")
    assert c_f[0] == "conv2d_maxpool_gpu" and outs_f[0].flags.c_contiguous
    _close(outs_f[0], outs_p[0], dtype, "pooled")
    for what, gf, gp in zip(("dx", "dw", "db"), grads_f, grads_p):
        _close(gf, gp, dtype, what)
    dx, dw, db = fast_ops.conv2d_maxpool_backward(cp.asarray(dout), c_f, need_dx=False)
    assert dx is None
    _close(db, grads_p[2], dtype, "db without dx")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, shape", [("conv2d_maxpool_relu", (2, 3, 8, 8)), ("conv2d_maxpool_relu", (1, 2, 7, 9)),
                                         ("conv2d_relu", (2, 3, 7, 6)), ("conv2d_relu", (1, 1, 5, 5))])
def test_conv_relu_kernels_equal_the_plain_ops(cp, name, shape, dtype):
    """The ReLU applied by the bias (+ max-pool) kernel, and its mask in the backward's first kernel,
    against the plain conv (+ pool) then relu_forward: coarse values give ties in the pool and
    outputs exactly 0 (the ReLU's kink gets 0); the last filter is all zeros after the ReLU."""
    rng = np.random.default_rng(9)
    x = np.round(rng.standard_normal(shape), 1).astype(dtype)
    w = np.round(rng.standard_normal((4, shape[1], 3, 3)), 1).astype(dtype)
    b = np.array([0.0, 0.5, -0.5, -30.0], dtype=dtype)
    out_p, _ = getattr(plain_ops, f"{name}_forward")(x, w, b, "same")
    dout = rng.standard_normal(out_p.shape).astype(dtype)
    (outs_f, grads_f, c_f), (outs_p, grads_p) = _fast_and_plain(cp, f"{name}_forward", (x, w, b), (dout,),
                                                                 padding="same")
    assert c_f[0] == f"{name}_gpu" and outs_f[0].flags.c_contiguous
    _close(outs_f[0], outs_p[0], dtype, "out")
    assert (backend.to_numpy(outs_f[0])[:, 3] == 0).all() and (outs_p[0][:, :3] == 0).any()
    for what, gf, gp in zip(("dx", "dw", "db"), grads_f, grads_p):
        _close(gf, gp, dtype, what)
    dx, dw, db = getattr(fast_ops, f"{name}_backward")(cp.asarray(dout), c_f, need_dx=False)
    assert dx is None
    _close(dw, grads_p[1], dtype, "dw without dx")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape, d", [((2, 3, 10, 11), 2), ((2, 1, 10, 11), 3), ((1, 2, 100, 100), 2),
                                      ((2, 2, 6, 6), 1)])
def test_avgpool_kernels_equal_the_plain_op_bit_for_bit(cp, shape, d, dtype):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape).astype(dtype)
    out_p, _ = plain_ops.avgpool2d_forward(x, d)
    dout = rng.standard_normal(out_p.shape).astype(dtype)
    (outs_f, grads_f, _), (outs_p, grads_p) = _fast_and_plain(cp, "avgpool2d_forward", (x,), (dout,), d=d)
    np.testing.assert_array_equal(backend.to_numpy(outs_f[0]), outs_p[0])   # the same additions, in order
    np.testing.assert_array_equal(backend.to_numpy(grads_f), grads_p)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_relu_and_dropout_kernels_equal_the_plain_ops_bit_for_bit(cp, dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 5, 6)).astype(dtype)
    x[0, 0, 0, :3] = 0.0                                                    # the kink gets 0
    out_p, c_p = plain_ops.relu_forward(x)
    dout = rng.standard_normal(x.shape).astype(dtype)
    dx_f = fast_ops.relu_backward(cp.asarray(dout), (c_p[0], cp.asarray(c_p[1])))
    np.testing.assert_array_equal(backend.to_numpy(dx_f), plain_ops.relu_backward(dout, c_p))
    for p in (0.5, 0.3):                                                   # the same NumPy draws on both sides
        out_p, c_p = plain_ops.dropout_forward(x, p, np.random.default_rng(7))
        out_f, c_f = fast_ops.dropout_forward(cp.asarray(x), p, np.random.default_rng(7))
        np.testing.assert_array_equal(backend.to_numpy(out_f), out_p)
        np.testing.assert_array_equal(backend.to_numpy(plain_ops.dropout_backward(cp.asarray(dout), c_f)),
                                      plain_ops.dropout_backward(dout, c_p))
    out_f, c_f = fast_ops.dropout_forward(cp.asarray(x), 0.5, cp.random.default_rng(1))   # drawn on the device
    mask = backend.to_numpy(c_f[1])
    assert set(np.unique(mask)) <= {0.0, 2.0} and 0.3 < (mask == 0).mean() < 0.7
    assert fast_ops.dropout_forward(cp.asarray(x), 0.0, None)[1] == ("dropout", None)   # p = 0: the identity
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\)"):
        fast_ops.dropout_forward(cp.asarray(x), 1.0, cp.random.default_rng(1))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_linear_relu_kernels_equal_the_plain_ops(cp, dtype):
    """The bias and ReLU in one kernel on the product, and the backward's kernel (the mask, db summed
    by one thread per column): the plain linear layer then relu_forward. The first column is all
    zeros after the ReLU."""
    rng = np.random.default_rng(13)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((9, 7), (7, 5), (5,)))
    b[0] = -50.0
    dout = rng.standard_normal((9, 5)).astype(dtype)
    (outs_f, grads_f, c_f), (outs_p, grads_p) = _fast_and_plain(cp, "linear_relu_forward", (x, w, b), (dout,))
    assert c_f[0] == "linear_relu_gpu" and (outs_p[0][:, 0] == 0).all()
    np.testing.assert_array_equal(backend.to_numpy(outs_f[0]), outs_p[0])     # the same product, + b, max
    for what, gf, gp in zip(("dx", "dw", "db"), grads_f, grads_p):
        _close(gf, gp, dtype, what)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("with_dc", [True, False])
def test_lstm_cell_kernels_equal_the_plain_cell(cp, dtype, with_dc):
    rng = np.random.default_rng(4)
    N, D, H = 5, 7, 6
    x, h, c = (rng.standard_normal((N, k)).astype(dtype) for k in (D, H, H))
    Wx = (0.4 * rng.standard_normal((D, 4 * H))).astype(dtype)
    Wh = (0.4 * rng.standard_normal((H, 4 * H))).astype(dtype)
    b = (0.2 * rng.standard_normal(4 * H)).astype(dtype)
    dh, dc = rng.standard_normal((N, H)).astype(dtype), rng.standard_normal((N, H)).astype(dtype)
    h_p, c_p, cache_p = plain_ops.lstm_cell_forward(x, h, c, Wx, Wh, b)
    h_f, c_f, cache_f = fast_ops.lstm_cell_forward(*[cp.asarray(a) for a in (x, h, c, Wx, Wh, b)])
    assert cache_f[0] == "lstm_cell_gpu" and h_f.flags.c_contiguous and c_f.flags.c_contiguous
    _close(h_f, h_p, dtype, "h")
    _close(c_f, c_p, dtype, "c")
    grads_p = plain_ops.lstm_cell_backward(dh, dc if with_dc else None, cache_p)
    grads_f = fast_ops.lstm_cell_backward(cp.asarray(dh), cp.asarray(dc) if with_dc else None, cache_f)
    for what, gf, gp in zip(("dx", "dh_prev", "dc_prev", "dWx", "dWh", "db"), grads_f, grads_p):
        _close(gf, gp, dtype, what)
    with pytest.raises(TypeError, match="cache is not from lstm_cell_forward"):
        fast_ops.lstm_cell_backward(cp.asarray(dh), None, ("relu", None))


def _thetas_args(p, theta0, step_bias, move):
    """recurrent_thetas_forward's arrays (an LSTM), each passed through `move`."""
    return (move(p["feats"]), move(theta0), tuple(move(p[k]) for k in ("Wx", "Wh", "b")), move(p["Wr"]),
            move(p["br"]), move(p["step_b"]) if step_bias else None)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("feedback, step_bias, T", [(True, True, 4), (False, True, 3), (True, False, 1)])
def test_recurrent_thetas_kernels_equal_the_plain_loop(cp, dtype, feedback, step_bias, T):
    """An LSTM's T steps as kernels and products (minstn/ops/fast/thetas.py) against the plain loop of
    cell and linear ops: thetas and every gradient, with and without the fed-back theta and the
    per-step bias, T = 1 (no step before the last); each gradient C-contiguous (FlatAdam flattens
    it without a copy)."""
    from tests.test_ops_thetas import _inputs

    rng = np.random.default_rng(10)
    N, F, H = 5, 7, 6
    p = {k: v.astype(dtype) for k, v in _inputs(rng, "lstm", N, F, H, T, feedback, step_bias).items()}
    theta0 = np.array([0.5, 0.1, -0.2, 0.0, 0.5, 0.1], dtype=dtype)
    thetas_p, cache_p = plain_ops.recurrent_thetas_forward(*_thetas_args(p, theta0, step_bias, np.asarray), steps=T,
                                                           feedback=feedback)
    thetas_f, cache_f = fast_ops.recurrent_thetas_forward(*_thetas_args(p, theta0, step_bias, cp.asarray), steps=T,
                                                          feedback=feedback)
    assert cache_f[0] == "recurrent_thetas_gpu"
    _close(thetas_f, thetas_p, dtype, "thetas")
    dthetas = rng.standard_normal(thetas_p.shape).astype(dtype)
    grads_p = plain_ops.recurrent_thetas_backward(dthetas, cache_p)
    grads_f = fast_ops.recurrent_thetas_backward(cp.asarray(dthetas), cache_f)
    assert (grads_f[4] is None) == (not step_bias)
    flat = lambda g: [g[0], *g[1], g[2], g[3]] + ([g[4]] if step_bias else [])      # noqa: E731
    for what, gf, gp in zip(("dfeats", "dWx", "dWh", "db", "dWr", "dbr", "dstep_b"), flat(grads_f), flat(grads_p)):
        _close(gf, gp, dtype, what)
        assert gf.flags.c_contiguous, what


def test_recurrent_thetas_kernels_pass_a_gradient_check(cp):
    """The kernels' backward is the derivative of the kernels' forward: float64 centred differences of
    every input and parameter through the fast op on the device, <= 1e-6 with the plain op's
    floor for the smallest elements (tests/test_ops_thetas.py says why)."""
    from minstn.gradcheck import check_gradients
    from tests.test_ops_thetas import TINY, _inputs

    rng = np.random.default_rng(11)
    T = 3
    inputs = _inputs(rng, "lstm", 2, 3, 4, T)
    theta0 = cp.asarray(np.array([0.5, 0.1, -0.2, 0.0, 0.5, 0.1]))

    def forward(feats, Wx, Wh, b, Wr, br, step_b):
        cell = tuple(cp.asarray(a) for a in (Wx, Wh, b))
        thetas, cache = fast_ops.recurrent_thetas_forward(cp.asarray(feats), theta0, cell, cp.asarray(Wr),
                                                          cp.asarray(br), cp.asarray(step_b), steps=T)
        assert cache[0] == "recurrent_thetas_gpu"
        return backend.to_numpy(thetas), cache

    def backward(dthetas, cache):
        dfeats, dcell, dWr, dbr, dstep = fast_ops.recurrent_thetas_backward(cp.asarray(dthetas), cache)
        return tuple(backend.to_numpy(g) for g in (dfeats, *dcell, dWr, dbr, dstep))

    errs = check_gradients(forward, backward, inputs, rng=rng, tiny=TINY)
    assert list(errs) == ["feats", "Wx", "Wh", "b", "Wr", "br", "step_b"]
    assert max(errs.values()) <= 1e-6, errs


def test_recurrent_thetas_of_a_gru_or_rnn_run_the_plain_loop_on_the_device(cp):
    """Only the LSTM has kernels: the GRU's and the RNN's steps are the plain loop, on device arrays."""
    from tests.test_ops_thetas import _inputs

    rng = np.random.default_rng(12)
    for cell, names in (("gru", ("Wx", "Wh", "bx", "bh")), ("rnn", ("Wx", "Wh", "b"))):
        p = _inputs(rng, cell, 3, 4, 5, 2)
        theta0 = np.array([0.5, 0.0, 0.0, 0.0, 0.5, 0.0])

        def args(move):
            return (move(p["feats"]), move(theta0), tuple(move(p[k]) for k in names), move(p["Wr"]), move(p["br"]),
                    move(p["step_b"]))
        thetas_p, cache_p = plain_ops.recurrent_thetas_forward(*args(np.asarray), steps=2, cell=cell)
        thetas_f, cache_f = fast_ops.recurrent_thetas_forward(*args(cp.asarray), steps=2, cell=cell)
        assert cache_f[0] == "recurrent_thetas" and backend.is_cupy(thetas_f)
        _close(thetas_f, thetas_p, np.float64, cell)
        dthetas = rng.standard_normal(thetas_p.shape)
        grads_f = fast_ops.recurrent_thetas_backward(cp.asarray(dthetas), cache_f)
        grads_p = plain_ops.recurrent_thetas_backward(dthetas, cache_p)
        for gf, gp in zip([grads_f[0], *grads_f[1], *grads_f[2:]], [grads_p[0], *grads_p[1], *grads_p[2:]]):
            _close(gf, gp, np.float64, cell)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softmax_cross_entropy_kernel_equals_the_plain_loss(cp, dtype):
    rng = np.random.default_rng(5)
    logits = (3 * rng.standard_normal((300, 4, 10))).astype(dtype)        # more rows than the block's threads
    labels = rng.integers(0, 10, size=(300, 4))
    loss_p, dz_p = plain_ops.softmax_cross_entropy(logits, labels)
    for y in (cp.asarray(labels), labels, cp.asarray(labels.astype(np.int32))):    # device, host, int32 labels
        loss_f, dz_f = fast_ops.softmax_cross_entropy(cp.asarray(logits), y)
        assert backend.is_cupy(loss_f) and loss_f.shape == ()
        assert float(loss_f) == pytest.approx(loss_p, rel=TOL[dtype]["rtol"])
        _close(dz_f, dz_p, dtype, "dlogits")
    loss_2d, _ = fast_ops.softmax_cross_entropy(cp.asarray(logits[:, 0]), cp.asarray(labels[:, 0]))   # (N, K)
    assert float(loss_2d) == pytest.approx(plain_ops.softmax_cross_entropy(logits[:, 0], labels[:, 0])[0],
                                           rel=TOL[dtype]["rtol"])
    bad = labels.copy()
    bad[3, 1] = 10                                       # a label out of range: NaN on the device, no read past the row
    assert np.isnan(float(fast_ops.softmax_cross_entropy(cp.asarray(logits), cp.asarray(bad))[0]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):       # host labels are checked
        fast_ops.softmax_cross_entropy(cp.asarray(logits), bad)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
def test_flat_adam_kernel_is_the_array_code_bit_for_bit(cp, dtype, weight_decay):
    """FlatAdam on the device (one adam_step launch per step) against FlatAdam and Adam on NumPy:
    the same bits, with per-parameter multipliers, a learning rate that changes and the norm clip's
    factor (grad_scale) folded in."""
    rng = np.random.default_rng(6)
    shapes = {"a": (3, 4), "b": (5,), "c": (2, 2, 3)}
    init = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    host = {k: v.copy() for k, v in init.items()}
    ref_params = {k: v.copy() for k, v in init.items()}
    dev = {k: cp.asarray(v) for k, v in init.items()}
    mult = {"a": 0.1}
    on_host = optim.FlatAdam(host, 1e-2, mult, weight_decay)
    ref = optim.Adam(ref_params, 1e-2, mult, weight_decay)
    with cp.cuda.Device(0):
        on_dev = optim.FlatAdam(dev, 1e-2, mult, weight_decay)
    for t, scale in enumerate((1.0, 0.37, 1.0, 0.8)):
        if t == 2:
            on_host.lr = on_dev.lr = ref.lr = 3e-3
        grads = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
        on_host.step(grads, grad_scale=scale)
        ref.step(optim.scale_to_norm(grads, 5.0 / scale, 5.0) if scale != 1.0 else grads)
        flat = on_dev.flatten({k: cp.asarray(g) for k, g in grads.items()})
        fake_cupy.reset_counts()
        on_dev.step(flat, grad_scale=scale)
        new_lr = t in (0, 2)                                                 # the learning rates go over once
        assert fake_cupy.COUNTS == {"ops": 1, "syncs": 0, "to_device": int(new_lr)}
        for k in shapes:
            np.testing.assert_array_equal(backend.to_numpy(dev[k]), host[k], err_msg=k)
            np.testing.assert_array_equal(host[k], ref_params[k], err_msg=k)
    np.testing.assert_array_equal(on_dev.state()["arrays"]["v/c"], ref.state()["arrays"]["v/c"])
    g = rng.standard_normal(17).astype(dtype)
    assert float(optim.global_norm(cp.asarray(g))) == pytest.approx(optim.global_norm(g), rel=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_steps_numbers_come_back_in_one_transfer(cp, dtype):
    """optim.step_numbers on the device (sum_squares, step_report: three device operations, one
    sync) gives fetch(loss, global_norm(g), (argmax != labels).sum()) of the NumPy arrays: ties go
    to the first maximum and a NaN row's argmax is its first NaN, as NumPy's argmax."""
    rng = np.random.default_rng(8)
    g = rng.standard_normal(100_003).astype(dtype)                  # more elements than sum_squares' threads
    logits = np.round(rng.standard_normal((7, 4, 10)), 0).astype(dtype)   # coarse: ties
    logits[2, 1, 4] = np.nan
    logits[3, 0, :] = np.nan
    labels = logits.argmax(axis=-1)
    labels[::2, 1] = (labels[::2, 1] + 1) % 10                      # some wrong
    loss = np.asarray(2.5, dtype=dtype)
    expected = optim.fetch(loss, optim.global_norm(g), (logits.argmax(axis=-1) != labels).sum())
    dev = [cp.asarray(a) for a in (loss, g, logits, labels)]
    fake_cupy.reset_counts()
    got = optim.step_numbers(*dev)
    assert fake_cupy.COUNTS == {"ops": 3, "syncs": 1, "to_device": 0}
    assert got[0] == expected[0] and got[2] == expected[2] and got[1] == pytest.approx(expected[1], rel=1e-12)
    assert optim.step_numbers(loss, {"g": g}, logits, labels) == expected       # NumPy: fetch itself


def _launch_cases(cp, r):
    """{op: (forward, arrays, kwargs, device operations forward, backward)} for the launch-count test."""
    dev = lambda *shape: cp.asarray(r.standard_normal(shape))          # noqa: E731
    conv = (dev(2, 3, 9, 8), dev(4, 3, 3, 3), dev(4))
    return {
        "conv2d": (fast_ops.conv2d_forward, conv, {"padding": "same"}, 4, 6),
        "conv2d_maxpool": (fast_ops.conv2d_maxpool_forward, conv, {"padding": "same"}, 4, 6),
        "conv2d_relu": (fast_ops.conv2d_relu_forward, conv, {"padding": "same"}, 4, 6),
        "conv2d_maxpool_relu": (fast_ops.conv2d_maxpool_relu_forward, conv, {"padding": "same"}, 4, 6),
        "avgpool2d": (fast_ops.avgpool2d_forward, (dev(2, 1, 8, 8),), {"d": 2}, 2, 2),
        "lstm_cell": (fast_ops.lstm_cell_forward, (dev(3, 5), dev(3, 4), dev(3, 4), dev(5, 16), dev(4, 16), dev(16)),
                      {}, 4, 6),
        "softmax_cross_entropy": (fast_ops.softmax_cross_entropy,
                                  (dev(3, 4, 10), cp.asarray(r.integers(0, 10, size=(3, 4)))), {}, 2, None),
        "recurrent_thetas": (fast_ops.recurrent_thetas_forward,
                             (dev(3, 5), dev(6), (dev(11, 16), dev(4, 16), dev(16)), dev(4, 6), dev(6), dev(4, 6)),
                             {"steps": 4}, 16, 13),
        "linear_relu": (fast_ops.linear_relu_forward, (dev(3, 5), dev(5, 4), dev(4)), {}, 2, 4),
        "relu": (plain_ops.relu_forward, (dev(2, 3, 4, 4),), {}, 1, 2),
        "dropout": (fast_ops.dropout_forward, (dev(2, 3, 4, 4),), {"p": 0.5, "rng": cp.random.default_rng(0)}, 3, 1),
    }


@pytest.mark.parametrize("name", ["conv2d", "conv2d_maxpool", "conv2d_relu", "conv2d_maxpool_relu", "avgpool2d",
                                  "lstm_cell", "recurrent_thetas", "softmax_cross_entropy", "linear_relu", "relu",
                                  "dropout"])
def test_each_fast_op_is_a_few_launches(cp, name):
    """The device operations of one call of each op the models run on the GPU, forward and
    backward, as the docstrings and docs/gpu.md state them: a regression guard for the launches."""
    rng = np.random.default_rng(0)
    forward, arrays, kwargs, n_forward, n_backward = _launch_cases(cp, rng)[name]
    fake_cupy.reset_counts()
    *outs, cache = forward(*arrays, **kwargs)
    assert fake_cupy.COUNTS["ops"] == n_forward, f"{name} forward: {fake_cupy.COUNTS['ops']} device operations"
    if n_backward is not None:                   # the loss returns its gradient with the forward
        douts = [cp.asarray(rng.standard_normal(o.shape)) for o in outs]
        backward = getattr(fast_ops if name != "dropout" else plain_ops, f"{name}_backward")
        fake_cupy.reset_counts()
        backward(*douts, cache)
        assert fake_cupy.COUNTS["ops"] == n_backward, f"{name} backward: {fake_cupy.COUNTS['ops']} device operations"
    assert fake_cupy.COUNTS["syncs"] == 0 and fake_cupy.COUNTS["to_device"] == 0


# ------------------------------------------------------------------------------ the commands


def test_train_resume_and_evaluate_on_the_gpu(cp, data_dir, tmp_path, capsys):  # noqa: F811
    from minstn import evaluate

    out = tmp_path / "run"
    assert train.main(_argv(data_dir, out, "--device", "gpu", "--epochs", "1", model="lstm-stn")) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["device"] == "gpu:0" and result["epochs_completed"] == 1
    assert json.loads((out / "config.json").read_text())["chunk"] == 0        # the whole batch on the GPU
    assert train.main(["--out", str(out), "--resume", "--epochs", "2", "--no-progress"]) == 0
    assert json.loads((out / "result.json").read_text())["epochs_completed"] == 2
    capsys.readouterr()
    assert evaluate.main(["--checkpoint", str(out / "checkpoint.npz"), "--data", os.path.join(data_dir, "test.npz"),
                          "--device", "gpu", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["digit_error"] == pytest.approx(json.loads((out / "result.json").read_text())["test_digit_error"])


def test_a_cpu_run_resumed_on_the_gpu_runs_the_whole_batch(cp, data_dir, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "run"
    assert train.main(_argv(data_dir, out, "--device", "cpu", "--epochs", "1", "--chunk", "2", "--workers", "2",
                            "--parallel", "thread")) == 0
    capsys.readouterr()
    assert train.main(["--out", str(out), "--resume", "--epochs", "2", "--device", "gpu"]) == 0
    assert "chunks of" not in capsys.readouterr().out                         # no CPU chunking on the GPU
    assert json.loads((out / "config.json").read_text())["chunk"] == 0


def test_a_gpu_checkpoint_loads_on_the_cpu(cp, data_dir, tmp_path):  # noqa: F811
    from minstn.training.metrics import load_model

    out = tmp_path / "run"
    assert train.main(_argv(data_dir, out, "--device", "gpu:1", model="ffn-stn")) == 0
    model, _ = load_model(out / "last.npz", "cpu")
    assert model.device.kind == "cpu" and model.predict(_batch(2, np.float32)[0]).shape == (2, 4, 10)


def test_the_real_gpu_tests_pass_on_the_stand_in(emu_lib):  # noqa: F811
    """tests/test_gpu.py's GPU tests (skipped without a GPU) run on the stand-in, in a subprocess
    (`pytest -p tests.fake_cupy -m gpu`): a GPU test that no GPU could pass (a plain op given
    impl='kernel', a loss expected on the host) fails here, before it meets a GPU."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "MINSTN_EMU_LIB": emu_lib._name, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.fake_cupy", "-p", "no:cacheprovider",
                          "-m", "gpu", "tests/test_gpu.py"], cwd=root, env=env, capture_output=True, text=True,
                         timeout=600)
    summary = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else res.stderr[-2000:]
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert " passed" in summary and "skipped" not in summary and "failed" not in summary, summary


def test_bench_gpu_runs_on_the_stand_in(cp, capsys):
    from minstn.bench.gpu import main as bench_gpu

    assert bench_gpu(["--repeat", "1", "--warmup", "0", "--steps", "1", "--batch-size", "2", "--no-torch"]) == 0
    out = capsys.readouterr().out
    assert "## Bilinear sampler" in out and "| kernel |" in out
    row = next(line for line in out.splitlines() if line.startswith("| lstm-stn | kernel |"))
    ops, syncs = (float(v) for v in row.strip("| ").split(" | ")[3:5])
    assert syncs == STEP_SYNCS and ops <= STEP_OPS          # the bench reports what the stand-in counted
