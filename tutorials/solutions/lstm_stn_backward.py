def my_lstm_stn_backward(dlogits, cache, params):
    """The LSTM-STN's backward, the forward above in reverse: per step the classifier, the average
    pooling, the sampler (dgrid only: the canvas is data) and the grid give dtheta_t; then back
    through time the regressor and the LSTM cell, with the gradient that reaches theta_t through
    the input of step t + 1; then the localisation net. Shared weights add up over the steps."""
    c_loc, c_cells, c_regs, c_steps, F = cache
    T = len(c_cells)
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    dthetas = []
    for t in reversed(range(T)):                                 # classifier -> pool -> sampler -> grid
        c_grid, c_samp, c_avg, c_cls = c_steps[t]
        step = {}
        dg = classifier_backward(dlogits[:, t], c_cls, step)     # (N, 1, S, S)
        for k, g in step.items():
            grads[k] += g
        dV = avgpool2d_backward(dg, c_avg)
        _, dgrid = bilinear_sample_backward(dV, c_samp, need_dU=False)
        dthetas.insert(0, affine_grid_backward(dgrid, c_grid).reshape(-1, 6))
    N, H = dthetas[0].shape[0], params["lstm.Wh"].shape[0]
    dh_next = np.zeros((N, H))                                   # into h_t from step t + 1
    dc_next = np.zeros((N, H))
    dfed = np.zeros_like(dthetas[0])                             # into theta_t through the input of step t + 1
    dfeats = 0
    for t in reversed(range(T)):                                 # back through time
        dtheta = dthetas[t] + dfed
        grads["reg.step_b"][t] = dtheta.sum(axis=0)
        dh, dWr, dbr = linear_backward(dtheta, c_regs[t])
        grads["reg.w"] += dWr
        grads["reg.b"] += dbr
        dx, dh_next, dc_next, dWx, dWh, db = lstm_cell_backward(dh + dh_next, dc_next, c_cells[t])
        grads["lstm.Wx"] += dWx
        grads["lstm.Wh"] += dWh
        grads["lstm.b"] += db
        dfeats = dfeats + dx[:, :F]
        dfed = dx[:, F:]                                         # theta_0 is a constant: dfed of step 0 is dropped
    dh = dfeats.reshape(c_loc[-1][3])
    for k in reversed(range(4)):                                 # the localisation net, block by block
        c_conv, c_relu, c_pool, _ = c_loc[k]
        dr = maxpool2d_backward(dh, c_pool)
        da = relu_backward(dr, c_relu)
        dh, grads[f"loc.conv{k + 1}.w"], grads[f"loc.conv{k + 1}.b"] = conv2d_backward(da, c_conv, need_dx=k > 0)
    return grads
