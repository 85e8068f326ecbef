"""Benchmarks. Run `python -m minstn.bench {ops,gpu,train} [--help]`.

Each benchmark times its own reference in the same run and prints ratios against it,
so a figure means something on any machine. Recorded results live in benchmarks/.
"""
