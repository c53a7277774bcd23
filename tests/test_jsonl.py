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


def test_a_limit_reads_only_the_first_examples(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"n": 1}\n\n{"n": 2}\n{"n": 3}\nnot json\n', encoding="utf-8")
    assert load_examples(path, limit=2) == [{"n": 1}, {"n": 2}]
    assert load_examples(path, limit=3) == [{"n": 1}, {"n": 2}, {"n": 3}]  # line 5 never read
    with pytest.raises(ValueError, match="line 5 is not valid JSON"):
        load_examples(path)
