"""The prepared check of a real GPU: `python -m minstn.bench.gpu_check --out DIR` (make gpu-check).

Within --minutes (default 9) on one GPU it runs, in order, and writes DIR/gpu-check.md naming the device:

    1. the device: name, memory, driver and runtime versions, CuPy's version
    2. the GPU tests: pytest tests/test_gpu.py tests/test_cuda_source.py (every op and kernel
       against NumPy, float64 gradient checks of the kernels, a model step against the CPU, the
       CUDA source compiled by NVRTC and nvcc); the stand-in tests (tests/test_gpu_emulated.py)
       are CPU work that CI runs, so they are left out here
    3. python -m minstn.bench gpu: the CUDA sampler against CuPy array code and torch's
       grid_sample (where a CUDA build of torch imports), and the trainer step's images/s
    4. a short LSTM-STN d = 2 run at the paper's data sizes (70,000 / 20,000 / 2,000 canvases,
       the default recipe), budgeted in images, its test error recorded (DIR/train/result.json)

Each part has its own time limit, within what is left of --minutes, and a part that fails or runs
out of time is reported as such while the others still run; the exit status is 1 if any part did
not pass. The report starts with one line per part. It needs the MNIST files ($MINSTN_DATA_DIR or
--data-dir).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone

from minstn.fileio import atomic_write_bytes

PROG = "python -m minstn.bench.gpu_check"


def _run(cmd: list, timeout: int, env=None) -> tuple:
    """(return code or 'timeout', seconds, output) of a command."""
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        code, out = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as e:
        code = "timeout"
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
    return code, time.perf_counter() - t0, out


def device_lines() -> list:
    import cupy

    rt = cupy.cuda.runtime
    props = rt.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return [f"- device: {name}, {props['totalGlobalMem'] / 2**30:.0f} GiB, compute capability "
            f"{props['major']}.{props['minor']}",
            f"- CUDA driver {rt.driverGetVersion()}, runtime {rt.runtimeGetVersion()}; CuPy {cupy.__version__}; "
            f"Python {sys.version.split()[0]}"]


def _parts(args, py) -> list:
    """(title, command, time limit in seconds) of parts 2-4."""
    train = [py, "-m", "minstn.train", "--preset", "paper", "--device", "gpu", "--max-images", str(args.train_images),
             "--time-budget", str(args.train_minutes), "--out", os.path.join(args.out, "train"), "--no-progress"]
    return [
        ("GPU tests", [py, "-m", "pytest", "-q", "tests/test_gpu.py", "tests/test_cuda_source.py",
                       "-p", "no:cacheprovider"], 150),
        ("python -m minstn.bench gpu", [py, "-m", "minstn.bench", "gpu"], 120),
        # the run's own safety stop, plus time to make the canvases, test and draw the glimpses
        ("short LSTM-STN d=2 run, paper sizes", train, int(60 * args.train_minutes) + 120),
    ]


def _short_run_line(out: str) -> list:
    result = os.path.join(out, "train", "result.json")
    if not os.path.exists(result):
        return []
    with open(result) as f:
        r = json.load(f)
    shifted = f"{r['shifted_digit_error']:.2f} %" if "shifted_digit_error" in r else "-"
    return ["", f"Short run: test per-digit error {r['test_digit_error']:.2f} % after {r['images_seen']:,} images "
                f"in {r['elapsed'] / 60:.1f} min ({r['images_seen'] / max(1e-9, r['elapsed']):.0f} img/s with "
                f"validation), shifted layout {shifted}"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description="The prepared check of a real GPU (docs/gpu.md).")
    p.add_argument("--out", required=True, help="folder for gpu-check.md and the training run")
    p.add_argument("--data-dir", help="MNIST folder (default $MINSTN_DATA_DIR)")
    p.add_argument("--minutes", type=float, default=9.0,
                   help="the whole check's time limit (default 9); each part gets at most what is left")
    p.add_argument("--train-images", type=int, default=400_000, help="the short run's image budget (default 400,000)")
    p.add_argument("--train-minutes", type=float, default=3.0, help="its safety stop in minutes (default 3)")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.train_minutes <= 0 or args.train_images <= 0:
        p.error("--minutes, --train-minutes and --train-images must be positive")
    deadline = time.perf_counter() + 60 * args.minutes
    os.makedirs(args.out, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if args.data_dir:
        env["MINSTN_DATA_DIR"] = args.data_dir
    try:
        device = device_lines()
    except Exception as e:                                   # noqa: BLE001 - reported, not raised
        device = [f"- no usable GPU: {type(e).__name__}: {e}"]
    summary, body, passed = [], [], []
    for title, cmd, limit in _parts(args, sys.executable):
        limit = int(min(limit, deadline - time.perf_counter()))
        if limit < 10:
            code, seconds, out = "not run (the --minutes limit was spent)", 0.0, ""
        else:
            code, seconds, out = _run(cmd, limit, env)
        status = "passed" if code == 0 else ("timed out" if code == "timeout" else f"FAILED (exit {code})"
                                             if isinstance(code, int) else code)
        passed.append(code == 0)
        summary.append(f"- {title}: {status} after {seconds:.0f} s (limit {limit} s)")
        body += ["", f"## {title}", "", f"`{' '.join(cmd[1:])}`: exit {code} after {seconds:.0f} s (limit {limit} s)", "",
                 "```", out.strip()[-6000:], "```"]
        print(f"{title}: {status} after {seconds:.0f} s", flush=True)
    report = ([f"# GPU check, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", "",
               f"command: {PROG} " + " ".join(argv if argv is not None else sys.argv[1:]), ""]
              + device + [""] + summary + _short_run_line(args.out) + body)
    path = os.path.join(args.out, "gpu-check.md")
    atomic_write_bytes(path, ("\n".join(report) + "\n").encode())
    print(f"wrote {path}")
    return 0 if all(passed) else 1


if __name__ == "__main__":
    from minstn.training.console import run_cli
    run_cli(main)
