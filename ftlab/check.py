"""`ftlab check`: the environment check a newcomer runs first.

Each item prints one line, `[OK]`, `[FAIL]` (with how to fix it) or `[SKIP]`
for optional things. The same checks run inside notebook 00.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from packaging.requirements import Requirement

OK, FAIL, SKIP = "OK", "FAIL", "SKIP"
KERNEL_NAME = "ftlab"


@dataclass
class CheckResult:
    status: str
    item: str
    detail: str = ""
    fix: str = ""

    def line(self) -> str:
        text = f"[{self.status}] {self.item}"
        if self.detail:
            text += f": {self.detail}"
        if self.status == FAIL and self.fix:
            text += f"\n       fix: {self.fix}"
        return text


def pinned_requirements() -> list[Requirement]:
    """The exact pins ftlab was installed with (its own package metadata is the source)."""
    return [Requirement(text) for text in importlib.metadata.requires("ftlab") or []]


def check_python() -> CheckResult:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] == (3, 11):
        return CheckResult(OK, "Python", version)
    return CheckResult(
        FAIL,
        "Python",
        f"{version} (the course is pinned for 3.11)",
        "install Python 3.11 and run `make setup` again",
    )


def check_packages() -> Iterator[CheckResult]:
    for requirement in pinned_requirements():
        # The dev extra (pytest, ruff, the browser test's playwright...) only runs the tests.
        for_tests = bool(requirement.marker) and not requirement.marker.evaluate({"extra": ""})
        name = f"package {requirement.name}" + (" (for the tests)" if for_tests else "")
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            if requirement.marker and not requirement.marker.evaluate({"extra": "dev"}):
                continue
            yield CheckResult(FAIL, name, "not installed", "run `make reinstall`")
            continue
        if requirement.specifier.contains(installed, prereleases=True):
            yield CheckResult(OK, name, installed)
        else:
            yield CheckResult(
                FAIL,
                name,
                f"{installed} installed, {requirement.specifier} pinned",
                "run `make reinstall` (it installs the pinned version)",
            )


def check_model_and_generation() -> Iterator[CheckResult]:
    from ftlab.generation import chat
    from ftlab.models import DEFAULT_MODEL, load_model, prepare_base_model

    try:
        folder = prepare_base_model(deep=True)
        yield CheckResult(OK, "base model", f"{DEFAULT_MODEL} at {folder}")
    except Exception as error:  # noqa: BLE001 - report, never crash the check
        detail, _, fix = str(error).partition("\nFix: ")
        yield CheckResult(FAIL, "base model", detail, fix or "run `make setup`")
        return
    try:
        import transformers  # noqa: F401 - import first, so the timing is the load alone

        start = time.perf_counter()
        model, tokenizer = load_model()
        loaded = time.perf_counter() - start
        yield CheckResult(OK, "model loads", f"in {loaded:.2f} s on {model.device}")
        reply = chat(
            model,
            tokenizer,
            [{"role": "user", "content": "What is the capital of France?"}],
            max_new_tokens=10,
        )
        yield CheckResult(OK, "10-token generation", repr(reply))
    except Exception as error:  # noqa: BLE001
        yield CheckResult(
            FAIL,
            "model loads and generates",
            f"{type(error).__name__}: {error}",
            "delete the cache with `make clean-cache`, then run `make setup`",
        )


def check_device() -> CheckResult:
    from ftlab.models import compute_dtype, pick_device, thread_override

    device = pick_device()
    try:
        thread_override()
    except ValueError as error:  # a typo in FTLAB_THREADS stops training and evaluation
        problem, _, fix = str(error).partition("\nFix: ")
        return CheckResult(FAIL, "device", problem, fix)
    return CheckResult(OK, "device", f"{device.type} (fast dtype {compute_dtype(device)})")


def check_kernel() -> CheckResult:
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().find_kernel_specs()
    if KERNEL_NAME in specs:
        return CheckResult(OK, "Jupyter kernel", f"'{KERNEL_NAME}' at {specs[KERNEL_NAME]}")
    return CheckResult(
        FAIL,
        "Jupyter kernel",
        f"'{KERNEL_NAME}' is not registered",
        "run `make setup` (it registers the kernel in .venv when it is missing); for another "
        "Jupyter, see 'One shared server' in README.md",
    )


def check_chromium() -> CheckResult:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return CheckResult(OK, "chromium (browser test)", path)
    return CheckResult(
        SKIP,
        "chromium (browser test)",
        "not found; only the browser test needs it (Debian: apt install chromium)",
    )


def run_checks(report: Callable[[CheckResult], None] | None = None) -> list[CheckResult]:
    """Run every check, calling `report` as each result arrives (so slow ones show progress)."""
    results: list[CheckResult] = []

    def add(result: CheckResult) -> None:
        results.append(result)
        if report:
            report(result)

    add(check_python())
    for result in check_packages():
        add(result)
    add(check_device())
    for result in check_model_and_generation():
        add(result)
    add(check_kernel())
    add(check_chromium())
    return results


def passed(results: list[CheckResult]) -> bool:
    return all(r.status != FAIL for r in results)
