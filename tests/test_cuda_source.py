"""The CUDA source (minstn/ops/fast/kernels/*.cu, one module), checked on a machine without a GPU.

Three layers:
1. static checks of the .cu text against the launch code in minstn/ops/fast/cuda.py (every file
   in the module and in the emulation, every kernel defined where it is listed and instantiated
   for float and double, the reduction blocks);
2. nvcc compiles the module's source for sm_80 and sm_90 (skipped where nvcc is not on PATH),
   and NVRTC, the compiler CuPy uses, compiles it with cuda.py's options and name expressions
   (skipped where libnvrtc is not found);
3. CPU emulation: g++ compiles the very same .cu files with tests/cuda_emulation/cuda_shim.h and
   driver.cpp into a shared library; a stand-in for CuPy (arrays are NumPy arrays, a
   RawModule's kernels call that library, each launch's arguments checked against the kernel's
   signature) lets minstn.ops.fast.cuda's own Python code launch the spatial transformer's
   kernels, whose results are compared with the NumPy reference in minstn.ops.stn
   (impl='array') in float64 and float32, on shapes with sample points outside the image.
   Skipped where g++ is missing. The other kernels run through the same library in
   tests/test_gpu_emulated.py, launched by the fast ops on the stricter stand-in
   tests/fake_cupy.py.

Tolerances: float64 to 1e-12 (the kernel and the array code do the same arithmetic, summed in
a different order, and the affine reduction adds in a tree); float32 to 2e-5 relative to the
largest value (a few float32 roundings of values of order 1-10).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from minstn.ops.fast import cuda
from minstn.ops import stn

ROOT = Path(__file__).resolve().parent.parent
EMU_DIR = ROOT / "tests" / "cuda_emulation"
DTYPES = [np.float64, np.float32]


def _tol(dtype):
    return 1e-12 if np.dtype(dtype) == np.float64 else 2e-5


def assert_close(actual, expected, dtype, what):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == np.dtype(dtype), f"{what}: dtype {actual.dtype}, expected {np.dtype(dtype)}"
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    err = float(np.abs(actual - expected).max(initial=0.0)) / scale
    assert err <= _tol(dtype), f"{what}: max error {err:.3g} (relative to {scale:.3g}) > {_tol(dtype)}"


# ------------------------------------------------------------------------------------------
# 1. static checks


def test_kernel_source_is_found_and_includes_nothing():
    src = cuda.kernel_source()
    assert cuda.KERNEL_PATH.name == "stn.cu" and "bilinear_sample_backward" in src
    assert sorted(p.name for p in cuda.KERNEL_DIR.glob("*.cu")) == sorted(cuda.KERNEL_FILES), \
        "every .cu file of kernels/ is part of the module (cuda.KERNEL_FILES), and only those"
    # NVRTC (CuPy) has no host headers, and the g++ emulation provides everything via the shim.
    includes = [ln for ln in src.splitlines() if ln.strip().startswith("#include")]
    assert includes == [], f"the kernel sources must include nothing, found {includes}"
    driver = (EMU_DIR / "driver.cpp").read_text()
    for name in cuda.KERNEL_FILES:   # the emulation compiles the same files, in the same order
        assert f'#include "{name}"' in driver, f"tests/cuda_emulation/driver.cpp does not include {name}"


def test_reduce_block_matches_the_source():
    m = re.search(r"#define\s+STN_REDUCE_BLOCK\s+(\d+)", cuda.kernel_source())
    assert m is not None, "STN_REDUCE_BLOCK is not defined in stn.cu"
    block = int(m.group(1))
    assert block == cuda.REDUCE_BLOCK, f"stn.cu reduces over {block} threads but cuda.py launches {cuda.REDUCE_BLOCK}"
    assert block & (block - 1) == 0, "the tree reduction needs a power-of-two block"


def test_every_name_expression_is_instantiated():
    src = re.sub(r"\s+", " ", cuda.kernel_source())
    for name in cuda.NAME_EXPRESSIONS:
        assert f"template __global__ void {name}(" in src, f"{name} is not explicitly instantiated in the .cu files"
    n_kernels = sum(len(names) for names in cuda.KERNEL_FILES.values())
    assert len(cuda.NAME_EXPRESSIONS) == 2 * n_kernels == 50  # 25 kernels x (float, double)
    for file, names in cuda.KERNEL_FILES.items():   # each kernel is defined in the file that lists it
        text = (cuda.KERNEL_DIR / file).read_text()
        for name in names:
            assert re.search(rf"__global__ void {name}\(", text), f"{name} is not defined in {file}"


def test_reduce_blocks_of_the_loss_match_the_source():
    from minstn.ops.fast import loss

    m = re.search(r"#define\s+TRAIN_REDUCE_BLOCK\s+(\d+)", cuda.kernel_source())
    assert m is not None and int(m.group(1)) == loss.REDUCE_BLOCK, "train.cu and minstn/ops/fast/loss.py disagree"


def test_launch_config():
    assert cuda.launch_config(1) == (1, cuda.BLOCK)
    assert cuda.launch_config(cuda.BLOCK + 1) == (2, cuda.BLOCK)
    # The block count is capped; the kernels' grid-stride loops cover the remaining points.
    assert cuda.launch_config(10**12) == (cuda.MAX_BLOCKS, cuda.BLOCK)
    with pytest.raises(ValueError, match="at least one point"):
        cuda.launch_config(0)


def test_kernels_reject_numpy_arrays():
    theta = np.zeros((1, 2, 3), np.float32)
    with pytest.raises(TypeError, match="take CuPy arrays.*impl='array'"):
        cuda.affine_grid_forward(theta, (4, 4))
    with pytest.raises(TypeError, match="U is a numpy.ndarray.*CuPy arrays"):
        cuda.bilinear_sample_forward(np.zeros((1, 1, 4, 4)), np.zeros((1, 2, 2, 2)))


def test_backward_rejects_a_gradient_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"dgrid has shape \(2, 3, 4, 2\), expected \(2, 3, 5, 2\)"):
        cuda.affine_grid_backward(np.zeros((2, 3, 4, 2)), ("kernel", (2, 3, 5)))
    cache = ("kernel", np.zeros((1, 2, 4, 4)), np.zeros((1, 3, 3, 2)))
    with pytest.raises(ValueError, match=r"dV has shape \(1, 2, 3, 4\), expected \(1, 2, 3, 3\)"):
        cuda.bilinear_sample_backward(np.zeros((1, 2, 3, 4)), cache)


def test_ctype_rejects_other_dtypes():
    assert cuda._ctype(np.float32) == "float" and cuda._ctype(np.float64) == "double"
    with pytest.raises(TypeError, match="float32 or float64 arrays, got float16"):
        cuda._ctype(np.float16)


# ------------------------------------------------------------------------------------------
# 2. nvcc


def test_nvcc_compiles_for_sm80_and_sm90(tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not on PATH: the CUDA source is not compiled here")
    src = tmp_path / "minstn_kernels.cu"        # the module's source, as RawModule compiles it
    src.write_text(cuda.kernel_source())
    out = tmp_path / "minstn_kernels.fatbin"
    cmd = [nvcc, "--fatbin", "-std=c++14", "--fmad=false", "-Werror", "all-warnings",
           "-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=sm_90",
           "-o", str(out), str(src)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"nvcc failed ({' '.join(cmd)}):\n{res.stderr}"
    assert out.stat().st_size > 0


def _load_nvrtc():
    """libnvrtc (the compiler CuPy's RawModule uses) via ctypes, or None.

    Looked for where CuPy's wheels find it: the nvidia-cuda-nvrtc-cu12 / nvidia-cuda-nvrtc
    packages, then the system library path.  NVRTC compiles without a GPU.
    """
    candidates = []
    try:
        import nvidia.cuda_nvrtc as pkg

        for root in pkg.__path__:
            candidates += sorted((Path(root) / "lib").glob("libnvrtc.so*"))
    except ImportError:
        pass
    found = ctypes.util.find_library("nvrtc")
    candidates += [found] if found else []
    candidates += ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"]
    for cand in candidates:
        if "builtins" in str(cand) or ".alt." in str(cand):
            continue
        try:
            return ctypes.CDLL(str(cand))
        except OSError:
            continue
    return None


@pytest.mark.parametrize("arch", ["compute_52", "compute_60", "compute_80", "compute_90"])
def test_nvrtc_compiles_every_name_expression(arch):
    """What RawModule does on a GPU machine: NVRTC with cuda.py's options and name expressions.

    Runs where libnvrtc is found (pip install nvidia-cuda-nvrtc-cu12); each lowered (mangled)
    name must be an entry point of the PTX.
    """
    lib = _load_nvrtc()
    if lib is None:
        pytest.skip("libnvrtc not found (pip install nvidia-cuda-nvrtc-cu12 to run this check)")
    c = ctypes
    prog = c.c_void_p()
    src = cuda.kernel_source().encode()
    assert lib.nvrtcCreateProgram(c.byref(prog), src, b"minstn_kernels.cu", 0, None, None) == 0
    try:
        for name in cuda.NAME_EXPRESSIONS:
            assert lib.nvrtcAddNameExpression(prog, name.encode()) == 0, name
        # CuPy adds the architecture and --device-as-default-execution-space to our options.
        extra = (f"-arch={arch}", "--device-as-default-execution-space")
        opts = [o.encode() for o in cuda.COMPILE_OPTIONS + extra]
        rc = lib.nvrtcCompileProgram(prog, len(opts), (c.c_char_p * len(opts))(*opts))
        size = c.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, c.byref(size))
        log = c.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        assert rc == 0, f"NVRTC failed for {arch}:\n{log.value.decode(errors='replace')}"
        lib.nvrtcGetPTXSize(prog, c.byref(size))
        ptx = c.create_string_buffer(size.value)
        assert lib.nvrtcGetPTX(prog, ptx) == 0
        ptx_text = ptx.value.decode()
        for name in cuda.NAME_EXPRESSIONS:
            lowered = c.c_char_p()
            assert lib.nvrtcGetLoweredName(prog, name.encode(), c.byref(lowered)) == 0, name
            assert f".entry {lowered.value.decode()}(" in ptx_text, f"{name} ({lowered.value}) not in the PTX"
    finally:
        lib.nvrtcDestroyProgram(c.byref(prog))


# ------------------------------------------------------------------------------------------
# 3. CPU emulation


def build_emu_lib(folder: Path) -> ctypes.CDLL:
    """The kernels compiled for the CPU by g++ with the CUDA shim (folder/libstn_emu.so), loaded with ctypes."""
    gxx = shutil.which("g++")
    lib_path = Path(folder) / "libstn_emu.so"
    cmd = [gxx, "-std=c++17", "-O1", "-ffp-contract=off", "-Wall", "-Wextra", "-shared", "-fPIC", "-pthread",
           "-I", str(EMU_DIR), "-I", str(cuda.KERNEL_DIR),
           str(EMU_DIR / "driver.cpp"), "-o", str(lib_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"g++ failed ({' '.join(cmd)}):\n{res.stderr}"
    lib = ctypes.CDLL(str(lib_path))
    assert lib.emu_reduce_block() == cuda.REDUCE_BLOCK
    from minstn.ops.fast import loss

    assert lib.emu_train_reduce_block() == loss.REDUCE_BLOCK
    return lib


@pytest.fixture(scope="module")
def emu_lib(tmp_path_factory):
    """The kernels compiled for the CPU by g++ with the CUDA shim, loaded with ctypes."""
    if shutil.which("g++") is None:
        pytest.skip("g++ is not on PATH: the CPU emulation of the CUDA kernels cannot be built")
    return build_emu_lib(tmp_path_factory.mktemp("cuda_emulation"))


class EmuArray(np.ndarray):
    """A NumPy array that stands for a CuPy array in the emulation (it has .device)."""

    @property
    def device(self):
        return EmuDevice(0)


class EmuDevice:
    """Stands for cupy.cuda.Device: a context manager with an id."""

    def __init__(self, device_id=0):
        self.id = device_id

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _emu(a):
    return a.view(EmuArray)


def kernel_signatures() -> dict:
    """{'name<float>': ('const float*', 'float*', 'long long', ...)}: every kernel's parameter
    types, read from the explicit instantiations at the end of each .cu file."""
    src = re.sub(r"\s+", " ", cuda.kernel_source())
    found = re.findall(r"template __global__ void (\w+<(?:float|double)>)\(([^)]*)\);", src)
    return {name: tuple(t.strip() for t in params.split(",")) for name, params in found}


# How each parameter type of a kernel is passed: (NumPy dtype the launch code must use, ctypes type).
# A pointer takes a device array of that dtype; a value takes a NumPy scalar of exactly that type
# (on a GPU, CuPy passes a Python float as a double and a Python int as a long long whatever
# the kernel declares, so the launch code must hand over np.int64 / np.float32 / np.float64).
_PARAM = {"float": (np.float32, ctypes.c_float), "double": (np.float64, ctypes.c_double),
          "long long": (np.int64, ctypes.c_longlong)}


class EmuKernel:
    """Stands for a cupy.RawKernel: checks every argument against the kernel's instantiated
    signature, then calls the library's emu_<kernel>_<f32|f64>."""

    def __init__(self, lib, name_expression):
        m = re.fullmatch(r"(\w+)<(float|double)>", name_expression)
        self.kernel, ctype = m.group(1), m.group(2)
        self.dtype = np.dtype(np.float32 if ctype == "float" else np.float64)
        self.params = kernel_signatures()[name_expression]
        self.fn = getattr(lib, f"emu_{self.kernel}_{'f32' if ctype == 'float' else 'f64'}")
        self.launches = []

    def __call__(self, grid, block, args):
        assert len(grid) == 1 and len(block) == 1, "the kernels are launched on a 1-D grid"
        assert len(args) == len(self.params), \
            f"{self.kernel} takes {len(self.params)} arguments {self.params}, the launch code passed {len(args)}"
        c_args = [ctypes.c_uint(int(grid[0])), ctypes.c_uint(int(block[0]))]
        for k, (a, param) in enumerate(zip(args, self.params)):
            base = param.replace("const ", "").rstrip("*").strip()
            dtype, c_type = _PARAM[base]
            if param.endswith("*"):
                assert isinstance(a, EmuArray), f"{self.kernel} argument {k} ({param}): not a device array"
                assert a.flags.c_contiguous, f"{self.kernel} argument {k} ({param}): not C-contiguous"
                assert a.dtype == np.dtype(dtype), f"{self.kernel}<{self.dtype}> argument {k} ({param}) got a {a.dtype} array"
                if not param.startswith("const"):
                    assert a.flags.writeable, f"{self.kernel} argument {k} ({param}) is written but read-only"
                c_args.append(ctypes.c_void_p(a.ctypes.data))
            else:
                assert type(a) is dtype, \
                    f"{self.kernel} argument {k} ({param}) must be passed as {dtype.__name__}, got {type(a).__name__}"
                c_args.append(c_type(a.item()))
        self.launches.append((tuple(grid), tuple(block)))
        rc = self.fn(*c_args)
        assert rc == 0, f"emulated {self.kernel} refused the launch (block {block} too large?)"


class EmuModule:
    """Stands for cupy.RawModule: checks the compile arguments, hands out EmuKernels."""

    def __init__(self, lib, code, options, name_expressions):
        assert code == cuda.kernel_source()
        assert tuple(options) == cuda.COMPILE_OPTIONS
        self.lib, self.names = lib, tuple(name_expressions)

    def get_function(self, name):
        assert name in self.names, f"{name} was not among the name expressions"
        return EmuKernel(self.lib, name)


class EmuCupy:
    """The part of the CuPy namespace that minstn.ops.fast.cuda uses."""

    def __init__(self, lib):
        self.lib = lib
        self.cuda = type("cuda", (), {"Device": EmuDevice})

    def RawModule(self, code, options=(), name_expressions=None):  # noqa: N802 (CuPy's name)
        return EmuModule(self.lib, code, options, name_expressions)

    def ascontiguousarray(self, a, dtype=None):
        return _emu(np.ascontiguousarray(a, dtype=dtype))

    def empty(self, shape, dtype):
        # Filled with NaN, so that an element a kernel forgets to write shows up.
        return _emu(np.full(shape, np.nan, dtype=dtype))

    def empty_like(self, a):
        return self.empty(a.shape, a.dtype)

    def zeros(self, shape, dtype):
        return _emu(np.zeros(shape, dtype=dtype))

    def zeros_like(self, a):
        return self.zeros(a.shape, a.dtype)


@pytest.fixture
def emu_cuda(emu_lib, monkeypatch):
    """minstn.ops.fast.cuda running on the emulated kernels (its caches cleared before and after)."""
    fake = EmuCupy(emu_lib)
    monkeypatch.setattr(cuda, "import_cupy", lambda: fake)
    monkeypatch.setattr(cuda, "is_cupy", lambda a: isinstance(a, EmuArray))
    cuda._module.cache_clear()
    cuda._function.cache_clear()
    yield cuda
    cuda._module.cache_clear()
    cuda._function.cache_clear()


def _theta(rng, N, dtype):
    """Transforms that zoom out, rotate and shift, so that many points fall outside the image."""
    base = np.array([[1.3, 0.25, 0.2], [-0.3, 1.1, -0.35]])
    return (base + 0.3 * rng.standard_normal((N, 2, 3))).astype(dtype)


def _grid(rng, N, H_out, W_out, dtype):
    """A random grid in [-1.6, 1.6]^2: points inside, on the border band, and outside."""
    return rng.uniform(-1.6, 1.6, size=(N, H_out, W_out, 2)).astype(dtype)


# (N, C, H, W, H_out, W_out): H != W, odd sizes, batch 1, one channel, more points than a block
SHAPES = [(2, 3, 7, 9, 5, 6), (1, 1, 6, 5, 8, 3), (3, 2, 11, 4, 19, 23)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N, H_out, W_out", [(3, 5, 6), (1, 1, 1), (2, 19, 23)])
def test_emulated_affine_grid_matches_numpy(emu_cuda, rng, dtype, N, H_out, W_out):
    theta = _theta(rng, N, dtype)
    ref_grid, ref_cache = stn.affine_grid_forward(theta, (H_out, W_out), impl="array")
    grid, cache = emu_cuda.affine_grid_forward(_emu(theta), (H_out, W_out))
    assert cache[0] == "kernel"
    assert_close(grid, ref_grid, dtype, "grid")

    dgrid = rng.standard_normal((N, H_out, W_out, 2)).astype(dtype)
    ref_dtheta = stn.affine_grid_backward(dgrid, ref_cache)
    dtheta = emu_cuda.affine_grid_backward(_emu(dgrid), cache)
    assert_close(dtheta, ref_dtheta, dtype, "dtheta")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_emulated_sampler_matches_numpy(emu_cuda, rng, dtype, shape):
    N, C, H, W, H_out, W_out = shape
    U = rng.standard_normal((N, C, H, W)).astype(dtype)
    grid = _grid(rng, N, H_out, W_out, dtype)
    ref_V, ref_cache = stn.bilinear_sample_forward(U, grid, impl="array")
    V, cache = emu_cuda.bilinear_sample_forward(_emu(U), _emu(grid))
    assert cache[0] == "kernel"
    assert_close(V, ref_V, dtype, "V")

    dV = rng.standard_normal((N, C, H_out, W_out)).astype(dtype)
    ref_dU, ref_dgrid = stn.bilinear_sample_backward(dV, ref_cache)
    dU, dgrid = emu_cuda.bilinear_sample_backward(_emu(dV), cache)
    assert_close(dU, ref_dU, dtype, "dU")
    assert_close(dgrid, ref_dgrid, dtype, "dgrid")


@pytest.mark.parametrize("dtype", DTYPES)
def test_emulated_spatial_transformer_chain(emu_cuda, rng, dtype):
    """theta -> grid -> V and back, as a model uses it: the zoomed-out theta puts points outside."""
    N, C, H, W, H_out, W_out = 2, 2, 10, 12, 6, 7
    theta = _theta(rng, N, dtype)
    U = rng.standard_normal((N, C, H, W)).astype(dtype)
    dV = rng.standard_normal((N, C, H_out, W_out)).astype(dtype)

    g_ref, gc_ref = stn.affine_grid_forward(theta, (H_out, W_out), impl="array")
    V_ref, vc_ref = stn.bilinear_sample_forward(U, g_ref, impl="array")
    dU_ref, dg_ref = stn.bilinear_sample_backward(dV, vc_ref)
    dtheta_ref = stn.affine_grid_backward(dg_ref, gc_ref)

    g, gc = emu_cuda.affine_grid_forward(_emu(theta), (H_out, W_out))
    V, vc = emu_cuda.bilinear_sample_forward(_emu(U), g)
    dU, dg = emu_cuda.bilinear_sample_backward(_emu(dV), vc)
    dtheta = emu_cuda.affine_grid_backward(dg, gc)

    outside = (np.abs(g_ref) > 1).any(axis=-1).mean()
    assert 0.1 < outside < 0.9, f"the test transform should put some points outside, got {outside:.2f}"
    assert_close(V, V_ref, dtype, "V")
    assert_close(dU, dU_ref, dtype, "dU")
    assert_close(dtheta, dtheta_ref, dtype, "dtheta")


@pytest.mark.parametrize("dtype", DTYPES)
def test_emulated_sampler_identity_and_integer_points(emu_cuda, dtype):
    """Identity theta at the input size reproduces U; at integer points the upper corner is floor + 1.

    Sizes 8 x 4 make every coordinate exact in binary, so the points sit exactly on pixel
    centres: x = j, x0 = j, x1 = j + 1 with weight 0.
    """
    U = np.arange(2 * 8 * 4, dtype=dtype).reshape(1, 2, 8, 4)  # U[.., y, x + 1] - U[.., y, x] = 1
    g, _ = emu_cuda.affine_grid_forward(_emu(np.array([[[1, 0, 0], [0, 1, 0]]], dtype)), (8, 4))
    V, cache = emu_cuda.bilinear_sample_forward(_emu(U), g)
    np.testing.assert_array_equal(V, U)
    dU, dgrid = emu_cuda.bilinear_sample_backward(_emu(np.ones_like(U)), cache)
    np.testing.assert_array_equal(dU, np.ones_like(U))  # each pixel is the (y0, x0) corner of one point
    # d V / d x summed over the two channels: U[x0 + 1] - U[x0] = 1 per channel (a ceil would
    # give 0 here); in the last column the x0 + 1 corner lies outside and reads 0: 0 - U[x0].
    expected = np.full((8, 4), 2.0)
    expected[:, 3] = -U[0, :, :, 3].sum(axis=0)
    np.testing.assert_array_equal(dgrid[0, :, :, 0], (expected * (0.5 * 4)).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_emulated_far_away_points_read_zero(emu_cuda, dtype):
    """Points far off the image (a runaway theta) would overflow an int cast: they read zeros,
    as in the array code, and take no gradient."""
    U = np.ones((1, 2, 4, 5), dtype)
    grid = np.array([[[[1e30, 0.0], [-1e30, 0.0]], [[0.0, 3e9], [-0.2, -4e20]]]], dtype)  # (1, 2, 2, 2)
    V, cache = emu_cuda.bilinear_sample_forward(_emu(U), _emu(grid))
    ref_V, ref_cache = stn.bilinear_sample_forward(U, grid, impl="array")
    np.testing.assert_array_equal(V, np.zeros((1, 2, 2, 2), dtype))
    np.testing.assert_array_equal(ref_V, V)
    dU, dgrid = emu_cuda.bilinear_sample_backward(_emu(np.ones((1, 2, 2, 2), dtype)), cache)
    np.testing.assert_array_equal(dU, np.zeros_like(U))
    np.testing.assert_array_equal(dgrid, np.zeros_like(grid))


@pytest.mark.parametrize("dtype", DTYPES)
def test_emulated_nan_point_gives_nan_and_scatters_nothing(emu_cuda, dtype):
    """A NaN sample point (a diverged theta) takes no corner: V is NaN there (NaN weights),
    nothing is scattered into dU, and the other points are unaffected."""
    U = np.ones((1, 1, 4, 5), dtype)
    grid = np.array([[[[np.nan, 0.0], [0.1, -0.2]]]], dtype)  # (1, 1, 2, 2)
    V, cache = emu_cuda.bilinear_sample_forward(_emu(U), _emu(grid))
    assert np.isnan(V[0, 0, 0, 0]) and V[0, 0, 0, 1] == pytest.approx(1.0)
    dU, _ = emu_cuda.bilinear_sample_backward(_emu(np.ones((1, 1, 1, 2), dtype)), cache)
    assert np.isfinite(dU).all() and dU.sum() == pytest.approx(1.0)  # only the finite point's weights


@pytest.mark.parametrize("dtype", DTYPES)
def test_emulated_kernels_accept_non_contiguous_inputs(emu_cuda, rng, dtype):
    U = rng.standard_normal((2, 7, 5, 3)).astype(dtype).transpose(0, 3, 2, 1)  # (2, 3, 5, 7), a view
    grid = _grid(rng, 2, 6, 4, dtype)[:, ::-1]  # (2, 6, 4, 2), negative strides
    assert not U.flags.c_contiguous and not grid.flags.c_contiguous
    V, cache = emu_cuda.bilinear_sample_forward(_emu(U), _emu(grid))
    ref_V, ref_cache = stn.bilinear_sample_forward(U, grid, impl="array")
    assert_close(V, ref_V, dtype, "V")
    dV = rng.standard_normal(ref_V.shape).astype(dtype)[..., ::-1]  # non-contiguous upstream gradient
    dV_before = dV.copy()
    dU, dgrid = emu_cuda.bilinear_sample_backward(_emu(dV), cache)
    ref_dU, ref_dgrid = stn.bilinear_sample_backward(dV, ref_cache)
    assert_close(dU, ref_dU, dtype, "dU")
    assert_close(dgrid, ref_dgrid, dtype, "dgrid")
    np.testing.assert_array_equal(dV, dV_before)  # the incoming gradient is not modified


def test_emulated_grid_stride_and_small_blocks(emu_cuda, rng, monkeypatch):
    """Fewer threads than points (grid-stride loops) and smaller reduction blocks give the same result."""
    N, C, H, W, H_out, W_out = 2, 2, 9, 8, 13, 11
    theta = _theta(rng, N, np.float64)
    U = rng.standard_normal((N, C, H, W))
    dV = rng.standard_normal((N, C, H_out, W_out))
    results = []
    for blocks, threads, reduce_block in [(None, None, cuda.REDUCE_BLOCK), (1, 32, 64), (3, 7, 1), (2, 1, 2)]:
        if blocks is not None:
            monkeypatch.setattr(emu_cuda, "launch_config", lambda P, b=blocks, t=threads: (b, t))
        monkeypatch.setattr(emu_cuda, "REDUCE_BLOCK", reduce_block)
        g, gc = emu_cuda.affine_grid_forward(_emu(theta), (H_out, W_out))
        V, vc = emu_cuda.bilinear_sample_forward(_emu(U), g)
        dU, dg = emu_cuda.bilinear_sample_backward(_emu(dV), vc)
        dtheta = emu_cuda.affine_grid_backward(dg, gc)
        results.append([np.asarray(a) for a in (g, V, dU, dg, dtheta)])
    for other in results[1:]:
        for name, a, b in zip(("grid", "V", "dU", "dgrid", "dtheta"), results[0], other):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=name)


def test_emulated_launch_configuration(emu_cuda, rng):
    """cuda.py launches the point kernels with launch_config and the reduction with a block per item."""
    U = rng.standard_normal((3, 1, 4, 4))
    theta = _theta(rng, 3, np.float64)
    g, gc = emu_cuda.affine_grid_forward(_emu(theta), (20, 30))  # 1800 points
    V, vc = emu_cuda.bilinear_sample_forward(_emu(U), g)
    emu_cuda.bilinear_sample_backward(_emu(np.ones_like(V)), vc)
    emu_cuda.affine_grid_backward(_emu(np.ones_like(g)), gc)
    launches = {name: emu_cuda._function(name, "double", 0).launches for name in
                ("affine_grid_forward", "bilinear_sample_forward", "bilinear_sample_backward", "affine_grid_backward")}
    point = ((cuda.launch_config(1800)[0],), (cuda.BLOCK,))
    assert launches["affine_grid_forward"] == [point]
    assert launches["bilinear_sample_forward"] == [point]
    assert launches["bilinear_sample_backward"] == [point]
    assert launches["affine_grid_backward"] == [((3,), (cuda.REDUCE_BLOCK,))]


def test_emulated_kernels_match_the_naive_loops(emu_cuda, rng):
    """A second reference: the loop-based naive sampler of minstn.ops.naive."""
    from minstn.ops import naive

    U = rng.standard_normal((2, 2, 5, 6))
    grid = _grid(rng, 2, 4, 3, np.float64)
    V, _ = emu_cuda.bilinear_sample_forward(_emu(U), _emu(grid))
    V_naive, _ = naive.bilinear_sample_forward_naive(U, grid)
    assert_close(V, V_naive, np.float64, "V vs naive")


def test_emulated_kernels_match_torch_grid_sample(emu_cuda, rng):
    """An independent reference where torch imports (CPU is enough): grid_sample(bilinear,
    zeros, align_corners=False) and affine_grid(align_corners=False), values and gradients."""
    torch = pytest.importorskip("torch")
    N, C, H, W, H_out, W_out = 2, 3, 7, 9, 5, 6
    theta = _theta(rng, N, np.float64)
    U = rng.standard_normal((N, C, H, W))
    dV = rng.standard_normal((N, C, H_out, W_out))

    g, gc = emu_cuda.affine_grid_forward(_emu(theta), (H_out, W_out))
    V, vc = emu_cuda.bilinear_sample_forward(_emu(U), g)
    dU, dg = emu_cuda.bilinear_sample_backward(_emu(dV), vc)
    dtheta = emu_cuda.affine_grid_backward(dg, gc)

    theta_t = torch.tensor(theta, requires_grad=True)
    U_t = torch.tensor(U, requires_grad=True)
    g_t = torch.nn.functional.affine_grid(theta_t, (N, C, H_out, W_out), align_corners=False)
    V_t = torch.nn.functional.grid_sample(U_t, g_t, mode="bilinear", padding_mode="zeros", align_corners=False)
    V_t.backward(torch.tensor(dV))
    assert_close(g, g_t.detach().numpy(), np.float64, "grid vs torch")
    assert_close(V, V_t.detach().numpy(), np.float64, "V vs torch")
    assert_close(dU, U_t.grad.numpy(), np.float64, "dU vs torch")
    assert_close(dtheta, theta_t.grad.numpy(), np.float64, "dtheta vs torch")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("side", [100, 50, 33, 7])
def test_kernel_and_array_code_round_alike_at_pixel_centres(emu_cuda, dtype, side):
    """The identity transform puts every sample point exactly on a pixel centre, where bilinear
    sampling has its kink: the kernel must compute the same coordinates as the array code (no
    fused multiply-add, the same order of operations), so both pick the same corners, reproduce
    the image exactly, and give the same gradient."""
    from minstn.ops import fast
    from tests.test_cuda_source import _emu

    rng = np.random.default_rng(side)
    U = rng.standard_normal((2, 1, side, side)).astype(dtype)
    theta = np.tile(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=dtype), (2, 1, 1))
    grid_a, _ = fast.affine_grid_forward(theta, (side, side), impl="array")
    grid_k, gcache = emu_cuda.affine_grid_forward(_emu(theta.copy()), (side, side))
    np.testing.assert_array_equal(np.asarray(grid_k), grid_a)
    V_a, cache_a = fast.bilinear_sample_forward(U, grid_a, impl="array")
    V_k, cache_k = emu_cuda.bilinear_sample_forward(_emu(U.copy()), _emu(grid_a.copy()))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(V_a, U, rtol=tol, atol=tol)         # the image, to rounding
    np.testing.assert_allclose(np.asarray(V_k), V_a, rtol=tol, atol=tol)
    # the gradient is where a different corner would show: the slope of the next cell, an O(1) change
    dV = rng.standard_normal(U.shape).astype(dtype)
    _, dgrid_a = fast.bilinear_sample_backward(dV, cache_a)
    _, dgrid_k = emu_cuda.bilinear_sample_backward(_emu(dV.copy()), cache_k)
    scale = float(np.abs(dgrid_a).max())
    np.testing.assert_allclose(np.asarray(dgrid_k), dgrid_a, rtol=0, atol=100 * tol * scale)
