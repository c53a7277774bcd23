"""The solutions -> labs generator (`make labs`)."""

from __future__ import annotations

import nbformat
import pytest

from ftlab.labs.generate import MarkerError, generate, make_lab, strip_regions

SOLVED = """import json
### BEGIN SOLUTION
### STUB rank = None  # TODO: choose a rank
rank = 8
### END SOLUTION
print(rank)
### BEGIN HIDDEN TESTS
assert rank == 8
### END HIDDEN TESTS"""


def test_solution_region_becomes_its_stub_and_hidden_tests_vanish():
    lab = strip_regions(SOLVED)
    assert lab == "import json\nrank = None  # TODO: choose a rank\nprint(rank)"


def test_region_without_stub_gets_a_todo_that_runs():
    source = "def f(x):\n    ### BEGIN SOLUTION\n    return x * 2\n    ### END SOLUTION\n"
    lab = strip_regions(source)
    assert "return x * 2" not in lab and "# TODO" in lab
    namespace: dict = {}
    exec(lab, namespace)  # the stub must not raise when the cell runs
    assert namespace["f"](3) is None


def test_a_stub_keeps_its_own_indentation_so_it_can_be_a_function():
    source = (
        "### BEGIN SOLUTION\n"
        "### STUB def double(x):\n"
        '### STUB     """TODO: twice x."""\n'
        "### STUB\n"
        "### STUB     return x  # TODO\n"
        "def double(x):\n"
        "    return 2 * x\n"
        "### END SOLUTION\n"
        "print(double(3))"
    )
    lab = strip_regions(source)
    expected = 'def double(x):\n    """TODO: twice x."""\n\n    return x  # TODO\nprint(double(3))'
    assert lab == expected
    exec(lab, {})


def test_markdown_answer_is_replaced_by_an_invitation():
    lab = strip_regions("Why?\n### BEGIN SOLUTION\nBecause.\n### END SOLUTION", markdown=True)
    assert lab == "Why?\n*Write your answer here.*"
    hidden = "Why?\n<!-- ### BEGIN SOLUTION -->\nBecause.\n<!-- ### END SOLUTION -->"
    assert strip_regions(hidden, markdown=True) == lab  # markers a solved notebook hides
    code = "<!-- ### BEGIN SOLUTION -->\nx = 1"
    assert strip_regions(code) == code  # only markdown unwraps HTML comments


@pytest.mark.parametrize(
    "source",
    ["### BEGIN SOLUTION\nx", "x\n### END SOLUTION", "### BEGIN SOLUTION\n### BEGIN HIDDEN TESTS"],
)
def test_unbalanced_markers_are_reported(source):
    with pytest.raises(MarkerError):
        strip_regions(source, where="lab cell 3")


def test_make_lab_strips_outputs_and_keeps_the_rest(tmp_path):
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("# Title"),
            nbformat.v4.new_code_cell(SOLVED, execution_count=3),
        ]
    )
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="8\n")]
    lab = make_lab(nb)
    assert lab.cells[0].source == "# Title"
    assert lab.cells[1].outputs == [] and lab.cells[1].execution_count is None
    assert nb.cells[1].outputs  # the solution itself is untouched
    (tmp_path / "solutions").mkdir()
    nbformat.write(nb, tmp_path / "solutions" / "lab.ipynb")
    first = generate(tmp_path / "solutions", tmp_path / "labs")[0].read_bytes()
    second = generate(tmp_path / "solutions", tmp_path / "labs")[0].read_bytes()
    assert first == second
