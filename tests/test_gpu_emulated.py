"""The GPU path in CI, without a GPU: minstn --device gpu run on tests/fake_cupy.py, a strict
stand-in for CuPy (no implicit conversion to NumPy, device-tagged arrays, NaN-filled `empty`, the
CUDA kernels through their CPU emulation) that counts device operations and host syncs.

Every test here is marked `gpu_emulated` (`pytest -m gpu_emulated`). They need g++ (the kernels'
emulation is compiled from the CUDA source) and skip cleanly without it.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from minstn import backend, train
from tests import fake_cupy
from tests.test_cuda_source import emu_lib  # noqa: F401 (fixture)
from tests.test_train import _argv, data_dir  # noqa: F401 (fixture)

pytestmark = pytest.mark.gpu_emulated

#: what one LSTM-STN d=2 training step (batch 8, forward, backward, clip, Adam) may cost on a GPU:
#: host syncs (the one fetch of loss, norm and wrong digits) and device operations (kernel
#: launches), as measured on the stand-in; a change that adds launches or syncs fails here
STEP_SYNCS = 1
STEP_OPS = 740


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
    copy (data resident, dropout drawn on the device), and the device operations within budget."""
    from minstn.training import TrainConfig
    from minstn.training.loop import Run
    from minstn.training.run import RunFolder
    from minstn.training.speed import make_runner
    from minstn.training.console import Console
    from minstn.models import build_model

    x, y = _batch(16, np.float32)
    splits = {s: {"images": x, "labels": y} for s in ("train", "val")}
    cfg = TrainConfig(batch_size=8, device="gpu")
    model = build_model("lstm-stn", 2, device="gpu", seed=0)
    run = Run(cfg, model, make_runner(model, 0, 1), splits, RunFolder("unused"), Console(verbosity=0))
    idx = model.device.asarray(np.arange(8))
    run.step(run.train_x[idx], run.train_y[idx])                           # warm-up (the kernels compile)
    fake_cupy.reset_counts()
    run.step(run.train_x[idx], run.train_y[idx])
    counts = dict(fake_cupy.COUNTS)
    print(f"LSTM-STN d=2 training step on the GPU stand-in: {counts}")
    assert counts["syncs"] == STEP_SYNCS and counts["to_device"] == 0
    assert counts["ops"] <= STEP_OPS, f"{counts['ops']} device operations per step (budget {STEP_OPS})"
    assert type(run.opt).__name__ == "FlatAdam"


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


def test_bench_gpu_runs_on_the_stand_in(cp, capsys):
    from minstn.bench.gpu import main as bench_gpu

    assert bench_gpu(["--repeat", "1", "--warmup", "0", "--steps", "1", "--batch-size", "2", "--no-torch"]) == 0
    out = capsys.readouterr().out
    assert "## Bilinear sampler" in out and "| kernel |" in out
    row = next(line for line in out.splitlines() if line.startswith("| lstm-stn | kernel |"))
    ops, syncs = (float(v) for v in row.strip("| ").split(" | ")[3:5])
    assert syncs == STEP_SYNCS and ops <= STEP_OPS          # the bench reports what the stand-in counted
