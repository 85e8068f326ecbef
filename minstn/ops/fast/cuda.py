"""CuPy launch code for minstn's CUDA kernels (kernels/*.cu): the module that compiles them, and
the launches of the spatial transformer's kernels (kernels/stn.cu).

The source is the five files of kernels/, compiled together as ONE module (one NVRTC compile,
one disk cache entry):

    stn.cu     affine grid and bilinear sampler, forward and backward    (launched here)
    conv.cu    im2col, col2im, the bias (+ 2x2 max-pool, + ReLU) after a  (minstn/ops/fast/conv.py,
               conv, d x d average pool                                   convpool.py, pool.py)
    linear.cu  ReLU backward, dropout forward, a fully connected          (minstn/ops/fast/linear.py)
               layer's bias + ReLU and their backward
    lstm.cu    an LSTM cell's gate math, forward and backward; the        (minstn/ops/fast/lstm.py,
               recurrent transformer's T steps                            thetas.py)
    train.cu   softmax cross-entropy, the step's numbers for the host     (minstn/ops/fast/loss.py,
               (loss, gradient norm, wrong digits), Adam's update         minstn/training/optim.py)

The other launch code calls `kernel(name, like)` (the kernel for like's dtype and device),
`launch(name, like, total, args)` (one thread per element over `total` elements) and
`empty_parts(xp, dtype, *shapes)` (several arrays from one allocation) from here.

minstn.ops.fast.sampler validates its inputs and, for CuPy arrays with impl='kernel' (the
default 'auto' on the GPU), calls the four functions here:

    affine_grid_forward(theta, out_hw)        -> (grid, cache)
    affine_grid_backward(dgrid, cache)        -> dtheta
    bilinear_sample_forward(U, grid)          -> (V, cache)
    bilinear_sample_backward(dV, cache)       -> (dU, dgrid)

Each cache is a tuple whose first element is the string 'kernel' (the sampler's backward
dispatches on it).  The kernels mirror the NumPy reference in minstn/ops/stn.py; see the
comments in kernels/stn.cu and docs/gpu.md.

Shape legend:
    N        batch size
    C        channels
    H, W     input image height, width
    H_out, W_out   output grid height, width
    theta    (N, 2, 3)
    grid     (N, H_out, W_out, 2), last axis (x, y), normalised to [-1, 1]
    U        (N, C, H, W)
    V        (N, C, H_out, W_out)

Launch configuration:
    point kernels (affine grid forward, sampler forward and backward, and every elementwise
        kernel of the other files): one thread per output element, BLOCK = 256 threads per
        block, ceil(P / BLOCK) blocks capped at MAX_BLOCKS (the kernels loop with a grid stride,
        so the cap only changes how the work is dealt); P = N * H_out * W_out for the sampler.
    affine grid backward: one block of REDUCE_BLOCK = 256 threads per batch item, a
        shared-memory tree reduction, no atomics.
The kernels run on the current CUDA stream of the device that holds the input arrays.

The source is compiled once per device by CuPy's RawModule (NVRTC) and cached on disk by
CuPy; only RawModule(code=..., options=..., name_expressions=...) and get_function() are
used, which cupy-cuda12x and cupy-cuda13x both provide.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from minstn.backend import import_cupy, is_cupy

__all__ = [
    "affine_grid_forward",
    "affine_grid_backward",
    "bilinear_sample_forward",
    "bilinear_sample_backward",
    "kernel_source",
    "launch_config",
    "kernel",
    "launch",
    "sizes",
    "empty_parts",
    "KERNEL_DIR",
    "KERNEL_PATH",
    "KERNEL_FILES",
    "BLOCK",
    "REDUCE_BLOCK",
    "MAX_BLOCKS",
    "COMPILE_OPTIONS",
    "NAME_EXPRESSIONS",
]

KERNEL_DIR = Path(__file__).resolve().parent / "kernels"
KERNEL_PATH = KERNEL_DIR / "stn.cu"  # the spatial transformer's kernels, the first file of the module
#: the kernels of each source file, in the order the files are joined into the one module
KERNEL_FILES = {
    "stn.cu": ("affine_grid_forward", "affine_grid_backward", "bilinear_sample_forward", "bilinear_sample_backward"),
    "conv.cu": ("im2col", "col2im", "bias_forward", "bias_relu_backward", "maxpool_bias_forward",
                "maxpool_bias_backward", "avgpool_forward", "avgpool_backward"),
    "linear.cu": ("relu_backward", "dropout_forward", "linear_relu_forward", "linear_relu_backward"),
    "lstm.cu": ("lstm_cell_forward", "lstm_cell_backward", "thetas_cell_forward", "thetas_regress",
                "thetas_cell_backward"),
    "train.cu": ("softmax_cross_entropy", "sum_squares", "step_report", "adam_step"),
}
BLOCK = 256  # threads per block of the point kernels
REDUCE_BLOCK = 256  # threads per block of affine_grid_backward; equals STN_REDUCE_BLOCK in stn.cu
MAX_BLOCKS = 65535  # cap on blocks per launch; the grid-stride loops cover any P
ALIGN = 64  # elements: each array of empty_parts starts at a multiple (256 or 512 bytes) in its allocation
#: --fmad=false: no fused multiply-add, so the kernels round the sample coordinates exactly as the
#: array code does (a point on a pixel centre picks the same corners on the GPU and the CPU)
COMPILE_OPTIONS = ("--std=c++14", "--fmad=false")

_KERNELS = tuple(k for names in KERNEL_FILES.values() for k in names)
_CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
NAME_EXPRESSIONS = tuple(f"{k}<{t}>" for k in _KERNELS for t in _CTYPES.values())


def kernel_source() -> str:
    """The CUDA source of the module: the files of kernels/ (KERNEL_FILES), joined in order."""
    return "\n".join((KERNEL_DIR / name).read_text(encoding="utf-8") for name in KERNEL_FILES)


def launch_config(num_points: int) -> tuple[int, int]:
    """(blocks, threads) for a point kernel over `num_points` output points (num_points >= 1).

    threads = BLOCK; blocks = ceil(num_points / BLOCK), at most MAX_BLOCKS.
    """
    if num_points < 1:
        raise ValueError(f"launch_config needs at least one point, got {num_points}; skip the launch instead")
    blocks = min((num_points + BLOCK - 1) // BLOCK, MAX_BLOCKS)
    return blocks, BLOCK


def _ctype(dtype) -> str:
    """The C type name of a float32/float64 dtype, or TypeError."""
    dt = np.dtype(dtype)
    if dt not in _CTYPES:
        raise TypeError(
            f"the CUDA kernels take float32 or float64 arrays, got {dt}; convert with .astype(cupy.float32)"
        )
    return _CTYPES[dt]


def _require_cupy(op: str, **arrays) -> None:
    """TypeError unless every array is a CuPy array (the kernels cannot read host memory)."""
    for name, a in arrays.items():
        if not is_cupy(a):
            raise TypeError(
                f"minstn.ops.fast.cuda.{op}: {name} is a {type(a).__module__}.{type(a).__name__}, but the CUDA "
                "kernels take CuPy arrays; move it with Device.asarray, or use impl='array' for NumPy arrays"
            )


def _require_shape(op: str, name: str, a, expected: tuple) -> None:
    """ValueError unless a.shape == expected."""
    if tuple(a.shape) != tuple(expected):
        raise ValueError(f"minstn.ops.fast.cuda.{op}: {name} has shape {tuple(a.shape)}, expected {tuple(expected)}")


@functools.lru_cache(maxsize=None)
def _module(device_id: int):
    """The compiled RawModule for one device (compiled on first use, then cached)."""
    cupy = import_cupy()
    with cupy.cuda.Device(device_id):
        return cupy.RawModule(code=kernel_source(), options=COMPILE_OPTIONS, name_expressions=NAME_EXPRESSIONS)


@functools.lru_cache(maxsize=None)
def _function(name: str, ctype: str, device_id: int):
    """The kernel `name<ctype>` on one device."""
    return _module(device_id).get_function(f"{name}<{ctype}>")


def kernel(name: str, like):
    """The kernel `name` for the dtype and device of the CuPy array `like`."""
    return _function(name, _ctype(like.dtype), like.device.id)


def sizes(*values) -> tuple:
    """Integers as np.int64, the kernels' `long long` arguments."""
    return tuple(np.int64(v) for v in values)


def empty_parts(xp, dtype, *shapes) -> list:
    """Uninitialised C-contiguous arrays of the given shapes, cut from ONE allocation (one device
    operation instead of one per array), each starting ALIGN-aligned in it. The arrays share the
    allocation's lifetime: it is freed when none of them is referenced any more."""
    sizes = [int(np.prod(shape, dtype=np.int64)) for shape in shapes]
    starts, total = [], 0
    for n in sizes:
        starts.append(total)
        total += -(-n // ALIGN) * ALIGN
    buf = xp.empty(total, dtype=dtype)
    return [buf[s:s + n].reshape(shape) for s, n, shape in zip(starts, sizes, shapes)]


def launch(name: str, like, total: int, args: tuple) -> None:
    """Launch the elementwise kernel `name` (for like's dtype, on like's device) with one thread
    per element over `total` elements (launch_config); nothing to do when total is 0.
    args: the kernel's arguments in its order, arrays as CuPy arrays, sizes as np.int64 and
    floating-point scalars as like's dtype (np.float32 for a float kernel: a Python float would
    be passed as a double)."""
    if total > 0:
        blocks, threads = launch_config(total)
        with like.device:
            kernel(name, like)((blocks,), (threads,), args)


# --------------------------------------------------------------------------------------
# Affine grid
# --------------------------------------------------------------------------------------

def affine_grid_forward(theta, out_hw):
    """Sampling grid of an affine transform, on the GPU.

    theta: CuPy (N, 2, 3), float32 or float64; out_hw = (H_out, W_out).
    Returns grid (N, H_out, W_out, 2) of theta's dtype, with
        grid[n, i, j] = theta[n] @ [x_t[j], y_t[i], 1],
        x_t[j] = (2 j + 1) / W_out - 1,  y_t[i] = (2 i + 1) / H_out - 1  (align_corners=False),
    and cache = ('kernel', (N, H_out, W_out)): the grid is linear in theta, so the backward
    needs only the sizes.
    """
    _require_cupy("affine_grid_forward", theta=theta)
    cupy = import_cupy()
    H_out, W_out = int(out_hw[0]), int(out_hw[1])
    N = int(theta.shape[0])
    _require_shape("affine_grid_forward", "theta", theta, (N, 2, 3))
    with theta.device:
        theta = cupy.ascontiguousarray(theta)  # (N, 2, 3)
        grid = cupy.empty((N, H_out, W_out, 2), dtype=theta.dtype)  # (N, H_out, W_out, 2)
        P = N * H_out * W_out
        if P > 0:
            blocks, threads = launch_config(P)
            kernel("affine_grid_forward", theta)(
                (blocks,), (threads,), (theta, grid, np.int64(N), np.int64(H_out), np.int64(W_out))
            )
    return grid, ("kernel", (N, H_out, W_out))


def affine_grid_backward(dgrid, cache):
    """Gradient of affine_grid_forward with respect to theta, on the GPU.

    dgrid: CuPy (N, H_out, W_out, 2); cache from affine_grid_forward.
    Returns dtheta (N, 2, 3): dtheta[n] = sum over (i, j) of dgrid[n, i, j, :]^T [x_t[j], y_t[i], 1].
    One block per batch item with a shared-memory reduction: deterministic (no atomics).
    """
    _, (N, H_out, W_out) = cache
    _require_shape("affine_grid_backward", "dgrid", dgrid, (N, H_out, W_out, 2))
    _require_cupy("affine_grid_backward", dgrid=dgrid)
    cupy = import_cupy()
    with dgrid.device:
        dgrid = cupy.ascontiguousarray(dgrid)  # (N, H_out, W_out, 2); a copy only if not contiguous
        if N > 0 and H_out * W_out > 0:
            dtheta = cupy.empty((N, 2, 3), dtype=dgrid.dtype)  # (N, 2, 3), every element written
            kernel("affine_grid_backward", dgrid)(
                (N,), (REDUCE_BLOCK,), (dgrid, dtheta, np.int64(H_out), np.int64(W_out))
            )
        else:
            dtheta = cupy.zeros((N, 2, 3), dtype=dgrid.dtype)  # an empty sum
    return dtheta


# --------------------------------------------------------------------------------------
# Bilinear sampler
# --------------------------------------------------------------------------------------

def bilinear_sample_forward(U, grid):
    """Bilinear sampling of U at the grid points, zero padding, on the GPU.

    U: CuPy (N, C, H, W); grid: CuPy (N, H_out, W_out, 2), last axis (x, y) in [-1, 1];
    same dtype, float32 or float64.
    Returns V (N, C, H_out, W_out), equal to PyTorch's grid_sample(mode='bilinear',
    padding_mode='zeros', align_corners=False), and cache = ('kernel', U, grid).
    One thread per output point, looping over the C channels.
    """
    _require_cupy("bilinear_sample_forward", U=U, grid=grid)
    cupy = import_cupy()
    N, C, H, W = (int(s) for s in U.shape)
    H_out, W_out = int(grid.shape[1]), int(grid.shape[2])
    _require_shape("bilinear_sample_forward", "grid", grid, (N, H_out, W_out, 2))
    with U.device:
        U = cupy.ascontiguousarray(U)  # (N, C, H, W)
        grid = cupy.ascontiguousarray(grid)  # (N, H_out, W_out, 2)
        V = cupy.empty((N, C, H_out, W_out), dtype=U.dtype)  # every element written
        P = N * H_out * W_out
        if P > 0:
            blocks, threads = launch_config(P)
            kernel("bilinear_sample_forward", U)(
                (blocks,), (threads,),
                (U, grid, V, np.int64(N), np.int64(C), np.int64(H), np.int64(W), np.int64(H_out), np.int64(W_out)),
            )
    return V, ("kernel", U, grid)


def bilinear_sample_backward(dV, cache):
    """Gradients of bilinear_sample_forward, on the GPU.

    dV: CuPy (N, C, H_out, W_out); cache from bilinear_sample_forward.
    Returns dU (N, C, H, W) and dgrid (N, H_out, W_out, 2).

    dU is scattered with atomicAdd (several output points read the same pixel); floating-point
    atomics add in an order that changes from run to run, so dU is not bit-for-bit repeatable
    (it agrees to rounding).  dgrid is summed over channels by the thread that owns the point:
    no atomics, repeatable.
    """
    _, U, grid = cache
    N, C, H, W = (int(s) for s in U.shape)
    H_out, W_out = int(grid.shape[1]), int(grid.shape[2])
    _require_shape("bilinear_sample_backward", "dV", dV, (N, C, H_out, W_out))
    _require_cupy("bilinear_sample_backward", dV=dV)
    cupy = import_cupy()
    with U.device:
        dV = cupy.ascontiguousarray(dV, dtype=U.dtype)  # (N, C, H_out, W_out)
        dU = cupy.zeros_like(U)  # (N, C, H, W), accumulated with += (atomicAdd)
        dgrid = cupy.empty_like(grid)  # (N, H_out, W_out, 2), written with =
        P = N * H_out * W_out
        if P > 0:
            blocks, threads = launch_config(P)
            kernel("bilinear_sample_backward", U)(
                (blocks,), (threads,),
                (dV, U, grid, dU, dgrid,
                 np.int64(N), np.int64(C), np.int64(H), np.int64(W), np.int64(H_out), np.int64(W_out)),
            )
    return dU, dgrid
