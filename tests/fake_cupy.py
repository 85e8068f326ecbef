"""A strict stand-in for CuPy, for running minstn's GPU path in CI on a machine without a GPU.

    with fake_cupy.installed(emu_lib) as cp:     # `import cupy` now gives this module
        ...                                      # minstn --device gpu runs on it
        cp.COUNTS                                # device operations, host syncs, transfers so far

Arrays are NumPy arrays underneath, wrapped in `ndarray`, whose class claims to live in the
`cupy` module (minstn.backend.is_cupy recognises it). It is stricter than a plain NumPy array in
the ways CuPy is, so that code which would fail on a GPU fails here:

* no implicit conversion to NumPy: np.asarray(a), a NumPy operand in arithmetic, or a NumPy
  function applied to a device array raise TypeError, as CuPy does; .get() / cupy.asnumpy copy
  explicitly;
* every array lives on a device (0 or 1, the `runtime.getDeviceCount()` of this stand-in is 2);
  an operation on arrays of another device than the current one raises, as CuPy does, and new
  arrays are made on the current device (cuda.Device(i).use() / `with cuda.Device(i):`);
* `empty` is filled with NaN, so a kernel or an op that forgets to write an element shows up;
* raw kernels (RawModule) run through the CPU emulation of minstn's CUDA source
  (tests/cuda_emulation), with the same argument checks.

It counts what a real GPU pays for (COUNTS): `ops`, device operations (each function call,
operator, advanced indexing, item assignment, copy, raw-kernel launch: one kernel launch each in
CuPy, and each `empty`, an allocation; views are free); `syncs`, host synchronisations (float(a),
int(a), bool(a), a.item(), a.get(), a.tolist(), Device.synchronize()); `to_device`, host-to-device
copies.

Where the operations go: `with trace() as t: ...` records each with its call site in minstn
(t.table('function' | 'line' | 'op' | 'caller')), and

    python -m tests.fake_cupy [--by function|line|op|caller] [--model lstm-stn] [--batch-size 8] [--plain]

prints the breakdown of one trainer step (trace_trainer_step). As a pytest plugin,
`pytest -p tests.fake_cupy -m gpu tests/test_gpu.py` runs the real-GPU tests on the stand-in.
"""
from __future__ import annotations

import contextlib
import os
import sys
import types

import numpy as np

COUNTS = {"ops": 0, "syncs": 0, "to_device": 0}
_STATE = {"device": 0, "lib": None, "trace": None}
N_DEVICES = 2
_PACKAGE = os.sep + "minstn" + os.sep      # frames in minstn's own files are the call sites a trace names
_PLUMBING = {("launch", "cuda.py"), ("kernel", "cuda.py"),     # skipped: a launch is its caller's,
             ("empty_parts", "cuda.py")}                        # and so is an allocation


def reset_counts() -> dict:
    before = dict(COUNTS)
    for k in COUNTS:
        COUNTS[k] = 0
    return before


def _op(name: str, n: int = 1) -> None:
    """Count n device operations; `name` says which (a function, an operator, 'getitem', a kernel)."""
    COUNTS["ops"] += n
    if _STATE["trace"] is not None:
        _STATE["trace"]._record(name, n)


class Trace:
    """The device operations counted inside `with trace() as t:`, each with its call site: the
    innermost frame in minstn's own code (tests and the stand-in are skipped), and the frames
    above it in minstn. A debugging tool: where do the launches of a step go?

        with fake_cupy.trace() as t:
            run.step(images, labels)
        print(t.table())                      # by minstn function (file:function), most first
        print(t.table("line"))                # by source line
        print(t.table("op"))                  # by operation (__mul__, concatenate, kernel:...)
        print(t.table("caller", depth=3))     # by the innermost 3 minstn frames
    """

    def __init__(self):
        self.events = []   # (op name, n, ((file, line, function), ...) innermost first)

    def _record(self, name: str, n: int) -> None:
        frames, f = [], sys._getframe(2)
        while f is not None and len(frames) < 8:
            path = f.f_code.co_filename
            if _PACKAGE in path and (f.f_code.co_name, os.path.basename(path)) not in _PLUMBING:
                rel = path[path.rindex(_PACKAGE) + 1:]
                frames.append((rel, f.f_lineno, f.f_code.co_name))
            f = f.f_back
        self.events.append((name, n, tuple(frames)))

    @property
    def total(self) -> int:
        return sum(n for _, n, _ in self.events)

    def counts(self, by: str = "function", depth: int = 2) -> dict:
        """{key: ops}, most first; by 'function' (file:function), 'line' (file:line function),
        'op' (the operation) or 'caller' (the innermost `depth` minstn functions, ' < ' between)."""
        out = {}
        for name, n, frames in self.events:
            top = frames[0] if frames else ("(outside minstn)", 0, "?")
            if by == "function":
                key = f"{top[0]}:{top[2]}"
            elif by == "line":
                key = f"{top[0]}:{top[1]} {top[2]}"
            elif by == "op":
                key = name
            elif by == "caller":
                key = " < ".join(f"{fr[0].rsplit(os.sep, 1)[-1]}:{fr[2]}" for fr in frames[:depth]) or top[0]
            else:
                raise ValueError(f"by must be 'function', 'line', 'op' or 'caller', got {by!r}")
            out[key] = out.get(key, 0) + n
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))

    def table(self, by: str = "function", depth: int = 2, top: int | None = None) -> str:
        rows = list(self.counts(by, depth).items())[:top]
        lines = [f"{'ops':>5}  {by}", *(f"{v:5d}  {k}" for k, v in rows), f"{self.total:5d}  total"]
        return "\n".join(lines)


@contextlib.contextmanager
def trace():
    """Record every device operation of the block with its call site (see Trace)."""
    before, t = _STATE["trace"], Trace()
    _STATE["trace"] = t
    try:
        yield t
    finally:
        _STATE["trace"] = before


def _sync() -> None:
    COUNTS["syncs"] += 1


# ------------------------------------------------------------------------------------- arrays


def _check_device(dev: int, what: str = "array") -> None:
    if dev != _STATE["device"]:
        raise ValueError(f"The device where the {what} resides ({dev}) is different from the current device "
                         f"({_STATE['device']}). Peer access is unavailable for this configuration.")


def _unwrap(x, devices: set):
    """A NumPy value for NumPy's functions: device arrays unwrapped (their device noted); a host
    NumPy array (not a 0-d one) is refused, as CuPy refuses NumPy operands."""
    if isinstance(x, ndarray):
        devices.add(x._dev)
        return x._a
    if isinstance(x, np.ndarray) and x.ndim > 0:
        raise TypeError(f"Unsupported type {type(x)}: a NumPy array given to a CuPy function or operator; "
                        "move it to the device with cupy.asarray first")
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v, devices) for v in x)
    if isinstance(x, dict):
        return {k: _unwrap(v, devices) for k, v in x.items()}
    return x


def _wrap(x, dev: int):
    if isinstance(x, np.ndarray):
        return ndarray(x, dev)
    if isinstance(x, tuple):
        return tuple(_wrap(v, dev) for v in x)
    if isinstance(x, list):
        return [_wrap(v, dev) for v in x]
    if isinstance(x, np.generic):                 # CuPy returns 0-d arrays, not scalars
        return ndarray(np.asarray(x), dev)
    return x


def _call(fn, args, kwargs, count: int = 1):
    devices = set()
    a = _unwrap(args, devices)
    k = _unwrap(kwargs, devices)
    for d in devices:
        _check_device(d)
    _op(getattr(fn, "__name__", "call"), count)
    return _wrap(fn(*a, **k), _STATE["device"])


class ndarray:
    """A device array (see the module docstring)."""

    __module__ = "cupy"
    __array_priority__ = 1000

    def __init__(self, a: np.ndarray, dev: int | None = None):
        self._a = a
        self._dev = _STATE["device"] if dev is None else dev

    # --- what NumPy must not do with it
    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a "
                        "NumPy array explicitly.")

    def __array_ufunc__(self, *args, **kwargs):
        raise TypeError("a NumPy ufunc was applied to a CuPy array; use the cupy function instead")

    def __array_function__(self, *args, **kwargs):
        raise TypeError("a NumPy function was applied to a CuPy array; use the cupy function instead")

    # --- attributes
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    device = property(lambda self: Device(self._dev))
    T = property(lambda self: ndarray(self._a.T, self._dev))
    data = property(lambda self: types.SimpleNamespace(ptr=self._a.ctypes.data))

    def __len__(self):
        return len(self._a)

    def __repr__(self):
        return f"fake-cupy array(shape={self.shape}, dtype={self.dtype}, device={self._dev})"

    # --- leaving the device: explicit, and counted
    def get(self, stream=None, out=None):
        _sync()
        return np.array(self._a, copy=True)

    def __float__(self):
        _sync()
        return float(self._a)

    def __int__(self):
        _sync()
        return int(self._a)

    def __index__(self):
        _sync()
        return int(self._a)

    def __bool__(self):
        _sync()
        return bool(self._a)

    def item(self):
        _sync()
        return self._a.item()

    def tolist(self):
        _sync()
        return self._a.tolist()

    # --- views (free) and copies (an op)
    def reshape(self, *shape, **kw):
        out = self._a.reshape(*shape, **kw)
        if not np.shares_memory(out, self._a) and out.size:
            _op("reshape (copy)")
        return ndarray(out, self._dev)

    def transpose(self, *axes):
        return ndarray(self._a.transpose(*axes), self._dev)

    def swapaxes(self, a, b):
        return ndarray(self._a.swapaxes(a, b), self._dev)

    def ravel(self):
        return self.reshape(-1)

    def view(self, dtype=None):
        return ndarray(self._a.view(dtype) if dtype is not None else self._a.view(), self._dev)

    def __getitem__(self, key):
        devices = set()
        k = _unwrap(key, devices)
        for d in devices | {self._dev}:
            _check_device(d)
        out = self._a[k]
        if not isinstance(out, np.ndarray):
            out = np.asarray(out)
        if not np.shares_memory(out, self._a) and out.size:
            _op("getitem (copy)")
        return ndarray(out, self._dev)

    def __setitem__(self, key, value):
        devices = {self._dev}
        k = _unwrap(key, devices)
        if isinstance(value, np.ndarray) and value.ndim > 0:
            COUNTS["to_device"] += 1            # CuPy copies a host array into a device array
            v = value
        else:
            v = _unwrap(value, devices)
        for d in devices:
            _check_device(d)
        _op("setitem")
        self._a[k] = v

    # --- methods that are device operations
    def _method(name):
        def method(self, *args, **kwargs):
            _check_device(self._dev)
            return _call(getattr(np.ndarray, name), (self,) + args, kwargs)
        method.__name__ = name
        return method

    for _name in ("sum", "mean", "max", "min", "argmax", "argmin", "std", "var", "any", "all", "clip", "cumsum",
                  "repeat", "squeeze", "dot", "take", "nonzero", "round", "prod", "fill"):
        locals()[_name] = _method(_name)

    def copy(self, order="C"):
        _check_device(self._dev)
        _op("copy")
        return ndarray(self._a.copy(order=order), self._dev)

    def astype(self, dtype, copy=True, **kw):
        if not copy and np.dtype(dtype) == self.dtype:
            return self
        _check_device(self._dev)
        _op("astype")
        return ndarray(self._a.astype(dtype, **kw), self._dev)

    # --- operators
    def _binary(name, inplace=False):
        def op(self, other):
            devices = {self._dev}
            o = _unwrap(other, devices)
            for d in devices:
                _check_device(d)
            _op(name)
            if inplace:
                getattr(self._a, name)(o)
                return self
            out = getattr(self._a, name)(o)
            return NotImplemented if out is NotImplemented else _wrap(out, self._dev)
        op.__name__ = name
        return op

    for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor",
                  "lt", "le", "gt", "ge", "eq", "ne", "lshift", "rshift"):
        locals()[f"__{_name}__"] = _binary(f"__{_name}__")
        if _name not in ("lt", "le", "gt", "ge", "eq", "ne"):
            locals()[f"__r{_name}__"] = _binary(f"__r{_name}__")
            locals()[f"__i{_name}__"] = _binary(f"__i{_name}__", inplace=True)

    def __neg__(self):
        _op("__neg__")
        return ndarray(-self._a, self._dev)

    def __abs__(self):
        _op("__abs__")
        return ndarray(abs(self._a), self._dev)

    def __invert__(self):
        _op("__invert__")
        return ndarray(~self._a, self._dev)

    __hash__ = None
    del _name, _method, _binary


# ------------------------------------------------------------------------------ the namespace


def asarray(a, dtype=None, order=None):
    if isinstance(a, ndarray):
        if dtype is None or np.dtype(dtype) == a.dtype:
            if a._dev == _STATE["device"]:
                return a
            _op("asarray (device to device)")
            return ndarray(a._a.copy(), _STATE["device"])          # a copy to the current device
        return a.astype(dtype)
    COUNTS["to_device"] += 1
    return ndarray(np.array(a, dtype=dtype, copy=True, order=order), _STATE["device"])


array = asarray


def asnumpy(a, stream=None, order="C"):
    return a.get() if isinstance(a, ndarray) else np.asarray(a)


def empty(shape, dtype=float, order="C"):
    """Filled with NaN (integers with a large sentinel): a forgotten element shows."""
    dt = np.dtype(dtype)
    fill = np.nan if dt.kind in "fc" else (np.iinfo(dt).max if dt.kind in "iu" else True)
    _op("empty")
    return ndarray(np.full(shape, fill, dtype=dt, order=order), _STATE["device"])


def empty_like(a, dtype=None, order="K", shape=None):
    return empty(a.shape if shape is None else shape, a.dtype if dtype is None else dtype)


def ascontiguousarray(a, dtype=None):
    if isinstance(a, np.ndarray):
        raise TypeError("cupy.ascontiguousarray got a NumPy array; move it with cupy.asarray first")
    out = np.ascontiguousarray(a._a, dtype=dtype)
    if not np.shares_memory(out, a._a):
        _op("ascontiguousarray (copy)")
    return ndarray(out, a._dev)


def get_array_module(*args):
    return sys.modules[__name__]


class _Random:
    """cupy.random: default_rng / RandomState making device arrays."""

    class Generator:
        def __init__(self, seed=None):
            self._g = np.random.default_rng(seed)

        def random(self, size=None, dtype=np.float64, out=None):
            _op("random.random")
            return ndarray(self._g.random(size, dtype=dtype), _STATE["device"])

        def standard_normal(self, size=None, dtype=np.float64):
            _op("random.standard_normal")
            return ndarray(self._g.standard_normal(size, dtype=dtype), _STATE["device"])

        def integers(self, low, high=None, size=None, dtype=np.int64):
            _op("random.integers")
            return ndarray(np.asarray(self._g.integers(low, high, size=size, dtype=dtype)), _STATE["device"])

    def default_rng(self, seed=None):
        return self.Generator(seed)


random = _Random()


# ------------------------------------------------------------------------------------ cuda


class Device:
    """cupy.cuda.Device: use() makes it current; a `with` block makes it current and restores."""

    def __init__(self, device=None):
        self.id = _STATE["device"] if device is None else int(device)
        if not 0 <= self.id < N_DEVICES:
            raise RuntimeError(f"cudaErrorInvalidDevice: invalid device ordinal {self.id}")
        self._before = []

    def use(self):
        _STATE["device"] = self.id

    def __enter__(self):
        self._before.append(_STATE["device"])
        _STATE["device"] = self.id
        return self

    def __exit__(self, *exc):
        _STATE["device"] = self._before.pop()
        return False

    def synchronize(self):
        _sync()

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


class _Runtime:
    @staticmethod
    def getDeviceCount():   # noqa: N802 (CuPy's name)
        return N_DEVICES

    @staticmethod
    def runtimeGetVersion():   # noqa: N802
        return 12080

    @staticmethod
    def driverGetVersion():   # noqa: N802
        return 12080

    @staticmethod
    def getDeviceProperties(i):   # noqa: N802
        return {"name": b"fake CuPy device (CPU emulation)", "major": 9, "minor": 0, "totalGlobalMem": 2**34}


class _Module:
    """cupy.RawModule over the CPU emulation of the CUDA source; its kernels count as ops."""

    def __init__(self, code, options=(), name_expressions=None):
        from tests.test_cuda_source import EmuModule

        if _STATE["lib"] is None:
            raise RuntimeError("fake CuPy: no emulation library; use fake_cupy.installed(emu_lib)")
        self._m = EmuModule(_STATE["lib"], code, options, name_expressions)

    def get_function(self, name):
        kernel = self._m.get_function(name)

        def launch(grid, block, args):
            from tests.test_cuda_source import _emu

            host = []
            for a in args:
                if isinstance(a, ndarray):
                    _check_device(a._dev, "kernel argument")
                    host.append(_emu(a._a))
                elif isinstance(a, np.ndarray) and a.ndim > 0:
                    raise TypeError("a kernel argument was a host NumPy array, not a device array")
                else:
                    host.append(a)
            _op(f"kernel {name}")
            kernel(grid, block, host)
        return launch


cuda = types.SimpleNamespace(Device=Device, runtime=_Runtime(), Stream=None)
RawModule = _Module
float32, float64, int64, int32, uint8, bool_ = np.float32, np.float64, np.int64, np.int32, np.uint8, np.bool_
newaxis = None
__version__ = "14.0.0-fake"


def __getattr__(name):
    """Every other NumPy function, as a device operation on device arrays."""
    fn = getattr(np, name, None)
    if fn is None or not callable(fn):
        raise AttributeError(f"fake cupy has no {name!r}")

    def device_function(*args, **kwargs):
        return _call(fn, args, kwargs)
    device_function.__name__ = name
    return device_function


@contextlib.contextmanager
def installed(lib=None):
    """`import cupy` gives this module within the block (minstn's caches of CuPy cleared)."""
    from minstn.ops.fast import cuda as mcuda

    module = sys.modules[__name__]
    saved = sys.modules.get("cupy")
    sys.modules["cupy"] = module
    _STATE.update(device=0, lib=lib)
    reset_counts()
    mcuda._module.cache_clear()
    mcuda._function.cache_clear()
    try:
        yield module
    finally:
        mcuda._module.cache_clear()
        mcuda._function.cache_clear()
        if saved is None:
            sys.modules.pop("cupy", None)
        else:
            sys.modules["cupy"] = saved


def trace_trainer_step(model: str = "lstm-stn", downsample: int = 2, batch_size: int = 8, seed: int = 0):
    """One trainer step (minstn.training.loop.Run.step: forward, backward, the one transfer, the
    clip, FlatAdam; float32, default options) on the stand-in, after one warm-up step, with the
    batch gathered from the device-resident training set as fit() does.
    Returns (COUNTS of the step, its Trace, the Run). Call inside installed(lib)."""
    import numpy as np

    from minstn.models import build_model
    from minstn.training import TrainConfig
    from minstn.training.console import Console
    from minstn.training.loop import Run
    from minstn.training.run import RunFolder
    from minstn.training.speed import make_runner

    rng = np.random.default_rng(seed)
    x = rng.random((2 * batch_size, 1, 100, 100)).astype(np.float32)
    y = rng.integers(0, 10, size=(2 * batch_size, 4))
    splits = {s: {"images": x, "labels": y} for s in ("train", "val")}
    net = build_model(model, downsample, device="gpu", seed=seed)
    run = Run(TrainConfig(model=model, downsample=downsample, batch_size=batch_size, device="gpu"), net,
              make_runner(net, 0, 1), splits, RunFolder("unused"), Console(verbosity=0))
    idx = net.device.asarray(np.arange(batch_size))
    run.step(run.train_x[idx], run.train_y[idx])                 # warm-up: the kernels compile, lr goes over
    reset_counts()
    with trace() as t:
        run.step(run.train_x[idx], run.train_y[idx])             # the batch gather counts too, as in fit()
    return dict(COUNTS), t, run


def main(argv=None) -> int:
    """python -m tests.fake_cupy [--model M] [--batch-size B] [--by function|line|op|caller] [--depth N] [--plain]:
    one trainer step on the stand-in, and where its device operations go."""
    import argparse
    import tempfile

    from tests.test_cuda_source import build_emu_lib

    p = argparse.ArgumentParser(prog="python -m tests.fake_cupy", description=main.__doc__.splitlines()[1].strip())
    p.add_argument("--model", default="lstm-stn", help="model name (default lstm-stn), at d = 2")
    p.add_argument("--batch-size", type=int, default=8, help="canvases per step (default 8)")
    p.add_argument("--by", default="function", choices=("function", "line", "op", "caller"),
                   help="group the operations by minstn function (default), source line, operation or call chain")
    p.add_argument("--depth", type=int, default=2, help="frames of the call chain for --by caller (default 2)")
    p.add_argument("--top", type=int, default=None, help="show only the largest groups")
    p.add_argument("--plain", action="store_true",
                   help="the model on the plain ops (minstn.ops, array code) instead of the fast ones")
    args = p.parse_args(argv)
    from minstn.ops.switch import use_fast

    with installed(build_emu_lib(tempfile.mkdtemp(prefix="minstn-emu-"))), use_fast(not args.plain):
        counts, t, _ = trace_trainer_step(args.model, 2, args.batch_size)
    kind = "plain" if args.plain else "fast"
    print(f"{args.model} d=2, batch {args.batch_size}, {kind} ops: one trainer step on the CuPy stand-in: {counts}")
    print(t.table(args.by, depth=args.depth, top=args.top))
    return 0


def pytest_configure(config):
    """`pytest -p tests.fake_cupy -m gpu tests/test_gpu.py`: the real-GPU tests run on this stand-in,
    a dry run that catches a GPU test that could not pass on any GPU before one runs it
    (tests/test_gpu_emulated.py does this). The emulation library is $MINSTN_EMU_LIB, or built."""
    import ctypes
    import tempfile

    from tests.test_cuda_source import build_emu_lib

    path = os.environ.get("MINSTN_EMU_LIB")
    lib = ctypes.CDLL(path) if path else build_emu_lib(tempfile.mkdtemp(prefix="minstn-emu-"))
    context = installed(lib)
    context.__enter__()
    config.add_cleanup(lambda: context.__exit__(None, None, None))


if __name__ == "__main__":
    sys.exit(main())
