"""Generate the MNIST-sequence data set, or a single-digit task's, into a folder.

    python -m minstn.data.generate --out DIR [--train 70000 --val 20000 --test 2000 --shifted 2000 --seed 0]
                                   [--data-dir MNIST_DIR] [--layout varied|fixed|cells|sonderby] [--angle 45
                                    --gap 2 --gap-max 10 --no-crop --digits 4 --slant 0 --noise-blocks 10
                                    --noise-size 6 --noise-min-ink 6 --noise-combine max --val-start 20000]
                                   [--workers N] [-q]
    python -m minstn.data.generate --out DIR --task distorted-mnist --distortion R|RTS|P|E|TC
                                   [--train N --val N --test N --seed 0 --data-dir MNIST_DIR --val-start 20000
                                    --workers N -q]
    python -m minstn.data.generate --out DIR --task cluttered-mnist [the same options]

Writes DIR/train.npz, DIR/val.npz, DIR/test.npz (the format of minstn.data.store: images
(N, 1, 100, 100) float32, labels (N, K) int64, angles (N,) float32, boxes (N, K, 4) float32,
and a JSON 'params' record), DIR/shifted.npz with --shifted N (N canvases from the test digits
placed as in --shifted-layout, default cells, with every other option as the splits': the second
test set of docs/data.md, the same as the trainer makes) and
DIR/params.json (every record). One split is generated and written at a time, so memory holds
one split. Every option is checked, and every split's layout tried, before anything is written;
an error is one line on stderr and exit code 2.

With --task distorted-mnist (and --distortion) or --task cluttered-mnist the files hold single
digits (the format of minstn.data.tasks: images (N, 1, S, S) float32 with S = 28, 42 or 60,
labels (N, 1) int64, and the JSON 'params' record), made with the task's settings
(minstn.data.distorted.TASK_OPTIONS): with the same sizes, seed and MNIST files they are the
images the trainer generates and caches for `python -m minstn.train --task ...`, so a model's
`python -m minstn.evaluate` on DIR/test.npz gives its result.json's test error. The options of
the MNIST-sequence canvases (--layout, --shifted, --shifted-layout, --angle, --gap, --gap-max,
--no-crop, --digits, --slant, --noise-*) are errors with a single-digit task; --val-start is
both tasks' (where the validation digits start).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from minstn.fileio import atomic_write_bytes

from . import distorted, tasks
from .mnist import DataError
from .sequences import LAYOUTS, SPLIT_IDS, SequenceOptions, generate_split, split_pool
from .store import mnist_record, save_sequence_file, split_record

PROG = "python -m minstn.data.generate"
_DEFAULTS = SequenceOptions()


def build_parser():
    p = argparse.ArgumentParser(prog=PROG, description="Generate the MNIST-sequence data set (paper section IV), or "
                                "distorted or cluttered single-digit MNIST (--task).")
    p.add_argument("--out", required=True, help="folder to write train.npz, val.npz, test.npz, params.json")
    p.add_argument("--task", choices=tasks.TASKS, default=tasks.SEQUENCE_TASK,
                   help="mnist-sequence (the canvases, default), distorted-mnist (one distorted digit, --distortion) "
                        "or cluttered-mnist (one digit in 60x60 clutter); docs/data.md")
    p.add_argument("--distortion", choices=distorted.DISTORTIONS, default=None,
                   help="--task distorted-mnist: R (rotated, 28x28), RTS (rotated, translated, scaled, 42x42), "
                        "P (projective, 28x28), E (elastic, 28x28) or TC (translated, cluttered, 60x60)")
    p.add_argument("--train", type=int, default=70000, help="training canvases (default 70000)")
    p.add_argument("--val", type=int, default=20000, help="validation canvases (default 20000)")
    p.add_argument("--test", type=int, default=2000, help="test canvases (default 2000)")
    p.add_argument("--shifted", type=int, default=None, help="canvases of the shifted-layout test set, shifted.npz (default 0: none)")
    p.add_argument("--shifted-layout", choices=list(LAYOUTS), default=None, help="layout of shifted.npz (default cells)")
    p.add_argument("--seed", type=int, default=0, help="random seed, int >= 0 (default 0)")
    p.add_argument("--data-dir", default=None,
                   help="MNIST folder (default: $MINSTN_DATA_DIR, then the per-user cache)")
    p.add_argument("--layout", choices=list(LAYOUTS), default=None,
                   help="where the digits go (docs/data.md): varied (gaps of 2..10, default), fixed (gaps of 2), "
                        "cells (28x28 cells), sonderby (three upright digits on a slanted line, eight 9x9 noise "
                        "blocks added); the options below change it further")
    p.add_argument("--angle", type=float, default=None,
                   help=f"rotation drawn uniformly in [-ANGLE, ANGLE] degrees (default: the layout's, else {_DEFAULTS.angle:g})")
    p.add_argument("--gap", type=int, default=None, help="the smallest blank gap between neighbouring digits (default: the layout's)")
    p.add_argument("--gap-max", type=int, default=None, help="the widest gap; each gap is drawn from GAP..GAP_MAX (default: the layout's)")
    p.add_argument("--no-crop", dest="crop", action="store_false", default=None,
                   help="keep each digit's 28x28 cell instead of cutting it to its ink box")
    p.add_argument("--digits", type=int, default=None,
                   help=f"digits per canvas, 1..8 (default: the layout's, else {_DEFAULTS.digits})")
    p.add_argument("--slant", type=float, default=None,
                   help="upright digits on a line of slope drawn in [-SLANT, SLANT] (default: the layout's, else 0)")
    p.add_argument("--noise-blocks", type=int, default=None,
                   help=f"noise blocks per canvas (default: the layout's, else {_DEFAULTS.noise_blocks})")
    p.add_argument("--noise-size", type=int, default=None,
                   help=f"side of a noise block in pixels (default: the layout's, else {_DEFAULTS.noise_size})")
    p.add_argument("--noise-min-ink", type=int, default=None,
                   help=f"ink pixels (>= 128 of 255) a noise block's source window needs (default {_DEFAULTS.noise_min_ink})")
    p.add_argument("--noise-combine", choices=("max", "add"), default=None,
                   help="a noise block meets the canvas by max (never erases ink) or add (clipped to [0, 1]) "
                        f"(default: the layout's, else {_DEFAULTS.noise_combine})")
    p.add_argument("--val-start", type=int, default=_DEFAULTS.val_start,
                   help=f"training digits [0, VAL_START) feed train, the rest feed val (default {_DEFAULTS.val_start}; "
                        "both tasks)")
    p.add_argument("--workers", type=int, default=None,
                   help="threads generating blocks in parallel (default min(2, CPUs); the data do not depend on it)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    return p


#: the flags of the MNIST-sequence canvases (argparse dest -> flag), errors with a single-digit task
SEQUENCE_FLAGS = {"layout": "--layout", "shifted": "--shifted", "shifted_layout": "--shifted-layout", "angle": "--angle",
                  "gap": "--gap", "gap_max": "--gap-max", "crop": "--no-crop", "digits": "--digits", "slant": "--slant",
                  "noise_blocks": "--noise-blocks", "noise_size": "--noise-size", "noise_min_ink": "--noise-min-ink",
                  "noise_combine": "--noise-combine"}


def _options(args) -> tuple:
    """(options of the three splits, options of shifted.npz) from the arguments; ValueError if bad."""
    given = {k: getattr(args, k) for k in ("angle", "digits", "slant", "noise_blocks", "noise_size",
                                           "noise_min_ink", "noise_combine", "val_start")}
    layout = dict(LAYOUTS[args.layout or "varied"])
    layout.update({k: v for k, v in given.items() if v is not None})
    if args.gap is not None:
        layout["gap"] = args.gap
        if args.gap_max is None and layout["gap_max"] is not None and layout["gap_max"] < args.gap:
            layout["gap_max"] = None
    if args.gap_max is not None:
        layout["gap_max"] = args.gap_max
    if args.crop is not None:
        layout["crop"] = args.crop
    options = SequenceOptions.from_kwargs(**layout)
    return options, options.with_placement(args.shifted_layout or "cells")   # the shifted set: only the placement differs


def _task_problem(args) -> str | None:
    """What is wrong with --task, --distortion and the sequence flags together, or None."""
    if args.task == "distorted-mnist" and args.distortion is None:
        return f"--task distorted-mnist needs --distortion, one of {', '.join(distorted.DISTORTIONS)}"
    if args.task != "distorted-mnist" and args.distortion is not None:
        return f"--distortion applies to --task distorted-mnist only, not to --task {args.task}"
    if args.task != tasks.SEQUENCE_TASK:
        given = [flag for dest, flag in SEQUENCE_FLAGS.items() if getattr(args, dest) is not None]
        if given:
            return (f"{given[0]} is an option of the MNIST-sequence canvases (--task {tasks.SEQUENCE_TASK}); "
                    f"leave it out with --task {args.task}")
    return None


def _generate_digits(args, sizes, say, fail) -> int:
    """The single-digit task's files: DIR/{train,val,test}.npz (minstn.data.tasks) and DIR/params.json."""
    key = tasks.generator_task(args.task, args.distortion)

    def make(split, n, **kw):
        if key == distorted.CLUTTERED:
            return distorted.generate_cluttered(split, n, **kw)
        return distorted.generate_distorted(split, n, key, **kw)

    try:
        options = distorted.DistortionOptions.for_task(key, val_start=args.val_start)
        mnist = mnist_record(args.data_dir)
        for split, n in sizes.items():   # a few images of every split first: an empty pool fails here
            if n > 0:
                make(split, min(n, 64), seed=args.seed, data_dir=args.data_dir, options=options, workers=1)
    except (DataError, ValueError) as e:
        return fail(e)
    name = f"{args.task}" + (f" {args.distortion}" if args.distortion else "")
    say(f"{name}: options {json.dumps(options.to_dict())}, seed {args.seed}, sizes {sizes}")

    def make_split(split, n):
        pool = distorted.digit_pool(split, options, args.data_dir) if n > 0 else None
        d = make(split, n, seed=args.seed, data_dir=args.data_dir, options=options, pool=pool, workers=args.workers)
        arrays = {"images": d["images"], "labels": d["labels"]}
        return arrays, tasks.digit_record(key, split, n, args.seed, options, mnist), tasks.save_digit_file

    return _write_splits(args.out, sizes, "images", make_split, say, fail)


def _write_splits(out, sizes, noun, make_split, say, fail) -> int:
    """Every split of `sizes`, in order: make_split(split, n) -> (arrays, record, save), then
    save(out/<split>.npz, arrays, params=record); then out/params.json holds the records. One split
    is in memory at a time. Returns the exit code."""
    records, t_all = {}, time.perf_counter()
    try:
        for split, n in sizes.items():
            t0 = time.perf_counter()
            arrays, records[split], save = make_split(split, n)
            t_gen = time.perf_counter() - t0
            path = os.path.join(out, f"{split}.npz")
            save(path, arrays, params=records[split])
            say(f"{split}: {n} {noun} generated in {t_gen:.1f} s, written to {path} in "
                f"{time.perf_counter() - t0 - t_gen:.1f} s")
            del arrays
    except (DataError, OSError) as e:
        return fail(e)
    atomic_write_bytes(os.path.join(out, "params.json"), json.dumps(records, indent=2, sort_keys=True).encode())
    say(f"done in {time.perf_counter() - t_all:.1f} s")
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)

    def fail(msg):
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 2

    say = (lambda *a, **k: None) if args.quiet else (lambda msg: print(msg, flush=True))
    problem = _task_problem(args)
    if problem:
        return fail(problem)
    digit = args.task != tasks.SEQUENCE_TASK
    if not digit:
        try:
            options, shifted_options = _options(args)
        except ValueError as e:
            return fail(e)
    sizes = {"train": args.train, "val": args.val, "test": args.test}
    if not digit:
        sizes["shifted"] = args.shifted or 0
    for split, n in sizes.items():
        if n < 0:
            return fail(f"--{split} must be >= 0, got {n}")
    if args.seed < 0:
        return fail(f"--seed must be >= 0, got {args.seed}")
    if args.workers is not None and args.workers < 1:
        return fail(f"--workers must be >= 1, got {args.workers}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        return fail(f"--out {args.out!r} is a file, not a folder")
    if digit:
        return _generate_digits(args, sizes, say, fail)
    split_options = {**{s: options for s in SPLIT_IDS}, "shifted": shifted_options}
    try:
        mnist = mnist_record(args.data_dir)
        for split in sizes:   # a few canvases of every split first: an impossible layout fails here
            if sizes[split] > 0:
                generate_split(split, min(sizes[split], 64), seed=args.seed, data_dir=args.data_dir,
                               options=split_options[split], workers=1)
    except (DataError, ValueError) as e:
        return fail(e)
    say(f"options: {json.dumps(options.to_dict())}, seed {args.seed}, sizes {sizes}")

    def make_split(split, n):
        pool = split_pool(split, split_options[split], args.data_dir) if n > 0 else None
        d = generate_split(split, n, seed=args.seed, data_dir=args.data_dir, options=split_options[split],
                           pool=pool, workers=args.workers)
        return d, split_record(split, n, args.seed, split_options[split], mnist), save_sequence_file

    written = {split: n for split, n in sizes.items() if split != "shifted" or n > 0}   # no empty shifted file
    return _write_splits(args.out, written, "canvases", make_split, say, fail)


if __name__ == "__main__":
    from minstn.training.console import run_cli
    run_cli(main)
