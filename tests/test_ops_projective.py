"""Projective (homography) grid: gradient checks, agreement with the affine grid, loop reference,
warps checked by hand, points at infinity, dtypes and errors.

Tolerance: float64 centred differences (h = 1e-5), relative error <= 1e-6, as for the affine
grid. The grid is a smooth rational function of theta, x_s = u / w, with no kinks, so only
truncation and rounding limit the check. The random homographies keep the denominator
w = g x_t + h y_t + 1 in [0.5, 1.5] (|g| + |h| <= 0.5); the third derivatives then stay below
~6 |u| / w^4 ~ 1e2, so the truncation error h^2 f''' / 6 stays below ~2e-9 against gradients
of order 1..10; measured: 5e-11 .. 5e-9. The strong-perspective case (w down to 0.1) has third
derivatives ~1e3 times larger, but its gradients grow too (~1 / w^2); measured: 4e-9.
"""
import numpy as np
import pytest

from minstn.gradcheck import check_gradients
from minstn.ops import affine_grid_backward, affine_grid_forward, bilinear_sample_backward, bilinear_sample_forward
from minstn.ops.projective import (
    affine_to_projective,
    projective_grid_backward,
    projective_grid_forward,
    projective_identity,
)

TOL = 1e-6


def random_homographies(rng, N, perspective=0.25):
    """(N, 8): the identity plus a random affine part, and g, h in [-perspective, perspective], so
    the denominator stays in [1 - 2 perspective, 1 + 2 perspective] on the target square."""
    theta = np.tile(projective_identity(np.float64), (N, 1))  # (N, 8)
    theta[:, :6] += 0.3 * rng.standard_normal((N, 6))
    theta[:, 6:] = rng.uniform(-perspective, perspective, (N, 2))
    return theta


def projective_grid_naive(theta, out_hw):
    """Loop reference: every grid point with plain Python arithmetic. theta (N, 8) -> (N, H_out, W_out, 2)."""
    H_out, W_out = out_hw
    grid = np.zeros((len(theta), H_out, W_out, 2))
    for n in range(len(theta)):
        a, b, c, d, e, f, g, h = (float(t) for t in theta[n])
        for i in range(H_out):
            yt = (2 * i + 1) / H_out - 1
            for j in range(W_out):
                xt = (2 * j + 1) / W_out - 1
                w = g * xt + h * yt + 1
                grid[n, i, j, 0] = (a * xt + b * yt + c) / w
                grid[n, i, j, 1] = (d * xt + e * yt + f) / w
    return grid


def projective_grid_backward_naive(dgrid, theta):
    """Loop reference of dtheta (N, 8): the partial derivatives of each point, summed."""
    N, H_out, W_out, _ = dgrid.shape
    dtheta = np.zeros((N, 8))
    for n in range(N):
        a, b, c, d, e, f, g, h = (float(t) for t in theta[n])
        for i in range(H_out):
            yt = (2 * i + 1) / H_out - 1
            for j in range(W_out):
                xt = (2 * j + 1) / W_out - 1
                w = g * xt + h * yt + 1
                xs = (a * xt + b * yt + c) / w
                ys = (d * xt + e * yt + f) / w
                gx, gy = float(dgrid[n, i, j, 0]), float(dgrid[n, i, j, 1])
                # d x_s / d(a, b, c) = (x_t, y_t, 1) / w;  d x_s / d(g, h) = -x_s (x_t, y_t) / w; same for y_s
                dtheta[n, 0] += gx * xt / w
                dtheta[n, 1] += gx * yt / w
                dtheta[n, 2] += gx / w
                dtheta[n, 3] += gy * xt / w
                dtheta[n, 4] += gy * yt / w
                dtheta[n, 5] += gy / w
                dtheta[n, 6] += -(gx * xs + gy * ys) * xt / w
                dtheta[n, 7] += -(gx * xs + gy * ys) * yt / w
    return dtheta


# ---------------------------------------------------------------------------------------------
# gradients


@pytest.mark.parametrize("out_hw", [(4, 6), (3, 3), (1, 5), (5, 2)])
def test_projective_grid_gradient(rng, out_hw):
    theta = random_homographies(rng, 3)
    errs = check_gradients(
        projective_grid_forward, projective_grid_backward, {"theta": theta}, static={"out_hw": out_hw}, rng=rng
    )
    assert errs["theta"] <= TOL, errs


def test_projective_grid_gradient_strong_perspective(rng):
    """Denominators down to ~0.1: item 0 has min w = 1 - 0.6 * 0.75 - 0.56 * 0.8 = 0.102 at a corner."""
    theta = random_homographies(rng, 3, perspective=0.45)
    theta[0, 6:] = [0.6, -0.56]
    errs = check_gradients(
        projective_grid_forward, projective_grid_backward, {"theta": theta}, static={"out_hw": (5, 4)}, rng=rng
    )
    assert errs["theta"] <= TOL, errs


def test_theta_to_sample_gradient_batch1(rng):
    """theta -> grid -> V, as a projective spatial transformer uses it; batch 1, H != W everywhere."""
    U = rng.standard_normal((1, 2, 6, 5))

    def forward(theta, U):
        grid, gcache = projective_grid_forward(theta, (4, 3))
        V, scache = bilinear_sample_forward(U, grid)
        return V, (gcache, scache)

    def backward(dV, cache):
        gcache, scache = cache
        dU, dgrid = bilinear_sample_backward(dV, scache)
        return projective_grid_backward(dgrid, gcache), dU

    # fixed theta: every pixel coordinate is >= 0.033 from an integer (the sampler's kinks; the
    # probes move it by ~1e-5), and the bottom row leaves the image (y up to 7.05 > H - 1 = 5)
    theta = np.array([[0.85, 0.2, 0.1, -0.3, 1.05, 0.15, 0.15, -0.2]])
    errs = check_gradients(forward, backward, {"theta": theta, "U": U}, rng=rng)
    assert max(errs.values()) <= TOL, errs


def test_matches_naive_loops(rng):
    theta = random_homographies(rng, 2, perspective=0.4)
    grid, cache = projective_grid_forward(theta, (3, 4))
    np.testing.assert_allclose(grid, projective_grid_naive(theta, (3, 4)), rtol=0, atol=1e-14)
    dgrid = rng.standard_normal(grid.shape)
    dtheta = projective_grid_backward(dgrid, cache)
    np.testing.assert_allclose(dtheta, projective_grid_backward_naive(dgrid, theta), rtol=1e-13, atol=1e-13)


def test_backward_leaves_dgrid_unchanged(rng):
    grid, cache = projective_grid_forward(random_homographies(rng, 2), (3, 5))
    dgrid = rng.standard_normal(grid.shape)
    before = dgrid.copy()
    projective_grid_backward(dgrid, cache)
    np.testing.assert_array_equal(dgrid, before)


def test_matches_torch_autograd(rng):
    """An independent derivative: the same formula written in PyTorch, differentiated by autograd."""
    torch = pytest.importorskip("torch")
    theta = random_homographies(rng, 2, perspective=0.4)
    H_out, W_out = 5, 3
    grid, cache = projective_grid_forward(theta, (H_out, W_out))
    tt = torch.tensor(theta, requires_grad=True)
    xt = (2 * torch.arange(W_out, dtype=torch.float64) + 1) / W_out - 1
    yt = (2 * torch.arange(H_out, dtype=torch.float64) + 1) / H_out - 1
    Y, X = torch.meshgrid(yt, xt, indexing="ij")  # (H_out, W_out)
    t = tt[:, :, None, None]  # (N, 8, 1, 1)
    w = t[:, 6] * X + t[:, 7] * Y + 1
    gt = torch.stack([(t[:, 0] * X + t[:, 1] * Y + t[:, 2]) / w, (t[:, 3] * X + t[:, 4] * Y + t[:, 5]) / w], dim=-1)
    dgrid = rng.standard_normal(grid.shape)
    (gt * torch.tensor(dgrid)).sum().backward()
    np.testing.assert_allclose(grid, gt.detach().numpy(), rtol=0, atol=1e-14)
    np.testing.assert_allclose(projective_grid_backward(dgrid, cache), tt.grad.numpy(), rtol=1e-12, atol=1e-13)


# ---------------------------------------------------------------------------------------------
# agreement with the affine grid


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("out_hw", [(2, 4), (5, 3), (1, 1), (100, 100)])
def test_identity_matches_affine_identity_exactly(dtype, out_hw):
    theta = projective_identity(dtype)[None]  # (1, 8)
    grid, _ = projective_grid_forward(theta, out_hw)
    agrid, _ = affine_grid_forward(np.array([[[1, 0, 0], [0, 1, 0]]], dtype=dtype), out_hw)
    assert grid.dtype == dtype
    np.testing.assert_array_equal(grid, agrid)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_affine_theta_gives_affine_grid_and_gradient(rng, dtype):
    """g = h = 0: the same grid and the same dtheta for [a..f], bit for bit (the numerator is the
    affine grid itself, the denominator is exactly 1); d[g, h] = -sum_p (dx x_s + dy y_s) (x_t, y_t)."""
    theta_aff = (np.array([[1, 0, 0], [0, 1, 0]]) + 0.4 * rng.standard_normal((3, 2, 3))).astype(dtype)
    out_hw = (4, 7)
    grid, cache = projective_grid_forward(affine_to_projective(theta_aff), out_hw)
    agrid, acache = affine_grid_forward(theta_aff, out_hw)
    np.testing.assert_array_equal(grid, agrid)
    dgrid = rng.standard_normal(grid.shape).astype(dtype)
    dtheta = projective_grid_backward(dgrid, cache)
    np.testing.assert_array_equal(dtheta[:, :6], affine_grid_backward(dgrid, acache).reshape(3, 6))
    xt = (2 * np.arange(7) + 1) / 7 - 1
    yt = (2 * np.arange(4) + 1) / 4 - 1
    dw = -(dgrid.astype(np.float64) * grid).sum(axis=3)  # (N, H_out, W_out)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(dtheta[:, 6], (dw * xt[None, None, :]).sum(axis=(1, 2)), rtol=rtol)
    np.testing.assert_allclose(dtheta[:, 7], (dw * yt[None, :, None]).sum(axis=(1, 2)), rtol=rtol)


def test_affine_to_projective_layout():
    theta_aff = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    theta = affine_to_projective(theta_aff)
    assert theta.dtype == np.float32 and theta.shape == (2, 8)
    np.testing.assert_array_equal(theta, [[0, 1, 2, 3, 4, 5, 0, 0], [6, 7, 8, 9, 10, 11, 0, 0]])
    identity = affine_to_projective(np.array([[[1.0, 0, 0], [0, 1, 0]]]))[0]  # (8,)
    np.testing.assert_array_equal(identity, projective_identity(np.float64))


# ---------------------------------------------------------------------------------------------
# warps checked by hand


def test_warp_of_a_ramp_matches_the_homography_by_hand():
    """Bilinear interpolation reproduces a linear ramp exactly, so inside the image the warped
    value must be the ramp at the source point computed by hand from the homography."""
    H, W, H_out, W_out = 9, 12, 7, 10
    rows, cols = np.mgrid[0:H, 0:W]
    U = (0.3 * cols - 0.2 * rows + 1.0)[None, None].astype(np.float64)  # (1, 1, H, W)
    M = [[0.8, 0.15, 0.05], [-0.1, 0.7, -0.05], [0.2, -0.15, 1.0]]
    theta = np.array([M[0] + M[1] + M[2][:2]])  # (1, 8), row-major, last entry dropped
    grid, _ = projective_grid_forward(theta, (H_out, W_out))
    V, _ = bilinear_sample_forward(U, grid)
    inside = 0
    for i in range(H_out):
        for j in range(W_out):
            xt, yt = (2 * j + 1) / W_out - 1, (2 * i + 1) / H_out - 1
            s = [M[r][0] * xt + M[r][1] * yt + M[r][2] for r in range(3)]  # homogeneous source point
            xs, ys = s[0] / s[2], s[1] / s[2]
            px, py = ((xs + 1) * W - 1) / 2, ((ys + 1) * H - 1) / 2  # pixel coordinates
            if 0 <= px <= W - 1 and 0 <= py <= H - 1:
                assert abs(V[0, 0, i, j] - (0.3 * px - 0.2 * py + 1.0)) < 1e-12, (i, j)
                inside += 1
    assert inside >= 50  # of 70: the check covered most of the picture


def test_four_point_homography_lands_on_chosen_pixels(rng):
    """The homography that sends the four corner sample points to four chosen pixel centres,
    solved by hand from the 8 linear equations; the warp must read exactly those pixels there."""
    H, W, H_out, W_out = 8, 11, 5, 6
    U = rng.standard_normal((1, 2, H, W))
    corners_t = [(0, 0), (W_out - 1, 0), (W_out - 1, H_out - 1), (0, H_out - 1)]  # (j, i) of the target corners
    corners_s = [(1, 1), (9, 2), (10, 6), (2, 7)]  # (px, py) in the source image: convex, no parallelogram
    A, rhs = [], []
    for (j, i), (px, py) in zip(corners_t, corners_s):
        xt, yt = (2 * j + 1) / W_out - 1, (2 * i + 1) / H_out - 1
        xs, ys = (2 * px + 1) / W - 1, (2 * py + 1) / H - 1  # inverse of px = ((xs + 1) W - 1) / 2
        A.append([xt, yt, 1, 0, 0, 0, -xt * xs, -yt * xs])  # a xt + b yt + c = xs (g xt + h yt + 1)
        rhs.append(xs)
        A.append([0, 0, 0, xt, yt, 1, -xt * ys, -yt * ys])
        rhs.append(ys)
    theta = np.linalg.solve(np.array(A), np.array(rhs))[None]  # (1, 8)
    grid, _ = projective_grid_forward(theta, (H_out, W_out))
    V, _ = bilinear_sample_forward(U, grid)
    for (j, i), (px, py) in zip(corners_t, corners_s):
        np.testing.assert_allclose(V[0, :, i, j], U[0, :, py, px], rtol=0, atol=1e-12)
    assert abs(theta[0, 6]) + abs(theta[0, 7]) > 0.05  # a real perspective, not an affine map


# ---------------------------------------------------------------------------------------------
# points at infinity


def test_horizon_inside_the_grid_raises():
    theta = np.tile(projective_identity(np.float64), (3, 1))
    theta[1, 6] = 1.5  # w = 1 + 1.5 x_t = -0.125 at x_t = -0.75: the horizon crosses the grid
    with pytest.raises(ValueError, match=r"theta\[1\] puts target points at or beyond the horizon \(denominator "
                       r"g x_t \+ h y_t \+ 1 = -0.125 <= min_denominator = 0.001\)"):
        projective_grid_forward(theta, (4, 4))


def test_min_denominator_follows_the_closed_form():
    """min w over the grid = 1 - |g| (1 - 1/W_out) - |h| (1 - 1/H_out) = 1 - 0.525 - 0.375 = 0.1 here."""
    theta = projective_identity(np.float64)[None].copy()
    theta[0, 6:] = [-0.6, 0.5]
    projective_grid_forward(theta, (4, 8), min_denominator=0.0999)
    with pytest.raises(ValueError, match=r"theta\[0\] puts target points .* = 0.1 <= min_denominator = 0.1001"):
        projective_grid_forward(theta, (4, 8), min_denominator=0.1001)


def test_near_horizon_needs_a_lower_min_denominator():
    """w = 5e-4 at the left column: refused by default (float32 would lose the position), allowed
    when asked; the points there lie ~2000 units from the image and sample 0."""
    theta = projective_identity(np.float64)[None].copy()
    theta[0, 6] = (1 - 5e-4) / 0.875  # out_hw (2, 8): x_t = -0.875 at the left column
    with pytest.raises(ValueError, match="at or beyond the horizon"):
        projective_grid_forward(theta, (2, 8))
    grid, cache = projective_grid_forward(theta, (2, 8), min_denominator=1e-4)
    assert np.all(np.isfinite(grid)) and np.abs(grid[0, :, 0, 0]).min() > 1e3
    V, _ = bilinear_sample_forward(np.ones((1, 1, 4, 4)), grid)
    assert np.all(V[0, 0, :, 0] == 0)
    assert np.all(np.isfinite(projective_grid_backward(np.ones_like(grid), cache)))


def test_horizon_itself_is_refused_even_with_zero_min_denominator():
    theta = projective_identity(np.float64)[None].copy()
    theta[0, 6] = 2.0  # out_hw (1, 2): x_t = -0.5, so w = 0 exactly
    with pytest.raises(ValueError, match=r"= 0 <= min_denominator = 0\)"):
        projective_grid_forward(theta, (1, 2), min_denominator=0)


def test_nan_theta_gives_nan_grid_without_error():
    theta = projective_identity(np.float64)[None].copy()
    theta[0, 7] = np.nan
    grid, _ = projective_grid_forward(theta, (2, 3))
    assert np.all(np.isnan(grid))


# ---------------------------------------------------------------------------------------------
# shapes, dtypes, errors


@pytest.mark.parametrize("out_hw", [(3, 7), (6, 2), (1, 1)])
def test_shapes_batch1_and_h_ne_w(rng, out_hw):
    theta = random_homographies(rng, 1)
    grid, cache = projective_grid_forward(theta, out_hw)
    assert grid.shape == (1,) + out_hw + (2,)
    assert projective_grid_backward(np.ones_like(grid), cache).shape == (1, 8)
    np.testing.assert_allclose(grid, projective_grid_naive(theta, out_hw), rtol=0, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_kept(rng, dtype):
    theta = random_homographies(rng, 2).astype(dtype)
    grid, cache = projective_grid_forward(theta, (3, 4))
    dtheta = projective_grid_backward(np.ones_like(grid), cache)
    assert grid.dtype == dtype and dtheta.dtype == dtype
    assert projective_identity(dtype).dtype == dtype
    assert affine_to_projective(np.zeros((1, 2, 3), dtype=dtype)).dtype == dtype
    if dtype == np.float32:  # float32 follows the float64 result to float32 rounding
        grid64, _ = projective_grid_forward(theta.astype(np.float64), (3, 4))
        np.testing.assert_allclose(grid, grid64, rtol=0, atol=1e-6)


def test_identity_warp_reproduces_the_image(rng):
    U = rng.standard_normal((2, 3, 5, 7))
    grid, _ = projective_grid_forward(np.tile(projective_identity(np.float64), (2, 1)), (5, 7))
    V, _ = bilinear_sample_forward(U, grid)
    np.testing.assert_allclose(V, U, rtol=0, atol=1e-12)


def test_errors(rng):
    theta = random_homographies(rng, 2)
    op = "projective_grid_forward: "
    with pytest.raises(ValueError, match=op + r"theta must be 2-D \(N, 8\) = \[a, b, c, d, e, f, g, h\].*got shape \(2, 3, 3\)"):
        projective_grid_forward(np.zeros((2, 3, 3)), (3, 3))
    with pytest.raises(ValueError, match=op + r"theta must have shape \(N, 8\) .*, got \(2, 9\)"):
        projective_grid_forward(np.zeros((2, 9)), (3, 3))
    with pytest.raises(TypeError, match=op + "theta must be float32 or float64, got dtype int64"):
        projective_grid_forward(theta.astype(np.int64), (3, 3))
    with pytest.raises(TypeError, match=op + "theta must be a NumPy or CuPy array, got list"):
        projective_grid_forward(theta.tolist(), (3, 3))
    with pytest.raises(ValueError, match=op + r"out_hw must be a pair \(H_out, W_out\) of ints >= 1, got \(0, 5\)"):
        projective_grid_forward(theta, (0, 5))
    with pytest.raises(ValueError, match=op + r"out_hw must be a pair"):
        projective_grid_forward(theta, (5,))
    with pytest.raises(TypeError, match=op + r"out_hw must be a pair \(H_out, W_out\) of ints >= 1, got \(2.5, 3\)"):
        projective_grid_forward(theta, (2.5, 3))
    for bad in (-1e-3, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=op + "min_denominator must be a finite number >= 0"):
            projective_grid_forward(theta, (3, 3), min_denominator=bad)
    for bad in ("0.1", True, None):
        with pytest.raises(TypeError, match=op + "min_denominator must be a finite number >= 0"):
            projective_grid_forward(theta, (3, 3), min_denominator=bad)
    grid, cache = projective_grid_forward(theta, (3, 4))
    with pytest.raises(ValueError, match=r"dgrid must have the forward output's shape \(2, 3, 4, 2\), got \(2, 2, 4, 2\)"):
        projective_grid_backward(grid[:, :2], cache)
    with pytest.raises(ValueError, match=r"affine_to_projective: theta must have shape \(N, 2, 3\), got \(2, 3, 3\)"):
        affine_to_projective(np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match=r"affine_to_projective: theta must be 3-D \(N, 2, 3\), got shape \(2, 8\)"):
        affine_to_projective(theta)
    with pytest.raises(TypeError, match="projective_identity: dtype must be float32 or float64, got int32"):
        projective_identity(np.int32)


def _cupy_or_skip():
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA GPU visible")
    except Exception as e:  # no driver / no device
        pytest.skip(f"no usable CUDA GPU ({type(e).__name__})")
    return cupy


@pytest.mark.gpu
def test_cupy_matches_numpy(rng):
    cupy = _cupy_or_skip()
    theta = random_homographies(rng, 2, perspective=0.4)
    grid, cache = projective_grid_forward(theta, (4, 7))
    dgrid = rng.standard_normal(grid.shape)
    dtheta = projective_grid_backward(dgrid, cache)
    grid_c, cache_c = projective_grid_forward(cupy.asarray(theta), (4, 7))
    dtheta_c = projective_grid_backward(cupy.asarray(dgrid), cache_c)
    assert isinstance(grid_c, cupy.ndarray) and isinstance(dtheta_c, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(grid_c), grid, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cupy.asnumpy(dtheta_c), dtheta, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="at or beyond the horizon"):
        bad = cupy.asarray(theta)
        bad[0, 6] = 3.0
        projective_grid_forward(bad, (4, 7))
