"""The fast recurrent thetas: minstn.ops.thetas' loop on NumPy arrays (and for the GRU and the RNN);
for an LSTM on CuPy arrays the T steps as one product and two kernels a step forward, one
product and one kernel a step backward (kernels/lstm.cu), where the loop of cell and linear ops
takes some twenty-eight device operations a step (with the fast cell's kernels). Same numbers as
the plain op to rounding: the same operations, but sums split and grouped differently (below) -
tested.

Shape legend
    N   canvases      F   features      H   hidden units      T   steps
    K   6 with feedback (theta_{t-1} is part of the cell's input), else 0;  E = F + K

Two rearrangements make each step small:

1. x_t @ Wx = f @ Wx[:F] + theta_{t-1} @ Wx[F:]. The features' part is the same at every step
   and is multiplied once; what changes from step to step, s_t = [theta_{t-1}, h_{t-1}] (N, K + H),
   lives in one buffer S (T, N, K + H) and meets W_s = [Wx[F:]; Wh] (K + H, 4H) in one product.
   The kernels write each step's theta and h straight into S[t + 1]: nothing is copied or
   concatenated between the steps.
2. The weights are shared by the steps, so their gradients are sums over the steps, and a sum of
   products is one product over the steps stacked: dWx[:F] = f^T (sum_t da_t), [dWx[F:]; dWh] =
   S^T da (all steps' rows), dWr = h^T dtheta (all steps' rows), dfeats = (sum_t da_t) Wx[:F]^T.
   The loop over the steps keeps only what each step needs from the next: da_{t+1} W_s^T.

Forward (16 device operations with feedback and T = 4):
    ax = f @ Wx[:F]   (N, 4H);  W_s = [Wx[F:]; Wh];  one zeroed buffer (state, S, thetas);  S[0, :, :K] = theta0
    for t: ah = S[t] @ W_s;  thetas_cell_forward (the gates, h_t into S[t+1]);
           thetas_regress (theta_t = h_t @ Wr + br + step_b[t], into thetas and S[t+1])
Backward (13 device operations):
    one buffer for everything it writes
    for t = T-1..0: g = da_{t+1} @ W_s^T (N, K + H) = [dfed, dh_next] (not at t = T-1);
                    thetas_cell_backward (dtheta_t, the regressor's dh, the gates' da_t, dc;
                    the sums over the batch and the steps of db, dbr, dstep_b)
    dWr = h^T dtheta;  D = sum_t da_t;  dfeats = D @ Wx[:F]^T;  dWx[:F] = f^T D;
    [dWx[F:]; dWh] = S^T da   (the last two written into one (E + H, 4H) buffer: dWx and dWh
                               are its two row blocks)
The cache of a CuPy LSTM is tagged 'recurrent_thetas_gpu'; the plain backward does not take it.
"""
from __future__ import annotations

from minstn.backend import is_cupy, xp_of
from minstn.ops import thetas as plain
from minstn.ops._validate import check_cache, check_dout
from minstn.ops.fast import cuda as _cuda

__all__ = ["recurrent_thetas_forward", "recurrent_thetas_backward"]


def recurrent_thetas_forward(feats, theta0, cell_params, Wr, br, step_b=None, steps=4, cell="lstm", feedback=True):
    """minstn.ops.recurrent_thetas_forward -> (thetas (N, T, 6), cache); for an LSTM on CuPy arrays
    one product and two kernels per step."""
    if not (is_cupy(feats) and cell == "lstm"):
        return plain.recurrent_thetas_forward(feats, theta0, cell_params, Wr, br, step_b, steps, cell, feedback)
    N, F, H = plain.check_thetas_inputs("recurrent_thetas_forward", feats, theta0, cell_params, Wr, br, step_b,
                                        steps, cell, feedback)
    xp = xp_of(feats)
    Wx, Wh, b = cell_params
    T, K = int(steps), 6 if feedback else 0
    feats = xp.ascontiguousarray(feats)
    ax = feats @ Wx[:F]                                                     # (N, 4H): the features' part, once
    W_s = xp.concatenate([Wx[F:], Wh]) if feedback else Wh                  # (K + H, 4H)
    n_state, n_S = 7 * T * N * H, T * N * (K + H)
    buf = xp.zeros(n_state + n_S + N * T * 6, dtype=feats.dtype)            # one allocation; h_0 = 0 in S[0]
    state = buf[:n_state].reshape(7, T, N, H)                               # h, c, i, f, g, o, tanh(c)
    S = buf[n_state:n_state + n_S].reshape(T, N, K + H)                     # [theta_{t-1}, h_{t-1}]
    thetas = buf[n_state + n_S:].reshape(N, T, 6)
    if feedback:
        S[0, :, :6] = theta0                                                # theta_0, a constant
    b, Wr, br = (xp.ascontiguousarray(a) for a in (b, Wr, br))
    step = br if step_b is None else xp.ascontiguousarray(step_b)           # not read without step_b
    for t in range(T):
        ah = S[t] @ W_s                                                     # (N, 4H)
        _cuda.launch("thetas_cell_forward", ax, N * H, (ax, ah, b, state, S, *_cuda.sizes(N, H, T, t, K)))
        _cuda.launch("thetas_regress", ax, N * 6,
                     (state, Wr, br, step, thetas, S, *_cuda.sizes(N, H, T, t, K, step_b is not None)))
    return thetas, ("recurrent_thetas_gpu", feats, Wx, W_s, Wr, state, S, step_b is not None)


def recurrent_thetas_backward(dthetas, cache):
    """minstn.ops.recurrent_thetas_backward -> (dfeats, (dWx, dWh, db), dWr, dbr, dstep_b or None);
    for a CuPy LSTM's cache one kernel and one product per step, five products after the loop."""
    check_cache("recurrent_thetas_backward", cache, ("recurrent_thetas", "recurrent_thetas_gpu"),
                "recurrent_thetas_forward")
    if cache[0] == "recurrent_thetas":
        return plain.recurrent_thetas_backward(dthetas, cache)
    _, feats, Wx, W_s, Wr, state, S, has_step = cache
    _, T, N, H = state.shape
    F, KH = feats.shape[1], S.shape[2]
    E = F + KH - H
    check_dout("recurrent_thetas_backward", "dthetas", dthetas, (N, T, 6))
    xp = xp_of(dthetas)
    dthetas = xp.ascontiguousarray(dthetas)
    da, dtheta, dc, db, dbr, dstep, dW = _cuda.empty_parts(             # one allocation, every element written
        xp, dthetas.dtype,
        (T, N, 4 * H),                                                      # the gates' gradients, every step
        (T, N, 6),                                                          # dtheta_t, every step
        (N, H),                                                             # dc, carried from step to step
        (4 * H,), (6,), (T, 6),                                             # db, dbr, dstep_b
        (E + H, 4 * H))                                                     # [dWx; dWh]
    g = dthetas                                                             # not read at the last step
    for t in range(T - 1, -1, -1):
        if t < T - 1:
            g = da[t + 1] @ W_s.T                                           # (N, K + H): [dfed, dh_next]
        _cuda.launch("thetas_cell_backward", dthetas, H,                    # one thread per hidden unit
                     (dthetas, g, Wr, state, dc, da, dtheta, db, dbr, dstep, *_cuda.sizes(N, H, T, t, KH - H)))
    dWr = state[0].reshape(T * N, H).T @ dtheta.reshape(T * N, 6)           # (H, 6)
    D = da.sum(axis=0)                                                      # (N, 4H): sum over the steps
    dfeats = D @ Wx[:F].T                                                   # (N, F)
    xp.matmul(feats.T, D, out=dW[:F])                                       # dWx[:F]
    xp.matmul(S.reshape(T * N, KH).T, da.reshape(T * N, 4 * H), out=dW[F:])  # [dWx[F:]; dWh]
    return dfeats, (dW[:E], dW[E:], db), dWr, dbr, (dstep if has_step else None)
