"""The training tasks (issue 17): the single-digit data files and cache (minstn.data.tasks), the
--task / --distortion settings and their one-line errors, and `python -m minstn.train` on a
single-digit task end to end (tiny: a few noise images, a step or two; the machinery, not learning).
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from minstn import train
from minstn.data import DataError, load_digit_dir, load_digit_file, load_digit_splits, save_digit_file, save_sequence_file
from minstn.data.tasks import generator_task
from minstn.training.config import ConfigError, TrainConfig, config_from_dict
from tests.conftest import shared_mnist_dir
from tests.test_train import _split

needs_mnist = pytest.mark.skipif(shared_mnist_dir() is None, reason="MNIST files not found (../shared/data/mnist)")


def _digits(rng, n, side):
    return {"images": rng.random((n, 1, side, side), dtype=np.float32),
            "labels": rng.integers(0, 10, size=(n, 1)).astype(np.int64)}


@pytest.fixture(scope="module")
def digit_dir(tmp_path_factory):
    """A --data folder of 16x16 single-digit noise images: train 8, val 4, test 4."""
    folder = tmp_path_factory.mktemp("digits")
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 4), ("test", 4)):
        save_digit_file(folder / f"{split}.npz", _digits(rng, n, 16), params={"task": "R", "kind": "digits"})
    return str(folder)


def _argv(folder, out, *extra, model="st-cnn", task=("--task", "distorted-mnist", "--distortion", "R")):
    return [*task, "--model", model, "--data", folder, "--out", str(out), "--batch-size", "4", "--eval-batch-size", "4",
            "--theta-batch", "4", "--epochs", "1", "--no-progress", "--workers", "1", *extra]


# ----- data --------------------------------------------------------------------------------------

def test_generator_task_names_the_generator_and_refuses_the_rest():
    assert [generator_task("distorted-mnist", d) for d in ("R", "RTS", "P", "E", "TC")] == ["R", "RTS", "P", "E", "TC"]
    assert generator_task("cluttered-mnist") == "cluttered"
    with pytest.raises(ValueError, match="task distorted-mnist needs a distortion, one of R, RTS, P, E, TC; got None"):
        generator_task("distorted-mnist")
    with pytest.raises(ValueError, match="applies to task distorted-mnist only"):
        generator_task("cluttered-mnist", "R")
    with pytest.raises(ValueError, match="'mnist-sequence' is not a single-digit task"):
        generator_task("mnist-sequence")


@needs_mnist
@pytest.mark.parametrize("task, distortion, side", [("distorted-mnist", "R", 28), ("distorted-mnist", "RTS", 42),
                                                    ("cluttered-mnist", None, 60)])
def test_splits_are_generated_cached_and_reused(task, distortion, side, tmp_path, monkeypatch):
    kw = dict(train_size=6, val_size=3, test_size=2, seed=1, data_dir=shared_mnist_dir(), cache_dir=tmp_path)
    d = load_digit_splits(task, distortion, **kw)
    assert {s: v["images"].shape for s, v in d.items()} == {"train": (6, 1, side, side), "val": (3, 1, side, side),
                                                            "test": (2, 1, side, side)}
    assert all(v["labels"].shape == (len(v["images"]), 1) and v["labels"].dtype == np.int64 for v in d.values())
    assert len(os.listdir(tmp_path)) == 3
    from minstn.data import distorted

    def refuse(*a, **k):
        raise AssertionError("a cached split was generated again")

    monkeypatch.setattr(distorted, "generate_distorted", refuse)
    monkeypatch.setattr(distorted, "generate_cluttered", refuse)
    again = load_digit_splits(task, distortion, **kw)                       # every split from the cache
    for split in d:
        np.testing.assert_array_equal(again[split]["images"], d[split]["images"])
        np.testing.assert_array_equal(again[split]["labels"], d[split]["labels"])


@needs_mnist
def test_a_damaged_cache_file_is_made_again_and_the_pools_are_disjoint(tmp_path):
    kw = dict(train_size=4, val_size=2, test_size=2, seed=0, data_dir=shared_mnist_dir(), cache_dir=tmp_path)
    first = load_digit_splits("distorted-mnist", "P", **kw)
    path = next(p for p in tmp_path.iterdir() if "-train-" in p.name)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.warns(RuntimeWarning, match="ignoring damaged cache file"):
        again = load_digit_splits("distorted-mnist", "P", **kw)
    np.testing.assert_array_equal(again["train"]["images"], first["train"]["images"])
    with pytest.raises(ValueError, match="train_size must be an int >= 0, got -1"):
        load_digit_splits("distorted-mnist", "P", **{**kw, "train_size": -1})
    # the disjoint pools (train from training digits [0, 20000), val after, test from the test set)
    # are minstn.data.distorted's; tests/test_data_distorted.py checks them


def test_files_round_trip_and_bad_files_are_one_line_errors(tmp_path):
    rng = np.random.default_rng(0)
    d = _digits(rng, 3, 12)
    save_digit_file(tmp_path / "a.npz", d, params={"task": "RTS"})
    back = load_digit_file(tmp_path / "a.npz")
    np.testing.assert_array_equal(back["images"], d["images"])
    assert set(np.load(tmp_path / "a.npz", allow_pickle=False).files) == {"images", "labels", "params"}
    with pytest.raises(DataError, match=r"holds task 'RTS' images, but this run is distorted-mnist R \('R'\)"):
        load_digit_file(tmp_path / "a.npz", "distorted-mnist", "R")
    with pytest.raises(DataError, match=r"images are 12x12, but this task's are 28x28"):
        load_digit_file(tmp_path / "a.npz", side=28)
    with pytest.raises(DataError, match=r"'labels' has shape \(3, 2\), expected \(N, 1\)"):
        save_digit_file(tmp_path / "b.npz", {**d, "labels": np.zeros((3, 2), np.int64)})
    with pytest.raises(DataError, match="'images' has dtype float64, expected float32"):
        save_digit_file(tmp_path / "b.npz", {**d, "images": d["images"].astype(np.float64)})
    with pytest.raises(DataError, match=r"'images' has shape \(3, 1, 12, 10\), expected \(N, 1, S, S\)"):
        save_digit_file(tmp_path / "b.npz", {**d, "images": d["images"][..., :10]})
    with pytest.raises(DataError, match=r"image values outside \[0, 1\]"):
        save_digit_file(tmp_path / "b.npz", {**d, "images": d["images"] + 1})
    assert not (tmp_path / "b.npz").exists()
    save_sequence_file(tmp_path / "seq.npz", _split(rng, 2))
    with pytest.raises(DataError, match=r"\(an MNIST-sequence file\? train on it with --task mnist-sequence\)"):
        load_digit_file(tmp_path / "seq.npz")
    with pytest.raises(DataError, match="has no train.npz"):
        load_digit_dir(str(tmp_path))


# ----- settings ------------------------------------------------------------------------------------

def test_task_settings_and_their_errors():
    assert TrainConfig().task == "mnist-sequence" and TrainConfig().distortion is None    # the default task
    cfg = TrainConfig(task="distorted-mnist", distortion="RTS", model="st-cnn").validate()
    assert cfg.run_dir() == os.path.join("runs", "distorted-mnist-RTS-st-cnn")
    assert TrainConfig(task="cluttered-mnist", model="tstn").validate().run_dir() == os.path.join("runs", "cluttered-mnist-tstn")
    for kwargs, message in [
        (dict(task="distorted-mnist", distortion="R"),
         "--model lstm-stn is a model of --task mnist-sequence, not of distorted-mnist; choose one of fcn, mnist-cnn, "
         "st-fcn, st-cnn, tstn, tstn-cnn"),
        (dict(model="tstn"), "--model tstn is a model of --task distorted-mnist and cluttered-mnist, not of mnist-sequence"),
        (dict(task="distorted-mnist", model="fcn"), "--task distorted-mnist needs --distortion, one of R, RTS, P, E, TC"),
        (dict(task="cluttered-mnist", model="fcn", distortion="P"), "--distortion applies to --task distorted-mnist only"),
        (dict(model="ffn-stn", tied=True), "--tied is not an option of the ffn-stn model"),
        (dict(task="cluttered-mnist", model="fcn", transform="projective"), "--transform is not an option of the fcn model"),
        (dict(task="cluttered-mnist", model="tstn", image_size=4), "--image-size must be an integer >= 8"),
    ]:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            TrainConfig(**kwargs).validate()


def test_an_old_config_without_the_new_settings_means_the_defaults():
    old = TrainConfig(model="ffn-stn").to_dict()
    for name in ("task", "distortion", "image_size", "transform", "tied"):
        del old[name]
    cfg = config_from_dict(old).validate()
    assert (cfg.task, cfg.distortion, cfg.image_size, cfg.transform, cfg.tied) == ("mnist-sequence", None, None, None, None)


@pytest.mark.parametrize("extra, message", [
    (["--layout", "fixed"], "--layout is the canvases' layout, a setting of --task mnist-sequence only"),
    (["--shifted-layout", "none"], "--shifted-layout is the shifted-layout test set"),
    (["--downsample", "2"], "--downsample is glimpse down-sampling"),
    (["--image-size", "28"], "--image-size 28 does not match the data, whose images are 16x16"),
    (["--model", "lstm-stn"], "--model lstm-stn is a model of --task mnist-sequence"),
    (["--tied", "--model", "st-cnn"], "--tied is not an option of the st-cnn model"),
])
def test_bad_task_options_are_one_line_errors(digit_dir, tmp_path, capsys, extra, message):
    assert train.main(_argv(digit_dir, tmp_path / "run", *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err


def test_sequence_data_given_to_a_single_digit_task_is_refused(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        save_sequence_file(tmp_path / f"{split}.npz", _split(rng, 2))
    assert train.main(_argv(str(tmp_path), tmp_path / "run")) == 2
    assert "train on it with --task mnist-sequence" in capsys.readouterr().err


# ----- training end to end -------------------------------------------------------------------------

@pytest.mark.parametrize("model, extra", [("st-cnn", ["--transform", "projective"]), ("tstn-cnn", []),
                                          ("tstn", ["--no-tied"])])
def test_a_single_digit_run_end_to_end(digit_dir, tmp_path, model, extra):
    out = tmp_path / "run"
    assert train.main(_argv(digit_dir, out, *extra, model=model)) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["task"], cfg["distortion"], cfg["image_size"], cfg["digits"], cfg["downsample"]) == \
        ("distorted-mnist", "R", 16, 1, 1)
    result = json.loads((out / "result.json").read_text())
    assert result["model"] == model and result["test_n"] == 4 and len(result["test_position_error"]) == 1
    assert (out / "glimpses.png").exists() == (model != "tstn-cnn")
    rec = train.read_metrics(str(out))[-1]
    assert ("theta_spread" in rec) == (model != "tstn-cnn") == ("theta_off_canvas" in rec)
    assert train.main(["--out", str(out), "--resume", "--epochs", "2", "--no-progress"]) == 0     # resumes
    assert json.loads((out / "result.json").read_text())["epochs_completed"] == 2


def test_resume_refuses_other_single_digit_images(digit_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(_argv(digit_dir, out)) == 0
    other = tmp_path / "other"
    other.mkdir()
    rng = np.random.default_rng(99)
    for split, n in (("train", 8), ("val", 4), ("test", 4)):
        d = load_digit_file(os.path.join(digit_dir, f"{split}.npz"))
        if split == "train":
            d["images"] = rng.random(d["images"].shape, dtype=np.float32)     # the same labels, other images
        save_digit_file(other / f"{split}.npz", d)
    capsys.readouterr()
    assert train.main(["--out", str(out), "--resume", "--epochs", "2", "--data", str(other), "--no-progress"]) == 2
    assert "the data differ from the run's" in capsys.readouterr().err


def test_worker_processes_build_the_single_digit_models(digit_dir, tmp_path):
    """The CPU's worker processes rebuild the model from its name and options: the same numbers as threads."""
    runs = {}
    for parallel in ("thread", "process"):
        out = tmp_path / parallel
        assert train.main(_argv(digit_dir, out, "--chunk", "2", "--workers", "2", "--parallel", parallel,
                                model="tstn")) == 0
        runs[parallel] = [{k: v for k, v in r.items() if k not in ("images_per_s", "elapsed")}
                          for r in train.read_metrics(str(out))]
    assert runs["thread"] == runs["process"]

