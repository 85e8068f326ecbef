"""Figures of training runs: validation curves, glimpse outlines on canvases (also of a trained
model: draw_model_glimpses), what single-digit transformers do (plot_transforms), theta statistics.

Every function draws onto its own matplotlib Figure (no pyplot, no global state) and saves a
PNG; it returns the path. Records are the dicts of a run's metrics.jsonl (minstn.train).

Shape legend: N canvases, T glimpse steps (LSTM-STN 4, FFN-STN 1), thetas (N, T, 2, 3),
glimpses (N, T, 1, h, w), canvases (N, 1, 100, 100).

Glimpse outlines: a glimpse samples the target square [-1, 1]^2 (normalised, align_corners=False);
its corners (x_t, y_t) go through theta to source points (x_s, y_s) = theta @ [x_t, y_t, 1] and
then to canvas pixels x = ((x_s + 1) * W - 1) / 2 (pixel centres at integers, as imshow draws
them), so the drawn quadrilateral is exactly the area the glimpse covers.
"""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from minstn.fileio import atomic_open

__all__ = ["plot_curves", "plot_grid_curves", "glimpse_corners", "projective_corners", "plot_glimpses", "model_outlines",
           "draw_model_glimpses", "plot_transforms", "plot_theta_stats", "STEP_COLOURS"]

#: one colour per glimpse step
STEP_COLOURS = ("tab:red", "tab:orange", "tab:green", "tab:blue", "tab:purple", "tab:brown")


def _save(fig: Figure, path: str) -> str:
    """Write the figure as a PNG, atomically (a killed run never leaves half a picture)."""
    with atomic_open(path, suffix=".png") as f:
        fig.savefig(f, dpi=100, format="png")   # (bbox_inches='tight' would draw everything twice)
    return path


def plot_curves(runs: dict, path: str) -> str:
    """Validation and training per-digit error per epoch for several runs.

    runs: {label: [record, ...]} with records from metrics.jsonl (partial-epoch records are
    drawn at their fractional epoch). Writes a PNG with two panels (validation, training).
    """
    fig = Figure(figsize=(11, 4))
    ax_val, ax_train = fig.subplots(1, 2)
    for i, (label, recs) in enumerate(sorted(runs.items())):
        if not recs:
            continue
        x = [r["epoch"] - 1 + r["steps"] / r["steps_per_epoch"] for r in recs]
        colour = f"C{i % 10}"
        ax_val.plot(x, [r["val_digit_error"] for r in recs], "o-", color=colour, label=label, ms=3)
        ax_train.plot(x, [r["train_digit_error"] for r in recs], "o-", color=colour, label=label, ms=3)
    for ax, what in ((ax_val, "validation"), (ax_train, "training (dropout on)")):
        ax.set_xlabel("epoch")
        ax.set_ylabel("per-digit error (%)")
        ax.set_title(f"{what} per-digit error")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    ax_val.legend(fontsize=8)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.9, wspace=0.25)
    return _save(fig, path)


def plot_grid_curves(groups: dict, path: str, title: str = "") -> str:
    """The learning curves of a grid's cells: groups {group: [records of each seed's metrics.jsonl]}.

    Two panels against the training images seen: the validation per-digit error (log scale, so
    that 90% and 2% both read) and the training per-digit error (dropout on). One colour per group,
    one line per seed, so the seeds' spread shows; the group is named once in the legend.
    """
    fig = Figure(figsize=(11, 4.2))
    ax_val, ax_train = fig.subplots(1, 2)
    for i, (group, runs) in enumerate(groups.items()):
        colour = f"C{i % 10}"
        for j, recs in enumerate(r for r in runs if r):
            done = [r for r in recs if "images_seen" in r]
            x = [r["images_seen"] / 1000 for r in done]
            label = group if j == 0 else None
            ax_val.plot(x, [max(r["val_digit_error"], 0.1) for r in done], "o-", color=colour, label=label, ms=2.5, lw=1)
            train = [(xi, r["train_digit_error"]) for xi, r in zip(x, done) if "train_digit_error" in r]
            if train:
                ax_train.plot(*zip(*train), "o-", color=colour, ms=2.5, lw=1)
    ax_val.set_yscale("log")
    for ax, what in ((ax_val, "validation per-digit error (%)"), (ax_train, "training per-digit error (%), dropout on")):
        ax.set_xlabel("training images seen (thousands)")
        ax.set_title(what, fontsize=10)
        ax.grid(alpha=0.3, which="both")
    ax_train.set_ylim(bottom=0)
    ax_val.legend(fontsize=7, ncol=2)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.86 if title else 0.9, wspace=0.2)
    return _save(fig, path)


def glimpse_corners(thetas, height: int, width: int) -> np.ndarray:
    """Canvas-pixel corners of each glimpse: thetas (N, T, 2, 3) -> (N, T, 4, 2) as (x, y) pixels,
    in the order top-left, top-right, bottom-right, bottom-left of the glimpse."""
    th = np.asarray(thetas, dtype=np.float64)
    target = np.array([[-1.0, -1.0, 1.0], [1.0, -1.0, 1.0], [1.0, 1.0, 1.0], [-1.0, 1.0, 1.0]])  # (4, 3) homogeneous
    src = np.einsum("ntij,kj->ntki", th, target)                                           # (N, T, 4, 2) normalised
    size = np.array([width, height], dtype=np.float64)
    return ((src + 1.0) * size - 1.0) / 2.0                                                # (N, T, 4, 2) pixels


def plot_glimpses(canvases, thetas, glimpses, path: str, labels=None, predictions=None, title: str = "",
                  corners=None) -> str:
    """A row per canvas: the canvas with one outline per glimpse step, then the T glimpses.

    canvases (N, 1, H, W), thetas (N, T, 2, 3), glimpses (N, T, 1, h, w); labels / predictions
    (N, P) optional, written above each canvas; corners (N, T, 4, 2) optional, the outlines' pixel
    corners when they are not glimpse_corners(thetas) (a projective glimpse: projective_corners).
    """
    canvases, glimpses = np.asarray(canvases), np.asarray(glimpses)
    n, t = glimpses.shape[:2]
    if corners is None:
        corners = glimpse_corners(thetas, canvases.shape[2], canvases.shape[3])   # (N, T, 4, 2)
    fig = Figure(figsize=(2.2 * (t + 1), 2.3 * n))
    axes = np.asarray(fig.subplots(n, t + 1, squeeze=False))
    for i in range(n):
        ax = axes[i, 0]
        ax.imshow(canvases[i, 0], cmap="gray", vmin=0, vmax=1)
        for s in range(t):
            quad = np.vstack([corners[i, s], corners[i, s, :1]])                   # closed outline (5, 2)
            width = max(0.8, 3.0 - 0.6 * s)   # earlier steps wider, so coinciding outlines stay visible
            ax.plot(quad[:, 0], quad[:, 1], "-", color=STEP_COLOURS[s % len(STEP_COLOURS)], lw=width)
        ax.set_xlim(-0.5, canvases.shape[3] - 0.5)
        ax.set_ylim(canvases.shape[2] - 0.5, -0.5)
        text = []
        if labels is not None:
            text.append("label " + "".join(str(int(v)) for v in labels[i]))
        if predictions is not None:
            text.append("pred " + "".join(str(int(v)) for v in predictions[i]))
        ax.set_title("  ".join(text), fontsize=8)
        for s in range(t):
            gax = axes[i, s + 1]
            gax.imshow(glimpses[i, s, 0], cmap="gray", vmin=0, vmax=1)
            for side in gax.spines.values():
                side.set_color(STEP_COLOURS[s % len(STEP_COLOURS)])
                side.set_linewidth(2)
            if i == 0:
                gax.set_title(f"glimpse {s + 1}", fontsize=8)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.92 if n > 2 else 0.85, wspace=0.08, hspace=0.25)
    return _save(fig, path)


def projective_corners(thetas, perspective, height: int, width: int) -> tuple:
    """Image-pixel corners of projective glimpses, and whether they outline them.

    thetas (N, T, 2, 3): the homography's first two rows [a, b, c], [d, e, f]; perspective
    (N, T, 2): its g, h. Returns (corners (N, T, 4, 2) as (x, y) pixels in the order top-left,
    top-right, bottom-right, bottom-left of the glimpse, ok (N, T) bool): ok where the denominator
    w is positive at the four corners, so that the quadrilateral through them is the glimpse's
    outline; where not ok the corners are meaningless (w near or below 0).

    Why: the denominator w = g x + h y + 1 is affine, so where it is positive at the four corners
    it is positive on the whole square, whose image is then the convex quadrilateral through the
    four mapped corners. Otherwise the grid crosses the horizon (w = 0) and the region has no
    finite outline (draw_model_glimpses then outlines the affine part alone).
    """
    th = np.asarray(thetas, dtype=np.float64)                                            # (N, T, 2, 3)
    gh = np.asarray(perspective, dtype=np.float64)                                       # (N, T, 2)
    target = np.array([[-1.0, -1.0, 1.0], [1.0, -1.0, 1.0], [1.0, 1.0, 1.0], [-1.0, 1.0, 1.0]])  # (4, 3)
    uv = np.einsum("ntij,kj->ntki", th, target)                                          # (N, T, 4, 2) numerators
    w = np.einsum("nti,ki->ntk", gh, target[:, :2]) + 1.0                                # (N, T, 4) denominators
    ok = (w > 0).all(axis=-1)                                                            # (N, T)
    src = uv / np.where(w > 0, w, 1.0)[..., None]                                        # (N, T, 4, 2) normalised
    size = np.array([width, height], dtype=np.float64)
    return ((src + 1.0) * size - 1.0) / 2.0, ok                                         # pixels, as glimpse_corners


def model_outlines(model, images) -> tuple:
    """Evaluation-mode glimpses of `model` (a model with a spatial transformer) on host images
    (N, 1, L, L), and their outlines: (model.attend's dict, corners (N, T, 4, 2) as image pixels,
    a note for the title: '' for an affine transformer). For a projective transformer the
    glimpses' quadrilaterals are outlined (projective_corners), the affine part alone where the
    grid crosses the horizon."""
    att = model.attend(images.astype(model.dtype, copy=False))
    H, W = images.shape[2], images.shape[3]
    corners = glimpse_corners(att["thetas"], H, W)                           # (N, T, 4, 2): the affine part
    note = ""
    if "perspective" in att:
        quads, ok = projective_corners(att["thetas"], att["perspective"], H, W)
        corners = np.where(ok[..., None, None], quads, corners)
        note = ("projective glimpses outlined" if ok.all() else
                f"outlines: the affine part only for {int((~ok).sum())} of {ok.size} glimpses (their grid crosses "
                "the projective horizon)")
    return att, corners, note


def draw_model_glimpses(model, images, labels, path: str, title: str = "") -> str:
    """The glimpse picture of `model` (a model with a spatial transformer) on host images
    (N, 1, L, L) and labels (N, P); written atomically to `path`. Returns the path. For a
    projective transformer the glimpses' quadrilaterals are outlined (projective_corners)."""
    images = images.astype(model.dtype, copy=False)
    att, corners, note = model_outlines(model, images)
    predictions = model.predict(images).argmax(axis=-1)                      # (N, P)
    if note:
        title = f"{title}; {note}" if title else note
    return plot_glimpses(images, att["thetas"], att["glimpses"], path, labels=labels, predictions=predictions,
                         title=title, corners=corners)


def plot_transforms(rows: list, path: str, title: str = "") -> str:
    """What single-digit transformers do, one model per row pair (as the STN paper's Table 1, right):
    the input images with the glimpse's outline above, the transformed images below.

    rows: [{'name': str, 'images': (n, 1, L, L), 'corners': (n, 4, 2) pixel corners of the outline,
    'glimpses': (n, 1, S, S)}], n the same in every row; L and S may differ between rows.
    """
    if not rows:
        raise ValueError("plot_transforms needs at least one row")
    n = rows[0]["images"].shape[0]
    if any(r["images"].shape[0] != n or r["glimpses"].shape[0] != n or r["corners"].shape != (n, 4, 2) for r in rows):
        raise ValueError("plot_transforms: every row needs n images, n glimpses and (n, 4, 2) corners, n the same")
    fig = Figure(figsize=(1.15 * n + 1.3, 2.3 * len(rows) + (0.4 if title else 0.1)))
    axes = np.asarray(fig.subplots(2 * len(rows), n, squeeze=False))
    for r, row in enumerate(rows):
        images, glimpses, corners = np.asarray(row["images"]), np.asarray(row["glimpses"]), np.asarray(row["corners"])
        L = images.shape[2]
        for i in range(n):
            ax, gax = axes[2 * r, i], axes[2 * r + 1, i]
            ax.imshow(images[i, 0], cmap="gray", vmin=0, vmax=1)
            quad = np.vstack([corners[i], corners[i, :1]])                         # closed outline (5, 2)
            ax.plot(quad[:, 0], quad[:, 1], "-", color=STEP_COLOURS[0], lw=1.5)
            ax.set_xlim(-0.5, L - 0.5)
            ax.set_ylim(L - 0.5, -0.5)
            gax.imshow(glimpses[i, 0], cmap="gray", vmin=0, vmax=1)
            for a in (ax, gax):
                a.set_xticks([])
                a.set_yticks([])
        axes[2 * r, 0].set_ylabel(f"{row['name']}\ninput", fontsize=8)
        axes[2 * r + 1, 0].set_ylabel("transformed", fontsize=8)
    height = fig.get_figheight()
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.08 / height, va="top")       # inches from the top edge
    fig.subplots_adjust(left=0.12, right=0.99, bottom=0.01, top=1 - (0.4 if title else 0.1) / height,
                        wspace=0.05, hspace=0.08)
    return _save(fig, path)


def plot_theta_stats(records: list, path: str, title: str = "") -> str:
    """Per epoch: theta spread across steps, each step's mean translation tx and ty, and scales sx, sy.

    records: metrics.jsonl records of an STN run (with theta_spread and theta_steps).
    """
    recs = [r for r in records if "theta_steps" in r]
    fig = Figure(figsize=(13, 3.6))
    ax_spread, ax_tx, ax_ty, ax_s = fig.subplots(1, 4)
    if recs:
        x = [r["epoch"] - 1 + r["steps"] / r["steps_per_epoch"] for r in recs]
        ax_spread.plot(x, [r["theta_spread"] for r in recs], "o-", ms=3, color="k")
        t = len(recs[0]["theta_steps"])
        for s in range(t):
            colour = STEP_COLOURS[s % len(STEP_COLOURS)]
            ax_tx.plot(x, [r["theta_steps"][s]["tx"] for r in recs], "o-", ms=3, color=colour, label=f"step {s + 1}")
            ax_ty.plot(x, [r["theta_steps"][s]["ty"] for r in recs], "o-", ms=3, color=colour)
            ax_s.plot(x, [r["theta_steps"][s]["sx"] for r in recs], "o-", ms=3, color=colour)
            ax_s.plot(x, [r["theta_steps"][s]["sy"] for r in recs], "x--", ms=3, color=colour)
        ax_tx.legend(fontsize=7)
    for ax, name in ((ax_spread, "theta spread over steps"), (ax_tx, "mean tx (glimpse centre x)"),
                     (ax_ty, "mean ty (glimpse centre y)"), (ax_s, "mean sx (o) and sy (x)")):
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.15, top=0.84, wspace=0.3)
    return _save(fig, path)
