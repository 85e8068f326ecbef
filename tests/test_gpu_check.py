"""python -m minstn.bench.gpu_check, the prepared check of a real GPU, without one: its parts are
replaced by stand-ins, so what is tested is the report, the time limits and the exit status."""
from __future__ import annotations

import json
import os

import pytest

from minstn.bench import gpu_check


@pytest.fixture
def parts(monkeypatch):
    """Record each part's command and limit; answer with the codes queued in `codes` (0 when none
    is queued). Each part takes 1 s of a fake clock, or its whole limit where `use_limit` is set."""
    calls, codes, clock, use_limit = [], [], [0.0], []

    def fake_run(cmd, timeout, env=None):
        calls.append((cmd, timeout))
        seconds = float(timeout) if use_limit else 1.0
        clock[0] += seconds
        return (codes.pop(0) if codes else 0), seconds, f"output of {cmd[2]}"

    monkeypatch.setattr(gpu_check, "_run", fake_run)
    monkeypatch.setattr(gpu_check.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(gpu_check, "device_lines", lambda: ["- device: Test GPU, 80 GiB, compute capability 9.0"])
    return calls, codes, use_limit


def test_a_passing_check_reports_every_part_and_the_short_run(parts, tmp_path):
    calls, _, use_limit = parts
    use_limit.append(True)                                           # every part runs to its limit
    out = tmp_path / "check"
    os.makedirs(out / "train")
    (out / "train" / "result.json").write_text(json.dumps(
        {"test_digit_error": 3.25, "images_seen": 400000, "elapsed": 150.0, "shifted_digit_error": 3.0}))
    assert gpu_check.main(["--out", str(out)]) == 0
    report = (out / "gpu-check.md").read_text()
    assert "- device: Test GPU" in report
    assert "- GPU tests: passed after 150 s (limit 150 s)" in report
    assert "Short run: test per-digit error 3.25 % after 400,000 images in 2.5 min" in report
    assert "shifted layout 3.00 %" in report
    assert [c[0][2] for c in calls] == ["pytest", "minstn.bench", "minstn.train"]
    assert "tests/test_gpu.py" in calls[0][0] and "tests/test_gpu_emulated.py" not in calls[0][0]
    assert "--device" in calls[2][0] and sum(limit for _, limit in calls) <= 9 * 60
    assert not [f for f in os.listdir(out) if f.startswith(".tmp-")]


def test_a_failing_part_does_not_stop_the_others_and_the_exit_status_says_so(parts, tmp_path, capsys):
    calls, codes, _ = parts
    codes += [1, "timeout", 0]
    assert gpu_check.main(["--out", str(tmp_path)]) == 1
    report = (tmp_path / "gpu-check.md").read_text()
    assert "- GPU tests: FAILED (exit 1)" in report and "- python -m minstn.bench gpu: timed out" in report
    assert "- short LSTM-STN d=2 run, paper sizes: passed" in report and len(calls) == 3
    assert "Short run" not in report                                 # no result.json: no line
    assert "GPU tests: FAILED" in capsys.readouterr().out


def test_the_parts_share_the_whole_time_limit(parts, tmp_path):
    calls, _, use_limit = parts
    use_limit.append(True)                                           # every part runs to its limit
    assert gpu_check.main(["--out", str(tmp_path), "--minutes", "7", "--train-minutes", "1"]) == 0
    assert [limit for _, limit in calls] == [150, 120, 7 * 60 - 150 - 120]   # the run gets what is left
    assert gpu_check.main(["--out", str(tmp_path), "--minutes", "2"]) == 1
    report = (tmp_path / "gpu-check.md").read_text()
    assert "- GPU tests: passed after 120 s (limit 120 s)" in report
    assert "- python -m minstn.bench gpu: not run (the --minutes limit was spent)" in report


@pytest.mark.parametrize("flag", ["--minutes", "--train-minutes", "--train-images"])
def test_a_non_positive_budget_is_one_line(tmp_path, capsys, flag):
    with pytest.raises(SystemExit) as e:
        gpu_check.main(["--out", str(tmp_path), flag, "0"])
    assert e.value.code == 2 and "must be positive" in capsys.readouterr().err
