"""Reproduce the paper's Table I: `python -m minstn.reproduce --preset {paper,cpu} --out DIR`.

    python -m minstn.reproduce --preset cpu --out runs/table1-cpu              # about two hours on 2 cores
    python -m minstn.reproduce --preset paper --out runs/table1 --device gpu   # the paper's sizes
    python -m minstn.reproduce --preset cpu --out runs/t --dry-run             # print the plan only

The grid: LSTM-STN-CNN and FFN-STN-CNN at each d of the preset, and the CNN (Table I has it
only at d = 1, and it has no glimpse, so it runs once, as cnn-d1). Each run is
minstn.train.train in-process, into DIR/<model>-d<d>/. Runs with a result.json are skipped, runs
with a last.npz are continued (--resume), so the command can be repeated after an interruption.

Afterwards DIR holds:
    table1.md                 our test per-digit errors beside the paper's, sequence errors, images seen, time, device
    curves.png                validation (and training) per-digit error per epoch of every run
    glimpses-<run>.png        STN runs: test canvases with the glimpse outlines (one colour per step) and the glimpses
    theta-<run>.png           STN runs: theta spread, translations and scales per epoch

Presets (docs/training.md):
    paper   70,000 / 20,000 / 2,000 canvases, d = 1..4, up to 60 epochs, early stopping (patience 8),
            no time limit: meant for a GPU
    cpu     20,000 / 2,000 / 2,000 canvases, d = 2, a 36-minute budget per run (three runs: about
            two hours on two cores), otherwise the default settings
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time


from minstn import checkpoint
from minstn.backend import DeviceError, resolve_device
from minstn.config import MODEL_NAMES, ConfigError, TrainConfig
from minstn.train import EXIT_DIVERGED, EXIT_INTERRUPTED, TrainingDiverged, load_data, read_metrics, train

__all__ = ["PRESETS", "PAPER_TABLE", "plan_runs", "write_table", "make_figures", "main"]

PROG = "python -m minstn.reproduce"

#: Table I of the paper: test per-digit error (%) by (model, d)
PAPER_TABLE = {
    ("lstm-stn", 1): 1.7, ("lstm-stn", 2): 1.6, ("lstm-stn", 3): 1.8, ("lstm-stn", 4): 2.2,
    ("ffn-stn", 1): 3.7, ("ffn-stn", 2): 2.2, ("ffn-stn", 3): 2.9, ("ffn-stn", 4): 5.6,
    ("cnn", 1): 2.7,
}
MODEL_TITLES = {"lstm-stn": "LSTM-STN-CNN", "ffn-stn": "FFN-STN-CNN", "cnn": "CNN"}

#: each preset: TrainConfig settings shared by its runs, and the down-sampling factors
PRESETS = {
    "paper": {
        "description": "the paper's data sizes (70,000 / 20,000 / 2,000), d = 1..4, up to 60 epochs with "
                       "early stopping; meant for a GPU (--device gpu)",
        "downsample": (1, 2, 3, 4),
        "train": {"train_size": 70000, "val_size": 20000, "test_size": 2000, "epochs": 60, "patience": 8,
                  "batch_size": 64, "time_budget": 0.0},
    },
    "cpu": {
        "description": "20,000 training canvases (from training digits), 2,000 validation, 2,000 test; d = 2; "
                       "a 36-minute budget per run, so the three runs take about two hours on two cores",
        "downsample": (2,),
        "train": {"train_size": 20000, "val_size": 2000, "test_size": 2000, "epochs": 100, "patience": 8,
                  "batch_size": 64, "time_budget": 36.0},
    },
}


def plan_runs(preset: str, out: str, models=None, downsample=None, overrides=None) -> list:
    """The runs of a preset as [(name, TrainConfig)], name = '<model>-d<d>', in a fixed order."""
    spec = PRESETS[preset]
    models = list(models or MODEL_NAMES[::-1])           # lstm-stn, ffn-stn, cnn
    ds = list(downsample or spec["downsample"])
    settings = {**spec["train"], **(overrides or {})}
    runs = []
    for model in ("lstm-stn", "ffn-stn", "cnn"):
        if model not in models:
            continue
        for d in ([1] if model == "cnn" else ds):
            name = f"{model}-d{d}"
            cfg = TrainConfig(model=model, downsample=d, out=os.path.join(out, name), **settings)
            runs.append((name, cfg.validate()))
    return runs


def _status(cfg: TrainConfig) -> str:
    d = cfg.run_dir()
    if os.path.exists(os.path.join(d, "result.json")):
        return "done"
    if os.path.exists(os.path.join(d, "last.npz")):
        return "resume"
    return "new"


def _fmt_time(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def write_table(out: str, preset: str, results: dict) -> str:
    """DIR/table1.md from {run name: result dict} (result.json contents)."""
    lines = [f"# Table I, reproduced (preset `{preset}`)", "", PRESETS[preset]["description"] + ".", ""]
    lines += ["Test per-digit error (%), ours / the paper's. A dash: not run.", "",
              "| model | d=1 | d=2 | d=3 | d=4 |", "| --- | --- | --- | --- | --- |"]
    for model in ("lstm-stn", "ffn-stn", "cnn"):
        cells = []
        for d in (1, 2, 3, 4):
            paper = PAPER_TABLE.get((model, d))
            if paper is None:
                cells.append("")
                continue
            r = results.get(f"{model}-d{d}")
            ours = f"{r['test_digit_error']:.1f}" if r else "-"
            cells.append(f"{ours} / {paper}")
        lines.append(f"| {MODEL_TITLES[model]} | " + " | ".join(cells) + " |")
    lines += ["", "Every run:", "",
              "| run | test per-digit error % | paper % | test sequence error % | per position % | best epoch "
              "| epochs | images seen | train / val canvases | time | device | stopped because |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        paper = PAPER_TABLE.get((r["config"]["model"], r["downsample"]))
        lines.append(
            f"| {name} | {r['test_digit_error']:.2f} | {paper if paper is not None else ''} | {r['test_seq_error']:.2f} | "
            + " / ".join(f"{e:.1f}" for e in r["test_position_error"])
            + f" | {r['best_epoch']} | {r['epochs_completed']} | {r['images_seen']:,} | {r['train_size']:,} / {r['val_size']:,} "
            f"| {_fmt_time(r['elapsed'])} | {r['device']} | {r['stop_reason']} |"
        )
    lines += ["", "Paper: Feng, Chen, Sun, \"Long Short-Term Memory Spatial Transformer Network\", Table I. "
              "Settings of each run: DIR/<run>/config.json; curves: curves.png; attention: glimpses-*.png, theta-*.png.", ""]
    path = os.path.join(out, "table1.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def make_figures(out: str, runs: list, splits: dict, device, n_canvases: int = 4) -> list:
    """curves.png for all finished runs; glimpses-<run>.png and theta-<run>.png for STN runs."""
    from minstn.evaluate import load_model
    from minstn.plots import plot_curves, plot_glimpses, plot_theta_stats

    written = []
    curves = {}
    for name, cfg in runs:
        metrics = os.path.join(cfg.run_dir(), "metrics.jsonl")
        if os.path.exists(metrics):
            curves[name] = read_metrics(metrics)
    if curves:
        written.append(plot_curves(curves, os.path.join(out, "curves.png")))
    test = splits["test"]
    n = min(n_canvases, test["images"].shape[0])
    for name, cfg in runs:
        best = os.path.join(cfg.run_dir(), "checkpoint.npz")
        if cfg.model == "cnn" or not os.path.exists(best):
            continue
        model, meta = load_model(best, device)
        images = test["images"][:n].astype(model.dtype, copy=False)
        att = model.attend(images)
        preds = model.predict(images).argmax(axis=-1)
        title = f"{name}: best epoch {meta.get('best_epoch')}"
        written.append(plot_glimpses(images, att["thetas"], att["glimpses"], os.path.join(out, f"glimpses-{name}.png"),
                                     labels=test["labels"][:n], predictions=preds, title=title))
        written.append(plot_theta_stats(curves.get(name, []), os.path.join(out, f"theta-{name}.png"), title=name))
    return written


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Train the Table I grid and write table1.md and figures.",
                                allow_abbrev=False)
    p.add_argument("--preset", required=True, choices=sorted(PRESETS), help="data sizes, epochs and budget (see docs/training.md)")
    p.add_argument("--out", required=True, help="folder of the grid; each run goes to DIR/<model>-d<d>")
    p.add_argument("--models", nargs="+", choices=MODEL_NAMES, help="models to run (default: all three)")
    p.add_argument("--downsample", nargs="+", type=int, help="down-sampling factors of the STN runs (default: the preset's)")
    p.add_argument("--device", default="cpu", help="cpu, gpu or gpu:N (default: cpu)")
    p.add_argument("--time-budget", type=float, help="minutes per run (0 = no limit; default: the preset's)")
    p.add_argument("--epochs", type=int, help="maximum epochs per run (default: the preset's)")
    p.add_argument("--batch-size", type=int, help="canvases per step (default: the preset's, 64)")
    p.add_argument("--seed", type=int, help="training seed of every run (default 0)")
    p.add_argument("--data", help="folder with train.npz, val.npz, test.npz to use instead of generating")
    p.add_argument("--data-dir", help="MNIST IDX folder to generate the canvases from")
    p.add_argument("--cache-dir", help="folder for cached generated canvases")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--dry-run", action="store_true", help="print the planned runs and their settings, train nothing")
    return p


def main(argv=None) -> int:
    """Returns 0 when every run finished, 2 for bad options/data/device, 3 if a run diverged, 130 on Ctrl-C."""
    from minstn.data import DataError
    from minstn.models import ModelError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    overrides = {"device": args.device}
    for key in ("time_budget", "epochs", "batch_size", "seed", "data", "data_dir", "cache_dir"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.no_progress:
        overrides["progress"] = False
    try:
        runs = plan_runs(args.preset, args.out, args.models, args.downsample, overrides)
    except (ConfigError, TypeError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    defaults = TrainConfig().to_dict()
    print(f"preset {args.preset}: {PRESETS[args.preset]['description']}")
    for name, cfg in runs:
        changed = {k: v for k, v in cfg.to_dict().items() if v != defaults[k]}
        print(f"  {name:12s} [{_status(cfg)}]  {json.dumps(changed)}")
    if args.dry_run:
        return 0

    try:
        device = resolve_device(args.device)
        splits = load_data(runs[0][1])          # every run of a grid uses the same data
    except (DeviceError, DataError, ValueError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    results = {}
    t0 = time.perf_counter()
    for name, cfg in runs:
        result_path = os.path.join(cfg.run_dir(), "result.json")
        if os.path.exists(result_path):
            print(f"== {name}: already finished, skipped ({result_path})")
        else:
            cfg = dataclasses.replace(cfg, resume=_status(cfg) == "resume")
            print(f"== {name}: {'continuing' if cfg.resume else 'training'} into {cfg.run_dir()}", flush=True)
            try:
                train(cfg, splits)
            except KeyboardInterrupt:
                print(f"{PROG}: interrupted; run the same command again to continue", file=sys.stderr)
                return EXIT_INTERRUPTED
            except TrainingDiverged as e:
                print(f"{PROG}: run {name} diverged: {e}", file=sys.stderr)
                return EXIT_DIVERGED
            except (ConfigError, DeviceError, DataError, ModelError, checkpoint.CheckpointError) as e:
                print(f"{PROG}: error in run {name}: {e}", file=sys.stderr)
                return 2
        with open(result_path) as f:
            results[name] = json.load(f)
    table = write_table(args.out, args.preset, results)
    figures = make_figures(args.out, runs, splits, device)
    print(f"wrote {table} and {len(figures)} figures in {args.out} ({_fmt_time(time.perf_counter() - t0)})")
    with open(table) as f:
        print(f.read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
