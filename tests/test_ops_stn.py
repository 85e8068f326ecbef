"""Affine grid and bilinear sampler: gradient checks, loop reference, PyTorch agreement, errors.

Tolerance: float64 centred differences, relative error <= 1e-6 (noise ~1e-9). The sampler is
piecewise bilinear: its derivative jumps where a sample coordinate crosses an integer, so the
test grids keep every pixel coordinate at least 0.05 away from an integer (the probes move it
by 1e-5). Points partly outside the image are included on purpose (zero padding).
"""
import numpy as np
import pytest

from minstn.gradcheck import check_gradients
from minstn.ops import (
    affine_grid_backward,
    affine_grid_forward,
    bilinear_sample_backward,
    bilinear_sample_backward_naive,
    bilinear_sample_forward,
    bilinear_sample_forward_naive,
)

TOL = 1e-6


def grid_away_from_integers(rng, N, H_out, W_out, H, W, margin=1.5):
    """A random grid (N, H_out, W_out, 2) whose pixel coordinates lie in [-margin, size - 1 + margin]
    (so some points are outside the image) with fractional parts in [0.05, 0.95]."""
    px = rng.uniform(-margin, W - 1 + margin, (N, H_out, W_out))
    py = rng.uniform(-margin, H - 1 + margin, (N, H_out, W_out))
    px = np.floor(px) + rng.uniform(0.05, 0.95, px.shape)
    py = np.floor(py) + rng.uniform(0.05, 0.95, py.shape)
    gx = (2 * px + 1) / W - 1  # inverse of x = ((gx + 1) W - 1) / 2
    gy = (2 * py + 1) / H - 1
    return np.stack([gx, gy], axis=-1)


THETAS = np.array(
    [
        [[0.9, 0.2, 0.1], [-0.3, 1.1, 0.2]],  # rotation, shear, shift: some points leave the image
        [[0.55, 0.0, -0.3], [0.0, 0.45, 0.4]],  # a zoom
    ]
)


@pytest.mark.parametrize("out_hw", [(4, 6), (3, 3), (1, 5)])
def test_affine_grid_gradient(rng, out_hw):
    theta = rng.standard_normal((2, 2, 3))
    errs = check_gradients(affine_grid_forward, affine_grid_backward, {"theta": theta}, static={"out_hw": out_hw}, rng=rng)
    assert errs["theta"] <= TOL, errs


def test_affine_grid_identity_is_base_grid():
    grid, _ = affine_grid_forward(np.array([[[1.0, 0, 0], [0, 1.0, 0]]]), (2, 4))
    np.testing.assert_allclose(grid[0, :, :, 0], [[-0.75, -0.25, 0.25, 0.75]] * 2, atol=1e-15)
    np.testing.assert_allclose(grid[0, :, :, 1], [[-0.5] * 4, [0.5] * 4], atol=1e-15)


@pytest.mark.parametrize("in_hw,out_hw,C", [((5, 7), (4, 6), 3), ((6, 4), (7, 3), 1), ((4, 4), (2, 5), 2)])
def test_sampler_gradients(rng, in_hw, out_hw, C):
    N = 2
    U = rng.standard_normal((N, C) + in_hw)
    grid = grid_away_from_integers(rng, N, *out_hw, *in_hw)
    errs = check_gradients(bilinear_sample_forward, bilinear_sample_backward, {"U": U, "grid": grid}, rng=rng)
    assert max(errs.values()) <= TOL, errs


def test_sampler_batch1_all_outside(rng):
    """Every point outside the image: V = 0 and both gradients are 0."""
    U = rng.standard_normal((1, 2, 4, 5))
    grid = np.full((1, 3, 3, 2), 2.5)
    V, cache = bilinear_sample_forward(U, grid)
    dU, dgrid = bilinear_sample_backward(np.ones_like(V), cache)
    assert not V.any() and not dU.any() and not dgrid.any()


@pytest.mark.parametrize("in_hw,out_hw", [((5, 7), (4, 6)), ((3, 4), (5, 2))])
def test_sampler_matches_naive(rng, in_hw, out_hw):
    U = rng.standard_normal((2, 2) + in_hw)
    grid = grid_away_from_integers(rng, 2, *out_hw, *in_hw)
    V, cache = bilinear_sample_forward(U, grid)
    V_n, cache_n = bilinear_sample_forward_naive(U, grid)
    np.testing.assert_allclose(V, V_n, atol=1e-12)
    dV = rng.standard_normal(V.shape)
    for g, g_n in zip(bilinear_sample_backward(dV, cache), bilinear_sample_backward_naive(dV, cache_n)):
        np.testing.assert_allclose(g, g_n, atol=1e-12)


def test_theta_to_sample_gradient(rng):
    """The composition theta -> grid -> V, as the spatial transformer uses it."""
    U = rng.standard_normal((2, 1, 6, 5))

    def forward(theta, U):
        grid, gcache = affine_grid_forward(theta, (4, 3))
        V, scache = bilinear_sample_forward(U, grid)
        return V, (gcache, scache)

    def backward(dV, cache):
        gcache, scache = cache
        dU, dgrid = bilinear_sample_backward(dV, scache)
        return affine_grid_backward(dgrid, gcache), dU

    errs = check_gradients(forward, backward, {"theta": THETAS.copy(), "U": U}, rng=rng)
    assert max(errs.values()) <= TOL, errs


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-4)])
def test_identity_theta_reproduces_input(rng, dtype, tol):
    """Exact up to rounding of the grid coordinates: the weights are 1 and 0 in exact arithmetic,
    but x_t = (2j + 1) / W - 1 is rounded, so x = j +- ~50 ulp(1). In float32 that leaves a weight
    of ~1e-5 on a neighbour (PyTorch's float32 affine_grid + grid_sample: max error 4.6e-5 on
    randn 100x100 images); in float64 ~1e-14."""
    U = rng.standard_normal((2, 3, 100, 100)).astype(dtype)
    theta = np.tile(np.array([[1, 0, 0], [0, 1, 0]], dtype=dtype), (2, 1, 1))
    grid, _ = affine_grid_forward(theta, (100, 100))
    V, _ = bilinear_sample_forward(U, grid)
    assert V.dtype == dtype and grid.dtype == dtype
    np.testing.assert_allclose(V, U, rtol=0, atol=tol)


def test_matches_torch_outputs_and_gradients(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    N, C, H, W, H_out, W_out = 2, 3, 5, 7, 4, 6
    U = rng.standard_normal((N, C, H, W))
    theta = THETAS.copy()
    grid, gcache = affine_grid_forward(theta, (H_out, W_out))
    V, scache = bilinear_sample_forward(U, grid)
    tt = torch.tensor(theta, requires_grad=True)
    Ut = torch.tensor(U, requires_grad=True)
    gt = F.affine_grid(tt, (N, C, H_out, W_out), align_corners=False)
    gt.retain_grad()
    Vt = F.grid_sample(Ut, gt, mode="bilinear", padding_mode="zeros", align_corners=False)
    np.testing.assert_allclose(grid, gt.detach().numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(V, Vt.detach().numpy(), rtol=0, atol=1e-6)
    dV = rng.standard_normal(V.shape)
    Vt.backward(torch.tensor(dV))
    dU, dgrid = bilinear_sample_backward(dV, scache)
    dtheta = affine_grid_backward(dgrid, gcache)
    np.testing.assert_allclose(dU, Ut.grad.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(dgrid, gt.grad.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(dtheta, tt.grad.numpy(), rtol=0, atol=1e-6)


def test_matches_torch_on_random_grid(rng):
    torch = pytest.importorskip("torch")
    U = rng.standard_normal((2, 2, 6, 4))
    grid = grid_away_from_integers(rng, 2, 7, 3, 6, 4, margin=2.0)
    V, cache = bilinear_sample_forward(U, grid)
    Ut = torch.tensor(U, requires_grad=True)
    gt = torch.tensor(grid, requires_grad=True)
    Vt = torch.nn.functional.grid_sample(Ut, gt, mode="bilinear", padding_mode="zeros", align_corners=False)
    dV = rng.standard_normal(V.shape)
    Vt.backward(torch.tensor(dV))
    dU, dgrid = bilinear_sample_backward(dV, cache)
    np.testing.assert_allclose(V, Vt.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(dU, Ut.grad.numpy(), atol=1e-6)
    np.testing.assert_allclose(dgrid, gt.grad.numpy(), atol=1e-6)


def test_upper_neighbour_is_floor_plus_one():
    """At an integer coordinate the x-gradient is U[x + 1] - U[x] (ceil would give 0)."""
    U = np.array([[[[0.0, 1.0, 3.0]]]])  # (1, 1, 1, 3)
    gx = (2 * 1.0 + 1) / 3 - 1  # pixel x = 1 exactly
    grid = np.array([[[[gx, 0.0]]]])
    V, cache = bilinear_sample_forward(U, grid)
    _, dgrid = bilinear_sample_backward(np.ones_like(V), cache)
    assert V[0, 0, 0, 0] == 1.0
    assert abs(dgrid[0, 0, 0, 0] - (3.0 - 1.0) * 3 / 2) < 1e-12


def test_float32_kept(rng):
    U = rng.standard_normal((2, 1, 5, 6)).astype(np.float32)
    theta = THETAS.astype(np.float32)
    grid, gcache = affine_grid_forward(theta, (3, 4))
    V, scache = bilinear_sample_forward(U, grid)
    dU, dgrid = bilinear_sample_backward(np.ones_like(V), scache)
    dtheta = affine_grid_backward(dgrid, gcache)
    assert {a.dtype for a in (grid, V, dU, dgrid, dtheta)} == {np.dtype(np.float32)}


def test_caches_are_tagged_and_a_wrong_cache_is_a_clear_error(rng):
    from minstn.ops import fast

    grid, gcache = affine_grid_forward(THETAS, (2, 2))
    U = rng.standard_normal((2, 1, 3, 3))
    V, scache = bilinear_sample_forward(U, grid)
    assert gcache[0] == "affine_grid" and scache[0] == "bilinear_sample"
    assert fast.bilinear_sample_forward(U, grid, impl="auto")[1][0] == "quad"
    with pytest.raises(TypeError, match="bilinear_sample_backward: cache is not from bilinear_sample_forward "
                                        r"\(got the cache of 'affine_grid'\)"):
        bilinear_sample_backward(V, gcache)
    with pytest.raises(TypeError, match=r"affine_grid_backward: cache is not from affine_grid_forward \(got a list\)"):
        affine_grid_backward(grid, [1, 2])
    with pytest.raises(TypeError, match="cache is not from minstn.ops.fast.bilinear_sample_forward"):
        fast.bilinear_sample_backward(V, scache)


def test_stn_errors(rng):
    U = rng.standard_normal((2, 1, 5, 5))
    grid, _ = affine_grid_forward(THETAS, (3, 3))
    with pytest.raises(ValueError, match=r"theta must have shape \(N, 2, 3\), got \(2, 3, 3\)"):
        affine_grid_forward(np.zeros((2, 3, 3)), (3, 3))
    with pytest.raises(ValueError, match=r"theta must be 3-D \(N, 2, 3\)"):
        affine_grid_forward(np.zeros((2, 3)), (3, 3))
    with pytest.raises(ValueError, match=r"out_hw must be a pair \(H_out, W_out\) of ints >= 1, got \(0, 5\)"):
        affine_grid_forward(THETAS, (0, 5))
    with pytest.raises(ValueError, match=r"out_hw must be a pair"):
        affine_grid_forward(THETAS, (5,))
    with pytest.raises(TypeError, match=r"out_hw must be a pair \(H_out, W_out\) of ints >= 1, got \(2.5, 3\)"):
        affine_grid_forward(THETAS, (2.5, 3))
    with pytest.raises(TypeError, match="theta must be float32 or float64"):
        affine_grid_forward(THETAS.astype(np.int64), (3, 3))
    from minstn.ops import fast

    with pytest.raises(ValueError, match="impl='kernel' needs CuPy arrays"):
        fast.affine_grid_forward(THETAS, (3, 3), impl="kernel")
    with pytest.raises(ValueError, match="impl='kernel' needs CuPy arrays"):
        fast.bilinear_sample_forward(U, grid, impl="kernel")
    with pytest.raises(ValueError, match="impl must be one of 'auto', 'array', 'kernel', got 'fast'"):
        fast.bilinear_sample_forward(U, grid, impl="fast")
    with pytest.raises(ValueError, match="the plain op is array code"):
        bilinear_sample_forward(U, grid, impl="kernel")
    with pytest.raises(ValueError, match=r"U must be 4-D \(N, C, H, W\)"):
        bilinear_sample_forward(U[0], grid)
    with pytest.raises(ValueError, match="grid's last axis must hold \\(x, y\\), size 2"):
        bilinear_sample_forward(U, np.zeros((2, 3, 3, 3)))
    with pytest.raises(ValueError, match="U has batch size 1 but grid has 2"):
        bilinear_sample_forward(U[:1], grid)
    with pytest.raises(TypeError, match="grid has dtype float32 but U has dtype float64"):
        bilinear_sample_forward(U, grid.astype(np.float32))
    with pytest.raises(TypeError, match="U must be float32 or float64, got dtype int64"):
        bilinear_sample_forward(U.astype(np.int64), grid)


def _cupy_or_skip():
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA GPU visible")
    except Exception as e:  # no driver / no device
        pytest.skip(f"no usable CUDA GPU ({type(e).__name__})")
    return cupy


@pytest.mark.gpu
def test_array_path_runs_on_cupy(rng):
    """The plain array code on CuPy arrays (the GPU benchmark's baseline) matches NumPy."""
    cupy = _cupy_or_skip()
    U = rng.standard_normal((2, 3, 6, 5))
    grid, gcache = affine_grid_forward(THETAS, (4, 7), impl="array")
    V, scache = bilinear_sample_forward(U, grid, impl="array")
    dV = rng.standard_normal(V.shape)
    dU, dgrid = bilinear_sample_backward(dV, scache)
    dtheta = affine_grid_backward(dgrid, gcache)
    grid_c, gcache_c = affine_grid_forward(cupy.asarray(THETAS), (4, 7), impl="array")
    V_c, scache_c = bilinear_sample_forward(cupy.asarray(U), grid_c, impl="array")
    dU_c, dgrid_c = bilinear_sample_backward(cupy.asarray(dV), scache_c)
    dtheta_c = affine_grid_backward(dgrid_c, gcache_c)
    for a, b in ((grid, grid_c), (V, V_c), (dU, dU_c), (dgrid, dgrid_c), (dtheta, dtheta_c)):
        np.testing.assert_allclose(a, cupy.asnumpy(b), atol=1e-12)


def test_stn_backward_rejects_wrong_gradient_shape(rng):
    grid, gcache = affine_grid_forward(THETAS, (3, 4))
    with pytest.raises(ValueError, match=r"affine_grid_backward: dgrid must have the forward output's shape \(2, 3, 4, 2\)"):
        affine_grid_backward(grid[:, :2], gcache)
    V, scache = bilinear_sample_forward(rng.standard_normal((2, 1, 5, 5)), grid)
    with pytest.raises(ValueError, match=r"bilinear_sample_backward: dV must have the forward output's shape \(2, 1, 3, 4\), got \(2, 1, 4, 3\)"):
        bilinear_sample_backward(V.reshape(2, 1, 4, 3), scache)


def test_nan_sample_point_gives_nan_there_and_nothing_else(rng):
    """A NaN grid point (a diverged theta) must not crash the gather: V is NaN at that point,
    every other point is unchanged, and dU stays finite (the point adds nothing)."""
    U = rng.standard_normal((2, 3, 4, 5))
    grid = rng.uniform(-0.9, 0.9, size=(2, 3, 2, 2))
    V_ref, _ = bilinear_sample_forward(U, grid)
    bad = grid.copy()
    bad[1, 2, 0, 0] = np.nan
    V, cache = bilinear_sample_forward(U, bad)
    assert np.isnan(V[1, :, 2, 0]).all()
    keep = np.ones(V.shape, bool)
    keep[1, :, 2, 0] = False
    np.testing.assert_array_equal(V[keep], V_ref[keep])
    dU, dgrid = bilinear_sample_backward(np.ones_like(V), cache)
    assert np.isfinite(dU).all()
    assert np.isnan(dgrid[1, 2, 0]).any()


def test_sampler_need_dU_false_skips_only_dU(rng):
    """The spatial transformers sample from the canvas (data): need_dU=False returns dU as None
    and the same dgrid."""
    U = rng.standard_normal((2, 3, 7, 6))
    grid = grid_away_from_integers(rng, 2, 5, 4, 7, 6)
    V, cache = bilinear_sample_forward(U, grid)
    dV = rng.standard_normal(V.shape)
    dU, dgrid = bilinear_sample_backward(dV, cache)
    none, dgrid2 = bilinear_sample_backward(dV, cache, need_dU=False)
    assert none is None and dU.shape == U.shape
    np.testing.assert_array_equal(dgrid2, dgrid)


def test_affine_grid_of_an_empty_batch():
    theta = np.zeros((0, 2, 3))
    grid, cache = affine_grid_forward(theta, (3, 4))
    assert grid.shape == (0, 3, 4, 2)
    assert affine_grid_backward(np.zeros((0, 3, 4, 2)), cache).shape == (0, 2, 3)
