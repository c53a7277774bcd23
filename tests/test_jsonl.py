"""ftlab.jsonl.write_jsonl: readable UTF-8 lines, written all or nothing."""

from __future__ import annotations

import contextlib
import os
import threading

import pytest

from ftlab.files import write_text_atomically
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


def test_two_writers_at_once_each_write_whole_files(tmp_path):
    """Two notebooks saving one record at the same moment (notebooks 04 and 05 on a shared
    server): each rename puts a whole file in place. With one shared temporary name, each
    writer deleted the other's, and readers saw half-written files."""
    path = tmp_path / "result.json"
    texts = ["A" * 100_000 + "\n", "B" * 50_000 + "\n"]
    failures: list[BaseException] = []
    seen: set[str] = set()

    def write(text: str) -> None:
        for _ in range(300):
            try:
                write_text_atomically(path, text)
            except OSError as error:
                failures.append(error)

    def read() -> None:
        for _ in range(600):
            with contextlib.suppress(FileNotFoundError):
                seen.add(path.read_text())

    threads = [threading.Thread(target=write, args=(t,)) for t in texts]
    threads.append(threading.Thread(target=read))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert seen <= set(texts)
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temporary file left
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~current_umask())


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
