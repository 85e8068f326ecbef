"""Run folders: one run at a time, nothing overwritten, image budgets, saves inside an epoch, and
SIGTERM / SIGHUP handled like Ctrl-C (minstn.training.run, minstn.training.loop)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from minstn import train
from minstn.training import checkpoint
from minstn.models.base import Model
from minstn.training.console import DeferSignals, RunInterrupted, exit_code
from minstn.training.run import (
    RunFolderBusy,
    RunFolderError,
    RunLock,
    check_new_run_folder,
    is_locked,
    sweep_temp_files,
)
from tests.test_train import _argv, _params, _records, _without_timing, data_dir  # noqa: F401 (fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_lock_is_exclusive_names_its_owner_and_is_released(tmp_path):
    run = str(tmp_path / "run")
    with RunLock(run):
        assert is_locked(run)
        with pytest.raises(RunFolderBusy, match=rf"'{run}' is in use by another run \(pid {os.getpid()} on .*started"):
            RunLock(run).acquire()
    assert not is_locked(run)
    RunLock(run).acquire().release()                       # free again


def test_a_lock_held_by_a_dead_process_is_free(tmp_path):
    """flock dies with its process: a run killed with SIGKILL leaves no stale lock."""
    run = str(tmp_path / "run")
    code = f"from minstn.training.run import RunLock; RunLock({run!r}).acquire(); import time; time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    for _ in range(200):
        if is_locked(run):
            break
        time.sleep(0.05)
    assert is_locked(run)
    proc.kill()
    proc.wait()
    assert not is_locked(run)
    with RunLock(run):
        pass


def test_a_second_run_in_a_busy_folder_exits_2_and_touches_nothing(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    with RunLock(str(out)):
        assert train.main(_argv(data_dir, out)) == 2
    err = capsys.readouterr().err
    assert "is in use by another run" in err and "use another --out" in err
    assert sorted(os.listdir(out)) == [".lock"]


@pytest.mark.parametrize("leftover", ["config.json", "metrics.jsonl", "checkpoint.npz", "result.json", "last.npz"])
def test_a_new_run_never_touches_a_folder_holding_a_run_file(leftover, data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / leftover).write_text("precious")
    assert train.main(_argv(data_dir, out)) == 2
    err = capsys.readouterr().err
    assert f"already holds a run ({leftover}); continue it with --resume, or choose another --out" in err
    assert (out / leftover).read_text() == "precious"
    assert sorted(p for p in os.listdir(out) if p != ".lock") == [leftover]


def test_out_that_is_a_file_or_not_writable_is_one_line_before_any_data(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    # --data points nowhere: the run folder error must come first
    assert train.main(["--out", str(afile), "--data", str(tmp_path / "missing"), "--no-progress"]) == 2
    assert f"--out '{afile}' is a file, not a folder" in capsys.readouterr().err
    check_new_run_folder(str(tmp_path / "fresh"))           # an empty or missing folder is fine
    with pytest.raises(RunFolderError, match="is a file, not a folder"):
        check_new_run_folder(str(afile))
    if os.geteuid() != 0:                                   # root may write anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        assert train.main(["--out", str(ro / "run"), "--data", str(tmp_path / "missing"), "--no-progress"]) == 2
        assert "cannot create the run folder" in capsys.readouterr().err


def test_temp_files_of_a_killed_save_are_swept(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".tmp-abc.npz").write_bytes(b"half")
    (run / "keep.txt").write_text("x")
    assert sweep_temp_files(str(run)) == [".tmp-abc.npz"]
    assert sorted(os.listdir(run)) == ["keep.txt"]


def test_max_images_is_the_budget_and_ends_on_an_epoch(data_dir, tmp_path):
    out = tmp_path / "run"
    assert train.main(_argv(data_dir, out, "--epochs", "10", "--max-images", "16")) == 0
    recs = _records(out)
    assert [r["epoch"] for r in recs] == [1, 2] and not recs[-1]["partial"] and recs[-1]["images_seen"] == 16
    result = json.loads((out / "result.json").read_text())
    assert result["stop_reason"] == "image budget of 16 reached" and result["images_seen"] == 16
    # a budget that ends inside an epoch: stops after the step that reaches it
    out2 = tmp_path / "run2"
    assert train.main(_argv(data_dir, out2, "--epochs", "10", "--max-images", "6")) == 0
    assert json.loads((out2 / "result.json").read_text())["images_seen"] == 8
    # a larger budget continues the run
    assert train.main(["--out", str(out), "--resume", "--max-images", "24", "--no-progress"]) == 0
    assert [r["epoch"] for r in _records(out)] == [1, 2, 3]


def test_a_killed_run_loses_at_most_save_every_steps_and_resumes_exactly(data_dir, tmp_path, monkeypatch):
    """A crash (here: an exception that is not an interrupt, so nothing is saved on the way out)
    in step 4 of epoch 1 leaves last.npz from step 2 (--save-every 2); resuming from it ends
    exactly where an uninterrupted run ends."""
    extra = ("--epochs", "2", "--batch-size", "2", "--save-every", "2")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert train.main(_argv(data_dir, straight, *extra)) == 0
    real, calls = Model.loss_and_grads, {"n": 0}

    def crash(self, *args, **kw):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("the machine went away")
        return real(self, *args, **kw)

    monkeypatch.setattr(Model, "loss_and_grads", crash)
    with pytest.raises(RuntimeError, match="went away"):
        train.main(_argv(data_dir, killed, *extra))
    _, meta = checkpoint.load(killed / "last.npz")
    assert meta["position"]["global_step"] == 2 and meta["position"]["step_in_epoch"] == 2
    assert not is_locked(str(killed))
    monkeypatch.setattr(Model, "loss_and_grads", real)
    assert train.main(["--out", str(killed), "--resume", "--no-progress"]) == 0
    a, _ = _params(straight / "last.npz")
    b, _ = _params(killed / "last.npz")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert _without_timing(_records(straight)) == _without_timing(_records(killed))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_save_and_exit_like_ctrl_c(sig, data_dir, tmp_path):
    out = tmp_path / "run"
    argv = _argv(data_dir, out, "--epochs", "100000", "--save-every", "1")
    proc = subprocess.Popen([sys.executable, "-m", "minstn.train", *argv], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):                       # wait for the first save: training is under way
            if (out / "last.npz").exists():
                break
            time.sleep(0.05)
        assert (out / "last.npz").exists()
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, stderr
    name = signal.Signals(sig).name
    assert f"stopped by {name} at epoch" in stdout and f"--out {out} --resume" in stdout
    assert "Traceback" not in stderr
    assert not is_locked(str(out))
    _, meta = checkpoint.load(out / "last.npz")
    assert meta["position"]["global_step"] >= 1
    assert train.main(["--out", str(out), "--resume", "--epochs", str(meta["position"]["epoch"]), "--no-progress"]) == 0


def test_a_stop_signal_while_the_best_model_is_saved_leaves_both_files_in_step(data_dir, tmp_path, monkeypatch):
    """The signal arrives just as a new best is recorded: the save finishes first, so last.npz never
    names a best model that checkpoint.npz does not hold, and the resumed run can be tested."""
    from minstn.training.loop import Run

    out = tmp_path / "run"
    real = Run.save_best

    def signalled(self):
        os.kill(os.getpid(), signal.SIGTERM)       # delivered at once, inside the save
        return real(self)

    monkeypatch.setattr(Run, "save_best", signalled)
    assert train.main(_argv(data_dir, out, "--epochs", "2")) == 128 + signal.SIGTERM
    monkeypatch.setattr(Run, "save_best", real)
    _, last = checkpoint.load(out / "last.npz")
    _, best = checkpoint.load(out / "checkpoint.npz")
    assert last["position"]["best_val"] == best["best_val_digit_error"] is not None
    assert train.main(["--out", str(out), "--resume", "--epochs", "1", "--no-progress"]) == 0


def test_a_resumed_run_whose_best_model_is_missing_writes_a_new_one(data_dir, tmp_path, capsys):
    """A last.npz that names a best model (here an unbeatable 0 %) with checkpoint.npz gone: the
    resumed run says so, forgets that best, and its next validation writes checkpoint.npz."""
    out = tmp_path / "run"
    assert train.main(_argv(data_dir, out, "--epochs", "1")) == 0
    arrays, meta = checkpoint.load(out / "last.npz")
    meta["position"]["best_val"] = 0.0
    checkpoint.save(out / "last.npz", arrays, meta)
    os.remove(out / "checkpoint.npz")
    os.remove(out / "result.json")
    capsys.readouterr()
    assert train.main(["--out", str(out), "--resume", "--epochs", "2", "--no-progress"]) == 0
    assert "checkpoint.npz is missing: the next validation writes a new one" in capsys.readouterr().err
    assert (out / "checkpoint.npz").exists() and (out / "result.json").exists()


def test_a_signal_during_the_save_is_reported_and_the_save_finishes():
    said = []
    with pytest.raises(RunInterrupted) as e:
        with DeferSignals(note="still saving last.npz", say=said.append):
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGHUP)
            said.append("saved")
    assert e.value.signum == signal.SIGTERM and exit_code(e.value) == 143
    assert said == ["received SIGTERM: still saving last.npz", "received SIGHUP: still saving last.npz", "saved"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert exit_code(KeyboardInterrupt()) == 130


def test_a_runaway_loss_stops_the_run_like_a_nan(data_dir, tmp_path, monkeypatch, capsys):
    """A finite but astronomical loss (here 1e35 from step 3 on) for DIVERGE_STEPS steps stops the
    run with exit code 3, keeping the last good checkpoint, instead of running to the end."""
    from minstn.training import loop

    real, calls = Model.loss_and_grads, {"n": 0}

    def runaway(self, *args, **kw):
        calls["n"] += 1
        loss, logits = real(self, *args, **kw)
        return (1e35 if calls["n"] >= 3 else loss), logits

    monkeypatch.setattr(Model, "loss_and_grads", runaway)
    out = tmp_path / "run"
    assert train.main(_argv(data_dir, out, "--epochs", "100", "--batch-size", "2", "--clip-norm", "0")) == train.EXIT_DIVERGED
    err = capsys.readouterr().err
    assert f"the loss stayed above {loop.DIVERGE_FACTOR:g} times its first value" in err
    assert f"for {loop.DIVERGE_STEPS} steps" in err and "Try a lower --lr" in err
    assert calls["n"] == 2 + loop.DIVERGE_STEPS
    assert not (out / "result.json").exists() and (out / "last.npz").exists()


def test_resume_refuses_other_data(data_dir, tmp_path, capsys):
    from minstn.data import save_sequence_file
    from tests.test_train import _split

    out = tmp_path / "run"
    assert train.main(_argv(data_dir, out)) == 0
    other = tmp_path / "other"
    rng = np.random.default_rng(99)
    for split, n in (("train", 8), ("val", 4), ("test", 4)):
        save_sequence_file(other / f"{split}.npz", _split(rng, n))
    capsys.readouterr()
    assert train.main(["--out", str(out), "--resume", "--epochs", "2", "--data", str(other)]) == 2
    err = capsys.readouterr().err
    assert f"it trained on --data {data_dir}" in err and f"this command gives --data {other}" in err
    assert "resume with the run's own data, or start a new run" in err
    assert train.main(["--out", str(out), "--resume", "--epochs", "2", "--no-progress"]) == 0   # its own data: fine


def test_resume_drops_a_metrics_line_a_crash_cut_short(data_dir, tmp_path):
    out = tmp_path / "run"
    assert train.main(_argv(data_dir, out, "--epochs", "1")) == 0
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "partial": fa')                          # half a line
    assert train.main(["--out", str(out), "--resume", "--epochs", "2", "--no-progress"]) == 0
    assert [r["epoch"] for r in _records(out)] == [1, 2]


def test_every_file_a_run_writes_is_written_atomically(data_dir, tmp_path, monkeypatch):
    """config.json, metrics (rewritten on resume), checkpoints and result.json go through
    minstn.fileio's atomic writer or an fsync'ed append; nothing is left half-written."""
    import minstn.fileio as fileio

    written = []
    real = fileio.atomic_open

    def spy(path, suffix=".part"):
        written.append(os.path.basename(path))
        return real(path, suffix)

    from minstn.training import checkpoint as ck

    monkeypatch.setattr(fileio, "atomic_open", spy)
    monkeypatch.setattr(ck, "atomic_open", spy)
    out = tmp_path / "run"
    assert train.main(_argv(data_dir, out)) == 0
    assert {"config.json", "checkpoint.npz", "last.npz", "result.json"} <= set(written)
