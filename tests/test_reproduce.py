"""`python -m minstn.reproduce` (dry run, a tiny real grid) and the figures of minstn.plots."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from minstn import grid, plots, reproduce, tables
from minstn.data import save_digit_file, save_sequence_file
from minstn.training.config import ConfigError


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


@pytest.fixture(scope="module")
def digit_data_dir(tmp_path_factory):
    """A --data folder of single-digit 28x28 images (train 4, val 4, test 4)."""
    folder = tmp_path_factory.mktemp("tinydigits")
    rng = np.random.default_rng(2)
    for split in ("train", "val", "test"):
        save_digit_file(folder / f"{split}.npz", {"images": rng.random((4, 1, 28, 28), dtype=np.float32),
                                                  "labels": rng.integers(0, 10, size=(4, 1)).astype(np.int64)})
    return str(folder)


#: sha256 (first 16 hex digits) of the '\n'-joined cell commands of each Table I preset with --out X: these
#: grids are being run, in other folders, by other copies of the code, so their cells, names, commands and
#: settings must not change (a preset that must change is a new preset)
PINNED_COMMANDS = {"cpu": (19, "83a6993886bf28c9"), "paper": (10, "648a05d49a5fef1f"), "cells": (6, "ef3ff68fcd65a3b3"),
                   "sonderby": (12, "ba6c2343beefc72d")}


@pytest.mark.parametrize("preset", sorted(PINNED_COMMANDS))
def test_the_running_presets_keep_their_commands(preset):
    import hashlib

    commands = [grid.cell_command(cfg) for _, cfg in grid.plan_cells(preset, "X")]
    digest = hashlib.sha256("\n".join(commands).encode()).hexdigest()[:16]
    assert (len(commands), digest) == PINNED_COMMANDS[preset]


def test_presets_and_cells():
    cpu = grid.plan_cells("cpu", "grid")
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
    paper = grid.plan_cells("paper", "grid")
    assert all(cfg.train_size == 70000 and cfg.val_size == 20000 and cfg.max_images == 0 for _, cfg in paper)
    assert set(tables.PAPER_TABLE) >= {(m, d) for m in ("lstm-stn", "ffn-stn") for d in (1, 2, 3, 4)}


def test_single_digit_presets_and_the_tied_lstm_stn():
    stn = dict((c.name, cfg) for c, cfg in grid.plan_cells("stn-paper", "grid"))
    assert len(stn) == 5 * 8 + 1
    for t in ("R", "RTS", "P", "E", "TC"):
        assert f"fcn-{t}-s0" in stn and f"st-fcn-{t}-s0" in stn and f"fcn-{t}-s1" not in stn
        for s in (0, 1, 2):
            cfg = stn[f"st-cnn-{t}-s{s}"]
            assert (cfg.task, cfg.distortion, cfg.model, cfg.seed, cfg.transform) == ("distorted-mnist", t, "st-cnn", s, None)
            assert f"mnist-cnn-{t}-s{s}" in stn
    proj = stn["st-cnn-P-proj-s0"]
    assert proj.transform == "projective" and proj.distortion == "P" and proj.run_dir() == os.path.join("grid", "st-cnn-P-proj-s0")
    assert list(stn)[:4] == ["fcn-R-s0", "st-fcn-R-s0", "mnist-cnn-R-s0", "st-cnn-R-s0"]    # seed 0 of every row first
    tstn = dict((c.name, cfg) for c, cfg in grid.plan_cells("tstn", "grid"))
    assert sorted(tstn) == sorted(f"{g}-s{s}" for g in ("tstn-cnn", "tstn-untied", "tstn") for s in (0, 1, 2))
    assert tstn["tstn-untied-s1"].tied is False and tstn["tstn-s2"].tied is None and tstn["tstn-s0"].task == "cluttered-mnist"
    for cfg in list(stn.values()) + list(tstn.values()):
        assert (cfg.train_size, cfg.val_size, cfg.test_size, cfg.max_images, cfg.batch_size, cfg.chunk) == (
            20000, 2000, 2000, 160_000, 64, 32)
    ((cell, cfg),) = grid.plan_cells("tied", "grid")
    assert cell.name == "lstm-stn-d2-tied-s0" and cfg.tied is True and cfg.max_images == 160_000 and cfg.train_size == 20000
    assert grid.PRESETS["tied"]["borrow"] == {"lstm-stn-d2": "table1-cpu"}
    assert grid.is_digit_preset("stn-paper") and grid.is_digit_preset("tstn")
    assert not grid.is_digit_preset("tied") and not grid.is_digit_preset("cpu")


def test_single_digit_commands_give_no_canvas_options_and_parse_back(capsys):
    from minstn.train import make_config
    from minstn.training.config import given_options

    assert reproduce.main(["--preset", "stn-paper", "--out", "X", "--print-commands", "--cells", "st-cnn-P-proj-s0", "fcn-TC-s0"]) == 0
    fcn, proj = capsys.readouterr().out.strip().splitlines()     # in the preset's order
    assert proj.startswith("python -m minstn.train --task distorted-mnist --distortion P --model st-cnn --seed 0 ")
    assert " --transform projective " in proj and "--downsample" not in proj and "--layout" not in proj
    assert " --distortion TC --model fcn " in fcn
    for line in (proj, fcn):   # python -m minstn.train refuses --downsample, --layout with a single-digit task
        cfg = make_config(given_options(line.split()[3:]))
        assert cfg.max_images == 160_000 and cfg.task == "distorted-mnist"
    assert reproduce.main(["--preset", "tstn", "--out", "X", "--print-commands", "--cells", "tstn-untied-s2"]) == 0
    line = capsys.readouterr().out.strip()
    assert "--task cluttered-mnist --model tstn --seed 2 --no-tied " in line
    assert make_config(given_options(line.split()[3:])).tied is False
    assert reproduce.main(["--preset", "tied", "--out", "X", "--print-commands"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("python -m minstn.train --model lstm-stn --downsample 2 --seed 0 --tied ")


def test_tiny_single_digit_grid_resumes_collects_and_tabulates(digit_data_dir, tmp_path, capsys):
    out, results = tmp_path / "grid", tmp_path / "results" / "stn-paper"
    grid = ["--preset", "stn-paper", "--out", str(out)]
    cells = ["--cells", "st-cnn-P-proj-s0", "fcn-R-s0", "mnist-cnn-E-s1"]
    run = ["--data", digit_data_dir, "--batch-size", "4", "--no-progress", "--workers", "1"]
    assert reproduce.main(grid + cells + run + ["--max-images", "4", "--figures"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["curves.png", "glimpses-st-cnn-P-proj-s0.png",
                                                         "theta-st-cnn-P-proj-s0.png", "transforms.png"]
    for p in out.glob("*.png"):
        p.unlink()
    capsys.readouterr()
    assert reproduce.main(grid + cells + run + ["--max-images", "4", "--figures"]) == 0   # every cell finished:
    assert "wrote 4 figures" in capsys.readouterr().out                                    # the figures all the same
    assert (out / "transforms.png").stat().st_size > 0
    result = json.loads((out / "st-cnn-P-proj-s0" / "result.json").read_text())
    assert result["images_seen"] == 4 and "shifted_digit_error" not in result and len(result["test_position_error"]) == 1
    assert result["config"]["transform"] == "projective" and result["downsample"] == 1
    # an interrupted cell (last.npz, no result.json) is resumed with the run's saved settings
    (out / "fcn-R-s0" / "result.json").unlink()
    capsys.readouterr()
    assert reproduce.main(grid + ["--cells", "fcn-R-s0"] + run + ["--max-images", "8"]) == 0
    assert "fcn-R-s0: continuing in" in capsys.readouterr().out
    assert json.loads((out / "fcn-R-s0" / "result.json").read_text())["images_seen"] == 8
    assert reproduce.main(grid + cells + ["--collect", str(results)]) == 0
    table = (results / "stn-paper.md").read_text()
    e = json.loads((out / "mnist-cnn-E-s1" / "result.json").read_text())["test_digit_error"]
    assert f"| CNN | - (paper 1.2) | - (paper 0.8) | - (paper 1.5) | {e:.1f} (paper 1.4) | - (paper 3.5) |" in table
    assert f"| ST-CNN, projective |  |  | {result['test_digit_error']:.1f} |  |  |" in table
    assert f"| st-cnn-P-proj | 0 | {result['test_digit_error']:.2f} | {result['num_params']:,} | 4 | 1 of 1 |  |" in table
    assert "| fcn-R | 0 |" in table and "| 2.1 |" in table and "shifted" not in table and "per position" not in table
    assert "`-proj`: a projective transformer" in table and "`-plain`" not in table and "`-untied`" not in table
    readme = tmp_path / "README.md"
    begin, end = tables.readme_markers("stn-paper")
    assert begin.startswith("<!-- results:stn-paper:begin ")
    readme.write_text(f"{begin}\n{end}\n")
    assert reproduce.main(["--table", str(results), "--preset", "stn-paper", "--readme", str(readme)]) == 0
    assert tables.readme_block(str(readme), "stn-paper") == tables.table_markdown(
        tables.read_cells(str(results)), "stn-paper")


def test_a_sequence_cell_resumes_too(data_dir, tmp_path, capsys):
    out = tmp_path / "grid"
    argv = ["--preset", "cpu", "--out", str(out), "--cells", "ffn-stn-d4-s0", "--data", data_dir, "--batch-size", "4",
            "--no-progress", "--workers", "1"]
    assert reproduce.main(argv + ["--max-images", "4"]) == 0
    (out / "ffn-stn-d4-s0" / "result.json").unlink()
    capsys.readouterr()
    assert reproduce.main(argv + ["--max-images", "8"]) == 0
    assert "ffn-stn-d4-s0: continuing in" in capsys.readouterr().out
    assert json.loads((out / "ffn-stn-d4-s0" / "result.json").read_text())["images_seen"] == 8


def _fake_result(model, error, *, task="mnist-sequence", distortion=None, positions=4, shifted=True, **options):
    result = {"model": model, "downsample": 2 if task == "mnist-sequence" else 1, "options": options,
              "test_digit_error": error, "test_seq_error": min(100.0, positions * error),
              "test_position_error": [error] * positions, "best_epoch": 8, "epochs_completed": 8,
              "images_seen": 160_000, "stop_reason": "image budget of 160,000 reached", "num_params": 1000,
              "config": {"task": task, "distortion": distortion}}
    if shifted:
        result.update(shifted_digit_error=2 * error, shifted_position_error=[2 * error] * positions)
    return result


def _write_cells(folder, results):
    for name, result in results.items():
        os.makedirs(folder / name)
        (folder / name / "result.json").write_text(json.dumps(result))
        (folder / name / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "val_digit_error": 5.0}) + "\n")


def test_tstn_table_beside_the_papers_numbers(tmp_path):
    folder = tmp_path / "tstn"
    kw = {"task": "cluttered-mnist", "positions": 1, "shifted": False}
    _write_cells(folder, {"tstn-cnn-s0": _fake_result("tstn-cnn", 5.0, **kw), "tstn-cnn-s1": _fake_result("tstn-cnn", 7.0, **kw),
                          "tstn-s0": _fake_result("tstn", 3.5, tied=True, **kw)})
    text = tables.table_markdown(tables.read_cells(str(folder)), "tstn")
    assert "| classification CNN only (`tstn-cnn`) | 6.00 ± 1.41 | 4.44 |" in text
    assert "| untied STN (`tstn-untied`) | - | 4.33 |" in text and "| TSTN (`tstn`) | 3.50 | 3.14 |" in text
    assert "| tstn-cnn | 0, 1 | 6.00 ± 1.41 | 1,000 | 160,000 | 2 of 2 | 4.44 |" in text
    assert "| TSTN paper % |" in text and "shifted" not in text
    assert reproduce.main(["--table", str(folder), "--preset", "tstn"]) == 0
    assert "The TSTN paper's Table 3" in (folder / "tstn.md").read_text()
    assert (folder / "tstn-curves.png").stat().st_size > 10_000      # the fake cells' one-epoch curves


def test_the_tied_table_borrows_the_untied_cells_from_table1_cpu(tmp_path, capsys):
    _write_cells(tmp_path / "table1-cpu", {"lstm-stn-d2-s0": _fake_result("lstm-stn", 4.0),
                                           "lstm-stn-d2-s1": _fake_result("lstm-stn", 6.0),
                                           "ffn-stn-d2-s0": _fake_result("ffn-stn", 9.0)})
    _write_cells(tmp_path / "tied", {"lstm-stn-d2-tied-s0": _fake_result("lstm-stn", 3.0, tied=True)})
    cells = tables.preset_cells(str(tmp_path / "tied"), "tied")
    assert sorted(cells) == ["lstm-stn-d2-s0", "lstm-stn-d2-s1", "lstm-stn-d2-tied-s0"]
    text = tables.table_markdown(cells, "tied")
    tied, untied = [line for line in text.splitlines() if line.startswith("| lstm-stn-d2")]
    assert tied.startswith("| lstm-stn-d2-tied | 0 | 3.00 | 6.00 | 2.00 |")
    assert untied.startswith("| lstm-stn-d2 | 0, 1 | 5.00 ± 1.41 | 10.00 ± 2.83 | 2.00 |")
    assert reproduce.main(["--table", str(tmp_path / "tied"), "--preset", "tied"]) == 0   # borrows as --collect does
    assert "(3 cells)" in capsys.readouterr().out
    written = (tmp_path / "tied" / "tied.md").read_text()
    assert text in written and "`-tied`: the tied LSTM-STN" in written


def test_tables_without_shifted_sets_or_positions():
    """A sequence preset's table copes with result files that have no shifted_* keys and one position."""
    cells = {"lstm-stn-d2-s0": {"result": _fake_result("lstm-stn", 4.0, positions=1, shifted=False), "metrics": []}}
    text = tables.table_markdown(cells, "cpu")
    assert "| lstm-stn-d2 | 0 | 4.00 | - | - | 4.0 | 4.0 | - | 160,000 | 0 of 1 | 1.6 |" in text


def test_cells_that_did_not_learn_are_named_below_the_table():
    """A seed whose validation error never left chance is counted in the mean and named, with where it looked."""
    stuck_metrics = [{"epoch": e, "val_digit_error": 89.1, "theta_steps": [{"tx": -1.8, "ty": -0.18, "sx": -0.14, "sy": 1.91}]}
                     for e in (1, 2)]
    cells = {"ffn-stn-d2-s0": {"result": _fake_result("ffn-stn", 9.0), "metrics": [{"epoch": 1, "val_digit_error": 9.5}]},
             "ffn-stn-d2-s1": {"result": _fake_result("ffn-stn", 89.0), "metrics": stuck_metrics}}
    text = tables.table_markdown(cells, "cpu")
    assert "| ffn-stn-d2 | 0, 1 | 49.00 ± 56.57 |" in text
    assert ("counted in the means above: ffn-stn-d2-s1 (best validation error 89.1%; mean theta at the last epoch: "
            "tx -1.80 ty -0.18 sx -0.14 sy +1.91)") in text
    assert "did not learn" not in tables.table_markdown({"ffn-stn-d2-s0": cells["ffn-stn-d2-s0"]}, "cpu")
    digit = {"st-cnn-R-s0": {"result": _fake_result("st-cnn", 90.0, task="distorted-mnist", distortion="R", positions=1,
                                                    shifted=False), "metrics": [{"epoch": 1, "val_digit_error": 88.0}]}}
    assert "st-cnn-R-s0 (best validation error 88.0%)" in tables.table_markdown(digit, "stn-paper")


def test_cells_patterns_select_and_unknown_pattern_is_an_error():
    picked = [c.name for c, _ in grid.plan_cells("cpu", "g", ["lstm-stn-d2-s*", "cnn-s0"])]
    assert picked == ["lstm-stn-d2-s0", "cnn-s0", "lstm-stn-d2-s1", "lstm-stn-d2-s2"]
    with pytest.raises(ConfigError, match=r"--cells 'gru-\*' matches no cell of preset 'cpu'; its cells: "):
        grid.plan_cells("cpu", "g", ["gru-*"])


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



def test_a_reader_that_closes_the_pipe_early_gets_no_traceback(tmp_path):
    """`python -m minstn.reproduce --print-commands | head -3`: the command stops quietly (status 1)."""
    import subprocess
    import sys
    r, w = os.pipe()
    os.close(r)                      # the reader is gone before the first line is written
    try:
        proc = subprocess.run([sys.executable, "-m", "minstn.reproduce", "--preset", "stn-paper", "--out",
                               str(tmp_path / "grid"), "--print-commands"], stdout=w, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    finally:
        os.close(w)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr

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
    assert reproduce.main(argv[:6] + ["--max-images", "8", "--list"]) == 0       # how far each cell is
    assert (f"ffn-stn-d4-s0            [done]  8 of 8 images, test {result['test_digit_error']:.2f}%"
            in capsys.readouterr().out)
    metrics = out / "ffn-stn-d4-s0" / "metrics.jsonl"
    whole = metrics.read_text()
    metrics.write_text(whole + '{"epoch": 3, "par')                       # as a kill in mid-write leaves it
    assert reproduce.main(argv[:6] + ["--max-images", "8", "--list"]) == 0
    assert "ffn-stn-d4-s0            [done]  metrics.jsonl ends in a cut line" in capsys.readouterr().out
    metrics.write_text(whole)
    assert reproduce.main(argv[:4] + ["--cells", "ffn-stn-d4-s0", "cnn-s1", "--collect", str(results)]) == 0
    assert sorted(os.listdir(results / "cnn-s1")) == ["config.json", "metrics.jsonl", "result.json"]
    table = (results / "table1.md").read_text()
    assert f"| {result['test_digit_error']:.1f} (paper 5.6) |" in table
    assert "| ffn-stn-d4-s0 |" in table and "| cnn | 1 |" in table
    assert "![The learning curves of every cell](table1-curves.png)" in table
    commit = result["code"]["commit"]
    assert f"| {commit[:7] + ('+' if result['code']['modified'] else '') if commit else '-'} |" in table   # the code column
    machine = result["machine"]                                       # and the machine column
    assert machine["cores"] >= 1 and machine["cpu"] and machine["blas"]
    assert f"| {machine['cpu']}, {machine['cores']} cores |" in table
    assert (results / "table1-curves.png").stat().st_size > 10_000
    # the table again from the collected files alone, and a README block kept in step with it
    readme = tmp_path / "README.md"
    begin, end = tables.readme_markers("cpu")
    readme.write_text(f"intro\n{begin}\nstale\n{end}\nafter\n")
    assert reproduce.main(["--table", str(results), "--preset", "cpu", "--readme", str(readme)]) == 0
    assert tables.readme_block(str(readme), "cpu") == tables.table_markdown(tables.read_cells(str(results)), "cpu")
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
    assert tables._still_improving(recs)
    assert not tables._still_improving(recs + [{"epoch": 3, "val_digit_error": 41.0}])
    assert tables._fmt([1.0, 2.0, 3.0]) == "2.0 ± 1.0" and tables._fmt([4.25], 2) == "4.25" and tables._fmt([]) == "-"


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
    rows = [{"name": "st-cnn-R", "images": rng.random((3, 1, 28, 28)), "glimpses": rng.random((3, 1, 28, 28)),
             "corners": plots.glimpse_corners(np.tile(np.array([[1.0, 0, 0], [0, 1.0, 0]]), (3, 1, 1, 1)), 28, 28)[:, 0]},
            {"name": "st-cnn-TC", "images": rng.random((3, 1, 60, 60)), "glimpses": rng.random((3, 1, 60, 60)),
             "corners": rng.random((3, 4, 2)) * 60}]
    assert os.path.getsize(plots.plot_transforms(rows, str(tmp_path / "tr.png"), title="t")) > 0
    with pytest.raises(ValueError, match="n the same"):
        plots.plot_transforms([rows[0], {**rows[1], "corners": rows[1]["corners"][:2]}], str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match="at least one row"):
        plots.plot_transforms([], str(tmp_path / "x.png"))


@pytest.mark.parametrize("preset, folder", [("cpu", "table1-cpu"), ("paper", "table1-paper"), ("cells", "cells"), ("sonderby", "sonderby"),
                                            ("stn-paper", "stn-paper"), ("tstn", "tstn"), ("tied", "tied")])
def test_the_readme_and_the_committed_tables_match_the_committed_results(preset, folder):
    """README.md's results blocks and results/*/<table>.md are what the committed result files give:
    after adding cells to results/, run `python -m minstn.reproduce --table results/FOLDER --preset P --readme README.md`."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    results = os.path.join(root, "results", folder)
    readme = os.path.join(root, "README.md")
    begin, _ = tables.readme_markers(preset)
    with open(readme) as f:
        has_block = begin in f.read()
    if preset == "cpu":
        assert has_block, "README.md lost its Table I block"
    if has_block:
        assert tables.readme_block(readme, preset) == tables.table_markdown(tables.preset_cells(results, preset), preset)
    table = os.path.join(results, grid.PRESETS[preset]["table"])
    if os.path.exists(table):
        with open(table) as f:
            committed = f.read()
        regenerated = committed.split("\n\n", 2)[2]   # past the title and the line naming the command
        cells = tables.preset_cells(results, preset)
        assert tables.table_markdown(cells, preset) in regenerated
