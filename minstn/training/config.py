"""Every training setting in one place: the TrainConfig dataclass and its command line.

Each field has a typed default and a help text (field metadata); build_parser() turns the
fields into argparse options (model -> --model, batch_size -> --batch-size), so the command
line, the defaults and the saved config.json can never disagree.

    cfg = TrainConfig(model='ffn-stn', epochs=3)      # in code
    cfg = TrainConfig(**given_options(argv))           # from the command line (argparse exits 2 on errors)
    cfg.validate()                                     # ConfigError with a clear message

Conventions: 0 turns a limit or a clipping option off (--clip-value 0, --time-budget 0,
--patience 0); None for the model options means "the model's own default"
(minstn.models.options) and is filled in by resolve_model_options(); the trainer saves the
resolved values in config.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from dataclasses import dataclass, field

from minstn.data.distorted import DISTORTIONS
from minstn.data.sequences import LAYOUTS
from minstn.data.tasks import TASKS
from minstn.models.options import ALL_MODEL_NAMES, DEFAULT_OPTIONS, MODEL_NAMES, OPTIONS, TASK_MODELS, option_problem

__all__ = [
    "TrainConfig",
    "ConfigError",
    "MODEL_NAMES",
    "TASK_NAMES",
    "MODEL_OPTION_FIELDS",
    "RESUME_OVERRIDABLE",
    "build_parser",
    "given_options",
    "VERBOSITY_FLAGS",
    "add_verbosity",
    "verbosity",
    "parse_command_line",
    "config_from_dict",
    "resolve_model_options",
    "with_preset",
    "PRESETS",
]

#: named groups of settings (--preset NAME); options given on the command line override them
PRESETS = {
    "quick": {"model": "lstm-stn", "downsample": 2, "train_size": 20000, "val_size": 1000, "test_size": 1000,
              "max_images": 60_000, "epochs": 100},
    "paper": {"train_size": 70000, "val_size": 20000, "test_size": 2000, "epochs": 100, "patience": 8, "chunk": 32},
    "sonderby": {"layout": "sonderby", "optimizer": "rmsprop", "lr": 5e-4, "loc_lr_mult": 0.1, "clip_value": 1.0,
                 "clip_norm": 5.0, "train_size": 20000, "val_size": 2000, "test_size": 2000, "chunk": 32},
}
PRESET_HELP = ("quick: an LSTM-STN (d = 2) on 20,000 canvases for 60,000 training images, glimpses that separate "
               "within minutes on a laptop; paper: the paper's 70,000 / 20,000 / 2,000 canvases, trained until "
               "validation stops improving; sonderby: Sønderby et al.'s data set (3 digits on a slanted line, "
               "added 9x9 noise) and their optimiser (RMSprop 5e-4, each gradient clipped to [-1, 1], the norm to 5; the "
               "localisation path at this project's 0.1 of the rate, docs/training.md says why)")

#: the data layouts, from minstn.data.sequences.LAYOUTS
LAYOUT_NAMES = tuple(LAYOUTS)
#: the training tasks (minstn.data.tasks) and the distortions of distorted-mnist (minstn.data.distorted)
TASK_NAMES = TASKS
SEQUENCE_TASK = TASKS[0]

#: TrainConfig fields that are model options, passed to build_model(name, d, **options)
MODEL_OPTION_FIELDS = tuple(OPTIONS)

#: settings that may differ from the saved ones when continuing a run with --resume
RESUME_OVERRIDABLE = (
    "epochs", "time_budget", "max_steps", "max_images", "save_every", "shifted_layout", "device", "log_every", "eval_batch_size",
    "data_dir", "data", "cache_dir", "resume", "out", "progress", "workers", "parallel",
)


class ConfigError(ValueError):
    """A setting has a value that cannot work (the message says which and what to use)."""


def _opt(default, help, type=None, choices=None, flag=None):
    """A dataclass field with its command-line type, choices and help in the metadata."""
    return field(default=default, metadata={"help": help, "type": type, "choices": choices, "flag": flag})


def _model_opt(name: str):
    """A field for model option `name`: type, choices and help from minstn.models.options.OPTIONS,
    default None (= each model's own default, named in the help)."""
    o = OPTIONS[name]
    defaults = sorted(set(o.defaults.values()), key=str)
    default_text = (f"{defaults[0]}" if len(defaults) == 1 else
                    ", ".join(f"{m} {v}" for m, v in o.defaults.items()))
    return _opt(None, f"{o.help} (model default: {default_text})", o.kind, o.choices or None)


@dataclass
class TrainConfig:
    """All settings of one training run (defaults as used by `python -m minstn.train`)."""

    # -- what to train
    preset: str = _opt(None, f"a named group of settings, overridden by the options given: {PRESET_HELP}", str, tuple(PRESETS))
    task: str = _opt(SEQUENCE_TASK, "what to learn: mnist-sequence (the LSTM-STN paper's 100x100 canvases of four digits), "
                     "distorted-mnist (one distorted digit, --distortion; the STN paper's Table 1) or cluttered-mnist (one "
                     "digit in 60x60 clutter; the TSTN paper's); the models of each: mnist-sequence cnn, ffn-stn, lstm-stn; "
                     "the single-digit tasks fcn, mnist-cnn, st-fcn, st-cnn, tstn, tstn-cnn", str, TASK_NAMES)
    distortion: str = _opt(None, "--task distorted-mnist: R (rotated, 28x28), RTS (rotated, translated and scaled, 42x42), "
                           "P (projective, 28x28), E (elastic, 28x28) or TC (translated and cluttered, 60x60); "
                           "minstn/data/distorted.py gives the settings", str, DISTORTIONS)
    model: str = _opt("lstm-stn", "model to train (it must be one of the --task's models)", str, ALL_MODEL_NAMES)
    downsample: int = _opt(2, "down-sampling factor d of the glimpse before the classifier (1..4; the CNN ignores it)", int)
    device: str = _opt("auto", "where to compute: auto (a GPU when CuPy finds one, else the CPU), cpu, gpu or gpu:N", str)
    dtype: str = _opt("float32", "floating-point type of parameters and activations", str, ("float32", "float64"))
    seed: int = _opt(0, "seed of the model init, the data order and dropout", int)

    # -- model options: declared in minstn.models.options (None = the model's own default)
    dropout: float = _model_opt("dropout")
    head_init: str = _model_opt("head_init")
    init_scale: float = _model_opt("init_scale")
    regressor_std: float = _model_opt("regressor_std")
    feedback: str = _model_opt("feedback")
    step_spread: float = _model_opt("step_spread")
    hidden_size: int = _model_opt("hidden_size")
    sampler_impl: str = _model_opt("sampler_impl")
    cell: str = _model_opt("cell")
    cls_filters: int = _model_opt("cls_filters")
    digits: int = _model_opt("digits")
    image_size: int = _model_opt("image_size")
    transform: str = _model_opt("transform")
    tied: bool = _model_opt("tied")

    # -- data
    data: str = _opt(None, "folder with pre-generated train.npz, val.npz, test.npz (python -m minstn.data.generate); overrides the sizes below", str)
    data_dir: str = _opt(None, "MNIST IDX folder to generate canvases from (default: $MINSTN_DATA_DIR or the usual places)", str)
    cache_dir: str = _opt(None, "folder for the cache of generated canvases (default: minstn.data's, $MINSTN_CACHE_DIR or ~/.cache/minstn/sequences)", str)
    data_seed: int = _opt(0, "seed of the generated data set (kept apart from --seed so runs share data)", int)
    layout: str = _opt("varied", "where the generated canvases' digits go: 'varied' (gaps of 2..10 columns, drawn per digit pair), 'fixed' (gaps of 2) or 'cells' (28x28 cells, 4 columns overlapping; docs/data.md)", str, LAYOUT_NAMES)
    shifted_layout: str = _opt("cells", "after training, also test on as many canvases made from the test digits with this layout ('none' = skip; with --data: DIR/shifted.npz if present)", str, LAYOUT_NAMES + ("none",))
    train_size: int = _opt(70000, "number of training canvases to generate", int)
    val_size: int = _opt(20000, "number of validation canvases to generate", int)
    test_size: int = _opt(2000, "number of test canvases to generate", int)

    # -- optimisation
    epochs: int = _opt(30, "maximum number of passes over the training set", int)
    batch_size: int = _opt(64, "canvases per optimiser step", int)
    optimizer: str = _opt("adam", "optimiser", str, ("adam", "sgd", "rmsprop"))
    lr: float = _opt(1e-3, "base learning rate", float)
    loc_lr_mult: float = _opt(0.1, "learning-rate multiplier of the localisation path (the model's 'loc' group: localisation net, LSTM, affine regressor)", float)
    momentum: float = _opt(0.9, "SGD momentum (only --optimizer sgd)", float)
    nesterov: bool = _opt(False, "SGD: Nesterov momentum (only --optimizer sgd)", bool)
    weight_decay: float = _opt(0.0, "L2 weight decay added to every gradient (0 = off)", float)
    clip_value: float = _opt(0.0, "clip every gradient element to [-v, v] before the norm clip (Sonderby et al. use 1; 0 = off)", float)
    clip_norm: float = _opt(5.0, "rescale the gradients when their global norm exceeds this (0 = off)", float)
    lr_schedule: str = _opt("plateau", "learning-rate schedule on the validation per-digit error", str, ("plateau", "step", "none"))
    lr_factor: float = _opt(0.5, "factor by which a schedule multiplies the learning rate", float)
    lr_step: int = _opt(10, "step schedule: epochs between decays", int)
    lr_patience: int = _opt(2, "plateau schedule: decay once more than this many epochs in a row bring no improvement", int)
    min_lr: float = _opt(1e-6, "plateau schedule: lower bound of the learning rate", float)
    patience: int = _opt(8, "early stopping: epochs without a better validation per-digit error (0 = off)", int)

    # -- running
    out: str = _opt(None, "run folder (default runs/<model>-d<downsample>)", str)
    resume: bool = _opt(False, "continue the run in --out from its last.npz", bool)
    time_budget: float = _opt(0.0, "stop cleanly after this many minutes of training, then test (0 = no limit)", float)
    max_steps: int = _opt(0, "stop cleanly after this many optimiser steps in total, then test (0 = no limit)", int)
    max_images: int = _opt(0, "the training budget: stop cleanly once this many training images have been seen, then test (0 = no limit); the same result on any machine", int)
    save_every: int = _opt(100, "steps between saves of last.npz within an epoch, so a killed run loses little (0 = at epoch ends only)", int)
    eval_batch_size: int = _opt(256, "canvases per batch when evaluating", int)
    chunk: int = _opt(None, "CPU speed: cut each batch into chunks of this many canvases whose gradients are summed (same gradient; other dropout masks); 0 = whole batch; default on the CPU: one chunk per worker process, at most 32 (16 with --parallel thread); 0 on the GPU", int)
    workers: int = _opt(None, "CPU speed: workers that process the chunks in parallel (each runs its BLAS on one thread); default: the cores this process may use, at most one per chunk (1 on the GPU)", int)
    parallel: str = _opt("process", "CPU speed: the --workers are processes (shared-memory parameters and gradients, no GIL; measured faster) or threads (same result)", str, ("process", "thread"))
    theta_batch: int = _opt(64, "STN models: validation canvases used for the per-epoch theta statistics", int)
    log_every: int = _opt(50, "steps between progress lines when stderr is not a terminal", int)
    progress: bool = _opt(True, "show the progress bar on stderr", bool)

    # ------------------------------------------------------------------------------ checks
    def validate(self) -> "TrainConfig":
        """Raise ConfigError for a value that cannot work; returns self."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            choices = f.metadata.get("choices")
            if choices and value is not None and value not in choices:
                raise ConfigError(f"--{_flag(f.name)} {value!r} is not one of {', '.join(choices)}")
        if self.model not in TASK_MODELS[self.task]:
            home = " and ".join(t for t, names in TASK_MODELS.items() if self.model in names)
            raise ConfigError(f"--model {self.model} is a model of --task {home}, not of {self.task}; choose one of "
                              f"{', '.join(TASK_MODELS[self.task])}")
        if self.task == "distorted-mnist" and self.distortion is None:
            raise ConfigError(f"--task distorted-mnist needs --distortion, one of {', '.join(DISTORTIONS)}")
        if self.task != "distorted-mnist" and self.distortion is not None:
            raise ConfigError(f"--distortion applies to --task distorted-mnist only, not to --task {self.task}")
        if self.downsample not in (1, 2, 3, 4):
            raise ConfigError(f"--downsample must be 1, 2, 3 or 4 (the paper's d), got {self.downsample}")
        for name in ("epochs", "batch_size", "train_size", "val_size", "test_size", "eval_batch_size", "log_every", "lr_step", "theta_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{_flag(name)} must be at least 1, got {getattr(self, name)}")
        for name in ("lr", "lr_factor"):
            v = getattr(self, name)
            if not (v > 0 and math.isfinite(v)):
                raise ConfigError(f"--{_flag(name)} must be a finite number > 0, got {v}")
        if self.lr_schedule in ("plateau", "step") and not self.lr_factor <= 1:
            raise ConfigError(f"--lr-factor must be at most 1 for the {self.lr_schedule} schedule (it multiplies "
                              f"the learning rate at each decay), got {self.lr_factor}")
        if self.lr_schedule == "plateau" and not self.lr_factor < 1:
            raise ConfigError(f"--lr-factor must be below 1 for the plateau schedule, got {self.lr_factor}")
        for name in ("seed", "data_seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{_flag(name)} must be an integer >= 0, got {getattr(self, name)}")
        for name in ("loc_lr_mult", "weight_decay", "clip_value", "clip_norm", "time_budget", "min_lr"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise ConfigError(f"--{_flag(name)} must be a finite number >= 0 (0 = off), got {v}")
        for name in ("max_steps", "max_images", "save_every", "patience", "lr_patience"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{_flag(name)} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"--momentum must be in [0, 1), got {self.momentum}")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ConfigError("--nesterov needs --optimizer sgd and a --momentum above 0")
        for name in MODEL_OPTION_FIELDS:        # each model option's own check (minstn.models.options)
            value = getattr(self, name)
            if value is not None:
                problem = option_problem(self.model, name, value)
                if problem:
                    raise ConfigError(f"--{_flag(name)} {problem}")
        if self.chunk is not None and self.chunk < 0:
            raise ConfigError(f"--chunk must be >= 0 (0 = the whole batch at once), got {self.chunk}")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}")
        if self.workers is not None and self.workers > 1 and self.chunk == 0:
            raise ConfigError(f"--workers {self.workers} needs --chunk above 0: the workers share a batch's chunks")
        if self.resume and not self.out:
            raise ConfigError("--resume needs --out DIR, the folder of the run to continue")
        return self

    def run_dir(self) -> str:
        """The run folder: --out, or runs/<model>-d<downsample> (runs/cnn-d1 for the CNN, which has no glimpse);
        for a single-digit task runs/<task>[-<distortion>]-<model> (runs/distorted-mnist-RTS-st-cnn)."""
        if self.task != SEQUENCE_TASK:
            what = self.task + (f"-{self.distortion}" if self.distortion else "")
            return self.out or os.path.join("runs", f"{what}-{self.model}")
        d = 1 if self.model == "cnn" else self.downsample
        return self.out or os.path.join("runs", f"{self.model}-d{d}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)


def with_preset(given: dict) -> dict:
    """The settings of a new run: its --preset's (if any), overridden by the options given."""
    preset = given.get("preset")
    if preset is None:
        return dict(given)
    if preset not in PRESETS:
        raise ConfigError(f"--preset {preset!r} is not one of {', '.join(PRESETS)}")
    return {**PRESETS[preset], **given}


def config_from_dict(d: dict) -> TrainConfig:
    """A TrainConfig from a dict (e.g. a saved config.json); unknown keys are an error."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"unknown settings {unknown}: this minstn knows {sorted(names)}")
    return TrainConfig(**d)


def resolve_model_options(cfg: TrainConfig) -> dict:
    """The options to pass to build_model: the model's defaults (minstn.models.options), overridden by
    the config's non-None values (which validate() has checked)."""
    given = {name: getattr(cfg, name) for name in MODEL_OPTION_FIELDS if getattr(cfg, name) is not None}
    problems = [f"--{_flag(k)} {option_problem(cfg.model, k, v)}" for k, v in given.items() if option_problem(cfg.model, k, v)]
    if problems:
        raise ConfigError(problems[0])
    return {**DEFAULT_OPTIONS[cfg.model], **given}


# ---------------------------------------------------------------------------------- argparse


def _flag(name: str) -> str:
    return name.replace("_", "-")


def build_parser(prog: str = "python -m minstn.train") -> argparse.ArgumentParser:
    """The command line of TrainConfig: one --option per field (bools get --x / --no-x).

    Options not given on the command line are absent from the parsed namespace
    (argparse.SUPPRESS), so given_options() can tell what the user set.
    """
    p = argparse.ArgumentParser(
        prog=prog,
        description="Train a CNN, FFN-STN or LSTM-STN on the MNIST-sequence data set, or a single-digit model on "
                    "distorted or cluttered MNIST (--task; see docs/training.md).",
        argument_default=argparse.SUPPRESS,
        allow_abbrev=False,
    )
    for f in dataclasses.fields(TrainConfig):
        md = f.metadata
        help_text = f"{md['help']} (default: {f.default})"
        if md["type"] is bool:
            p.add_argument(f"--{_flag(f.name)}", dest=f.name, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            p.add_argument(f"--{_flag(f.name)}", dest=f.name, type=md["type"], choices=md["choices"], help=help_text,
                           metavar=None if md["choices"] else f.name.upper())
    add_verbosity(p)
    return p


#: the command-line flags of how much a command says (not settings of the run)
VERBOSITY_FLAGS = ("quiet", "verbose")


def add_verbosity(parser: argparse.ArgumentParser) -> None:
    """-q / -v on a command: results and errors only, or also the details and tracebacks."""
    parser.add_argument("-q", "--quiet", dest="quiet", action="store_true", default=False,
                        help="print only the results and errors (no progress, no status lines)")
    parser.add_argument("-v", "--verbose", dest="verbose", action="store_true", default=False,
                        help="print the whole configuration and, for an unexpected error, its traceback")


def verbosity(args: dict) -> int:
    """0 (-q), 1 (default) or 2 (-v) from parsed arguments."""
    return 0 if args.get("quiet") else 2 if args.get("verbose") else 1


def parse_command_line(argv) -> tuple:
    """argv -> ({field: value} of the options actually given, verbosity 0/1/2); argparse exits 2 on errors."""
    args = vars(build_parser().parse_args(argv))
    level = verbosity(args)
    return {k: v for k, v in args.items() if k not in VERBOSITY_FLAGS}, level


def given_options(argv) -> dict:
    """Parse argv into {field: value} for the options actually given (argparse exits 2 on errors)."""
    return parse_command_line(argv)[0]
