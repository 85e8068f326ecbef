"""Reproduce the paper's Table I (and the single-digit tables of the STN and TSTN papers) as grids of
independent, resumable cells: `python -m minstn.reproduce`.

    python -m minstn.reproduce --preset cpu --out ~/minstn-runs/table1-cpu        # every cell, in order
    python -m minstn.reproduce --preset cpu --out DIR --list                       # the cells and their state
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
"""
from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import math
import os
import shutil
import sys
import time

from minstn.training import checkpoint
from minstn.backend import DeviceError, resolve_device
from minstn.training.config import SEQUENCE_TASK, ConfigError, TrainConfig, add_verbosity, verbosity
from minstn.training.console import Console
from minstn.fileio import atomic_write_bytes
from minstn.training.console import exit_code, stop_signals
from minstn.training.run import RunFolderBusy, RunFolderError, is_locked, read_metrics, resume_config
from minstn.train import EXIT_DIVERGED
from minstn.training.loop import TrainingDiverged, load_data, train

__all__ = ["PRESETS", "PAPER_TABLE", "Cell", "plan_cells", "cell_command", "write_table", "table_markdown",
           "collect", "update_readme", "make_figures", "main"]

PROG = "python -m minstn.reproduce"
RESULT_FILES = ("config.json", "metrics.jsonl", "result.json")

#: Table I of the paper: test per-digit error (%) by (model, d)
PAPER_TABLE = {
    ("lstm-stn", 1): 1.7, ("lstm-stn", 2): 1.6, ("lstm-stn", 3): 1.8, ("lstm-stn", 4): 2.2,
    ("ffn-stn", 1): 3.7, ("ffn-stn", 2): 2.2, ("ffn-stn", 3): 2.9, ("ffn-stn", 4): 5.6,
    ("cnn", 1): 2.7,
}
MODEL_TITLES = {"lstm-stn": "LSTM-STN-CNN", "ffn-stn": "FFN-STN-CNN", "cnn": "CNN"}
TITLES = {"cpu": "Table I on a CPU", "paper": "Table I at the paper's sizes", "cells": "The recurrent family",
          "sonderby": "Sønderby et al.'s benchmark", "stn-paper": "The STN paper's Table 1 (distorted MNIST) on a CPU",
          "tstn": "The TSTN paper's Table 3 (cluttered MNIST, architecture 1) on a CPU",
          "tied": "The tied LSTM-STN beside the untied one"}
#: variants: a name and the TrainConfig settings that make it, beside the defaults
VARIANTS = {
    "": ("the defaults", {}),
    "plain": ("the paper's plain recurrence: no per-step theta bias (--step-spread 0)", {"step_spread": 0.0}),
    "fixed": ("trained on the fixed layout (--layout fixed: every gap 2 columns)", {"layout": "fixed"}),
    "gru": ("a GRU drives the transformer (--cell gru)", {"cell": "gru"}),
    "rnn": ("a plain tanh RNN drives the transformer (--cell rnn)", {"cell": "rnn"}),
    "w96": ("96 filters in each classifier conv layer (--cls-filters 96), Sønderby et al.'s feed-forward width",
            {"cls_filters": 96}),
    "tied": ("the tied LSTM-STN (--tied): the localisation net's conv blocks 1-3 are the classifier's convs",
             {"tied": True}),
    "proj": ("a projective transformer (--transform projective: a homography, 8 parameters)", {"transform": "projective"}),
    "untied": ("the TSTN's untied STN (--no-tied): the localisation CNN has convs of its own", {"tied": False}),
}
#: the variants of the single-digit tasks (the others are the MNIST-sequence task's)
DIGIT_VARIANTS = ("proj", "untied")
#: Sønderby et al. 2015, per-digit error (%) on their data set, by (model, variant)
SONDERBY_TABLE = {("lstm-stn", "gru"): 1.5, ("ffn-stn", ""): 2.0, ("ffn-stn", "w96"): 2.0, ("cnn", ""): 2.9}
#: Jaderberg et al., Spatial Transformer Networks, Table 1: per-image test error (%) by (model, distortion),
#: the affine rows (the CNN is this project's 'mnist-cnn'); TC is translated and cluttered 60x60
STN_DISTORTIONS = ("R", "RTS", "P", "E", "TC")
STN_TABLE = {
    **{("fcn", t): e for t, e in zip(STN_DISTORTIONS, (2.1, 5.2, 3.1, 3.2, 13.2))},
    **{("mnist-cnn", t): e for t, e in zip(STN_DISTORTIONS, (1.2, 0.8, 1.5, 1.4, 3.5))},
    **{("st-fcn", t): e for t, e in zip(STN_DISTORTIONS, (1.2, 0.8, 1.5, 2.7, 2.0))},
    **{("st-cnn", t): e for t, e in zip(STN_DISTORTIONS, (0.7, 0.5, 0.8, 1.2, 1.7))},
}
STN_TITLES = {"fcn": "FCN", "mnist-cnn": "CNN", "st-fcn": "ST-FCN", "st-cnn": "ST-CNN"}
#: Cirstea and Likforman-Sulem, Tied Spatial Transformer Networks, Table 3, architecture 1: test error (%)
#: on cluttered MNIST 60x60, by (model, variant)
TSTN_TABLE = {("tstn-cnn", ""): 4.44, ("tstn", "untied"): 4.33, ("tstn", ""): 3.14}
TSTN_TITLES = {("tstn-cnn", ""): "classification CNN only", ("tstn", "untied"): "untied STN", ("tstn", ""): "TSTN"}
PUBLISHED_COLUMNS = {"paper": "paper %", "sonderby": "Sønderby et al. %", "stn": "STN paper %", "tstn": "TSTN paper %"}


def readme_markers(preset: str) -> tuple:
    """The lines around a preset's generated table in the README."""
    return (f"<!-- results:{preset}:begin (generated by `python -m minstn.reproduce --table FOLDER --preset {preset} "
            "--readme README.md`; do not edit) -->", f"<!-- results:{preset}:end -->")


@dataclasses.dataclass(frozen=True)
class Cell:
    """One cell of the grid: a model, a d, a seed, a variant (VARIANTS) and the task (with its
    distortion for distorted-mnist). A single-digit cell's d is the TrainConfig default and is
    never given: its models do not down-sample, and `python -m minstn.train` refuses --downsample
    with a single-digit task."""

    model: str
    downsample: int
    seed: int
    variant: str = ""
    task: str = SEQUENCE_TASK
    distortion: str | None = None

    @property
    def digit_task(self) -> bool:
        """True for the single-digit tasks (distorted-mnist, cluttered-mnist)."""
        return self.task != SEQUENCE_TASK

    @property
    def group(self) -> str:
        """The cell's name without the seed: its row in the table (seeds are averaged)."""
        if self.digit_task:
            name = f"{self.model}-{self.distortion}" if self.distortion else self.model
        else:
            name = self.model if self.model == "cnn" else f"{self.model}-d{self.downsample}"
        return f"{name}-{self.variant}" if self.variant else name

    @property
    def name(self) -> str:
        return f"{self.group}-s{self.seed}"

    def settings(self) -> dict:
        """TrainConfig settings of the cell, beyond the preset's shared ones."""
        if self.digit_task:
            return {"task": self.task, "distortion": self.distortion, "model": self.model, "seed": self.seed,
                    **VARIANTS[self.variant][1]}
        return {"model": self.model, "downsample": self.downsample, "seed": self.seed, **VARIANTS[self.variant][1]}


def _digit_cell(model: str, seed: int, variant: str = "", distortion: str | None = None) -> Cell:
    """A cell of a single-digit task: distorted-mnist with a distortion, else cluttered-mnist."""
    task = "distorted-mnist" if distortion else "cluttered-mnist"
    return Cell(model, TrainConfig.downsample, seed, variant, task, distortion)


def _cpu_cells() -> list:
    cells = []
    for seed in (0, 1, 2):   # d = 2: three seeds of each model, and of the two ablations
        cells += [Cell("lstm-stn", 2, seed), Cell("lstm-stn", 2, seed, "plain"), Cell("ffn-stn", 2, seed), Cell("cnn", 1, seed)]
    cells += [Cell("lstm-stn", d, 0) for d in (1, 3, 4)] + [Cell("ffn-stn", d, 0) for d in (1, 3, 4)]
    cells.append(Cell("lstm-stn", 2, 0, "fixed"))
    return cells


_CPU_TRAIN = {"train_size": 20000, "val_size": 2000, "test_size": 2000, "epochs": 100, "max_images": 160_000,
              "patience": 8, "batch_size": 64, "chunk": 32, "time_budget": 0.0}
#: the single-digit presets: the cpu preset's sizes and budget (docs/training.md says why)
_DIGIT_TRAIN = dict(_CPU_TRAIN)


def _stn_paper_cells() -> list:
    """Seed 0 of every row first (the whole table, one seed), then seeds 1 and 2 of the CNN and the ST-CNN."""
    cells = [_digit_cell(m, 0, distortion=t) for t in STN_DISTORTIONS for m in ("fcn", "st-fcn", "mnist-cnn", "st-cnn")]
    cells.append(_digit_cell("st-cnn", 0, "proj", "P"))
    cells += [_digit_cell(m, s, distortion=t) for s in (1, 2) for t in STN_DISTORTIONS for m in ("mnist-cnn", "st-cnn")]
    return cells

#: each preset: a description, the settings its cells share, its cells, the file its table goes to,
#: the published numbers its table shows ('paper': Table I; 'sonderby': Sønderby et al.; 'stn': STN_TABLE;
#: 'tstn': TSTN_TABLE) and the presets whose finished cells its table borrows from their folders (the same
#: cell is never run twice)
PRESETS = {
    "cpu": {
        "description": "20,000 training canvases (from training digits 0..19,999), 2,000 validation and 2,000 test "
                       "canvases, varied layout; every cell trains on 160,000 images (8 epochs, batch 64, chunks of "
                       "32), then its best checkpoint by validation error is tested, also on 2,000 shifted-layout "
                       "canvases",
        "train": _CPU_TRAIN,
        "cells": _cpu_cells(),
        "table": "table1.md", "published": "paper",
    },
    "cells": {
        "description": "the recurrent family at d = 2 on the cpu preset's data and budget (160,000 training images "
                       "per cell): the LSTM-STN's LSTM (the cpu preset's cells) against a GRU and a plain RNN, "
                       "three seeds each",
        "train": _CPU_TRAIN,
        "cells": [Cell("lstm-stn", 2, s, v) for v in ("gru", "rnn") for s in (0, 1, 2)],
        "table": "cells.md", "published": None, "borrow": {"lstm-stn-d2": "table1-cpu"},
    },
    "sonderby": {
        "description": "Sønderby et al.'s data set as this generator makes it (3 upright digits on a slanted line, "
                       "eight 9x9 noise blocks added; 20,000 / 2,000 / 2,000 canvases) and their optimiser (RMSprop "
                       "5e-4, each gradient clipped to [-1, 1], the norm to 5), 160,000 training images per cell",
        "train": {**_CPU_TRAIN, "layout": "sonderby", "optimizer": "rmsprop", "lr": 5e-4, "loc_lr_mult": 1.0,
                  "clip_value": 1.0, "clip_norm": 5.0},
        "cells": [Cell("lstm-stn", 2, 0, "gru"), Cell("ffn-stn", 2, 0), Cell("ffn-stn", 2, 0, "w96"), Cell("cnn", 1, 0)],
        "table": "sonderby.md", "published": "sonderby",
    },
    "paper": {
        "description": "the paper's sizes, 70,000 / 20,000 / 2,000 canvases, varied layout; each cell trains until "
                       "the validation error has not improved for 8 epochs (at most 100 epochs), batch 64, chunks "
                       "of 32",
        "train": {"train_size": 70000, "val_size": 20000, "test_size": 2000, "epochs": 100, "max_images": 0,
                  "patience": 8, "batch_size": 64, "chunk": 32, "time_budget": 0.0},
        "cells": [Cell("lstm-stn", d, 0) for d in (1, 2, 3, 4)] + [Cell("ffn-stn", d, 0) for d in (1, 2, 3, 4)]
                 + [Cell("cnn", 1, 0), Cell("lstm-stn", 2, 0, "plain")],
        "table": "table1.md", "published": "paper",
    },
    "stn-paper": {
        "description": "The STN paper's Table 1 (affine rows) on distorted MNIST R, RTS, P, E (28x28, RTS 42x42) and "
                       "TC (60x60): per task 20,000 training images (from training digits 0..19,999), 2,000 "
                       "validation and 2,000 test images; every cell trains on 160,000 images (8 epochs, batch 64, "
                       "chunks of 32), then its best checkpoint by validation error is tested; FCN and ST-FCN one "
                       "seed, CNN and ST-CNN three seeds, and an ST-CNN with a projective transformer on P",
        "train": _DIGIT_TRAIN,
        "cells": _stn_paper_cells(),
        "table": "stn-paper.md", "published": "stn",
    },
    "tstn": {
        "description": "The TSTN paper's architecture 1 on cluttered MNIST 60x60 (one digit, six 8x8 clutter "
                       "patches): 20,000 training images (from training digits 0..19,999), 2,000 validation and "
                       "2,000 test images; the classification CNN alone, the untied STN and the TSTN, three seeds "
                       "each; every cell trains on 160,000 images (8 epochs, batch 64, chunks of 32), then its best "
                       "checkpoint by validation error is tested",
        "train": _DIGIT_TRAIN,
        "cells": [_digit_cell(m, s, v) for s in (0, 1, 2) for m, v in (("tstn-cnn", ""), ("tstn", "untied"), ("tstn", ""))],
        "table": "tstn.md", "published": "tstn",
    },
    "tied": {
        "description": "The tied LSTM-STN (d = 2, --tied: the localisation net's conv blocks 1-3 are the classifier's "
                       "convs) on the cpu preset's data and budget (160,000 training images), beside the cpu grid's "
                       "untied LSTM-STN d = 2 cells",
        "train": _CPU_TRAIN,
        "cells": [Cell("lstm-stn", 2, 0, "tied")],
        "table": "tied.md", "published": None, "borrow": {"lstm-stn-d2": "table1-cpu"},
    },
}


def plan_cells(preset: str, out: str, patterns=None, overrides=None) -> list:
    """The cells of a preset as [(Cell, TrainConfig)], in the preset's order, those matching any of
    `patterns` (shell patterns on the cell name; None = all). ConfigError if a pattern matches none."""
    spec = PRESETS[preset]
    cells = spec["cells"]
    if patterns:
        for pattern in patterns:
            if not any(fnmatch.fnmatchcase(c.name, pattern) for c in cells):
                raise ConfigError(f"--cells {pattern!r} matches no cell of preset {preset!r}; "
                                  f"its cells: {', '.join(c.name for c in cells)}")
        cells = [c for c in cells if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]
    settings = {**spec["train"], **(overrides or {})}
    return [(c, TrainConfig(**{**settings, **c.settings(), "out": os.path.join(out, c.name)}).validate()) for c in cells]


def cell_status(cfg: TrainConfig) -> str:
    """'done' (result.json), 'running' (another process holds its lock), 'resume' (last.npz) or 'new'."""
    d = cfg.run_dir()
    if os.path.exists(os.path.join(d, "result.json")):
        return "done"
    if is_locked(d):
        return "running"
    if os.path.exists(os.path.join(d, "last.npz")):
        return "resume"
    return "new"


def cell_options(cfg: TrainConfig) -> dict:
    """{field: value} of the options that cell_command gives `python -m minstn.train`: every setting
    that differs from the TrainConfig default, and always the model, the seed and (MNIST-sequence
    task only: a single-digit task refuses it) d."""
    defaults = TrainConfig()
    always = ("model", "downsample", "seed") if cfg.task == SEQUENCE_TASK else ("model", "seed")
    given = {}
    for f in dataclasses.fields(TrainConfig):
        value = getattr(cfg, f.name)
        if f.name == "resume" or (value == getattr(defaults, f.name) and f.name not in always):
            continue
        if f.name == "downsample" and cfg.task != SEQUENCE_TASK:
            continue
        given[f.name] = value
    return given


def cell_command(cfg: TrainConfig) -> str:
    """The `python -m minstn.train ...` command that runs one cell on its own (add --resume to continue it)."""
    args = []
    for name, value in cell_options(cfg).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + name.replace("_", "-"))
        else:
            args.append(f"{flag} {_shell_quote(str(value))}")
    return "python -m minstn.train " + " ".join(args)


def _shell_quote(s: str) -> str:
    import shlex
    return shlex.quote(s)


# ------------------------------------------------------------------------------------- the table


def _mean_sd(values: list) -> tuple:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return mean, sd


def _fmt(values: list, digits: int = 1) -> str:
    if not values:
        return "-"
    mean, sd = _mean_sd(values)
    return f"{mean:.{digits}f}" if len(values) == 1 else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def _still_improving(metrics: list) -> bool:
    """True when the last complete epoch was the best one so far (validation per-digit error)."""
    done = [m for m in metrics if not m.get("partial")] or metrics
    if not done:
        return False
    best = min(m["val_digit_error"] for m in done)
    return done[-1]["val_digit_error"] <= best


STUCK_ERROR = 80.0   # a cell whose validation per-digit error never fell below this did not learn (chance: 90%)


def _stuck_lines(groups: dict) -> list:
    """A note naming the cells that did not learn (validation error never below STUCK_ERROR), with
    their mean theta at the last epoch (where the transformer looked), or no lines."""
    stuck = []
    for members in groups.values():
        for name, cell in members:
            done = [m for m in cell["metrics"] if not m.get("partial")]
            if not done or min(m["val_digit_error"] for m in done) < STUCK_ERROR:
                continue
            steps = done[-1].get("theta_steps") or []
            where = "; ".join(" ".join(f"{k} {s[k]:+.2f}" for k in ("tx", "ty", "sx", "sy") if k in s) for s in steps)
            stuck.append(f"{name} (best validation error {min(m['val_digit_error'] for m in done):.1f}%"
                         + (f"; mean theta at the last epoch: {where}" if where else "") + ")")
    if not stuck:
        return []
    return ["", f"Cells that did not learn (validation per-digit error never below {STUCK_ERROR:.0f}%; chance is 90%), "
            "counted in the means above: " + ", ".join(stuck) + ". A glimpse that lies wholly beside the canvas "
            "(its centre tx, ty beyond ±1 by more than its half-size sx, sy) samples only the zero padding, so no "
            "gradient reaches the transformer to bring it back."]


def preset_cells(folder: str, preset: str) -> dict:
    """The finished cells of a preset's table: those in `folder`, and those its preset borrows
    from sibling folders (e.g. the recurrent family's LSTM rows from ../table1-cpu)."""
    cells = read_cells(folder)
    for group, sibling in PRESETS[preset].get("borrow", {}).items():
        other = read_cells(os.path.join(os.path.dirname(os.path.abspath(folder)), sibling))
        cells.update({name: c for name, c in other.items() if _group_of(name) == group})
    return dict(sorted(cells.items()))


def read_cells(folder: str) -> dict:
    """{cell name: {'result': dict, 'metrics': list}} of every finished cell in `folder`."""
    cells = {}
    if not os.path.isdir(folder):
        return cells
    for name in sorted(os.listdir(folder)):
        result_path = os.path.join(folder, name, "result.json")
        if os.path.isfile(result_path):
            with open(result_path) as f:
                result = json.load(f)
            metrics_path = os.path.join(folder, name, "metrics.jsonl")
            cells[name] = {"result": result, "metrics": read_metrics(metrics_path) if os.path.exists(metrics_path) else []}
    return cells


def _group_of(name: str) -> str:
    return name.rsplit("-s", 1)[0]


def is_digit_preset(preset: str) -> bool:
    """True when every cell of the preset is a single-digit task (one digit per image, no shifted set)."""
    return all(c.digit_task for c in PRESETS[preset]["cells"])


def _published_digit(result: dict, variant: str, published: str | None):
    """The published number of a single-digit cell group, or None."""
    cfg = result.get("config", {})
    if published == "stn" and not variant:
        return STN_TABLE.get((result["model"], cfg.get("distortion")))
    if published == "tstn":
        return TSTN_TABLE.get((result["model"], variant))
    return None


def _digit_table(groups: dict, preset: str) -> list:
    """The lines of a single-digit preset's tables: one error per image (no digit positions, no
    shifted-layout set), the parameter count, and the published numbers."""
    published = PRESETS[preset].get("published")
    lines = []
    if published == "stn":
        lines += ["Test error (%) on 2,000 test images of each task: the mean ± standard deviation over seeds (one "
                  "seed where no ± is shown), beside the STN paper's Table 1 (its affine rows; its projective rows are "
                  "not in the text at hand, so the projective ST-CNN has no published number here). A dash: not run.", "",
                  "| model | " + " | ".join(STN_DISTORTIONS) + " |", "| --- |" + " --- |" * len(STN_DISTORTIONS)]
        for model, title in STN_TITLES.items():
            row = [f"{_fmt([c['result']['test_digit_error'] for _, c in groups.get(f'{model}-{t}', [])])} "
                   f"(paper {STN_TABLE[(model, t)]})" for t in STN_DISTORTIONS]
            lines.append(f"| {title} | " + " | ".join(row) + " |")
        proj = [_fmt([c["result"]["test_digit_error"] for _, c in groups.get(f"st-cnn-{t}-proj", [])])
                if any(c.group == f"st-cnn-{t}-proj" for c in PRESETS[preset]["cells"]) else "" for t in STN_DISTORTIONS]
        lines += [f"| ST-CNN, projective | " + " | ".join(proj) + " |", ""]
    elif published == "tstn":
        lines += ["Test error (%) on 2,000 test images: the mean ± standard deviation over seeds (one seed where no ± "
                  "is shown), beside the TSTN paper's Table 3 (architecture 1). A dash: not run.", "",
                  "| model | test % | TSTN paper % |", "| --- | --- | --- |"]
        for (model, variant), title in TSTN_TITLES.items():
            group = f"{model}-{variant}" if variant else model
            errors = [c["result"]["test_digit_error"] for _, c in groups.get(group, [])]
            lines.append(f"| {title} (`{group}`) | {_fmt(errors, 2)} | {TSTN_TABLE[(model, variant)]} |")
        lines.append("")
    column = PUBLISHED_COLUMNS.get(published, "published %")
    lines += ["Every group of cells: test error (%), mean ± sd over the seeds; 'still improving': seeds whose last "
              "epoch had the best validation error.", "",
              f"| cells | seeds | test % | parameters | images seen | still improving | {column} |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    order = {g: i for i, g in enumerate(_group_order(preset))}
    for group in sorted(groups, key=lambda g: (order.get(g, len(order)), g)):
        members = groups[group]
        results = [c["result"] for _, c in members]
        variant = group.rsplit("-", 1)[-1] if group.rsplit("-", 1)[-1] in VARIANTS else ""
        number = _published_digit(results[0], variant, published)
        params = sorted({r["num_params"] for r in results if "num_params" in r})
        lines.append(
            f"| {group} | {', '.join(name.rsplit('-s', 1)[1] for name, _ in members)} "
            f"| {_fmt([r['test_digit_error'] for r in results], 2)} | {', '.join(f'{p:,}' for p in params)} "
            f"| {', '.join(f'{i:,}' for i in sorted({r['images_seen'] for r in results}))} "
            f"| {sum(_still_improving(c['metrics']) for _, c in members)} of {len(members)} "
            f"| {number if number is not None else ''} |")
    return lines + _stuck_lines(groups)


def table_markdown(cells: dict, preset: str) -> str:
    """The results tables (markdown) of finished cells {name: {'result', 'metrics'}}: for the
    MNIST-sequence presets per-digit, sequence, per-position and shifted-layout errors; for the
    single-digit presets (is_digit_preset) one error per image and the parameter count."""
    groups = {}
    for name, cell in cells.items():
        groups.setdefault(_group_of(name), []).append((name, cell))
    if is_digit_preset(preset):
        return "\n".join(_digit_table(groups, preset)) + "\n"
    published = PRESETS[preset].get("published")
    lines = []
    if published == "paper":
        lines += ["Test per-digit error (%) on 2,000 test canvases: the mean ± standard deviation over seeds (one seed "
                  "where no ± is shown), beside the paper's Table I. A dash: not run.", "",
                  "| model | no transformer | d=1 | d=2 | d=3 | d=4 |", "| --- | --- | --- | --- | --- | --- |"]
        for model in ("lstm-stn", "ffn-stn", "cnn"):
            row = []
            for d in (None, 1, 2, 3, 4):        # the CNN has no transformer, so no d: a column of its own
                if (model == "cnn") != (d is None):
                    row.append("")
                    continue
                paper = PAPER_TABLE[(model, d or 1)]
                group = "cnn" if model == "cnn" else f"{model}-d{d}"
                errors = [c["result"]["test_digit_error"] for _, c in groups.get(group, [])]
                row.append(f"{_fmt(errors)} (paper {paper})")
            lines.append(f"| {MODEL_TITLES[model]} | " + " | ".join(row) + " |")
        lines.append("")
    column = PUBLISHED_COLUMNS.get(published, "published %")
    lines += ["Every group of cells: test and shifted-layout per-digit error (%), mean ± sd over the seeds; "
              "the shifted set is 2,000 canvases from the test digits with the digits in 28x28 cells (a placement no "
              "model trained on); 'train % (last epoch)': the per-digit error on the training batches of the last "
              "epoch, dropout on (where it is far below the test error, the model fits its training canvases "
              "rather than generalising); 'still improving': seeds whose last epoch had the best validation error.", "",
              "| cells | seeds | test % | shifted % | shifted / test | test sequence % | per position % "
              f"| train % (last epoch) | images seen | still improving | {column} |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    order = {g: i for i, g in enumerate(_group_order(preset))}
    for group in sorted(groups, key=lambda g: (order.get(g, len(order)), g)):
        members = groups[group]
        results = [c["result"] for _, c in members]
        test = [r["test_digit_error"] for r in results]
        shifted = [r["shifted_digit_error"] for r in results if "shifted_digit_error" in r]
        ratio = (f"{_mean_sd(shifted)[0] / _mean_sd(test)[0]:.2f}" if shifted and _mean_sd(test)[0] > 0 else "-")
        P = len(results[0]["test_position_error"])
        positions = [sum(r["test_position_error"][p] for r in results) / len(results) for p in range(P)]
        images = sorted({r["images_seen"] for r in results})
        improving = sum(_still_improving(c["metrics"]) for _, c in members)
        train = [c["metrics"][-1]["train_digit_error"] for _, c in members
                 if c["metrics"] and "train_digit_error" in c["metrics"][-1]]
        r0 = results[0]
        variant = group.rsplit("-", 1)[-1] if group.rsplit("-", 1)[-1] in VARIANTS else ""
        number = (PAPER_TABLE.get((r0["model"], r0["downsample"])) if published == "paper" and not variant
                  else SONDERBY_TABLE.get((r0["model"], variant)) if published == "sonderby" else None)
        lines.append(
            f"| {group} | {', '.join(name.rsplit('-s', 1)[1] for name, _ in members)} | {_fmt(test, 2)} | {_fmt(shifted, 2)} "
            f"| {ratio} | {_fmt([r['test_seq_error'] for r in results])} | {' / '.join(f'{p:.1f}' for p in positions)} "
            f"| {_fmt(train)} | {', '.join(f'{i:,}' for i in images)} | {improving} of {len(members)} | {number if number is not None else ''} |")
    return "\n".join(lines + _stuck_lines(groups)) + "\n"


def _group_order(preset: str) -> list:
    seen = []
    for c in PRESETS.get(preset, {"cells": []})["cells"]:
        if c.group not in seen:
            seen.append(c.group)
    return seen


def write_table(folder: str, preset: str, cells: dict | None = None) -> str:
    """folder/<the preset's table file> from its finished cells (preset_cells, or `cells`); returns its path."""
    cells = preset_cells(folder, preset) if cells is None else cells
    digit = is_digit_preset(preset)
    # the variants of the preset's task: the MNIST-sequence ones, or those the single-digit preset's cells use
    used = {c.variant for c in PRESETS[preset]["cells"]}
    variants = [f"`-{v}`: {desc}" for v, (desc, _) in VARIANTS.items()
                if v and ((v in used) if digit else v not in DIGIT_VARIANTS)]
    if digit:
        names = "Cell names: <model>[-<distortion>][-variant]-s<seed>" + ("; " if variants else "")
        per_cell = ["", "Every cell:", "",
                    "| cell | test % | best epoch | epochs | images seen | parameters | stopped because |",
                    "| --- | --- | --- | --- | --- | --- | --- |"]
        for name, c in cells.items():
            r = c["result"]
            per_cell.append(f"| {name} | {r['test_digit_error']:.2f} | {r['best_epoch']} | {r['epochs_completed']} "
                            f"| {r['images_seen']:,} | {r.get('num_params', 0):,} | {r['stop_reason']} |")
    else:
        names = "Cell names: <model>-d<d>[-variant]-s<seed>; "
        per_cell = ["", "Every cell:", "",
                    "| cell | test % | shifted % | test sequence % | best epoch | epochs | images seen | stopped because |",
                    "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, c in cells.items():
            r = c["result"]
            shifted = f"{r['shifted_digit_error']:.2f}" if "shifted_digit_error" in r else "-"
            per_cell.append(f"| {name} | {r['test_digit_error']:.2f} | {shifted} "
                            f"| {r['test_seq_error']:.2f} | {r['best_epoch']} | {r['epochs_completed']} | {r['images_seen']:,} "
                            f"| {r['stop_reason']} |")
    text = "\n".join([
        f"# {TITLES[preset]}, preset `{preset}`", "",
        f"Generated by `{PROG} --table {folder} --preset {preset}` from the result files in this folder; do not edit by hand.", "",
        PRESETS[preset]["description"] + ".",
        names + "; ".join(variants) + ".",
        "Each cell's settings are in its config.json, its per-epoch validation record in metrics.jsonl, its test "
        "errors in result.json.", "",
        table_markdown(cells, preset),
    ] + per_cell) + "\n"
    path = os.path.join(folder, PRESETS[preset]["table"])
    atomic_write_bytes(path, text.encode())
    return path


def update_readme(readme: str, folder: str, preset: str) -> bool:
    """Replace the preset's generated block in `readme` (between readme_markers(preset)) by the
    table of `folder`. Returns True when the file changed. ValueError if the markers are missing."""
    begin, end = readme_markers(preset)
    with open(readme) as f:
        text = f.read()
    if begin not in text or end not in text:
        raise ValueError(f"{readme} has no block for preset {preset!r} (the lines {begin!r} ... {end!r})")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    new = head + begin + "\n" + table_markdown(preset_cells(folder, preset), preset) + end + tail
    if new != text:
        atomic_write_bytes(readme, new.encode())
    return new != text


def readme_block(readme: str, preset: str) -> str:
    """The preset's generated block of `readme` (between its markers), for the test that it is up to date."""
    begin, end = readme_markers(preset)
    with open(readme) as f:
        text = f.read()
    return text.split(begin, 1)[1].split(end, 1)[0].lstrip("\n")


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
    -> the cell's {'train', 'val', 'test', ...} splits)."""
    from minstn.plots import draw_model_glimpses
    from minstn.training.metrics import load_model
    from minstn.plots import plot_curves, plot_theta_stats

    written = []
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
    p.add_argument("--list", action="store_true", help="list the cells and their state (new, resume, running, done); train nothing")
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
        preset = args.preset or _preset_of(args.table)
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
        print(f"  {cell.name:24s} [{cell_status(cfg)}]")
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
    if args.figures and splits is not None:
        last = {key: splits}                  # one data set in memory at a time (read from the cache again)

        def splits_of(cfg):
            if _data_key(cfg) not in last:
                last.clear()
                last[_data_key(cfg)] = load_data(cfg)
            return last[_data_key(cfg)]

        figures = make_figures(args.out, runs, splits_of, resolve_device(args.device))
        print(f"wrote {len(figures)} figures in {args.out}")
    return 0


def _preset_of(folder: str) -> str | None:
    """The preset whose settings the folder's cells were trained with and whose cells they all are."""
    names = set(read_cells(folder))
    configs = []
    for name in sorted(names):
        with open(os.path.join(folder, name, "config.json")) as f:
            configs.append(json.load(f))
    for preset, spec in PRESETS.items():
        if names and names <= {c.name for c in spec["cells"]} and all(
                all(cfg.get(k) == v for k, v in spec["train"].items() if k != "time_budget") for cfg in configs):
            return preset
    return None


def _fmt_time(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


if __name__ == "__main__":
    sys.exit(main())
