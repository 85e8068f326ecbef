"""The grids of `python -m minstn.reproduce`: their cells and presets.

A cell is one training run, `DIR/<cell>/`, named <model>[-d<d>][-<variant>]-s<seed> (e.g.
lstm-stn-d2-s0, lstm-stn-d2-plain-s1, cnn-s2), or for a single-digit task
<model>[-<distortion>][-<variant>]-s<seed> (st-cnn-RTS-s0, st-cnn-P-proj-s0, tstn-untied-s1). A
preset is a list of cells and the training settings they share: every cell of a preset has the
same image budget, so its result does not depend on the machine's speed. `plan_cells` turns a
preset into one TrainConfig per cell, and `cell_command` a cell's TrainConfig into the `python -m
minstn.train` command that runs that cell on its own. The tables of finished cells are minstn.tables.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import shlex

from minstn.training.config import SEQUENCE_TASK, ConfigError, TrainConfig
from minstn.training.run import is_locked, read_metrics

__all__ = ["Cell", "VARIANTS", "DIGIT_VARIANTS", "STN_DISTORTIONS", "PRESETS", "plan_cells", "cell_status",
           "cell_progress", "cell_options", "cell_command", "is_digit_preset", "group_order"]

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
#: the distortions of the STN paper's Table 1 (distorted MNIST; TC is translated and cluttered 60x60)
STN_DISTORTIONS = ("R", "RTS", "P", "E", "TC")


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
                       "5e-4, each gradient clipped to [-1, 1], the norm to 5; the localisation path at 0.1 of the "
                       "rate, as every other preset), 160,000 training images per cell, three seeds each (seed 0 of "
                       "every model first)",
        "train": {**_CPU_TRAIN, "layout": "sonderby", "optimizer": "rmsprop", "lr": 5e-4, "loc_lr_mult": 0.1,
                  "clip_value": 1.0, "clip_norm": 5.0},
        "cells": [c for s in (0, 1, 2) for c in (Cell("lstm-stn", 2, s, "gru"), Cell("ffn-stn", 2, s),
                                                   Cell("ffn-stn", 2, s, "w96"), Cell("cnn", 1, s))],
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


def cell_progress(cfg: TrainConfig) -> str:
    """How far a cell is, from its metrics.jsonl: '' for a cell with no epoch yet, else the training
    images seen at its last validation, e.g. '60,000 of 160,000 images' (without the budget where the
    cell has none), and when finished its test per-digit error."""
    d = cfg.run_dir()
    metrics = os.path.join(d, "metrics.jsonl")
    try:
        records = read_metrics(metrics) if os.path.exists(metrics) else []
    except ValueError:          # a line cut short by a killed run (the run drops it when it resumes)
        return "metrics.jsonl ends in a cut line"
    if not records:
        return ""
    last = records[-1]
    text = f"{last['images_seen']:,}" + (f" of {cfg.max_images:,}" if cfg.max_images else "") + " images"
    result = os.path.join(d, "result.json")
    if os.path.exists(result):
        with open(result) as f:
            text += f", test {json.load(f)['test_digit_error']:.2f}%"
    return text


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
            args.append(f"{flag} {shlex.quote(str(value))}")
    return "python -m minstn.train " + " ".join(args)




def is_digit_preset(preset: str) -> bool:
    """True when every cell of the preset is a single-digit task (one digit per image, no shifted set)."""
    return all(c.digit_task for c in PRESETS[preset]["cells"])



def group_order(preset: str) -> list:
    """The groups (a cell's name without its seed: a table row) of a preset, in its order."""
    seen = []
    for c in PRESETS.get(preset, {"cells": []})["cells"]:
        if c.group not in seen:
            seen.append(c.group)
    return seen

