"""The fast LSTM cell step: minstn.ops.lstm's on NumPy arrays; on CuPy arrays the two (forward)
and four (backward) matrix products with cuBLAS and everything between them as ONE CUDA kernel
each way (kernels/lstm.cu), where the array code takes some twenty elementwise launches. Same
numbers as the plain op to rounding (the kernels do the same operations in the same order; the
math library's tanh is the GPU's) - tested.

Shape legend
    N   batch size        D   input features        H   hidden units (gates i, f, g, o)

Forward, x (N, D), h_prev (N, H), c_prev (N, H), Wx (D, 4H), Wh (H, 4H), b (4H,):
    ax = x @ Wx,  ah = h_prev @ Wh                               (N, 4H) each, cuBLAS
    state (7, N, H) = lstm_cell_forward kernel (ax, ah, b, c_prev): h, c, i, f, g, o, tanh(c)
    -> h = state[0], c = state[1] (C-contiguous views), cache
Backward, dh (N, H), dc (N, H) or None:
    da (N, 4H), dc_prev (N, H), db (4H,) = lstm_cell_backward kernel (one thread per hidden unit,
                                          summing db over the batch in registers: no atomics)
    dWh = h_prev^T @ da,  dh_prev = da @ Wh^T,  dWx = x^T @ da,  dx = da @ Wx^T    (cuBLAS)
Four device operations forward (two products, an allocation, a kernel), six backward. The cache of a CuPy step is tagged
'lstm_cell_gpu'; the plain lstm_cell_backward does not take it (use this module's).
"""
from __future__ import annotations

from minstn.backend import is_cupy, xp_of
from minstn.ops import lstm as plain
from minstn.ops._validate import check_cache, check_dout, check_float_array, check_same_dtype, check_same_module
from minstn.ops.fast import cuda as _cuda

__all__ = ["lstm_cell_forward", "lstm_cell_backward"]


def lstm_cell_forward(x, h_prev, c_prev, Wx, Wh, b):
    """minstn.ops.lstm_cell_forward -> (h (N, H), c (N, H), cache); on CuPy arrays two products
    and one kernel."""
    if not is_cupy(x):
        return plain.lstm_cell_forward(x, h_prev, c_prev, Wx, Wh, b)
    op = "lstm_cell_forward"                       # the plain op's checks
    D, H = plain._check_lstm_params(op, Wx, Wh, b)
    check_float_array(op, "x", x, 2, "(N, D)")
    plain._check_state(op, "x", x, h_prev, c_prev, D, H)
    check_same_module(op, x=x, h_prev=h_prev, c_prev=c_prev, Wx=Wx, Wh=Wh, b=b)
    check_same_dtype(op, x=x, h_prev=h_prev, c_prev=c_prev, Wx=Wx, Wh=Wh, b=b)
    xp = xp_of(x)
    N = x.shape[0]
    ax = x @ Wx                                                       # (N, 4H)
    ah = h_prev @ Wh                                                  # (N, 4H)
    b, c_prev = xp.ascontiguousarray(b), xp.ascontiguousarray(c_prev)
    state = xp.empty((7, N, H), dtype=x.dtype)                        # h, c, i, f, g, o, tanh(c)
    _cuda.launch("lstm_cell_forward", ax, N * H, (ax, ah, b, c_prev, state, *_cuda.sizes(N, H)))
    return state[0], state[1], ("lstm_cell_gpu", x, h_prev, c_prev, Wx, Wh, state)


def lstm_cell_backward(dh, dc, cache):
    """minstn.ops.lstm_cell_backward -> (dx, dh_prev, dc_prev, dWx, dWh, db); for a CuPy
    forward's cache one kernel and four products."""
    check_cache("lstm_cell_backward", cache, ("lstm_cell", "lstm_cell_gpu"), "lstm_cell_forward")
    if cache[0] == "lstm_cell":
        return plain.lstm_cell_backward(dh, dc, cache)
    _, x, h_prev, c_prev, Wx, Wh, state = cache
    check_dout("lstm_cell_backward", "dh", dh, h_prev.shape)
    if dc is not None:
        check_dout("lstm_cell_backward", "dc", dc, c_prev.shape)
    xp = xp_of(dh)
    N, H = h_prev.shape
    dh = xp.ascontiguousarray(dh)
    dc_arg = dh if dc is None else xp.ascontiguousarray(dc)          # not read when there is no dc
    out = xp.empty(N * 4 * H + N * H + 4 * H, dtype=dh.dtype)        # da, dc_prev, db: one allocation
    da = out[: N * 4 * H].reshape(N, 4 * H)                           # (N, 4H), C-contiguous views
    dc_prev = out[N * 4 * H : N * 5 * H].reshape(N, H)                # (N, H)
    db = out[N * 5 * H :]                                             # (4H,)
    _cuda.launch("lstm_cell_backward", dh, H,                         # one thread per hidden unit
                 (dh, dc_arg, c_prev, state, da, dc_prev, db, *_cuda.sizes(N, H, dc is not None)))
    dWh = h_prev.T @ da                                               # (H, 4H)
    dh_prev = da @ Wh.T                                               # (N, H)
    dWx = x.T @ da                                                    # (D, 4H)
    dx = da @ Wx.T                                                    # (N, D)
    return dx, dh_prev, dc_prev, dWx, dWh, db
