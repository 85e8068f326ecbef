"""recurrent_thetas: the recurrent transformer's T steps (a cell, its theta regressed and fed back).
Gradient checks of every input and parameter for the three cells, with and without the fed-back
theta and the per-step bias; the loop against the ops it is made of; clear errors.

Tolerance: float64 centred differences, relative error <= 1e-6, as the cells' own checks.
Weights are scaled by 0.5 so that the gates stay away from saturation; the regressor's weights
too, so that the fed-back theta matters (the default model's 1e-3 would make its share of the
gradient a ratio of rounding noise). The gradients of one array span orders of magnitude (h_0 = 0,
so Wh's come from the later steps only; the largest are of order 1), and the difference
quotient's rounding noise is ~eps * (the T * N * 6 outputs, of order 1) / 2h ~ 5e-11 whatever the
element: an element whose |a| + |n| is below TINY = 1e-3 is therefore held to an absolute error of
TINY * 1e-6 = 1e-9 (twenty times that noise) instead of a relative one.
"""
import numpy as np
import pytest

from minstn.gradcheck import check_gradients
from minstn.ops import linear_forward, lstm_cell_forward
from minstn.ops.thetas import CELL_PARAMS, recurrent_thetas_backward, recurrent_thetas_forward

TOL = 1e-6
TINY = 1e-3
GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def _inputs(rng, cell, N, F, H, T, feedback=True, step_bias=True, scale=0.5):
    """{name: float64 array} in the backward's order (feats, the cell's weights, Wr, br, step_b)."""
    E, g = F + 6 if feedback else F, GATES[cell]
    shapes = {"Wx": (E, g * H), "Wh": (H, g * H), "b": (g * H,), "bx": (g * H,), "bh": (g * H,)}
    inputs = {"feats": rng.standard_normal((N, F))}
    inputs.update({k: scale * rng.standard_normal(shapes[k]) for k in CELL_PARAMS[cell]})
    inputs.update(Wr=scale * rng.standard_normal((H, 6)), br=rng.standard_normal(6))
    if step_bias:
        inputs["step_b"] = 0.3 * rng.standard_normal((T, 6))
    return inputs


def _flat_pair(cell, theta0, T, feedback):
    """forward(**inputs) and backward(dthetas, cache) with one argument per array, for check_gradients."""
    names = CELL_PARAMS[cell]

    def forward(feats, Wr, br, step_b=None, **weights):
        return recurrent_thetas_forward(feats, theta0, tuple(weights[k] for k in names), Wr, br, step_b,
                                        steps=T, cell=cell, feedback=feedback)

    def backward(dthetas, cache):
        dfeats, dcell, dWr, dbr, dstep = recurrent_thetas_backward(dthetas, cache)
        return (dfeats, *dcell, dWr, dbr) + ((dstep,) if dstep is not None else ())
    return forward, backward


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("feedback, step_bias, T", [(True, True, 3), (False, True, 2), (True, False, 1)])
def test_recurrent_thetas_gradients_every_input(rng, cell, feedback, step_bias, T):
    N, F, H = 2, 3, 4
    inputs = _inputs(rng, cell, N, F, H, T, feedback, step_bias)
    forward, backward = _flat_pair(cell, np.array([0.5, 0.1, -0.2, 0.0, 0.5, 0.1]), T, feedback)
    errs = check_gradients(forward, backward, inputs, rng=rng, tiny=TINY)
    assert list(errs) == list(inputs)
    assert max(errs.values()) <= TOL, errs


def test_recurrent_thetas_is_the_loop_of_its_ops(rng):
    """The LSTM with feedback, by hand: the cell op, the linear op, the step bias, theta fed back."""
    N, F, H, T = 3, 5, 4, 4
    p = _inputs(rng, "lstm", N, F, H, T)
    theta0 = np.array([0.5, 0.0, 0.0, 0.0, 0.5, 0.0])
    thetas, cache = recurrent_thetas_forward(p["feats"], theta0, (p["Wx"], p["Wh"], p["b"]), p["Wr"], p["br"],
                                             p["step_b"], steps=T)
    h, c, theta = np.zeros((N, H)), np.zeros((N, H)), np.tile(theta0, (N, 1))
    for t in range(T):
        h, c, _ = lstm_cell_forward(np.concatenate([p["feats"], theta], axis=1), h, c, p["Wx"], p["Wh"], p["b"])
        theta = linear_forward(h, p["Wr"], p["br"])[0] + p["step_b"][t]
        np.testing.assert_array_equal(thetas[:, t], theta)
    dthetas = rng.standard_normal(thetas.shape)
    dthetas_copy = dthetas.copy()
    grads = recurrent_thetas_backward(dthetas, cache)
    np.testing.assert_array_equal(dthetas, dthetas_copy)              # the upstream gradient is not touched
    assert [g.shape for g in grads[1]] == [(F + 6, 4 * H), (H, 4 * H), (4 * H,)]
    assert grads[0].shape == (N, F) and grads[2].shape == (H, 6) and grads[4].shape == (T, 6)
    thetas32, cache32 = recurrent_thetas_forward(*(a.astype(np.float32) for a in (p["feats"], theta0)),
                                                 tuple(p[k].astype(np.float32) for k in ("Wx", "Wh", "b")),
                                                 p["Wr"].astype(np.float32), p["br"].astype(np.float32), None, steps=T)
    g32 = recurrent_thetas_backward(dthetas.astype(np.float32), cache32)
    assert thetas32.dtype == g32[0].dtype == g32[2].dtype == np.float32 and g32[4] is None
    assert all(g.dtype == np.float32 for g in g32[1])


def test_recurrent_thetas_errors(rng):
    N, F, H, T = 2, 3, 4, 2
    p = _inputs(rng, "lstm", N, F, H, T)
    theta0 = np.zeros(6)
    args = (p["feats"], theta0, (p["Wx"], p["Wh"], p["b"]), p["Wr"], p["br"], p["step_b"])
    with pytest.raises(ValueError, match="cell must be one of"):
        recurrent_thetas_forward(*args, steps=T, cell="transformer")
    with pytest.raises(TypeError, match="cell_params must be a tuple of the gru cell's 4 arrays"):
        recurrent_thetas_forward(*args, steps=T, cell="gru")
    with pytest.raises(ValueError, match=r"Wx must have E = F = 3 rows"):
        recurrent_thetas_forward(*args, steps=T, feedback=False)
    with pytest.raises(ValueError, match=r"step_b must be \(T, 6\) = \(3, 6\)"):
        recurrent_thetas_forward(*args, steps=3)
    with pytest.raises(TypeError, match="dtype"):
        recurrent_thetas_forward(p["feats"].astype(np.float32), *args[1:], steps=T)
    thetas, cache = recurrent_thetas_forward(*args, steps=T)
    with pytest.raises(ValueError, match="dthetas must have the forward output's shape"):
        recurrent_thetas_backward(np.ones((N, T + 1, 6)), cache)
    with pytest.raises(TypeError, match="cache is not from recurrent_thetas_forward"):
        recurrent_thetas_backward(np.ones((N, T, 6)), ("linear", None, None))
