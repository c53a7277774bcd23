"""`ftlab check`, run as a newcomer would run it."""

from __future__ import annotations

from conftest import run_ftlab

from ftlab.check import CheckResult, passed


def test_check_passes_and_prints_one_line_per_item():
    result = run_ftlab("check")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("[")]
    items = "\n".join(lines)
    for expected in (
        "[OK] Python",
        "[OK] package torch: 2.13.0",
        "[OK] base model",
        "[OK] 10-token generation",
        "[OK] device",
        "[OK] Jupyter kernel",
    ):
        assert expected in items
    assert "chromium" in items
    assert not any(line.startswith("[FAIL]") for line in lines)


def test_a_failure_makes_the_check_fail_and_says_how_to_fix():
    results = [CheckResult("OK", "a"), CheckResult("FAIL", "b", "broken", "do this")]
    assert not passed(results)
    assert "fix: do this" in results[1].line()
    assert passed([CheckResult("OK", "a"), CheckResult("SKIP", "c")])


def test_cli_lists_its_commands():
    result = run_ftlab("--help")
    assert result.returncode == 0
    for command in ("check", "prepare"):
        assert command in result.stdout
