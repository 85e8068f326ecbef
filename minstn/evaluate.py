"""Error rates of a model, and `python -m minstn.evaluate` for a saved checkpoint.

    python -m minstn.evaluate --checkpoint runs/lstm-stn-d2/checkpoint.npz --data data/test.npz [--json]

Shape legend:
    N   canvases;  P = 4 digit positions;  K = 10 classes;  T = glimpse steps (LSTM-STN 4, FFN-STN 1)

Definitions (all errors are percentages, 0..100):
    digit error      wrong digits / (P * N)                     (the paper's "error rate")
    sequence error   canvases with at least one wrong digit / N
    position error   for each position p: wrong digits at p / N  (a list of P numbers)
    loss             mean softmax cross-entropy over N * P digits

Theta statistics (STN models) on a batch of canvases, thetas (N, T, 2, 3):
    theta_spread       mean over the batch of the standard deviation over the T steps,
                       averaged over the 6 entries of theta (0 when every step takes the same glimpse)
    theta_spread_elem  the same per entry, a 2x3 nested list
    theta_steps        for each step t the batch means of tx = theta[0,2], ty = theta[1,2]
                       (glimpse centre, normalised coordinates) and sx = theta[0,0], sy = theta[1,1]
                       (glimpse width and height as fractions of the canvas)
"""
from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

from minstn import checkpoint
from minstn.backend import DeviceError, resolve_device, to_numpy

__all__ = ["error_stats", "evaluate_model", "theta_stats", "load_model", "json_dumps", "main"]


def error_stats(logits, labels) -> dict:
    """logits (N, P, K), labels (N, P) ints -> {'loss', 'digit_error', 'seq_error', 'position_error', 'n'}."""
    logits = np.asarray(to_numpy(logits), dtype=np.float64)
    labels = np.asarray(to_numpy(labels))
    if logits.ndim != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(f"logits must be (N, P, K) and labels (N, P); got {logits.shape} and {labels.shape}")
    wrong = logits.argmax(axis=-1) != labels                                   # (N, P)
    shifted = logits - logits.max(axis=-1, keepdims=True)                      # (N, P, K)
    logp = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))       # (N, P, K)
    nll = -np.take_along_axis(logp, labels[..., None].astype(np.int64), axis=-1)[..., 0]  # (N, P)
    return {
        "loss": float(nll.mean()),
        "digit_error": 100.0 * float(wrong.mean()),
        "seq_error": 100.0 * float(wrong.any(axis=1).mean()),
        "position_error": [100.0 * float(e) for e in wrong.mean(axis=0)],
        "n": int(labels.shape[0]),
    }


def evaluate_model(model, images, labels, batch_size: int = 256) -> dict:
    """Evaluation-mode error_stats of `model` on host arrays images (N, 1, 100, 100), labels (N, 4)."""
    logits = model.predict(images, batch_size=batch_size)   # (N, 4, 10) on the host
    return error_stats(logits, labels)


def theta_stats(thetas) -> dict:
    """thetas (N, T, 2, 3) -> theta_spread, theta_spread_elem (2x3), theta_steps [{tx, ty, sx, sy}] * T."""
    th = np.asarray(to_numpy(thetas), dtype=np.float64)
    if th.ndim != 4 or th.shape[2:] != (2, 3):
        raise ValueError(f"thetas must be (N, T, 2, 3), got {th.shape}")
    spread_elem = th.std(axis=1).mean(axis=0)                                 # (2, 3)
    means = th.mean(axis=0)                                                   # (T, 2, 3)
    steps = [{"tx": float(m[0, 2]), "ty": float(m[1, 2]), "sx": float(m[0, 0]), "sy": float(m[1, 1])} for m in means]
    return {"theta_spread": float(spread_elem.mean()), "theta_spread_elem": spread_elem.tolist(), "theta_steps": steps}


def json_dumps(obj) -> str:
    """json.dumps that writes NaN and infinities as null (strict JSON has no NaN): a model that
    diverged still gives output any JSON reader accepts."""
    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x
    return json.dumps(clean(obj), allow_nan=False)


def model_meta(model) -> dict:
    """What load_model needs to rebuild `model`: name, downsample, options, dtype."""
    return {"name": model.name, "downsample": model.downsample, "options": dict(model.options), "dtype": str(model.dtype)}


def load_model(path, device="cpu"):
    """Rebuild the model saved in a checkpoint (DIR/checkpoint.npz or DIR/last.npz) on `device`.

    Returns (model, meta). Raises checkpoint.CheckpointError for a bad file.
    """
    from minstn.models import build_model

    arrays, meta = checkpoint.load(path)
    info = meta.get("model")
    if not isinstance(info, dict) or "name" not in info:
        raise checkpoint.CheckpointError(f"{path!r} is a minstn checkpoint without a model description (not written by minstn.train)")
    model = build_model(info["name"], info["downsample"], dtype=info["dtype"], device=device, seed=0, **info["options"])
    model.load_state({k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")})
    return model, meta


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m minstn.evaluate",
        description="Per-digit, sequence and per-position error of a saved model on a data file.",
        allow_abbrev=False,
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint file written by minstn.train (DIR/checkpoint.npz)")
    p.add_argument("--data", required=True, help="a data file in the MNIST-sequence format (.npz with images and labels)")
    p.add_argument("--device", default="cpu", help="cpu, gpu or gpu:N (default: cpu)")
    p.add_argument("--batch-size", type=int, default=256, help="canvases per evaluation batch (default: 256)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return p


def main(argv=None) -> int:
    """Command line; returns 0, or 2 for bad options, files or devices (message on stderr)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    if args.batch_size < 1:
        print(f"{parser.prog}: error: --batch-size must be at least 1, got {args.batch_size}", file=sys.stderr)
        return 2
    from minstn.data import DataError, load_sequence_file
    from minstn.models import ModelError

    try:
        device = resolve_device(args.device)
        device.use()
        model, meta = load_model(args.checkpoint, device)
        data = load_sequence_file(args.data)
    except (DeviceError, checkpoint.CheckpointError, DataError, ModelError, OSError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    if data["labels"].shape[0] == 0:
        print(f"{parser.prog}: error: {args.data} holds 0 canvases; evaluate on a file with at least one "
              "(python -m minstn.data.generate --test N)", file=sys.stderr)
        return 2
    images = data["images"].astype(model.dtype, copy=False)
    stats = evaluate_model(model, images, data["labels"], batch_size=args.batch_size)
    out = {
        "checkpoint": args.checkpoint,
        "data": args.data,
        "model": model.name,
        "downsample": model.downsample,
        "epoch": meta.get("best_epoch", meta.get("epoch")),
        "n": stats["n"],
        "digit_error": stats["digit_error"],
        "seq_error": stats["seq_error"],
        "position_error": stats["position_error"],
        "loss": stats["loss"],
    }
    if args.json:
        print(json_dumps(out))
    else:
        print(f"{model.name} d={model.downsample} on {args.data} ({stats['n']} canvases)")
        print(f"  per-digit error   {stats['digit_error']:6.2f} %")
        print(f"  sequence error    {stats['seq_error']:6.2f} %")
        print("  per position      " + "  ".join(f"{e:5.2f}" for e in stats["position_error"]) + "  %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
