"""The CPU step cut into chunks: the same gradient as the whole batch, computed in pieces.

    plan = chunk_plan(N, chunk, rng)              # [(lo, hi, dropout seed)] per chunk
    loss, logits = combine(model, N, results)     # results [(n_i, loss_i, logits_i, grads_i)] in chunk order

Every canvas of a batch is independent of the others, so the gradient of the mean loss over N
canvases is the sum over chunks of (n_i / N) * (the gradient of chunk i's mean loss). Two things
make chunks faster on a CPU: the activations of a small chunk stay in the caches, and chunks can
run on several cores at once, each with its BLAS on one thread (ThreadChunks here, ProcessChunks
in minstn.training.speed.processes). `python -m minstn.bench train` times the step with and
without chunks (its "whole batch" column; benchmarks/train.md).

Dropout: chunk i draws its masks from a generator seeded by the i-th of n_chunks integers drawn
from the step's generator, so the result depends on the chunk size but not on the number of
workers or their timing (it differs from the whole batch's masks).
"""
from __future__ import annotations

import copy
import functools
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["chunk_plan", "combine", "ThreadChunks"]


def chunk_plan(N: int, chunk: int, rng) -> list:
    """[(lo, hi, seed)] for the chunks [lo, hi) of a batch of N canvases, `chunk` canvases each (the
    last may be smaller). The dropout seeds are drawn from `rng` once per step (None without rng)."""
    starts = list(range(0, N, chunk))
    seeds = rng.integers(0, 2**63 - 1, size=len(starts)) if rng is not None else [None] * len(starts)
    return [(lo, min(lo + chunk, N), None if seed is None else int(seed)) for lo, seed in zip(starts, seeds)]


def combine(model, N: int, results: list):
    """results [(n_i, loss_i, logits_i, grads_i)] in chunk order -> model.grads, and returns (loss,
    logits). Every sum is weighted by n_i / N and taken in chunk order, so whoever computed the
    chunks (threads, processes) the bits are the same."""
    weighted = [(n / N, loss, logits, grads) for n, loss, logits, grads in results]
    for k in model.params:
        model.grads[k] = sum(w * grads[k] for w, _, _, grads in weighted)
    loss = sum(w * part_loss for w, part_loss, _, _ in weighted)
    logits = model.xp.concatenate([r[2] for r in weighted], axis=0)
    return float(loss), logits


@functools.lru_cache(maxsize=None)
def _pool(workers: int) -> ThreadPoolExecutor:
    """One thread pool per worker count, created on first use and kept for the process."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="minstn-chunk")


class ThreadChunks:
    """A step runner: the batch's chunks on `workers` threads (NumPy releases the GIL inside its
    loops), each on a shallow copy of the model that shares its parameters and has its own grads."""

    def __init__(self, model, chunk: int, workers: int = 1):
        self.model, self.chunk, self.workers = model, int(chunk), int(workers)

    def loss_and_grads(self, images, labels, rng=None):
        model = self.model
        images, labels = model.check_batch(images, labels)
        N = images.shape[0]

        def one(part):
            lo, hi, seed = part
            view = copy.copy(model)              # the same params; its own grads dict
            view.grads = {}
            loss, logits = view.loss_and_grads(images[lo:hi], labels[lo:hi],
                                               np.random.default_rng(seed) if seed is not None else None)
            return hi - lo, loss, logits, view.grads

        plan = chunk_plan(N, self.chunk, rng)
        if self.workers > 1 and model.device.kind == "cpu":
            results = list(_pool(self.workers).map(one, plan))
        else:
            results = [one(part) for part in plan]
        return combine(model, N, results)

    def close(self) -> None:
        pass
