"""`python -m minstn.glimpses`: where a trained spatial transformer looks, as a picture.

    python -m minstn.glimpses --checkpoint runs/quick/checkpoint.npz --out glimpses.png
    python -m minstn.glimpses --checkpoint runs/x/checkpoint.npz --data data/test.npz --n 6 --first 100
    python -m minstn.glimpses --checkpoint runs/distorted-mnist-RTS-st-cnn/checkpoint.npz --out rts.png

Draws a row per image: the image with the outline of each glimpse (one colour per step, in the
order the LSTM-STN reads them), then the glimpses themselves as the classifier sees them, titled
with the true and the predicted digits. Every model with a spatial transformer works: ffn-stn and
lstm-stn on MNIST-sequence canvases, st-fcn, st-cnn and tstn on their single-digit task's images.
Without --data the images are generated: the test split (data seed 0) of the run's task, with
the layout (MNIST sequences) or the distortion (distorted MNIST) the model was trained on.

The outline of a glimpse is where its sampling grid's corners fall in the image (the image of
the target square [-1, 1]^2 under theta). For a projective transformer (--transform projective)
the four corners go through the homography: where its denominator w = g x + h y + 1 is positive
at all four corners it is positive on the whole square (w is affine), and the square's image is
then the convex quadrilateral through the four mapped corners, which is drawn. Otherwise the grid
crosses the horizon (w = 0) and the region has no finite outline: the affine part alone is
outlined and the figure's title says so. (The models bound g and h so that w >= 0.1: the second
case is for hand-made thetas.) Exit codes: 0, or 2 for bad options, files or devices (one line
on stderr).
"""
from __future__ import annotations

import argparse
import os
import sys

from minstn.plots import draw_model_glimpses

PROG = "python -m minstn.glimpses"
#: how the command names a model that has no spatial transformer
NO_TRANSFORMER = {"cnn": "a CNN", "mnist-cnn": "a CNN (mnist-cnn)", "tstn-cnn": "a CNN (tstn-cnn)", "fcn": "an FCN"}
STN_MODELS = "ffn-stn, lstm-stn, st-fcn, st-cnn or tstn"

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=f"Draw the glimpses of a trained {STN_MODELS} model.",
                                allow_abbrev=False)
    p.add_argument("--checkpoint", required=True, help="checkpoint written by minstn.train (DIR/checkpoint.npz or DIR/last.npz)")
    p.add_argument("--out", required=True, help="the PNG file to write")
    p.add_argument("--data", help="a data file (.npz from python -m minstn.data.generate, of the model's task) to draw "
                                  "images from (default: generated test images of the model's task)")
    p.add_argument("--data-dir", help="MNIST folder, to generate images (default: $MINSTN_DATA_DIR or the cache)")
    p.add_argument("--n", type=int, default=4, help="images to draw (default 4)")
    p.add_argument("--first", type=int, default=0, help="index of the first image (default 0)")
    p.add_argument("--device", default="cpu", help="cpu, gpu or gpu:N (default cpu)")
    return p


def _images(args, model, meta) -> dict:
    """{'images', 'labels'} of the images to draw: from --data, else the model's task's test split."""
    from minstn import data as mdata
    from minstn.data import tasks

    cfg = meta.get("config", {})
    task = cfg.get("task") or tasks.SEQUENCE_TASK
    digit = task != tasks.SEQUENCE_TASK
    if args.data:
        d = mdata.load_digit_file(args.data, side=model.image_side) if digit else mdata.load_sequence_file(args.data)
    elif digit:
        key, n, seed = tasks.generator_task(task, cfg.get("distortion")), args.first + args.n, cfg.get("data_seed", 0)
        if key == mdata.CLUTTERED:
            d = mdata.generate_cluttered("test", n, seed=seed, data_dir=args.data_dir)
        else:
            d = mdata.generate_distorted("test", n, key, seed=seed, data_dir=args.data_dir)
    else:
        layout = cfg.get("layout") or "varied"
        d = mdata.generate_split("test", args.first + args.n, seed=cfg.get("data_seed", 0), data_dir=args.data_dir,
                                 options=mdata.SequenceOptions.for_layout(layout))
    n = d["labels"].shape[0]
    if args.first + args.n > n:
        raise mdata.DataError(f"{args.data}: holds {n} {'images' if digit else 'canvases'}, fewer than --first "
                              f"{args.first} + --n {args.n}")
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
        if not model.transformer:
            return fail(f"{args.checkpoint} holds {NO_TRANSFORMER.get(model.name, model.name)}, which has no spatial "
                        f"transformer and so no glimpses; give an {STN_MODELS} checkpoint")
        d = _images(args, model, meta)
        cfg = meta.get("config", {})
        if model.name in ("ffn-stn", "lstm-stn"):
            what = f"{model.name} d={model.downsample}"
        else:
            what = " ".join(x for x in (model.name, model.options.get("transform"), cfg.get("distortion")) if x)
        draw_model_glimpses(model, d["images"], d["labels"], args.out, f"{what}, {os.path.basename(args.checkpoint)}")
    except (DeviceError, DataError, ModelError, CheckpointError, OSError, ValueError) as e:
        return fail(e)
    wrong = int((model.predict(d["images"].astype(model.dtype)).argmax(-1) != d["labels"]).sum())
    noun = "canvases" if model.name in ("ffn-stn", "lstm-stn") else "images"
    print(f"wrote {args.out}: {args.n} {noun}, {wrong} of {d['labels'].size} digits wrong")
    print(where_it_looks(model, d["images"]))
    return 0


def where_it_looks(model, images) -> str:
    """One line per step: the mean glimpse centre and size over `images`, and how many glimpses lie
    wholly beside the image (minstn.training.metrics.off_canvas: they read only zero padding)."""
    from minstn.training.metrics import attention_stats

    stats = attention_stats(model, images.astype(model.dtype))
    n = images.shape[0]
    return "\n".join(f"step {t + 1}: mean glimpse centre tx {s['tx']:+.2f} ty {s['ty']:+.2f}, size sx {s['sx']:+.2f} "
                     f"sy {s['sy']:+.2f}; off the image: {round(off * n)} of {n}"
                     for t, (s, off) in enumerate(zip(stats["theta_steps"], stats["theta_off_canvas"])))


if __name__ == "__main__":
    from minstn.training.console import run_cli
    run_cli(main)
