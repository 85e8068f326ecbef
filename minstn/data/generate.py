"""Generate the MNIST-sequence data set into a folder.

    python -m minstn.data.generate --out DIR [--train 70000 --val 20000 --test 2000 --seed 0]
                                   [--data-dir MNIST_DIR] [--angle 45 --gap 2 --no-crop
                                    --noise-blocks 10 --noise-size 6 --noise-min-ink 6
                                    --val-start 20000] [--workers N]

Writes DIR/train.npz, DIR/val.npz, DIR/test.npz (the format of minstn.data.store: images
(N, 1, 100, 100) float32, labels (N, 4) int64, angles (N,) float32, boxes (N, 4, 4)
float32, and a JSON 'params' record) and DIR/params.json (all three records). One split is
generated and written at a time, so memory holds one split. Prints the time taken.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .mnist import DataError
from .sequences import SPLIT_IDS, SequenceOptions, generate_split, split_pool
from .store import mnist_record, save_sequence_file, split_record

_DEFAULTS = SequenceOptions()


def build_parser():
    p = argparse.ArgumentParser(prog="python -m minstn.data.generate",
                                description="Generate the MNIST-sequence data set (paper section IV).")
    p.add_argument("--out", required=True, help="folder to write train.npz, val.npz, test.npz, params.json")
    p.add_argument("--train", type=int, default=70000, help="training canvases (default 70000)")
    p.add_argument("--val", type=int, default=20000, help="validation canvases (default 20000)")
    p.add_argument("--test", type=int, default=2000, help="test canvases (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="random seed, int >= 0 (default 0)")
    p.add_argument("--data-dir", default=None,
                   help="MNIST folder (default: $MINSTN_DATA_DIR, then the per-user cache)")
    p.add_argument("--angle", type=float, default=_DEFAULTS.angle,
                   help=f"rotation drawn uniformly in [-ANGLE, ANGLE] degrees (default {_DEFAULTS.angle:g})")
    p.add_argument("--gap", type=int, default=_DEFAULTS.gap,
                   help=f"blank columns between neighbouring digits (default {_DEFAULTS.gap})")
    p.add_argument("--no-crop", dest="crop", action="store_false",
                   help="keep each digit's 28x28 cell instead of cutting it to its ink box")
    p.add_argument("--noise-blocks", type=int, default=_DEFAULTS.noise_blocks,
                   help=f"noise blocks per canvas (default {_DEFAULTS.noise_blocks})")
    p.add_argument("--noise-size", type=int, default=_DEFAULTS.noise_size,
                   help=f"side of a noise block in pixels (default {_DEFAULTS.noise_size})")
    p.add_argument("--noise-min-ink", type=int, default=_DEFAULTS.noise_min_ink,
                   help=f"ink pixels (>= 128 of 255) a noise block's source window needs (default {_DEFAULTS.noise_min_ink})")
    p.add_argument("--val-start", type=int, default=_DEFAULTS.val_start,
                   help=f"training digits [0, VAL_START) feed train, the rest feed val (default {_DEFAULTS.val_start})")
    p.add_argument("--workers", type=int, default=None,
                   help="threads generating blocks in parallel (default min(2, CPUs); the data do not depend on it)")
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        options = SequenceOptions(angle=args.angle, crop=args.crop, gap=args.gap, noise_blocks=args.noise_blocks,
                                  noise_size=args.noise_size, noise_min_ink=args.noise_min_ink,
                                  val_start=args.val_start)
    except ValueError as e:
        parser.error(str(e))
    sizes = {"train": args.train, "val": args.val, "test": args.test}
    for split, n in sizes.items():
        if n < 0:
            parser.error(f"--{split} must be >= 0, got {n}")
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    print(f"options: {json.dumps(options.to_dict())}, seed {args.seed}, sizes {sizes}", flush=True)
    os.makedirs(args.out, exist_ok=True)
    records = {}
    t_all = time.perf_counter()
    try:
        mnist = mnist_record(args.data_dir)
        for split in SPLIT_IDS:
            n = sizes[split]
            t0 = time.perf_counter()
            pool = split_pool(split, options, args.data_dir) if n > 0 else None
            d = generate_split(split, n, seed=args.seed, data_dir=args.data_dir, options=options, pool=pool,
                               workers=args.workers)
            t_gen = time.perf_counter() - t0
            records[split] = split_record(split, n, args.seed, options, mnist)
            path = os.path.join(args.out, f"{split}.npz")
            save_sequence_file(path, d, params=records[split])
            t_save = time.perf_counter() - t0 - t_gen
            print(f"{split}: {n} canvases generated in {t_gen:.1f} s, written to {path} in {t_save:.1f} s", flush=True)
            del d
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    with open(os.path.join(args.out, "params.json"), "w") as f:
        json.dump(records, f, indent=2, sort_keys=True)
    print(f"done in {time.perf_counter() - t_all:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
