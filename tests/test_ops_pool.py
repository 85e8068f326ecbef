"""Max-pool and average-pool: gradient checks, loop references, ties, floors, clear errors.

Tolerance: float64 centred differences, required relative error <= 1e-6 (the noise is ~1e-10;
both ops are linear in x between kinks). Max-pool inputs are spaced 1e-2 apart so that no probe
x +- 1e-6 changes a window's winner (a tie is a kink where no derivative exists).
"""
import numpy as np
import pytest

from minstn.gradcheck import check_gradients
from minstn.ops import (
    avgpool2d_backward,
    avgpool2d_backward_naive,
    avgpool2d_forward,
    avgpool2d_forward_naive,
    maxpool2d_backward,
    maxpool2d_backward_naive,
    maxpool2d_forward,
    maxpool2d_forward_naive,
)

TOL = 1e-6


def _distinct(rng, shape):
    """Values with no ties: a random permutation of 0, 0.01, 0.02, ..."""
    n = int(np.prod(shape))
    return (rng.permutation(n) * 0.01 - 0.005 * n).reshape(shape).astype(np.float64)


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 1, 4, 6), (2, 2, 6, 6), (1, 2, 3, 2)])
def test_maxpool_gradients(rng, shape):
    x = _distinct(rng, shape)
    errs = check_gradients(maxpool2d_forward, maxpool2d_backward, {"x": x}, rng=rng)
    assert errs["x"] <= TOL, errs


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 2, 6, 4)])
def test_maxpool_matches_naive_with_ties(rng, shape):
    x = rng.integers(0, 3, shape).astype(np.float64)  # many ties
    out, cache = maxpool2d_forward(x)
    out_n, cache_n = maxpool2d_forward_naive(x)
    np.testing.assert_array_equal(out, out_n)
    dout = rng.standard_normal(out.shape)
    np.testing.assert_array_equal(maxpool2d_backward(dout, cache), maxpool2d_backward_naive(dout, cache_n))


def test_maxpool_tie_has_one_winner():
    x = np.ones((1, 1, 2, 2))
    out, cache = maxpool2d_forward(x)
    dx = maxpool2d_backward(np.full((1, 1, 1, 1), 3.0), cache)
    np.testing.assert_array_equal(dx[0, 0], [[3.0, 0.0], [0.0, 0.0]])  # the first maximum only


def test_maxpool_odd_sizes_floor(rng):
    x = _distinct(rng, (1, 1, 5, 7))
    out, cache = maxpool2d_forward(x)
    assert out.shape == (1, 1, 2, 3)
    dx = maxpool2d_backward(np.ones_like(out), cache)
    assert dx.shape == x.shape and np.all(dx[:, :, 4, :] == 0) and np.all(dx[:, :, :, 6] == 0)


@pytest.mark.parametrize("d", [1, 2, 3, 4])
@pytest.mark.parametrize("shape", [(2, 2, 7, 9), (1, 1, 5, 6)])
def test_avgpool_gradients(rng, d, shape):
    x = rng.standard_normal(shape)
    errs = check_gradients(avgpool2d_forward, avgpool2d_backward, {"x": x}, static={"d": d}, rng=rng)
    assert errs["x"] <= TOL, errs


@pytest.mark.parametrize("d", [1, 2, 3, 4])
def test_avgpool_matches_naive(rng, d):
    x = rng.standard_normal((2, 3, 9, 7))
    out, cache = avgpool2d_forward(x, d)
    out_n, cache_n = avgpool2d_forward_naive(x, d)
    assert out.shape == (2, 3, 9 // d, 7 // d)
    np.testing.assert_allclose(out, out_n, rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    np.testing.assert_allclose(avgpool2d_backward(dout, cache), avgpool2d_backward_naive(dout, cache_n), atol=1e-12)


def test_avgpool_d1_is_identity(rng):
    x = rng.standard_normal((1, 1, 5, 5))
    out, cache = avgpool2d_forward(x, 1)
    assert out is x


def test_avgpool_paper_sizes():
    x = np.zeros((1, 1, 100, 100), dtype=np.float32)
    assert [avgpool2d_forward(x, d)[0].shape[-1] for d in (1, 2, 3, 4)] == [100, 50, 33, 25]


def test_pools_keep_float32(rng):
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    out, cache = maxpool2d_forward(x)
    assert out.dtype == np.float32 and maxpool2d_backward(np.ones_like(out), cache).dtype == np.float32
    for d in (1, 2, 3):
        out, cache = avgpool2d_forward(x, d)
        assert out.dtype == np.float32 and avgpool2d_backward(np.ones_like(out), cache).dtype == np.float32


def test_pool_errors(rng):
    x = rng.standard_normal((1, 1, 5, 5))
    with pytest.raises(ValueError, match=r"maxpool2d_forward: x must be 4-D \(N, C, H, W\)"):
        maxpool2d_forward(x[0])
    with pytest.raises(ValueError, match="x must be at least 2x2 in its last two axes, got 1x5"):
        maxpool2d_forward(x[:, :, :1])
    with pytest.raises(TypeError, match="maxpool2d_forward: x must be float32 or float64"):
        maxpool2d_forward(x.astype(np.int32))
    with pytest.raises(ValueError, match="avgpool2d_forward: d must be >= 1, got 0"):
        avgpool2d_forward(x, 0)
    with pytest.raises(TypeError, match="d must be an int, got float 2.0"):
        avgpool2d_forward(x, 2.0)
    with pytest.raises(TypeError, match="d must be an int, got bool"):
        avgpool2d_forward(x, True)
    with pytest.raises(ValueError, match="d=6 is larger than the input 5x5"):
        avgpool2d_forward(x, 6)
    with pytest.raises(ValueError, match=r"avgpool2d_forward: x must be 4-D"):
        avgpool2d_forward(x[0, 0], 2)


def test_pool_backward_rejects_wrong_gradient_shape(rng):
    x = rng.standard_normal((2, 1, 6, 6))
    out, cache = maxpool2d_forward(x)
    with pytest.raises(ValueError, match=r"maxpool2d_backward: dout must have the forward output's shape \(2, 1, 3, 3\)"):
        maxpool2d_backward(out[:, :, :1], cache)
    for d in (1, 2):
        out, cache = avgpool2d_forward(x, d)
        with pytest.raises(ValueError, match=r"avgpool2d_backward: dout must have the forward output's shape"):
            avgpool2d_backward(out[:1], cache)


@pytest.mark.parametrize("shape", [(2, 3, 6, 8), (2, 3, 7, 5)])
def test_maxpool_channel_major_input_gives_same_values_and_layout(rng, shape):
    """A channel-major input (how conv2d_forward stores its output) pools to the same values,
    and dx comes back in channel-major memory, the order conv2d_backward reads fastest."""
    x = _distinct(rng, shape)
    x_cm = np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    out, cache = maxpool2d_forward(x)
    out_cm, cache_cm = maxpool2d_forward(x_cm)
    np.testing.assert_array_equal(out_cm, out)
    dout = rng.standard_normal(out.shape)
    dx, dx_cm = maxpool2d_backward(dout, cache), maxpool2d_backward(dout, cache_cm)
    np.testing.assert_array_equal(dx_cm, dx)
    assert dx.flags.c_contiguous and dx_cm.transpose(1, 0, 2, 3).flags.c_contiguous
    np.testing.assert_array_equal(dx, maxpool2d_backward_naive(dout, maxpool2d_forward_naive(x)[1]))


def test_maxpool_all_equal_window_sends_gradient_to_first(rng):
    """A constant region (a blank canvas under a conv gives exactly its bias) ties all four."""
    x = np.full((1, 2, 4, 6), 0.25)
    out, cache = maxpool2d_forward(x)
    dx = maxpool2d_backward(np.ones_like(out), cache)
    assert dx.sum() == out.size and np.all(dx[:, :, ::2, ::2] == 1)


def test_maxpool_after_a_padded_conv_returns_channel_major_dx(rng):
    """conv2d_forward's output is a view with gaps of a channel-major buffer; the pool detects
    the channel-major order from the strides and hands dx back in it."""
    from minstn.ops.fast import conv2d_forward

    a, _ = conv2d_forward(rng.standard_normal((3, 2, 6, 8)), rng.standard_normal((4, 2, 3, 3)), np.zeros(4), "same")
    assert not a.transpose(1, 0, 2, 3).flags.c_contiguous       # gaps: the padded columns
    out, cache = maxpool2d_forward(a)
    dx = maxpool2d_backward(np.ones_like(out), cache)
    assert dx.strides[1] > dx.strides[0]
    np.testing.assert_array_equal(dx, maxpool2d_backward(np.ones_like(out), maxpool2d_forward(np.ascontiguousarray(a))[1]))
