"""MNIST and the MNIST-sequence data set of the LSTM-STN paper.

    find_data_dir(data_dir=None) -> str            where the four MNIST IDX files are
    load_mnist(split, data_dir=None)               -> images uint8 (N, 28, 28), labels uint8 (N,)
    load_splits(train_size=70000, val_size=20000, test_size=2000, seed=0,
                data_dir=None, cache_dir=None, **generator_options)
                                                   -> {'train': d, 'val': d, 'test': d}
    load_sequence_file(path) / save_sequence_file(path, d)
    DataError                                      a RuntimeError: data missing, damaged, not downloadable

Each split d holds images (N, 1, 100, 100) float32 in [0, 1], labels (N, 4) int64 in
reading order, angles (N,) float32 degrees, boxes (N, 4, 4) float32 (x0, y0, x1, y1).

Single-digit tasks (distorted MNIST R, RTS, P, E, TC and cluttered MNIST 60x60, minstn.data.distorted):
    load_digit_splits(task, distortion, train_size, val_size, test_size, seed, data_dir, cache_dir)
                                                   -> {'train', 'val', 'test'}: images (N, 1, S, S), labels (N, 1)
    load_digit_file(path) / load_digit_dir(folder) / save_digit_file(path, d)     (minstn.data.tasks)

Modules: mnist (IDX files, locating, downloading), sequences (the canvas generator),
store (files and cache), distorted and tasks (the single-digit tasks), generate and preview
(command-line tools). See docs/data.md.
"""
from .mnist import (
    MNIST_FILES,
    MNIST_MIRRORS,
    MNIST_SHA256,
    DataError,
    default_cache_dir,
    download_mnist,
    find_data_dir,
    load_mnist,
    read_idx,
    write_idx,
)
from .distorted import CLUTTERED, DISTORTIONS, DistortionOptions, generate_cluttered, generate_distorted
from .sequences import LAYOUTS, SequenceOptions, generate_split
from .tasks import TASKS, load_digit_dir, load_digit_file, load_digit_splits, save_digit_file
from .store import (
    load_sequence_dir,
    load_sequence_file,
    load_splits,
    read_sequence_params,
    save_sequence_file,
)

__all__ = [
    "DataError",
    "LAYOUTS",
    "DISTORTIONS",
    "CLUTTERED",
    "DistortionOptions",
    "generate_distorted",
    "generate_cluttered",
    "TASKS",
    "load_digit_splits",
    "load_digit_file",
    "load_digit_dir",
    "save_digit_file",
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "MNIST_SHA256",
    "SequenceOptions",
    "default_cache_dir",
    "download_mnist",
    "find_data_dir",
    "generate_split",
    "load_mnist",
    "load_sequence_dir",
    "load_sequence_file",
    "load_splits",
    "read_idx",
    "read_sequence_params",
    "save_sequence_file",
    "write_idx",
]
