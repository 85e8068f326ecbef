"""LSTM: one cell step, and a loop over T steps with backpropagation through time.

Shape legend
    N   batch size
    D   input features (720 localisation features in the LSTM-STN)
    H   hidden units (256)
    T   time steps (4 glimpses)

One step (gate order i, f, g, o, as in PyTorch's nn.LSTMCell):

    a = x @ Wx + h_prev @ Wh + b          (N, 4H), all four gates in one product each
    i = sigmoid(a[:, 0H:1H])   input gate
    f = sigmoid(a[:, 1H:2H])   forget gate
    g = tanh   (a[:, 2H:3H])   candidate
    o = sigmoid(a[:, 3H:4H])   output gate
    c = f * c_prev + i * g
    h = o * tanh(c)

Backward rule: in a cell step every gradient is assigned once (`=`). In lstm_backward the
weight gradients are summed over time steps (`+=`, the weights are shared by all steps), and
the dh, dc flowing back from step t+1 are added to the upstream dh of step t.
"""
from __future__ import annotations

from minstn.backend import xp_of
from minstn.ops._validate import check_cache, check_dout, check_float_array, check_same_dtype, check_same_module

__all__ = ["lstm_cell_forward", "lstm_cell_backward", "lstm_forward", "lstm_backward", "sigmoid"]


def sigmoid(a):
    """1 / (1 + exp(-a)), written as 0.5 * (1 + tanh(a / 2)) so that it never overflows."""
    xp = xp_of(a)
    return 0.5 * (1.0 + xp.tanh(0.5 * a))


def _check_lstm_params(op, Wx, Wh, b):
    check_float_array(op, "Wx", Wx, 2, "(D, 4H)")
    check_float_array(op, "Wh", Wh, 2, "(H, 4H)")
    check_float_array(op, "b", b, 1, "(4H,)")
    H = Wh.shape[0]
    if Wh.shape[1] != 4 * H:
        raise ValueError(f"{op}: Wh must be (H, 4H); got {tuple(Wh.shape)}, so 4H = {4 * H} != {Wh.shape[1]}")
    if Wx.shape[1] != 4 * H:
        raise ValueError(f"{op}: Wx must be (D, 4H) = (D, {4 * H}) to match Wh {tuple(Wh.shape)}, got {tuple(Wx.shape)}")
    if b.shape[0] != 4 * H:
        raise ValueError(f"{op}: b must be (4H,) = ({4 * H},) to match Wh, got {tuple(b.shape)}")
    return Wx.shape[0], H


def _check_state(op, x_name, x, h_prev, c_prev, D, H):
    N = x.shape[0]
    if x.shape[1] != D:
        raise ValueError(f"{op}: {x_name} has {x.shape[1]} features but Wx is (D, 4H) with D = {D}")
    for name, s in (("h_prev", h_prev), ("c_prev", c_prev)):
        check_float_array(op, name, s, 2, "(N, H)")
        if tuple(s.shape) != (N, H):
            raise ValueError(f"{op}: {name} must be (N, H) = ({N}, {H}), got {tuple(s.shape)}")


def lstm_cell_forward(x, h_prev, c_prev, Wx, Wh, b):
    """One LSTM step.

    x (N, D), h_prev (N, H), c_prev (N, H), Wx (D, 4H), Wh (H, 4H), b (4H,)
    -> (h (N, H), c (N, H), cache).
    """
    op = "lstm_cell_forward"
    D, H = _check_lstm_params(op, Wx, Wh, b)
    check_float_array(op, "x", x, 2, "(N, D)")
    _check_state(op, "x", x, h_prev, c_prev, D, H)
    check_same_module(op, x=x, h_prev=h_prev, c_prev=c_prev, Wx=Wx, Wh=Wh, b=b)
    check_same_dtype(op, x=x, h_prev=h_prev, c_prev=c_prev, Wx=Wx, Wh=Wh, b=b)
    return _cell_forward(x, h_prev, c_prev, Wx, Wh, b)


def _cell_forward(x, h_prev, c_prev, Wx, Wh, b):
    xp = xp_of(x)
    H = Wh.shape[0]
    a = x @ Wx  # (N, 4H)
    a += h_prev @ Wh
    a += b
    i = sigmoid(a[:, 0 * H : 1 * H])  # (N, H)
    f = sigmoid(a[:, 1 * H : 2 * H])
    g = xp.tanh(a[:, 2 * H : 3 * H])
    o = sigmoid(a[:, 3 * H : 4 * H])
    c = f * c_prev + i * g  # (N, H)
    tc = xp.tanh(c)
    h = o * tc  # (N, H)
    cache = ("lstm_cell", x, h_prev, c_prev, Wx, Wh, i, f, g, o, tc)
    return h, c, cache


def lstm_cell_backward(dh, dc, cache):
    """Gradients of one step.

    dh (N, H) and dc (N, H) are the upstream gradients of h and c (dc may be None: zero).
    Returns (dx (N, D), dh_prev (N, H), dc_prev (N, H), dWx (D, 4H), dWh (H, 4H), db (4H,)).
    """
    _, x, h_prev, c_prev, Wx, Wh, i, f, g, o, tc = check_cache("lstm_cell_backward", cache, "lstm_cell", "lstm_cell_forward")
    check_dout("lstm_cell_backward", "dh", dh, h_prev.shape)
    if dc is not None:
        check_dout("lstm_cell_backward", "dc", dc, c_prev.shape)
    xp = xp_of(dh)
    dc_total = dh * o * (1.0 - tc * tc)  # (N, H), through h = o * tanh(c); a new array
    if dc is not None:
        dc_total = dc_total + dc  # never modify the incoming dc
    do = dh * tc
    di = dc_total * g
    df = dc_total * c_prev
    dg = dc_total * i
    dc_prev = dc_total * f
    da = xp.concatenate(  # (N, 4H), the gate pre-activations, order i, f, g, o
        [di * i * (1.0 - i), df * f * (1.0 - f), dg * (1.0 - g * g), do * o * (1.0 - o)], axis=1
    )
    db = da.sum(axis=0)  # (4H,)
    dWh = h_prev.T @ da  # (H, 4H)
    dh_prev = da @ Wh.T  # (N, H)
    dWx = x.T @ da  # (D, 4H)
    dx = da @ Wx.T  # (N, D)
    return dx, dh_prev, dc_prev, dWx, dWh, db


def lstm_forward(xs, h0, c0, Wx, Wh, b):
    """Run the cell for T steps.

    xs (T, N, D), h0 (N, H), c0 (N, H), Wx (D, 4H), Wh (H, 4H), b (4H,)
    -> (hs (T, N, H), cache).  The final cell state is not returned (the LSTM-STN reads h only).
    """
    op = "lstm_forward"
    D, H = _check_lstm_params(op, Wx, Wh, b)
    check_float_array(op, "xs", xs, 3, "(T, N, D)")
    if xs.shape[0] < 1:
        raise ValueError(f"{op}: xs must have at least one time step, got shape {tuple(xs.shape)}")
    _check_state(op, "xs[t]", xs[0], h0, c0, D, H)
    check_same_module(op, xs=xs, h0=h0, c0=c0, Wx=Wx, Wh=Wh, b=b)
    check_same_dtype(op, xs=xs, h0=h0, c0=c0, Wx=Wx, Wh=Wh, b=b)
    xp = xp_of(xs)
    T, N = xs.shape[0], xs.shape[1]
    hs = xp.empty((T, N, H), dtype=xs.dtype)  # (T, N, H)
    h, c = h0, c0
    caches = []
    for t in range(T):
        h, c, cache_t = _cell_forward(xs[t], h, c, Wx, Wh, b)
        hs[t] = h
        caches.append(cache_t)
    return hs, ("lstm", caches)


def lstm_backward(dhs, cache):
    """Backpropagation through time.

    dhs (T, N, H): upstream gradient of every hs[t].
    Returns (dxs (T, N, D), dh0 (N, H), dc0 (N, H), dWx (D, 4H), dWh (H, 4H), db (4H,)).
    """
    _, caches = check_cache("lstm_backward", cache, "lstm", "lstm_forward")
    xp = xp_of(dhs)
    T = len(caches)
    x0, h0, c0, Wx, Wh = caches[0][1:6]
    check_dout("lstm_backward", "dhs", dhs, (T,) + tuple(h0.shape))
    dxs = xp.empty((T,) + tuple(x0.shape), dtype=dhs.dtype)  # (T, N, D)
    dWx = xp.zeros_like(Wx)
    dWh = xp.zeros_like(Wh)
    db = xp.zeros(Wx.shape[1], dtype=dhs.dtype)
    dh_next = xp.zeros_like(h0)  # gradient reaching h_t from step t+1 (zero after the last step)
    dc_next = xp.zeros_like(c0)
    for t in reversed(range(T)):
        dh = dhs[t] + dh_next  # a new array; dhs is not modified
        dx_t, dh_next, dc_next, dWx_t, dWh_t, db_t = lstm_cell_backward(dh, dc_next, caches[t])
        dxs[t] = dx_t
        dWx += dWx_t  # += : weights shared by all steps
        dWh += dWh_t
        db += db_t
    return dxs, dh_next, dc_next, dWx, dWh, db
