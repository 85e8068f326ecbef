"""The first hour: --device auto, --preset quick, the time estimate, the glimpse picture at the end of
a run and `python -m minstn.glimpses`."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from minstn import glimpses, train
from minstn.backend import Device, DeviceError, resolve_device
from minstn.training.config import PRESETS, ConfigError, TrainConfig, with_preset
from tests.test_train import _argv, data_dir  # noqa: F401 (fixture)


def _no_gpu():
    try:
        resolve_device("gpu")
    except DeviceError:
        return True
    return False


def test_device_auto_falls_back_to_the_cpu_and_says_why():
    if not _no_gpu():
        pytest.skip("this machine has a GPU: auto picks it")
    said = []
    assert resolve_device("auto", say=said.append) == Device("cpu")
    assert len(said) == 1 and said[0].startswith("device auto: the CPU (no usable GPU: ")
    assert TrainConfig().device == "auto"
    with pytest.raises(DeviceError, match="use 'auto', 'cpu', 'gpu' or 'gpu:N'"):
        resolve_device("tpu")


def test_preset_quick_is_an_lstm_stn_on_an_image_budget_and_options_override_it():
    cfg = TrainConfig(**with_preset({"preset": "quick"})).validate()
    assert cfg.model == "lstm-stn" and cfg.downsample == 2 and cfg.max_images == 60_000 and cfg.train_size == 20000
    assert TrainConfig(**with_preset({"preset": "quick", "max_images": 1000})).max_images == 1000
    assert TrainConfig(**with_preset({})).preset is None
    assert set(PRESETS) == {"quick", "paper", "sonderby"}
    with pytest.raises(ConfigError, match="--preset 'fast' is not one of quick, paper, sonderby"):
        with_preset({"preset": "fast"})


def test_a_run_says_how_long_it_will_take_and_ends_with_its_glimpses(data_dir, tmp_path, capsys, monkeypatch):  # noqa: F811
    from minstn.training import loop

    monkeypatch.setattr(loop, "ESTIMATE_AFTER", 1)
    out = tmp_path / "run"
    assert train.main(_argv(data_dir, out, "--epochs", "3", "--device", "auto")) == 0
    text = capsys.readouterr().out
    assert "img/s: " in text and "more training images (3 epochs of 8 canvases) take about" in text
    png = out / "glimpses.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {png}" in text
    cnn = tmp_path / "cnn"
    assert train.main(_argv(data_dir, cnn, model="cnn")) == 0
    assert not (cnn / "glimpses.png").exists()          # no transformer, no glimpses


def test_glimpses_cli_draws_from_a_checkpoint(data_dir, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "run"
    assert train.main(_argv(data_dir, out, model="lstm-stn")) == 0
    png = tmp_path / "g.png"
    capsys.readouterr()
    assert glimpses.main(["--checkpoint", str(out / "checkpoint.npz"), "--data", os.path.join(data_dir, "test.npz"),
                          "--out", str(png), "--n", "3", "--first", "1"]) == 0
    text = capsys.readouterr().out
    assert png.stat().st_size > 1000 and "3 canvases" in text
    assert [line.split(":")[0] for line in text.splitlines()[1:]] == ["step 1", "step 2", "step 3", "step 4"]
    assert "mean glimpse centre tx " in text and text.rstrip().endswith("of 3")


@pytest.mark.parametrize("extra, message", [
    (["--n", "0"], "--n must be >= 1"),
    (["--out", "x.jpg"], "--out must name a .png file"),
    (["--first", "3", "--n", "4"], "fewer than --first 3 + --n 4"),
])
def test_glimpses_cli_errors_are_one_line(extra, message, data_dir, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "run"
    assert train.main(_argv(data_dir, out)) == 0
    argv = ["--checkpoint", str(out / "checkpoint.npz"), "--data", os.path.join(data_dir, "test.npz"),
            "--out", str(tmp_path / "g.png")]
    capsys.readouterr()
    assert glimpses.main(argv + extra) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_glimpses_cli_refuses_a_cnn(data_dir, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "cnn"
    assert train.main(_argv(data_dir, out, model="cnn")) == 0
    capsys.readouterr()
    assert glimpses.main(["--checkpoint", str(out / "checkpoint.npz"), "--data", os.path.join(data_dir, "test.npz"),
                          "--out", str(tmp_path / "g.png")]) == 2
    assert "holds a CNN, which has no spatial transformer" in capsys.readouterr().err


def test_sonderby_layout_trains_a_gru_model_end_to_end(tmp_path, capsys):
    """--preset sonderby: three digits per canvas from the data; --cell gru; the shifted set keeps
    three digits; everything writes its files."""
    from tests.conftest import shared_mnist_dir

    mnist = shared_mnist_dir()
    if mnist is None:
        pytest.skip("the shared MNIST folder is not on this machine")
    out = tmp_path / "run"
    argv = ["--preset", "sonderby", "--cell", "gru", "--hidden-size", "16", "--downsample", "4", "--train-size", "16",
            "--val-size", "8", "--test-size", "8", "--batch-size", "8", "--max-images", "16", "--data-dir", mnist,
            "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--no-progress", "--workers", "1"]
    assert train.main(argv) == 0
    cfg = json.loads((out / "config.json").read_text())
    result = json.loads((out / "result.json").read_text())
    assert cfg["digits"] == 3 and cfg["cell"] == "gru" and cfg["optimizer"] == "rmsprop" and cfg["clip_value"] == 1.0
    assert cfg["loc_lr_mult"] == 0.1       # at 1 (one rate, as Sønderby's code) the GRU model's glimpses leave the canvas
    assert len(result["test_position_error"]) == 3 and len(result["shifted_position_error"]) == 3
    bad = [a if a != str(out) else str(tmp_path / "bad") for a in argv]
    capsys.readouterr()
    assert train.main(bad + ["--digits", "4"]) == 2
    assert "--digits 4 does not match the data, which has 3 digits per canvas" in capsys.readouterr().err


# ---------------------------------------------------------- single-digit models and projective outlines


def _digit_checkpoint(tmp_path, name, side, distortion, **options):
    """A checkpoint of a single-digit model, as the trainer writes one (its task in the saved config)."""
    from minstn.models import build_model
    from minstn.training import checkpoint
    from minstn.training.metrics import model_meta

    model = build_model(name, 1, image_size=side, digits=1, seed=1, head_init="he", **options)
    config = {"task": "distorted-mnist" if distortion else "cluttered-mnist", "distortion": distortion, "data_seed": 0}
    return model, checkpoint.save(tmp_path / f"{name}.npz", {f"param/{k}": v for k, v in model.state().items()},
                                  {"model": model_meta(model), "config": config, "best_epoch": 1})


def test_projective_corners_are_the_homography_of_the_glimpse_square():
    from minstn import plots
    from minstn.ops import projective_grid_forward
    from minstn.plots import glimpse_corners

    rng = np.random.default_rng(3)
    theta = np.array([[0.6, 0.1, 0.1], [-0.1, 0.7, 0.0]]) + 0.05 * rng.standard_normal((2, 3, 2, 3))    # (2, 3, 2, 3)
    gh = 0.4 * rng.uniform(-1, 1, size=(2, 3, 2))                                                      # (2, 3, 2)
    corners, ok = plots.projective_corners(theta, gh, 28, 42)
    assert ok.all() and corners.shape == (2, 3, 4, 2)
    np.testing.assert_allclose(plots.projective_corners(theta, 0 * gh, 28, 42)[0], glimpse_corners(theta, 28, 42))
    # the corner sample points of a fine grid lie next to the outline's corners (1/500 of the square inside)
    theta8 = np.concatenate([theta.reshape(6, 6), gh.reshape(6, 2)], axis=1)                           # (6, 8)
    grid, _ = projective_grid_forward(theta8, (500, 500))                                              # (6, 500, 500, 2)
    at = grid[:, [0, 0, -1, -1], [0, -1, -1, 0]]                                                        # (6, 4, 2): TL, TR, BR, BL
    np.testing.assert_allclose(((at + 1) * [42, 28] - 1) / 2, corners.reshape(6, 4, 2), atol=0.15)
    _, ok = plots.projective_corners(theta[:1, :1], np.array([[[1.5, 0.0]]]), 28, 28)   # w = 1 - 1.5 < 0 at x = -1
    assert not ok.any()


def test_draw_says_when_only_the_affine_part_is_outlined(tmp_path, monkeypatch):
    from minstn import plots

    class Fake:                       # a projective transformer whose grid crosses the horizon in one of two images
        dtype = np.float32

        def attend(self, images):
            thetas = np.tile(np.array([[1.0, 0, 0], [0, 1.0, 0]]), (2, 1, 1, 1))                  # (2, 1, 2, 3)
            return {"thetas": thetas, "glimpses": np.zeros((2, 1, 1, 28, 28)),
                    "perspective": np.array([[[0.2, 0.0]], [[1.5, 0.0]]])}

        def predict(self, images):
            return np.zeros((2, 1, 10))

    seen = {}
    monkeypatch.setattr(plots, "plot_glimpses", lambda *a, **k: seen.update(k) or a[3])
    plots.draw_model_glimpses(Fake(), np.zeros((2, 1, 28, 28)), np.zeros((2, 1), int), str(tmp_path / "g.png"), "st-cnn")
    assert seen["title"] == "st-cnn; outlines: the affine part only for 1 of 2 glimpses (their grid crosses the projective horizon)"
    np.testing.assert_allclose(seen["corners"][1], plots.glimpse_corners(np.eye(2, 3)[None, None], 28, 28)[0])
    assert not np.allclose(seen["corners"][0], seen["corners"][1])


def test_glimpses_cli_draws_a_single_digit_model_from_a_file_or_generated_images(tmp_path, capsys):
    from minstn.data import save_digit_file
    from minstn.data.synthetic import write_synthetic_mnist

    model, ck = _digit_checkpoint(tmp_path, "st-cnn", 28, "P", transform="projective")
    rng = np.random.default_rng(0)
    save_digit_file(tmp_path / "p.npz", {"images": rng.random((5, 1, 28, 28), dtype=np.float32),
                                         "labels": rng.integers(0, 10, (5, 1)).astype(np.int64)})
    png = tmp_path / "p.png"
    assert glimpses.main(["--checkpoint", ck, "--data", str(tmp_path / "p.npz"), "--out", str(png), "--n", "2", "--first", "3"]) == 0
    assert png.stat().st_size > 1000 and "wrote" in capsys.readouterr().out
    mnist = write_synthetic_mnist(str(tmp_path / "mnist"), n_train=50, n_test=30, seed=1)
    _, ck = _digit_checkpoint(tmp_path, "st-fcn", 42, "RTS")
    assert glimpses.main(["--checkpoint", ck, "--data-dir", mnist, "--out", str(tmp_path / "rts.png"), "--n", "3"]) == 0
    assert "3 images" in capsys.readouterr().out and (tmp_path / "rts.png").stat().st_size > 1000
    _, ck = _digit_checkpoint(tmp_path, "tstn", 60, None)                                    # cluttered MNIST
    assert glimpses.main(["--checkpoint", ck, "--data-dir", mnist, "--out", str(tmp_path / "c.png"), "--n", "1"]) == 0
    _, ck = _digit_checkpoint(tmp_path, "mnist-cnn", 28, "R")
    capsys.readouterr()
    assert glimpses.main(["--checkpoint", ck, "--data", str(tmp_path / "p.npz"), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "holds a CNN (mnist-cnn), which has no spatial transformer" in err and err.count("\n") == 1
