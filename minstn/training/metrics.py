"""Error rates of a model, theta statistics, and a model rebuilt from its checkpoint.

    stats = evaluate_model(model, images, labels)      # {'digit_error', 'seq_error', 'position_error', 'loss', 'n'}
    model, meta = load_model("runs/lstm-stn-d2/checkpoint.npz")

Shape legend:
    N   canvases;  P = 4 digit positions;  K = 10 classes;  T = glimpse steps (LSTM-STN 4, FFN-STN 1)

Definitions (all errors are percentages, 0..100):
    digit error      wrong digits / (P * N)                     (the paper's "error rate")
    sequence error   canvases with at least one wrong digit / N
    position error   for each position p: wrong digits at p / N  (a list of P numbers)
    loss             mean softmax cross-entropy over N * P digits

Theta statistics (STN models) on a batch of canvases, thetas (N, T, 2, 3):
    theta_spread       mean over the batch of the standard deviation over the T steps,
                       averaged over the 6 entries of theta (0 when every step takes the same glimpse)
    theta_spread_elem  the same per entry, a 2x3 nested list
    theta_steps        for each step t the batch means of tx = theta[0,2], ty = theta[1,2]
                       (glimpse centre, normalised coordinates) and sx = theta[0,0], sy = theta[1,1]
                       (glimpse width and height as fractions of the canvas)
"""
from __future__ import annotations

import json
import math

import numpy as np

from minstn.backend import to_numpy
from minstn.training import checkpoint

__all__ = ["error_stats", "evaluate_model", "predict", "theta_stats", "localisation_stats", "load_model", "model_meta",
           "model_arrays", "json_dumps"]


def error_stats(logits, labels) -> dict:
    """logits (N, P, K), labels (N, P) ints -> {'loss', 'digit_error', 'seq_error', 'position_error', 'n'}."""
    logits = np.asarray(to_numpy(logits), dtype=np.float64)
    labels = np.asarray(to_numpy(labels))
    if logits.ndim != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(f"logits must be (N, P, K) and labels (N, P); got {logits.shape} and {labels.shape}")
    wrong = logits.argmax(axis=-1) != labels                                   # (N, P)
    shifted = logits - logits.max(axis=-1, keepdims=True)                      # (N, P, K)
    logp = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))       # (N, P, K)
    nll = -np.take_along_axis(logp, labels[..., None].astype(np.int64), axis=-1)[..., 0]  # (N, P)
    return {
        "loss": float(nll.mean()),
        "digit_error": 100.0 * float(wrong.mean()),
        "seq_error": 100.0 * float(wrong.any(axis=1).mean()),
        "position_error": [100.0 * float(e) for e in wrong.mean(axis=0)],
        "n": int(labels.shape[0]),
    }


def predict(model, images, batch_size: int = 256, bar=None, digits: int = 4) -> np.ndarray:
    """Evaluation-mode logits (N, P, 10) of `model` on host images (N, 1, S, S), as a host array,
    `batch_size` images at a time. bar: a progress bar (minstn.training.console.Bar) told of every
    batch, or None; digits: P, for the shape of an empty result."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    parts = []
    for i in range(0, images.shape[0], batch_size):
        parts.append(model.predict(images[i:i + batch_size], batch_size=batch_size))   # (B, P, 10) on the host
        if bar is not None:
            bar.step(min(batch_size, images.shape[0] - i))
    return np.concatenate(parts, axis=0) if parts else np.zeros((0, digits, 10))


def evaluate_model(model, images, labels, batch_size: int = 256, bar=None) -> dict:
    """Evaluation-mode error_stats of `model` on host arrays images (N, 1, 100, 100), labels (N, 4).
    bar: a progress bar (minstn.training.console.Bar) told of every batch, or None."""
    return error_stats(predict(model, images, batch_size, bar, digits=labels.shape[1]), labels)


def localisation_stats(thetas, boxes, side: int, wrong) -> dict:
    """Where an MNIST-sequence model's glimpses fall against the digits they are meant to read, and
    how its errors split between digits it saw whole and digits it did not.

    thetas (N, T, 2, 3): the affine transforms (T = P steps, step p reads digit p; or T = 1, one
    glimpse for all P digits, the FFN-STN); boxes (N, P, 4): each digit's ink box in pixels, (x0, y0,
    x1, y1) end-exclusive, as the generator writes them; side: the canvas side; wrong (N, P) bool.

    A glimpse covers theta [u, v, 1] for u, v in [-1, 1] (normalised coordinates, align_corners=False:
    pixel i spans [-1 + 2 i / side, -1 + 2 (i + 1) / side]). A digit is 'in view' when all four
    corners of its box lie in that parallelogram (|A^-1 (p - t)| <= 1 in both coordinates, A the
    2x2 part of theta and t its last column; a singular A sees no digit whole); the glimpse is
    'centred' when t, the image of the glimpse's centre, lies in the box.

    Returns lists over the P positions and the total over all digits ('all'): 'in_view' and
    'centred' (% of digits), 'error_in_view' and 'error_not_in_view' (per-digit error % among the
    digits in view and among the rest; None where there are none), 'n_not_in_view' (digits)."""
    th = np.asarray(to_numpy(thetas), dtype=np.float64)
    bx = np.asarray(boxes, dtype=np.float64)
    wrong = np.asarray(to_numpy(wrong), dtype=bool)
    N, P = wrong.shape
    if th.ndim != 4 or th.shape[0] != N or th.shape[1] not in (1, P) or th.shape[2:] != (2, 3):
        raise ValueError(f"thetas must be (N, P or 1, 2, 3) with N = {N}, P = {P}; got {th.shape}")
    if bx.shape != (N, P, 4):
        raise ValueError(f"boxes must be (N, P, 4) = ({N}, {P}, 4), got {bx.shape}")
    th = np.broadcast_to(th, (N, P, 2, 3))
    a, b, c, d = th[..., 0, 0], th[..., 0, 1], th[..., 1, 0], th[..., 1, 1]          # (N, P) each
    t = th[..., :, 2]                                                                 # (N, P, 2)
    det = a * d - b * c
    ok = np.abs(det) > 1e-12
    safe = np.where(ok, det, 1.0)
    inv = np.stack([np.stack([d, -b], -1), np.stack([-c, a], -1)], -2) / safe[..., None, None]   # (N, P, 2, 2)
    norm = -1.0 + 2.0 * bx / side                                                     # box edges, normalised
    x0, y0, x1, y1 = norm[..., 0], norm[..., 1], norm[..., 2], norm[..., 3]
    corners = np.stack([np.stack([x0, y0], -1), np.stack([x1, y0], -1),
                        np.stack([x1, y1], -1), np.stack([x0, y1], -1)], -2)          # (N, P, 4, 2)
    uv = np.einsum("npij,npkj->npki", inv, corners - t[..., None, :])                 # (N, P, 4, 2)
    in_view = ok & (np.abs(uv) <= 1.0 + 1e-9).all(axis=(-1, -2))                      # (N, P)
    centred = (t[..., 0] >= x0) & (t[..., 0] <= x1) & (t[..., 1] >= y0) & (t[..., 1] <= y1)

    def summary(axis):          # axis 0: per position, (P,) arrays; None: over all digits, scalars
        n_in, n_out = in_view.sum(axis=axis), (~in_view).sum(axis=axis)
        with np.errstate(invalid="ignore", divide="ignore"):
            return {"in_view": 100.0 * in_view.mean(axis=axis), "centred": 100.0 * centred.mean(axis=axis),
                    "error_in_view": 100.0 * (wrong & in_view).sum(axis=axis) / n_in,
                    "error_not_in_view": 100.0 * (wrong & ~in_view).sum(axis=axis) / n_out,
                    "n_not_in_view": n_out}

    def plain(v, key):          # JSON-ready: ints, floats, None for an error among no digits
        if key == "n_not_in_view":
            return int(v)
        return None if not np.isfinite(v) else float(v)

    per, total = summary(0), summary(None)
    out = {key: [plain(v, key) for v in per[key]] for key in per}
    out.update({f"{key}_all": plain(total[key], key) for key in total})
    return out


def theta_stats(thetas, side: int | None = None, perspective=None, grid: int | None = None) -> dict:
    """thetas (N, T, 2, 3) -> theta_spread, theta_spread_elem (2x3), theta_steps [{tx, ty, sx, sy}] * T;
    with the image's side also theta_off_canvas, off_canvas(thetas, side, perspective, grid) as a list."""
    th = np.asarray(to_numpy(thetas), dtype=np.float64)
    if th.ndim != 4 or th.shape[2:] != (2, 3):
        raise ValueError(f"thetas must be (N, T, 2, 3), got {th.shape}")
    spread_elem = th.std(axis=1).mean(axis=0)                                 # (2, 3)
    means = th.mean(axis=0)                                                   # (T, 2, 3)
    steps = [{"tx": float(m[0, 2]), "ty": float(m[1, 2]), "sx": float(m[0, 0]), "sy": float(m[1, 1])} for m in means]
    stats = {"theta_spread": float(spread_elem.mean()), "theta_spread_elem": spread_elem.tolist(), "theta_steps": steps}
    if side is not None:
        stats["theta_off_canvas"] = off_canvas(th, side, perspective, grid).tolist()
    return stats


def attention_stats(model, images, batch_size: int = 256) -> dict:
    """theta_stats of an STN model's transforms of `images`, with theta_off_canvas measured on its
    own image side and sample grid (the MNIST-sequence models' grid_side, else the image side)."""
    seen = model.attend(images, batch_size=batch_size)
    grid = getattr(model, "grid_side", model.image_side)
    return theta_stats(seen["thetas"], model.image_side, seen.get("perspective"), grid)


def off_canvas(thetas, side: int, perspective=None, grid: int | None = None) -> np.ndarray:
    """The share of glimpses, per step, that read nothing of a side x side image: thetas (N, T, 2, 3)
    (with `perspective` (N, T, 2), the g, h of a homography) -> (T,) in [0, 1].

    The bilinear sampler gives a pixel weight only to sample points strictly inside the square
    (-e, e)^2, e = 1 + 1/side (half a pixel beyond the image's edge; a pixel is 2/side wide).
    A glimpse's sample points lie in the quadrilateral spanned by the grid's corner points (u, v) =
    (+-c, +-c), c = 1 - 1/grid for a grid x grid sample grid (align_corners=False; c = 1 without
    `grid`, which can only count fewer glimpses), mapped to (x, y) = theta [u, v, 1] (divided by
    g u + h v + 1 for a homography). Where that quadrilateral and the square are apart (a line
    separates them: one of the square's two axes or one of the quadrilateral's four edge normals,
    the separating axis test for convex polygons), the glimpse samples only the zero padding: its
    output is zero and no gradient reaches theta, so a transformer that has moved every glimpse there
    cannot come back."""
    th = np.asarray(to_numpy(thetas), dtype=np.float64)                       # (N, T, 2, 3)
    c = 1.0 - 1.0 / grid if grid else 1.0
    corners = c * np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])   # (4, 2) (u, v), in order round the grid
    xy = np.einsum("ntij,kj->ntki", th, np.concatenate([corners, np.ones((4, 1))], axis=1))   # (N, T, 4, 2)
    if perspective is not None:
        g = np.asarray(to_numpy(perspective), dtype=np.float64)               # (N, T, 2)
        xy = xy / (np.einsum("ntj,kj->ntk", g, corners) + 1.0)[..., None]
    edges = np.roll(xy, -1, axis=2) - xy                                      # (N, T, 4, 2)
    normals = np.stack([-edges[..., 1], edges[..., 0]], axis=-1)              # (N, T, 4, 2)
    axes = np.concatenate([np.broadcast_to(np.eye(2), xy.shape[:2] + (2, 2)), normals], axis=2)   # (N, T, 6, 2)
    quad = np.einsum("ntad,ntkd->ntak", axes, xy)                             # (N, T, 6, 4) the corners projected
    reach = (1.0 + 1.0 / side) * np.abs(axes).sum(axis=-1)                    # (N, T, 6) the square projected: [-reach, reach]
    apart = (quad.min(axis=-1) >= reach) | (quad.max(axis=-1) <= -reach)      # (N, T, 6)
    return apart.any(axis=-1).mean(axis=0)


def json_dumps(obj) -> str:
    """json.dumps that writes NaN and infinities as null (strict JSON has no NaN): a model that
    diverged still gives output any JSON reader accepts."""
    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x
    return json.dumps(clean(obj), allow_nan=False)


def model_meta(model) -> dict:
    """What load_model needs to rebuild `model`: name, downsample, options, dtype."""
    return {"name": model.name, "downsample": model.downsample, "options": dict(model.options), "dtype": str(model.dtype)}


def model_arrays(arrays: dict) -> dict:
    """The model parameters among a checkpoint's arrays, {name: array} (their 'param/' prefix removed)."""
    return {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}


def load_model(path, device="cpu"):
    """Rebuild the model saved in a checkpoint (DIR/checkpoint.npz or DIR/last.npz) on `device`.

    Returns (model, meta). Raises checkpoint.CheckpointError for a bad file.
    """
    from minstn.models import build_model

    arrays, meta = checkpoint.load(path)
    info = meta.get("model")
    if not isinstance(info, dict) or "name" not in info:
        raise checkpoint.CheckpointError(f"{path!r} is a minstn checkpoint without a model description (not written by minstn.train)")
    model = build_model(info["name"], info["downsample"], dtype=info["dtype"], device=device, seed=0, **info["options"])
    model.load_state(model_arrays(arrays))
    return model, meta
