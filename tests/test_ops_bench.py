"""The op benchmark runs (tiny batch, one repeat) and prints its table; bad options are refused."""
import pytest

from minstn.bench import ops as bench_ops


@pytest.fixture
def one_thread_env(monkeypatch):
    for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(v, "1")  # already what --threads 1 asks for: no re-run


def test_bench_prints_a_row_per_case(one_thread_env, capsys):
    rc = bench_ops.main(["--batch", "2", "--repeat", "1", "--threads", "1", "--only", "avgpool", "--no-torch"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "| op | shape | minstn fwd ms" in out
    assert sum(line.startswith("| avgpool d=") for line in out.splitlines()) == 4


def test_bench_every_case_builds(one_thread_env, capsys):
    rc = bench_ops.main(["--batch", "1", "--repeat", "1", "--threads", "1", "--only", "a", "--no-torch"])
    assert rc == 0 and "| affine grid |" in capsys.readouterr().out


def test_bench_unknown_case(one_thread_env, capsys):
    assert bench_ops.main(["--only", "nosuchop", "--threads", "1", "--no-torch"]) == 2
    assert "matches no case" in capsys.readouterr().err


def test_bench_rejects_bad_numbers(one_thread_env, capsys):
    assert bench_ops.main(["--repeat", "0", "--threads", "1"]) == 2
    assert "must be >= 1" in capsys.readouterr().err


def test_times_the_fast_ops_the_models_run_and_the_plain_ones_on_request(one_thread_env, monkeypatch, capsys):
    """The conv row times minstn.ops.fast's conv (what the models run); --plain times minstn.ops'."""
    import minstn.ops as plain
    import minstn.ops.fast as fast

    calls = []
    for module, tag in ((fast, "fast"), (plain, "plain")):
        original = module.conv2d_forward
        monkeypatch.setattr(module, "conv2d_forward",
                            lambda *a, _f=original, _t=tag, **k: calls.append(_t) or _f(*a, **k))
    args = ["--batch", "1", "--repeat", "1", "--threads", "1", "--only", "conv1", "--no-torch"]
    assert bench_ops.main(args) == 0
    assert set(calls) == {"fast"} and "minstn ops: fast" in capsys.readouterr().out
    calls.clear()
    assert bench_ops.main(args + ["--plain"]) == 0
    assert set(calls) == {"plain"} and "minstn ops: plain" in capsys.readouterr().out
