"""The shipped labs: generated from solutions/, free of answers, and their self-checks bite.

The solutions themselves run under nbval (`make test`), which proves every
self-check passes on the solved answers; the slow test here proves that every
self-check fails on the untouched stubs, so none of them is vacuous.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from ftlab.labs.generate import (
    BEGIN_HIDDEN,
    BEGIN_SOLUTION,
    END_HIDDEN,
    END_SOLUTION,
    SOLUTION_WORDS,
    STUB,
    generate,
    marker_of,
)

REPO = Path(__file__).resolve().parent.parent
SOLUTIONS = REPO / "solutions"
LABS = REPO / "labs"
LAB_NAMES = sorted(path.name for path in SOLUTIONS.glob("*.ipynb"))
SELF_CHECK = "self-check"
# Lines too generic to count as giving an answer away when they also appear in a lab.
TRIVIAL = {"pass", "else:", "try:", "return", "continue", "break", ")", "]", "}", "),", "],", "},"}


def region_lines(source: str, markdown: bool = False) -> tuple[list[str], list[str]]:
    """(lines inside solution or hidden-test regions; lines the lab shows: outside any region,
    or a stub's, such as a function's signature that the solution repeats)."""
    inside, outside = [], []
    in_region = False
    for line in source.split("\n"):
        marker = marker_of(line, markdown)
        if marker in (BEGIN_SOLUTION, BEGIN_HIDDEN):
            in_region = True
        elif marker in (END_SOLUTION, END_HIDDEN):
            in_region = False
        elif in_region and marker.startswith(STUB):  # shown on purpose: the lab keeps it
            outside.append(marker[len(STUB) :].strip())
        elif in_region:
            inside.append(marker)
        else:
            outside.append(marker)
    return inside, outside


def secret_lines(solution: nbformat.NotebookNode) -> set[str]:
    """The answer lines of a solved notebook, less those that also appear outside any region."""
    inside, outside = set(), set()
    for cell in solution.cells:
        cell_inside, cell_outside = region_lines(cell.source, cell.cell_type == "markdown")
        inside.update(cell_inside)
        outside.update(cell_outside)
    return {line for line in inside - outside if len(line) > 3 and line not in TRIVIAL}


def test_there_are_labs_to_check():
    assert {"lab1_data.ipynb", "lab2_lora.ipynb"} <= set(LAB_NAMES)


def test_committed_labs_equal_a_fresh_generation(tmp_path: Path):
    written = generate(SOLUTIONS, tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in LABS.glob("*.ipynb")), (
        "labs/ and solutions/ hold different notebooks. Fix: run `make labs`."
    )
    for fresh in written:
        committed = LABS / fresh.name
        assert committed.read_bytes() == fresh.read_bytes(), (
            f"labs/{fresh.name} is stale: it differs from a fresh generation from "
            f"solutions/{fresh.name}. Fix: run `make labs` and commit the result."
        )


@pytest.mark.parametrize("name", LAB_NAMES)
def test_solutions_have_answers_and_self_checks(name: str):
    solution = nbformat.read(SOLUTIONS / name, as_version=4)
    assert any(BEGIN_SOLUTION in cell.source for cell in solution.cells)
    assert any(SELF_CHECK in cell.metadata.get("tags", []) for cell in solution.cells)
    assert all(cell.get("outputs", []) == [] for cell in solution.cells), (
        f"solutions/{name} is stored with outputs. Fix: clear them before committing."
    )


@pytest.mark.parametrize("name", LAB_NAMES)
def test_labs_carry_no_solution_text(name: str):
    solution = nbformat.read(SOLUTIONS / name, as_version=4)
    lab_text = (LABS / name).read_text(encoding="utf-8")
    lab = nbformat.reads(lab_text, as_version=4)
    for word in SOLUTION_WORDS:
        assert word not in lab_text, f"labs/{name} still contains the marker {word!r}"
    lab_lines = {line.strip() for cell in lab.cells for line in cell.source.split("\n")}
    secrets = secret_lines(solution)
    assert secrets, f"solutions/{name} has no solution lines to hide"
    leaked = sorted(secrets & lab_lines)
    assert not leaked, f"labs/{name} gives away solution lines: {leaked[:5]}"


def run_lab(path: Path) -> nbformat.NotebookNode:
    """Execute a lab as a learner would with Run All, but carrying on past errors."""
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    # "python3" here is the kernel of this very environment, as nbval's --nbval-current-env.
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    return notebook


def errors_of(cell: nbformat.NotebookNode) -> list[str]:
    return [f"{o.ename}: {o.evalue}" for o in cell.get("outputs", []) if o.output_type == "error"]


@pytest.mark.slow
@pytest.mark.parametrize("name", LAB_NAMES)
def test_every_self_check_fails_on_the_untouched_lab(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("FTLAB_RUNS", str(tmp_path / "runs"))  # keep the repo's runs/ untouched
    monkeypatch.setenv("MPLBACKEND", "Agg")
    executed = run_lab(LABS / name)
    checks = 0
    for index, cell in enumerate(executed.cells):
        if cell.cell_type != "code":
            continue
        errors = errors_of(cell)
        if SELF_CHECK in cell.metadata.get("tags", []):
            checks += 1
            assert len(errors) == 1 and errors[0].startswith("LabCheckFailed"), (
                f"labs/{name} cell {index}: this self-check should fail on the stubs, got "
                f"{errors or 'no error'}\n{cell.source}"
            )
        else:
            assert not errors, f"labs/{name} cell {index} raised on the stubs: {errors}"
    assert checks >= 3, f"labs/{name} has only {checks} self-checks"
