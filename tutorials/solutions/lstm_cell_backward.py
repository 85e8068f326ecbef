def my_lstm_cell_backward(dh, dc, x, h_prev, c_prev, Wx, Wh, b):
    """One LSTM step backwards: the gates recomputed, then the chain rule through h = o tanh(c)
    and c = f c_prev + i g, then through the four gates' pre-activations."""
    H = h_prev.shape[1]
    a = x @ Wx + h_prev @ Wh + b                                         # (N, 4H)
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))
    i, f, g, o = sig(a[:, :H]), sig(a[:, H:2 * H]), np.tanh(a[:, 2 * H:3 * H]), sig(a[:, 3 * H:])
    c = f * c_prev + i * g
    tc = np.tanh(c)
    do = dh * tc
    dc_total = dc + dh * o * (1 - tc ** 2)                               # both paths into c
    di, df, dg = dc_total * g, dc_total * c_prev, dc_total * i
    dc_prev = dc_total * f
    da = np.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - g ** 2), do * o * (1 - o)], axis=1)
    return da @ Wx.T, da @ Wh.T, dc_prev, x.T @ da, h_prev.T @ da, da.sum(axis=0)
