"""Reproduce the paper's Table I (and the single-digit tables of the STN and TSTN papers) as grids of
independent, resumable cells: `python -m minstn.reproduce`.

    python -m minstn.reproduce --preset cpu --out ~/minstn-runs/table1-cpu        # every cell, in order
    python -m minstn.reproduce --preset cpu --out DIR --list                       # the cells, their state and progress
    python -m minstn.reproduce --preset cpu --out DIR --cells 'lstm-stn-d2-*'      # some cells
    python -m minstn.reproduce --preset cpu --out DIR --print-commands             # one shell command per cell
    python -m minstn.reproduce --preset cpu --out DIR --collect results/table1-cpu # copy finished cells' small files, write the table
    python -m minstn.reproduce --table results/table1-cpu [--readme README.md]    # the table from committed result files
    python -m minstn.reproduce --preset stn-paper --out ~/minstn-runs/stn-paper    # the STN paper's Table 1, distorted MNIST
    python -m minstn.reproduce --preset tstn --out ~/minstn-runs/tstn              # the TSTN paper's Table 3, cluttered MNIST
    python -m minstn.reproduce --preset tied --out ~/minstn-runs/tied              # the tied LSTM-STN; collect into results/tied

A cell is one training run, `DIR/<cell>/`, named <model>[-d<d>][-<variant>]-s<seed> (e.g.
lstm-stn-d2-s0, lstm-stn-d2-plain-s1, cnn-s2), or for a single-digit task
<model>[-<distortion>][-<variant>]-s<seed> (st-cnn-RTS-s0, st-cnn-P-proj-s0, tstn-untied-s1).
Every cell of a preset has the same image budget, so its result does not depend on the machine's
speed. A finished cell (result.json) is skipped,
an interrupted one is resumed, and a cell that another process is training (its folder's lock is
held) is left to that process: two commands started side by side share the grid between them
(e.g. one per core, each with --workers 1), and the grid can be run over several sittings.

Presets (docs/training.md):
    cpu        the Table I grid sized for a 2-core CPU: 20,000 / 2,000 / 2,000 canvases and 160,000
               training images (8 epochs) per cell; d = 1..4 with seed 0, and three seeds at d = 2 of
               the CNN, the FFN-STN, the LSTM-STN, the LSTM-STN with the paper's plain recurrence
               (step_spread 0) and one LSTM-STN trained on the fixed layout
    paper      the paper's sizes (70,000 / 20,000 / 2,000), d = 1..4, trained until the validation
               error stops improving (early stopping, patience 8); seed 0
    cells      the recurrent family at d = 2 (GRU, RNN), three seeds each, on the cpu preset's terms
    sonderby   Sønderby et al.'s data set and optimiser, seed 0
    stn-paper  the STN paper's Table 1 (affine rows) on distorted MNIST R, RTS, P, E and TC: fcn,
               mnist-cnn, st-fcn, st-cnn (three seeds of mnist-cnn and st-cnn, one of the others)
               and a projective st-cnn on P; 20,000 / 2,000 / 2,000 images, 160,000 per cell
    tstn       the TSTN paper's Table 3, architecture 1, on cluttered MNIST 60x60: tstn-cnn, the
               untied STN and the TSTN, three seeds each; 20,000 / 2,000 / 2,000 images,
               160,000 per cell
    tied       the tied LSTM-STN (d = 2, --tied) on the cpu preset's terms; its table shows the
               cpu grid's untied lstm-stn-d2 cells beside it (from ../table1-cpu)

The table (table1.md, or the preset's own file) is generated from the cells' result.json and
metrics.jsonl: the mean and standard deviation over seeds, the error on the shifted-layout test
set (MNIST-sequence cells), the images seen, whether validation was still improving at the end,
and the published number beside each cell.

This module is the command: training the cells in order, collecting their files, the figures.
The presets and cells are minstn.grid, the tables minstn.tables.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

from minstn.backend import DeviceError, resolve_device
from minstn.grid import PRESETS, cell_command, cell_options, cell_progress, cell_status, plan_cells
from minstn.tables import preset_cells, preset_of, read_cells, update_readme, write_table
from minstn.train import EXIT_DIVERGED
from minstn.training import checkpoint
from minstn.training.config import ConfigError, TrainConfig, add_verbosity, verbosity
from minstn.training.console import Console, exit_code, stop_signals
from minstn.training.loop import TrainingDiverged, load_data, train
from minstn.training.run import RunFolderBusy, RunFolderError, read_metrics, resume_config

__all__ = ["collect", "make_figures", "main"]

PROG = "python -m minstn.reproduce"
RESULT_FILES = ("config.json", "metrics.jsonl", "result.json")

def collect(runs: list, dest: str) -> list:
    """Copy config.json, metrics.jsonl and result.json of every finished cell into dest/<cell>/."""
    copied = []
    for cell, cfg in runs:
        src = cfg.run_dir()
        if not os.path.exists(os.path.join(src, "result.json")):
            continue
        os.makedirs(os.path.join(dest, cell.name), exist_ok=True)
        for name in RESULT_FILES:
            shutil.copyfile(os.path.join(src, name), os.path.join(dest, cell.name, name))
        copied.append(cell.name)
    return copied


def make_figures(out: str, runs: list, splits_of, device, n_canvases: int = 4) -> list:
    """curves.png for all finished cells; glimpses-<cell>.png and theta-<cell>.png for the cells
    with a spatial transformer, drawn on the first test images of the cell's data (splits_of(cfg)
    -> the cell's {'train', 'val', 'test', ...} splits); for single-digit cells also transforms.png,
    one row pair per seed-0 cell with a transformer: its first 6 test images and what the
    transformer makes of them (the STN paper's Table 1, right)."""
    from minstn.plots import draw_model_glimpses, model_outlines, plot_curves, plot_theta_stats, plot_transforms
    from minstn.training.metrics import load_model

    written = []
    rows = []              # transforms.png: the seed-0 single-digit cells with a transformer
    curves = {}
    for cell, cfg in runs:
        metrics = os.path.join(cfg.run_dir(), "metrics.jsonl")
        if os.path.exists(metrics):
            curves[cell.name] = read_metrics(metrics)
    if curves:
        written.append(plot_curves(curves, os.path.join(out, "curves.png")))
    for cell, cfg in runs:
        best = os.path.join(cfg.run_dir(), "checkpoint.npz")
        if not os.path.exists(best):
            continue
        model, meta = load_model(best, device)
        if not model.transformer:
            continue
        test = splits_of(cfg)["test"]
        n = min(n_canvases, test["images"].shape[0])
        title = f"{cell.name}: best epoch {meta.get('best_epoch')}"
        written.append(draw_model_glimpses(model, test["images"][:n], test["labels"][:n],
                                           os.path.join(out, f"glimpses-{cell.name}.png"), title=title))
        written.append(plot_theta_stats(curves.get(cell.name, []), os.path.join(out, f"theta-{cell.name}.png"), title=cell.name))
        if cell.digit_task and cell.seed == 0:
            images = test["images"][:6]
            att, corners, _ = model_outlines(model, images)
            rows.append({"name": cell.group, "images": images, "corners": corners[:, 0], "glimpses": att["glimpses"][:, 0]})
    if rows:
        n = min(r["images"].shape[0] for r in rows)          # a task whose test set holds fewer than 6 images
        rows = [{**r, "images": r["images"][:n], "corners": r["corners"][:n], "glimpses": r["glimpses"][:n]} for r in rows]
        written.append(plot_transforms(rows, os.path.join(out, "transforms.png"),
                                       title="the first test images of each task (above) and the transformer's output (below)"))
    return written


# --------------------------------------------------------------------------------------- the CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Train the cells of a grid (Table I, the STN paper's Table 1, the "
                                "TSTN paper's Table 3, ...); write its table and figures.",
                                allow_abbrev=False)
    p.add_argument("--preset", choices=sorted(PRESETS), help="the grid: its cells, data sizes and budget (docs/training.md)")
    p.add_argument("--out", help="folder of the grid's run folders; each cell trains in DIR/<cell>")
    p.add_argument("--cells", nargs="+", metavar="PATTERN", help="only the cells whose names match these shell patterns "
                   "(e.g. 'lstm-stn-d2-*' cnn-s0)")
    p.add_argument("--list", action="store_true", help="list the cells, their state (new, resume, running, done), the images each has seen and its test error; train nothing")
    p.add_argument("--print-commands", action="store_true", help="print one `python -m minstn.train` command per cell "
                   "(for a job scheduler); train nothing")
    p.add_argument("--collect", metavar="DEST", help="copy the small files of every finished cell into DEST/<cell>/ and "
                   "write the preset's table (DEST/table1.md, stn-paper.md, tstn.md, ...); train nothing")
    p.add_argument("--table", metavar="FOLDER", help="write the preset's table in FOLDER from the cells' result files in "
                   "FOLDER (and those the preset borrows); train nothing (with --readme, also the README's table)")
    p.add_argument("--readme", metavar="FILE", help="with --table: replace the generated table block of this README")
    p.add_argument("--figures", action="store_true", help="after training, draw curves.png, glimpses-*.png and theta-*.png in DIR")
    p.add_argument("--device", default="auto", help="auto, cpu, gpu or gpu:N (default: auto, a GPU when CuPy finds one)")
    p.add_argument("--workers", type=int, help="CPU worker processes per cell (default: the cores; at a given chunk the result does not depend on it)")
    p.add_argument("--data-dir", help="MNIST IDX folder to generate the canvases from")
    p.add_argument("--cache-dir", help="folder for cached generated canvases")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--dry-run", action="store_true", help="the same as --list")
    p.add_argument("--max-images", type=int, help="change every cell's image budget (for tests; default: the preset's)")
    p.add_argument("--train-size", type=int, help="change the training canvases (for tests; default: the preset's)")
    p.add_argument("--val-size", type=int, help="change the validation canvases (for tests)")
    p.add_argument("--test-size", type=int, help="change the test canvases (for tests)")
    p.add_argument("--batch-size", type=int, help="change the batch size (for tests)")
    p.add_argument("--data", help="folder with train.npz, val.npz, test.npz (and optionally shifted.npz) to use instead of "
                   "generating (for tests: every selected cell reads it)")
    add_verbosity(p)
    return p


def main(argv=None) -> int:
    """0 when every selected cell finished (or only listing), 2 for bad options/data/device, 3 if a
    cell diverged, 128 + the signal on Ctrl-C / SIGTERM / SIGHUP (rerun the same command to continue)."""
    from minstn.data import DataError
    from minstn.models import ModelError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)

    def fail(msg) -> int:
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 2

    if args.table:
        preset = args.preset or preset_of(args.table)
        if preset not in PRESETS:
            return fail(f"cannot tell the preset of {args.table!r}; pass --preset")
        if not read_cells(args.table):
            return fail(f"{args.table!r} holds no finished cell (no <cell>/result.json)")
        cells = preset_cells(args.table, preset)      # with the cells the preset borrows (as --collect and --readme)
        print(f"wrote {write_table(args.table, preset, cells)} ({len(cells)} cells)")
        if args.readme:
            try:
                changed = update_readme(args.readme, args.table, preset)
            except (OSError, ValueError) as e:
                return fail(e)
            print(f"{args.readme}: table {'updated' if changed else 'already up to date'}")
        return 0
    if not args.preset or not args.out:
        return fail("--preset and --out are required (or --table FOLDER)")
    overrides = {"device": args.device}
    for key in ("workers", "data_dir", "cache_dir", "max_images", "train_size", "val_size", "test_size", "batch_size", "data"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.no_progress:
        overrides["progress"] = False
    try:
        runs = plan_cells(args.preset, args.out, args.cells, overrides)
    except (ConfigError, TypeError) as e:
        return fail(e)
    if args.print_commands:
        for _, cfg in runs:
            print(cell_command(cfg))
        return 0
    if args.collect:
        copied = collect(runs, args.collect)
        if not copied:
            return fail(f"no finished cell in {args.out!r} to collect")
        print(f"copied {len(copied)} finished cells into {args.collect}: {', '.join(copied)}")
        print(f"wrote {write_table(args.collect, args.preset)}")
        return 0
    print(f"preset {args.preset}: {PRESETS[args.preset]['description']}")
    for cell, cfg in runs:
        progress = cell_progress(cfg)
        print(f"  {cell.name:24s} [{cell_status(cfg)}]" + (f"  {progress}" if progress else ""))
    if args.list or args.dry_run:
        return 0
    try:
        resolve_device(args.device)
    except DeviceError as e:
        return fail(e)
    with stop_signals():
        try:
            return _train_cells(runs, args)
        except KeyboardInterrupt as e:
            print(f"{PROG}: stopped; run the same command again to continue", file=sys.stderr)
            return exit_code(e)
        except TrainingDiverged as e:
            print(f"{PROG}: a cell diverged: {e}", file=sys.stderr)
            return EXIT_DIVERGED
        except (ConfigError, DeviceError, DataError, ModelError, checkpoint.CheckpointError, RunFolderError, ValueError) as e:
            return fail(e)


def _data_key(cfg: TrainConfig) -> tuple:
    return (cfg.data, cfg.data_dir, cfg.cache_dir, cfg.data_seed, cfg.train_size, cfg.val_size, cfg.test_size,
            cfg.layout, cfg.shifted_layout, cfg.task, cfg.distortion)


def _train_cells(runs: list, args) -> int:
    """Train the cells in order, skipping finished ones and ones another process is training."""
    os.makedirs(args.out, exist_ok=True)
    splits, key = None, None
    t0 = time.perf_counter()
    left = []
    for cell, cfg in runs:
        status = cell_status(cfg)
        if status in ("done", "running"):
            print(f"== {cell.name}: {'finished' if status == 'done' else 'being trained by another process'}, skipped",
                  flush=True)
            left += [cell.name] if status == "running" else []
            continue
        if _data_key(cfg) != key:          # the cells of a preset share their data, except a layout variant or another task
            splits, key = load_data(cfg), _data_key(cfg)
        if status == "resume":
            # the run's saved settings, as `python -m minstn.train <the cell's command> --resume` takes them (the
            # saved config holds the resolved model options where the cell's has None: the model's default)
            cfg = resume_config({**cell_options(cfg), "resume": True})
        print(f"== {cell.name}: {'continuing' if cfg.resume else 'training'} in {cfg.run_dir()}", flush=True)
        try:
            train(cfg, splits, console=Console(verbosity(vars(args)), progress=cfg.progress, log_every=cfg.log_every))
        except RunFolderBusy:
            print(f"== {cell.name}: another process took it, skipped", flush=True)
            left.append(cell.name)
    print(f"{PROG}: done in {_fmt_time(time.perf_counter() - t0)}"
          + (f"; still being trained elsewhere: {', '.join(left)}" if left else ""))
    if args.figures:                          # also when every cell had finished before (splits is None)
        last = {key: splits} if splits is not None else {}   # one data set in memory at a time (read from the cache again)

        def splits_of(cfg):
            if _data_key(cfg) not in last:
                last.clear()
                last[_data_key(cfg)] = load_data(cfg)
            return last[_data_key(cfg)]

        figures = make_figures(args.out, runs, splits_of, resolve_device(args.device))
        print(f"wrote {len(figures)} figures in {args.out}")
    return 0




def _fmt_time(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


if __name__ == "__main__":
    from minstn.training.console import run_cli
    run_cli(main)
