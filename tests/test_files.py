"""ftlab.files.write_text_atomically: the old file or the new one, never half of either."""

from __future__ import annotations

import pytest

from ftlab.files import write_text_atomically


def test_text_lands_in_a_new_folder_with_nothing_beside_it(tmp_path):
    path = write_text_atomically(tmp_path / "a" / "b.json", "{}\nnext line\n")
    assert path.read_bytes() == b"{}\nnext line\n"
    assert [p.name for p in path.parent.iterdir()] == ["b.json"]


def test_a_write_that_fails_part_way_keeps_the_old_file_and_leaves_no_partial(tmp_path):
    path = write_text_atomically(tmp_path / "record.json", '{"kept": true}\n')
    with pytest.raises(UnicodeEncodeError):  # a lone surrogate cannot be encoded in UTF-8
        write_text_atomically(path, "x" * 100_000 + "\ud800")
    assert path.read_text(encoding="utf-8") == '{"kept": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]
