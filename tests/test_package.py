"""The package's front door: `from ftlab import train, ...` works, and `import ftlab` is light."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

import ftlab


def test_the_main_steps_import_from_the_package():
    for name in ftlab.__all__:
        home = importlib.import_module(ftlab._HOMES[name])
        assert getattr(ftlab, name) is getattr(home, name), name
    assert {"TrainConfig", "train", "evaluate", "load_model", "validate_file"} <= set(dir(ftlab))
    with pytest.raises(ImportError, match="cannot import name 'nothing_here'"):
        from ftlab import nothing_here  # noqa: F401


def test_importing_the_package_loads_no_torch():
    code = "import sys, ftlab; print('torch' in sys.modules, 'transformers' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]


@pytest.mark.parametrize(("given", "counted"), [(None, "False"), ("1", "True")])
def test_datasets_pings_no_hub_to_count_a_download_unless_asked(given, counted):
    """`import ftlab` turns off datasets' download-count ping (notebook 02 loads local files),
    before datasets reads the setting; a user's own value wins."""
    env = {k: v for k, v in os.environ.items() if k != "HF_UPDATE_DOWNLOAD_COUNTS"}
    if given is not None:
        env["HF_UPDATE_DOWNLOAD_COUNTS"] = given
    code = "import ftlab, datasets; print(datasets.config.HF_UPDATE_DOWNLOAD_COUNTS)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert done.stdout.split() == [counted]
