def my_bilinear_sample_forward(U, grid):
    """The four corners of each point, weighted by (1 - wx or wx)(1 - wy or wy), 0 outside the image."""
    N, C, H, W = U.shape
    x = ((grid[..., 0] + 1) * W - 1) / 2                                 # (N, H_out, W_out) pixel coordinates
    y = ((grid[..., 1] + 1) * H - 1) / 2
    x0, y0 = np.floor(x), np.floor(y)
    wx, wy = x - x0, y - y0
    V = np.zeros((N, C) + x.shape[1:])
    n = np.arange(N)[:, None, None]
    for dy, ry in ((0, 1 - wy), (1, wy)):
        for dx, rx in ((0, 1 - wx), (1, wx)):
            yk, xk = (y0 + dy).astype(int), (x0 + dx).astype(int)
            inside = (xk >= 0) & (xk < W) & (yk >= 0) & (yk < H)
            value = U[n, :, np.clip(yk, 0, H - 1), np.clip(xk, 0, W - 1)]   # (N, H_out, W_out, C)
            V += np.moveaxis(value * (ry * rx * inside)[..., None], -1, 1)
    return V
