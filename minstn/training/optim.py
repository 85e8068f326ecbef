"""Optimisers, gradient clipping, learning-rate schedules and early stopping.

Everything here works on a dict of parameters {name: array} (NumPy or CuPy, float32 or
float64): the model's own arrays, which an optimiser updates in place. Gradients come in as a
dict of the same names and shapes and are never modified.

Shape legend: every parameter array P has its own shape; the optimiser's per-parameter
state (moments, velocities) has the same shape and dtype as P.

    opt = Adam(model.params, lr=1e-3, lr_mult={'loc_w1': 0.1, ...})
    grads, norm = clip_by_global_norm(model.grads, 5.0)
    opt.step(grads)                       # params[k] -= lr * lr_mult[k] * update_k

Per-parameter learning-rate multipliers let a group of parameters learn slower: the trainer
gives every parameter of the model's 'loc' group (localisation net, LSTM, affine regressor)
the multiplier --loc-lr-mult (0.1 by default), as the spatial-transformer literature does.

State: every object here has state() -> dict and load_state(dict). Optimiser state holds
host NumPy arrays (copied from the device) and plain Python scalars; schedules and early
stopping hold scalars only. Saved in a checkpoint and loaded back, a run continues exactly.

Update rules (g = gradient plus weight_decay * p, lr_k = lr * lr_mult[k], t = step count):
    SGD      buf = mu * buf + g;  d = g + mu * buf (nesterov) or buf;  p -= lr_k * d
    RMSprop  s = rho * s + (1 - rho) * g^2;  p -= lr_k * g / (sqrt(s) + eps)
    Adam     m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
             p -= lr_k * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
"""
from __future__ import annotations

import math

import numpy as np

from minstn.backend import is_cupy, to_numpy, xp_of

__all__ = [
    "Optimizer",
    "SGD",
    "RMSprop",
    "Adam",
    "FlatAdam",
    "OPTIMIZERS",
    "build_optimizer",
    "clip_by_value",
    "clip_by_global_norm",
    "global_norm",
    "fetch",
    "step_numbers",
    "clip_scale",
    "scale_to_norm",
    "ConstantLR",
    "StepDecay",
    "ReduceOnPlateau",
    "build_schedule",
    "EarlyStopping",
]


# ----------------------------------------------------------------------------- optimisers


class Optimizer:
    """Base class: holds the parameters, the base learning rate and per-parameter multipliers.

    params:        {name: array} updated in place by step()
    lr:            base learning rate (> 0); a schedule may change it between steps (opt.lr = ...)
    lr_mult:       {name: float} multiplier per parameter, 1.0 for names not listed
    weight_decay:  L2 coefficient added to the gradient (g + weight_decay * p), 0 = off
    """

    #: names of the per-parameter state arrays, e.g. ('m', 'v') for Adam
    slots: tuple = ()

    @property
    def kind(self) -> str:
        """The algorithm's name, saved with the state (FlatAdam's is 'Adam': it is Adam)."""
        return "Adam" if isinstance(self, Adam) else type(self).__name__

    def __init__(self, params: dict, lr: float, lr_mult: dict | None = None, weight_decay: float = 0.0):
        if not isinstance(params, dict) or not params:
            raise TypeError("params must be a non-empty dict {name: array} (the model's .params)")
        _check_positive("lr", lr)
        if weight_decay < 0 or not math.isfinite(weight_decay):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
        lr_mult = dict(lr_mult or {})
        unknown = sorted(set(lr_mult) - set(params))
        if unknown:
            raise ValueError(f"lr_mult names parameters the model does not have: {unknown}; known: {sorted(params)}")
        for name, r in lr_mult.items():
            if not (r >= 0 and math.isfinite(r)):
                raise ValueError(f"lr_mult[{name!r}] must be a finite number >= 0, got {r!r}")
        self.params = params
        self.lr = float(lr)
        self.lr_mult = {name: float(lr_mult.get(name, 1.0)) for name in params}
        self.weight_decay = float(weight_decay)
        self.t = 0  # number of step() calls so far
        # per-parameter state, zeros like each parameter: self.state_arrays[slot][name]
        self.state_arrays = {slot: {name: xp_of(p).zeros_like(p) for name, p in params.items()} for slot in self.slots}

    def step(self, grads: dict) -> None:
        """Apply one update to every parameter, in place. grads: {name: array} like params (not modified)."""
        missing = sorted(set(self.params) - set(grads))
        if missing:
            raise ValueError(f"grads is missing gradients for parameters {missing}")
        self.t += 1
        for name, p in self.params.items():
            g = grads[name]
            if g.shape != p.shape:
                raise ValueError(f"gradient for {name!r} has shape {g.shape}, the parameter has {p.shape}")
            if self.weight_decay:
                g = g + self.weight_decay * p  # a new array: the incoming gradient stays untouched
            self._update(name, p, g, self.lr * self.lr_mult[name])

    def _update(self, name, p, g, lr):  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    # -- state ------------------------------------------------------------------
    def hyperparams(self) -> dict:
        """The scalar settings of this optimiser (saved with its state, checked on load)."""
        return {"weight_decay": self.weight_decay}

    def state(self) -> dict:
        """{'kind', 't', 'lr', 'lr_mult', 'hyper', 'arrays': {'slot/name': np.ndarray}} on the host."""
        arrays = {f"{slot}/{name}": to_numpy(a).copy() for slot, d in self.state_arrays.items() for name, a in d.items()}
        return {
            "kind": self.kind,
            "t": self.t,
            "lr": self.lr,
            "lr_mult": dict(self.lr_mult),
            "hyper": self.hyperparams(),
            "arrays": arrays,
        }

    def load_state(self, state: dict) -> None:
        """Restore what state() returned (arrays are copied onto the parameters' device)."""
        kind = state.get("kind")
        if kind != self.kind:
            raise ValueError(f"optimiser state is for {kind!r}, this optimiser is {self.kind!r}")
        arrays = state["arrays"]
        expected = {f"{slot}/{name}" for slot in self.slots for name in self.params}
        if set(arrays) != expected:
            raise ValueError(
                f"optimiser state does not match the parameters: missing {sorted(expected - set(arrays))}, "
                f"unexpected {sorted(set(arrays) - expected)}"
            )
        for key, a in arrays.items():
            slot, name = key.split("/", 1)
            p = self.params[name]
            if a.shape != p.shape:
                raise ValueError(f"optimiser state {key!r} has shape {a.shape}, the parameter has {p.shape}")
            self.state_arrays[slot][name] = xp_of(p).asarray(a, dtype=p.dtype).copy()
        self.t = int(state["t"])
        self.lr = float(state["lr"])
        self.lr_mult = {name: float(state["lr_mult"].get(name, 1.0)) for name in self.params}


class SGD(Optimizer):
    """Stochastic gradient descent with (optional Nesterov) momentum.

    buf = momentum * buf + g;  d = g + momentum * buf if nesterov else buf;  p -= lr_k * d.
    momentum = 0 gives plain SGD (p -= lr_k * g).
    """

    slots = ("buf",)

    def __init__(self, params, lr, lr_mult=None, weight_decay=0.0, momentum=0.9, nesterov=False):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if nesterov and momentum == 0.0:
            raise ValueError("nesterov=True needs a momentum > 0")
        super().__init__(params, lr, lr_mult, weight_decay)
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def hyperparams(self):
        return {**super().hyperparams(), "momentum": self.momentum, "nesterov": self.nesterov}

    def _update(self, name, p, g, lr):
        buf = self.state_arrays["buf"][name]
        buf *= self.momentum
        buf += g
        d = g + self.momentum * buf if self.nesterov else buf
        p -= lr * d


class RMSprop(Optimizer):
    """RMSprop: divide the gradient by a running root mean square of its recent values.

    s = rho * s + (1 - rho) * g^2;  p -= lr_k * g / (sqrt(s) + eps).  rho = 0.9, eps = 1e-8.
    """

    slots = ("s",)

    def __init__(self, params, lr, lr_mult=None, weight_decay=0.0, rho=0.9, eps=1e-8):
        if not 0.0 <= rho < 1.0:
            raise ValueError(f"rho must be in [0, 1), got {rho!r}")
        _check_positive("eps", eps)
        super().__init__(params, lr, lr_mult, weight_decay)
        self.rho = float(rho)
        self.eps = float(eps)

    def hyperparams(self):
        return {**super().hyperparams(), "rho": self.rho, "eps": self.eps}

    def _update(self, name, p, g, lr):
        xp = xp_of(p)
        s = self.state_arrays["s"][name]
        s *= self.rho
        s += (1.0 - self.rho) * (g * g)
        p -= lr * g / (xp.sqrt(s) + self.eps)


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction. beta1 = 0.9, beta2 = 0.999, eps = 1e-8.

    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  m_hat = m / (1 - b1^t);  v_hat = v / (1 - b2^t);
    p -= lr_k * m_hat / (sqrt(v_hat) + eps).
    """

    slots = ("m", "v")

    def __init__(self, params, lr, lr_mult=None, weight_decay=0.0, beta1=0.9, beta2=0.999, eps=1e-8):
        for nm, b in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"{nm} must be in [0, 1), got {b!r}")
        _check_positive("eps", eps)
        super().__init__(params, lr, lr_mult, weight_decay)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def hyperparams(self):
        return {**super().hyperparams(), "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps}

    def _update(self, name, p, g, lr):
        xp = xp_of(p)
        m = self.state_arrays["m"][name]
        v = self.state_arrays["v"][name]
        m_hat_scale = 1.0 / (1.0 - self.beta1**self.t)  # bias corrections (scalars)
        v_hat_scale = 1.0 / (1.0 - self.beta2**self.t)
        # the formulas above, in place with two scratch arrays (no temporary per operation: this
        # step is a dozen passes over every parameter, memory-bound)
        a = xp.multiply(g, 1.0 - self.beta1)    # (1 - b1) g
        m *= self.beta1
        m += a
        xp.multiply(g, g, out=a)                # g^2
        a *= 1.0 - self.beta2
        v *= self.beta2
        v += a
        xp.multiply(v, v_hat_scale, out=a)      # v_hat
        xp.sqrt(a, out=a)
        a += self.eps                           # sqrt(v_hat) + eps
        step = xp.multiply(m, m_hat_scale)      # m_hat
        step *= lr
        step /= a
        p -= step


class FlatAdam(Adam):
    """Adam over one flat buffer: element by element the same update as Adam (the same operations
    in the same order, so the same bits), but fourteen array operations for all parameters together
    instead of about eleven per parameter; on a GPU (CuPy buffers) ONE kernel launch, adam_step of
    minstn/ops/fast/kernels/train.cu, which does those operations element by element (the same
    bits again). This is the optimiser the trainer uses on a GPU.

    step(grads, grad_scale) multiplies the gradients by grad_scale first (the global-norm clip's
    factor, clip_scale(); 1 = no clipping), inside the same launch on a GPU, with the bits of
    scale_to_norm followed by step.

    It makes the parameters views into one flat buffer: params[name] is replaced by a view of
    the same shape and values (the model reads its parameters through this dict, so it sees
    them). The moments are views into two more flat buffers, so state() and load_state() are
    Adam's: a checkpoint is the same whichever of the two wrote it.
    """

    def __init__(self, params, lr, lr_mult=None, weight_decay=0.0, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__(params, lr, lr_mult, weight_decay, beta1, beta2, eps)
        first = next(iter(params.values()))
        xp, dtype = xp_of(first), first.dtype
        self.names = list(params)
        self.sizes = [int(params[n].size) for n in self.names]
        total = sum(self.sizes)
        self.flat = {"p": xp.empty(total, dtype=dtype), "m": xp.zeros(total, dtype=dtype), "v": xp.zeros(total, dtype=dtype)}
        offset = 0
        for name, n in zip(self.names, self.sizes):
            shape = params[name].shape
            self.flat["p"][offset:offset + n] = params[name].reshape(-1)
            params[name] = self.flat["p"][offset:offset + n].reshape(shape)          # a view: the model sees it
            for slot in self.slots:
                self.state_arrays[slot][name] = self.flat[slot][offset:offset + n].reshape(shape)
            offset += n
        self._lr_key, self._lr = None, None

    def _flat_lr(self):
        """lr * lr_mult[name] for every element (rebuilt when the learning rate changes)."""
        key = (self.lr, tuple(self.lr_mult[n] for n in self.names))
        if key != self._lr_key:
            xp, dtype = xp_of(self.flat["p"]), self.flat["p"].dtype
            host = np.concatenate([np.full(n, self.lr * self.lr_mult[name]) for name, n in zip(self.names, self.sizes)])
            self._lr_key, self._lr = key, xp.asarray(host.astype(dtype))
        return self._lr

    def flatten(self, grads: dict):
        """The gradients as one flat array in the buffer's order (one copy): clipping and the
        step then act on all of them in one operation each."""
        missing = sorted(set(self.params) - set(grads))
        if missing:
            raise ValueError(f"grads is missing gradients for parameters {missing}")
        for name in self.names:
            if grads[name].shape != self.params[name].shape:
                raise ValueError(f"gradient for {name!r} has shape {grads[name].shape}, the parameter has {self.params[name].shape}")
        return xp_of(self.flat["p"]).concatenate([grads[name].reshape(-1) for name in self.names])   # (P,)

    def step(self, grads, grad_scale: float = 1.0) -> None:
        """Adam's update; grads: {name: array} or flatten()'s flat array, multiplied by grad_scale
        first (the norm clip's factor; 1.0 leaves them as they are)."""
        g = self.flatten(grads) if isinstance(grads, dict) else grads
        if g.shape != self.flat["p"].shape:
            raise ValueError(f"flat gradients have shape {g.shape}, the parameters {self.flat['p'].shape}")
        self.t += 1
        if is_cupy(self.flat["p"]):
            self._step_kernel(g, grad_scale)
            return
        xp, p, m, v = xp_of(self.flat["p"]), self.flat["p"], self.flat["m"], self.flat["v"]
        if grad_scale != 1.0:
            g = g * g.dtype.type(grad_scale)     # scale_to_norm's operation
        if self.weight_decay:
            g = g + self.weight_decay * p
        m_hat_scale = 1.0 / (1.0 - self.beta1**self.t)
        v_hat_scale = 1.0 / (1.0 - self.beta2**self.t)
        a = xp.multiply(g, 1.0 - self.beta1)     # Adam._update's operations, on every parameter at once
        m *= self.beta1
        m += a
        xp.multiply(g, g, out=a)
        a *= 1.0 - self.beta2
        v *= self.beta2
        v += a
        xp.multiply(v, v_hat_scale, out=a)
        xp.sqrt(a, out=a)
        a += self.eps
        step = xp.multiply(m, m_hat_scale)
        step *= self._flat_lr()
        step /= a
        p -= step

    def _step_kernel(self, g, grad_scale: float) -> None:
        """The update above as one launch of the adam_step kernel (kernels/train.cu): its scalars
        computed here in double and rounded once to the parameters' dtype, as NumPy and CuPy round
        a Python float that meets an array."""
        from minstn.ops.fast import cuda

        p = self.flat["p"]
        T = p.dtype.type
        g = xp_of(p).ascontiguousarray(g)
        scalars = (grad_scale, self.weight_decay, self.beta1, 1.0 - self.beta1, self.beta2, 1.0 - self.beta2,
                   1.0 / (1.0 - self.beta1**self.t), 1.0 / (1.0 - self.beta2**self.t), self.eps)
        cuda.launch("adam_step", p, p.size, (p, self.flat["m"], self.flat["v"], g, self._flat_lr(),
                                             *cuda.sizes(p.size), *(T(c) for c in scalars)))

    def load_state(self, state: dict) -> None:
        """Adam.load_state, writing into the flat buffers' views (they stay views)."""
        views = {slot: dict(d) for slot, d in self.state_arrays.items()}
        super().load_state(state)
        for slot, d in views.items():
            for name, view in d.items():
                view[...] = self.state_arrays[slot][name]
                self.state_arrays[slot][name] = view


OPTIMIZERS = {"adam": Adam, "sgd": SGD, "rmsprop": RMSprop}


def build_optimizer(name: str, params: dict, lr: float, lr_mult=None, weight_decay=0.0, momentum=0.9, nesterov=False,
                    flat: bool = False):
    """Make an optimiser by name: 'adam', 'sgd' (uses momentum, nesterov) or 'rmsprop'.
    flat: Adam as FlatAdam (one flat buffer; what the trainer uses on a GPU)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}: choose one of {sorted(OPTIMIZERS)}")
    if name == "adam" and flat:
        return FlatAdam(params, lr, lr_mult, weight_decay)
    if name == "sgd":
        return SGD(params, lr, lr_mult, weight_decay, momentum=momentum, nesterov=nesterov)
    return OPTIMIZERS[name](params, lr, lr_mult, weight_decay)


# ----------------------------------------------------------------------------- clipping


def clip_by_value(grads, limit: float):
    """New gradients with every element clipped to [-limit, limit] (Sonderby et al. 2015 use 1).

    grads: {name: array}, or one flat array (FlatAdam.flatten); returns the same kind, new
    arrays; the input is not modified.
    """
    _check_positive("limit", limit)
    if not isinstance(grads, dict):
        return xp_of(grads).clip(grads, -limit, limit)
    return {name: xp_of(g).clip(g, -limit, limit) for name, g in grads.items()}


def global_norm(grads):
    """sqrt(sum over all arrays of sum(g^2)), accumulated in float64: a Python float for NumPy
    arrays; for CuPy ones a 0-d device array (a float would stop the GPU once per array).
    grads: {name: array}, or one flat array."""
    gs = list(grads.values()) if isinstance(grads, dict) else [grads]
    if len(gs) == 1 and is_cupy(gs[0]):      # one flat array (FlatAdam.flatten): a float64 dot product
        xp = xp_of(gs[0])
        g = gs[0].reshape(-1).astype(xp.float64, copy=False)
        return xp.sqrt(xp.dot(g, g))
    if gs and is_cupy(gs[0]):
        xp = xp_of(gs[0])
        return xp.sqrt(xp.stack([(g.astype(xp.float64) ** 2).sum() for g in gs]).sum())
    total = 0.0
    for g in gs:
        total += float((g.astype(np.float64, copy=False) ** 2).sum())
    return math.sqrt(total)


def fetch(*values) -> tuple:
    """Host numbers of values that may be 0-d device arrays, in ONE transfer (one stop of the GPU
    per training step instead of one per value). Floats and NumPy values pass through as floats."""
    if any(is_cupy(v) for v in values):
        xp = xp_of(*[v for v in values if is_cupy(v)])
        host = xp.stack([xp.asarray(v, dtype=xp.float64) for v in values]).get()
        return tuple(float(h) for h in host)
    return tuple(float(v) for v in values)


def clip_scale(norm: float, max_norm: float) -> float:
    """The factor of the global-norm clip: max_norm / norm when norm (a float) exceeds max_norm,
    else 1.0 (also for a norm that is not finite: such gradients are reported, not scaled)."""
    _check_positive("max_norm", max_norm)
    if not math.isfinite(norm) or norm <= max_norm:
        return 1.0
    return max_norm / norm


#: threads of sum_squares (256 x 128 blocks): a few elements each for the GPU, a few partial sums
#: each for step_report's one block of 256 threads
NORM_THREADS = 256 * 128


def step_numbers(loss, grads, logits, labels) -> tuple:
    """(loss, the gradients' global norm, the number of digits whose largest logit is not the
    label) as host numbers, in ONE transfer: the trainer's one stop per step.

    loss: 0-d array or float; grads: {name: array} or one flat array; logits (N, P, K), labels (N, P).
    The same numbers as fetch(loss, global_norm(grads), (logits.argmax(-1) != labels).sum()), which
    is what runs for NumPy arrays; for one flat CuPy gradient (FlatAdam.flatten) two kernel launches
    compute all three (sum_squares, step_report in kernels/train.cu: the norm's sum in float64, in
    another order than NumPy's, rounding only)."""
    flat = grads if not isinstance(grads, dict) else None
    if flat is None or not is_cupy(flat) or not is_cupy(logits) or not is_cupy(loss):
        return fetch(loss, global_norm(grads), (logits.argmax(axis=-1) != labels).sum())
    from minstn.ops.fast import cuda
    from minstn.ops.fast.loss import REDUCE_BLOCK    # = TRAIN_REDUCE_BLOCK, step_report's block too

    xp = xp_of(flat)
    K = logits.shape[-1]
    M = logits.size // K
    g = xp.ascontiguousarray(flat.reshape(-1))
    z = xp.ascontiguousarray(logits).reshape(M, K)
    y = xp.ascontiguousarray(labels.reshape(M).astype(xp.int64, copy=False))
    loss = xp.ascontiguousarray(loss.reshape(1).astype(z.dtype, copy=False))
    out = xp.empty(NORM_THREADS + 3, dtype=xp.float64)             # the partial sums, then the report
    partial, report = out[:NORM_THREADS], out[NORM_THREADS:]
    with g.device:
        cuda.kernel("sum_squares", g)((NORM_THREADS // cuda.BLOCK,), (cuda.BLOCK,), (g, partial, *cuda.sizes(g.size)))
        cuda.kernel("step_report", z)((1,), (REDUCE_BLOCK,),
                                      (partial, *cuda.sizes(NORM_THREADS), loss, z, y, *cuda.sizes(M, K), report))
    host = report.get()                                            # the one stop for the host
    return float(host[0]), float(host[1]), float(host[2])


def scale_to_norm(grads, norm: float, max_norm: float):
    """The gradients scaled by max_norm / norm when norm (their global norm, a float) exceeds
    max_norm, else the same arrays (in a new dict); inputs never modified. See clip_by_global_norm.
    grads: {name: array}, or one flat array (then one array comes back)."""
    flat = not isinstance(grads, dict)
    scale = clip_scale(norm, max_norm)
    if scale == 1.0:
        return grads if flat else dict(grads)
    if flat:
        return grads * grads.dtype.type(scale)
    return {name: g * g.dtype.type(scale) for name, g in grads.items()}


def clip_by_global_norm(grads: dict, max_norm: float) -> tuple[dict, float]:
    """Scale all gradients together so that their global norm is at most max_norm.

    Returns (clipped, norm): norm is the global norm *before* clipping (a Python float; inf or
    nan if a gradient is not finite, in which case the gradients are returned unscaled so the
    caller can see and report it). When norm <= max_norm the same arrays come back (in a new
    dict); otherwise new arrays g * max_norm / norm. The input is never modified.
    """
    norm = fetch(global_norm(grads))[0]
    return scale_to_norm(grads, norm, max_norm), norm


# ----------------------------------------------------------------------------- schedules
#
# A schedule owns the base learning rate between epochs. The trainer calls
#     lr = schedule.end_epoch(epoch, val_digit_error)
# after each epoch's validation, and sets optimizer.lr = lr. epoch counts from 1.


class ConstantLR:
    """No schedule: the learning rate stays where it started."""

    def __init__(self, lr: float):
        _check_positive("lr", lr)
        self.lr = float(lr)

    def end_epoch(self, epoch: int, metric: float) -> float:
        return self.lr

    def state(self) -> dict:
        return {"kind": "none", "lr": self.lr}

    def load_state(self, state: dict) -> None:
        _check_kind(state, "none")
        self.lr = float(state["lr"])


class StepDecay:
    """Multiply the learning rate by `factor` every `step_epochs` epochs: lr = lr0 * factor^(epoch // step_epochs)."""

    def __init__(self, lr: float, step_epochs: int = 10, factor: float = 0.1):
        _check_positive("lr", lr)
        if int(step_epochs) != step_epochs or step_epochs < 1:
            raise ValueError(f"step_epochs must be an integer >= 1, got {step_epochs!r}")
        if not 0.0 < factor <= 1.0:
            raise ValueError(f"factor must be in (0, 1], got {factor!r}")
        self.lr0 = float(lr)
        self.lr = float(lr)
        self.step_epochs = int(step_epochs)
        self.factor = float(factor)

    def end_epoch(self, epoch: int, metric: float) -> float:
        self.lr = self.lr0 * self.factor ** (epoch // self.step_epochs)
        return self.lr

    def state(self) -> dict:
        return {"kind": "step", "lr0": self.lr0, "lr": self.lr}

    def load_state(self, state: dict) -> None:
        _check_kind(state, "step")
        self.lr0, self.lr = float(state["lr0"]), float(state["lr"])


class ReduceOnPlateau:
    """Multiply the learning rate by `factor` when the metric (lower is better) has not improved
    for more than `patience` epochs; never below `min_lr`.

    An epoch improves when metric < best - threshold (absolute, in the metric's units). After a
    reduction the count of epochs without improvement starts again from 0.
    """

    def __init__(self, lr: float, factor: float = 0.5, patience: int = 2, min_lr: float = 1e-6, threshold: float = 0.0):
        _check_positive("lr", lr)
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor must be in (0, 1) for a plateau schedule, got {factor!r}")
        if int(patience) != patience or patience < 0:
            raise ValueError(f"patience must be an integer >= 0, got {patience!r}")
        if min_lr < 0 or threshold < 0:
            raise ValueError(f"min_lr and threshold must be >= 0, got {min_lr!r}, {threshold!r}")
        self.lr = float(lr)
        self.factor, self.patience = float(factor), int(patience)
        self.min_lr, self.threshold = float(min_lr), float(threshold)
        self.best = math.inf
        self.bad_epochs = 0

    def end_epoch(self, epoch: int, metric: float) -> float:
        if metric < self.best - self.threshold:
            self.best = float(metric)
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs > self.patience:
                self.lr = max(self.lr * self.factor, self.min_lr)
                self.bad_epochs = 0
        return self.lr

    def state(self) -> dict:
        return {"kind": "plateau", "lr": self.lr, "best": _json_float(self.best), "bad_epochs": self.bad_epochs}

    def load_state(self, state: dict) -> None:
        _check_kind(state, "plateau")
        self.lr = float(state["lr"])
        self.best = float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])


def build_schedule(kind: str, lr: float, step_epochs: int = 10, factor: float = 0.5, patience: int = 2, min_lr: float = 1e-6):
    """'none' -> ConstantLR, 'step' -> StepDecay(step_epochs, factor), 'plateau' -> ReduceOnPlateau(factor, patience, min_lr)."""
    if kind == "none":
        return ConstantLR(lr)
    if kind == "step":
        return StepDecay(lr, step_epochs, factor)
    if kind == "plateau":
        return ReduceOnPlateau(lr, factor, patience, min_lr)
    raise ValueError(f"unknown learning-rate schedule {kind!r}: choose 'none', 'step' or 'plateau'")


# ----------------------------------------------------------------------------- early stopping


class EarlyStopping:
    """Stop when the validation metric (lower is better) has not improved for `patience` epochs.

    update(epoch, metric) -> True when this epoch is a new best. should_stop becomes True after
    `patience` epochs in a row without a new best. patience = 0 turns early stopping off.
    """

    def __init__(self, patience: int):
        if int(patience) != patience or patience < 0:
            raise ValueError(f"patience must be an integer >= 0 (0 = off), got {patience!r}")
        self.patience = int(patience)
        self.best = math.inf
        self.best_epoch = 0
        self.bad_epochs = 0

    def update(self, epoch: int, metric: float) -> bool:
        if metric < self.best:
            self.best, self.best_epoch, self.bad_epochs = float(metric), int(epoch), 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience

    def state(self) -> dict:
        return {"patience": self.patience, "best": _json_float(self.best), "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state(self, state: dict) -> None:
        self.patience = int(state["patience"])
        self.best = float(state["best"])
        self.best_epoch = int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])


# ----------------------------------------------------------------------------- helpers


def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _check_kind(state, kind):
    if state.get("kind") != kind:
        raise ValueError(f"schedule state is for {state.get('kind')!r}, this schedule is {kind!r}")


def _json_float(x: float) -> float | str:
    """inf is not valid JSON: store it as the string 'inf' (float('inf') reads it back)."""
    return x if math.isfinite(x) else str(x)
