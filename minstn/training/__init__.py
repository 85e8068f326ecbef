"""minstn.training: everything that turns a model into a trained one.

    config.py      TrainConfig: every setting, its type, default, check and help (the command line)
    loop.py        train(cfg): the loop (batch, loss and gradients, clip, step, log, validate, save)
    run.py         the run folder: lock, files, metrics, checkpoints, resuming
    checkpoint.py  .npz checkpoints, atomic, no pickles
    optim.py       optimisers, clipping, learning-rate schedules, early stopping
    metrics.py     error rates, theta statistics, a model from its checkpoint
    console.py     status lines, progress bars, stop signals
    speed/         how a CPU step is made fast: chunks on worker threads or processes, BLAS threads

    from minstn.training import TrainConfig, train
    result = train(TrainConfig(model="ffn-stn", max_images=20_000, out="runs/ffn"))
"""
from minstn.training.config import ConfigError, TrainConfig
from minstn.training.loop import TrainingDiverged, load_data, train

__all__ = ["TrainConfig", "ConfigError", "train", "load_data", "TrainingDiverged"]
