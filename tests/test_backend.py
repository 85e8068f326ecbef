"""Device selection: names, and the errors a user sees when a GPU cannot be had."""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from minstn import backend
from minstn.backend import Device, DeviceError, resolve_device, to_numpy, xp_of


def test_cpu_device_is_numpy():
    dev = resolve_device("cpu")
    assert dev == Device("cpu") and str(dev) == "cpu"
    assert dev.xp is np
    a = dev.asarray([1, 2, 3], dtype=np.float32)
    assert isinstance(a, np.ndarray) and a.dtype == np.float32
    dev.synchronize()  # a no-op, must not fail
    with dev.use():
        pass


def test_device_names_are_case_and_space_tolerant():
    assert str(resolve_device(" CPU ")) == "cpu"
    assert str(resolve_device(Device("cpu"))) == "cpu"


@pytest.mark.parametrize("name", ["tpu", "gpu:", "gpu:-1", "cuda", "gpu:x", "", "gpu0"])
def test_unknown_device_names(name):
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device(name)


def test_cpu_takes_no_index():
    with pytest.raises(DeviceError, match="the CPU takes no index"):
        resolve_device("cpu:0")


def test_non_string_device():
    with pytest.raises(DeviceError, match="must be a string"):
        resolve_device(0)


def test_gpu_without_cupy_says_what_to_install(monkeypatch):
    # `import cupy` raises ImportError when sys.modules holds None for it.
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(DeviceError, match=r"needs CuPy.*pip install -e \.\[gpu\].*cupy-cuda13x"):
        resolve_device("gpu")


def _fake_cupy(count=None, error=None):
    """A stand-in for the cupy module whose runtime reports `count` devices or raises `error`."""

    def get_device_count():
        if error is not None:
            raise error
        return count

    runtime = types.SimpleNamespace(getDeviceCount=get_device_count)
    return types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime))


def test_gpu_with_cupy_but_no_driver(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(error=RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")))
    with pytest.raises(DeviceError, match=r"found no usable CUDA GPU.*cudaErrorNoDevice.*--device cpu"):
        resolve_device("gpu")


def test_gpu_with_cupy_but_zero_devices(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(count=0))
    with pytest.raises(DeviceError, match="no CUDA GPU is visible"):
        resolve_device("gpu")


def test_gpu_index_out_of_range(monkeypatch):
    import minstn.backend as backend

    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(count=2))
    monkeypatch.setattr(backend, "_probe", lambda cupy, index: None)     # the device probe: tests/test_gpu_emulated.py
    assert resolve_device("gpu:1") == Device("gpu", 1)
    with pytest.raises(DeviceError, match=r"asked for GPU 3, but only 2 GPU\(s\) are visible \(gpu:0 \.\. gpu:1\)"):
        resolve_device("gpu:3")


def test_real_cupy_without_gpu_gives_clear_error():
    """On a machine with CuPy installed but no usable GPU (like CI), the real error path."""
    try:
        import cupy  # noqa: F401
    except ImportError:
        pytest.skip("CuPy is not installed: covered by test_gpu_without_cupy_says_what_to_install")
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception:
        n = 0
    if n > 0:
        pytest.skip("a GPU is present: the no-GPU error cannot be provoked here")
    with pytest.raises(DeviceError, match="--device cpu"):
        resolve_device("gpu")


def test_xp_of_and_to_numpy_on_numpy():
    a = np.arange(3.0)
    assert xp_of(a) is np
    assert xp_of(a, 1.0, None) is np
    assert xp_of() is np
    assert to_numpy(a) is a
    assert to_numpy(2.5) == 2.5
    assert backend.is_cupy(a) is False
