"""Properties of generated MNIST-sequence canvases (small counts, synthetic and real MNIST)."""
from __future__ import annotations

import numpy as np
import pytest

import minstn.data.sequences as seq
from minstn.data import load_mnist
from minstn.data.sequences import SequenceOptions, generate_split, make_pool, split_pool
from minstn.data.synthetic import synthetic_digits, write_synthetic_mnist
from tests.conftest import shared_mnist_dir

OPTS = SequenceOptions(val_start=200)


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    return write_synthetic_mnist(str(tmp_path_factory.mktemp("mnist")), n_train=300, n_test=100, seed=3)


@pytest.fixture(scope="module")
def debug_train(mnist_dir):
    """48 training canvases with everything the generator can report."""
    return generate_split("train", 48, seed=5, data_dir=mnist_dir, options=OPTS, debug=True, return_masks=True)


def _bbox(mask):
    """(N, 100, 100) bool -> (N, 4) x0, y0, x1, y1 end-exclusive."""
    rows, cols = mask.any(axis=2), mask.any(axis=1)
    return np.stack([cols.argmax(1), rows.argmax(1), 100 - cols[:, ::-1].argmax(1), 100 - rows[:, ::-1].argmax(1)], 1)


def test_shapes_dtypes_and_range(debug_train):
    d = debug_train
    assert d["images"].shape == (48, 1, 100, 100) and d["images"].dtype == np.float32
    assert d["labels"].shape == (48, 4) and d["labels"].dtype == np.int64
    assert d["angles"].shape == (48,) and d["angles"].dtype == np.float32
    assert d["boxes"].shape == (48, 4, 4) and d["boxes"].dtype == np.float32
    assert d["images"].min() >= 0.0 and d["images"].max() <= 1.0
    assert d["images"].max() > 0.5
    assert np.all(np.abs(d["angles"]) <= 45.0)


def test_labels_match_the_digits_placed(debug_train, mnist_dir):
    _, labels = load_mnist("train", mnist_dir)
    np.testing.assert_array_equal(debug_train["labels"], labels[debug_train["indices"]])


def test_no_pixel_carries_ink_of_two_digits(debug_train):
    masks = debug_train["masks"]                                   # (N, 4, 100, 100)
    assert masks.sum(axis=1).max() == 1
    assert masks.any(axis=(2, 3)).all()                            # every digit left ink on the canvas


def test_boxes_are_the_ink_boxes_and_inside_the_canvas(debug_train):
    boxes, masks = debug_train["boxes"], debug_train["masks"]
    for k in range(4):
        np.testing.assert_array_equal(boxes[:, k], _bbox(masks[:, k]))
    assert boxes.min() >= 0 and boxes.max() <= 100
    assert np.all(boxes[..., 2] > boxes[..., 0]) and np.all(boxes[..., 3] > boxes[..., 1])


def test_digits_in_reading_order_along_the_rotated_direction(debug_train):
    boxes, angles = debug_train["boxes"], np.deg2rad(debug_train["angles"].astype(np.float64))
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2                 # (N, 4, 2) x, y
    along = centre[..., 0] * np.cos(angles)[:, None] - centre[..., 1] * np.sin(angles)[:, None]
    assert np.all(np.diff(along, axis=1) > 0)


def test_exactly_ten_noise_blocks_max_combined(debug_train, mnist_dir):
    d = debug_train
    images, _ = load_mnist("train", mnist_dir)
    pos, src = d["noise_positions"], d["noise_sources"]
    assert pos.shape == (48, 10, 2) and src.shape == (48, 10, 3)
    assert pos.min() >= 0 and pos.max() <= 94
    ink_or_noise = d["masks"].any(axis=1)                          # (N, 100, 100)
    for i in range(48):
        for j in range(10):
            (y, x), (m, wy, wx) = pos[i, j], src[i, j]
            window = images[m, wy:wy + 6, wx:wx + 6] / np.float32(255)
            assert (window >= 0.5).sum() >= OPTS.noise_min_ink   # cut from a place with ink
            assert np.all(d["images"][i, 0, y:y + 6, x:x + 6] >= window - 1e-7)
            ink_or_noise[i, y:y + 6, x:x + 6] = True
    assert np.all(d["images"][:, 0][~ink_or_noise] == 0)          # nothing else on the canvas
    assert 0 <= src[..., 0].min() and src[..., 0].max() < OPTS.val_start


def test_noise_count_and_size_options(mnist_dir):
    opts = SequenceOptions(val_start=200, noise_blocks=3, noise_size=4, noise_min_ink=2)
    d = generate_split("train", 5, seed=0, data_dir=mnist_dir, options=opts, debug=True)
    assert d["noise_positions"].shape == (5, 3, 2) and d["noise_positions"].max() <= 96
    quiet = generate_split("train", 5, seed=0, data_dir=mnist_dir, options=SequenceOptions(val_start=200, noise_blocks=0),
                           debug=True, return_masks=True)
    assert np.all(quiet["images"][:, 0][~quiet["masks"].any(axis=1)] == 0)


def test_deterministic_per_seed_and_different_across_seeds(mnist_dir, debug_train):
    again = generate_split("train", 48, seed=5, data_dir=mnist_dir, options=OPTS)
    for key in ("images", "labels", "angles", "boxes"):
        np.testing.assert_array_equal(again[key], debug_train[key])
    other = generate_split("train", 48, seed=6, data_dir=mnist_dir, options=OPTS)
    assert not np.array_equal(other["images"], debug_train["images"])
    assert not np.array_equal(other["angles"], debug_train["angles"])


def test_blocks_have_independent_streams(mnist_dir, monkeypatch):
    monkeypatch.setattr(seq, "BLOCK", 8)
    long = generate_split("val", 20, seed=1, data_dir=mnist_dir, options=OPTS)   # blocks of 8, 8, 4
    short = generate_split("val", 8, seed=1, data_dir=mnist_dir, options=OPTS)   # block 0 only
    np.testing.assert_array_equal(long["images"][:8], short["images"])
    assert not np.array_equal(long["images"][8:16], short["images"])


def test_threads_do_not_change_the_data(mnist_dir, monkeypatch):
    monkeypatch.setattr(seq, "BLOCK", 8)
    seen = []
    one = generate_split("train", 30, seed=3, data_dir=mnist_dir, options=OPTS, workers=1)
    two = generate_split("train", 30, seed=3, data_dir=mnist_dir, options=OPTS, workers=2,
                         progress=lambda done, n: seen.append((done, n)))
    for key in one:
        np.testing.assert_array_equal(one[key], two[key])
    assert seen == [(8, 30), (16, 30), (24, 30), (30, 30)]


def test_disjoint_pools(mnist_dir):
    parts = {s: generate_split(s, 30, seed=0, data_dir=mnist_dir, options=OPTS, debug=True) for s in ("train", "val", "test")}
    for key in ("indices", "noise_sources"):
        train_idx = parts["train"][key][..., 0] if key == "noise_sources" else parts["train"][key]
        val_idx = parts["val"][key][..., 0] if key == "noise_sources" else parts["val"][key]
        assert train_idx.max() < 200 and val_idx.min() >= 200 and val_idx.max() < 300
    assert split_pool("test", OPTS, mnist_dir).mnist_split == "test"
    assert split_pool("val", OPTS, mnist_dir).mnist_split == "train"
    assert parts["test"]["indices"].max() < 100


def test_empty_split(mnist_dir):
    d = generate_split("test", 0, data_dir=mnist_dir)
    assert d["images"].shape == (0, 1, 100, 100) and d["labels"].shape == (0, 4)
    assert d["angles"].shape == (0,) and d["boxes"].shape == (0, 4, 4)


def test_angle_zero_gives_a_horizontal_row(mnist_dir):
    d = generate_split("test", 12, seed=2, data_dir=mnist_dir, options=SequenceOptions(angle=0.0, val_start=200))
    assert np.all(d["angles"] == 0)
    b = d["boxes"]
    assert np.all(b[:, 1:, 0] >= b[:, :-1, 2] + 1)                 # left to right, a blank column apart


def test_angle_range_option(mnist_dir):
    d = generate_split("train", 64, seed=0, data_dir=mnist_dir, options=SequenceOptions(angle=10.0, val_start=200))
    assert np.abs(d["angles"]).max() <= 10.0 and np.abs(d["angles"]).max() > 5.0


def test_no_crop_with_negative_gap(mnist_dir):
    opts = SequenceOptions(crop=False, gap=-8, val_start=200)
    d = generate_split("train", 16, seed=0, data_dir=mnist_dir, options=opts, debug=True, return_masks=True)
    assert d["masks"].sum(axis=1).max() == 1
    assert d["boxes"].min() >= 0 and d["boxes"].max() <= 100


def test_layout_that_cannot_fit_is_an_error(mnist_dir):
    opts = SequenceOptions(crop=False, gap=20, gap_max=None, angle=0.0, val_start=200)
    with pytest.raises(ValueError, match=r"could not be laid out .*Lower gap, set crop=True, or narrow the angle range"):
        generate_split("train", 4, data_dir=mnist_dir, options=opts)


def test_gap_at_least_one_column(rng):
    # Ink boxes touching in the strip would let one canvas pixel read two digits.
    with pytest.raises(ValueError, match=r"gap must be >= 1 with crop=True"):
        SequenceOptions(gap=0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(angle=200.0), r"angle must be a number in \[0, 180\]"),
    (dict(angle=float("nan")), r"angle must be a number"),
    (dict(gap=-30, crop=False), r"gap must be >= -27 with crop=False"),
    (dict(gap=2.5), r"gap must be an int"),
    (dict(crop="yes"), r"crop must be True or False"),
    (dict(noise_blocks=-1), r"noise_blocks must be >= 0"),
    (dict(noise_size=29), r"noise_size must be in 1..28"),
    (dict(noise_min_ink=37), r"noise_min_ink must be in 0..noise_size\*\*2 = 36"),
    (dict(val_start=0), r"val_start must be >= 1"),
])
def test_option_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SequenceOptions(**kwargs)


def test_unknown_option_is_an_error():
    with pytest.raises(TypeError, match=r"unknown generator option\(s\) \['angel'\]; known options"):
        SequenceOptions.from_kwargs(angel=30)


def test_split_argument_errors(mnist_dir):
    with pytest.raises(ValueError, match=r"split must be one of \['train', 'val', 'test', 'shifted'\], got 'dev'"):
        generate_split("dev", 3, data_dir=mnist_dir)
    with pytest.raises(ValueError, match=r"size of split 'train' must be an int >= 0, got -1"):
        generate_split("train", -1, data_dir=mnist_dir)
    with pytest.raises(ValueError, match=r"seed must be an int >= 0, got -3"):
        generate_split("train", 2, seed=-3, data_dir=mnist_dir)
    with pytest.raises(ValueError, match=r"val_start=500 leaves no validation digits: the MNIST training file has 300"):
        split_pool("val", SequenceOptions(val_start=500), mnist_dir)


def test_pool_errors(rng):
    images, labels = synthetic_digits(5, rng)
    with pytest.raises(ValueError, match=r"images must be uint8 \(P, 28, 28\)"):
        make_pool(images[:, :20], labels, np.arange(5), "train", OPTS)
    with pytest.raises(ValueError, match="the digit pool is empty"):
        make_pool(images[:0], labels[:0], np.arange(0), "train", OPTS)
    blank = images.copy()
    blank[2] = 0
    with pytest.raises(ValueError, match="some pool images are blank"):
        make_pool(blank, labels, np.arange(5), "train", OPTS)
    faint = (images // 4).astype(np.uint8)                          # no pixel reaches 128
    with pytest.raises(ValueError, match="has >= 6 ink pixels; lower noise_min_ink or noise_size"):
        make_pool(faint, labels, np.arange(5), "train", OPTS)


def test_real_mnist_canvases():
    folder = shared_mnist_dir()
    if folder is None:
        pytest.skip("the shared MNIST folder is not on this machine")
    d = generate_split("test", 24, seed=0, data_dir=folder, debug=True, return_masks=True)
    _, labels = load_mnist("test", folder)
    np.testing.assert_array_equal(d["labels"], labels[d["indices"]])
    assert d["masks"].sum(axis=1).max() == 1
    for k in range(4):
        np.testing.assert_array_equal(d["boxes"][:, k], _bbox(d["masks"][:, k]))
    v = generate_split("val", 8, seed=0, data_dir=folder, debug=True)
    assert v["indices"].min() >= 20000 and v["indices"].max() <= 22698


@pytest.mark.parametrize("options", [SequenceOptions(noise_blocks=0, val_start=200),
                                     SequenceOptions(noise_blocks=0, val_start=200, angle=180.0, gap=1),
                                     SequenceOptions(noise_blocks=0, val_start=200, crop=False, gap=-8, angle=90.0)])
def test_fast_path_matches_the_loop_reference(mnist_dir, options):
    from minstn.data.naive import render_sequence_naive
    d = generate_split("train", 3, seed=11, data_dir=mnist_dir, options=options, debug=True)
    images, _ = load_mnist("train", mnist_dir)
    for i in range(3):
        ref = render_sequence_naive(images[d["indices"][i]], d["radians"][i], d["centres"][i], options, d["gaps"][i])
        # float32 coordinates in the fast path; bilinear reads are continuous, so errors stay tiny
        np.testing.assert_allclose(d["images"][i, 0], ref, rtol=0, atol=2e-4)
        assert ref.sum() > 10


def test_real_mnist_matches_the_loop_reference():
    folder = shared_mnist_dir()
    if folder is None:
        pytest.skip("the shared MNIST folder is not on this machine")
    from minstn.data.naive import render_sequence_naive
    options = SequenceOptions(noise_blocks=0)
    d = generate_split("test", 2, seed=4, data_dir=folder, options=options, debug=True)
    images, _ = load_mnist("test", folder)
    for i in range(2):
        ref = render_sequence_naive(images[d["indices"][i]], d["radians"][i], d["centres"][i], options, d["gaps"][i])
        np.testing.assert_allclose(d["images"][i, 0], ref, rtol=0, atol=2e-4)


def test_generate_canvases_edges(rng):
    images, labels = synthetic_digits(20, rng)
    faint = (images // 4).astype(np.uint8)                          # no window with ink
    opts = SequenceOptions(noise_blocks=0)
    pool = make_pool(faint, labels, np.arange(20), "train", opts)
    d = seq.generate_canvases(pool, 3, np.random.default_rng(0), opts)
    assert d["noise_positions"].shape == (3, 0, 2) and d["images"].max() > 0
    with pytest.raises(ValueError, match=r"n must be an int >= 1, got 0 \(empty_split\(0\)"):
        seq.generate_canvases(pool, 0, np.random.default_rng(0), opts)


def test_varied_layout_draws_each_gap_in_range_and_never_biases_the_digits():
    """Default layout 'varied': gaps of 2..10 columns, drawn per pair, capped by what fits; the
    cap never redraws digits, so the digits drawn are the same as with the fixed layout."""
    folder = shared_mnist_dir()
    if folder is None:
        pytest.skip("the shared MNIST folder is not on this machine")
    varied = generate_split("train", 600, seed=3, data_dir=folder, debug=True)
    fixed = generate_split("train", 600, seed=3, data_dir=folder, debug=True, options=SequenceOptions.for_layout("fixed"))
    g = varied["gaps"]
    assert SequenceOptions().gap == 2 and SequenceOptions().gap_max == 10
    assert g.min() == 2 and g.max() == 10 and set(np.unique(g)) == set(range(2, 11))
    assert (g[:, 0] != g[:, 1]).mean() > 0.5                       # each pair on its own
    np.testing.assert_array_equal(fixed["gaps"], 2)
    b = varied["boxes"]
    assert b.min() >= 0 and b.max() <= 100
    assert np.bincount(varied["labels"].ravel(), minlength=10).min() > 150
    # the same pool and angles: only the spacing differs, not which digits were drawn, in most canvases
    assert (varied["indices"] == fixed["indices"]).all(axis=1).mean() > 0.95
    np.testing.assert_array_equal(varied["angles"], fixed["angles"])    # drawn before the gaps
    assert (varied["centres"] != fixed["centres"]).any()                # drawn after: the stream moved on


def test_widest_gap_is_what_fits():
    """_widest_gap: with every gap at g_fit the strip fits the canvas; one more column does not."""
    rng = np.random.default_rng(0)
    n = 500
    w = rng.integers(4, 22, size=(n, 4))
    ink = np.stack([np.full((n, 4), 4), np.full((n, 4), 3), rng.integers(12, 21, size=(n, 4)), w], axis=-1)
    rad = np.deg2rad(rng.uniform(-45, 45, size=n))
    cos, sin = np.cos(rad), np.sin(rad)
    zero = np.zeros((n, 3), dtype=np.int64)
    *_, x_lo, x_hi, y_lo, y_hi = seq._layout(ink, zero, True)
    fit = seq._widest_gap(x_lo, x_hi, y_lo, y_hi, cos, sin, zero)
    for delta, should_fit in ((0, True), (1, False)):
        gaps = np.repeat(fit[:, None] + delta, 3, axis=1)
        X, Y, il, ir, x_lo2, x_hi2, y_lo2, y_hi2 = seq._layout(ink, gaps, True)
        ex, ey = seq._extent(x_lo2, x_hi2, y_lo2, y_hi2, cos, sin)
        ok = (2 * ex <= 99) & (2 * ey <= 99)
        assert ok[fit >= 1].all() if should_fit else not ok[fit >= 1].any()


def test_gap_max_option_errors():
    with pytest.raises(ValueError, match=r"gap_max must be >= gap \(5\) or None"):
        SequenceOptions(gap=5, gap_max=4)
    with pytest.raises(ValueError, match=r"gap_max must be an int or None"):
        SequenceOptions(gap_max=3.5)
    with pytest.raises(ValueError, match=r"unknown layout 'wide'; choose one of varied, fixed, cells"):
        SequenceOptions.for_layout("wide")
    assert not SequenceOptions(gap_max=None).varied and not SequenceOptions(gap=3, gap_max=3).varied


def test_shifted_set_uses_the_test_digits_and_a_stream_of_its_own(mnist_dir):
    opts = SequenceOptions(val_start=200)
    test = generate_split("test", 8, seed=0, data_dir=mnist_dir, options=opts, debug=True)
    shifted = generate_split("shifted", 8, seed=0, data_dir=mnist_dir, options=opts, debug=True)
    assert not np.array_equal(test["indices"], shifted["indices"])
    images, _ = load_mnist("test", mnist_dir)
    assert shifted["indices"].max() < len(images)
