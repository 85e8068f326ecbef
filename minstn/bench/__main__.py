"""`python -m minstn.bench {ops,gpu,train} [options]`: dispatch to one benchmark."""
from __future__ import annotations

import importlib
import sys

SUITES = {
    "ops": "minstn.bench.ops",      # each op's forward+backward at the paper's shapes, vs PyTorch CPU
    "gpu": "minstn.bench.gpu",      # CUDA sampler kernel vs plain CuPy vs torch grid_sample; models' images/s
    "train": "minstn.bench.train",  # CPU training images/s of each model, vs the same model in PyTorch
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        print("suites: " + ", ".join(SUITES))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUITES:
        print(f"error: unknown benchmark suite {name!r}; choose one of: {', '.join(SUITES)}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUITES[name])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    from minstn.training.console import run_cli
    run_cli(main)
