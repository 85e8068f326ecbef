"""Copy a trained model into the tutorials, small: parameters in float16, no optimiser state.

    python tutorials/_src/ship_model.py runs/grid/lstm-stn-d2-s0 tutorials/models/lstm-stn-d2-cpu.npz

(runs/grid: the folder of `python -m minstn.reproduce --preset cpu --out runs/grid`.) Notebook 08
loads the result with minstn.training.metrics.load_model (which casts the parameters back to the
model's float32), so a learner sees a trained LSTM-STN's glimpses without training one.
The file keeps the run's model description, configuration, per-epoch metrics and test result, so
the notebook can say exactly how the model was made. float16 keeps ~3 significant digits of each
weight; the notebook measures the test error of the shipped copy itself.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

from minstn.training import checkpoint


def ship(run_dir: str, out: str) -> str:
    arrays, meta = checkpoint.load(os.path.join(run_dir, "checkpoint.npz"))   # the best epoch
    params = {k: np.asarray(v, dtype=np.float16) for k, v in arrays.items() if k.startswith("param/")}
    with open(os.path.join(run_dir, "result.json")) as f:
        result = json.load(f)
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        metrics = [json.loads(line) for line in f if line.strip()]
    small = {
        "model": meta["model"],
        "config": meta["config"],
        "best_epoch": meta.get("best_epoch"),
        "best_val_digit_error": meta.get("best_val_digit_error"),
        "result": result,
        "metrics": metrics,
        "shipped": "parameters stored as float16 by tutorials/_src/ship_model.py",
    }
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    return checkpoint.save(out, params, small)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[2])
    path = ship(sys.argv[1], sys.argv[2])
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB)")
