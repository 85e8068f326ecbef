"""The generate and preview command-line tools, end to end on a synthetic MNIST folder."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from minstn.data import load_sequence_dir, load_sequence_file, read_sequence_params
from minstn.data.generate import main as generate_main
from minstn.data.preview import main as preview_main
from minstn.data.synthetic import write_synthetic_mnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    return write_synthetic_mnist(str(tmp_path_factory.mktemp("mnist")), n_train=300, n_test=100, seed=5)


def test_generate_writes_three_splits(tmp_path, mnist_dir, capsys):
    out = tmp_path / "data"
    rc = generate_main(["--out", str(out), "--train", "6", "--val", "4", "--test", "3", "--seed", "7",
                        "--data-dir", mnist_dir, "--val-start", "200", "--angle", "30", "--gap", "3", "--workers", "1"])
    assert rc == 0
    assert sorted(os.listdir(out)) == ["params.json", "test.npz", "train.npz", "val.npz"]
    d = load_sequence_dir(out)
    assert d["train"]["images"].shape == (6, 1, 100, 100) and d["test"]["labels"].shape == (3, 4)
    assert np.abs(d["val"]["angles"]).max() <= 30
    record = read_sequence_params(out / "train.npz")
    assert record["seed"] == 7 and record["size"] == 6 and record["options"]["gap"] == 3
    assert json.loads((out / "params.json").read_text())["val"]["split"] == "val"
    text = capsys.readouterr().out
    assert "train: 6 canvases generated in" in text and "done in" in text


def test_generate_matches_load_splits_records(tmp_path, mnist_dir):
    from minstn.data import load_splits
    generate_main(["--out", str(tmp_path / "g"), "--train", "5", "--val", "0", "--test", "0",
                   "--data-dir", mnist_dir, "--val-start", "200"])
    cached = load_splits(5, 0, 0, data_dir=mnist_dir, cache_dir=tmp_path / "cache", val_start=200)
    np.testing.assert_array_equal(load_sequence_file(tmp_path / "g" / "train.npz")["images"], cached["train"]["images"])


def test_generate_rejects_bad_options_in_one_line_before_writing(tmp_path, mnist_dir, capsys):
    with pytest.raises(SystemExit):
        generate_main(["--out", str(tmp_path), "--bogus", "1"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    out = tmp_path / "never"
    for argv, message in [(["--gap", "0"], "gap must be >= 1 with crop=True"),
                          (["--train", "-1"], "--train must be >= 0"),
                          (["--seed", "-1"], "--seed must be >= 0"),
                          (["--workers", "0"], "--workers must be >= 1"),
                          (["--gap", "4", "--gap-max", "3"], "gap_max must be >= gap (4)"),
                          (["--no-crop", "--gap", "20", "--angle", "0", "--train", "4", "--data-dir", mnist_dir,
                            "--val-start", "200"], "could not be laid out")]:
        assert generate_main(["--out", str(out)] + argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, argv
        assert not out.exists()                 # nothing written: no empty folder left behind
    (tmp_path / "afile").write_text("x")
    assert generate_main(["--out", str(tmp_path / "afile")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_generate_layouts_and_the_shifted_set(tmp_path, mnist_dir):
    from minstn.data import read_sequence_params

    out = tmp_path / "g"
    assert generate_main(["--out", str(out), "--train", "6", "--val", "0", "--test", "3", "--shifted", "3",
                          "--data-dir", mnist_dir, "--val-start", "200", "--layout", "fixed", "-q"]) == 0
    assert sorted(os.listdir(out)) == ["params.json", "shifted.npz", "test.npz", "train.npz", "val.npz"]
    assert read_sequence_params(out / "train.npz")["options"]["gap_max"] is None
    shifted = read_sequence_params(out / "shifted.npz")
    assert shifted["split"] == "shifted" and shifted["options"]["crop"] is False


def test_generate_sonderby_layout_and_its_shifted_set(tmp_path, mnist_dir):
    """The layout's own angle, digits and noise are the flags' defaults; the shifted set differs from
    the splits only in where the digits go (as the trainer makes it); a flag overrides the layout."""
    from minstn.data import SequenceOptions

    out = tmp_path / "s"
    assert generate_main(["--out", str(out), "--train", "4", "--val", "0", "--test", "2", "--shifted", "2",
                          "--data-dir", mnist_dir, "--val-start", "200", "--layout", "sonderby", "-q"]) == 0
    train = load_sequence_file(str(out / "train.npz"))
    assert train["labels"].shape == (4, 3) and train["boxes"].shape == (4, 3, 4)
    options = read_sequence_params(out / "train.npz")["options"]
    want = SequenceOptions.for_layout("sonderby", val_start=200)
    assert options == want.to_dict()
    shifted = read_sequence_params(out / "shifted.npz")["options"]
    assert shifted == want.with_placement("cells").to_dict()
    assert load_sequence_file(str(out / "shifted.npz"))["labels"].shape == (2, 3)
    out2 = tmp_path / "s2"
    assert generate_main(["--out", str(out2), "--train", "2", "--val", "0", "--test", "1", "--data-dir", mnist_dir,
                          "--val-start", "200", "--layout", "sonderby", "--digits", "2", "--noise-combine", "max",
                          "--angle", "10", "-q"]) == 0
    options = read_sequence_params(out2 / "train.npz")["options"]
    assert (options["digits"], options["angle"], options.get("noise_combine", "max"), options["slant"]) == (2, 10.0, "max", 0.5)


def test_generate_reports_missing_mnist(tmp_path, capsys):
    rc = generate_main(["--out", str(tmp_path / "o"), "--train", "2", "--data-dir", str(tmp_path / "none")])
    assert rc == 2
    assert "does not exist. Put the four MNIST files" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_preview_from_generator_and_from_file(tmp_path, mnist_dir):
    png = tmp_path / "p.png"
    assert preview_main(["--out", str(png), "--n", "5", "--seed", "1", "--split", "test", "--data-dir", mnist_dir]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    generate_main(["--out", str(tmp_path / "g"), "--train", "0", "--val", "0", "--test", "4",
                   "--data-dir", mnist_dir, "--val-start", "200"])
    png2 = tmp_path / "q.png"
    assert preview_main(["--out", str(png2), "--n", "16", "--data", str(tmp_path / "g" / "test.npz")]) == 0
    assert png2.stat().st_size > 1000


def test_preview_errors(tmp_path, mnist_dir, capsys):
    assert preview_main(["--out", str(tmp_path / "p.png"), "--n", "0"]) == 2
    assert "--n must be >= 1" in capsys.readouterr().err
    assert preview_main(["--out", str(tmp_path / "p.png"), "--data", str(tmp_path / "none.npz")]) == 2
    assert "none.npz: file not found" in capsys.readouterr().err
    generate_main(["--out", str(tmp_path / "g"), "--train", "0", "--val", "0", "--test", "0", "--data-dir", mnist_dir])
    assert preview_main(["--out", str(tmp_path / "p.png"), "--data", str(tmp_path / "g" / "test.npz")]) == 2
    assert "holds 0 canvases; nothing to draw" in capsys.readouterr().err
    for bad in (str(tmp_path) + os.sep, str(tmp_path), str(tmp_path / "p.jpg")):
        assert preview_main(["--out", bad, "--n", "2"]) == 2
        assert "--out must name a .png file" in capsys.readouterr().err
    assert not (tmp_path / ".png").exists()


def test_draw_grid_needs_canvases(tmp_path):
    from minstn.data.preview import draw_grid
    with pytest.raises(ValueError, match=r"nothing to draw \(0 canvases\)"):
        draw_grid(np.zeros((0, 1, 100, 100), np.float32), np.zeros((0, 4)), np.zeros((0, 4, 4)), tmp_path / "x.png")


def test_generate_as_a_module(tmp_path, mnist_dir):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run([sys.executable, "-m", "minstn.data.generate", "--out", str(tmp_path / "m"),
                          "--train", "2", "--val", "2", "--test", "2", "--data-dir", mnist_dir, "--val-start", "200"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "done in" in run.stdout
    assert load_sequence_file(tmp_path / "m" / "val.npz")["images"].shape == (2, 1, 100, 100)


# ------------------------------------------------------------------- single-digit tasks (--task)


def test_generate_single_digit_tasks(tmp_path, mnist_dir, capsys):
    from minstn.data import distorted, load_digit_dir
    from minstn.data.tasks import _read

    out = tmp_path / "rts"
    assert generate_main(["--out", str(out), "--task", "distorted-mnist", "--distortion", "RTS", "--train", "5", "--val", "3",
                          "--test", "2", "--seed", "4", "--data-dir", mnist_dir, "--val-start", "200", "--workers", "1"]) == 0
    assert sorted(os.listdir(out)) == ["params.json", "test.npz", "train.npz", "val.npz"]
    d = load_digit_dir(out, "distorted-mnist", "RTS")            # the trainer's --data check of the task passes
    assert d["train"]["images"].shape == (5, 1, 42, 42) and d["test"]["labels"].shape == (2, 1)
    options = distorted.DistortionOptions.for_task("RTS", val_start=200)
    want = distorted.generate_distorted("val", 3, "RTS", seed=4, data_dir=mnist_dir, options=options)
    np.testing.assert_array_equal(d["val"]["images"], want["images"])
    np.testing.assert_array_equal(d["val"]["labels"], want["labels"])
    _, record = _read(str(out / "train.npz"))
    assert (record["task"], record["split"], record["size"], record["seed"]) == ("RTS", "train", 5, 4)
    assert record["options"] == options.to_dict() and json.loads((out / "params.json").read_text())["test"]["split"] == "test"
    text = capsys.readouterr().out
    assert "train: 5 images generated in" in text and "done in" in text
    out = tmp_path / "clut"
    assert generate_main(["--out", str(out), "--task", "cluttered-mnist", "--train", "2", "--val", "0", "--test", "1",
                          "--data-dir", mnist_dir, "--val-start", "200", "-q"]) == 0
    d = load_digit_dir(out, "cluttered-mnist")
    assert d["train"]["images"].shape == (2, 1, 60, 60) and d["val"]["images"].shape == (0, 1, 60, 60)
    assert capsys.readouterr().out == ""


def test_generate_single_digit_task_is_what_the_trainer_caches(tmp_path):
    """With the default --val-start the files are the trainer's (load_digit_splits) images and records."""
    from minstn.data import load_digit_splits
    from minstn.data.tasks import _read
    from tests.conftest import shared_mnist_dir

    mnist = shared_mnist_dir()
    if mnist is None:
        pytest.skip("the shared MNIST folder is not on this machine")
    out = tmp_path / "e"
    assert generate_main(["--out", str(out), "--task", "distorted-mnist", "--distortion", "E", "--train", "3", "--val", "2",
                          "--test", "2", "--data-dir", mnist, "-q"]) == 0
    cached = load_digit_splits("distorted-mnist", "E", 3, 2, 2, data_dir=mnist, cache_dir=tmp_path / "cache")
    for split in ("train", "val", "test"):
        arrays, record = _read(str(out / f"{split}.npz"))
        np.testing.assert_array_equal(arrays["images"], cached[split]["images"])
        (cache_file,) = (tmp_path / "cache").glob(f"distorted-E-{split}-*.npz")
        assert record == _read(str(cache_file))[1]


def test_generate_single_digit_errors_are_one_line_before_writing(tmp_path, mnist_dir, capsys):
    out = tmp_path / "never"
    for argv, message in [(["--task", "distorted-mnist"], "--task distorted-mnist needs --distortion, one of R, RTS, P, E, TC"),
                          (["--task", "cluttered-mnist", "--distortion", "R"],
                           "--distortion applies to --task distorted-mnist only, not to --task cluttered-mnist"),
                          (["--distortion", "E"], "--distortion applies to --task distorted-mnist only, not to --task mnist-sequence"),
                          (["--task", "cluttered-mnist", "--layout", "varied"],
                           "--layout is an option of the MNIST-sequence canvases (--task mnist-sequence); leave it out with "
                           "--task cluttered-mnist"),
                          (["--task", "distorted-mnist", "--distortion", "R", "--shifted", "5"], "--shifted is an option of"),
                          (["--task", "distorted-mnist", "--distortion", "R", "--no-crop"], "--no-crop is an option of"),
                          (["--task", "distorted-mnist", "--distortion", "P", "--angle", "10"], "--angle is an option of"),
                          (["--task", "cluttered-mnist", "--train", "-1"], "--train must be >= 0"),
                          (["--task", "cluttered-mnist", "--val-start", "0", "--data-dir", mnist_dir], "val_start must be >= 1"),
                          (["--task", "cluttered-mnist", "--train", "2", "--data-dir", str(tmp_path / "none")], "does not exist")]:
        assert generate_main(["--out", str(out)] + argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, argv
        assert not out.exists()
