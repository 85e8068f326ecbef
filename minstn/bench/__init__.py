"""Benchmarks. Run `python -m minstn.bench {ops,gpu,train} [--help]`.

Each benchmark times its own reference in the same run and prints ratios against it,
so a figure means something on any machine. Recorded results live in benchmarks/.
"""

from minstn.training.speed.host import cpu_model   # the benchmarks name the CPU with it

__all__ = ["cpu_model"]
