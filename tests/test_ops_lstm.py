"""LSTM cell and BPTT: every output to every input, agreement with PyTorch, clear errors.

Tolerance: float64 centred differences, relative error <= 1e-6 (noise ~1e-9 for these smooth
gates). Weights are scaled by 0.5 so the gates stay away from saturation, where derivatives
shrink towards zero and a relative error becomes a ratio of rounding noise.
"""
import numpy as np
import pytest

from minstn.gradcheck import check_gradients
from minstn.ops import lstm_backward, lstm_cell_backward, lstm_cell_forward, lstm_forward

TOL = 1e-6


def _params(rng, D, H, scale=0.5):
    return {
        "Wx": scale * rng.standard_normal((D, 4 * H)),
        "Wh": scale * rng.standard_normal((H, 4 * H)),
        "b": scale * rng.standard_normal(4 * H),
    }


@pytest.mark.parametrize("N,D,H", [(3, 5, 4), (1, 2, 3)])
def test_cell_gradients_all_outputs_all_inputs(rng, N, D, H):
    inputs = {
        "x": rng.standard_normal((N, D)),
        "h_prev": rng.standard_normal((N, H)),
        "c_prev": rng.standard_normal((N, H)),
        **_params(rng, D, H),
    }
    # random upstream gradients for BOTH outputs h and c
    errs = check_gradients(lstm_cell_forward, lstm_cell_backward, inputs, rng=rng)
    assert max(errs.values()) <= TOL, errs


@pytest.mark.parametrize("T", [3, 4])
def test_lstm_bptt_gradients(rng, T):
    N, D, H = 2, 3, 4
    inputs = {
        "xs": rng.standard_normal((T, N, D)),
        "h0": rng.standard_normal((N, H)),
        "c0": rng.standard_normal((N, H)),
        **_params(rng, D, H),
    }
    errs = check_gradients(lstm_forward, lstm_backward, inputs, rng=rng)
    assert max(errs.values()) <= TOL, errs


def test_lstm_forward_is_cell_loop(rng):
    T, N, D, H = 3, 2, 3, 4
    p = _params(rng, D, H)
    xs, h, c = rng.standard_normal((T, N, D)), rng.standard_normal((N, H)), rng.standard_normal((N, H))
    hs, _ = lstm_forward(xs, h, c, p["Wx"], p["Wh"], p["b"])
    for t in range(T):
        h, c, _ = lstm_cell_forward(xs[t], h, c, p["Wx"], p["Wh"], p["b"])
        np.testing.assert_allclose(hs[t], h, rtol=1e-14)


def test_cell_dc_none_means_zero(rng):
    N, D, H = 2, 3, 4
    p = _params(rng, D, H)
    h, c, cache = lstm_cell_forward(rng.standard_normal((N, D)), np.zeros((N, H)), np.zeros((N, H)), **p)
    dh = rng.standard_normal((N, H))
    for a, b in zip(lstm_cell_backward(dh, None, cache), lstm_cell_backward(dh, np.zeros((N, H)), cache)):
        np.testing.assert_array_equal(a, b)


def test_cell_matches_torch(rng):
    torch = pytest.importorskip("torch")
    N, D, H = 3, 5, 4
    p = _params(rng, D, H, scale=1.0)
    x, h, c = rng.standard_normal((N, D)), rng.standard_normal((N, H)), rng.standard_normal((N, H))
    h1, c1, cache = lstm_cell_forward(x, h, c, **p)
    cell = torch.nn.LSTMCell(D, H).double()
    with torch.no_grad():  # PyTorch stores weights transposed, gate order i, f, g, o as here
        cell.weight_ih.copy_(torch.tensor(p["Wx"].T))
        cell.weight_hh.copy_(torch.tensor(p["Wh"].T))
        cell.bias_ih.copy_(torch.tensor(p["b"]))
        cell.bias_hh.zero_()
    xt = torch.tensor(x, requires_grad=True)
    ht, ct = cell(xt, (torch.tensor(h), torch.tensor(c)))
    np.testing.assert_allclose(h1, ht.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(c1, ct.detach().numpy(), atol=1e-12)
    dh, dc = rng.standard_normal((N, H)), rng.standard_normal((N, H))
    (ht * torch.tensor(dh) + ct * torch.tensor(dc)).sum().backward()
    dx, _, _, dWx, _, _ = lstm_cell_backward(dh, dc, cache)
    np.testing.assert_allclose(dx, xt.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(dWx, cell.weight_ih.grad.numpy().T, atol=1e-12)


def test_float32_kept(rng):
    N, D, H = 2, 3, 4
    p = {k: v.astype(np.float32) for k, v in _params(rng, D, H).items()}
    z = np.zeros((N, H), np.float32)
    h, c, cache = lstm_cell_forward(np.ones((N, D), np.float32), z, z, **p)
    assert h.dtype == c.dtype == np.float32
    assert all(g.dtype == np.float32 for g in lstm_cell_backward(h, c, cache))


def test_lstm_errors(rng):
    N, D, H = 2, 3, 4
    p = _params(rng, D, H)
    x, h, c = rng.standard_normal((N, D)), np.zeros((N, H)), np.zeros((N, H))
    with pytest.raises(ValueError, match=r"Wh must be \(H, 4H\)"):
        lstm_cell_forward(x, h, c, p["Wx"], p["Wh"][:, :-1], p["b"])
    with pytest.raises(ValueError, match=r"Wx must be \(D, 4H\) = \(D, 16\)"):
        lstm_cell_forward(x, h, c, p["Wx"][:, :8], p["Wh"], p["b"])
    with pytest.raises(ValueError, match=r"b must be \(4H,\) = \(16,\)"):
        lstm_cell_forward(x, h, c, p["Wx"], p["Wh"], p["b"][:3])
    with pytest.raises(ValueError, match="x has 2 features but Wx is"):
        lstm_cell_forward(x[:, :2], h, c, **p)
    with pytest.raises(ValueError, match=r"h_prev must be \(N, H\) = \(2, 4\), got \(2, 3\)"):
        lstm_cell_forward(x, h[:, :3], c, **p)
    with pytest.raises(ValueError, match=r"c_prev must be \(N, H\) = \(2, 4\), got \(1, 4\)"):
        lstm_cell_forward(x, h, c[:1], **p)
    with pytest.raises(TypeError, match="h_prev has dtype float32 but x has dtype float64"):
        lstm_cell_forward(x, h.astype(np.float32), c, **p)
    with pytest.raises(ValueError, match=r"xs must be 3-D \(T, N, D\)"):
        lstm_forward(x, h, c, **p)
    with pytest.raises(ValueError, match="xs must have at least one time step"):
        lstm_forward(np.zeros((0, N, D)), h, c, **p)


def test_lstm_backward_rejects_wrong_gradient_shape(rng):
    N, D, H = 2, 3, 4
    p = _params(rng, D, H)
    h, c, cache = lstm_cell_forward(rng.standard_normal((N, D)), np.zeros((N, H)), np.zeros((N, H)), **p)
    with pytest.raises(ValueError, match=r"lstm_cell_backward: dh must have the forward output's shape \(2, 4\), got \(1, 4\)"):
        lstm_cell_backward(h[:1], c, cache)
    with pytest.raises(ValueError, match=r"lstm_cell_backward: dc must have the forward output's shape \(2, 4\)"):
        lstm_cell_backward(h, c[:, :1], cache)
    hs, cache = lstm_forward(rng.standard_normal((3, N, D)), np.zeros((N, H)), np.zeros((N, H)), **p)
    with pytest.raises(ValueError, match=r"lstm_backward: dhs must have the forward output's shape \(3, 2, 4\), got \(2, 2, 4\)"):
        lstm_backward(hs[:2], cache)
