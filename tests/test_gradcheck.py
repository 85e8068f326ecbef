"""The gradient checker itself: it must pass right gradients and catch wrong ones."""
import numpy as np
import pytest

from minstn.gradcheck import GradientCheckError, check_gradients, numerical_gradient, rel_error
from minstn.ops import linear_backward, linear_forward, relu_forward


def test_rel_error_basics():
    assert rel_error(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    assert abs(rel_error(np.array([1.0]), np.array([1.1])) - 0.1 / 2.1) < 1e-15
    assert rel_error(np.zeros(3), np.zeros(3)) == 0.0  # 0 / 0 counts as agreement


def test_numerical_gradient_of_square(rng):
    x = rng.standard_normal((3, 4))
    dout = rng.standard_normal((3, 4))
    num = numerical_gradient(lambda v: v**2, x, dout)
    assert rel_error(num, 2 * x * dout) < 1e-8


def test_numerical_gradient_of_scalar(rng):
    x = rng.standard_normal(5)
    num = numerical_gradient(lambda v: np.sum(np.sin(v)), x)
    assert rel_error(num, np.cos(x)) < 1e-8


def test_numerical_gradient_leaves_x_alone(rng):
    x = rng.standard_normal(6)
    before = x.copy()
    numerical_gradient(lambda v: v * 3, x, np.ones(6))
    np.testing.assert_array_equal(x, before)


def test_numerical_gradient_with_aliasing_output(rng):
    """An op may return its input (avgpool d=1, dropout p=0); the checker copies outputs."""
    x = rng.standard_normal(4)
    num = numerical_gradient(lambda v: v, x, np.full(4, 2.0))
    np.testing.assert_allclose(num, 2.0, rtol=1e-9)


def test_check_gradients_passes_a_right_backward(rng):
    inputs = {"x": rng.standard_normal((3, 4)), "w": rng.standard_normal((4, 2)), "b": rng.standard_normal(2)}
    errs = check_gradients(linear_forward, linear_backward, inputs, rng=rng)
    assert set(errs) == {"x", "w", "b"} and max(errs.values()) < 1e-8


def test_check_gradients_catches_a_wrong_backward(rng):
    def wrong_backward(dout, cache):
        dx, dw, db = linear_backward(dout, cache)
        return dx, 1.01 * dw, db  # a 1% mistake in dw only

    inputs = {"x": rng.standard_normal((3, 4)), "w": rng.standard_normal((4, 2)), "b": rng.standard_normal(2)}
    errs = check_gradients(linear_forward, wrong_backward, inputs, rng=rng)
    assert errs["w"] > 1e-3 and errs["x"] < 1e-8 and errs["b"] < 1e-8


def test_check_gradients_catches_relu_without_mask(rng):
    def leaky_backward(dout, cache):  # forgets the mask: passes the gradient everywhere
        return dout.copy()

    x = rng.standard_normal((4, 5))
    errs = check_gradients(relu_forward, leaky_backward, {"x": x}, rng=rng)
    assert errs["x"] > 0.5


def test_check_gradients_errors(rng):
    x = rng.standard_normal((3, 4))
    w, b = rng.standard_normal((4, 2)), rng.standard_normal(2)
    with pytest.raises(GradientCheckError, match="input 'x' must be a float64 NumPy array, got float32"):
        check_gradients(linear_forward, linear_backward, {"x": x.astype(np.float32), "w": w, "b": b})
    with pytest.raises(GradientCheckError, match="backward returned 3 gradients for 2 inputs"):
        check_gradients(lambda x, w: linear_forward(x, w, b), linear_backward, {"x": x, "w": w})
    with pytest.raises(GradientCheckError, match="inputs is empty"):
        check_gradients(linear_forward, linear_backward, {})
    with pytest.raises(GradientCheckError, match="x must be float64"):
        numerical_gradient(lambda v: v, x.astype(np.float32), np.ones((3, 4)))
    with pytest.raises(GradientCheckError, match=r"shapes differ, \(2,\) vs \(3,\)"):
        rel_error(np.zeros(2), np.zeros(3))
