"""The quiz in a real browser: JupyterLab on loopback, Debian's chromium driven by Playwright.

It runs the quick-check cell of notebook 01 (or, until that notebook exists, a
one-cell notebook with the same code), clicks answers like a learner and reads
the feedback. Screenshots go to the test's tmp_path and to `test-output/quiz_browser/`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import nbformat
import pytest

from ftlab.check import OK, check_chromium
from ftlab.paths import REPO_ROOT
from ftlab.quiz import load_bank

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

pytestmark = pytest.mark.browser

QUIZ_CALL = 'show_quiz("quick_check")'
NOTEBOOK_01 = REPO_ROOT / "notebooks" / "01_what_is_fine_tuning.ipynb"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Quiet, predictable JupyterLab: every cell in the DOM (no virtual scrolling), no news pop-up.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}
STARTUP_S = 120
QUIZ_APPEARS_MS = 180_000


@dataclass
class Lab:
    url: str
    token: str
    root: Path
    progress: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def quiz_notebook(root: Path) -> tuple[str, int]:
    """Put notebook 01 in `root`; return its name and the index of its quick-check cell,
    which must call `show_quiz("quick_check")` on its own (the test runs only that cell)."""
    notebook = nbformat.read(NOTEBOOK_01, as_version=4)
    index = next(
        (
            i
            for i, cell in enumerate(notebook.cells)
            if cell.cell_type == "code" and QUIZ_CALL in cell.source
        ),
        None,
    )
    assert index is not None, f"{NOTEBOOK_01} has no code cell calling {QUIZ_CALL}"
    assert "import show_quiz" in notebook.cells[index].source, (
        f"{NOTEBOOK_01}: cell {index} must import show_quiz itself (the test runs only it)"
    )
    notebook.metadata["kernelspec"] = {
        "name": "ftlab",
        "display_name": "Python 3 (ftlab)",
        "language": "python",
    }
    name = "01_what_is_fine_tuning.ipynb"
    nbformat.write(notebook, root / name)
    return name, index


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    root, home = tmp_path / "root", tmp_path / "jupyter"
    root.mkdir()
    for relative, settings in LAB_SETTINGS.items():
        path = home / "settings" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings))
    port, token = free_port(), os.urandom(16).hex()
    progress = tmp_path / "progress.json"
    env = {
        **os.environ,
        "FTLAB_PROGRESS": str(progress),
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "run"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "IPYTHONDIR": str(home / "ip"),
    }
    log = (tmp_path / "jupyter.log").open("w")
    command = [
        str(Path(sys.executable).with_name("jupyter")),
        "lab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--port-retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
    ]
    if os.geteuid() == 0:  # containers and CI often run as root; Jupyter refuses unless told
        command.append("--allow-root")
    server = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if server.poll() is not None:
                pytest.fail(
                    f"jupyter lab exited with {server.returncode}; log: "
                    f"{(tmp_path / 'jupyter.log').read_text()[-3000:]}"
                )
            try:
                if httpx.get(f"{url}/api/status", params={"token": token}, timeout=5).is_success:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter lab did not answer on {url} within {STARTUP_S} s")
            time.sleep(0.5)
        yield Lab(url, token, root, progress)
    finally:
        stop(server)
        log.close()


def stop(server: subprocess.Popen[bytes]) -> None:
    """Stop the server and its kernels (it was started as the leader of its own group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()


@pytest.fixture
def chromium_path() -> str:
    pytest.importorskip("playwright", reason="the playwright package is a dev dependency")
    found = check_chromium()  # the same browsers `ftlab check` looks for
    if found.status != OK:
        pytest.skip(f"chromium: {found.detail}")
    return found.detail


def run_cell(page: Page, cell: Locator, tries: int = 3) -> None:
    """Select the cell and press Shift+Enter (this cell only), as a learner would.

    While the notebook is still loading a key press can be lost, so check that the cell
    was queued (its prompt leaves "[ ]:") and press again if not.
    """
    from playwright.sync_api import expect

    prompt = cell.locator(".jp-InputArea-prompt")
    for _ in range(tries):
        cell.locator(".jp-InputArea-editor").click(timeout=90_000)
        page.keyboard.press("Shift+Enter")
        try:
            expect(prompt).not_to_have_text(re.compile(r"^\[ \]:$"), timeout=20_000)
            return
        except AssertionError:
            continue
    pytest.fail(f"the quiz cell never started running after {tries} presses of Shift+Enter")


@contextlib.contextmanager
def quiz_in_lab(
    lab: Lab, chromium_path: str, notebook: str, index: int
) -> Iterator[tuple[Page, Locator, Locator]]:
    """Open `notebook` in JupyterLab in headless chromium and run its cell `index`; yields
    the page, the cell and the quiz widget once it has appeared."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(f"{lab.url}/lab/tree/{notebook}?token={lab.token}")
            cell = page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").nth(index)
            run_cell(page, cell)
            quiz = cell.locator(".ftlab-quiz")
            quiz.wait_for(timeout=QUIZ_APPEARS_MS)
            yield page, cell, quiz
        finally:
            browser.close()


def test_quiz_in_jupyterlab(lab: Lab, chromium_path: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    question = load_bank("quick_check").questions[0]
    right = question.choices[question.correct_choices[0]]
    rag = next(c for c in question.choices if "searches your documents" in c.text)
    notebook, index = quiz_notebook(lab.root)
    shots = tmp_path / "screenshots"
    shots.mkdir()

    with quiz_in_lab(lab, chromium_path, notebook, index) as (page, cell, quiz):
        feedback = quiz.locator(".ftlab-feedback")

        quiz.get_by_label(right.text).check()
        quiz.get_by_role("button", name="Check").click()
        expect(feedback).to_contain_text(f"Correct! {right.feedback}")
        expect(quiz.locator(".ftlab-score")).to_have_text("Score: 1 / 1")
        cell.screenshot(path=shots / "quick_check_correct.png")

        quiz.get_by_label(rag.text).check()  # another answer: "Correct!" would now mislead
        expect(feedback).to_have_text(
            "Your answer has changed: press Check to see whether it is right."
        )
        expect(quiz.locator(".ftlab-score")).to_have_text("Score: 0 / 1")
        cell.screenshot(path=shots / "quick_check_changed.png")
        quiz.get_by_role("button", name="Check").click()
        expect(feedback).to_contain_text(f"Not quite. {rag.feedback}")
        expect(quiz.locator(".ftlab-score")).to_have_text("Score: 0 / 1")
        cell.screenshot(path=shots / "quick_check_wrong.png")
        page.screenshot(path=shots / "jupyterlab.png")

    record = json.loads(lab.progress.read_text())["banks"]["quick_check"]["0"]
    assert record["attempts"] == 2
    assert record["last_answer"] == question.choices.index(rag)
    assert record["correct"] is False
    keep = REPO_ROOT / "test-output" / "quiz_browser"
    shutil.rmtree(keep, ignore_errors=True)
    shutil.copytree(shots, keep)


def test_a_number_is_checked_with_enter_and_a_decimal_comma_is_explained(
    lab: Lab, chromium_path: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    question = next(q for q in load_bank("00_setup").questions if q.type == "numeric")
    right = next(answer for answer in question.numeric if answer.correct)
    value = right.value if right.kind == "value" else (right.low + right.high) / 2
    cell = nbformat.v4.new_code_cell('from ftlab.quiz import show_quiz\n\nshow_quiz("00_setup")')
    notebook = nbformat.v4.new_notebook(cells=[cell])
    notebook.metadata["kernelspec"] = {"name": "ftlab", "display_name": "Python 3 (ftlab)"}
    nbformat.write(notebook, lab.root / "numbers.ipynb")

    with quiz_in_lab(lab, chromium_path, "numbers.ipynb", 0) as (_, _, quiz):
        box = quiz.locator(".ftlab-question").nth(question.index)
        answer = box.get_by_role("textbox")
        feedback = box.locator(".ftlab-feedback")

        answer.fill("538,6")  # a decimal comma: explained, not read as 5386
        answer.press("Enter")
        expect(feedback).to_contain_text("use a dot for decimals")
        answer.fill(f"{value:g}")
        answer.press("Enter")  # no click on Check: Enter is enough
        expect(feedback).to_contain_text("Correct!")
        box.get_by_role("button", name="Check").click()  # the same answer again
        expect(feedback).to_contain_text("Correct!")
        box.screenshot(path=tmp_path / "numeric_enter.png")

    record = json.loads(lab.progress.read_text())["banks"]["00_setup"][str(question.index)]
    assert record["attempts"] == 1, "the refused comma and the repeated check are no attempts"
    assert record["correct"] is True
