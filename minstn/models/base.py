"""What every model shares: parameters and gradients as dicts, the loss, batched prediction,
host copies of the state, and input checks.

Shape legend:
    N   canvases in a batch
    P   digit positions per canvas (4)
    L   canvas side (100)

A model holds only its parameters, their gradients and its settings; every forward returns
a cache that the matching backward consumes, so calls can be interleaved freely (no hidden
state, no call-order rules beyond "backward takes the cache of its own forward").
"""
from __future__ import annotations

import numpy as np

from minstn.backend import Device, resolve_device, to_numpy
from minstn.models.layers import ModelError, check_images, check_labels
from minstn.ops.switch import ops

__all__ = ["Model", "CANVAS", "POSITIONS"]

CANVAS = 100    # canvas side in pixels (the paper's section IV)
POSITIONS = 4   # digits per canvas


class Model:
    """Base class of CNN, FFNSTN and LSTMSTN.

    Attributes:
        name        'cnn', 'ffn-stn' or 'lstm-stn'
        downsample  d, the glimpse down-sampling factor (1 for the CNN)
        options     the model options, all resolved: build_model(name, downsample, **options) rebuilds it
        dtype       numpy dtype of parameters and activations (float32 to train, float64 for checks)
        device      minstn.backend.Device
        params      {name: array} on the device
        grads       {name: array}, same keys and shapes; every backward replaces each entry
        groups      {name: 'loc' | 'cls'}: the localisation path (loc net, LSTM, theta regressor)
                    or the classifier and its heads, for per-group learning rates
    """

    name = "model"
    #: True for models with a spatial transformer (they have attend(), thetas and glimpses)
    transformer = False

    @property
    def shared(self) -> tuple:
        """Names of the parameters that both the localisation and the classification path use (tied
        models): their gradient is the sum of the two paths'. Empty for untied models."""
        return ()

    def __init__(self, downsample: int, options: dict, dtype="float32", device="cpu", seed: int = 0):
        self.downsample = int(downsample)
        self.options = dict(options)
        self.dtype = np.dtype(dtype)
        self.device = device if isinstance(device, Device) else resolve_device(device)
        self.xp = self.device.xp
        host = self._init_params(np.random.default_rng(seed))   # {name: float64 host array}
        with self.device.scope():     # on gpu:N every array goes to GPU N, whatever the current device
            self.params = {k: self.device.asarray(v, dtype=self.dtype) for k, v in host.items()}
            self.grads = {k: self.xp.zeros_like(v) for k, v in self.params.items()}
        self.groups = {k: ("cls" if k.startswith("cls.") else "loc") for k in self.params}

    @property
    def image_side(self) -> int:
        """L, the side of the square input images: 100 (the MNIST-sequence canvas), or the single-digit
        models' image_size option (28, 42, 60, ...)."""
        return int(self.options.get("image_size", CANVAS))

    @property
    def digits(self) -> int:
        """P, the digits per canvas: one softmax head (CNN, FFN-STN) or one step (LSTM-STN) each."""
        return int(self.options.get("digits", POSITIONS))

    # ----- to be provided by each model -------------------------------------------------------
    def _init_params(self, rng: np.random.Generator) -> dict:
        raise NotImplementedError

    def forward(self, images, train: bool = True, rng=None):
        """images (N, 1, 100, 100) -> (logits (N, 4, 10), cache)."""
        raise NotImplementedError

    def backward(self, dlogits, cache) -> None:
        """dlogits (N, 4, 10) and the forward's cache -> fills self.grads."""
        raise NotImplementedError

    # ----- shared -------------------------------------------------------------------------------
    def _images(self, images):
        """Move host images to the model's device and check shape and dtype."""
        if isinstance(images, np.ndarray) and self.device.kind != "cpu":
            images = self.device.asarray(images)
        check_images(images, self.image_side, self.dtype, self.xp)
        return images

    def check_batch(self, images, labels):
        """Check a training batch and move it to the model's device: images (N, 1, 100, 100) in the
        model's dtype, labels (N, 4) ints in 0..9. Returns (images, labels) on the device."""
        images = self._images(images)
        check_labels(labels, images.shape[0], self.digits)
        return images, self.device.asarray(labels)

    def _dropout_rng(self, train: bool, rng):
        if train and self.options.get("dropout", 0.0) > 0 and rng is None:
            raise ModelError(
                f"{self.name}: training with dropout {self.options['dropout']} needs rng, a np.random.Generator "
                "(e.g. rng=np.random.default_rng(0)); use train=False for evaluation"
            )
        if rng is not None and not hasattr(rng, "random"):
            raise TypeError(f"rng must be a random Generator such as np.random.default_rng(0), got {type(rng).__name__}")
        return rng

    def loss_and_grads(self, images, labels, rng=None):
        """One training step's worth of work on a batch: forward (train=True), softmax cross-entropy,
        backward. images (N, 1, 100, 100), labels (N, 4) ints; rng draws the dropout masks.
        Returns (loss, logits (N, 4, 10)): loss a float on the CPU, a 0-d device array on the GPU
        (float(loss) fetches it; the trainer fetches it with the step's other numbers, in one
        transfer). The gradients of the mean loss are in self.grads."""
        with self.device.scope():     # temporaries on the model's device (gpu:1 too)
            images, labels = self.check_batch(images, labels)
            logits, cache = self.forward(images, train=True, rng=rng)      # (N, 4, 10)
            loss, dlogits = ops.softmax_cross_entropy(logits, labels)
            self.backward(dlogits, cache)
        return loss, logits

    def predict(self, images, batch_size: int = 256):
        """Evaluation-mode logits (no dropout), computed in batches: images (N, 1, 100, 100) ->
        host NumPy logits (N, 4, 10). images may be a host array; each batch is moved to the device."""
        if batch_size < 1:
            raise ModelError(f"batch_size must be at least 1, got {batch_size}")
        check_images(images, self.image_side, self.dtype, self.xp)  # the whole array once, before batching
        out = []
        with self.device.scope():
            for i in range(0, images.shape[0], batch_size):
                logits, _ = self.forward(self._images(images[i:i + batch_size]), train=False)
                out.append(to_numpy(logits))
        return np.concatenate(out, axis=0)

    def attend(self, images, batch_size: int = 256):
        """Transforms and glimpses of the spatial transformer (STN models only)."""
        raise ModelError(
            f"the {self.name!r} model has no spatial transformer, so it has no thetas or glimpses to show; "
            "use an 'ffn-stn' or 'lstm-stn' model"
        )

    def state(self) -> dict:
        """Host (NumPy) copies of all parameters, {name: np.ndarray}."""
        return {k: np.array(to_numpy(v), copy=True) for k, v in self.params.items()}

    def load_state(self, state: dict) -> None:
        """Copy parameters from `state` ({name: array}, host or device) into the model.

        Names and shapes must match exactly (a ModelError lists what differs); values are cast
        to the model's dtype and moved to its device.
        """
        if not isinstance(state, dict):
            raise TypeError(f"load_state needs a dict {{name: array}}, got {type(state).__name__}")
        missing = sorted(set(self.params) - set(state))
        unexpected = sorted(set(state) - set(self.params))
        if missing or unexpected:
            raise ModelError(
                f"load_state: parameter names do not match the {self.name!r} model "
                f"(d={self.downsample}, options={self.options}); missing: {missing}; unexpected: {unexpected}. "
                "Build the model with the same name, downsample and options as the saved one."
            )
        bad = [f"{k}: model {tuple(v.shape)} vs state {tuple(np.shape(state[k]))}"
               for k, v in self.params.items() if tuple(np.shape(state[k])) != tuple(v.shape)]
        if bad:
            raise ModelError(
                "load_state: parameter shapes do not match (was the state saved with another downsample or "
                "options?): " + "; ".join(bad)
            )
        for k, v in self.params.items():
            v[...] = self.device.asarray(state[k], dtype=self.dtype)  # in place: arrays keep their identity

    def num_params(self) -> int:
        """Number of scalar parameters."""
        return int(sum(int(np.prod(v.shape)) for v in self.params.values()))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, downsample={self.downsample}, options={self.options}, "
                f"dtype={self.dtype.name}, device={self.device}, params={self.num_params():,})")
