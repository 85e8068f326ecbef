"""The run folder: one run at a time owns it, a new run never overwrites one, signals stop cleanly.

    with RunLock(run_dir):               # RunFolderBusy if another live process holds it
        ...
    check_new_run_folder(run_dir)        # RunFolderError if run_dir holds any run file
    with stop_signals():                 # SIGTERM / SIGHUP raise RunInterrupted, like Ctrl-C
        ...

The lock is an advisory `fcntl.flock` on DIR/.lock, which holds the owner's pid, host and start
time as JSON. The operating system drops a flock when its process ends, however it ends (a
kill -9 too), so a lock can never be left stale by a dead run; the JSON only says who holds a
live one. (flock works on local file systems; on NFS, where it may not, use one folder per host.)
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import threading
import time

__all__ = [
    "RUN_FILES",
    "LOCK_NAME",
    "RunFolderError",
    "RunFolderBusy",
    "RunInterrupted",
    "RunLock",
    "check_new_run_folder",
    "sweep_temp_files",
    "stop_signals",
    "DeferSignals",
    "exit_code",
]

#: the files a training run writes into its folder (docs/training.md)
RUN_FILES = ("config.json", "metrics.jsonl", "checkpoint.npz", "last.npz", "result.json")
LOCK_NAME = ".lock"
#: the signals that stop a run the way Ctrl-C does (save last.npz, stop the workers)
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class RunFolderError(ValueError):
    """The run folder cannot be used as asked (the message says why and what to do)."""


class RunFolderBusy(RunFolderError):
    """Another live process owns the run folder."""


class RunInterrupted(KeyboardInterrupt):
    """A stop signal (SIGINT, SIGTERM, SIGHUP) arrived; handled exactly like Ctrl-C."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def exit_code(exc: BaseException) -> int:
    """The conventional exit status of a process stopped by `exc`: 128 + the signal number."""
    return 128 + int(getattr(exc, "signum", signal.SIGINT))


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


def _raise_interrupted(signum, frame):
    raise RunInterrupted(signum)


@contextlib.contextmanager
def stop_signals():
    """Within the block, SIGTERM and SIGHUP raise RunInterrupted (a KeyboardInterrupt), as SIGINT
    raises KeyboardInterrupt; the previous handlers come back afterwards. Main thread only
    (elsewhere it does nothing: Python delivers signals to the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {}
    for sig in STOP_SIGNALS:
        if sig != signal.SIGINT:
            old[sig] = signal.signal(sig, _raise_interrupted)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


class DeferSignals:
    """Hold back the stop signals for a few lines (a parameter update, a save), so they are never
    half done; the interrupt is raised when the block ends. `note`: what to say when a signal
    arrives meanwhile (e.g. 'still saving last.npz'), printed by `say`."""

    def __init__(self, note: str | None = None, say=None):
        self.note, self.say = note, say

    def __enter__(self):
        self.hit = None
        self.active = threading.current_thread() is threading.main_thread()
        if self.active:
            self.old = {sig: signal.signal(sig, self._handler) for sig in STOP_SIGNALS}
        return self

    def _handler(self, signum, frame):
        if self.hit is None:
            self.hit = signum
        if self.note and self.say:
            self.say(f"received {signal.Signals(signum).name}: {self.note}")

    def __exit__(self, *exc):
        if self.active:
            for sig, handler in self.old.items():
                signal.signal(sig, handler)
        if self.hit is not None and exc[0] is None:
            if self.hit == signal.SIGINT:
                raise KeyboardInterrupt
            raise RunInterrupted(self.hit)
        return False
