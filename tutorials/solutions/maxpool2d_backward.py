def my_maxpool2d_backward(dout, x):
    """dout (N, C, H // 2, W // 2), x (N, C, H, W) -> dx: each window's gradient goes to its maximum."""
    N, C, H, W = x.shape
    H2, W2 = H // 2, W // 2
    windows = x[:, :, :2 * H2, :2 * W2].reshape(N, C, H2, 2, W2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(N, C, H2, W2, 4)
    winner = windows.argmax(axis=-1)                                     # the first maximum, 0..3
    dwin = np.zeros_like(windows)
    np.put_along_axis(dwin, winner[..., None], dout[..., None], axis=-1)
    dx = np.zeros_like(x)
    dx[:, :, :2 * H2, :2 * W2] = dwin.reshape(N, C, H2, W2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(N, C, 2 * H2, 2 * W2)
    return dx
