"""Golden regression: each model's loss and gradient entries (float64) must match
tests/golden/<model>.npz to a relative 1e-10, and its 5-step SGD loss trace to 1e-7 (five steps
amplify the last-bit differences that the BLAS's thread count makes in a matrix product's sums
to ~1e-9), so a refactor cannot silently change the numbers. After an intended change, regenerate with `python -m tests.golden.make_golden`
and say why in the commit."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.golden.make_golden import CONFIGS, compute_golden, golden_path

REGENERATE = "if the change is intended, regenerate with `python -m tests.golden.make_golden` and say why in the commit"


@pytest.mark.parametrize("model_name", list(CONFIGS))
def test_matches_golden(model_name):
    want = np.load(golden_path(model_name))
    got = compute_golden(model_name)
    assert json.loads(str(want["config"])) == json.loads(got["config"]), f"{model_name}: golden config changed; {REGENERATE}"
    assert list(want["grad_names"]) == list(got["grad_names"]), f"{model_name}: parameter names changed; {REGENERATE}"
    for key, rtol in (("loss", 1e-10), ("grad_entries", 1e-10), ("trace", 1e-7)):
        np.testing.assert_allclose(got[key], want[key], rtol=rtol, atol=1e-15,
                                   err_msg=f"{model_name}: {key} differs from tests/golden/{model_name}.npz; {REGENERATE}")


def test_training_loop_matches_golden(tmp_path):
    """The loop (data order, dropout stream, chunks, clipping, Adam, schedule) gives the pinned numbers."""
    from tests.golden.make_golden import compute_trainer_golden, trainer_path

    want = np.load(trainer_path())
    got = compute_trainer_golden(str(tmp_path))
    assert json.loads(str(want["config"])) == json.loads(got["config"]), f"trainer: golden config changed; {REGENERATE}"
    assert list(want["param_names"]) == list(got["param_names"])
    for key in ("train_loss", "val_loss", "param_entries"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-9, atol=1e-13,
                                   err_msg=f"trainer: {key} differs from tests/golden/trainer.npz; {REGENERATE}")
