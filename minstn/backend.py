"""Device selection: the one place where minstn chooses NumPy or CuPy.

A device is named by a string, as on the command line:

    'auto'     GPU 0 when CuPy finds a usable one, else the CPU (the reason is given to `say`)
    'cpu'      NumPy arrays on the host
    'gpu'      CuPy arrays on GPU 0
    'gpu:N'    CuPy arrays on GPU N

Everything else in minstn is written against an "array module" ``xp`` (numpy or
cupy) and finds it from its inputs with :func:`xp_of`, so an op never decides
where it runs: the caller's arrays do.

    dev = resolve_device('gpu')     # raises DeviceError with advice if impossible
    x = dev.asarray(np_array)       # host -> device
    y = to_numpy(x)                 # device -> host (no-op for NumPy)
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Device",
    "DeviceError",
    "resolve_device",
    "xp_of",
    "is_cupy",
    "to_numpy",
    "import_cupy",
]

_DEVICE_RE = re.compile(r"^(cpu|gpu)(?::(\d+))?$")

INSTALL_HINT = (
    "Install CuPy for your CUDA version: `pip install -e .[gpu]` (cupy-cuda12x, CUDA 12) "
    "or `pip install cupy-cuda13x` (CUDA 13). Or run with --device cpu."
)


class DeviceError(RuntimeError):
    """A device was asked for that this machine cannot provide (or the name is wrong)."""


def import_cupy():
    """Import CuPy, or raise DeviceError saying what to install."""
    try:
        import cupy  # noqa: F401  (imported for the caller)
    except ImportError as e:  # not installed, or a broken install
        raise DeviceError(f"--device gpu needs CuPy, which could not be imported ({e}). {INSTALL_HINT}") from e
    return cupy


@dataclass(frozen=True)
class Device:
    """A resolved device: kind 'cpu' or 'gpu', the GPU index, and its array module."""

    kind: str
    index: int = 0

    def __str__(self) -> str:
        return "cpu" if self.kind == "cpu" else f"gpu:{self.index}"

    @property
    def xp(self):
        """The array module of this device: numpy or cupy."""
        if self.kind == "cpu":
            return np
        return import_cupy()

    def scope(self):
        """A `with` block in which this device is the current one (new arrays, kernels and
        temporaries go to it), the previous one restored afterwards; a no-op on the CPU."""
        if self.kind == "cpu":
            return _NullContext()
        return import_cupy().cuda.Device(self.index)

    def use(self):
        """Make this device current (a no-op on the CPU). Returns a context manager for CuPy."""
        if self.kind == "cpu":
            return _NullContext()
        cupy = import_cupy()
        dev = cupy.cuda.Device(self.index)
        dev.use()
        return dev

    def asarray(self, a, dtype=None):
        """Copy a host (or device) array onto this device."""
        if self.kind == "cpu":
            return np.asarray(to_numpy(a), dtype=dtype)
        cupy = import_cupy()
        with cupy.cuda.Device(self.index):
            return cupy.asarray(a, dtype=dtype)

    def synchronize(self) -> None:
        """Wait for queued GPU work (for timing); a no-op on the CPU."""
        if self.kind == "gpu":
            import_cupy().cuda.Device(self.index).synchronize()


class _NullContext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _gpu_count(cupy) -> int:
    """Number of visible CUDA devices, or DeviceError when the runtime cannot answer."""
    try:
        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception as e:  # CUDARuntimeError (no driver, no device), or a missing libcudart
        raise DeviceError(
            f"CuPy is installed but found no usable CUDA GPU ({type(e).__name__}: {e}). "
            "Check that `nvidia-smi` lists a GPU and that the CuPy build matches the driver's CUDA "
            "version (cupy-cuda12x for CUDA 12, cupy-cuda13x for CUDA 13). Or run with --device cpu."
        ) from e


def resolve_device(spec: "str | Device" = "cpu", say=None) -> Device:
    """Parse a device name ('auto', 'cpu', 'gpu', 'gpu:N') and check that the machine has it.

    Raises DeviceError with a message that says what is wrong and what to do. 'auto' never
    raises for a missing GPU: it falls back to the CPU and tells `say` (a function of one
    string, e.g. print) which device it chose and why.
    """
    if isinstance(spec, Device):
        spec = str(spec)
    if not isinstance(spec, str):
        raise DeviceError(f"device must be a string such as 'auto', 'cpu', 'gpu' or 'gpu:0', got {spec!r}")
    if spec.strip().lower() == "auto":
        try:
            device = resolve_device("gpu")
        except DeviceError as e:
            if say is not None:
                say(f"device auto: the CPU (no usable GPU: {str(e).split('. ')[0]})")
            return Device("cpu")
        if say is not None:
            say(f"device auto: {device} (CuPy found a GPU)")
        return device
    m = _DEVICE_RE.match(spec.strip().lower())
    if m is None:
        raise DeviceError(f"unknown device {spec!r}: use 'auto', 'cpu', 'gpu' or 'gpu:N' (N = 0, 1, ...)")
    kind, index = m.group(1), int(m.group(2) or 0)
    if kind == "cpu":
        if m.group(2) is not None:
            raise DeviceError(f"unknown device {spec!r}: the CPU takes no index, use 'cpu'")
        return Device("cpu")
    cupy = import_cupy()
    n = _gpu_count(cupy)
    if n == 0:
        raise DeviceError("CuPy is installed but no CUDA GPU is visible. Run with --device cpu.")
    if index >= n:
        raise DeviceError(f"device {spec!r} asked for GPU {index}, but only {n} GPU(s) are visible (gpu:0 .. gpu:{n - 1})")
    _probe(cupy, index)
    return Device("gpu", index)


_PROBED = set()


def _probe(cupy, index: int) -> None:
    """Make sure the GPU can do what minstn will ask of it, before any data is loaded: one small
    matrix product (cuBLAS) and the compiled CUDA kernels (NVRTC). A missing library is then a
    DeviceError that says what to install, not an ImportError in the first training step."""
    if index in _PROBED:
        return
    try:
        with cupy.cuda.Device(index):
            a = cupy.ones((2, 2), dtype=cupy.float32)
            float((a @ a).sum())                                   # cuBLAS
            from minstn.ops.fast import cuda as kernels

            kernels._module(index)                                 # NVRTC: compile the kernels once
    except Exception as e:   # ImportError / OSError of a missing libcublas or libnvrtc, a CUDA error
        raise DeviceError(
            f"GPU {index} was found, but CuPy could not use it ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
            "CuPy's wheels need the CUDA libraries (cuBLAS, NVRTC): install them with `pip install -e .[gpu]` "
            "(cupy-cuda12x[ctk]) or `pip install 'cupy-cuda13x[ctk]'`, or a CUDA toolkit. Or run with --device cpu."
        ) from e
    _PROBED.add(index)


def is_cupy(a) -> bool:
    """True if `a` is a CuPy array (without importing CuPy when it is not loaded)."""
    return type(a).__module__.split(".")[0] == "cupy"


def xp_of(*arrays):
    """The array module of the given arrays: cupy if any is a CuPy array, else numpy."""
    for a in arrays:
        if is_cupy(a):
            import cupy

            return cupy
    return np


def to_numpy(a):
    """A NumPy copy of a CuPy array; NumPy arrays and scalars pass through."""
    if is_cupy(a):
        return a.get()
    return np.asarray(a)
