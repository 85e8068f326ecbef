"""Chunked gradients in worker PROCESSES: the CPU training step on every core without the GIL.

    from minstn.training.speed.processes import ProcessChunks
    with ProcessChunks(model, chunk=32, workers=2) as runner:
        loss, logits = runner.loss_and_grads(images, labels, rng)   # fills model.grads

Why processes. ThreadChunks (chunks.py) runs the chunks of a batch on threads.
NumPy releases the GIL inside its loops, but the Python between the calls (hundreds of small ops
per chunk), NumPy's own bookkeeping and the allocator still take turns. Worker processes share
nothing but what is put in shared memory. `python -m minstn.bench train` times the step both ways
(its "threads" column; benchmarks/train.md).

How a step runs.
    1. The parent copies the model's parameters into one shared-memory block that every worker's
       model reads in place (its parameter arrays are views of the block): one memcpy per step.
    2. Chunk i (canvases [i*chunk, (i+1)*chunk) of the batch) goes to worker i % workers through a
       pipe, with its labels and the seed of its dropout generator.
    3. The worker runs model.loss_and_grads on it, as ThreadChunks does for one chunk, writes the chunk's gradients into shared-memory slot i and sends back (loss, logits).
    4. The parent sums the slots in chunk order, weighted by chunk size.

Steps 2-4 are the thread version's arithmetic in the same order, so for the same rng the result
is bit for bit the one of ThreadChunks (tested). A worker that
raises sends its traceback, and the parent raises ParallelError with it; a worker that dies is
reported the same way. Workers ignore Ctrl-C: the parent handles it and close() stops them.

CPU only (on a GPU the whole batch is one set of kernels). Workers start with the 'spawn' method
(a fresh interpreter each, about a second), so a runner is meant to live for a whole run.
"""
from __future__ import annotations

import multiprocessing as mp
import signal
import traceback
import weakref
from multiprocessing import shared_memory

import numpy as np

from minstn.training.speed.chunks import chunk_plan, combine

__all__ = ["ProcessChunks", "ParallelError"]


class ParallelError(RuntimeError):
    """A worker process failed or could not be started."""


class _Block:
    """A shared-memory block viewed as {name: array} in one layout (names, shapes, one dtype)."""

    def __init__(self, layout, dtype, name=None):
        self.dtype = np.dtype(dtype)
        size = max(1, sum(int(np.prod(shape)) for _, shape in layout) * self.dtype.itemsize)
        self.shm = shared_memory.SharedMemory(name=name, create=name is None, size=size)
        flat = np.ndarray((size // self.dtype.itemsize,), dtype=self.dtype, buffer=self.shm.buf)
        self.arrays, at = {}, 0
        for key, shape in layout:
            n = int(np.prod(shape))
            self.arrays[key] = flat[at:at + n].reshape(shape)
            at += n

    def close(self, unlink: bool = False) -> None:
        self.arrays = {}                 # drop the views first: the buffer cannot close under them
        try:
            self.shm.close()
        except BufferError:              # a view is still alive somewhere: the mapping goes at exit
            pass
        if unlink:
            try:
                self.shm.unlink()        # the name goes now, the memory when the last mapping closes
            except FileNotFoundError:
                pass


def _release(blocks) -> None:
    """Close and unlink the parent's blocks (also run by a finaliser if close() was never called)."""
    for block in blocks:
        block.close(unlink=True)
    blocks.clear()


def _worker_main(conn, spec, layout, params_name) -> None:
    """A worker process: build the model, point its parameters at the shared block, then serve
    ('step', ...) messages until ('stop',). Runs in a fresh interpreter (spawn)."""
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):     # stop signals are the parent's to handle (it stops us)
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    from minstn.models import build_model
    from minstn.training.speed import host

    host.set_blas_threads(1)        # the processes are the parallelism
    host.keep_freed_memory()
    name, downsample, dtype, options = spec
    model = build_model(name, downsample, dtype=dtype, device="cpu", seed=0, **options)
    params = _Block(layout, dtype, name=params_name)
    model.params = params.arrays                  # read in place: the parent writes them each step
    slots = {}                                    # shared-memory name -> _Block (gradient slots)
    try:
        while True:
            msg = conn.recv()
            if msg[0] == "stop":
                break
            _, work = msg                         # [(slot name, images, labels, seed), ...]
            try:
                out = []
                for slot_name, images, labels, seed in work:
                    if slot_name not in slots:
                        slots[slot_name] = _Block(layout, dtype, name=slot_name)
                    rng = np.random.default_rng(int(seed)) if seed is not None else None
                    loss, logits = model.loss_and_grads(images, labels, rng)
                    for k, g in slots[slot_name].arrays.items():
                        g[...] = model.grads[k]
                    out.append((loss, logits))
                conn.send(("ok", out))
            except Exception:               # noqa: BLE001 - any failure goes back to the parent
                conn.send(("error", traceback.format_exc()))
    except (EOFError, KeyboardInterrupt):   # the parent went away
        pass
    finally:
        for block in slots.values():
            block.close()
        params.close()
        conn.close()


class ProcessChunks:
    """Worker processes that compute a CPU model's chunked gradients (see the module docstring).

    model    a CPU minstn model; its params are read at every step, its grads are replaced.
    chunk    canvases per chunk (>= 1)
    workers  number of processes (>= 1); each runs its BLAS on one thread.
    """

    def __init__(self, model, chunk: int, workers: int):
        if model.device.kind != "cpu":
            raise ParallelError(f"worker processes are for CPU models; this model is on {model.device} "
                                "(on the GPU run the whole batch at once: chunk 0, one worker)")
        for name, v in (("chunk", chunk), ("workers", workers)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ParallelError(f"{name} must be a positive integer, got {v!r}")
        self.model = model
        self.chunk = chunk
        self.workers = workers
        self._layout = [(k, tuple(v.shape)) for k, v in model.params.items()]
        self._blocks = []                 # every block the parent created, unlinked at close
        self._finalizer = weakref.finalize(self, _release, self._blocks)
        self._params = self._new_block()
        self._slots = []                  # gradient slot i holds chunk i's gradients
        self._procs, self._conns = [], []
        spec = (model.name, model.downsample, model.dtype.name, dict(model.options))
        ctx = mp.get_context("spawn")
        try:
            for w in range(workers):
                parent, child = ctx.Pipe()
                p = ctx.Process(target=_worker_main, args=(child, spec, self._layout, self._params.shm.name),
                                name=f"minstn-worker-{w}", daemon=True)
                p.start()
                child.close()
                self._procs.append(p)
                self._conns.append(parent)
        except Exception as e:
            self.close()
            raise ParallelError(f"could not start {workers} worker process(es): {e}") from e

    def _new_block(self) -> _Block:
        block = _Block(self._layout, self.model.dtype)
        self._blocks.append(block)
        return block

    def loss_and_grads(self, images, labels, rng=None):
        """ThreadChunks(model, chunk).loss_and_grads(images, labels, rng) computed by the worker
        processes: same checks, same chunks and dropout seeds, same result; fills model.grads and
        returns (loss: float, logits (N, 4, 10))."""
        if not self._procs:
            raise ParallelError("this ProcessChunks is closed; make a new one")
        model = self.model
        images, labels = model.check_batch(images, labels)
        N = images.shape[0]
        plan = chunk_plan(N, self.chunk, rng)                    # the thread version's chunks and seeds
        while len(self._slots) < len(plan):
            self._slots.append(self._new_block())
        for k, v in model.params.items():
            self._params.arrays[k][...] = v
        labels = np.asarray(labels)
        work = [[] for _ in self._procs]
        for i, (lo, hi, seed) in enumerate(plan):
            work[i % self.workers].append((self._slots[i].shm.name, images[lo:hi], labels[lo:hi], seed))
        for w in range(self.workers):
            if work[w]:
                self._send(w, ("step", work[w]))
        replies = [self._receive(w) if work[w] else [] for w in range(self.workers)]
        results = []                                            # in chunk order
        for i, (lo, hi, _) in enumerate(plan):
            loss, logits = replies[i % self.workers][i // self.workers]
            results.append((hi - lo, loss, logits, self._slots[i].arrays))
        return combine(model, N, results)

    def _send(self, w: int, msg) -> None:
        try:
            self._conns[w].send(msg)
        except (BrokenPipeError, OSError) as e:
            raise ParallelError(self._dead(w)) from e

    def _receive(self, w: int):
        try:
            status, payload = self._conns[w].recv()
        except (EOFError, OSError) as e:
            raise ParallelError(self._dead(w)) from e
        if status == "error":
            raise ParallelError(f"worker process {w} failed:\n{payload}")
        return payload

    def _dead(self, w: int) -> str:
        p = self._procs[w]
        p.join(timeout=1.0)
        return (f"worker process {w} ({p.name}) stopped unexpectedly (exit code {p.exitcode}); "
                "out of memory? Try fewer workers or a smaller --chunk, or --parallel thread")

    def close(self) -> None:
        """Stop the workers and free the shared memory (safe to call twice)."""
        for conn in self._conns:
            try:
                conn.send(("stop",))
            except (BrokenPipeError, OSError):
                pass
        for p in self._procs:
            p.join(timeout=5.0)
            if p.is_alive():
                p.terminate()
                p.join(timeout=1.0)
        for conn in self._conns:
            conn.close()
        self._procs, self._conns = [], []
        self._slots = []
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
