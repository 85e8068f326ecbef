"""`python -m minstn.train`: train a model on the MNIST-sequence data set, or on a single-digit task.

    python -m minstn.train --preset quick --out runs/quick         # the first hour: an LSTM-STN on any machine
    python -m minstn.train --model lstm-stn --downsample 2 --out runs/lstm-stn-d2
    python -m minstn.train --model lstm-stn --tied --out runs/lstm-stn-tied     # the localisation net shares the classifier's convs
    python -m minstn.train --task distorted-mnist --distortion RTS --model st-cnn --out runs/rts-st-cnn
    python -m minstn.train --task cluttered-mnist --model tstn --out runs/tstn  # --no-tied: its untied STN
    python -m minstn.train --out runs/lstm-stn-d2 --resume          # continue after Ctrl-C or a kill
    python -m minstn.train --help                                   # every option (minstn.training.config)

The loop itself is minstn.training.loop; this module is its command line. A run writes into its
folder DIR (--out; docs/training.md describes every file):
    config.json      every resolved setting
    metrics.jsonl    one JSON line per epoch (losses, errors, per-position errors, lr, speed, theta statistics)
    checkpoint.npz   the best model so far by validation per-digit error
    last.npz         everything needed to continue exactly: model, optimiser, schedule, early
                     stopping, dropout RNG, position in the epoch, the data's fingerprint (written
                     every --save-every steps, after each epoch, and when a signal stops the run)
    result.json      test errors of the best checkpoint (and on the shifted-layout test set)
    glimpses.png     STN models: the best model's glimpses on the first test canvases
    .lock            held (flock) by the run that owns the folder, so two runs never share one

Exit codes of main(): 0 done, 2 bad options / data / device / checkpoint / run folder (one line on
stderr, found before any data is loaded where it can be), 3 diverged (NaN or inf loss or gradient,
or a runaway loss), 128 + the signal when stopped by SIGINT (130, Ctrl-C), SIGTERM (143) or SIGHUP
(129): last.npz saved, resume with --resume.
"""
from __future__ import annotations

import sys
import traceback

from minstn.backend import DeviceError
from minstn.training import checkpoint
from minstn.training.config import SEQUENCE_TASK, ConfigError, TrainConfig, parse_command_line, with_preset
from minstn.training.console import Console, exit_code
from minstn.training.loop import TrainingDiverged, load_data, train
from minstn.training.run import RunFolderError, read_metrics, resume_config
from minstn.training.speed import SpeedError

__all__ = ["main", "make_config", "train", "load_data", "read_metrics", "TrainingDiverged",
           "EXIT_BAD_INPUT", "EXIT_DIVERGED", "EXIT_INTERRUPTED"]

PROG = "python -m minstn.train"
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130


def make_config(given: dict) -> TrainConfig:
    """The run's TrainConfig from the options given on the command line ({field: value}): the
    defaults overridden by them, or, with --resume, the run's saved settings (minstn.training.run)."""
    if given.get("resume"):
        return resume_config(given)
    task = given.get("task", SEQUENCE_TASK)
    if task != SEQUENCE_TASK:     # settings of the MNIST-sequence canvases, given to a single-digit task
        for name, why in (("layout", "the canvases' layout"), ("shifted_layout", "the shifted-layout test set"),
                          ("downsample", "glimpse down-sampling (the single-digit models keep the image size)")):
            if name in given:
                raise ConfigError(f"--{name.replace('_', '-')} is {why}, a setting of --task mnist-sequence only; "
                                  f"leave it out with --task {task}")
    return TrainConfig(**with_preset(given)).validate()


def main(argv=None) -> int:
    """`python -m minstn.train [options]`; returns the exit code (see the module docstring)."""
    from minstn.data import DataError
    from minstn.models import ModelError

    try:
        given, verbosity = parse_command_line(argv)
    except SystemExit as e:          # argparse printed usage and the message (unknown option: 2)
        return int(e.code or 0)
    try:
        cfg = make_config(given)
        train(cfg, console=Console(verbosity, progress=cfg.progress, log_every=cfg.log_every))
    except (ConfigError, DeviceError, DataError, ModelError, checkpoint.CheckpointError, RunFolderError, SpeedError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TrainingDiverged as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return EXIT_DIVERGED
    except KeyboardInterrupt as e:
        return exit_code(e)
    except (OSError, ValueError, MemoryError) as e:     # the last resort: one line, the traceback with -v
        if verbosity >= 2:
            traceback.print_exc()
        print(f"{PROG}: error: {type(e).__name__}: {e}" + ("" if verbosity >= 2 else " (run with -v for the traceback)"),
              file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    from minstn.training.console import run_cli
    run_cli(main)
