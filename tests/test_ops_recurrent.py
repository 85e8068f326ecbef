"""GRU and tanh-RNN cells and BPTT: every output to every input, agreement with PyTorch, clear
errors, and the edges (batch 1, H = 1, D != H, T = 1).

Tolerance: float64 centred differences, relative error <= 1e-6 (as the LSTM tests; the noise
of minstn.gradcheck with h = 1e-5 is ~1e-9 for these smooth gates). Weights are scaled by 0.5
so the gates stay away from saturation, where derivatives shrink towards zero and a relative
error becomes a ratio of rounding noise.

PyTorch comparisons run in float64 with atol 1e-12: the same arithmetic in other summation
orders, on values of order 1.
"""
import numpy as np
import pytest

from minstn.backend import DeviceError, resolve_device, to_numpy
from minstn.gradcheck import check_gradients
from minstn.ops.lstm import lstm_cell_forward, lstm_forward
from minstn.ops.recurrent import (
    gru_backward,
    gru_cell_backward,
    gru_cell_forward,
    gru_forward,
    rnn_backward,
    rnn_cell_backward,
    rnn_cell_forward,
    rnn_forward,
)

TOL = 1e-6

# (N, D, H): the usual case, batch 1 with D != H, H = 1
CELL_SIZES = [(3, 5, 4), (1, 2, 3), (2, 3, 1)]
# (T, N, D, H): T = 1, 3, 4; the last one also batch 1 and H = 1
SEQ_SIZES = [(1, 2, 3, 4), (3, 2, 3, 4), (4, 1, 2, 1)]


def _gru_params(rng, D, H, scale=0.5):
    return {
        "Wx": scale * rng.standard_normal((D, 3 * H)),
        "Wh": scale * rng.standard_normal((H, 3 * H)),
        "bx": scale * rng.standard_normal(3 * H),
        "bh": scale * rng.standard_normal(3 * H),
    }


def _rnn_params(rng, D, H, scale=0.5):
    return {
        "Wx": scale * rng.standard_normal((D, H)),
        "Wh": scale * rng.standard_normal((H, H)),
        "b": scale * rng.standard_normal(H),
    }


# ------------------------------------------------------------------------------------------
# Finite differences: every input and parameter


@pytest.mark.parametrize("N,D,H", CELL_SIZES)
def test_gru_cell_gradients_all_inputs(rng, N, D, H):
    inputs = {"x": rng.standard_normal((N, D)), "h_prev": rng.standard_normal((N, H)), **_gru_params(rng, D, H)}
    errs = check_gradients(gru_cell_forward, gru_cell_backward, inputs, rng=rng)
    assert list(errs) == ["x", "h_prev", "Wx", "Wh", "bx", "bh"]
    assert max(errs.values()) <= TOL, errs


@pytest.mark.parametrize("N,D,H", CELL_SIZES)
def test_rnn_cell_gradients_all_inputs(rng, N, D, H):
    inputs = {"x": rng.standard_normal((N, D)), "h_prev": rng.standard_normal((N, H)), **_rnn_params(rng, D, H)}
    errs = check_gradients(rnn_cell_forward, rnn_cell_backward, inputs, rng=rng)
    assert list(errs) == ["x", "h_prev", "Wx", "Wh", "b"]
    assert max(errs.values()) <= TOL, errs


@pytest.mark.parametrize("T,N,D,H", SEQ_SIZES)
def test_gru_bptt_gradients_all_inputs(rng, T, N, D, H):
    inputs = {"xs": rng.standard_normal((T, N, D)), "h0": rng.standard_normal((N, H)), **_gru_params(rng, D, H)}
    errs = check_gradients(gru_forward, gru_backward, inputs, rng=rng)
    assert list(errs) == ["xs", "h0", "Wx", "Wh", "bx", "bh"]
    assert max(errs.values()) <= TOL, errs


@pytest.mark.parametrize("T,N,D,H", SEQ_SIZES)
def test_rnn_bptt_gradients_all_inputs(rng, T, N, D, H):
    inputs = {"xs": rng.standard_normal((T, N, D)), "h0": rng.standard_normal((N, H)), **_rnn_params(rng, D, H)}
    errs = check_gradients(rnn_forward, rnn_backward, inputs, rng=rng)
    assert list(errs) == ["xs", "h0", "Wx", "Wh", "b"]
    assert max(errs.values()) <= TOL, errs


# ------------------------------------------------------------------------------------------
# The T-step versions are T calls of the cell


@pytest.mark.parametrize("T", [1, 4])
def test_gru_forward_is_cell_loop(rng, T):
    N, D, H = 2, 3, 4
    p = _gru_params(rng, D, H)
    xs, h = rng.standard_normal((T, N, D)), rng.standard_normal((N, H))
    hs, cache = gru_forward(xs, h, **p)
    assert hs.shape == (T, N, H)
    dhs = rng.standard_normal((T, N, H))
    dxs, dh0, dWx, dWh, dbx, dbh = gru_backward(dhs, cache)
    cell_caches = []
    for t in range(T):
        h, c = gru_cell_forward(xs[t], h, **p)
        np.testing.assert_array_equal(hs[t], h)
        cell_caches.append(c)
    # and the backward is T cell backward calls in reverse, summing the parameter gradients
    dh_next, sums = np.zeros((N, H)), [np.zeros_like(p[k]) for k in ("Wx", "Wh", "bx", "bh")]
    for t in reversed(range(T)):
        dx, dh_next, *dparams = gru_cell_backward(dhs[t] + dh_next, cell_caches[t])
        np.testing.assert_allclose(dxs[t], dx, rtol=1e-14, atol=1e-15)
        sums = [s + d for s, d in zip(sums, dparams)]
    np.testing.assert_allclose(dh0, dh_next, rtol=1e-14, atol=1e-15)
    for got, want in zip((dWx, dWh, dbx, dbh), sums):
        np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("T", [1, 4])
def test_rnn_forward_is_cell_loop(rng, T):
    N, D, H = 2, 3, 4
    p = _rnn_params(rng, D, H)
    xs, h = rng.standard_normal((T, N, D)), rng.standard_normal((N, H))
    hs, cache = rnn_forward(xs, h, **p)
    assert hs.shape == (T, N, H)
    dhs = rng.standard_normal((T, N, H))
    dxs, dh0, dWx, dWh, db = rnn_backward(dhs, cache)
    cell_caches = []
    for t in range(T):
        h, c = rnn_cell_forward(xs[t], h, **p)
        np.testing.assert_array_equal(hs[t], h)
        cell_caches.append(c)
    dh_next, sums = np.zeros((N, H)), [np.zeros_like(p[k]) for k in ("Wx", "Wh", "b")]
    for t in reversed(range(T)):
        dx, dh_next, *dparams = rnn_cell_backward(dhs[t] + dh_next, cell_caches[t])
        np.testing.assert_allclose(dxs[t], dx, rtol=1e-14, atol=1e-15)
        sums = [s + d for s, d in zip(sums, dparams)]
    np.testing.assert_allclose(dh0, dh_next, rtol=1e-14, atol=1e-15)
    for got, want in zip((dWx, dWh, db), sums):
        np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-15)


def test_backward_leaves_upstream_gradient_untouched(rng):
    T, N, D, H = 3, 2, 3, 4
    xs, h0 = rng.standard_normal((T, N, D)), rng.standard_normal((N, H))
    for forward, backward, p in ((gru_forward, gru_backward, _gru_params(rng, D, H)),
                                 (rnn_forward, rnn_backward, _rnn_params(rng, D, H))):
        hs, cache = forward(xs, h0, **p)
        dhs = rng.standard_normal(hs.shape)
        before = dhs.copy()
        backward(dhs, cache)
        np.testing.assert_array_equal(dhs, before)


# ------------------------------------------------------------------------------------------
# Agreement with PyTorch (weights stored transposed there: weight_ih (kH, D) = Wx.T)


def _torch_grads(torch, params, out, douts):
    (out * torch.tensor(douts)).sum().backward()
    return [p.grad.numpy() for p in params]


def test_gru_cell_matches_torch(rng):
    torch = pytest.importorskip("torch")
    N, D, H = 3, 5, 4
    p = _gru_params(rng, D, H, scale=1.0)
    x, h = rng.standard_normal((N, D)), rng.standard_normal((N, H))
    h1, cache = gru_cell_forward(x, h, **p)
    cell = torch.nn.GRUCell(D, H).double()
    with torch.no_grad():  # gate order r, z, n as here
        cell.weight_ih.copy_(torch.tensor(p["Wx"].T))
        cell.weight_hh.copy_(torch.tensor(p["Wh"].T))
        cell.bias_ih.copy_(torch.tensor(p["bx"]))
        cell.bias_hh.copy_(torch.tensor(p["bh"]))
    xt, ht = torch.tensor(x, requires_grad=True), torch.tensor(h, requires_grad=True)
    h1t = cell(xt, ht)
    np.testing.assert_allclose(h1, h1t.detach().numpy(), atol=1e-12)
    dh = rng.standard_normal((N, H))
    tx, th, tWx, tWh, tbx, tbh = _torch_grads(
        torch, [xt, ht, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh], h1t, dh
    )
    dx, dh_prev, dWx, dWh, dbx, dbh = gru_cell_backward(dh, cache)
    np.testing.assert_allclose(dx, tx, atol=1e-12)
    np.testing.assert_allclose(dh_prev, th, atol=1e-12)
    np.testing.assert_allclose(dWx, tWx.T, atol=1e-12)
    np.testing.assert_allclose(dWh, tWh.T, atol=1e-12)
    np.testing.assert_allclose(dbx, tbx, atol=1e-12)
    np.testing.assert_allclose(dbh, tbh, atol=1e-12)


def test_rnn_cell_matches_torch(rng):
    torch = pytest.importorskip("torch")
    N, D, H = 3, 5, 4
    p = _rnn_params(rng, D, H, scale=1.0)
    x, h = rng.standard_normal((N, D)), rng.standard_normal((N, H))
    h1, cache = rnn_cell_forward(x, h, **p)
    cell = torch.nn.RNNCell(D, H, nonlinearity="tanh").double()
    with torch.no_grad():  # one bias here: b = bias_ih + bias_hh
        cell.weight_ih.copy_(torch.tensor(p["Wx"].T))
        cell.weight_hh.copy_(torch.tensor(p["Wh"].T))
        cell.bias_ih.copy_(torch.tensor(p["b"]))
        cell.bias_hh.zero_()
    xt, ht = torch.tensor(x, requires_grad=True), torch.tensor(h, requires_grad=True)
    h1t = cell(xt, ht)
    np.testing.assert_allclose(h1, h1t.detach().numpy(), atol=1e-12)
    dh = rng.standard_normal((N, H))
    tx, th, tWx, tWh, tbi, tbh = _torch_grads(
        torch, [xt, ht, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh], h1t, dh
    )
    dx, dh_prev, dWx, dWh, db = rnn_cell_backward(dh, cache)
    np.testing.assert_allclose(dx, tx, atol=1e-12)
    np.testing.assert_allclose(dh_prev, th, atol=1e-12)
    np.testing.assert_allclose(dWx, tWx.T, atol=1e-12)
    np.testing.assert_allclose(dWh, tWh.T, atol=1e-12)
    np.testing.assert_allclose(db, tbi, atol=1e-12)
    np.testing.assert_allclose(db, tbh, atol=1e-12)


@pytest.mark.parametrize("kind", ["gru", "rnn"])
def test_sequence_matches_torch(rng, kind):
    """nn.GRU / nn.RNN (batch_first=False) take (T, N, D) as gru_forward / rnn_forward do."""
    torch = pytest.importorskip("torch")
    T, N, D, H = 4, 3, 5, 2
    if kind == "gru":
        p = _gru_params(rng, D, H, scale=1.0)
        net, forward, backward = torch.nn.GRU(D, H).double(), gru_forward, gru_backward
        b_ih, b_hh = p["bx"], p["bh"]
    else:
        p = _rnn_params(rng, D, H, scale=1.0)
        net, forward, backward = torch.nn.RNN(D, H, nonlinearity="tanh").double(), rnn_forward, rnn_backward
        b_ih, b_hh = p["b"], np.zeros(H)
    with torch.no_grad():
        net.weight_ih_l0.copy_(torch.tensor(p["Wx"].T))
        net.weight_hh_l0.copy_(torch.tensor(p["Wh"].T))
        net.bias_ih_l0.copy_(torch.tensor(b_ih))
        net.bias_hh_l0.copy_(torch.tensor(b_hh))
    xs, h0 = rng.standard_normal((T, N, D)), rng.standard_normal((N, H))
    hs, cache = forward(xs, h0, **p)
    xt, h0t = torch.tensor(xs, requires_grad=True), torch.tensor(h0[None], requires_grad=True)
    hst, _ = net(xt, h0t)
    np.testing.assert_allclose(hs, hst.detach().numpy(), atol=1e-12)
    dhs = rng.standard_normal((T, N, H))
    torch_params = [net.weight_ih_l0, net.weight_hh_l0, net.bias_ih_l0, net.bias_hh_l0]
    tx, th0, tWx, tWh, tbi, tbh = _torch_grads(torch, [xt, h0t] + torch_params, hst, dhs)
    grads = backward(dhs, cache)
    np.testing.assert_allclose(grads[0], tx, atol=1e-12)
    np.testing.assert_allclose(grads[1], th0[0], atol=1e-12)
    np.testing.assert_allclose(grads[2], tWx.T, atol=1e-12)
    np.testing.assert_allclose(grads[3], tWh.T, atol=1e-12)
    np.testing.assert_allclose(grads[4], tbi, atol=1e-12)
    np.testing.assert_allclose(grads[-1], tbh, atol=1e-12)  # dbh (GRU); db again (RNN)


# ------------------------------------------------------------------------------------------
# dtypes


def test_float32_kept(rng):
    N, T, D, H = 2, 3, 3, 4
    x, h = np.ones((N, D), np.float32), np.zeros((N, H), np.float32)
    xs = np.ones((T, N, D), np.float32)
    gp = {k: v.astype(np.float32) for k, v in _gru_params(rng, D, H).items()}
    rp = {k: v.astype(np.float32) for k, v in _rnn_params(rng, D, H).items()}
    for forward, backward, inp, p in (
        (gru_cell_forward, gru_cell_backward, x, gp),
        (rnn_cell_forward, rnn_cell_backward, x, rp),
        (gru_forward, gru_backward, xs, gp),
        (rnn_forward, rnn_backward, xs, rp),
    ):
        out, cache = forward(inp, h, **p)
        assert out.dtype == np.float32, forward.__name__
        grads = backward(np.ones_like(out), cache)
        assert all(g.dtype == np.float32 for g in grads), backward.__name__


# ------------------------------------------------------------------------------------------
# Errors


def test_gru_errors(rng):
    N, D, H = 2, 3, 4
    p = _gru_params(rng, D, H)
    x, h = rng.standard_normal((N, D)), np.zeros((N, H))
    with pytest.raises(ValueError, match=r"gru_cell_forward: Wh must be \(H, 3H\); got \(4, 11\)"):
        gru_cell_forward(x, h, **{**p, "Wh": p["Wh"][:, :-1]})
    with pytest.raises(ValueError, match=r"Wx must be \(D, 3H\) = \(D, 12\) to match Wh"):
        gru_cell_forward(x, h, **{**p, "Wx": p["Wx"][:, :8]})
    with pytest.raises(ValueError, match=r"bx must be \(3H,\) = \(12,\)"):
        gru_cell_forward(x, h, **{**p, "bx": p["bx"][:4]})
    with pytest.raises(ValueError, match=r"bh must be \(3H,\) = \(12,\)"):
        gru_cell_forward(x, h, **{**p, "bh": p["bh"][:4]})
    with pytest.raises(ValueError, match=r"bh must be 1-D \(3H,\), got shape \(1, 12\)"):
        gru_cell_forward(x, h, **{**p, "bh": p["bh"][None]})
    with pytest.raises(ValueError, match=r"x has 2 features but Wx is \(D, 3H\) with D = 3"):
        gru_cell_forward(x[:, :2], h, **p)
    with pytest.raises(ValueError, match=r"h_prev must be \(N, H\) = \(2, 4\), got \(2, 3\)"):
        gru_cell_forward(x, h[:, :3], **p)
    with pytest.raises(TypeError, match="h_prev has dtype float32 but x has dtype float64"):
        gru_cell_forward(x, h.astype(np.float32), **p)
    with pytest.raises(TypeError, match="bh has dtype float32 but x has dtype float64; cast them"):
        gru_cell_forward(x, h, **{**p, "bh": p["bh"].astype(np.float32)})
    with pytest.raises(TypeError, match="x must be a NumPy or CuPy array, got list"):
        gru_cell_forward(x.tolist(), h, **p)
    with pytest.raises(ValueError, match=r"gru_forward: xs must be 3-D \(T, N, D\)"):
        gru_forward(x, h, **p)
    with pytest.raises(ValueError, match="gru_forward: xs must have at least one time step"):
        gru_forward(np.zeros((0, N, D)), h, **p)
    with pytest.raises(ValueError, match=r"gru_forward: h0 must be \(N, H\) = \(2, 4\), got \(1, 4\)"):
        gru_forward(x[None], h[:1], **p)


def test_rnn_errors(rng):
    N, D, H = 2, 3, 4
    p = _rnn_params(rng, D, H)
    x, h = rng.standard_normal((N, D)), np.zeros((N, H))
    with pytest.raises(ValueError, match=r"rnn_cell_forward: Wh must be \(H, H\); got \(4, 3\)"):
        rnn_cell_forward(x, h, **{**p, "Wh": p["Wh"][:, :3]})
    with pytest.raises(ValueError, match=r"Wx must be \(D, H\) = \(D, 4\) to match Wh"):
        rnn_cell_forward(x, h, **{**p, "Wx": p["Wx"][:, :2]})
    with pytest.raises(ValueError, match=r"b must be \(H,\) = \(4,\)"):
        rnn_cell_forward(x, h, **{**p, "b": p["b"][:3]})
    with pytest.raises(ValueError, match=r"x has 5 features but Wx is \(D, H\) with D = 3"):
        rnn_cell_forward(np.zeros((N, 5)), h, **p)
    with pytest.raises(TypeError, match="Wh must be float32 or float64, got dtype int64"):
        rnn_cell_forward(x, h, **{**p, "Wh": np.zeros((H, H), np.int64)})
    with pytest.raises(TypeError, match="Wx has dtype float32 but x has dtype float64"):
        rnn_cell_forward(x, h, **{**p, "Wx": p["Wx"].astype(np.float32)})
    with pytest.raises(ValueError, match=r"rnn_forward: xs\[t\] has 2 features"):
        rnn_forward(np.zeros((3, N, 2)), h, **p)
    with pytest.raises(ValueError, match="rnn_forward: xs must have at least one time step"):
        rnn_forward(np.zeros((0, N, D)), h, **p)


def test_backward_rejects_wrong_gradient(rng):
    N, D, H = 2, 3, 4
    x, h = rng.standard_normal((N, D)), np.zeros((N, H))
    xs = rng.standard_normal((3, N, D))
    gp, rp = _gru_params(rng, D, H), _rnn_params(rng, D, H)
    for name, forward, backward, inp, p, dname, shape in (
        ("gru_cell_backward", gru_cell_forward, gru_cell_backward, x, gp, "dh", r"\(2, 4\), got \(1, 4\)"),
        ("rnn_cell_backward", rnn_cell_forward, rnn_cell_backward, x, rp, "dh", r"\(2, 4\), got \(1, 4\)"),
        ("gru_backward", gru_forward, gru_backward, xs, gp, "dhs", r"\(3, 2, 4\), got \(1, 2, 4\)"),
        ("rnn_backward", rnn_forward, rnn_backward, xs, rp, "dhs", r"\(3, 2, 4\), got \(1, 2, 4\)"),
    ):
        out, cache = forward(inp, h, **p)
        with pytest.raises(ValueError, match=rf"{name}: {dname} must have the forward output's shape {shape}"):
            backward(out[:1], cache)
        with pytest.raises(TypeError, match=rf"{name}: {dname} must be a NumPy or CuPy array, got list"):
            backward(out.tolist(), cache)
        forward_input = "h_prev" if dname == "dh" else "h0"
        with pytest.raises(TypeError, match=rf"{dname} has dtype float32 but the forward's {forward_input} has dtype float64"):
            backward(out.astype(np.float32), cache)


def test_backward_rejects_bogus_cache(rng):
    N, D, H = 2, 3, 4
    x, h = rng.standard_normal((N, D)), np.zeros((N, H))
    xs = rng.standard_normal((3, N, D))
    gp, rp = _gru_params(rng, D, H), _rnn_params(rng, D, H)
    dh, dhs = np.zeros((N, H)), np.zeros((3, N, H))
    _, gru_cell_cache = gru_cell_forward(x, h, **gp)
    _, rnn_cell_cache = rnn_cell_forward(x, h, **rp)
    _, gru_cache = gru_forward(xs, h, **gp)
    _, rnn_cache = rnn_forward(xs, h, **rp)
    _, _, lstm_cell_cache = lstm_cell_forward(x, h, h, np.zeros((D, 4 * H)), np.zeros((H, 4 * H)), np.zeros(4 * H))
    _, lstm_cache = lstm_forward(xs, h, h, np.zeros((D, 4 * H)), np.zeros((H, 4 * H)), np.zeros(4 * H))
    cases = [
        (gru_cell_backward, dh, "gru_cell_forward", rnn_cell_cache, "the cache of 'rnn_cell_forward'"),
        (gru_cell_backward, dh, "gru_cell_forward", gru_cache, "the cache of 'gru_forward'"),
        (gru_cell_backward, dh, "gru_cell_forward", lstm_cell_cache, "the cache of 'lstm_cell'"),
        (gru_cell_backward, dh, "gru_cell_forward", None, "a NoneType"),
        (rnn_cell_backward, dh, "rnn_cell_forward", gru_cell_cache, "the cache of 'gru_cell_forward'"),
        (rnn_cell_backward, dh, "rnn_cell_forward", list(rnn_cell_cache), "a list"),
        (gru_backward, dhs, "gru_forward", gru_cell_cache, "the cache of 'gru_cell_forward'"),
        (gru_backward, dhs, "gru_forward", lstm_cache, "the cache of 'lstm'"),
        (rnn_backward, dhs, "rnn_forward", gru_cache, "the cache of 'gru_forward'"),
        (rnn_backward, dhs, "rnn_forward", "cache", "a str"),
    ]
    for backward, dout, forward_name, bogus, described in cases:
        with pytest.raises(
            TypeError,
            match=rf"^{backward.__name__}: cache is not from {forward_name} \(got {described}\); "
            rf"pass the cache that {forward_name} returned$",
        ):
            backward(dout, bogus)


# ------------------------------------------------------------------------------------------
# CuPy (skipped without a usable GPU)


@pytest.fixture(scope="module")
def gpu():
    """The GPU device, or skip the test with the DeviceError's message."""
    try:
        dev = resolve_device("gpu")
    except DeviceError as e:
        pytest.skip(f"no usable GPU: {e}")
    dev.use()
    return dev


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_on_gpu_matches_numpy(gpu, rng, dtype):
    T, N, D, H = 3, 2, 5, 4
    x, h, xs = rng.standard_normal((N, D)), rng.standard_normal((N, H)), rng.standard_normal((T, N, D))
    gp, rp = _gru_params(rng, D, H), _rnn_params(rng, D, H)
    tol = 1e-10 if dtype == np.float64 else 1e-4  # other summation orders (cuBLAS); float32 rounding
    for forward, backward, inp, p in (
        (gru_cell_forward, gru_cell_backward, x, gp),
        (rnn_cell_forward, rnn_cell_backward, x, rp),
        (gru_forward, gru_backward, xs, gp),
        (rnn_forward, rnn_backward, xs, rp),
    ):
        arrays = [a.astype(dtype) for a in (inp, h, *p.values())]
        out, cache = forward(*arrays)
        dout = rng.standard_normal(out.shape).astype(dtype)
        grads = backward(dout, cache)
        out_g, cache_g = forward(*[gpu.asarray(a) for a in arrays])
        grads_g = backward(gpu.asarray(dout), cache_g)
        assert type(out_g).__module__.startswith("cupy"), forward.__name__
        for got, want in zip((out_g, *grads_g), (out, *grads)):
            got = to_numpy(got)
            assert got.dtype == want.dtype == dtype
            np.testing.assert_allclose(got, want, rtol=0, atol=tol * max(1.0, float(np.abs(want).max())))
