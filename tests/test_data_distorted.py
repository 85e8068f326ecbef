"""Properties of the single-digit benchmarks: distorted MNIST (R, RTS, P, E, TC) and cluttered MNIST."""
from __future__ import annotations

import json

import numpy as np
import pytest

import minstn.data.distorted as dist
from minstn.data import load_mnist
from minstn.data.distorted import (
    CLUTTERED,
    DISTORTIONS,
    SQUARE,
    TASKS,
    DistortionOptions,
    distort_block,
    generate_cluttered,
    generate_distorted,
)
from minstn.data.sequences import SequenceOptions, make_pool
from minstn.data.synthetic import synthetic_digits, write_synthetic_mnist
from tests.conftest import shared_mnist_dir

SIDES = {"R": 28, "RTS": 42, "P": 28, "E": 28, "TC": 60, "cluttered": 60}


def opts(task, **kwargs):
    """The task's options for the 300-image synthetic training file (val_start 200)."""
    return DistortionOptions.for_task(task, **{"val_start": 200, **kwargs})


def make(task, split, n, **kwargs):
    """generate_distorted or generate_cluttered, by task name."""
    if task == CLUTTERED:
        return generate_cluttered(split, n, **kwargs)
    return generate_distorted(split, n, task, **kwargs)


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    return write_synthetic_mnist(str(tmp_path_factory.mktemp("mnist")), n_train=300, n_test=100, seed=3)


@pytest.fixture(scope="module")
def train_digits(mnist_dir):
    return load_mnist("train", mnist_dir)


@pytest.fixture(scope="module")
def debug_sets(mnist_dir):
    """12 training images of each task with everything the generator reports."""
    return {task: make(task, "train", 12, seed=5, data_dir=mnist_dir, options=opts(task), debug=True) for task in TASKS}


def _margin_render(digit, matrix, size, margin):
    """The image of one digit drawn on a canvas grown by ``margin`` on every side (no clutter)."""
    shift = np.array([[1.0, 0, -margin], [0, 1.0, -margin], [0, 0, 1.0]])   # big canvas -> small canvas
    u, v = dist._source_points((matrix @ shift)[None], size + 2 * margin)
    return dist._sample(digit[None], u, v)[0]


# ----------------------------------------------------------------------------------------
# Shapes, ranges, labels, debug record
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("task", TASKS)
def test_shapes_dtypes_range_and_labels(debug_sets, train_digits, task):
    d, S = debug_sets[task], SIDES[task]
    assert d["images"].shape == (12, 1, S, S) and d["images"].dtype == np.float32
    assert d["labels"].shape == (12, 1) and d["labels"].dtype == np.int64
    assert d["images"].min() >= 0.0 and d["images"].max() <= 1.0 and d["images"].max() > 0.5
    np.testing.assert_array_equal(d["labels"][:, 0], train_digits[1][d["indices"]])
    assert d["matrices"].shape == (12, 3, 3) and d["centres"].shape == (12, 2)
    assert ("flows" in d) == (task == "E")


@pytest.mark.parametrize("task", TASKS)
def test_parameters_in_their_ranges(debug_sets, task):
    d, o = debug_sets[task], opts(task)
    assert np.abs(d["angles"]).max() <= o.angle
    assert d["scales"].min() >= o.scale_min and d["scales"].max() <= o.scale_max
    assert np.abs(d["corners"]).max() <= o.corner_clip * 28 + 1e-12
    B, C, S = o.clutter, o.clutter_size, o.size
    assert d["clutter_positions"].shape == (12, B, 2) and d["clutter_sources"].shape == (12, B, 3)
    if B:
        assert d["clutter_positions"].min() >= 0 and d["clutter_positions"].max() <= S - C
        assert d["clutter_sources"][..., 1:].min() >= 0 and d["clutter_sources"][..., 1:].max() <= 28 - C
        assert np.all(d["clutter_sources"][..., 0] != d["indices"][:, None])     # other digits only


def test_task_settings():
    assert DISTORTIONS == ("R", "RTS", "P", "E", "TC") and CLUTTERED == "cluttered"
    r, rts, p, e = (DistortionOptions.for_task(t) for t in ("R", "RTS", "P", "E"))
    assert (r.size, r.angle, r.translate) == (28, 90.0, False)
    assert (rts.size, rts.angle, rts.scale_min, rts.scale_max, rts.translate) == (42, 45.0, 0.7, 1.2, True)
    assert (p.size, p.corner_std, p.corner_clip) == (28, 0.1, 0.2)
    assert (e.size, e.elastic_alpha, e.elastic_sigma) == (28, 34.0, 4.0)
    for task, patch in (("TC", 6), ("cluttered", 8)):
        o = DistortionOptions.for_task(task)
        assert (o.size, o.clutter, o.clutter_size, o.clutter_combine, o.whole_pixels) == (60, 6, patch, "add", True)
    o = DistortionOptions.for_task("RTS", clutter=2)
    assert DistortionOptions(**json.loads(json.dumps(o.to_dict()))) == o


# ----------------------------------------------------------------------------------------
# Determinism and splits
# ----------------------------------------------------------------------------------------

def test_deterministic_for_a_seed_with_any_workers(mnist_dir, monkeypatch):
    monkeypatch.setattr(dist, "BLOCK", 8)
    seen = []
    one = generate_distorted("train", 20, "RTS", seed=3, data_dir=mnist_dir, options=opts("RTS"), workers=1, debug=True)
    two = generate_distorted("train", 20, "RTS", seed=3, data_dir=mnist_dir, options=opts("RTS"), workers=2, debug=True,
                             progress=lambda done, n: seen.append((done, n)))
    for key in one:
        np.testing.assert_array_equal(one[key], two[key])
    assert seen == [(8, 20), (16, 20), (20, 20)]
    other = generate_distorted("train", 20, "RTS", seed=4, data_dir=mnist_dir, options=opts("RTS"))
    assert not np.array_equal(other["images"], one["images"])


def test_blocks_have_independent_streams(mnist_dir, monkeypatch):
    monkeypatch.setattr(dist, "BLOCK", 8)
    long = generate_cluttered("val", 20, seed=1, data_dir=mnist_dir, options=opts(CLUTTERED))   # blocks 8, 8, 4
    short = generate_cluttered("val", 8, seed=1, data_dir=mnist_dir, options=opts(CLUTTERED))
    np.testing.assert_array_equal(long["images"][:8], short["images"])
    assert not np.array_equal(long["images"][8:16], short["images"])


def test_tasks_use_independent_streams(mnist_dir):
    same = opts("TC")
    tc = generate_distorted("test", 16, "TC", data_dir=mnist_dir, options=same, debug=True)
    cl = generate_cluttered("test", 16, data_dir=mnist_dir, options=same, debug=True)
    assert not np.array_equal(tc["indices"], cl["indices"])


def test_disjoint_pools(mnist_dir):
    parts = {s: generate_distorted(s, 30, "TC", data_dir=mnist_dir, options=opts("TC"), debug=True)
             for s in ("train", "val", "test")}
    for split, (lo, hi) in (("train", (0, 200)), ("val", (200, 300)), ("test", (0, 100))):
        d = parts[split]
        for used in (d["indices"], d["clutter_sources"][..., 0]):
            assert used.min() >= lo and used.max() < hi
    assert parts["val"]["indices"].min() >= 200


def test_empty_split(mnist_dir):
    d = generate_distorted("test", 0, "RTS", data_dir=mnist_dir, debug=True)
    assert d["images"].shape == (0, 1, 42, 42) and d["labels"].shape == (0, 1)
    assert d["clutter_positions"].shape == (0, 0, 2)
    assert generate_cluttered("test", 0, data_dir=mnist_dir)["images"].shape == (0, 1, 60, 60)


# ----------------------------------------------------------------------------------------
# Each task's defining property
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("task, change", [("R", dict(angle=0.0)), ("P", dict(corner_std=0.0)),
                                          ("E", dict(elastic_alpha=0.0))])
def test_identity_settings_reproduce_the_digit(mnist_dir, train_digits, task, change):
    d = generate_distorted("train", 10, task, seed=2, data_dir=mnist_dir, options=opts(task, **change), debug=True)
    np.testing.assert_array_equal(d["images"][:, 0], train_digits[0][d["indices"]] / np.float32(255))


def test_positive_angle_turns_counter_clockwise(train_digits):
    digit = train_digits[0][:1]
    M = dist._similarity_inverse(np.array([np.pi / 2]), np.array([1.0]), np.array([[13.5, 13.5]]))
    turned = dist._sample(digit, *dist._source_points(M, 28))
    np.testing.assert_allclose(turned[0], np.rot90(digit[0]) / 255, rtol=0, atol=1e-6)


def test_tiny_corner_offsets_nearly_reproduce_the_digit(mnist_dir, train_digits):
    d = generate_distorted("train", 6, "P", data_dir=mnist_dir, options=opts("P", corner_std=1e-9), debug=True)
    np.testing.assert_allclose(d["images"][:, 0], train_digits[0][d["indices"]] / 255, rtol=0, atol=1e-5)


def test_homography_maps_the_displaced_corners_to_the_square(debug_sets):
    d = debug_sets["P"]                                        # centred 28x28: the matrix is H alone
    dst = SQUARE + d["corners"]                                # (N, 4, 2)
    mapped = np.einsum("nij,nkj->nki", d["matrices"], np.concatenate([dst, np.ones((12, 4, 1))], axis=-1))
    np.testing.assert_allclose(mapped[..., :2] / mapped[..., 2:], np.broadcast_to(SQUARE, (12, 4, 2)), atol=1e-9)
    assert np.abs(d["corners"]).max() > 1.0                    # really distorted


def test_elastic_field_size(debug_sets):
    flows = debug_sets["E"]["flows"]                           # (N, 2, 28, 28)
    rms = float(np.sqrt((flows ** 2).mean()))
    assert 0.8 < rms < 2.2                                      # alpha 34, sigma 4: about 1.4 px


@pytest.mark.parametrize("task", ["RTS", "TC", CLUTTERED])
def test_translated_ink_stays_inside_the_canvas(mnist_dir, train_digits, task):
    o = opts(task, clutter=0)
    d = make(task, "train", 40, seed=7, data_dir=mnist_dir, options=o, debug=True)
    m = 12
    for i in range(40):
        big = _margin_render(train_digits[0][d["indices"][i]], d["matrices"][i], o.size, m)
        np.testing.assert_array_equal(big[m:-m, m:-m], d["images"][i, 0])
        big[m:-m, m:-m] = 0
        assert not big.any()                                         # no ink on the margin
    if o.whole_pixels:                                               # every ink pixel kept, unchanged
        digits = train_digits[0][d["indices"]] / np.float32(255)
        np.testing.assert_allclose(d["images"].sum(axis=(1, 2, 3)), digits.sum(axis=(1, 2)), rtol=1e-6)
        np.testing.assert_array_equal(np.sort(d["images"].reshape(40, -1), axis=1)[:, -28 * 28:],
                                      np.sort(digits.reshape(40, -1), axis=1))
    spread = d["centres"].max(axis=0) - d["centres"].min(axis=0)
    assert np.all(spread > o.size / 4)                               # really moved around


def test_rts_scales_the_ink(mnist_dir, train_digits):
    o = opts("RTS", angle=0.0, whole_pixels=False)
    d = generate_distorted("train", 30, "RTS", seed=1, data_dir=mnist_dir, options=o, debug=True)
    ink = d["images"].sum(axis=(1, 2, 3)) / (train_digits[0][d["indices"]].sum(axis=(1, 2)) / 255)
    np.testing.assert_allclose(ink, d["scales"] ** 2, rtol=0.05)       # bilinear keeps the mass, times s^2


@pytest.mark.parametrize("task, combine", [("TC", "add"), (CLUTTERED, "add"), (CLUTTERED, "max")])
def test_clutter_matches_a_loop_reconstruction(mnist_dir, train_digits, task, combine):
    o = opts(task, clutter_combine=combine)
    full = make(task, "train", 10, seed=9, data_dir=mnist_dir, options=o, debug=True)
    # the same digits and transforms without clutter (clutter is drawn last in each block)
    base = make(task, "train", 10, seed=9, data_dir=mnist_dir, options=opts(task, clutter=0))
    C = o.clutter_size
    for i in range(10):
        expect = base["images"][i, 0].copy()
        for (y, x), (m, wy, wx) in zip(full["clutter_positions"][i], full["clutter_sources"][i]):
            patch = train_digits[0][m, wy:wy + C, wx:wx + C] / np.float32(255)
            here = expect[y:y + C, x:x + C]
            expect[y:y + C, x:x + C] = np.minimum(here + patch, 1) if combine == "add" else np.maximum(here, patch)
        np.testing.assert_allclose(full["images"][i, 0], expect, rtol=0, atol=1e-6)
        assert np.all(full["images"][i, 0] >= base["images"][i, 0])    # clutter never erases ink


# ----------------------------------------------------------------------------------------
# Fast paths against the loop references
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("task", TASKS)
def test_warp_matches_the_loop_reference(mnist_dir, train_digits, task):
    o = opts(task, clutter=0)
    d = make(task, "train", 2, seed=11, data_dir=mnist_dir, options=o, debug=True)
    for i in range(2):
        flow = d["flows"][i] if "flows" in d else None
        ref = dist._warp_naive(train_digits[0][d["indices"][i]], d["matrices"][i], o.size, flow)
        np.testing.assert_allclose(d["images"][i, 0], ref, rtol=0, atol=1e-5)   # float32 values
        assert ref.sum() > 5


def test_warp_edges_match_the_loop_reference(rng):
    """Points far outside, on the border, and beyond a homography's vanishing line read zero."""
    digits, _ = synthetic_digits(1, rng)
    digits[0, 0, :] = 200                                       # ink on the border rows and columns
    digits[0, :, 27] = 90
    strong = np.array([[1.0, 0.1, 2], [0.05, 1.0, -3], [-0.03, 0.005, 0.7]])   # vanishing line crosses the canvas
    tilted = dist._similarity_inverse(np.array([0.3]), np.array([0.8]), np.array([[20.0, 17.5]]))[0]
    for M, size in ((strong, 40), (tilted, 36), (np.eye(3), 28)):
        fast = dist._sample(digits, *dist._source_points(M[None], size))
        np.testing.assert_allclose(fast[0], dist._warp_naive(digits[0], M, size), rtol=0, atol=1e-5)
    u, v = dist._source_points(strong[None], 40)
    assert (u == -2).any()                                      # some points were beyond the line


def test_homographies_match_the_loop_reference(rng):
    corners = SQUARE + rng.normal(0, 3, size=(5, 4, 2))
    fast = dist._homographies(corners)
    for i in range(5):
        np.testing.assert_allclose(fast[i], dist._homography_naive(corners[i]), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(dist._homographies(SQUARE[None])[0], np.eye(3), atol=1e-12)


def test_smoothing_matches_the_loop_reference(rng):
    sigma = 1.5                                                  # radius 5: 11 taps
    noise = rng.uniform(-1, 1, size=(2, 3, 16 + 10, 16 + 10))
    fast = dist._smooth(noise, sigma)
    assert fast.shape == (2, 3, 16, 16)
    for i, j in ((0, 0), (1, 2)):
        np.testing.assert_allclose(fast[i, j], dist._smooth_naive(noise[i, j], sigma), rtol=0, atol=1e-12)
    np.testing.assert_allclose(dist._smooth(np.ones((1, 30, 30)), 2.0), 1.0, atol=1e-12)   # taps sum to 1


# ----------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    (dict(size=0), r"size must be in 1..1024, got 0"),
    (dict(size=28.0), r"size must be an int, got 28.0"),
    (dict(angle=200.0), r"angle must be in \[0, 180\] degrees"),
    (dict(angle=float("nan")), r"angle must be a finite number"),
    (dict(scale_min=0.0), r"scale_min must be in \(0, 10\]"),
    (dict(scale_min=1.2, scale_max=0.7), r"scale_max must be in \[scale_min, 10\] = \[1.2, 10\]"),
    (dict(translate="yes"), r"translate must be True or False"),
    (dict(whole_pixels=True), r"whole_pixels needs translate=True"),
    (dict(corner_std=-0.1), r"corner_std must be >= 0"),
    (dict(corner_clip=0.25), r"corner_clip must be in \(0, 0.25\) of the side"),
    (dict(elastic_alpha=-1.0), r"elastic_alpha must be >= 0 pixels"),
    (dict(elastic_sigma=0.1), r"elastic_sigma must be in \[0.5, 20\] pixels"),
    (dict(clutter=-1), r"clutter must be >= 0"),
    (dict(clutter_size=29), r"clutter_size must be in 1..28"),
    (dict(size=5, clutter_size=6), r"clutter_size \(6\) must be at most size \(5\)"),
    (dict(clutter_combine="mean"), r"clutter_combine must be one of \('add', 'max'\)"),
    (dict(val_start=0), r"val_start must be >= 1"),
])
def test_option_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DistortionOptions(**kwargs)


def test_unknown_option_and_task_errors():
    with pytest.raises(TypeError, match=r"unknown distortion option\(s\) \['angel'\]; known options"):
        DistortionOptions.for_task("R", angel=30)
    with pytest.raises(ValueError, match=r"unknown task 'S'; choose one of R, RTS, P, E, TC, cluttered"):
        DistortionOptions.for_task("S")


def test_argument_errors(mnist_dir):
    with pytest.raises(ValueError, match=r"distortion must be one of \('R', 'RTS', 'P', 'E', 'TC'\), got 'cluttered'"):
        generate_distorted("train", 2, "cluttered", data_dir=mnist_dir)
    with pytest.raises(ValueError, match=r"split must be one of \['train', 'val', 'test'\], got 'shifted'"):
        generate_distorted("shifted", 2, "R", data_dir=mnist_dir)
    with pytest.raises(ValueError, match=r"size of split 'train' must be an int >= 0, got -1"):
        generate_distorted("train", -1, "R", data_dir=mnist_dir)
    with pytest.raises(ValueError, match=r"seed must be an int >= 0, got -3"):
        generate_cluttered("train", 2, seed=-3, data_dir=mnist_dir)
    with pytest.raises(ValueError, match=r"options must be a DistortionOptions"):
        generate_distorted("train", 2, "R", data_dir=mnist_dir, options=SequenceOptions())
    with pytest.raises(ValueError, match=r"val_start=500 leaves no validation digits: the MNIST training file has 300"):
        generate_distorted("val", 2, "R", data_dir=mnist_dir, options=opts("R", val_start=500))


def test_digits_that_cannot_fit_are_an_error(mnist_dir):
    with pytest.raises(ValueError, match=r"digits do not fit the 20x20 canvas with their ink inside .*"
                                         r"raise size or lower scale_max"):
        generate_distorted("train", 4, "RTS", data_dir=mnist_dir, options=opts("RTS", size=20))


def test_clutter_needs_another_digit(rng):
    images, labels = synthetic_digits(1, rng)
    pool_options = SequenceOptions(noise_blocks=0, noise_size=28, noise_min_ink=0)
    pool = make_pool(images, labels, np.arange(1), "train", pool_options)
    with pytest.raises(ValueError, match=r"the pool needs at least 2 digits"):
        distort_block(pool, 2, np.random.default_rng(0), DistortionOptions.for_task("TC"))
    with pytest.raises(ValueError, match=r"n must be an int >= 1, got 0"):
        distort_block(pool, 0, np.random.default_rng(0), DistortionOptions())


# ----------------------------------------------------------------------------------------
# Real MNIST (skipped where the shared folder is absent)
# ----------------------------------------------------------------------------------------

def test_real_mnist_tasks():
    folder = shared_mnist_dir()
    if folder is None:
        pytest.skip("the shared MNIST folder is not on this machine")
    images, labels = load_mnist("test", folder)
    for task in TASKS:
        o = DistortionOptions.for_task(task, clutter=0)
        d = make(task, "test", 3, seed=0, data_dir=folder, options=o, debug=True)
        np.testing.assert_array_equal(d["labels"][:, 0], labels[d["indices"]])
        flow = d["flows"][0] if "flows" in d else None
        ref = dist._warp_naive(images[d["indices"][0]], d["matrices"][0], o.size, flow)
        np.testing.assert_allclose(d["images"][0, 0], ref, rtol=0, atol=1e-5)
    v = generate_cluttered("val", 8, seed=0, data_dir=folder, debug=True)
    assert v["indices"].min() >= 20000 and v["indices"].max() <= 22698
    assert v["clutter_sources"][..., 0].min() >= 20000 and v["images"].max() == 1.0
