def my_conv2d_backward(dout, x, w, b, padding):
    """dout (N, F, H_out, W_out), and the forward's inputs -> (dx, dw, db), by im2col and col2im."""
    N, C, H, W = x.shape
    F, _, kh, kw = w.shape
    p = {"same": (kh - 1) // 2, "valid": 0}.get(padding, padding)
    H_out, W_out = H + 2 * p - kh + 1, W + 2 * p - kw + 1
    xpad = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    cols = np.empty((C, kh, kw, N, H_out, W_out))                       # im2col, as the forward built it
    for u in range(kh):
        for v in range(kw):
            cols[:, u, v] = xpad[:, :, u:u + H_out, v:v + W_out].transpose(1, 0, 2, 3)
    cols = cols.reshape(C * kh * kw, -1)                                 # (K, M)
    dout2 = dout.transpose(1, 0, 2, 3).reshape(F, -1)                    # (F, M)
    db = dout2.sum(axis=1)
    dw = (dout2 @ cols.T).reshape(w.shape)
    dcols = (w.reshape(F, -1).T @ dout2).reshape(C, kh, kw, N, H_out, W_out)
    dxpad = np.zeros_like(xpad)
    for u in range(kh):                                                  # col2im: overlapping windows add up
        for v in range(kw):
            dxpad[:, :, u:u + H_out, v:v + W_out] += dcols[:, u, v].transpose(1, 0, 2, 3)
    return dxpad[:, :, p:p + H, p:p + W], dw, db
