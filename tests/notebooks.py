"""Execute the tutorial notebooks with nbclient, optionally writing their outputs back.

    python -m tests.notebooks tutorials                      # run every notebook, keep the files as they are
    python -m tests.notebooks --in-place tutorials           # run and save the outputs into the .ipynb files
    python -m tests.notebooks --in-place tutorials/03_affine_grid.ipynb

Each notebook runs in a fresh kernel (named ``python3``) whose working directory is the
notebook's own folder, with the repository root put first on PYTHONPATH so that
``import minstn`` finds this checkout even when minstn is not installed. MNIST is found
the usual way (``$MINSTN_DATA_DIR``); when that is unset and the shared folder beside the
checkout exists, it is used.

A failing cell stops the run with :class:`NotebookError`, whose message names the notebook,
the cell number and the cell's own error and traceback.

Notebooks may say in their metadata that they need MNIST:
``{"minstn": {"needs_mnist": true}}``. :func:`needs_mnist` reads that flag; the tests skip
such notebooks when no MNIST is found, and ``main`` reports and skips them too.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

import nbformat

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CELL_TIMEOUT = 300  # seconds per cell; the slowest tutorial cell (training) takes ~70 s
KERNEL_NAME = "python3"


class NotebookError(RuntimeError):
    """A notebook cell raised, or a notebook could not be run."""


def find_notebooks(paths) -> list[Path]:
    """Expand files and folders into a sorted list of .ipynb files (checkpoints skipped).

    Raises FileNotFoundError for a path that does not exist and ValueError for a file that
    is not a notebook, or a folder that holds none.
    """
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"no such notebook or folder: {p}")
        if p.is_dir():
            nbs = sorted(q for q in p.glob("*.ipynb") if ".ipynb_checkpoints" not in q.parts)
            if not nbs:
                raise ValueError(f"folder {p} holds no .ipynb notebooks; pass a notebook or a folder with some")
            found.extend(nbs)
        elif p.suffix == ".ipynb":
            found.append(p)
        else:
            raise ValueError(f"{p} is not a notebook (expected a .ipynb file or a folder of them)")
    return found


def needs_mnist(nb) -> bool:
    """True when the notebook's metadata says it reads MNIST ({"minstn": {"needs_mnist": true}})."""
    return bool(nb.metadata.get("minstn", {}).get("needs_mnist", False))


def default_mnist_dir() -> str | None:
    """$MINSTN_DATA_DIR if set, else the shared MNIST folder beside the checkout, else None."""
    from tests.conftest import shared_mnist_dir

    return shared_mnist_dir()


SOLUTIONS = REPO_ROOT / "tutorials" / "solutions"


def exercise_cells(nb) -> dict:
    """{exercise name: cell} of a notebook's "your turn" cells (metadata minstn.exercise)."""
    return {c.metadata["minstn"]["exercise"]: c for c in nb.cells
            if c.cell_type == "code" and c.metadata.get("minstn", {}).get("exercise")}


def fill_in_solutions(nb) -> list:
    """Put tutorials/solutions/NAME.py in place of every exercise cell's stub; returns the names."""
    names = []
    for name, cell in exercise_cells(nb).items():
        path = SOLUTIONS / f"{name}.py"
        if not path.is_file():
            raise FileNotFoundError(f"exercise {name!r} has no solution file {path}")
        cell.source = path.read_text().rstrip("\n")
        names.append(name)
    return names


@contextlib.contextmanager
def _kernel_environment(mnist_dir: str | None, strict: bool = False):
    """Temporarily set the environment variables the kernel process inherits."""
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "MINSTN_DATA_DIR", "MINSTN_EXERCISES_STRICT")}
    try:
        parts = [str(REPO_ROOT)] + ([saved["PYTHONPATH"]] if saved["PYTHONPATH"] else [])
        os.environ["PYTHONPATH"] = os.pathsep.join(parts)
        if mnist_dir is not None:
            os.environ["MINSTN_DATA_DIR"] = mnist_dir
        if strict:
            os.environ["MINSTN_EXERCISES_STRICT"] = "1"
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _cell_error_message(path: Path, nb, err) -> str:
    """Name the notebook and the failing cell, then give the cell's error as the kernel printed it."""
    from nbclient.exceptions import CellTimeoutError

    index = None
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            index = i
            break
    where = f"cell {index}" if index is not None else "a cell"
    if isinstance(err, CellTimeoutError):
        return f"{path.name}: {where} timed out: {err}"
    return f"{path.name}: {where} failed:\n{err}"


def execute_notebook(path, *, timeout: int = DEFAULT_CELL_TIMEOUT, in_place: bool = False,
                     mnist_dir: str | None = None, kernel_name: str = KERNEL_NAME, solutions: bool = False):
    """Run one notebook top to bottom in a fresh kernel; return the executed notebook node.

    path: the .ipynb file. timeout: seconds allowed per cell. in_place: write the executed
    notebook (with its outputs) back to ``path``. mnist_dir: exported as $MINSTN_DATA_DIR to
    the kernel when given. solutions: run it with tutorials/solutions/ filled in for the
    exercise stubs, and with MINSTN_EXERCISES_STRICT=1, so a failing check fails the run (never
    with in_place: the committed notebooks keep their stubs). The working directory of the
    kernel is the notebook's folder.

    Raises NotebookError naming the failing cell and carrying its error.
    """
    if solutions and in_place:
        raise ValueError("execute_notebook: solutions=True is for testing; the committed notebooks keep their stubs")
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    if solutions:
        fill_in_solutions(nb)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=kernel_name,
        resources={"metadata": {"path": str(path.parent.resolve())}},
        record_timing=False,  # no timestamps in the saved files, so re-runs give small diffs
    )
    with _kernel_environment(mnist_dir, strict=solutions):
        try:
            client.execute()
        except (CellExecutionError, CellTimeoutError) as err:
            raise NotebookError(_cell_error_message(path, nb, err)) from None
    if in_place:
        nbformat.write(nb, path)
    return nb


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.notebooks", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="notebooks, or folders of notebooks")
    parser.add_argument("--in-place", action="store_true", help="save each executed notebook with its outputs")
    parser.add_argument("--timeout", type=int, default=DEFAULT_CELL_TIMEOUT, help="seconds allowed per cell")
    parser.add_argument("--data-dir", default=None,
                        help="MNIST folder for the notebooks that need it (default: $MINSTN_DATA_DIR or ../shared/data/mnist)")
    args = parser.parse_args(argv)

    try:
        paths = find_notebooks(args.paths)
    except (FileNotFoundError, ValueError) as e:
        parser.error(str(e))
    mnist_dir = args.data_dir or default_mnist_dir()
    failures = 0
    for path in paths:
        if needs_mnist(nbformat.read(path, as_version=4)) and mnist_dir is None:
            print(f"skip {path}: needs MNIST; set MINSTN_DATA_DIR or pass --data-dir", flush=True)
            continue
        t0 = time.perf_counter()
        try:
            execute_notebook(path, timeout=args.timeout, in_place=args.in_place, mnist_dir=mnist_dir)
        except NotebookError as e:
            failures += 1
            print(f"FAIL {path} ({time.perf_counter() - t0:.1f} s)\n{e}", flush=True)
            continue
        saved = " (saved with outputs)" if args.in_place else ""
        print(f"ok   {path} ({time.perf_counter() - t0:.1f} s){saved}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
