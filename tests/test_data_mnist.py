"""MNIST IDX reading/writing, locating and downloading (never touches the internet)."""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import socket
import threading

import numpy as np
import pytest

from minstn.data import DataError, find_data_dir, load_mnist, read_idx, write_idx
from minstn.data.mnist import ALL_FILES, default_cache_dir, download_mnist
from minstn.data.synthetic import write_synthetic_mnist
from tests.conftest import shared_mnist_dir


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    """No MINSTN_DATA_DIR, and a private per-user cache folder."""
    monkeypatch.delenv("MINSTN_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path


# ---------------------------------------------------------------------------------------
# IDX files
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_idx_round_trip(tmp_path, rng, dtype, name):
    a = (rng.standard_normal((5, 3, 4)) * 50).astype(dtype)
    write_idx(tmp_path / name, a)
    b = read_idx(tmp_path / name)
    assert b.dtype == np.dtype(dtype) and b.shape == (5, 3, 4)
    np.testing.assert_array_equal(a, b)


def test_idx_gzip_detected_by_magic_not_name(tmp_path, rng):
    a = rng.integers(0, 256, size=(7, 28, 28)).astype(np.uint8)
    write_idx(tmp_path / "gzipped-but-plain-name", a, compress=True)
    write_idx(tmp_path / "plain-but-gz-name.gz", a, compress=False)
    with open(tmp_path / "gzipped-but-plain-name", "rb") as f:
        assert f.read(2) == b"\x1f\x8b"
    np.testing.assert_array_equal(read_idx(tmp_path / "gzipped-but-plain-name"), a)
    np.testing.assert_array_equal(read_idx(tmp_path / "plain-but-gz-name.gz"), a)


def test_idx_header_layout(tmp_path):
    write_idx(tmp_path / "x", np.arange(6, dtype=np.uint8).reshape(2, 3))
    raw = (tmp_path / "x").read_bytes()
    assert raw[:4] == bytes([0, 0, 0x08, 2])
    assert raw[4:12] == (2).to_bytes(4, "big") + (3).to_bytes(4, "big")
    assert raw[12:] == bytes(range(6))


def test_write_idx_rejects_bad_dtype(tmp_path):
    with pytest.raises(TypeError, match="has no IDX type code"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.uint16))
    with pytest.raises(ValueError, match="1 to 255 dimensions"):
        write_idx(tmp_path / "x", np.uint8(3))


def test_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.gz: file not found.*MINSTN_DATA_DIR"):
        read_idx(tmp_path / "nope.gz")


def test_idx_unreadable_path(tmp_path):
    with pytest.raises(DataError, match=r"cannot be read \(.*\)\. Check its permissions"):
        read_idx(tmp_path)                                          # a folder, not a file


def test_idx_bad_magic(tmp_path):
    (tmp_path / "x").write_bytes(b"\x01\x02\x08\x01" + b"\0" * 8)
    with pytest.raises(DataError, match=r"bad magic number 01020801"):
        read_idx(tmp_path / "x")


def test_idx_unknown_type_code(tmp_path):
    (tmp_path / "x").write_bytes(b"\x00\x00\x07\x01" + (1).to_bytes(4, "big") + b"\0")
    with pytest.raises(DataError, match=r"unknown IDX type code 0x07"):
        read_idx(tmp_path / "x")


def test_idx_zero_dims_and_short_header(tmp_path):
    (tmp_path / "a").write_bytes(b"\x00\x00\x08\x00")
    with pytest.raises(DataError, match="0 dimensions"):
        read_idx(tmp_path / "a")
    (tmp_path / "b").write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="too short for an IDX header"):
        read_idx(tmp_path / "b")
    (tmp_path / "c").write_bytes(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big"))
    with pytest.raises(DataError, match=r"header truncated"):
        read_idx(tmp_path / "c")


def test_idx_truncated_and_too_long(tmp_path, rng):
    a = rng.integers(0, 256, size=(10, 28, 28)).astype(np.uint8)
    write_idx(tmp_path / "x", a)
    raw = (tmp_path / "x").read_bytes()
    (tmp_path / "short").write_bytes(raw[:-100])
    with pytest.raises(DataError, match=r"short: truncated: the header \(10, 28, 28\) needs 7840 data bytes, the file has 7740"):
        read_idx(tmp_path / "short")
    (tmp_path / "long").write_bytes(raw + b"\0")
    with pytest.raises(DataError, match="longer than its header says"):
        read_idx(tmp_path / "long")


def test_idx_bad_gzip_stream(tmp_path, rng):
    a = rng.integers(0, 256, size=(50, 28, 28)).astype(np.uint8)
    write_idx(tmp_path / "x.gz", a)
    raw = (tmp_path / "x.gz").read_bytes()
    (tmp_path / "cut.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"cut\.gz: damaged gzip stream"):
        read_idx(tmp_path / "cut.gz")
    bad = bytearray(raw)
    bad[len(bad) // 2: len(bad) // 2 + 20] = b"\xff" * 20
    (tmp_path / "corrupt.gz").write_bytes(bytes(bad))
    with pytest.raises(DataError, match=r"corrupt\.gz: damaged gzip stream"):
        read_idx(tmp_path / "corrupt.gz")


# ---------------------------------------------------------------------------------------
# Locating
# ---------------------------------------------------------------------------------------

def test_find_data_dir_order(no_env, monkeypatch):
    explicit = write_synthetic_mnist(str(no_env / "explicit"), 20, 10)
    env = write_synthetic_mnist(str(no_env / "env"), 20, 10)
    cache = write_synthetic_mnist(default_cache_dir(), 20, 10)
    hashes = {n: hashlib.sha256(open(os.path.join(cache, n), "rb").read()).hexdigest() for n in ALL_FILES}
    assert find_data_dir(download=False, sha256=hashes) == cache
    monkeypatch.setenv("MINSTN_DATA_DIR", env)
    assert find_data_dir(download=False) == env
    assert find_data_dir(explicit, download=False) == explicit


def test_find_data_dir_accepts_uncompressed_files(no_env):
    folder = no_env / "raw"
    folder.mkdir()
    src = write_synthetic_mnist(str(no_env / "gz"), 20, 10)
    for name in ALL_FILES:
        (folder / name[:-3]).write_bytes(gzip.decompress((no_env / "gz" / name).read_bytes()))
    assert find_data_dir(str(folder)) == str(folder)
    images, labels = load_mnist("test", str(folder))
    np.testing.assert_array_equal(images, load_mnist("test", src)[0])


def test_find_data_dir_errors(no_env, monkeypatch):
    with pytest.raises(DataError, match=r"does not exist\. Put the four MNIST files"):
        find_data_dir(str(no_env / "missing"))
    partial = write_synthetic_mnist(str(no_env / "partial"), 20, 10)
    os.remove(os.path.join(partial, "t10k-labels-idx1-ubyte.gz"))
    with pytest.raises(DataError, match=r"\(from data_dir\) lacks t10k-labels-idx1-ubyte\.gz"):
        find_data_dir(partial)
    monkeypatch.setenv("MINSTN_DATA_DIR", partial)
    with pytest.raises(DataError, match=r"\(from MINSTN_DATA_DIR\) lacks"):
        find_data_dir()


def test_find_data_dir_offline_message(no_env):
    with pytest.raises(DataError) as info:
        find_data_dir(download=False)
    msg = str(info.value)
    for name in ALL_FILES:
        assert name in msg
    assert "--data-dir" in msg and "MINSTN_DATA_DIR" in msg


# ---------------------------------------------------------------------------------------
# Downloading from a local server
# ---------------------------------------------------------------------------------------

@pytest.fixture
def mirror(tmp_path):
    """A local HTTP server (127.0.0.1, free port) serving synthetic MNIST files from two
    folders: /good/ (the files) and /bad/ (same names, different content)."""
    root = tmp_path / "www"
    write_synthetic_mnist(str(root / "good"), 30, 20, seed=1)
    write_synthetic_mnist(str(root / "bad"), 30, 20, seed=2)
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    hashes = {n: hashlib.sha256((root / "good" / n).read_bytes()).hexdigest() for n in ALL_FILES}
    yield base, hashes, root
    server.shutdown()
    server.server_close()
    thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _dead_url():
    """A localhost URL on a port nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def _leftovers(folder):
    return [f for f in os.listdir(folder) if f.endswith(".part") or f.startswith(".")]


def test_download_good_checksum(tmp_path, mirror):
    base, hashes, root = mirror
    dest = tmp_path / "dl"
    download_mnist(str(dest), mirrors=[base + "/good/"], sha256=hashes, progress=False)
    for n in ALL_FILES:
        assert (dest / n).read_bytes() == (root / "good" / n).read_bytes()
    assert _leftovers(dest) == []
    assert load_mnist("train", str(dest))[0].shape == (30, 28, 28)


def test_download_bad_checksum_falls_back(tmp_path, mirror, capsys):
    base, hashes, root = mirror
    dest = tmp_path / "dl"
    download_mnist(str(dest), mirrors=[base + "/bad/", base + "/good/"], sha256=hashes, progress=True)
    for n in ALL_FILES:
        assert (dest / n).read_bytes() == (root / "good" / n).read_bytes()
    err = capsys.readouterr().err
    assert "does not match the expected" in err and "100.0%" in err
    assert _leftovers(dest) == []


def test_download_bad_checksum_everywhere_leaves_nothing(tmp_path, mirror):
    base, hashes, _ = mirror
    dest = tmp_path / "dl"
    with pytest.raises(DataError, match=r"could not download train-images-idx3-ubyte\.gz(.|\n)*sha256(.|\n)*MINSTN_DATA_DIR"):
        download_mnist(str(dest), mirrors=[base + "/bad/"], sha256=hashes, progress=False)
    assert os.listdir(dest) == []


def test_download_dead_mirror_and_missing_file_fall_through(tmp_path, mirror):
    base, hashes, root = mirror
    dest = tmp_path / "dl"
    download_mnist(str(dest), mirrors=[_dead_url(), base + "/nothing-here/", base + "/good/"],
                   sha256=hashes, progress=False)
    assert sorted(os.listdir(dest)) == sorted(ALL_FILES)


def test_download_all_dead(tmp_path):
    with pytest.raises(DataError, match=r"could not download(.|\n)*127\.0\.0\.1(.|\n)*If this machine is offline"):
        download_mnist(str(tmp_path / "dl"), mirrors=[_dead_url()], progress=False)
    assert os.listdir(tmp_path / "dl") == []


def test_download_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="mirror list is empty"):
        download_mnist(str(tmp_path), mirrors=[], progress=False)
    with pytest.raises(ValueError, match="no sha256 known for 'x.gz'"):
        download_mnist(str(tmp_path), names=["x.gz"], mirrors=["http://127.0.0.1:1/"], progress=False)


def test_find_data_dir_downloads_into_cache(no_env, mirror):
    base, hashes, _ = mirror
    folder = find_data_dir(mirrors=[_dead_url(), base + "/good/"], sha256=hashes)
    assert folder == default_cache_dir()
    assert load_mnist("test", folder)[0].shape == (20, 28, 28)


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------

def test_load_mnist_counts_from_header(tmp_path):
    folder = write_synthetic_mnist(str(tmp_path), 37, 11)
    images, labels = load_mnist("train", folder)
    assert images.shape == (37, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (37,) and labels.dtype == np.uint8 and labels.max() <= 9
    assert load_mnist("test", folder)[0].shape == (11, 28, 28)


def test_load_mnist_errors(tmp_path):
    folder = write_synthetic_mnist(str(tmp_path), 20, 10)
    with pytest.raises(ValueError, match="split must be 'train' or 'test', got 'val'"):
        load_mnist("val", folder)
    write_idx(os.path.join(folder, "t10k-labels-idx1-ubyte.gz"), np.zeros(9, np.uint8))
    with pytest.raises(DataError, match="holds 10 images but .* holds 9 labels"):
        load_mnist("test", folder)
    write_idx(os.path.join(folder, "t10k-labels-idx1-ubyte.gz"), np.full(10, 12, np.uint8))
    with pytest.raises(DataError, match="label 12 outside 0..9"):
        load_mnist("test", folder)
    write_idx(os.path.join(folder, "t10k-images-idx3-ubyte.gz"), np.zeros((10, 27, 28), np.uint8))
    with pytest.raises(DataError, match=r"expected uint8 images of shape \(N, 28, 28\)"):
        load_mnist("test", folder)
    write_idx(os.path.join(folder, "train-labels-idx1-ubyte.gz"), np.zeros((20, 1), np.uint8))
    with pytest.raises(DataError, match=r"expected uint8 labels of shape \(N,\)"):
        load_mnist("train", folder)


def test_real_mnist_folder():
    folder = shared_mnist_dir()
    if folder is None:
        pytest.skip("the shared MNIST folder is not on this machine")
    test_images, test_labels = load_mnist("test", folder)
    train_images, train_labels = load_mnist("train", folder)
    assert test_images.shape == (10000, 28, 28) and test_labels.shape == (10000,)
    assert train_images.shape == (22699, 28, 28) and train_labels.shape == (22699,)
    assert np.bincount(test_labels, minlength=10).min() > 800       # all ten digits present
    assert train_labels[:5].tolist() == [5, 0, 4, 1, 9]            # the original training order


def test_cached_files_are_checked_by_sha256_once_per_process(no_env):
    """The cache holds downloads: a file altered there is caught (once per process, and again
    when the file changes), with a message naming it; user folders are never held to the originals."""
    from minstn.data import mnist

    cache = write_synthetic_mnist(default_cache_dir(), 20, 10)
    hashes = {n: hashlib.sha256(open(os.path.join(cache, n), "rb").read()).hexdigest() for n in ALL_FILES}
    assert find_data_dir(download=False, sha256=hashes) == cache
    name = "t10k-labels-idx1-ubyte.gz"
    path = os.path.join(cache, name)
    labels = read_idx(path)
    labels[0] = (labels[0] + 1) % 10
    write_idx(path, labels)                               # a valid IDX file, with one label changed
    with pytest.raises(DataError, match=rf"{path}: its sha256 .* is not that of the original {name}.*Delete it"):
        find_data_dir(download=False, sha256=hashes)
    assert find_data_dir(cache, download=False) == cache  # given explicitly: the user's own folder
    with pytest.raises(DataError, match="altered or damaged"):
        load_mnist("test", download=False)                # the real hashes: the synthetic cache is refused
    assert path not in mnist._VERIFIED
