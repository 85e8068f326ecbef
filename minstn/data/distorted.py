"""Single-digit benchmarks: distorted MNIST (R, RTS, P, E, TC) and cluttered MNIST 60x60.

The tasks of two papers:

    R, RTS, P, E, TC  Jaderberg et al., "Spatial Transformer Networks", Table 1:
                      rotated, rotated-translated-scaled, projective, elastic, and translated
                      and cluttered MNIST.
    cluttered         Cirstea & Likforman-Sulem, "Tied Spatial Transformer Networks",
                      section 3: the cluttered MNIST file mnist_cluttered_60x60_6distortions
                      (Sønderby 2015a): one digit in a 60x60 image with clutter.

Neither paper's text at hand gives the generators' parameters (the STN paper's appendix is not
among them; the TSTN paper names the file and says only "random translation, scale, rotation, and
clutter"), so the settings below are this module's choices, each with its reason:

    task       side  what is random                                      DistortionOptions
    R          28    angle uniform in [-90, 90] degrees about the        angle=90
                     centre of the 28x28 image
    RTS        42    angle in [-45, 45], scale in [0.7, 1.2], position   size=42, angle=45,
                     uniform over all places where the ink is inside     scale_min=0.7, scale_max=1.2,
                                                                         translate=True
    P          28    each corner of the 28x28 square moved by a          corner_std=0.1,
                     Gaussian offset per coordinate, std 0.1 of the      corner_clip=0.2
                     side (2.8 px), clipped to +-0.2 of the side
                     (5.6 px); the homography that maps the corners
    E          28    elastic field: uniform [-1, 1] noise per pixel and  elastic_alpha=34,
                     coordinate, smoothed by a Gaussian of sigma 4 px,   elastic_sigma=4
                     times alpha 34 px (Simard, Steinkraus & Platt 2003,
                     the classic MNIST setting; about 1.4 px rms)
    TC         60    position (whole pixels) with the ink inside; 6      size=60, translate=True,
                     clutter patches of 6x6 from other digits            whole_pixels=True, clutter=6,
                                                                         clutter_size=6
    cluttered  60    as TC with 8x8 patches: the file 002 used is        ... clutter_size=8
                     named "60x60, 6 distortions", and the DeepMind
                     mnist-cluttered generator such files come from cuts
                     8x8 distractors and adds them; rotation and scale
                     (which 002's text mentions) are off by default and
                     available through angle / scale_min / scale_max

Why these numbers: P's clip keeps every corner within 0.2 of the side of its place, below the
0.25 at which the displaced quadrilateral could fold (a corner crossing the diagonal of its two
neighbours), so every P image is a proper, unfolded view of the digit; std 0.1 with a 2-sigma
clip leaves offsets mostly Gaussian (4.6% clipped). E: alpha 34, sigma 4 are the published
values for MNIST elastic distortion. Clutter is combined by *adding and clipping to [0, 1]*,
as the DeepMind generator does (clutter_combine='max' gives the MNIST-sequence data's rule);
either way clutter never erases digit ink. A clutter patch is a window at a uniformly random
place in a uniformly random *other* pool digit (never the canvas's own digit); like the DeepMind
generator's distractors it may be nearly blank.

Shape legend:
    N        images (a block of them, at most BLOCK, inside the generator)
    S        output side (28, 42 or 60 by default)
    28       MNIST digit side
    B        clutter patches per image, C their side
    P        digits in the split's pool
    L = S + 2 rho   side of the elastic noise grid, rho = ceil(3 sigma) the Gaussian's radius

Coordinates: pixel (row y, column x) has its centre at (x, y); x right, y down. The digit's
centre is c = (13.5, 13.5) and its outer square is [-0.5, 27.5]^2.

How one image is made (all steps run on a whole block of images at once). For each output
pixel p = (x, y) a source point in the digit is found by inverse mapping:
    1. p' = p + d(p)                         elastic displacement (zero unless elastic_alpha > 0);
                                             d on the output grid, drawn as in the table above
    2. q  = c + (1/s) R(theta)^T (p' - t)    undo the similarity: the digit's centre goes to the
                                             canvas point t, turned by theta (positive: counter-
                                             clockwise on screen) and scaled by s
    3. r  = H(q)                             undo the projective distortion: H maps the displaced
                                             corners back to the square's corners (identity
                                             unless corner_std > 0)
    4. value = bilinear read of the digit at r, zero outside the 28x28 image, / 255
Steps 2 and 3 are one 3x3 matrix per image, M = H A^-1 ("matrices" in the debug output).
Then B clutter patches are combined with the canvas (add-and-clip or max).

Placement (translate=True): t is uniform over all canvas points for which the digit's ink stays
in the canvas: the ink box (bounding box of the non-zero pixels) grown by one pixel, which holds
every point where the bilinear read is non-zero, is mapped forward through steps 3 and 2 and must
lie inside [-1, S]^2, so no pixel of the unbounded grid outside the canvas would carry ink.
With whole_pixels, t - c is a whole number of pixels, so with no rotation or scale every digit
pixel lands on a canvas pixel unchanged. Elastic displacement is not part of this bound (it is
off for the canvas tasks). An image that cannot fit (only with unusual options) is a ValueError.
Without translate, t = ((S - 1) / 2, (S - 1) / 2): the digit is centred.

Guarantees (each checked by tests/test_data_distorted.py):
    - R with angle 0, P with corner_std 0, E with elastic_alpha 0 give the digit unchanged
      (bit for bit: the source points are then exactly the pixel centres).
    - With translate, no ink leaves the canvas; TC and cluttered keep every ink pixel's value.
    - The fast path equals the loop references _warp_naive (warp), _homography_naive (P's
      matrices) and _smooth_naive (elastic fields) to float rounding.

Determinism: images are made in blocks of BLOCK; block b of task k and split s draws from
np.random.default_rng(SeedSequence([seed, TASK_IDS[k], SPLIT_IDS[s], b])), always in the order
digit, angle, scale, corner offsets, elastic noise (when alpha > 0), position, clutter. The same
(task, seed, split, count, options, MNIST files) give the same bits with any number of worker
threads; tasks and splits use independent streams (and differ from the MNIST-sequence streams,
which have three seed words, not four).

Disjoint pools (as minstn.data.sequences.split_pool, which this module uses): 'train' images and
their clutter draw from MNIST training digits [0, val_start), 'val' from [val_start, N_train),
'test' from the MNIST test digits. With the 22,699-image training file here and the default
val_start=20000 that is 0..19,999 and 20,000..22,698; N_train is always read from the file.

Labels are (N, 1): one digit per image, so evaluation code written for (N, P) label sequences
handles these tasks unchanged.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from .sequences import SPLIT_IDS, SequenceOptions, fill_blocks, split_pool

__all__ = [
    "DISTORTIONS",
    "CLUTTERED",
    "TASKS",
    "TASK_IDS",
    "TASK_OPTIONS",
    "BLOCK",
    "DistortionOptions",
    "digit_pool",
    "distort_block",
    "generate_distorted",
    "generate_cluttered",
]

DIGIT = 28                     # MNIST digit side
CENTRE = (DIGIT - 1) / 2       # 13.5: the digit's centre in pixel coordinates
BLOCK = 256                    # images per random-stream block (part of the data's definition; do not change)
DISTORTIONS = ("R", "RTS", "P", "E", "TC")
CLUTTERED = "cluttered"
TASKS = DISTORTIONS + (CLUTTERED,)
TASK_IDS = {task: i for i, task in enumerate(TASKS)}
#: the options each task changes from the DistortionOptions defaults (see the module docstring)
TASK_OPTIONS = {
    "R": {"angle": 90.0},
    "RTS": {"size": 42, "angle": 45.0, "scale_min": 0.7, "scale_max": 1.2, "translate": True},
    "P": {"corner_std": 0.1},
    "E": {"elastic_alpha": 34.0},
    "TC": {"size": 60, "translate": True, "whole_pixels": True, "clutter": 6, "clutter_size": 6},
    "cluttered": {"size": 60, "translate": True, "whole_pixels": True, "clutter": 6, "clutter_size": 8},
}
#: the corners of the digit's outer square, (x, y): top-left, top-right, bottom-right, bottom-left
SQUARE = np.array([[-0.5, -0.5], [DIGIT - 0.5, -0.5], [DIGIT - 0.5, DIGIT - 0.5], [-0.5, DIGIT - 0.5]])
COMBINES = ("add", "max")


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class DistortionOptions:
    """The free choices of one task; the defaults are a plain, centred 28x28 digit.

    Build a task's options with DistortionOptions.for_task('RTS', **changes).

    size            output side S (1..1024)
    angle           rotation uniform in [-angle, angle] degrees (0..180)
    scale_min/max   scale uniform in [scale_min, scale_max] (0 < scale_min <= scale_max <= 10)
    translate       place the digit at a random position with its ink inside the canvas
                    (else centred)
    whole_pixels    with translate: shift by whole pixels only
    corner_std      projective: std of each corner coordinate's offset, a fraction of the side 28
    corner_clip     offsets clipped to +-corner_clip of the side (0 < corner_clip < 0.25: larger
                    offsets can fold the quadrilateral)
    elastic_alpha   elastic: scale of the displacement field in pixels (0: off)
    elastic_sigma   std in pixels of the Gaussian that smooths the field (0.5..20)
    clutter         clutter patches per image (B >= 0)
    clutter_size    side C of a patch (1..28, at most size)
    clutter_combine 'add' (add, then clip to [0, 1]) or 'max'
    val_start       training digits [0, val_start) feed 'train', [val_start, N_train) feed 'val'
    """

    size: int = DIGIT
    angle: float = 0.0
    scale_min: float = 1.0
    scale_max: float = 1.0
    translate: bool = False
    whole_pixels: bool = False
    corner_std: float = 0.0
    corner_clip: float = 0.2
    elastic_alpha: float = 0.0
    elastic_sigma: float = 4.0
    clutter: int = 0
    clutter_size: int = 6
    clutter_combine: str = "add"
    val_start: int = 20000

    def __post_init__(self):
        def need(cond, msg):
            if not cond:
                raise ValueError(f"DistortionOptions: {msg}")

        for name in ("size", "clutter", "clutter_size", "val_start"):
            v = getattr(self, name)
            need(_is_int(v), f"{name} must be an int, got {v!r}")
        for name in ("angle", "scale_min", "scale_max", "corner_std", "corner_clip", "elastic_alpha",
                     "elastic_sigma"):
            v = getattr(self, name)
            need(_is_number(v), f"{name} must be a finite number, got {v!r}")
        for name in ("translate", "whole_pixels"):
            v = getattr(self, name)
            need(isinstance(v, (bool, np.bool_)), f"{name} must be True or False, got {v!r}")
        need(1 <= self.size <= 1024, f"size must be in 1..1024, got {self.size}")
        need(0 <= self.angle <= 180, f"angle must be in [0, 180] degrees, got {self.angle!r}")
        need(0 < self.scale_min <= 10, f"scale_min must be in (0, 10], got {self.scale_min!r}")
        need(self.scale_min <= self.scale_max <= 10,
             f"scale_max must be in [scale_min, 10] = [{self.scale_min}, 10], got {self.scale_max!r}")
        need(not self.whole_pixels or self.translate, "whole_pixels needs translate=True (it sets how the digit moves)")
        need(self.corner_std >= 0, f"corner_std must be >= 0, got {self.corner_std!r}")
        need(0 < self.corner_clip < 0.25, f"corner_clip must be in (0, 0.25) of the side (0.25 or more can fold "
                                          f"the quadrilateral), got {self.corner_clip!r}")
        need(self.elastic_alpha >= 0, f"elastic_alpha must be >= 0 pixels, got {self.elastic_alpha!r}")
        need(0.5 <= self.elastic_sigma <= 20, f"elastic_sigma must be in [0.5, 20] pixels, got {self.elastic_sigma!r}")
        need(self.clutter >= 0, f"clutter must be >= 0, got {self.clutter}")
        need(1 <= self.clutter_size <= DIGIT, f"clutter_size must be in 1..{DIGIT}, got {self.clutter_size}")
        need(self.clutter_size <= self.size, f"clutter_size ({self.clutter_size}) must be at most size ({self.size}); "
                                             f"lower clutter_size or raise size")
        need(self.clutter_combine in COMBINES,
             f"clutter_combine must be one of {COMBINES}, got {self.clutter_combine!r}")
        need(self.val_start >= 1, f"val_start must be >= 1, got {self.val_start}")

    def to_dict(self):
        """Plain JSON-able dict of the options (for parameter records and cache keys)."""
        cast = {"int": int, "float": float, "bool": bool, "str": str}    # field types, as written above
        return {f.name: cast[f.type](getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_kwargs(cls, **kwargs):
        """Build from keyword options, rejecting unknown names with the list of known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"unknown distortion option(s) {unknown}; known options: {sorted(known)}")
        return cls(**kwargs)

    @classmethod
    def for_task(cls, task, **kwargs):
        """The options of a task (TASK_OPTIONS), with other fields from kwargs."""
        if task not in TASK_OPTIONS:
            raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
        return cls.from_kwargs(**{**TASK_OPTIONS[task], **kwargs})


def digit_pool(split, options=None, data_dir=None):
    """The DigitPool of split 'train' | 'val' | 'test' (minstn.data.sequences.split_pool).

    Holds images (P, 28, 28) uint8, labels (P,), index (P,) positions in the MNIST file, and
    ink (P, 4) top, left, height, width of each digit's ink box. Its noise-window table is
    not used here (clutter windows are drawn uniformly), so it is built for one 28x28 window
    per digit, which costs nothing.
    """
    options = options or DistortionOptions()
    if split not in SPLIT_IDS:
        raise ValueError(f"split must be one of {list(SPLIT_IDS)}, got {split!r}")
    pool_options = SequenceOptions(val_start=options.val_start, noise_blocks=0, noise_size=DIGIT, noise_min_ink=0)
    return split_pool(split, pool_options, data_dir)


# ----------------------------------------------------------------------------------------
# The transform: one 3x3 matrix per image (steps 2 and 3) and an elastic field (step 1)
# ----------------------------------------------------------------------------------------

def _similarity_inverse(radians, scale, centre):
    """(N, 3, 3) matrices of step 2: canvas point -> digit point, q = c + (1/s) R^T (p - t).

    radians, scale (N,); centre (N, 2) canvas point t where the digit's centre goes. Written
    so that angle 0, scale 1 and t - c whole give exact entries (0, 1 and whole offsets).
    """
    cos, sin = np.cos(radians) / scale, np.sin(radians) / scale        # (N,) each
    tx, ty = centre[:, 0], centre[:, 1]
    M = np.zeros((len(radians), 3, 3))
    M[:, 0, 0], M[:, 0, 1], M[:, 0, 2] = cos, -sin, CENTRE - (cos * tx - sin * ty)
    M[:, 1, 0], M[:, 1, 1], M[:, 1, 2] = sin, cos, CENTRE - (sin * tx + cos * ty)
    M[:, 2, 2] = 1.0
    return M


def _homographies(corners):
    """(N, 3, 3) matrices H with H(corners[k]) = SQUARE[k] for k = 0..3, and H[2, 2] = 1.

    corners (N, 4, 2) float64: where the square's corners go (x, y). Each H solves the eight
    equations u (h6 x + h7 y + 1) = h0 x + h1 y + h2, v (h6 x + h7 y + 1) = h3 x + h4 y + h5
    for the four corner pairs (x, y) -> (u, v); all N systems in one batched solve.
    """
    N = len(corners)
    x, y = corners[..., 0], corners[..., 1]                           # (N, 4) each
    u, v = SQUARE[:, 0], SQUARE[:, 1]                                 # (4,) each
    one, zero = np.ones_like(x), np.zeros_like(x)
    rows_u = np.stack([x, y, one, zero, zero, zero, -u * x, -u * y], axis=-1)   # (N, 4, 8)
    rows_v = np.stack([zero, zero, zero, x, y, one, -v * x, -v * y], axis=-1)   # (N, 4, 8)
    A = np.concatenate([rows_u, rows_v], axis=1)                      # (N, 8, 8)
    b = np.concatenate([np.broadcast_to(u, (N, 4)), np.broadcast_to(v, (N, 4))], axis=1)   # (N, 8)
    h = np.linalg.solve(A, b[..., None])[..., 0]                      # (N, 8)
    return np.concatenate([h, np.ones((N, 1))], axis=1).reshape(N, 3, 3)


def _homography_naive(corners):
    """Loop reference for _homographies, one image: corners (4, 2) -> H (3, 3)."""
    A, b = [], []
    for (x, y), (u, v) in zip(corners, SQUARE):
        A.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        b.append(u)
        A.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b.append(v)
    h = np.linalg.solve(np.array(A, dtype=np.float64), np.array(b, dtype=np.float64))
    return np.append(h, 1.0).reshape(3, 3)


def _radius(sigma):
    """The Gaussian's radius rho = ceil(3 sigma): taps -rho..rho (beyond, under 0.3% of its mass)."""
    return int(math.ceil(3 * sigma))


def _gaussian(sigma):
    """(2 rho + 1,) float64 Gaussian taps of std sigma, summing to 1."""
    k = np.arange(-_radius(sigma), _radius(sigma) + 1)
    g = np.exp(-0.5 * (k / sigma) ** 2)
    return g / g.sum()


def _smooth(noise, sigma):
    """Gaussian smoothing of noise grids, 'valid' part only (no edge effects).

    noise (..., L, L) with L = S + 2 rho -> (..., S, S). The 2-D Gaussian is separable, so
    smoothing is K noise K^T with K (S, L) the banded matrix K[i, i + j] = g[j]: two matrix
    products, each one big GEMM over the whole block.
    """
    g = _gaussian(sigma)
    L = noise.shape[-1]
    S = L - (len(g) - 1)
    K = np.zeros((S, L))
    rows = np.arange(S)
    K[rows[:, None], rows[:, None] + np.arange(len(g))] = g            # (S, L) banded
    lead = noise.shape[:-2]
    cols = noise.reshape(-1, L) @ K.T                                 # (..., L, S) smoothed along x
    cols = np.swapaxes(cols.reshape(*lead, L, S), -1, -2)              # (..., S, L)
    out = cols.reshape(-1, L) @ K.T                                   # (..., S, S) along y, transposed
    return np.swapaxes(out.reshape(*lead, S, S), -1, -2)               # (..., S, S)


def _smooth_naive(noise, sigma):
    """Loop reference for _smooth, one grid: noise (L, L) -> (S, S), the full 2-D sum."""
    g = _gaussian(sigma)
    n = len(g)
    S = noise.shape[0] - (n - 1)
    out = np.zeros((S, S))
    for i in range(S):
        for j in range(S):
            total = 0.0
            for a in range(n):
                for b in range(n):
                    total += g[a] * g[b] * noise[i + a, j + b]
            out[i, j] = total
    return out


# ----------------------------------------------------------------------------------------
# Warping: inverse mapping with bilinear reads
# ----------------------------------------------------------------------------------------

def _source_points(M, size, flow=None):
    """Source points (u, v) in the digit of every output pixel: steps 1 to 3.

    M (N, 3, 3) canvas -> digit matrices; flow (N, 2, S, S) elastic (dx, dy) or None.
    Returns u, v (N, S, S) float64. Points beyond M's vanishing line (homogeneous w <= 1e-9,
    whose source is outside the digit's square) get (-2, -2), which reads zero.
    """
    g = np.arange(size, dtype=np.float64)
    px, py = g[None, None, :], g[None, :, None]                       # (1, 1, S), (1, S, 1)
    if flow is not None:
        px, py = px + flow[:, 0], py + flow[:, 1]                     # (N, S, S) each
    m = M[:, :, :, None, None]                                        # (N, 3, 3, 1, 1)
    U = m[:, 0, 0] * px + m[:, 0, 1] * py + m[:, 0, 2]                # (N, S, S)
    V = m[:, 1, 0] * px + m[:, 1, 1] * py + m[:, 1, 2]
    if not np.any(M[:, 2, :2]) and np.all(M[:, 2, 2] == 1):          # affine: w = 1 exactly
        return U, V
    W = m[:, 2, 0] * px + m[:, 2, 1] * py + m[:, 2, 2]
    ok = W > 1e-9
    u = np.divide(U, W, out=np.full(U.shape, -2.0), where=ok)
    v = np.divide(V, W, out=np.full(V.shape, -2.0), where=ok)
    return u, v


def _sample(digits, u, v):
    """Bilinear reads of digits (N, 28, 28) uint8 at (u, v) (N, S, S); zero outside the digit.

    Returns (N, S, S) float32 in [0, 1] (pixel / 255). The digits are padded with zeros (one
    pixel before, two after) and the points clipped to [-1, 28], where every read is zero
    anyway, so each of the four taps is one gather with no bounds test.
    """
    N = len(digits)
    side = DIGIT + 3                                                  # 31: padded digit side
    padded = np.zeros((N, side, side), dtype=np.uint8)                # (N, 31, 31)
    padded[:, 1:DIGIT + 1, 1:DIGIT + 1] = digits
    u = np.clip(u, -1, DIGIT)
    v = np.clip(v, -1, DIGIT)
    x0, y0 = np.floor(u), np.floor(v)
    fx = (u - x0).astype(np.float32)                                  # (N, S, S) in [0, 1)
    fy = (v - y0).astype(np.float32)
    base = (np.arange(N)[:, None, None] * side + (y0.astype(np.int64) + 1)) * side + (x0.astype(np.int64) + 1)
    flat = padded.reshape(-1)
    a = np.take(flat, base).astype(np.float32)                        # upper-left
    b = np.take(flat, base + 1).astype(np.float32)                    # upper-right
    c = np.take(flat, base + side).astype(np.float32)                    # lower-left
    d = np.take(flat, base + side + 1).astype(np.float32)                # lower-right
    top = a + fx * (b - a)
    bottom = c + fx * (d - c)
    value = top + fy * (bottom - top)
    value /= np.float32(255)
    np.clip(value, 0.0, 1.0, out=value)                               # rounding could leave 1 + 1 ulp
    return value


def _warp_naive(digit, matrix, size, flow=None):
    """Loop reference for one image's warp (steps 1 to 4 of the module docstring).

    digit (28, 28) uint8; matrix (3, 3) canvas -> digit; flow (2, S, S) or None.
    Returns (S, S) float64.
    """
    def pixel(r, c):
        return digit[r, c] / 255.0 if 0 <= r < DIGIT and 0 <= c < DIGIT else 0.0

    out = np.zeros((size, size))
    for y in range(size):
        for x in range(size):
            px, py = float(x), float(y)
            if flow is not None:
                px, py = px + flow[0, y, x], py + flow[1, y, x]
            U = matrix[0, 0] * px + matrix[0, 1] * py + matrix[0, 2]
            V = matrix[1, 0] * px + matrix[1, 1] * py + matrix[1, 2]
            w = matrix[2, 0] * px + matrix[2, 1] * py + matrix[2, 2]
            if w <= 1e-9:
                continue
            u, v = U / w, V / w
            x0, y0 = math.floor(u), math.floor(v)
            fx, fy = u - x0, v - y0
            out[y, x] = ((1 - fy) * ((1 - fx) * pixel(y0, x0) + fx * pixel(y0, x0 + 1))
                         + fy * ((1 - fx) * pixel(y0 + 1, x0) + fx * pixel(y0 + 1, x0 + 1)))
    return out


# ----------------------------------------------------------------------------------------
# Placement and clutter
# ----------------------------------------------------------------------------------------

def _place(ink, H, radians, scale, u, options):
    """Canvas points t (N, 2) where the digits' centres go (see "Placement" in the docstring).

    ink (N, 4) top, left, height, width; H (N, 3, 3) step-3 matrices or None (identity);
    radians, scale (N,); u (N, 2) uniform draws in [0, 1) that pick t within its range.
    Raises ValueError if some digit cannot fit.
    """
    S = options.size
    N = len(ink)
    if not options.translate:
        return np.full((N, 2), (S - 1) / 2)
    top, left, h, w = ink[:, 0], ink[:, 1], ink[:, 2], ink[:, 3]
    xs = np.stack([left - 1, left + w, left + w, left - 1], axis=1).astype(np.float64)   # (N, 4) grown box
    ys = np.stack([top - 1, top - 1, top + h, top + h], axis=1).astype(np.float64)
    if H is not None:                                                 # forward step 3: through H^-1
        F = np.linalg.inv(H)                                          # (N, 3, 3)
        pts = np.stack([xs, ys, np.ones_like(xs)], axis=1)            # (N, 3, 4)
        fwd = F @ pts                                                 # (N, 3, 4)
        xs, ys = fwd[:, 0] / fwd[:, 2], fwd[:, 1] / fwd[:, 2]
    cos, sin = (np.cos(radians) * scale)[:, None], (np.sin(radians) * scale)[:, None]
    dx, dy = xs - CENTRE, ys - CENTRE                                 # (N, 4) forward step 2, t = 0
    ex, ey = cos * dx + sin * dy, -sin * dx + cos * dy
    lo = np.stack([-1 - ex.min(axis=1), -1 - ey.min(axis=1)], axis=1)   # (N, 2) range of t
    hi = np.stack([S - ex.max(axis=1), S - ey.max(axis=1)], axis=1)
    if options.whole_pixels:
        k_lo, k_hi = np.ceil(lo - CENTRE), np.floor(hi - CENTRE)      # whole shifts t - c
        bad = (k_lo > k_hi).any(axis=1)
        k = k_lo + np.minimum(np.floor(u * (k_hi - k_lo + 1)), k_hi - k_lo)
        t = k + CENTRE
    else:
        bad = (lo > hi).any(axis=1)
        t = lo + u * (hi - lo)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{int(bad.sum())} digits do not fit the {S}x{S} canvas with their ink inside (e.g. scale "
            f"{scale[i]:.2f}, angle {np.rad2deg(radians[i]):.1f} degrees); raise size or lower scale_max"
        )
    return t


def _clutter(canvas, images, src, windows, positions, size, combine):
    """Combine B clutter patches per canvas with the canvases, in place.

    canvas (N, S, S) float32; images (P, 28, 28) uint8 the pool; src (N, B) pool digits;
    windows (N, B, 2) (y, x) top-left of each patch in its digit; positions (N, B, 2) (y, x)
    top-left on the canvas; size C. One gather and one scatter per patch j, over the whole
    block (within one scatter every canvas gets one patch, so no index repeats).
    """
    N, B = src.shape
    n = np.arange(N)[:, None, None]                                   # (N, 1, 1)
    r = np.arange(size)
    for j in range(B):
        wy, wx = windows[:, j, 0, None, None] + r[:, None], windows[:, j, 1, None, None] + r  # (N, C, 1), (N, 1, C)
        py, px = positions[:, j, 0, None, None] + r[:, None], positions[:, j, 1, None, None] + r
        patch = images[src[:, j, None, None], wy, wx].astype(np.float32) / np.float32(255)   # (N, C, C)
        under = canvas[n, py, px]                                     # (N, C, C)
        canvas[n, py, px] = np.minimum(under + patch, 1.0) if combine == "add" else np.maximum(under, patch)
    return canvas


# ----------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------

def distort_block(pool, n, rng, options):
    """Make n images from one DigitPool with one np.random.Generator.

    Returns a dict:
        images     (n, 1, S, S) float32 in [0, 1]
        labels     (n, 1) int64
        indices    (n,) int64 position of each digit in the MNIST file pool.mnist_split
        angles     (n,) float64 degrees; scales (n,) float64
        centres    (n, 2) float64 canvas (x, y) of the digit's centre
        corners    (n, 4, 2) float64 pixel offsets of the square's corners (TL, TR, BR, BL; x, y)
        matrices   (n, 3, 3) float64 canvas -> digit (steps 2 and 3)
        flows      (n, 2, S, S) float64 elastic (dx, dy) on the output grid (only when
                   elastic_alpha > 0)
        clutter_positions (n, B, 2) int64 (y, x) canvas top-left of each patch
        clutter_sources   (n, B, 3) int64 (MNIST index, y, x) of the window each was cut from
    """
    if not _is_int(n) or n < 1:
        raise ValueError(f"distort_block: n must be an int >= 1, got {n!r}")
    S, B, C = options.size, options.clutter, options.clutter_size
    P = len(pool.images)
    if B > 0 and P < 2:
        raise ValueError("distort_block: clutter is cut from digits other than the image's own; "
                         "the pool needs at least 2 digits")
    pick = rng.integers(0, P, size=n)                                 # (n,) pool digits
    radians = np.deg2rad(rng.uniform(-options.angle, options.angle, size=n))
    scale = rng.uniform(options.scale_min, options.scale_max, size=n)
    offsets = np.clip(rng.normal(0.0, options.corner_std, size=(n, 4, 2)),
                      -options.corner_clip, options.corner_clip) * DIGIT       # (n, 4, 2) pixels
    H = _homographies(SQUARE + offsets) if options.corner_std > 0 else None    # (n, 3, 3)
    flow = None
    if options.elastic_alpha > 0:
        L = S + 2 * _radius(options.elastic_sigma)
        noise = rng.uniform(-1.0, 1.0, size=(n, 2, L, L))             # (n, 2, L, L)
        flow = options.elastic_alpha * _smooth(noise, options.elastic_sigma)   # (n, 2, S, S)
    centres = _place(pool.ink[pick], H, radians, scale, rng.random(size=(n, 2)), options)
    M = _similarity_inverse(radians, scale, centres)                  # (n, 3, 3)
    if H is not None:
        M = H @ M
    canvas = _sample(pool.images[pick], *_source_points(M, S, flow))  # (n, S, S) float32

    other = rng.integers(0, P - 1, size=(n, B)) if B > 0 else np.zeros((n, 0), dtype=np.int64)
    src = other + (other >= pick[:, None])                            # (n, B) uniform over the other digits
    windows = rng.integers(0, DIGIT - C + 1, size=(n, B, 2))          # (n, B, 2) (y, x) in the digit
    positions = rng.integers(0, S - C + 1, size=(n, B, 2))            # (n, B, 2) (y, x) on the canvas
    _clutter(canvas, pool.images, src, windows, positions, C, options.clutter_combine)

    out = dict(
        images=canvas[:, None],
        labels=pool.labels[pick].astype(np.int64)[:, None],
        indices=pool.index[pick],
        angles=np.rad2deg(radians),
        scales=scale,
        centres=centres,
        corners=offsets,
        matrices=M,
        clutter_positions=positions.astype(np.int64),
        clutter_sources=np.concatenate([pool.index[src][..., None], windows], axis=-1).astype(np.int64),
    )
    if flow is not None:
        out["flows"] = flow
    return out


def _empty(n, options, debug):
    """Zero-filled result arrays of n images (with the debug keys when debug)."""
    S, B = options.size, options.clutter
    out = {"images": np.zeros((n, 1, S, S), dtype=np.float32), "labels": np.zeros((n, 1), dtype=np.int64)}
    if debug:
        out.update(indices=np.zeros(n, np.int64), angles=np.zeros(n), scales=np.zeros(n),
                   centres=np.zeros((n, 2)), corners=np.zeros((n, 4, 2)), matrices=np.zeros((n, 3, 3)),
                   clutter_positions=np.zeros((n, B, 2), np.int64), clutter_sources=np.zeros((n, B, 3), np.int64))
        if options.elastic_alpha > 0:
            out["flows"] = np.zeros((n, 2, S, S))
    return out


def _generate(task, split, n, seed, data_dir, options, workers, debug, pool, progress):
    """The shared body of generate_distorted and generate_cluttered (see their docs)."""
    options = options if options is not None else DistortionOptions.for_task(task)
    if not isinstance(options, DistortionOptions):
        raise ValueError(f"options must be a DistortionOptions (e.g. DistortionOptions.for_task({task!r}, ...)), "
                         f"got {type(options).__name__}")
    if split not in SPLIT_IDS:
        raise ValueError(f"split must be one of {list(SPLIT_IDS)}, got {split!r}")
    if not _is_int(n) or n < 0:
        raise ValueError(f"the size of split {split!r} must be an int >= 0, got {n!r}")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    out = _empty(n, options, debug)
    if n == 0:
        return out
    if pool is None:
        pool = digit_pool(split, options, data_dir)

    def make_part(b, count):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), TASK_IDS[task], SPLIT_IDS[split], b]))
        return distort_block(pool, count, rng, options)

    fill_blocks(out, n, BLOCK, make_part, workers, progress)
    return out


def generate_distorted(split, n, distortion, seed=0, data_dir=None, options=None, workers=None,
                       debug=False, pool=None, progress=None):
    """Make the n images of distorted-MNIST task ``distortion`` (one of DISTORTIONS) for a split.

    split 'train' | 'val' | 'test' (disjoint digit pools, see the module docstring); options a
    DistortionOptions (default DistortionOptions.for_task(distortion); the task name also picks
    the random stream). Returns {'images' (n, 1, S, S) float32 in [0, 1], 'labels' (n, 1)
    int64}; with ``debug`` also indices, angles, scales, centres, corners, matrices,
    clutter_positions, clutter_sources (and flows when elastic), see :func:`distort_block`.
    ``pool``: the split's DigitPool (digit_pool(split, options)) to skip loading MNIST.
    ``progress``: called with (done, n) after each block. ``workers``: threads making blocks
    in parallel (default min(2, CPUs)); the result does not depend on it.
    """
    if distortion not in DISTORTIONS:
        raise ValueError(f"distortion must be one of {DISTORTIONS}, got {distortion!r} "
                         f"(cluttered MNIST 60x60 is generate_cluttered)")
    return _generate(distortion, split, n, seed, data_dir, options, workers, debug, pool, progress)


def generate_cluttered(split, n, seed=0, data_dir=None, options=None, workers=None, debug=False,
                       pool=None, progress=None):
    """Make the n images of cluttered MNIST 60x60 (the TSTN paper's task) for a split.

    As :func:`generate_distorted`, with default options DistortionOptions.for_task('cluttered').
    """
    return _generate(CLUTTERED, split, n, seed, data_dir, options, workers, debug, pool, progress)
