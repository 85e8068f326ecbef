"""minstn.ops.fast: the same op pairs as minstn.ops, computed faster. Each takes the same arguments,
returns the same numbers (the tests hold every one to its plain version) and is what the models
run by default (minstn.ops.switch chooses; `with use_fast(False):` runs the plain ones).

    conv2d_forward / conv2d_backward                   im2col by "flat shifts": one contiguous slice
                                                       per channel and kernel offset (conv.py)
    conv2d_maxpool_forward / conv2d_maxpool_backward   conv then 2x2 max-pool as one op, in
                                                       pooling-phase order (convpool.py)
    affine_grid_forward / affine_grid_backward         the CUDA kernel on the GPU (sampler.py, cuda.py)
    bilinear_sample_forward / bilinear_sample_backward all four corners in one gather on the CPU,
                                                       the CUDA kernel on the GPU (sampler.py, cuda.py)
"""
from minstn.ops.fast.conv import conv2d_backward, conv2d_forward
from minstn.ops.fast.convpool import conv2d_maxpool_backward, conv2d_maxpool_forward
from minstn.ops.fast.sampler import (
    affine_grid_backward,
    affine_grid_forward,
    bilinear_sample_backward,
    bilinear_sample_forward,
    resolve_impl,
)

__all__ = [
    "conv2d_forward",
    "conv2d_backward",
    "conv2d_maxpool_forward",
    "conv2d_maxpool_backward",
    "affine_grid_forward",
    "affine_grid_backward",
    "bilinear_sample_forward",
    "bilinear_sample_backward",
    "resolve_impl",
]
