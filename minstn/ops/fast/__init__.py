"""minstn.ops.fast: the same op pairs as minstn.ops, computed faster. Each takes the same arguments,
returns the same numbers (the tests hold every one to its plain version) and is what the models
run by default (minstn.ops.switch chooses; `with use_fast(False):` runs the plain ones).

On NumPy arrays (the CPU):
    conv2d_forward / conv2d_backward                   im2col by "flat shifts": one contiguous slice
                                                       per channel and kernel offset (conv.py)
    conv2d_maxpool_forward / conv2d_maxpool_backward   conv then 2x2 max-pool as one op, in
                                                       pooling-phase order (convpool.py)
    conv2d_relu_*, conv2d_maxpool_relu_*               the two above, then the plain ReLU
    bilinear_sample_forward / bilinear_sample_backward all four corners in one gather (sampler.py)
    the others                                         the plain op itself

On CuPy arrays (the GPU) each op is a few launches: CUDA kernels (kernels/*.cu, compiled as one
module by cuda.py) around cuBLAS's matrix products, instead of the array code's many small ones:
    conv2d_*, conv2d_maxpool_*     im2col / col2im kernels, bias (+ max-pool, + ReLU) kernels (conv.py,
                                   convpool.py)
    avgpool2d_*                    one kernel each way (pool.py)
    relu_backward, dropout_forward one kernel each (linear.py)
    linear_relu_*                  one kernel around each way's products (linear.py)
    lstm_cell_*                    the gate math as one kernel each way (lstm.py)
    recurrent_thetas_*             an LSTM's T steps: one product and two kernels a step (thetas.py)
    softmax_cross_entropy          one kernel (loss.py)
    affine_grid_*, bilinear_sample_*   the spatial transformer's kernels (sampler.py, cuda.py)
"""
from minstn.ops.fast.conv import conv2d_backward, conv2d_forward, conv2d_relu_backward, conv2d_relu_forward
from minstn.ops.fast.convpool import (
    conv2d_maxpool_backward,
    conv2d_maxpool_forward,
    conv2d_maxpool_relu_backward,
    conv2d_maxpool_relu_forward,
)
from minstn.ops.fast.linear import dropout_forward, linear_relu_backward, linear_relu_forward, relu_backward
from minstn.ops.fast.loss import softmax_cross_entropy
from minstn.ops.fast.lstm import lstm_cell_backward, lstm_cell_forward
from minstn.ops.fast.pool import avgpool2d_backward, avgpool2d_forward
from minstn.ops.fast.sampler import (
    affine_grid_backward,
    affine_grid_forward,
    bilinear_sample_backward,
    bilinear_sample_forward,
    resolve_impl,
)
from minstn.ops.fast.thetas import recurrent_thetas_backward, recurrent_thetas_forward

__all__ = [
    "conv2d_forward",
    "conv2d_backward",
    "conv2d_maxpool_forward",
    "conv2d_maxpool_backward",
    "conv2d_relu_forward",
    "conv2d_relu_backward",
    "conv2d_maxpool_relu_forward",
    "conv2d_maxpool_relu_backward",
    "avgpool2d_forward",
    "avgpool2d_backward",
    "relu_backward",
    "dropout_forward",
    "linear_relu_forward",
    "linear_relu_backward",
    "lstm_cell_forward",
    "lstm_cell_backward",
    "recurrent_thetas_forward",
    "recurrent_thetas_backward",
    "softmax_cross_entropy",
    "affine_grid_forward",
    "affine_grid_backward",
    "bilinear_sample_forward",
    "bilinear_sample_backward",
    "resolve_impl",
]
