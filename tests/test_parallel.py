"""minstn.parallel.ProcessChunks: chunked gradients in worker processes.

The contract is that processes change only the speed: for the same rng, loss, logits and every
gradient equal Model.loss_and_grads(chunk=..., workers=...) on threads bit for bit. Each runner
starts its workers with 'spawn' (a fresh interpreter, about a second), so the tests share a few.
"""
from __future__ import annotations

import numpy as np
import pytest

from minstn import host
from minstn.models import build_model
from minstn.models.layers import ModelError
from minstn.parallel import ParallelError, ProcessChunks


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
    loss_t, logits_t = model.loss_and_grads(x, y, rng=np.random.default_rng(11), chunk=2, workers=2)
    grads_t = {k: v.copy() for k, v in model.grads.items()}
    with ProcessChunks(model, 2) as runner:
        for _ in range(2):    # twice: the second step reuses the gradient slots
            loss_p, logits_p = runner.loss_and_grads(x, y, np.random.default_rng(11), chunk=2)
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
    with ProcessChunks(model, 2) as runner:
        runner.loss_and_grads(x[:2], y[:2], np.random.default_rng(0), chunk=2)   # one chunk, one slot
        for v in model.params.values():                                         # an optimiser step, in place
            v *= 0.9
        model.params["cls.head.b"] += 0.5
        loss_p, _ = runner.loss_and_grads(x, y, np.random.default_rng(4), chunk=2)   # three chunks now
        grads_p = {k: v.copy() for k, v in model.grads.items()}
    loss_t, _ = model.loss_and_grads(x, y, rng=np.random.default_rng(4), chunk=2)
    assert loss_p == loss_t
    for k in grads_p:
        assert np.array_equal(grads_p[k], model.grads[k]), k


def test_a_failing_worker_reports_its_traceback_and_the_runner_closes():
    model = build_model("cnn", 1, dtype="float32", seed=0)
    x, y = _batch(np.random.default_rng(2), 4, "float32")
    runner = ProcessChunks(model, 1)
    try:
        with pytest.raises(ParallelError, match="worker process 0 failed"):
            runner.loss_and_grads(x, y, None, chunk=2)    # dropout 0.5 without an rng: the worker raises
        loss, _ = runner.loss_and_grads(x, y, np.random.default_rng(0), chunk=2)   # still serving
        assert np.isfinite(loss)
    finally:
        runner.close()
    runner.close()                                         # twice is fine
    with pytest.raises(ParallelError, match="closed"):
        runner.loss_and_grads(x, y, np.random.default_rng(0), chunk=2)


def test_a_dead_worker_is_reported():
    model = build_model("cnn", 1, dtype="float32", seed=0)
    x, y = _batch(np.random.default_rng(2), 4, "float32")
    with ProcessChunks(model, 1) as runner:
        runner._procs[0].kill()
        runner._procs[0].join()
        with pytest.raises(ParallelError, match="stopped unexpectedly"):
            runner.loss_and_grads(x, y, np.random.default_rng(0), chunk=2)


def test_bad_arguments_are_clear_errors():
    model = build_model("cnn", 1, dtype="float32", seed=0)
    with pytest.raises(ModelError, match="workers must be a positive integer"):
        ProcessChunks(model, 0)
    x, y = _batch(np.random.default_rng(2), 2, "float32")
    with ProcessChunks(model, 1) as runner:
        with pytest.raises(ModelError, match="needs chunk > 0"):
            runner.loss_and_grads(x, y, np.random.default_rng(0), chunk=0)
        with pytest.raises(ModelError, match="labels must have shape"):
            runner.loss_and_grads(x, y[:1], np.random.default_rng(0), chunk=1)
        with pytest.raises(TypeError, match="dtype float64"):
            runner.loss_and_grads(x.astype("float64"), y, np.random.default_rng(0), chunk=1)
