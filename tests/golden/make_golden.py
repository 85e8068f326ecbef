"""(Re)make the golden regression files tests/golden/<model>.npz.

    python -m tests.golden.make_golden          # from the repository root

Run it only after an intended change of the numbers (an op's formula, an init, the model
layout), and say why in the commit message. Each file holds, for one small float64 model
(batch N = 2, seeded canvases, labels and dropout masks):

    config         JSON: model name, downsample, options, seeds
    loss           the mean loss of the first forward pass
    grad_names     parameter names (every parameter, in model order)
    grad_entries   (P, 3) gradient entries at flat indices 0, size // 2 and size - 1 of each
    trace          (5,) the loss before each of 5 plain SGD steps (lr 0.01) on the same batch

tests/test_models_golden.py recomputes all of it with compute_golden() and compares to 1e-10.
"""
from __future__ import annotations

import json
import os

import numpy as np

from minstn.models import build_model

HERE = os.path.dirname(os.path.abspath(__file__))

# One configuration per model; the FFN-STN starts off the identity so that no sample point sits
# exactly on a pixel (where the bilinear sampler's gradient has a kink and round-off could pick
# either side).
CONFIGS = {
    "cnn": {"name": "cnn", "downsample": 1, "options": {"head_init": "he"}},
    "ffn-stn": {"name": "ffn-stn", "downsample": 2, "options": {"init_scale": 0.9, "regressor_std": 0.01, "head_init": "he"}},
    "lstm-stn": {"name": "lstm-stn", "downsample": 2, "options": {"head_init": "he"}},  # He: every gradient non-zero
}
MODEL_SEED, DATA_SEED, N, STEPS, LR = 0, 1, 2, 5, 0.01


def golden_path(model_name: str) -> str:
    return os.path.join(HERE, f"{model_name}.npz")


def compute_golden(model_name: str) -> dict:
    """Recompute the golden quantities of one model (float64, CPU)."""
    cfg = CONFIGS[model_name]
    model = build_model(cfg["name"], cfg["downsample"], dtype="float64", device="cpu", seed=MODEL_SEED, **cfg["options"])
    data = np.random.default_rng(DATA_SEED)
    images = data.random((N, 1, 100, 100))          # (N, 1, 100, 100) in [0, 1)
    labels = data.integers(0, 10, size=(N, 4))      # (N, 4)
    names = list(model.params)
    trace, loss0, entries = [], None, None
    for step in range(STEPS):
        loss, _ = model.loss_and_grads(images, labels, rng=np.random.default_rng(100 + step))
        trace.append(loss)
        if step == 0:
            loss0 = loss
            entries = np.array([[g.reshape(-1)[i] for i in (0, g.size // 2, g.size - 1)]
                                for g in (model.grads[k] for k in names)])   # (P, 3)
        for k in names:
            model.params[k] -= LR * model.grads[k]
    config = dict(cfg, model_seed=MODEL_SEED, data_seed=DATA_SEED, n=N, steps=STEPS, lr=LR)
    return {"config": json.dumps(config, sort_keys=True), "loss": np.float64(loss0),
            "grad_names": np.array(names), "grad_entries": entries, "trace": np.array(trace)}


def main() -> int:
    for model_name in CONFIGS:
        g = compute_golden(model_name)
        np.savez(golden_path(model_name), **g)
        print(f"wrote {golden_path(model_name)}: loss {float(g['loss']):.12f}, trace {np.round(g['trace'], 6)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
