"""`python -m minstn.glimpses`: where a trained spatial transformer looks, as a picture.

    python -m minstn.glimpses --checkpoint runs/quick/checkpoint.npz --out glimpses.png
    python -m minstn.glimpses --checkpoint runs/x/checkpoint.npz --data data/test.npz --n 6 --first 100

Draws a row per canvas: the canvas with the outline of each glimpse (one colour per step, in the
order the LSTM-STN reads them), then the glimpses themselves as the classifier sees them, titled
with the true and the predicted digits. Without --data the canvases are generated: the test
split (data seed 0) with the layout the model was trained on. Exit codes: 0, or 2 for bad
options, files or devices (one line on stderr).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

PROG = "python -m minstn.glimpses"

__all__ = ["draw", "main"]


def draw(model, images, labels, path: str, title: str = "") -> str:
    """The glimpse picture of `model` (an STN model) on host canvases images (N, 1, 100, 100) and
    labels (N, 4); written atomically to `path`. Returns the path."""
    from minstn.plots import plot_glimpses

    images = images.astype(model.dtype, copy=False)
    att = model.attend(images)
    predictions = model.predict(images).argmax(axis=-1)                      # (N, 4)
    return plot_glimpses(images, att["thetas"], att["glimpses"], path, labels=labels, predictions=predictions,
                         title=title)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Draw the glimpses of a trained FFN-STN or LSTM-STN.",
                                allow_abbrev=False)
    p.add_argument("--checkpoint", required=True, help="checkpoint written by minstn.train (DIR/checkpoint.npz or DIR/last.npz)")
    p.add_argument("--out", required=True, help="the PNG file to write")
    p.add_argument("--data", help="a data file (.npz from python -m minstn.data.generate) to draw canvases from "
                                  "(default: generated test canvases)")
    p.add_argument("--data-dir", help="MNIST folder, to generate canvases (default: $MINSTN_DATA_DIR or the cache)")
    p.add_argument("--n", type=int, default=4, help="canvases to draw (default 4)")
    p.add_argument("--first", type=int, default=0, help="index of the first canvas (default 0)")
    p.add_argument("--device", default="cpu", help="cpu, gpu or gpu:N (default cpu)")
    return p


def _canvases(args, meta) -> dict:
    from minstn import data as mdata

    if args.data:
        d = mdata.load_sequence_file(args.data)
    else:
        cfg = meta.get("config", {})
        layout = cfg.get("layout") or "varied"
        d = mdata.generate_split("test", args.first + args.n, seed=cfg.get("data_seed", 0), data_dir=args.data_dir,
                                 options=mdata.SequenceOptions.for_layout(layout))
    n = d["labels"].shape[0]
    if args.first + args.n > n:
        raise mdata.DataError(f"{args.data}: holds {n} canvases, fewer than --first {args.first} + --n {args.n}")
    return {k: d[k][args.first:args.first + args.n] for k in ("images", "labels")}


def main(argv=None) -> int:
    from minstn.backend import DeviceError, resolve_device
    from minstn.data import DataError
    from minstn.models import ModelError
    from minstn.training.checkpoint import CheckpointError
    from minstn.training.metrics import load_model

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)

    def fail(msg) -> int:
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 2

    if args.n < 1 or args.first < 0:
        return fail(f"--n must be >= 1 and --first >= 0, got --n {args.n} --first {args.first}")
    if not args.out.lower().endswith(".png") or os.path.isdir(args.out):
        return fail(f"--out must name a .png file, got {args.out!r}")
    try:
        model, meta = load_model(args.checkpoint, resolve_device(args.device))
        if model.name == "cnn":
            return fail(f"{args.checkpoint} holds a CNN, which has no spatial transformer and so no glimpses; "
                        "give an ffn-stn or lstm-stn checkpoint")
        d = _canvases(args, meta)
        title = f"{model.name} d={model.downsample}, {os.path.basename(args.checkpoint)}"
        draw(model, d["images"], d["labels"], args.out, title)
    except (DeviceError, DataError, ModelError, CheckpointError, OSError, ValueError) as e:
        return fail(e)
    wrong = int((model.predict(d["images"].astype(model.dtype)).argmax(-1) != d["labels"]).sum())
    print(f"wrote {args.out}: {args.n} canvases, {wrong} of {d['labels'].size} digits wrong")
    return 0


if __name__ == "__main__":
    sys.exit(main())
