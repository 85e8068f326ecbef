def my_bilinear_sample_backward(dV, U, grid):
    """dU: each corner inside the image gets weight * dV (np.add.at adds repeated pixels).
    dgrid: dV times dV/dx and dV/dy (the slopes between the corners), times W / 2 and H / 2."""
    N, C, H, W = U.shape
    x = ((grid[..., 0] + 1) * W - 1) / 2
    y = ((grid[..., 1] + 1) * H - 1) / 2
    x0, y0 = np.floor(x), np.floor(y)
    wx, wy = x - x0, y - y0
    n = np.arange(N)[:, None, None]
    dU = np.zeros_like(U)
    v = {}
    for dy, ry in ((0, 1 - wy), (1, wy)):
        for dx, rx in ((0, 1 - wx), (1, wx)):
            yk, xk = (y0 + dy).astype(int), (x0 + dx).astype(int)
            inside = (xk >= 0) & (xk < W) & (yk >= 0) & (yk < H)
            yc, xc = np.clip(yk, 0, H - 1), np.clip(xk, 0, W - 1)
            v[dy, dx] = np.moveaxis(U[n, :, yc, xc] * inside[..., None], -1, 1)       # (N, C, H_out, W_out)
            share = np.moveaxis(dV, 1, -1) * (ry * rx * inside)[..., None]          # (N, H_out, W_out, C)
            np.add.at(dU, (n, slice(None), yc, xc), share)
    dVdx = (1 - wy)[:, None] * (v[0, 1] - v[0, 0]) + wy[:, None] * (v[1, 1] - v[1, 0])
    dVdy = (1 - wx)[:, None] * (v[1, 0] - v[0, 0]) + wx[:, None] * (v[1, 1] - v[0, 1])
    dgrid = np.stack([(dV * dVdx).sum(axis=1) * W / 2, (dV * dVdy).sum(axis=1) * H / 2], axis=-1)
    return dU, dgrid
