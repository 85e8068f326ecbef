"""Draw a grid of MNIST-sequence canvases with their labels and digit boxes.

    python -m minstn.data.preview --out docs/preview.png [--n 16] [--seed 0] [--split train]
                                  [--data FILE.npz] [--data-dir MNIST_DIR]

Without --data the canvases are generated (split --split, seed --seed, default options);
with --data the first n canvases of that file are drawn. Each panel's title is its four
labels in reading order; box colours follow the digit position (1st red, 2nd orange,
3rd green, 4th blue).

Shape legend:
    n     canvases drawn (panels in the grid)
    100   canvas side
"""
from __future__ import annotations

import argparse
import math
import os
import sys


from minstn.fileio import atomic_open

from .mnist import DataError
from .sequences import SPLIT_IDS, SequenceOptions, generate_split
from .store import load_sequence_file

POSITION_COLOURS = ("tab:red", "tab:orange", "tab:green", "tab:blue")


def draw_grid(images, labels, boxes, path, title=None):
    """Save a grid of canvases to ``path``.

    images (n, 1, 100, 100) float32, labels (n, 4) int, boxes (n, 4, 4) (x0, y0, x1, y1)
    end-exclusive pixel edges; a box is drawn around the pixels it covers.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    n = len(images)
    if n == 0:
        raise ValueError("draw_grid: nothing to draw (0 canvases)")
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.15 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(images[i, 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        for k in range(boxes.shape[1]):
            x0, y0, x1, y1 = boxes[i, k]
            # pixel j covers [j - 0.5, j + 0.5] in imshow coordinates
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                                   edgecolor=POSITION_COLOURS[k % 4], linewidth=1.0))
        ax.set_title(" ".join(str(int(v)) for v in labels[i]), fontsize=10)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_open(path, suffix=".png") as f:
        fig.savefig(f, dpi=80, format="png")
    plt.close(fig)


def build_parser():
    p = argparse.ArgumentParser(prog="python -m minstn.data.preview", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--n", type=int, default=16, help="number of canvases (default 16)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0; ignored with --data)")
    p.add_argument("--split", choices=list(SPLIT_IDS), default="train",
                   help="split to generate from (default train; ignored with --data)")
    p.add_argument("--data", default=None, help="draw from this sequence file (.npz) instead of generating")
    p.add_argument("--data-dir", default=None,
                   help="MNIST folder (default: $MINSTN_DATA_DIR, then the per-user cache)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    prog = "python -m minstn.data.preview"
    if args.n < 1:
        print(f"{prog}: error: --n must be >= 1, got {args.n}", file=sys.stderr)
        return 2
    if args.out.endswith(os.sep) or os.path.isdir(args.out) or not os.path.basename(args.out).lower().endswith(".png"):
        print(f"{prog}: error: --out must name a .png file (e.g. docs/preview.png), got {args.out!r}", file=sys.stderr)
        return 2
    try:
        if args.data:
            d = load_sequence_file(args.data)
            if len(d["labels"]) == 0:
                raise DataError(f"{args.data}: holds 0 canvases; nothing to draw")
            d = {k: v[: args.n] for k, v in d.items()}
            title = f"{os.path.basename(args.data)}: first {len(d['labels'])} canvases"
        else:
            d = generate_split(args.split, args.n, seed=args.seed, data_dir=args.data_dir)
            title = f"MNIST sequences, split {args.split}, seed {args.seed}, default options {SequenceOptions().to_dict()}"
    except (DataError, ValueError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    draw_grid(d["images"], d["labels"], d["boxes"], args.out)
    if not args.quiet:
        print(f"wrote {args.out} ({len(d['labels'])} canvases; {title})")
    return 0


if __name__ == "__main__":
    from minstn.training.console import run_cli
    run_cli(main)
