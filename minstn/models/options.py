"""The models' names and options, each declared once: its type, its default for each model, its
check and its help. build_model, the trainer's TrainConfig and the command line all read them here.

    MODEL_NAMES                  ('cnn', 'ffn-stn', 'lstm-stn')
    OPTIONS[name]                an Option: kind, defaults {model: value}, choices, help
    DEFAULT_OPTIONS[model]       {option: default} of one model
    check_options(model, given)  -> the model's full, checked options (ModelError on a bad value)
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from minstn.models.layers import ModelError

__all__ = ["MODEL_NAMES", "Option", "OPTIONS", "DEFAULT_OPTIONS", "check_options", "option_problem"]

MODEL_NAMES = ("cnn", "ffn-stn", "lstm-stn")
STN = ("ffn-stn", "lstm-stn")
#: the largest LSTM: its weights take about 16 * hidden_size**2 bytes in float32 (8192: 1.1 GB)
MAX_HIDDEN = 8192


@dataclass(frozen=True)
class Option:
    """One model option. kind: float, int or str; defaults: {model: default} (the models that
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
    "dropout": Option(float, {m: 0.5 for m in MODEL_NAMES}, low=0.0, high=1.0, high_open=True,
                      help="dropout probability before the classifier's FC layer (0 = off)"),
    "head_init": Option(str, {m: "zero" for m in MODEL_NAMES}, choices=("he", "zero"),
                        help="the classifier's last layer at the start: 'he' (He-normal, SPEC) or 'zero' "
                             "(uniform predictions, loss ln 10; lets the LSTM-STN's glimpses separate)"),
    "init_scale": Option(float, {"ffn-stn": 1.0, "lstm-stn": 0.5}, low=0.0, low_open=True,
                         help="STN models: s in the regressor's initial bias [[s,0,0],[0,s,0]], a centred zoom by 1/s "
                              "(1 = the whole canvas)"),
    "regressor_std": Option(float, {"ffn-stn": 0.0, "lstm-stn": 1e-3}, low=0.0,
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
    "digits": Option(int, {m: 4 for m in MODEL_NAMES}, low=1, high=8,
                     help="digits per canvas: the CNN's and FFN-STN's heads, the LSTM-STN's steps (the trainer takes "
                          "it from the data: 4 in the paper's, 3 in Sønderby et al.'s)"),
    "sampler_impl": Option(str, {m: "auto" for m in STN}, choices=("auto", "array", "kernel"),
                           help="STN models: which affine-grid/sampler code runs: 'auto' (the CUDA kernel on a GPU, "
                                "array code on the CPU), 'array' or 'kernel'"),
}

DEFAULT_OPTIONS = {m: {k: o.defaults[m] for k, o in OPTIONS.items() if m in o.defaults} for m in MODEL_NAMES}


def option_problem(model: str, key: str, value) -> str | None:
    """What is wrong with option `key` = `value` for `model` (None: nothing)."""
    if key not in DEFAULT_OPTIONS.get(model, {}):
        return f"is not an option of the {model} model (its options: {', '.join(sorted(DEFAULT_OPTIONS[model]))})"
    return OPTIONS[key].problem(value)


def check_options(model: str, given: dict) -> dict:
    """The model's options: its defaults overridden by `given`, each checked (ModelError names the
    first bad one). Unknown names are errors."""
    if model not in MODEL_NAMES:
        raise ModelError(f"unknown model {model!r}; choose one of {', '.join(MODEL_NAMES)}")
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
