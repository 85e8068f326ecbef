"""The three models of the paper, built from minstn.ops (SPEC section 4; docs/models.md).

    model = build_model('lstm-stn', downsample=2, dtype='float32', device='cpu', seed=0)
    loss, logits = model.loss_and_grads(images, labels, rng=np.random.default_rng(0))
    # model.grads now holds d(loss)/d(param) for every model.params entry

Models:
    'cnn'       CNN baseline: the classifier on the whole 100x100 canvas, four heads
    'ffn-stn'   FFN-STN-CNN: loc net -> FC -> theta; one glimpse, down-sampled by d; four heads
    'lstm-stn'  LSTM-STN-CNN: loc net -> LSTM (T = 4 steps) -> theta_t; glimpse t predicts digit t

Options: dropout, head_init, init_scale, regressor_std, feedback, step_spread, hidden_size,
sampler_impl; each is declared once, with its type, defaults, check and help, in
minstn.models.options (DEFAULT_OPTIONS: each model's defaults; unknown options are errors).
"""
from __future__ import annotations

import numbers

import numpy as np

from minstn.models.base import CANVAS, POSITIONS, Model
from minstn.models.cnn import CNN
from minstn.models.layers import ModelError
from minstn.models.options import DEFAULT_OPTIONS, MODEL_NAMES, OPTIONS, check_options
from minstn.models.stn import FFNSTN, LSTMSTN

__all__ = [
    "MODEL_NAMES",
    "DEFAULT_OPTIONS",
    "OPTIONS",
    "check_options",
    "ModelError",
    "Model",
    "CNN",
    "FFNSTN",
    "LSTMSTN",
    "build_model",
    "CANVAS",
    "POSITIONS",
]

_CLASSES = {"cnn": CNN, "ffn-stn": FFNSTN, "lstm-stn": LSTMSTN}
_DTYPES = ("float32", "float64")


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
    resolved = check_options(name, options)
    d = 1 if name == "cnn" else int(downsample)
    return _CLASSES[name](d, resolved, dtype=dt, device=device, seed=seed)
