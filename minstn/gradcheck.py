"""Finite-difference gradient checks: is a hand-written backward the derivative of its forward?

The idea. For an op y = f(x) and ANY fixed upstream gradient dout (the same shape as y), the
backward pass must return the gradient of the scalar

    L(x) = sum(f(x) * dout)

with respect to x. We estimate that gradient one element at a time with centred differences,

    dL/dx[i] ~ (L(x + h e_i) - L(x - h e_i)) / (2h),

and compare. A random dout (not all ones) makes every output element matter with a different
weight, so a backward that mixes up two output elements is caught.

Why float64 and h = 1e-5. The truncation error of a centred difference is O(h^2 * f''' / 6)
~ 2e-11, and the rounding error is O(eps * |y| / h) ~ 2e-11 with eps = 2.2e-16, so h = 1e-5
balances the two (h = 1e-6 makes rounding ten times larger: an LSTM weight gradient of size
1.6e-5 then showed a relative error of 1.1e-6, against 1e-7 with h = 1e-5). We difference the
OUTPUTS, sum((f(x+h) - f(x-h)) * dout), rather than two large sums, so only the outputs that
actually depend on x[i] contribute rounding error. Together this gives relative errors near
1e-10..1e-8 for smooth ops; the tests ask for <= 1e-6. In float32 (eps = 1.2e-7) the same check
could not get better than about 1e-2, which is why gradient checks always run in float64.

Relative error. For an analytic a and numerical n, element by element,

    rel = |a - n| / max(|a| + |n|, tiny)

and the check reports the maximum over all elements. `tiny` (default 1e-12) keeps 0 / 0 at 0
where both gradients vanish (pixels nobody samples, ReLU below 0, max-pool losers), but is
small enough not to hide a real difference.

Kinks. max, ReLU, and the bilinear kernel max(0, 1 - |x|) are not differentiable everywhere.
A probe x +- h that crosses a kink gives a meaningless finite difference, so tests keep inputs
at least ~1e-2 away from ties, from 0 (ReLU), and from integer sample coordinates.

Usage:

    from minstn.gradcheck import check_gradients
    from minstn.ops import conv2d_forward, conv2d_backward
    errs = check_gradients(conv2d_forward, conv2d_backward,
                           {"x": x, "w": w, "b": b}, static={"padding": 1})
    # errs == {'x': 3e-10, 'w': 5e-10, 'b': 1e-11}

`inputs` is an ordered dict, in the order the backward returns the gradients; `static` holds
the forward's other keyword arguments (padding, d, out_hw, ...), which are not differentiated.
"""
from __future__ import annotations

import numpy as np

__all__ = ["rel_error", "numerical_gradient", "check_gradients", "check_model_gradients", "GradientCheckError"]


class GradientCheckError(ValueError):
    """The inputs to a gradient check are not usable (wrong dtype, shape or structure)."""


def rel_error(a, b, tiny: float = 1e-12) -> float:
    """max over elements of |a - b| / max(|a| + |b|, tiny); 0.0 for empty arrays."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise GradientCheckError(f"rel_error: shapes differ, {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(a) + np.abs(b), tiny)))


def _as_outputs(result):
    """A forward result (an array, or a tuple of arrays) as a tuple of arrays."""
    if isinstance(result, tuple):
        return result
    return (result,)


def numerical_gradient(f, x, dout=None, h: float = 1e-5):
    """Centred-difference gradient of sum(f(x) * dout) with respect to x (float64).

    f: a function of one array returning an array, or a tuple of arrays (then dout is a tuple
       of the same shapes), or a scalar (then leave dout None).
    x: the point, a float64 array; it is copied, never modified.
    Returns an array of x's shape.
    """
    x = np.asarray(x)
    if x.dtype != np.float64:
        raise GradientCheckError(
            f"numerical_gradient: x must be float64 (float32 rounding swamps a finite difference), got {x.dtype}"
        )
    douts = None if dout is None else _as_outputs(dout)
    xc = x.copy()
    grad = np.zeros_like(xc)
    flat = xc.reshape(-1)  # a view: writing flat[i] moves xc
    gflat = grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        plus = [np.array(o, dtype=np.float64) for o in _as_outputs(f(xc))]  # copies: an output may alias x
        flat[i] = old - h
        minus = [np.array(o, dtype=np.float64) for o in _as_outputs(f(xc))]
        flat[i] = old
        if douts is None:
            diff = float(plus[0]) - float(minus[0])
        else:
            diff = 0.0
            for p, m, d in zip(plus, minus, douts):
                diff += float(np.sum((p - m) * d))  # difference the outputs first
        gflat[i] = diff / (2 * h)
    return grad


def check_gradients(forward, backward, inputs: dict, static: dict | None = None, douts=None, rng=None, h: float = 1e-5,
                    tiny: float = 1e-12):
    """Compare backward's gradients with centred differences; return {name: max relative error}.

    forward(**inputs, **static) must return (out, cache) or (out1, out2, ..., cache).
    backward(dout, cache) (or backward(dout1, dout2, ..., cache)) must return the gradients of
    `inputs` in the dict's order (a single array when there is one input).
    douts: the upstream gradients (one per output); random normal from `rng` when None.
    tiny: rel_error's floor of |a| + |n| (an element below it is held to an absolute error of
    tiny * the tolerance instead); raise it for an op whose outputs are many and whose gradients
    span orders of magnitude, where the difference quotient's rounding noise, not the backward,
    would decide the relative error of the smallest elements.
    All inputs must be float64.
    """
    static = {} if static is None else dict(static)
    if not inputs:
        raise GradientCheckError("check_gradients: inputs is empty; pass {name: float64 array} to differentiate")
    for name, a in inputs.items():
        if not isinstance(a, np.ndarray) or a.dtype != np.float64:
            raise GradientCheckError(
                f"check_gradients: input {name!r} must be a float64 NumPy array, got "
                f"{getattr(a, 'dtype', type(a).__name__)}; gradient checks need float64"
            )
    rng = np.random.default_rng(0) if rng is None else rng
    result = forward(**inputs, **static)
    if not isinstance(result, tuple) or len(result) < 2:
        raise GradientCheckError("check_gradients: forward must return (out, ..., cache)")
    outs, cache = result[:-1], result[-1]
    if douts is None:
        douts = tuple(rng.standard_normal(np.shape(o)) for o in outs)
    douts = _as_outputs(douts)
    if len(douts) != len(outs):
        raise GradientCheckError(f"check_gradients: forward has {len(outs)} outputs but {len(douts)} douts were given")
    grads = backward(*douts, cache)
    if not isinstance(grads, tuple):
        grads = (grads,)
    if len(grads) != len(inputs):
        raise GradientCheckError(
            f"check_gradients: backward returned {len(grads)} gradients for {len(inputs)} inputs {list(inputs)}"
        )
    errors = {}
    for (name, x), g in zip(inputs.items(), grads):
        if np.shape(g) != x.shape:
            raise GradientCheckError(f"check_gradients: gradient of {name!r} has shape {np.shape(g)}, expected {x.shape}")

        def f(xv, name=name):
            args = dict(inputs)
            args[name] = xv
            return forward(**args, **static)[:-1]

        num = numerical_gradient(f, x, douts, h=h)
        errors[name] = rel_error(g, num, tiny)
    return errors


# --------------------------------------------------------------------------------- whole models

#: finite-difference steps of check_model_gradients, by what a parameter moves (reasons below)
H_WEIGHT, H_LOC, H_REG = 1e-6, 1e-7, 1e-8


def _step(model, name: str) -> float:
    """The probe step of a parameter: the regressor moves theta directly (1e-8); the rest of the
    'loc' group, and a weight a tied model shares between its localisation and classification
    paths (model.shared), moves theta and with it every sample point, and a bias moves every unit
    of its channel (1e-7); a classifier weight moves little (1e-6). Smaller steps cross fewer kinks
    (ReLU, max-pool ties, integer sample coordinates); the round-off grows like 1e-16 / h."""
    if name.startswith("reg."):
        return H_REG
    loc_path = model.groups[name] == "loc" or name in getattr(model, "shared", ())
    return H_LOC if loc_path or name.endswith(".b") else H_WEIGHT


def check_model_gradients(model, images, labels, seed: int = 7, n_elem: int = 2, names=None, tol: float = 1e-6) -> dict:
    """{parameter: max relative error} between model.grads and centred differences of the loss.

    The loss is the model's mean softmax cross-entropy in training mode, its dropout masks drawn
    from np.random.default_rng(seed) at every evaluation (the same masks each time). Probes
    n_elem random elements of every parameter (or of those in `names`), chosen among those whose
    gradient is not small (|g| >= 0.3 max |g| of that parameter), so that the relative error
    measures the gradient and not the loss's round-off. A probe that misses `tol` is repeated
    once with a 10x smaller step: a kink inside [p - h, p + h] spoils one step but rarely both,
    while a wrong gradient fails at every step. Use float64 models.
    """
    from minstn import ops

    def loss():
        logits, _ = model.forward(images, train=True, rng=np.random.default_rng(seed))
        return ops.softmax_cross_entropy(logits, model.device.asarray(labels))[0]

    model.loss_and_grads(images, labels, rng=np.random.default_rng(seed))
    grads = {k: np.asarray(v).copy() for k, v in model.grads.items()}
    pick = np.random.default_rng(1)
    errors = {}
    for name, p in model.params.items():
        if names is not None and name not in names:
            continue
        g, h = grads[name], _step(model, name)
        big = np.flatnonzero(np.abs(g) >= 0.3 * np.abs(g).max()) if np.abs(g).max() > 0 else np.arange(g.size)
        errs = []
        for idx in pick.choice(big, size=min(n_elem, big.size), replace=False):
            i = np.unravel_index(idx, p.shape)
            old = p[i]
            err = np.inf
            for step in (h, h / 10):
                p[i] = old + step
                lp = loss()
                p[i] = old - step
                lm = loss()
                p[i] = old
                err = min(err, rel_error((float(lp) - float(lm)) / (2 * step), float(g[i])))
                if err <= tol:
                    break
            errs.append(err)
        errors[name] = max(errs)
    return errors
