"""minstn.training.speed: the step runners (whole batch, chunks on threads, chunks on processes).

The contract is that they change only the speed: chunks give the whole batch's gradient (up to
rounding, dropout off), and for the same rng, worker processes give loss, logits and every
gradient of ThreadChunks bit for bit. Each ProcessChunks starts its workers with 'spawn' (a fresh
interpreter, about a second), so the tests share a few.
"""
from __future__ import annotations

import numpy as np
import pytest

from minstn.models import MODEL_NAMES, build_model
from minstn.models.layers import ModelError
from minstn.training.speed import SpeedError, ThreadChunks, WholeBatch, default_chunk, host, make_runner, resolve
from minstn.training.speed.processes import ParallelError, ProcessChunks


def _batch(rng, n, dtype):
    return rng.random((n, 1, 100, 100)).astype(dtype), rng.integers(0, 10, size=(n, 4))


@pytest.fixture
def one_blas_thread():
    """The workers run their BLAS on one thread; the thread version must too for equal bits
    (a product summed by two BLAS threads rounds differently)."""
    with host.preserved_blas_threads():
        if not host.set_blas_threads(1):
            pytest.skip("cannot set the BLAS thread count here (not OpenBLAS)")
        yield


@pytest.mark.parametrize("name,dtype", [("lstm-stn", "float64"), ("ffn-stn", "float32"), ("cnn", "float32")])
def test_processes_equal_threads_bit_for_bit(name, dtype, one_blas_thread):
    model = build_model(name, 4, dtype=dtype, seed=3, head_init="he", **({"hidden_size": 8} if name == "lstm-stn" else {}))
    x, y = _batch(np.random.default_rng(0), 5, dtype)          # chunks of 2, 2 and 1: uneven on purpose
    loss_t, logits_t = ThreadChunks(model, 2, 2).loss_and_grads(x, y, np.random.default_rng(11))
    grads_t = {k: v.copy() for k, v in model.grads.items()}
    with ProcessChunks(model, 2, 2) as runner:
        for _ in range(2):    # twice: the second step reuses the gradient slots
            loss_p, logits_p = runner.loss_and_grads(x, y, np.random.default_rng(11))
            assert loss_p == loss_t
            assert np.array_equal(logits_p, logits_t)
            assert set(model.grads) == set(grads_t)
            for k in grads_t:
                assert model.grads[k].dtype == grads_t[k].dtype
                assert np.array_equal(model.grads[k], grads_t[k]), k
            assert any(np.any(g != 0) for g in grads_t.values())    # a comparison that could fail


def test_workers_see_parameter_updates_and_more_chunks_later(one_blas_thread):
    model = build_model("ffn-stn", 4, dtype="float64", seed=0, head_init="he")
    x, y = _batch(np.random.default_rng(1), 6, "float64")
    with ProcessChunks(model, 2, 2) as runner:
        runner.loss_and_grads(x[:2], y[:2], np.random.default_rng(0))            # one chunk, one slot
        for v in model.params.values():                                         # an optimiser step, in place
            v *= 0.9
        model.params["cls.head.b"] += 0.5
        loss_p, _ = runner.loss_and_grads(x, y, np.random.default_rng(4))       # three chunks now
        grads_p = {k: v.copy() for k, v in model.grads.items()}
    loss_t, _ = ThreadChunks(model, 2).loss_and_grads(x, y, np.random.default_rng(4))
    assert loss_p == loss_t
    for k in grads_p:
        assert np.array_equal(grads_p[k], model.grads[k]), k


def test_a_failing_worker_reports_its_traceback_and_the_runner_closes():
    model = build_model("cnn", 1, dtype="float32", seed=0)
    x, y = _batch(np.random.default_rng(2), 4, "float32")
    runner = ProcessChunks(model, 2, 1)
    try:
        with pytest.raises(ParallelError, match="worker process 0 failed"):
            runner.loss_and_grads(x, y, None)             # dropout 0.5 without an rng: the worker raises
        loss, _ = runner.loss_and_grads(x, y, np.random.default_rng(0))            # still serving
        assert np.isfinite(loss)
    finally:
        runner.close()
    runner.close()                                         # twice is fine
    with pytest.raises(ParallelError, match="closed"):
        runner.loss_and_grads(x, y, np.random.default_rng(0))


def test_a_dead_worker_is_reported():
    model = build_model("cnn", 1, dtype="float32", seed=0)
    x, y = _batch(np.random.default_rng(2), 4, "float32")
    with ProcessChunks(model, 2, 1) as runner:
        runner._procs[0].kill()
        runner._procs[0].join()
        with pytest.raises(ParallelError, match="stopped unexpectedly"):
            runner.loss_and_grads(x, y, np.random.default_rng(0))


def test_bad_arguments_are_clear_errors():
    model = build_model("cnn", 1, dtype="float32", seed=0)
    with pytest.raises(ParallelError, match="workers must be a positive integer"):
        ProcessChunks(model, 2, 0)
    with pytest.raises(ParallelError, match="chunk must be a positive integer"):
        ProcessChunks(model, 0, 1)
    x, y = _batch(np.random.default_rng(2), 2, "float32")
    with ProcessChunks(model, 1, 1) as runner:
        with pytest.raises(ModelError, match="labels must have shape"):
            runner.loss_and_grads(x, y[:1], np.random.default_rng(0))
        with pytest.raises(TypeError, match="dtype float64"):
            runner.loss_and_grads(x.astype("float64"), y, np.random.default_rng(0))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_chunked_step_equals_whole_batch(name):
    """Chunks give the same loss, logits and gradients as the whole batch (dropout off, float64),
    with chunks of unequal size (5 canvases in chunks of 2), on one thread or two."""
    rng = np.random.default_rng(0)
    x, y = rng.random((5, 1, 100, 100)), rng.integers(0, 10, size=(5, 4))
    opts = {"dropout": 0.0, "head_init": "he"}   # 'he': every gradient non-zero
    whole = build_model(name, 3, dtype="float64", seed=1, **opts)
    loss, logits = WholeBatch(whole).loss_and_grads(x, y)
    for workers in (1, 2):
        parts = build_model(name, 3, dtype="float64", seed=1, **opts)
        loss_c, logits_c = ThreadChunks(parts, 2, workers).loss_and_grads(x, y)
        assert loss_c == pytest.approx(loss, rel=1e-12)
        np.testing.assert_allclose(logits_c, logits, rtol=1e-12, atol=1e-12)
        for k in whole.grads:
            np.testing.assert_allclose(parts.grads[k], whole.grads[k], rtol=1e-10, atol=1e-13, err_msg=k)


def test_chunked_step_with_dropout_does_not_depend_on_workers():
    rng = np.random.default_rng(0)
    x, y = rng.random((6, 1, 100, 100)).astype(np.float32), rng.integers(0, 10, size=(6, 4))
    results = []
    for workers in (1, 2, 3):
        m = build_model("lstm-stn", 2, seed=0, head_init="he")
        loss, _ = ThreadChunks(m, 2, workers).loss_and_grads(x, y, np.random.default_rng(7))
        results.append((loss, {k: v.copy() for k, v in m.grads.items()}))
    for loss, grads in results[1:]:
        assert loss == results[0][0]
        for k in grads:
            np.testing.assert_array_equal(grads[k], results[0][1][k])


def test_make_runner_and_resolve():
    model = build_model("cnn", 1, seed=0)
    assert isinstance(make_runner(model, 0, 1), WholeBatch)
    assert isinstance(make_runner(model, 16, 2, "thread"), ThreadChunks)
    assert isinstance(make_runner(model, 16, 1, "process"), ThreadChunks)      # one worker: no processes
    with pytest.raises(SpeedError, match="--workers 2 needs --chunk above 0"):
        make_runner(model, 0, 2)
    assert resolve(None, None, "process", 64, "cpu", 2) == (32, 2)
    assert resolve(None, None, "thread", 64, "cpu", 2) == (16, 2)
    assert resolve(None, None, "process", 4, "cpu", 8) == (1, 4)                  # never more workers than chunks
    assert resolve(32, None, "process", 64, "cpu", 8) == (32, 2)
    assert resolve(0, None, "process", 64, "cpu", 2) == (0, 1)
    assert resolve(None, None, "process", 64, "gpu", 2) == (0, 1)
    assert resolve(32, 2, "process", 64, "gpu", 2) == (0, 1)        # a CPU run resumed on the GPU: the whole batch
    assert default_chunk(64, 1, "process") == 32 and default_chunk(64, 4, "process") == 16
