"""How a training step is computed, fast: the one interface between the training loop and the
machinery that makes two CPU cores (or a GPU) go fast. The models know nothing of it.

    runner = make_runner(model, chunk, workers, parallel)      # a step runner
    loss, logits = runner.loss_and_grads(images, labels, rng)  # fills model.grads, like the model's own
    runner.close()                                             # stop worker processes, free shared memory

Runners (each gives the same gradient as the whole batch, up to rounding):
    WholeBatch     model.loss_and_grads itself (the GPU, and the CPU with --chunk 0)
    ThreadChunks   the batch in chunks, on worker threads (chunks.py)
    ProcessChunks  the batch in chunks, on worker processes with shared memory (processes.py)

resolve(...) turns the --chunk / --workers / --parallel settings into what runs on this machine;
host.py sets the BLAS threads and the allocator.
"""
from __future__ import annotations

import numpy as np

from minstn.training.speed.chunks import ThreadChunks, chunk_plan, combine

__all__ = ["WholeBatch", "ThreadChunks", "make_runner", "default_chunk", "resolve", "chunk_plan", "combine",
           "SpeedError"]


class SpeedError(ValueError):
    """A --chunk / --workers / --parallel setting that cannot work (the message says which)."""


class WholeBatch:
    """A step runner that is the model's own loss_and_grads: the whole batch in one pass.

    On a GPU the dropout masks are drawn there: each step takes one seed from the run's (host)
    generator, whose state the checkpoints keep, and draws the masks from a device generator
    seeded with it, so no mask is copied from the host and a resumed run draws the same ones."""

    def __init__(self, model):
        self.model = model

    def loss_and_grads(self, images, labels, rng=None):
        if rng is not None and self.model.device.kind != "cpu" and isinstance(rng, np.random.Generator):
            with self.model.device.scope():
                rng = self.model.xp.random.default_rng(int(rng.integers(0, 2**63 - 1)))
        return self.model.loss_and_grads(images, labels, rng)

    def close(self) -> None:
        pass


def default_chunk(batch_size: int, workers: int, parallel: str) -> int:
    """The CPU chunk size when --chunk is not given:

    processes: one chunk per worker, at most 32 canvases (batch 64 on 2 workers -> 32): each chunk
               pays the per-op overheads once, so fewer, larger chunks win, until a chunk's
               activations no longer fit the caches (so one worker still gets two chunks of 32);
    threads:   16 (more, smaller chunks let the threads overlap their GIL-holding parts).

    `python -m minstn.bench train --chunk C` times another chunk size beside the default
    (benchmarks/train.md).
    """
    if parallel == "thread":
        return 16
    return max(1, min(32, -(-batch_size // max(1, workers))))


def resolve(chunk, workers, parallel: str, batch_size: int, device_kind: str, cores: int) -> tuple:
    """(chunk, workers) to use: the settings given (None = not given), or the defaults for the device.

    CPU: one worker per core and chunks of default_chunk(...) canvases, but never more workers than
    a batch has chunks (with --batch-size 4 there is one chunk, so one worker and no pool of
    processes). GPU: always the whole batch in one pass on one worker, whatever a CPU run saved
    (chunks would only shrink the kernels); the dropout masks then differ from the CPU run's.
    """
    if device_kind != "cpu":
        return 0, 1
    workers = workers if workers is not None else (max(1, cores) if chunk != 0 else 1)
    chunk = default_chunk(batch_size, workers, parallel) if chunk is None else chunk
    if chunk > 0:
        workers = min(workers, -(-batch_size // chunk))   # idle workers would only cost start-up time
    return chunk, workers


def make_runner(model, chunk: int, workers: int, parallel: str = "process"):
    """The step runner for these (resolved) settings. Worker processes start here: close() the
    runner (or use it in a `with` block) to stop them."""
    if chunk < 0 or workers < 1:
        raise SpeedError(f"chunk must be >= 0 and workers >= 1, got chunk {chunk}, workers {workers}")
    if workers > 1 and chunk == 0:
        raise SpeedError(f"--workers {workers} needs --chunk above 0: the workers share a batch's chunks")
    if chunk == 0:
        return WholeBatch(model)
    if workers > 1 and parallel == "process" and model.device.kind == "cpu":
        from minstn.training.speed.processes import ProcessChunks

        return ProcessChunks(model, chunk, workers)
    return ThreadChunks(model, chunk, workers)
