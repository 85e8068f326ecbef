"""The run folder: one run owns it at a time, a new run never overwrites one, and everything a run
writes there goes through here (atomically).

    folder = RunFolder("runs/lstm-stn-d2")
    with folder.claim(resume=False):     # lock; RunFolderError if the folder holds a run, or RunFolderBusy
        folder.write_config(cfg)
        folder.append_metrics(record)    # one JSON line per validation
        folder.save_last(arrays, meta)   # what --resume continues from
        folder.write_result(result)
    cfg = resume_config(given)           # the saved settings of a run, with the ones --resume may change

The lock is an advisory `fcntl.flock` on DIR/.lock, which holds the owner's pid, host and start
time as JSON. The operating system drops a flock when its process ends, however it ends (a
kill -9 too), so a lock can never be left stale by a dead run; the JSON only says who holds a
live one. (flock works on local file systems; on NFS, where it may not, use one folder per host.)
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import socket
import subprocess
import time

from minstn.fileio import atomic_write_bytes
from minstn.training import checkpoint
from minstn.training.config import RESUME_OVERRIDABLE, ConfigError, TrainConfig, config_from_dict

__all__ = [
    "RUN_FILES",
    "LOCK_NAME",
    "RunFolder",
    "RunFolderError",
    "RunFolderBusy",
    "RunLock",
    "is_locked",
    "check_new_run_folder",
    "check_writable",
    "sweep_temp_files",
    "resume_config",
    "check_resume",
    "data_fingerprint",
    "check_same_data",
    "read_metrics",
    "code_version",
]

RUN_FILES = ("config.json", "metrics.jsonl", "checkpoint.npz", "last.npz", "result.json")
LOCK_NAME = ".lock"


class RunFolderError(ValueError):
    """The run folder cannot be used as asked (the message says why and what to do)."""


class RunFolderBusy(RunFolderError):
    """Another live process owns the run folder."""


class RunLock:
    """Hold DIR/.lock (an exclusive flock) for the duration of a `with` block.

    Raises RunFolderBusy naming the owner (pid, host, start time) when another process holds it.
    The folder is created if needed. Re-entrant within one object only (acquire once).
    """

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, LOCK_NAME)
        self.fd = None

    def acquire(self) -> "RunLock":
        os.makedirs(self.run_dir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = _read_owner(fd)
            os.close(fd)
            raise RunFolderBusy(
                f"{self.run_dir!r} is in use by another run ({owner}); wait for it to end, or use another --out"
            ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> bool:
        self.release()
        return False


def _read_owner(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError):
        return "owner unknown"


def is_locked(run_dir: str) -> bool:
    """True when a live process holds DIR/.lock (checked without taking it for long)."""
    path = os.path.join(run_dir, LOCK_NAME)
    if not os.path.exists(path):
        return False
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def check_new_run_folder(run_dir: str) -> None:
    """RunFolderError if `run_dir` is a file, or holds any file of a run (a new run never touches one)."""
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise RunFolderError(f"--out {run_dir!r} is a file, not a folder; choose a folder for the run")
    found = [name for name in RUN_FILES if os.path.exists(os.path.join(run_dir, name))]
    if found:
        raise RunFolderError(
            f"{run_dir!r} already holds a run ({', '.join(found)}); continue it with --resume, or choose another --out"
        )


def check_writable(run_dir: str) -> None:
    """RunFolderError if the run folder cannot be created or written (found before any data is loaded)."""
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise RunFolderError(f"--out {run_dir!r} is a file, not a folder; choose a folder for the run")
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as e:
        raise RunFolderError(f"cannot create the run folder --out {run_dir!r} ({e.strerror}); choose another --out") from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise RunFolderError(f"the run folder --out {run_dir!r} is not writable; choose another --out")


def sweep_temp_files(run_dir: str) -> list:
    """Remove the temporary files an atomic write left behind when its process was killed
    (.tmp-* in the run folder; only called while holding the folder's lock). Returns their names."""
    removed = []
    if os.path.isdir(run_dir):
        for name in sorted(os.listdir(run_dir)):
            if name.startswith(".tmp-"):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(run_dir, name))
                    removed.append(name)
    return removed




# ------------------------------------------------------------------------------- the run folder


class RunFolder:
    """The files of one run in folder `path` (docs/training.md lists them)."""

    def __init__(self, path: str):
        self.path = path
        self.config = os.path.join(path, "config.json")
        self.metrics = os.path.join(path, "metrics.jsonl")
        self.best = os.path.join(path, "checkpoint.npz")
        self.last = os.path.join(path, "last.npz")
        self.result = os.path.join(path, "result.json")
        self.glimpses = os.path.join(path, "glimpses.png")

    @contextlib.contextmanager
    def claim(self, resume: bool):
        """Own the folder for the block: checks (a new run needs a folder without run files, a resumed
        one its last.npz), the lock, and the sweep of a killed save's temporary files."""
        if resume and not os.path.exists(self.last):
            raise ConfigError(f"--resume: {self.last!r} does not exist, so there is nothing to continue; "
                              "start a new run without --resume")
        if not resume:
            check_new_run_folder(self.path)
        check_writable(self.path)
        with RunLock(self.path):
            if not resume:
                check_new_run_folder(self.path)      # again, now that no other run can start here
            sweep_temp_files(self.path)
            yield self

    def write_config(self, cfg: TrainConfig) -> None:
        atomic_write_bytes(self.config, (cfg.to_json() + "\n").encode())

    def append_metrics(self, record: dict) -> None:
        """One JSON line, flushed to disk (a crash can cut only the line being written, which
        truncate_metrics drops on resume)."""
        with open(self.metrics, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def truncate_metrics(self, epoch: int) -> None:
        """On resume at `epoch`: keep the records of finished epochs (< epoch) and of budget stops
        (partial), drop the rest and any line a crash cut short; rewritten atomically."""
        if not os.path.exists(self.metrics):
            return
        keep = []
        with open(self.metrics) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec["epoch"] < epoch or rec.get("partial"):
                    keep.append(json.dumps(rec) + "\n")
        atomic_write_bytes(self.metrics, "".join(keep).encode())

    def save_last(self, arrays: dict, meta: dict) -> None:
        checkpoint.save(self.last, arrays, meta)

    def save_best(self, arrays: dict, meta: dict) -> None:
        checkpoint.save(self.best, arrays, meta)

    def load_last(self):
        return checkpoint.load(self.last)

    def write_result(self, result: dict) -> None:
        atomic_write_bytes(self.result, (json.dumps(result, indent=2) + "\n").encode())


def read_metrics(path: str) -> list:
    """The records of a metrics.jsonl file (DIR/metrics.jsonl or DIR), a list of dicts."""
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.jsonl")
    with open(path) as f:
        return [json.loads(ln) for ln in f if ln.strip()]


# ------------------------------------------------------------------------------- resuming


def resume_config(given: dict) -> TrainConfig:
    """The TrainConfig of a run to continue (--resume --out DIR, given: the options on the command
    line): the settings saved in DIR/last.npz, where only RESUME_OVERRIDABLE settings (epochs,
    budgets, device, ...) may be given again with another value; any other difference is a ConfigError."""
    out = given.get("out")
    if not out:
        raise ConfigError("--resume needs --out DIR, the folder of the run to continue")
    last = os.path.join(out, "last.npz")
    if not os.path.exists(last):
        raise ConfigError(f"--resume: {last!r} does not exist, so there is nothing to continue; start a new run without --resume")
    _, meta = checkpoint.load(last)
    saved = config_from_dict(meta["config"])
    check_resume(saved, given)
    changed = {name: value for name, value in given.items() if name in RESUME_OVERRIDABLE}
    return dataclasses.replace(saved, **changed).validate()


def check_resume(saved: TrainConfig, given: dict) -> None:
    """ConfigError if `given` changes a setting that a resumed run must keep. A model option saved
    as None (the model's default, by older runs) matches that default given explicitly."""
    from minstn.models.options import DEFAULT_OPTIONS

    for name, value in given.items():
        if name in RESUME_OVERRIDABLE:
            continue
        was = getattr(saved, name)
        if was is None and DEFAULT_OPTIONS.get(saved.model, {}).get(name, object()) == value:
            continue
        if value != was:
            raise ConfigError(
                f"--{name.replace('_', '-')} {value!r} differs from the run's saved setting {was!r}; "
                f"a resumed run keeps its settings (only {', '.join(RESUME_OVERRIDABLE)} may change). "
                "Start a new run in another --out folder instead."
            )


def data_fingerprint(splits: dict) -> dict:
    """{'sha256': hex, 'sizes': {split: N}} of the data a run trains on: a hash of every split's
    labels, angles and digit boxes (small arrays that pin down which canvases these are), so that
    --resume can refuse other data. Single-digit splits (minstn.data.tasks) have no angles or boxes:
    their labels and images are hashed."""
    h = hashlib.sha256()
    sizes = {}
    for split in ("train", "val", "test"):
        d = splits[split]
        sizes[split] = int(d["labels"].shape[0])
        keys = ("labels", "angles", "boxes") if ("angles" in d or "boxes" in d) else ("labels", "images")
        for key in keys:
            if key in d:
                h.update(key.encode())
                h.update(memoryview(d[key]).cast("B") if d[key].flags.c_contiguous else d[key].tobytes())
    return {"sha256": h.hexdigest(), "sizes": sizes}


def check_same_data(saved: dict | None, now: dict, source: str) -> None:
    """ConfigError if a resumed run would continue on other data than it started with."""
    if saved is None or saved.get("sha256") == now["sha256"]:
        return
    raise ConfigError(
        f"--resume: the data differ from the run's: it trained on {saved.get('source', '?')} "
        f"({_sizes(saved['sizes'])}, data hash {saved['sha256'][:12]}), this command gives {source} "
        f"({_sizes(now['sizes'])}, data hash {now['sha256'][:12]}); resume with the run's own data, or start a new run"
    )


def _sizes(sizes: dict) -> str:
    return " / ".join(f"{sizes[s]:,}" for s in ("train", "val", "test")) + " canvases"


def code_version(package_dir: str | None = None) -> dict:
    """Which code is running: {'version': minstn.__version__, 'commit': the git commit of the
    checkout the package is imported from, or None (an installed copy, or no git), 'modified':
    whether tracked files under the package differ from that commit (None without a commit)}.
    result.json records it, so a table can tell which code trained each of its cells."""
    import minstn

    package_dir = package_dir or os.path.dirname(os.path.abspath(minstn.__file__))
    out = {"version": minstn.__version__, "commit": None, "modified": None}

    def git(*args):
        done = subprocess.run(["git", "-C", package_dir, *args], capture_output=True, text=True, timeout=10)
        return done.stdout.strip() if done.returncode == 0 else None

    try:
        commit = git("rev-parse", "HEAD")
        if commit and git("ls-files", "--error-unmatch", "__init__.py") is not None:   # the package is tracked there
            status = git("status", "--porcelain", "--untracked-files=no", "--", ".")
            out.update(commit=commit, modified=None if status is None else bool(status))
    except (OSError, subprocess.SubprocessError):          # no git on the machine, or it hung
        pass
    return out
