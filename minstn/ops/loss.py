"""Softmax cross-entropy, one softmax per digit position, averaged over batch and positions.

Shape legend
    N   batch size
    P   positions per example (4 digits per canvas; 1 for a single-digit classifier)
    K   classes (10 digits)

    loss    = -(1 / (N*P)) * sum_{n, p} log softmax(logits[n, p])[labels[n, p]]
    dlogits = (softmax(logits) - onehot(labels)) / (N*P)

The softmax subtracts the row maximum first, so large logits do not overflow.
"""
from __future__ import annotations

import numpy as np

from minstn.backend import is_cupy, xp_of
from minstn.ops._validate import check_float_array

__all__ = ["softmax_cross_entropy"]


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of a softmax over the last axis, and its gradient.

    logits (N, P, K) float, labels (N, P) int in [0, K).  (2-D logits (N, K) with
    labels (N,) are accepted too and treated as P = 1.)
    Returns (loss, dlogits with the shape and dtype of logits): loss a Python float for NumPy
    arrays, a 0-d device array for CuPy ones (turning it into a float would stop the GPU until
    it is computed; float(loss) does that when needed). Labels on the host are checked to lie in
    [0, K); labels already on the GPU are not (the check would stop the GPU too).
    """
    op = "softmax_cross_entropy"
    check_float_array(op, "logits", logits)
    if logits.ndim not in (2, 3):
        raise ValueError(f"{op}: logits must be (N, P, K) or (N, K), got shape {tuple(logits.shape)}")
    if not (isinstance(labels, np.ndarray) or is_cupy(labels)):
        raise TypeError(f"{op}: labels must be an integer array, got {type(labels).__name__}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{op}: labels must have an integer dtype, got {labels.dtype}; cast with .astype(np.int64)")
    if tuple(labels.shape) != tuple(logits.shape[:-1]):
        raise ValueError(
            f"{op}: labels must have shape {tuple(logits.shape[:-1])} (logits without the class axis), "
            f"got {tuple(labels.shape)}"
        )
    xp = xp_of(logits)
    K = logits.shape[-1]
    if not is_cupy(labels) and labels.size and (int(labels.min()) < 0 or int(labels.max()) >= K):
        raise ValueError(
            f"{op}: labels must lie in [0, {K}) for {K} classes, got min {int(labels.min())}, max {int(labels.max())}"
        )
    if is_cupy(logits) and not is_cupy(labels):
        labels = xp.asarray(labels)
    M = labels.size  # N * P terms in the mean
    z = logits.reshape(M, K)  # (M, K)
    y = labels.reshape(M)  # (M,)
    shifted = z - z.max(axis=1, keepdims=True)  # (M, K), max 0 per row
    e = xp.exp(shifted)
    s = e.sum(axis=1, keepdims=True)  # (M, 1)
    rows = xp.arange(M)
    log_p = shifted[rows, y] - xp.log(s[:, 0])  # (M,) log-probability of the true class
    loss = -log_p.sum() / M if is_cupy(log_p) else -float(log_p.sum()) / M
    dz = e / s  # (M, K) softmax
    dz[rows, y] -= 1  # fresh array: in place is safe
    dz *= 1.0 / M
    return loss, dz.reshape(logits.shape)
