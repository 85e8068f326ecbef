def my_affine_grid_backward(dgrid, theta, out_hw):
    """grid[n, p] = theta[n] @ [x_t, y_t, 1]: a linear map, so dtheta[n] = dgrid[n]^T @ base."""
    H_out, W_out = out_hw
    xt = (2 * np.arange(W_out) + 1) / W_out - 1
    yt = (2 * np.arange(H_out) + 1) / H_out - 1
    base = np.stack([np.tile(xt, H_out), np.repeat(yt, W_out), np.ones(H_out * W_out)], axis=1)   # (P, 3)
    dg = dgrid.reshape(dgrid.shape[0], -1, 2)                            # (N, P, 2)
    return dg.transpose(0, 2, 1) @ base                                  # (N, 2, 3)
