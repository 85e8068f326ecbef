"""`python -m minstn.bench ops`: each op's forward + backward at the paper's shapes, vs PyTorch CPU.

    python -m minstn.bench ops [--repeat N] [--threads T] [--batch B] [--only NAME] [--stat median|min] [--keep-memory] [--no-torch] [--plain]

Every case times one forward and one backward of a minstn op on float32 NumPy arrays (the
median of N runs after one warm-up), and, where torch is importable, the same computation in
PyTorch (forward + backward through autograd) in the same process with the same thread count.
The table lists minstn's forward time alone as well, and the ratio minstn / torch of the totals.
It times the ops the models run (minstn.ops.switch: the fast conv, conv + max-pool and sampler
of minstn.ops.fast); --plain times the plain op pairs of minstn.ops instead.

Threads: torch.set_num_threads(T) sets PyTorch's; NumPy's BLAS reads OPENBLAS_NUM_THREADS /
OMP_NUM_THREADS once, when it is loaded. So when those variables do not already say T, this
command re-runs itself once with them set (and says so), so that both libraries use T threads.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import datetime, timezone

import numpy as np

from minstn.ops.switch import ops, use_fast
from minstn.training.speed.host import cpu_model

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_REEXEC_FLAG = "MINSTN_BENCH_REEXEC"


def median_ms(fns, repeat: int, stat: str = "median") -> list:
    """Median (or minimum) wall time in ms of each function in `fns`, after one warm-up run each.

    The functions are timed round-robin (f1, f2, f3, f1, f2, f3, ...), so that a burst of load
    from other processes on a shared machine affects them alike and their ratio stays fair.
    """
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeat):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    reduce = np.min if stat == "min" else np.median
    return [1e3 * float(reduce(ts)) for ts in times]


# ---------------------------------------------------------------------------------------------
# the cases: each returns (name, shape text, minstn forward, minstn backward, torch fwd+bwd or None)


def _torch_fn(torch, build):
    """Wrap a torch forward builder: returns a function doing forward + backward."""

    def run():
        outs, grads = build()
        torch.autograd.backward(outs, grads)

    return run


def case_conv(rng, torch, N, C, F, H, pool=False):
    """conv 3x3 'same' (x (N, C, H, H), F filters), against torch's conv2d. pool=True: conv -> 2x2
    max-pool as the models run it (ops.conv2d_maxpool_*), against conv2d followed by max_pool2d."""
    x = rng.standard_normal((N, C, H, H), dtype=np.float32)
    w = (rng.standard_normal((F, C, 3, 3), dtype=np.float32) * np.float32(np.sqrt(2.0 / (9 * C))))
    b = np.zeros(F, np.float32)
    side = H // 2 if pool else H
    dout = rng.standard_normal((N, F, side, side), dtype=np.float32)
    forward, backward = ((ops.conv2d_maxpool_forward, ops.conv2d_maxpool_backward) if pool
                         else (ops.conv2d_forward, ops.conv2d_backward))
    state = {}

    def fwd():
        state["out"], state["cache"] = forward(x, w, b, "same")

    def bwd():
        backward(dout, state["cache"])

    tfn = None
    if torch is not None:
        xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
        dt = torch.tensor(dout)
        F_ = torch.nn.functional

        def build():
            out = F_.conv2d(xt, wt, bt, padding=1)
            return [F_.max_pool2d(out, 2) if pool else out], [dt]

        tfn = _torch_fn(torch, build)
    return f"conv 3x3 {C}->{F}" + (" + maxpool" if pool else ""), f"({N},{C},{H},{H})", fwd, bwd, tfn


def case_maxpool(rng, torch, N, C, H):
    x = rng.standard_normal((N, C, H, H), dtype=np.float32)
    dout = rng.standard_normal((N, C, H // 2, H // 2), dtype=np.float32)
    state = {}

    def fwd():
        state["out"], state["cache"] = ops.maxpool2d_forward(x)

    def bwd():
        ops.maxpool2d_backward(dout, state["cache"])

    tfn = None
    if torch is not None:
        xt, dt = torch.tensor(x, requires_grad=True), torch.tensor(dout)
        tfn = _torch_fn(torch, lambda: ([torch.nn.functional.max_pool2d(xt, 2)], [dt]))
    return "maxpool 2x2", f"({N},{C},{H},{H})", fwd, bwd, tfn


def case_avgpool(rng, torch, N, H, d):
    x = rng.standard_normal((N, 1, H, H), dtype=np.float32)
    dout = rng.standard_normal((N, 1, H // d, H // d), dtype=np.float32)
    state = {}

    def fwd():
        state["out"], state["cache"] = ops.avgpool2d_forward(x, d)

    def bwd():
        ops.avgpool2d_backward(dout, state["cache"])

    tfn = None
    if torch is not None:
        xt, dt = torch.tensor(x, requires_grad=True), torch.tensor(dout)
        tfn = _torch_fn(torch, lambda: ([torch.nn.functional.avg_pool2d(xt, d)], [dt]))
    return f"avgpool d={d}", f"({N},1,{H},{H})", fwd, bwd, tfn


def case_lstm(rng, torch, N, D, H):
    x = rng.standard_normal((N, D), dtype=np.float32)
    h0 = rng.standard_normal((N, H), dtype=np.float32)
    c0 = rng.standard_normal((N, H), dtype=np.float32)
    s = np.float32(1 / np.sqrt(H))
    Wx = rng.uniform(-s, s, (D, 4 * H)).astype(np.float32)
    Wh = rng.uniform(-s, s, (H, 4 * H)).astype(np.float32)
    b = np.zeros(4 * H, np.float32)
    dh = rng.standard_normal((N, H), dtype=np.float32)
    dc = rng.standard_normal((N, H), dtype=np.float32)
    state = {}

    def fwd():
        _, _, state["cache"] = ops.lstm_cell_forward(x, h0, c0, Wx, Wh, b)

    def bwd():
        ops.lstm_cell_backward(dh, dc, state["cache"])

    tfn = None
    if torch is not None:
        cell = torch.nn.LSTMCell(D, H)
        xt, ht, ct = (torch.tensor(a, requires_grad=True) for a in (x, h0, c0))
        dht, dct = torch.tensor(dh), torch.tensor(dc)

        def build():
            h1, c1 = cell(xt, (ht, ct))
            return [h1, c1], [dht, dct]

        tfn = _torch_fn(torch, build)
    return f"LSTM cell {D}->{H}", f"x ({N},{D})", fwd, bwd, tfn


def _zoom_thetas(rng, N):
    """Random rotations and zooms, with shifts that move some points off the canvas."""
    a = rng.uniform(-0.8, 0.8, N)
    s = rng.uniform(0.4, 1.0, N)
    theta = np.zeros((N, 2, 3), np.float32)
    theta[:, 0, 0] = s * np.cos(a)
    theta[:, 0, 1] = -s * np.sin(a)
    theta[:, 1, 0] = s * np.sin(a)
    theta[:, 1, 1] = s * np.cos(a)
    theta[:, :, 2] = rng.uniform(-0.5, 0.5, (N, 2))
    return theta


def case_affine_grid(rng, torch, N, H_out):
    theta = _zoom_thetas(rng, N)
    dgrid = rng.standard_normal((N, H_out, H_out, 2), dtype=np.float32)
    state = {}

    def fwd():
        state["grid"], state["cache"] = ops.affine_grid_forward(theta, (H_out, H_out))

    def bwd():
        ops.affine_grid_backward(dgrid, state["cache"])

    tfn = None
    if torch is not None:
        tt, dt = torch.tensor(theta, requires_grad=True), torch.tensor(dgrid)
        tfn = _torch_fn(
            torch, lambda: ([torch.nn.functional.affine_grid(tt, (N, 1, H_out, H_out), align_corners=False)], [dt])
        )
    return "affine grid", f"({N},2,3) -> {H_out}x{H_out}", fwd, bwd, tfn


def case_sampler(rng, torch, N, H, H_out):
    U = rng.random((N, 1, H, H), dtype=np.float32)
    grid, _ = ops.affine_grid_forward(_zoom_thetas(rng, N), (H_out, H_out))
    dV = rng.standard_normal((N, 1, H_out, H_out), dtype=np.float32)
    state = {}

    def fwd():
        state["V"], state["cache"] = ops.bilinear_sample_forward(U, grid)

    def bwd():
        ops.bilinear_sample_backward(dV, state["cache"])

    tfn = None
    if torch is not None:
        Ut, gt, dt = torch.tensor(U, requires_grad=True), torch.tensor(grid, requires_grad=True), torch.tensor(dV)
        tfn = _torch_fn(
            torch,
            lambda: (
                [torch.nn.functional.grid_sample(Ut, gt, mode="bilinear", padding_mode="zeros", align_corners=False)],
                [dt],
            ),
        )
    return "bilinear sampler", f"({N},1,{H},{H}) -> {H_out}x{H_out}", fwd, bwd, tfn


def all_cases(B: int):
    """(key, builder) for every benchmarked op at the paper's shapes, batch B."""
    return [
        ("conv1", lambda r, t: case_conv(r, t, B, 1, 20, 100)),  # localisation block 1
        ("conv20", lambda r, t: case_conv(r, t, B, 20, 20, 50)),  # localisation block 2
        ("conv32", lambda r, t: case_conv(r, t, B, 1, 32, 50)),  # classifier conv 1 at d = 2
        ("maxpool", lambda r, t: case_maxpool(r, t, B, 20, 100)),
        ("convpool1", lambda r, t: case_conv(r, t, B, 1, 20, 100, pool=True)),        # localisation block 1, fused
        ("convpool32", lambda r, t: case_conv(r, t, 4 * B, 32, 32, 25, pool=True)),   # classifier block 2, 4 glimpses per canvas at d = 2
        ("avgpool1", lambda r, t: case_avgpool(r, t, B, 100, 1)),
        ("avgpool2", lambda r, t: case_avgpool(r, t, B, 100, 2)),
        ("avgpool3", lambda r, t: case_avgpool(r, t, B, 100, 3)),
        ("avgpool4", lambda r, t: case_avgpool(r, t, B, 100, 4)),
        ("lstm", lambda r, t: case_lstm(r, t, B, 720, 256)),
        ("affine", lambda r, t: case_affine_grid(r, t, B, 100)),
        ("sampler100", lambda r, t: case_sampler(r, t, B, 100, 100)),
        ("sampler50", lambda r, t: case_sampler(r, t, B, 100, 50)),
    ]


# glibc returns large freed blocks to the OS at once, so every fresh multi-megabyte NumPy
# temporary is page-faulted in again; these settings make malloc keep and reuse them.
_KEEP_MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "4000000000", "MALLOC_TRIM_THRESHOLD_": "8000000000"}


def _reexec_if_needed(threads: int, keep_memory: bool, argv) -> None:
    """Re-run this benchmark once with the BLAS thread variables (and malloc settings) it needs:
    both are read by native libraries only when the process starts."""
    want = {v: str(threads) for v in _THREAD_VARS}
    if keep_memory:
        want.update(_KEEP_MEMORY_ENV)
    if os.environ.get(_REEXEC_FLAG) or all(os.environ.get(k) == v for k, v in want.items()):
        return
    env = dict(os.environ)
    env.update(want)
    env[_REEXEC_FLAG] = "1"
    shown = " ".join(f"{k}={v}" for k, v in want.items())
    print(f"(re-running with {shown})", flush=True)
    sys.exit(subprocess.call([sys.executable, "-m", "minstn.bench", "ops", *argv], env=env))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m minstn.bench ops", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=5, help="timed runs per op (median reported), after one warm-up")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for NumPy's BLAS and PyTorch")
    p.add_argument("--batch", type=int, default=64, help="batch size B")
    p.add_argument("--only", default=None, help="run only the cases whose key or name contains this text, e.g. conv")
    p.add_argument("--stat", choices=("median", "min"), default="median",
                   help="median (default) or min of the timed runs; min is steadier on a machine shared with other jobs")
    p.add_argument("--keep-memory", action="store_true",
                   help="run with glibc malloc settings that keep freed memory for reuse "
                   "(MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_), to measure the cost of page faults")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.add_argument("--plain", action="store_true",
                   help="time the plain op pairs of minstn.ops (textbook im2col conv, four-corner sampler) "
                   "instead of the fast ones the models run")
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.repeat < 1 or args.threads < 1 or args.batch < 1:
        print("error: --repeat, --threads and --batch must be >= 1", file=sys.stderr)
        return 2
    _reexec_if_needed(args.threads, args.keep_memory, argv)
    torch = None
    if not args.no_torch:
        try:
            import torch  # optional: only the comparison needs it
        except ImportError:
            print("(torch is not importable: timing minstn only)")
    if torch is not None:
        torch.set_num_threads(args.threads)
    cases = all_cases(args.batch)
    if args.only:
        cases = [(k, c) for k, c in cases if args.only in k]
        if not cases:
            print(f"error: --only {args.only!r} matches no case; keys: {', '.join(k for k, _ in all_cases(1))}", file=sys.stderr)
            return 2
    print(f"# minstn op benchmark, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"command: python -m minstn.bench ops {' '.join(argv)}".rstrip())
    print(f"cpu: {cpu_model()}, {os.cpu_count()} logical cores; threads: {args.threads}; "
          f"numpy {np.__version__}; torch {torch.__version__ if torch is not None else '-'}; "
          f"float32, batch {args.batch}, {args.stat} of {args.repeat} after 1 warm-up, "
          f"minstn and torch timed round-robin; glibc malloc keeps freed memory: {'yes' if args.keep_memory else 'no (default)'}; "
          f"minstn ops: {'plain (minstn.ops)' if args.plain else 'fast where there is one (minstn.ops.fast, as the models run)'}")
    print()
    print("| op | shape | minstn fwd ms | minstn fwd+bwd ms | torch fwd+bwd ms | ratio |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    rng = np.random.default_rng(0)
    with use_fast(not args.plain):
        _run_cases(cases, rng, torch, args)
    return 0


def _run_cases(cases, rng, torch, args) -> None:
    """Time each case and print its table row."""
    for key, build in cases:
        name, shape, fwd, bwd, tfn = build(rng, torch)

        def both():
            fwd()
            bwd()

        if tfn is not None:
            t_fwd, t_both, t_torch = median_ms([fwd, both, tfn], args.repeat, args.stat)
            tail = f"{t_torch:.1f} | {t_both / t_torch:.2f}"
        else:
            t_fwd, t_both = median_ms([fwd, both], args.repeat, args.stat)
            tail = "- | -"
        print(f"| {name} | {shape} | {t_fwd:.1f} | {t_both:.1f} | {tail} |", flush=True)


if __name__ == "__main__":
    from minstn.training.console import run_cli
    run_cli(main)
