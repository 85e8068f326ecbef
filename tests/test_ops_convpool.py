"""conv2d_maxpool: the fused conv -> 2x2 max-pool op. Gradient checks, agreement with the two
separate ops (values and gradients, ties included), dtypes, layouts, clear errors. Then the same
ops followed by their ReLU (conv2d_maxpool_relu, conv2d_relu), plain and fast.

Tolerance: float64 centred differences (h = 1e-5) of a piecewise-bilinear function away from its
kinks; random normal inputs keep every pooling window's maximum well apart from the runner-up
compared with h, so the error is ~1e-9 relative; we require <= 1e-6 (a wrong phase or shift gives
errors of order 1).
"""
import numpy as np
import pytest

from minstn.gradcheck import check_gradients
from minstn.ops import conv2d_backward, conv2d_forward, maxpool2d_backward, maxpool2d_forward
from minstn.ops.fast import conv2d_maxpool_backward, conv2d_maxpool_forward
from tests.test_ops_conv import _inputs

TOL = 1e-6

# (N, C, H, W, F, kh, kw, padding): odd and even sizes, batch 1, padding 0/1/2/'same'/'valid',
# 1x1/3x3/5x5 and a non-square kernel; the models' case is 3x3 'same'
CASES = [
    (2, 3, 5, 7, 4, 3, 3, 1),
    (1, 2, 6, 5, 3, 3, 3, 0),
    (2, 2, 6, 6, 3, 3, 3, "same"),
    (1, 3, 7, 6, 2, 5, 5, "valid"),
    (2, 1, 4, 5, 2, 1, 1, "same"),
    (1, 2, 5, 6, 2, 5, 5, 2),
    (1, 2, 4, 5, 3, 2, 3, 0),
    (3, 1, 9, 9, 2, 3, 3, 1),
]


def _separate(x, w, b, padding, dout, need_dx=True):
    a, c_conv = conv2d_forward(x, w, b, padding)
    out, c_pool = maxpool2d_forward(a)
    grads = conv2d_backward(maxpool2d_backward(dout, c_pool), c_conv, need_dx=need_dx)
    return out, grads


@pytest.mark.parametrize("case", CASES)
def test_convpool_gradients(rng, case):
    N, C, H, W, F, kh, kw, padding = case
    x, w, b = _inputs(rng, N, C, H, W, F, kh, kw)
    errs = check_gradients(conv2d_maxpool_forward, conv2d_maxpool_backward, {"x": x, "w": w, "b": b},
                           static={"padding": padding}, rng=rng)
    assert max(errs.values()) <= TOL, errs


@pytest.mark.parametrize("case", CASES)
def test_convpool_equals_conv_then_maxpool(rng, case):
    N, C, H, W, F, kh, kw, padding = case
    x, w, b = _inputs(rng, N, C, H, W, F, kh, kw)
    out, cache = conv2d_maxpool_forward(x, w, b, padding)
    dout = rng.standard_normal(out.shape)
    ref, ref_grads = _separate(x, w, b, padding, dout)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    for g, g_ref in zip(conv2d_maxpool_backward(dout, cache), ref_grads):
        assert g.shape == g_ref.shape
        np.testing.assert_allclose(g, g_ref, rtol=1e-12, atol=1e-12)
    dx, dw, db = conv2d_maxpool_backward(dout, cache, need_dx=False)
    assert dx is None
    np.testing.assert_allclose(dw, ref_grads[1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(db, ref_grads[2], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scale", [0, 1])
def test_convpool_ties_follow_the_first_maximum_rule(rng, scale):
    """Small integers make exact ties common (scale 0: every window ties); the fused op must pick
    the same winner as maxpool2d (the first in (0,0), (0,1), (1,0), (1,1)), so the gradients equal."""
    x = (scale * rng.integers(-1, 2, size=(2, 2, 6, 7))).astype(np.float64)
    w = rng.integers(-1, 2, size=(3, 2, 3, 3)).astype(np.float64)
    b = np.array([0.0, 1.0, -2.0])
    out, cache = conv2d_maxpool_forward(x, w, b, 1)
    dout = rng.standard_normal(out.shape)
    ref, ref_grads = _separate(x, w, b, 1, dout)
    np.testing.assert_array_equal(out, ref)
    for g, g_ref in zip(conv2d_maxpool_backward(dout, cache), ref_grads):
        np.testing.assert_allclose(g, g_ref, rtol=1e-12, atol=1e-12)


def test_convpool_float32_and_layout(rng):
    x, w, b = _inputs(rng, 3, 2, 10, 10, 4, 3, 3, dtype=np.float32)
    out, cache = conv2d_maxpool_forward(x, w, b, "same")
    assert out.dtype == np.float32 and out.shape == (3, 4, 5, 5)
    assert out.strides[1] > out.strides[0]                       # channel-major, like conv2d_forward
    dx, dw, db = conv2d_maxpool_backward(np.ones(out.shape, np.float32), cache)
    assert dx.dtype == dw.dtype == db.dtype == np.float32
    out64, _ = conv2d_maxpool_forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), "same")
    np.testing.assert_allclose(out, out64, rtol=1e-5, atol=1e-5)
    # any input layout works: a channel-major view in, the same result out
    xv = np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    np.testing.assert_array_equal(conv2d_maxpool_forward(xv, w, b, "same")[0], out)


def test_convpool_does_not_modify_its_inputs(rng):
    x, w, b = _inputs(rng, 2, 2, 6, 6, 3, 3, 3)
    copies = [a.copy() for a in (x, w, b)]
    out, cache = conv2d_maxpool_forward(x, w, b, 1)
    dout = rng.standard_normal(out.shape)
    dout_copy = dout.copy()
    conv2d_maxpool_backward(dout, cache)
    for a, c in zip((x, w, b, dout), copies + [dout_copy]):
        np.testing.assert_array_equal(a, c)


def test_convpool_errors(rng):
    x, w, b = _inputs(rng, 1, 2, 3, 3, 2, 3, 3)
    with pytest.raises(ValueError, match="conv output 1x1 is smaller than the 2x2 pooling window"):
        conv2d_maxpool_forward(x, w, b, "valid")
    with pytest.raises(ValueError, match="x has 2 channels but w expects 3"):
        conv2d_maxpool_forward(x, rng.standard_normal((2, 3, 3, 3)), b, 1)
    with pytest.raises(ValueError, match="padding must be"):
        conv2d_maxpool_forward(x, w, b, "full")
    with pytest.raises(TypeError, match="dtype"):
        conv2d_maxpool_forward(x.astype(np.float32), w, b, 1)
    out, cache = conv2d_maxpool_forward(x, w, b, 1)
    with pytest.raises(ValueError, match=r"dout"):
        conv2d_maxpool_backward(np.ones((1, 2, 2, 2)), cache)


# ------------------------------------------------------------------------------------------
# The conv (+ max-pool) followed by its ReLU: the models' conv blocks, one op each.
# Gradient checks: a ReLU adds a kink at 0, which random normal pre-activations clear by far more
# than h (the chance that one lies within 1e-4 of 0 is ~1e-4 per element), so the same 1e-6 holds.

RELU_OPS = {"conv2d_maxpool_relu": ("conv2d_maxpool_forward", "conv2d_maxpool_backward"),
            "conv2d_relu": ("conv2d_forward", "conv2d_backward")}


@pytest.mark.parametrize("name", sorted(RELU_OPS))
@pytest.mark.parametrize("case", CASES[:4])
def test_conv_relu_gradients(rng, name, case):
    import minstn.ops as plain

    N, C, H, W, F, kh, kw, padding = case
    x, w, b = _inputs(rng, N, C, H, W, F, kh, kw)
    errs = check_gradients(getattr(plain, f"{name}_forward"), getattr(plain, f"{name}_backward"),
                           {"x": x, "w": w, "b": b}, static={"padding": padding}, rng=rng)
    assert max(errs.values()) <= TOL, errs


@pytest.mark.parametrize("name", sorted(RELU_OPS))
def test_conv_relu_is_the_op_then_relu_plain_and_fast(rng, name):
    """The plain op is the conv (+ pool) op then relu_forward, bit for bit; the fast op on NumPy is
    the fast conv (+ pool) then the same ReLU (so the models' CPU numbers do not change)."""
    import minstn.ops as plain
    import minstn.ops.fast as fast

    x, w, b = _inputs(rng, 2, 3, 7, 6, 4, 3, 3)
    b[0] = -50.0                                                   # a filter that is all zeros after the ReLU
    inner_f, inner_b = RELU_OPS[name]
    for ops in (plain, fast):
        a, c_inner = getattr(ops, inner_f)(x, w, b, "same")
        ref, c_relu = plain.relu_forward(a)
        out, cache = getattr(ops, f"{name}_forward")(x, w, b, "same")
        np.testing.assert_array_equal(out, ref)
        assert (out[:, 0] == 0).all() and (out > 0).any()
        dout = rng.standard_normal(out.shape)
        ref_grads = getattr(ops, inner_b)(plain.relu_backward(dout, c_relu), c_inner)
        for g, g_ref in zip(getattr(ops, f"{name}_backward")(dout, cache), ref_grads):
            np.testing.assert_array_equal(g, g_ref)
        dx, dw, db = getattr(ops, f"{name}_backward")(dout, cache, need_dx=False)
        assert dx is None
        np.testing.assert_array_equal(dw, ref_grads[1])
    with pytest.raises(TypeError, match=f"cache is not from {name}_forward"):
        getattr(plain, f"{name}_backward")(dout, ("relu", None))
    with pytest.raises(TypeError, match=f"cache is not from minstn.ops.fast.{name}_forward"):
        getattr(fast, f"{name}_backward")(dout, ("relu", None))
