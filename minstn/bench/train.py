"""Training throughput of each model: images per second of forward + backward + an Adam update.

    python -m minstn.bench train [--models cnn ffn-stn lstm-stn] [--downsample 1 2]
                                 [--batch-size 64] [--steps 5] [--warmup 1] [--threads T]
                                 [--device cpu] [--no-torch]

Each model is timed on random canvases (float32, batch 64, dropout on, minstn.optim.Adam at
lr 1e-3). Where torch is importable, the same architecture written in PyTorch
(minstn.bench.torch_models) is timed in the same run with the same thread count
(torch.set_num_threads(T)), and the ratio minstn / PyTorch is printed. NumPy's BLAS picks its
thread count when it loads, from OMP_NUM_THREADS / OPENBLAS_NUM_THREADS (default: all cores);
to compare at T threads run `OMP_NUM_THREADS=T python -m minstn.bench train --threads T`.

measure_images_per_sec() is also used by the GPU benchmark (minstn.bench.gpu).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

from minstn.bench import cpu_model

__all__ = ["measure_images_per_sec", "measure_torch_images_per_sec", "main"]

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _batch(batch_size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.random((batch_size, 1, 100, 100), dtype=np.float32)   # (B, 1, 100, 100)
    labels = rng.integers(0, 10, size=(batch_size, 4))                  # (B, 4)
    return images, labels


def measure_images_per_sec(model_name: str, downsample: int, device="cpu", batch_size: int = 64, steps: int = 5,
                           warmup: int = 1, **options) -> float:
    """Training images/s of one minstn model: `warmup` untimed steps, then `steps` timed steps of
    loss_and_grads (forward, loss, backward) + Adam.step, float32, on `device`."""
    from minstn.backend import resolve_device
    from minstn.models import build_model
    from minstn.optim import Adam

    if steps < 1 or warmup < 0 or batch_size < 1:
        raise ValueError(f"need steps >= 1, warmup >= 0, batch_size >= 1; got {steps}, {warmup}, {batch_size}")
    dev = resolve_device(device)
    model = build_model(model_name, downsample, dtype="float32", device=dev, seed=0, **options)
    opt = Adam(model.params, lr=1e-3)
    images, labels = _batch(batch_size)
    images = dev.asarray(images)
    rng = np.random.default_rng(0)
    for _ in range(warmup):
        model.loss_and_grads(images, labels, rng=rng)
        opt.step(model.grads)
    dev.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        model.loss_and_grads(images, labels, rng=rng)
        opt.step(model.grads)
    dev.synchronize()
    return steps * batch_size / (time.perf_counter() - t0)


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
                    help="PyTorch threads (default: the machine's cores); set OMP_NUM_THREADS to the same for NumPy")
    ap.add_argument("--device", default="cpu", help="device of the minstn models (default cpu)")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    args = ap.parse_args(argv)
    for d in args.downsample:
        if not 1 <= d <= 4:
            ap.error(f"--downsample values must be in 1..4, got {d}")
    threads = args.threads or os.cpu_count() or 1
    blas = ", ".join(f"{v}={os.environ[v]}" for v in _THREAD_VARS if v in os.environ) or "BLAS threads unset (all cores)"
    torch_ok = False
    if not args.no_torch:
        try:
            import torch

            torch.set_num_threads(threads)
            torch_ok = True
        except ImportError:
            print("torch is not importable: timing minstn only (pip install torch for the comparison)")
    print(f"# training images/s, batch {args.batch_size}, {args.steps} timed steps after {args.warmup} warm-up, "
          f"float32, device {args.device}, torch threads {threads}, NumPy: {blas}")
    print(f"# CPU: {cpu_model()} ({os.cpu_count()} logical cores); {_versions()}")
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
    header = "| model | d | minstn img/s |" + (" PyTorch img/s | ratio |" if torch_ok else "")
    print(header)
    print("|" + " --- |" * (header.count("|") - 1))
    for name in args.models:
        for d in (args.downsample if name != "cnn" else [1]):
            ours = measure_images_per_sec(name, d, device=args.device, batch_size=args.batch_size,
                                          steps=args.steps, warmup=args.warmup)
            row = f"| {name} | {d} | {ours:.1f} |"
            if torch_ok:
                theirs = measure_torch_images_per_sec(name, d, batch_size=args.batch_size, steps=args.steps,
                                                      warmup=args.warmup)
                row += f" {theirs:.1f} | {ours / theirs:.2f} |"
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
