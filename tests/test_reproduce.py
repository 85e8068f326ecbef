"""`python -m minstn.reproduce` (dry run, a tiny real grid) and the figures of minstn.plots."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from minstn import plots, reproduce
from minstn.data import save_sequence_file


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tinydata")
    rng = np.random.default_rng(1)
    for split, n in (("train", 4), ("val", 4), ("test", 4)):
        save_sequence_file(folder / f"{split}.npz", {
            "images": rng.random((n, 1, 100, 100), dtype=np.float32),
            "labels": rng.integers(0, 10, size=(n, 4)).astype(np.int64),
            "angles": np.zeros(n, dtype=np.float32),
            "boxes": np.tile(np.array([0.0, 0.0, 10.0, 10.0], dtype=np.float32), (n, 4, 1)),
        })
    return str(folder)


def test_presets_and_plan():
    runs = reproduce.plan_runs("paper", "grid")
    names = [n for n, _ in runs]
    assert names == [f"lstm-stn-d{d}" for d in (1, 2, 3, 4)] + [f"ffn-stn-d{d}" for d in (1, 2, 3, 4)] + ["cnn-d1"]
    assert all(c.train_size == 70000 and c.val_size == 20000 and c.test_size == 2000 for _, c in runs)
    cpu = reproduce.plan_runs("cpu", "grid")
    assert [n for n, _ in cpu] == ["lstm-stn-d2", "ffn-stn-d2", "cnn-d1"]
    assert all(c.time_budget == 36.0 and c.train_size == 20000 for _, c in cpu)
    assert cpu[0][1].run_dir() == os.path.join("grid", "lstm-stn-d2")
    assert set(reproduce.PAPER_TABLE) >= {(m, d) for m in ("lstm-stn", "ffn-stn") for d in (1, 2, 3, 4)}


def test_dry_run_prints_the_plan_and_trains_nothing(tmp_path, capsys):
    out = tmp_path / "grid"
    assert reproduce.main(["--preset", "cpu", "--out", str(out), "--dry-run", "--time-budget", "5"]) == 0
    text = capsys.readouterr().out
    for name in ("lstm-stn-d2", "ffn-stn-d2", "cnn-d1"):
        assert name in text
    assert '"time_budget": 5.0' in text and "[new]" in text
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--preset", "gpu", "--out", "x"], "invalid choice: 'gpu'"),
        (["--out", "x"], "the following arguments are required: --preset"),
        (["--preset", "cpu", "--out", "x", "--downsample", "7"], "--downsample must be 1, 2, 3 or 4"),
        (["--preset", "cpu", "--out", "x", "--epochs", "0"], "--epochs must be at least 1"),
    ],
)
def test_bad_options_exit_2(argv, message, capsys):
    assert reproduce.main(argv) == 2
    assert message in capsys.readouterr().err


def test_tiny_grid_writes_table_and_figures_and_skips_finished_runs(data_dir, tmp_path, capsys):
    out = tmp_path / "grid"
    argv = ["--preset", "cpu", "--out", str(out), "--models", "ffn-stn", "--downsample", "4", "--data", data_dir,
            "--epochs", "1", "--batch-size", "4", "--no-progress"]
    assert reproduce.main(argv) == 0
    for name in ("table1.md", "curves.png", "glimpses-ffn-stn-d4.png", "theta-ffn-stn-d4.png"):
        assert (out / name).stat().st_size > 0, name
    result = json.loads((out / "ffn-stn-d4" / "result.json").read_text())
    table = (out / "table1.md").read_text()
    assert f"| {result['test_digit_error']:.1f} / 5.6 |" in table
    assert "| CNN | - / 2.7 |" in table
    assert "| ffn-stn-d4 |" in table
    capsys.readouterr()
    assert reproduce.main(argv) == 0
    assert "ffn-stn-d4: already finished, skipped" in capsys.readouterr().out


def test_glimpse_corners_of_identity_and_zoom():
    ident = np.array([[[[1.0, 0, 0], [0, 1.0, 0]]]])                                      # (1, 1, 2, 3)
    c = plots.glimpse_corners(ident, 100, 100)
    np.testing.assert_allclose(c[0, 0], [[-0.5, -0.5], [99.5, -0.5], [99.5, 99.5], [-0.5, 99.5]])
    zoom = np.array([[[[0.5, 0, 0.5], [0, 0.25, 0]]]])   # right half of the width, middle quarter of the height
    c = plots.glimpse_corners(zoom, 100, 100)
    np.testing.assert_allclose(c[0, 0], [[49.5, 37.0], [99.5, 37.0], [99.5, 62.0], [49.5, 62.0]])


def test_plot_functions_write_pngs(tmp_path, rng):
    recs = [{"epoch": e, "steps": 2, "steps_per_epoch": 2, "val_digit_error": 50.0 / e, "train_digit_error": 60.0 / e,
             "theta_spread": 0.01 * e, "theta_steps": [{"tx": 0.1 * s, "ty": 0.0, "sx": 0.5, "sy": 0.5} for s in range(4)]}
            for e in (1, 2, 3)]
    assert os.path.getsize(plots.plot_curves({"a": recs, "b": recs[:2]}, str(tmp_path / "c.png"))) > 0
    assert os.path.getsize(plots.plot_theta_stats(recs, str(tmp_path / "t.png"))) > 0
    canvases = rng.random((2, 1, 100, 100))
    thetas = np.tile(np.array([[0.3, 0, 0], [0, 0.5, 0]]), (2, 4, 1, 1))
    glimpses = rng.random((2, 4, 1, 50, 50))
    path = plots.plot_glimpses(canvases, thetas, glimpses, str(tmp_path / "g.png"), labels=np.zeros((2, 4), int))
    assert os.path.getsize(path) > 0
