"""Error rates, theta statistics and `python -m minstn.evaluate` (minstn.evaluate)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from minstn import evaluate as evaluate_cli
from minstn.training import checkpoint
from minstn.training import metrics as evaluate


def _logits_for(pred, k=10):
    """Logits whose argmax is `pred` (N, P): a one-hot of 5.0."""
    out = np.zeros(pred.shape + (k,))
    np.put_along_axis(out, pred[..., None], 5.0, axis=-1)
    return out


def test_error_stats_by_hand():
    labels = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [9, 0, 1, 2]])
    pred = labels.copy()
    pred[0, 1] = 0          # canvas 0: one wrong digit (position 1)
    pred[2, 1] = 3          # canvas 2: two wrong digits (positions 1 and 3)
    pred[2, 3] = 3
    stats = evaluate.error_stats(_logits_for(pred), labels)
    assert stats["n"] == 3
    assert stats["digit_error"] == pytest.approx(100.0 * 3 / 12)
    assert stats["seq_error"] == pytest.approx(100.0 * 2 / 3)
    assert stats["position_error"] == pytest.approx([0.0, 100.0 * 2 / 3, 0.0, 100.0 / 3])
    # loss: correct digits -log(e^5 / (e^5 + 9)), wrong ones -log(1 / (e^5 + 9))
    good, bad = -np.log(np.e**5 / (np.e**5 + 9)), np.log(np.e**5 + 9)
    assert stats["loss"] == pytest.approx((9 * good + 3 * bad) / 12)


def test_error_stats_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"logits must be \(N, P, K\) and labels \(N, P\)"):
        evaluate.error_stats(np.zeros((3, 4, 10)), np.zeros((3, 3), int))


def test_theta_stats_by_hand():
    th = np.zeros((2, 4, 2, 3))
    th[:, :, 0, 0] = 0.5
    th[:, :, 1, 1] = 0.25
    th[0, :, 0, 2] = [-0.6, -0.2, 0.2, 0.6]     # canvas 0 moves left to right
    th[1, :, 0, 2] = [0.0, 0.0, 0.0, 0.0]       # canvas 1 stays put
    s = evaluate.theta_stats(th)
    spread_tx = np.std([-0.6, -0.2, 0.2, 0.6]) / 2     # mean over the 2 canvases
    assert s["theta_spread_elem"][0][2] == pytest.approx(spread_tx)
    assert s["theta_spread"] == pytest.approx(spread_tx / 6)
    assert [st["tx"] for st in s["theta_steps"]] == pytest.approx([-0.3, -0.1, 0.1, 0.3])
    assert all(st["sx"] == 0.5 and st["sy"] == 0.25 and st["ty"] == 0.0 for st in s["theta_steps"])
    json.dumps(s)
    with pytest.raises(ValueError, match=r"thetas must be \(N, T, 2, 3\)"):
        evaluate.theta_stats(np.zeros((2, 6)))
    assert "theta_off_canvas" not in s
    assert evaluate.theta_stats(th, side=100)["theta_off_canvas"] == [0.0] * 4


def test_off_canvas_by_hand_and_against_the_sampler():
    """A glimpse is off the canvas when all four grid corners lie beyond one edge by more than half a
    pixel (1/side); such a glimpse is exactly zero and gives theta a zero gradient. Checked against
    the sampler itself on glimpses just inside and just outside that line."""
    from minstn import ops

    side = 10
    th = np.zeros((3, 2, 2, 3))
    th[:, :, 0, 0] = th[:, :, 1, 1] = 0.2                  # a glimpse 0.4 wide (corners at centre +- 0.2)
    th[0, 0, 0, 2] = -1.0 - 1.0 / side - 0.2 - 1e-9        # step 0, canvas 0: right corners half a pixel left of the edge
    th[1, 0, 0, 2] = -1.0 - 1.0 / side - 0.2 + 1e-3        # canvas 1: its right corners just reach pixel 0's support
    th[2, 0, 1, 2] = 1.5                                    # canvas 2: below the canvas
    th[:, 1, 0, 2] = 0.0                                    # step 1: every glimpse in the middle
    off = evaluate.off_canvas(th, side)
    assert off.tolist() == pytest.approx([2 / 3, 0.0])
    images = np.random.default_rng(0).random((3, 1, side, side)) + 0.5
    grid, _ = ops.affine_grid_forward(th[:, 0], (side, side))   # corners of an align_corners=False grid lie inside +-1
    out, cache = ops.bilinear_sample_forward(images, grid)
    assert np.abs(out[0]).max() == 0.0 and np.abs(out[2]).max() == 0.0
    _, dgrid = ops.bilinear_sample_backward(np.ones_like(out), cache)
    assert np.abs(dgrid[0]).max() == 0.0 and np.abs(dgrid[2]).max() == 0.0
    # a homography: x = (u + 2.5) / (g u + 1) at the corners u = -1, 1
    h = np.zeros((1, 1, 2, 3))
    h[0, 0, 0, 0] = h[0, 0, 1, 1] = 1.0
    h[0, 0, 0, 2] = 2.5                                     # affine (g = 0): x from 1.5 to 3.5, right of the canvas
    assert evaluate.off_canvas(h, side).tolist() == [1.0]
    assert evaluate.off_canvas(h, side, perspective=np.array([[[0.5, 0.0]]])).tolist() == [1.0]    # x = 3 and 2.33
    assert evaluate.off_canvas(h, side, perspective=np.array([[[-0.5, 0.0]]])).tolist() == [0.0]   # x = 1.0 and 7


def test_load_model_rejects_checkpoints_without_a_model(tmp_path):
    path = checkpoint.save(tmp_path / "x.npz", {"a": np.zeros(1)}, {"epoch": 1})
    with pytest.raises(checkpoint.CheckpointError, match="without a model description"):
        evaluate.load_model(path)


def test_model_round_trip_through_a_checkpoint(tmp_path, rng):
    from minstn.models import build_model

    model = build_model("ffn-stn", 4, seed=3)
    path = checkpoint.save(tmp_path / "m.npz", {f"param/{k}": v for k, v in model.state().items()},
                           {"model": evaluate.model_meta(model)})
    back, _ = evaluate.load_model(path)
    x = rng.random((2, 1, 100, 100), dtype=np.float32)
    np.testing.assert_array_equal(back.predict(x), model.predict(x))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data", "x.npz"], "the following arguments are required: --checkpoint"),
        (["--checkpoint", "nope.npz", "--data", "x.npz"], "no checkpoint at 'nope.npz'"),
        (["--checkpoint", "c.npz", "--data", "x.npz", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["--checkpoint", "c.npz", "--data", "x.npz", "--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_cli_errors_exit_2(argv, message, capsys):
    assert evaluate_cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_bad_data_file_exits_2(tmp_path, capsys):
    from minstn.models import build_model

    model = build_model("ffn-stn", 4)
    ck = checkpoint.save(tmp_path / "m.npz", {f"param/{k}": v for k, v in model.state().items()},
                         {"model": evaluate.model_meta(model)})
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((2, 1, 100, 100), np.float32))
    assert evaluate_cli.main(["--checkpoint", ck, "--data", str(bad)]) == 2
    assert "missing key(s)" in capsys.readouterr().err
    assert evaluate_cli.main(["--checkpoint", ck, "--data", str(tmp_path / "none.npz")]) == 2
    assert "file not found" in capsys.readouterr().err


def _ffn_checkpoint(tmp_path):
    from minstn.models import build_model

    model = build_model("ffn-stn", 4)
    return checkpoint.save(tmp_path / "m.npz", {f"param/{k}": v for k, v in model.state().items()},
                           {"model": evaluate.model_meta(model)})


def test_cli_wrong_kind_of_data_never_advises_deleting_a_good_file(tmp_path, capsys):
    import gzip

    ck = _ffn_checkpoint(tmp_path)
    assert evaluate_cli.main(["--checkpoint", ck, "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a folder; pass one of its .npz files" in err and "Delete" not in err and "damaged" not in err
    mnist_gz = tmp_path / "t10k-labels-idx1-ubyte.gz"
    mnist_gz.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x01\x07"))
    assert evaluate_cli.main(["--checkpoint", ck, "--data", str(mnist_gz)]) == 2
    err = capsys.readouterr().err
    assert "not a minstn data file" in err and "--data-dir" in err and "Delete" not in err and "damaged" not in err
    cut = tmp_path / "cut.npz"
    np.savez(cut, images=np.zeros((2, 1, 100, 100), np.float32))
    cut.write_bytes(cut.read_bytes()[:200])
    assert evaluate_cli.main(["--checkpoint", ck, "--data", str(cut)]) == 2
    assert "a damaged .npz archive" in capsys.readouterr().err


def test_cli_empty_data_file_is_one_line(tmp_path, capsys):
    from minstn.data import save_sequence_file
    from minstn.data.sequences import empty_split

    ck = _ffn_checkpoint(tmp_path)
    save_sequence_file(tmp_path / "empty.npz", empty_split(0))
    assert evaluate_cli.main(["--checkpoint", ck, "--data", str(tmp_path / "empty.npz")]) == 2
    err = capsys.readouterr().err
    assert "holds 0 canvases" in err and err.count("\n") == 1


def test_json_output_is_strict_json_even_with_nan():
    text = evaluate.json_dumps({"loss": float("nan"), "errs": [1.0, float("inf")], "n": 3})
    assert json.loads(text) == {"loss": None, "errs": [1.0, None], "n": 3}
    assert "NaN" not in text and "Infinity" not in text


# ------------------------------------------------------------------ single-digit models


def _digit_checkpoint(tmp_path, name="st-cnn", side=28, distortion="P", **options):
    """A checkpoint of a single-digit model (He-initialised head, so its predictions differ) as the trainer writes one."""
    from minstn.models import build_model

    model = build_model(name, 1, image_size=side, digits=1, seed=1, head_init="he", **options)
    config = {"task": "distorted-mnist" if distortion else "cluttered-mnist", "distortion": distortion, "data_seed": 0}
    path = checkpoint.save(tmp_path / f"{name}.npz", {f"param/{k}": v for k, v in model.state().items()},
                           {"model": evaluate.model_meta(model), "config": config, "best_epoch": 3})
    return model, path


def _digit_file(path, n, side, rng):
    from minstn.data import save_digit_file

    d = {"images": rng.random((n, 1, side, side), dtype=np.float32), "labels": rng.integers(0, 10, (n, 1)).astype(np.int64)}
    save_digit_file(path, d)
    return d


def test_cli_evaluates_a_single_digit_model_on_its_tasks_file(tmp_path, rng, capsys):
    model, ck = _digit_checkpoint(tmp_path, transform="projective")
    d = _digit_file(tmp_path / "test.npz", 6, 28, rng)
    assert evaluate_cli.main(["--checkpoint", ck, "--data", str(tmp_path / "test.npz"), "--json", "--batch-size", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    want = evaluate.evaluate_model(model, d["images"], d["labels"], batch_size=4)
    assert out["digit_error"] == pytest.approx(want["digit_error"]) and out["n"] == 6 and len(out["position_error"]) == 1
    assert (out["model"], out["task"], out["distortion"], out["downsample"], out["epoch"]) == ("st-cnn", "distorted-mnist", "P", 1, 3)
    assert evaluate_cli.main(["--checkpoint", ck, "--data", str(tmp_path / "test.npz")]) == 0
    text = capsys.readouterr().out
    assert text.startswith("st-cnn projective (distorted-mnist P) on ") and "(6 images of 28x28)" in text
    assert f"  error             {want['digit_error']:6.2f} %" in text and "per position" not in text


def test_cli_single_digit_model_with_the_wrong_file_is_one_line(tmp_path, rng, capsys):
    from minstn.data import save_sequence_file
    from minstn.data.sequences import empty_split

    _, ck = _digit_checkpoint(tmp_path, "tstn-cnn", 28, None)
    _digit_file(tmp_path / "rts.npz", 2, 42, rng)
    _digit_file(tmp_path / "empty.npz", 0, 28, rng)
    seq = empty_split(2)
    seq["boxes"][:] = [0.0, 0.0, 10.0, 10.0]
    save_sequence_file(tmp_path / "seq.npz", seq)
    for name, message in (("rts.npz", "images are 42x42, but this task's are 28x28"),
                          ("seq.npz", "images are 100x100, but this task's are 28x28"),
                          ("empty.npz", "holds 0 images")):
        assert evaluate_cli.main(["--checkpoint", ck, "--data", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def _theta_at(cx, cy, half, side=100):
    """An axis-aligned glimpse centred on pixel position (cx, cy), `half` its half-size (normalised)."""
    return [[half, 0.0, -1.0 + 2.0 * cx / side], [0.0, half, -1.0 + 2.0 * cy / side]]


def test_localisation_stats_by_hand():
    # one canvas, two digits: boxes x 10..30 and 60..80 (end-exclusive), y 40..60, on a 100x100 canvas
    boxes = np.array([[[10, 40, 30, 60], [60, 40, 80, 60]]], float)
    wrong = np.array([[False, True]])
    # step 1: centred on digit 1, 12.5 pixels each way: sees it whole; step 2: a 5-pixel glimpse at x = 90
    th = np.array([[_theta_at(20, 50, 0.25), _theta_at(90, 50, 0.1)]])
    s = evaluate.localisation_stats(th, boxes, 100, wrong)
    assert s["in_view"] == [100.0, 0.0] and s["centred"] == [100.0, 0.0] and s["n_not_in_view"] == [0, 1]
    assert s["error_in_view"] == [0.0, None] and s["error_not_in_view"] == [None, 100.0]
    assert (s["in_view_all"], s["error_in_view_all"], s["error_not_in_view_all"], s["n_not_in_view_all"]) == (50.0, 0.0, 100.0, 1)
    # a glimpse 2 pixels too small on each side no longer holds the box whole, but stays centred
    s = evaluate.localisation_stats(np.array([[_theta_at(20, 50, 0.18)] * 2]), boxes, 100, wrong)
    assert s["in_view"] == [0.0, 0.0] and s["centred"] == [100.0, 0.0]
    # one glimpse for every digit (the FFN-STN): the whole canvas sees both, centred on neither
    s = evaluate.localisation_stats(np.array([[[[1.0, 0, 0], [0, 1.0, 0]]]]), boxes, 100, np.array([[True, False]]))
    assert s["in_view"] == [100.0, 100.0] and s["centred"] == [0.0, 0.0]
    assert s["error_in_view"] == [100.0, 0.0] and s["error_in_view_all"] == 50.0 and s["error_not_in_view_all"] is None
    # a rotated glimpse: the parallelogram, not its bounding box, decides (45 degrees, the box's corners fall outside)
    c = np.cos(np.pi / 4) * 0.25
    rot = [[c, -c, -0.6], [c, c, 0.0]]
    assert evaluate.localisation_stats(np.array([[rot, rot]]), boxes, 100, wrong)["in_view"][0] == 0.0
    # a singular transform sees no digit whole, though its centre (pixel 20, 50) lies on digit 1
    flat = [[0.0, 0.0, -0.6], [0.0, 0.0, 0.0]]
    s = evaluate.localisation_stats(np.array([[flat, flat]]), boxes, 100, wrong)
    assert s["in_view"] == [0.0, 0.0] and s["centred"] == [100.0, 0.0]
    json.dumps(s)
    with pytest.raises(ValueError, match=r"thetas must be \(N, P or 1, 2, 3\)"):
        evaluate.localisation_stats(np.zeros((1, 3, 2, 3)), boxes, 100, wrong)
    with pytest.raises(ValueError, match=r"boxes must be \(N, P, 4\)"):
        evaluate.localisation_stats(th, boxes[:, :1], 100, wrong)


def test_cli_localisation_splits_the_error_by_what_each_step_saw(tmp_path, rng, capsys):
    from minstn.data import save_sequence_file
    from minstn.data.sequences import empty_split
    from minstn.models import build_model

    model = build_model("lstm-stn", 4, hidden_size=16, seed=1)
    ck = checkpoint.save(tmp_path / "m.npz", {f"param/{k}": v for k, v in model.state().items()},
                         {"model": evaluate.model_meta(model)})
    d = empty_split(5)
    d["images"][:] = rng.random(d["images"].shape, dtype=np.float32)
    d["labels"][:] = rng.integers(0, 10, d["labels"].shape)
    d["boxes"][:] = [[5, 40, 25, 60], [30, 40, 50, 60], [55, 40, 75, 60], [78, 40, 98, 60]]
    save_sequence_file(tmp_path / "test.npz", d)
    argv = ["--checkpoint", ck, "--data", str(tmp_path / "test.npz"), "--batch-size", "2", "--localisation"]
    assert evaluate_cli.main(argv + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    wrong = model.predict(d["images"]).argmax(axis=-1) != d["labels"]
    want = evaluate.localisation_stats(model.attend(d["images"])["thetas"], d["boxes"], 100, wrong)
    assert out["localisation"] == want
    assert evaluate_cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "where the glimpses fall" in text and "digits seen whole %" in text and "error, the rest %" in text
    cnn = build_model("cnn", 1)
    ck = checkpoint.save(tmp_path / "cnn.npz", {f"param/{k}": v for k, v in cnn.state().items()},
                         {"model": evaluate.model_meta(cnn)})
    assert evaluate_cli.main(["--checkpoint", ck, "--data", str(tmp_path / "test.npz"), "--localisation"]) == 2
    err = capsys.readouterr().err
    assert "--localisation needs an MNIST-sequence model with a spatial transformer" in err and err.count("\n") == 1
