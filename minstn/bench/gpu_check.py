"""The prepared check of a real GPU: `python -m minstn.bench.gpu_check --out DIR` (make gpu-check).

Within about ten minutes on one GPU it runs, in order, and writes DIR/gpu-check.md naming the device:

    1. the device: name, memory, driver and runtime versions, CuPy's version
    2. the GPU tests: pytest -m "gpu or gpu_emulated" (every op and kernel against NumPy, float64
       gradient checks of the kernels, a model step against the CPU, the stand-in tests)
    3. python -m minstn.bench gpu: the CUDA sampler against CuPy array code and torch's
       grid_sample (where a CUDA build of torch imports), and the trainer step's images/s
    4. a short LSTM-STN d = 2 run at the paper's data sizes (70,000 / 20,000 / 2,000 canvases,
       the default recipe), budgeted in images, its test error recorded (DIR/train/result.json)

Each part has its own time limit, and a part that fails or runs out of time is reported as such
while the others still run. It needs the MNIST files ($MINSTN_DATA_DIR or --data-dir).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone

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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description="The prepared check of a real GPU (docs/gpu.md).")
    p.add_argument("--out", required=True, help="folder for gpu-check.md and the training run")
    p.add_argument("--data-dir", help="MNIST folder (default $MINSTN_DATA_DIR)")
    p.add_argument("--train-images", type=int, default=400_000, help="the short run's image budget (default 400,000)")
    p.add_argument("--train-minutes", type=float, default=4.0, help="its safety stop in minutes (default 4)")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if args.data_dir:
        env["MINSTN_DATA_DIR"] = args.data_dir
    report = [f"# GPU check, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", "", f"command: {PROG} " + " ".join(argv or sys.argv[1:]), ""]
    try:
        report += device_lines()
    except Exception as e:                                   # noqa: BLE001 - reported, not raised
        report += [f"- no usable GPU: {type(e).__name__}: {e}"]
    py = sys.executable
    parts = [
        ("GPU tests", [py, "-m", "pytest", "-q", "-m", "gpu or gpu_emulated", "tests/test_gpu.py",
                       "tests/test_gpu_emulated.py", "tests/test_cuda_source.py", "-p", "no:cacheprovider"], 200),
        ("python -m minstn.bench gpu", [py, "-m", "minstn.bench", "gpu"], 150),
        ("short LSTM-STN d=2 run, paper sizes", [py, "-m", "minstn.train", "--preset", "paper", "--device", "gpu",
                                                 "--max-images", str(args.train_images), "--time-budget",
                                                 str(args.train_minutes), "--out", os.path.join(args.out, "train"),
                                                 "--no-progress"], int(60 * args.train_minutes) + 150),
    ]
    for title, cmd, limit in parts:
        code, seconds, out = _run(cmd, limit, env)
        report += ["", f"## {title}", "", f"`{' '.join(cmd[1:])}`: exit {code} after {seconds:.0f} s (limit {limit} s)", "",
                   "```", out.strip()[-6000:], "```"]
        print(f"{title}: exit {code} after {seconds:.0f} s", flush=True)
    result = os.path.join(args.out, "train", "result.json")
    if os.path.exists(result):
        with open(result) as f:
            r = json.load(f)
        report += ["", f"Short run: test per-digit error {r['test_digit_error']:.2f} % after {r['images_seen']:,} images "
                       f"in {r['elapsed'] / 60:.1f} min ({r['images_seen'] / max(1e-9, r['elapsed']):.0f} img/s with "
                       "validation), shifted layout " + (f"{r['shifted_digit_error']:.2f} %" if "shifted_digit_error" in r else "-")]
    with open(os.path.join(args.out, "gpu-check.md"), "w") as f:
        f.write("\n".join(report) + "\n")
    print(f"wrote {os.path.join(args.out, 'gpu-check.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
