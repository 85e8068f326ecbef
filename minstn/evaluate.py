"""`python -m minstn.evaluate`: the error rates of a saved model on a data file.

    python -m minstn.evaluate --checkpoint runs/lstm-stn-d2/checkpoint.npz --data data/test.npz [--json]
    python -m minstn.evaluate --checkpoint runs/distorted-mnist-RTS-st-cnn/checkpoint.npz --data rts/test.npz

Prints the per-digit, sequence and per-position errors (minstn.training.metrics defines them), or
one JSON object (--json; NaN written as null). With --localisation (a model with a spatial
transformer, MNIST-sequence data) it also says where the glimpses fall against the digit boxes the
data file holds: how many digits each step sees whole, and the error among the digits seen whole
and among the rest (metrics.localisation_stats), which splits the error into missed digits and
misread ones. A model of the MNIST-sequence task reads a
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
from minstn.training.metrics import error_stats, json_dumps, load_model, localisation_stats, predict

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
    p.add_argument("--localisation", action="store_true", help="also where the glimpses fall against the digit boxes "
                   "of the data file, and the error among the digits each step saw whole and among the rest "
                   "(MNIST-sequence models with a spatial transformer)")
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
        if args.localisation and (digit or not model.transformer):     # before the data file is read
            raise ModelError(f"--localisation needs an MNIST-sequence model with a spatial transformer (ffn-stn or "
                             f"lstm-stn); {args.checkpoint} holds a {model.name!r} model. Leave --localisation out")
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
    logits = predict(model, images, batch_size=args.batch_size, digits=data["labels"].shape[1])   # (N, P, 10)
    stats = error_stats(logits, data["labels"])
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
    if args.localisation:
        thetas = model.attend(images, batch_size=args.batch_size)["thetas"]           # (N, T, 2, 3)
        out["localisation"] = localisation_stats(thetas, data["boxes"], images.shape[-1],
                                                 logits.argmax(axis=-1) != data["labels"])
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
    if args.localisation and not args.json:
        _print_localisation(out["localisation"])
    return 0


def _print_localisation(loc: dict) -> None:
    """The localisation_stats as a table: one column per position and one for all digits."""
    def cell(v, fmt="6.2f"):
        return f"{'-':>6}" if v is None else format(v, fmt)

    P = len(loc["in_view"])
    print("where the glimpses fall (the digits' ink boxes from the data file):")
    print(f"  {'position':<29}" + "".join(f"{p + 1:>8}" for p in range(P)) + f"{'all':>8}")
    for key, what in (("in_view", "digits seen whole %"), ("centred", "glimpse centre on the digit %"),
                      ("error_in_view", "error, digits seen whole %"), ("error_not_in_view", "error, the rest %")):
        print(f"  {what:<29}" + "".join(f"  {cell(v)}" for v in loc[key]) + f"  {cell(loc[key + '_all'])}")
    print(f"  {'digits not seen whole':<29}" + "".join(f"{n:>8}" for n in loc["n_not_in_view"])
          + f"{loc['n_not_in_view_all']:>8}")


if __name__ == "__main__":
    from minstn.training.console import run_cli
    run_cli(main)
