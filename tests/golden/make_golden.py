"""(Re)make the golden regression files tests/golden/<model>.npz.

    python -m tests.golden.make_golden          # from the repository root

Run it only after an intended change of the numbers (an op's formula, an init, the model
layout), and say why in the commit message. Each file holds, for one small float64 model
(batch N = 2, seeded canvases, labels and dropout masks):

    config         JSON: model name, downsample, options, seeds (and, for the single-digit models, the
                   image side and digits per image of the random inputs)
    loss           the mean loss of the first forward pass
    grad_names     parameter names (every parameter, in model order)
    grad_entries   (P, 3) gradient entries at flat indices 0, size // 2 and size - 1 of each
    trace          (5,) the loss before each of 5 plain SGD steps (lr 0.01) on the same batch

tests/test_models_golden.py recomputes all of it with compute_golden() and compares to 1e-10.

tests/golden/trainer.npz pins the training loop the same way: a tiny float64 LSTM-STN trained by
minstn.training.train for 2 epochs on 8 seeded random canvases (batch 4 in chunks of 2, dropout
on, Adam, clipping, the plateau schedule): the training and validation losses of both epochs and
a few entries of every parameter at the end. It changes only when the loop's arithmetic or its
random streams (data order, dropout) change.

tests/golden/data.npz pins the data generators: from seeded synthetic MNIST files, a few images of
every MNIST-sequence layout (and its shifted test set) and of every single-digit task, stored as
labels, angles and boxes where the generator makes them, and each image's row and column sums (a
compact fingerprint of where every pixel's ink is). The generators' seeds define the data sets that
results/ were trained on, so a change here changes every data set; it must be intended.
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
    "lstm-stn-gru": {"name": "lstm-stn", "downsample": 2, "options": {"head_init": "he", "cell": "gru"}},
    "lstm-stn-tied": {"name": "lstm-stn", "downsample": 2, "options": {"head_init": "he", "tied": True}},
    # single-digit models (issue 17): images of side `side`, `digits` labels each
    "fcn": {"name": "fcn", "downsample": 1, "side": 28, "digits": 1, "options": {"head_init": "he", "image_size": 28}},
    "mnist-cnn": {"name": "mnist-cnn", "downsample": 1, "side": 28, "digits": 1,
                  "options": {"head_init": "he", "image_size": 28}},
    "st-fcn": {"name": "st-fcn", "downsample": 1, "side": 28, "digits": 1,
               "options": {"init_scale": 0.9, "regressor_std": 0.01, "head_init": "he", "image_size": 28}},
    "st-cnn": {"name": "st-cnn", "downsample": 1, "side": 42, "digits": 1,
               "options": {"init_scale": 0.9, "regressor_std": 0.01, "head_init": "he", "image_size": 42}},
    "st-cnn-projective": {"name": "st-cnn", "downsample": 1, "side": 28, "digits": 1,
                          "options": {"init_scale": 0.9, "regressor_std": 0.01, "head_init": "he", "image_size": 28,
                                      "transform": "projective"}},
    "tstn": {"name": "tstn", "downsample": 1, "side": 28, "digits": 1,
             "options": {"init_scale": 0.9, "regressor_std": 0.01, "head_init": "he", "image_size": 28}},
    "tstn-untied": {"name": "tstn", "downsample": 1, "side": 28, "digits": 1,
                    "options": {"init_scale": 0.9, "regressor_std": 0.01, "head_init": "he", "image_size": 28, "tied": False}},
    "tstn-cnn": {"name": "tstn-cnn", "downsample": 1, "side": 28, "digits": 1,
                 "options": {"head_init": "he", "image_size": 28}},
}
MODEL_SEED, DATA_SEED, N, STEPS, LR = 0, 1, 2, 5, 0.01


def golden_path(model_name: str) -> str:
    return os.path.join(HERE, f"{model_name}.npz")


def compute_golden(model_name: str) -> dict:
    """Recompute the golden quantities of one model (float64, CPU)."""
    cfg = CONFIGS[model_name]
    model = build_model(cfg["name"], cfg["downsample"], dtype="float64", device="cpu", seed=MODEL_SEED, **cfg["options"])
    data = np.random.default_rng(DATA_SEED)
    side, digits = cfg.get("side", 100), cfg.get("digits", 4)
    images = data.random((N, 1, side, side))        # (N, 1, 100, 100) in [0, 1), or a single-digit model's side
    labels = data.integers(0, 10, size=(N, digits))  # (N, 4), or (N, 1)
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


TRAINER = {"model": "lstm-stn", "downsample": 4, "hidden_size": 16, "dtype": "float64", "batch_size": 4, "chunk": 2,
           "workers": 1, "epochs": 2, "eval_batch_size": 4, "theta_batch": 4, "seed": 3, "save_every": 1}


def trainer_path() -> str:
    return os.path.join(HERE, "trainer.npz")


def compute_trainer_golden(folder: str) -> dict:
    """Train TRAINER on seeded random canvases in `folder` (a scratch folder); the pinned numbers."""
    from minstn.data import save_sequence_file
    from minstn.training import TrainConfig, train
    from minstn.training.checkpoint import load
    from minstn.training.console import Console
    from minstn.training.run import read_metrics

    data = np.random.default_rng(DATA_SEED)
    boxes = np.tile(np.array([0.0, 0.0, 10.0, 10.0], dtype=np.float32), (1, 4, 1))
    for split, n in (("train", 8), ("val", 4), ("test", 4)):
        save_sequence_file(os.path.join(folder, "data", f"{split}.npz"), {
            "images": data.random((n, 1, 100, 100), dtype=np.float32),
            "labels": data.integers(0, 10, size=(n, 4)).astype(np.int64),
            "angles": np.zeros(n, dtype=np.float32), "boxes": np.repeat(boxes, n, axis=0)})
    cfg = TrainConfig(**TRAINER, data=os.path.join(folder, "data"), out=os.path.join(folder, "run"), progress=False)
    train(cfg, console=Console(verbosity=0))
    recs = read_metrics(os.path.join(folder, "run"))
    arrays, _ = load(os.path.join(folder, "run", "last.npz"))
    names = sorted(k for k in arrays if k.startswith("param/"))
    entries = np.array([[arrays[k].reshape(-1)[i] for i in (0, arrays[k].size // 2, arrays[k].size - 1)] for k in names])
    return {"config": json.dumps(TRAINER, sort_keys=True), "train_loss": np.array([r["train_loss"] for r in recs]),
            "val_loss": np.array([r["val_loss"] for r in recs]), "param_names": np.array(names), "param_entries": entries}


DATA = {"mnist_seed": 11, "n_train": 300, "n_test": 100, "val_start": 200, "n": 6, "seed": 4}
DATA_SETS = (["sequence-" + layout for layout in ("varied", "fixed", "cells", "sonderby")] + ["sequence-shifted"]
             + ["digits-" + task for task in ("R", "RTS", "P", "E", "TC", "cluttered")])


def data_path() -> str:
    return os.path.join(HERE, "data.npz")


def compute_data_golden(folder: str) -> dict:
    """Generate every data set of DATA_SETS from synthetic MNIST written into `folder`; their fingerprints."""
    from minstn.data.distorted import DistortionOptions, generate_cluttered, generate_distorted
    from minstn.data.sequences import LAYOUTS, SequenceOptions, generate_split
    from minstn.data.synthetic import write_synthetic_mnist

    mnist = write_synthetic_mnist(folder, n_train=DATA["n_train"], n_test=DATA["n_test"], seed=DATA["mnist_seed"])
    n, seed = DATA["n"], DATA["seed"]
    out = {"config": np.array(json.dumps({"data": DATA, "sets": DATA_SETS}, sort_keys=True))}
    for name in DATA_SETS:
        kind, what = name.split("-", 1)
        if kind == "sequence":
            split, layout = ("shifted", "cells") if what == "shifted" else ("train", what)
            options = SequenceOptions(val_start=DATA["val_start"], **LAYOUTS[layout])
            d = generate_split(split, n, seed=seed, data_dir=mnist, options=options, workers=1)
        elif what == "cluttered":
            options = DistortionOptions.for_task(what, val_start=DATA["val_start"])
            d = generate_cluttered("train", n, seed=seed, data_dir=mnist, options=options, workers=1)
        else:
            options = DistortionOptions.for_task(what, val_start=DATA["val_start"])
            d = generate_distorted("train", n, what, seed=seed, data_dir=mnist, options=options, workers=1)
        images = d["images"].astype(np.float64)
        out[f"{name}/labels"] = d["labels"]
        out[f"{name}/rows"] = images.sum(axis=-1)                   # (n, 1, S)
        out[f"{name}/cols"] = images.sum(axis=-2)                   # (n, 1, S)
        for key in ("angles", "boxes"):
            if key in d:
                out[f"{name}/{key}"] = d[key]
    return out


def main(argv=None) -> int:
    """Remake every golden file, or only those named: `python -m tests.golden.make_golden lstm-stn-gru data`."""
    import sys
    import tempfile

    names = list(sys.argv[1:] if argv is None else argv) or list(CONFIGS) + ["trainer", "data"]
    if "data" in names:
        with tempfile.TemporaryDirectory() as tmp:
            g = compute_data_golden(tmp)
        np.savez(data_path(), **g)
        print(f"wrote {data_path()}: {len(DATA_SETS)} data sets of {DATA['n']} images")
    if "trainer" in names:
        with tempfile.TemporaryDirectory() as tmp:
            g = compute_trainer_golden(tmp)
        np.savez(trainer_path(), **g)
        print(f"wrote {trainer_path()}: train losses {g['train_loss']}, val losses {g['val_loss']}")
    for model_name in [n for n in names if n in CONFIGS]:
        g = compute_golden(model_name)
        np.savez(golden_path(model_name), **g)
        print(f"wrote {golden_path(model_name)}: loss {float(g['loss']):.12f}, trace {np.round(g['trace'], 6)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
