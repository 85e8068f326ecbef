"""Benchmarks. Run `python -m minstn.bench {ops,gpu,train} [--help]`.

Each benchmark times its own reference in the same run and prints ratios against it,
so a figure means something on any machine. Recorded results live in benchmarks/.
"""

import platform


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or platform.processor() elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
