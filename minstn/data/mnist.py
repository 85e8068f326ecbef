"""MNIST: read and write IDX files, find them on disk, download them where online.

Shape legend:
    N   number of images (read from the IDX header, never assumed)
    28  MNIST image height and width

The IDX format (the format of the original MNIST distribution):

    bytes 0-1   0x00 0x00
    byte  2     type code: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
    byte  3     number of dimensions, ndim
    4 * ndim    each dimension as a big-endian uint32
    the rest    the values, big-endian, C order; exactly prod(dims) * itemsize bytes

A file may be gzip-compressed; that is detected from its first two bytes (0x1f 0x8b), not
from its name.

Where MNIST is looked for (:func:`find_data_dir`), first match wins:

    1. the ``data_dir`` argument (the ``--data-dir`` option of the command-line tools)
    2. the environment variable ``MINSTN_DATA_DIR``
    3. the per-user cache folder, ``$XDG_CACHE_HOME/minstn/mnist`` or ``~/.cache/minstn/mnist``;
       if the files are not there, they are downloaded there (sha256-checked) where online.

:class:`DataError` (a ``RuntimeError``) reports every problem with the data on disk: a
missing folder or file, a truncated or corrupt file, a failed download.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
import zlib

import numpy as np

from minstn.fileio import atomic_open, atomic_write_bytes

__all__ = [
    "DataError",
    "MNIST_FILES",
    "MNIST_SHA256",
    "MNIST_MIRRORS",
    "read_idx",
    "write_idx",
    "default_cache_dir",
    "find_data_dir",
    "download_mnist",
    "load_mnist",
    "mnist_file_path",
]


class DataError(RuntimeError):
    """A problem with data on disk (missing, truncated, corrupt, failed download).

    The message always names the file or folder, says what is wrong and what to do.
    Bad arguments (a wrong split name, a negative count) raise ValueError instead.
    """


# split -> (images file, labels file), the names of the original distribution.
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
ALL_FILES = MNIST_FILES["train"] + MNIST_FILES["test"]

# sha256 of the four original files (as published by the usual mirrors).
MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}

# Tried in order; a file that fails (network error, HTTP error, wrong sha256) is tried at the next.
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

# IDX type code -> big-endian NumPy dtype.
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"

_WHERE_TO_PUT = (
    "Put the four MNIST files ({files}) in a folder and pass it with --data-dir DIR "
    "(data_dir=DIR in Python) or set the environment variable MINSTN_DATA_DIR=DIR."
).format(files=", ".join(ALL_FILES))


# ----------------------------------------------------------------------------------------
# IDX reading and writing
# ----------------------------------------------------------------------------------------

def _read_bytes(path):
    """The file's bytes, gunzipped when it starts with the gzip magic bytes."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found. {_WHERE_TO_PUT}") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e}). Check its permissions.") from None
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:
        raise DataError(
            f"{path}: damaged gzip stream ({e}); the file is truncated or corrupt. "
            "Delete it and copy or download it again."
        ) from None


def read_idx(path):
    """Read an IDX file (gzip or raw, detected by magic bytes) into a NumPy array.

    Returns an array of shape dims (from the header) in the native-endian version of the
    file's dtype (e.g. uint8 (N, 28, 28) for MNIST images, uint8 (N,) for labels).
    Raises DataError naming the file when the magic number, type code, dimensions or the
    byte length do not agree.
    """
    path = os.fspath(path)
    data = _read_bytes(path)
    fix = "Delete it and copy or download it again."
    if len(data) < 4:
        raise DataError(f"{path}: only {len(data)} bytes, too short for an IDX header. {fix}")
    if data[0] != 0 or data[1] != 0:
        raise DataError(
            f"{path}: bad magic number {data[:4].hex()} (an IDX file starts with 00 00). "
            f"It is not an IDX file or it is corrupt. {fix}"
        )
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise DataError(
            f"{path}: unknown IDX type code 0x{code:02x} (known: "
            + ", ".join(f"0x{c:02x}" for c in _IDX_DTYPES) + f"). {fix}"
        )
    if ndim < 1:
        raise DataError(f"{path}: IDX header says 0 dimensions. {fix}")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(f"{path}: header truncated ({len(data)} of {header_len} bytes). {fix}")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    got = len(data) - header_len
    if got != expected:
        what = "truncated" if got < expected else "longer than its header says"
        raise DataError(
            f"{path}: {what}: the header {dims} needs {expected} data bytes, the file has {got}. {fix}"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path, array, compress=None):
    """Write an array as an IDX file; gzip it if ``compress`` (default: path ends in '.gz').

    array: any shape with 1 <= ndim <= 255, dtype uint8, int8, int16, int32, float32 or float64.
    The file is written atomically (a temporary file in the same folder, then renamed).
    """
    path = os.fspath(path)
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in _IDX_DTYPES.items()}
    if array.dtype not in codes:
        raise TypeError(
            f"write_idx: dtype {array.dtype} has no IDX type code; "
            "convert to uint8, int8, int16, int32, float32 or float64"
        )
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"write_idx: IDX needs 1 to 255 dimensions, got ndim={array.ndim}")
    header = bytes([0, 0, codes[array.dtype], array.ndim])
    header += np.asarray(array.shape, dtype=">u4").tobytes()
    body = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder(">")).tobytes()
    data = header + body
    if compress is None:
        compress = path.endswith(".gz")
    if compress:
        data = gzip.compress(data, compresslevel=6, mtime=0)
    atomic_write_bytes(path, data)




# ----------------------------------------------------------------------------------------
# Finding the files
# ----------------------------------------------------------------------------------------

def default_cache_dir():
    """``$XDG_CACHE_HOME/minstn/mnist`` if XDG_CACHE_HOME is set, else ``~/.cache/minstn/mnist``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "minstn", "mnist")


def mnist_file_path(folder, name):
    """The path of MNIST file ``name`` (a '.gz' name) in ``folder``: the gzip file, or the
    uncompressed one (the name without '.gz') if only that exists; None if neither does."""
    for cand in (name, name[: -len(".gz")]):
        p = os.path.join(folder, cand)
        if os.path.isfile(p):
            return p
    return None


def _missing(folder):
    return [n for n in ALL_FILES if mnist_file_path(folder, n) is None]


def find_data_dir(data_dir=None, download=True, mirrors=MNIST_MIRRORS, sha256=MNIST_SHA256):
    """The folder holding the four MNIST IDX files (each gzip or uncompressed).

    Search order: ``data_dir``, then ``$MINSTN_DATA_DIR``, then :func:`default_cache_dir`.
    A folder named by the argument or the variable must hold all four files (DataError
    listing the missing ones otherwise; nothing is downloaded into it). If the cache folder
    lacks files and ``download`` is true, they are downloaded there from ``mirrors``
    (checked against ``sha256``); if that fails, DataError says where to put the files.
    """
    for source, folder in (("data_dir", data_dir), ("MINSTN_DATA_DIR", os.environ.get("MINSTN_DATA_DIR"))):
        if not folder:
            continue
        folder = os.path.abspath(os.path.expanduser(os.fspath(folder)))
        if not os.path.isdir(folder):
            raise DataError(f"MNIST folder {folder} (from {source}) does not exist. {_WHERE_TO_PUT}")
        missing = _missing(folder)
        if missing:
            raise DataError(
                f"MNIST folder {folder} (from {source}) lacks {', '.join(missing)}. {_WHERE_TO_PUT}"
            )
        return folder
    folder = default_cache_dir()
    missing = _missing(folder) if os.path.isdir(folder) else list(ALL_FILES)
    if not missing:
        _verify_cache(folder, sha256)
        return folder
    if not download:
        raise DataError(
            f"MNIST not found: no --data-dir, no MINSTN_DATA_DIR, and the cache folder {folder} "
            f"lacks {', '.join(missing)}. {_WHERE_TO_PUT}"
        )
    download_mnist(folder, names=missing, mirrors=mirrors, sha256=sha256)
    return folder


#: cache files whose sha256 this process has checked (path -> (size, mtime) when checked)
_VERIFIED = {}


def _verify_cache(folder, sha256=MNIST_SHA256):
    """Check the sha256 of the cache's four files once per process (and again if a file changes).

    The cache holds what minstn downloaded, so each file must be the original: an altered or
    damaged one raises DataError naming it and saying to delete it (it is then downloaded again).
    Folders given by --data-dir or MINSTN_DATA_DIR are the user's and are not checked against
    the originals (a shortened training file, like the one on these machines, is fine there).
    """
    for name in ALL_FILES:
        path = mnist_file_path(folder, name)
        if path is None or name not in sha256 or not path.endswith(".gz"):
            continue
        stat = os.stat(path)
        if _VERIFIED.get(path) == (stat.st_size, stat.st_mtime_ns):
            continue
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        if digest.hexdigest() != sha256[name]:
            _VERIFIED.pop(path, None)
            raise DataError(
                f"{path}: its sha256 {digest.hexdigest()[:16]}... is not that of the original {name} "
                f"({sha256[name][:16]}...): the cached file was altered or damaged. Delete it, and minstn "
                f"downloads it again; or pass your own MNIST folder with --data-dir."
            )
        _VERIFIED[path] = (stat.st_size, stat.st_mtime_ns)


# ----------------------------------------------------------------------------------------
# Downloading
# ----------------------------------------------------------------------------------------

def _fetch(url, dest, expected_sha256, timeout, progress):
    """Download url into dest atomically; raise DataError on any failure (no file left behind)."""
    try:
        with atomic_open(dest) as f, urllib.request.urlopen(url, timeout=timeout) as resp:
            digest = hashlib.sha256()
            total = int(resp.headers.get("Content-Length") or 0)
            done = 0
            while True:
                chunk = resp.read(1 << 16)
                if not chunk:
                    break
                f.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    pct = f"{100 * done / total:5.1f}%" if total else f"{done / 1e6:.1f} MB"
                    print(f"\r  {os.path.basename(dest)}: {pct}", end="", file=sys.stderr, flush=True)
            if progress:
                print(file=sys.stderr, flush=True)
            got = digest.hexdigest()
            if expected_sha256 is not None and got != expected_sha256:
                # raised inside the block: atomic_open removes the partial file, dest is untouched
                raise DataError(f"{url}: sha256 {got} does not match the expected {expected_sha256}")
    except DataError:
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        raise DataError(f"{url}: {e}") from None


def download_mnist(folder, names=ALL_FILES, mirrors=MNIST_MIRRORS, sha256=MNIST_SHA256,
                   timeout=30.0, progress=True):
    """Download the MNIST files ``names`` into ``folder`` (created if needed).

    Each file is tried at each mirror in turn (URL = mirror + name) until one succeeds;
    it is written to a temporary file in ``folder``, checked against ``sha256[name]``
    (None skips the check), and only then renamed into place, so a failed or interrupted
    download never leaves a partial file. Progress goes to stderr. Raises DataError,
    listing every attempt and what to do, if some file could not be fetched.
    """
    os.makedirs(folder, exist_ok=True)
    if not mirrors:
        raise ValueError("download_mnist: the mirror list is empty; give at least one URL prefix")
    for name in names:
        if name not in sha256:
            raise ValueError(f"download_mnist: no sha256 known for {name!r}; pass sha256={{name: hex}}")
        failures = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + name
            if progress:
                print(f"downloading {url}", file=sys.stderr, flush=True)
            try:
                _fetch(url, os.path.join(folder, name), sha256[name], timeout, progress)
                break
            except DataError as e:
                failures.append(str(e))
                if progress:
                    print(f"  failed: {e}", file=sys.stderr, flush=True)
        else:
            raise DataError(
                f"could not download {name} into {folder}; tried:\n  " + "\n  ".join(failures)
                + f"\nIf this machine is offline: {_WHERE_TO_PUT}"
            )


# ----------------------------------------------------------------------------------------
# Loading a split
# ----------------------------------------------------------------------------------------

def load_mnist(split, data_dir=None, download=True):
    """Load one MNIST split.

    split: 'train' or 'test'. data_dir: as for :func:`find_data_dir`.
    Returns (images uint8 (N, 28, 28), labels uint8 (N,)), N read from the IDX headers
    (the training file on these machines holds 22,699 images, the original 60,000).
    """
    if split not in MNIST_FILES:
        raise ValueError(f"load_mnist: split must be 'train' or 'test', got {split!r}")
    folder = find_data_dir(data_dir, download=download)
    img_name, lab_name = MNIST_FILES[split]
    img_path, lab_path = mnist_file_path(folder, img_name), mnist_file_path(folder, lab_name)
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(
            f"{img_path}: expected uint8 images of shape (N, 28, 28), found {images.dtype} {images.shape}. "
            "Is this an MNIST image file?"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(
            f"{lab_path}: expected uint8 labels of shape (N,), found {labels.dtype} {labels.shape}. "
            "Is this an MNIST label file?"
        )
    if labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{img_path} holds {images.shape[0]} images but {lab_path} holds {labels.shape[0]} labels; "
            "the two files must come from the same set."
        )
    if labels.size and labels.max() > 9:
        raise DataError(f"{lab_path}: label {int(labels.max())} outside 0..9. Is this an MNIST label file?")
    return images, labels
