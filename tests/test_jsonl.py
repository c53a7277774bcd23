"""ftlab.jsonl.write_jsonl: readable UTF-8 lines, written all or nothing."""

from __future__ import annotations

import pytest

from ftlab.jsonl import write_jsonl
from ftlab.support import load_examples, make_example


def test_rows_round_trip_one_per_line_with_characters_kept(tmp_path):
    rows = [make_example("Le café est froid ☕", "complaint", None, "negative"), {"n": 2}]
    path = write_jsonl(tmp_path / "new" / "folder" / "rows.jsonl", rows)
    text = path.read_text(encoding="utf-8")
    assert "café" in text and "\\u" not in text
    assert text.count("\n") == 2 and text.endswith("\n")
    assert load_examples(path) == rows
    assert [p.name for p in path.parent.iterdir()] == ["rows.jsonl"]


def test_a_failure_half_way_leaves_the_old_file_as_it_was(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", [{"keep": 1}, {"keep": 2}])
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_jsonl(path, [{"fine": 1}, {"not json": object()}])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["rows.jsonl"]
