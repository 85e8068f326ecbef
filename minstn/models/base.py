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

import copy
import functools
import numbers
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from minstn import ops
from minstn.backend import Device, resolve_device, to_numpy
from minstn.models.layers import ModelError, check_images, check_labels

__all__ = ["Model", "CANVAS", "POSITIONS"]

CANVAS = 100    # canvas side in pixels (SPEC section 3)
POSITIONS = 4   # digits per canvas


def _check_parallel(chunk, workers) -> None:
    """Clear errors for the chunk / workers arguments of loss_and_grads."""
    if isinstance(chunk, bool) or not isinstance(chunk, numbers.Integral) or chunk < 0:
        raise ModelError(f"chunk must be an integer >= 0 (0 = the whole batch at once), got {chunk!r}")
    if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 1:
        raise ModelError(f"workers must be a positive integer (1 = no threads), got {workers!r}")
    if workers > 1 and chunk == 0:
        raise ModelError(f"workers={workers} needs chunk > 0: the workers share the batch's chunks")


@functools.lru_cache(maxsize=None)
def _pool(workers: int) -> ThreadPoolExecutor:
    """One thread pool per worker count, created on first use and kept for the process."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="minstn-chunk")


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

    def __init__(self, downsample: int, options: dict, dtype="float32", device="cpu", seed: int = 0):
        self.downsample = int(downsample)
        self.options = dict(options)
        self.dtype = np.dtype(dtype)
        self.device = device if isinstance(device, Device) else resolve_device(device)
        self.xp = self.device.xp
        host = self._init_params(np.random.default_rng(seed))   # {name: float64 host array}
        self.params = {k: self.device.asarray(v, dtype=self.dtype) for k, v in host.items()}
        self.grads = {k: self.xp.zeros_like(v) for k, v in self.params.items()}
        self.groups = {k: ("cls" if k.startswith("cls.") else "loc") for k in self.params}

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
        check_images(images, CANVAS, self.dtype, self.xp)
        return images

    def _dropout_rng(self, train: bool, rng):
        if train and self.options.get("dropout", 0.0) > 0 and rng is None:
            raise ModelError(
                f"{self.name}: training with dropout {self.options['dropout']} needs rng, a np.random.Generator "
                "(e.g. rng=np.random.default_rng(0)); use train=False for evaluation"
            )
        if rng is not None and not hasattr(rng, "random"):
            raise TypeError(f"rng must be a random Generator such as np.random.default_rng(0), got {type(rng).__name__}")
        return rng

    def loss_and_grads(self, images, labels, rng=None, *, chunk: int = 0, workers: int = 1):
        """One training step's worth of work: forward (train=True), softmax cross-entropy, backward.

        images (N, 1, 100, 100), labels (N, 4) ints. Returns (loss: float, logits (N, 4, 10));
        the gradients of the mean loss are in self.grads.

        chunk    0 (default): the whole batch in one pass. k > 0: the batch is cut into chunks of
                 at most k canvases, each chunk's gradient is computed on its own and they are
                 summed, weighted by chunk size: the same mean-loss gradient, up to rounding
                 (every canvas is independent of the others). Smaller activations stay in the
                 CPU's caches; on a 2-core machine chunks of 16 were the fastest on threads,
                 32 on worker processes (minstn.parallel; benchmarks/train.md).
        workers  threads that process the chunks concurrently (CPU only; NumPy releases the GIL in
                 its loops). With workers > 1 set the BLAS to one thread (minstn.host.set_blas_threads).
        Dropout: with chunks, chunk i draws its masks from a generator seeded by the i-th of
        n_chunks integers drawn from `rng` once per step, so the result does not depend on the
        number of workers or their timing; it differs from the unchunked step's masks.
        """
        images = self._images(images)
        check_labels(labels, images.shape[0], POSITIONS)
        _check_parallel(chunk, workers)
        if chunk == 0:
            return self._whole_loss_and_grads(images, labels, rng)
        return self._chunked_loss_and_grads(images, labels, rng, chunk, workers)

    def _whole_loss_and_grads(self, images, labels, rng):
        """The step on the whole batch at once (images already checked)."""
        labels = self.device.asarray(labels)
        logits, cache = self.forward(images, train=True, rng=rng)      # (N, 4, 10)
        loss, dlogits = ops.softmax_cross_entropy(logits, labels)
        self.backward(dlogits, cache)
        return float(loss), logits

    @staticmethod
    def _chunk_plan(N: int, chunk: int, rng) -> list:
        """[(lo, hi, seed)] for the chunks [lo, hi) of a batch of N canvases. The dropout seeds are
        drawn from `rng` once per step, n_chunks of them (None without rng), so a chunk's masks
        depend on its position in the batch, not on which worker computes it."""
        starts = list(range(0, N, chunk))
        seeds = rng.integers(0, 2**63 - 1, size=len(starts)) if rng is not None else [None] * len(starts)
        return [(lo, min(lo + chunk, N), None if seed is None else int(seed)) for lo, seed in zip(starts, seeds)]

    def _combine_chunks(self, N: int, results: list):
        """results [(n_i, loss_i, logits_i, grads_i)] in chunk order -> self.grads, (loss, logits):
        every sum weighted by n_i / N, in chunk order (the same bits whoever computed the chunks)."""
        results = [((n / N), loss, logits, grads) for n, loss, logits, grads in results]
        for k in self.params:
            self.grads[k] = sum(weight * grads[k] for weight, _, _, grads in results)
        loss = sum(weight * part_loss for weight, part_loss, _, _ in results)
        logits = self.xp.concatenate([r[2] for r in results], axis=0)
        return float(loss), logits

    def _chunked_loss_and_grads(self, images, labels, rng, chunk, workers):
        """loss_and_grads over chunks of the batch: each chunk runs on a shallow copy of the model
        (shared params, its own grads dict); the results are combined with weights n_i / N."""
        N = images.shape[0]
        plan = self._chunk_plan(N, chunk, rng)

        def one(part_plan):
            lo, hi, seed = part_plan
            part = copy.copy(self)                 # shares params; gets its own grads below
            part.grads = {}
            sub_rng = np.random.default_rng(seed) if seed is not None else None
            loss, logits = part._whole_loss_and_grads(images[lo:hi], labels[lo:hi], sub_rng)
            return hi - lo, loss, logits, part.grads

        if workers > 1 and self.device.kind == "cpu":
            results = list(_pool(int(workers)).map(one, plan))
        else:
            results = [one(part_plan) for part_plan in plan]
        return self._combine_chunks(N, results)

    def predict(self, images, batch_size: int = 256):
        """Evaluation-mode logits (no dropout), computed in batches: images (N, 1, 100, 100) ->
        host NumPy logits (N, 4, 10). images may be a host array; each batch is moved to the device."""
        if batch_size < 1:
            raise ModelError(f"batch_size must be at least 1, got {batch_size}")
        check_images(images, CANVAS, self.dtype, self.xp)  # the whole array once, before batching
        out = []
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
