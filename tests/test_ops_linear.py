"""linear, relu, dropout: gradient checks, behaviour, dtypes, clear errors.

Tolerance: float64 centred differences, relative error <= 1e-6 (noise ~1e-10; these ops are
linear or piecewise linear). ReLU inputs are kept >= 0.1 away from its kink at 0.
"""
import numpy as np
import pytest

from minstn.gradcheck import check_gradients
from minstn.ops import (
    dropout_backward,
    dropout_forward,
    linear_backward,
    linear_forward,
    linear_relu_backward,
    linear_relu_forward,
    relu_backward,
    relu_forward,
)

TOL = 1e-6


@pytest.mark.parametrize("N,D,M", [(3, 5, 4), (1, 7, 2)])
def test_linear_gradients(rng, N, D, M):
    inputs = {"x": rng.standard_normal((N, D)), "w": rng.standard_normal((D, M)), "b": rng.standard_normal(M)}
    errs = check_gradients(linear_forward, linear_backward, inputs, rng=rng)
    assert max(errs.values()) <= TOL, errs


def test_linear_value(rng):
    x, w, b = rng.standard_normal((3, 5)), rng.standard_normal((5, 4)), rng.standard_normal(4)
    np.testing.assert_allclose(linear_forward(x, w, b)[0], x @ w + b, rtol=1e-14)


@pytest.mark.parametrize("N,D,M", [(3, 5, 4), (1, 7, 2)])
def test_linear_relu_gradients_and_composition(rng, N, D, M):
    """linear_relu is linear_forward then relu_forward (bit for bit, plain and fast on NumPy); its
    pre-activations are random normal sums, far from the kink at 0 next to h = 1e-5."""
    import minstn.ops.fast as fast

    inputs = {"x": rng.standard_normal((N, D)), "w": rng.standard_normal((D, M)), "b": rng.standard_normal(M)}
    errs = check_gradients(linear_relu_forward, linear_relu_backward, inputs, rng=rng)
    assert max(errs.values()) <= TOL, errs
    a, c_lin = linear_forward(**inputs)
    ref, c_relu = relu_forward(a)
    dout = rng.standard_normal(ref.shape)
    ref_grads = linear_backward(relu_backward(dout, c_relu), c_lin)
    for forward, backward in ((linear_relu_forward, linear_relu_backward),
                              (fast.linear_relu_forward, fast.linear_relu_backward)):
        out, cache = forward(**inputs)
        np.testing.assert_array_equal(out, ref)
        for g, g_ref in zip(backward(dout, cache), ref_grads):
            np.testing.assert_array_equal(g, g_ref)
    with pytest.raises(TypeError, match="cache is not from linear_relu_forward"):
        linear_relu_backward(dout, c_lin)
    with pytest.raises(ValueError, match="linear_relu_forward: x has 3 features"):
        linear_relu_forward(inputs["x"][:, :3], inputs["w"], inputs["b"])   # D is 5 or 7


def test_relu_gradients(rng):
    x = rng.standard_normal((4, 6))
    x = np.where(np.abs(x) < 0.1, 0.5, x)  # away from the kink
    errs = check_gradients(relu_forward, relu_backward, {"x": x}, rng=rng)
    assert errs["x"] <= TOL, errs


def test_relu_value_and_zero_at_kink():
    x = np.array([[-1.0, 0.0, 2.0]])
    out, cache = relu_forward(x)
    np.testing.assert_array_equal(out, [[0.0, 0.0, 2.0]])
    np.testing.assert_array_equal(relu_backward(np.ones_like(x), cache), [[0.0, 0.0, 1.0]])


def test_dropout_gradients_with_fixed_mask(rng):
    x = rng.standard_normal((5, 6))

    def forward(x):  # a fresh generator with the same seed: the same mask on every call
        return dropout_forward(x, 0.4, np.random.default_rng(7))

    errs = check_gradients(forward, dropout_backward, {"x": x}, rng=rng)
    assert errs["x"] <= TOL, errs


def test_dropout_statistics(rng):
    x = np.ones((200, 500))
    out, mask = dropout_forward(x, 0.25, rng)
    kept = out != 0
    assert abs(kept.mean() - 0.75) < 0.01  # P(keep) = 1 - p
    np.testing.assert_allclose(out[kept], 1 / 0.75)  # inverted scaling
    assert abs(out.mean() - 1.0) < 0.02  # expectation preserved


def test_dropout_p0_is_identity(rng):
    x = rng.standard_normal((3, 4))
    out, cache = dropout_forward(x, 0.0, None)
    assert out is x
    dout = rng.standard_normal((3, 4))
    np.testing.assert_array_equal(dropout_backward(dout, cache), dout)


def test_float32_kept(rng):
    x = rng.standard_normal((3, 5)).astype(np.float32)
    w = rng.standard_normal((5, 4)).astype(np.float32)
    b = np.zeros(4, np.float32)
    out, cache = linear_forward(x, w, b)
    assert out.dtype == np.float32 and all(g.dtype == np.float32 for g in linear_backward(out, cache))
    out, cache = relu_forward(x)
    assert out.dtype == np.float32 and relu_backward(out, cache).dtype == np.float32
    out, cache = dropout_forward(x, 0.5, rng)
    assert out.dtype == np.float32 and dropout_backward(out, cache).dtype == np.float32


def test_linear_relu_dropout_errors(rng):
    x, w, b = rng.standard_normal((3, 5)), rng.standard_normal((5, 4)), rng.standard_normal(4)
    with pytest.raises(ValueError, match=r"x has 4 features but w is \(D, M\) = \(5, 4\)"):
        linear_forward(x[:, :4], w, b)
    with pytest.raises(ValueError, match=r"b must have shape \(M,\) = \(4,\)"):
        linear_forward(x, w, b[:3])
    with pytest.raises(ValueError, match=r"x must be 2-D \(N, D\)"):
        linear_forward(x[0], w, b)
    with pytest.raises(TypeError, match="b has dtype float32 but x has dtype float64"):
        linear_forward(x, w, b.astype(np.float32))
    with pytest.raises(TypeError, match="relu_forward: x must be float32 or float64, got dtype int64"):
        relu_forward(np.arange(3))
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\) \(the probability of dropping\), got 1.0"):
        dropout_forward(x, 1.0, rng)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\)"):
        dropout_forward(x, -0.1, rng)
    with pytest.raises(TypeError, match="p must be a float in"):
        dropout_forward(x, "0.5", rng)
    with pytest.raises(TypeError, match="rng must be a random Generator"):
        dropout_forward(x, 0.5, 42)


def test_backward_rejects_wrong_gradient_shape(rng):
    """A (1, D) gradient would broadcast silently against (N, D); it must be an error instead."""
    x, w, b = rng.standard_normal((3, 5)), rng.standard_normal((5, 4)), rng.standard_normal(4)
    out, cache = linear_forward(x, w, b)
    with pytest.raises(ValueError, match=r"linear_backward: dout must have the forward output's shape \(3, 4\), got \(1, 4\)"):
        linear_backward(out[:1], cache)
    out, cache = relu_forward(x)
    with pytest.raises(ValueError, match=r"relu_backward: dout must have the forward output's shape \(3, 5\)"):
        relu_backward(out[:1], cache)
    out, cache = dropout_forward(x, 0.5, rng)
    with pytest.raises(ValueError, match=r"dropout_backward: dout must have the forward output's shape"):
        dropout_backward(out[:, :2], cache)
    with pytest.raises(TypeError, match="linear_backward: dout must be a NumPy or CuPy array, got list"):
        linear_backward([[1.0]], linear_forward(x, w, b)[1])
