"""The models' names and options, each declared once: its type, its default for each model, its
check and its help. build_model, the trainer's TrainConfig and the command line all read them here.

    MODEL_NAMES                  ('cnn', 'ffn-stn', 'lstm-stn'): the MNIST-sequence models (LSTM-STN paper)
    DIGIT_MODEL_NAMES            ('fcn', 'mnist-cnn', 'st-fcn', 'st-cnn', 'tstn', 'tstn-cnn'): the
                                 single-digit models (STN paper section 4.1, TSTN paper architecture 1)
    ALL_MODEL_NAMES              both, in that order (what build_model accepts)
    TASK_MODELS[task]            the models of a training task ('mnist-sequence', 'distorted-mnist',
                                 'cluttered-mnist')
    unknown_model_message(name)  the one-line error for a name that is no model
    OPTIONS[name]                an Option: kind, defaults {model: value}, choices, help
    DEFAULT_OPTIONS[model]       {option: default} of one model
    check_options(model, given)  -> the model's full, checked options (ModelError on a bad value)
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from minstn.models.layers import ModelError

__all__ = ["MODEL_NAMES", "DIGIT_MODEL_NAMES", "ALL_MODEL_NAMES", "TASK_MODELS", "unknown_model_message", "Option", "OPTIONS",
           "DEFAULT_OPTIONS", "check_options", "option_problem"]

MODEL_NAMES = ("cnn", "ffn-stn", "lstm-stn")
STN = ("ffn-stn", "lstm-stn")
#: single-digit models (minstn.models.digits, minstn.models.tstn); 'mnist-cnn' is not 'cnn' (the
#: 100x100 MNIST-sequence CNN): it is the STN paper's CNN baseline for 28..60-pixel digits
DIGIT_MODEL_NAMES = ("fcn", "mnist-cnn", "st-fcn", "st-cnn", "tstn", "tstn-cnn")
DIGIT_STN = ("st-fcn", "st-cnn", "tstn")
ALL_MODEL_NAMES = MODEL_NAMES + DIGIT_MODEL_NAMES
#: the training tasks (minstn.data.tasks) and the models that train on each
TASK_MODELS = {"mnist-sequence": MODEL_NAMES, "distorted-mnist": DIGIT_MODEL_NAMES, "cluttered-mnist": DIGIT_MODEL_NAMES}
#: the largest LSTM: its weights take about 16 * hidden_size**2 bytes in float32 (8192: 1.1 GB)
MAX_HIDDEN = 8192


@dataclass(frozen=True)
class Option:
    """One model option. kind: float, int, str or bool; defaults: {model: default} (the models that
    have it); choices: allowed str values; low/high: bounds of a number, each inclusive unless
    its *_open flag is set; help: one line for --help and the docs."""

    kind: type
    defaults: dict
    help: str
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def problem(self, value) -> str | None:
        """None if `value` is acceptable, else what is wrong ('must be ..., got ...')."""
        if self.choices:
            return None if value in self.choices else f"must be one of {', '.join(map(repr, self.choices))}, got {value!r}"
        if self.kind is bool:
            return None if isinstance(value, (bool, np.bool_)) else f"must be True or False, got {value!r}"
        if self.kind is int:
            ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
            what = "an integer"
        else:
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
            what = "a finite number"
        if ok and self.low is not None:
            ok = value > self.low if self.low_open else value >= self.low
        if ok and self.high is not None:
            ok = value < self.high if self.high_open else value <= self.high
        if ok:
            return None
        lo = "" if self.low is None else (f"> {self.low:g}" if self.low_open else f">= {self.low:g}")
        hi = "" if self.high is None else (f"< {self.high:g}" if self.high_open else f"<= {self.high:g}")
        return f"must be {what} {' and '.join(b for b in (lo, hi) if b)}, got {value!r}".replace("  ", " ")

    def normalise(self, value):
        return value if self.choices else self.kind(value)


OPTIONS = {
    "dropout": Option(float, {m: 0.5 for m in ALL_MODEL_NAMES}, low=0.0, high=1.0, high_open=True,
                      help="dropout probability before the classifier's FC layer (0 = off)"),
    "head_init": Option(str, {m: "zero" for m in ALL_MODEL_NAMES}, choices=("he", "zero"),
                        help="the classifier's last layer at the start: 'he' (He-normal) or 'zero' "
                             "(uniform predictions, loss ln 10; lets the LSTM-STN's glimpses separate)"),
    "init_scale": Option(float, {"ffn-stn": 1.0, "lstm-stn": 0.5, **{m: 1.0 for m in DIGIT_STN}}, low=0.0, low_open=True,
                         help="STN models: s in the regressor's initial bias [[s,0,0],[0,s,0]], a centred zoom by 1/s "
                              "(1 = the whole canvas)"),
    "regressor_std": Option(float, {"ffn-stn": 0.0, "lstm-stn": 1e-3, **{m: 0.0 for m in DIGIT_STN}}, low=0.0,
                            help="STN models: std of the affine regressor's initial weights (0 = zeros)"),
    "feedback": Option(str, {"lstm-stn": "theta"}, choices=("none", "theta"),
                       help="LSTM-STN: feed the previous theta back into the LSTM beside the features ('theta') or not"),
    "step_spread": Option(float, {"lstm-stn": 0.3}, low=0.0, high=1.0,
                          help="LSTM-STN: a learned per-step theta bias whose glimpse centres start at tx = s * (t - 1.5); "
                               "0 = none, the paper's plain recurrence"),
    "hidden_size": Option(int, {"lstm-stn": 256}, low=1, high=MAX_HIDDEN, help="LSTM-STN: number of LSTM cells"),
    "cell": Option(str, {"lstm-stn": "lstm"}, choices=("lstm", "gru", "rnn"),
                   help="LSTM-STN: the recurrence that drives the transformer: 'lstm' (the paper's), 'gru' (as "
                        "Sønderby et al.'s recurrent model) or 'rnn' (a plain tanh cell)"),
    "cls_filters": Option(int, {m: 32 for m in MODEL_NAMES}, low=1, high=512,
                          help="filters of each of the classifier's three conv layers (the paper's '96 filters in total' "
                               "read as 3 x 32; Sønderby et al.'s feed-forward model has 96 per layer)"),
    "digits": Option(int, {**{m: 4 for m in MODEL_NAMES}, **{m: 1 for m in DIGIT_MODEL_NAMES}}, low=1, high=8,
                     help="digits per canvas: the CNN's and FFN-STN's heads, the LSTM-STN's steps (the trainer takes "
                          "it from the data: 4 in the paper's, 3 in Sønderby et al.'s, 1 in the single-digit tasks)"),
    "sampler_impl": Option(str, {m: "auto" for m in STN + DIGIT_STN}, choices=("auto", "array", "kernel"),
                           help="STN models: which affine-grid/sampler code runs: 'auto' (the CUDA kernel on a GPU, "
                                "array code on the CPU), 'array' or 'kernel'"),
    "image_size": Option(int, {**{m: 28 for m in DIGIT_MODEL_NAMES}, "tstn": 60, "tstn-cnn": 60}, low=8, high=512,
                         help="single-digit models: side of the square input image in pixels (the trainer takes it from "
                              "the data: 28 for R, P and E, 42 for RTS, 60 for TC and cluttered MNIST)"),
    "transform": Option(str, {m: "affine" for m in DIGIT_STN}, choices=("affine", "projective"),
                        help="single-digit STN models: the transform the localisation net predicts: 'affine' (6 "
                             "numbers) or 'projective' (8: a homography whose perspective terms are bounded by "
                             "0.45 tanh, so its grid never reaches the horizon)"),
    "tied": Option(bool, {"lstm-stn": False, "tstn": True},
                   help="the localisation net uses the classifier's conv weights (tstn: the TSTN, default on; off = "
                        "its untied STN; lstm-stn: a tied LSTM-STN, default off; docs in minstn/models/tstn.py, stn.py)"),
}

DEFAULT_OPTIONS = {m: {k: o.defaults[m] for k, o in OPTIONS.items() if m in o.defaults} for m in ALL_MODEL_NAMES}


def unknown_model_message(model) -> str:
    """The error for a name that is no model: both families of names, and their tasks."""
    return (f"unknown model {model!r}; choose one of {', '.join(MODEL_NAMES)} (the MNIST-sequence models) or "
            f"{', '.join(DIGIT_MODEL_NAMES)} (single-digit: distorted-mnist and cluttered-mnist)")


def option_problem(model: str, key: str, value) -> str | None:
    """What is wrong with option `key` = `value` for `model` (None: nothing)."""
    if key not in DEFAULT_OPTIONS.get(model, {}):
        return f"is not an option of the {model} model (its options: {', '.join(sorted(DEFAULT_OPTIONS[model]))})"
    return OPTIONS[key].problem(value)


def check_options(model: str, given: dict) -> dict:
    """The model's options: its defaults overridden by `given`, each checked (ModelError names the
    first bad one). Unknown names are errors."""
    if model not in ALL_MODEL_NAMES:
        raise ModelError(unknown_model_message(model))
    unknown = sorted(set(given) - set(DEFAULT_OPTIONS[model]))
    if unknown:
        raise ModelError(f"unknown option(s) {unknown} for model {model!r}; its options are {sorted(DEFAULT_OPTIONS[model])}")
    out = {}
    for key, default in DEFAULT_OPTIONS[model].items():
        value = given.get(key, default)
        problem = OPTIONS[key].problem(value)
        if problem:
            raise ModelError(f"{model}: {key} {problem}")
        out[key] = OPTIONS[key].normalise(value)
    return out
