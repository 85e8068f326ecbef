"""`python -m minstn.train` end to end on a tiny data set, in-process (minstn.train.main).

Tiny on purpose: 8 training, 4 validation and 4 test canvases, batch 4 (2 steps per epoch), so
each run takes a second or two on two cores. The canvases are random noise with random labels:
these tests check the machinery (files, resume, errors), not learning.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from minstn import evaluate as evaluate_cli
from minstn import train
from minstn.training import checkpoint, loop
from minstn.data import save_sequence_file
from minstn.models.base import Model
from minstn.training.console import DeferSignals

TIMING_KEYS = ("images_per_s", "elapsed")


def _split(rng, n):
    boxes = np.tile(np.array([0.0, 0.0, 10.0, 10.0], dtype=np.float32), (n, 4, 1))   # (n, 4, 4)
    return {
        "images": rng.random((n, 1, 100, 100), dtype=np.float32),
        "labels": rng.integers(0, 10, size=(n, 4)).astype(np.int64),
        "angles": np.zeros(n, dtype=np.float32),
        "boxes": boxes,
    }


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A --data folder with train.npz (8), val.npz (4), test.npz (4)."""
    folder = tmp_path_factory.mktemp("tinydata")
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 4), ("test", 4)):
        save_sequence_file(folder / f"{split}.npz", _split(rng, n))
    return str(folder)


def _argv(data_dir, out, *extra, model="ffn-stn"):
    # one worker: no process pool to start in every test (test_worker_processes_* covers it)
    argv = ["--model", model, "--data", data_dir, "--out", str(out), "--batch-size", "4",
            "--eval-batch-size", "4", "--theta-batch", "4", "--epochs", "1", "--no-progress", "--workers", "1"]
    if model != "cnn":
        argv += ["--downsample", "4"]
    if model == "lstm-stn":
        argv += ["--hidden-size", "16"]
    return argv + list(extra)


def _records(out):
    return train.read_metrics(str(out))


def _without_timing(recs):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in recs]


def _params(path):
    arrays, meta = checkpoint.load(path)
    return arrays, meta


@pytest.mark.parametrize("model", ["cnn", "ffn-stn", "lstm-stn"])
def test_cli_end_to_end_writes_every_file(model, data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(_argv(data_dir, out, model=model)) == 0
    files = [".lock", "checkpoint.npz", "config.json", "last.npz", "metrics.jsonl", "result.json"]
    assert sorted(os.listdir(out)) == sorted(files + ([] if model == "cnn" else ["glimpses.png"]))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"] == model and cfg["batch_size"] == 4 and cfg["data"] == data_dir
    printed = capsys.readouterr().out
    assert f"settings ({out / 'config.json'}): model {model}," in printed     # the resolved settings, compactly
    from minstn.models import DEFAULT_OPTIONS
    assert all(cfg[k] is not None for k in DEFAULT_OPTIONS[model])              # config.json: every resolved value
    (rec,) = _records(out)
    assert rec["epoch"] == 1 and rec["steps"] == 2 and rec["images_seen"] == 8 and not rec["partial"]
    for key in ("train_loss", "train_digit_error", "val_digit_error", "val_seq_error", "lr", "images_per_s", "elapsed"):
        assert np.isfinite(rec[key]), key
    assert len(rec["val_position_error"]) == 4
    if model == "cnn":
        assert "theta_spread" not in rec
    else:
        steps = 4 if model == "lstm-stn" else 1
        assert len(rec["theta_steps"]) == steps
        assert set(rec["theta_steps"][0]) == {"tx", "ty", "sx", "sy"}
        assert rec["theta_spread"] >= 0.0
        assert len(rec["theta_off_canvas"]) == steps and all(0.0 <= o <= 1.0 for o in rec["theta_off_canvas"])
    result = json.loads((out / "result.json").read_text())
    assert set(result["code"]) == {"version", "commit", "modified"}       # which code trained and tested the run
    assert result["model"] == model and result["test_n"] == 4 and result["best_epoch"] == 1
    assert result["stop_reason"] == "epoch limit (1) reached"
    # python -m minstn.evaluate on the saved best checkpoint gives the numbers of result.json
    capsys.readouterr()
    code = evaluate_cli.main(["--checkpoint", str(out / "checkpoint.npz"), "--data", os.path.join(data_dir, "test.npz"), "--json"])
    assert code == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["digit_error"] == result["test_digit_error"]
    assert ev["seq_error"] == result["test_seq_error"]
    assert ev["position_error"] == result["test_position_error"]


def test_resume_after_an_epoch_is_exact(data_dir, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train.main(_argv(data_dir, straight, "--epochs", "2")) == 0
    assert train.main(_argv(data_dir, split, "--epochs", "1")) == 0
    assert train.main(["--out", str(split), "--resume", "--epochs", "2", "--no-progress"]) == 0
    a, ma = _params(straight / "last.npz")
    b, mb = _params(split / "last.npz")
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert ma["dropout_rng"] == mb["dropout_rng"]
    assert _without_timing(_records(straight)) == _without_timing(_records(split))
    ra, rb = (json.loads((d / "result.json").read_text()) for d in (straight, split))
    assert ra["test_digit_error"] == rb["test_digit_error"] and ra["steps"] == rb["steps"] == 4


def test_worker_processes_train_exactly_as_worker_threads(data_dir, tmp_path, capsys):
    """--parallel process and --parallel thread (chunks of 2 on 2 workers, BLAS on one thread in
    both) give the same parameters and training metrics; only validation, computed in the parent,
    may round differently, since the parent's BLAS keeps its threads for it in neither case."""
    runs = {}
    for mode in ("process", "thread"):
        out = tmp_path / mode
        assert train.main(_argv(data_dir, out, "--epochs", "2", "--chunk", "2", "--workers", "2",
                                "--parallel", mode, model="lstm-stn")) == 0
        assert f"on 2 worker {mode}" in capsys.readouterr().out
        runs[mode] = (_params(out / "last.npz")[0], _records(out))
    (a, ra), (b, rb) = runs["process"], runs["thread"]
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert [r["train_loss"] for r in ra] == [r["train_loss"] for r in rb]


def test_interrupt_mid_epoch_saves_and_resume_is_exact(data_dir, tmp_path, monkeypatch, capsys):
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    assert train.main(_argv(data_dir, straight, "--epochs", "2")) == 0
    calls = {"n": 0}
    real = Model.loss_and_grads

    def interrupted(self, images, labels, rng=None, **kw):
        calls["n"] += 1
        if calls["n"] == 4:       # epoch 2, step 2: after the forward pass has used dropout
            real(self, images, labels, rng=rng, **kw)
            raise KeyboardInterrupt
        return real(self, images, labels, rng=rng, **kw)

    monkeypatch.setattr(Model, "loss_and_grads", interrupted)
    capsys.readouterr()
    assert train.main(_argv(data_dir, cut, "--epochs", "2")) == train.EXIT_INTERRUPTED
    text = capsys.readouterr().out
    assert "stopped by Ctrl-C at epoch 2, step 1" in text
    assert f"--out {cut} --resume" in text
    _, meta = checkpoint.load(cut / "last.npz")
    assert meta["position"]["epoch"] == 2 and meta["position"]["step_in_epoch"] == 1
    assert not (cut / "result.json").exists()
    monkeypatch.setattr(Model, "loss_and_grads", real)
    assert train.main(["--out", str(cut), "--resume", "--no-progress"]) == 0
    a, _ = _params(straight / "last.npz")
    b, _ = _params(cut / "last.npz")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert _without_timing(_records(straight)) == _without_timing(_records(cut))


def test_interrupt_with_worker_processes_stops_them_and_resume_is_exact(data_dir, tmp_path, monkeypatch, capsys):
    """Ctrl-C while worker processes compute: last.npz is saved, the workers are stopped, and the
    resumed run (on worker threads this time, whose default chunk would be 16) ends exactly where
    an uninterrupted run on worker processes ends: the saved chunk size decides the dropout masks."""
    import multiprocessing

    from minstn.training.speed.processes import ProcessChunks

    straight, cut = tmp_path / "straight", tmp_path / "cut"
    procs = ["--workers", "2", "--parallel", "process", "--model", "lstm-stn"]
    assert train.main(_argv(data_dir, straight, "--epochs", "2", *procs)) == 0
    calls = {"n": 0}
    real = ProcessChunks.loss_and_grads

    def interrupted(self, *args, **kw):
        calls["n"] += 1
        out = real(self, *args, **kw)
        if calls["n"] == 3:       # epoch 2, step 1
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(ProcessChunks, "loss_and_grads", interrupted)
    capsys.readouterr()
    assert train.main(_argv(data_dir, cut, "--epochs", "2", *procs)) == train.EXIT_INTERRUPTED
    assert "stopped by Ctrl-C at epoch 2, step 0" in capsys.readouterr().out
    assert multiprocessing.active_children() == []              # the workers were stopped
    monkeypatch.setattr(ProcessChunks, "loss_and_grads", real)
    saved = json.loads((cut / "config.json").read_text())
    assert saved["chunk"] == 2                                     # resolved: 4 canvases on 2 workers
    assert train.main(["--out", str(cut), "--resume", "--no-progress", "--workers", "2", "--parallel", "thread"]) == 0
    a, _ = _params(straight / "last.npz")
    b, _ = _params(cut / "last.npz")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert [r["train_loss"] for r in _records(straight)] == [r["train_loss"] for r in _records(cut)]


def test_nan_loss_stops_keeps_last_good_checkpoint(data_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "nan"
    calls = {"n": 0}
    real = Model.loss_and_grads

    def nan_in_epoch_2(self, images, labels, rng=None, **kw):
        calls["n"] += 1
        loss, logits = real(self, images, labels, rng=rng, **kw)
        return (float("nan") if calls["n"] == 3 else loss), logits

    monkeypatch.setattr(Model, "loss_and_grads", nan_in_epoch_2)
    assert train.main(_argv(data_dir, out, "--epochs", "2")) == train.EXIT_DIVERGED
    err = capsys.readouterr().err
    assert "loss became nan at epoch 2, step 1" in err
    assert "lower --lr" in err and "--clip-norm" in err
    assert "the last good state is" in err and "saved at global step 2" in err
    _, meta = checkpoint.load(out / "last.npz")
    assert meta["position"]["epoch"] == 2 and meta["position"]["step_in_epoch"] == 0
    assert (out / "checkpoint.npz").exists() and not (out / "result.json").exists()


def test_nan_before_the_first_epoch_ends_names_no_best_model(data_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "nan1"
    calls = {"n": 0}
    real = Model.loss_and_grads

    def nan_at_step_2(self, images, labels, rng=None, **kw):
        calls["n"] += 1
        loss, logits = real(self, images, labels, rng=rng, **kw)
        return (float("nan") if calls["n"] == 2 else loss), logits

    monkeypatch.setattr(Model, "loss_and_grads", nan_at_step_2)
    assert train.main(_argv(data_dir, out, "--epochs", "2", "--save-every", "1")) == train.EXIT_DIVERGED
    err = capsys.readouterr().err
    assert "saved at global step 1" in err and "no epoch ended, so there is no best model yet" in err
    assert "checkpoint.npz" not in err and not (out / "checkpoint.npz").exists()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # overflow warnings are the point here
def test_huge_learning_rate_diverges_with_a_clear_message(data_dir, tmp_path, capsys):
    out = tmp_path / "huge"
    code = train.main(_argv(data_dir, out, "--lr", "1e30", "--optimizer", "sgd", "--momentum", "0",
                            "--clip-norm", "0", "--epochs", "3"))
    assert code == train.EXIT_DIVERGED
    err = capsys.readouterr().err
    assert "became" in err and "Try a lower --lr" in err


def test_gradient_norm_inf_is_caught_before_the_update(data_dir, tmp_path, monkeypatch, capsys):
    real = Model.loss_and_grads

    def inf_grads(self, images, labels, rng=None, **kw):
        loss, logits = real(self, images, labels, rng=rng, **kw)
        name = next(iter(self.grads))
        self.grads[name] = np.full_like(self.grads[name], np.inf)
        return loss, logits

    monkeypatch.setattr(Model, "loss_and_grads", inf_grads)
    assert train.main(_argv(data_dir, tmp_path / "inf")) == train.EXIT_DIVERGED
    err = capsys.readouterr().err
    assert "gradient norm became" in err and "no checkpoint was written yet" in err


def test_max_steps_stops_mid_epoch_records_a_partial_epoch_and_tests(data_dir, tmp_path):
    out = tmp_path / "budget"
    assert train.main(_argv(data_dir, out, "--epochs", "3", "--max-steps", "1")) == 0
    (rec,) = _records(out)
    assert rec["partial"] and rec["steps"] == 1 and rec["images_seen"] == 4
    result = json.loads((out / "result.json").read_text())
    assert result["stop_reason"] == "max_steps 1 reached" and result["steps"] == 1
    # continuing with a larger budget picks up at step 2 of epoch 1
    assert train.main(["--out", str(out), "--resume", "--max-steps", "2", "--no-progress"]) == 0
    recs = _records(out)
    assert [r["steps"] for r in recs] == [1, 2] and recs[-1]["images_seen"] == 8 and not recs[-1]["partial"]


def test_early_stopping_ends_the_run(data_dir, tmp_path, monkeypatch):
    out = tmp_path / "early"
    monkeypatch.setattr(loop, "evaluate_model", lambda *a, **k: {
        "loss": 1.0, "digit_error": 50.0, "seq_error": 90.0, "position_error": [50.0] * 4, "n": 4})
    assert train.main(_argv(data_dir, out, "--epochs", "5", "--patience", "1", "--lr-schedule", "none")) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["epochs_completed"] == 2 and result["stop_reason"].startswith("early stopping")


def test_progress_bar_prints_lines_when_not_a_terminal(data_dir, tmp_path, capsys):
    assert train.main(_argv(data_dir, tmp_path / "bar", "--progress", "--log-every", "1")) == 0
    err = capsys.readouterr().err
    assert "epoch 1/1 [" in err and "2/2" in err and "img/s" in err and "\r" not in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--colour", "red"], "unrecognized arguments: --colour"),
        (["--downsample", "5"], "--downsample must be 1, 2, 3 or 4"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--lr", "-1"], "--lr must be a finite number > 0"),
        (["--init-scale", "0.5", "--model", "cnn"], "--init-scale is not an option of the cnn model"),
        (["--resume"], "does not exist, so there is nothing to continue"),
    ],
)
def test_bad_options_exit_2(extra, message, data_dir, tmp_path, capsys):
    assert train.main(_argv(data_dir, tmp_path / "bad") + extra) == 2
    assert message in capsys.readouterr().err


def test_bad_data_folder_exits_2(tmp_path, capsys):
    assert train.main(["--data", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "has no train.npz" in capsys.readouterr().err


def test_gpu_without_a_gpu_exits_2_with_the_device_message(data_dir, tmp_path, capsys):
    from minstn.backend import DeviceError, resolve_device

    try:
        resolve_device("gpu")
    except DeviceError:
        pass
    else:
        pytest.skip("this machine has a GPU")
    assert train.main(_argv(data_dir, tmp_path / "gpu", "--device", "gpu")) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "--device cpu" in err and "Traceback" not in err


def test_existing_run_needs_resume_and_resume_keeps_settings(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(_argv(data_dir, out)) == 0
    capsys.readouterr()
    assert train.main(_argv(data_dir, out)) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert train.main(["--out", str(out), "--resume", "--lr", "0.5"]) == 2
    assert "--lr 0.5 differs from the run's saved setting 0.001" in capsys.readouterr().err
    (out / "last.npz").write_bytes(b"junk")
    assert train.main(["--out", str(out), "--resume"]) == 2
    assert "truncated or not an .npz" in capsys.readouterr().err


def test_empty_split_is_a_clear_error(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 0), ("test", 4)):
        save_sequence_file(tmp_path / f"{split}.npz", _split(rng, n))
    assert train.main(["--data", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    assert "the val split is empty" in capsys.readouterr().err


class _FakeTTY:
    def __init__(self):
        self.text = ""

    def isatty(self):
        return True

    def write(self, s):
        self.text += s

    def flush(self):
        pass


def test_progress_bar_on_a_terminal_is_tqdm_and_can_be_off():
    from minstn.training.console import Console

    tty = _FakeTTY()
    with Console(err=tty).bar(3, "epoch 1/1") as bar:
        for _ in range(3):
            bar.step(4, 2.5)
    assert "epoch 1/1" in tty.text and "\r" in tty.text and "step/s" in tty.text      # tqdm, in place
    quiet = _FakeTTY()
    with Console(err=quiet, progress=False).bar(3, "x") as off:
        off.step(4, 1.0)
    with Console(verbosity=0, err=quiet).bar(3, "x") as off:     # -q: no progress either
        off.step(4, 1.0)
    assert quiet.text == ""


def test_ctrl_c_is_held_back_inside_a_step():
    import signal

    done = []
    before = signal.getsignal(signal.SIGINT)     # Python's default, or SIG_IGN where a shell started us in the background
    with pytest.raises(KeyboardInterrupt):
        with DeferSignals():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("the rest of the step still ran")
    assert done == ["the rest of the step still ran"]
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize("module", ["minstn.train", "minstn.evaluate", "minstn.reproduce"])
def test_modules_run_as_commands(module):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-m", module, "--no-such-option"], cwd=root, capture_output=True, text=True)
    assert done.returncode == 2
    assert "unrecognized arguments: --no-such-option" in done.stderr or "required" in done.stderr
    assert "Traceback" not in done.stderr


def test_epoch_line_shows_glimpses_off_the_canvas_and_warns_when_all_are():
    rec = {"epoch": 2, "train_loss": 2.3, "train_digit_error": 88.7, "val_digit_error": 89.1, "val_seq_error": 100.0,
           "val_position_error": [89.0] * 4, "lr": 1e-3, "images_per_s": 50.0, "theta_spread": 0.0,
           "theta_steps": [{"tx": -1.8, "ty": 0.0, "sx": 0.1, "sy": 1.0}], "theta_off_canvas": [0.0]}
    assert "off canvas" not in loop._epoch_line(rec, stn=True) and loop.off_canvas_warning(rec) is None
    rec["theta_off_canvas"] = [0.25]
    assert loop._epoch_line(rec, stn=True).endswith("tx -1.80  off canvas 25%") and loop.off_canvas_warning(rec) is None
    rec["theta_off_canvas"] = [0.984375]
    assert "off canvas 98%" in loop._epoch_line(rec, stn=True)
    assert loop.off_canvas_warning(rec).startswith("warning: 98% or more of the glimpses of the theta batch lie beside the canvas")
    assert loop.off_canvas_warning({**rec, "theta_off_canvas": [1.0, 0.9]}) is None    # one step still reads the canvas
    assert loop.off_canvas_warning({"theta_steps": []}) is None      # a record without the measure (older runs)


def test_code_version_names_the_checkout_the_package_is_imported_from(tmp_path):
    import subprocess

    import minstn
    from minstn.training.run import code_version

    here = os.path.dirname(os.path.abspath(minstn.__file__))
    git = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True)
    code = code_version()
    assert code["version"] == minstn.__version__
    assert code["commit"] == (git.stdout.strip() if git.returncode == 0 else None)
    assert (code["modified"] is None) == (code["commit"] is None)
    assert code_version(str(tmp_path)) == {"version": minstn.__version__, "commit": None, "modified": None}
