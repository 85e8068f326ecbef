"""Training throughput of each model: images per second of forward + backward + an Adam update.

    python -m minstn.bench train [--models cnn ffn-stn lstm-stn] [--downsample 1 2]
                                 [--batch-size 64] [--steps 5] [--warmup 1] [--threads T]
                                 [--chunk C] [--workers T] [--parallel process|thread]
                                 [--rounds R] [--device cpu] [--no-torch]
    python -m minstn.bench train --profile --models lstm-stn --downsample 2   # seconds in each op

Each model is timed on random canvases (float32, batch 64, dropout on, minstn.training.optim.Adam at
lr 1e-3) the way `python -m minstn.train` runs it on the CPU: the batch cut into chunks (one per
worker, at most 32 canvases: minstn.training.speed.default_chunk), processed by T worker processes, BLAS
single-threaded (minstn.training.speed.processes; see minstn.training.speed.host). The column "threads" is the same
on T worker threads (Model.loss_and_grads, chunks of 16), and "whole batch" the model without
chunks or workers, BLAS on T threads, for comparison. Where torch is importable, the same
architecture written in PyTorch (minstn.bench.torch_models) is timed in the same run with T
threads (torch.set_num_threads(T)), and the ratio minstn / PyTorch (both on T cores) is printed.
T defaults to the cores this process may use.

measure_images_per_sec() is also used by the GPU benchmark (minstn.bench.gpu).
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from minstn.training.speed import host
from minstn.training.speed.host import cpu_model
from minstn.training.speed import default_chunk

__all__ = ["measure_images_per_sec", "measure_torch_images_per_sec", "profile_ops", "main"]

def _batch(batch_size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.random((batch_size, 1, 100, 100), dtype=np.float32)   # (B, 1, 100, 100)
    labels = rng.integers(0, 10, size=(batch_size, 4))                  # (B, 4)
    return images, labels


def measure_images_per_sec(model_name: str, downsample: int, device="cpu", batch_size: int = 64, steps: int = 5,
                           warmup: int = 1, chunk: int = 0, workers: int = 1, parallel: str = "thread",
                           **options) -> float:
    """Training images/s of one minstn model: `warmup` untimed steps, then `steps` timed steps of
    loss_and_grads (forward, loss, backward; `chunk` and `workers` as there) + Adam.step, float32,
    on `device`. The step runs on minstn.training.speed.make_runner(model, chunk, workers, parallel),
    as in the trainer (worker processes start before the warm-up). The caller sets the BLAS threads
    (minstn.training.speed.host.set_blas_threads)."""
    from minstn.backend import resolve_device
    from minstn.models import build_model
    from minstn.training.optim import Adam
    from minstn.training.speed import make_runner

    if steps < 1 or warmup < 0 or batch_size < 1:
        raise ValueError(f"need steps >= 1, warmup >= 0, batch_size >= 1; got {steps}, {warmup}, {batch_size}")
    dev = resolve_device(device)
    model = build_model(model_name, downsample, dtype="float32", device=dev, seed=0, **options)
    opt = Adam(model.params, lr=1e-3)
    images, labels = _batch(batch_size)
    images = dev.asarray(images)
    rng = np.random.default_rng(0)
    runner = make_runner(model, chunk, workers if chunk else 1, parallel)     # worker processes start here
    try:
        def step():
            runner.loss_and_grads(images, labels, rng)
            opt.step(model.grads)

        for _ in range(warmup):
            step()
        dev.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        dev.synchronize()
        return steps * batch_size / (time.perf_counter() - t0)
    finally:
        runner.close()


def measure_torch_images_per_sec(model_name: str, downsample: int, batch_size: int = 64, steps: int = 5,
                                 warmup: int = 1, **options) -> float:
    """The same measurement for the PyTorch twin (CPU, float32, torch.optim.Adam)."""
    import torch

    from minstn.bench.torch_models import build_torch_model

    torch.manual_seed(0)
    model = build_torch_model(model_name, downsample, **options)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    images, labels = _batch(batch_size)
    x = torch.from_numpy(images)
    y = torch.from_numpy(labels)

    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(x)                                                    # (B, 4, 10)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 10), y.reshape(-1))
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - t0)


def profile_ops(model_name: str, downsample: int, batch_size: int = 64, steps: int = 3, chunk: int = 0) -> tuple:
    """Seconds per training step spent in each op function (CPU, one worker, float32).

    Every forward/backward function of minstn.ops and minstn.ops.fast (the ones the models run,
    named 'fast.<name>') is wrapped with a timer for the duration of the call (the models look
    them up at every call, through minstn.ops.switch), so the table adds up to the step's time
    minus the model code between the calls; a fast op that calls a plain one counts both.
    Returns (seconds per step, {op name: seconds per step}).
    """
    import minstn.ops as plain
    import minstn.ops.fast as fast
    from minstn.models import build_model
    from minstn.training.speed import make_runner

    totals = {}
    wrapped = [(module, prefix, n) for module, prefix in ((plain, ""), (fast, "fast."))
               for n in module.__all__ if n.endswith(("_forward", "_backward")) or n == "softmax_cross_entropy"]
    originals = {(prefix, n): getattr(module, n) for module, prefix, n in wrapped}

    def timed(name, fn):
        def call(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[name] = totals.get(name, 0.0) + time.perf_counter() - t
        return call

    model = build_model(model_name, downsample, dtype="float32", seed=0)
    runner = make_runner(model, chunk, 1, "thread")
    images, labels = _batch(batch_size)
    rng = np.random.default_rng(0)
    try:
        for module, prefix, n in wrapped:
            setattr(module, n, timed(prefix + n, originals[(prefix, n)]))
        runner.loss_and_grads(images, labels, rng)      # warm-up
        totals.clear()
        t0 = time.perf_counter()
        for _ in range(steps):
            runner.loss_and_grads(images, labels, rng)
        step = (time.perf_counter() - t0) / steps
    finally:
        for module, prefix, n in wrapped:
            setattr(module, n, originals[(prefix, n)])
    return step, {k: v / steps for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def _versions() -> str:
    parts = [f"python {platform.python_version()}", f"numpy {np.__version__}"]
    try:
        import torch

        parts.append(f"torch {torch.__version__}")
    except ImportError:
        parts.append("torch not installed")
    return ", ".join(parts)


def main(argv=None) -> int:
    from minstn.models import MODEL_NAMES

    ap = argparse.ArgumentParser(prog="python -m minstn.bench train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES, help="models to time")
    ap.add_argument("--downsample", nargs="+", type=int, default=[1, 2], help="glimpse down-sampling factors d (1..4)")
    ap.add_argument("--batch-size", type=int, default=64, help="canvases per step (default 64)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per measurement (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    ap.add_argument("--threads", type=int, default=None,
                    help="cores for both sides: PyTorch threads, minstn worker threads and 'whole batch' BLAS threads "
                         "(default: the cores this process may use)")
    ap.add_argument("--chunk", type=int, default=None,
                    help="minstn: canvases per chunk (default as the trainer: minstn.training.speed.default_chunk, "
                         "32 for batch 64 on 2 worker processes, 16 on threads)")
    ap.add_argument("--workers", type=int, default=None, help="minstn: workers (default: --threads)")
    ap.add_argument("--parallel", choices=("process", "thread"), default="process",
                    help="minstn: the workers are processes (default, as the trainer) or threads")
    ap.add_argument("--no-threads-column", action="store_true",
                    help="skip the 'threads' column (the same chunks on worker threads instead of processes)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure every column this many times, interleaved, and print the medians (default 1); "
                         "the machine's speed drifts, and interleaving exposes both sides to the same drift")
    ap.add_argument("--device", default="cpu", help="device of the minstn models (default cpu)")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    ap.add_argument("--no-whole", action="store_true", help="skip the minstn 'whole batch' column")
    ap.add_argument("--profile", action="store_true",
                    help="instead of the comparison: seconds per step in each op, one worker, BLAS on --threads")
    ap.add_argument("--no-keep-memory", action="store_true",
                    help="leave glibc's malloc as it is (by default the benchmark, like the trainer, calls "
                         "minstn.training.speed.host.keep_freed_memory(), which speeds up both sides)")
    args = ap.parse_args(argv)
    for d in args.downsample:
        if not 1 <= d <= 4:
            ap.error(f"--downsample values must be in 1..4, got {d}")
    if (args.chunk is not None and args.chunk < 0) or (args.threads is not None and args.threads < 1) or (
            args.workers is not None and args.workers < 1):
        ap.error("--chunk must be >= 0, --threads and --workers >= 1")
    if args.rounds < 1:
        ap.error(f"--rounds must be at least 1, got {args.rounds}")
    threads = args.threads or host.cpu_count()
    workers = args.workers or threads
    if args.device != "cpu":
        chunk, workers, thread_chunk = 0, 1, 0
    else:
        chunk = default_chunk(args.batch_size, workers, args.parallel) if args.chunk is None else args.chunk
        thread_chunk = default_chunk(args.batch_size, workers, "thread") if args.chunk is None else args.chunk
        if chunk == 0 and workers > 1:
            ap.error("--workers above 1 needs --chunk above 0")
    kept = False if args.no_keep_memory else host.keep_freed_memory()
    if args.profile:
        return _profile(args, threads, chunk)
    torch_ok = False
    if not args.no_torch:
        try:
            import torch

            torch.set_num_threads(threads)
            torch_ok = True
        except ImportError:
            print("torch is not importable: timing minstn only (pip install torch for the comparison)")
    whole = not args.no_whole and args.device == "cpu" and (chunk, workers) != (0, 1)
    processes = args.parallel == "process" and workers > 1 and args.device == "cpu"
    thread_col = processes and not args.no_threads_column
    print(f"# training images/s, batch {args.batch_size}, {args.steps} timed steps after {args.warmup} warm-up, "
          f"float32, device {args.device}, {threads} thread(s) for each side"
          + (f", median of {args.rounds} interleaved rounds" if args.rounds > 1 else ""))
    print(f"# minstn: chunks of {chunk or args.batch_size} on {workers} worker {'processes' if processes else 'thread(s)'}, "
          f"BLAS {1 if workers > 1 else threads} thread(s)"
          + (f"; 'threads': chunks of {thread_chunk} on worker threads" if thread_col else "")
          + (f"; 'whole batch': no chunks, BLAS {threads} threads" if whole else ""))
    print(f"# process-wide for both sides: glibc keeps freed memory (minstn.training.speed.host.keep_freed_memory): {'yes' if kept else 'no'}")
    print(f"# CPU: {cpu_model()} ({os.cpu_count()} logical cores); {_versions()}")
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
    header = ("| model | d | minstn img/s |" + (" threads img/s |" if thread_col else "")
              + (" whole batch img/s |" if whole else "") + (" PyTorch img/s | ratio |" if torch_ok else ""))
    print(header)
    print("|" + " --- |" * (header.count("|") - 1))
    with host.preserved_blas_threads():   # leave the process as it was
        _rows(args, threads, workers, chunk, thread_chunk, whole, thread_col, torch_ok)
    return 0


def _profile(args, threads, chunk) -> int:
    with host.preserved_blas_threads():
        host.set_blas_threads(threads)
        print(f"# seconds per training step in each minstn.ops function: batch {args.batch_size}, chunks of "
              f"{chunk or args.batch_size}, one worker, BLAS {threads} thread(s), mean of {args.steps} steps")
        print(f"# CPU: {cpu_model()} ({os.cpu_count()} logical cores); {_versions()}")
        for name in args.models:
            for d in (args.downsample if name != "cnn" else [1]):
                step, per_op = profile_ops(name, d, args.batch_size, args.steps, chunk)
                print(f"\n{name} d={d}: {step:.3f} s per step ({args.batch_size / step:.1f} img/s), "
                      f"{sum(per_op.values()) / step:.0%} of it inside the ops")
                print("| op | s / step | share |\n| --- | --- | --- |")
                for op, sec in per_op.items():
                    print(f"| {op} | {sec:.3f} | {sec / step:.0%} |")
    return 0


def _rows(args, threads, workers, chunk, thread_chunk, whole, thread_col, torch_ok) -> None:
    """Time each model and print its table row (medians over --rounds interleaved rounds)."""
    for name in args.models:
        for d in (args.downsample if name != "cnn" else [1]):
            common = dict(device=args.device, batch_size=args.batch_size, steps=args.steps, warmup=args.warmup)
            columns = [("minstn", lambda: _ours(name, d, threads, common, chunk=chunk, workers=workers,
                                               parallel=args.parallel))]
            if thread_col:
                columns.append(("threads", lambda: _ours(name, d, threads, common, chunk=thread_chunk,
                                                        workers=workers, parallel="thread")))
            if whole:
                columns.append(("whole", lambda: _ours(name, d, threads, common)))
            if torch_ok:
                columns.append(("torch", lambda: measure_torch_images_per_sec(
                    name, d, batch_size=args.batch_size, steps=args.steps, warmup=args.warmup)))
            runs = {key: [] for key, _ in columns}
            for _ in range(args.rounds):
                for key, measure in columns:
                    runs[key].append(measure())
            med = {key: float(np.median(v)) for key, v in runs.items()}
            row = f"| {name} | {d} | " + " | ".join(f"{med[key]:.1f}" for key, _ in columns) + " |"
            if torch_ok:
                row += f" {med['minstn'] / med['torch']:.2f} |"
            print(row, flush=True)


def _ours(name, d, threads, common, chunk=0, workers=1, parallel="thread") -> float:
    """One minstn measurement with the BLAS threads set as the trainer sets them."""
    host.set_blas_threads(1 if workers > 1 else threads)
    return measure_images_per_sec(name, d, chunk=chunk, workers=workers, parallel=parallel, **common)


if __name__ == "__main__":
    from minstn.training.console import run_cli
    run_cli(main)
