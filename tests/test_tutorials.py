"""The tutorial notebooks: each one runs top to bottom, and each committed file is a complete lesson.

Every test here carries the ``tutorials`` marker (``make test-tutorials``). The execution
test runs a notebook in a fresh kernel with nbclient (working directory tutorials/, a time
limit per cell) and fails with the failing cell's own error. Notebooks whose metadata says
``{"minstn": {"needs_mnist": true}}`` are skipped, with the reason, when no MNIST folder is found.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from tests.conftest import shared_mnist_dir
from tests.notebooks import NotebookError, exercise_cells, execute_notebook, find_notebooks, needs_mnist

pytestmark = pytest.mark.tutorials

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT = 900  # seconds: catches a hung kernel. The longest cell (450 training steps in 08) takes under
                    # 2 minutes on an idle two-core machine, and over 5 beside two busy training processes

# The public op functions of minstn.ops (common API). A tutorial imports these; it never defines them.
PUBLIC_OPS = [
    "conv2d_forward", "conv2d_backward", "conv2d_forward_naive",
    "maxpool2d_forward", "maxpool2d_backward", "maxpool2d_forward_naive",
    "avgpool2d_forward", "avgpool2d_backward", "avgpool2d_forward_naive",
    "linear_forward", "linear_backward", "relu_forward", "relu_backward",
    "dropout_forward", "dropout_backward", "softmax_cross_entropy",
    "lstm_cell_forward", "lstm_cell_backward", "lstm_forward", "lstm_backward",
    "affine_grid_forward", "affine_grid_backward",
    "bilinear_sample_forward", "bilinear_sample_backward", "bilinear_sample_forward_naive",
]


def _ids(paths):
    return [p.stem for p in paths]


def _code(nb) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code")


def _markdown(nb) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def _public_op_names() -> list[str]:
    """The fixed list above plus every public function minstn.ops exports, where it imports."""
    names = set(PUBLIC_OPS)
    try:
        import minstn.ops as ops
    except ImportError:  # the ops package is not importable: the fixed list still applies
        return sorted(names)
    names.update(n for n in getattr(ops, "__all__", dir(ops)) if not n.startswith("_") and callable(getattr(ops, n, None)))
    return sorted(names)


def test_the_series_is_there():
    assert len(NOTEBOOKS) >= 8, f"expected the eight numbered tutorials in {TUTORIALS}, found {_ids(NOTEBOOKS)}"
    readme = (TUTORIALS / "README.md").read_text()
    missing = [p.name for p in NOTEBOOKS if p.name not in readme]
    assert not missing, f"tutorials/README.md does not list {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_imports_minstn_and_does_not_redefine_ops(path):
    nb = nbformat.read(path, as_version=4)
    code = _code(nb)
    assert re.search(r"^\s*(from minstn[\w.]* import|import minstn)", code, re.M), f"{path.name} never imports minstn"
    redefined = [n for n in _public_op_names() if re.search(rf"^\s*def {n}\s*\(", code, re.M)]
    assert not redefined, f"{path.name} redefines public ops {redefined}; import them from minstn.ops instead"
    assert "%matplotlib inline" in code, f"{path.name} must select the inline backend (figures are saved as outputs)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_teaches_from_an_equation_to_an_exercise(path):
    nb = nbformat.read(path, as_version=4)
    md = _markdown(nb)
    assert "$$" in md, f"{path.name} quotes no display equation"
    assert re.search(r"exercise", md, re.I), f"{path.name} ends without an exercise"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_committed_notebook_has_its_outputs_and_a_figure(path):
    nb = nbformat.read(path, as_version=4)
    code_cells = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    unexecuted = [i for i, c in enumerate(code_cells) if c.get("execution_count") is None]
    assert not unexecuted, f"{path.name}: code cells {unexecuted} have not been run; run `make tutorials`"
    errors = [o for c in code_cells for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{path.name} was saved with an error output: {errors[0].get('ename')}"
    images = [o for c in code_cells for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, f"{path.name} has no figure in its saved outputs; run `make tutorials`"
    counts = [c.execution_count for c in code_cells]
    assert counts == list(range(1, len(counts) + 1)), f"{path.name} was not saved from one top-to-bottom run: {counts}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs_top_to_bottom(path):
    nb = nbformat.read(path, as_version=4)
    mnist = shared_mnist_dir()
    if needs_mnist(nb) and mnist is None:
        pytest.skip(f"{path.name} needs MNIST: set MINSTN_DATA_DIR to a folder with the IDX files")
    try:   # with tutorials/solutions/ in place of the stubs: every exercise check must pass
        execute_notebook(path, timeout=CELL_TIMEOUT, mnist_dir=mnist, solutions=True)
    except NotebookError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_points_at_the_answers_to_its_exercises(path):
    nb = nbformat.read(path, as_version=4)
    answers = f"answers/{path.name[:2]}.md"
    assert f"]({answers})" in _markdown(nb), f"{path.name}: its exercises do not link their answers, [...]({answers})"
    assert (TUTORIALS / answers).is_file(), f"{path.name} links {answers}, which does not exist"


def _local_links(text: str) -> list[str]:
    """The targets of the Markdown links [text](target) in `text` that are files of this checkout
    (no web addresses, no pure #anchors), without their #anchor."""
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    return [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


def test_tutorial_links_point_at_files_that_exist():
    """The notebooks, their answers and the README link docs, benchmarks and each other by relative
    paths; a doc that moves must take its links along."""
    broken = []
    for path in NOTEBOOKS:
        broken += [(path.name, t) for t in _local_links(_markdown(nbformat.read(path, as_version=4)))
                   if not (path.parent / t).exists()]
    for path in [TUTORIALS / "README.md", *sorted((TUTORIALS / "answers").glob("*.md"))]:
        broken += [(str(path.relative_to(TUTORIALS)), t) for t in _local_links(path.read_text()) if not (path.parent / t).exists()]
    assert not broken, f"links to files that do not exist: {broken}"


LESSONS = [p for p in NOTEBOOKS if p.name[:2] in ("01", "02", "03", "04", "05", "06")]


@pytest.mark.parametrize("path", LESSONS, ids=_ids(LESSONS))
def test_lesson_has_checked_exercises_whose_stubs_fail(path):
    """Notebooks 01-06 each have "your turn" cells (exercise stubs), each followed by a cell that
    checks it; as shipped, every stub fails its check (a check that cannot fail would pass it)."""
    from minstn import exercises
    from tests.test_exercises import capstone_forward, namespace

    nb = nbformat.read(path, as_version=4)
    stubs = exercise_cells(nb)
    assert stubs, f"{path.name} has no exercise cell ('#%% exercise NAME' in its source)"
    code = [c for c in nb.cells if c.cell_type == "code"]
    for name, cell in stubs.items():
        assert name in exercises.EXERCISES, f"{path.name}: unknown exercise {name!r}"
        following = code[code.index(cell) + 1].source
        assert f'check("{name}", my_{name}' in following, f"{path.name}: the cell after exercise {name} does not check it"
        ns = namespace()
        exec(cell.source, ns)
        context = {"forward": capstone_forward(ns)} if name == "lstm_stn_backward" else {}
        assert not exercises.check(name, ns[f"my_{name}"], **context), f"{path.name}: the stub of {name} passes its check"


# --- the executor itself -------------------------------------------------------------------


def test_find_notebooks_rejects_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such notebook or folder"):
        find_notebooks([tmp_path / "missing.ipynb"])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="is not a notebook"):
        find_notebooks([tmp_path / "notes.txt"])
    with pytest.raises(ValueError, match="holds no .ipynb notebooks"):
        find_notebooks([tmp_path])


def test_executor_reports_the_failing_cell(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("raise ValueError('broken step')")]
    path = tmp_path / "bad.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(NotebookError, match=r"bad.ipynb: cell 1 failed:[\s\S]*broken step"):
        execute_notebook(path, timeout=60)


def test_executor_writes_outputs_in_place_and_runs_in_the_notebook_folder(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import os, minstn\nprint(os.path.basename(os.getcwd()))")]
    folder = tmp_path / "lessons"
    folder.mkdir()
    path = folder / "ok.ipynb"
    nbformat.write(nb, path)
    execute_notebook(path, timeout=60, in_place=True)
    saved = nbformat.read(path, as_version=4)
    assert saved.cells[0].outputs[0]["text"].strip() == "lessons"


def test_main_skips_notebooks_without_mnist_and_reports_failures(tmp_path, monkeypatch, capsys):
    import tests.notebooks as runner

    needs = nbformat.v4.new_notebook()
    needs.metadata["minstn"] = {"needs_mnist": True}
    needs.cells = [nbformat.v4.new_code_cell("raise RuntimeError('must not run')")]
    nbformat.write(needs, tmp_path / "a_needs_mnist.ipynb")
    bad = nbformat.v4.new_notebook()
    bad.cells = [nbformat.v4.new_code_cell("1 / 0")]
    nbformat.write(bad, tmp_path / "b_bad.ipynb")
    monkeypatch.setattr(runner, "default_mnist_dir", lambda: None)
    assert runner.main([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "skip" in out and "a_needs_mnist.ipynb: needs MNIST; set MINSTN_DATA_DIR or pass --data-dir" in out
    assert "FAIL" in out and "ZeroDivisionError" in out
    with pytest.raises(SystemExit):
        runner.main([str(tmp_path / "missing")])
    assert "no such notebook or folder" in capsys.readouterr().err
