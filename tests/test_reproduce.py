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
    for split, n in (("train", 4), ("val", 4), ("test", 4), ("shifted", 4)):
        save_sequence_file(folder / f"{split}.npz", {
            "images": rng.random((n, 1, 100, 100), dtype=np.float32),
            "labels": rng.integers(0, 10, size=(n, 4)).astype(np.int64),
            "angles": np.zeros(n, dtype=np.float32),
            "boxes": np.tile(np.array([0.0, 0.0, 10.0, 10.0], dtype=np.float32), (n, 4, 1)),
        })
    return str(folder)


def test_presets_and_cells():
    cpu = reproduce.plan_cells("cpu", "grid")
    names = [c.name for c, _ in cpu]
    assert len(names) == len(set(names)) == 19
    for seed in (0, 1, 2):
        for group in ("lstm-stn-d2", "lstm-stn-d2-plain", "ffn-stn-d2", "cnn"):
            assert f"{group}-s{seed}" in names
    for d in (1, 3, 4):
        assert f"lstm-stn-d{d}-s0" in names and f"ffn-stn-d{d}-s0" in names
    assert "lstm-stn-d2-fixed-s0" in names
    cfgs = dict((c.name, cfg) for c, cfg in cpu)
    assert all(c.max_images == 160_000 and c.train_size == 20000 and c.chunk == 32 and c.time_budget == 0 for c in cfgs.values())
    assert cfgs["lstm-stn-d2-plain-s1"].step_spread == 0.0 and cfgs["lstm-stn-d2-plain-s1"].seed == 1
    assert cfgs["lstm-stn-d2-s2"].step_spread is None and cfgs["lstm-stn-d2-s2"].layout == "varied"
    assert cfgs["lstm-stn-d2-fixed-s0"].layout == "fixed"
    assert cfgs["cnn-s2"].model == "cnn" and cfgs["cnn-s2"].run_dir() == os.path.join("grid", "cnn-s2")
    paper = reproduce.plan_cells("paper", "grid")
    assert all(cfg.train_size == 70000 and cfg.val_size == 20000 and cfg.max_images == 0 for _, cfg in paper)
    assert set(reproduce.PAPER_TABLE) >= {(m, d) for m in ("lstm-stn", "ffn-stn") for d in (1, 2, 3, 4)}


def test_cells_patterns_select_and_unknown_pattern_is_an_error():
    picked = [c.name for c, _ in reproduce.plan_cells("cpu", "g", ["lstm-stn-d2-s*", "cnn-s0"])]
    assert picked == ["lstm-stn-d2-s0", "cnn-s0", "lstm-stn-d2-s1", "lstm-stn-d2-s2"]
    with pytest.raises(reproduce.ConfigError, match=r"--cells 'gru-\*' matches no cell of preset 'cpu'; its cells: "):
        reproduce.plan_cells("cpu", "g", ["gru-*"])


def test_list_and_print_commands_train_nothing(tmp_path, capsys):
    out = tmp_path / "grid"
    assert reproduce.main(["--preset", "cpu", "--out", str(out), "--list"]) == 0
    text = capsys.readouterr().out
    assert "lstm-stn-d2-plain-s2" in text and "[new]" in text and not out.exists()
    assert reproduce.main(["--preset", "cpu", "--out", str(out), "--print-commands", "--cells", "lstm-stn-d2-plain-s1"]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert line.startswith("python -m minstn.train --model lstm-stn --downsample 2 ")
    assert " --seed 1 " in line and " --step-spread 0.0 " in line
    assert "--max-images 160000" in line and "--chunk 32" in line and f"--out {out / 'lstm-stn-d2-plain-s1'}" in line
    from minstn.training.config import given_options
    argv = line.split()[3:]
    assert given_options(argv)["step_spread"] == 0.0    # the printed command parses back


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--preset", "gpu", "--out", "x"], "invalid choice: 'gpu'"),
        (["--out", "x"], "--preset and --out are required"),
        (["--preset", "cpu", "--out", "x", "--max-images", "-5"], "--max-images must be >= 0"),
        (["--preset", "cpu", "--out", "x", "--cells", "nope"], "matches no cell"),
        (["--table", "/nonexistent/folder"], "cannot tell the preset"),
    ],
)
def test_bad_options_exit_2(argv, message, capsys):
    assert reproduce.main(argv) == 2
    assert message in capsys.readouterr().err


def test_tiny_grid_skips_finished_cells_collects_and_tabulates(data_dir, tmp_path, capsys):
    out, results = tmp_path / "grid", tmp_path / "results"
    argv = ["--preset", "cpu", "--out", str(out), "--cells", "ffn-stn-d4-s0", "cnn-s1", "--data", data_dir,
            "--max-images", "8", "--batch-size", "4", "--no-progress", "--workers", "1", "--figures"]
    assert reproduce.main(argv) == 0
    for name in ("curves.png", "glimpses-ffn-stn-d4-s0.png", "theta-ffn-stn-d4-s0.png"):
        assert (out / name).stat().st_size > 0, name
    result = json.loads((out / "ffn-stn-d4-s0" / "result.json").read_text())
    assert result["images_seen"] == 8 and result["stop_reason"] == "image budget of 8 reached"
    assert result["shifted_digit_error"] >= 0           # the data folder has a shifted.npz
    capsys.readouterr()
    assert reproduce.main(argv) == 0
    assert "ffn-stn-d4-s0: finished, skipped" in capsys.readouterr().out
    assert reproduce.main(argv[:4] + ["--cells", "ffn-stn-d4-s0", "cnn-s1", "--collect", str(results)]) == 0
    assert sorted(os.listdir(results / "cnn-s1")) == ["config.json", "metrics.jsonl", "result.json"]
    table = (results / "table1.md").read_text()
    assert f"| {result['test_digit_error']:.1f} (paper 5.6) |" in table
    assert "| ffn-stn-d4-s0 |" in table and "| cnn | 1 |" in table
    # the table again from the collected files alone, and a README block kept in step with it
    readme = tmp_path / "README.md"
    begin, end = reproduce.readme_markers("cpu")
    readme.write_text(f"intro\n{begin}\nstale\n{end}\nafter\n")
    assert reproduce.main(["--table", str(results), "--preset", "cpu", "--readme", str(readme)]) == 0
    assert reproduce.readme_block(str(readme), "cpu") == reproduce.table_markdown(reproduce.read_cells(str(results)), "cpu")
    assert readme.read_text().endswith(f"{end}\nafter\n")


def test_a_cell_held_by_another_process_is_left_to_it(data_dir, tmp_path, capsys):
    from minstn.training.run import RunLock

    out = tmp_path / "grid"
    with RunLock(str(out / "cnn-s0")):
        assert reproduce.main(["--preset", "cpu", "--out", str(out), "--cells", "cnn-s0", "--list"]) == 0
        assert "[running]" in capsys.readouterr().out
        assert reproduce.main(["--preset", "cpu", "--out", str(out), "--cells", "cnn-s0", "--data", data_dir,
                               "--max-images", "4", "--batch-size", "4", "--no-progress", "--workers", "1"]) == 0
        text = capsys.readouterr().out
    assert "cnn-s0: being trained by another process, skipped" in text and "still being trained elsewhere: cnn-s0" in text
    assert not (out / "cnn-s0" / "config.json").exists()


def test_still_improving_and_mean_sd():
    recs = [{"epoch": 1, "val_digit_error": 50.0}, {"epoch": 2, "val_digit_error": 40.0}]
    assert reproduce._still_improving(recs)
    assert not reproduce._still_improving(recs + [{"epoch": 3, "val_digit_error": 41.0}])
    assert reproduce._fmt([1.0, 2.0, 3.0]) == "2.0 ± 1.0" and reproduce._fmt([4.25], 2) == "4.25" and reproduce._fmt([]) == "-"


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


@pytest.mark.parametrize("preset, folder", [("cpu", "table1-cpu"), ("cells", "table1-cpu"), ("sonderby", "sonderby")])
def test_the_readme_and_the_committed_tables_match_the_committed_results(preset, folder):
    """README.md's results blocks and results/*/<table>.md are what the committed result files give:
    after adding cells to results/, run `python -m minstn.reproduce --table results/FOLDER --preset P --readme README.md`."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    results = os.path.join(root, "results", folder)
    readme = os.path.join(root, "README.md")
    begin, _ = reproduce.readme_markers(preset)
    with open(readme) as f:
        has_block = begin in f.read()
    if preset == "cpu":
        assert has_block, "README.md lost its Table I block"
    if has_block:
        assert reproduce.readme_block(readme, preset) == reproduce.table_markdown(reproduce.preset_cells(results, preset), preset)
    table = os.path.join(results, reproduce.PRESETS[preset]["table"])
    if os.path.exists(table):
        with open(table) as f:
            committed = f.read()
        regenerated = committed.split("\n\n", 2)[2]   # past the title and the line naming the command
        cells = reproduce.preset_cells(results, preset)
        assert reproduce.table_markdown(cells, preset) in regenerated
