"""Golden regression of the data generators: every MNIST-sequence layout, the shifted test set and
every single-digit task, made from seeded synthetic MNIST, must give the labels (exactly), angles,
boxes and per-image row and column sums pinned in tests/golden/data.npz. A generator's seed defines
the data set that a result in results/ was trained and tested on, so a refactor must not change it.
Sums agree to 1e-4 (float32 images whose warps use float sin/cos, which may differ in the last bit
between CPUs); a digit or noise block moved by one pixel changes them by far more."""
from __future__ import annotations

import json

import numpy as np

from tests.golden.make_golden import compute_data_golden, data_path

REGENERATE = ("if the change of the data is intended, regenerate with `python -m tests.golden.make_golden data`, "
              "say why in the commit, and retrain what results/ holds")


def test_generators_match_golden(tmp_path):
    want = np.load(data_path(), allow_pickle=False)
    got = compute_data_golden(str(tmp_path))
    assert json.loads(str(want["config"])) == json.loads(str(got["config"])), f"data: golden config changed; {REGENERATE}"
    assert sorted(want.files) == sorted(got), f"data: the pinned arrays changed; {REGENERATE}"
    for key in sorted(got):
        if key == "config":
            continue
        if key.endswith("/labels"):
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"data: {key} differs; {REGENERATE}")
        else:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-4, err_msg=f"data: {key} differs; {REGENERATE}")


def test_golden_catches_a_moved_digit(tmp_path):
    """The fingerprint is sensitive: one canvas shifted by one pixel fails the comparison."""
    want = np.load(data_path(), allow_pickle=False)
    rows = want["sequence-varied/rows"].copy()
    rows[0, 0] = np.roll(rows[0, 0], 1)
    assert not np.allclose(rows, want["sequence-varied/rows"], rtol=1e-5, atol=1e-4)
