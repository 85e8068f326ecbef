"""The recurrent spatial transformer's thetas (the LSTM-STN of minstn.models.stn): a recurrent cell
run for T steps on the same localisation features, each step's hidden state regressed to an affine
theta, which is fed back into the next step's input.

Shape legend
    N   canvases (the batch)
    F   localisation features
    H   hidden units of the cell
    T   steps (one glimpse each)
    E   the cell's input: F + 6 with feedback, else F

Forward, with the features f (N, F) the same at every step:

    h_0 = c_0 = 0                                         (N, H)
    theta_0 = theta0 (6,), broadcast to (N, 6)            a constant: no gradient flows into it
    for t = 1..T:
        x_t = [f, theta_{t-1}]  (feedback)  or  f         (N, E)
        h_t, c_t = cell(x_t, h_{t-1}, c_{t-1})            (N, H)   (c: the LSTM's only)
        theta_t = h_t @ Wr + br  (+ step_b[t])            (N, 6)   step_b (T, 6): a bias per step
    thetas (N, T, 6)

cell and its parameters (cell_params, in this order; minstn.ops.lstm and minstn.ops.recurrent):
    'lstm'  Wx (E, 4H), Wh (H, 4H), b (4H,)
    'gru'   Wx (E, 3H), Wh (H, 3H), bx (3H,), bh (3H,)
    'rnn'   Wx (E, H),  Wh (H, H),  b (H,)

Backward, backpropagation through time (t = T..1, the forward in reverse):

    dtheta_t = dthetas[:, t] + dfed_t        dfed_t: the part of step t+1's dx that belongs to theta_t
    the regressor:  dh_reg, dWr_t, dbr_t;  step_b[t] gets dtheta_t summed over the batch
    dh_t = dh_reg + dh_next                  dh_next: from step t+1 through its h_{t-1}
    the cell:       dx_t, dh_next, dc_next, the cell's weight gradients of step t
    dfeats += dx_t[:, :F];  dfed_{t-1} = dx_t[:, F:] (feedback)

The `=` / `+=` rule: the cell's and the regressor's weights are used by every step, so their
gradients are the sums over the steps (`+=`, starting from 0), and so is dfeats (the features
enter every step); row t of step_b is step t's alone (`=`). Nothing flows into theta_0.

This is the plain version, a loop over the steps that calls the cells' and the linear layer's op
pairs. minstn.ops.fast.recurrent_thetas_forward gives the same numbers; on a GPU it runs the LSTM's
T steps as a few kernels and products (minstn/ops/fast/thetas.py).
"""
from __future__ import annotations

from minstn.backend import xp_of
from minstn.ops._validate import (
    check_cache,
    check_dout,
    check_float_array,
    check_positive_int,
    check_same_dtype,
    check_same_module,
)
from minstn.ops.linear import linear_backward, linear_forward
from minstn.ops.lstm import lstm_cell_backward, lstm_cell_forward
from minstn.ops.recurrent import gru_cell_backward, gru_cell_forward, rnn_cell_backward, rnn_cell_forward

__all__ = ["recurrent_thetas_forward", "recurrent_thetas_backward", "CELL_PARAMS", "check_thetas_inputs"]

#: the parameters of each cell, in the order cell_params holds them
CELL_PARAMS = {"lstm": ("Wx", "Wh", "b"), "gru": ("Wx", "Wh", "bx", "bh"), "rnn": ("Wx", "Wh", "b")}
_GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def check_thetas_inputs(op, feats, theta0, cell_params, Wr, br, step_b, steps, cell, feedback):
    """The checks of recurrent_thetas_forward (shared with the fast version): returns (N, F, H)."""
    if cell not in CELL_PARAMS:
        raise ValueError(f"{op}: cell must be one of {sorted(CELL_PARAMS)}, got {cell!r}")
    names = CELL_PARAMS[cell]
    if not isinstance(cell_params, (tuple, list)) or len(cell_params) != len(names):
        raise TypeError(f"{op}: cell_params must be a tuple of the {cell} cell's {len(names)} arrays "
                        f"({', '.join(names)}), got {type(cell_params).__name__}")
    steps = check_positive_int(op, "steps", steps)
    check_float_array(op, "feats", feats, 2, "(N, F)")
    check_float_array(op, "theta0", theta0, 1, "(6,)")
    check_float_array(op, "Wr", Wr, 2, "(H, 6)")
    check_float_array(op, "br", br, 1, "(6,)")
    arrays = dict(feats=feats, theta0=theta0, Wr=Wr, br=br, **dict(zip(names, cell_params)))
    if step_b is not None:
        check_float_array(op, "step_b", step_b, 2, "(T, 6)")
        arrays["step_b"] = step_b
    for name in names:
        check_float_array(op, name, arrays[name], 2 if name.startswith("W") else 1)
    check_same_module(op, **arrays)
    check_same_dtype(op, **arrays)
    N, F = feats.shape
    Wx, Wh = cell_params[0], cell_params[1]
    H, E = Wh.shape[0], F + 6 if feedback else F
    if Wx.shape[0] != E:
        raise ValueError(f"{op}: Wx must have E = {'F + 6' if feedback else 'F'} = {E} rows for {F} features "
                         f"(feedback={feedback}), got {tuple(Wx.shape)}")
    if tuple(Wh.shape) != (H, _GATES[cell] * H):
        raise ValueError(f"{op}: Wh must be (H, {_GATES[cell]}H), got {tuple(Wh.shape)}")
    if tuple(theta0.shape) != (6,) or tuple(br.shape) != (6,) or tuple(Wr.shape) != (H, 6):
        raise ValueError(f"{op}: theta0 and br must be (6,) and Wr (H, 6) = ({H}, 6); got {tuple(theta0.shape)}, "
                         f"{tuple(br.shape)}, {tuple(Wr.shape)}")
    if step_b is not None and tuple(step_b.shape) != (steps, 6):
        raise ValueError(f"{op}: step_b must be (T, 6) = ({steps}, 6), got {tuple(step_b.shape)}")
    return N, F, H


def _cell_forward(cell, x, h, c, cell_params):
    """One step of the cell -> (h, c, cache); c passes through unchanged for the GRU and the RNN."""
    if cell == "lstm":
        return lstm_cell_forward(x, h, c, *cell_params)
    h, cache = (gru_cell_forward if cell == "gru" else rnn_cell_forward)(x, h, *cell_params)
    return h, c, cache


def _cell_backward(cell, dh, dc, cache):
    """(dx, dh_prev, dc_prev, [the cell's weight gradients]) of one step."""
    if cell == "lstm":
        dx, dh_prev, dc_prev, *grads = lstm_cell_backward(dh, dc, cache)
        return dx, dh_prev, dc_prev, grads
    dx, dh_prev, *grads = (gru_cell_backward if cell == "gru" else rnn_cell_backward)(dh, cache)
    return dx, dh_prev, dc, grads


def recurrent_thetas_forward(feats, theta0, cell_params, Wr, br, step_b=None, steps=4, cell="lstm", feedback=True):
    """The recurrent transformer's T thetas (module docstring).

    feats (N, F), theta0 (6,) (a constant), cell_params (the cell's weights, CELL_PARAMS), Wr (H, 6),
    br (6,), step_b (T, 6) or None, steps T, cell 'lstm' | 'gru' | 'rnn', feedback: x_t = [f, theta_{t-1}]
    -> (thetas (N, T, 6), cache).
    """
    op = "recurrent_thetas_forward"
    N, F, H = check_thetas_inputs(op, feats, theta0, cell_params, Wr, br, step_b, steps, cell, feedback)
    xp = xp_of(feats)
    h = xp.zeros((N, H), dtype=feats.dtype)                                        # (N, H)
    c = xp.zeros((N, H), dtype=feats.dtype)                                        # (N, H)
    theta = xp.broadcast_to(theta0, (N, 6))                                        # theta_0, a constant
    c_cells, c_regs, thetas = [], [], []
    for t in range(steps):
        x = xp.concatenate([feats, theta], axis=1) if feedback else feats         # (N, E)
        h, c, c_cell = _cell_forward(cell, x, h, c, cell_params)                   # (N, H) each
        theta, c_reg = linear_forward(h, Wr, br)                                   # (N, 6)
        if step_b is not None:
            theta = theta + step_b[t]                                              # this step's own bias
        c_cells.append(c_cell)
        c_regs.append(c_reg)
        thetas.append(theta)
    cache = ("recurrent_thetas", cell, feedback, N, F, H, step_b is not None, c_cells, c_regs)
    return xp.stack(thetas, axis=1), cache                                         # (N, T, 6)


def recurrent_thetas_backward(dthetas, cache):
    """dthetas (N, T, 6) -> (dfeats (N, F), dcell_params (a tuple, cell_params' order), dWr (H, 6),
    dbr (6,), dstep_b (T, 6), or None without step_b). Nothing for theta0 (a constant)."""
    _, cell, feedback, N, F, H, has_step, c_cells, c_regs = check_cache(
        "recurrent_thetas_backward", cache, "recurrent_thetas", "recurrent_thetas_forward")
    T = len(c_cells)
    check_dout("recurrent_thetas_backward", "dthetas", dthetas, (N, T, 6))
    xp = xp_of(dthetas)
    dh_next = xp.zeros((N, H), dtype=dthetas.dtype)    # gradient into h_t from step t+1
    dc_next = xp.zeros((N, H), dtype=dthetas.dtype)    # gradient into c_t from step t+1
    dfed = xp.zeros((N, 6), dtype=dthetas.dtype)       # gradient into theta_t through the input of step t+1
    dfeats = dWr = dbr = 0
    dcell = [0] * len(CELL_PARAMS[cell])               # the cell's weights' gradients, summed over the steps
    dstep = [None] * T
    for t in range(T - 1, -1, -1):
        dtheta = dthetas[:, t] + dfed                                                    # (N, 6)
        if has_step:
            dstep[t] = dtheta.sum(axis=0)                                                # (6,) for step_b[t]
        dh_reg, dWr_t, dbr_t = linear_backward(dtheta, c_regs[t])                        # (N, H)
        dh = dh_reg + dh_next
        dx, dh_next, dc_next, dcell_t = _cell_backward(cell, dh, dc_next, c_cells[t])    # dx (N, E)
        dfeats = dfeats + dx[:, :F]                                                      # (N, F)
        dfed = dx[:, F:] if feedback else dfed                                           # (N, 6); theta_0 is a constant
        dcell = [total + g for total, g in zip(dcell, dcell_t)]
        dWr, dbr = dWr + dWr_t, dbr + dbr_t
    return dfeats, tuple(dcell), dWr, dbr, (xp.stack(dstep) if has_step else None)      # dstep_b (T, 6)
