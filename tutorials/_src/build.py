"""Build the tutorial notebooks from their plain-text sources in this folder.

    python tutorials/_src/build.py                 # every NN_*.nbsrc -> tutorials/NN_*.ipynb (no outputs)
    python tutorials/_src/build.py 03 04           # only the notebooks whose names start so
    python -m tests.notebooks --in-place tutorials # then execute them and save the outputs

A source file is a list of cells, each opened by a marker line:

    #%% md             a markdown cell (the following lines, as written)
    #%% code           a code cell
    #%% exercise NAME  a code cell the learner fills in (the stub), tagged {"minstn": {"exercise": NAME}};
                       tutorials/solutions/NAME.py holds its solution (see tests/notebooks.py)
    #%% meta KEY       a flag stored in the notebook metadata as {"minstn": {KEY: true}}

The .ipynb files are the product; these sources only make them easy to review and rebuild.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
OUT = HERE.parent


def parse(text: str):
    """Split a source into (metadata flags, [(kind, source, exercise name or None), ...])."""
    flags, cells, kind, name, lines = {}, [], None, None, []
    for line in text.splitlines():
        if line.startswith("#%% "):
            if kind is not None:
                cells.append((kind, "\n".join(lines).strip("\n"), name))
            word = line[4:].split()
            name = None
            if word[0] == "meta":
                flags[word[1]] = True
                kind, lines = None, []
                continue
            if word[0] == "exercise":
                if len(word) != 2:
                    raise ValueError(f"{line!r}: an exercise cell is '#%% exercise NAME'")
                kind, name, lines = "code", word[1], []
                continue
            if word[0] not in ("md", "code"):
                raise ValueError(f"unknown cell marker {line!r}: use '#%% md', '#%% code', '#%% exercise NAME' or '#%% meta KEY'")
            kind, lines = word[0], []
        elif kind is not None:
            lines.append(line)
    if kind is not None:
        cells.append((kind, "\n".join(lines).strip("\n"), name))
    return flags, cells


def build(src: Path) -> Path:
    flags, cells = parse(src.read_text())
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "minstn": flags,
    }
    nb.cells = []
    for kind, source, exercise in cells:
        cell = nbformat.v4.new_markdown_cell(source) if kind == "md" else nbformat.v4.new_code_cell(source)
        if exercise:
            cell.metadata["minstn"] = {"exercise": exercise}
        nb.cells.append(cell)
    for i, cell in enumerate(nb.cells):  # stable cell ids, so rebuilds give small diffs
        cell.id = f"{src.stem[:2]}-{i:02d}"
    out = OUT / (src.stem + ".ipynb")
    nbformat.validate(nb)
    nbformat.write(nb, out)
    return out


def main(argv) -> int:
    sources = sorted(HERE.glob("[0-9][0-9]_*.nbsrc"))
    if argv:
        sources = [s for s in sources if any(s.name.startswith(a) for a in argv)]
    for s in sources:
        print("built", build(s).relative_to(OUT.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
