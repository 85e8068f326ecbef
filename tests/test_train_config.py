"""TrainConfig and its command line (minstn.training.config)."""
from __future__ import annotations

import dataclasses
import json

import pytest

from minstn.training import config
from minstn.training.config import ConfigError, TrainConfig


def _parse(argv):
    """argv -> a validated TrainConfig; a bad value exits 2 with argparse's message, as the CLI does."""
    parser = config.build_parser()
    try:
        return TrainConfig(**config.given_options(argv)).validate()
    except ConfigError as e:
        parser.error(str(e))


def test_model_names_and_options_match_the_models():
    from minstn.models import DEFAULT_OPTIONS, MODEL_NAMES

    from minstn.data import LAYOUTS

    assert config.MODEL_NAMES == MODEL_NAMES and config.LAYOUT_NAMES == tuple(LAYOUTS)
    every_option = set().union(*DEFAULT_OPTIONS.values())
    assert set(config.MODEL_OPTION_FIELDS) == every_option


def test_parser_has_one_option_per_field_with_the_dataclass_defaults():
    parser = config.build_parser()
    text = parser.format_help()
    for f in dataclasses.fields(TrainConfig):
        assert f"--{f.name.replace('_', '-')}" in text
    assert _parse([]) == TrainConfig()
    cfg = _parse(["--model", "ffn-stn", "--downsample", "3", "--lr", "0.01", "--clip-value", "1",
                             "--no-progress", "--nesterov", "--optimizer", "sgd"])
    assert (cfg.model, cfg.downsample, cfg.lr, cfg.clip_value, cfg.progress, cfg.nesterov) == ("ffn-stn", 3, 0.01, 1.0, False, True)
    assert config.given_options(["--lr", "0.5"]) == {"lr": 0.5}  # only what was given


def test_json_round_trip():
    cfg = TrainConfig(model="cnn", epochs=3, out="x")
    back = config.config_from_dict(json.loads(cfg.to_json()))
    assert back == cfg
    with pytest.raises(ConfigError, match=r"unknown settings \['colour'\]"):
        config.config_from_dict({"colour": "red"})


def test_run_dir_default():
    assert TrainConfig(model="ffn-stn", downsample=3).run_dir().endswith("ffn-stn-d3")
    assert TrainConfig(model="cnn", downsample=3).run_dir().endswith("cnn-d1")
    assert TrainConfig(out="somewhere").run_dir() == "somewhere"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--downsample", "5"], "--downsample must be 1, 2, 3 or 4"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--lr", "-1"], "--lr must be a finite number > 0"),
        (["--lr", "nan"], "--lr must be a finite number > 0"),
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--train-size", "0"], "--train-size must be at least 1"),
        (["--clip-norm", "-5"], "--clip-norm must be a finite number >= 0"),
        (["--loc-lr-mult", "-0.1"], "--loc-lr-mult must be a finite number >= 0"),
        (["--time-budget", "-1"], "--time-budget must be a finite number >= 0"),
        (["--patience", "-1"], "--patience must be >= 0"),
        (["--momentum", "1"], "--momentum must be in"),
        (["--nesterov"], "--nesterov needs --optimizer sgd"),
        (["--lr-factor", "1.5"], "--lr-factor must be at most 1 for the plateau schedule"),
        (["--lr-schedule", "step", "--lr-factor", "5"], "--lr-factor must be at most 1 for the step schedule"),
        (["--seed", "-1"], "--seed must be an integer >= 0, got -1"),
        (["--data-seed", "-2"], "--data-seed must be an integer >= 0"),
        (["--layout", "wide"], "invalid choice: 'wide'"),
        (["--max-images", "-1"], "--max-images must be >= 0"),
        (["--save-every", "-1"], "--save-every must be >= 0"),
        (["--hidden-size", "100000000"], "--hidden-size must be an integer >= 1 and <= 8192, got 100000000"),
        (["--step-spread", "2"], "--step-spread must be a finite number >= 0 and <= 1"),
        (["--init-scale", "0"], "--init-scale must be a finite number > 0, got 0.0"),
        (["--init-scale", "nan"], "--init-scale must be a finite number > 0, got nan"),
        (["--regressor-std", "-1"], "--regressor-std must be a finite number >= 0"),
        (["--dropout", "1"], "--dropout must be a finite number >= 0 and < 1, got 1.0"),
        (["--hidden-size", "0"], "--hidden-size must be an integer >= 1"),
        (["--resume"], "--resume needs --out DIR"),
        (["--chunk", "-1"], "--chunk must be >= 0"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["--workers", "2", "--chunk", "0"], "--workers 2 needs --chunk above 0"),
    ],
)
def test_bad_values_exit_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        _parse(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--colour", "red"], "unrecognized arguments: --colour"),
        (["--model", "rnn"], "invalid choice: 'rnn'"),
        (["--batch-size", "many"], "invalid int value: 'many'"),
        (["--epoch", "3"], "unrecognized arguments"),  # no abbreviations
    ],
)
def test_unknown_options_and_types_are_argparse_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        _parse(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_validate_checks_choices_set_in_code():
    with pytest.raises(ConfigError, match="--optimizer 'lbfgs' is not one of adam, sgd, rmsprop"):
        TrainConfig(optimizer="lbfgs").validate()


def test_resolve_model_options():
    from minstn.models import DEFAULT_OPTIONS

    opts = config.resolve_model_options(TrainConfig(model="lstm-stn", init_scale=0.7))
    assert opts == {**DEFAULT_OPTIONS["lstm-stn"], "init_scale": 0.7}
    assert config.resolve_model_options(TrainConfig(model="cnn")) == DEFAULT_OPTIONS["cnn"]
    with pytest.raises(ConfigError, match="--init-scale is not an option of the cnn model"):
        config.resolve_model_options(TrainConfig(model="cnn", init_scale=0.5))
    with pytest.raises(ConfigError, match="--feedback is not an option of the ffn-stn model"):
        config.resolve_model_options(TrainConfig(model="ffn-stn", feedback="none"))


def test_docs_list_every_option():
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "docs", "training.md")
    with open(path) as f:
        text = f.read()
    for f in dataclasses.fields(TrainConfig):
        assert f"`--{f.name.replace('_', '-')}`" in text or f"--{f.name.replace('_', '-')}`" in text, f.name
    for name in config.RESUME_OVERRIDABLE:
        if name != "resume":
            assert f"`--{name.replace('_', '-')}`" in text, name


def test_resolve_parallel_defaults_per_device():
    from minstn.training.speed import resolve

    def res(cfg, kind, cores):
        return resolve(cfg.chunk, cfg.workers, cfg.parallel, cfg.batch_size, kind, cores)

    cfg = TrainConfig()
    assert res(cfg, "cpu", 2) == (32, 2)                  # one chunk per worker process
    assert res(cfg, "cpu", 1) == (32, 1)                  # at most 32
    assert res(cfg, "cpu", 3) == (22, 3)
    assert res(TrainConfig(parallel="thread"), "cpu", 2) == (16, 2)
    assert res(cfg, "gpu", 2) == (0, 1)
    assert res(TrainConfig(chunk=0), "cpu", 4) == (0, 1)
    assert res(TrainConfig(chunk=8, workers=3), "cpu", 2) == (8, 3)
    assert res(TrainConfig(batch_size=4), "cpu", 2) == (2, 2)
    assert res(TrainConfig(batch_size=4, chunk=16), "cpu", 2) == (16, 1)   # one chunk: one worker
    assert res(TrainConfig(batch_size=20, chunk=8, workers=5), "cpu", 2) == (8, 3)
    assert res(TrainConfig(workers=2, chunk=32), "gpu", 2) == (0, 1)
