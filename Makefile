# minstn: common tasks. PYTHON can be overridden, e.g. `make test PYTHON=.venv/bin/python`.
PYTHON ?= python3
PYTEST ?= $(PYTHON) -m pytest

.PHONY: help install install-gpu test test-unit test-tutorials test-gpu-emulated tutorials bench bench-ops bench-gpu bench-train gpu-check data preview train reproduce clean

help:
	@echo "make install         install minstn with the test dependencies (editable)"
	@echo "make install-gpu     also install CuPy for CUDA 12 (use cupy-cuda13x on CUDA 13)"
	@echo "make test            unit tests, then the tutorial notebooks (what CI runs)"
	@echo "make test-unit       unit tests only (a few minutes on two cores)"
	@echo "make test-tutorials  execute every tutorial notebook"
	@echo "make tutorials       re-execute the notebooks in place, keeping their outputs"
	@echo "make bench           op benchmarks (forward+backward, against PyTorch if importable)"
	@echo "make bench-gpu       GPU sampler and training benchmarks (needs CuPy and a GPU)"
	@echo "make gpu-check       the prepared check of a real GPU: tests, benchmark, a short run (gpu-check/gpu-check.md)"
	@echo "make test-gpu-emulated  the GPU path on the CuPy stand-in (part of make test)"
	@echo "make bench-train     CPU training throughput of each model"
	@echo "make data            generate the default MNIST-sequence data set into data/"
	@echo "make preview         draw docs/preview.png from a few generated canvases"
	@echo "make train           the first hour: python -m minstn.train --preset quick (an LSTM-STN, 60,000 images)"
	@echo "make reproduce       the Table I grid at the cpu preset, into runs/table1-cpu"

install:
	$(PYTHON) -m pip install -e ".[dev]"

install-gpu:
	$(PYTHON) -m pip install -e ".[dev,gpu]"

test: test-unit test-tutorials

test-unit:
	$(PYTEST) -m "not tutorials" tests

test-tutorials:
	$(PYTEST) -m tutorials tests

tutorials:
	$(PYTHON) -m tests.notebooks --in-place tutorials

bench: bench-ops

bench-ops:
	$(PYTHON) -m minstn.bench ops

bench-gpu:
	$(PYTHON) -m minstn.bench gpu

gpu-check:
	$(PYTHON) -m minstn.bench.gpu_check --out gpu-check

test-gpu-emulated:
	$(PYTEST) -m gpu_emulated tests

bench-train:
	$(PYTHON) -m minstn.bench train

data:
	$(PYTHON) -m minstn.data.generate --out data

preview:
	$(PYTHON) -m minstn.data.preview --out docs/preview.png --n 16

train:
	$(PYTHON) -m minstn.train --preset quick --out runs/quick

reproduce:
	$(PYTHON) -m minstn.reproduce --preset cpu --out runs/table1-cpu

clean:
	rm -rf .pytest_cache build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
