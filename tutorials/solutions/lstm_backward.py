def my_lstm_backward(dhs, xs, h0, c0, Wx, Wh, b):
    """Backpropagation through time: run the forward to get every step's state, then go back
    from the last step, adding the gradient that reaches h_t from step t + 1 to the upstream dh_t,
    and summing the weight gradients over the steps (the weights are shared)."""
    T = xs.shape[0]
    hs, cs = [h0], [c0]
    for t in range(T):                                                   # the forward, keeping each state
        h, c, _ = lstm_cell_forward(xs[t], hs[-1], cs[-1], Wx, Wh, b)
        hs.append(h)
        cs.append(c)
    dxs = np.zeros_like(xs)
    dWx, dWh, db = np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)
    dh_next, dc_next = np.zeros_like(h0), np.zeros_like(c0)
    for t in reversed(range(T)):
        _, _, cache = lstm_cell_forward(xs[t], hs[t], cs[t], Wx, Wh, b)
        dxs[t], dh_next, dc_next, dWx_t, dWh_t, db_t = lstm_cell_backward(dhs[t] + dh_next, dc_next, cache)
        dWx += dWx_t
        dWh += dWh_t
        db += db_t
    return dxs, dh_next, dc_next, dWx, dWh, db
