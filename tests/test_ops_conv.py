"""conv2d: gradient checks, agreement with the loop reference, dtypes, clear errors.

Tolerance: gradient checks run in float64 with centred differences (h = 1e-6), whose error is
~1e-9 relative for this smooth (bilinear) op; we require <= 1e-6, far above that noise and far
below any real mistake (a wrong index or a missing term gives errors of order 1).
"""
import numpy as np
import pytest

from minstn.gradcheck import check_gradients
from minstn.ops import conv2d_backward, conv2d_backward_naive, conv2d_forward, conv2d_forward_naive

TOL = 1e-6

# (N, C, H, W, F, kh, kw, padding): odd, non-square, batch 1, padding 0/1/2/'same'/'valid', 1x1/3x3/5x5
CASES = [
    (2, 3, 5, 7, 4, 3, 3, 1),
    (1, 2, 6, 5, 3, 3, 3, 0),
    (2, 2, 5, 5, 3, 3, 3, "same"),
    (1, 3, 7, 6, 2, 5, 5, "valid"),
    (2, 1, 4, 4, 2, 1, 1, "same"),
    (1, 2, 5, 6, 2, 5, 5, 2),
    (1, 2, 4, 5, 3, 2, 3, 0),  # non-square kernel
]


def _inputs(rng, N, C, H, W, F, kh, kw, dtype=np.float64):
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((F, C, kh, kw)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    return x, w, b


@pytest.mark.parametrize("case", CASES)
def test_conv_gradients(rng, case):
    N, C, H, W, F, kh, kw, padding = case
    x, w, b = _inputs(rng, N, C, H, W, F, kh, kw)
    errs = check_gradients(conv2d_forward, conv2d_backward, {"x": x, "w": w, "b": b}, static={"padding": padding}, rng=rng)
    assert max(errs.values()) <= TOL, errs


@pytest.mark.parametrize("case", CASES)
def test_conv_matches_naive(rng, case):
    N, C, H, W, F, kh, kw, padding = case
    x, w, b = _inputs(rng, N, C, H, W, F, kh, kw)
    out, cache = conv2d_forward(x, w, b, padding)
    out_n, cache_n = conv2d_forward_naive(x, w, b, padding)
    np.testing.assert_allclose(out, out_n, rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    for g, g_n in zip(conv2d_backward(dout, cache), conv2d_backward_naive(dout, cache_n)):
        np.testing.assert_allclose(g, g_n, rtol=1e-12, atol=1e-12)


def test_conv_output_sizes(rng):
    x, w, b = _inputs(rng, 1, 1, 9, 7, 2, 3, 3)
    assert conv2d_forward(x, w, b, "same")[0].shape == (1, 2, 9, 7)
    assert conv2d_forward(x, w, b, "valid")[0].shape == (1, 2, 7, 5)
    assert conv2d_forward(x, w, b, 2)[0].shape == (1, 2, 11, 9)


def test_conv_padding_zero_gives_full_dx(rng):
    """With padding 0 the input gradient still has the input's shape and is nonzero."""
    x, w, b = _inputs(rng, 1, 2, 5, 5, 2, 3, 3)
    out, cache = conv2d_forward(x, w, b, 0)
    dx, dw, db = conv2d_backward(np.ones_like(out), cache)
    assert dx.shape == x.shape and np.all(dx[:, :, 2, 2] != 0)


def test_conv_float32_keeps_dtype_and_matches_float64(rng):
    x, w, b = _inputs(rng, 2, 3, 6, 5, 4, 3, 3)
    out64, cache64 = conv2d_forward(x, w, b, "same")
    x32, w32, b32 = (a.astype(np.float32) for a in (x, w, b))
    out32, cache32 = conv2d_forward(x32, w32, b32, "same")
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, out64, rtol=1e-4, atol=1e-4)
    dout = rng.standard_normal(out64.shape)
    grads32 = conv2d_backward(dout.astype(np.float32), cache32)
    for g32, g64 in zip(grads32, conv2d_backward(dout, cache64)):
        assert g32.dtype == np.float32
        np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-3)


def test_conv_does_not_modify_dout(rng):
    x, w, b = _inputs(rng, 1, 2, 5, 5, 2, 3, 3)
    out, cache = conv2d_forward(x, w, b, 1)
    dout = rng.standard_normal(out.shape)
    before = dout.copy()
    conv2d_backward(dout, cache)
    np.testing.assert_array_equal(dout, before)


def test_conv_errors(rng):
    x, w, b = _inputs(rng, 1, 2, 5, 5, 3, 3, 3)
    with pytest.raises(ValueError, match=r"x must be 4-D \(N, C, H, W\)"):
        conv2d_forward(x[0], w, b, 1)
    with pytest.raises(ValueError, match=r"w must be 4-D"):
        conv2d_forward(x, w[0], b, 1)
    with pytest.raises(ValueError, match="x has 2 channels but w expects 1"):
        conv2d_forward(x, w[:, :1], b, 1)
    with pytest.raises(ValueError, match=r"b must have shape \(F,\) = \(3,\)"):
        conv2d_forward(x, w, b[:2], 1)
    with pytest.raises(ValueError, match="padding must be 'same', 'valid' or an int >= 0, got 'full'"):
        conv2d_forward(x, w, b, "full")
    with pytest.raises(ValueError, match="padding must be 'same', 'valid' or an int >= 0, got -1"):
        conv2d_forward(x, w, b, -1)
    with pytest.raises(TypeError, match="padding must be 'same', 'valid' or an int >= 0, got float 1.5"):
        conv2d_forward(x, w, b, 1.5)
    with pytest.raises(ValueError, match="padding='same' needs an odd square kernel"):
        conv2d_forward(x, rng.standard_normal((3, 2, 2, 2)), b, "same")
    with pytest.raises(ValueError, match="kernel 7x7 is larger than the padded input 5x5"):
        conv2d_forward(x, rng.standard_normal((3, 2, 7, 7)), b, "valid")
    with pytest.raises(TypeError, match="x must be float32 or float64, got dtype int64"):
        conv2d_forward(x.astype(np.int64), w, b, 1)
    with pytest.raises(TypeError, match="w has dtype float32 but x has dtype float64"):
        conv2d_forward(x, w.astype(np.float32), b, 1)
    with pytest.raises(TypeError, match="x must be a NumPy or CuPy array, got list"):
        conv2d_forward(x.tolist(), w, b, 1)


def test_conv_backward_rejects_wrong_gradient_shape(rng):
    x, w, b = _inputs(rng, 2, 2, 5, 5, 3, 3, 3)
    out, cache = conv2d_forward(x, w, b, 1)
    with pytest.raises(ValueError, match=r"conv2d_backward: dout must have the forward output's shape \(2, 3, 5, 5\), got \(1, 3, 5, 5\)"):
        conv2d_backward(out[:1], cache)


def test_conv_need_dx_false_skips_only_dx(rng):
    x, w, b = _inputs(rng, 2, 3, 6, 5, 4, 3, 3)
    out, cache = conv2d_forward(x, w, b, "same")
    dout = rng.standard_normal(out.shape)
    dx, dw, db = conv2d_backward(dout, cache)
    none, dw2, db2 = conv2d_backward(dout, cache, need_dx=False)
    assert none is None
    np.testing.assert_array_equal(dw2, dw)
    np.testing.assert_array_equal(db2, db)


def test_conv_output_is_channel_major_and_any_input_layout_works(rng):
    """out is an (N, F, H, W) view of channel-major memory; an input stored either way (NCHW
    or channel-major, as the previous conv's output) gives the same numbers. (The fast conv.)"""
    from minstn.ops.fast import conv2d_backward, conv2d_forward

    x, w, b = _inputs(rng, 3, 4, 7, 6, 5, 3, 3)
    out, cache = conv2d_forward(x, w, b, "same")
    assert not out.flags.c_contiguous
    assert np.ascontiguousarray(out.transpose(1, 0, 2, 3)).base is None  # a proper array either way
    x_cm = np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)  # channel-major storage
    out2, cache2 = conv2d_forward(x_cm, w, b, "same")
    np.testing.assert_array_equal(out2, out)
    dout = rng.standard_normal(out.shape)
    dout_cm = np.ascontiguousarray(dout.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    for g, g2 in zip(conv2d_backward(dout, cache), conv2d_backward(dout_cm, cache2)):
        np.testing.assert_array_equal(g2, g)
    out_n, _ = conv2d_forward_naive(x, w, b, "same")
    np.testing.assert_allclose(out, out_n, rtol=1e-12, atol=1e-12)
