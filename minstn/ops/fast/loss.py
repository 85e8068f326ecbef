"""The fast softmax cross-entropy: minstn.ops.loss's on NumPy arrays, ONE CUDA kernel on CuPy
arrays (kernels/train.cu) where the array code takes some fifteen launches. Same numbers to
rounding (the sums over the classes and the rows are added in another order) - tested.

Shape legend
    N   batch size     P   positions per example (4 digits)     K   classes (10)     M = N * P

    softmax_cross_entropy(logits (N, P, K), labels (N, P)) -> (loss, dlogits (N, P, K))
    loss    = -(1 / M) sum log softmax(logits)[label]   (a 0-d device array on the GPU)
    dlogits = (softmax(logits) - onehot(labels)) / M

The kernel runs as one block of REDUCE_BLOCK threads, each taking every REDUCE_BLOCK-th row,
then adds the rows' log-probabilities by a tree reduction: deterministic. Labels on the GPU are
not range-checked (that would stop the GPU); a label outside [0, K) makes the loss NaN, which
the trainer reports. Labels on the host are checked, as in the plain op.
"""
from __future__ import annotations

import numpy as np

from minstn.backend import is_cupy, xp_of
from minstn.ops import loss as plain
from minstn.ops._validate import check_float_array
from minstn.ops.fast import cuda as _cuda

__all__ = ["softmax_cross_entropy", "REDUCE_BLOCK"]

REDUCE_BLOCK = 256  # threads of the kernel's one block; equals TRAIN_REDUCE_BLOCK in kernels/train.cu


def softmax_cross_entropy(logits, labels):
    """minstn.ops.softmax_cross_entropy; on CuPy logits one kernel launch."""
    usable = (is_cupy(logits) and logits.ndim in (2, 3) and (isinstance(labels, np.ndarray) or is_cupy(labels))
              and labels.dtype.kind in "iu" and tuple(labels.shape) == tuple(logits.shape[:-1]))
    if not usable:                                            # NumPy arrays, and the plain op's errors
        return plain.softmax_cross_entropy(logits, labels)
    check_float_array("softmax_cross_entropy", "logits", logits)
    xp = xp_of(logits)
    K = logits.shape[-1]
    if not is_cupy(labels):                                   # host labels: checked, then copied over
        if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= K):
            return plain.softmax_cross_entropy(logits, labels)  # raises the plain op's ValueError
        labels = xp.asarray(labels)
    M = labels.size                                           # N * P rows
    z = xp.ascontiguousarray(logits).reshape(M, K)            # (M, K)
    y = xp.ascontiguousarray(labels.reshape(M).astype(xp.int64, copy=False))   # (M,) as long long
    out = xp.empty(M * K + 1, dtype=logits.dtype)              # dlogits and the loss, one allocation
    dz, loss = out[: M * K].reshape(M, K), out[M * K:]
    with z.device:                                            # one block (the kernel reduces over it)
        _cuda.kernel("softmax_cross_entropy", z)((1,), (REDUCE_BLOCK,), (z, y, dz, loss, *_cuda.sizes(M, K)))
    return loss.reshape(()), dz.reshape(logits.shape)
