"""minstn.ops: every layer of the LSTM-STN as an explicit pair of functions.

    out, cache = op_forward(inputs...)
    dinputs... = op_backward(dout, cache)

Forward functions return (out, cache); backward functions take (dout, cache) and return the
gradients of the forward's array inputs, in order. Caches are opaque tuples. Every function
works on NumPy and CuPy arrays (found with minstn.backend.xp_of), in float32 and float64, and
keeps the input dtype. See docs/ops.md for the table of shapes and formulas.

    conv2d_forward(x, w, b, padding)            conv2d_backward -> (dx, dw, db)
    maxpool2d_forward(x)                        maxpool2d_backward -> dx
    conv2d_maxpool_forward(x, w, b, padding)    conv2d_maxpool_backward -> (dx, dw, db)
                                                (the two above, one after the other)
    conv2d_relu_forward(x, w, b, padding)       conv2d_relu_backward -> (dx, dw, db)
    conv2d_maxpool_relu_forward(x, w, b, padding)   conv2d_maxpool_relu_backward -> (dx, dw, db)
                                                (the same, followed by relu_forward)
    avgpool2d_forward(x, d)                     avgpool2d_backward -> dx
    linear_forward(x, w, b)                     linear_backward -> (dx, dw, db)
    linear_relu_forward(x, w, b)                linear_relu_backward -> (dx, dw, db)   (then relu_forward)
    relu_forward(x)                             relu_backward -> dx
    dropout_forward(x, p, rng)                  dropout_backward -> dx
    softmax_cross_entropy(logits, labels) -> (loss, dlogits)
    lstm_cell_forward(x, h_prev, c_prev, Wx, Wh, b) -> (h, c, cache)
    lstm_cell_backward(dh, dc, cache) -> (dx, dh_prev, dc_prev, dWx, dWh, db)
    lstm_forward(xs, h0, c0, Wx, Wh, b) -> (hs, cache)
    lstm_backward(dhs, cache) -> (dxs, dh0, dc0, dWx, dWh, db)
    gru_cell_forward(x, h_prev, Wx, Wh, bx, bh) -> (h, cache)    gru_cell_backward(dh, cache) -> (dx, dh_prev, dWx, dWh, dbx, dbh)
    gru_forward(xs, h0, Wx, Wh, bx, bh) -> (hs, cache)           gru_backward(dhs, cache) -> (dxs, dh0, dWx, dWh, dbx, dbh)
    rnn_cell_forward(x, h_prev, Wx, Wh, b) -> (h, cache)         rnn_cell_backward(dh, cache) -> (dx, dh_prev, dWx, dWh, db)
    rnn_forward(xs, h0, Wx, Wh, b) -> (hs, cache)                rnn_backward(dhs, cache) -> (dxs, dh0, dWx, dWh, db)
    recurrent_thetas_forward(feats, theta0, cell_params, Wr, br, step_b, steps, cell, feedback) -> (thetas, cache)
    recurrent_thetas_backward(dthetas, cache) -> (dfeats, dcell_params, dWr, dbr, dstep_b)
                                                the LSTM-STN's T steps: a cell, its theta regressed and fed back
    affine_grid_forward(theta, out_hw)                   affine_grid_backward -> dtheta
    bilinear_sample_forward(U, grid)                     bilinear_sample_backward -> (dU, dgrid)
    projective_grid_forward(theta8, out_hw)              projective_grid_backward -> dtheta8

Loop-based references for testing and teaching: minstn.ops.naive (also re-exported here).
These are the plain versions, the ones to read first. minstn.ops.fast has faster versions of the
convolution, the fused conv + max-pool and the spatial-transformer ops (and the CUDA kernels),
with the same arguments and numbers; the models call whichever minstn.ops.switch chooses.
"""
from minstn.ops.conv import conv2d_backward, conv2d_forward, conv2d_relu_backward, conv2d_relu_forward
from minstn.ops.linear import (
    dropout_backward,
    dropout_forward,
    linear_backward,
    linear_forward,
    linear_relu_backward,
    linear_relu_forward,
    relu_backward,
    relu_forward,
)
from minstn.ops.loss import softmax_cross_entropy
from minstn.ops.lstm import lstm_backward, lstm_cell_backward, lstm_cell_forward, lstm_forward, sigmoid
from minstn.ops.naive import (
    avgpool2d_backward_naive,
    avgpool2d_forward_naive,
    bilinear_sample_backward_naive,
    bilinear_sample_forward_naive,
    conv2d_backward_naive,
    conv2d_forward_naive,
    maxpool2d_backward_naive,
    maxpool2d_forward_naive,
)
from minstn.ops.pool import (
    avgpool2d_backward,
    avgpool2d_forward,
    conv2d_maxpool_backward,
    conv2d_maxpool_forward,
    conv2d_maxpool_relu_backward,
    conv2d_maxpool_relu_forward,
    maxpool2d_backward,
    maxpool2d_forward,
)
from minstn.ops.projective import (
    affine_to_projective,
    projective_grid_backward,
    projective_grid_forward,
    projective_identity,
)
from minstn.ops.recurrent import (
    gru_backward,
    gru_cell_backward,
    gru_cell_forward,
    gru_forward,
    rnn_backward,
    rnn_cell_backward,
    rnn_cell_forward,
    rnn_forward,
)
from minstn.ops.stn import (
    affine_grid_backward,
    affine_grid_forward,
    bilinear_sample_backward,
    bilinear_sample_forward,
)
from minstn.ops.thetas import recurrent_thetas_backward, recurrent_thetas_forward

__all__ = [
    "conv2d_forward",
    "conv2d_backward",
    "maxpool2d_forward",
    "maxpool2d_backward",
    "conv2d_maxpool_forward",
    "conv2d_maxpool_backward",
    "conv2d_relu_forward",
    "conv2d_relu_backward",
    "conv2d_maxpool_relu_forward",
    "conv2d_maxpool_relu_backward",
    "avgpool2d_forward",
    "avgpool2d_backward",
    "linear_forward",
    "linear_backward",
    "linear_relu_forward",
    "linear_relu_backward",
    "relu_forward",
    "relu_backward",
    "dropout_forward",
    "dropout_backward",
    "softmax_cross_entropy",
    "sigmoid",
    "lstm_cell_forward",
    "lstm_cell_backward",
    "lstm_forward",
    "lstm_backward",
    "gru_cell_forward",
    "gru_cell_backward",
    "gru_forward",
    "gru_backward",
    "rnn_cell_forward",
    "rnn_cell_backward",
    "rnn_forward",
    "rnn_backward",
    "recurrent_thetas_forward",
    "recurrent_thetas_backward",
    "projective_grid_forward",
    "projective_grid_backward",
    "projective_identity",
    "affine_to_projective",
    "affine_grid_forward",
    "affine_grid_backward",
    "bilinear_sample_forward",
    "bilinear_sample_backward",
    "conv2d_forward_naive",
    "conv2d_backward_naive",
    "maxpool2d_forward_naive",
    "maxpool2d_backward_naive",
    "avgpool2d_forward_naive",
    "avgpool2d_backward_naive",
    "bilinear_sample_forward_naive",
    "bilinear_sample_backward_naive",
]
