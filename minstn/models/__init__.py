"""The three models of the paper, built from minstn.ops (SPEC section 4; docs/models.md).

    model = build_model('lstm-stn', downsample=2, dtype='float32', device='cpu', seed=0)
    loss, logits = model.loss_and_grads(images, labels, rng=np.random.default_rng(0))
    # model.grads now holds d(loss)/d(param) for every model.params entry

Models:
    'cnn'       CNN baseline: the classifier on the whole 100x100 canvas, four heads
    'ffn-stn'   FFN-STN-CNN: loc net -> FC -> theta; one glimpse, down-sampled by d; four heads
    'lstm-stn'  LSTM-STN-CNN: loc net -> LSTM (T = 4 steps) -> theta_t; glimpse t predicts digit t

Options (DEFAULT_OPTIONS gives each model's defaults; unknown options are errors):
    dropout        dropout probability before the classifier's FC layer (all models; 0.5)
    head_init      'he' | 'zero': the classifier's last layer starts He-initialised or at 0
                   (uniform predictions, loss ln 10, at the start) (all models; 'zero')
    init_scale     s in the regressor's initial bias [[s,0,0],[0,s,0]]: the glimpse starts as a
                   centred zoom by 1/s (STN models; FFN 1.0 = identity, LSTM 0.5)
    regressor_std  std of the regressor's initial weights, 0 = zeros (STN models; FFN 0.0, LSTM 1e-3)
    feedback       'none' | 'theta': feed theta_{t-1} into the LSTM beside the features (LSTM; 'theta')
    step_spread    s >= 0: a learned per-step theta bias starting with the glimpse centres at
                   tx = s * (t - 1.5); 0 = no such bias, the paper's plain recurrence (LSTM; 0.3)
    hidden_size    LSTM cells (LSTM; 256)
    sampler_impl   'auto' | 'array' | 'kernel': which affine-grid / sampler code runs (STN models; 'auto')
"""
from __future__ import annotations

import numbers

import numpy as np

from minstn.models.base import CANVAS, POSITIONS, Model
from minstn.models.cnn import CNN
from minstn.models.layers import ModelError
from minstn.models.stn import FFNSTN, LSTMSTN

__all__ = [
    "MODEL_NAMES",
    "DEFAULT_OPTIONS",
    "ModelError",
    "Model",
    "CNN",
    "FFNSTN",
    "LSTMSTN",
    "build_model",
    "CANVAS",
    "POSITIONS",
]

MODEL_NAMES = ("cnn", "ffn-stn", "lstm-stn")

DEFAULT_OPTIONS = {
    "cnn": {"dropout": 0.5, "head_init": "zero"},
    "ffn-stn": {"dropout": 0.5, "head_init": "zero", "init_scale": 1.0, "regressor_std": 0.0, "sampler_impl": "auto"},
    "lstm-stn": {
        "dropout": 0.5,
        "head_init": "zero",
        "init_scale": 0.5,
        "regressor_std": 1e-3,
        "feedback": "theta",
        "step_spread": 0.3,
        "hidden_size": 256,
        "sampler_impl": "auto",
    },
}

_CLASSES = {"cnn": CNN, "ffn-stn": FFNSTN, "lstm-stn": LSTMSTN}
_DTYPES = ("float32", "float64")


def _check_option(name: str, key: str, value):
    """Validate one option value; returns it normalised (floats as float, ints as int)."""
    def number(v):
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise ModelError(f"{name}: option {key} must be a number, got {v!r}")
        return float(v)

    if key == "dropout":
        v = number(value)
        if not 0.0 <= v < 1.0:
            raise ModelError(f"{name}: dropout must be in [0, 1) (0 disables it), got {value!r}")
        return v
    if key == "init_scale":
        v = number(value)
        if not v > 0:
            raise ModelError(f"{name}: init_scale must be > 0 (1.0 = identity, 0.5 = a 2x zoom), got {value!r}")
        return v
    if key == "regressor_std":
        v = number(value)
        if not v >= 0:
            raise ModelError(f"{name}: regressor_std must be >= 0 (0 = zero weights), got {value!r}")
        return v
    if key == "step_spread":
        v = number(value)
        if not 0 <= v <= 1:
            raise ModelError(f"{name}: step_spread must be in [0, 1] (0 = off, 0.4 = centres at -0.6 .. 0.6), got {value!r}")
        return v
    if key == "feedback":
        if value not in ("none", "theta"):
            raise ModelError(f"{name}: feedback must be 'none' or 'theta', got {value!r}")
        return value
    if key == "hidden_size":
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ModelError(f"{name}: hidden_size must be a positive integer, got {value!r}")
        return int(value)
    if key == "head_init":
        if value not in ("he", "zero"):
            raise ModelError(f"{name}: head_init must be 'he' or 'zero', got {value!r}")
        return value
    if key == "sampler_impl":
        if value not in ("auto", "array", "kernel"):
            raise ModelError(f"{name}: sampler_impl must be 'auto', 'array' or 'kernel', got {value!r}")
        return value
    raise AssertionError(key)  # every key of DEFAULT_OPTIONS is handled above


def build_model(name: str, downsample: int = 2, *, dtype="float32", device="cpu", seed: int = 0, **options) -> Model:
    """Build a model with freshly initialised parameters.

    name        'cnn', 'ffn-stn' or 'lstm-stn'
    downsample  d in 1..4: glimpses of floor(100 / d) pixels (STN models). The CNN has no glimpse:
                it accepts any valid d, ignores it and always reports downsample = 1.
    dtype       'float32' (training) or 'float64' (gradient checks)
    device      'cpu', 'gpu', 'gpu:N' or a minstn.backend.Device
    seed        seed of the parameter initialisation (np.random.default_rng(seed))
    **options   model options, see DEFAULT_OPTIONS[name]; unknown ones are errors
    """
    if name not in MODEL_NAMES:
        raise ModelError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    if isinstance(downsample, bool) or not isinstance(downsample, numbers.Integral) or not 1 <= downsample <= 4:
        raise ModelError(f"downsample must be an integer in 1..4 (glimpse sides 100, 50, 33, 25), got {downsample!r}")
    try:
        dt = np.dtype(dtype).name
    except TypeError:
        dt = None
    if dt not in _DTYPES:
        raise ModelError(f"dtype must be 'float32' (training) or 'float64' (gradient checks), got {dtype!r}")
    defaults = DEFAULT_OPTIONS[name]
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ModelError(f"unknown option(s) {unknown} for model {name!r}; its options are {sorted(defaults)}")
    resolved = {k: _check_option(name, k, options.get(k, v)) for k, v in defaults.items()}
    d = 1 if name == "cnn" else int(downsample)
    return _CLASSES[name](d, resolved, dtype=dt, device=device, seed=seed)
