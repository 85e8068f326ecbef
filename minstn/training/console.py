"""What a run says, and how it stops: status lines by verbosity, progress bars, and the stop signals.

    console = Console(verbosity=1)       # 0 (-q): results and errors only; 1: status lines; 2 (-v): details
    console.info("...")                  # a status line on stdout
    with console.bar(total, "epoch 3/8") as bar:
        bar.step(images, loss)           # tqdm on a terminal (ETA, images/s); a plain line every few steps in a file
    with stop_signals():                 # SIGTERM / SIGHUP raise RunInterrupted, as Ctrl-C raises KeyboardInterrupt
        ...
    with DeferSignals():                 # a parameter update or a save is never cut in half
        ...
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time

__all__ = ["Console", "RunInterrupted", "exit_code", "stop_signals", "DeferSignals", "STOP_SIGNALS", "run_cli"]

#: the signals that stop a run the way Ctrl-C does (save last.npz, stop the workers)
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Console:
    """Status lines on `out` (stdout) and progress on `err` (stderr), by verbosity: 0 quiet (results
    and errors only), 1 normal, 2 verbose (the whole configuration, tracebacks of unexpected errors)."""

    def __init__(self, verbosity: int = 1, out=None, err=None, progress: bool = True, log_every: int = 50):
        self.verbosity = verbosity
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.progress = progress and verbosity >= 1
        self.log_every = max(1, log_every)

    def result(self, msg: str) -> None:
        """Always shown: what the run measured."""
        print(msg, file=self.out, flush=True)

    def warn(self, msg: str) -> None:
        """Always shown, on stderr: something to act on that does not stop the run."""
        print(msg, file=self.err, flush=True)

    def info(self, msg: str) -> None:
        if self.verbosity >= 1:
            print(msg, file=self.out, flush=True)

    def detail(self, msg: str) -> None:
        if self.verbosity >= 2:
            print(msg, file=self.out, flush=True)

    def bar(self, total: int, desc: str, done: int = 0) -> "Bar":
        """A progress bar over `total` steps (starting at `done`)."""
        return Bar(total, desc, self.err, enabled=self.progress, every=self.log_every, done=done)


class Bar:
    """Progress of one pass over a data set: tqdm on a terminal (elapsed, ETA, images/s, loss);
    in a file (a log, a job scheduler's output) one plain line every `every` steps and at the end."""

    def __init__(self, total: int, desc: str, stream, enabled: bool = True, every: int = 50, done: int = 0):
        self.total, self.desc, self.stream, self.every = total, desc, stream, every
        self.enabled = enabled
        self.tty = enabled and hasattr(stream, "isatty") and stream.isatty()
        self.done, self.first, self.images, self.t0 = done, done, 0, time.perf_counter()
        self._tqdm = None
        if self.tty:
            from tqdm import tqdm

            self._tqdm = tqdm(total=total, initial=done, desc=desc, file=stream, unit="step", leave=False,
                              dynamic_ncols=True)

    def step(self, images: int, loss: float | None = None) -> None:
        """One step done, over `images` images."""
        self.done += 1
        self.images += images
        rate = self.images / max(1e-9, time.perf_counter() - self.t0)
        if self._tqdm is not None:
            self._tqdm.set_postfix_str(("" if loss is None else f"loss {loss:.4f}, ") + f"{rate:.1f} img/s", refresh=False)
            self._tqdm.update(1)
        elif self.enabled and (self.done % self.every == 0 or self.done == self.total):
            elapsed = time.perf_counter() - self.t0
            left = (self.total - self.done) * elapsed / max(1, self.done - self.first)
            self.stream.write(f"{self.desc} [{self.done}/{self.total}]" + ("" if loss is None else f" loss {loss:.4f}")
                              + f"  {rate:6.1f} img/s  elapsed {_clock(elapsed)}  left {_clock(left)}\n")
            self.stream.flush()

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None

    def __enter__(self) -> "Bar":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


# ----------------------------------------------------------------------------------- signals


class RunInterrupted(KeyboardInterrupt):
    """A stop signal (SIGINT, SIGTERM, SIGHUP) arrived; handled exactly like Ctrl-C."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def exit_code(exc: BaseException) -> int:
    """The conventional exit status of a process stopped by `exc`: 128 + the signal number."""
    return 128 + int(getattr(exc, "signum", signal.SIGINT))


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


def run_cli(main) -> None:
    """`sys.exit(main())` for a command-line entry point, quiet when its stdout is a pipe that the
    reader closed early (`python -m minstn.reproduce --print-commands | head -3`): exit status 1,
    as Python's own tools do, instead of a BrokenPipeError traceback."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # Point stdout at /dev/null so that the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 1
    sys.exit(code)
