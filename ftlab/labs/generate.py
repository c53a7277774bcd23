"""Make the learner's labs from the solved notebooks (`make labs`).

The solution notebooks are the one source of truth. In them, nbgrader's markers
delimit what the learner must write:

    ### BEGIN SOLUTION
    ### STUB rank = None  # TODO: choose a LoRA rank
    rank = 8
    ### END SOLUTION

In the lab, the region becomes its `### STUB` lines (without the marker and the one
space after it, so that indentation after that space is kept) or, if it has none, a
`# TODO` comment, so a stub never raises when run. Regions between
`### BEGIN HIDDEN TESTS` and `### END HIDDEN TESTS` are removed. Markdown
regions become an invitation to write an answer; in a markdown cell, write each
marker inside an HTML comment, so that the solved notebook does not show it as a
heading:

    **Your answer:** why?

    <!-- ### BEGIN SOLUTION -->
    Because.
    <!-- ### END SOLUTION -->

Outputs and execution counts
are stripped; everything else is copied unchanged, so the result is
byte-for-byte reproducible.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
STUB = "### STUB"
DEFAULT_CODE_STUB = "# TODO: write your code here"
MARKDOWN_STUB = "*Write your answer here.*"
SOLUTION_WORDS = (BEGIN_SOLUTION, END_SOLUTION, BEGIN_HIDDEN, END_HIDDEN, STUB)


class MarkerError(ValueError):
    """The solution markers in a notebook are unbalanced or nested."""


def _stub_for(region: list[str], indent: str, markdown: bool) -> list[str]:
    if markdown:
        return [indent + MARKDOWN_STUB]
    # What follows "### STUB " keeps its own indentation, so a stub can be a whole function.
    stubs = [
        line.strip()[len(STUB) :].removeprefix(" ").rstrip()
        for line in region
        if line.strip().startswith(STUB)
    ]
    lines = [indent + stub if stub else "" for stub in stubs] or [indent + DEFAULT_CODE_STUB]
    if indent and not stubs:
        lines.append(indent + "pass")
    return lines


def marker_of(line: str, markdown: bool) -> str:
    """The line as a possible marker: stripped, and in markdown unwrapped from `<!-- -->`."""
    marker = line.strip()
    if markdown and marker.startswith("<!--") and marker.endswith("-->"):
        return marker[4:-3].strip()
    return marker


def strip_regions(source: str, markdown: bool = False, where: str = "") -> str:
    """Replace solution regions by stubs and drop hidden-test regions in one cell's source."""
    out: list[str] = []
    region: list[str] | None = None
    kind = ""
    indent = ""
    for number, line in enumerate(source.split("\n"), start=1):
        marker = marker_of(line, markdown)
        if marker in (BEGIN_SOLUTION, BEGIN_HIDDEN):
            if region is not None:
                raise MarkerError(f"{where} line {number}: {marker} inside another region")
            region, kind, indent = [], marker, line[: len(line) - len(line.lstrip())]
        elif marker in (END_SOLUTION, END_HIDDEN):
            expected = END_SOLUTION if kind == BEGIN_SOLUTION else END_HIDDEN
            if region is None or marker != expected:
                raise MarkerError(f"{where} line {number}: {marker} without its BEGIN marker")
            if kind == BEGIN_SOLUTION:
                out.extend(_stub_for(region, indent, markdown))
            region = None
        elif region is not None:
            region.append(line)
        else:
            out.append(line)
    if region is not None:
        raise MarkerError(f"{where}: {kind} is never closed")
    return "\n".join(out)


def make_lab(solution: nbformat.NotebookNode, name: str = "") -> nbformat.NotebookNode:
    """The learner's version of a solved notebook."""
    lab = nbformat.from_dict(solution)
    for index, cell in enumerate(lab.cells):
        where = f"{name} cell {index}"
        cell.source = strip_regions(cell.source, cell.cell_type == "markdown", where)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
    return lab


def generate(solutions: Path, labs: Path) -> list[Path]:
    """Write labs/NAME.ipynb for every solutions/NAME.ipynb; returns the files written."""
    labs.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sorted(solutions.glob("*.ipynb")):
        lab = make_lab(nbformat.read(source, as_version=4), source.name)
        target = labs / source.name
        target.write_text(nbformat.writes(lab) + "\n", encoding="utf-8")
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 2:
        print("usage: python -m ftlab.labs SOLUTIONS_DIR LABS_DIR", file=sys.stderr)
        return 2
    for path in generate(Path(args[0]), Path(args[1])):
        print(f"wrote {path}")
    return 0
