"""The pinned package set is stated three times; they must agree."""

from __future__ import annotations

import tomllib

from packaging.requirements import Requirement


def pyproject_pins(repo) -> dict[str, str]:
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    texts = project["dependencies"] + project["optional-dependencies"]["dev"]
    return {Requirement(t).name: str(Requirement(t).specifier) for t in texts}


def test_every_dependency_is_pinned_exactly(repo):
    for name, spec in pyproject_pins(repo).items():
        assert spec.startswith("==") and "," not in spec, f"{name} is not pinned exactly: {spec}"


def test_environment_yml_matches_pyproject(repo):
    lines = [line.strip() for line in (repo / "environment.yml").read_text().splitlines()]
    entries = [line[2:] for line in lines if line.startswith("- ") and "==" in line]
    conda = {Requirement(e).name: str(Requirement(e).specifier) for e in entries}
    assert conda == pyproject_pins(repo)
    assert "- python=3.11" in lines


def test_lock_file_agrees_with_pyproject(repo):
    lock = {}
    for line in (repo / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            requirement = Requirement(line)
            lock[requirement.name.lower().replace("_", "-")] = str(requirement.specifier)
    for name, spec in pyproject_pins(repo).items():
        assert lock.get(name.lower()) == spec, f"{name}: lock {lock.get(name.lower())} vs {spec}"
    assert lock["torch"] == "==2.13.0"
