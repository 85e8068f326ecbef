"""minstn.exercises: every check passes the reference solution (tutorials/solutions/), fails a
function that is not written yet, and fails a plausible wrong answer (so no check is one that
cannot fail)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from minstn import exercises

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "tutorials" / "solutions"


def namespace() -> dict:
    """What a notebook's exercise cell can use: numpy and every public name of minstn.ops (plus the classifier pair)."""
    import minstn.ops as ops
    from minstn.models.classifier import classifier_backward, classifier_forward

    ns = {"np": np, "classifier_forward": classifier_forward, "classifier_backward": classifier_backward}
    ns.update({n: getattr(ops, n) for n in ops.__all__})
    return ns


def solution(name: str):
    ns = namespace()
    exec((SOLUTIONS / f"{name}.py").read_text(), ns)
    return ns[f"my_{name}"], ns


def capstone_forward(ns: dict):
    """lstm_stn_forward as notebook 06 defines it (read from its source, so there is one copy)."""
    src = (ROOT / "tutorials" / "_src" / "06_spatial_transformer_and_lstm_stn.nbsrc").read_text()
    cell = re.search(r"(def lstm_stn_forward\(P, U, options\):.*?)(?=\n#%%)", src, re.S)
    assert cell, "notebook 06 defines no lstm_stn_forward(P, U, options)"
    exec(cell.group(1), ns)
    return ns["lstm_stn_forward"]


def _context(name, ns):
    return {"forward": capstone_forward(ns)} if name == "lstm_stn_backward" else {}


@pytest.mark.parametrize("name", list(exercises.EXERCISES))
def test_the_solution_passes(name, capsys):
    fn, ns = solution(name)
    assert exercises.check(name, fn, **_context(name, ns)), capsys.readouterr().out
    assert f"{name}: PASS" in capsys.readouterr().out


@pytest.mark.parametrize("name", list(exercises.EXERCISES))
def test_a_stub_and_a_wrong_answer_fail(name, capsys, monkeypatch):
    fn, ns = solution(name)

    def stub(*args, **kw):
        raise NotImplementedError

    def off_by_a_bit(*args, **kw):           # the solution's every result, 1% off
        out = fn(*args, **kw)
        if isinstance(out, dict):
            return {k: 1.01 * v for k, v in out.items()}
        return tuple(1.01 * o for o in out) if isinstance(out, tuple) else 1.01 * out

    assert not exercises.check(name, stub, **_context(name, ns))
    assert "FAIL (not written yet" in capsys.readouterr().out
    assert not exercises.check(name, off_by_a_bit, **_context(name, ns))
    assert "relative error" in capsys.readouterr().out
    monkeypatch.setenv("MINSTN_EXERCISES_STRICT", "1")
    with pytest.raises(exercises.ExerciseFailed, match=name):
        exercises.check(name, stub, **_context(name, ns))


def test_every_exercise_has_a_solution_file_and_unknown_names_are_errors():
    assert sorted(p.stem for p in SOLUTIONS.glob("*.py")) == sorted(exercises.EXERCISES)
    with pytest.raises(KeyError, match="no exercise 'conv3d'"):
        exercises.check("conv3d", lambda: None)
