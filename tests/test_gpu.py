"""GPU tests: every op on CuPy arrays against the NumPy reference, plain and fast (the CUDA kernels
of minstn/ops/fast/kernels/ around cuBLAS), the CUDA kernels of the affine grid and the sampler
against the array code, FlatAdam's kernel bit for bit, float64 gradient checks on the GPU, and
the repeatability of the atomicAdd scatter.

Tests marked `gpu` need CuPy and a usable CUDA GPU; they are skipped, with the reason, where
either is missing (`resolve_device('gpu')` raising DeviceError).  The device-error tests at the
top run on every machine: they check what a user without a GPU is told.

Tolerances:
    float64   1e-10 relative to the largest value (same arithmetic, other summation orders:
              cuBLAS, the kernels' per-point channel loops, atomics)
    float32   1e-4 relative to the largest value (float32 rounding of sums over up to a few
              hundred terms, e.g. a 3x3x32 convolution)
    gradient checks   <= 1e-6 relative error (minstn.gradcheck, float64, h = 1e-5)
"""
from __future__ import annotations

import sys

import numpy as np
import pytest

import minstn.ops as F
from minstn.backend import DeviceError, resolve_device, to_numpy
from minstn.ops import fast
from minstn.gradcheck import check_gradients
from minstn.ops.fast import cuda

DTYPES = [np.float64, np.float32]


def _tol(dtype):
    return 1e-10 if np.dtype(dtype) == np.float64 else 1e-4


def assert_close(actual, expected, dtype, what):
    """Max |actual - expected| relative to max(1, max |expected|), within the dtype's tolerance."""
    actual, expected = to_numpy(actual), to_numpy(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    err = float(np.abs(actual.astype(np.float64) - expected.astype(np.float64)).max(initial=0.0)) / scale
    assert err <= _tol(dtype), f"{what}: max error {err:.3g} (relative to {scale:.3g}) > {_tol(dtype)}"


# ------------------------------------------------------------------------------------------
# What a machine without a (usable) GPU says.  These run everywhere.


def _cupy_or_none():
    try:
        import cupy
    except Exception:  # not installed, or a broken install
        return None
    return cupy


def test_gpu_without_cupy_is_a_clear_device_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` now raises ImportError
    with pytest.raises(DeviceError, match=r"needs CuPy.*pip install"):
        resolve_device("gpu")
    with pytest.raises(DeviceError, match=r"needs CuPy.*--device cpu"):
        cuda._module.__wrapped__(0)  # compiling the kernels needs CuPy too


def test_gpu_with_cupy_but_no_usable_gpu_is_a_clear_device_error():
    cupy = _cupy_or_none()
    if cupy is None:
        pytest.skip("CuPy is not importable here; the no-CuPy case is tested above")
    try:
        n = int(cupy.cuda.runtime.getDeviceCount())
    except Exception:
        n = 0
    if n > 0:
        pytest.skip(f"this machine has {n} usable GPU(s): the no-GPU error cannot happen here")
    with pytest.raises(DeviceError, match=r"(?s)no (usable )?CUDA GPU.*--device cpu"):
        resolve_device("gpu")


# ------------------------------------------------------------------------------------------
# GPU fixtures


@pytest.fixture(scope="module")
def gpu():
    """The GPU device, or skip the test with the DeviceError's message."""
    try:
        dev = resolve_device("gpu")
    except DeviceError as e:
        pytest.skip(f"no usable GPU: {e}")
    dev.use()
    return dev


# ------------------------------------------------------------------------------------------
# Every op: CuPy forward and backward against NumPy.
#
# A case builds NumPy inputs and returns (forward, backward, arrays, make_kwargs): forward is
# called as forward(*arrays, **make_kwargs()) and returns (out1, ..., cache); backward as
# backward(*douts, cache).  make_kwargs is called once per run so that a random generator
# (dropout) starts from the same seed on the CPU and on the GPU.


def _case_conv(padding):
    def build(rng, dtype):
        x = rng.standard_normal((2, 3, 9, 8)).astype(dtype)
        w = (0.3 * rng.standard_normal((4, 3, 3, 3))).astype(dtype)
        b = rng.standard_normal(4).astype(dtype)
        return F.conv2d_forward, F.conv2d_backward, [x, w, b], lambda: {"padding": padding}
    return build


def _case_conv_maxpool(rng, dtype):
    x = rng.standard_normal((2, 3, 9, 7)).astype(dtype)        # odd sizes: the last row and column dropped
    w = (0.3 * rng.standard_normal((4, 3, 3, 3))).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    return F.conv2d_maxpool_forward, F.conv2d_maxpool_backward, [x, w, b], lambda: {"padding": "same"}


def _case_conv_relu(pool):
    def build(rng, dtype):
        x = rng.standard_normal((2, 3, 9, 7)).astype(dtype)
        w = (0.3 * rng.standard_normal((4, 3, 3, 3))).astype(dtype)
        b = rng.standard_normal(4).astype(dtype)
        name = "conv2d_maxpool_relu" if pool else "conv2d_relu"
        return getattr(F, f"{name}_forward"), getattr(F, f"{name}_backward"), [x, w, b], lambda: {"padding": "same"}
    return build


def _case_maxpool(rng, dtype):
    x = rng.permutation(2 * 3 * 7 * 9).reshape(2, 3, 7, 9).astype(dtype) / 10  # distinct: no ties
    return F.maxpool2d_forward, F.maxpool2d_backward, [x], lambda: {}


def _case_avgpool(d):
    def build(rng, dtype):
        x = rng.standard_normal((2, 3, 10, 11)).astype(dtype)
        return F.avgpool2d_forward, F.avgpool2d_backward, [x], lambda: {"d": d}
    return build


def _case_linear(rng, dtype):
    x = rng.standard_normal((5, 7)).astype(dtype)
    w = rng.standard_normal((7, 4)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    return F.linear_forward, F.linear_backward, [x, w, b], lambda: {}


def _case_relu(rng, dtype):
    x = rng.standard_normal((4, 6)).astype(dtype)
    return F.relu_forward, F.relu_backward, [x], lambda: {}


def _case_dropout(rng, dtype):
    x = rng.standard_normal((6, 8)).astype(dtype)
    # A NumPy generator with the same seed on both sides gives the same mask (copied to the GPU).
    return F.dropout_forward, F.dropout_backward, [x], lambda: {"p": 0.5, "rng": np.random.default_rng(7)}


def _case_lstm_cell(rng, dtype):
    N, D, H = 3, 5, 4
    x = rng.standard_normal((N, D)).astype(dtype)
    h = rng.standard_normal((N, H)).astype(dtype)
    c = rng.standard_normal((N, H)).astype(dtype)
    Wx = (0.3 * rng.standard_normal((D, 4 * H))).astype(dtype)
    Wh = (0.3 * rng.standard_normal((H, 4 * H))).astype(dtype)
    b = (0.1 * rng.standard_normal(4 * H)).astype(dtype)
    return F.lstm_cell_forward, F.lstm_cell_backward, [x, h, c, Wx, Wh, b], lambda: {}


def _case_lstm(rng, dtype):
    T, N, D, H = 4, 3, 5, 4
    xs = rng.standard_normal((T, N, D)).astype(dtype)
    h0 = rng.standard_normal((N, H)).astype(dtype)
    c0 = rng.standard_normal((N, H)).astype(dtype)
    Wx = (0.3 * rng.standard_normal((D, 4 * H))).astype(dtype)
    Wh = (0.3 * rng.standard_normal((H, 4 * H))).astype(dtype)
    b = (0.1 * rng.standard_normal(4 * H)).astype(dtype)
    return F.lstm_forward, F.lstm_backward, [xs, h0, c0, Wx, Wh, b], lambda: {}


def _case_affine_grid(impl):
    def build(rng, dtype):
        theta = (np.array([[1.2, 0.2, 0.1], [-0.3, 0.9, -0.2]]) + 0.2 * rng.standard_normal((3, 2, 3))).astype(dtype)
        ops = fast if impl == "kernel" else F      # the CUDA kernel is minstn.ops.fast's
        return ops.affine_grid_forward, ops.affine_grid_backward, [theta], lambda: {"out_hw": (7, 9), "impl": impl}
    return build


def _case_sampler(impl):
    def build(rng, dtype):
        U = rng.standard_normal((2, 3, 9, 11)).astype(dtype)
        grid = rng.uniform(-1.4, 1.4, size=(2, 6, 5, 2)).astype(dtype)  # some points outside
        ops = fast if impl == "kernel" else F
        return ops.bilinear_sample_forward, ops.bilinear_sample_backward, [U, grid], lambda: {"impl": impl}
    return build


OP_CASES = {
    "conv2d_same": _case_conv("same"),
    "conv2d_valid": _case_conv("valid"),
    "conv2d_pad1": _case_conv(1),
    "conv2d_maxpool": _case_conv_maxpool,
    "conv2d_relu": _case_conv_relu(False),
    "conv2d_maxpool_relu": _case_conv_relu(True),
    "maxpool2d": _case_maxpool,
    "avgpool2d_d1": _case_avgpool(1),
    "avgpool2d_d2": _case_avgpool(2),
    "avgpool2d_d3": _case_avgpool(3),
    "linear": _case_linear,
    "relu": _case_relu,
    "dropout": _case_dropout,
    "lstm_cell": _case_lstm_cell,
    "lstm": _case_lstm,
    "affine_grid_kernel": _case_affine_grid("kernel"),
    "affine_grid_array": _case_affine_grid("array"),
    "bilinear_sample_kernel": _case_sampler("kernel"),
    "bilinear_sample_array": _case_sampler("array"),
}


def _run_op(forward, backward, arrays, make_kwargs, douts, move):
    """Forward then backward with every array passed through `move`; returns (outs, grads)."""
    kwargs = make_kwargs()
    if kwargs.get("impl") == "kernel" and move is np.asarray:
        kwargs["impl"] = "array"  # the NumPy reference side of a kernel case
    result = forward(*[move(a) for a in arrays], **kwargs)
    outs, cache = result[:-1], result[-1]
    if douts is None:
        return outs, None
    grads = backward(*[move(d) for d in douts], cache)
    return outs, grads if isinstance(grads, tuple) else (grads,)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(OP_CASES))
def test_op_on_gpu_matches_numpy(gpu, rng, name, dtype):
    forward, backward, arrays, make_kwargs = OP_CASES[name](rng, dtype)
    ref_outs, _ = _run_op(forward, backward, arrays, make_kwargs, None, np.asarray)
    douts = [rng.standard_normal(o.shape).astype(dtype) for o in ref_outs]
    ref_outs, ref_grads = _run_op(forward, backward, arrays, make_kwargs, douts, np.asarray)
    outs, grads = _run_op(forward, backward, arrays, make_kwargs, douts, gpu.asarray)
    for k, (o, r) in enumerate(zip(outs, ref_outs)):
        assert type(o).__module__.startswith("cupy"), f"{name}: output {k} left the GPU"
        assert_close(o, r, dtype, f"{name} output {k}")
    assert len(grads) == len(arrays)
    for k, (g, r) in enumerate(zip(grads, ref_grads)):
        assert_close(g, r, dtype, f"{name} gradient {k}")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy_on_gpu_matches_numpy(gpu, rng, dtype):
    logits = (3 * rng.standard_normal((5, 4, 10))).astype(dtype)
    labels = rng.integers(0, 10, size=(5, 4))
    ref_loss, ref_dlogits = F.softmax_cross_entropy(logits, labels)
    for op in (F.softmax_cross_entropy, fast.softmax_cross_entropy):   # the array code, the kernel
        loss, dlogits = op(gpu.asarray(logits), gpu.asarray(labels))
        assert type(loss).__module__.startswith("cupy") and loss.shape == ()   # on the device: no sync
        assert abs(float(loss) - ref_loss) <= _tol(dtype) * max(1.0, abs(ref_loss))
        assert_close(dlogits, ref_dlogits, dtype, "dlogits")


# The fast ops (minstn.ops.fast: CUDA kernels around cuBLAS on CuPy arrays) against the plain op on
# NumPy: every case above whose op has a fast version.
FAST_CASES = [n for n in OP_CASES
              if {f.__name__ for f in OP_CASES[n](np.random.default_rng(0), np.float64)[:2]} & set(fast.__all__)]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", FAST_CASES)
def test_fast_op_on_gpu_matches_the_plain_op(gpu, rng, name, dtype):
    forward, backward, arrays, make_kwargs = OP_CASES[name](rng, dtype)
    fast_forward, fast_backward = getattr(fast, forward.__name__, forward), getattr(fast, backward.__name__, backward)
    ref_outs, _ = _run_op(forward, backward, arrays, make_kwargs, None, np.asarray)
    douts = [rng.standard_normal(o.shape).astype(dtype) for o in ref_outs]
    ref_outs, ref_grads = _run_op(forward, backward, arrays, make_kwargs, douts, np.asarray)
    outs, grads = _run_op(fast_forward, fast_backward, arrays, make_kwargs, douts, gpu.asarray)
    for k, (o, r) in enumerate(zip(outs, ref_outs)):
        assert type(o).__module__.startswith("cupy"), f"{name}: output {k} left the GPU"
        assert_close(o, r, dtype, f"fast {name} output {k}")
    for k, (g, r) in enumerate(zip(grads, ref_grads)):
        assert_close(g, r, dtype, f"fast {name} gradient {k}")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("feedback", [True, False])
def test_recurrent_thetas_on_gpu_match_the_plain_loop_on_numpy(gpu, rng, dtype, feedback):
    """An LSTM's T steps as kernels around cuBLAS (minstn/ops/fast/thetas.py) against the plain loop of
    cell and linear ops on NumPy: the thetas and every gradient."""
    N, D, H, T = 5, 7, 6, 4
    E = D + 6 if feedback else D
    feats = rng.standard_normal((N, D)).astype(dtype)
    theta0 = np.array([0.5, 0.1, -0.2, 0.0, 0.5, 0.1], dtype=dtype)
    cell = tuple((0.5 * rng.standard_normal(s)).astype(dtype) for s in ((E, 4 * H), (H, 4 * H), (4 * H,)))
    Wr, br = (0.5 * rng.standard_normal((H, 6))).astype(dtype), rng.standard_normal(6).astype(dtype)
    step_b = (0.3 * rng.standard_normal((T, 6))).astype(dtype)

    def args(move):
        return move(feats), move(theta0), tuple(move(a) for a in cell), move(Wr), move(br), move(step_b)
    ref, ref_cache = F.recurrent_thetas_forward(*args(np.asarray), steps=T, feedback=feedback)
    out, cache = fast.recurrent_thetas_forward(*args(gpu.asarray), steps=T, feedback=feedback)
    assert cache[0] == "recurrent_thetas_gpu"
    assert_close(out, ref, dtype, "thetas")
    dthetas = rng.standard_normal(ref.shape).astype(dtype)
    g_ref = F.recurrent_thetas_backward(dthetas, ref_cache)
    g = fast.recurrent_thetas_backward(gpu.asarray(dthetas), cache)
    for what, a, e in zip(("dfeats", "dWx", "dWh", "db", "dWr", "dbr", "dstep_b"), [g[0], *g[1], *g[2:]],
                          [g_ref[0], *g_ref[1], *g_ref[2:]]):
        assert_close(a, e, dtype, what)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_flat_adam_kernel_on_gpu_is_the_array_code_bit_for_bit(gpu, rng, dtype):
    """adam_step (compiled with --fmad=false, IEEE division and square root) gives NumPy's bits."""
    from minstn.training import optim

    shapes = {"a": (30, 40), "b": (7,)}
    init = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    host = {k: v.copy() for k, v in init.items()}
    dev = {k: gpu.asarray(v) for k, v in init.items()}
    on_host, on_dev = optim.FlatAdam(host, 1e-2, {"a": 0.1}, 1e-3), optim.FlatAdam(dev, 1e-2, {"a": 0.1}, 1e-3)
    for scale in (1.0, 0.3, 1.0):
        grads = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
        on_host.step(grads, grad_scale=scale)
        on_dev.step({k: gpu.asarray(g) for k, g in grads.items()}, grad_scale=scale)
    for k in shapes:
        np.testing.assert_array_equal(to_numpy(dev[k]), host[k], err_msg=k)


@pytest.mark.gpu
def test_step_numbers_on_gpu_match_numpy(gpu, rng):
    from minstn.training import optim

    g = rng.standard_normal(300_001).astype(np.float32)
    logits = rng.standard_normal((64, 4, 10)).astype(np.float32)
    labels = rng.integers(0, 10, size=(64, 4))
    loss = np.asarray(1.25, dtype=np.float32)
    expected = optim.fetch(loss, optim.global_norm(g), (logits.argmax(axis=-1) != labels).sum())
    got = optim.step_numbers(*(gpu.asarray(a) for a in (loss, g, logits, labels)))
    assert got[0] == expected[0] and got[2] == expected[2] and abs(got[1] - expected[1]) <= 1e-12 * expected[1]


# ------------------------------------------------------------------------------------------
# The spatial transformer's kernels: kernel vs array code on the GPU vs NumPy.


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 9, 11, 6, 5), (1, 1, 100, 100, 50, 50), (4, 2, 7, 5, 13, 17)])
def test_stn_kernel_vs_array_vs_numpy(gpu, rng, dtype, shape):
    N, C, H, W, H_out, W_out = shape
    theta = (np.array([[1.3, 0.25, 0.2], [-0.3, 1.1, -0.35]]) + 0.3 * rng.standard_normal((N, 2, 3))).astype(dtype)
    U = rng.standard_normal((N, C, H, W)).astype(dtype)
    dV = rng.standard_normal((N, C, H_out, W_out)).astype(dtype)

    def chain(theta, U, dV, impl, ops=fast):
        grid, gcache = ops.affine_grid_forward(theta, (H_out, W_out), impl=impl)
        V, vcache = ops.bilinear_sample_forward(U, grid, impl=impl)
        dU, dgrid = ops.bilinear_sample_backward(dV, vcache)
        dtheta = ops.affine_grid_backward(dgrid, gcache)
        if ops is fast:   # the fast array code's caches are 'affine_grid' and 'quad'
            assert (gcache[0], vcache[0]) == (("affine_grid", "quad") if impl == "array" else ("kernel", "kernel"))
        return grid, V, dU, dgrid, dtheta

    ref = chain(theta, U, dV, "array", ops=F)        # the plain ops on NumPy
    on_gpu = [gpu.asarray(a) for a in (theta, U, dV)]
    for impl in ("array", "kernel", "auto"):
        got = chain(*on_gpu, impl)             # the fast ops on the GPU: CuPy array code, kernels
        for what, g, r in zip(("grid", "V", "dU", "dgrid", "dtheta"), got, ref):
            assert_close(g, r, dtype, f"{what} (impl={impl!r})")


@pytest.mark.gpu
def test_sampler_kernel_accepts_non_contiguous_inputs(gpu, rng):
    U = gpu.asarray(rng.standard_normal((2, 7, 5, 3))).transpose(0, 3, 2, 1)  # (2, 3, 5, 7), a view
    grid = gpu.asarray(rng.uniform(-1.3, 1.3, (2, 6, 4, 2)))[:, ::-1]
    V, cache = fast.bilinear_sample_forward(U, grid, impl="kernel")
    V_ref, cache_ref = F.bilinear_sample_forward(to_numpy(U), to_numpy(grid), impl="array")
    assert_close(V, V_ref, np.float64, "V")
    dV = rng.standard_normal(V_ref.shape)
    dV_gpu = gpu.asarray(dV)[..., ::-1]  # a non-contiguous upstream gradient
    dV_before = to_numpy(dV_gpu).copy()
    dU, dgrid = fast.bilinear_sample_backward(dV_gpu, cache)
    dU_ref, dgrid_ref = F.bilinear_sample_backward(dV[..., ::-1], cache_ref)
    assert_close(dU, dU_ref, np.float64, "dU")
    assert_close(dgrid, dgrid_ref, np.float64, "dgrid")
    np.testing.assert_array_equal(to_numpy(dV_gpu), dV_before)  # the incoming gradient is untouched


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_atomic_dU_is_repeatable_within_rounding(gpu, rng, dtype):
    """Many points share each pixel (a 64x64 grid on a 6x6 image): the atomicAdd order varies,
    the sums agree to rounding, and the total equals the total of dV times the weights (1 inside)."""
    U = gpu.asarray(rng.standard_normal((2, 3, 6, 6)).astype(dtype))
    # |x_s|, |y_s| <= 0.8 * 63/64 < 5/6: all four corners of every point lie inside the image.
    theta = gpu.asarray(np.tile(np.array([[0.7, 0.1, 0.0], [-0.1, 0.7, 0.0]], dtype), (2, 1, 1)))
    grid, _ = fast.affine_grid_forward(theta, (64, 64))
    _, cache = fast.bilinear_sample_forward(U, grid)                 # 'auto': the kernel for CuPy arrays
    dV = gpu.asarray(rng.standard_normal((2, 3, 64, 64)).astype(dtype))
    runs = [fast.bilinear_sample_backward(dV, cache) for _ in range(5)]
    dU0, dgrid0 = (to_numpy(a) for a in runs[0])
    for dU, dgrid in runs[1:]:
        assert_close(dU, dU0, dtype, "dU, run against run")
        np.testing.assert_array_equal(to_numpy(dgrid), dgrid0)  # no atomics in dgrid: bit-for-bit
    # Inside the image the four weights of a point sum to 1, so sum(dU) = sum(dV) per (n, c).
    tol = 1e-9 if dtype == np.float64 else 1e-2
    np.testing.assert_allclose(dU0.sum(axis=(2, 3)), to_numpy(dV).sum(axis=(2, 3)), rtol=0, atol=tol)


@pytest.mark.gpu
def test_kernel_cache_is_tagged_for_the_ops_backward(gpu, rng):
    theta = gpu.asarray(np.tile(np.eye(2, 3), (2, 1, 1)))
    grid, gcache = fast.affine_grid_forward(theta, (4, 5))
    V, vcache = fast.bilinear_sample_forward(gpu.asarray(rng.standard_normal((2, 1, 4, 5))), grid)
    assert gcache[0] == "kernel" and vcache[0] == "kernel"  # 'auto' picks the kernel for CuPy


# ------------------------------------------------------------------------------------------
# Whole models: one training step's loss and gradients on the GPU equal the CPU's.


@pytest.mark.gpu
@pytest.mark.parametrize("name, impl", [("cnn", "auto"), ("ffn-stn", "kernel"), ("lstm-stn", "kernel"),
                                        ("lstm-stn", "array")])
def test_model_step_on_gpu_matches_cpu(gpu, name, impl):
    from minstn.models import build_model

    rng = np.random.default_rng(0)
    images = rng.random((2, 1, 100, 100))  # (N, 1, 100, 100), float64
    labels = rng.integers(0, 10, size=(2, 4))
    results = []
    for device in ("cpu", gpu):
        # the CUDA kernel exists on the GPU only: the CPU reference runs the array code
        options = {} if name == "cnn" else {"sampler_impl": impl if device is gpu else "array"}
        model = build_model(name, 2, dtype="float64", device=device, seed=0, **options)
        loss, _ = model.loss_and_grads(images, labels, rng=np.random.default_rng(1))  # same dropout masks
        results.append((float(loss), {k: to_numpy(v) for k, v in model.grads.items()}))
    (loss_cpu, grads_cpu), (loss_gpu, grads_gpu) = results
    assert abs(loss_gpu - loss_cpu) <= 1e-10 * max(1.0, abs(loss_cpu))
    for k in grads_cpu:
        assert_close(grads_gpu[k], grads_cpu[k], np.float64, f"{name} grad {k}")


# ------------------------------------------------------------------------------------------
# Float64 gradient checks of the kernels, on the GPU.  minstn.gradcheck works on NumPy
# arrays, so the wrapped forward and backward move the arrays to the GPU and back.


def _on_gpu(dev, forward, backward, **fixed):
    """NumPy-in, NumPy-out versions of a GPU forward/backward pair."""

    def fwd(**arrays):
        out, cache = forward(*[dev.asarray(a) for a in arrays.values()], **fixed)
        return to_numpy(out), cache

    def bwd(dout, cache):
        grads = backward(dev.asarray(dout), cache)
        return tuple(to_numpy(g) for g in grads) if isinstance(grads, tuple) else to_numpy(grads)

    return fwd, bwd


@pytest.mark.gpu
def test_gradcheck_sampler_kernel_on_gpu(gpu, rng):
    U = rng.standard_normal((2, 2, 6, 7))
    # Random points, inside and outside; a finite-difference probe of h = 1e-5 crosses an
    # integer pixel coordinate (a kink) with probability ~1e-4 per point: none for this seed.
    grid = rng.uniform(-1.3, 1.3, size=(2, 4, 5, 2))
    fwd, bwd = _on_gpu(gpu, fast.bilinear_sample_forward, fast.bilinear_sample_backward, impl="kernel")
    errs = check_gradients(fwd, bwd, {"U": U, "grid": grid}, rng=rng)
    assert max(errs.values()) <= 1e-6, errs


@pytest.mark.gpu
def test_gradcheck_affine_grid_kernel_on_gpu(gpu, rng):
    theta = np.array([[1.2, 0.2, 0.1], [-0.3, 0.9, -0.2]]) + 0.2 * rng.standard_normal((3, 2, 3))
    fwd, bwd = _on_gpu(gpu, fast.affine_grid_forward, fast.affine_grid_backward, out_hw=(5, 6), impl="kernel")
    errs = check_gradients(fwd, bwd, {"theta": theta}, rng=rng)
    assert errs["theta"] <= 1e-6, errs


@pytest.mark.gpu
def test_gradcheck_spatial_transformer_chain_on_gpu(gpu, rng):
    """theta -> affine grid -> sampler -> V: dtheta through both kernels."""
    U = rng.standard_normal((2, 2, 8, 9))
    theta = np.array([[0.9, 0.15, 0.1], [-0.2, 0.8, -0.1]]) + 0.1 * rng.standard_normal((2, 2, 3))

    def forward(theta, U):
        grid, gcache = fast.affine_grid_forward(gpu.asarray(theta), (5, 6), impl="kernel")
        V, vcache = fast.bilinear_sample_forward(gpu.asarray(U), grid, impl="kernel")
        return to_numpy(V), (gcache, vcache)

    def backward(dV, cache):
        gcache, vcache = cache
        dU, dgrid = fast.bilinear_sample_backward(gpu.asarray(dV), vcache)
        dtheta = fast.affine_grid_backward(dgrid, gcache)
        return to_numpy(dtheta), to_numpy(dU)

    errs = check_gradients(forward, backward, {"theta": theta, "U": U}, rng=rng)
    assert max(errs.values()) <= 1e-6, errs


# ------------------------------------------------------------------------------------------
# The benchmark (minstn.bench.gpu): its pieces run on the CPU too, so they are tested here.


def test_bench_sampler_bytes():
    # U 4, grid 2, V 1 elements: forward 4 + 2 + 1, backward 1 + 4 + 2 + 4 + 2; 4 bytes each.
    from minstn.bench import gpu as bench

    assert bench.sampler_bytes(1, 1, 2, 2, 1, 1, itemsize=4) == (7 + 13) * 4
    assert bench.sampler_bytes(256, 1, 100, 100, 50, 50, itemsize=4) == 4 * (
        3 * 2_560_000 + 3 * 1_280_000 + 2 * 640_000)


def test_bench_gpu_without_a_gpu_exits_with_the_device_error(capsys):
    from minstn.bench import gpu as bench

    try:
        resolve_device("gpu")
    except DeviceError:
        pass
    else:
        pytest.skip("this machine has a usable GPU: the benchmark would run")
    assert bench.main(["--device", "gpu", "--no-train", "--repeat", "1"]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "needs CuPy and a CUDA GPU" in err


def test_bench_gpu_rejects_bad_options(capsys):
    from minstn.bench import gpu as bench

    assert bench.main(["--repeat", "0"]) == 2
    assert "--repeat, --batch-size and --steps must be >= 1" in capsys.readouterr().err
    assert bench.main(["--device", "cpu"]) == 2
    assert "times the GPU path" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: unknown options are errors
        bench.main(["--bogus"])


def test_bench_sampler_rows_run_on_the_cpu():
    """The timing and comparison code, on the CPU with the array code: the rows the GPU run
    prints. (torch's CPU grid_sample also works here; test_cuda_source.py compares with torch.)"""
    from minstn.bench import gpu as bench

    rows = bench.sampler_rows(resolve_device("cpu"), cases=[(3, 2, 9, 11, 5, 6)], impls=("array",),
                              torch=None, repeat=2, warmup=1)
    assert [r["impl"] for r in rows] == ["array"]
    for r in rows:
        assert r["us"] > 0 and r["gbps"] > 0 and r["maxdiff"] <= 1e-5, r
    assert rows[0]["ratio"] == 1.0
    assert "| (3, 2, 9, 11) -> 5x6 | array |" in bench.format_sampler_table(rows, reference="array")


def test_bench_train_rows_run_on_the_cpu():
    """The training-throughput part, on the CPU with the array sampler and a tiny batch."""
    from minstn.bench import gpu as bench

    rows, note = bench.train_rows(resolve_device("cpu"), batch_size=2, steps=1, warmup=0,
                                  sampler_impls=("array",), models=("ffn-stn",))
    if rows is None:
        pytest.skip(note)
    assert [(m, i) for m, i, *_ in rows] == [("ffn-stn", "array")]
    assert all(ips > 0 and ops is None and syncs is None for _, _, ips, ops, syncs in rows)
