"""`python -m minstn.evaluate`: the error rates of a saved model on a data file.

    python -m minstn.evaluate --checkpoint runs/lstm-stn-d2/checkpoint.npz --data data/test.npz [--json]
    python -m minstn.evaluate --checkpoint runs/distorted-mnist-RTS-st-cnn/checkpoint.npz --data rts/test.npz

Prints the per-digit, sequence and per-position errors (minstn.training.metrics defines them), or
one JSON object (--json; NaN written as null). A model of the MNIST-sequence task reads a
sequence file (minstn.data.store); a single-digit model (fcn, mnist-cnn, st-fcn, st-cnn, tstn,
tstn-cnn) reads a single-digit file of its image size (minstn.data.tasks; `python -m
minstn.data.generate --task ...` writes them), and prints its one error per image. Exit codes:
0, or 2 for bad options, files or devices (one line on stderr).
"""
from __future__ import annotations

import argparse
import sys

from minstn.backend import DeviceError, resolve_device
from minstn.training import checkpoint
from minstn.training.config import add_verbosity
from minstn.training.metrics import evaluate_model, json_dumps, load_model

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m minstn.evaluate",
        description="Per-digit, sequence and per-position error of a saved model on a data file.",
        allow_abbrev=False,
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint file written by minstn.train (DIR/checkpoint.npz)")
    p.add_argument("--data", required=True, help="a data file of the model's task (.npz from python -m minstn.data.generate: "
                   "MNIST-sequence canvases, or single-digit images for the single-digit models)")
    p.add_argument("--device", default="cpu", help="cpu, gpu or gpu:N (default: cpu)")
    p.add_argument("--batch-size", type=int, default=256, help="canvases per evaluation batch (default: 256)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    add_verbosity(p)
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
    from minstn.data import DataError, load_digit_file, load_sequence_file
    from minstn.models import ModelError

    try:
        device = resolve_device(args.device)
        device.use()
        model, meta = load_model(args.checkpoint, device)
        cfg = meta.get("config", {})
        digit = "image_size" in model.options                  # a single-digit model: one digit per image
        data = load_digit_file(args.data, side=model.image_side) if digit else load_sequence_file(args.data)
    except (DeviceError, checkpoint.CheckpointError, DataError, ModelError, OSError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    noun = "images" if digit else "canvases"
    if data["labels"].shape[0] == 0:
        print(f"{parser.prog}: error: {args.data} holds 0 {noun}; evaluate on a file with at least one "
              "(python -m minstn.data.generate --test N)", file=sys.stderr)
        return 2
    images = data["images"].astype(model.dtype, copy=False)
    stats = evaluate_model(model, images, data["labels"], batch_size=args.batch_size)
    out = {
        "checkpoint": args.checkpoint,
        "data": args.data,
        "model": model.name,
        "downsample": model.downsample,
        "task": cfg.get("task", "mnist-sequence"),
        "distortion": cfg.get("distortion"),
        "epoch": meta.get("best_epoch", meta.get("epoch")),
        "n": stats["n"],
        "digit_error": stats["digit_error"],
        "seq_error": stats["seq_error"],
        "position_error": stats["position_error"],
        "loss": stats["loss"],
    }
    if args.json:
        print(json_dumps(out))
    elif digit:
        what = " ".join(x for x in (model.name, model.options.get("transform"), f"({out['task']}"
                                    + (f" {out['distortion']})" if out["distortion"] else ")")) if x)
        print(f"{what} on {args.data} ({stats['n']} images of {model.image_side}x{model.image_side})")
        print(f"  error             {stats['digit_error']:6.2f} %")
    else:
        print(f"{model.name} d={model.downsample} on {args.data} ({stats['n']} canvases)")
        print(f"  per-digit error   {stats['digit_error']:6.2f} %")
        print(f"  sequence error    {stats['seq_error']:6.2f} %")
        print("  per position      " + "  ".join(f"{e:5.2f}" for e in stats["position_error"]) + "  %")
    return 0


if __name__ == "__main__":
    from minstn.training.console import run_cli
    run_cli(main)
