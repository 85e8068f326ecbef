"""Softmax cross-entropy: value, gradient (finite differences), stability, clear errors.

Tolerance: float64 centred differences on the scalar loss, relative error <= 1e-6 (noise ~1e-9).
"""
import numpy as np
import pytest

from minstn.gradcheck import numerical_gradient, rel_error
from minstn.ops import softmax_cross_entropy

TOL = 1e-6


def test_loss_value(rng):
    logits = rng.standard_normal((3, 4, 10))
    labels = rng.integers(0, 10, (3, 4))
    loss, _ = softmax_cross_entropy(logits, labels)
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    expected = -np.mean(np.log(np.take_along_axis(p, labels[..., None], -1)))
    assert abs(loss - expected) < 1e-12 and isinstance(loss, float)


def test_uniform_logits_give_log_k():
    loss, _ = softmax_cross_entropy(np.zeros((2, 4, 10)), np.zeros((2, 4), dtype=np.int64))
    assert abs(loss - np.log(10)) < 1e-12


@pytest.mark.parametrize("shape", [(3, 4, 10), (1, 1, 10), (5, 7)])
def test_loss_gradient(rng, shape):
    logits = rng.standard_normal(shape)
    labels = rng.integers(0, shape[-1], shape[:-1])
    _, dlogits = softmax_cross_entropy(logits, labels)
    num = numerical_gradient(lambda z: softmax_cross_entropy(z, labels)[0], logits)
    assert rel_error(dlogits, num) <= TOL


def test_large_logits_are_stable():
    logits = np.array([[[1000.0, 0.0] + [0.0] * 8]], dtype=np.float32)
    loss, dlogits = softmax_cross_entropy(logits, np.array([[1]]))
    assert np.isfinite(loss) and abs(loss - 1000.0) < 1e-3 and np.all(np.isfinite(dlogits))
    assert dlogits.dtype == np.float32


def test_loss_errors(rng):
    logits = rng.standard_normal((2, 4, 10))
    labels = rng.integers(0, 10, (2, 4))
    with pytest.raises(TypeError, match="labels must have an integer dtype, got float64"):
        softmax_cross_entropy(logits, labels.astype(np.float64))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\) for 10 classes, got min 10, max 10"):
        softmax_cross_entropy(logits, np.full((2, 4), 10))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        softmax_cross_entropy(logits, np.full((2, 4), -1))
    with pytest.raises(ValueError, match=r"labels must have shape \(2, 4\)"):
        softmax_cross_entropy(logits, labels[:, :3])
    with pytest.raises(ValueError, match=r"logits must be \(N, P, K\) or \(N, K\)"):
        softmax_cross_entropy(logits[None], labels)
    with pytest.raises(TypeError, match="logits must be float32 or float64"):
        softmax_cross_entropy(logits.astype(np.int64), labels)
    with pytest.raises(TypeError, match="labels must be an integer array, got list"):
        softmax_cross_entropy(logits, labels.tolist())
