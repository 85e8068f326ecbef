"""`python -m minstn.bench gpu`: the GPU path, timed.

    python -m minstn.bench gpu [--device gpu:N] [--repeat N] [--warmup N]
                               [--batch-size B] [--steps S] [--no-torch] [--no-train]

1. The bilinear sampler, forward + backward, float32, U (256, 1, 100, 100) sampled onto a
   50x50 and a 100x100 grid (the paper's canvas; d = 2 and d = 1), for
       kernel   minstn's CUDA raw kernels (minstn.ops.fast.cuda), impl='kernel'
       array    minstn.ops.fast's array code (the quad gather) run by CuPy, impl='array'
       torch    torch.nn.functional.grid_sample(mode='bilinear', padding_mode='zeros',
                align_corners=False) with autograd, on CUDA (where torch with CUDA imports)
   all in the same run on the same inputs.  Each timing is the median over --repeat runs after
   --warmup runs; one run is: synchronize the device, start the clock, forward + backward,
   synchronize, stop the clock (wall time, so kernel-launch overhead counts).
   Columns: microseconds per forward + backward; effective GB/s = sampler_bytes() / time;
   time / kernel (above 1 = slower than the kernel); max |V - V_kernel| (a correctness check).
2. Training images per second of each model at d = 2 on the GPU (float32, forward + backward +
   Adam), from minstn.bench.train.measure_images_per_sec(model, downsample, device, batch_size,
   steps); the two STN models once with the CUDA kernels (sampler_impl='kernel') and once with
   the CuPy array code (sampler_impl='array').

Without CuPy or a usable GPU it prints the DeviceError's message and exits with code 1.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime, timezone

import numpy as np

from minstn import ops
from minstn.ops import fast
from minstn.backend import DeviceError, resolve_device, to_numpy

# (N, C, H, W, H_out, W_out): the paper's 100x100 canvas, batch 256, sampled at d = 2 and d = 1.
SAMPLER_CASES = [(256, 1, 100, 100, 50, 50), (256, 1, 100, 100, 100, 100)]
MODELS = ("cnn", "ffn-stn", "lstm-stn")


def sampler_bytes(N, C, H, W, H_out, W_out, itemsize=4):
    """Bytes counted for the effective bandwidth of one sampler forward + backward.

    Every array the op must touch, once each:
        forward    read U (N C H W) and grid (N H_out W_out 2), write V (N C H_out W_out)
        backward   read dV (N C H_out W_out), U and grid again, write dU (N C H W) and
                   dgrid (N H_out W_out 2)
    Not counted: zero-filling dU, the read-modify-write of the atomic adds, re-reads of a pixel
    shared by several points, and the array code's intermediate arrays.  So it is a lower
    bound of the real traffic, the same for every implementation.
    """
    u = N * C * H * W
    g = N * H_out * W_out * 2
    v = N * C * H_out * W_out
    forward = u + g + v
    backward = v + u + g + u + g
    return (forward + backward) * itemsize


def median_us(step, synchronize, repeat, warmup):
    """Median wall time of step() in microseconds, the device synchronized around each run."""
    for _ in range(warmup):
        step()
    synchronize()
    times = []
    for _ in range(repeat):
        synchronize()
        t0 = time.perf_counter()
        step()
        synchronize()
        times.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(times)


def make_sampler_inputs(shape, seed=0):
    """Float32 NumPy inputs for one case: U, a grid from near-identity thetas (some points
    fall outside), and an upstream gradient dV."""
    N, C, H, W, H_out, W_out = shape
    rng = np.random.default_rng(seed)
    U = rng.random((N, C, H, W), dtype=np.float32)  # (N, C, H, W)
    theta = np.array([[0.9, 0.0, 0.0], [0.0, 0.9, 0.0]]) + 0.15 * rng.standard_normal((N, 2, 3))
    grid, _ = ops.affine_grid_forward(theta.astype(np.float32), (H_out, W_out))  # (N, H_out, W_out, 2)
    dV = rng.standard_normal((N, C, H_out, W_out)).astype(np.float32)  # (N, C, H_out, W_out)
    return U, grid, dV


def minstn_sampler_step(dev, U, grid, dV, impl):
    """(step, V): step() runs minstn's sampler forward + backward on `dev` with `impl`."""
    U_d, grid_d, dV_d = dev.asarray(U), dev.asarray(grid), dev.asarray(dV)

    def step():
        V, cache = fast.bilinear_sample_forward(U_d, grid_d, impl=impl)
        return fast.bilinear_sample_backward(dV_d, cache)

    V, _ = fast.bilinear_sample_forward(U_d, grid_d, impl=impl)
    return step, to_numpy(V)


def torch_sampler_step(torch, torch_device, U, grid, dV):
    """(step, V): step() runs torch grid_sample forward + backward (autograd) on torch_device
    ('cuda:N' in the benchmark; 'cpu' works too, which the tests use)."""
    import torch.nn.functional as TF

    U_t = torch.tensor(U, device=torch_device, requires_grad=True)  # (N, C, H, W)
    grid_t = torch.tensor(grid, device=torch_device, requires_grad=True)  # (N, H_out, W_out, 2)
    dV_t = torch.tensor(dV, device=torch_device)  # (N, C, H_out, W_out)

    def step():
        U_t.grad = None
        grid_t.grad = None
        V = TF.grid_sample(U_t, grid_t, mode="bilinear", padding_mode="zeros", align_corners=False)
        V.backward(dV_t)

    with torch.no_grad():
        V = TF.grid_sample(U_t, grid_t, mode="bilinear", padding_mode="zeros", align_corners=False)
    return step, V.cpu().numpy()


def sampler_rows(dev, cases=SAMPLER_CASES, impls=("kernel", "array"), torch=None, repeat=20, warmup=3):
    """One row per (case, implementation): dicts with case, impl, us, gbps, ratio, maxdiff.

    The first implementation in `impls` is the reference of the ratio and maxdiff columns.
    """
    rows = []
    for shape in cases:
        U, grid, dV = make_sampler_inputs(shape)
        nbytes = sampler_bytes(*shape, itemsize=4)
        results = []
        for impl in impls:
            step, V = minstn_sampler_step(dev, U, grid, dV, impl)
            results.append((impl, median_us(step, dev.synchronize, repeat, warmup), V))
        if torch is not None:
            on_gpu = dev.kind == "gpu"
            step, V = torch_sampler_step(torch, f"cuda:{dev.index}" if on_gpu else "cpu", U, grid, dV)
            sync = torch.cuda.synchronize if on_gpu else (lambda: None)
            results.append(("torch", median_us(step, sync, repeat, warmup), V))
        ref_us, ref_V = results[0][1], results[0][2]
        for impl, us, V in results:
            rows.append({
                "case": "({}, {}, {}, {}) -> {}x{}".format(*shape),
                "impl": impl,
                "us": us,
                "gbps": nbytes / (us * 1e-6) / 1e9,
                "ratio": us / ref_us,
                "maxdiff": float(np.abs(V - ref_V).max()),
            })
    return rows


def format_sampler_table(rows, reference="kernel"):
    lines = [
        f"| case (N, C, H, W) -> H_out x W_out | impl | fwd+bwd us | effective GB/s | time / {reference} | max abs V - V_{reference} |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r['case']} | {r['impl']} | {r['us']:.1f} | {r['gbps']:.3g} | {r['ratio']:.2f} | {r['maxdiff']:.2g} |")
    return "\n".join(lines)


def _import_torch_cuda():
    """torch if it imports and sees CUDA, else None and the reason."""
    try:
        import torch
    except ImportError as e:
        return None, f"torch is not importable ({e})"
    if not torch.cuda.is_available():
        return None, f"torch {torch.__version__} has no CUDA device (a CPU build?)"
    return torch, ""


def trainer_step(model_name: str, downsample: int, dev, batch_size: int, steps: int, warmup: int = 1, **options):
    """The trainer's own step (minstn.training.loop.Run.step: forward, backward, one fetch of loss,
    norm and wrong digits, clipping, FlatAdam) on random canvases resident on `dev`.
    Returns (images/s, device operations per step, host syncs per step); the two counts are None
    unless CuPy is the test stand-in (tests/fake_cupy.py), which counts them."""
    from minstn.models import build_model
    from minstn.training import TrainConfig
    from minstn.training.console import Console
    from minstn.training.loop import Run
    from minstn.training.run import RunFolder
    from minstn.training.speed import make_runner

    rng = np.random.default_rng(0)
    n = 2 * batch_size
    splits = {s: {"images": rng.random((n, 1, 100, 100), dtype=np.float32), "labels": rng.integers(0, 10, size=(n, 4))}
              for s in ("train", "val")}
    model = build_model(model_name, downsample, device=dev, seed=0, **options)
    run = Run(TrainConfig(model=model_name, downsample=downsample, batch_size=batch_size, device=str(dev)), model,
              make_runner(model, 0, 1), splits, RunFolder("unused"), Console(verbosity=0))
    with dev.scope():
        idx = dev.asarray(np.arange(batch_size))
        batch = (run.train_x[idx], run.train_y[idx])
    for _ in range(warmup):
        run.step(*batch)
    counts = getattr(sys.modules.get("cupy"), "COUNTS", None) if dev.kind == "gpu" else None
    dev.synchronize()
    before = dict(counts) if counts is not None else None
    t0 = time.perf_counter()
    for _ in range(steps):
        run.step(*batch)
    after = dict(counts) if counts is not None else None       # before the timing's own synchronize
    dev.synchronize()
    seconds = time.perf_counter() - t0
    if counts is None:
        return steps * batch_size / seconds, None, None
    return (steps * batch_size / seconds, (after["ops"] - before["ops"]) / steps, (after["syncs"] - before["syncs"]) / steps)


def train_rows(dev, batch_size, steps, warmup=1, sampler_impls=("kernel", "array"), models=MODELS):
    """The trainer step's images/s of each model at d = 2 on `dev` (and, on the test stand-in,
    its device operations and host syncs per step): a list of (model, sampler_impl, images/s,
    ops, syncs), the STN models once per sampler implementation ('-' for the CNN)."""
    rows = []
    for model in models:
        for impl in (("-",) if model == "cnn" else sampler_impls):
            options = {} if impl == "-" else {"sampler_impl": impl}
            ips, ops, syncs = trainer_step(model, 2, dev, batch_size, steps, warmup=warmup, **options)
            rows.append((model, impl, float(ips), ops, syncs))
    return rows, ""


def build_parser():
    p = argparse.ArgumentParser(prog="python -m minstn.bench gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="gpu", help="the GPU to time: gpu or gpu:N (default gpu)")
    p.add_argument("--repeat", type=int, default=20, help="timed runs per case; the median is reported (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs before timing (default 3)")
    p.add_argument("--batch-size", type=int, default=64, help="training batch size (default 64)")
    p.add_argument("--steps", type=int, default=20, help="training steps timed per model (default 20)")
    p.add_argument("--no-torch", action="store_true", help="skip the torch grid_sample comparison")
    p.add_argument("--no-train", action="store_true", help="skip the training throughput")
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)  # unknown options: argparse prints the usage and exits 2
    if args.repeat < 1 or args.warmup < 0 or args.batch_size < 1 or args.steps < 1:
        print("error: --repeat, --batch-size and --steps must be >= 1 and --warmup >= 0", file=sys.stderr)
        return 2
    try:
        dev = resolve_device(args.device)
    except DeviceError as e:
        print(f"error: {e}", file=sys.stderr)
        print("(this benchmark needs CuPy and a CUDA GPU; benchmarks/gpu.md says how its figures are made)", file=sys.stderr)
        return 1
    if dev.kind != "gpu":
        print(f"error: this benchmark times the GPU path; use --device gpu or gpu:N, not {args.device!r} "
              "(`python -m minstn.bench ops` times the CPU)", file=sys.stderr)
        return 2
    dev.use()
    import cupy

    torch, torch_note = (None, "skipped (--no-torch)") if args.no_torch else _import_torch_cuda()
    props = cupy.cuda.runtime.getDeviceProperties(dev.index)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    print(f"# minstn GPU benchmark, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"command: python -m minstn.bench gpu {' '.join(argv)}".rstrip())
    print(f"device: {dev} = {name}; CuPy {cupy.__version__}, CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}; "
          f"torch {torch.__version__ if torch is not None else '- (' + torch_note + ')'}")
    print(f"float32; median of {args.repeat} runs after {args.warmup} warm-up runs; wall time with the device "
          "synchronized before and after each run")
    print("effective GB/s counts U, grid, V (forward) and dV, U, grid, dU, dgrid (backward), each once")
    print()
    rows = sampler_rows(dev, torch=torch, repeat=args.repeat, warmup=args.warmup)
    print("## Bilinear sampler, forward + backward")
    print()
    print(format_sampler_table(rows))
    print()
    if args.no_train:
        return 0
    print(f"## Training images/s at d = 2 (batch {args.batch_size}, {args.steps} steps)")
    print()
    train, note = train_rows(dev, args.batch_size, args.steps, warmup=max(1, args.warmup))
    if train is None:
        print(f"note: {note}")
        return 0
    print("| model | sampler_impl | images/s | device operations per step | host syncs per step |")
    print("| --- | --- | ---: | ---: | ---: |")
    for model, impl, ips, n_ops, syncs in train:
        counted = ("-", "-") if n_ops is None else (f"{n_ops:.0f}", f"{syncs:.0f}")
        print(f"| {model} | {impl} | {ips:.0f} | {counted[0]} | {counted[1]} |")
    return 0


if __name__ == "__main__":
    from minstn.training.console import run_cli
    run_cli(main)
