"""The models, built from minstn.ops (docs/models.md).

    model = build_model('lstm-stn', downsample=2, dtype='float32', device='cpu', seed=0)
    loss, logits = model.loss_and_grads(images, labels, rng=np.random.default_rng(0))
    # model.grads now holds d(loss)/d(param) for every model.params entry

Models of the MNIST-sequence task (the LSTM-STN paper; MODEL_NAMES):
    'cnn'       CNN baseline: the classifier on the whole 100x100 canvas, four heads
    'ffn-stn'   FFN-STN-CNN: loc net -> FC -> theta; one glimpse, down-sampled by d; four heads
    'lstm-stn'  LSTM-STN-CNN: loc net -> LSTM (T = 4 steps) -> theta_t; glimpse t predicts digit t
                (tied=True: the localisation net shares the classifier's conv weights)

Single-digit models (distorted and cluttered MNIST; DIGIT_MODEL_NAMES; input side image_size):
    'fcn', 'mnist-cnn', 'st-fcn', 'st-cnn'   the STN paper's section 4.1 (minstn.models.digits)
    'tstn', 'tstn-cnn'                       the TSTN paper's architecture 1, tied or not, and its
                                             classification CNN (minstn.models.tstn)

Options: dropout, head_init, init_scale, regressor_std, feedback, step_spread, hidden_size, cell,
cls_filters, digits, sampler_impl, image_size, transform, tied; each is declared once, with its type, defaults, check and help, in
minstn.models.options (DEFAULT_OPTIONS: each model's defaults; unknown options are errors).
"""
from __future__ import annotations

import numbers

import numpy as np

from minstn.models.base import CANVAS, POSITIONS, Model
from minstn.models.cnn import CNN
from minstn.models.digits import FCN, STCNN, STFCN, MnistCNN
from minstn.models.layers import ModelError
from minstn.models.options import (
    ALL_MODEL_NAMES,
    DEFAULT_OPTIONS,
    DIGIT_MODEL_NAMES,
    MODEL_NAMES,
    OPTIONS,
    TASK_MODELS,
    check_options,
    unknown_model_message,
)
from minstn.models.stn import FFNSTN, LSTMSTN
from minstn.models.tstn import TSTN, TSTNCNN

__all__ = [
    "MODEL_NAMES",
    "DIGIT_MODEL_NAMES",
    "ALL_MODEL_NAMES",
    "TASK_MODELS",
    "DEFAULT_OPTIONS",
    "OPTIONS",
    "check_options",
    "ModelError",
    "Model",
    "CNN",
    "FFNSTN",
    "LSTMSTN",
    "FCN",
    "MnistCNN",
    "STFCN",
    "STCNN",
    "TSTN",
    "TSTNCNN",
    "build_model",
    "CANVAS",
    "POSITIONS",
]

_CLASSES = {"cnn": CNN, "ffn-stn": FFNSTN, "lstm-stn": LSTMSTN, "fcn": FCN, "mnist-cnn": MnistCNN, "st-fcn": STFCN,
            "st-cnn": STCNN, "tstn": TSTN, "tstn-cnn": TSTNCNN}
#: models without down-sampling: they accept any valid d, ignore it and report downsample = 1
_NO_DOWNSAMPLE = ("cnn",) + DIGIT_MODEL_NAMES
_DTYPES = ("float32", "float64")


def build_model(name: str, downsample: int = 2, *, dtype="float32", device="cpu", seed: int = 0, **options) -> Model:
    """Build a model with freshly initialised parameters.

    name        'cnn', 'ffn-stn' or 'lstm-stn' (MNIST sequences), or a single-digit model: 'fcn',
                'mnist-cnn', 'st-fcn', 'st-cnn', 'tstn', 'tstn-cnn'
    downsample  d in 1..4: glimpses of floor(100 / d) pixels (FFN-STN, LSTM-STN). The CNN and the
                single-digit models do not down-sample: they accept any valid d, ignore it and
                always report downsample = 1.
    dtype       'float32' (training) or 'float64' (gradient checks)
    device      'cpu', 'gpu', 'gpu:N' or a minstn.backend.Device
    seed        seed of the parameter initialisation (np.random.default_rng(seed))
    **options   model options, see DEFAULT_OPTIONS[name]; unknown ones are errors
    """
    if name not in ALL_MODEL_NAMES:
        raise ModelError(unknown_model_message(name))
    if isinstance(downsample, bool) or not isinstance(downsample, numbers.Integral) or not 1 <= downsample <= 4:
        raise ModelError(f"downsample must be an integer in 1..4 (glimpse sides 100, 50, 33, 25), got {downsample!r}")
    try:
        dt = np.dtype(dtype).name
    except TypeError:
        dt = None
    if dt not in _DTYPES:
        raise ModelError(f"dtype must be 'float32' (training) or 'float64' (gradient checks), got {dtype!r}")
    resolved = check_options(name, options)
    d = 1 if name in _NO_DOWNSAMPLE else int(downsample)
    return _CLASSES[name](d, resolved, dtype=dt, device=device, seed=seed)
