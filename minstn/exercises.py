"""Checks for the tutorials' exercises: the learner writes an op's backward (or forward), and one
call says whether it is right.

    from minstn.exercises import check
    def my_conv2d_backward(dout, x, w, b, padding): ...
    check("conv2d_backward", my_conv2d_backward)        # prints PASS, or what is wrong; returns True / False

Each check runs the learner's function on small random float64 inputs (several shapes, edge cases
included) and compares it twice: with the package's own op (minstn.ops), and with centred finite
differences of the package's forward (minstn.gradcheck), so that a check never trusts only the
code it grades. Tolerance: relative error 1e-7 (the package ops agree with finite differences to
about 1e-9 here; a wrong formula is off by far more).

A function that still raises NotImplementedError is "not written yet". With the environment
variable MINSTN_EXERCISES_STRICT=1 (the tutorial tests set it), a failed check raises
ExerciseFailed instead of returning False.

Exercises (EXERCISES lists them, with the signature the learner writes):
"""
from __future__ import annotations

import os

import numpy as np

from minstn import ops
from minstn.gradcheck import numerical_gradient, rel_error

__all__ = ["check", "EXERCISES", "ExerciseFailed", "TOL"]

TOL = 1e-7


class ExerciseFailed(AssertionError):
    """A learner's function failed its check (raised only with MINSTN_EXERCISES_STRICT=1)."""


class _Wrong(Exception):
    """What is wrong with the learner's result, for the report."""


def _compare(what: str, got, want, tol: float = TOL) -> float:
    got = np.asarray(got, dtype=np.float64) if got is not None else None
    if got is None or got.shape != np.shape(want):
        raise _Wrong(f"{what}: expected an array of shape {np.shape(want)}, got "
                     f"{'None' if got is None else got.shape}")
    err = rel_error(got, want)
    if not err <= tol:
        raise _Wrong(f"{what}: relative error {err:.2e} (allowed {tol:.0e})")
    return err


def _tuple(result, n: int, what: str) -> tuple:
    if n == 1:
        return (result,)
    if not isinstance(result, tuple) or len(result) != n:
        raise _Wrong(f"{what} must return {n} arrays as a tuple, got {type(result).__name__}"
                     + (f" of {len(result)}" if isinstance(result, tuple) else ""))
    return result


# ------------------------------------------------------------------------------------- checks


def _conv2d_backward(fn, rng):
    errs = []
    for shape, k, padding in (((2, 3, 5, 6), 3, "same"), ((1, 2, 4, 4), 3, "valid"), ((2, 1, 5, 5), 1, 0)):
        x, w, b = rng.standard_normal(shape), rng.standard_normal((4, shape[1], k, k)), rng.standard_normal(4)
        out, cache = ops.conv2d_forward(x, w, b, padding)
        dout = rng.standard_normal(out.shape)
        got = _tuple(fn(dout, x, w, b, padding), 3, "conv2d_backward")
        want = ops.conv2d_backward(dout, cache)
        for name, g, r, arg in zip(("dx", "dw", "db"), got, want, ("x", "w", "b")):
            errs.append(_compare(f"{name} (padding {padding!r}) vs minstn.ops", g, r))
            args = {"x": x, "w": w, "b": b}

            def f(v, arg=arg):
                return ops.conv2d_forward(**{**args, arg: v}, padding=padding)[0]
            errs.append(_compare(f"{name} vs finite differences", g, numerical_gradient(f, args[arg], dout), 1e-6))
    return max(errs)


def _maxpool2d_backward(fn, rng):
    errs = []
    for shape in ((2, 3, 6, 6), (1, 2, 5, 7)):
        x = rng.permutation(np.prod(shape)).reshape(shape) / 10.0          # no ties: one winner per window
        out, cache = ops.maxpool2d_forward(x)
        dout = rng.standard_normal(out.shape)
        g = fn(dout, x)
        errs.append(_compare(f"dx {shape} vs minstn.ops", g, ops.maxpool2d_backward(dout, cache)))
        errs.append(_compare("dx vs finite differences", g,
                             numerical_gradient(lambda v: ops.maxpool2d_forward(v)[0], x, dout), 1e-6))
    return max(errs)


def _lstm_cell_backward(fn, rng):
    N, D, H = 3, 5, 4
    x, h, c = rng.standard_normal((N, D)), rng.standard_normal((N, H)), rng.standard_normal((N, H))
    Wx, Wh, b = 0.5 * rng.standard_normal((D, 4 * H)), 0.5 * rng.standard_normal((H, 4 * H)), 0.1 * rng.standard_normal(4 * H)
    h1, c1, cache = ops.lstm_cell_forward(x, h, c, Wx, Wh, b)
    dh, dc = rng.standard_normal(h1.shape), rng.standard_normal(c1.shape)
    got = _tuple(fn(dh, dc, x, h, c, Wx, Wh, b), 6, "lstm_cell_backward")
    want = ops.lstm_cell_backward(dh, dc, cache)
    args = {"x": x, "h_prev": h, "c_prev": c, "Wx": Wx, "Wh": Wh, "b": b}
    errs = []
    for name, g, r, arg in zip(("dx", "dh_prev", "dc_prev", "dWx", "dWh", "db"), got, want, args):
        errs.append(_compare(f"{name} vs minstn.ops", g, r))

        def f(v, arg=arg):
            h_, c_, _ = ops.lstm_cell_forward(**{**args, arg: v})
            return h_, c_
        errs.append(_compare(f"{name} vs finite differences", g, numerical_gradient(f, args[arg], (dh, dc)), 1e-6))
    return max(errs)


def _lstm_backward(fn, rng):
    T, N, D, H = 4, 2, 3, 4
    xs, h0, c0 = rng.standard_normal((T, N, D)), rng.standard_normal((N, H)), rng.standard_normal((N, H))
    Wx, Wh, b = 0.5 * rng.standard_normal((D, 4 * H)), 0.5 * rng.standard_normal((H, 4 * H)), 0.1 * rng.standard_normal(4 * H)
    hs, cache = ops.lstm_forward(xs, h0, c0, Wx, Wh, b)
    dhs = rng.standard_normal(hs.shape)
    dhs_before = dhs.copy()
    got = _tuple(fn(dhs, xs, h0, c0, Wx, Wh, b), 6, "lstm_backward")
    if not np.array_equal(dhs, dhs_before):
        raise _Wrong("dhs was modified in place; a backward must never change the gradient it is given")
    want = ops.lstm_backward(dhs, cache)
    args = {"xs": xs, "h0": h0, "c0": c0, "Wx": Wx, "Wh": Wh, "b": b}
    errs = []
    for name, g, r, arg in zip(("dxs", "dh0", "dc0", "dWx", "dWh", "db"), got, want, args):
        errs.append(_compare(f"{name} vs minstn.ops", g, r))

        def f(v, arg=arg):
            return ops.lstm_forward(**{**args, arg: v})[0]
        errs.append(_compare(f"{name} vs finite differences", g, numerical_gradient(f, args[arg], dhs), 1e-6))
    return max(errs)


def _affine_grid_backward(fn, rng):
    errs = []
    for out_hw in ((3, 4), (5, 5), (1, 6)):
        theta = rng.standard_normal((2, 2, 3))
        grid, cache = ops.affine_grid_forward(theta, out_hw)
        dgrid = rng.standard_normal(grid.shape)
        g = fn(dgrid, theta, out_hw)
        errs.append(_compare(f"dtheta {out_hw} vs minstn.ops", g, ops.affine_grid_backward(dgrid, cache)))
        errs.append(_compare("dtheta vs finite differences", g,
                             numerical_gradient(lambda v: ops.affine_grid_forward(v, out_hw)[0], theta, dgrid), 1e-6))
    return max(errs)


def _sampler_inputs(rng, shape=(2, 2, 5, 6), out=(4, 3)):
    """U and a grid whose points stay 0.05 pixel or more away from integer coordinates (the kinks),
    a third of them outside the image."""
    U = rng.standard_normal(shape)
    H, W = shape[2:]
    px = rng.uniform(-2.0, W + 1.0, size=(shape[0],) + out)
    py = rng.uniform(-2.0, H + 1.0, size=(shape[0],) + out)
    px = np.floor(px) + rng.uniform(0.05, 0.95, size=px.shape)
    py = np.floor(py) + rng.uniform(0.05, 0.95, size=py.shape)
    grid = np.stack([(2 * px + 1) / W - 1, (2 * py + 1) / H - 1], axis=-1)   # pixel -> normalised
    return U, grid


def _bilinear_sample_forward(fn, rng):
    errs = []
    for shape, out in (((2, 2, 5, 6), (4, 3)), ((1, 1, 4, 4), (4, 4))):
        U, grid = _sampler_inputs(rng, shape, out)
        errs.append(_compare(f"V {out} vs minstn.ops", fn(U, grid), ops.bilinear_sample_forward(U, grid)[0]))
        errs.append(_compare("V vs the loop reference", fn(U, grid), ops.bilinear_sample_forward_naive(U, grid)[0]))
    return max(errs)


def _bilinear_sample_backward(fn, rng):
    errs = []
    for shape, out in (((2, 2, 5, 6), (4, 3)), ((1, 1, 4, 4), (4, 4))):
        U, grid = _sampler_inputs(rng, shape, out)
        V, cache = ops.bilinear_sample_forward(U, grid)
        dV = rng.standard_normal(V.shape)
        got = _tuple(fn(dV, U, grid), 2, "bilinear_sample_backward")
        want = ops.bilinear_sample_backward(dV, cache)
        for name, g, r, arg in zip(("dU", "dgrid"), got, want, ("U", "grid")):
            errs.append(_compare(f"{name} vs minstn.ops", g, r))
            args = {"U": U, "grid": grid}

            def f(v, arg=arg):
                return ops.bilinear_sample_forward(**{**args, arg: v})[0]
            errs.append(_compare(f"{name} vs finite differences", g, numerical_gradient(f, args[arg], dV), 1e-6))
    return max(errs)


def _avgpool2d_backward(fn, rng):
    errs = []
    for shape, d in (((2, 2, 6, 6), 2), ((1, 1, 10, 7), 3), ((1, 2, 5, 5), 1)):
        x = rng.standard_normal(shape)
        out, cache = ops.avgpool2d_forward(x, d)
        dout = rng.standard_normal(out.shape)
        g = fn(dout, x, d)
        errs.append(_compare(f"dx (d={d}) vs minstn.ops", g, ops.avgpool2d_backward(dout, cache)))
        errs.append(_compare("dx vs finite differences", g,
                             numerical_gradient(lambda v: ops.avgpool2d_forward(v, d)[0], x, dout), 1e-6))
    return max(errs)


def _lstm_stn_backward(fn, rng, forward=None):
    """The capstone: `fn(dlogits, cache, params) -> grads` for the notebook's hand-built forward
    `forward(params, images, options) -> (logits, cache)`, held to minstn.models' own gradients."""
    from minstn.models import build_model

    if forward is None:
        raise _Wrong("pass forward=<your forward function>, the one whose cache your backward reads")
    model = build_model("lstm-stn", 4, dtype="float64", seed=1, hidden_size=8, dropout=0.0, regressor_std=0.05,
                        head_init="he")
    images = rng.random((2, 1, 100, 100))
    labels = rng.integers(0, 10, size=(2, 4))
    model.loss_and_grads(images, labels)
    logits, cache = forward(model.params, images, {**model.options, "downsample": model.downsample})
    _, dlogits = ops.softmax_cross_entropy(logits, labels)
    grads = fn(dlogits, cache, model.params)
    if not isinstance(grads, dict):
        raise _Wrong(f"lstm_stn_backward must return a dict {{parameter name: gradient}}, got {type(grads).__name__}")
    missing = sorted(set(model.params) - set(grads))
    if missing:
        raise _Wrong(f"no gradient for {missing}")
    return max(_compare(f"{k} vs minstn.models", grads[k], model.grads[k], 1e-8) for k in model.params)


#: name -> (the signature the learner writes, the check)
EXERCISES = {
    "conv2d_backward": ("conv2d_backward(dout, x, w, b, padding) -> (dx, dw, db)", _conv2d_backward),
    "maxpool2d_backward": ("maxpool2d_backward(dout, x) -> dx", _maxpool2d_backward),
    "lstm_cell_backward": ("lstm_cell_backward(dh, dc, x, h_prev, c_prev, Wx, Wh, b) -> (dx, dh_prev, dc_prev, dWx, dWh, db)",
                           _lstm_cell_backward),
    "lstm_backward": ("lstm_backward(dhs, xs, h0, c0, Wx, Wh, b) -> (dxs, dh0, dc0, dWx, dWh, db)", _lstm_backward),
    "affine_grid_backward": ("affine_grid_backward(dgrid, theta, out_hw) -> dtheta", _affine_grid_backward),
    "bilinear_sample_forward": ("bilinear_sample_forward(U, grid) -> V", _bilinear_sample_forward),
    "bilinear_sample_backward": ("bilinear_sample_backward(dV, U, grid) -> (dU, dgrid)", _bilinear_sample_backward),
    "avgpool2d_backward": ("avgpool2d_backward(dout, x, d) -> dx", _avgpool2d_backward),
    "lstm_stn_backward": ("lstm_stn_backward(dlogits, cache, params) -> {name: gradient}", _lstm_stn_backward),
}
__doc__ += "\n".join(f"    {sig}" for sig, _ in EXERCISES.values()) + "\n"


def check(name: str, fn, **context) -> bool:
    """Run exercise `name`'s check on the learner's function `fn`; print PASS or what is wrong.

    Returns True when it passes. context: extra arguments a check needs (the capstone's forward=).
    """
    if name not in EXERCISES:
        raise KeyError(f"no exercise {name!r}; the exercises are {', '.join(EXERCISES)}")
    signature, checker = EXERCISES[name]
    rng = np.random.default_rng(0)
    try:
        err = checker(fn, rng, **context)
    except NotImplementedError:
        return _report(name, False, f"not written yet: fill in {signature}")
    except _Wrong as e:
        return _report(name, False, str(e))
    except Exception as e:                                  # noqa: BLE001 - the learner's code raised
        return _report(name, False, f"your function raised {type(e).__name__}: {e}")
    return _report(name, True, f"largest relative error {err:.1e}")


def _report(name: str, ok: bool, detail: str) -> bool:
    print(f"{name}: {'PASS' if ok else 'FAIL'} ({detail})")
    if not ok and os.environ.get("MINSTN_EXERCISES_STRICT"):
        raise ExerciseFailed(f"{name}: {detail}")
    return ok
