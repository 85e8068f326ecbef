"""GRU and plain (Elman, tanh) RNN: one cell step, and a loop over T steps with backpropagation
through time. The LSTM's smaller siblings, written the same way as minstn/ops/lstm.py.

Shape legend
    N   batch size
    D   input features
    H   hidden units
    T   time steps

GRU, one step (gate order r, z, n, exactly as PyTorch's nn.GRUCell; Wx, Wh hold all three):

    ax = x @ Wx + bx                       (N, 3H), all three gates in one product
    ah = h_prev @ Wh + bh                  (N, 3H), all three gates in one product
    r = sigmoid(ax[:, 0H:1H] + ah[:, 0H:1H])      reset gate
    z = sigmoid(ax[:, 1H:2H] + ah[:, 1H:2H])      update gate
    n = tanh   (ax[:, 2H:3H] + r * ah[:, 2H:3H])  candidate (r scales h_prev @ Wh_n + bh_n,
                                                  bias included, which is why bx and bh are
                                                  two separate vectors)
    h = (1 - z) * n + z * h_prev

RNN, one step:

    h = tanh(x @ Wx + h_prev @ Wh + b)     (N, H)

Parameter counts (weights and biases):

    GRU    Wx (D, 3H), Wh (H, 3H), bx (3H,), bh (3H,)   3H(D + H + 2)
    RNN    Wx (D, H),  Wh (H, H),  b (H,)               H(D + H + 1)
    LSTM   Wx (D, 4H), Wh (H, 4H), b (4H,)              4H(D + H + 1)   (for comparison)

The T-step versions take xs (T, N, D) and return hs (T, N, H), time first, the layout of
lstm_forward (and of PyTorch's nn.GRU / nn.RNN with batch_first=False).

Backward rule: in a cell step every gradient is assigned once (`=`); the one exception is
dh_prev of the GRU, which receives two contributions (through ah and through z * h_prev) and
is built as a new array from both, so the incoming dh is never modified. In gru_backward and
rnn_backward the weight and bias gradients are summed over time steps (`+=`, the parameters
are shared by all steps), and the dh flowing back from step t+1 is added to the upstream dh of
step t (into a new array; dhs is not modified). Each backward undoes its forward in exactly
the reverse order.

Caches are opaque tuples whose first element names the forward that made them, so that a
backward given another op's cache (or anything else) says so instead of unpacking garbage.
"""
from __future__ import annotations

from minstn.backend import xp_of
from minstn.ops._validate import check_cache, check_dout, check_float_array, check_same_dtype, check_same_module
from minstn.ops.lstm import sigmoid

__all__ = [
    "gru_cell_forward",
    "gru_cell_backward",
    "gru_forward",
    "gru_backward",
    "rnn_cell_forward",
    "rnn_cell_backward",
    "rnn_forward",
    "rnn_backward",
]


# ------------------------------------------------------------------------------------------
# Input checks


def _check_params(op, Wx, Wh, biases, k):
    """Wx (D, kH), Wh (H, kH), each bias (kH,); k = 3 for the GRU, 1 for the RNN. Returns (D, H)."""
    kH = "H" if k == 1 else f"{k}H"
    check_float_array(op, "Wx", Wx, 2, f"(D, {kH})")
    check_float_array(op, "Wh", Wh, 2, f"(H, {kH})")
    for name, b in biases.items():
        check_float_array(op, name, b, 1, f"({kH},)")
    H = Wh.shape[0]
    if Wh.shape[1] != k * H:
        raise ValueError(f"{op}: Wh must be (H, {kH}); got {tuple(Wh.shape)}, so {kH} = {k * H} != {Wh.shape[1]}")
    if Wx.shape[1] != k * H:
        raise ValueError(
            f"{op}: Wx must be (D, {kH}) = (D, {k * H}) to match Wh {tuple(Wh.shape)}, got {tuple(Wx.shape)}"
        )
    for name, b in biases.items():
        if b.shape[0] != k * H:
            raise ValueError(f"{op}: {name} must be ({kH},) = ({k * H},) to match Wh, got {tuple(b.shape)}")
    return Wx.shape[0], H


def _check_state(op, x_name, x, h_name, h_prev, D, H, wx_layout):
    N = x.shape[0]
    if x.shape[1] != D:
        raise ValueError(f"{op}: {x_name} has {x.shape[1]} features but Wx is {wx_layout} with D = {D}")
    check_float_array(op, h_name, h_prev, 2, "(N, H)")
    if tuple(h_prev.shape) != (N, H):
        raise ValueError(f"{op}: {h_name} must be (N, H) = ({N}, {H}), got {tuple(h_prev.shape)}")


def _check_sequence(op, xs):
    check_float_array(op, "xs", xs, 3, "(T, N, D)")
    if xs.shape[0] < 1:
        raise ValueError(f"{op}: xs must have at least one time step, got shape {tuple(xs.shape)}")


def _describe(cache) -> str:
    if cache is None:
        return "None"
    if isinstance(cache, tuple) and cache and isinstance(cache[0], str):
        return f"the cache of {cache[0]}"
    if isinstance(cache, (tuple, list)):
        return f"a {type(cache).__name__} of length {len(cache)}"
    return f"a {type(cache).__name__}"


def _check_cache(op, cache, forward_name, length):
    """The cache must be the tuple made by `forward_name` (tagged with its name, `length` long)."""
    check_cache(op, cache, forward_name, forward_name)
    if len(cache) != length:
        raise TypeError(f"{op}: cache is not from {forward_name} (a tuple of length {len(cache)}, not {length}); "
                        f"pass the cache that {forward_name} returned")


def _check_dout(op, name, dout, like_name, like, expected):
    """dout: an array of the forward output's shape, and of the dtype and array module of the
    forward's input `like` (taken from the cache), so a float32 forward gets float32 gradients."""
    check_dout(op, name, dout, expected)
    check_same_module(op, **{f"the forward's {like_name}": like, name: dout})
    check_same_dtype(op, **{f"the forward's {like_name}": like, name: dout})


# ------------------------------------------------------------------------------------------
# GRU


_GRU_CELL_CACHE_LEN = 9


def gru_cell_forward(x, h_prev, Wx, Wh, bx, bh):
    """One GRU step (gates r, z, n, as nn.GRUCell).

    x (N, D), h_prev (N, H), Wx (D, 3H), Wh (H, 3H), bx (3H,), bh (3H,)
    -> (h (N, H), cache).
    """
    op = "gru_cell_forward"
    D, H = _check_params(op, Wx, Wh, {"bx": bx, "bh": bh}, 3)
    check_float_array(op, "x", x, 2, "(N, D)")
    _check_state(op, "x", x, "h_prev", h_prev, D, H, "(D, 3H)")
    check_same_module(op, x=x, h_prev=h_prev, Wx=Wx, Wh=Wh, bx=bx, bh=bh)
    check_same_dtype(op, x=x, h_prev=h_prev, Wx=Wx, Wh=Wh, bx=bx, bh=bh)
    return _gru_cell_forward(x, h_prev, Wx, Wh, bx, bh)


def _gru_cell_forward(x, h_prev, Wx, Wh, bx, bh):
    xp = xp_of(x)
    H = Wh.shape[0]
    ax = x @ Wx  # (N, 3H)
    ax += bx
    ah = h_prev @ Wh  # (N, 3H)
    ah += bh
    r = sigmoid(ax[:, 0 * H : 1 * H] + ah[:, 0 * H : 1 * H])  # (N, H)
    z = sigmoid(ax[:, 1 * H : 2 * H] + ah[:, 1 * H : 2 * H])  # (N, H)
    ah_n = ah[:, 2 * H : 3 * H]  # (N, H), h_prev @ Wh_n + bh_n, kept for the backward
    n = xp.tanh(ax[:, 2 * H : 3 * H] + r * ah_n)  # (N, H)
    h = (1.0 - z) * n + z * h_prev  # (N, H)
    cache = ("gru_cell_forward", x, h_prev, Wx, Wh, r, z, n, ah_n)
    return h, cache


def gru_cell_backward(dh, cache):
    """Gradients of one GRU step.

    dh (N, H): upstream gradient of h; cache from gru_cell_forward.
    Returns (dx (N, D), dh_prev (N, H), dWx (D, 3H), dWh (H, 3H), dbx (3H,), dbh (3H,)).
    """
    op = "gru_cell_backward"
    _check_cache(op, cache, "gru_cell_forward", _GRU_CELL_CACHE_LEN)
    h_prev = cache[2]
    _check_dout(op, "dh", dh, "h_prev", h_prev, h_prev.shape)
    return _gru_cell_backward(dh, cache)


def _gru_cell_backward(dh, cache):
    _, x, h_prev, Wx, Wh, r, z, n, ah_n = cache
    xp = xp_of(dh)
    # h = (1 - z) * n + z * h_prev
    dn = dh * (1.0 - z)  # (N, H)
    dz = dh * (h_prev - n)  # (N, H)
    dh_prev_direct = dh * z  # (N, H), the path that skips the gates; a new array
    # n = tanh(ax_n + r * ah_n)
    dan = dn * (1.0 - n * n)  # (N, H), gradient of the candidate's pre-activation
    dr = dan * ah_n  # (N, H)
    dah_n = dan * r  # (N, H)
    # z = sigmoid(ax_z + ah_z), r = sigmoid(ax_r + ah_r)
    daz = dz * z * (1.0 - z)  # (N, H)
    dar = dr * r * (1.0 - r)  # (N, H)
    # ah = h_prev @ Wh + bh: r and z enter ah like ax; n enters ah only through r * ah_n
    dah = xp.concatenate([dar, daz, dah_n], axis=1)  # (N, 3H)
    dbh = dah.sum(axis=0)  # (3H,)
    dWh = h_prev.T @ dah  # (H, 3H)
    dh_prev = dah @ Wh.T  # (N, H)
    dh_prev += dh_prev_direct  # both are new arrays; dh is untouched
    # ax = x @ Wx + bx
    dax = xp.concatenate([dar, daz, dan], axis=1)  # (N, 3H)
    dbx = dax.sum(axis=0)  # (3H,)
    dWx = x.T @ dax  # (D, 3H)
    dx = dax @ Wx.T  # (N, D)
    return dx, dh_prev, dWx, dWh, dbx, dbh


def gru_forward(xs, h0, Wx, Wh, bx, bh):
    """Run the GRU cell for T steps.

    xs (T, N, D), h0 (N, H), Wx (D, 3H), Wh (H, 3H), bx (3H,), bh (3H,)
    -> (hs (T, N, H), cache).  hs[T - 1] is the final hidden state.
    """
    op = "gru_forward"
    D, H = _check_params(op, Wx, Wh, {"bx": bx, "bh": bh}, 3)
    _check_sequence(op, xs)
    _check_state(op, "xs[t]", xs[0], "h0", h0, D, H, "(D, 3H)")
    check_same_module(op, xs=xs, h0=h0, Wx=Wx, Wh=Wh, bx=bx, bh=bh)
    check_same_dtype(op, xs=xs, h0=h0, Wx=Wx, Wh=Wh, bx=bx, bh=bh)
    xp = xp_of(xs)
    T, N = xs.shape[0], xs.shape[1]
    hs = xp.empty((T, N, H), dtype=xs.dtype)  # (T, N, H)
    h = h0
    caches = []
    for t in range(T):
        h, cache_t = _gru_cell_forward(xs[t], h, Wx, Wh, bx, bh)
        hs[t] = h
        caches.append(cache_t)
    return hs, ("gru_forward", tuple(caches))


def gru_backward(dhs, cache):
    """Backpropagation through time for gru_forward.

    dhs (T, N, H): upstream gradient of every hs[t]; cache from gru_forward.
    Returns (dxs (T, N, D), dh0 (N, H), dWx (D, 3H), dWh (H, 3H), dbx (3H,), dbh (3H,)).
    """
    op = "gru_backward"
    _check_cache(op, cache, "gru_forward", 2)
    caches = cache[1]
    T = len(caches)
    _, x0, h0, Wx, Wh = caches[0][:5]
    _check_dout(op, "dhs", dhs, "h0", h0, (T,) + tuple(h0.shape))
    xp = xp_of(dhs)
    dxs = xp.empty((T,) + tuple(x0.shape), dtype=dhs.dtype)  # (T, N, D)
    dWx = xp.zeros_like(Wx)  # (D, 3H)
    dWh = xp.zeros_like(Wh)  # (H, 3H)
    dbx = xp.zeros(Wx.shape[1], dtype=dhs.dtype)  # (3H,)
    dbh = xp.zeros(Wx.shape[1], dtype=dhs.dtype)  # (3H,)
    dh_next = xp.zeros_like(h0)  # gradient reaching h_t from step t+1 (zero after the last step)
    for t in reversed(range(T)):
        dh = dhs[t] + dh_next  # a new array; dhs is not modified
        dx_t, dh_next, dWx_t, dWh_t, dbx_t, dbh_t = _gru_cell_backward(dh, caches[t])
        dxs[t] = dx_t
        dWx += dWx_t  # += : parameters shared by all steps
        dWh += dWh_t
        dbx += dbx_t
        dbh += dbh_t
    return dxs, dh_next, dWx, dWh, dbx, dbh


# ------------------------------------------------------------------------------------------
# RNN (tanh)


_RNN_CELL_CACHE_LEN = 6


def rnn_cell_forward(x, h_prev, Wx, Wh, b):
    """One tanh RNN step (nn.RNNCell with nonlinearity='tanh', one bias b = bias_ih + bias_hh).

    x (N, D), h_prev (N, H), Wx (D, H), Wh (H, H), b (H,) -> (h (N, H), cache).
    """
    op = "rnn_cell_forward"
    D, H = _check_params(op, Wx, Wh, {"b": b}, 1)
    check_float_array(op, "x", x, 2, "(N, D)")
    _check_state(op, "x", x, "h_prev", h_prev, D, H, "(D, H)")
    check_same_module(op, x=x, h_prev=h_prev, Wx=Wx, Wh=Wh, b=b)
    check_same_dtype(op, x=x, h_prev=h_prev, Wx=Wx, Wh=Wh, b=b)
    return _rnn_cell_forward(x, h_prev, Wx, Wh, b)


def _rnn_cell_forward(x, h_prev, Wx, Wh, b):
    xp = xp_of(x)
    a = x @ Wx  # (N, H)
    a += h_prev @ Wh
    a += b
    h = xp.tanh(a)  # (N, H)
    cache = ("rnn_cell_forward", x, h_prev, Wx, Wh, h)
    return h, cache


def rnn_cell_backward(dh, cache):
    """Gradients of one RNN step.

    dh (N, H): upstream gradient of h; cache from rnn_cell_forward.
    Returns (dx (N, D), dh_prev (N, H), dWx (D, H), dWh (H, H), db (H,)).
    """
    op = "rnn_cell_backward"
    _check_cache(op, cache, "rnn_cell_forward", _RNN_CELL_CACHE_LEN)
    h_prev = cache[2]
    _check_dout(op, "dh", dh, "h_prev", h_prev, h_prev.shape)
    return _rnn_cell_backward(dh, cache)


def _rnn_cell_backward(dh, cache):
    _, x, h_prev, Wx, Wh, h = cache
    da = dh * (1.0 - h * h)  # (N, H), through h = tanh(a); a new array
    db = da.sum(axis=0)  # (H,)
    dWh = h_prev.T @ da  # (H, H)
    dh_prev = da @ Wh.T  # (N, H)
    dWx = x.T @ da  # (D, H)
    dx = da @ Wx.T  # (N, D)
    return dx, dh_prev, dWx, dWh, db


def rnn_forward(xs, h0, Wx, Wh, b):
    """Run the RNN cell for T steps.

    xs (T, N, D), h0 (N, H), Wx (D, H), Wh (H, H), b (H,) -> (hs (T, N, H), cache).
    """
    op = "rnn_forward"
    D, H = _check_params(op, Wx, Wh, {"b": b}, 1)
    _check_sequence(op, xs)
    _check_state(op, "xs[t]", xs[0], "h0", h0, D, H, "(D, H)")
    check_same_module(op, xs=xs, h0=h0, Wx=Wx, Wh=Wh, b=b)
    check_same_dtype(op, xs=xs, h0=h0, Wx=Wx, Wh=Wh, b=b)
    xp = xp_of(xs)
    T, N = xs.shape[0], xs.shape[1]
    hs = xp.empty((T, N, H), dtype=xs.dtype)  # (T, N, H)
    h = h0
    caches = []
    for t in range(T):
        h, cache_t = _rnn_cell_forward(xs[t], h, Wx, Wh, b)
        hs[t] = h
        caches.append(cache_t)
    return hs, ("rnn_forward", tuple(caches))


def rnn_backward(dhs, cache):
    """Backpropagation through time for rnn_forward.

    dhs (T, N, H): upstream gradient of every hs[t]; cache from rnn_forward.
    Returns (dxs (T, N, D), dh0 (N, H), dWx (D, H), dWh (H, H), db (H,)).
    """
    op = "rnn_backward"
    _check_cache(op, cache, "rnn_forward", 2)
    caches = cache[1]
    T = len(caches)
    _, x0, h0, Wx, Wh = caches[0][:5]
    _check_dout(op, "dhs", dhs, "h0", h0, (T,) + tuple(h0.shape))
    xp = xp_of(dhs)
    dxs = xp.empty((T,) + tuple(x0.shape), dtype=dhs.dtype)  # (T, N, D)
    dWx = xp.zeros_like(Wx)  # (D, H)
    dWh = xp.zeros_like(Wh)  # (H, H)
    db = xp.zeros(Wx.shape[1], dtype=dhs.dtype)  # (H,)
    dh_next = xp.zeros_like(h0)  # gradient reaching h_t from step t+1 (zero after the last step)
    for t in reversed(range(T)):
        dh = dhs[t] + dh_next  # a new array; dhs is not modified
        dx_t, dh_next, dWx_t, dWh_t, db_t = _rnn_cell_backward(dh, caches[t])
        dxs[t] = dx_t
        dWx += dWx_t  # += : parameters shared by all steps
        dWh += dWh_t
        db += db_t
    return dxs, dh_next, dWx, dWh, db
